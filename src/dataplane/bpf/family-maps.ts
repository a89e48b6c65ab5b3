/**
 * One view over an IPv4 map and its IPv6 twin (bpf/lib/lb6.h: separate
 * maps per family, as Cilium's lb4/lb6), so the reconciler keeps one code
 * path for both families: a write goes to the map of its address's family,
 * a read sees both. The IPv6 codecs (codecs6.ts) decode to the IPv4 shapes,
 * addresses as text.
 */
import type { BpfMap } from './map.js';
import type { DatapathMaps } from './loader.js';

/** What the reconciler does with a map. */
export type MapOps<K, V> = Pick<BpfMap<K, V>, 'name' | 'maxEntries' | 'set' | 'delete' | 'setMany' | 'deleteMany' | 'entries' | 'keys'>;

const isV6 = (addr: string): boolean => addr.includes(':');

/**
 * `addrOf` tells an entry's family from its key, or from its value when the
 * key has no address (backend slots: (set id, index) -> backend). For such
 * keys `groupOf` names what they belong to (the set id): the family a group
 * was written or read with is remembered, so its keys are deleted from that
 * map alone; a key of a group never seen is deleted from both (a missing
 * key is skipped).
 */
export class FamilyMap<K, V> implements MapOps<K, V> {
  constructor(
    private readonly v4: BpfMap<K, V>,
    private readonly v6: BpfMap<K, V>,
    private readonly addrOf: (k: K, v?: V) => string | undefined,
    private readonly groupOf?: (k: K) => number,
  ) {}

  /** group -> the map its entries were last written to or read from */
  private readonly groups = new Map<number, BpfMap<K, V>>();

  private note(k: K, m: BpfMap<K, V>): void {
    if (this.groupOf) this.groups.set(this.groupOf(k), m);
  }

  get name(): string {
    return this.v4.name;
  }

  get maxEntries(): number {
    return this.v4.maxEntries;
  }

  private mapFor(k: K, v?: V): BpfMap<K, V> | undefined {
    const a = this.addrOf(k, v);
    if (a !== undefined) return isV6(a) ? this.v6 : this.v4;
    return this.groupOf ? this.groups.get(this.groupOf(k)) : undefined;
  }

  set(k: K, v: V, flags?: number): void {
    const m = this.mapFor(k, v) ?? this.v4;
    m.set(k, v, flags);
    this.note(k, m);
  }

  delete(k: K): boolean {
    const m = this.mapFor(k);
    if (m) return m.delete(k);
    return this.v4.delete(k) || this.v6.delete(k);
  }

  setMany(entries: ReadonlyArray<readonly [K, V]>): void {
    const four = entries.filter(([k, v]) => (this.mapFor(k, v) ?? this.v4) === this.v4);
    const six = entries.filter(([k, v]) => this.mapFor(k, v) === this.v6);
    for (const [k] of four) this.note(k, this.v4);
    for (const [k] of six) this.note(k, this.v6);
    if (four.length) this.v4.setMany(four);
    if (six.length) {
      try {
        this.v6.setMany(six);
      } catch (e) {
        // All or nothing, as one map's batch is to its caller: take back the IPv4 half.
        if (four.length) this.v4.deleteMany(four.map(([k]) => k));
        throw e;
      }
    }
  }

  deleteMany(keys: readonly K[]): number {
    const known = keys.map((k) => [k, this.mapFor(k)] as const);
    const four = known.filter(([, m]) => m !== this.v6).map(([k]) => k);
    const six = known.filter(([, m]) => m !== this.v4).map(([k]) => k);
    return (four.length ? this.v4.deleteMany(four) : 0) + (six.length ? this.v6.deleteMany(six) : 0);
  }

  entries(): Array<[K, V]> {
    const four = this.v4.entries();
    const six = this.v6.entries();
    for (const [k] of four) this.note(k, this.v4);
    for (const [k] of six) this.note(k, this.v6);
    return [...four, ...six];
  }

  keys(): K[] {
    return [...this.v4.keys(), ...this.v6.keys()];
  }
}

/** The maps the reconciler writes, each family-aware where the datapath keeps IPv6 apart. */
export type ServiceMaps = Omit<DatapathMaps, 'fe' | 'slots' | 'affinity' | 'nodeIps' | 'lbSrcs'> & {
  fe: MapOps<MapKey<'fe'>, MapValue<'fe'>>;
  slots: MapOps<MapKey<'slots'>, MapValue<'slots'>>;
  affinity: MapOps<MapKey<'affinity'>, MapValue<'affinity'>>;
  nodeIps: MapOps<MapKey<'nodeIps'>, MapValue<'nodeIps'>>;
  lbSrcs: MapOps<MapKey<'lbSrcs'>, MapValue<'lbSrcs'>>;
};
type MapKey<N extends keyof DatapathMaps> = DatapathMaps[N] extends BpfMap<infer K, unknown> ? K : never;
type MapValue<N extends keyof DatapathMaps> = DatapathMaps[N] extends BpfMap<unknown, infer V> ? V : never;

export function serviceMaps(m: DatapathMaps): ServiceMaps {
  return {
    ...m,
    fe: new FamilyMap(m.fe, m.fe6, (k) => k.addr),
    slots: new FamilyMap(
      m.slots,
      m.slots6,
      (_k, v) => v?.addr,
      (k) => k.setId,
    ),
    affinity: new FamilyMap(m.affinity, m.affinity6, (k) => k.client),
    nodeIps: new FamilyMap(m.nodeIps, m.nodeIps6, (k) => k.addr),
    lbSrcs: new FamilyMap(m.lbSrcs, m.lbSrcs6, (k) => k.addr),
  };
}
