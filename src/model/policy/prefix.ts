/**
 * IPv4 prefixes and port ranges as the policy model needs them: parsed
 * prefixes, containment, and a port range as the fewest aligned port
 * prefixes (what an LPM key over the port can hold).
 */
import { ipv4ToInt, intToIpv4 } from '../addresses.js';

export interface Prefix {
  /** Network address as an unsigned 32-bit number (host bits clear). */
  base: number;
  bits: number;
  /** "10.0.0.0/8" */
  text: string;
}

export const maskOf = (bits: number): number => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);

export function prefixOf(base: number, bits: number): Prefix {
  const b = (base & maskOf(bits)) >>> 0;
  return { base: b, bits, text: `${intToIpv4(b)}/${bits}` };
}

/** "a.b.c.d/n" already validated (host bits may be set: they are cleared, as Go's ParseCIDR does). */
export function parsePrefix(text: string): Prefix {
  const [addr, len] = text.split('/');
  return prefixOf(ipv4ToInt(addr!), len === undefined ? 32 : Number(len));
}

export const hostPrefix = (ip: string): Prefix => prefixOf(ipv4ToInt(ip), 32);

/** inner ⊆ outer */
export const prefixWithin = (inner: Prefix, outer: Prefix): boolean =>
  inner.bits >= outer.bits && (inner.base & maskOf(outer.bits)) >>> 0 === outer.base;

export const WORLD_PREFIX: Prefix = prefixOf(0, 0);

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
