/**
 * The benchmark topology, made fresh for every variant: a node namespace
 * with a client pod and a server pod on cali* veths (as in the lab). The
 * server pod runs crr servers and iperf3 servers.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { addPod, type LabNode } from '../lab/lab.js';
import { addNetns, delNetns, nsPath, sh, sysctl, uniqueTag } from '../testkit/netns.js';
import { REPO_ROOT } from '../lab/lab.js';

export const CRR = join(REPO_ROOT, 'bench', '.output', 'crr');
export const CRR_PORT = 8080;
export const IPERF_PORT = 5201;

export interface BenchTopology {
  node: LabNode;
  client: LabNode['pods'][number];
  server: LabNode['pods'][number];
  clientHostIf: string;
  all: string[];
}

export function createTopology(prefix: string, endpoints: number): BenchTopology {
  const tag = `${prefix}${uniqueTag(4)}`;
  const node: LabNode = {
    name: 'bench-node',
    ns: `${tag}-n`,
    ip: '192.0.2.11',
    podCidr: '10.244.1.0/24',
    pinDir: `/sys/fs/bpf/${tag}-n`,
    pods: [
      { name: 'client', ns: `${tag}-c`, ip: '10.244.1.10', hostIf: 'calicl' },
      { name: 'server', ns: `${tag}-s`, ip: '10.244.1.20', hostIf: 'calisv' },
    ],
  };
  const all = [node.ns, ...node.pods.map((p) => p.ns)];
  try {
    addNetns(node.ns);
    sysctl(node.ns, 'net.ipv4.ip_forward', '1');
    sysctl(node.ns, 'net.ipv4.conf.all.rp_filter', '0');
    for (const p of node.pods) addPod(node, p);
    const [client, server] = node.pods as [LabNode['pods'][number], LabNode['pods'][number]];
    const ports = Array.from({ length: endpoints }, (_, i) => String(CRR_PORT + i));
    spawn('nsenter', [`--net=${nsPath(server.ns)}`, '--', CRR, 'server', ...ports], { detached: true, stdio: 'ignore' }).unref();
    sh('iperf3', ['-s', '-p', String(IPERF_PORT), '-D'], { ns: server.ns });
    const deadline = Date.now() + 5000;
    while (!sh('ss', ['-H', '-ltn', `sport = :${CRR_PORT}`], { ns: server.ns, allowFail: true }).trim()) {
      if (Date.now() > deadline) throw new Error('crr server did not start');
    }
    return { node, client, server, clientHostIf: client.hostIf, all };
  } catch (e) {
    for (const ns of all.reverse()) delNetns(ns);
    throw e;
  }
}

export function destroyTopology(t: BenchTopology): void {
  for (const ns of [...t.all].reverse()) delNetns(ns);
}
