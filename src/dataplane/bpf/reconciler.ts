/**
 * Keeps the BPF service maps equal to the desired Frontends.
 *
 * - Idempotent: what is already in the maps is not written again; a mirror
 *   of the maps, rebuilt from the pinned maps at start, tells.
 * - Make-before-break: a changed backend list is written as a new backend
 *   set (fresh set id), then the frontend is switched to it in one map
 *   update, then the old set is deleted. A packet sees the old set or the
 *   new one, never a half-written one.
 * - IDs (service ids, set ids) are restored from the pinned maps, so a
 *   restarted agent keeps them and established connections are untouched.
 * - Failures (a full map) are reported per frontend; the rest is applied.
 *   A frontend whose update fails keeps serving exactly as before (its old
 *   backend set, affinity and conntrack untouched) and is retried on the
 *   next sync.
 * - Two services claiming one address: in a full sync the first in the
 *   order given (the proxier gives oldest first) gets it, also from a
 *   younger owner; between full syncs whoever has it keeps it.
 */
import type { Logger } from 'pino';
import { BpfError } from '../../native/index.js';
import type { Backend, Frontend } from '../../model/types.js';
import { frontendKey } from '../../model/types.js';
import type { Dataplane, SyncProblem, SyncReport } from '../dataplane.js';
import { emptyReport } from '../dataplane.js';
import { BackendFlags, FeFlags, IPPROTO_TCP, IPPROTO_UDP, SVC_NAME_BYTES, type BackendValue, type FeKey, type FeValue } from './codecs.js';
import { ConntrackFlusher, type FlushRule } from './conntrack-gc.js';
import { IdAllocator } from './ids.js';
import { MAP_NAMES, type DatapathMaps } from './loader.js';

interface BackendSet {
  svcId: number;
  content: string;
  backends: BackendValue[];
  refs: number;
}

interface FeEntry {
  key: FeKey;
  value: FeValue;
  /** "namespace/name" of the owning service, or '' when unknown */
  owner: string;
  label: string;
}

const protoNum = (p: string): number => (p === 'UDP' ? IPPROTO_UDP : IPPROTO_TCP);
const protoName = (n: number): string => (n === IPPROTO_UDP ? 'UDP' : 'TCP');
const feKeyStr = (k: FeKey): string => frontendKey({ ip: k.addr, port: k.port, protocol: protoName(k.proto) as 'TCP' });
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
  return flags;
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
};

