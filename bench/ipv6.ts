/**
 * IPv6 vs IPv4 per packet for the same service, through BPF_PROG_RUN (the
 * kernel times each run): ClusterIP TCP from a pod to an endpoint on this
 * node, the pod program (bpf/tc_pod.c) of one loaded object, in a namespace
 * of its own (a veth d0 carrying both families' routes, forwarding on), so
 * the FIB lookups are real. Two figures per family: a packet of an
 * established flow (one ACK run on fresh copies: the first fills the
 * conntrack entry's route cache, bpf/lib/fib.h, the rest use it, as a
 * flow's packets within a second do) and a flow's first packet
 * (distinct SYNs, each run once: conntrack created). IPv4 and IPv6 rounds
 * are interleaved so that their ratio comes from one run on the same
 * machine; the median of the rounds. Conntrack is emptied between rounds.
 * Issue 13's goal: IPv6 <= 1.1x IPv4. With a baseline object (another
 * build's bpfproxy.o, on the same maps) its pod program runs the same
 * packets in the same rounds, interleaved: before and after from one run.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { loadDatapath, rodataFor, type Datapath } from '../src/dataplane/bpf/loader.js';
import type { NativeBpfObject } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { ensureBpffs } from '../src/dataplane/bpf/bpffs.js';
import type { Frontend } from '../src/model/types.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import { frame, TCP } from '../testkit/packet.js';
import { frame6 } from '../testkit/packet6.js';
import { REPO_ROOT } from '../lab/lab.js';
import { renderIpv6Traffic, type Ipv6TrafficResults } from './ipv6-traffic.js';

export interface Ipv6BenchOptions {
  /** distinct flows per new-flow round; copies per established round */
  flows: number;
  rounds: number;
  /** another build's bpfproxy.o, measured beside this one (figures in `baseline`) */
  baselineObject?: string;
}
export const IPV6_FULL: Ipv6BenchOptions = { flows: 5000, rounds: 9 };
export const IPV6_SMOKE: Ipv6BenchOptions = { flows: 500, rounds: 3 };

export interface Ipv6Figure {
  flow: 'established' | 'new';
  ipv4Ns: number;
  ipv6Ns: number;
  /** IPv6 ns / IPv4 ns */
  ratio: number;
}

export interface Ipv6BenchResults {
  date: string;
  kernel: string;
  options: Ipv6BenchOptions;
  figures: Ipv6Figure[];
  /** the baseline object's figures, from the same rounds */
  baseline?: { object: string; figures: Ipv6Figure[] };
  targets: Array<{ target: string; value: string; goal: string; met: boolean }>;
  /** connections/s and TCP throughput in the lab (bench/ipv6-traffic.ts); absent with --no-traffic */
  traffic?: Ipv6TrafficResults;
}

const GOAL = 1.1;
const TC_ACT_REDIRECT = 7;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};
const r1 = (x: number) => Math.round(x * 10) / 10;

function clusterIp(ipAddr: string, backend: string): Frontend {
  return {
    kind: 'ClusterIP',
    ip: ipAddr,
    port: 80,
    protocol: 'TCP',
    servicePort: `bench/web-${ipAddr}:http/TCP`,
    externalLocal: false,
    internalLocal: false,
    affinityTimeout: 0,
    clusterBackends: [{ ip: backend, port: 8080, local: true }],
    localBackends: [{ ip: backend, port: 8080, local: true }],
  };
}

