/**
 * Packet generators for the datapath fuzzer:
 *   structured - valid Ethernet/IPv4/TCP/UDP/ICMP frames aimed at the
 *                frontends, backends and flows the datapath knows, with
 *                random flags, ports, options, TTLs and fragment bits, and
 *                ICMP errors quoting tracked or random tuples;
 *   mutated    - structured frames with bits flipped, bytes overwritten,
 *                cut short, extended, IHL / tot_len / doff corrupted,
 *                fragment bits set (checksums sometimes fixed up after);
 *   random     - random bytes of random length (0..1600).
 * Everything comes from one seeded Prng, so a run is reproducible from its
 * seed (the programs' own randomness, backend choice and SNAT ports, aside).
 */
import {
  csumFold,
  csumPartial,
  ethHeader,
  icmpErrorFrame,
  ipv4Header,
  l4Segment,
  SCTP_CHUNK,
  sctpPacket,
  type FrameSpec,
} from '../../../testkit/packet.js';
import type { DatapathMaps } from '../../../src/dataplane/bpf/loader.js';
import { type Prng } from './prng.js';
import { ETH_HLEN, fixIpCsum, fixL4Csum, inspect, ipString, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from './inspect.js';

export interface Endpoint {
  addr: string;
  port: number;
  proto: number;
}

/** What the generator aims at: read from the loaded maps, so it follows whatever the test programmed. */
export interface Topology {
  nodeIps: string[];
  /** Service frontends; NodePort wildcards expanded to every node address. */
  frontends: Endpoint[];
  backends: Endpoint[];
  /** Plausible sources: pods, external clients. */
  clients: string[];
  /** Other addresses worth hitting: hairpin/SNAT addresses, routers. */
  extra: string[];
}

export function topologyFromMaps(maps: DatapathMaps, clients: string[], extra: string[]): Topology {
  const nodeIps = maps.nodeIps.entries().map(([k]) => k.addr);
  const frontends: Endpoint[] = [];
  for (const [k] of maps.fe.entries()) {
    if (k.addr === '0.0.0.0') for (const a of nodeIps) frontends.push({ addr: a, port: k.port, proto: k.proto });
    else frontends.push({ addr: k.addr, port: k.port, proto: k.proto });
  }
  // backends carry no protocol: take it from the frontends using their set
  const protoOfSet = new Map<number, number>();
  for (const [k, v] of maps.fe.entries()) protoOfSet.set(v.setId, k.proto);
  const seen = new Set<string>();
  const backends: Endpoint[] = [];
  for (const [k, v] of maps.slots.entries()) {
    const proto = protoOfSet.get(k.setId) ?? IPPROTO_TCP;
    const key = `${v.addr}:${v.port}/${proto}`;
    if (seen.has(key)) continue;
    seen.add(key);
    backends.push({ addr: v.addr, port: v.port, proto });
  }
  if (frontends.length === 0) {
    throw new Error('fuzz topology: the frontend map (bpfproxy_fe) is empty; program some services before fuzzing');
  }
  return { nodeIps, frontends, backends, clients, extra };
}

/** A translated packet seen leaving a program: flows to reply to, continue or quote in ICMP errors. */
export interface Remembered {
  /** The tuple as the client sent it. */
  inTuple: { src: string; dst: string; sport: number; dport: number; proto: number };
  /** The IPv4 packet (no Ethernet) as the program sent it on. */
  outIp: Buffer;
  outTuple: { src: string; dst: string; sport: number; dport: number; proto: number };
}

export type GenKind = 'structured' | 'mutated' | 'random';

export interface Generated {
  kind: GenKind;
  /** Short label of what was built, for the coverage summary. */
  label: string;
  frame: Buffer;
}

export interface GeneratorMix {
  structured: number;
  mutated: number;
  random: number;
}

const MEMORY = 2048;

export class PacketGenerator {
  private readonly memory: Remembered[] = [];
  private memNext = 0;

  constructor(
    private readonly rng: Prng,
    private readonly topo: Topology,
    private readonly mix: GeneratorMix = { structured: 0.5, mutated: 0.35, random: 0.15 },
  ) {}

  next(): Generated {
    const kind = this.rng.weighted<GenKind>([
      [this.mix.structured, 'structured'],
      [this.mix.mutated, 'mutated'],
      [this.mix.random, 'random'],
    ]);
    if (kind === 'random') return this.random();
    const s = this.structured();
    if (kind === 'structured') return s;
    return this.mutate(s);
  }

  /** Record a packet a program translated, so later packets can belong to its flow. */
  remember(r: Remembered): void {
    if (this.memory.length < MEMORY) this.memory.push(r);
    else this.memory[this.memNext] = r;
    this.memNext = (this.memNext + 1) % MEMORY;
  }

  /** Forget remembered flows (the conntrack map was cleared). */
  forget(): void {
    this.memory.length = 0;
    this.memNext = 0;
  }

  // ---- addresses and ports ------------------------------------------------

  private randomAddr(): string {
    return ipString(this.rng.u32());
  }

  private someAddr(): string {
    const r = this.rng;
    return r.weighted<() => string>([
      [4, () => r.pick(this.topo.clients)],
      [2, () => r.pick(this.topo.frontends).addr],
      [2, () => (this.topo.backends.length ? r.pick(this.topo.backends).addr : this.randomAddr())],
      [1, () => (this.topo.extra.length ? r.pick(this.topo.extra) : this.randomAddr())],
      [1, () => (this.topo.nodeIps.length ? r.pick(this.topo.nodeIps) : this.randomAddr())],
      [2, () => this.randomAddr()],
    ])();
  }

  /** Client ports: mostly a small pool, so flows recur and collide. */
  private clientPort(): number {
    const r = this.rng;
    return r.weighted<() => number>([
      [70, () => 40000 + r.int(256)],
      [27, () => r.range(1, 65535)],
      [3, () => r.pick([0, 1, 65535, 20000, 29999, 30080])],
    ])();
  }

  private somePort(): number {
    const r = this.rng;
    return r.weighted<() => number>([
      [3, () => r.pick(this.topo.frontends).port],
      [2, () => (this.topo.backends.length ? r.pick(this.topo.backends).port : 80)],
      [3, () => this.clientPort()],
      [2, () => r.range(0, 65535)],
    ])();
  }

  // ---- structured ---------------------------------------------------------

  private ipSpec(src: string, dst: string): FrameSpec {
    const r = this.rng;
    const f: FrameSpec = {
      src,
      dst,
      ttl: r.weighted<number>([
        [85, 64],
        [5, 1],
        [3, 0],
        [3, 2],
        [4, r.range(0, 255)],
      ]),
      id: r.int(65536),
      dontFragment: r.chance(0.5),
      srcMac: r.chance(0.9) ? '02:00:00:00:00:01' : macOf(r.bytes(6)),
      dstMac: r.chance(0.9) ? '02:00:00:00:00:02' : macOf(r.bytes(6)),
    };
    if (r.chance(0.04)) f.moreFragments = true;
    if (r.chance(0.03)) f.fragOffset = r.range(1, 0x1fff);
    if (r.chance(0.08)) {
      const words = r.range(1, 10);
      f.options = r.chance(0.5) ? Buffer.alloc(words * 4, 1) /* NOPs */ : r.bytes(words * 4);
    }
    return f;
  }

  private payload(): Buffer {
    const r = this.rng;
    const n = r.weighted<number>([
      [60, r.int(65)],
      [25, r.int(600)],
      [15, r.range(1000, 1460)],
    ]);
    return r.chance(0.5) ? Buffer.alloc(n, 0x61) : r.bytes(n);
  }

  private tcpFlags(): number {
    const r = this.rng;
    return r.weighted<number>([
      [30, 0x02],
      [15, 0x10],
      [8, 0x12],
      [6, 0x11],
      [5, 0x04],
      [3, 0x14],
      [5, 0x18],
      [28, r.int(256)],
    ]);
  }

  private tcpSegment(f: FrameSpec, sport: number, dport: number, flags: number, payload: Buffer): Buffer {
    const r = this.rng;
    const optLen = r.chance(0.3) ? r.range(1, 10) * 4 : 0;
    const h = Buffer.alloc(20 + optLen);
    h.writeUInt16BE(sport, 0);
    h.writeUInt16BE(dport, 2);
    h.writeUInt32BE(r.u32(), 4);
    h.writeUInt32BE(r.chance(0.5) ? 0 : r.u32(), 8);
    h[12] = ((20 + optLen) / 4) << 4;
    h[13] = flags;
    h.writeUInt16BE(r.int(65536), 14);
    if (optLen) (r.chance(0.5) ? tcpOptions(optLen) : r.bytes(optLen)).copy(h, 20);
    const seg = Buffer.concat([h, payload]);
    seg.writeUInt16BE(csumFold(csumPartial(seg, csumPartial(pseudo(f.src, f.dst, IPPROTO_TCP, seg.length)))), 16);
    return seg;
  }

  /** An SCTP packet whose one chunk plays the part the TCP flags would (a reply's INIT ACK, ABORT...), or any chunk. */
  private sctpSegment(sport: number, dport: number, flags: number | undefined, payload: Buffer): Buffer {
    const r = this.rng;
    const C = SCTP_CHUNK;
    const chunk =
      flags === 0x12
        ? C.INIT_ACK
        : flags === 0x04 || flags === 0x14
          ? r.pick([C.ABORT, C.SHUTDOWN_COMPLETE])
          : flags === 0x11
            ? r.pick([C.SHUTDOWN, C.SHUTDOWN_ACK])
            : r.weighted<number>([
                [40, C.INIT],
                [20, C.DATA],
                [8, C.COOKIE_ECHO],
                [5, C.SACK],
                [5, C.HEARTBEAT],
                [4, C.ABORT],
                [4, C.SHUTDOWN],
                [14, r.int(256)],
              ]);
    const vtag = chunk === C.INIT && r.chance(0.9) ? 0 : r.u32();
    // An INIT's value is 16 bytes at least; any other chunk's anything.
    const value = chunk === C.INIT && payload.length < 16 ? Buffer.concat([r.bytes(16), payload]) : payload;
    const seg = sctpPacket({ proto: 'sctp', sport, dport, vtag, chunk, payload: value });
    if (r.chance(0.05)) seg.writeUInt16BE(seg.readUInt16BE(14) ^ (1 + r.int(0xffff)), 14); // a chunk length that lies (CRC still right)
    if (r.chance(0.05)) seg.writeUInt32LE((seg.readUInt32LE(8) ^ (1 + r.int(0xffffffff))) >>> 0, 8); // wrong CRC32c
    return seg;
  }

  private l4Frame(f: FrameSpec, proto: number, sport: number, dport: number, flags?: number): Buffer {
    const payload = this.payload();
    if (proto === IPPROTO_SCTP) {
      const seg = this.sctpSegment(sport, dport, flags, payload);
      return Buffer.concat([ethHeader(f), ipv4Header(f, proto, seg.length), seg]);
    }
    const seg =
      proto === IPPROTO_TCP
        ? this.tcpSegment(f, sport, dport, flags ?? this.tcpFlags(), payload)
        : l4Segment(f, { proto: 'udp', sport, dport, payload });
    if (proto === IPPROTO_UDP && this.rng.chance(0.1)) seg.writeUInt16BE(0, 6); // no checksum
    if (this.rng.chance(0.05)) seg.writeUInt16BE(this.rng.int(65536), proto === IPPROTO_TCP ? 16 : 6); // wrong checksum
    return Buffer.concat([ethHeader(f), ipv4Header(f, proto, seg.length), seg]);
  }

  private structured(): Generated {
    const r = this.rng;
    const have = this.memory.length > 0;
    const what = r.weighted<string>([
      [40, 'to-frontend'],
      [have ? 14 : 0, 'reply'],
      [have ? 8 : 0, 'fwd-again'],
      [8, 'to-backend'],
      [10, 'random-tuple'],
      [have ? 10 : 0, 'icmp-err-tracked'],
      [6, 'icmp-err-random'],
      [4, 'icmp-other'],
    ]);
    switch (what) {
      case 'to-frontend': {
        const fe = r.pick(this.topo.frontends);
        const proto = r.chance(0.92) ? fe.proto : r.pick([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP]);
        const src = r.chance(0.85) ? r.pick(this.topo.clients) : this.someAddr();
        const f = this.ipSpec(src, fe.addr);
        if (proto === IPPROTO_ICMP) return { kind: 'structured', label: 'icmp-to-frontend', frame: this.icmpOther(f) };
        return { kind: 'structured', label: `${pname(proto)}-to-frontend`, frame: this.l4Frame(f, proto, this.clientPort(), fe.port) };
      }
      case 'reply': {
        const m = r.pick(this.memory);
        const t = m.outTuple;
        const f = this.ipSpec(t.dst, t.src);
        const flags = r.weighted<number>([
          [30, 0x12],
          [25, 0x10],
          [10, 0x11],
          [8, 0x04],
          [5, 0x14],
          [22, r.int(256)],
        ]);
        return { kind: 'structured', label: `${pname(t.proto)}-reply`, frame: this.l4Frame(f, t.proto, t.dport, t.sport, flags) };
      }
      case 'fwd-again': {
        const m = r.pick(this.memory);
        const t = m.inTuple;
        const f = this.ipSpec(t.src, t.dst);
        return { kind: 'structured', label: `${pname(t.proto)}-fwd-again`, frame: this.l4Frame(f, t.proto, t.sport, t.dport) };
      }
      case 'to-backend': {
        const b = this.topo.backends.length ? r.pick(this.topo.backends) : r.pick(this.topo.frontends);
        const f = this.ipSpec(this.someAddr(), b.addr);
        return { kind: 'structured', label: `${pname(b.proto)}-to-backend`, frame: this.l4Frame(f, b.proto, this.clientPort(), b.port) };
      }
      case 'random-tuple': {
        const proto = r.pick([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]);
        const f = this.ipSpec(this.someAddr(), this.someAddr());
        return {
          kind: 'structured',
          label: `${pname(proto)}-random-tuple`,
          frame: this.l4Frame(f, proto, this.somePort(), this.somePort()),
        };
      }
      case 'icmp-err-tracked': {
        const m = r.pick(this.memory);
        // from the quoted destination itself, or from a router on the path
        const from = r.chance(0.6) ? m.outTuple.dst : r.chance(0.5) ? r.pick(['192.0.2.1', '192.0.2.12']) : this.someAddr();
        const f = this.ipSpec(from, m.outTuple.src);
        return { kind: 'structured', label: 'icmp-err-tracked', frame: this.icmpError(f, this.quoteOf(m.outIp)) };
      }
      case 'icmp-err-random': {
        const proto = r.pick([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, r.int(256)]);
        const qf = this.ipSpec(this.someAddr(), this.someAddr());
        let quoted: Buffer;
        if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP)
          quoted = this.l4Frame(qf, proto, this.somePort(), this.somePort()).subarray(ETH_HLEN);
        else quoted = Buffer.concat([ipv4Header(qf, proto, 8), r.bytes(8)]);
        const f = this.ipSpec(this.someAddr(), this.someAddr());
        return { kind: 'structured', label: 'icmp-err-random', frame: this.icmpError(f, this.quoteOf(quoted)) };
      }
      default: {
        const f = this.ipSpec(this.someAddr(), this.someAddr());
        return { kind: 'structured', label: 'icmp-other', frame: this.icmpOther(f) };
      }
    }
  }

  /** How much of a packet an ICMP error quotes: RFC 792 minimum, the TCP header, more, or cut short. */
  private quoteOf(ipPkt: Buffer): Buffer {
    const r = this.rng;
    const ihl = ((ipPkt[0] ?? 0x45) & 0x0f) * 4;
    const n = r.weighted<number>([
      [40, ihl + 8],
      [25, ihl + 20],
      [15, ipPkt.length],
      [20, r.int(ipPkt.length + 1)],
    ]);
    return Buffer.from(ipPkt.subarray(0, Math.min(n, ipPkt.length)));
  }

  private icmpError(f: FrameSpec, quoted: Buffer): Buffer {
    const r = this.rng;
    const [type, code] = r.weighted<[number, number]>([
      [50, [3, r.int(16)]],
      [15, [3, 4]],
      [15, [11, r.int(2)]],
      [10, [12, r.int(3)]],
      [10, [r.int(256), r.int(256)]],
    ]);
    const fr = icmpErrorFrame(f, type, code, quoted, r.pick([0, 68, 576, 1200, 1280, 1400, 1500, r.int(65536)]));
    if (r.chance(0.05)) fr.writeUInt16BE(r.int(65536), ETH_HLEN + (fr[ETH_HLEN]! & 0x0f) * 4 + 2);
    return fr;
  }

  private icmpOther(f: FrameSpec): Buffer {
    const r = this.rng;
    const h = Buffer.alloc(8);
    h[0] = r.pick([0, 8, 8, 13, 14, r.int(256)]);
    h[1] = r.chance(0.8) ? 0 : r.int(256);
    h.writeUInt32BE(r.u32(), 4);
    const msg = Buffer.concat([h, this.payload()]);
    msg.writeUInt16BE(csumFold(csumPartial(msg)), 2);
    return Buffer.concat([ethHeader(f), ipv4Header(f, IPPROTO_ICMP, msg.length), msg]);
  }

  // ---- mutated ------------------------------------------------------------

  private mutate(s: Generated): Generated {
    const r = this.rng;
    let b: Buffer = Buffer.from(s.frame);
    const done: string[] = [];
    const n = r.weighted<number>([
      [50, 1],
      [30, 2],
      [15, 3],
      [5, 4],
    ]);
    for (let i = 0; i < n; i++) {
      const m = r.weighted<string>([
        [14, 'flip'],
        [12, 'byte'],
        [10, 'trunc'],
        [6, 'extend'],
        [10, 'ihl'],
        [10, 'totlen'],
        [8, 'doff'],
        [8, 'frag'],
        [4, 'version'],
        [6, 'proto'],
        [3, 'ethertype'],
        [6, 'icmp-inner'],
        [3, 'udp-len'],
      ]);
      b = this.applyMutation(b, m);
      done.push(m);
    }
    if (r.chance(0.5)) {
      fixIpCsum(b);
      done.push('fixip');
    }
    if (r.chance(0.3)) {
      fixL4Csum(b);
      done.push('fixl4');
    }
    return { kind: 'mutated', label: `mut:${[...new Set(done)].sort().join('+')}`, frame: b };
  }

  private applyMutation(b: Buffer, m: string): Buffer {
    const r = this.rng;
    const info = inspect(b);
    const ip = ETH_HLEN;
    const l4 = ip + (info.ipv4 ? info.ihl : 20);
    /** A position, mostly in the headers. */
    const pos = () => (r.chance(0.8) ? r.int(Math.min(b.length, 80)) : r.int(b.length));
    switch (m) {
      case 'flip': {
        if (!b.length) return b;
        for (let k = r.range(1, 8); k > 0; k--) {
          const p = pos();
          b[p] = b[p]! ^ (1 << r.int(8));
        }
        return b;
      }
      case 'byte': {
        if (!b.length) return b;
        for (let k = r.range(1, 4); k > 0; k--) b[pos()] = r.pick([0, 0xff, 0x80, 0x7f, r.int(256)]);
        return b;
      }
      case 'trunc':
        return b.subarray(0, r.chance(0.7) ? r.int(Math.min(b.length, 80) + 1) : r.int(b.length + 1));
      case 'extend':
        return Buffer.concat([b, r.chance(0.5) ? r.bytes(r.range(1, 200)) : Buffer.alloc(r.range(1, 200))]);
      case 'ihl':
        if (b.length > ip) b[ip] = (b[ip]! & 0xf0) | r.int(16);
        return b;
      case 'totlen':
        if (b.length >= ip + 4) {
          const cur = b.readUInt16BE(ip + 2);
          b.writeUInt16BE(r.pick([0, 1, 19, 20, 0xffff, cur + 1, Math.max(0, cur - 1), r.int(65536), info.ihl || 20]) & 0xffff, ip + 2);
        }
        return b;
      case 'doff':
        if (info.proto === IPPROTO_TCP && b.length > l4 + 12) b[l4 + 12] = (r.int(16) << 4) | (b[l4 + 12]! & 0x0f);
        return b;
      case 'frag':
        if (b.length >= ip + 8) {
          const v = r.pick([0x2000, 0x4000, 0x6000, 0x2000 | r.range(1, 0x1fff), r.range(1, 0x1fff), 0x8000, r.int(65536)]);
          b.writeUInt16BE(v, ip + 6);
        }
        return b;
      case 'version':
        if (b.length > ip) b[ip] = (r.int(16) << 4) | (b[ip]! & 0x0f);
        return b;
      case 'proto':
        if (b.length > ip + 9) b[ip + 9] = r.pick([IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, r.int(256)]);
        return b;
      case 'ethertype':
        if (b.length >= 14) b.writeUInt16BE(r.pick([0x0806, 0x86dd, 0x8100, 0x88a8, r.int(65536)]), 12);
        return b;
      case 'icmp-inner': {
        // corrupt the quoted header of an ICMP error: IHL, version, protocol, length, ports
        if (info.proto !== IPPROTO_ICMP) return this.applyMutation(b, 'flip');
        const q = l4 + 8;
        if (b.length <= q) return b;
        const field = r.int(5);
        if (field === 0) b[q] = (b[q]! & 0xf0) | r.int(16);
        else if (field === 1) b[q] = (r.int(16) << 4) | (b[q]! & 0x0f);
        else if (field === 2 && b.length > q + 9) b[q + 9] = r.pick([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, r.int(256)]);
        else if (field === 3 && b.length > q + 3) b.writeUInt16BE(r.int(65536), q + 2);
        else b[q + r.int(b.length - q)] = r.int(256);
        return b;
      }
      case 'udp-len':
        if (info.proto === IPPROTO_UDP && b.length >= l4 + 6) b.writeUInt16BE(r.pick([0, 7, 8, 0xffff, r.int(65536)]), l4 + 4);
        return b;
      default:
        throw new Error(`fuzz generator: unknown mutation "${m}"`);
    }
  }

  // ---- random -------------------------------------------------------------

  private random(): Generated {
    const r = this.rng;
    const b = r.bytes(r.int(1601));
    let label = 'random';
    if (b.length >= 15 && r.chance(0.5)) {
      // past the first gates: IPv4 ethertype, version 4
      b.writeUInt16BE(0x0800, 12);
      b[14] = 0x40 | (r.chance(0.6) ? 5 : r.int(16));
      if (b.length >= 24 && r.chance(0.7)) b[23] = r.pick([IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP]);
      if (b.length >= 22 && r.chance(0.7)) b.writeUInt16BE(0, 20); // not a fragment
      if (r.chance(0.5)) fixIpCsum(b);
      label = 'random-ipv4';
    }
    return { kind: 'random', label, frame: b };
  }
}

const pname = (p: number): string =>
  p === IPPROTO_TCP ? 'tcp' : p === IPPROTO_UDP ? 'udp' : p === IPPROTO_SCTP ? 'sctp' : p === IPPROTO_ICMP ? 'icmp' : `p${p}`;

const macOf = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');

function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  const ip = (s: string) => s.split('.').map(Number);
  return Buffer.from([...ip(src), ...ip(dst), 0, proto, len >> 8, len & 0xff]);
}

/** Well-formed TCP options (MSS, SACK-permitted, timestamps, window scale), NOP-padded to len. */
function tcpOptions(len: number): Buffer {
  const all = Buffer.from([2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
  const out = Buffer.alloc(len, 1);
  all.copy(out, 0, 0, Math.min(len, all.length));
  return out;
}
