/**
 * The identity table of the policy compiler: which identity every address
 * the node may see maps to, through a longest-prefix match.
 * - a pod address (/32): by (namespace, pod labels, named container ports,
 *   deepest policy prefix containing it). Namespace labels are a property of
 *   the namespace, not part of the key: relabelling a namespace rewrites the
 *   table entries that select it, not the address map;
 * - every distinct ipBlock cidr/except prefix of the policies, 0.0.0.0/0
 *   being IDENTITY_WORLD and ::/0 IDENTITY_WORLD6; a /32 (/128) prefix
 *   that is a pod's or the node's own address is that pod's or node's
 *   identity. IPv6 addresses and prefixes live beside IPv4 ones: a pod with
 *   both has one identity per family (its keys differ by their prefix),
 *   selected alike by label selectors, and an ipBlock of one family
 *   matches no identity of the other;
 * - this node's addresses: IDENTITY_HOST, or, when they fall under
 *   different policy prefixes, HOST for the group of the first IPv4 address
 *   and for the group of the first IPv6 one (one identity holding both
 *   families, with a deepest prefix per family), and an identity of its own
 *   for each other group, so ipBlock rules stay exact within a family. An
 *   ipBlock of one family matches HOST by HOST's addresses of that family:
 *   a rule allowing a block that holds the node's IPv4 address allows
 *   HOST, so its IPv6 addresses too (the datapath's rule tables have no
 *   family); egress only, ingress from HOST is always allowed.
 * Because a prefix set is nested or disjoint, all addresses that map to one
 * identity are inside or outside any cidr/except alike: an ipBlock peer is a
 * set of identities, pods included.
 *
 * It keeps, per compilation, which identities were made (identsAdded) and
 * which identity prefixes may have a new mapping (dirtyPrefixes); the
 * compiler reads both, and tells it through hooks nothing else.
 */
import { FIRST_DYNAMIC_IDENTITY, IDENTITY_HOST, IDENTITY_WORLD, IDENTITY_WORLD6, type IdentityEntry } from './compiled.js';
import {
  hostBits,
  hostPrefixText,
  ipv6ToBig,
  mask6Of,
  maskOf,
  parsePrefix,
  prefix6Of,
  prefixOf,
  WORLD6_PREFIX,
  WORLD_PREFIX,
  type Prefix,
} from './prefix.js';
import { labelPair, selectorCandidates, selectorMatches } from './selector.js';
import type { ContainerPort, LabelSelector, Labels, Pod } from './types.js';
import { ipv4ToInt } from '../addresses.js';

export type IdentKind = 'world' | 'cidr' | 'host' | 'pod';

export interface Ident {
  id: number;
  key: string;
  kind: IdentKind;
  /** Deepest policy prefix containing its addresses (pod, host), or its own prefix (cidr, world). */
  prefix: Prefix;
  /** HOST holding both families only: the deepest policy prefix of its IPv6 addresses (`prefix` is its IPv4 ones'). */
  prefix6?: Prefix;
  /** Pods only. */
  namespace: string;
  labels: Labels;
  namedPorts: readonly ContainerPort[];
  /** /32 addresses mapped to it (pod, host). */
  addresses: Set<string>;
  /** The compiler's peer sets it belongs to. */
  sets: Set<unknown>;
  alive: boolean;
}

/** A pod as the table needs it. */
export interface Claimant {
  readonly key: string;
  readonly pod: Pod;
  readonly local: boolean;
}

export interface IdentityHooks {
  /** An identity is gone (its peer sets must let it go). */
  dropped(id: Ident): void;
  /** A namespace has its first pod identity (namespace selectors may not know it yet). */
  namespaceSeen(ns: string): void;
}

const MAX_IDENTITY = 0xffffffff;

const labelsKey = (l: Labels): string =>
  JSON.stringify(
    Object.keys(l)
      .sort()
      .map((k) => [k, l[k]]),
  );

export const namedPortsOf = (ports: readonly ContainerPort[]): ContainerPort[] =>
  ports.filter((p) => p.name !== '').sort((a, b) => (a.name + a.protocol + a.port < b.name + b.protocol + b.port ? -1 : 1));

/** The deepest prefixes of an identity: one, or HOST's two (IPv4's, IPv6's) when it holds both families. */
export const identPrefixes = (id: Ident): Prefix[] => (id.prefix6 ? [id.prefix, id.prefix6] : [id.prefix]);

