/**
 * Build and parse Ethernet/IPv4/TCP/UDP/SCTP/ICMP frames, with checksums, for
 * BPF_PROG_RUN tests and benchmarks. The builder is the agent's own
 * (src/net/frames.ts, which `bpfproxy trace` uses); parsing and ICMP errors
 * are the test kit's.
 */
import {
  ETH_P_IP,
  PROTO,
  csumFold,
  csumPartial,
  ethHeader,
  ipv4Header,
  pseudoHeader,
  sctpChecksum,
  type FrameSpec,
} from '../src/net/frames.js';

export {
  ETH_P_IP,
  PROTO,
  SCTP_CHUNK,
  TCP,
  crc32c,
  csumFold,
  csumPartial,
  ethHeader,
  frame,
  ipv4Header,
  l4Segment,
  pseudoHeader,
  sctpChecksum,
  sctpInitValue,
  sctpPacket,
  type FrameSpec,
  type Ipv4Spec,
  type L4,
} from '../src/net/frames.js';

export const ipStr = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
const macStr = (b: Buffer, o: number): string => [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
const pseudo = pseudoHeader;

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
  /** SCTP: verification tag and first chunk's type */
  vtag?: number;
  chunk?: number;
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
  } else if (proto === PROTO.SCTP && l4.length >= 8) {
    p.sport = l4.readUInt16BE(0);
    p.dport = l4.readUInt16BE(2);
    p.vtag = l4.readUInt32BE(4);
    if (l4.length >= 16) p.chunk = l4[12] ?? 0;
    p.payload = l4.subarray(12);
    if (!quoted) p.l4CsumOk = l4.length >= 12 && sctpChecksum(l4) === l4.readUInt32LE(8);
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
