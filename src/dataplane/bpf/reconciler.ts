/**
 * Keeps the BPF service maps equal to the desired Frontends.
 *
 * - Idempotent: what is already in the maps is not written again; a mirror
 *   of the maps, rebuilt from the pinned maps at start, tells.
 * - Make-before-break: a changed backend list is written as a new backend
 *   set (fresh set id) with its Maglev tables, then the frontend is
 *   switched to it in one map update, then the old set and its tables are
 *   deleted. A packet sees the old set or the new one, never a half-written
 *   one.
 * - Maglev (per Service or --lb-algorithm): the set of a service port any of
 *   whose frontends uses Maglev carries a table per backend list it serves
 *   from (cluster-wide; node-local when a traffic policy is Local), sized by
 *   backend count (src/model/maglev.ts). A table that cannot be built or
 *   written (map full) leaves the frontend on random choice, reported.
 * - IDs (service ids, set ids) are restored from the pinned maps, so a
 *   restarted agent keeps them and established connections are untouched.
 * - Failures (a full map) are reported per frontend; the rest is applied.
 *   A frontend whose update fails keeps serving exactly as before (its old
 *   backend set, affinity and conntrack untouched) and is retried on the
 *   next sync.
 * - Two services claiming one address: in a full sync the first in the
 *   order given (the proxier gives oldest first) gets it, also from a
 *   younger owner; between full syncs whoever has it keeps it.
 * - loadBalancerSourceRanges: the prefixes of a service port are written
 *   under its service id before a LoadBalancer frontend is flagged to check
 *   them, and prefixes no longer wanted are removed after the frontends
 *   were switched, so a change never opens a window where nobody (or
 *   everybody) gets in.
 */
import type { Logger } from 'pino';
import { BpfError } from '../../native/index.js';
import type { Backend, Frontend, LbAlgorithm, Protocol } from '../../model/types.js';
import { frontendKey, lbAlgorithmOf } from '../../model/types.js';
import {
  DEFAULT_MAGLEV_SEED,
  DEFAULT_MAGLEV_SIZING,
  MAGLEV_TABLE_SIZES,
  maglevTable,
  maglevTableSize,
  type MaglevSizing,
} from '../../model/maglev.js';
import type { Dataplane, SyncProblem, SyncReport } from '../dataplane.js';
import { emptyReport } from '../dataplane.js';
import {
  BackendFlags,
  FeFlags,
  NodeIpFlags,
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  MAGLEV_CHUNK_BYTES,
  MaglevTable,
  maglevSizeIndex,
  maglevSizeOf,
  SVC_NAME_BYTES,
  type BackendValue,
  type FeKey,
  type FeValue,
  type LbSrcKey,
  type MaglevChunk,
  type MaglevKey,
} from './codecs.js';
import { ConntrackFlusher, type FlushRule } from './conntrack-gc.js';
import { IdAllocator } from './ids.js';
import { serviceMaps, type ServiceMaps } from './family-maps.js';
import { MAP_NAMES, type DatapathMaps } from './loader.js';

/** The Maglev tables of a set: their sizes (0 = none). */
interface Tables {
  m: number;
  mLocal: number;
}
const NO_TABLES: Tables = { m: 0, mLocal: 0 };

interface BackendSet {
  svcId: number;
  content: string;
  backends: BackendValue[];
  clusterCount: number;
  /** '' (no tables), "m<M>/<M local>", or '?' (restored tables of unknown size: rebuilt on the next change) */
  tables: string;
  /** chunks in the Maglev map per table (what deleting the set deletes) */
  chunks: [number, number];
  refs: number;
}

/** Backend selection, for the whole agent. */
export interface LoadBalancing {
  /** For NodePort, LoadBalancer and external IPs whose Service does not choose; cluster IPs stay random unless their Service asks. */
  algorithm: LbAlgorithm;
  maglev: MaglevSizing;
  /** Seed of the backend permutations; the datapath's flow hash uses the same (DatapathConfig maglevSeed). */
  seed: number;
}

export const DEFAULT_LOAD_BALANCING: LoadBalancing = { algorithm: 'random', maglev: DEFAULT_MAGLEV_SIZING, seed: DEFAULT_MAGLEV_SEED };

const tablesKey = (t: Tables): string => (t.m || t.mLocal ? `m${t.m}/${t.mLocal}` : '');
/** Entries one chunk holds: one byte each for sets of up to 256 backends, else two. */
const perChunk = (n: number): number => (n <= 256 ? MAGLEV_CHUNK_BYTES : MAGLEV_CHUNK_BYTES / 2);
const chunksOf = (m: number, n: number): number => (m ? Math.ceil(m / perChunk(n)) : 0);

/** A Maglev table as the map's chunks. */
function tableChunks(setId: number, table: number, ords: Uint16Array, n: number): Array<[MaglevKey, MaglevChunk]> {
  const per = perChunk(n);
  const out: Array<[MaglevKey, MaglevChunk]> = [];
  for (let chunk = 0; chunk * per < ords.length; chunk++) {
    const ord = Buffer.alloc(MAGLEV_CHUNK_BYTES);
    const base = chunk * per;
    const end = Math.min(per, ords.length - base);
    for (let j = 0; j < end; j++) {
      if (per === MAGLEV_CHUNK_BYTES) ord[j] = ords[base + j]!;
      else ord.writeUInt16LE(ords[base + j]!, j * 2);
    }
    out.push([{ setId, table, chunk }, { ord }]);
  }
  return out;
}

