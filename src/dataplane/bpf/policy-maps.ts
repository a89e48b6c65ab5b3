/**
 * Writes a CompiledPolicy (src/model/policy/compiled.ts) into the policy
 * maps of bpf/lib/policy.h, and reads it back from the pins.
 *
 * - Incremental: a mirror of what is written (adopted from the pinned maps
 *   at start) tells what changed; only that is written. apply() takes the
 *   whole policy, applyDiff() only what the model says changed.
 * - Make-before-break: an endpoint's changed table is a new inner map,
 *   filled and then swapped into bpfproxy_policy in one update; a packet
 *   sees the old table or the new one, never half of one. Identities are
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
  type PolicyRuleRef,
} from '../../model/policy/compiled.js';
import { IpcacheFlags, PolDir, polKey, polValue, type IpcacheValue } from './codecs.js';
import type { DatapathMaps } from './loader.js';
import { BpfMap } from './map.js';
import {
  ipcacheKeyOf,
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

export type PolicyMapSet = Pick<DatapathMaps, 'ipcache' | 'policy' | 'polState' | 'polHits' | 'polRules' | 'polEps'>;

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
}

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
  for (const [k, v] of maps.ipcache.entries()) {
    const prefix = prefixText(k);
    identities.push(v.endpoint ? { prefix, identity: v.identity, endpoint: v.endpoint } : { prefix, identity: v.identity });
    if (!v.endpoint) continue;
    const e = ep(v.endpoint);
    if (k.prefixlen === 32) e.addresses.push(k.addr);
    e.ingressIsolated ||= (v.flags & IpcacheFlags.INGRESS_ISO) !== 0;
    e.egressIsolated ||= (v.flags & IpcacheFlags.EGRESS_ISO) !== 0;
  }
  for (const [k, v] of maps.polEps.entries()) ep(k.v).pod = v.pod;
  for (const [k, v] of maps.policy.entries()) {
    const e = ep(k.v);
    const t = openTable(v.v, k.v);
    try {
      for (const [pk, pv] of t.entries()) {
        const te = tableEntryOf(pk, pv);
        if (te) e.entries.push(te);
      }
    } finally {
      t.close();
    }
  }
  const rules: PolicyRuleRef[] = maps.polRules
    .entries()
    .map(([k, v]) => ({ id: k.v, policy: v.policy, direction: dirOf(v.dir), index: v.index }))
    .sort((a, b) => a.id - b.id);
  identities.sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
  for (const e of eps.values()) {
    e.addresses.sort();
    sortEntries(e.entries);
  }
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
  /** what the maps hold */
  private readonly ipcache = new Map<string, IpcacheValue>();
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

  constructor(
    private readonly maps: PolicyMapSet,
    private readonly log?: Logger,
    private readonly tableMax = TABLE_MAX_ENTRIES,
  ) {
    const pinned = readPinned(maps);
    this.gen = pinned.generation;
    this.isolatedWritten = maps.polState.get({ v: 0 })?.isolated ?? 0;
    for (const [k, v] of maps.ipcache.entries()) this.ipcache.set(prefixText(k), v);
    for (const i of pinned.identities) this.identities.set(i.prefix, i);
    const tables = new Set(maps.policy.entries().map(([k]) => k.v));
    for (const e of pinned.endpoints) {
      if (e.pod) this.epNames.set(e.id, e.pod);
      if (tables.has(e.id)) {
        const { entries } = tableOf(e);
        this.tables.set(e.id, { content: tableContent(entries), entries: entries.length, denyAll: false });
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
    for (const i of next.identities) {
      const k = ipcacheKeyOf(i.prefix);
      wantIds.set(k ? prefixText(k) : i.prefix, i);
    }
    for (const [p, i] of wantIds) {
      const have = this.identities.get(p);
      if (!have || have.identity !== i.identity || (have.endpoint ?? 0) !== (i.endpoint ?? 0)) diff.identities.upsert.push(i);
    }
    for (const p of this.identities.keys()) if (!wantIds.has(p)) diff.identities.remove.push(p);
    const wantEps = new Map(next.endpoints.map((e) => [e.id, e]));
    for (const [id, e] of wantEps) {
      const have = this.endpoints.get(id);
      if (!have || !sameEndpoint(have, e)) diff.endpoints.upsert.push(e);
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
      const k = ipcacheKeyOf(p);
      const text = k ? prefixText(k) : p;
      this.identities.delete(text);
      prefixes.add(text);
    }
    for (const i of diff.identities?.upsert ?? []) {
      const k = ipcacheKeyOf(i.prefix);
      if (!k) {
        problems.push({ prefix: i.prefix, message: `identity ${i.identity}: "${i.prefix}" is not an IPv4 prefix; left out` });
        continue;
      }
      const text = prefixText(k);
      this.identities.set(text, { ...i, prefix: text });
      prefixes.add(text);
    }
    for (const id of diff.endpoints?.remove ?? []) {
      const have = this.endpoints.get(id);
      for (const a of have?.addresses ?? []) prefixes.add(`${a}/32`);
      this.endpoints.delete(id);
      touched.add(id);
    }
    for (const given of diff.endpoints?.upsert ?? []) {
      const e = this.checkEndpoint(given, problems);
      const have = this.endpoints.get(e.id);
      for (const a of have?.addresses ?? []) prefixes.add(`${a}/32`);
      for (const a of e.addresses) prefixes.add(`${a}/32`);
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
    for (const e of this.endpoints.values()) for (const a of e.addresses) byAddr.set(`${a}/32`, e);
    const want = new Map<string, IpcacheValue | undefined>();
    for (const p of prefixes) want.set(p, this.ipcacheValueFor(p, byAddr, problems));

    let decisions = this.retryState;
    // 1. identities that are no local endpoint (peers), before the tables naming them
    for (const [p, v] of want) {
      if (!v || v.endpoint || sameIpc(this.ipcache.get(p), v)) continue;
      if (this.writeIpcache(p, v, problems)) report.ipcacheWrites++;
      else this.retryPrefixes.add(p);
      decisions = true;
    }
    // 2. tables of isolated endpoints, new or changed: a new inner map each, swapped in
    for (const id of touched) {
      const e = this.endpoints.get(id);
      if (!e || !isolatedOf(e)) continue;
      const { entries, problems: bad } = tableOf(e);
      for (const b of bad) {
        problems.push({
          pod: e.pod,
          endpoint: id,
          message: `rule ${b.entry.ruleId} (${b.entry.direction}): ${b.message}; left out (the endpoint stays isolated)`,
        });
      }
      const content = tableContent(entries);
      const have = this.tables.get(id);
      if (have && have.content === content) continue;
      this.writeTable(e, entries, content, problems);
      if (this.tables.get(id)?.content !== content) this.retryEndpoints.add(id);
      report.tablesWritten++;
      decisions = true;
    }
    // 3. the endpoints' own addresses: endpoint id and isolation
    for (const [p, v] of want) {
      if (!v || !v.endpoint || sameIpc(this.ipcache.get(p), v)) continue;
      if (this.writeIpcache(p, v, problems)) report.ipcacheWrites++;
      else this.retryPrefixes.add(p);
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
      const k = ipcacheKeyOf(p)!;
      decisions = true;
      if (!this.tryWrite(problems, { prefix: p }, `the removal of identity prefix ${p}`, () => this.maps.ipcache.delete(k))) {
        this.retryPrefixes.add(p);
        continue;
      }
      this.ipcache.delete(p);
      report.ipcacheDeletes++;
    }
    for (const id of touched) {
      const e = this.endpoints.get(id);
      if ((e && isolatedOf(e)) || !this.tables.has(id)) continue;
      decisions = true;
      if (
        !this.tryWrite(problems, { endpoint: id, pod: e?.pod }, `the removal of the table of endpoint ${id}`, () =>
          this.maps.policy.delete({ v: id }),
        )
      ) {
        this.retryEndpoints.add(id);
        continue;
      }
      this.tables.delete(id);
      report.tablesDeleted++;
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

  /** The endpoint with its addresses canonical; an address that is not IPv4 is left out and reported. */
  private checkEndpoint(e: EndpointPolicy, problems: PolicyProblem[]): EndpointPolicy {
    const addresses: string[] = [];
    for (const a of e.addresses) {
      const k = ipcacheKeyOf(a);
      if (k && k.prefixlen === 32) addresses.push(k.addr);
      else problems.push({ pod: e.pod, endpoint: e.id, message: `address "${a}" is not an IPv4 address; left out` });
    }
    return { ...e, addresses: [...new Set(addresses)].sort() };
  }

  private writeIpcache(p: string, v: IpcacheValue, problems: PolicyProblem[]): boolean {
    const k = ipcacheKeyOf(p)!;
    const ok = this.tryWrite(problems, { prefix: p, endpoint: v.endpoint || undefined }, `identity prefix ${p}`, () =>
      this.maps.ipcache.set(k, v),
    );
    if (ok) this.ipcache.set(p, v);
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

  /** A new inner map with these entries, swapped in; deny-all (empty) when it does not fit. */
  private writeTable(e: EndpointPolicy, entries: TableEntry[], content: string, problems: PolicyProblem[]): void {
    let why: string;
    const tooMany = entries.length > this.tableMax;
    if (tooMany) {
      why = `${entries.length} rule entries, more than the ${this.tableMax} a table holds`;
    } else {
      try {
        this.swapIn(e.id, entries);
        this.tables.set(e.id, { content, entries: entries.length, denyAll: false });
        return;
      } catch (err) {
        why = (err as Error).message;
      }
    }
    this.denyAllTotal++;
    const message =
      `the rule table of ${e.pod || `endpoint ${e.id}`} cannot be written (${why}): ` +
      `it denies everything in its isolated directions (${[e.ingressIsolated && 'ingress', e.egressIsolated && 'egress'].filter(Boolean).join(', ')}) until it fits`;
    problems.push({ pod: e.pod, endpoint: e.id, message, denyAll: true });
    this.log?.error({ pod: e.pod, endpoint: e.id, entries: entries.length, max: this.tableMax }, `network policy: ${message}`);
    try {
      this.swapIn(e.id, []);
      // too many entries: written again when they change; any other failure: tried again on the next sync
      this.tables.set(e.id, { content: tooMany ? content : '!retry', entries: 0, denyAll: true });
    } catch (err) {
      // No table at all: the datapath denies the isolated directions (policy-no-table).
      try {
        this.maps.policy.delete({ v: e.id });
      } catch {
        /* already absent */
      }
      this.tables.delete(e.id);
      this.log?.error(
        { pod: e.pod, endpoint: e.id },
        `network policy: cannot even write an empty table for ${e.pod || `endpoint ${e.id}`} (${(err as Error).message}); ` +
          'its table is removed, so the datapath denies its isolated directions (counted as policy-no-table); retried on the next sync',
      );
    }
  }

  /** Create, fill and swap in one table (make-before-break). Throws with the map closed again. */
  private swapIn(id: number, entries: readonly TableEntry[]): void {
    let h: MapHandle | undefined;
    try {
      h = native().mapCreate({
        type: BPF_MAP_TYPE_LPM_TRIE,
        name: `bpxpol_${id}`,
        keySize: polKey.size,
        valueSize: polValue.size,
        maxEntries: TABLE_MAX_ENTRIES,
        flags: BPF_F_NO_PREALLOC,
      });
      const t = new BpfMap(`bpfproxy_policy[${id}]`, h, polKey, polValue);
      const kv = entries.map((x) => [polKeyOf(x), polValueOf(x)] as const);
      if (kv.length) {
        try {
          t.setMany(kv);
        } catch (e) {
          const n = errnoOf(e);
          if (n !== EINVAL && n !== EOPNOTSUPP && n !== ENOTSUPP) throw e;
          for (const [k, v] of kv) t.set(k, v); // no batch ops for LPM tries on this kernel
        }
      }
      this.maps.policy.set({ v: id }, { v: h.fd });
    } finally {
      h?.close();
    }
  }
}

function sameEndpoint(a: EndpointPolicy, b: EndpointPolicy): boolean {
  if (a.pod !== b.pod || a.ingressIsolated !== b.ingressIsolated || a.egressIsolated !== b.egressIsolated) return false;
  const as = [...a.addresses].sort();
  const bs = [...b.addresses].sort();
  if (as.length !== bs.length || as.some((x, i) => x !== bs[i])) return false;
  return tableContent(tableOf(a).entries) === tableContent(tableOf(b).entries);
}