export const portsKey = (ports: readonly ContainerPort[]): string => ports.map((p) => `${p.name}/${p.protocol}/${p.port}`).join(',');

export class IdentityTable<P extends Claimant> {
  readonly world: Ident;
  readonly world6: Ident;
  readonly idents = new Map<string, Ident>();
  readonly addrIdent = new Map<string, Ident>();
  readonly owner = new Map<string, P | 'host'>();
  nodeAddrs: ReadonlySet<string> = new Set();
  private nodeList: readonly string[] = [];

  // Per compilation (endCompile() clears them).
  /** Identity prefixes (/32 addresses, policy prefixes) whose mapping may have changed. */
  dirtyPrefixes = new Set<string>();
  /** Identities made in this compilation, to be matched against existing peer sets. */
  identsAdded = new Set<Ident>();
  notes: string[] = [];
  private dirtyAddrs = new Set<string>();

  // Policy prefixes: text → refcount; bases by length.
  private readonly prefixRefs = new Map<string, number>();
  private readonly prefixesByLen: Array<Set<number>> = Array.from({ length: 33 }, () => new Set<number>());
  private readonly prefixesByLen6: Array<Set<bigint>> = Array.from({ length: 129 }, () => new Set<bigint>());
  private readonly prefixObjs = new Map<string, Prefix>();

  private readonly claims = new Map<string, Set<P>>();

  // Indexes of identities.
  private readonly identsByNs = new Map<string, Set<Ident>>();
  private readonly postings = new Map<string, Set<Ident>>();
  private readonly keyPostings = new Map<string, Set<Ident>>();
  private readonly identsByPrefix = new Map<string, Set<Ident>>();
  private sortedPrefixes: Prefix[] | undefined;
  private sortedPrefixes6: Prefix[] | undefined;

  // Identity ids.
  private nextIdentity = FIRST_DYNAMIC_IDENTITY;
  private readonly usedIdentities = new Set<number>();
  private readonly seededIdentity = new Map<string, number>();
  private readonly seededIdentityValues = new Set<number>();
  private hostIdsKey = '';

  constructor(private readonly hooks: IdentityHooks) {
    this.world = this.makeIdent('world', 'world', WORLD_PREFIX, IDENTITY_WORLD);
    this.world6 = this.makeIdent('world6', 'world', WORLD6_PREFIX, IDENTITY_WORLD6);
  }

  /** Ids of a previous compilation: a prefix keeps its identity when the same thing maps it again. */
  seed(identities: readonly IdentityEntry[]): void {
    for (const e of identities) {
      if (e.identity < FIRST_DYNAMIC_IDENTITY) continue;
      this.seededIdentity.set(e.prefix, e.identity);
      this.seededIdentityValues.add(e.identity);
      this.nextIdentity = Math.max(this.nextIdentity, e.identity + 1);
    }
  }

  endCompile(): void {
    this.seededIdentity.clear();
    this.seededIdentityValues.clear();
    this.dirtyAddrs = new Set();
    this.dirtyPrefixes = new Set();
    this.identsAdded = new Set();
    this.notes = [];
  }

  get size(): number {
    return this.idents.size;
  }

  // ---------------------------------------------------------------------------
  // Policy prefixes

  refPrefix(text: string): void {
    const n = this.prefixRefs.get(text) ?? 0;
    this.prefixRefs.set(text, n + 1);
    if (n > 0) return;
    const p = this.prefixObj(text);
    if (p.big !== undefined) this.prefixesByLen6[p.bits]!.add(p.big);
    else this.prefixesByLen[p.bits]!.add(p.base);
    this.dirtyPrefixes.add(text);
  }

  unrefPrefix(text: string): void {
    const n = this.prefixRefs.get(text) ?? 0;
    if (n > 1) return void this.prefixRefs.set(text, n - 1);
    this.prefixRefs.delete(text);
    const p = this.prefixObj(text);
    if (p.big !== undefined) this.prefixesByLen6[p.bits]!.delete(p.big);
    else this.prefixesByLen[p.bits]!.delete(p.base);
    this.dirtyPrefixes.add(text);
  }

  prefixObj(text: string): Prefix {
    let p = this.prefixObjs.get(text);
    if (!p) this.prefixObjs.set(text, (p = parsePrefix(text)));
    return p;
  }

