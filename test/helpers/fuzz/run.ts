/**
 * The datapath fuzz loop: generated packets through every loaded program
 * with BPF_PROG_RUN, invariants checked per packet and, every round, over
 * the conntrack map. Bounded by packet count and by wall-clock time.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { BpfError, native } from '../../../src/native/index.js';
import type { Datapath } from '../../../src/dataplane/bpf/loader.js';
import { REASONS } from '../../../src/dataplane/bpf/reasons.js';
import { inNetns } from '../env.js';
import { checkCtPeers, emptyCounts, type PeerProblem, type PeerProblemKind } from './conntrack.js';
import { PacketGenerator, type GenKind, type Topology } from './generate.js';
import { Prng } from './prng.js';
import { ETH_HLEN, inspect, ipString, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, TCP_RST, type FrameInfo } from './inspect.js';

const BPF_PROG_TYPE_SCHED_CLS = 3;
const BPF_PROG_TYPE_SCHED_ACT = 4;
const BPF_PROG_TYPE_XDP = 6;

const TC_VERDICTS: Record<number, string> = { 0: 'TC_ACT_OK', 2: 'TC_ACT_SHOT', 7: 'TC_ACT_REDIRECT' };
const XDP_VERDICTS: Record<number, string> = { 1: 'XDP_DROP', 2: 'XDP_PASS', 3: 'XDP_TX', 4: 'XDP_REDIRECT' };
/** Verdicts after which the (possibly rewritten) frame goes on. */
const FORWARDING = new Set(['TC_ACT_OK', 'TC_ACT_REDIRECT', 'XDP_PASS', 'XDP_TX', 'XDP_REDIRECT']);
const DROPPING = new Set(['TC_ACT_SHOT', 'XDP_DROP']);

/** The growth allowed for a frame a program forwards, unless it is an ICMP reply it built. */
export const MAX_GROWTH = 100;

export interface FuzzOptions {
  seed: number;
  /** Packets per program. */
  packetsPerProgram: number;
  /** Hard bound on wall-clock time for the whole run. */
  seconds: number;
  /** Conntrack is checked, then cleared, every this many packets (all programs). */
  roundPackets: number;
  /** Read the reason counters after every packet to tie reasons to verdicts (about half the speed). */
  attribute: boolean;
  /** Namespace whose devices and routes BPF_PROG_RUN sees (FIB lookups), and the ingress ifindex there. */
  netns: string;
  ifindex: number;
  topology: Topology;
  /** Programs of the object outside dp.programs (the XDP data program), fuzzed alike. */
  extraPrograms?: Array<{ role: string; fd: number; name: string }>;
  /** Examples kept per check. */
  keep?: number;
}

export interface Violation {
  check: string;
  program: string;
  packet: number;
  gen: GenKind | 'conntrack';
  label: string;
  message: string;
  verdict?: string;
  input?: string;
  output?: string;
}

export interface ProgramStats {
  role: string;
  name: string;
  type: string;
  packets: number;
  verdicts: Record<string, number>;
  /** verdict/reason(s) counted for the packet: only with attribution. */
  verdictReasons: Record<string, number>;
  /** The first input frame (hex) seen for each verdict/reason, to replay one with runProg. */
  examples: Record<string, string>;
  /** Frames the kernel refused to run (errno), e.g. EINVAL for frames shorter than Ethernet. */
  refused: Record<string, number>;
  kernelNs: number;
}

export interface FuzzReport {
  seed: number;
  packets: number;
  seconds: number;
  pps: number;
  stoppedBy: 'count' | 'time';
  attribute: boolean;
  programs: ProgramStats[];
  skippedPrograms: string[];
  /** Reason counter increments over the run, by name. */
  reasons: Record<string, number>;
  labels: Record<string, number>;
  kinds: Record<string, number>;
  ct: {
    rounds: number;
    maxEntries: number;
    peak: number;
    pairs: number;
    superseded: number;
    expired: number;
    problems: Record<PeerProblemKind, number>;
  };
  violations: Violation[];
  violationCounts: Record<string, number>;
}

