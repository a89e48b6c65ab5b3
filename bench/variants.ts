/**
 * The variants measured side by side, each programmed with the same N
 * services into a fresh topology: direct (no service: the baseline),
 * kube-proxy iptables mode (as kube-proxy runs it at its defaults: partial
 * restores, periodic syncs), kube-proxy nftables mode, bpfproxy.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { nsPath } from '../testkit/netns.js';
import { frame, TCP } from '../testkit/packet.js';
import { Attacher } from '../src/dataplane/bpf/attach.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { loadDatapath, type Datapath } from '../src/dataplane/bpf/loader.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { silentLogger } from '../src/log.js';
import { realClock } from '../src/clock.js';
import type { Frontend } from '../src/model/types.js';
import { KUBE_PROXY_CHANGE_INTERVAL_MS, nftEndpointChange, nftRules, type BenchService } from './kube-proxy-rules.js';
import { KubeProxyIptables, type KubeProxyIptablesFigures } from './kube-proxy-iptables.js';
import { IptablesTimeout } from '../testkit/kube-proxy/iptables.js';
import { REPO_ROOT } from '../lab/lab.js';
import { CRR_PORT, IPERF_PORT, type BenchTopology } from './topology.js';

const BPF_OUT = join(REPO_ROOT, 'bpf', '.output');

export type Variant = 'direct' | 'iptables' | 'nftables' | 'bpfproxy';
export const VARIANTS: readonly Variant[] = ['direct', 'iptables', 'nftables', 'bpfproxy'];
export const CLUSTER_CIDR = '10.244.0.0/16';
export const MEASURED_VIP = '10.95.255.254';

const ipOf = (n: number): string => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/**
 * N service ports: N-1 fillers (endpoints on addresses nothing answers) and,
 * programmed last, the measured service: crr on port 80 with E endpoints on
 * the server pod, iperf3 on 5201 TCP and UDP with one (iperf3's control and
 * data connections must meet the same server).
 */
export function benchServices(n: number, endpoints: number): BenchService[] {
  const out: BenchService[] = [];
  const base = (10 << 24) | (96 << 16);
  for (let i = 0; i < Math.max(0, n - 1); i++) {
    out.push({
      namespace: 'bench',
      name: `svc-${i}`,
      portName: 'http',
      clusterIP: ipOf(base + 1 + i),
      port: 80,
      protocol: 'TCP',
      endpoints: Array.from({ length: endpoints }, (_, k) => ({ ip: ipOf(((10 << 24) | (200 << 16)) + i * endpoints + k), port: 8080 })),
    });
  }
  const server = '10.244.1.20';
  out.push({
    namespace: 'bench',
    name: 'measured',
    portName: 'crr',
    clusterIP: MEASURED_VIP,
    port: 80,
    protocol: 'TCP',
    endpoints: Array.from({ length: endpoints }, (_, k) => ({ ip: server, port: CRR_PORT + k })),
  });
  out.push({
    namespace: 'bench',
    name: 'measured',
    portName: 'iperf',
    clusterIP: MEASURED_VIP,
    port: IPERF_PORT,
    protocol: 'TCP',
    endpoints: [{ ip: server, port: IPERF_PORT }],
  });
  out.push({
    namespace: 'bench',
    name: 'measured',
    portName: 'iperf-udp',
    clusterIP: MEASURED_VIP,
    port: IPERF_PORT,
    protocol: 'UDP',
    endpoints: [{ ip: server, port: IPERF_PORT }],
  });
  return out;
}

export function toFrontend(s: BenchService): Frontend {
  const backends = s.endpoints.map((e) => ({ ip: e.ip, port: e.port, local: e.ip.startsWith('10.244.1.') }));
  return {
    kind: 'ClusterIP',
    ip: s.clusterIP,
    port: s.port,
    protocol: s.protocol,
    servicePort: `${s.namespace}/${s.name}:${s.portName}/${s.protocol}`,
    externalLocal: false,
    internalLocal: false,
    affinityTimeout: 0,
    clusterBackends: backends,
    localBackends: backends.filter((b) => b.local),
  };
}

