/**
 * The kinds of value a FelixConfiguration field holds, each with one parser
 * used for the field and for the command-line flag that sets it: what the
 * object (or flag) says, over the value in force, to the domain value or the
 * problems with it. Messages say what is wrong and what would be right; the
 * caller names the object and field.
 */
import type { ConntrackTimeouts } from './config.js';
import { formatDuration, parseDuration } from './duration.js';
import { canonicalIpv6 } from '../net/ip6.js';

export interface Issue {
  /** below the field, e.g. ".tcpEstablished"; "" for the field itself */
  path: string;
  message: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; issues: Issue[] };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = (message: string, path = ''): Parsed<never> => ({ ok: false, issues: [{ path, message }] });
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

export interface Kind<T> {
  /** A FelixConfiguration value, over the value in force (fields with parts overlay part by part). */
  parse(raw: unknown, current: T): Parsed<T>;
  /** Command-line text to what parse takes ("true" to true, "TCPEstablished=1h" to {tcpEstablished: "1h"}). */
  fromText(text: string): Parsed<unknown>;
  /** As an operator writes it (help defaults, logs). */
  format(v: T): string;
  equal(a: T, b: T): boolean;
}

const same = <T>(a: T, b: T): boolean => a === b;

export const bool: Kind<boolean> = {
  parse: (v) => (typeof v === 'boolean' ? ok(v) : bad(`must be true or false, not ${show(v)}`)),
  fromText: (s) => ok(s === 'true' ? true : s === 'false' ? false : s),
  format: String,
  equal: same,
};

function compile(v: unknown): Parsed<RegExp> {
  if (typeof v !== 'string') return bad('must be a regular expression string');
  try {
    return ok(new RegExp(v));
  } catch (e) {
    return bad(`"${v}" is not a valid regular expression: ${(e as Error).message}`);
  }
}
const samePattern = (a: RegExp | null, b: RegExp | null): boolean => a?.source === b?.source && a?.flags === b?.flags;

export const pattern: Kind<RegExp> = {
  parse: compile,
  fromText: ok,
  format: (r) => JSON.stringify(r.source),
  equal: samePattern,
};

/** A pattern where "" means none. */
export const optionalPattern: Kind<RegExp | null> = {
  parse: (v) => (v === '' ? ok(null) : compile(v)),
  fromText: ok,
  format: (r) => JSON.stringify(r?.source ?? ''),
  equal: samePattern,
};