interface Prog {
  role: string;
  fd: number;
  name: string;
  kind: 'tc' | 'xdp';
  ctx: Buffer;
  stats: ProgramStats;
}

const inc = (r: Record<string, number>, k: string, n = 1) => {
  r[k] = (r[k] ?? 0) + n;
};

const hex = (b: Buffer, max = 2048): string =>
  b.length > max ? `${b.subarray(0, max).toString('hex')}...(${b.length} bytes)` : b.toString('hex');

function tcCtx(ifindex: number): Buffer {
  // struct __sk_buff: ifindex at 40, ingress_ifindex at 36 (see test/helpers/progrun.ts)
  const b = Buffer.alloc(192);
  b.writeUInt32LE(ifindex, 36);
  b.writeUInt32LE(ifindex, 40);
  return b;
}

function xdpCtx(ifindex: number): Buffer {
  // struct xdp_md: data, data_end, data_meta, ingress_ifindex (12), rx_queue_index, egress_ifindex
  const b = Buffer.alloc(24);
  b.writeUInt32LE(ifindex, 12);
  return b;
}

/** The XDP context for one frame: the kernel wants data_end equal to its length. */
function xdpCtxFor(base: Buffer, len: number): Buffer {
  const b = Buffer.from(base);
  b.writeUInt32LE(len, 4);
  return b;
}

/** Reason counters summed over CPUs, read raw for speed. */
class ReasonReader {
  private readonly stride: number;
  private readonly names: string[];
  readonly count: number;

  constructor(private readonly dp: Datapath) {
    this.count = dp.maps.reasons.maxEntries;
    this.stride = Math.ceil(dp.maps.reasons.value.size / 8) * 8;
    this.names = Array.from({ length: this.count }, (_, i) => REASONS[i]?.name ?? `reason#${i}`);
  }

  name(i: number): string {
    return this.names[i] ?? `reason#${i}`;
  }

  read(): Float64Array {
    const m = this.dp.maps.reasons;
    const d = native().mapDump(m.fd, m.key.size, m.valueLen, 64);
    const out = new Float64Array(this.count);
    for (let i = 0; i < d.count; i++) {
      const idx = d.keys.readUInt32LE(i * 4);
      let s = 0;
      for (let c = 0; c < m.cpus; c++) {
        const o = i * m.valueLen + c * this.stride;
        s += d.values.readUInt32LE(o) + d.values.readUInt32LE(o + 4) * 0x1_0000_0000;
      }
      if (idx < this.count) out[idx] = s;
    }
    return out;
  }
}

/**
 * Frames BPF_PROG_RUN refuses with EINVAL before running the program: shorter
 * than Ethernet, or (since Linux 6.x) shorter than Ethernet plus the IPv4 /
 * IPv6 header their EtherType announces. Such runts cannot be fuzzed here.
 */
export function kernelRefuses(b: Buffer): boolean {
  if (b.length < ETH_HLEN) return true;
  const et = b.readUInt16BE(12);
  return (et === 0x0800 && b.length < ETH_HLEN + 20) || (et === 0x86dd && b.length < ETH_HLEN + 40);
}

function isGeneratedReply(inp: FrameInfo, out: FrameInfo): boolean {
  if (!inp.ipv4 || !out.ipv4 || out.src !== inp.dst || out.dst !== inp.src) return false;
  if (out.proto === IPPROTO_ICMP && inp.proto !== IPPROTO_ICMP) return true;
  return out.proto === IPPROTO_TCP && (out.tcpFlags & TCP_RST) !== 0 && out.len === ETH_HLEN + 40;
}

/**
 * Invariants on one packet's result; returns the failed checks with a message each.
 *  - the verdict is one the hook allows (TC: OK, SHOT, REDIRECT; XDP: never ABORTED);
 *  - a frame the program changed and lets go on (pass / redirect):
 *    - grew by at most MAX_GROWTH bytes, unless it is an ICMP reply the program built;
 *    - still parses as IPv4 if the input did;
 *    - has a valid IPv4 header checksum if the input had one (rewrites are
 *      incremental, so a bad input sum stays bad) or if it is a reply the program built;
 *    - same for the TCP/UDP checksum (UDP 0 = none) and the ICMP checksum, checked
 *      over the bytes the IPv4 total length covers; the quoted header of a
 *      translated ICMP error keeps a valid checksum;
 *    - an SCTP CRC32c that was right stays right, and one that was wrong stays
 *      wrong (the datapath folds the change in; it never recomputes).
 */