  /** The deepest policy prefix containing addr (0.0.0.0/0, ::/0 when none). */
  private deepest(addr: string): Prefix {
    if (addr.includes(':')) {
      const n6 = ipv6ToBig(addr);
      for (let bits = 128; bits > 0; bits--) {
        const set = this.prefixesByLen6[bits]!;
        if (set.size === 0) continue;
        const base = n6 & mask6Of(bits);
        if (set.has(base)) return this.prefixObj(prefix6Of(base, bits).text);
      }
      return WORLD6_PREFIX;
    }
    const n = ipv4ToInt(addr);
    for (let bits = 32; bits > 0; bits--) {
      const set = this.prefixesByLen[bits]!;
      if (set.size === 0) continue;
      const base = (n & maskOf(bits)) >>> 0;
      if (set.has(base)) return this.prefixObj(prefixOf(base, bits).text);
    }
    return WORLD_PREFIX;
  }

  // ---------------------------------------------------------------------------
  // Addresses

  setNodeAddresses(given: readonly string[]): void {
    // HOST: the group of the first IPv4 address and that of the first IPv6 one (refreshHosts()).
    const addresses = [...given.filter((a) => !a.includes(':')), ...given.filter((a) => a.includes(':'))];
    const addrs = new Set(addresses);
    const first6 = (l: readonly string[]) => l.find((a) => a.includes(':'));
    if (addresses[0] !== this.nodeList[0] || first6(addresses) !== first6(this.nodeList)) for (const a of addrs) this.dirtyAddrs.add(a);
    for (const a of addrs) if (!this.nodeAddrs.has(a)) this.dirtyAddrs.add(a);
    for (const a of this.nodeAddrs) if (!addrs.has(a)) this.dirtyAddrs.add(a);
    this.nodeAddrs = addrs;
    this.nodeList = [...addresses];
  }

  claim(p: P): void {
    if (p.pod.hostNetwork) return;
    for (const a of p.pod.ips) {
      let set = this.claims.get(a);
      if (!set) this.claims.set(a, (set = new Set()));
      set.add(p);
      this.dirtyAddrs.add(a);
    }
  }

  unclaim(p: P): void {
    if (p.pod.hostNetwork) return;
    for (const a of p.pod.ips) {
      const set = this.claims.get(a);
      if (!set) continue;
      set.delete(p);
      if (set.size === 0) this.claims.delete(a);
      this.dirtyAddrs.add(a);
    }
  }

  /** The addresses p holds (an address two pods claim is one's only). */
  ownedAddresses(p: P): string[] {
    return p.pod.ips.filter((a) => this.owner.get(a) === p);
  }

  /** Who holds addr: the node itself, else a local pod, else the first pod by name (two pods claiming one address is a stale status). */
  private ownerOf(addr: string): P | 'host' | undefined {
    if (this.nodeAddrs.has(addr)) return 'host';
    const set = this.claims.get(addr);
    if (!set || set.size === 0) return undefined;
    let best: P | undefined;
    for (const p of set) {
      if (!best || (p.local && !best.local) || (p.local === best.local && p.key < best.key)) best = p;
    }
    if (set.size > 1) {
      const others = [...set].filter((p) => p !== best).map((p) => p.key);
      this.notes.push(`address ${addr} is claimed by pods ${best!.key} and ${others.join(', ')}; it counts as ${best!.key}'s`);
    }
    return best;
  }

