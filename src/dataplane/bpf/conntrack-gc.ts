/**
 * Conntrack garbage collection: the datapath treats expired entries as
 * misses; this removes them so the LRU map keeps room for live flows.
 */
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native } from '../../native/index.js';
import type { DatapathMaps } from './loader.js';

export interface GcStats {
  runs: number;
  lastLive: number;
  lastExpired: number;
}

export class ConntrackGc {
  readonly stats: GcStats = { runs: 0, lastLive: 0, lastExpired: 0 };
  private timer: Timer | undefined;
  private warnedFull = false;

  constructor(
    private readonly maps: DatapathMaps,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs = 10_000,
  ) {}

  start(): void {
    this.timer = this.clock.after(this.intervalMs, () => {
      this.run();
      this.start();
    });
  }

  stop(): void {
    this.timer?.cancel();
  }

  run(): GcStats {
    const now = native().monotonicNs();
    const entries = this.maps.ct.entries();
    const expired = entries.filter(([, v]) => v.expiresNs < now).map(([k]) => k);
    if (expired.length) this.maps.ct.deleteMany(expired);
    this.stats.runs++;
    this.stats.lastExpired = expired.length;
    this.stats.lastLive = entries.length - expired.length;
    const fill = this.stats.lastLive / this.maps.ct.maxEntries;
    if (fill >= 0.9 && !this.warnedFull) {
      this.warnedFull = true;
      this.log.warn(
        { live: this.stats.lastLive, max: this.maps.ct.maxEntries },
        `conntrack map is ${(fill * 100).toFixed(0)}% full; the oldest flows will be evicted — raise bpfMapSizeConntrack`,
      );
    } else if (fill < 0.8) {
      this.warnedFull = false;
    }
    return this.stats;
  }
}