export function checkResult(
  kind: 'tc' | 'xdp',
  verdict: string | undefined,
  retval: number,
  input: Buffer,
  inp: FrameInfo,
  output: Buffer,
): Array<[string, string]> {
  const bad: Array<[string, string]> = [];
  if (verdict === undefined) {
    bad.push([kind === 'xdp' && retval === 0 ? 'xdp-aborted' : 'verdict', `retval ${retval} is not an allowed ${kind} verdict`]);
    return bad;
  }
  if (!FORWARDING.has(verdict) || output.equals(input)) return bad;
  const out = inspect(output);
  const reply = isGeneratedReply(inp, out);
  if (output.length > input.length + MAX_GROWTH && !(reply && out.proto === IPPROTO_ICMP)) {
    bad.push(['growth', `output ${output.length} bytes from input ${input.length} (limit +${MAX_GROWTH} unless an ICMP reply)`]);
  }
  if (inp.ipv4 && !out.ipv4) {
    bad.push(['output-not-ipv4', 'an IPv4 input was rewritten into something that no longer parses as IPv4']);
    return bad;
  }
  if (verdict.endsWith('REDIRECT') && !out.ipv4) {
    bad.push(['redirect-not-ipv4', 'a frame redirected by the program does not parse as IPv4']);
  }
  if (!out.ipv4) return bad;
  if ((inp.ipCsum === 'ok' || reply) && out.ipCsum !== 'ok') {
    bad.push(['ip-csum', `output IPv4 header checksum ${out.ipCsum} (input ${inp.ipCsum}${reply ? ', generated reply' : ''})`]);
  }
  const sameL4 = inp.ipv4 && inp.proto === out.proto;
  if (out.proto === IPPROTO_TCP || out.proto === IPPROTO_UDP) {
    if ((sameL4 && inp.l4Csum === 'ok') || reply) {
      if (out.l4Csum !== 'ok')
        bad.push([
          'l4-csum',
          `output ${out.proto === IPPROTO_TCP ? 'TCP' : 'UDP'} checksum ${out.l4Csum} (input ${inp.l4Csum}${reply ? ', generated reply' : ''})`,
        ]);
    }
  } else if (out.proto === IPPROTO_SCTP && sameL4 && inp.l4Csum !== 'n/a' && out.l4Csum !== inp.l4Csum) {
    bad.push(['sctp-crc', `output SCTP CRC32c ${out.l4Csum} (input ${inp.l4Csum}): a right one must stay right, a wrong one wrong`]);
  } else if (out.proto === IPPROTO_ICMP) {
    if ((sameL4 && inp.icmpCsum === 'ok') || reply) {
      if (out.icmpCsum !== 'ok') {
        // bytes past the IPv4 total length (Ethernet padding, trailers) are outside every checksum
        const trailer = input.length > ETH_HLEN + inp.totLen;
        bad.push([
          trailer ? 'icmp-csum-trailer' : 'icmp-csum',
          `output ICMP checksum ${out.icmpCsum} (input ${inp.icmpCsum}${reply ? ', generated reply' : ''}` +
            `${trailer ? `; frame ${input.length} bytes carries ${input.length - ETH_HLEN - inp.totLen} past the IPv4 total length ${inp.totLen}` : ''})`,
        ]);
      }
    }
    if (sameL4 && inp.innerIpCsum === 'ok' && out.innerIpCsum === 'bad') {
      bad.push(['icmp-inner-ip-csum', 'quoted IPv4 header checksum broken by the translation']);
    }
  }
  return bad;
}

