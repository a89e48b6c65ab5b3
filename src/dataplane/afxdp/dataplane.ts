/**
 * The vector engine as a Dataplane: the same Frontends the BPF reconciler
 * gets, turned into the engine's table (table.ts) and swapped in whole.
 *
 * - Same ownership rule as the BPF reconciler: of two services claiming one
 *   address, in a full sync the first in the order given gets it; between
 *   full syncs whoever has it keeps it, and the other waits (retried when
 *   it is freed).
 * - Make-before-break: a table is complete before it is handed over, and
 *   the engine swaps it in atomically (workers see the old one or the new
 *   one). A table the engine refuses leaves the one in force serving.
 * - Coalesced: the syncService calls of one sync pass make one table (built
 *   when the pass is done, before anything else runs); syncAll and flush()
 *   build at once.
 * - Service ids: the BPF path's (so the conntrack entries the engine
 *   mirrors name the right service), else ids of its own from 2^30 up.
 * - Backend choice: the BPF path's (the same LoadBalancing settings): a
 *   Maglev frontend carries the same tables the reconciler writes
 *   (src/model/maglev.ts, same sizes and seed), so both pick the same
 *   backend for a flow; tables are kept between builds while their
 *   backends and size stay.
 */
import type { Logger } from '../../log.js';
import type { Frontend } from '../../model/types.js';
import { frontendKey, lbAlgorithmOf } from '../../model/types.js';
import { maglevTable, maglevTableSize } from '../../model/maglev.js';
import { DEFAULT_LOAD_BALANCING, type LoadBalancing } from '../bpf/reconciler.js';
import { emptyReport, type Dataplane, type SyncProblem, type SyncReport } from '../dataplane.js';
import { encodeTable, EngineFeFlags, type EngineFrontend, type EngineNeighbour, type EnginePort, type EngineTable } from './table.js';

export interface EngineTableSettings {
  /** the engine's SNAT source ports: disjoint from the BPF path's range */
  snatPorts: readonly [number, number];
  hairpinIp: string;
  /** pods reaching themselves over IPv6 (left out: such flows are dropped by the engine) */
  hairpinIp6?: string;
  ctTimeoutsNs: EngineTable['ctTimeoutsNs'];
}

export interface EngineDataplaneOptions {
  /** the BPF path's id of a service port ("namespace/name:port/PROTO") */
  svcIdOf?: (servicePort: string) => number | undefined;
  /** the BPF path's backend choice settings, read at every build (default: random, the default seed) */
  loadBalancing?: () => LoadBalancing;
  log?: Logger;
}

/** The most backends one frontend can have in the engine's table (a 16-bit count per set). */
export const ENGINE_MAX_BACKENDS = 0xffff;
const OWN_IDS_FROM = 0x40000000;

interface Owned {
  owner: string;
  frontend: Frontend;
  label: string;
}

const same = (a: Frontend, b: Frontend): boolean => JSON.stringify(a) === JSON.stringify(b);

export function frontendFlags(f: Frontend): number {
  let flags = 0;
  if (f.kind !== 'ClusterIP') flags |= EngineFeFlags.EXTERNAL;
  if (f.kind === 'NodePort') flags |= EngineFeFlags.NODEPORT;
  if (f.externalLocal) flags |= EngineFeFlags.EXT_LOCAL;
  if (f.internalLocal) flags |= EngineFeFlags.INT_LOCAL;
  return flags;
}

export class EngineDataplane implements Dataplane {
  private readonly fes = new Map<string, Owned>();
  private readonly byOwner = new Map<string, Set<string>>();
  private readonly waiting = new Map<string, Set<string>>();
  private readonly ownIds = new Map<string, number>();
  private nextOwnId = OWN_IDS_FROM;
  private nodeAddresses: string[] = [];
  private ports: EnginePort[] = [];
  private neighbours: EngineNeighbour[] = [];
  private generation = 0;
  /** Maglev tables by "size|seed|ip:port,..." (the ones the last build used) */
  private maglevTables = new Map<string, Uint16Array>();
  private builtLb = '';
  private dirty = false;
  private scheduled = false;
  /** runs before each build (the runtime resolves new backends' next hops into the same table) */
  private prepare: (() => void) | undefined;
  /** the last table handed over, and whether the engine took it */
  lastError: string | undefined;
  tablesApplied = 0;

