/**
 * IPv4 and IPv6 prefixes and port ranges as the policy model needs them:
 * parsed prefixes, containment, and a port range as the fewest aligned port
 * prefixes (what an LPM key over the port can hold).
 */
import { ipv4ToInt, intToIpv4 } from '../addresses.js';
import { ipv6Bytes, readIpv6 } from '../../net/ip6.js';

export interface Prefix {
  /** IPv4: the network address as an unsigned 32-bit number (host bits clear); IPv6: 0. */
  base: number;
  bits: number;
  /** "10.0.0.0/8", "fd00::/64" */
  text: string;
  /** IPv6 only: the network address as a 128-bit number (host bits clear). */
  big?: bigint;
}

export const isV6Prefix = (p: Prefix): boolean => p.big !== undefined;

/** Bits of an address of the family of addr (text): 32 or 128. */
export const hostBits = (addr: string): number => (addr.includes(':') ? 128 : 32);

/** An address's own prefix text: "10.1.2.3/32", "fd00::1/128". */
export const hostPrefixText = (addr: string): string => `${addr}/${hostBits(addr)}`;

const ALL128 = (1n << 128n) - 1n;
export const mask6Of = (bits: number): bigint => (bits === 0 ? 0n : (ALL128 << BigInt(128 - bits)) & ALL128);

export function ipv6ToBig(addr: string): bigint {
  return BigInt(`0x${ipv6Bytes(addr).toString('hex')}`);
}

export function bigToIpv6(n: bigint): string {
  return readIpv6(Buffer.from(n.toString(16).padStart(32, '0'), 'hex'));
}

export function prefix6Of(big: bigint, bits: number): Prefix {
  const b = big & mask6Of(bits);
  return { base: 0, bits, text: `${bigToIpv6(b)}/${bits}`, big: b };
}

export const maskOf = (bits: number): number => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);

export function prefixOf(base: number, bits: number): Prefix {
  const b = (base & maskOf(bits)) >>> 0;
  return { base: b, bits, text: `${intToIpv4(b)}/${bits}` };
}

/** "a.b.c.d/n" or an IPv6 prefix, already validated (host bits may be set: they are cleared, as Go's ParseCIDR does). */
export function parsePrefix(text: string): Prefix {
  const [addr, len] = text.split('/');
  if (addr!.includes(':')) return prefix6Of(ipv6ToBig(addr!), len === undefined ? 128 : Number(len));
  return prefixOf(ipv4ToInt(addr!), len === undefined ? 32 : Number(len));
}

export const hostPrefix = (ip: string): Prefix => (ip.includes(':') ? prefix6Of(ipv6ToBig(ip), 128) : prefixOf(ipv4ToInt(ip), 32));

/** inner ⊆ outer (never across families) */
export function prefixWithin(inner: Prefix, outer: Prefix): boolean {
  if (inner.bits < outer.bits) return false;
  if (inner.big !== undefined || outer.big !== undefined) {
    return inner.big !== undefined && outer.big !== undefined && (inner.big & mask6Of(outer.bits)) === outer.big;
  }
  return (inner.base & maskOf(outer.bits)) >>> 0 === outer.base;
}

export const WORLD_PREFIX: Prefix = prefixOf(0, 0);
/** ::/0, IDENTITY_WORLD6: IPv6 addresses no other prefix claims. */
export const WORLD6_PREFIX: Prefix = prefix6Of(0n, 0);

/**
 * The port range lo..hi (1 ≤ lo ≤ hi ≤ 65535) as the fewest aligned
 * prefixes over the 16-bit port: 80..80 is 80/16, 1024..65535 is six.
 */
export function portRangePrefixes(lo: number, hi: number): Array<{ port: number; prefixLen: number }> {
  const out: Array<{ port: number; prefixLen: number }> = [];
  let p = lo;
  while (p <= hi) {
    // The largest block aligned at p that stays within hi.
    let size = p === 0 ? 0x10000 : p & -p;
    while (p + size - 1 > hi) size >>= 1;
    out.push({ port: p, prefixLen: 16 - Math.log2(size) });
    p += size;
  }
  return out;
}

/** Whether port is in the port prefix (port, prefixLen). */
export function portInPrefix(port: number, first: number, prefixLen: number): boolean {
  const mask = prefixLen === 0 ? 0 : (0xffff << (16 - prefixLen)) & 0xffff;
  return (port & mask) === (first & mask);
}