function chunkKeys(setId: number, chunks: readonly [number, number]): MaglevKey[] {
  const keys: MaglevKey[] = [];
  for (const [table, count] of [
    [MaglevTable.CLUSTER, chunks[0]],
    [MaglevTable.LOCAL, chunks[1]],
  ] as const) {
    for (let chunk = 0; chunk < count; chunk++) keys.push({ setId, table, chunk });
  }
  return keys;
}

const nameOf = (b: Backend): string => `${b.ip}:${b.port}`;

/** What a service port's frontends ask of its backend sets' tables. */
interface PortLb {
  maglev: boolean;
  /** some Maglev frontend of it serves from node-local endpoints only (a Local traffic policy) */
  local: boolean;
}

interface FeEntry {
  key: FeKey;
  value: FeValue;
  /** "namespace/name" of the owning service, or '' when unknown */
  owner: string;
  label: string;
}

const ENOSPC = 28;
const PROTO_NUMS: Record<Protocol, number> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP, SCTP: IPPROTO_SCTP };
const protoNum = (p: Protocol): number => PROTO_NUMS[p];
const protoName = (n: number): Protocol => (n === IPPROTO_UDP ? 'UDP' : n === IPPROTO_SCTP ? 'SCTP' : 'TCP');
const feKeyStr = (k: FeKey): string => frontendKey({ ip: k.addr, port: k.port, protocol: protoName(k.proto) });
const backendStr = (b: BackendValue): string => `${b.addr}:${b.port}${b.flags & BackendFlags.LOCAL ? 'L' : ''}`;
/** "namespace/name:port/PROTO" -> "namespace/name" */
export const serviceOfPort = (spk: string): string => spk.slice(0, spk.lastIndexOf(':'));

function toBackend(b: Backend): BackendValue {
  return { addr: b.ip, port: b.port, flags: b.local ? BackendFlags.LOCAL : 0 };
}

function flagsOf(f: Frontend): number {
  let flags = 0;
  if (f.kind !== 'ClusterIP') flags |= FeFlags.EXTERNAL;
  if (f.kind === 'NodePort') flags |= FeFlags.NODEPORT;
  if (f.externalLocal) flags |= FeFlags.EXT_LOCAL;
  if (f.internalLocal) flags |= FeFlags.INT_LOCAL;
  if (f.kind === 'LoadBalancer' && f.sourceRanges !== undefined) flags |= FeFlags.SRC_RANGE;
  return flags;
}

/** "203.0.113.0/25" under a service port id, as the LPM map keys it. */
function lbSrcKeyOf(svcId: number, cidr: string): LbSrcKey {
  const [addr, bits] = cidr.split('/');
  return { prefixlen: 32 + Number(bits), svcId, addr: addr! };
}

/**
 * Names were cut to 127 bytes before struct svc_name grew: a name of
 * exactly that length read from the pinned map may be the start of a
 * longer one, and is matched to it on the first full sync.
 */
export const LEGACY_SVC_NAME_BYTES = 127;

/** What to tell an operator about each map that can fill up. */
const MAP_HELP: Record<string, { what: string; felix: string; flag: string }> = {
  [MAP_NAMES.slots]: { what: 'backend', felix: 'bpfMapSizeNATBackend', flag: '--map-size-nat-backend' },
  [MAP_NAMES.fe]: { what: 'frontend', felix: 'bpfMapSizeNATFrontend', flag: '--map-size-nat-frontend' },
  [MAP_NAMES.svcNames]: { what: 'service-name', felix: 'bpfMapSizeNATFrontend', flag: '--map-size-nat-frontend' },
  [MAP_NAMES.slots6]: { what: 'IPv6 backend', felix: 'bpfMapSizeNATBackend', flag: '--map-size-nat-backend' },
  [MAP_NAMES.fe6]: { what: 'IPv6 frontend', felix: 'bpfMapSizeNATFrontend', flag: '--map-size-nat-frontend' },
};

const sameFe = (a: FeValue, b: FeValue): boolean =>
  a.svcId === b.svcId &&
  a.setId === b.setId &&
  a.clusterCount === b.clusterCount &&
  a.localCount === b.localCount &&
  a.flags === b.flags &&
  a.maglevSize === b.maglevSize &&
  a.maglevSizeLocal === b.maglevSizeLocal &&
  a.affinityTimeout === b.affinityTimeout;

export interface ReconcilerStats {
  frontends: number;
  backendSets: number;
  servicePorts: number;
  slots: number;
}

export class BpfReconciler implements Dataplane {
  private readonly fes = new Map<string, FeEntry>();
  private readonly byOwner = new Map<string, Set<string>>();
  private readonly svcIds = new Map<string, number>();
  private readonly svcNames = new Map<number, string>();
  private readonly svcIdAlloc = new IdAllocator();
  private readonly sets = new Map<number, BackendSet>();
  private readonly setByContent = new Map<string, number>();
  /** set ids of each service port: a change looks at its own sets only */
  private readonly setsBySvc = new Map<number, Set<number>>();
  /** service ports that have (had) ClientIP affinity: only they can leave affinity entries */
  private readonly affinitySvcs = new Set<number>();
  /** Told the backends (address, port) that left a service port after a sync (socket LB: its socket destroy). */
  onBackendsGone: ((backends: Array<{ addr: string; port: number }>) => void) | undefined;
  private readonly setIdAlloc = new IdAllocator();
  /** services that wanted a frontend someone else owned */
  private readonly waiting = new Map<string, Set<string>>();
  /** restored names that may have been cut short (svc id -> name) */
  private readonly maybeTruncated = new Map<number, string>();
  /** loadBalancerSourceRanges written, by service port id ("203.0.113.0/25") */
  private readonly srcRanges = new Map<number, Set<string>>();
  /** the service port ids in srcRanges of each service ("namespace/name") */
  private readonly srcBySvc = new Map<string, Set<number>>();
  private slotCount = 0;
  /** UDP and SCTP conntrack of removed endpoints: cleared in native passes off the event loop */
  private readonly flushers: ReadonlyArray<{ protocol: 'UDP' | 'SCTP'; flusher: ConntrackFlusher }>;
  private readonly pendingFlushes = new Set<Promise<void>>();

