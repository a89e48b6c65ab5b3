/**
 * NetworkPolicy, from the sources to the maps: the cluster's Pods,
 * Namespaces and NetworkPolicies (domain objects from the sink) are kept
 * here; one bounded-frequency runner (the proxier's shape: bursts, then one
 * sync per min interval, a full one at least every max interval) compiles
 * them (src/model/policy/compile.ts, incremental: only what changed is
 * worked on) and hands what changed to the map writer
 * (src/dataplane/bpf/policy-maps.ts, make-before-break).
 *
 * - Nothing is written before the sources have listed everything once
 *   (setSynced): a half-listed cluster would open or close pods.
 * - A restart changes nothing: the compiler is seeded with what the pinned
 *   maps hold (identities, endpoint and rule ids), so the first sync with
 *   the same inputs writes no entry and leaves the generation as it was.
 * - A sync that fails (the compiler throws, a write fails) leaves the maps
 *   as they were (the old state keeps serving; the writer retries what it
 *   could not write) and the next sync starts again from the pinned maps.
 * - Off (--network-policy=off): nothing is compiled or written; state a
 *   previous agent left in the maps is removed once, so every pod is
 *   unisolated (the datapath enforces only endpoints the ipcache isolates).
 */
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { PolicyCompiler, type CompileResult } from '../model/policy/compile.js';
import type { CompiledPolicy } from '../model/policy/compiled.js';
import { sameData } from '../model/policy/equal.js';
import type { Namespace, NetworkPolicy, Pod } from '../model/policy/types.js';
import {
  PolicyMapWriter,
  readPinned,
  TABLE_MAX_ENTRIES,
  type CompiledPolicyDiff,
  type PolicyApplyReport,
  type PolicyMapSet,
  type PolicyMapStats,
  type PolicyProblem,
  type WrittenPolicy,
} from '../dataplane/bpf/policy-maps.js';
import { SyncRunner } from './sync-runner.js';

/** What the sync writes to: PolicyMapWriter over the pinned maps, and a way to read them back. */
export interface PolicyTarget {
  apply(next: CompiledPolicy): PolicyApplyReport;
  applyDiff(diff: CompiledPolicyDiff): PolicyApplyReport;
  stats(): PolicyMapStats;
  /** What the pinned maps hold now (readPinned). */
  pinned(): CompiledPolicy;
  /** Decisions one rule took, from the per-CPU hit counters. */
  hitsOf(rule: number): number;
  /** Entries an endpoint's table holds at most. */
  readonly tableMax: number;
  /** What the maps hold now, from the writer's mirror (the AF_XDP engine enforces the same). */
  written?(): WrittenPolicy;
}

/** What /metrics and logs report of policy (read on scrape). */
export interface PolicyFigures {
  enabled: boolean;
  identities: number;
  endpoints: number;
  isolated: number;
  tableEntries: number;
  /** the largest endpoint table, entries, and what one holds at most */
  largestTable: number;
  tableMax: number;
  denyAllNow: number;
  /** decisions taken per NetworkPolicy ("namespace/name"; "(node)" for the node's own access) */
  hitsByPolicy: Map<string, number>;
}

export interface PolicySyncOptions {
  nodeName: string;
  /** --network-policy: false writes nothing (and clears what was left) */
  enabled: boolean;
  /** ms between syncs once the burst is spent (bpfKubeProxyMinSyncPeriod) */
  minSyncPeriod: number;
  /** ms between full syncs */
  syncPeriod: number;
  clock: Clock;
  log: Logger;
}

export interface PolicySyncStats {
  syncs: number;
  fullSyncs: number;
  /** ms the last sync took (compile and write) */
  lastSyncMs: number;
  lastGeneration: number;
  /** local endpoints, identities, table entries, rules the compiler holds */
  endpoints: number;
  identities: number;
  entries: number;
  policies: number;
  /** endpoints whose table did not fit and deny everything in their isolated directions, now */
  denyAllNow: number;
  /** syncs that failed (compile threw); the maps kept what they had */
  failures: number;
}

export interface PolicySyncResult {
  ms: number;
  full: boolean;
  report?: PolicyApplyReport;
  /** endpoints newly denied because their table did not fit */
  denyAll: PolicyProblem[];
}

/** After a sync some writes of which failed: the next one, whatever else happens. */
const RETRY_MS = 5000;

const EMPTY: CompiledPolicy = { generation: 0, identities: [], endpoints: [], rules: [] };

export class PolicySync {
  readonly runner: SyncRunner;
  private readonly pods = new Map<string, Pod>();
  private readonly namespaces = new Map<string, Namespace>();
  private readonly policies = new Map<string, NetworkPolicy>();
  private nodeAddresses: readonly string[] = [];
  private target: PolicyTarget | undefined;
  private compiler: PolicyCompiler | undefined;
  private synced = false;
  private enabled: boolean;
  /** off: the maps were emptied (or found empty) for this target */
  private cleared = false;
  private listeners: Array<(r: PolicySyncResult) => void> = [];
  /** rules and the largest table as last programmed */
  private rules: CompiledPolicy['rules'] = [];
  private largestTable = 0;
  private retryTimer: Timer | undefined;
  readonly stats: PolicySyncStats = {
    syncs: 0,
    fullSyncs: 0,
    lastSyncMs: 0,
    lastGeneration: 0,
    endpoints: 0,
    identities: 0,
    entries: 0,
    policies: 0,
    denyAllNow: 0,
    failures: 0,
  };