export async function runFuzz(dp: Datapath, o: FuzzOptions): Promise<FuzzReport> {
  const keep = o.keep ?? 5;
  const rng = new Prng(o.seed);
  const gen = new PacketGenerator(rng, o.topology);
  const reasons = new ReasonReader(dp);
  const progs: Prog[] = [];
  const skipped: string[] = [];
  const all: Array<[string, { fd: number; name: string }]> = [
    ...(Object.entries(dp.programs) as Array<[string, { fd: number; name: string }]>),
    ...(o.extraPrograms ?? []).map((p) => [p.role, p] as [string, { fd: number; name: string }]),
  ];
  for (const [role, p] of all) {
    const type = native().progInfo(p.fd).type;
    const kind =
      type === BPF_PROG_TYPE_XDP ? 'xdp' : type === BPF_PROG_TYPE_SCHED_CLS || type === BPF_PROG_TYPE_SCHED_ACT ? 'tc' : undefined;
    if (!kind) {
      skipped.push(`${role} (${p.name}, program type ${type}: no packet context to fuzz)`);
      continue;
    }
    progs.push({
      role,
      fd: p.fd,
      name: p.name,
      kind,
      ctx: kind === 'xdp' ? xdpCtx(o.ifindex) : tcCtx(o.ifindex),
      stats: { role, name: p.name, type: kind, packets: 0, verdicts: {}, verdictReasons: {}, examples: {}, refused: {}, kernelNs: 0 },
    });
  }
  if (progs.length === 0) throw new Error(`fuzz: no TC or XDP program in the datapath (${skipped.join('; ')})`);

  const report: FuzzReport = {
    seed: o.seed,
    packets: 0,
    seconds: 0,
    pps: 0,
    stoppedBy: 'count',
    attribute: o.attribute,
    programs: progs.map((p) => p.stats),
    skippedPrograms: skipped,
    reasons: {},
    labels: {},
    kinds: {},
    ct: { rounds: 0, maxEntries: dp.maps.ct.maxEntries, peak: 0, pairs: 0, superseded: 0, expired: 0, problems: emptyCounts() },
    violations: [],
    violationCounts: {},
  };
  const perCheck: Record<string, number> = {};
  const violate = (v: Violation) => {
    inc(report.violationCounts, v.check);
    inc(perCheck, v.check);
    if ((perCheck[v.check] ?? 0) <= keep) report.violations.push(v);
  };

  const ctRound = (packet: number) => {
    const entries = dp.maps.ct.entries();
    report.ct.rounds++;
    report.ct.peak = Math.max(report.ct.peak, entries.length);
    if (entries.length > dp.maps.ct.maxEntries) {
      violate({
        check: 'ct-count',
        program: '-',
        packet,
        gen: 'conntrack',
        label: 'round',
        message: `${entries.length} conntrack entries in a map of max_entries ${dp.maps.ct.maxEntries}`,
      });
    }
    const pr = checkCtPeers(entries, native().monotonicNs());
    report.ct.pairs += pr.pairs;
    report.ct.superseded += pr.superseded;
    report.ct.expired += pr.expired;
    for (const [k, n] of Object.entries(pr.counts) as Array<[PeerProblemKind, number]>) report.ct.problems[k] += n;
    for (const p of pr.problems) violate(ctViolation(p, packet));
    // start the next round from an empty table, so a round never fills the map (LRU eviction would orphan halves)
    if (entries.length) dp.maps.ct.deleteMany(entries.map(([k]) => k));
    gen.forget();
  };

  const total = o.packetsPerProgram * progs.length;
  const deadline = performance.now() + o.seconds * 1000;
  const start = performance.now();
  const reasonsAtStart = reasons.read();
  let before = reasonsAtStart;
  let i = 0;
  let nextRound = o.roundPackets > 0 ? o.roundPackets : Infinity;
  const CHUNK = Math.max(1, Math.min(2048, o.roundPackets > 0 ? o.roundPackets : 2048));
  while (i < total) {
    if (performance.now() >= deadline) {
      report.stoppedBy = 'time';
      break;
    }
    const end = Math.min(total, i + CHUNK);
    inNetns(o.netns, () => {
      for (; i < end; i++) {
        const prog = progs[i % progs.length]!;
        const g = gen.next();
        if (g.kind === 'mutated') for (const m of g.label.slice(4).split('+')) inc(report.labels, `mut:${m}`);
        else inc(report.labels, g.label);
        inc(report.kinds, g.kind);
        prog.stats.packets++;
        const input = g.frame;
        let r: { retval: number; data: Buffer; durationNs: number };
        try {
          const ctx = prog.kind === 'xdp' ? xdpCtxFor(prog.ctx, input.length) : prog.ctx;
          const out = native().progTestRun(prog.fd, input, { ctx, dataOutLen: input.length + 4096 });
          // XDP: the output starts with the metadata the program added (ctx.data says how much)
          const meta = prog.kind === 'xdp' && out.ctx ? out.ctx.readUInt32LE(0) : 0;
          r = meta ? { ...out, data: out.data.subarray(meta) } : out;
        } catch (e) {
          if (!(e instanceof BpfError)) throw e;
          inc(prog.stats.refused, e.code);
          if (!(e.errno === 22 && kernelRefuses(input))) {
            violate({
              check: 'test-run-error',
              program: prog.role,
              packet: i,
              gen: g.kind,
              label: g.label,
              message: `BPF_PROG_RUN failed: ${e.message} (input ${input.length} bytes)`,
              input: hex(input),
            });
          }
          continue;
        }
        prog.stats.kernelNs += r.durationNs;
        const table = prog.kind === 'xdp' ? XDP_VERDICTS : TC_VERDICTS;
        const verdict = table[r.retval];
        inc(prog.stats.verdicts, verdict ?? `retval(${r.retval})`);
        const changed = !r.data.equals(input);
        if (verdict === undefined || (changed && FORWARDING.has(verdict))) {
          const inp = inspect(input);
          for (const [check, message] of checkResult(prog.kind, verdict, r.retval, input, inp, r.data)) {
            violate({
              check,
              program: prog.role,
              packet: i,
              gen: g.kind,
              label: g.label,
              message,
              verdict: verdict ?? String(r.retval),
              input: hex(input),
              output: hex(r.data),
            });
          }
          if (verdict) remember(gen, inp, r.data);
        }
        if (o.attribute) {
          const now = reasons.read();
          const counted: string[] = [];
          let n = 0;
          for (let k = 0; k < now.length; k++) {
            const d = now[k]! - before[k]!;
            if (d > 0) {
              counted.push(reasons.name(k));
              n += d;
            }
          }
          before = now;
          const vr = `${verdict ?? r.retval}/${counted.join('+') || '-'}`;
          inc(prog.stats.verdictReasons, vr);
          if (prog.stats.examples[vr] === undefined) prog.stats.examples[vr] = hex(input, 256);
          if (verdict && DROPPING.has(verdict) && n === 0) {
            violate({
              check: 'drop-without-reason',
              program: prog.role,
              packet: i,
              gen: g.kind,
              label: g.label,
              verdict,
              message: 'dropped without counting a reason (bpf/lib/drop.h: every drop is counted)',
              input: hex(input),
            });
          }
          if (n > 1) {
            violate({
              check: 'reason-counted-twice',
              program: prog.role,
              packet: i,
              gen: g.kind,
              label: g.label,
              verdict: verdict ?? String(r.retval),
              message: `one packet counted ${n} times (${counted.join(', ')})`,
              input: hex(input),
            });
          }
        }
      }
    });
    report.packets = i;
    if (i >= nextRound && i < total) {
      ctRound(i);
      nextRound = i + o.roundPackets;
    }
    await yieldToLoop();
  }
  report.packets = i;
  report.seconds = (performance.now() - start) / 1000;
  report.pps = report.packets / report.seconds;
  ctRound(i);
  const reasonsAtEnd = reasons.read();
  for (let k = 0; k < reasonsAtEnd.length; k++) {
    const d = reasonsAtEnd[k]! - reasonsAtStart[k]!;
    if (d) report.reasons[reasons.name(k)] = d;
  }
  return report;
}

