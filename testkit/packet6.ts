/**
 * Ethernet/IPv6 frames with extension headers and TCP/UDP/ICMPv6/SCTP, with
 * checksums (pseudo-header included; SCTP's CRC32c has none), and their parser: the IPv6 side of
 * testkit/packet.ts for BPF_PROG_RUN tests, the fuzzer and benchmarks.
 */
import { csumFold, csumPartial, sctpChecksum, sctpPacket, TCP, type L4 } from '../src/net/frames.js';
import { ipv6Bytes, readIpv6 } from '../src/net/ip6.js';

export const ETH_P_IPV6 = 0x86dd;
export const NH = { HOP: 0, TCP: 6, UDP: 17, ROUTING: 43, FRAGMENT: 44, AH: 51, ICMPV6: 58, NONE: 59, DSTOPTS: 60, SCTP: 132 } as const;
export const ICMP6 = {
  DEST_UNREACH: 1,
  PKT_TOOBIG: 2,
  TIME_EXCEED: 3,
  PARAMPROB: 4,
  ECHO_REQUEST: 128,
  RS: 133,
  RA: 134,
  NS: 135,
  NA: 136,
} as const;
export { TCP };

/** An extension header: its type and its body after the 2 bytes (next header, length); padded to 8 bytes. */
export type Ext =
  | { type: 'hop' | 'dst' | 'routing'; body?: Buffer; /** the length byte as written, to forge it */ lenByte?: number }
  | { type: 'frag'; offset: number; more: boolean; id?: number };

export interface Frame6Spec {
  src: string;
  dst: string;
  hopLimit?: number;
  ext?: Ext[];
  srcMac?: string;
  dstMac?: string;
  /** payload length as written (to forge it); default the real one */
  payloadLen?: number;
}

export type L4v6 = L4 | { proto: 'icmp6'; type: number; code: number; body?: Buffer };

const macBytes = (m: string): number[] => m.split(':').map((x) => parseInt(x, 16));

export function pseudo6(src: string, dst: string, nh: number, len: number): Buffer {
  const b = Buffer.alloc(40);
  ipv6Bytes(src).copy(b, 0);
  ipv6Bytes(dst).copy(b, 16);
  b.writeUInt32BE(len, 32);
  b[39] = nh;
  return b;
}