  /** IPv4 and IPv6 maps behind one view: each write goes to its address's family (family-maps.ts). */
  private readonly maps: ServiceMaps;

  constructor(
    maps: DatapathMaps,
    private readonly log?: Logger,
    private lb: LoadBalancing = DEFAULT_LOAD_BALANCING,
  ) {
    this.maps = serviceMaps(maps);
    this.flushers = [
      { protocol: 'UDP', flusher: new ConntrackFlusher(maps, IPPROTO_UDP) },
      { protocol: 'SCTP', flusher: new ConntrackFlusher(maps, IPPROTO_SCTP) },
    ];
    this.restore();
  }

  /**
   * Another backend choice or Maglev sizing: later syncs build tables with it
   * (a full sync rebuilds every table whose size changes, make-before-break).
   */
  setLoadBalancing(lb: LoadBalancing): void {
    this.lb = lb;
  }

  /**
   * Resolves when the UDP and SCTP conntrack flushes queued by earlier syncs are
   * done (each finishes shortly after its sync; the sync does not wait).
   */
  async flushed(): Promise<void> {
    while (this.pendingFlushes.size) await Promise.all([...this.pendingFlushes]);
  }

  /** Rebuild the mirror from the pinned maps (after an agent restart). */
  private restore(): void {
    for (const [k, v] of this.maps.svcNames.entries()) {
      this.svcIds.set(v.name, k.v);
      this.svcNames.set(k.v, v.name);
      this.svcIdAlloc.restore(k.v);
      if (Buffer.byteLength(v.name) === LEGACY_SVC_NAME_BYTES) this.maybeTruncated.set(k.v, v.name);
    }
    const slotsBySet = new Map<number, Array<[number, BackendValue]>>();
    for (const [k, v] of this.maps.slots.entries()) {
      let l = slotsBySet.get(k.setId);
      if (!l) slotsBySet.set(k.setId, (l = []));
      l.push([k.index, v]);
    }
    // Per set and table: chunk numbers up to (what deleting it deletes), and chunks found.
    const chunksBySet = new Map<number, [number, number]>();
    const foundBySet = new Map<number, [number, number]>();
    for (const k of this.maps.maglev.keys()) {
      let c = chunksBySet.get(k.setId);
      let f = foundBySet.get(k.setId);
      if (!c) chunksBySet.set(k.setId, (c = [0, 0]));
      if (!f) foundBySet.set(k.setId, (f = [0, 0]));
      const i = k.table === MaglevTable.LOCAL ? 1 : 0;
      c[i] = Math.max(c[i], k.chunk + 1);
      f[i]++;
    }
    const tablesOfSet = new Map<number, Tables>();
    for (const [, value] of this.maps.fe.entries()) {
      if (value.flags & FeFlags.MAGLEV) {
        tablesOfSet.set(value.setId, { m: maglevSizeOf(value.maglevSize), mLocal: maglevSizeOf(value.maglevSizeLocal) });
      }
    }
    for (const [key, value] of this.maps.fe.entries()) {
      const spk = this.svcNames.get(value.svcId);
      const ks = feKeyStr(key);
      const owner = spk ? serviceOfPort(spk) : '';
      this.fes.set(ks, { key, value, owner, label: ks });
      if (owner) this.own(owner, ks);
      this.svcIdAlloc.restore(value.svcId);
      if (value.affinityTimeout) this.affinitySvcs.add(value.svcId);
      let set = this.sets.get(value.setId);
      if (!set) {
        const backends = (slotsBySet.get(value.setId) ?? []).sort((a, b) => a[0] - b[0]).map((x) => x[1]);
        const content = this.contentOf(backends, value.clusterCount);
        const chunks = chunksBySet.get(value.setId) ?? [0, 0];
        const found = foundBySet.get(value.setId) ?? [0, 0];
        const t = tablesOfSet.get(value.setId) ?? NO_TABLES;
        // Tables whose chunks are not all there (an interrupted write) or
        // that no frontend names are rebuilt when the set is next wanted.
        const want = [chunksOf(t.m, value.clusterCount), chunksOf(t.mLocal, backends.length - value.clusterCount)];
        const whole = want.every((n, i) => chunks[i] === n && found[i] === n);
        const tables = whole ? tablesKey(t) : '?';
        set = { svcId: value.svcId, content, backends, clusterCount: value.clusterCount, tables, chunks, refs: 0 };
        this.addSet(value.setId, set);
        this.setByContent.set(`${value.svcId}|${content}|${tables}`, value.setId);
        this.setIdAlloc.restore(value.setId);
        this.slotCount += backends.length;
      }
      set.refs++;
    }
    for (const k of this.maps.lbSrcs.keys()) {
      let r = this.srcRanges.get(k.svcId);
      if (!r) {
        this.srcRanges.set(k.svcId, (r = new Set()));
        this.indexSources(k.svcId);
      }
      r.add(`${k.addr}/${k.prefixlen - 32}`);
    }
    const checked = new Set([...this.fes.values()].filter((e) => e.value.flags & FeFlags.SRC_RANGE).map((e) => e.value.svcId));
    for (const svcId of [...this.srcRanges.keys()]) if (!checked.has(svcId)) this.dropSources(svcId);
    // Slots and tables no frontend points at are leftovers of an interrupted sync.
    for (const [setId, slots] of slotsBySet) {
      if (this.sets.has(setId)) continue;
      this.maps.slots.deleteMany(slots.map(([index]) => ({ setId, index })));
    }
    for (const [setId, chunks] of chunksBySet) {
      if (!this.sets.has(setId)) this.deleteTables(setId, chunks);
    }
    this.svcIdAlloc.settle();
    this.setIdAlloc.settle();
    this.log?.info(
      { frontends: this.fes.size, backendSets: this.sets.size, servicePorts: this.svcIds.size },
      'adopted service state from pinned maps',
    );
  }

