/**
 * Writes a CompiledPolicy (src/model/policy/compiled.ts) into the policy
 * maps of bpf/lib/policy.h, and reads it back from the pins.
 *
 * - Incremental: a mirror of what is written (adopted from the pinned maps
 *   at start) tells what changed; only that is written. apply() takes the
 *   whole policy, applyDiff() only what the model says changed.
 * - Make-before-break: an endpoint's changed table is a new inner map,
 *   filled and then swapped into bpfproxy_policy in one update; a packet
 *   sees the old table or the new one, never half of one. Tables are never
 *   changed once in place, so endpoints with the same content share one
 *   inner map, and the outer entries of a whole apply go in one
 *   BPF_MAP_UPDATE_BATCH (and out in one DELETE_BATCH): the kernel waits for
 *   running programs after each call on a map-in-map, since 6.7 once per
 *   batch. A kernel refusing the batch gets one call per table. Identities are
 *   written before the tables that name them, tables before the endpoint
 *   entries that isolate their endpoint, deletes last, and the generation
 *   (which makes every tracked flow be checked again) after everything.
 * - The generation is this writer's own counter, read back from the pin
 *   and moved on by one with every apply that changed a decision, so a
 *   restarted model that numbers from 1 again cannot meet a decision
 *   cached under the same number before the restart.
 * - Fails closed: a table that does not fit (more entries than an inner
 *   map holds, or the kernel refusing one) is replaced by an empty one,
 *   which denies everything in the endpoint's isolated directions; it is
 *   logged, counted (stats().tablesDenyAll) and reported, and never allows.
 *   Should even that fail, the endpoint's table is removed: the datapath
 *   then denies (policy-no-table).
 */
import type { Logger } from '../../log.js';
import { BpfError, native, type MapHandle } from '../../native/index.js';
import {
  IDENTITY_WORLD,
  type CompiledPolicy,
  type EndpointPolicy,
  type IdentityEntry,
  type PolicyDirection,
  type PolicyRuleEntry,
  type PolicyRuleRef,
} from '../../model/policy/compiled.js';
import { IpcacheFlags, PolDir, polKey, polValue, type IpcacheKey, type IpcacheValue } from './codecs.js';
import type { DatapathMaps } from './loader.js';
import { BpfMap } from './map.js';
import {
  canonicalPrefix,
  hostPrefix,
  ipcacheRefOf,
  polKeyOf,
  polValueOf,
  prefixText,
  sortEntries,
  tableContent,
  tableEntryOf,
  tableOf,
  type TableEntry,
} from './policy-entries.js';

/** bpf/lib/policy.h: POL_TABLE_MAX, POL_RULES_MAX, POL_ENDPOINTS_MAX. */
export const TABLE_MAX_ENTRIES = 16384;
export const RULES_MAX = 65536;
export const ENDPOINTS_MAX = 16384;

const BPF_MAP_TYPE_LPM_TRIE = 11;
const BPF_F_NO_PREALLOC = 1;
const ENOSPC = 28;
const E2BIG = 7;
const EINVAL = 22;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524;

export type PolicyMapSet = Pick<DatapathMaps, 'ipcache' | 'ipcache6' | 'policy' | 'polState' | 'polHits' | 'polRules' | 'polEps'>;

/** What changed, as the model may say it without handing over everything. */
export interface CompiledPolicyDiff {
  identities?: { upsert?: readonly IdentityEntry[]; remove?: readonly string[] };
  endpoints?: { upsert?: readonly EndpointPolicy[]; remove?: readonly number[] };
  rules?: { upsert?: readonly PolicyRuleRef[]; remove?: readonly number[] };
}

export interface PolicyProblem {
  /** "namespace/name" of the pod, when one endpoint was concerned */
  pod?: string;
  endpoint?: number;
  /** the identity prefix, when one was concerned */
  prefix?: string;
  message: string;
  /** an endpoint's table did not fit: it denies everything in its isolated directions */
  denyAll?: boolean;
}

export interface PolicyApplyReport {
  /** the generation in the datapath after this apply */
  generation: number;
  /** whether any decision may have changed (the generation moved) */
  changed: boolean;
  ipcacheWrites: number;
  ipcacheDeletes: number;
  tablesWritten: number;
  tablesDeleted: number;
  problems: PolicyProblem[];
  ms: number;
}

export interface PolicyMapStats {
  generation: number;
  identities: number;
  endpoints: number;
  isolated: number;
  tableEntries: number;
  rules: number;
  /** tables replaced by deny-all since start (did not fit) */
  tablesDenyAll: number;
  /** endpoints whose table is deny-all right now */
  denyAllNow: number;
}

interface WrittenTable {
  content: string;
  entries: number;
  /** replaced by an empty table: the wanted one did not fit */
  denyAll: boolean;
  /** the inner map's id (tables are never changed once in place, so endpoints with the same content share one) */
  mapId: number;
  /** the content the inner map holds (content, or '' for a deny-all table) */
  held: string;
  /** the entries the inner map holds (none for a deny-all table) */
  list: readonly TableEntry[];
}

/**
 * What the policy maps hold, from the writer's mirror of them (updated only
 * by writes that succeeded): what a second dataplane (the AF_XDP engine)
 * enforces to take the BPF path's decisions, deny-all and missing tables
 * included.
 */
