/**
 * A kube-proxy in iptables mode for the lab: it keeps the Services and
 * EndpointSlices it is told about and syncs kube-proxy's rules the way
 * kube-proxy does at its defaults — the first sync once both are listed,
 * then at most one sync per minSyncPeriod (1 s) after changes, partial
 * restores for the services that changed, a full one first, after a failure
 * and when the canary chain disappears (checked every syncPeriod, 30 s).
 * No IPVS, no nftables, no conntrack cleanup of stale UDP flows, no topology
 * hints; everything else the generator in rules.ts covers.
 */
import type { Logger } from '../../src/log.js';
import { servicePorts, skipReason, sliceService } from './from-k8s.js';
import type { KubeProxyTables } from './iptables.js';
import { KUBE_PROXY_DEFAULTS, KubeProxySchedule, iptablesRestoreInput, type ServicePort } from './rules.js';

export interface StandInOptions {
  /** --hostname-override: endpoints with this nodeName are local */
  nodeName: string;
  /** --cluster-cidr: traffic from outside it to a cluster IP is masqueraded */
  clusterCidr: string;
  /** the node's address (loadBalancerSourceRanges that contain it admit the LB IPs as sources) */
  nodeIP?: string;
  minSyncPeriodMs?: number;
  syncPeriodMs?: number;
}

export interface SyncSummary {
  kind: 'full' | 'partial';
  services: number;
  servicePorts: number;
  endpoints: number;
  changed: number;
  deletedChains: number;
  ms: number;
}

export class KubeProxyStandIn {
  private readonly services = new Map<string, unknown>();
  private readonly slices = new Map<string, unknown>();
  /** slice key -> the service it belonged to when last seen (a relabelled or deleted slice changes that one) */
  private readonly sliceOwner = new Map<string, string>();
  private readonly changed = new Set<string>();
  private readonly schedule = new KubeProxySchedule();
  private readonly started = performance.now();
  private synced = { services: false, slices: false };
  private lastSync = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private canaryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private firstSyncDone = false;
  private readonly said = new Set<string>();
  readonly syncs: SyncSummary[] = [];

  constructor(
    private readonly tables: KubeProxyTables,
    private readonly o: StandInOptions,
    private readonly log: Logger,
    private readonly onFirstSync: () => void = () => undefined,
  ) {}

  start(): void {
    this.tables.startMonitor();
    this.canaryTimer = setInterval(() => this.checkCanary(), this.o.syncPeriodMs ?? KUBE_PROXY_DEFAULTS.syncPeriodMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.canaryTimer);
  }

  setSynced(kind: 'services' | 'slices'): void {
    this.synced[kind] = true;
    this.request();
  }

  upsertService(key: string, obj: unknown): void {
    const why = skipReason(obj);
    if (why && !this.said.has(key)) {
      this.said.add(key);
      this.log.info({ service: key }, `service ${key}: ${why}; kube-proxy writes no rules for it`);
    }
    this.services.set(key, obj);
    this.mark(key);
  }

  removeService(key: string): void {
    this.services.delete(key);
    this.mark(key);
  }

  upsertSlice(key: string, obj: unknown): void {
    const before = this.sliceOwner.get(key);
    const svc = sliceService(obj);
    this.slices.set(key, obj);
    if (svc) this.sliceOwner.set(key, svc);
    else this.sliceOwner.delete(key);
    if (before) this.mark(before);
    if (svc) this.mark(svc);
  }

  removeSlice(key: string): void {
    const before = this.sliceOwner.get(key);
    this.slices.delete(key);
    this.sliceOwner.delete(key);
    if (before) this.mark(before);
  }

  private mark(serviceKey: string): void {
    this.changed.add(serviceKey);
    this.request();
  }

  /** A sync as soon as minSyncPeriod allows (kube-proxy's BoundedFrequencyRunner, burst 2: the first change after a quiet spell applies at once). */
  private request(): void {
    if (this.stopped || this.timer || !this.synced.services || !this.synced.slices) return;
    const wait = Math.max(0, this.lastSync + (this.o.minSyncPeriodMs ?? KUBE_PROXY_DEFAULTS.minSyncPeriodMs) - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sync();
    }, wait);
  }

  private checkCanary(): void {
    if (this.stopped || !this.firstSyncDone) return;
    try {
      if (this.tables.canaryPresent()) return;
    } catch (e) {
      this.log.warn({ err: e }, `kube-proxy: could not check the canary chain: ${(e as Error).message}; trying again in 30 s`);
      return;
    }
    this.log.info("iptables canary chain deleted (someone flushed kube-proxy's tables): a full resync follows");
    this.tables.startMonitor();
    this.schedule.failed();
    this.request();
  }

  /** Everything as ServicePorts, in a stable order (namespace/name, then port). */
  servicePorts(): ServicePort[] {
    const byService = new Map<string, unknown[]>();
    for (const [k, s] of this.slices) {
      const owner = this.sliceOwner.get(k);
      if (owner) (byService.get(owner) ?? byService.set(owner, []).get(owner)!).push(s);
    }
    return [...this.services.keys()].sort().flatMap((k) => servicePorts(this.services.get(k), byService.get(k) ?? [], this.o.nodeName));
  }

  private sync(): void {
    if (this.stopped) return;
    const t0 = performance.now();
    const ports = this.servicePorts();
    const changed = new Set(this.changed);
    this.changed.clear();
    const total = ports.reduce((a, s) => a + s.endpoints.length, 0);
    const now = t0 - this.started;
    const plan = this.schedule.plan(now, total);
    let failed = false;
    try {
      if (plan.ensureJumps) this.tables.ensureJumps();
      const r = iptablesRestoreInput(ports, {
        clusterCidr: this.o.clusterCidr,
        full: plan.kind === 'full',
        changed,
        existingNatChains: plan.cleanup ? this.tables.natChains() : null,
        ...(this.o.nodeIP ? { nodeIP: this.o.nodeIP } : {}),
      });
      this.tables.restore(r.input);
      this.schedule.done(now, plan);
      const summary: SyncSummary = {
        kind: plan.kind,
        services: this.services.size,
        servicePorts: ports.length,
        endpoints: total,
        changed: plan.kind === 'full' ? this.services.size : changed.size,
        deletedChains: r.deletedChains.length,
        ms: +(performance.now() - t0).toFixed(1),
      };
      this.syncs.push(summary);
      if (this.syncs.length > 100) this.syncs.shift();
      this.log.info(summary, `SyncProxyRules complete: ${plan.kind} sync of ${summary.changed} service(s) in ${summary.ms} ms`);
    } catch (e) {
      // as kube-proxy: the next sync is a full one, retried after minSyncPeriod
      this.schedule.failed();
      failed = true;
      for (const k of changed) this.changed.add(k);
      this.log.error({ err: e }, `kube-proxy: sync failed: ${(e as Error).message}; a full sync is retried in 1 s`);
    } finally {
      this.lastSync = performance.now();
    }
    if (this.changed.size || failed) this.request();
    if (!this.firstSyncDone && this.syncs.length) {
      this.firstSyncDone = true;
      this.onFirstSync();
    }
  }
}
