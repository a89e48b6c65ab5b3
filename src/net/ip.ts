import { Address4, Address6 } from 'ip-address';

/** A plain IPv4 address (no prefix length). */
export function isIPv4(s: string): boolean {
  return !s.includes('/') && Address4.isValid(s) && s.split('.').length === 4;
}

export function isIPv6(s: string): boolean {
  return !s.includes('/') && s.includes(':') && Address6.isValid(s);
}
