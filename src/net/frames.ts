/**
 * Ethernet/IPv4/TCP/UDP/SCTP frames with correct checksums: what `bpfproxy
 * trace` runs through the programs (testkit/packet.ts builds on it for the
 * tests and benchmarks). Small on purpose: what the datapath handles.
 */

import { ipv6Bytes } from './ip6.js';

export const ETH_P_IP = 0x0800;
export const PROTO = { ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 } as const;
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;
/** SCTP chunk types (RFC 9260 3.2). */
export const SCTP_CHUNK = {
  DATA: 0,
  INIT: 1,
  INIT_ACK: 2,
  SACK: 3,
  HEARTBEAT: 4,
  ABORT: 6,
  SHUTDOWN: 7,
  SHUTDOWN_ACK: 8,
  COOKIE_ECHO: 10,
  COOKIE_ACK: 11,
  SHUTDOWN_COMPLETE: 14,
} as const;

export interface L4 {
  proto: 'tcp' | 'udp' | 'sctp';
  sport: number;
  dport: number;
  /** TCP flags */
  flags?: number;
  seq?: number;
  ack?: number;
  /** SCTP: verification tag (0 by default, as an INIT carries) */
  vtag?: number;
  /** SCTP: type of the one chunk (INIT by default); payload is its value */
  chunk?: number;
  payload?: Buffer;
}

/** CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as SCTP and iSCSI use it. */
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const x of b) c = (CRC32C_TABLE[(c ^ x) & 0xff]! ^ (c >>> 8)) >>> 0;
  return (c ^ 0xffffffff) >>> 0;
}

/** The CRC32c an SCTP packet carries: over the packet with the checksum field zero, stored little-endian (RFC 9260 appendix A). */
export function sctpChecksum(pkt: Buffer): number {
  const z = Buffer.from(pkt);
  z.writeUInt32LE(0, 8);
  return crc32c(z);
}

/** A minimal INIT chunk value: initiate tag, a_rwnd, streams, initial TSN. */
export function sctpInitValue(initiateTag = 0x01020304): Buffer {
  const v = Buffer.alloc(16);
  v.writeUInt32BE(initiateTag >>> 0, 0);
  v.writeUInt32BE(65536, 4);
  v.writeUInt16BE(10, 8);
  v.writeUInt16BE(10, 10);
  v.writeUInt32BE(1, 12);
  return v;
}

/** An SCTP packet: common header and one chunk (padded to 4 bytes), with its CRC32c. */
export function sctpPacket(l4: L4): Buffer {
  const chunk = l4.chunk ?? SCTP_CHUNK.INIT;
  const value = l4.payload ?? (chunk === SCTP_CHUNK.INIT ? sctpInitValue() : Buffer.alloc(0));
  const h = Buffer.alloc(16);
  h.writeUInt16BE(l4.sport, 0);
  h.writeUInt16BE(l4.dport, 2);
  h.writeUInt32BE((l4.vtag ?? 0) >>> 0, 4);
  h[12] = chunk;
  h.writeUInt16BE(4 + value.length, 14);
  const pkt = Buffer.concat([h, value, Buffer.alloc((4 - (value.length % 4)) % 4)]);
  pkt.writeUInt32LE(sctpChecksum(pkt), 8);
  return pkt;
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  ttl?: number;
  id?: number;
  fragOffset?: number;
  moreFragments?: boolean;
  dontFragment?: boolean;
  options?: Buffer;
}

export interface FrameSpec extends Ipv4Spec {
  srcMac?: string;
  dstMac?: string;
}

const ipBytes = (ip: string): number[] => ip.split('.').map(Number);
const macBytes = (m: string): number[] => m.split(':').map((x) => parseInt(x, 16));

