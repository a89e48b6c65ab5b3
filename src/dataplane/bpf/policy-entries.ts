/**
 * How a CompiledPolicy's pieces become map keys and values (bpf/lib/policy.h):
 * ipcache prefixes, and each endpoint's rule table normalized so that one
 * longest-prefix lookup per identity gives the right answer. Pure functions;
 * src/dataplane/bpf/policy-maps.ts writes what they produce.
 */
import { PROTO_ANY, type EndpointPolicy, type PolicyDirection, type PolicyRuleEntry } from '../../model/policy/compiled.js';
import { parseCidr6Masked } from '../../model/addresses.js';
import { PolDir, PolVerdict, POL_PREFIX_ANY_PROTO, POL_PREFIX_PROTO, type IpcacheKey, type PolKey, type PolValue } from './codecs.js';

/** A table entry as written: one LPM key, one verdict. */
export interface TableEntry {
  peer: number;
  direction: PolicyDirection;
  /** 0: any protocol (then port and portPrefixLen are 0) */
  proto: number;
  port: number;
  portPrefixLen: number;
  verdict: 'allow' | 'deny';
  ruleId: number;
}

export interface EntryProblem {
  entry: PolicyRuleEntry;
  message: string;
}

const ip4Re = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function ip4ToInt(ip: string): number | undefined {
  const m = ip4Re.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1, 5).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return (((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!) >>> 0;
}

const intToIp4 = (n: number): string => `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/**
 * "10.1.2.3/24" (or a bare address: /32) as an ipcache key, host bits
 * cleared; undefined when it is not an IPv4 prefix.
 */
export function ipcacheKeyOf(prefix: string): IpcacheKey | undefined {
  const [addr, len, extra] = prefix.split('/');
  if (extra !== undefined || addr === undefined) return undefined;
  const n = ip4ToInt(addr);
  const plen = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (n === undefined || !(plen >= 0 && plen <= 32)) return undefined;
  const mask = plen === 0 ? 0 : (0xffffffff << (32 - plen)) >>> 0;
  return { prefixlen: plen, addr: intToIp4((n & mask) >>> 0) };
}

/** The canonical text of an ipcache key: "10.1.2.0/24" (IPv6: "fd00::/64"). */
export const prefixText = (k: IpcacheKey): string => `${k.addr}/${k.prefixlen}`;

/** An identity prefix and the ipcache holding it: bpfproxy_ipcache (4) or bpfproxy_ipcache6 (6). */
export interface IpcacheRef {
  family: 4 | 6;
  key: IpcacheKey;
}

/**
 * "10.1.2.3/24" or "fd00::1/64" (or a bare address: /32, /128) as the key
 * of its family's ipcache, host bits cleared; undefined when it is neither.
 */
export function ipcacheRefOf(prefix: string): IpcacheRef | undefined {
  if (!prefix.includes(':')) {
    const k = ipcacheKeyOf(prefix);
    return k ? { family: 4, key: k } : undefined;
  }
  const c = parseCidr6Masked(prefix.includes('/') ? prefix : `${prefix}/128`);
  return c ? { family: 6, key: { prefixlen: c.bits, addr: c.text.slice(0, c.text.lastIndexOf('/')) } } : undefined;
}

/** The canonical text of a prefix of either family, or undefined. */
export function canonicalPrefix(prefix: string): string | undefined {
  const r = ipcacheRefOf(prefix);
  return r ? prefixText(r.key) : undefined;
}

/** An address's own prefix: "10.1.2.3/32", "fd00::1/128". */
export const hostPrefix = (addr: string): string => `${addr}/${addr.includes(':') ? 128 : 32}`;

const dirCode = (d: PolicyDirection): number => (d === 'ingress' ? PolDir.INGRESS : PolDir.EGRESS);

export function polKeyOf(e: TableEntry): PolKey {
  if (e.proto === PROTO_ANY) return { prefixlen: POL_PREFIX_ANY_PROTO, identity: e.peer, dir: dirCode(e.direction), proto: 0, port: 0 };
  return { prefixlen: POL_PREFIX_PROTO + e.portPrefixLen, identity: e.peer, dir: dirCode(e.direction), proto: e.proto, port: e.port };
}

export function polValueOf(e: TableEntry): PolValue {
  return { ruleId: e.ruleId, verdict: e.verdict === 'allow' ? PolVerdict.ALLOW : PolVerdict.DENY };
}

/** A key and value read back from a table; undefined for what this version never writes. */
export function tableEntryOf(k: PolKey, v: PolValue): TableEntry | undefined {
  const direction: PolicyDirection | undefined = k.dir === PolDir.INGRESS ? 'ingress' : k.dir === PolDir.EGRESS ? 'egress' : undefined;
  if (!direction) return undefined;
  const verdict = v.verdict === PolVerdict.ALLOW ? 'allow' : 'deny';
  if (k.prefixlen === POL_PREFIX_ANY_PROTO)
    return { peer: k.identity, direction, proto: PROTO_ANY, port: 0, portPrefixLen: 0, verdict, ruleId: v.ruleId };
  if (k.prefixlen < POL_PREFIX_PROTO || k.prefixlen > POL_PREFIX_PROTO + 16) return undefined;
  return {
    peer: k.identity,
    direction,
    proto: k.proto,
    port: k.port,
    portPrefixLen: k.prefixlen - POL_PREFIX_PROTO,
    verdict,
    ruleId: v.ruleId,
  };
}

const portMask = (len: number): number => (len === 0 ? 0 : (0xffff << (16 - len)) & 0xffff);

/** Whether deny entry d matches every packet allow entry a matches (same peer and direction). */
function covers(d: TableEntry, a: TableEntry): boolean {
  if (d.proto === PROTO_ANY) return true;
  if (a.proto !== d.proto || d.portPrefixLen > a.portPrefixLen) return false;
  const m = portMask(d.portPrefixLen);
  return (a.port & m) === (d.port & m);
}

const entryKey = (e: TableEntry): string => `${e.peer}|${e.direction}|${e.proto}|${e.port}/${e.portPrefixLen}`;

/**
 * The table of an endpoint as it must be written:
 *  - only the directions it is isolated in (the others are never looked up);
 *  - well-formed keys (a port's bits past its prefix cleared; a protocol of
 *    0 takes no port); malformed entries are left out and reported (the
 *    endpoint stays isolated: leaving a rule out never allows more);
 *  - one entry per key: a deny over an allow, else the lowest rule id;
 *  - an allow that a wider deny of the same peer covers becomes that deny
 *    (the trie answers with the longest prefix only; deny must win).
 * A deny of IDENTITY_ANY over an allow of a given peer needs nothing: the
 * datapath looks both up and a deny wins.
 */
export function tableOf(ep: EndpointPolicy): { entries: TableEntry[]; problems: EntryProblem[] } {
  const problems: EntryProblem[] = [];
  const byKey = new Map<string, TableEntry>();
  for (const e of ep.entries) {
    if (e.direction === 'ingress' ? !ep.ingressIsolated : !ep.egressIsolated) continue;
    const bad =
      !Number.isInteger(e.peer) || e.peer < 0 || e.peer > 0xffffffff
        ? `peer identity ${e.peer} is not a 32-bit unsigned integer`
        : !Number.isInteger(e.proto) || e.proto < 0 || e.proto > 255
          ? `protocol ${e.proto} is not an IP protocol number`
          : !Number.isInteger(e.portPrefixLen) || e.portPrefixLen < 0 || e.portPrefixLen > 16
            ? `port prefix length ${e.portPrefixLen} is not 0..16`
            : !Number.isInteger(e.port) || e.port < 0 || e.port > 0xffff
              ? `port ${e.port} is not 0..65535`
              : !Number.isInteger(e.ruleId) || e.ruleId < 0 || e.ruleId > 0xffffffff
                ? `rule id ${e.ruleId} is not a 32-bit unsigned integer`
                : e.verdict !== 'allow' && e.verdict !== 'deny'
                  ? `verdict ${String(e.verdict)} is neither allow nor deny`
                  : '';
    if (bad) {
      problems.push({ entry: e, message: bad });
      continue;
    }
    const any = e.proto === PROTO_ANY;
    const t: TableEntry = {
      peer: e.peer,
      direction: e.direction,
      proto: e.proto,
      port: any ? 0 : e.port & portMask(e.portPrefixLen),
      portPrefixLen: any ? 0 : e.portPrefixLen,
      verdict: e.verdict,
      ruleId: e.ruleId,
    };
    const k = entryKey(t);
    const have = byKey.get(k);
    if (!have || (t.verdict === 'deny' && have.verdict === 'allow') || (t.verdict === have.verdict && t.ruleId < have.ruleId)) {
      byKey.set(k, t);
    }
  }
  const denies = new Map<string, TableEntry[]>();
  for (const t of byKey.values()) {
    if (t.verdict !== 'deny') continue;
    const k = `${t.peer}|${t.direction}`;
    const l = denies.get(k);
    if (l) l.push(t);
    else denies.set(k, [t]);
  }
  const entries = [...byKey.values()].map((t) => {
    if (t.verdict !== 'allow') return t;
    const d = denies.get(`${t.peer}|${t.direction}`)?.find((x) => covers(x, t));
    return d ? { ...t, verdict: 'deny' as const, ruleId: d.ruleId } : t;
  });
  return { entries: sortEntries(entries), problems };
}

/** The one order tables are compared and read back in. */
export function sortEntries<T extends TableEntry>(entries: T[]): T[] {
  // each key built once (not twice per comparison: tables have thousands of entries)
  const keyed = entries.map((e) => ({ k: entryKey(e), e }));
  keyed.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  for (let i = 0; i < keyed.length; i++) entries[i] = keyed[i]!.e;
  return entries;
}

/** Same entries, same order: what tells that a table must be written again. */
export const tableContent = (entries: readonly TableEntry[]): string =>
  entries.map((e) => `${entryKey(e)}=${e.verdict}#${e.ruleId}`).join(',');

/**
 * Port prefixes covering [from, to] exactly (an `endPort` range), fewest
 * first-to-last: for a model or a test that starts from a range.
 */
export function portPrefixes(from: number, to: number): Array<{ port: number; portPrefixLen: number }> {
  const out: Array<{ port: number; portPrefixLen: number }> = [];
  let p = from;
  while (p <= to) {
    let len = 16;
    while (len > 0) {
      const size = 1 << (16 - (len - 1));
      if (p % size !== 0 || p + size - 1 > to) break;
      len--;
    }
    out.push({ port: p, portPrefixLen: len });
    p += 1 << (16 - len);
  }
  return out;
}
