/**
 * Pieces of the migration test (kube-proxy -> bpfproxy -> kube-proxy):
 * the services it switches, kube-proxy's iptables rules for them as
 * kube-proxy writes them (bench/kube-proxy-rules.ts, plus the NodePort
 * chains that generator leaves out), and the traffic driver
 * (migration-traffic.ts) run inside a lab namespace, bounded in time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';
import { KubeProxyIptables } from '../../bench/kube-proxy-iptables.js';
import { IPTABLES_RESTORE_ARGS, svcChain, type BenchService } from '../../bench/kube-proxy-rules.js';
import { nsPath } from '../../testkit/netns.js';
import { REPO } from './env.js';
import type { DriverConfig, Snapshot } from './migration-traffic.js';

export const CLUSTER_CIDR = '10.244.0.0/16';

export interface MigService extends BenchService {
  nodePort: number;
}

const endpoints = (port: number) => [
  { ip: '10.244.1.11', port },
  { ip: '10.244.1.12', port },
  { ip: '10.244.2.11', port },
  { ip: '10.244.2.12', port },
];

/** A TCP and a UDP service, each a ClusterIP with a NodePort, four endpoints on two nodes. */
export const MIG_SERVICES: MigService[] = [
  {
    namespace: 'default',
    name: 'mig',
    portName: 'http',
    clusterIP: '10.96.0.40',
    port: 80,
    protocol: 'TCP',
    nodePort: 30040,
    endpoints: endpoints(8080),
  },
  {
    namespace: 'default',
    name: 'migu',
    portName: 'dns',
    clusterIP: '10.96.0.41',
    port: 53,
    protocol: 'UDP',
    nodePort: 30041,
    endpoints: endpoints(5353),
  },
];

const nodeOf = (ip: string) => (ip.startsWith('10.244.1.') ? 'node1' : 'node2');

/** The same services as manifests for the agents. */
export function migManifests(): string {
  return MIG_SERVICES.map(
    (s) => `apiVersion: v1
kind: Service
metadata: { name: ${s.name}, namespace: ${s.namespace} }
spec:
  type: NodePort
  clusterIP: ${s.clusterIP}
  selector: { app: ${s.name} }
  ports: [{ name: ${s.portName}, protocol: ${s.protocol}, port: ${s.port}, targetPort: ${s.endpoints[0]!.port}, nodePort: ${s.nodePort} }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${s.name}-1, namespace: ${s.namespace}, labels: { kubernetes.io/service-name: ${s.name} } }
addressType: IPv4
ports: [{ name: ${s.portName}, port: ${s.endpoints[0]!.port}, protocol: ${s.protocol} }]
endpoints:
${s.endpoints.map((e) => `  - { addresses: [${e.ip}], nodeName: ${nodeOf(e.ip)} }`).join('\n')}
`,
  ).join('---\n');
}

export const felixManifest = (bpfEnabled: boolean): string =>
  `apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: { name: default }\nspec: { bpfEnabled: ${bpfEnabled} }\n`;

/** kube-proxy's NodePort chains for a service (eTP=Cluster): KUBE-NODEPORTS -> KUBE-EXT-* (masquerade) -> KUBE-SVC-*. */
function nodePortRestore(services: readonly MigService[]): string {
  const lines = ['*nat'];
  for (const s of services) lines.push(`:${svcChain(s).replace('KUBE-SVC-', 'KUBE-EXT-')} - [0:0]`);
  for (const s of services) {
    const p = s.protocol.toLowerCase();
    const ext = svcChain(s).replace('KUBE-SVC-', 'KUBE-EXT-');
    const name = `${s.namespace}/${s.name}:${s.portName}`;
    lines.push(
      `-A KUBE-NODEPORTS -m comment --comment ${name} -m ${p} -p ${p} --dport ${s.nodePort} -j ${ext}`,
      `-A ${ext} -m comment --comment "masquerade traffic for ${name} external destinations" -j KUBE-MARK-MASQ`,
      `-A ${ext} -j ${svcChain(s)}`,
    );
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** kube-proxy (iptables mode) starting on a node: its first full sync, jumps and canary included, then the NodePort chains. */
export function startKubeProxy(ns: string, services: readonly MigService[] = MIG_SERVICES): void {
  new KubeProxyIptables(ns, services, CLUSTER_CIDR).start();
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'iptables-restore', ...IPTABLES_RESTORE_ARGS], {
    input: nodePortRestore(services),
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`kube-proxy NodePort rules in ${ns}: ${r.stderr}`);
}

/** Whether kube-proxy's KUBE-SERVICES chain is in the node's nat table. */
export function kubeProxyChainsIn(ns: string): boolean {
  return (
    spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'iptables', '-t', 'nat', '-S', 'KUBE-SERVICES'], { encoding: 'utf8' }).status === 0
  );
}

