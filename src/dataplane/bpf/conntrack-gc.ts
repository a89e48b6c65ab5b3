/**
 * Conntrack garbage collection: the datapath treats expired connections as
 * misses; this removes them so the map (a plain hash: nothing is evicted)
 * keeps room for new flows. A connection is two entries (one per
 * direction); it is removed only when both are expired, and both go
 * together, so a quiet direction of a live flow is never taken.
 *
 * The work runs in the addon on a worker thread (addon/bulk.cc: one batched
 * read of the map, the pair rule, batched deletes), never on the event loop:
 * at 512K entries a pass in JavaScript held the agent's syncs, health checks
 * and scrapes for seconds. `expiredConnections` is the same rule in
 * TypeScript, the reference the tests hold the addon to.
 *
 * The same holds for clearing the UDP conntrack of removed endpoints
 * (ConntrackFlusher): one native pass over the map, queued by the
 * reconciler, finished shortly after the sync that asked for it.
 *
 * Both families: the addon tells bpfproxy_ct and bpfproxy_ct6 apart by
 * their key size, and each pass covers the IPv4 map, then the IPv6 one.
 */
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native, type CtGcResult } from '../../native/index.js';
import { CtDir, type CtKey, type CtValue } from './codecs.js';
import type { DatapathMaps } from './loader.js';
import { be16, ip4, pad, struct, u32, u8 } from './struct.js';
import { ip6 } from './codecs6.js';