/** One's complement sum of 16-bit words. */
export function csumPartial(b: Buffer, seed = 0): number {
  let s = seed;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += (b[b.length - 1] ?? 0) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
export const csumFold = (s: number): number => ~s & 0xffff;

/** The TCP/UDP pseudo header the checksum covers. */
export function pseudoHeader(src: string, dst: string, proto: number, len: number): Buffer {
  return Buffer.from([...ipBytes(src), ...ipBytes(dst), 0, proto, len >> 8, len & 0xff]);
}

export function l4Segment(ip: Ipv4Spec, l4: L4): Buffer {
  if (l4.proto === 'sctp') return sctpPacket(l4);
  const payload = l4.payload ?? Buffer.alloc(0);
  if (l4.proto === 'udp') {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(l4.sport, 0);
    h.writeUInt16BE(l4.dport, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    const seg = Buffer.concat([h, payload]);
    let c = csumFold(csumPartial(seg, csumPartial(pseudoHeader(ip.src, ip.dst, PROTO.UDP, seg.length))));
    if (c === 0) c = 0xffff;
    seg.writeUInt16BE(c, 6);
    return seg;
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
  seg.writeUInt16BE(csumFold(csumPartial(seg, csumPartial(pseudoHeader(ip.src, ip.dst, PROTO.TCP, seg.length)))), 16);
  return seg;
}

export function ipv4Header(ip: Ipv4Spec, proto: number, payloadLen: number): Buffer {
  const opts = ip.options ?? Buffer.alloc(0);
  const hl = 20 + opts.length;
  const h = Buffer.alloc(hl);
  h[0] = 0x40 | (hl / 4);
  h.writeUInt16BE(hl + payloadLen, 2);
  h.writeUInt16BE(ip.id ?? 1, 4);
  h.writeUInt16BE(((ip.dontFragment ? 1 : 0) << 14) | ((ip.moreFragments ? 1 : 0) << 13) | (ip.fragOffset ?? 0), 6);
  h[8] = ip.ttl ?? 64;
  h[9] = proto;
  Buffer.from(ipBytes(ip.src)).copy(h, 12);
  Buffer.from(ipBytes(ip.dst)).copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(csumFold(csumPartial(h)), 10);
  return h;
}

export function ethHeader(f: FrameSpec): Buffer {
  return Buffer.from([
    ...macBytes(f.dstMac ?? '02:00:00:00:00:02'),
    ...macBytes(f.srcMac ?? '02:00:00:00:00:01'),
    ETH_P_IP >> 8,
    ETH_P_IP & 0xff,
  ]);
}

const L4_PROTO = { tcp: PROTO.TCP, udp: PROTO.UDP, sctp: PROTO.SCTP } as const;

/** A whole frame: Ethernet + IPv4 + TCP/UDP/SCTP. */
export function frame(f: FrameSpec, l4: L4): Buffer {
  const seg = l4Segment(f, l4);
  return Buffer.concat([ethHeader(f), ipv4Header(f, L4_PROTO[l4.proto], seg.length), seg]);
}

export const ETH_P_IPV6 = 0x86dd;

/** A whole frame: Ethernet + IPv6 (no extension header) + TCP/UDP/SCTP, checksums over the IPv6 pseudo-header. */
export function frame6(f: Omit<FrameSpec, keyof Ipv4Spec> & { src: string; dst: string; hopLimit?: number }, l4: L4): Buffer {
  const seg = l4Segment({ src: '0.0.0.0', dst: '0.0.0.0' }, l4);
  const nh = L4_PROTO[l4.proto];
  if (l4.proto !== 'sctp') {
    const at = l4.proto === 'udp' ? 6 : 16;
    seg.writeUInt16BE(0, at);
    const pseudo = Buffer.alloc(40);
    ipv6Bytes(f.src).copy(pseudo, 0);
    ipv6Bytes(f.dst).copy(pseudo, 16);
    pseudo.writeUInt32BE(seg.length, 32);
    pseudo[39] = nh;
    let c = csumFold(csumPartial(seg, csumPartial(pseudo)));
    if (c === 0 && l4.proto === 'udp') c = 0xffff;
    seg.writeUInt16BE(c, at);
  }
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(seg.length, 4);
  h[6] = nh;
  h[7] = f.hopLimit ?? 64;
  ipv6Bytes(f.src).copy(h, 8);
  ipv6Bytes(f.dst).copy(h, 24);
  const eth = ethHeader({
    src: '0.0.0.0',
    dst: '0.0.0.0',
    ...(f.srcMac ? { srcMac: f.srcMac } : {}),
    ...(f.dstMac ? { dstMac: f.dstMac } : {}),
  });
  eth.writeUInt16BE(ETH_P_IPV6, 12);
  return Buffer.concat([eth, h, seg]);
}