export async function runIpv6Bench(o: Ipv6BenchOptions, say: (s: string) => void): Promise<Ipv6BenchResults> {
  const ns = `bpxb-v6-${uniqueTag()}`;
  ensureBpffs('/sys/fs/bpf');
  const pinDir = `/sys/fs/bpf/bpxb-v6-${uniqueTag()}`;
  addNetns(ns);
  let dp: Datapath | undefined;
  let base: NativeBpfObject | undefined;
  try {
    sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
    sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
    sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    ip(ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
    ip(ns, 'link', 'set', 'd1', 'up');
    ip(ns, 'addr', 'add', '2001:db8:1::11/64', 'dev', 'd0', 'nodad');
    ip(ns, 'addr', 'add', '192.0.2.11/24', 'dev', 'd0');
    ip(ns, 'link', 'set', 'd0', 'up');
    ip(ns, '-6', 'route', 'add', 'fd00:10:244:1::/64', 'dev', 'd0');
    ip(ns, 'route', 'add', '10.244.1.0/24', 'dev', 'd0');
    ip(ns, '-6', 'neigh', 'add', 'fd00:10:244:1::11', 'lladdr', '02:00:00:00:01:11', 'dev', 'd0', 'nud', 'permanent');
    ip(ns, 'neigh', 'add', '10.244.1.11', 'lladdr', '02:00:00:00:01:11', 'dev', 'd0', 'nud', 'permanent');
    const prev = native().enterNetns(nsPath(ns));
    let d0 = 0;
    try {
      d0 = native()
        .interfaces()
        .find((i) => i.name === 'd0')!.index;
    } finally {
      native().restoreNetns(prev);
    }
    dp = await loadDatapath(join(REPO_ROOT, 'bpf', '.output'), pinDir, DEFAULT_DATAPATH);
    const rec = new BpfReconciler(dp.maps);
    rec.syncService('bench/web4', [clusterIp('10.96.0.10', '10.244.1.11')]);
    rec.syncService('bench/web6', [clusterIp('fd00:10:96::10', 'fd00:10:244:1::11')]);
    if (o.baselineObject) {
      const maxEntries: Record<string, number> = {};
      for (const m of Object.values(dp.maps) as Array<{ name: string; maxEntries: number }>) maxEntries[m.name] = m.maxEntries;
      base = await native().loadObject(o.baselineObject, { pinRoot: pinDir, rodata: rodataFor(DEFAULT_DATAPATH), maxEntries });
    }
    const baseFd = base?.programs().find((p) => p.name === 'bpfproxy_pod')?.fd;
    if (o.baselineObject && baseFd === undefined) throw new Error(`ipv6 bench: ${o.baselineObject} has no program bpfproxy_pod`);
    const ctx = Buffer.alloc(192);
    ctx.writeUInt32LE(d0, 36);
    ctx.writeUInt32LE(d0, 40);
    const payload = Buffer.alloc(64);
    const v4 = (sport: number, flags: number) =>
      frame({ src: '10.244.1.99', dst: '10.96.0.10' }, { proto: 'tcp', sport, dport: 80, flags, payload });
    const v6 = (sport: number, flags: number) =>
      frame6({ src: 'fd00:10:244:1::99', dst: 'fd00:10:96::10' }, { proto: 'tcp', sport, dport: 80, flags, payload });
    const maps = dp.maps;
    const emptyCt = () => {
      maps.ct.deleteMany(maps.ct.entries().map(([k]) => k));
      maps.ct6.deleteMany(maps.ct6.entries().map(([k]) => k));
    };
    const run = (fd: number, frames: Buffer[]): number => {
      const r = native().progTestRunEach(fd, frames, { ctx });
      const redirected = r.retvals.filter((x) => x === TC_ACT_REDIRECT).length;
      if (redirected !== frames.length)
        throw new Error(`ipv6 bench: ${frames.length - redirected} of ${frames.length} packets were not redirected to the endpoint`);
      return r.totalNs / frames.length;
    };
    const samples = () => ({ est4: [] as number[], est6: [] as number[], new4: [] as number[], new6: [] as number[] });
    const ns_ = samples();
    const baseNs = samples();
    const oneRound = (fd: number, into: ReturnType<typeof samples>, round: number) => {
      emptyCt();
      const ports = Array.from({ length: o.flows }, (_, i) => 1024 + ((round * 7919 + i) % 60_000));
      into.new4.push(
        run(
          fd,
          ports.map((p) => v4(p, TCP.SYN)),
        ),
      );
      into.new6.push(
        run(
          fd,
          ports.map((p) => v6(p, TCP.SYN)),
        ),
      );
      const est4 = v4(ports[0]!, TCP.ACK);
      const est6 = v6(ports[0]!, TCP.ACK);
      into.est4.push(
        run(
          fd,
          Array.from({ length: o.flows }, () => est4),
        ),
      );
      into.est6.push(
        run(
          fd,
          Array.from({ length: o.flows }, () => est6),
        ),
      );
    };
    const back = native().enterNetns(nsPath(ns));
    try {
      for (let round = 0; round < o.rounds; round++) {
        if (baseFd !== undefined) oneRound(baseFd, baseNs, round);
        oneRound(dp.programs.fromPod.fd, ns_, round);
        say(`round ${round + 1}/${o.rounds}`);
      }
    } finally {
      native().restoreNetns(back);
    }
    const fig = (flow: Ipv6Figure['flow'], a: number[], b: number[]): Ipv6Figure => {
      const ipv4Ns = median(a);
      const ipv6Ns = median(b);
      return { flow, ipv4Ns: r1(ipv4Ns), ipv6Ns: r1(ipv6Ns), ratio: Math.round((ipv6Ns / ipv4Ns) * 100) / 100 };
    };
    const figures = [fig('established', ns_.est4, ns_.est6), fig('new', ns_.new4, ns_.new6)];
    return {
      date: new Date().toISOString(),
      kernel: release(),
      options: o,
      figures,
      ...(o.baselineObject
        ? {
            baseline: {
              object: o.baselineObject,
              figures: [fig('established', baseNs.est4, baseNs.est6), fig('new', baseNs.new4, baseNs.new6)],
            },
          }
        : {}),
      targets: figures.map((f) => ({
        target: `IPv6 / IPv4 ns per packet, ${f.flow === 'new' ? "a flow's first packet" : 'an established flow'} (pod to ClusterIP, BPF_PROG_RUN)`,
        value: `${f.ratio}x (${f.ipv6Ns} vs ${f.ipv4Ns} ns)`,
        goal: `<= ${GOAL}x`,
        met: f.ratio <= GOAL,
      })),
    };
  } finally {
    base?.close();
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
    delNetns(ns);
  }
}

export function renderIpv6(r: Ipv6BenchResults): string {
  return [
    '# IPv6 vs IPv4 per packet (BPF_PROG_RUN)',
    '',
    `${r.date}, kernel ${r.kernel}; ${r.options.rounds} rounds of ${r.options.flows} packets, medians, IPv4 and IPv6 interleaved.`,
    '',
    'ClusterIP TCP from a pod to an endpoint on this node, the pod program (bpf/tc_pod.c), FIB lookups real.',
    '',
    '| flow | IPv4 ns | IPv6 ns | IPv6 / IPv4 |',
    '| --- | ---: | ---: | ---: |',
    ...r.figures.map((f) => `| ${f.flow} | ${f.ipv4Ns} | ${f.ipv6Ns} | ${f.ratio}x |`),
    ...(r.baseline
      ? [
          '',
          `Baseline \`${r.baseline.object}\`, the same rounds:`,
          '',
          '| flow | IPv4 ns | IPv6 ns | IPv6 / IPv4 |',
          '| --- | ---: | ---: | ---: |',
          ...r.baseline.figures.map((f) => `| ${f.flow} | ${f.ipv4Ns} | ${f.ipv6Ns} | ${f.ratio}x |`),
        ]
      : []),
    '',
    ...r.targets.map((t) => `- ${t.met ? 'met' : '**missed**'}: ${t.target}: ${t.value} (goal ${t.goal})`),
    '',
    ...(r.traffic ? [renderIpv6Traffic(r.traffic)] : []),
  ].join('\n');
}

export function writeIpv6Results(dir: string, r: Ipv6BenchResults): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(dir, 'report.md'), renderIpv6(r));
  return ['results.json', 'report.md'];
}