export interface WrittenPolicy {
  generation: number;
  /** bpfproxy_pol_state.isolated: 0 = nothing is enforced */
  isolated: number;
  /** IPv4 prefixes (bpfproxy_ipcache) */
  ipcache: ReadonlyArray<readonly [IpcacheKey, IpcacheValue]>;
  /** IPv6 prefixes (bpfproxy_ipcache6); left out: none */
  ipcache6?: ReadonlyArray<readonly [IpcacheKey, IpcacheValue]>;
  /** endpoint id -> the entries its table holds (empty: deny-all); an endpoint without a table is absent */
  tables: ReadonlyMap<number, readonly TableEntry[]>;
}

/** What an apply swaps in for one endpoint. */
interface TableSwap {
  e: EndpointPolicy;
  entries: TableEntry[];
  content: string;
}

type Normalized = ReturnType<typeof tableOf> & { content: string };

/** Errors that say "this kernel has no batch operation for this map type". */
const noBatch = (n: number): boolean => n === EINVAL || n === EOPNOTSUPP || n === ENOTSUPP;

const sameIpc = (a: IpcacheValue | undefined, b: IpcacheValue | undefined): boolean =>
  !!a && !!b && a.identity === b.identity && a.endpoint === b.endpoint && a.flags === b.flags;

const sameRule = (a: PolicyRuleRef | undefined, b: PolicyRuleRef): boolean =>
  !!a && a.policy === b.policy && a.direction === b.direction && a.index === b.index;

const dirOf = (d: number): PolicyDirection => (d === PolDir.INGRESS ? 'ingress' : 'egress');
const dirCode = (d: PolicyDirection): number => (d === 'ingress' ? PolDir.INGRESS : PolDir.EGRESS);

const isolatedOf = (ep: EndpointPolicy): boolean => ep.ingressIsolated || ep.egressIsolated;
const flagsOf = (ep: EndpointPolicy): number =>
  (ep.ingressIsolated ? IpcacheFlags.INGRESS_ISO : 0) | (ep.egressIsolated ? IpcacheFlags.EGRESS_ISO : 0);

function errnoOf(e: unknown): number {
  return e instanceof BpfError ? e.errno : 0;
}

/** The table of one endpoint, opened by the id its outer map entry holds. */
function openTable(id: number, ep: number): BpfMap<ReturnType<typeof polKey.decode>, ReturnType<typeof polValue.decode>> {
  const h = native().mapById(id, `bpfproxy_policy[${ep}]`);
  return new BpfMap(`bpfproxy_policy[${ep}]`, h, polKey, polValue);
}

/**
 * What the pinned maps hold, as a CompiledPolicy: to adopt them after a
 * restart (this writer does) and to seed the model's interner with the
 * identities and endpoint ids in use. Tables hold what was written
 * (normalized: see policy-entries.ts tableOf()).
 */
export function readPinned(maps: PolicyMapSet): CompiledPolicy {
  const state = maps.polState.get({ v: 0 });
  const identities: IdentityEntry[] = [];
  const eps = new Map<number, EndpointPolicy>();
  const ep = (id: number): EndpointPolicy => {
    let e = eps.get(id);
    if (!e) eps.set(id, (e = { id, pod: '', addresses: [], ingressIsolated: false, egressIsolated: false, entries: [] }));
    return e;
  };
  const read4 = maps.ipcache.entries().map(([k, v]) => [k, v, 32] as const);
  const read6 = maps.ipcache6.entries().map(([k, v]) => [k, v, 128] as const);
  for (const [k, v, host] of [...read4, ...read6]) {
    const prefix = prefixText(k);
    identities.push(v.endpoint ? { prefix, identity: v.identity, endpoint: v.endpoint } : { prefix, identity: v.identity });
    if (!v.endpoint) continue;
    const e = ep(v.endpoint);
    if (k.prefixlen === host) e.addresses.push(k.addr);
    e.ingressIsolated ||= (v.flags & IpcacheFlags.INGRESS_ISO) !== 0;
    e.egressIsolated ||= (v.flags & IpcacheFlags.EGRESS_ISO) !== 0;
  }
  for (const [k, v] of maps.polEps.entries()) ep(k.v).pod = v.pod;
  // Endpoints with the same rules share one inner map: read each once.
  const read = new Map<number, TableEntry[]>();
  for (const [k, v] of maps.policy.entries()) {
    const e = ep(k.v);
    let list = read.get(v.v);
    if (!list) {
      list = [];
      const t = openTable(v.v, k.v);
      try {
        for (const [pk, pv] of t.entries()) {
          const te = tableEntryOf(pk, pv);
          if (te) list.push(te);
        }
      } finally {
        t.close();
      }
      read.set(v.v, sortEntries(list));
    }
    e.entries = list; // shared by the endpoints of one inner map (read-only, as the model's)
  }
  const rules: PolicyRuleRef[] = maps.polRules
    .entries()
    .map(([k, v]) => ({ id: k.v, policy: v.policy, direction: dirOf(v.dir), index: v.index }))
    .sort((a, b) => a.id - b.id);
  identities.sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
  for (const e of eps.values()) e.addresses.sort();
  return {
    generation: state?.generation ?? 0,
    identities,
    endpoints: [...eps.values()].sort((a, b) => a.id - b.id),
    rules,
  };
}

