/**
 * kube-proxy's iptables mode as it runs at its defaults, in one network
 * namespace, on a virtual clock: the same commands kube-proxy runs (EnsureChain
 * and EnsureRule for the jump rules on full syncs, `iptables-save -t nat` for
 * the stale-chain cleanup, `iptables-restore --noflush --counters`, the canary
 * check every syncPeriod), when KubeProxySchedule says kube-proxy runs them.
 * Every command is timed (wall) and its CPU counted (the children's user and
 * system time from /proc/self/stat, which a waited-for child adds to).
 */
import { readFileSync } from 'node:fs';
import { KubeProxyTables } from '../testkit/kube-proxy/iptables.js';
import { KUBE_PROXY_DEFAULTS, KubeProxySchedule, iptablesRestoreInput, type BenchService, type SyncPlan } from './kube-proxy-rules.js';

const TICK_MS = 10; // USER_HZ 100
const CANARY_SAMPLES = 10;

/** CPU ms (user + system) of this process's waited-for children so far. */
export function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // after "pid (comm) ": state is field 3, cutime field 16, cstime field 17
  return (Number(f[13]) + Number(f[14])) * TICK_MS;
}

export interface SyncRecord {
  /** virtual time of the sync (ms since the first one) */
  at: number;
  kind: SyncPlan['kind'];
  cleanup: boolean;
  ensureJumps: boolean;
  largeClusterMode: boolean;
  /** services whose chains this sync wrote (all when full) */
  changed: number;
  restoreBytes: number;
  deletedChains: number;
  wallMs: number;
  cpuMs: number;
}

export interface KubeProxyIptablesFigures {
  largeClusterMode: boolean;
  totalEndpoints: number;
  syncs: SyncRecord[];
  /** the sync kube-proxy's runner makes on its own once an hour with nothing changed */
  periodicSync: SyncRecord | null;
  /** one canary check (every syncPeriod) */
  canary: { wallMs: number; cpuMs: number; everyMs: number };
  /** CPU-seconds per second kube-proxy spends with nothing changing: the hourly sync and the canary checks, amortized */
  idleCpuSecPerSec: number;
}

export class KubeProxyIptables {
  readonly schedule = new KubeProxySchedule();
  readonly syncs: SyncRecord[] = [];
  private now = 0;
  private services: BenchService[];
  private readonly canaryTotal = { n: 0, wallMs: 0, cpuMs: 0 };
  private readonly tables: KubeProxyTables;

  /** @param commandTimeoutMs kill any one iptables command that runs longer (IptablesTimeout); unset: no limit */
  constructor(
    ns: string,
    services: readonly BenchService[],
    private readonly clusterCidr: string,
    commandTimeoutMs?: number,
  ) {
    this.services = [...services];
    this.tables = new KubeProxyTables(ns, `kube-proxy iptables variant in netns ${ns} (the variant stops here)`, commandTimeoutMs);
  }

  /** Run the canary checks due by now (kube-proxy's monitor goroutine). */
  private tickCanary(): void {
    for (let i = this.schedule.canaryChecksDue(this.now); i > 0; i--) this.canaryCheck();
  }

  private canaryCheck(): void {
    const c0 = childrenCpuMs();
    const t0 = performance.now();
    if (!this.tables.canaryPresent()) throw new Error(`kube-proxy iptables variant in netns ${this.tables.ns}: the canary chain is gone`);
    this.canaryTotal.n++;
    this.canaryTotal.wallMs += performance.now() - t0;
    this.canaryTotal.cpuMs += childrenCpuMs() - c0;
  }

  /** One syncProxyRules at the current virtual time, for these changed services (namespace/name). */
  private sync(changed: ReadonlySet<string>): SyncRecord {
    const total = this.services.reduce((a, s) => a + s.endpoints.length, 0);
    const plan = this.schedule.plan(this.now, total);
    const c0 = childrenCpuMs();
    const t0 = performance.now();
    if (plan.ensureJumps) this.tables.ensureJumps();
    const existing = plan.cleanup ? this.tables.natChains() : null;
    const r = iptablesRestoreInput(this.services, {
      clusterCidr: this.clusterCidr,
      full: plan.kind === 'full',
      changed,
      existingNatChains: existing,
    });
    try {
      this.tables.restore(r.input);
    } catch (e) {
      this.schedule.failed();
      throw e;
    }
    const rec: SyncRecord = {
      at: this.now,
      kind: plan.kind,
      cleanup: plan.cleanup,
      ensureJumps: plan.ensureJumps,
      largeClusterMode: plan.largeClusterMode,
      changed: plan.kind === 'full' ? this.services.length : changed.size,
      restoreBytes: r.input.length,
      deletedChains: r.deletedChains.length,
      wallMs: +(performance.now() - t0).toFixed(3),
      cpuMs: childrenCpuMs() - c0,
    };
    this.schedule.done(this.now, plan);
    return rec;
  }

  /** kube-proxy starting with these services: the monitor, then the first (full) sync. */
  start(): SyncRecord {
    this.tables.startMonitor();
    this.schedule.canaryChecksDue(this.now);
    const rec = this.sync(new Set());
    this.syncs.push(rec);
    return rec;
  }

  /**
   * `afterMs` of virtual time later, a service's endpoints change: the timers
   * that fall in between run, then kube-proxy's sync for the change.
   */
  change(after: BenchService, afterMs: number): SyncRecord {
    this.now += afterMs;
    this.tickCanary();
    const key = `${after.namespace}/${after.name}`;
    this.services = this.services.map((s) =>
      s.namespace === after.namespace && s.name === after.name && s.portName === after.portName ? after : s,
    );
    const rec = this.sync(new Set([key]));
    this.syncs.push(rec);
    return rec;
  }

  /**
   * Nothing changes until the sync runner fires on its own (FullSyncPeriod
   * after the last sync): a full sync, or in large cluster mode a partial one
   * with no service chains; then kube-proxy's idle cost, amortized.
   */
  idle(): KubeProxyIptablesFigures {
    this.now = this.schedule.nextPeriodicSync();
    this.tickCanary();
    const periodicSync = this.sync(new Set());
    // CPU is counted in 10 ms ticks and a check takes a few ms: average over several
    for (let i = 0; i < CANARY_SAMPLES; i++) this.canaryCheck();
    const canary = { wallMs: this.canaryTotal.wallMs / this.canaryTotal.n, cpuMs: this.canaryTotal.cpuMs / this.canaryTotal.n };
    const d = KUBE_PROXY_DEFAULTS;
    const cpuMsPerHour = periodicSync.cpuMs * (3_600_000 / d.fullSyncPeriodMs) + canary.cpuMs * (3_600_000 / d.syncPeriodMs);
    return {
      largeClusterMode: periodicSync.largeClusterMode,
      totalEndpoints: this.services.reduce((a, s) => a + s.endpoints.length, 0),
      syncs: [...this.syncs],
      periodicSync,
      canary: { wallMs: +canary.wallMs.toFixed(3), cpuMs: +canary.cpuMs.toFixed(2), everyMs: d.syncPeriodMs },
      idleCpuSecPerSec: +(cpuMsPerHour / 1000 / 3600).toFixed(6),
    };
  }
}