  constructor(private readonly o: PolicySyncOptions) {
    this.enabled = o.enabled;
    this.runner = new SyncRunner((full) => this.sync(full), { minInterval: o.minSyncPeriod, maxInterval: o.syncPeriod }, o.clock);
    this.runner.start();
  }

  get isEnabled(): boolean {
    return this.enabled;
  }

  onSync(fn: (r: PolicySyncResult) => void): void {
    this.listeners.push(fn);
  }

  // --- the sink's side

  applyPod(key: string, pod: Pod | undefined): void {
    this.put(this.pods, key, pod);
  }

  applyNamespace(name: string, ns: Namespace | undefined): void {
    this.put(this.namespaces, name, ns);
  }

  applyNetworkPolicy(key: string, np: NetworkPolicy | undefined): void {
    this.put(this.policies, key, np);
  }

  private put<T extends object>(m: Map<string, T>, key: string, v: T | undefined): void {
    const old = m.get(key);
    if (v === undefined) {
      if (!m.delete(key)) return;
    } else {
      if (old && sameData(old, v)) return;
      m.set(key, v);
    }
    this.changed();
  }

  private changed(): void {
    if (this.synced && this.enabled) this.runner.run();
  }

  /** This node's IPv4 addresses (HOST identity: the node always reaches its pods). */
  setNodeAddresses(addrs: readonly string[]): void {
    const next = [...addrs].sort();
    if (next.length === this.nodeAddresses.length && next.every((a, i) => a === this.nodeAddresses[i])) return;
    this.nodeAddresses = next;
    this.changed();
  }

