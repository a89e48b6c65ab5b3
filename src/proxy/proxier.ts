/**
 * The sync pipeline: sources record changes in the store, which marks
 * services dirty here; one bounded-frequency runner syncs the dirty
 * services (or everything, periodically) into the dataplane.
 */
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { DEFAULT_SERVICE_POLICY, type ServicePolicy } from '../config/services.js';
import { mergeReports, type Dataplane, type SyncProblem, type SyncReport } from '../dataplane/dataplane.js';
import { sameData } from '../model/equal.js';
import type { NodeContext, PortTopology } from '../model/desired.js';
import type { Frontend } from '../model/types.js';
import { ServiceStore } from './store.js';
import { SyncRunner } from './sync-runner.js';

export interface ProxierOptions {
  nodeName: string;
  /** ms; Calico's bpfKubeProxyMinSyncPeriod */
  minSyncPeriod: number;
  /** ms between full resyncs */
  syncPeriod: number;
  clock: Clock;
  log: Logger;
  /** node-port range, external IP policy, fan-out bound */
  services?: ServicePolicy;
}

export interface SyncStats {
  syncs: number;
  fullSyncs: number;
  lastSyncMs: number;
  lastSyncAt: number;
  /** time from a change being recorded to it being programmed, last sync */
  lastProgrammingMs: number;
  problems: number;
  mapFull: number;
  /** per changed service in the last sync: ms from change seen to programmed */
  programmingMs?: number[];
}

export class Proxier {
  readonly store: ServiceStore;
  readonly runner: SyncRunner;
  private readonly dirty = new Map<string, number>();
  private synced = false;
  private firstSyncDone = false;
  private readonly lastProblems = new Map<string, string>();
  /** per service with topology in play: how its ports chose their endpoints on this node */
  private readonly topology = new Map<string, PortTopology[]>();
  /** bumped whenever `topology` changes (the agent writes it out for `bpfproxy services`) */
  topologyVersion = 0;
  readonly stats: SyncStats = { syncs: 0, fullSyncs: 0, lastSyncMs: 0, lastSyncAt: 0, lastProgrammingMs: 0, problems: 0, mapFull: 0 };
  private syncListeners: Array<(s: SyncStats) => void> = [];

  private dataplane: Dataplane | undefined;
  private readonly node: NodeContext & { nodeAddresses: Set<string> };

  constructor(
    dataplane: Dataplane | undefined,
    private readonly opts: ProxierOptions,
    onRecorded?: (kind: 'service' | 'slice') => void,
  ) {
    this.dataplane = dataplane;
    const policy = opts.services ?? DEFAULT_SERVICE_POLICY;
    this.node = { nodeName: opts.nodeName, nodeAddresses: new Set(), allowNodeAddressExternalIPs: policy.allowNodeAddressExternalIPs };
    this.store = new ServiceStore((svc) => this.markDirty(svc), onRecorded);
    // the runner takes a promise; a sync is synchronous, and what it throws rejects
    this.runner = new SyncRunner(
      (full) =>
        new Promise<void>((resolve) => {
          this.sync(full);
          resolve();
        }),
      {
        minInterval: opts.minSyncPeriod,
        maxInterval: opts.syncPeriod,
      },
      opts.clock,
    );
  }

  private markDirty(svc: string): void {
    if (!this.dirty.has(svc)) this.dirty.set(svc, this.opts.clock.now());
    if (this.synced) this.runner.run();
  }

  /**
   * Point the pipeline at another dataplane (or none: bpfEnabled=false).
   * A new dataplane gets a full sync before anything else.
   */
  setDataplane(dp: Dataplane | undefined): void {
    this.dataplane = dp;
    this.firstSyncDone = false;
    if (dp && this.synced) this.runner.runFull();
  }

  /** Sync everything again soon (a setting that changes every service's programming changed). */
  resyncAll(): void {
    if (this.dataplane && this.synced) this.runner.runFull();
  }

  /**
   * This node's addresses. Which external and LoadBalancer IPs this node
   * refuses depends on them: services claiming an address that came or went
   * are synced again.
   */
  setNodeAddresses(ips: readonly string[]): void {
    const next = new Set(ips);
    const changed = new Set([...next].filter((ip) => !this.node.nodeAddresses.has(ip)));
    for (const ip of this.node.nodeAddresses) if (!next.has(ip)) changed.add(ip);
    if (changed.size === 0) return;
    this.node.nodeAddresses = next;
    for (const svc of this.store.servicesClaiming(changed)) this.markDirty(svc);
  }

  /**
   * This node's zone (its Node's topology.kubernetes.io/zone label; undefined
   * or '': none). Only services whose EndpointSlices carry topology hints
   * depend on it: those are synced again, nothing else.
   */
  setNodeZone(zone: string | undefined): void {
    const z = zone ?? '';
    const was = this.node.zone ?? '';
    if (was === z) return;
    this.node.zone = z;
    const affected = this.store.servicesWithHints();
    this.opts.log.info(
      { node: this.opts.nodeName, zone: z, was, services: affected.length },
      `node ${this.opts.nodeName}: zone ${z ? `"${z}"` : '(none: no topology.kubernetes.io/zone label)'} (was ${was ? `"${was}"` : 'none'}); ` +
        `${affected.length} service(s) with topology hints choose their endpoints again`,
    );
    for (const svc of affected) this.markDirty(svc);
  }