const alternatives = (xs: readonly string[]): string => `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;

/** One of Calico's spellings; caseInsensitive takes "debug" for Debug, as Felix does for log levels. */
export function oneOf<const V extends string>(values: readonly V[], caseInsensitive = false): Kind<V> {
  return {
    parse: (v) => {
      const m = typeof v === 'string' ? values.find((x) => (caseInsensitive ? x.toLowerCase() === v.toLowerCase() : x === v)) : undefined;
      return m === undefined ? bad(`must be ${alternatives(values)}, not ${show(v)}`) : ok(m);
    },
    fromText: ok,
    format: String,
    equal: same,
  };
}

/** A duration ("1m30s"; a bare number is seconds) to ms. */
function durationMs(v: unknown): Parsed<number> {
  try {
    return ok(parseDuration(typeof v === 'string' || typeof v === 'number' ? String(v) : show(v)));
  } catch (e) {
    return bad((e as Error).message);
  }
}

export const duration: Kind<number> = {
  parse: durationMs,
  fromText: ok,
  format: formatDuration,
  equal: same,
};

const wholeText = (s: string): Parsed<unknown> => ok(/^\s*-?\d+\s*$/.test(s) ? Number(s) : s);

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

/** "a.b.c.d/n" (or a bare address: /32) in canonical form, or undefined. */
export function ipv4Cidr(s: string): string | undefined {
  const m = IPV4_CIDR.exec(s.trim());
  if (!m) return undefined;
  const o = m.slice(1, 5).map(Number);
  const len = m[5] === undefined ? 32 : Number(m[5]);
  if (o.some((x) => x > 255) || len > 32) return undefined;
  return `${o.join('.')}/${len}`;
}

/** "2001:db8::/32" in RFC 5952 form, a bare address as /128; undefined when it is not one. */
export function ipv6Cidr(s: string): string | undefined {
  const [addr, len, ...rest] = s.trim().split('/');
  const a = rest.length === 0 && addr !== undefined ? canonicalIpv6(addr) : undefined;
  const l = len === undefined ? 128 : /^\d{1,3}$/.test(len) ? Number(len) : -1;
  return a !== undefined && l >= 0 && l <= 128 ? `${a}/${l}` : undefined;
}

/** A list of IPv4 or IPv6 CIDRs (["192.0.2.0/24", "2001:db8::/32"]); the flag takes them comma-separated. */
export const cidrList: Kind<string[]> = {
  parse: (v) => {
    if (!Array.isArray(v)) return bad('must be a list of CIDRs such as ["192.0.2.0/24", "2001:db8::/32"]');
    const out: string[] = [];
    const issues: Issue[] = [];
    v.forEach((x, i) => {
      const c = typeof x === 'string' ? (ipv4Cidr(x) ?? ipv6Cidr(x)) : undefined;
      if (c === undefined)
        issues.push({ path: `.${i}`, message: `must be an IPv4 or IPv6 CIDR such as "192.0.2.0/24" or "2001:db8::/32", not ${show(x)}` });
      else out.push(c);
    });
    return issues.length ? { ok: false, issues } : ok(out);
  },
  fromText: (s) => ok(s === '' ? [] : s.split(',')),
  format: (v) => JSON.stringify(v),
  equal: (a, b) => a.length === b.length && a.every((x, i) => x === b[i]),
};

export function wholeNumber(min: number, max: number): Kind<number> {
  return {
    parse: (v) =>
      typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
        ? ok(v)
        : bad(`must be a whole number from ${min} to ${max}, not ${show(v)}`),
    fromText: wholeText,
    format: String,
    equal: same,
  };
}

export const port: Kind<number> = {
  parse: (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535
      ? ok(v)
      : bad(`must be a port number from 1 to 65535, not ${show(v)}`),
  fromText: wholeText,
  format: String,
  equal: same,
};

/**
 * Calico's bpfConntrackTimeouts keys, each with the spelling of Felix's
 * environment variable (FELIX_BPFCONNTRACKTIMEOUTS="TCPEstablished=1h,...",
 * also the flag's); `applied`: this datapath has a timeout to set.
 */
const CT_KEYS = {
  creationGracePeriod: { env: 'CreationGracePeriod', applied: false },
  tcpSynSent: { env: 'TCPSynSent', applied: true },
  tcpEstablished: { env: 'TCPEstablished', applied: true },
  tcpFinsSeen: { env: 'TCPFinsSeen', applied: true },
  tcpResetSeen: { env: 'TCPResetSeen', applied: true },
  udpTimeout: { env: 'UDPTimeout', applied: true },
  genericTimeout: { env: 'GenericTimeout', applied: false },
  icmpTimeout: { env: 'ICMPTimeout', applied: false },
} as const satisfies Record<string, { env: string; applied: boolean }>;
type CtKey = keyof typeof CT_KEYS;

const ctKey = (k: string): CtKey | undefined => (Object.hasOwn(CT_KEYS, k) ? (k as CtKey) : undefined);
const applied = (k: CtKey): k is keyof ConntrackTimeouts => CT_KEYS[k].applied;

/**
 * {tcpEstablished: "2h", udpTimeout: "30s"} over the timeouts in force, key
 * by key; "Auto" (Calico's default for tcpFinsSeen) keeps the value in force.
 * Every bad key is reported.
 */
export const conntrackTimeouts: Kind<ConntrackTimeouts> = {
  parse: (v, current) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('must be an object such as {tcpEstablished: 1h}');
    const out = { ...current };
    const issues: Issue[] = [];
    for (const [k, tv] of Object.entries(v as Record<string, unknown>)) {
      const key = ctKey(k);
      if (!key) {
        issues.push({ path: `.${k}`, message: `unknown timeout (known: ${Object.keys(CT_KEYS).join(', ')})` });
        continue;
      }
      if (tv === 'Auto' || tv === null || tv === undefined) continue;
      const ms = durationMs(tv);
      if (!ms.ok) issues.push(...ms.issues.map((i) => ({ path: `.${k}`, message: i.message })));
      else if (ms.value <= 0) issues.push({ path: `.${k}`, message: 'must be more than 0' });
      else if (applied(key)) out[key] = ms.value;
    }
    return issues.length ? { ok: false, issues } : ok(out);
  },
  /** "TCPEstablished=1h,UDPTimeout=60s" (Felix's env spelling or the CRD's, any case). */
  fromText: (s) => {
    const out: Record<string, string> = {};
    for (const part of s.split(',').filter((p) => p.trim())) {
      const [k, v, ...rest] = part.split('=').map((x) => x.trim());
      if (!k || v === undefined || rest.length) return bad(`"${part}" is not Key=duration (e.g. TCPEstablished=1h)`);
      const key = (Object.keys(CT_KEYS) as CtKey[]).find((c) => c.toLowerCase() === k.toLowerCase());
      out[key ?? k] = v;
    }
    return ok(out);
  },
  format: (t) => (Object.keys(t) as Array<keyof ConntrackTimeouts>).map((k) => `${CT_KEYS[k].env}=${formatDuration(t[k])}`).join(','),
  equal: (a, b) => (Object.keys(a) as Array<keyof ConntrackTimeouts>).every((k) => a[k] === b[k]),
};
