/**
 * Build and parse Ethernet/IPv4/TCP/UDP/ICMP frames, with checksums, for
 * BPF_PROG_RUN tests and benchmarks. Small on purpose: what the datapath
 * handles, nothing more.
 */

export const ETH_P_IP = 0x0800;
export const PROTO = { ICMP: 1, TCP: 6, UDP: 17 } as const;
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export interface L4 {
  proto: 'tcp' | 'udp';
  sport: number;
  dport: number;
  flags?: number;
  seq?: number;
  ack?: number;
  payload?: Buffer;
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
export const ipStr = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
const macStr = (b: Buffer, o: number): string => [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** One's complement sum of 16-bit words. */
export function csumPartial(b: Buffer, seed = 0): number {
  let s = seed;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += (b[b.length - 1] ?? 0) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
export const csumFold = (s: number): number => ~s & 0xffff;

function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  return Buffer.from([...ipBytes(src), ...ipBytes(dst), 0, proto, len >> 8, len & 0xff]);
}

export function l4Segment(ip: Ipv4Spec, l4: L4): Buffer {
  const payload = l4.payload ?? Buffer.alloc(0);
  if (l4.proto === 'udp') {
    const h = Buffer.alloc(8);
    h.writeUInt16BE(l4.sport, 0);
    h.writeUInt16BE(l4.dport, 2);
    h.writeUInt16BE(8 + payload.length, 4);
    const seg = Buffer.concat([h, payload]);
    let c = csumFold(csumPartial(seg, csumPartial(pseudo(ip.src, ip.dst, PROTO.UDP, seg.length))));
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
  seg.writeUInt16BE(csumFold(csumPartial(seg, csumPartial(pseudo(ip.src, ip.dst, PROTO.TCP, seg.length)))), 16);
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

/** A whole frame: Ethernet + IPv4 + TCP/UDP. */
export function frame(f: FrameSpec, l4: L4): Buffer {
  const seg = l4Segment(f, l4);
  return Buffer.concat([ethHeader(f), ipv4Header(f, PROTO[l4.proto === 'tcp' ? 'TCP' : 'UDP'], seg.length), seg]);
}

/** An ICMP error frame quoting `quoted` (an IPv4 packet without Ethernet). */
export function icmpErrorFrame(f: FrameSpec, type: number, code: number, quoted: Buffer, mtu = 0): Buffer {
  const h = Buffer.alloc(8);
  h[0] = type;
  h[1] = code;
  if (type === 3 && code === 4) h.writeUInt16BE(mtu, 6);
  const msg = Buffer.concat([h, quoted]);
  msg.writeUInt16BE(csumFold(csumPartial(msg)), 2);
  return Buffer.concat([ethHeader(f), ipv4Header(f, PROTO.ICMP, msg.length), msg]);
}

export interface Parsed {
  srcMac: string;
  dstMac: string;
  ethType: number;
  src: string;
  dst: string;
  proto: number;
  ttl: number;
  totalLen: number;
  ipCsumOk: boolean;
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  seq?: number;
  ack?: number;
  l4CsumOk?: boolean;
  icmp?: { type: number; code: number; csumOk: boolean; mtu: number; inner?: Parsed };
  payload: Buffer;
}

/** Parse an IPv4 packet (no Ethernet), verifying every checksum it can. */
export function parseIp(b: Buffer, quoted = false): Parsed {
  const ihl = ((b[0] ?? 0) & 0x0f) * 4;
  const totalLen = b.readUInt16BE(2);
  const proto = b[9] ?? 0;
  const src = ipStr(b, 12);
  const dst = ipStr(b, 16);
  const p: Parsed = {
    srcMac: '',
    dstMac: '',
    ethType: ETH_P_IP,
    src,
    dst,
    proto,
    ttl: b[8] ?? 0,
    totalLen,
    ipCsumOk: csumFold(csumPartial(b.subarray(0, ihl))) === 0,
    payload: Buffer.alloc(0),
  };
  const l4 = b.subarray(ihl, quoted ? b.length : totalLen);
  if (proto === PROTO.TCP || proto === PROTO.UDP) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    if (proto === PROTO.TCP && l4.length >= 20) {
      p.seq = l4.readUInt32BE(4);
      p.ack = l4.readUInt32BE(8);
      p.tcpFlags = l4[13] ?? 0;
      p.payload = l4.subarray(((l4[12] ?? 0) >> 4) * 4);
    } else if (proto === PROTO.UDP) {
      p.payload = l4.subarray(8);
    }
    if (!quoted) {
      const c = proto === PROTO.UDP ? l4.readUInt16BE(6) : -1;
      p.l4CsumOk = c === 0 ? true : csumFold(csumPartial(l4, csumPartial(pseudo(src, dst, proto, l4.length)))) === 0;
    }
  } else if (proto === PROTO.ICMP) {
    p.icmp = {
      type: l4[0] ?? 0,
      code: l4[1] ?? 0,
      mtu: l4.length >= 8 ? l4.readUInt16BE(6) : 0,
      csumOk: csumFold(csumPartial(l4)) === 0,
    };
    if ([3, 11, 12].includes(p.icmp.type) && l4.length >= 28) p.icmp.inner = parseIp(l4.subarray(8), true);
  }
  return p;
}

export function parseFrame(b: Buffer): Parsed {
  const ethType = b.readUInt16BE(12);
  if (ethType !== ETH_P_IP) {
    return {
      srcMac: macStr(b, 6),
      dstMac: macStr(b, 0),
      ethType,
      src: '',
      dst: '',
      proto: 0,
      ttl: 0,
      totalLen: 0,
      ipCsumOk: false,
      payload: b.subarray(14),
    };
  }
  return { ...parseIp(b.subarray(14)), srcMac: macStr(b, 6), dstMac: macStr(b, 0), ethType };
}

/** The TCP checksum of a quoted segment is only checkable when whole. */
export function quotedL4CsumOk(quotedIp: Buffer): boolean {
  const p = parseIp(quotedIp, true);
  const ihl = ((quotedIp[0] ?? 0) & 0x0f) * 4;
  const l4 = quotedIp.subarray(ihl, p.totalLen);
  if (p.proto === PROTO.UDP && l4.readUInt16BE(6) === 0) return true;
  return csumFold(csumPartial(l4, csumPartial(pseudo(p.src, p.dst, p.proto, l4.length)))) === 0;
}
