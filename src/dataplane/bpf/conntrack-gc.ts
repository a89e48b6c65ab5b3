/**
 * Conntrack garbage collection: the datapath treats expired connections as
 * misses; this removes them so the map (a plain hash: nothing is evicted)
 * keeps room for new flows. A connection is two entries (one per
 * direction); it is removed only when both are expired, and both go
 * together, so a quiet direction of a live flow is never taken.
 */
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native } from '../../native/index.js';
import type { CtKey, CtValue } from './codecs.js';
import type { DatapathMaps } from './loader.js';

const keyStr = (k: CtKey): string => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}`;
/** The key of the other direction: the reverse of this entry's rewrite. */
export const ctPeerKey = (k: CtKey, v: CtValue): CtKey => ({
  saddr: v.natDaddr, daddr: v.natSaddr, sport: v.natDport, dport: v.natSport, proto: k.proto,
});

/** Keys of the connections whose entries are all expired (both halves, or an orphan half). */
export function expiredConnections(entries: ReadonlyArray<[CtKey, CtValue]>, now: bigint): CtKey[] {
  const byKey = new Map<string, CtValue>();
  for (const [k, v] of entries) byKey.set(keyStr(k), v);
  const out: CtKey[] = [];
  for (const [k, v] of entries) {
    if (v.expiresNs >= now) continue;
    const peer = byKey.get(keyStr(ctPeerKey(k, v)));
    if (peer && peer.expiresNs >= now) continue; // the other direction is alive
    out.push(k);
  }
  return out;
}

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
    const expired = expiredConnections(entries, now);
    if (expired.length) this.maps.ct.deleteMany(expired);
    this.stats.runs++;
    this.stats.lastExpired = expired.length;
    this.stats.lastLive = entries.length - expired.length;
    const fill = this.stats.lastLive / this.maps.ct.maxEntries;
    if (fill >= 0.9 && !this.warnedFull) {
      this.warnedFull = true;
      this.log.warn(
        { live: this.stats.lastLive, max: this.maps.ct.maxEntries },
        `conntrack map is ${(fill * 100).toFixed(0)}% full; new flows are refused when it is full (counted as ct-full; established flows keep working) — raise bpfMapSizeConntrack`,
      );
    } else if (fill < 0.8) {
      this.warnedFull = false;
    }
    return this.stats;
  }
}
