/**
 * `bpfproxy-bench monitor`: what the monitor costs the datapath, and how
 * many events a listener takes without losing one.
 *
 * Cost per packet (BPF_PROG_RUN, each of `flows` distinct frames once, in a
 * native loop, in a namespace of its own whose routes make the FIB lookups
 * succeed): a new flow (SYN: conntrack miss, frontend, backend, conntrack
 * creation, NAT, FIB redirect) and a packet of an established flow (ACK:
 * conntrack hit, NAT, FIB redirect), with nobody listening, with a listener
 * (one flow-new event per SYN), and, given --baseline-object, with the
 * object built before the monitor existed (over the same maps). Rounds
 * interleave the variants; medians are reported.
 *
 * Events per second: a generator on a worker thread runs a malformed frame
 * through the data program (each run: one drop event) at a steady rate,
 * while a listener (MonitorSession: its ring, the reader thread, decoding
 * in JavaScript on this thread) counts what arrives; lost events come from
 * the datapath's per-CPU counter. The rate climbs until events are lost;
 * the highest rate that lost none, and what was achieved at it, is the
 * figure. Then once as fast as the generator can go, for the ceiling.
 */
import { Worker } from 'node:worker_threads';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { environment, type Environment } from './environment.js';
import type { GeneratorJob, GeneratorResult } from './monitor-generator.js';
import { REPO_ROOT } from '../lab/lab.js';
import { ensureBpffs } from '../src/dataplane/bpf/bpffs.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { loadDatapath, MAP_NAMES, type Datapath } from '../src/dataplane/bpf/loader.js';
import { MonitorSession, type MonitorEvent } from '../src/dataplane/bpf/monitor.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { native, type NativeBpfObject } from '../src/native/index.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import { frame, TCP } from '../testkit/packet.js';

const BPF_OUT = join(REPO_ROOT, 'bpf', '.output');

export interface MonitorBenchOptions {
  /** distinct flows per per-packet figure */
  flows: number;
  /** rounds of the per-packet figures */
  rounds: number;
  /** event rates tried, in order (runs/s); the ladder stops at the first that loses events */
  rates: number[];
  /** seconds per rate */
  seconds: number;
  /** bpfproxy.o built before the monitor, for the "before" per-packet figures */
  baselineObject?: string;
  smoke: boolean;
}

export const MONITOR_FULL: MonitorBenchOptions = {
  flows: 4000,
  rounds: 7,
  rates: [50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 600_000, 800_000, 1_200_000],
  seconds: 3,
  smoke: false,
};
export const MONITOR_SMOKE: MonitorBenchOptions = { flows: 200, rounds: 1, rates: [20_000], seconds: 0.5, smoke: true };

export interface PacketNs {
  variant: 'before' | 'monitor off' | 'monitor on';
  newFlowNs: number;
  establishedNs: number;
  samples: number;
}

export interface RateRun {
  /** runs/s asked of the generator; 0: as fast as it could */
  target: number;
  sent: number;
  received: number;
  lost: number;
  seconds: number;
  /** events delivered per second */
  deliveredPerS: number;
}

export interface MonitorBenchResults {
  environment: Environment;
  options: MonitorBenchOptions;
  packetNs: PacketNs[];
  rates: RateRun[];
  /** the highest rate that lost no event, and what it delivered */
  sustainedNoLoss: RateRun | null;
  ceiling: RateRun | null;
  load: [number, number];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};

