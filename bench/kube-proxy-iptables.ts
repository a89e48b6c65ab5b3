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
import { spawnSync } from 'node:child_process';
import { nsPath } from '../testkit/netns.js';
import {
  CANARY_CHAIN,
  CANARY_TABLES,
  IPTABLES_RESTORE_ARGS,
  IPTABLES_WAIT_ARGS,
  JUMP_CHAINS,
  KUBE_PROXY_DEFAULTS,
  KubeProxySchedule,
  iptablesRestoreInput,
  natChainsFromSave,
  type BenchService,
  type SyncPlan,
} from './kube-proxy-rules.js';

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

  constructor(
    private readonly ns: string,
    services: readonly BenchService[],
    private readonly clusterCidr: string,
  ) {
    this.services = [...services];
  }

  private run(cmd: string, args: readonly string[], input?: string, okStatus: readonly number[] = [0]): { status: number; stdout: string } {
    const r = spawnSync('nsenter', [`--net=${nsPath(this.ns)}`, '--', cmd, ...args], { input, encoding: 'utf8', maxBuffer: 1 << 30 });
    const status = r.status ?? -1;
    if (!okStatus.includes(status)) {
      throw new Error(
        `kube-proxy iptables variant in netns ${this.ns}: ${cmd} ${args.join(' ')} exited ${status}: ${(r.stderr || r.error?.message || '').slice(0, 500)}; the variant stops here`,
      );
    }
    return { status, stdout: r.stdout };
  }

  /** kube-proxy's iptables.Monitor start: the canary chain in mangle, nat and filter. */
  private startMonitor(): void {
    for (const t of CANARY_TABLES) this.run('iptables', [...IPTABLES_WAIT_ARGS, '-N', CANARY_CHAIN, '-t', t], undefined, [0, 1]);
  }

  /** EnsureChain and EnsureRule(Prepend) for every jump, as a full sync does. */
  private ensureJumps(): void {
    for (const j of JUMP_CHAINS) {
      this.run('iptables', [...IPTABLES_WAIT_ARGS, '-N', j.chain, '-t', j.table], undefined, [0, 1]);
      const exists = this.run('iptables', [...IPTABLES_WAIT_ARGS, '-C', j.from, '-t', j.table, ...j.args], undefined, [0, 1]).status === 0;
      if (!exists) this.run('iptables', [...IPTABLES_WAIT_ARGS, '-I', j.from, '-t', j.table, ...j.args]);
    }
  }

  /** Run the canary checks due by now (kube-proxy's monitor goroutine). */
  private tickCanary(): void {
    for (let i = this.schedule.canaryChecksDue(this.now); i > 0; i--) this.canaryCheck();
  }

  private canaryCheck(): void {
    const c0 = childrenCpuMs();
    const t0 = performance.now();
    this.run('iptables', [...IPTABLES_WAIT_ARGS, '-S', CANARY_CHAIN, '-t', CANARY_TABLES[0]]);
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
    if (plan.ensureJumps) this.ensureJumps();
    const existing = plan.cleanup ? natChainsFromSave(this.run('iptables-save', ['-t', 'nat']).stdout) : null;
    const r = iptablesRestoreInput(this.services, {
      clusterCidr: this.clusterCidr,
      full: plan.kind === 'full',
      changed,
      existingNatChains: existing,
    });
    try {
      this.run('iptables-restore', IPTABLES_RESTORE_ARGS, r.input);
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
    this.startMonitor();
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