export class PolicyMapWriter {
  /** the model's view, as last given */
  private readonly identities = new Map<string, IdentityEntry>();
  private readonly endpoints = new Map<number, EndpointPolicy>();
  private readonly rules = new Map<number, PolicyRuleRef>();
  /** what the maps hold (change it through held() / released(), which count the IPv6 prefixes) */
  private readonly ipcache = new Map<string, IpcacheValue>();
  private ipcache6Held = 0;
  private readonly tables = new Map<number, WrittenTable>();
  private readonly epNames = new Map<number, string>();
  private readonly ruleNames = new Map<number, PolicyRuleRef>();
  private gen: number;
  private isolatedWritten: number;
  private denyAllTotal = 0;
  /** rule ids past RULES_MAX, reported once each */
  private readonly tooHigh = new Set<number>();
  /** what a failed write left different from the model: tried again by the next apply */
  private retryPrefixes = new Set<string>();
  private retryEndpoints = new Set<number>();
  private retryRules = new Set<number>();
  private retryState = false;
  /** inner maps in place by content, and how many endpoints point to each */
  private readonly byContent = new Map<string, { mapId: number; users: number }>();
  /** false once the kernel refused a batch call on the outer map / an LPM trie */
  private outerBatch = true;
  private lpmBatch = true;
  /** syscalls on the outer map and inner maps created, since start (tests, figures) */
  readonly counters = { outerBatches: 0, outerSingles: 0, tablesCreated: 0 };
  private readonly normCache = new WeakMap<readonly PolicyRuleEntry[], Map<number, Normalized>>();

  constructor(
    private readonly maps: PolicyMapSet,
    private readonly log?: Logger,
    private readonly tableMax = TABLE_MAX_ENTRIES,
  ) {
    const pinned = readPinned(maps);
    this.gen = pinned.generation;
    this.isolatedWritten = maps.polState.get({ v: 0 })?.isolated ?? 0;
    for (const [k, v] of maps.ipcache.entries()) this.held(prefixText(k), v);
    for (const [k, v] of maps.ipcache6.entries()) this.held(prefixText(k), v);
    for (const i of pinned.identities) this.identities.set(i.prefix, i);
    const tables = new Map(maps.policy.entries().map(([k, v]) => [k.v, v.v]));
    for (const e of pinned.endpoints) {
      if (e.pod) this.epNames.set(e.id, e.pod);
      const mapId = tables.get(e.id);
      if (mapId !== undefined) {
        const { entries, content } = this.normalized(e);
        this.setTable(e.id, { content, entries: entries.length, denyAll: false, mapId, held: content, list: entries });
      }
      this.endpoints.set(e.id, e);
    }
    for (const r of pinned.rules) {
      this.rules.set(r.id, r);
      this.ruleNames.set(r.id, r);
    }
    this.log?.info(
      { generation: this.gen, identities: this.ipcache.size, endpoints: this.endpoints.size, tables: this.tables.size },
      'adopted network policy state from pinned maps',
    );
  }

  get generation(): number {
    return this.gen;
  }

  stats(): PolicyMapStats {
    let tableEntries = 0;
    let denyAllNow = 0;
    for (const t of this.tables.values()) {
      tableEntries += t.entries;
      if (t.denyAll) denyAllNow++;
    }
    return {
      generation: this.gen,
      identities: this.ipcache.size,
      endpoints: this.endpoints.size,
      isolated: this.isolatedCount(),
      tableEntries,
      rules: this.ruleNames.size,
      tablesDenyAll: this.denyAllTotal,
      denyAllNow,
    };
  }

  /**
   * Entries in bpfproxy_ipcache and bpfproxy_ipcache6, by map name, as this
   * writer wrote them (it is their only writer): the scrape's map fill
   * takes these instead of counting the tries key by key.
   */
  ipcacheCounts(): Record<string, number> {
    return {
      [this.maps.ipcache.name]: this.ipcache.size - this.ipcache6Held,
      [this.maps.ipcache6.name]: this.ipcache6Held,
    };
  }

  /** The maps hold v for prefix p now. */
  private held(p: string, v: IpcacheValue): void {
    if (p.includes(':') && !this.ipcache.has(p)) this.ipcache6Held++;
    this.ipcache.set(p, v);
  }

  /** The maps hold nothing for prefix p now. */
  private released(p: string): void {
    if (this.ipcache.delete(p) && p.includes(':')) this.ipcache6Held--;
  }

  /** What the maps hold now (see WrittenPolicy). */
  written(): WrittenPolicy {
    const tables = new Map<number, readonly TableEntry[]>();
    for (const [id, t] of this.tables) tables.set(id, t.list);
    return {
      generation: this.gen,
      isolated: this.isolatedWritten,
      // the engine's policy node takes both families' identities
      ipcache: [...this.ipcache].flatMap(([p, v]) => {
        const r = ipcacheRefOf(p);
        return r?.family === 4 ? [[r.key, v] as const] : [];
      }),
      ipcache6: [...this.ipcache].flatMap(([p, v]) => {
        const r = ipcacheRefOf(p);
        return r?.family === 6 ? [[r.key, v] as const] : [];
      }),
      tables,
    };
  }

  /** Decisions one rule took (new flows and re-checks), summed over CPUs. */
  hitsOf(rule: number): number {
    if (rule >= RULES_MAX) return 0;
    return this.maps.polHits.getPerCpu({ v: rule }).reduce((a, c) => a + Number(c.hits), 0);
  }