  /** The id of a service port ("namespace/name:port/PROTO") in the maps, if it has one (the AF_XDP engine uses the same). */
  svcIdOf(servicePort: string): number | undefined {
    return this.svcIds.get(servicePort);
  }

  stats(): ReconcilerStats {
    return { frontends: this.fes.size, backendSets: this.sets.size, servicePorts: this.svcIds.size, slots: this.slotCount };
  }

  /** The service a service port id with source ranges belongs to, for pruneSources. */
  private indexSources(svcId: number, drop = false): void {
    const spk = this.svcNames.get(svcId);
    if (spk === undefined) return; // nameless: collected with its frontends
    const svc = serviceOfPort(spk);
    let ids = this.srcBySvc.get(svc);
    if (drop) {
      ids?.delete(svcId);
      if (ids?.size === 0) this.srcBySvc.delete(svc);
      return;
    }
    if (!ids) this.srcBySvc.set(svc, (ids = new Set()));
    ids.add(svcId);
  }

  /** Write the prefixes of `ranges` that are not written yet under svcId. */
  private addSources(svcId: number, ranges: readonly string[]): void {
    let have = this.srcRanges.get(svcId);
    const add = ranges.filter((r) => !have?.has(r));
    if (add.length === 0) return;
    try {
      this.maps.lbSrcs.setMany(add.map((r) => [lbSrcKeyOf(svcId, r), { v: 1 }] as const));
    } catch (e) {
      // A full map stops the batch part way: take back what went in, so the
      // map holds exactly what the mirror says (the frontend keeps its old state).
      this.maps.lbSrcs.deleteMany(add.map((r) => lbSrcKeyOf(svcId, r)));
      throw e;
    }
    if (!have) {
      this.srcRanges.set(svcId, (have = new Set()));
      this.indexSources(svcId);
    }
    for (const r of add) have.add(r);
  }

  /** Remove the prefixes under svcId that `keep` does not list (all of them without it). */
  private dropSources(svcId: number, keep?: ReadonlySet<string>): void {
    const have = this.srcRanges.get(svcId);
    if (!have) return;
    const gone = [...have].filter((r) => !keep?.has(r));
    if (gone.length === 0) return;
    this.maps.lbSrcs.deleteMany(gone.map((r) => lbSrcKeyOf(svcId, r)));
    for (const r of gone) have.delete(r);
    if (have.size === 0) {
      this.indexSources(svcId, true);
      this.srcRanges.delete(svcId);
    }
  }

