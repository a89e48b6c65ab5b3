/**
 * The namespace lab: a LAN (bridge) with two node namespaces and an external
 * client; each node has pod namespaces on veths named like Calico's (cali*),
 * routed Calico-style (/32 routes, proxy ARP, 169.254.1.1 as gateway; in
 * IPv6 /128 routes and fe80::1 on the host side of each veth as gateway).
 * Dual-stack: every host and pod has an IPv4 and an IPv6 (ULA) address.
 *
 *   client 192.0.2.100 fd00:192:0:2::100 ─┐
 *   node1  192.0.2.11  fd00:192:0:2::11  ─┼─ br0 (in <prefix>-lan)
 *   node2  192.0.2.12  fd00:192:0:2::12  ─┘
 *   node1 pods 10.244.1.11-13 fd00:10:244:1::11-13, node2 pods 10.244.2.11-12 fd00:10:244:2::11-12
 *   (labSpec(prefix, { nodes: 3 }): node3 192.0.2.13 fd00:192:0:2::13, pods
 *   10.244.3.11-12 fd00:10:244:3::11-12, for tests whose flows move between
 *   two ingress nodes)
 *   LoadBalancer IPs 198.51.100.0/24 and external IPs 203.0.113.0/24 are
 *   routed by the client to node1, as a cloud load balancer would deliver.
 *   IPv6 DAD is off in every namespace (addresses usable at once).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, delNetns, ip, listNetns, nsPath, sh, sysctl } from '../testkit/netns.js';
import { DEFAULT_STATE_DIR, statePaths } from '../src/agent/lock.js';

/** dist/lab: where the lab's own scripts (echo server, probe, kube-proxy) run from. */
export const LAB_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = join(LAB_DIR, '..', '..');
/** The agent's command line, as the image runs it. */
export const AGENT_CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
import { AGENT_NODE_FLAGS } from '../src/paths.js';
const node = process.execPath;

export interface LabPod {
  name: string;
  ns: string;
  ip: string;
  /** the pod's IPv6 address (ULA, in its node's podCidr6); absent: an IPv4-only pod */
  ip6?: string;
  hostIf: string;
}

export interface LabNode {
  name: string;
  ns: string;
  ip: string;
  /** IPv6 (ULA) address and pod CIDR; absent: an IPv4-only node */
  ip6?: string;
  podCidr: string;
  podCidr6?: string;
  pods: LabPod[];
  pinDir: string;
}

export interface Lab {
  prefix: string;
  lan: string;
  client: { ns: string; ip: string; ip6: string };
  /** a host on the LAN for an API server (tests) */
  api: { ns: string; ip: string; ip6: string };
  nodes: LabNode[];
}

export const LB_CIDR = '198.51.100.0/24';
export const EXTERNAL_CIDR = '203.0.113.0/24';
/** every node's pod CIDR (kube-proxy's --cluster-cidr) */
export const POD_CIDR = '10.244.0.0/16';
/** the LAN's router with `gateway`: the nodes' default route, as real nodes have one */
export const GATEWAY_IP = '192.0.2.1';
/** every node's IPv6 pod CIDR (a /64 per node inside it) */
export const POD_CIDR6 = 'fd00:10:244::/56';
/** the pods' IPv6 gateway: fe80::1 on the host side of every pod veth */
export const POD_GATEWAY6 = 'fe80::1';