  /** Decisions each rule took (new flows and re-checks), summed over CPUs; rules that took none are left out. */
  hits(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [k, per] of this.maps.polHits.entriesPerCpu()) {
      const n = per.reduce((a, c) => a + Number(c.hits), 0);
      if (n) out.set(k.v, n);
    }
    return out;
  }

  /** Make the maps hold exactly this policy. */
  apply(next: CompiledPolicy): PolicyApplyReport {
    const diff = {
      identities: { upsert: [] as IdentityEntry[], remove: [] as string[] },
      endpoints: { upsert: [] as EndpointPolicy[], remove: [] as number[] },
      rules: { upsert: [] as PolicyRuleRef[], remove: [] as number[] },
    };
    const wantIds = new Map<string, IdentityEntry>();
    for (const i of next.identities) wantIds.set(canonicalPrefix(i.prefix) ?? i.prefix, i);
    for (const [p, i] of wantIds) {
      const have = this.identities.get(p);
      if (!have || have.identity !== i.identity || (have.endpoint ?? 0) !== (i.endpoint ?? 0)) diff.identities.upsert.push(i);
    }
    for (const p of this.identities.keys()) if (!wantIds.has(p)) diff.identities.remove.push(p);
    const wantEps = new Map(next.endpoints.map((e) => [e.id, e]));
    for (const [id, e] of wantEps) {
      const have = this.endpoints.get(id);
      if (!have || !this.sameEndpoint(have, e)) diff.endpoints.upsert.push(e);
    }
    for (const id of this.endpoints.keys()) if (!wantEps.has(id)) diff.endpoints.remove.push(id);
    const wantRules = new Map(next.rules.map((r) => [r.id, r]));
    for (const [id, r] of wantRules) if (!sameRule(this.rules.get(id), r)) diff.rules.upsert.push(r);
    for (const id of this.rules.keys()) if (!wantRules.has(id)) diff.rules.remove.push(id);
    return this.applyDiff(diff);
  }

  /** Apply what changed; entries not named keep what they have. */
  applyDiff(diff: CompiledPolicyDiff): PolicyApplyReport {
    const t0 = performance.now();
    const problems: PolicyProblem[] = [];
    const report: PolicyApplyReport = {
      generation: this.gen,
      changed: false,
      ipcacheWrites: 0,
      ipcacheDeletes: 0,
      tablesWritten: 0,
      tablesDeleted: 0,
      problems,
      ms: 0,
    };

    // The model's view, and every prefix and endpoint whose maps may change
    // (with what an earlier apply failed to write).
    const prefixes = this.retryPrefixes;
    const touched = this.retryEndpoints;
    const rulesTouched = this.retryRules;
    this.retryPrefixes = new Set();
    this.retryEndpoints = new Set();
    this.retryRules = new Set();
    for (const p of diff.identities?.remove ?? []) {
      const text = canonicalPrefix(p) ?? p;
      this.identities.delete(text);
      prefixes.add(text);
    }
    for (const i of diff.identities?.upsert ?? []) {
      const text = canonicalPrefix(i.prefix);
      if (!text) {
        problems.push({ prefix: i.prefix, message: `identity ${i.identity}: "${i.prefix}" is not an IPv4 or IPv6 prefix; left out` });
        continue;
      }
      this.identities.set(text, { ...i, prefix: text });
      prefixes.add(text);
    }
    for (const id of diff.endpoints?.remove ?? []) {
      const have = this.endpoints.get(id);
      for (const a of have?.addresses ?? []) prefixes.add(hostPrefix(a));
      this.endpoints.delete(id);
      touched.add(id);
    }
    for (const given of diff.endpoints?.upsert ?? []) {
      const e = this.checkEndpoint(given, problems);
      const have = this.endpoints.get(e.id);
      for (const a of have?.addresses ?? []) prefixes.add(hostPrefix(a));
      for (const a of e.addresses) prefixes.add(hostPrefix(a));
      this.endpoints.set(e.id, e);
      touched.add(e.id);
    }
    for (const id of diff.rules?.remove ?? []) {
      this.rules.delete(id);
      rulesTouched.add(id);
    }
    for (const r of diff.rules?.upsert ?? []) {
      this.rules.set(r.id, r);
      rulesTouched.add(r.id);
    }

    // Desired ipcache values of the prefixes concerned.
    const byAddr = new Map<string, EndpointPolicy>();
    for (const e of this.endpoints.values()) for (const a of e.addresses) byAddr.set(hostPrefix(a), e);
    const want = new Map<string, IpcacheValue | undefined>();
    for (const p of prefixes) want.set(p, this.ipcacheValueFor(p, byAddr, problems));

    let decisions = this.retryState;
    // 1. identities that are no local endpoint (peers), before the tables naming them
    const peers: Array<[string, IpcacheValue]> = [];
    for (const [p, v] of want) if (v && !v.endpoint && !sameIpc(this.ipcache.get(p), v)) peers.push([p, v]);
    if (peers.length) {
      report.ipcacheWrites += this.writeIpcacheMany(peers, problems);
      decisions = true;
    }
    // 2. tables of isolated endpoints, new or changed: filled inner maps (one per distinct
    //    content, shared), then swapped in with one batch update of the outer map
    const swaps: TableSwap[] = [];
    for (const id of touched) {
      const e = this.endpoints.get(id);
      if (!e || !isolatedOf(e)) continue;
      const t = this.normalized(e);
      for (const b of t.problems) {
        problems.push({
          pod: e.pod,
          endpoint: id,
          message: `rule ${b.entry.ruleId} (${b.entry.direction}): ${b.message}; left out (the endpoint stays isolated)`,
        });
      }
      const content = t.content;
      if (this.tables.get(id)?.content === content) continue;
      swaps.push({ e, entries: t.entries, content });
    }
    if (swaps.length) {
      this.writeTables(swaps, problems);
      for (const s of swaps) if (this.tables.get(s.e.id)?.content !== s.content) this.retryEndpoints.add(s.e.id);
      report.tablesWritten += swaps.length;
      decisions = true;
    }
    // 3. the endpoints' own addresses: endpoint id and isolation
    const own: Array<[string, IpcacheValue]> = [];
    for (const [p, v] of want) if (v && v.endpoint && !sameIpc(this.ipcache.get(p), v)) own.push([p, v]);
    if (own.length) {
      report.ipcacheWrites += this.writeIpcacheMany(own, problems);
      decisions = true;
    }
    // 4. names (operators, adoption)
    for (const id of touched) {
      const e = this.endpoints.get(id);
      if (!e || this.epNames.get(id) === e.pod) continue;
      if (
        this.tryWrite(problems, { pod: e.pod, endpoint: id }, `the name of endpoint ${id}`, () =>
          this.maps.polEps.set({ v: id }, { pod: e.pod }),
        )
      )
        this.epNames.set(id, e.pod);
      else this.retryEndpoints.add(id);
    }
    for (const id of rulesTouched) {
      const r = this.rules.get(id);
      if (!r || sameRule(this.ruleNames.get(id), r)) continue;
      if (id >= RULES_MAX) {
        if (!this.tooHigh.has(id)) {
          this.tooHigh.add(id);
          this.log?.warn(
            { rule: id, policy: r.policy, max: RULES_MAX },
            `policy rule id ${id} (${r.policy} ${r.direction}[${r.index}]) is past the ${RULES_MAX} the hit counters hold: enforced, but neither counted nor named`,
          );
        }
        continue;
      }
      const known = this.ruleNames.has(id);
      if (
        !this.tryWrite(problems, {}, `the name of policy rule ${id} (${r.policy})`, () =>
          this.maps.polRules.set({ v: id }, { policy: r.policy, index: r.index, dir: dirCode(r.direction) }),
        )
      ) {
        this.retryRules.add(id);
        continue;
      }
      // a rule id given to another rule starts counting afresh
      if (known) this.zeroHits(id);
      this.ruleNames.set(id, r);
    }
    // 5. deletes: ipcache entries, then tables nobody isolated needs, then names
    for (const [p, v] of want) {
      if (v || !this.ipcache.has(p)) continue;
      const r = ipcacheRefOf(p)!;
      decisions = true;
      if (!this.tryWrite(problems, { prefix: p }, `the removal of identity prefix ${p}`, () => this.ipcacheMap(r.family).delete(r.key))) {
        this.retryPrefixes.add(p);
        continue;
      }
      this.released(p);
      report.ipcacheDeletes++;
    }
    const unused: number[] = [];
    for (const id of touched) {
      const e = this.endpoints.get(id);
      if ((e && isolatedOf(e)) || !this.tables.has(id)) continue;
      decisions = true;
      unused.push(id);
    }
    if (unused.length) {
      for (const id of this.deleteTables(unused, problems)) {
        this.dropTable(id);
        report.tablesDeleted++;
      }
    }
    for (const id of touched) {
      if (this.endpoints.has(id) || !this.epNames.has(id)) continue;
      if (this.tryWrite(problems, { endpoint: id }, `the removal of the name of endpoint ${id}`, () => this.maps.polEps.delete({ v: id })))
        this.epNames.delete(id);
      else this.retryEndpoints.add(id);
    }
    for (const id of rulesTouched) {
      if (this.rules.has(id) || !this.ruleNames.has(id)) continue;
      if (!this.tryWrite(problems, {}, `the removal of the name of policy rule ${id}`, () => this.maps.polRules.delete({ v: id }))) {
        this.retryRules.add(id);
        continue;
      }
      this.ruleNames.delete(id);
      this.zeroHits(id);
    }
    // 6. last: the generation, so that no flow is checked against half of a change
    const isolated = this.isolatedCount();
    if (decisions || isolated !== this.isolatedWritten) {
      const gen = this.gen >= 0xffffffff ? 1 : this.gen + 1;
      try {
        this.maps.polState.set({ v: 0 }, { generation: gen, isolated });
        this.gen = gen;
        this.isolatedWritten = isolated;
        this.retryState = false;
        report.changed = true;
      } catch (e) {
        this.retryState = true;
        // Flows keep the decisions cached under the old generation until the next apply moves it.
        problems.push({
          message: `cannot write the policy generation: ${(e as Error).message}; tracked flows keep their decisions until the next sync`,
        });
        this.log?.error(
          { err: e },
          `cannot write bpfproxy_pol_state: ${(e as Error).message}; tracked flows are not checked again until the next policy sync`,
        );
      }
    }
    report.generation = this.gen;
    report.ms = performance.now() - t0;
    for (const p of problems) {
      if (p.denyAll) continue; // logged where it happened
      this.log?.warn({ pod: p.pod, endpoint: p.endpoint, prefix: p.prefix }, `network policy: ${p.message}`);
    }
    return report;
  }

  private isolatedCount(): number {
    let n = 0;
    for (const e of this.endpoints.values()) if (isolatedOf(e)) n++;
    return n;
  }

  /**
   * The ipcache value a prefix must have: the model's identity for it and,
   * for a local endpoint's address, the endpoint's id and isolation. An
   * endpoint address the model gave no identity still isolates its
   * endpoint (identity WORLD for its peers): enforcement never depends on
   * the identity list being complete.
   */
  private ipcacheValueFor(p: string, byAddr: Map<string, EndpointPolicy>, problems: PolicyProblem[]): IpcacheValue | undefined {
    const i = this.identities.get(p);
    const e = byAddr.get(p);
    if (!i && !e) return undefined;
    if (e) {
      if (!i) {
        problems.push({
          pod: e.pod,
          endpoint: e.id,
          prefix: p,
          message: `address ${p} of endpoint ${e.id} has no identity; its peers see it as WORLD (its own isolation is enforced)`,
        });
      }
      return { identity: i?.identity ?? IDENTITY_WORLD, endpoint: e.id, flags: flagsOf(e) };
    }
    // An identity naming an endpoint that is gone or does not list the
    // address is no local endpoint here: nothing to enforce for it.
    return { identity: i!.identity, endpoint: 0, flags: 0 };
  }

  /** The endpoint with its addresses canonical; an address that is neither IPv4 nor IPv6 is left out and reported. */
  private checkEndpoint(e: EndpointPolicy, problems: PolicyProblem[]): EndpointPolicy {
    const addresses: string[] = [];
    for (const a of e.addresses) {
      const r = a.includes('/') ? undefined : ipcacheRefOf(a);
      if (r) addresses.push(r.key.addr);
      else problems.push({ pod: e.pod, endpoint: e.id, message: `address "${a}" is not an IPv4 or IPv6 address; left out` });
    }
    return { ...e, addresses: [...new Set(addresses)].sort() };
  }

  /**
   * Write these ipcache entries, with BPF_MAP_UPDATE_BATCH where the kernel
   * has it for LPM tries (one syscall instead of one per prefix), else (or
   * from where a batch stopped) one by one. Returns how many were written;
   * the others are retried by the next apply.
   */
  private writeIpcacheMany(list: ReadonlyArray<[string, IpcacheValue]>, problems: PolicyProblem[]): number {
    const v6 = list.filter(([p]) => p.includes(':'));
    if (v6.length === 0) return this.writeIpcacheFamily(4, list, problems);
    return (
      this.writeIpcacheFamily(
        4,
        list.filter(([p]) => !p.includes(':')),
        problems,
      ) + this.writeIpcacheFamily(6, v6, problems)
    );
  }

  /** bpfproxy_ipcache or bpfproxy_ipcache6 */
  private ipcacheMap(family: 4 | 6): PolicyMapSet['ipcache'] {
    return family === 6 ? this.maps.ipcache6 : this.maps.ipcache;
  }

  private writeIpcacheFamily(family: 4 | 6, list: ReadonlyArray<[string, IpcacheValue]>, problems: PolicyProblem[]): number {
    let from = 0;
    if (this.lpmBatch && list.length > 1) {
      try {
        this.ipcacheMap(family).setMany(list.map(([p, v]) => [ipcacheRefOf(p)!.key, v] as const));
        for (const [p, v] of list) this.held(p, v);
        return list.length;
      } catch (e) {
        if (noBatch(errnoOf(e))) this.lpmBatch = false;
        else from = e instanceof BpfError ? e.done : 0;
        for (let i = 0; i < from; i++) this.held(list[i]![0], list[i]![1]);
      }
    }
    let n = from;
    for (let i = from; i < list.length; i++) {
      const [p, v] = list[i]!;
      if (this.writeIpcache(p, v, problems)) n++;
      else this.retryPrefixes.add(p);
    }
    return n;
  }

  private writeIpcache(p: string, v: IpcacheValue, problems: PolicyProblem[]): boolean {
    const r = ipcacheRefOf(p)!;
    const ok = this.tryWrite(problems, { prefix: p, endpoint: v.endpoint || undefined }, `identity prefix ${p}`, () =>
      this.ipcacheMap(r.family).set(r.key, v),
    );
    if (ok) this.held(p, v);
    else if (v.flags && !this.ipcache.get(p)?.flags) {
      // The one way this writer cannot fail closed: without its entry the datapath does not know the endpoint.
      this.log?.error(
        { prefix: p, endpoint: v.endpoint, pod: this.endpoints.get(v.endpoint)?.pod },
        `network policy: cannot write the ipcache entry of ${this.endpoints.get(v.endpoint)?.pod || `endpoint ${v.endpoint}`} (${p}): ` +
          'its isolation is NOT enforced until it is written (retried on every sync); see the problem above for why',
      );
    }
    return ok;
  }

  private tryWrite(problems: PolicyProblem[], about: Omit<PolicyProblem, 'message'>, what: string, fn: () => unknown): boolean {
    try {
      fn();
      return true;
    } catch (e) {
      const full = errnoOf(e) === ENOSPC || errnoOf(e) === E2BIG;
      problems.push({
        ...about,
        message: `cannot write ${what}: ${(e as Error).message}${full ? ' (map full: raise its size)' : ''}; retried on the next sync`,
      });
      return false;
    }
  }

  private zeroHits(id: number): void {
    if (id >= RULES_MAX) return;
    try {
      this.maps.polHits.set({ v: id }, { hits: 0n });
    } catch {
      /* a counter left as it was misleads nobody into allowing */
    }
  }

  /**
   * tableOf(e) and its content. Endpoints selected by the same policies share
   * one entry list, and the compiler hands unchanged lists over again: each
   * list is normalized once (per isolation), not per endpoint and sync.
   */
  private normalized(e: EndpointPolicy): Normalized {
    let byFlags = this.normCache.get(e.entries);
    if (!byFlags) this.normCache.set(e.entries, (byFlags = new Map<number, Normalized>()));
    let t = byFlags.get(flagsOf(e));
    if (!t) {
      const n = tableOf(e);
      byFlags.set(flagsOf(e), (t = { ...n, content: tableContent(n.entries) }));
    }
    return t;
  }

  private sameEndpoint(a: EndpointPolicy, b: EndpointPolicy): boolean {
    if (a.pod !== b.pod || a.ingressIsolated !== b.ingressIsolated || a.egressIsolated !== b.egressIsolated) return false;
    const as = [...a.addresses].sort();
    const bs = [...b.addresses].sort();
    if (as.length !== bs.length || as.some((x, i) => x !== bs[i])) return false;
    return a.entries === b.entries || this.normalized(a).content === this.normalized(b).content;
  }

  /** Record what an endpoint's outer entry points to, keeping the content index. */
  private setTable(id: number, t: WrittenTable): void {
    this.dropTable(id);
    this.tables.set(id, t);
    const have = this.byContent.get(t.held);
    if (have && have.mapId === t.mapId) have.users++;
    else this.byContent.set(t.held, { mapId: t.mapId, users: 1 });
  }

  private dropTable(id: number): void {
    const t = this.tables.get(id);
    if (!t) return;
    this.tables.delete(id);
    const have = this.byContent.get(t.held);
    if (have && have.mapId === t.mapId && --have.users <= 0) this.byContent.delete(t.held);
  }

  /**
   * A handle on an inner map holding exactly these entries: one in place
   * already (tables never change once in place), or a new one, filled.
   * Throws with nothing left open.
   */
  private tableWith(content: string, entries: readonly TableEntry[], owner: number): MapHandle {
    const have = this.byContent.get(content);
    if (have) {
      try {
        return native().mapById(have.mapId, `bpfproxy_policy[${owner}]`);
      } catch {
        this.byContent.delete(content); // gone (cannot be while in use; then a new one it is)
      }
    }
    let h: MapHandle | undefined = native().mapCreate({
      type: BPF_MAP_TYPE_LPM_TRIE,
      name: `bpxpol_${owner}`,
      keySize: polKey.size,
      valueSize: polValue.size,
      maxEntries: TABLE_MAX_ENTRIES,
      flags: BPF_F_NO_PREALLOC,
    });
    this.counters.tablesCreated++;
    try {
      const t = new BpfMap(`bpfproxy_policy[${owner}]`, h, polKey, polValue);
      const kv = entries.map((x) => [polKeyOf(x), polValueOf(x)] as const);
      if (kv.length && this.lpmBatch) {
        try {
          t.setMany(kv);
        } catch (e) {
          if (!noBatch(errnoOf(e))) throw e;
          this.lpmBatch = false; // no batch ops for LPM tries on this kernel: entry by entry from now on
          for (const [k, v] of kv) t.set(k, v);
        }
      } else {
        for (const [k, v] of kv) t.set(k, v);
      }
      const out = h;
      h = undefined;
      return out;
    } finally {
      h?.close();
    }
  }

  /**
   * Swap these endpoints' tables in (make-before-break): every new inner map
   * is filled before the outer map points to it, then the outer entries of
   * all of them are written with one BPF_MAP_UPDATE_BATCH (the kernel waits
   * for running programs once per call on a map-in-map, since 6.7 once per
   * batch: that wait is what a sync of many tables costs). A table that does
   * not fit or cannot be written is replaced by an empty one (deny-all), and
   * where even that fails the endpoint's table is removed (policy-no-table).
   */
  private writeTables(swaps: readonly TableSwap[], problems: PolicyProblem[]): void {
    const handles: MapHandle[] = [];
    const outer: Array<{ s: TableSwap; h: MapHandle; denyAll: boolean }> = [];
    const denied: Array<{ s: TableSwap; why: string; tooMany: boolean }> = [];
    try {
      const groups = new Map<string, TableSwap[]>();
      for (const s of swaps) {
        if (s.entries.length > this.tableMax) {
          denied.push({ s, why: `${s.entries.length} rule entries, more than the ${this.tableMax} a table holds`, tooMany: true });
          continue;
        }
        const g = groups.get(s.content);
        if (g) g.push(s);
        else groups.set(s.content, [s]);
      }
      for (const [content, group] of groups) {
        let h: MapHandle;
        try {
          h = this.tableWith(content, group[0]!.entries, group[0]!.e.id);
        } catch (err) {
          for (const s of group) denied.push({ s, why: (err as Error).message, tooMany: false });
          continue;
        }
        handles.push(h);
        for (const s of group) outer.push({ s, h, denyAll: false });
      }
      let empty: MapHandle | undefined;
      if (denied.length) {
        try {
          empty = this.tableWith('', [], denied[0]!.s.e.id);
          handles.push(empty);
        } catch {
          /* handled per endpoint below: its table is removed */
        }
      }
      for (const d of denied) {
        this.denyAllTotal++;
        const e = d.s.e;
        const message =
          `the rule table of ${e.pod || `endpoint ${e.id}`} cannot be written (${d.why}): ` +
          `it denies everything in its isolated directions (${[e.ingressIsolated && 'ingress', e.egressIsolated && 'egress'].filter(Boolean).join(', ')}) until it fits`;
        problems.push({ pod: e.pod, endpoint: e.id, message, denyAll: true });
        this.log?.error({ pod: e.pod, endpoint: e.id, entries: d.s.entries.length, max: this.tableMax }, `network policy: ${message}`);
        if (empty) outer.push({ s: d.tooMany ? d.s : { ...d.s, content: '!retry' }, h: empty, denyAll: true });
        else this.removeTable(e, 'cannot create an empty table');
      }
      const failed = this.setOuter(outer);
      for (const o of outer) {
        const why = failed.get(o.s.e.id);
        if (why === undefined) {
          this.setTable(o.s.e.id, {
            content: o.s.content,
            entries: o.denyAll ? 0 : o.s.entries.length,
            denyAll: o.denyAll,
            mapId: o.h.id,
            held: o.denyAll ? '' : o.s.content,
            list: o.denyAll ? [] : o.s.entries,
          });
          continue;
        }
        // The outer entry could not be pointed at the new table: fail closed.
        const e = o.s.e;
        if (!o.denyAll) {
          this.denyAllTotal++;
          problems.push({
            pod: e.pod,
            endpoint: e.id,
            denyAll: true,
            message: `the rule table of ${e.pod || `endpoint ${e.id}`} cannot be swapped in (${why}): its table is removed, it denies everything in its isolated directions until the next sync writes it`,
          });
        }
        this.removeTable(e, why);
      }
    } finally {
      for (const h of handles) h.close();
    }
  }

  /** The outer entries, in one batch call when the kernel takes it; returns the endpoints that failed, with why. */
  private setOuter(outer: ReadonlyArray<{ s: TableSwap; h: MapHandle }>): Map<number, string> {
    const failed = new Map<number, string>();
    let from = 0;
    if (this.outerBatch && outer.length > 1) {
      try {
        this.maps.policy.setMany(outer.map((o) => [{ v: o.s.e.id }, { v: o.h.fd }] as const));
        this.counters.outerBatches++;
        return failed;
      } catch (e) {
        this.counters.outerBatches++;
        if (noBatch(errnoOf(e))) {
          this.outerBatch = false;
          this.log?.info(
            { err: (e as Error).message },
            'bpfproxy_policy: this kernel has no batch update for hash-of-maps; endpoint tables are swapped in one call each (slower syncs)',
          );
        } else from = e instanceof BpfError ? e.done : 0;
      }
    }
    for (let i = from; i < outer.length; i++) {
      const o = outer[i]!;
      try {
        this.counters.outerSingles++;
        this.maps.policy.set({ v: o.s.e.id }, { v: o.h.fd });
      } catch (e) {
        failed.set(o.s.e.id, (e as Error).message);
      }
    }
    return failed;
  }

  /** No table at all: the datapath denies the isolated directions (policy-no-table). */
  private removeTable(e: EndpointPolicy, why: string): void {
    try {
      this.counters.outerSingles++;
      this.maps.policy.delete({ v: e.id });
      this.dropTable(e.id);
    } catch (err) {
      if (errnoOf(err) === 2) this.dropTable(e.id);
      // else: the old table stays in place (it serves until the next sync tries again)
    }
    if (this.tables.has(e.id)) this.tables.set(e.id, { ...this.tables.get(e.id)!, content: '!retry' });
    this.log?.error(
      { pod: e.pod, endpoint: e.id },
      `network policy: cannot write a table for ${e.pod || `endpoint ${e.id}`} (${why}); ` +
        'its table is removed, so the datapath denies its isolated directions (counted as policy-no-table); retried on the next sync',
    );
  }

  /** Remove these endpoints' outer entries, in one batch call when the kernel takes it; returns those removed (or absent). */
  private deleteTables(ids: readonly number[], problems: PolicyProblem[]): number[] {
    if (this.outerBatch && ids.length > 1) {
      try {
        this.maps.policy.deleteMany(ids.map((v) => ({ v })));
        this.counters.outerBatches++;
        return [...ids];
      } catch (e) {
        this.counters.outerBatches++;
        if (noBatch(errnoOf(e))) this.outerBatch = false;
        // else: entry by entry, to tell which one fails
      }
    }
    const done: number[] = [];
    for (const id of ids) {
      const e = this.endpoints.get(id);
      this.counters.outerSingles++;
      const ok = this.tryWrite(problems, { endpoint: id, pod: e?.pod }, `the removal of the table of endpoint ${id}`, () => {
        try {
          this.maps.policy.delete({ v: id });
        } catch (err) {
          if (errnoOf(err) !== 2) throw err;
        }
      });
      if (ok) done.push(id);
      else this.retryEndpoints.add(id);
    }
    return done;
  }
}
