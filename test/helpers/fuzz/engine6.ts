/**
 * IPv6 frames for the engine fuzz (test/engine-fuzz.test.ts): structured
 * ones aimed at the engine's IPv6 frontends, node addresses, backends and
 * the replies of flows it opened (remembered from its output), with
 * extension headers, fragments, ICMPv6, forged lengths and hop limits; then
 * truncated, byte-mutated and random copies. And the checks of what the
 * engine sends: a well-formed IPv6 packet whose L4 checksum is as right as
 * it came in (rejects fully right), hop limit one less.
 */
import { csumFold, csumPartial, TCP } from '../../../src/net/frames.js';
import { frame6, parseFrame6, pseudo6, NH, type Ext, type Frame6Spec, type L4v6 } from '../../../testkit/packet6.js';
import type { Prng } from './prng.js';

export interface Topology6 {
  nodeIps: string[];
  frontends: Array<{ addr: string; port: number; proto: number }>;
  backends: string[];
  clients: string[];
}

interface Flow6 {
  /** what the backend saw: the reply goes the other way */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}

const MACS = { srcMac: '02:00:00:00:00:c1', dstMac: '02:00:00:00:0a:01' };

export class Engine6Generator {
  private readonly flows: Flow6[] = [];

  constructor(
    private readonly rng: Prng,
    private readonly topo: Topology6,
  ) {}

  /** Remember a forwarded packet's output tuple (its reply is a frame to aim at). */
  remember(out: Buffer): void {
    const p = parseFrame6(out);
    if (p.sport === undefined || (p.nh !== NH.TCP && p.nh !== NH.UDP)) return;
    const f = { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport!, proto: p.nh };
    if (this.flows.length < 4096) this.flows.push(f);
    else this.flows[this.rng.int(this.flows.length)] = f;
  }

  private l4(proto: number, sport: number, dport: number): L4v6 {
    const payload = this.rng.bytes(this.rng.pick([0, 1, 4, 18, 64, 300]));
    if (proto === NH.UDP) return { proto: 'udp', sport, dport, payload };
    const flags = this.rng.weighted<number>([
      [6, TCP.SYN],
      [3, TCP.ACK],
      [1, TCP.ACK | TCP.PSH],
      [1, TCP.FIN | TCP.ACK],
      [1, TCP.RST],
      [1, this.rng.int(256)],
    ]);
    return { proto: 'tcp', sport, dport, flags, seq: this.rng.u32(), ack: this.rng.u32(), payload };
  }

  private spec(src: string, dst: string): Frame6Spec {
    const s: Frame6Spec = {
      src,
      dst,
      ...MACS,
      hopLimit: this.rng.weighted([
        [20, 64],
        [1, 1],
        [1, 0],
        [1, 2],
        [1, 255],
      ]),
    };
    if (this.rng.chance(0.06)) {
      const ext: Ext = this.rng.pick<Ext>([
        { type: 'hop' },
        { type: 'dst' },
        { type: 'routing' },
        { type: 'frag', offset: this.rng.int(8), more: this.rng.chance(0.5) },
      ]);
      s.ext = [ext];
    }
    return s;
  }

  private structured(): Buffer {
    const t = this.topo;
    const r = this.rng;
    const kind = r.weighted<string>([
      [8, 'frontend'],
      [3, 'reply'],
      [2, 'nodeport-elsewhere'],
      [1, 'icmp6'],
      [1, 'to-backend'],
    ]);
    const client = r.pick(t.clients);
    const sport = r.chance(0.7) ? 32768 + r.int(28000) : r.int(65536);
    if (kind === 'reply' && this.flows.length) {
      const f = r.pick(this.flows);
      return frame6({ ...this.spec(f.dst, f.src), srcMac: '02:00:00:00:00:b1' }, this.l4(f.proto, f.dport, f.sport));
    }
    if (kind === 'icmp6') {
      return frame6(this.spec(client, r.pick(t.nodeIps)), {
        proto: 'icmp6',
        type: r.pick([1, 2, 3, 4, 128, 135, 136]),
        code: r.int(5),
        body: r.bytes(24),
      });
    }
    if (kind === 'to-backend') {
      return frame6(this.spec(client, r.pick(t.backends)), this.l4(r.pick([NH.TCP, NH.UDP]), sport, 8080));
    }
    const fe = r.pick(t.frontends);
    const dst = kind === 'nodeport-elsewhere' ? 'fd00:9::9' : fe.addr;
    return frame6(this.spec(client, dst), this.l4(r.chance(0.9) ? fe.proto : r.pick([NH.TCP, NH.UDP]), sport, fe.port));
  }