  /** The sources have listed Pods, Namespaces and NetworkPolicies: syncs may write. */
  setSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.runner.runFull();
  }

  get isSynced(): boolean {
    return this.synced;
  }

  /** --network-policy changed while running. */
  setEnabled(on: boolean): void {
    if (on === this.enabled) return;
    this.enabled = on;
    this.compiler = undefined;
    this.cleared = false;
    this.o.log.info(on ? 'network policy turned on: programming policies' : 'network policy turned off: removing every pod from isolation');
    this.runner.runFull();
  }

  /** The maps to write (the BPF runtime started), or none (stopped). */
  setTarget(target: PolicyTarget | undefined): void {
    this.target = target;
    this.compiler = undefined;
    this.cleared = false;
    if (target) this.runner.runFull();
  }

  /** What the policy maps hold now (undefined: no maps to write, the BPF runtime is not there). */
  written(): WrittenPolicy | undefined {
    return this.target?.written?.();
  }

  stop(): void {
    this.retryTimer?.cancel();
    this.runner.stop();
  }

  // --- the sync

  private async sync(full: boolean): Promise<void> {
    await Promise.resolve();
    const target = this.target;
    if (!target || !this.synced) return;
    const t0 = performance.now();
    if (!this.enabled) return this.clearIfLeft(target, t0, full);
    let result: CompileResult;
    let compiler = this.compiler;
    const fresh = !compiler;
    try {
      if (!compiler) {
        compiler = new PolicyCompiler();
        // ids and identities as the maps hold them: the same inputs compile to the same entries
        compiler.seed(target.pinned());
      }
      result = compiler.compile({
        pods: this.pods.values(),
        namespaces: this.namespaces.values(),
        policies: this.policies.values(),
        node: { name: this.o.nodeName, addresses: this.nodeAddresses },
      });
    } catch (e) {
      // The compiler's state may be half-updated: the next sync starts from the pinned maps again.
      this.compiler = undefined;
      this.stats.failures++;
      this.o.log.error(
        { err: e },
        `network policy: could not compile the policies: ${(e as Error).message}; the maps keep the last policy written, tried again at the next sync`,
      );
      return;
    }
    this.compiler = compiler;
    this.rules = result.compiled.rules;
    this.largestTable = result.compiled.endpoints.reduce((m, e) => Math.max(m, e.entries.length), 0);
    for (const n of result.notes) this.o.log.warn(`network policy: ${n}`);
    // A full sync (periodic, or the first one after seeding) makes the maps equal to the
    // whole policy; otherwise only what the compiler says changed is handed on.
    let report: PolicyApplyReport;
    try {
      report = full || fresh ? target.apply(result.compiled) : target.applyDiff(writerDiff(result));
    } catch (e) {
      this.compiler = undefined;
      this.stats.failures++;
      this.o.log.error(
        { err: e },
        `network policy: could not write the policy maps: ${(e as Error).message}; what was written stays (each table is swapped whole), tried again at the next sync`,
      );
      return;
    }
    const ms = performance.now() - t0;
    const cs = compiler.stats();
    const ts = target.stats();
    Object.assign(this.stats, {
      syncs: this.stats.syncs + 1,
      fullSyncs: this.stats.fullSyncs + (full ? 1 : 0),
      lastSyncMs: ms,
      lastGeneration: report.generation,
      endpoints: cs.endpoints,
      identities: cs.identities,
      entries: cs.entries,
      policies: cs.policies,
      denyAllNow: ts.denyAllNow,
    });
    const denyAll = report.problems.filter((p) => p.denyAll);
    // What the writer could not write it tries again at the next apply: make there be one soon,
    // not only at the next change or full sync (an endpoint whose ipcache entry is missing is not enforced).
    if (report.problems.length > denyAll.length) this.retrySoon();
    if (report.changed || report.tablesWritten || report.ipcacheWrites || report.ipcacheDeletes) {
      this.o.log.info(
        {
          generation: report.generation,
          ipcacheWrites: report.ipcacheWrites,
          ipcacheDeletes: report.ipcacheDeletes,
          tablesWritten: report.tablesWritten,
          tablesDeleted: report.tablesDeleted,
          endpoints: cs.endpoints,
          policies: cs.policies,
          ms: Math.round(ms * 10) / 10,
        },
        'network policy programmed',
      );
    }
    this.emit({ ms, full, report, denyAll });
  }

  /** Off: remove what a previous agent (with policy on) left, once per target. */
  private clearIfLeft(target: PolicyTarget, t0: number, full: boolean): void {
    if (this.cleared) return;
    const left = target.pinned();
    if (left.endpoints.length || left.identities.length || left.rules.length) {
      const report = target.apply(EMPTY);
      this.o.log.info(
        { endpoints: left.endpoints.length, identities: left.identities.length, generation: report.generation },
        `network policy is off (--network-policy=off): removed the policy state a previous agent left (${left.endpoints.length} endpoint(s)); no pod is isolated`,
      );
      this.emit({ ms: performance.now() - t0, full, report, denyAll: [] });
    }
    this.cleared = true;
    this.rules = [];
    this.largestTable = 0;
    Object.assign(this.stats, { endpoints: 0, identities: 0, entries: 0, policies: 0, denyAllNow: 0 });
  }

  /** Figures for /metrics: sizes from the writer, hits from the pinned counters of the rules programmed. */
  figures(): PolicyFigures {
    const t = this.target;
    const ts = t?.stats();
    const hitsByPolicy = new Map<string, number>();
    if (t && this.enabled) {
      for (const r of this.rules) {
        const n = t.hitsOf(r.id);
        hitsByPolicy.set(r.policy, (hitsByPolicy.get(r.policy) ?? 0) + n);
      }
    }
    return {
      enabled: this.enabled,
      identities: ts?.identities ?? 0,
      endpoints: ts?.endpoints ?? 0,
      isolated: ts?.isolated ?? 0,
      tableEntries: ts?.tableEntries ?? 0,
      largestTable: this.enabled ? this.largestTable : 0,
      tableMax: t?.tableMax ?? 0,
      denyAllNow: ts?.denyAllNow ?? 0,
      hitsByPolicy,
    };
  }

  private retrySoon(): void {
    if (this.retryTimer) return;
    this.retryTimer = this.o.clock.after(RETRY_MS, () => {
      this.retryTimer = undefined;
      if (this.enabled) this.runner.run();
    });
  }

  private emit(r: PolicySyncResult): void {
    for (const l of this.listeners) l(r);
  }
}

/** The compiler's diff as the writer takes it: an endpoint whose entries changed is handed over whole (its table is swapped). */
export function writerDiff(r: CompileResult): CompiledPolicyDiff {
  const { diff, compiled } = r;
  const byId = new Map(compiled.endpoints.map((e) => [e.id, e]));
  const upsert = new Map(diff.endpoints.upsert.map((e) => [e.id, e]));
  for (const e of diff.entries) {
    const ep = byId.get(e.endpoint);
    if (ep) upsert.set(ep.id, ep);
  }
  return {
    identities: { upsert: diff.identities.upsert, remove: diff.identities.delete },
    endpoints: { upsert: [...upsert.values()], remove: diff.endpoints.delete },
    rules: { upsert: diff.rules.upsert, remove: diff.rules.delete },
  };
}

/** The policy maps of a loaded datapath as a PolicyTarget (adopting what they hold). */
export function policyTarget(maps: PolicyMapSet, log: Logger, tableMax?: number): PolicyTarget & { writer: PolicyMapWriter } {
  const writer = new PolicyMapWriter(maps, log, tableMax);
  return {
    writer,
    apply: (next) => writer.apply(next),
    applyDiff: (diff) => writer.applyDiff(diff),
    stats: () => writer.stats(),
    pinned: () => readPinned(maps),
    hitsOf: (rule) => writer.hitsOf(rule),
    tableMax: tableMax ?? TABLE_MAX_ENTRIES,
    written: () => writer.written(),
  };
}