  /**
   * Re-examine the addresses whose owner, pod attributes (`changed`: pods
   * whose labels or ports changed) or deepest prefix may have changed.
   * Returns the pods whose addresses changed hands, and whether the host
   * identities changed (every endpoint's node entry then does).
   */
  refresh(changed: Iterable<P>): { touched: Set<P>; hostsChanged: boolean } {
    if (this.dirtyPrefixes.size > 0) {
      // Addresses under an added or removed prefix may have a new deepest prefix.
      const byLen: Array<Set<number>> = Array.from({ length: 33 }, () => new Set<number>());
      const byLen6: Array<Set<bigint>> = Array.from({ length: 129 }, () => new Set<bigint>());
      for (const t of this.dirtyPrefixes) {
        const p = this.prefixObj(t);
        if (p.big !== undefined) byLen6[p.bits]!.add(p.big);
        else byLen[p.bits]!.add(p.base);
      }
      const lens = byLen.map((s, bits) => (s.size ? bits : -1)).filter((b) => b >= 0);
      const lens6 = byLen6.map((s, bits) => (s.size ? bits : -1)).filter((b) => b >= 0);
      for (const a of this.addrIdent.keys()) {
        if (a.includes(':')) {
          if (lens6.length === 0) continue;
          const n6 = ipv6ToBig(a);
          if (lens6.some((bits) => byLen6[bits]!.has(n6 & mask6Of(bits)))) this.dirtyAddrs.add(a);
          continue;
        }
        const n = ipv4ToInt(a);
        if (lens.some((bits) => byLen[bits]!.has((n & maskOf(bits)) >>> 0))) this.dirtyAddrs.add(a);
      }
      for (const t of this.dirtyPrefixes) this.refreshCidr(t);
      this.sortedPrefixes = undefined;
      this.sortedPrefixes6 = undefined;
    }
    const touched = new Set<P>();
    for (const p of changed) {
      touched.add(p);
      for (const a of p.pod.ips) this.dirtyAddrs.add(a);
    }
    // Host identities depend on each other (the primary address's group is HOST).
    if ([...this.nodeAddrs].some((a) => this.dirtyAddrs.has(a))) {
      for (const a of this.nodeAddrs) this.dirtyAddrs.add(a);
      this.refreshHosts();
    }
    const hostBefore = this.hostIdsKey;
    for (const a of this.dirtyAddrs) {
      const before = this.owner.get(a);
      const now = this.ownerOf(a);
      if (before !== now) {
        if (before && before !== 'host') touched.add(before);
        if (now && now !== 'host') touched.add(now);
      }
      if (now) this.owner.set(a, now);
      else this.owner.delete(a);
      if (now !== 'host') this.refreshAddrIdent(a, now);
      const own = hostPrefixText(a);
      this.dirtyPrefixes.add(own);
      if (this.prefixRefs.has(own)) this.refreshCidr(own);
    }
    this.hostIdsKey = [...this.nodeAddrs]
      .map((a) => this.addrIdent.get(a)?.id)
      .sort()
      .join(',');
    return { touched, hostsChanged: this.hostIdsKey !== hostBefore };
  }

  /**
   * This node's addresses, grouped by deepest policy prefix: the groups of
   * the first IPv4 address and of the first IPv6 one are one identity,
   * IDENTITY_HOST (its key names both prefixes: a new prefix for either
   * makes a new HOST), each other group an identity of its own.
   */
  private refreshHosts(): void {
    const first4 = this.nodeList.find((a) => !a.includes(':'));
    const first6 = this.nodeList.find((a) => a.includes(':'));
    const p4 = first4 !== undefined ? this.deepest(first4) : undefined;
    const p6 = first6 !== undefined ? this.deepest(first6) : undefined;
    // "host:10.0.0.0/8 ::/0" cannot be another group's "host:<prefix>".
    const primaryKey = p4 || p6 ? `host:${[p4?.text, p6?.text].filter((x) => x !== undefined).join(' ')}` : undefined;
    const keyOf = (a: string) => {
      const d = this.deepest(a);
      return d.text === p4?.text || d.text === p6?.text ? primaryKey! : `host:${d.text}`;
    };
    const groups = new Map<string, string[]>();
    for (const a of this.nodeAddrs) {
      const k = keyOf(a);
      const g = groups.get(k);
      if (g) g.push(a);
      else groups.set(k, [a]);
    }
    // Unmap each node address from an identity that no longer fits it (the
    // HOST id must be free before the primary group takes it).
    for (const a of this.nodeAddrs) {
      const old = this.addrIdent.get(a);
      if (!old) continue;
      if (old.kind === 'host' && old.key === keyOf(a) && (old.id === IDENTITY_HOST) === (old.key === primaryKey)) continue;
      old.addresses.delete(a);
      this.addrIdent.delete(a);
      if (old.addresses.size === 0) this.dropIdent(old);
    }
    for (const [k, addrs] of groups) {
      let id = this.idents.get(k);
      if (!id && k === primaryKey) id = this.makeIdent(k, 'host', (p4 ?? p6)!, IDENTITY_HOST, undefined, p4 && p6);
      else if (!id) id = this.makeIdent(k, 'host', this.deepest(addrs[0]!), undefined, hostPrefixText(addrs[0]!));
      for (const a of addrs) {
        id.addresses.add(a);
        this.addrIdent.set(a, id);
      }
    }
  }