export function labSpec(prefix = 'bpxlab', opts: { nodes?: 2 | 3 } = {}): Lab {
  const mk = (n: number, pods: string[]): LabNode => ({
    name: `node${n}`,
    ns: `${prefix}-n${n}`,
    ip: `192.0.2.1${n}`,
    ip6: `fd00:192:0:2::1${n}`,
    podCidr: `10.244.${n}.0/24`,
    podCidr6: `fd00:10:244:${n}::/64`,
    pinDir: `/sys/fs/bpf/${prefix}-node${n}`,
    pods: pods.map((p, i) => ({
      name: `n${n}-${p}`,
      ns: `${prefix}-n${n}${p}`,
      ip: `10.244.${n}.${11 + i}`,
      ip6: `fd00:10:244:${n}::${11 + i}`,
      hostIf: `cali${p}${n}`,
    })),
  });
  return {
    prefix,
    lan: `${prefix}-lan`,
    client: { ns: `${prefix}-cl`, ip: '192.0.2.100', ip6: 'fd00:192:0:2::100' },
    api: { ns: `${prefix}-api`, ip: '192.0.2.2', ip6: 'fd00:192:0:2::2' },
    nodes: [mk(1, ['a', 'b', 'c']), mk(2, ['a', 'b']), ...(opts.nodes === 3 ? [mk(3, ['a', 'b'])] : [])],
  };
}

/** IPv6 duplicate address detection off in a namespace: its addresses are usable at once. */
function noDad(ns: string): void {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
}