const keyStr = (k: CtKey): string => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}`;
/** The key of the other direction: the reverse of this entry's rewrite. */
export const ctPeerKey = (k: CtKey, v: CtValue): CtKey => ({
  saddr: v.natDaddr,
  daddr: v.natSaddr,
  sport: v.natDport,
  dport: v.natSport,
  proto: k.proto,
});

/**
 * Keys of the connections whose entries are all expired (both halves, or an
 * orphan half). The rule the native pass applies, kept as its reference.
 */
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
  /** passes completed */
  runs: number;
  /** entries left after the last pass (two per connection) */
  lastLive: number;
  /** entries the last pass removed */
  lastExpired: number;
  /** entries the last pass read */
  lastScanned: number;
  /** wall time of the last pass (on the worker thread) */
  lastMs: number;
  /** entries left after the last pass, by protocol */
  liveByProto: { tcp: number; udp: number; other: number };
  /** connections left after the last pass that are not closed (no RST, not FINs both ways) */
  lastOpen: number;
  /** entries removed since the agent started */
  removedTotal: number;
  /** Date.now() when the last pass finished; 0 before the first */
  lastRunAt: number;
  /** passes that failed */
  failures: number;
}

export class ConntrackGc {
  readonly stats: GcStats = {
    runs: 0,
    lastLive: 0,
    lastExpired: 0,
    lastScanned: 0,
    lastMs: 0,
    liveByProto: { tcp: 0, udp: 0, other: 0 },
    lastOpen: 0,
    removedTotal: 0,
    lastRunAt: 0,
    failures: 0,
  };
  private timer: Timer | undefined;
  private running: Promise<GcStats> | undefined;
  private stopped = true;
  private warnedFull = false;

  constructor(
    private readonly maps: DatapathMaps,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs = 10_000,
  ) {}

  /**
   * The IPv6 map (bpfproxy_ct6), natively as the IPv4 one, after it: its
   * expired, scanned, open connections and entries by protocol are added to
   * the pass's stats; its live entries are ipv6Live. A failure is logged and
   * leaves the IPv4 figures standing.
   */
  private async gc6(): Promise<void> {
    let r6: CtGcResult;
    try {
      r6 = await native().ctGc(this.maps.ct6.fd);
    } catch (e) {
      this.stats.failures++;
      this.log.error(
        { map: this.maps.ct6.name, failures: this.stats.failures },
        `conntrack GC pass over ${this.maps.ct6.name} failed: ${e instanceof Error ? e.message : String(e)}; ` +
          `expired IPv6 connections stay (treated as misses) and the pass is retried in ${this.intervalMs / 1000} s`,
      );
      return;
    }
    const s = this.stats;
    s.lastExpired += r6.expired;
    s.removedTotal += r6.expired;
    s.lastScanned += r6.scanned;
    s.lastMs += r6.ms;
    s.lastOpen += r6.open;
    s.liveByProto = {
      tcp: s.liveByProto.tcp + r6.liveByProto.tcp,
      udp: s.liveByProto.udp + r6.liveByProto.udp,
      other: s.liveByProto.other + r6.liveByProto.other,
    };
    this.ipv6Live = r6.live;
    const fill = r6.live / this.maps.ct6.maxEntries;
    if (fill >= 0.9 && !this.warnedFull6) {
      this.warnedFull6 = true;
      this.log.warn(
        { map: this.maps.ct6.name, live: r6.live, max: this.maps.ct6.maxEntries },
        `IPv6 conntrack map is ${(fill * 100).toFixed(0)}% full; new IPv6 flows are refused when it is full (counted as ct-full; established flows keep working) — raise bpfMapSizeConntrack`,
      );
    } else if (fill < 0.8) {
      this.warnedFull6 = false;
    }
  }

  /** IPv6 entries left after the last pass (lastLive counts the IPv4 map). */
  ipv6Live = 0;
  private warnedFull6 = false;

  /** The first pass now (a restarted agent may find a full map), then one every interval after each ends. */
  start(): void {
    this.stopped = false;
    if (!this.timer) this.arm(0);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private arm(ms: number): void {
    this.timer = this.clock.after(ms, () => {
      this.timer = undefined;
      this.run()
        .catch((e: Error) => {
          this.log.error(
            { map: this.maps.ct.name, failures: this.stats.failures },
            `conntrack GC pass over ${this.maps.ct.name} failed: ${e.message}; expired connections stay in the map ` +
              `(the datapath treats them as misses) and the pass is retried in ${this.intervalMs / 1000} s; ` +
              'if this keeps failing the map fills up and new flows are refused (ct-full)',
          );
        })
        .finally(() => {
          if (!this.stopped && !this.timer) this.arm(this.intervalMs);
        });
    });
  }

  /**
   * Resolves when no pass is running. A pass deletes what it judged dead
   * on its own read: an entry written meanwhile over the same key (a flow
   * adopted from the kernel, say) could go with it, so such writes wait
   * for this. A pass starts only from a timer, never in the middle of a
   * synchronous write after this resolves.
   */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  /** One pass, off the event loop; a call while one runs shares it. */
  run(): Promise<GcStats> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<GcStats> {
    let r: CtGcResult;
    try {
      r = await native().ctGc(this.maps.ct.fd);
    } catch (e) {
      this.stats.failures++;
      throw e;
    }
    const s = this.stats;
    s.runs++;
    s.lastExpired = r.expired;
    s.lastLive = r.live;
    s.lastScanned = r.scanned;
    s.lastMs = r.ms;
    s.liveByProto = { ...r.liveByProto };
    s.lastOpen = r.open;
    s.removedTotal += r.expired;
    await this.gc6();
    s.lastRunAt = Date.now();
    if (r.refreshed) this.log.debug({ refreshed: r.refreshed }, 'conntrack GC: entries refreshed by traffic during the pass were kept');
    const fill = s.lastLive / this.maps.ct.maxEntries;
    if (fill >= 0.9 && !this.warnedFull) {
      this.warnedFull = true;
      this.log.warn(
        { live: s.lastLive, max: this.maps.ct.maxEntries },
        `conntrack map is ${(fill * 100).toFixed(0)}% full; new flows are refused when it is full (counted as ct-full; established flows keep working) — raise bpfMapSizeConntrack`,
      );
    } else if (fill < 0.8) {
      this.warnedFull = false;
    }
    return { ...s, liveByProto: { ...s.liveByProto } };
  }
}

/**
 * The entries of one protocol that lead to what `rules` name: the rule the
 * native flush applies (to either family), kept as its reference. An
 * entry's backend is where a forward entry rewrites to, or the source of a
 * reply entry.
 */
export function flushedEntries(entries: ReadonlyArray<[CtKey, CtValue]>, proto: number, rules: readonly FlushRule[]): CtKey[] {
  const any = new Set(rules.filter((r) => !r.backend).map((r) => r.svcId));
  const bes = new Set(rules.filter((r) => r.backend).map((r) => `${r.svcId}|${r.backend!.addr}|${r.backend!.port}`));
  return entries
    .filter(([k, v]) => {
      if (k.proto !== proto) return false;
      if (any.has(v.svcId)) return true;
      const fwd = v.dir === CtDir.FWD;
      return bes.has(`${v.svcId}|${fwd ? v.natDaddr : k.saddr}|${fwd ? v.natDport : k.sport}`);
    })
    .map(([k]) => k);
}

/** Conntrack entries that lead to `addr:port` of service port `svcId`, or, without addr, to any backend of it. */
export interface FlushRule {
  svcId: number;
  backend?: { addr: string; port: number };
}

export interface FlushResult {
  scanned: number;
  deleted: number;
  ms: number;
  cpuMs: number;
}

/** The rule as addon/bulk.cc reads it (struct FlushRule, 12 bytes). */
const flushRule = struct('flush_rule', { svcId: u32, addr: ip4, port: be16, any: u8, pad: pad(1) });

export function encodeFlushRules(rules: readonly FlushRule[]): Buffer {
  const b = Buffer.alloc(rules.length * flushRule.size);
  rules.forEach((r, i) =>
    flushRule.encodeInto(b, i * flushRule.size, {
      svcId: r.svcId,
      addr: r.backend?.addr ?? '0.0.0.0',
      port: r.backend?.port ?? 0,
      any: r.backend ? 0 : 1,
    }),
  );
  return b;
}

/** The IPv6 rule as addon/bulk.cc reads it for bpfproxy_ct6 (struct FlushRule6, 24 bytes). */
const flushRule6 = struct('flush_rule6', { svcId: u32, addr: ip6, port: be16, any: u8, pad: pad(1) });

export function encodeFlushRules6(rules: readonly FlushRule[]): Buffer {
  const b = Buffer.alloc(rules.length * flushRule6.size);
  rules.forEach((r, i) =>
    flushRule6.encodeInto(b, i * flushRule6.size, {
      svcId: r.svcId,
      addr: r.backend?.addr ?? '::',
      port: r.backend?.port ?? 0,
      any: r.backend ? 0 : 1,
    }),
  );
  return b;
}

/**
 * Deletes the conntrack entries of one protocol that lead to removed
 * backends, in native passes over the map. Requests made while a pass runs
 * are served together by the next one, so a burst of endpoint changes costs
 * two passes, not one per change.
 */
export class ConntrackFlusher {
  private next:
    { rules: FlushRule[]; resolve: (r: FlushResult) => void; reject: (e: unknown) => void; done: Promise<FlushResult> } | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly maps: Pick<DatapathMaps, 'ct'> & Partial<Pick<DatapathMaps, 'ct6'>>,
    private readonly proto: number,
  ) {}

  /** Resolves when a pass that includes these rules has ended. */
  flush(rules: readonly FlushRule[]): Promise<FlushResult> {
    if (!this.next) {
      let resolve!: (r: FlushResult) => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<FlushResult>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { rules: [], resolve, reject, done };
    }
    this.next.rules.push(...rules);
    const done = this.next.done;
    this.pump();
    return done;
  }

  /** Resolves when nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private pump(): void {
    if (this.running || !this.next) return;
    const job = this.next;
    this.next = undefined;
    let pass: Promise<FlushResult>;
    try {
      // IPv6 backends live in bpfproxy_ct6; rules without a backend apply to both maps. Two native passes, one per map.
      const six = job.rules.filter((r) => !r.backend || r.backend.addr.includes(':'));
      const four = job.rules.filter((r) => !r.backend || !r.backend.addr.includes(':'));
      const none: Promise<FlushResult> = Promise.resolve({ scanned: 0, deleted: 0, ms: 0, cpuMs: 0 });
      const ct6 = this.maps.ct6;
      pass = (four.length ? native().ctFlush(this.maps.ct.fd, this.proto, encodeFlushRules(four)) : none).then(async (r4) => {
        const r6 = ct6 && six.length ? await native().ctFlush(ct6.fd, this.proto, encodeFlushRules6(six)) : await none;
        return {
          scanned: r4.scanned + r6.scanned,
          deleted: r4.deleted + r6.deleted,
          ms: r4.ms + r6.ms,
          cpuMs: r4.cpuMs + r6.cpuMs,
        };
      });
    } catch (e) {
      pass = Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    this.running = pass.then(job.resolve, job.reject).finally(() => {
      this.running = undefined;
      this.pump();
    });
  }
}
