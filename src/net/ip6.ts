/**
 * IPv6 addresses as 16 bytes and back, in the text form RFC 5952 asks for
 * (lowercase, the longest run of two or more zero groups as "::", the first
 * of equal runs), so that one address has one string everywhere (frontend
 * keys, map dumps, logs).
 */
import { isIPv4, isIPv6 } from './ip.js';

/** "2001:db8::1" (already checked with isIPv6; a trailing dotted quad allowed) as 16 bytes into b at o. */
export function writeIpv6(b: Buffer, o: number, s: string): void {
  let text = s;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  if (isIPv4(last)) {
    const q = last.split('.').map(Number);
    tail.push((q[0]! << 8) | q[1]!, (q[2]! << 8) | q[3]!);
    text = text.slice(0, lastColon + 1) + (text[lastColon - 1] === ':' ? '' : '0');
    if (!text.endsWith('::') && text.endsWith(':0')) text = text.slice(0, -2);
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const hs = head ? head.split(':').filter((x) => x !== '') : [];
  const rs = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = [...hs, ...(rest === undefined ? [] : new Array<string>(8 - tail.length - hs.length - rs.length).fill('0')), ...rs].map(
    (g) => parseInt(g, 16),
  );
  groups.push(...tail);
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) throw new Error(`"${s}" is not an IPv6 address`);
  groups.forEach((g, i) => b.writeUInt16BE(g, o + 2 * i));
}

export function ipv6Bytes(s: string): Buffer {
  const b = Buffer.alloc(16);
  writeIpv6(b, 0, s);
  return b;
}

/** 16 bytes at b[o] as RFC 5952 text. */
export function readIpv6(b: Buffer, o = 0): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(o + 2 * i));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The one text form of an IPv6 address (RFC 5952); undefined when it is not one. */
export function canonicalIpv6(s: string): string | undefined {
  if (!isIPv6(s)) return undefined;
  try {
    return readIpv6(ipv6Bytes(s));
  } catch {
    return undefined;
  }
}

/** "4" or "6" by the text form (already validated as one or the other). */
export const familyOf = (ip: string): 4 | 6 => (ip.includes(':') ? 6 : 4);