/** A namespace with an uplink whose routes place the backends, the datapath over a pin dir, one service. */
async function setup(pinDir: string): Promise<{ ns: string; ifindex: number; dp: Datapath; close(): void }> {
  const ns = `bpxb-${uniqueTag()}`;
  addNetns(ns);
  let dp: Datapath | undefined;
  try {
    ip(ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
    ip(ns, 'link', 'set', 'd1', 'up');
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    ip(ns, 'addr', 'add', '192.0.2.11/24', 'dev', 'd0');
    ip(ns, 'link', 'set', 'd0', 'up');
    ip(ns, 'route', 'add', '10.244.1.0/24', 'dev', 'd0');
    ip(ns, 'neigh', 'add', '10.244.1.11', 'lladdr', '02:00:00:00:01:11', 'dev', 'd0');
    ip(ns, 'neigh', 'add', '10.244.1.12', 'lladdr', '02:00:00:00:01:12', 'dev', 'd0');
    const prev = native().enterNetns(nsPath(ns));
    let ifindex: number;
    try {
      ifindex = native()
        .interfaces()
        .find((i) => i.name === 'd0')!.index;
    } finally {
      native().restoreNetns(prev);
    }
    dp = await loadDatapath(BPF_OUT, pinDir, DEFAULT_DATAPATH);
    const rec = new BpfReconciler(dp.maps);
    const backends = [
      { ip: '10.244.1.11', port: 8080, local: true },
      { ip: '10.244.1.12', port: 8080, local: true },
    ];
    const r = rec.syncService('bench/web', [
      {
        kind: 'ClusterIP',
        ip: '10.96.0.10',
        port: 80,
        protocol: 'TCP',
        servicePort: 'bench/web:http/TCP',
        externalLocal: false,
        internalLocal: false,
        affinityTimeout: 0,
        clusterBackends: backends,
        localBackends: backends,
      },
    ]);
    if (r.problems.length) throw new Error(`bench monitor: the service could not be programmed: ${r.problems[0]!.message}`);
    const d = dp;
    return {
      ns,
      ifindex,
      dp: d,
      close() {
        d.close();
        delNetns(ns);
      },
    };
  } catch (e) {
    dp?.close();
    delNetns(ns);
    throw e;
  }
}

/** ns per packet for `flows` new flows then their established packets, through one program. */
function perPacket(
  ns: string,
  ifindex: number,
  progFd: number,
  flows: number,
  firstPort: number,
): { newFlowNs: number; establishedNs: number } {
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(ifindex, 36);
  ctx.writeUInt32LE(ifindex, 40);
  const mk = (i: number, flags: number) =>
    frame(
      { src: `10.244.${100 + (i >> 14)}.${(i >> 6) & 0xff}`, dst: '10.96.0.10' },
      { proto: 'tcp', sport: firstPort + (i & 63), dport: 80, flags },
    );
  const syns = Array.from({ length: flows }, (_, i) => mk(i, TCP.SYN));
  const acks = Array.from({ length: flows }, (_, i) => mk(i, TCP.ACK));
  const prev = native().enterNetns(nsPath(ns));
  try {
    const n = native().progTestRunEach(progFd, syns, { ctx });
    const e = native().progTestRunEach(progFd, acks, { ctx });
    return { newFlowNs: n.totalNs / flows, establishedNs: e.totalNs / flows };
  } finally {
    native().restoreNetns(prev);
  }
}

function runGenerator(job: GeneratorJob): Promise<GeneratorResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./monitor-generator.js', import.meta.url), { workerData: job });
    w.once('message', (m: GeneratorResult) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`bench monitor: the generator thread exited with ${code}`));
    });
  });
}