  private refreshAddrIdent(addr: string, owner: P | undefined): void {
    let key: string | undefined;
    let prefix: Prefix = WORLD_PREFIX;
    if (owner) {
      prefix = this.deepest(addr);
      const pod = owner.pod;
      key = `pod:${pod.namespace}\u0000${labelsKey(pod.labels)}\u0000${prefix.text}\u0000${portsKey(namedPortsOf(pod.containerPorts))}`;
    }
    const old = this.addrIdent.get(addr);
    if (old && old.key === key) return;
    // A pod whose identity key changed (labels, ports, or a new prefix
    // splitting its group) and that leaves its old identity empty hands the
    // old id on: the address map keeps its entry, and only the table entries
    // whose selectors now decide otherwise change.
    let inherit: number | undefined;
    if (old) {
      old.addresses.delete(addr);
      this.addrIdent.delete(addr);
      if (old.addresses.size === 0) {
        this.dropIdent(old);
        if (old.kind === 'pod') inherit = old.id;
      }
    }
    if (!key || !owner) return;
    let id = this.idents.get(key);
    if (!id) {
      id = this.makeIdent(key, 'pod', prefix, inherit, hostPrefixText(addr));
      id.namespace = owner.pod.namespace;
      id.labels = owner.pod.labels;
      id.namedPorts = namedPortsOf(owner.pod.containerPorts);
      this.indexPodIdent(id, true);
    }
    id.addresses.add(addr);
    this.addrIdent.set(addr, id);
  }

  /** A policy prefix's CIDR identity exists while the prefix is in use and no pod or host holds it as its own /32 (/128). */
  private refreshCidr(text: string): void {
    if (text === WORLD_PREFIX.text || text === WORLD6_PREFIX.text) return;
    const p = this.prefixObj(text);
    const addr = text.slice(0, text.lastIndexOf('/'));
    const want = this.prefixRefs.has(text) && !(p.bits === hostBits(addr) && this.owner.has(addr));
    const key = `cidr:${text}`;
    const have = this.idents.get(key);
    if (want && !have) this.makeIdent(key, 'cidr', p, undefined, text);
    else if (!want && have) this.dropIdent(have);
    this.dirtyPrefixes.add(text);
  }

  // ---------------------------------------------------------------------------
  // Identities

  private makeIdent(key: string, kind: IdentKind, prefix: Prefix, fixed?: number, seedPrefix?: string, prefix6?: Prefix): Ident {
    let id = fixed;
    if (id === undefined) {
      const s = seedPrefix !== undefined ? this.seededIdentity.get(seedPrefix) : undefined;
      if (s !== undefined && !this.usedIdentities.has(s)) id = s;
      else {
        while (this.usedIdentities.has(this.nextIdentity) || this.seededIdentityValues.has(this.nextIdentity)) {
          this.nextIdentity++;
        }
        if (this.nextIdentity > MAX_IDENTITY) throw new Error('policy identities exhausted (2^32); restart the agent to renumber them');
        id = this.nextIdentity++;
      }
    }
    this.usedIdentities.add(id);
    const ident: Ident = {
      id,
      key,
      kind,
      prefix,
      ...(prefix6 ? { prefix6 } : {}),
      namespace: '',
      labels: {},
      namedPorts: [],
      addresses: new Set(),
      sets: new Set(),
      alive: true,
    };
    this.idents.set(key, ident);
    for (const p of identPrefixes(ident)) {
      let byPrefix = this.identsByPrefix.get(p.text);
      if (!byPrefix) {
        this.identsByPrefix.set(p.text, (byPrefix = new Set()));
        this.sortedPrefixes = undefined;
        this.sortedPrefixes6 = undefined;
      }
      byPrefix.add(ident);
    }
    this.identsAdded.add(ident);
    return ident;
  }

  private dropIdent(id: Ident): void {
    id.alive = false;
    this.idents.delete(id.key);
    this.usedIdentities.delete(id.id);
    for (const p of identPrefixes(id)) {
      const byPrefix = this.identsByPrefix.get(p.text);
      byPrefix?.delete(id);
      if (byPrefix?.size === 0) {
        this.identsByPrefix.delete(p.text);
        this.sortedPrefixes = undefined;
        this.sortedPrefixes6 = undefined;
      }
    }
    if (id.kind === 'pod') this.indexPodIdent(id, false);
    this.hooks.dropped(id);
    this.identsAdded.delete(id);
  }