  /**
   * After a service's frontends were switched: its service ports' prefixes
   * that no frontend asks for any more. A service port one of whose
   * frontends kept its old state (a failed update) keeps its prefixes too.
   */
  private pruneSources(service: string, want: ReadonlyMap<number, ReadonlySet<string>>, keepAll: ReadonlySet<number>): void {
    for (const svcId of [...(this.srcBySvc.get(service) ?? [])]) {
      if (keepAll.has(svcId)) continue;
      try {
        this.dropSources(svcId, want.get(svcId) ?? new Set());
      } catch (e) {
        this.log?.warn(
          { service, svcId, map: MAP_NAMES.lbSrcs },
          `cannot remove loadBalancerSourceRanges ${service} no longer lists: ${e instanceof Error ? e.message : String(e)}; retried on the next sync`,
        );
      }
    }
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

  private contentOf(backends: readonly BackendValue[], clusterCount: number): string {
    return `${backends.slice(0, clusterCount).map(backendStr).join(',')}#${backends.slice(clusterCount).map(backendStr).join(',')}`;
  }

  private svcIdFor(spk: string): number {
    let id = this.svcIds.get(spk);
    if (id !== undefined) return id;
    if (Buffer.byteLength(spk) >= SVC_NAME_BYTES) {
      // Never cut a name: a restarted agent would not recognise it.
      throw new Error(
        `service port name "${spk.slice(0, 60)}…" is ${Buffer.byteLength(spk)} bytes, more than the ${SVC_NAME_BYTES - 1} the service-name map holds`,
      );
    }
    id = this.svcIdAlloc.allocate();
    try {
      this.maps.svcNames.set({ v: id }, { name: spk });
    } catch (e) {
      this.svcIdAlloc.release(id);
      throw e;
    }
    this.svcIds.set(spk, id);
    this.svcNames.set(id, spk);
    return id;
  }

  /**
   * The set holding exactly these backends (and Maglev tables) for this
   * service port, written if new: slots first, then the tables that point
   * into them; the caller then points the frontend at it.
   */
  private setFor(
    svcId: number,
    cluster: readonly Backend[],
    local: readonly Backend[],
    tables: Tables,
  ): { setId: number; created: boolean } {
    const backends = [...cluster.map(toBackend), ...local.map(toBackend)];
    const content = this.contentOf(backends, cluster.length);
    const tk = tablesKey(tables);
    const ck = `${svcId}|${content}|${tk}`;
    const existing = this.setByContent.get(ck);
    if (existing !== undefined) return { setId: existing, created: false };
    const setId = this.setIdAlloc.allocate();
    const chunks: [number, number] = [chunksOf(tables.m, cluster.length), chunksOf(tables.mLocal, local.length)];
    try {
      this.maps.slots.setMany(backends.map((b, index) => [{ setId, index }, b] as const));
      const entries = [
        ...(tables.m
          ? tableChunks(setId, MaglevTable.CLUSTER, maglevTable(cluster.map(nameOf), tables.m, this.lb.seed), cluster.length)
          : []),
        ...(tables.mLocal
          ? tableChunks(setId, MaglevTable.LOCAL, maglevTable(local.map(nameOf), tables.mLocal, this.lb.seed), local.length)
          : []),
      ];
      if (entries.length) this.maps.maglev.setMany(entries);
    } catch (e) {
      this.maps.slots.deleteMany(backends.map((_, index) => ({ setId, index })));
      this.deleteTables(setId, chunks);
      this.setIdAlloc.release(setId);
      throw e;
    }
    this.addSet(setId, { svcId, content, backends, clusterCount: cluster.length, tables: tk, chunks, refs: 0 });
    this.setByContent.set(ck, setId);
    this.slotCount += backends.length;
    return { setId, created: true };
  }

  /** Backend selection of each service port among these frontends. */
  private portLb(frontends: readonly Frontend[]): Map<string, PortLb> {
    const out = new Map<string, PortLb>();
    for (const f of frontends) {
      let p = out.get(f.servicePort);
      if (!p) out.set(f.servicePort, (p = { maglev: false, local: false }));
      if (lbAlgorithmOf(f, this.lb.algorithm) !== 'maglev') continue;
      p.maglev = true;
      if (f.externalLocal || f.internalLocal) p.local = true;
    }
    return out;
  }

  /** The tables a frontend's set needs, or why it cannot have them. */
  private tablesFor(f: Frontend, p: PortLb): { tables: Tables; problem?: string } {
    if (!p.maglev) return { tables: NO_TABLES };
    const nc = f.clusterBackends.length;
    const nl = p.local ? f.localBackends.length : 0;
    const m = nc ? maglevTableSize(nc, this.lb.maglev) : 0;
    const mLocal = nl ? maglevTableSize(nl, this.lb.maglev) : 0;
    if (m === undefined || mLocal === undefined) {
      const max = MAGLEV_TABLE_SIZES[MAGLEV_TABLE_SIZES.length - 1];
      return {
        tables: NO_TABLES,
        problem: `${Math.max(nc, nl)} endpoints are more than a Maglev table holds (${max}); new connections pick their endpoint at random`,
      };
    }
    return { tables: { m, mLocal } };
  }

  private deleteTables(setId: number, chunks: readonly [number, number]): void {
    if (chunks[0] || chunks[1]) this.maps.maglev.deleteMany(chunkKeys(setId, chunks));
  }

  private addSet(setId: number, s: BackendSet): void {
    this.sets.set(setId, s);
    let ids = this.setsBySvc.get(s.svcId);
    if (!ids) this.setsBySvc.set(s.svcId, (ids = new Set()));
    ids.add(setId);
  }

  private unref(setId: number, freed: Set<number>): void {
    const s = this.sets.get(setId);
    if (s && --s.refs <= 0) freed.add(setId);
  }

  syncService(service: string, frontends: readonly Frontend[]): SyncReport {
    return this.sync(service, frontends);
  }

  /**
   * `rank` (full syncs): each service's place in the order given; a
   * frontend owned by a service ranked after this one changes hands.
   */
  private sync(service: string, frontends: readonly Frontend[], rank?: ReadonlyMap<string, number>): SyncReport {
    const report = emptyReport();
    const freedSets = new Set<number>();
    const wanted = new Set<string>();
    const touchedSvcIds = new Set<number>();
    const lbOf = this.portLb(frontends);
    /** source ranges this service's ports ask for, and ports whose old ranges stay (a frontend kept its old state) */
    const wantSrc = new Map<number, Set<string>>();
    const keepSrc = new Set<number>();

    for (const f of frontends) {
      const ks = frontendKey(f);
      const label = `${ks} (${f.kind})`;
      if (wanted.has(ks)) continue; // the same address listed twice (e.g. clusterIP = externalIP)
      const cur = this.fes.get(ks);
      const other = cur && cur.owner && cur.owner !== service ? cur.owner : undefined;
      if (other !== undefined && !this.outranks(service, other, rank)) {
        report.problems.push({
          service,
          frontend: label,
          message:
            `${label} is already served by ${other}; skipped until that service lets it go ` +
            '(of two services claiming one address, the older keeps it: creationTimestamp, then first seen)',
        });
        this.wait(ks, service);
        continue;
      }
      wanted.add(ks);
      let svcId: number | undefined;
      let created: number | undefined;
      const hadSvcId = this.svcIds.has(f.servicePort);
      try {
        svcId = this.svcIdFor(f.servicePort);
        if (f.kind === 'LoadBalancer' && f.sourceRanges !== undefined) {
          // Before the frontend is flagged to check them (make-before-break).
          let w = wantSrc.get(svcId);
          if (!w) wantSrc.set(svcId, (w = new Set()));
          for (const r of f.sourceRanges) w.add(r);
          this.addSources(svcId, f.sourceRanges);
        }
        const want = this.tablesFor(f, lbOf.get(f.servicePort)!);
        if (want.problem) report.problems.push({ service, frontend: label, message: want.problem });
        let tables = want.tables;
        let set: { setId: number; created: boolean };
        try {
          set = this.setFor(svcId, f.clusterBackends, f.localBackends, tables);
        } catch (e) {
          if (!(e instanceof BpfError && e.isMapFull && e.op.includes(MAP_NAMES.maglev))) throw e;
          report.problems.push({
            service,
            frontend: label,
            mapFull: true,
            message:
              `the Maglev table map ${MAP_NAMES.maglev} is full (${this.maps.maglev.maxEntries} chunks of ${MAGLEV_CHUNK_BYTES} bytes): ` +
              `${label} serves with random endpoint choice until its tables fit; retried on the next sync. ` +
              'Smaller tables: a lower --maglev-max-endpoints-per-service (FelixConfiguration bpfMaglevMaxEndpointsPerService)',
          });
          tables = NO_TABLES;
          set = this.setFor(svcId, f.clusterBackends, f.localBackends, tables);
        }
        const setId = set.setId;
        if (set.created) created = setId;
        const maglev = lbAlgorithmOf(f, this.lb.algorithm) === 'maglev' && (tables.m > 0 || tables.mLocal > 0);
        const key: FeKey = { addr: f.ip, port: f.port, proto: protoNum(f.protocol) };
        const value: FeValue = {
          svcId,
          setId,
          clusterCount: f.clusterBackends.length,
          localCount: f.localBackends.length,
          flags: flagsOf(f) | (maglev ? FeFlags.MAGLEV : 0),
          maglevSize: maglev ? maglevSizeIndex(tables.m) : 0,
          maglevSizeLocal: maglev ? maglevSizeIndex(tables.mLocal) : 0,
          affinityTimeout: f.affinityTimeout,
        };
        if (cur && sameFe(cur.value, value)) {
          if (!cur.owner) {
            cur.owner = service;
            this.own(service, ks);
          }
          continue;
        }
        this.maps.fe.set(key, value);
        if (value.affinityTimeout) this.affinitySvcs.add(svcId);
        this.sets.get(setId)!.refs++;
        if (cur) {
          this.unref(cur.value.setId, freedSets);
          if (cur.value.svcId !== svcId) touchedSvcIds.add(cur.value.svcId);
        }
        if (cur && cur.value.setId !== setId) touchedSvcIds.add(svcId);
        if (other !== undefined) {
          this.disown(other, ks);
          this.wait(ks, other);
          this.log?.warn(
            { frontend: label, service, from: other },
            `${label} now served by ${service}, which is older than ${other} (creationTimestamp, then first seen); ${other} waits for it`,
          );
        }
        this.fes.set(ks, { key, value, owner: service, label });
        this.own(service, ks);
        report.frontendsChanged++;
      } catch (e) {
        // Nothing of the old state was touched: a frontend this service had
        // keeps serving with its old backends (affinity and conntrack too).
        const kept = !!cur && cur.owner === service;
        if (!kept) wanted.delete(ks);
        if (kept) keepSrc.add(cur.value.svcId);
        if (created !== undefined) this.discardSet(created);
        if (svcId !== undefined && !hadSvcId && !this.setsBySvc.get(svcId)?.size) this.releaseSvcId(svcId);
        report.problems.push(this.problem(service, label, e, kept));
      }
    }

    // Frontends this service no longer has.
    for (const ks of [...(this.byOwner.get(service) ?? [])]) {
      if (wanted.has(ks)) continue;
      const cur = this.fes.get(ks)!;
      try {
        this.maps.fe.delete(cur.key);
      } catch (e) {
        report.problems.push(this.problem(service, cur.label, e, true));
        continue;
      }
      this.fes.delete(ks);
      this.disown(service, ks);
      this.unref(cur.value.setId, freedSets);
      touchedSvcIds.add(cur.value.svcId);
      report.frontendsChanged++;
      const w = this.waiting.get(ks);
      if (w) {
        report.retry.push(...w);
        this.waiting.delete(ks);
      }
    }

    this.pruneSources(service, wantSrc, keepSrc);
    this.collect(freedSets, touchedSvcIds);
    return report;
  }

  /** Whether `service` comes before `owner` in a full sync's order. */
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

  /** A set just written that no frontend took (its frontend's update failed). */
  private discardSet(setId: number): void {
    const s = this.sets.get(setId)!;
    this.maps.slots.deleteMany(s.backends.map((_, index) => ({ setId, index })));
    this.deleteTables(setId, s.chunks);
    this.sets.delete(setId);
    this.setsBySvc.get(s.svcId)?.delete(setId);
    if (this.setsBySvc.get(s.svcId)?.size === 0) this.setsBySvc.delete(s.svcId);
    this.setByContent.delete(`${s.svcId}|${s.content}|${s.tables}`);
    this.setIdAlloc.release(setId);
    this.slotCount -= s.backends.length;
  }

  /** A service id just allocated that nothing uses (nothing can point at it yet). */
  private releaseSvcId(svcId: number): void {
    const spk = this.svcNames.get(svcId);
    this.maps.svcNames.delete({ v: svcId });
    if (spk) this.svcIds.delete(spk);
    this.svcNames.delete(svcId);
    this.svcIdAlloc.release(svcId);
  }

  /**
   * Names restored from a map of the old layout may have been cut at 127
   * bytes: give each the one wanted name it is the start of, so the
   * upgrade changes no frontend.
   */
  private adoptTruncatedNames(all: ReadonlyMap<string, readonly Frontend[]>): void {
    if (this.maybeTruncated.size === 0) return;
    const wanted = new Set<string>();
    for (const fes of all.values()) for (const f of fes) wanted.add(f.servicePort);
    for (const [svcId, cut] of this.maybeTruncated) {
      if (wanted.has(cut)) continue; // a name of exactly that length
      const full = [...wanted].filter((w) => w.startsWith(cut) && !this.svcIds.has(w));
      if (full.length !== 1) continue;
      const name = full[0]!;
      this.maps.svcNames.set({ v: svcId }, { name });
      this.svcIds.delete(cut);
      this.svcIds.set(name, svcId);
      this.svcNames.set(svcId, name);
      const owner = serviceOfPort(name);
      for (const [ks, e] of this.fes) {
        if (e.value.svcId !== svcId) continue;
        if (e.owner) this.disown(e.owner, ks);
        e.owner = owner;
        this.own(owner, ks);
      }
      this.log?.info(
        { svcId, name },
        `service name restored in full (it had been cut to ${LEGACY_SVC_NAME_BYTES} bytes by an earlier version)`,
      );
    }
    this.maybeTruncated.clear();
  }

  /** Delete sets nobody uses any more (after the switch: make-before-break),
   * forget service ids nobody uses, and drop affinity / UDP conntrack that
   * points at backends a service no longer has. */
  private collect(freedSets: Set<number>, touchedSvcIds: Set<number>): void {
    const removedBackends = new Map<number, Set<string>>();
    for (const setId of freedSets) {
      const s = this.sets.get(setId);
      if (!s || s.refs > 0) continue;
      this.maps.slots.deleteMany(s.backends.map((_, index) => ({ setId, index })));
      this.deleteTables(setId, s.chunks);
      this.sets.delete(setId);
      this.setsBySvc.get(s.svcId)?.delete(setId);
      this.setByContent.delete(`${s.svcId}|${s.content}|${s.tables}`);
      this.setIdAlloc.release(setId);
      this.slotCount -= s.backends.length;
      let r = removedBackends.get(s.svcId);
      if (!r) removedBackends.set(s.svcId, (r = new Set()));
      for (const b of s.backends) r.add(`${b.addr}:${b.port}`);
      touchedSvcIds.add(s.svcId);
    }
    // What each touched service port still uses.
    const stillUsed = new Map<number, Set<string>>();
    const svcInUse = new Set<number>();
    for (const svcId of touchedSvcIds) {
      for (const setId of this.setsBySvc.get(svcId) ?? []) {
        const s = this.sets.get(setId)!;
        if (s.refs <= 0) continue;
        svcInUse.add(svcId);
        let u = stillUsed.get(svcId);
        if (!u) stillUsed.set(svcId, (u = new Set()));
        for (const b of s.backends) u.add(`${b.addr}:${b.port}`);
      }
    }
    const gone = new Map<number, Set<string>>();
    for (const [svcId, removed] of removedBackends) {
      const used = stillUsed.get(svcId) ?? new Set();
      const g = new Set([...removed].filter((b) => !used.has(b)));
      if (g.size > 0) gone.set(svcId, g);
    }
    const deadSvcIds: number[] = [];
    for (const svcId of touchedSvcIds) {
      if (svcInUse.has(svcId)) continue;
      deadSvcIds.push(svcId);
    }
    const flushing = gone.size > 0 || deadSvcIds.length > 0 ? this.flushStale(gone, new Set(deadSvcIds)) : false;
    if (gone.size > 0 && this.onBackendsGone) {
      const all = new Set([...gone.values()].flatMap((g) => [...g]));
      this.onBackendsGone(
        [...all].map((b) => {
          const i = b.lastIndexOf(':');
          return { addr: b.slice(0, i), port: Number(b.slice(i + 1)) };
        }),
      );
    }
    for (const svcId of deadSvcIds) {
      this.setsBySvc.delete(svcId);
      this.affinitySvcs.delete(svcId);
      this.dropSources(svcId);
      const spk = this.svcNames.get(svcId);
      this.maps.svcNames.delete({ v: svcId });
      if (spk) this.svcIds.delete(spk);
      this.svcNames.delete(svcId);
      // Its conntrack entries are cleared by svc id: the id is not handed
      // to another service port before that is done.
      if (!flushing) this.svcIdAlloc.release(svcId);
    }
  }

  /**
   * Affinity entries and UDP and SCTP conntrack entries that lead to
   * backends a service port no longer has (kube-proxy clears UDP conntrack
   * the same way; TCP connections are left to end on their own). SCTP goes
   * further than kube-proxy on purpose: SCTP peers often keep a fixed port,
   * and a new association's INIT from it would otherwise follow the old
   * entry to the removed endpoint until the timeout. The conntrack part
   * is queued to native passes over the map (it can hold 512K entries) and
   * ends shortly after this sync; returns whether one was queued (the dead
   * service ids are released when it ends).
   */
  private flushStale(gone: Map<number, Set<string>>, dead: Set<number>): boolean {
    const isGone = (svcId: number, be: string) => dead.has(svcId) || !!gone.get(svcId)?.has(be);
    const affected = [...gone.keys(), ...dead];
    // Each scan dumps a whole map: only when something in it can be stale.
    if (affected.some((id) => this.affinitySvcs.has(id))) {
      const aff = this.maps.affinity
        .entries()
        .filter(([k, v]) => isGone(k.svcId, `${v.backend.addr}:${v.backend.port}`))
        .map(([k]) => k);
      if (aff.length) this.maps.affinity.deleteMany(aff);
    }
    const flushers = this.flushers.filter((f) => affected.some((id) => this.svcNames.get(id)?.endsWith(`/${f.protocol}`)));
    if (!flushers.length) return false;
    const rules: FlushRule[] = [...dead].map((svcId) => ({ svcId }));
    for (const [svcId, bes] of gone) {
      if (dead.has(svcId)) continue;
      for (const be of bes) {
        const i = be.lastIndexOf(':');
        rules.push({ svcId, backend: { addr: be.slice(0, i), port: Number(be.slice(i + 1)) } });
      }
    }
    const names = affected.map((id) => this.svcNames.get(id) ?? `svc id ${id}`);
    const timeout = {
      UDP: 'the UDP conntrack timeout (bpfConntrackTimeouts.UDPTimeout) ends',
      SCTP: 'the TCP timeouts of bpfConntrackTimeouts (SCTP associations use them) end',
    };
    const passes = flushers.map(({ protocol, flusher }) =>
      flusher.flush(rules).then(
        (r) => {
          if (r.deleted)
            this.log?.debug(
              { entries: r.deleted, scanned: r.scanned, ms: Math.round(r.ms), servicePorts: names },
              `cleared ${protocol} conntrack entries of removed endpoints`,
            );
        },
        (e: unknown) => {
          this.log?.error(
            { servicePorts: names, map: this.maps.ct.name },
            `cannot clear the ${protocol} conntrack entries of removed endpoints: ${e instanceof Error ? e.message : String(e)}; ` +
              `their flows keep going to the removed endpoints until ${timeout[protocol]} them`,
          );
        },
      ),
    );
    const p = Promise.all(passes)
      .then(() => undefined)
      .finally(() => {
        for (const svcId of dead) this.svcIdAlloc.release(svcId);
        this.pendingFlushes.delete(p);
      });
    this.pendingFlushes.add(p);
    return true;
  }

  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport {
    const report = emptyReport();
    const merge = (r: SyncReport) => {
      report.frontendsChanged += r.frontendsChanged;
      report.problems.push(...r.problems);
      report.retry.push(...r.retry);
    };
    this.adoptTruncatedNames(all);
    // Remove first, so frontends that move between services are free.
    for (const owner of [...this.byOwner.keys()]) if (!all.has(owner)) merge(this.syncService(owner, []));
    // Frontends with no known owner (names lost): remove.
    const orphans = [...this.fes.entries()].filter(([, e]) => !e.owner);
    if (orphans.length) {
      const freed = new Set<number>();
      const touched = new Set<number>();
      for (const [ks, e] of orphans) {
        this.maps.fe.delete(e.key);
        this.fes.delete(ks);
        this.unref(e.value.setId, freed);
        touched.add(e.value.svcId);
        report.frontendsChanged++;
      }
      this.collect(freed, touched);
    }
    // In the order given: the proxier gives oldest first, so of two services
    // claiming one address the older gets it, on a fresh start as later.
    const rank = new Map([...all.keys()].map((k, i) => [k, i]));
    for (const [svc, fes] of all) merge(this.sync(svc, fes, rank));
    report.retry = [];
    return report;
  }

  /**
   * The node's addresses (hairpin, host-network endpoints, martian sources,
   * SNAT fallbacks all need every one of them) and the ones NodePort
   * answers on (--nodeport-addresses): each address's value says which.
   */
  setNodeAddresses(ips: readonly string[], nodePort: readonly string[] = ips): void {
    const np = new Set(nodePort);
    const want = new Map(ips.map((ip) => [ip, np.has(ip) ? NodeIpFlags.NODEPORT : 0]));
    const have = new Map(this.maps.nodeIps.entries().map(([k, v]) => [k.addr, v.v]));
    for (const [ip, v] of want) if (have.get(ip) !== v) this.maps.nodeIps.set({ addr: ip }, { v });
    for (const ip of have.keys()) if (!want.has(ip)) this.maps.nodeIps.delete({ addr: ip });
  }

  private problem(service: string, frontend: string, e: unknown, kept: boolean): SyncProblem {
    const outcome = kept
      ? `${frontend} keeps its previous state: old endpoints keep serving (affinity and conntrack untouched); the change is retried on the next sync`
      : `${frontend} is not programmed; retried on the next sync`;
    // An LPM trie says ENOSPC where a hash map says E2BIG.
    if (e instanceof BpfError && e.op.includes(MAP_NAMES.lbSrcs) && (e.isMapFull || e.errno === ENOSPC)) {
      return {
        service,
        frontend,
        mapFull: true,
        message:
          `the loadBalancerSourceRanges map ${MAP_NAMES.lbSrcs} is full (${this.maps.lbSrcs.maxEntries} prefixes, every range of every LoadBalancer service port): ` +
          `${outcome}. Fewer or wider ranges make room`,
      };
    }
    if (e instanceof BpfError && e.isMapFull) {
      const name = Object.values(MAP_NAMES).find((n) => e.op.includes(n)) ?? '';
      const map = (Object.values(this.maps) as Array<{ name: string; maxEntries: number }>).find((m) => m.name === name);
      const help = MAP_HELP[name] ?? { what: 'service', felix: 'bpfMapSizeNATFrontend', flag: '--map-size-nat-frontend' };
      return {
        service,
        frontend,
        mapFull: true,
        message:
          `the ${help.what} map ${name || '(unknown)'} is full${map ? ` (${map.maxEntries} entries)` : ''}: ${outcome}. ` +
          `Raise ${help.felix} (FelixConfiguration) or ${help.flag}; a map already pinned keeps its size until it is created again`,
      };
    }
    return { service, frontend, message: `${e instanceof Error ? e.message : String(e)}; ${outcome}` };
  }
}