/** Packets kube-proxy's KUBE-SERVICES rule for a ClusterIP has matched (its new connections). */
export function kubeProxyPackets(ns: string, clusterIP: string): number {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'iptables', '-t', 'nat', '-L', 'KUBE-SERVICES', '-v', '-n', '-x'], {
    encoding: 'utf8',
  });
  if (r.status !== 0) return 0;
  return r.stdout
    .split('\n')
    .filter((l) => l.includes(clusterIP))
    .reduce((a, l) => a + Number(l.trim().split(/\s+/)[0] ?? 0), 0);
}

/** The traffic driver in a namespace: commands in, one JSON answer out each. */
export class TrafficDriver {
  private readonly child: ChildProcess;
  private readonly answers: string[] = [];
  private waiting: ((line: string) => void) | undefined;
  private readonly exited: Promise<number | null>;
  private stderr = '';

  constructor(
    t: Test,
    readonly ns: string,
    config: DriverConfig,
  ) {
    const script = join(REPO, 'dist', 'test', 'helpers', 'migration-traffic.js');
    this.child = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, script, JSON.stringify(config)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const w = this.waiting;
      this.waiting = undefined;
      if (w) w(line);
      else this.answers.push(line);
    });
    t.teardown(async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    });
  }

  private ask<T>(cmd: string, timeoutMs = 20_000): Promise<T> {
    this.child.stdin!.write(`${cmd}\n`);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`traffic driver in ${this.ns}: no answer to "${cmd}" in ${timeoutMs} ms\n${this.stderr}`)),
        timeoutMs,
      );
      const take = (line: string) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line) as T);
        } catch {
          reject(new Error(`traffic driver in ${this.ns}: "${line}"\n${this.stderr}`));
        }
      };
      const queued = this.answers.shift();
      if (queued !== undefined) take(queued);
      else this.waiting = take;
    });
  }

  snap(): Promise<Snapshot> {
    return this.ask<Snapshot>('snap');
  }

  closeLong(): Promise<{ closed: boolean }> {
    return this.ask('close-long');
  }

  async stop(): Promise<Snapshot> {
    const s = await this.ask<Snapshot>('stop');
    await this.exited;
    return s;
  }
}

/** A phase's figures from the two drivers' snapshots. */
export interface PhaseFigures {
  longTcp: number;
  longUdp: number;
  /** long flows that failed (error, reset, no echo) */
  longFailed: string[];
  /** long flows answered by another pod, or seen from another address, than at first */
  moved: string[];
  /** UDP requests without an answer */
  udpLost: number;
  shortOk: number;
  shortFailed: number;
  shortErrors: Record<string, number>;
}

export function figures(snaps: readonly Snapshot[]): PhaseFigures {
  const long = snaps.flatMap((s) => s.long);
  const f: PhaseFigures = {
    longTcp: long.filter((l) => l.proto === 'tcp').length,
    longUdp: long.filter((l) => l.proto === 'udp').length,
    longFailed: long
      .filter((l) => l.failed)
      .map((l) => `${l.target}#${l.id} (${l.pods.join('>')} from ${l.peers.join('>')}): ${l.failed} at ${l.failedAtMs} ms`),
    moved: long
      .filter((l) => l.pods.length > 1 || l.peers.length > 1)
      .map((l) => `${l.target}#${l.id}: ${l.pods.join('>')} ${l.peers.join('>')}`),
    udpLost: long.reduce((a, l) => a + l.lost, 0),
    shortOk: 0,
    shortFailed: 0,
    shortErrors: {},
  };
  for (const s of snaps) {
    for (const x of Object.values(s.short)) {
      f.shortOk += x.ok;
      f.shortFailed += x.failed;
      for (const [e, n] of Object.entries(x.errors)) f.shortErrors[e] = (f.shortErrors[e] ?? 0) + n;
    }
  }
  return f;
}