  get nodeZone(): string {
    return this.node.zone ?? '';
  }

  /** How topology chose each affected service port's endpoints, as last synced, by service port. */
  topologyView(): PortTopology[] {
    return [...this.topology.values()].flat().sort((a, b) => (a.servicePort < b.servicePort ? -1 : a.servicePort > b.servicePort ? 1 : 0));
  }

  /** The frontends of one service on this node; what the node refuses becomes problems. */
  private desired(svc: string, report: SyncReport): Frontend[] {
    const d = this.store.desiredOf(svc, this.node);
    for (const p of d.problems)
      report.problems.push({ service: svc, frontend: p.frontend, field: p.field, message: `${p.field}: ${p.message}` });
    const old = this.topology.get(svc);
    if (d.topology.length === 0) {
      if (old) {
        this.topology.delete(svc);
        this.topologyVersion++;
      }
    } else if (!old || !sameData(old, d.topology)) {
      this.topology.set(svc, d.topology);
      this.topologyVersion++;
    }
    return d.frontends;
  }

  /** Sources have delivered their initial state: the first (full) sync may run. */
  setSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.runner.start();
    this.runner.runFull();
  }

  get isSynced(): boolean {
    return this.firstSyncDone;
  }

  /** Age in ms of the oldest change not yet programmed (0 when none). */
  oldestPendingMs(): number {
    if (this.dirty.size === 0) return 0;
    return this.opts.clock.now() - Math.min(...this.dirty.values());
  }

  onSync(fn: (s: SyncStats) => void): void {
    this.syncListeners.push(fn);
  }

  stop(): void {
    this.runner.stop();
  }

  private sync(full: boolean): void {
    const t0 = this.opts.clock.now();
    const dp = this.dataplane;
    if (!dp) {
      // Nothing to program (bpfEnabled=false); a new dataplane starts with a full sync.
      this.dirty.clear();
      return;
    }
    const dirty = new Map(this.dirty);
    this.dirty.clear();
    const report: SyncReport = { frontendsChanged: 0, problems: [], retry: [] };
    if (full || !this.firstSyncDone) {
      // Oldest first: the order settles which service keeps a contested address.
      const all = new Map<string, Frontend[]>();
      for (const k of this.store.serviceKeysByAge()) all.set(k, this.desired(k, report));
      for (const k of [...this.topology.keys()]) {
        if (all.has(k)) continue;
        this.topology.delete(k);
        this.topologyVersion++;
      }
      mergeReports(report, dp.syncAll(all));
      this.stats.fullSyncs++;
    } else {
      for (const svc of dirty.keys()) mergeReports(report, dp.syncService(svc, this.desired(svc, report)));
    }
    const t1 = this.opts.clock.now();
    this.firstSyncDone = true;
    this.stats.syncs++;
    this.stats.lastSyncMs = t1 - t0;
    this.stats.lastSyncAt = t1;
    this.stats.lastProgrammingMs = dirty.size ? t1 - Math.min(...dirty.values()) : 0;
    this.stats.programmingMs = [...dirty.values()].map((t) => t1 - t);
    this.stats.problems = report.problems.length;
    this.stats.mapFull = report.problems.filter((p) => p.mapFull).length;
    this.reportProblems(report.problems, full ? undefined : new Set(dirty.keys()));
    this.opts.log.debug(
      {
        full,
        services: full ? this.store.size.services : dirty.size,
        frontendsChanged: report.frontendsChanged,
        ms: +(t1 - t0).toFixed(2),
      },
      'synced',
    );
    for (const s of report.retry) this.markDirty(s);
    // A full map may free up (GC, a service deleted): try the failed ones again.
    for (const p of report.problems) if (p.mapFull && !this.dirty.has(p.service)) this.dirty.set(p.service, t1);
    if (report.problems.some((p) => p.mapFull)) this.runner.run();
    for (const l of this.syncListeners) l(this.stats);
  }

  /** Log each service's problems once, when they change. */
  private reportProblems(problems: SyncProblem[], scope: Set<string> | undefined): void {
    const by = new Map<string, SyncProblem[]>();
    for (const p of problems) {
      let l = by.get(p.service);
      if (!l) by.set(p.service, (l = []));
      l.push(p);
    }
    for (const [svc, ps] of by) {
      const text = ps.map((p) => p.message).join('; ');
      if (this.lastProblems.get(svc) === text) continue;
      this.lastProblems.set(svc, text);
      for (const p of ps) {
        this.opts.log.error(
          { service: svc, frontend: p.frontend, ...(p.field ? { field: p.field } : {}), mapFull: p.mapFull ?? false },
          `Service ${svc}: ${p.message}`,
        );
      }
    }
    for (const svc of [...this.lastProblems.keys()]) {
      if (by.has(svc) || (scope && !scope.has(svc))) continue;
      this.lastProblems.delete(svc);
      this.opts.log.info({ service: svc }, `Service ${svc}: programmed, earlier problems resolved`);
    }
  }
}