const sameFe = (a: FeValue, b: FeValue): boolean =>
  a.svcId === b.svcId &&
  a.setId === b.setId &&
  a.clusterCount === b.clusterCount &&
  a.localCount === b.localCount &&
  a.flags === b.flags &&
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
  private readonly setIdAlloc = new IdAllocator();
  /** services that wanted a frontend someone else owned */
  private readonly waiting = new Map<string, Set<string>>();
  /** restored names that may have been cut short (svc id -> name) */
  private readonly maybeTruncated = new Map<number, string>();
  private slotCount = 0;
  /** UDP conntrack of removed endpoints: cleared in native passes off the event loop */
  private readonly udpFlusher: ConntrackFlusher;
  private readonly pendingFlushes = new Set<Promise<void>>();

  constructor(
    private readonly maps: DatapathMaps,
    private readonly log?: Logger,
  ) {
    this.udpFlusher = new ConntrackFlusher(maps, IPPROTO_UDP);
    this.restore();
  }

  /**
   * Resolves when the UDP conntrack flushes queued by earlier syncs are
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
        set = { svcId: value.svcId, content, backends, refs: 0 };
        this.addSet(value.setId, set);
        this.setByContent.set(`${value.svcId}|${content}`, value.setId);
        this.setIdAlloc.restore(value.setId);
        this.slotCount += backends.length;
      }
      set.refs++;
    }
    // Slots no frontend points at are leftovers of an interrupted sync.
    for (const [setId, slots] of slotsBySet) {
      if (this.sets.has(setId)) continue;
      this.maps.slots.deleteMany(slots.map(([index]) => ({ setId, index })));
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

  /** The set holding exactly these backends for this service port, written if new. */
  private setFor(svcId: number, cluster: readonly Backend[], local: readonly Backend[]): { setId: number; created: boolean } {
    const backends = [...cluster.map(toBackend), ...local.map(toBackend)];
    const content = this.contentOf(backends, cluster.length);
    const ck = `${svcId}|${content}`;
    const existing = this.setByContent.get(ck);
    if (existing !== undefined) return { setId: existing, created: false };
    const setId = this.setIdAlloc.allocate();
    try {
      this.maps.slots.setMany(backends.map((b, index) => [{ setId, index }, b] as const));
    } catch (e) {
      this.maps.slots.deleteMany(backends.map((_, index) => ({ setId, index })));
      this.setIdAlloc.release(setId);
      throw e;
    }
    this.addSet(setId, { svcId, content, backends, refs: 0 });
    this.setByContent.set(ck, setId);
    this.slotCount += backends.length;
    return { setId, created: true };
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
        const set = this.setFor(svcId, f.clusterBackends, f.localBackends);
        const setId = set.setId;
        if (set.created) created = setId;
        const key: FeKey = { addr: f.ip, port: f.port, proto: protoNum(f.protocol) };
        const value: FeValue = {
          svcId,
          setId,
          clusterCount: f.clusterBackends.length,
          localCount: f.localBackends.length,
          flags: flagsOf(f),
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
    this.sets.delete(setId);
    this.setsBySvc.get(s.svcId)?.delete(setId);
    if (this.setsBySvc.get(s.svcId)?.size === 0) this.setsBySvc.delete(s.svcId);
    this.setByContent.delete(`${s.svcId}|${s.content}`);
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
      this.sets.delete(setId);
      this.setsBySvc.get(s.svcId)?.delete(setId);
      this.setByContent.delete(`${s.svcId}|${s.content}`);
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
    for (const svcId of deadSvcIds) {
      this.setsBySvc.delete(svcId);
      this.affinitySvcs.delete(svcId);
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
   * Affinity entries and UDP conntrack entries that lead to backends a
   * service port no longer has (kube-proxy clears UDP conntrack the same
   * way; TCP connections are left to end on their own). The conntrack part
   * is queued to a native pass over the map (it can hold 512K entries) and
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
    if (!affected.some((id) => this.svcNames.get(id)?.endsWith('/UDP'))) return false;
    const rules: FlushRule[] = [...dead].map((svcId) => ({ svcId }));
    for (const [svcId, bes] of gone) {
      if (dead.has(svcId)) continue;
      for (const be of bes) {
        const i = be.lastIndexOf(':');
        rules.push({ svcId, backend: { addr: be.slice(0, i), port: Number(be.slice(i + 1)) } });
      }
    }
    const names = affected.map((id) => this.svcNames.get(id) ?? `svc id ${id}`);
    const p = this.udpFlusher
      .flush(rules)
      .then(
        (r) => {
          if (r.deleted)
            this.log?.debug(
              { entries: r.deleted, scanned: r.scanned, ms: Math.round(r.ms), servicePorts: names },
              'cleared UDP conntrack entries of removed endpoints',
            );
        },
        (e: unknown) => {
          this.log?.error(
            { servicePorts: names, map: this.maps.ct.name },
            `cannot clear the UDP conntrack entries of removed endpoints: ${e instanceof Error ? e.message : String(e)}; ` +
              'their flows keep going to the removed endpoints until the UDP conntrack timeout (bpfConntrackTimeouts.UDPTimeout) ends them',
          );
        },
      )
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

  setNodeAddresses(ips: readonly string[]): void {
    const want = new Set(ips);
    const have = new Set(this.maps.nodeIps.entries().map(([k]) => k.addr));
    for (const ip of want) if (!have.has(ip)) this.maps.nodeIps.set({ addr: ip }, { v: 1 });
    for (const ip of have) if (!want.has(ip)) this.maps.nodeIps.delete({ addr: ip });
  }

  private problem(service: string, frontend: string, e: unknown, kept: boolean): SyncProblem {
    const outcome = kept
      ? `${frontend} keeps its previous state: old endpoints keep serving (affinity and conntrack untouched); the change is retried on the next sync`
      : `${frontend} is not programmed; retried on the next sync`;
    if (e instanceof BpfError && e.isMapFull) {
      const name = Object.values(MAP_NAMES).find((n) => e.op.includes(n)) ?? '';
      const help = MAP_HELP[name] ?? { what: 'service', felix: 'bpfMapSizeNATFrontend', flag: '--map-size-nat-frontend' };
      const map = (Object.values(this.maps) as Array<{ name: string; maxEntries: number }>).find((m) => m.name === name);
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