  private indexPodIdent(id: Ident, add: boolean): void {
    const edit = (m: Map<string, Set<Ident>>, k: string) => {
      let s = m.get(k);
      if (add) {
        if (!s) m.set(k, (s = new Set()));
        s.add(id);
      } else if (s) {
        s.delete(id);
        if (s.size === 0) m.delete(k);
      }
    };
    const ns = id.namespace;
    const firstInNs = add && !this.identsByNs.has(ns);
    edit(this.identsByNs, ns);
    for (const k of Object.keys(id.labels)) {
      edit(this.postings, `${ns}\u0001${labelPair(k, id.labels[k]!)}`);
      edit(this.keyPostings, `${ns}\u0001${k}`);
    }
    if (firstInNs) this.hooks.namespaceSeen(ns);
  }

  // ---------------------------------------------------------------------------
  // Queries

  /** Namespaces that have pod identities. */
  namespacesWithPods(): Iterable<string> {
    return this.identsByNs.keys();
  }

  /** Pod identities of ns matching sel (every one without sel), through the label index. */
  *podIdentsIn(ns: string, sel: LabelSelector | undefined): Generator<Ident> {
    const all = this.identsByNs.get(ns);
    if (!all) return;
    const cand = sel
      ? selectorCandidates(
          sel,
          (pair) => this.postings.get(`${ns}\u0001${pair}`)?.size ?? 0,
          (key) => this.keyPostings.get(`${ns}\u0001${key}`)?.size ?? 0,
        )
      : undefined;
    if (!cand) {
      for (const id of all) if (!sel || selectorMatches(sel, id.labels)) yield id;
      return;
    }
    const lists =
      'pairs' in cand ? cand.pairs.map((p) => this.postings.get(`${ns}\u0001${p}`)) : [this.keyPostings.get(`${ns}\u0001${cand.key}`)];
    for (const list of lists) for (const id of list ?? []) if (selectorMatches(sel!, id.labels)) yield id;
  }

  /** Identities whose prefix lies within p. */
  *identsWithin(p: Prefix): Generator<Ident> {
    if (p.big !== undefined) {
      // IPv6: a sorted scan as below, over 128-bit bases.
      if (!this.sortedPrefixes6) {
        this.sortedPrefixes6 = [...this.identsByPrefix.keys()]
          .map((t) => this.prefixObj(t))
          .filter((q) => q.big !== undefined)
          .sort((a, b) => (a.big! < b.big! ? -1 : a.big! > b.big! ? 1 : a.bits - b.bits));
      }
      const end = p.big | (~mask6Of(p.bits) & ((1n << 128n) - 1n));
      for (const q of this.sortedPrefixes6) {
        if (q.big! < p.big) continue;
        if (q.big! > end) break;
        if (q.bits >= p.bits) yield* this.identsByPrefix.get(q.text) ?? [];
      }
      return;
    }
    if (!this.sortedPrefixes) {
      this.sortedPrefixes = [...this.identsByPrefix.keys()]
        .map((t) => this.prefixObj(t))
        .filter((q) => q.big === undefined)
        .sort((a, b) => a.base - b.base || a.bits - b.bits);
    }
    const list = this.sortedPrefixes;
    const end = p.base + 2 ** (32 - p.bits) - 1;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.base < p.base) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < list.length && list[i]!.base <= end; i++) {
      const q = list[i]!;
      if (q.bits >= p.bits) yield* this.identsByPrefix.get(q.text) ?? [];
    }
  }

  /** The identity entry of an identity prefix now, or undefined when nothing maps it. */
  entryFor(text: string, endpointOf: (owner: P) => number | undefined): IdentityEntry | undefined {
    if (text === WORLD_PREFIX.text) return { prefix: text, identity: IDENTITY_WORLD };
    if (text === WORLD6_PREFIX.text) return { prefix: text, identity: IDENTITY_WORLD6 };
    const slash = text.lastIndexOf('/');
    if (text.slice(slash + 1) === String(hostBits(text))) {
      const addr = text.slice(0, slash);
      const id = this.addrIdent.get(addr);
      if (id) {
        const owner = this.owner.get(addr);
        const ep = owner && owner !== 'host' ? endpointOf(owner) : undefined;
        return ep !== undefined ? { prefix: text, identity: id.id, endpoint: ep } : { prefix: text, identity: id.id };
      }
    }
    const c = this.idents.get(`cidr:${text}`);
    return c ? { prefix: text, identity: c.id } : undefined;
  }
}