export async function runMonitorBench(o: MonitorBenchOptions, log: (s: string) => void = () => undefined): Promise<MonitorBenchResults> {
  ensureBpffs('/sys/fs/bpf');
  const pinDir = `/sys/fs/bpf/bpxb-monitor-${uniqueTag()}`;
  const load0 = loadavg()[0]!;
  const node = await setup(pinDir);
  let baseline: NativeBpfObject | undefined;
  try {
    const { dp } = node;
    if (o.baselineObject) {
      const maxEntries: Record<string, number> = {};
      for (const m of Object.values(dp.maps) as Array<{ name: string; maxEntries: number }>) maxEntries[m.name] = m.maxEntries;
      for (const n of [MAP_NAMES.monitorCtl, MAP_NAMES.monitorRings, MAP_NAMES.monitorLost]) delete maxEntries[n];
      baseline = await native().loadObject(o.baselineObject, { pinRoot: pinDir, maxEntries });
    }
    const basePod = baseline?.programs().find((p) => p.name === 'bpfproxy_pod');

    // ---- per-packet cost
    const samples: Record<PacketNs['variant'], Array<{ newFlowNs: number; establishedNs: number }>> = {
      before: [],
      'monitor off': [],
      'monitor on': [],
    };
    let port = 1024;
    const nextPorts = () => {
      const p = port;
      port += 64;
      return p;
    };
    for (let round = 0; round < o.rounds; round++) {
      log(`per-packet round ${round + 1}/${o.rounds}`);
      if (basePod) samples.before.push(perPacket(node.ns, node.ifindex, basePod.fd, o.flows, nextPorts()));
      samples['monitor off'].push(perPacket(node.ns, node.ifindex, dp.programs.fromPod.fd, o.flows, nextPorts()));
      let seen = 0;
      const s = MonitorSession.open(dp.maps, (evs) => (seen += evs.length));
      try {
        samples['monitor on'].push(perPacket(node.ns, node.ifindex, dp.programs.fromPod.fd, o.flows, nextPorts()));
        const t0 = Date.now();
        while (seen < o.flows && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
        if (seen < o.flows) log(`monitor on: ${seen} of ${o.flows} flow events arrived (lost: ${s.lost()})`);
      } finally {
        s.close();
      }
      // a clean conntrack for the next round: the flows of this one would be hits
      const ct = dp.maps.ct;
      ct.deleteMany(ct.entries().map(([k]) => k));
    }
    const packetNs: PacketNs[] = (Object.keys(samples) as Array<PacketNs['variant']>)
      .filter((v) => samples[v].length)
      .map((v) => ({
        variant: v,
        newFlowNs: +median(samples[v].map((x) => x.newFlowNs)).toFixed(1),
        establishedNs: +median(samples[v].map((x) => x.establishedNs)).toFixed(1),
        samples: samples[v].length,
      }));

    // ---- events per second
    const bad = frame({ src: '10.0.0.1', dst: '10.96.0.10' }, { proto: 'tcp', sport: 1, dport: 80 });
    bad[14 + 20 + 12] = 0x30; // data offset 3: malformed, dropped, one event per run
    const measure = async (target: number): Promise<RateRun> => {
      let received = 0;
      const s = MonitorSession.open(dp.maps, (evs: MonitorEvent[]) => {
        for (const e of evs) if (e.type === 'drop') received++;
      });
      try {
        const g = await runGenerator({
          progFd: dp.programs.fromData.fd,
          frame: bad,
          rate: target,
          seconds: o.seconds,
          slice: target ? Math.max(64, Math.min(2000, Math.ceil(target / 1000))) : 2000,
        });
        const t0 = Date.now();
        while (received + s.lost() < g.sent && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
        const lost = s.lost();
        const run: RateRun = {
          target,
          sent: g.sent,
          received,
          lost,
          seconds: +g.seconds.toFixed(3),
          deliveredPerS: Math.round(received / g.seconds),
        };
        log(`events at ${target || 'full speed'}/s: sent ${run.sent}, received ${run.received}, lost ${run.lost}, ${run.deliveredPerS}/s`);
        return run;
      } finally {
        s.close();
      }
    };
    const rates: RateRun[] = [];
    for (const target of o.rates) {
      const r = await measure(target);
      rates.push(r);
      if (r.lost > 0 || r.received < r.sent) break;
    }
    const clean = rates.filter((r) => r.lost === 0 && r.received === r.sent);
    const sustainedNoLoss = clean.length ? clean.reduce((a, b) => (b.deliveredPerS > a.deliveredPerS ? b : a)) : null;
    const ceiling = o.smoke ? null : await measure(0);
    return {
      environment: environment(),
      options: o,
      packetNs,
      rates,
      sustainedNoLoss,
      ceiling,
      load: [+load0.toFixed(2), +loadavg()[0]!.toFixed(2)],
    };
  } finally {
    baseline?.close();
    node.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

export interface MonitorTarget {
  target: string;
  value: string;
  goal: string;
  met: boolean | null;
}

export function monitorTargets(r: MonitorBenchResults): MonitorTarget[] {
  const off = r.packetNs.find((p) => p.variant === 'monitor off');
  const before = r.packetNs.find((p) => p.variant === 'before');
  const out: MonitorTarget[] = [
    {
      target: 'events/s through a listener without loss',
      value: r.sustainedNoLoss ? `${r.sustainedNoLoss.deliveredPerS}/s (asked ${r.sustainedNoLoss.target}/s)` : 'none without loss',
      goal: '≥ 100000/s',
      met: r.sustainedNoLoss ? r.sustainedNoLoss.deliveredPerS >= 100_000 : false,
    },
  ];
  if (off && before) {
    for (const k of ['newFlowNs', 'establishedNs'] as const) {
      out.push({
        target: `${k === 'newFlowNs' ? 'new flow' : 'established'} ns/packet, monitor off vs before it existed`,
        value: `${off[k]} vs ${before[k]} ns (${(off[k] / before[k]).toFixed(2)}×)`,
        goal: 'costless: within noise (≤ 1.05×)',
        met: off[k] <= before[k] * 1.05,
      });
    }
  }
  return out;
}

export function renderMonitor(r: MonitorBenchResults): string {
  const lines = [
    '# bpfproxy bench monitor: what the monitor costs, and how much it carries',
    '',
    `${r.environment.date}, kernel ${r.environment.kernel}, ${r.environment.cpus} × ${r.environment.cpuModel}; ` +
      `load average ${r.load[0]} at the start, ${r.load[1]} at the end.${r.options.smoke ? ' **Smoke run: tiny sizes, figures mean nothing.**' : ''}`,
    '',
    `## Per packet (BPF_PROG_RUN, ${r.options.flows} distinct flows, median of ${r.options.rounds} rounds)`,
    '',
    '| variant | new flow (SYN) | established (ACK) |',
    '|---|---:|---:|',
    ...r.packetNs.map((p) => `| ${p.variant} | ${p.newFlowNs} ns | ${p.establishedNs} ns |`),
    '',
    '"monitor on": one listener, one flow-new event per SYN (ACKs emit nothing). "before": the object built before the monitor, over the same maps.',
    '',
    `## Events through one listener (${r.options.seconds} s per rate)`,
    '',
    '| asked | sent | received | lost | delivered/s |',
    '|---:|---:|---:|---:|---:|',
    ...[...r.rates, ...(r.ceiling ? [r.ceiling] : [])].map(
      (x) => `| ${x.target ? `${x.target}/s` : 'full speed'} | ${x.sent} | ${x.received} | ${x.lost} | ${x.deliveredPerS} |`,
    ),
    '',
    'Each event: a 272-byte record (header fields, the first 128 bytes of the frame, IPv6 addresses), read by the addon’s thread and decoded in JavaScript.',
    'The generator is a worker thread calling BPF_PROG_RUN; on a machine with few cores it, the reader thread and the decoding share them.',
    '',
    '## Targets',
    '',
    '| target | value | goal | |',
    '|---|---|---|---|',
    ...monitorTargets(r).map((t) => `| ${t.target} | ${t.value} | ${t.goal} | ${t.met === null ? '?' : t.met ? 'met' : 'MISSED'} |`),
    '',
  ];
  return lines.join('\n');
}

export function writeMonitorResults(dir: string, r: MonitorBenchResults): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(dir, 'report.md'), renderMonitor(r));
  return ['results.json', 'report.md'];
}