function remember(gen: PacketGenerator, inp: FrameInfo, output: Buffer): void {
  const out = inspect(output);
  if (!inp.ipv4 || !out.ipv4 || out.proto !== inp.proto) return;
  if (out.proto !== IPPROTO_TCP && out.proto !== IPPROTO_UDP && out.proto !== IPPROTO_SCTP) return;
  if (out.src === inp.src && out.dst === inp.dst && out.sport === inp.sport && out.dport === inp.dport) return;
  if (isGeneratedReply(inp, out)) return;
  const ipEnd = Math.min(output.length, ETH_HLEN + Math.max(out.totLen, out.ihl));
  gen.remember({
    inTuple: { src: ipString(inp.src), dst: ipString(inp.dst), sport: inp.sport, dport: inp.dport, proto: inp.proto },
    outIp: Buffer.from(output.subarray(ETH_HLEN, ipEnd)),
    outTuple: { src: ipString(out.src), dst: ipString(out.dst), sport: out.sport, dport: out.dport, proto: out.proto },
  });
}

function ctViolation(p: PeerProblem, packet: number): Violation {
  const v = p.value;
  const peer = p.peer
    ? ` peer dir=${p.peer.dir} state=${p.peer.state} flags=${p.peer.flags} svc=${p.peer.svcId} nat=${p.peer.natSaddr}:${p.peer.natSport}>${p.peer.natDaddr}:${p.peer.natDport}`
    : '';
  return {
    check: `ct-${p.kind}`,
    program: '-',
    packet,
    gen: 'conntrack',
    label: 'round',
    message:
      `entry ${p.key} dir=${v.dir} state=${v.state} flags=${v.flags} svc=${v.svcId} ` +
      `nat=${v.natSaddr}:${v.natSport}>${v.natDaddr}:${v.natDport}; peer key ${p.peerKey}${peer}`,
  };
}