/** Group service ports by service, as the agent's store would hand them over. */
export function byService(svcs: readonly BenchService[]): Map<string, Frontend[]> {
  const m = new Map<string, Frontend[]>();
  for (const s of svcs) {
    const k = `${s.namespace}/${s.name}`;
    m.set(k, [...(m.get(k) ?? []), toFrontend(s)]);
  }
  return m;
}

function run(ns: string, cmd: string, args: string[], input?: string): number {
  const t0 = performance.now();
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { input, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.error?.message || '').slice(0, 500)}`);
  return performance.now() - t0;
}

export interface Programmed {
  /** ms to program all N services from nothing (NaN when that did not finish) */
  programMs: number;
  /** false: programming did not finish in its time limit, so there is nothing to send traffic through */
  programmed: boolean;
  /** steps that ran past their time limit and were killed, one sentence each (the iptables variant) */
  didNotFinish: string[];
  /** ms per single endpoint change while N services are programmed (NaN: none to make, or it did not finish) */
  endpointChange(i: number): number;
  /**
   * kube-proxy iptables only, after the endpoint changes: every sync so far,
   * the sync its runner makes on its own an hour later, and its idle CPU
   * (undefined when that sync did not finish)
   */
  kubeProxy?(): KubeProxyIptablesFigures | undefined;
  /** BPF_PROG_RUN ns per packet: [new flow, established flow] (bpfproxy only) */
  packetNs?(): { newFlow: number; established: number };
  close(): void;
}

/** A changed copy of filler service i: one endpoint replaced. */
function churn(s: BenchService, i: number): BenchService {
  return { ...s, endpoints: [{ ip: ipOf(((10 << 24) | (201 << 16)) + i), port: 8080 }, ...s.endpoints.slice(1)] };
}

export async function program(
  variant: Variant,
  t: BenchTopology,
  svcs: BenchService[],
  opts: {
    mapSizes?: Partial<typeof DEFAULT_DATAPATH.mapSizes>;
    /** kill any one iptables command of the iptables variant that runs longer, and record that it did not finish */
    iptablesTimeoutMs?: number;
  } = {},
): Promise<Programmed> {
  const ns = t.node.ns;
  const fillers = svcs.filter((s) => s.name !== 'measured');
  const done = { programmed: true, didNotFinish: [] as string[] };
  if (variant === 'direct') {
    return { programMs: 0, ...done, endpointChange: () => NaN, close: () => undefined };
  }
  if (variant === 'iptables') {
    // kube-proxy's iptables mode at its defaults: a full sync at start, a
    // partial one (the changed service's chains only) per endpoint change, the
    // stale-chain cleanup and the hourly sync where kube-proxy's timers put them
    const kp = new KubeProxyIptables(ns, svcs, CLUSTER_CIDR, opts.iptablesTimeoutMs);
    const timedOut = <T>(what: string, f: () => T): T | undefined => {
      try {
        return f();
      } catch (e) {
        if (!(e instanceof IptablesTimeout)) throw e;
        done.didNotFinish.push(`${what} (${e.command.split(' ')[0]}) did not finish in ${e.limitMs / 1000} s`);
        return undefined;
      }
    };
    const first = timedOut(`first (full) sync of ${svcs.length} service ports`, () => kp.start());
    if (!first)
      return { programMs: NaN, programmed: false, didNotFinish: done.didNotFinish, endpointChange: () => NaN, close: () => undefined };
    return {
      programMs: first.wallMs,
      ...done,
      endpointChange(i) {
        if (fillers.length === 0) return NaN;
        const k = i % fillers.length;
        fillers[k] = churn(fillers[k]!, i);
        return timedOut(`endpoint change ${i + 1}`, () => kp.change(fillers[k]!, KUBE_PROXY_CHANGE_INTERVAL_MS).wallMs) ?? NaN;
      },
      kubeProxy: () => timedOut('hourly sync', () => kp.idle()),
      close: () => undefined,
    };
  }
  if (variant === 'nftables') {
    const programMs = run(ns, 'nft', ['-f', '-'], nftRules(svcs, CLUSTER_CIDR));
    return {
      programMs,
      ...done,
      endpointChange(i) {
        if (fillers.length === 0) return NaN;
        const k = i % fillers.length;
        const before = fillers[k]!;
        const after = churn(before, i);
        fillers[k] = after;
        // kube-proxy's nftables mode changes only what changed
        return run(ns, 'nft', ['-f', '-'], nftEndpointChange(before, after, CLUSTER_CIDR));
      },
      close: () => undefined,
    };
  }
  // bpfproxy: the agent's own reconciler and attacher, in the node namespace
  const mapSizes = { ...DEFAULT_DATAPATH.mapSizes, ...opts.mapSizes };
  mapSizes.natFrontend = Math.max(mapSizes.natFrontend, svcs.length + 16);
  mapSizes.natBackend = Math.max(mapSizes.natBackend, svcs.reduce((a, s) => a + s.endpoints.length, 0) * 2 + 64);
  const dp: Datapath = await loadDatapath(BPF_OUT, t.node.pinDir, { ...DEFAULT_DATAPATH, mapSizes });
  const rec = new BpfReconciler(dp.maps);
  const all = byService(svcs);
  const t0 = performance.now();
  const report = rec.syncAll(all);
  const programMs = performance.now() - t0;
  if (report.problems.length) {
    dp.close();
    rmSync(t.node.pinDir, { recursive: true, force: true });
    throw new Error(`bpfproxy could not program the services: ${report.problems[0]!.message}`);
  }
  const prev = native().enterNetns(nsPath(ns));
  try {
    new Attacher(dp, /^eth0$/, /^cali/, silentLogger, realClock).poll();
  } finally {
    native().restoreNetns(prev);
  }
  return {
    programMs,
    ...done,
    endpointChange(i) {
      if (fillers.length === 0) return NaN;
      const k = i % fillers.length;
      fillers[k] = churn(fillers[k]!, i);
      const s0 = performance.now();
      rec.syncService(`bench/${fillers[k].name}`, [toFrontend(fillers[k])]);
      return performance.now() - s0;
    },
    packetNs() {
      const p = native().enterNetns(nsPath(ns));
      try {
        const ifindex = native()
          .interfaces()
          .find((x) => x.name === t.clientHostIf)!.index;
        const ctx = Buffer.alloc(192);
        ctx.writeUInt32LE(ifindex, 36);
        ctx.writeUInt32LE(ifindex, 40);
        const fd = dp.programs.fromPod.fd;
        const mk = (sport: number, flags: number) =>
          frame({ src: '10.244.1.10', dst: MEASURED_VIP }, { proto: 'tcp', sport, dport: 80, flags });
        // Distinct flows, each frame run once in a native loop: a repeated
        // run would see its own rewritten packet (a miss) after the first.
        const flows = 4000;
        const syns = Array.from({ length: flows }, (_, k) => mk(10000 + k, TCP.SYN));
        const acks = Array.from({ length: flows }, (_, k) => mk(10000 + k, TCP.ACK));
        const n = native().progTestRunEach(fd, syns, { ctx });
        const e = native().progTestRunEach(fd, acks, { ctx });
        return { newFlow: +(n.totalNs / flows).toFixed(1), established: +(e.totalNs / flows).toFixed(1) };
      } finally {
        native().restoreNetns(p);
      }
    },
    close() {
      dp.close();
      rmSync(t.node.pinDir, { recursive: true, force: true });
    },
  };
}
