/**
 * IPv4 address classes and CIDR matching, for deciding which addresses a
 * Service may claim. The rules follow the API server's (ValidateEndpointIP,
 * ValidateNonSpecialIP) and then some: a frontend or an endpoint must be an
 * address a packet can be sent to.
 */
import { isIPv6 as isIPv6Text } from '../net/ip.js';
import { ipv6Bytes, readIpv6 } from '../net/ip6.js';

/** "a.b.c.d" (already checked with isIPv4) as an unsigned 32-bit number. */
export function ipv4ToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return (((p[0]! << 24) >>> 0) + (p[1]! << 16) + (p[2]! << 8) + p[3]!) >>> 0;
}

const inNet = (n: number, base: string, bits: number): boolean => {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return (n & mask) >>> 0 === ipv4ToInt(base);
};

/**
 * Why this IPv4 address cannot be a service frontend or an endpoint, or
 * undefined when it is an ordinary unicast address.
 */
export function nonUnicastReason(ip: string): string | undefined {
  const n = ipv4ToInt(ip);
  if (n === 0) return 'is unspecified (0.0.0.0)';
  if (n === 0xffffffff) return 'is the broadcast address';
  if (inNet(n, '0.0.0.0', 8)) return 'is in 0.0.0.0/8 ("this network"), which is never a destination';
  if (inNet(n, '127.0.0.0', 8)) return 'is in the loopback range (127.0.0.0/8)';
  if (inNet(n, '169.254.0.0', 16)) return 'is in the link-local range (169.254.0.0/16)';
  if (inNet(n, '224.0.0.0', 4)) return 'is multicast (224.0.0.0/4)';
  return undefined;
}

export interface Cidr4 {
  /** "203.0.113.0/24" as given (normalised) */
  text: string;
  base: number;
  bits: number;
}

/** "203.0.113.0/24" or a bare "203.0.113.7" (/32). Throws naming the input. */
export function parseCidr4(s: string, isIPv4: (ip: string) => boolean): Cidr4 {
  const t = s.trim();
  const [addr, len, ...rest] = t.split('/');
  const bits = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (rest.length || !addr || !isIPv4(addr) || !(bits >= 0 && bits <= 32)) {
    throw new Error(`"${s}" is not an IPv4 CIDR such as 203.0.113.0/24 (bpfproxy serves IPv4 only)`);
  }
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const base = (ipv4ToInt(addr) & mask) >>> 0;
  if (base !== ipv4ToInt(addr)) throw new Error(`"${s}" has host bits set (did you mean ${intToIpv4(base)}/${bits}?)`);
  return { text: `${addr}/${bits}`, base, bits };
}

export function intToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function cidrContains(c: Cidr4, ip: string): boolean {
  const mask = c.bits === 0 ? 0 : (0xffffffff << (32 - c.bits)) >>> 0;
  return (ipv4ToInt(ip) & mask) >>> 0 === c.base;
}

/**
 * Why this IPv6 address (already checked with isIPv6) cannot be a service
 * frontend or an endpoint, or undefined when it is an ordinary unicast
 * address.
 */
export function nonUnicastReason6(ip: string): string | undefined {
  const b = ipv6Bytes(ip);
  const zeros = (from: number, to: number) => b.subarray(from, to).every((x) => x === 0);
  if (zeros(0, 16)) return 'is unspecified (::)';
  if (zeros(0, 15) && b[15] === 1) return 'is the loopback address (::1)';
  if (b[0] === 0xfe && ((b[1] ?? 0) & 0xc0) === 0x80) return 'is link-local (fe80::/10)';
  if (b[0] === 0xff) return 'is multicast (ff00::/8)';
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return 'is IPv4-mapped (::ffff:0:0/96), which the kernel drops on the wire';
  return undefined;
}

/** nonUnicastReason for either family. */
export const nonUnicastReasonOf = (ip: string): string | undefined => (ip.includes(':') ? nonUnicastReason6(ip) : nonUnicastReason(ip));

/** An IPv6 prefix: "2001:db8::/32" (normalised text), its bytes and length. */
export interface Cidr6 {
  text: string;
  bytes: Buffer;
  bits: number;
}

/** "2001:db8::/32" with host bits masked (as kube-proxy reads source ranges), or undefined when it is not an IPv6 CIDR. */
export function parseCidr6Masked(s: string): Cidr6 | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s.trim());
  if (!m || !isIPv6Text(m[1]!) || Number(m[2]) > 128) return undefined;
  const bits = Number(m[2]);
  const bytes = ipv6Bytes(m[1]!);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return { text: `${readIpv6(bytes)}/${bits}`, bytes, bits };
}

export function cidr6Contains(c: Cidr6, ip: string): boolean {
  const b = ipv6Bytes(ip);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, c.bits - i * 8));
    const mask = (0xff << (8 - keep)) & 0xff;
    if (((b[i] ?? 0) & mask) !== c.bytes[i]) return false;
  }
  return true;
}