/** A human summary of a report, one line per fact, for t.comment. */
export function formatReport(r: FuzzReport): string {
  const lines: string[] = [];
  const hist = (h: Record<string, number>) =>
    Object.entries(h)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}=${n}`)
      .join(' ');
  lines.push(
    `fuzz seed=${r.seed} (FUZZ_SEED=${r.seed} to replay) packets=${r.packets} in ${r.seconds.toFixed(1)}s ` +
      `= ${Math.round(r.pps)} packets/s, stopped by ${r.stoppedBy}, reason attribution ${r.attribute ? 'on' : 'off'}`,
  );
  for (const p of r.programs) {
    lines.push(
      `  ${p.role} (${p.name}, ${p.type}): ${p.packets} packets, kernel ${(p.kernelNs / Math.max(1, p.packets)).toFixed(0)} ns/packet`,
    );
    lines.push(`    verdicts: ${hist(p.verdicts)}`);
    if (Object.keys(p.verdictReasons).length) lines.push(`    verdict/reason: ${hist(p.verdictReasons)}`);
    if (Object.keys(p.refused).length) lines.push(`    refused by the kernel: ${hist(p.refused)}`);
  }
  for (const s of r.skippedPrograms) lines.push(`  skipped: ${s}`);
  lines.push(`  reasons counted: ${hist(r.reasons) || 'none'}`);
  lines.push(`  generated: ${hist(r.kinds)}`);
  lines.push(`  labels: ${hist(r.labels)}`);
  lines.push(
    `  conntrack: ${r.ct.rounds} rounds, peak ${r.ct.peak}/${r.ct.maxEntries} entries, ${r.ct.pairs} consistent pairs, ` +
      `${r.ct.superseded} superseded (newer flow won the reply tuple), ${r.ct.expired} expired; problems: ${hist(r.ct.problems)}`,
  );
  lines.push(`  violations: ${hist(r.violationCounts) || 'none'}`);
  for (const v of r.violations) {
    lines.push(
      `  ! ${v.check} program=${v.program} packet=${v.packet} gen=${v.gen}/${v.label}${v.verdict ? ` verdict=${v.verdict}` : ''}: ${v.message}`,
    );
    if (v.input) lines.push(`      in:  ${v.input}`);
    if (v.output) lines.push(`      out: ${v.output}`);
  }
  return lines.join('\n');
}