/** The upper-layer segment with its checksum over the IPv6 pseudo-header. */
export function l4Segment6(src: string, dst: string, l4: L4v6): { nh: number; seg: Buffer } {
  if (l4.proto === 'icmp6') {
    const seg = Buffer.concat([Buffer.from([l4.type, l4.code, 0, 0]), l4.body ?? Buffer.alloc(4)]);
    seg.writeUInt16BE(csumFold(csumPartial(seg, csumPartial(pseudo6(src, dst, NH.ICMPV6, seg.length)))), 2);
    return { nh: NH.ICMPV6, seg };
  }
  // SCTP's CRC32c covers the SCTP packet alone: the same bytes as over IPv4.
  if (l4.proto === 'sctp') return { nh: NH.SCTP, seg: sctpPacket(l4) };
  const payload = l4.payload ?? Buffer.alloc(0);
  if (l4.proto === 'udp') {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(l4.sport, 0);
    h.writeUInt16BE(l4.dport, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    const seg = Buffer.concat([h, payload]);
    let c = csumFold(csumPartial(seg, csumPartial(pseudo6(src, dst, NH.UDP, seg.length))));
    if (c === 0) c = 0xffff;
    seg.writeUInt16BE(c, 6);
    return { nh: NH.UDP, seg };
  }
  const h = Buffer.alloc(20);
  h.writeUInt16BE(l4.sport, 0);
  h.writeUInt16BE(l4.dport, 2);
  h.writeUInt32BE((l4.seq ?? 1000) >>> 0, 4);
  h.writeUInt32BE((l4.ack ?? 0) >>> 0, 8);
  h[12] = 5 << 4;
  h[13] = l4.flags ?? TCP.SYN;
  h.writeUInt16BE(65535, 14);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(csumFold(csumPartial(seg, csumPartial(pseudo6(src, dst, NH.TCP, seg.length)))), 16);
  return { nh: NH.TCP, seg };
}

function extBytes(e: Ext, next: number): { nh: number; b: Buffer } {
  if (e.type === 'frag') {
    const b = Buffer.alloc(8);
    b[0] = next;
    b.writeUInt16BE((e.offset << 3) | (e.more ? 1 : 0), 2);
    b.writeUInt32BE(e.id ?? 0x1234, 4);
    return { nh: NH.FRAGMENT, b };
  }
  const body = e.body ?? Buffer.from([1, 4, 0, 0, 0, 0]); // a PadN option filling 6 bytes
  const len = Math.ceil((body.length + 2) / 8) * 8;
  const b = Buffer.alloc(len);
  b[0] = next;
  b[1] = e.lenByte ?? len / 8 - 1;
  body.copy(b, 2);
  return { nh: e.type === 'hop' ? NH.HOP : e.type === 'dst' ? NH.DSTOPTS : NH.ROUTING, b };
}

/** The IPv6 packet (no Ethernet): header, extension headers, then `upper` (nh its type). */
export function ipv6Packet(f: Frame6Spec, nh: number, upper: Buffer): Buffer {
  let next = nh;
  const exts: Buffer[] = [];
  for (const e of [...(f.ext ?? [])].reverse()) {
    const x = extBytes(e, next);
    exts.unshift(x.b);
    next = x.nh;
  }
  const rest = Buffer.concat([...exts, upper]);
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(f.payloadLen ?? rest.length, 4);
  h[6] = next;
  h[7] = f.hopLimit ?? 64;
  ipv6Bytes(f.src).copy(h, 8);
  ipv6Bytes(f.dst).copy(h, 24);
  return Buffer.concat([h, rest]);
}

export function ethHeader6(f: Pick<Frame6Spec, 'srcMac' | 'dstMac'>): Buffer {
  return Buffer.from([
    ...macBytes(f.dstMac ?? '02:00:00:00:00:02'),
    ...macBytes(f.srcMac ?? '02:00:00:00:00:01'),
    ETH_P_IPV6 >> 8,
    ETH_P_IPV6 & 0xff,
  ]);
}

/** A whole frame: Ethernet + IPv6 (+ extension headers) + TCP/UDP/ICMPv6/SCTP. */
export function frame6(f: Frame6Spec, l4: L4v6): Buffer {
  const { nh, seg } = l4Segment6(f.src, f.dst, l4);
  return Buffer.concat([ethHeader6(f), ipv6Packet(f, nh, seg)]);
}

/** An ICMPv6 error frame quoting `quoted` (an IPv6 packet without Ethernet); `info`: the MTU of packet too big. */
export function icmp6ErrorFrame(f: Frame6Spec, type: number, code: number, quoted: Buffer, info = 0): Buffer {
  const body = Buffer.alloc(4 + quoted.length);
  body.writeUInt32BE(info >>> 0, 0);
  quoted.copy(body, 4);
  return frame6(f, { proto: 'icmp6', type, code, body });
}

export interface Parsed6 {
  ethType: number;
  src: string;
  dst: string;
  /** the upper-layer protocol after the extension headers */
  nh: number;
  hopLimit: number;
  payloadLen: number;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  /** SCTP: verification tag and first chunk's type */
  vtag?: number;
  chunk?: number;
  seq?: number;
  ack?: number;
  l4CsumOk?: boolean;
  icmp?: { type: number; code: number; info: number; csumOk: boolean; inner?: Parsed6 };
  payload: Buffer;
}

const isExt = (nh: number) => nh === NH.HOP || nh === NH.ROUTING || nh === NH.DSTOPTS || nh === NH.FRAGMENT;

/** Parse an IPv6 packet (no Ethernet), checking the L4 checksum when it is whole (not `quoted`). */
export function parseIpv6(b: Buffer, quoted = false): Parsed6 {
  const payloadLen = b.readUInt16BE(4);
  const src = readIpv6(b, 8);
  const dst = readIpv6(b, 24);
  let nh = b[6] ?? 0;
  let off = 40;
  while (isExt(nh) && off + 8 <= b.length) {
    const len = nh === NH.FRAGMENT ? 8 : ((b[off + 1] ?? 0) + 1) * 8;
    nh = b[off] ?? 0;
    off += len;
  }
  const end = quoted ? b.length : Math.min(b.length, 40 + payloadLen);
  const l4 = b.subarray(off, end);
  const p: Parsed6 = { ethType: ETH_P_IPV6, src, dst, nh, hopLimit: b[7] ?? 0, payloadLen, payload: Buffer.alloc(0) };
  const csumOk = () => csumFold(csumPartial(l4, csumPartial(pseudo6(src, dst, nh, l4.length)))) === 0;
  if ((nh === NH.TCP || nh === NH.UDP) && l4.length >= 8) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    if (nh === NH.TCP && l4.length >= 20) {
      p.seq = l4.readUInt32BE(4);
      p.ack = l4.readUInt32BE(8);
      p.tcpFlags = l4[13] ?? 0;
      p.payload = l4.subarray(((l4[12] ?? 0) >> 4) * 4);
    } else if (nh === NH.UDP) p.payload = l4.subarray(8);
    if (!quoted) p.l4CsumOk = csumOk();
  } else if (nh === NH.SCTP && l4.length >= 8) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    p.vtag = l4.readUInt32BE(4);
    if (l4.length >= 16) p.chunk = l4[12] ?? 0;
    p.payload = l4.subarray(12);
    if (!quoted) p.l4CsumOk = l4.length >= 12 && sctpChecksum(l4) === l4.readUInt32LE(8);
  } else if (nh === NH.ICMPV6 && l4.length >= 8) {
    p.icmp = { type: l4[0] ?? 0, code: l4[1] ?? 0, info: l4.readUInt32BE(4), csumOk: quoted ? false : csumOk() };
    if (p.icmp.type < 128 && l4.length >= 48) p.icmp.inner = parseIpv6(l4.subarray(8), true);
    p.payload = l4.subarray(8);
  }
  return p;
}

export function parseFrame6(b: Buffer): Parsed6 {
  const ethType = b.readUInt16BE(12);
  if (ethType !== ETH_P_IPV6) return { ethType, src: '', dst: '', nh: 0, hopLimit: 0, payloadLen: 0, payload: b.subarray(14) };
  return parseIpv6(b.subarray(14));
}

/** Whether a quoted TCP/UDP segment's checksum is right (when it was quoted whole). */
export function quotedL4CsumOk6(quotedIp: Buffer): boolean {
  const p = parseIpv6(quotedIp, true);
  const l4 = quotedIp.subarray(40, 40 + p.payloadLen);
  return csumFold(csumPartial(l4, csumPartial(pseudo6(p.src, p.dst, p.nh, l4.length)))) === 0;
}
