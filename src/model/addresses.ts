/**
 * IPv4 address classes and CIDR matching, for deciding which addresses a
 * Service may claim. The rules follow the API server's (ValidateEndpointIP,
 * ValidateNonSpecialIP) and then some: a frontend or an endpoint must be an
 * address a packet can be sent to.
 */

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
