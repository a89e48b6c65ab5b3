/**
 * Bounded-frequency runner, after kube-proxy's: run() asks for a sync; syncs
 * happen at most `burst` at once and then one per minInterval, and at least
 * every maxInterval (a full resync). One sync at a time; a request that
 * arrives during a sync is served after it.
 */
import type { Clock, Timer } from '../clock.js';

export interface RunnerOptions {
  /** ms between syncs once the burst is spent */
  minInterval: number;
  /** ms after which a full sync runs even without requests */
  maxInterval: number;
  burst?: number;
}

export type SyncFn = (full: boolean) => Promise<void>;

export class SyncRunner {
  private tokens: number;
  private lastRefill: number;
  private timer: Timer | undefined;
  private periodic: Timer | undefined;
  private running = false;
  private pending = false;
  private pendingFull = false;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];
  readonly burst: number;

  constructor(
    private readonly fn: SyncFn,
    private readonly opts: RunnerOptions,
    private readonly clock: Clock,
  ) {
    this.burst = opts.burst ?? 2;
    this.tokens = this.burst;
    this.lastRefill = clock.now();
  }

  start(): void {
    this.armPeriodic();
  }

  /** Change the minimum interval (bpfKubeProxyMinSyncPeriod) on the fly. */
  setMinInterval(ms: number): void {
    this.opts.minInterval = Math.max(1, ms);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.periodic?.cancel();
  }

  /** Ask for a sync of what changed. */
  run(): void {
    this.request(false);
  }

  /** Ask for a full sync. */
  runFull(): void {
    this.request(true);
  }

  /** Resolves when no sync is running or pending. */
  idle(): Promise<void> {
    if (!this.running && !this.pending) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private refill(): void {
    const now = this.clock.now();
    const gained = (now - this.lastRefill) / this.opts.minInterval;
    this.tokens = Math.min(this.burst, this.tokens + gained);
    this.lastRefill = now;
  }

  private request(full: boolean): void {
    if (this.stopped) return;
    this.pending = true;
    this.pendingFull ||= full;
    this.schedule();
  }

  private schedule(): void {
    if (this.running || this.timer || !this.pending) return;
    this.refill();
    const wait = this.tokens >= 1 ? 0 : (1 - this.tokens) * this.opts.minInterval;
    this.timer = this.clock.after(wait, () => {
      this.timer = undefined;
      void this.fire();
    });
  }

  private armPeriodic(): void {
    this.periodic?.cancel();
    if (this.stopped) return;
    this.periodic = this.clock.after(this.opts.maxInterval, () => {
      this.request(true);
      this.armPeriodic();
    });
  }

  private async fire(): Promise<void> {
    if (this.stopped || this.running) return;
    this.refill();
    if (this.tokens < 1) {
      this.schedule();
      return;
    }
    this.tokens -= 1;
    const full = this.pendingFull;
    this.pending = false;
    this.pendingFull = false;
    this.running = true;
    try {
      await this.fn(full);
    } finally {
      this.running = false;
      if (full) this.armPeriodic();
      if (this.pending) this.schedule();
      else {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const r of w) r();
      }
    }
  }
}