  constructor(
    private readonly apply: (blob: Buffer, table: EngineTable) => void,
    private readonly settings: EngineTableSettings,
    private readonly o: EngineDataplaneOptions = {},
  ) {}

  syncService(service: string, frontends: readonly Frontend[]): SyncReport {
    const r = this.sync(service, frontends);
    if (this.dirty) this.schedule();
    return r;
  }

  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport {
    const report = emptyReport();
    for (const owner of [...this.byOwner.keys()]) if (!all.has(owner)) this.merge(report, this.sync(owner, []));
    const rank = new Map([...all.keys()].map((k, i) => [k, i]));
    for (const [svc, fes] of all) this.merge(report, this.sync(svc, fes, rank));
    report.retry = [];
    const err = this.flush();
    if (err) report.problems.push({ service: '', message: err });
    return report;
  }

  setNodeAddresses(ips: readonly string[]): void {
    const next = [...ips].sort(); // both families: NodePorts on IPv6 node addresses too
    if (next.join(',') === this.nodeAddresses.join(',')) return;
    this.nodeAddresses = next;
    this.schedule();
  }

  /** The engine's interfaces, in port order (the I/O layer's order). */
  setPorts(ports: readonly EnginePort[]): void {
    this.ports = [...ports];
    this.schedule();
  }

  /** Where each backend address is reached (neighbours.ts). */
  setNeighbours(n: readonly EngineNeighbour[]): void {
    const next = [...n].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    if (JSON.stringify(next) === JSON.stringify(this.neighbours)) return;
    this.neighbours = next;
    this.schedule();
  }

  /**
   * What runs before each table build: the runtime looks up the next hops of
   * backends the table has not seen yet, so a table never reaches the engine
   * with a backend it has no neighbour entry for when the kernel knows one.
   */
  beforeBuild(fn: () => void): void {
    this.prepare = fn;
  }

  /** Every frontend in the table, with its owner. */
  frontends(): Array<{ owner: string; frontend: Frontend }> {
    return [...this.fes.values()].map((o) => ({ owner: o.owner, frontend: o.frontend }));
  }

  /** Every backend address a frontend in the table may choose. */
  backendAddresses(): Set<string> {
    const out = new Set<string>();
    for (const { frontend: f } of this.fes.values()) for (const b of [...f.clusterBackends, ...f.localBackends]) out.add(b.ip);
    return out;
  }

  /**
   * Build and hand over the table now if anything changed; the error the
   * engine gave (its previous table stays in force), or undefined.
   */
  flush(): string | undefined {
    // a change of backend choice settings (e.g. a live Maglev sizing change) rebuilds the tables
    if (!this.dirty && (this.builtLb === '' || JSON.stringify(this.lb()) === this.builtLb)) return undefined;
    // before clearing dirty: what prepare() changes goes into this build, not another one
    this.prepare?.();
    this.dirty = false;
    const table = this.build();
    try {
      this.apply(encodeTable(table), table);
      this.tablesApplied++;
      this.lastError = undefined;
    } catch (e) {
      // EBUSY: a worker still holds older tables; not the table's fault, so the
      // next flush (the runtime's refresh, within a second) builds and tries it again
      const busy = (e as NodeJS.ErrnoException).code === 'EBUSY';
      if (busy) this.dirty = true;
      this.lastError = `vector engine: table generation ${table.generation} (${table.frontends.length} frontends) refused: ${(e as Error).message}; the engine keeps serving its previous table${busy ? ' until the retry at the next refresh' : ''}`;
      this.o.log?.error({ generation: table.generation }, this.lastError);
      return this.lastError;
    }
    return undefined;
  }