  /** The next frame: structured (most), or a truncated / byte-mutated / random one. */
  next(): Buffer {
    const r = this.rng;
    const base = this.structured();
    const how = r.weighted<string>([
      [70, 'as is'],
      [10, 'truncated'],
      [12, 'mutated'],
      [4, 'length forged'],
      [4, 'random'],
    ]);
    if (how === 'as is') return base;
    if (how === 'truncated') return base.subarray(0, r.int(base.length));
    if (how === 'random') {
      const b = r.bytes(14 + r.int(200));
      b[12] = 0x86;
      b[13] = 0xdd;
      if (b.length > 14) b[14] = 0x60 | (b[14]! & 0x0f);
      return b;
    }
    const b = Buffer.from(base);
    if (how === 'length forged') {
      if (b.length >= 20) b.writeUInt16BE(r.int(65536), 18);
      return b;
    }
    for (let k = 1 + r.int(4); k > 0; k--) {
      const at = 14 + r.int(Math.max(1, b.length - 14));
      if (at < b.length) b[at] = r.int(256);
    }
    return b;
  }
}

/** Whether the TCP/UDP/ICMPv6 checksum of an IPv6 frame (no extension headers) holds; undefined when not TCP/UDP/ICMPv6 or cut short. */
export function l4CsumOk6(f: Buffer): boolean | undefined {
  if (f.length < 54 || f.readUInt16BE(12) !== 0x86dd) return undefined;
  const nh = f[20]!;
  const plen = f.readUInt16BE(18);
  if ((nh !== NH.TCP && nh !== NH.UDP && nh !== NH.ICMPV6) || 54 + plen > f.length) return undefined;
  const seg = f.subarray(54, 54 + plen);
  const src = parseFrame6(f).src;
  const dst = parseFrame6(f).dst;
  return csumFold(csumPartial(seg, csumPartial(pseudo6(src, dst, nh, seg.length)))) === 0;
}

/** Whether the L4 checksum field holds what a sender with checksum offload leaves (the folded pseudo-header sum). */
export function looksPartial6(f: Buffer): boolean {
  if (f.length < 54) return false;
  const nh = f[20]!;
  const plen = f.readUInt16BE(18);
  const at = 54 + (nh === NH.TCP ? 16 : 6);
  if (at + 2 > f.length || 54 + plen > f.length) return false;
  const p = parseFrame6(f);
  return f.readUInt16BE(at) === (~csumFold(csumPartial(pseudo6(p.src, p.dst, nh, plen))) & 0xffff);
}

/** What is wrong with an IPv6 frame the engine sent (in: the frame it came as). */
export function checkOutput6(out: Buffer, inp: Buffer, rejected: boolean): string[] {
  const why: string[] = [];
  if (out.length < 54 || out.readUInt16BE(12) !== 0x86dd || out[14]! >> 4 !== 6) return ['not an IPv6 frame'];
  const plen = out.readUInt16BE(18);
  if (54 + plen !== out.length && !(54 + plen < out.length && !rejected)) why.push(`payload length ${plen} for a ${out.length}-byte frame`);
  if (rejected) {
    if (l4CsumOk6(out) !== true) why.push(`reject checksum wrong (next header ${out[20]})`);
    return why;
  }
  const before = l4CsumOk6(inp);
  const want = before === false && looksPartial6(inp) ? true : before;
  const after = l4CsumOk6(out);
  if (after !== want) why.push(`L4 checksum ${before} in, ${after} out`);
  if (out[21] !== inp[21]! - 1) why.push(`hop limit ${inp[21]} in, ${out[21]} out`);
  return why;
}