function uplink(lab: Lab, ns: string, addr: string, addr6: string | undefined, tag: string): void {
  ip(lab.lan, 'link', 'add', tag, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  ip(lab.lan, 'link', 'set', tag, 'master', 'br0', 'up');
  ip(ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
  if (addr6) ip(ns, 'addr', 'add', `${addr6}/64`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
}

/** A pod namespace on a node: a veth (host side named like Calico's), a /32
 * route on the node, the host side as the pod's gateway. */
export function addPod(n: LabNode, p: LabPod): void {
  addNetns(p.ns);
  noDad(p.ns);
  ip(p.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', p.hostIf, 'netns', n.ns);
  ip(p.ns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
  if (p.ip6) ip(p.ns, 'addr', 'add', `${p.ip6}/128`, 'dev', 'eth0', 'nodad');
  ip(p.ns, 'link', 'set', 'eth0', 'up');
  ip(p.ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(p.ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(n.ns, 'link', 'set', p.hostIf, 'up');
  // The gateway is the host side of the veth (the node has no default
  // route for proxy ARP to answer from).
  const mac = (JSON.parse(ip(n.ns, '-j', 'link', 'show', p.hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(p.ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(n.ns, `net.ipv4.conf.${p.hostIf}.proxy_arp`, '1');
  sysctl(n.ns, `net.ipv4.conf.${p.hostIf}.rp_filter`, '0');
  ip(n.ns, 'route', 'add', `${p.ip}/32`, 'dev', p.hostIf, 'scope', 'link');
  if (!p.ip6) return;
  // IPv6: the host side carries fe80::1, the pod's default gateway (neighbour discovery finds it).
  ip(n.ns, 'addr', 'add', `${POD_GATEWAY6}/64`, 'dev', p.hostIf, 'nodad');
  ip(p.ns, '-6', 'route', 'add', 'default', 'via', POD_GATEWAY6, 'dev', 'eth0');
  ip(n.ns, '-6', 'route', 'add', `${p.ip6}/128`, 'dev', p.hostIf);
}

/**
 * Build the lab. Throws (after removing what it made) on failure.
 * `gateway`: the nodes get a default route to a router on the LAN (it
 * forwards nothing), as real nodes have one; traffic to an address nothing
 * serves then passes the node's FORWARD chain, where kube-proxy rejects
 * connections to a service without endpoints. `icmpRedirects: false`: the
 * nodes send none — a pod reaching itself through kube-proxy's DNAT makes
 * the node send it a redirect, and redirects share the kernel's per-host
 * ICMP rate state with the port-unreachables kube-proxy's REJECT sends.
 */
export function labUp(lab: Lab, opts: { servers?: boolean; gateway?: boolean; icmpRedirects?: boolean } = {}): void {
  try {
    addNetns(lab.lan);
    ip(lab.lan, 'link', 'add', 'br0', 'type', 'bridge');
    ip(lab.lan, 'link', 'set', 'br0', 'up');
    if (opts.gateway) ip(lab.lan, 'addr', 'add', `${GATEWAY_IP}/24`, 'dev', 'br0');
    noDad(lab.lan);
    addNetns(lab.client.ns);
    noDad(lab.client.ns);
    uplink(lab, lab.client.ns, lab.client.ip, lab.client.ip6, 'cl');
    addNetns(lab.api.ns);
    noDad(lab.api.ns);
    uplink(lab, lab.api.ns, lab.api.ip, lab.api.ip6, 'api');
    for (const n of lab.nodes) {
      addNetns(n.ns);
      noDad(n.ns);
      sysctl(n.ns, 'net.ipv4.ip_forward', '1');
      sysctl(n.ns, 'net.ipv6.conf.all.forwarding', '1');
      sysctl(n.ns, 'net.ipv4.conf.all.rp_filter', '0');
      sysctl(n.ns, 'net.ipv4.conf.default.rp_filter', '0');
      if (opts.icmpRedirects === false) {
        sysctl(n.ns, 'net.ipv4.conf.all.send_redirects', '0');
        sysctl(n.ns, 'net.ipv4.conf.default.send_redirects', '0');
      }
      uplink(lab, n.ns, n.ip, n.ip6, `n${n.name.slice(4)}`);
      for (const p of n.pods) addPod(n, p);
    }
    for (const n of lab.nodes) {
      for (const other of lab.nodes) {
        if (other === n) continue;
        ip(n.ns, 'route', 'add', other.podCidr, 'via', other.ip);
        if (other.podCidr6 && other.ip6) ip(n.ns, '-6', 'route', 'add', other.podCidr6, 'via', other.ip6);
      }
      if (opts.gateway) ip(n.ns, 'route', 'add', 'default', 'via', GATEWAY_IP);
    }
    const n1 = lab.nodes[0]!;
    ip(lab.client.ns, 'route', 'add', LB_CIDR, 'via', n1.ip);
    ip(lab.client.ns, 'route', 'add', EXTERNAL_CIDR, 'via', n1.ip);
    if (opts.servers !== false) startServers(lab);
  } catch (e) {
    labDown(lab.prefix);
    throw e;
  }
}

export function allPods(lab: Lab): LabPod[] {
  return lab.nodes.flatMap((n) => n.pods);
}

/** The lab's echo server (TCP 8080, UDP 5353) in a namespace: a pod's, or a
 * node's own for host-network endpoints. Returns once it listens. */
export function startEcho(ns: string, name: string, deadline = Date.now() + 10_000): void {
  const c = spawn(
    'nsenter',
    [`--net=${nsPath(ns)}`, '--', node, join(LAB_DIR, 'echo-server.js'), '--name', name, '--tcp', '8080', '--udp', '5353'],
    { detached: true, stdio: 'ignore' },
  );
  c.unref();
  for (;;) {
    const tcp = sh('ss', ['-H', '-ltn', 'sport = :8080'], { ns, allowFail: true }).trim();
    const udp = sh('ss', ['-H', '-lun', 'sport = :5353'], { ns, allowFail: true }).trim();
    if (tcp && udp) return;
    if (Date.now() > deadline) throw new Error(`echo server in ${ns} did not start`);
    spawnSync('sleep', ['0.05']);
  }
}

export function startServers(lab: Lab): void {
  const deadline = Date.now() + 10_000;
  for (const p of allPods(lab)) startEcho(p.ns, p.name, deadline);
}

/** Remove every namespace and pin dir of a lab. Never throws. */
export function labDown(prefix = 'bpxlab'): string[] {
  const gone = listNetns(`${prefix}-`);
  // pods first (their processes), nodes, then the LAN
  for (const ns of gone.sort((a, b) => b.length - a.length)) delNetns(ns);
  const lab = labSpec(prefix, { nodes: 3 }); // whichever the lab had
  for (const n of lab.nodes) {
    rmSync(n.pinDir, { recursive: true, force: true });
    // the agents' records of the clsact qdiscs they created: those went with the namespaces
    rmSync(statePaths(DEFAULT_STATE_DIR, n.pinDir).qdiscs, { force: true });
    // and the topology display file `bpfproxy services` reads: it describes maps that are gone
    rmSync(statePaths(DEFAULT_STATE_DIR, n.pinDir).topology, { force: true });
  }
  return gone;
}

export type { Attempt as ProbeAttempt, StreamResult as StreamOutcome } from './probe.js';
import type { Attempt as ProbeAttempt, StreamResult as StreamOutcome } from './probe.js';

/** Run the probe client inside a namespace (bounded: count x timeout). */
export function probe(ns: string, mode: 'tcp' | 'udp', host: string, port: number, count = 1, timeout = 2000): ProbeAttempt[] {
  const r = spawnSync(
    'nsenter',
    [
      `--net=${nsPath(ns)}`,
      '--',
      node,
      join(LAB_DIR, 'probe.js'),
      mode,
      host,
      String(port),
      '--count',
      String(count),
      '--timeout',
      String(timeout),
    ],
    { encoding: 'utf8', timeout: count * timeout + 10_000 },
  );
  if (r.status !== 0) throw new Error(`probe in ${ns} failed: ${r.stderr || r.error?.message}`);
  return JSON.parse(r.stdout) as ProbeAttempt[];
}

/** A paced TCP stream through a service, started in the background: a
 * chunk every `interval` ms (a long interval makes an idle connection). */
export function startStream(
  ns: string,
  host: string,
  port: number,
  durationMs: number,
  pace: { interval?: number; chunk?: number } = {},
): Promise<StreamOutcome> {
  return new Promise((resolve, reject) => {
    const c = spawn(
      'nsenter',
      [
        `--net=${nsPath(ns)}`,
        '--',
        node,
        join(LAB_DIR, 'probe.js'),
        'stream',
        host,
        String(port),
        '--duration',
        String(durationMs),
        '--chunk',
        String(pace.chunk ?? 8192),
        '--interval',
        String(pace.interval ?? 5),
        '--timeout',
        '15000',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      if (code !== 0) reject(new Error(`stream probe failed (${code}): ${err}`));
      else resolve(JSON.parse(out) as StreamOutcome);
    });
  });
}

export interface AgentProcess {
  child: ChildProcess;
  logs: string[];
  ready: Promise<void>;
  /** SIGTERM and wait for exit */
  stop(): Promise<number | null>;
}

/** Start `bpfproxy agent` inside a node namespace (network namespace only,
 * so its pins land on the host's bpffs and outlive it). `readyMs`: how long
 * `ready` waits for the agent (loading the programs takes the verifier a
 * while; longer on a busy machine). */
export function startAgent(
  n: LabNode,
  source: { manifests: string } | { kubeconfig: string },
  extra: string[] = [],
  opts: { readyMs?: number } = {},
): AgentProcess {
  const src = 'manifests' in source ? ['--manifests', source.manifests] : ['--kubeconfig', source.kubeconfig];
  const child = spawn(
    'nsenter',
    [
      `--net=${nsPath(n.ns)}`,
      '--',
      node,
      ...AGENT_NODE_FLAGS,
      AGENT_CLI,
      'agent',
      ...src,
      '--node',
      n.name,
      '--pin-dir',
      n.pinDir,
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logs: string[] = [];
  let buf = '';
  let readyResolve: () => void;
  let readyReject: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    readyResolve = res;
    readyReject = rej;
  });
  const onLine = (line: string) => {
    logs.push(line);
    if (line.includes('"agent ready"')) readyResolve();
  };
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  child.stderr.on('data', (d: Buffer) => logs.push(d.toString()));
  const exited = new Promise<number | null>((res) =>
    child.on('exit', (code) => {
      readyReject(new Error(`agent on ${n.name} exited (${code}) before ready:\n${logs.slice(-20).join('\n')}`));
      res(code);
    }),
  );
  const readyMs = opts.readyMs ?? 90_000;
  const timer = setTimeout(
    () => readyReject(new Error(`agent on ${n.name} not ready in ${readyMs / 1000}s:\n${logs.slice(-20).join('\n')}`)),
    readyMs,
  );
  ready.finally(() => clearTimeout(timer)).catch(() => undefined);
  return {
    child,
    logs,
    ready,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
