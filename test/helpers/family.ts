/**
 * IPv4 test tables run for IPv6: one address mapping, IPv4 -> IPv6, that
 * keeps every address in its class (pods, cluster IPs, node addresses,
 * loopback, everyone else) and every CIDR's containment (the IPv4 address
 * goes into the last 32 bits of a /96, so an IPv4 /n is an IPv6 /(96+n)):
 *
 *   10.0.0.0/8      pods                -> fd00:10::/96     (10.0.0.2 -> fd00:10::a00:2)
 *   172.16.0.0/12   cluster IPs         -> fd00:172::/96
 *   192.168.0.0/16  the node's and LAN  -> 2001:db8:192::/96 (not in 2001:db8::/64, which
 *                                                             the tables name as a foreign CIDR)
 *   127.0.0.0/8     loopback            -> ::1 (the only IPv6 loopback address)
 *   anything else   clients, LB IPs     -> 2001:db8:ff::/96
 *
 * An IPv4 literal with leading zeros ("172.30.0.041") maps to the IPv6
 * address written with every group zero-padded, which IPv6 allows
 * unambiguously (leading zeros are an IPv4 problem only, CVE-2021-29923).
 * Kubernetes objects map as a whole: every string that is an IPv4 address or
 * CIDR (surrounding blanks kept), and addressType IPv4 -> IPv6.
 */
import { ipv6Bytes, readIpv6 } from '../../src/net/ip6.js';

export type Family = 'ipv4' | 'ipv6';
export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const V4_CIDR = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,3})$/;

function prefixOf(a: number, b: number): string {
  if (a === 10) return 'fd00:10::';
  if (a === 172 && b >= 16 && b < 32) return 'fd00:172::';
  if (a === 192 && b === 168) return '2001:db8:192::';
  return '2001:db8:ff::';
}

/** The IPv6 image of an IPv4 address (RFC 5952 text, or zero-padded when the IPv4 text had leading zeros). */
export function to6(v4: string): string {
  const m = V4.exec(v4);
  if (!m) throw new Error(`test/helpers/family.ts: "${v4}" is not an IPv4 address to map`);
  const o = m.slice(1, 5).map(Number) as [number, number, number, number];
  if (o.some((x) => x > 255)) throw new Error(`test/helpers/family.ts: "${v4}" has an octet above 255`);
  if (o[0] === 127) return '::1';
  const b = ipv6Bytes(`${prefixOf(o[0], o[1])}${o.join('.')}`);
  if (m.slice(1, 5).some((x) => x.length > 1 && x.startsWith('0'))) {
    return Array.from({ length: 8 }, (_, i) =>
      b
        .readUInt16BE(2 * i)
        .toString(16)
        .padStart(4, '0'),
    ).join(':');
  }
  return readIpv6(b);
}

/** The IPv6 image of an IPv4 CIDR: /n -> /(96+n); loopback -> ::1/128. */
export function cidrTo6(c: string): string {
  const m = V4_CIDR.exec(c);
  if (!m) throw new Error(`test/helpers/family.ts: "${c}" is not an IPv4 CIDR to map`);
  const a = to6(m[1]!);
  return a === '::1' ? '::1/128' : `${a}/${96 + Number(m[2])}`;
}

/** An address in `family`: as is for IPv4, its image for IPv6. */
export const addrIn = (family: Family, v4: string): string => (family === 'ipv4' ? v4 : to6(v4));

/** "ip:port" in the family's notation ("[ip]:port" for IPv6). */
export const epKey = (ip: string, port: number): string => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

/** The address of an "ip:port" / "[ip]:port". */
export const epIp = (ep: string): string => (ep.startsWith('[') ? ep.slice(1, ep.indexOf(']')) : ep.slice(0, ep.lastIndexOf(':')));

/** Map one string: an IPv4 address or CIDR (blanks around kept) to IPv6; anything else unchanged. */
export function mapString(s: string): string {
  const t = s.trim();
  const lead = s.slice(0, s.indexOf(t));
  const trail = s.slice(s.indexOf(t) + t.length);
  if (V4.test(t)) return `${lead}${to6(t)}${trail}`;
  if (V4_CIDR.test(t)) return `${lead}${cidrTo6(t)}${trail}`;
  return s;
}

/** A Kubernetes object (or any JSON value) in IPv6: every IPv4 address and CIDR mapped, addressType IPv6. */
export function mapObject<T>(o: T): T {
  const walk = (v: unknown, key?: string): unknown => {
    if (typeof v === 'string') return key === 'addressType' && v === 'IPv4' ? 'IPv6' : mapString(v);
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
    return v;
  };
  return walk(o) as T;
}

/** kube-proxy's --nodeport-addresses in IPv6: each IPv4 CIDR mapped, IPv6 ones kept. */
export const nodePortSpecIn = (family: Family, spec: string): string =>
  family === 'ipv4'
    ? spec
    : spec
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean)
        .map((x) => (V4_CIDR.test(x) ? cidrTo6(x) : x))
        .join(',');