  /** Mark the table for a rebuild when this sync pass is done. */
  private schedule(): void {
    this.dirty = true;
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private merge(into: SyncReport, r: SyncReport): void {
    into.frontendsChanged += r.frontendsChanged;
    into.problems.push(...r.problems);
    into.retry.push(...r.retry);
  }

  private svcId(spk: string): number {
    const bpf = this.o.svcIdOf?.(spk);
    if (bpf !== undefined) return bpf;
    let id = this.ownIds.get(spk);
    if (id === undefined) this.ownIds.set(spk, (id = this.nextOwnId++));
    return id;
  }

  private lb(): LoadBalancing {
    return this.o.loadBalancing?.() ?? DEFAULT_LOAD_BALANCING;
  }

  /**
   * The Maglev tables of a frontend, as the BPF reconciler sizes them
   * (undefined: random, e.g. more endpoints than a table holds; the BPF
   * path reports that).
   */
  private maglevOf(f: Frontend, lb: LoadBalancing, used: Map<string, Uint16Array>): EngineFrontend['maglev'] {
    if (lbAlgorithmOf(f, lb.algorithm) !== 'maglev') return undefined;
    const nc = f.clusterBackends.length;
    const nl = f.localBackends.length;
    if (!nc && !nl) return undefined;
    const m = nc ? maglevTableSize(nc, lb.maglev) : 0;
    const mLocal = nl ? maglevTableSize(nl, lb.maglev) : 0;
    if (m === undefined || mLocal === undefined) return undefined;
    const tableOf = (bs: readonly { ip: string; port: number }[], size: number): Uint16Array => {
      const names = bs.map((b) => `${b.ip}:${b.port}`);
      const key = `${size}|${lb.seed}|${names.join(',')}`;
      let tab = used.get(key) ?? this.maglevTables.get(key);
      if (!tab) tab = maglevTable(names, size, lb.seed);
      used.set(key, tab);
      return tab;
    };
    return {
      ...(nc ? { cluster: tableOf(f.clusterBackends, m) } : {}),
      ...(nl ? { local: tableOf(f.localBackends, mLocal) } : {}),
    };
  }

  private build(): EngineTable {
    const frontends: EngineFrontend[] = [];
    const lb = this.lb();
    const used = new Map<string, Uint16Array>();
    for (const { frontend: f } of this.fes.values()) {
      const maglev = this.maglevOf(f, lb, used);
      frontends.push({
        ip: f.ip,
        port: f.port,
        protocol: f.protocol === 'UDP' ? 'UDP' : 'TCP', // sync() keeps SCTP out
        flags: frontendFlags(f) | (maglev ? EngineFeFlags.MAGLEV : 0),
        svcId: this.svcId(f.servicePort),
        affinityTimeout: f.affinityTimeout,
        cluster: f.clusterBackends,
        local: f.localBackends,
        ...(maglev ? { maglev } : {}),
      });
    }
    this.maglevTables = used;
    this.builtLb = JSON.stringify(lb);
    return {
      generation: ++this.generation,
      ports: this.ports,
      nodeAddresses: this.nodeAddresses,
      frontends,
      neighbours: this.neighbours,
      snatPorts: this.settings.snatPorts,
      hairpinIp: this.settings.hairpinIp,
      ...(this.settings.hairpinIp6 ? { hairpinIp6: this.settings.hairpinIp6 } : {}),
      maglevSeed: lb.seed,
      ctTimeoutsNs: this.settings.ctTimeoutsNs,
    };
  }

  private sync(service: string, all: readonly Frontend[], rank?: ReadonlyMap<string, number>): SyncReport {
    const report = emptyReport();
    const wanted = new Set<string>();
    // Both families (the engine's IPv6 nodes: addon/engine/nodes6.h).
    for (const f of all) {
      const ks = frontendKey(f);
      const label = `${ks} (${f.kind})`;
      if (wanted.has(ks)) continue;
      if (f.protocol === 'SCTP') {
        report.problems.push({
          service,
          frontend: label,
          message: `${label}: the vector engine does not parse SCTP; its XDP steering passes SCTP on and the BPF path serves it`,
        });
        continue;
      }
      const cur = this.fes.get(ks);
      const other = cur && cur.owner !== service ? cur.owner : undefined;
      if (other !== undefined && !this.outranks(service, other, rank)) {
        report.problems.push({
          service,
          frontend: label,
          message: `${label} is already served by ${other}; skipped until that service lets it go (of two services claiming one address, the older keeps it)`,
        });
        this.wait(ks, service);
        continue;
      }
      if (f.clusterBackends.length > ENGINE_MAX_BACKENDS || f.localBackends.length > ENGINE_MAX_BACKENDS) {
        report.problems.push(this.tooMany(service, label, f));
        if (cur && cur.owner === service) wanted.add(ks);
        continue;
      }
      wanted.add(ks);
      if (cur && cur.owner === service && same(cur.frontend, f)) continue;
      if (other !== undefined) {
        this.disown(other, ks);
        this.wait(ks, other);
      }
      this.fes.set(ks, { owner: service, frontend: f, label });
      this.own(service, ks);
      report.frontendsChanged++;
      this.dirty = true;
    }
    for (const ks of [...(this.byOwner.get(service) ?? [])]) {
      if (wanted.has(ks)) continue;
      this.fes.delete(ks);
      this.disown(service, ks);
      report.frontendsChanged++;
      this.dirty = true;
      const w = this.waiting.get(ks);
      if (w) {
        report.retry.push(...w);
        this.waiting.delete(ks);
      }
    }
    return report;
  }

  private tooMany(service: string, label: string, f: Frontend): SyncProblem {
    return {
      service,
      frontend: label,
      message: `${label} has ${f.clusterBackends.length} endpoints (${f.localBackends.length} on this node); the vector engine takes at most ${ENGINE_MAX_BACKENDS} per frontend: it keeps its previous endpoints there (the BPF path is not affected)`,
    };
  }

  private outranks(service: string, owner: string, rank: ReadonlyMap<string, number> | undefined): boolean {
    if (!rank) return false;
    const mine = rank.get(service);
    const theirs = rank.get(owner);
    return mine !== undefined && (theirs === undefined || mine < theirs);
  }

  private wait(ks: string, service: string): void {
    let w = this.waiting.get(ks);
    if (!w) this.waiting.set(ks, (w = new Set()));
    w.add(service);
  }

  private own(owner: string, ks: string): void {
    let s = this.byOwner.get(owner);
    if (!s) this.byOwner.set(owner, (s = new Set()));
    s.add(ks);
  }

  private disown(owner: string, ks: string): void {
    const s = this.byOwner.get(owner);
    s?.delete(ks);
    if (s && s.size === 0) this.byOwner.delete(owner);
  }
}

/**
 * Two dataplanes fed the same desired state, the first one's report in
 * charge: the BPF path first (the fallback must always be programmed), the
 * engine second; the engine's problems are added where the BPF path did not
 * report the same frontend.
 */
export class TeeDataplane implements Dataplane {
  constructor(
    private readonly primary: Dataplane,
    private readonly secondary: Dataplane,
  ) {}

  private join(a: SyncReport, b: SyncReport): SyncReport {
    const seen = new Set(a.problems.map((p) => `${p.service}|${p.frontend ?? ''}`));
    return {
      frontendsChanged: a.frontendsChanged,
      problems: [...a.problems, ...b.problems.filter((p) => !seen.has(`${p.service}|${p.frontend ?? ''}`))],
      retry: [...new Set([...a.retry, ...b.retry])],
    };
  }

  syncService(service: string, frontends: readonly Frontend[]): SyncReport {
    return this.join(this.primary.syncService(service, frontends), this.secondary.syncService(service, frontends));
  }

  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport {
    return this.join(this.primary.syncAll(all), this.secondary.syncAll(all));
  }

  setNodeAddresses(ips: readonly string[]): void {
    this.primary.setNodeAddresses(ips);
    this.secondary.setNodeAddresses(ips);
  }
}
