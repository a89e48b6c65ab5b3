/** Record every write to the datapath maps, in order ("set bpfproxy_fe"-style lines under the map's role). */
import type { DatapathMaps } from '../../src/dataplane/bpf/loader.js';
import type { BpfMap } from '../../src/dataplane/bpf/map.js';
import { BpfError } from '../../src/native/index.js';

const E2BIG = 7;

export function recordWrites(maps: DatapathMaps): string[] {
  const ops: string[] = [];
  for (const [name, m] of Object.entries(maps) as Array<[string, DatapathMaps[keyof DatapathMaps]]>) {
    const mm = m as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const op of ['set', 'setMany', 'delete', 'deleteMany']) {
      const orig = mm[op]!.bind(m);
      mm[op] = (...a: unknown[]) => {
        ops.push(`${op} ${name}`);
        return orig(...a);
      };
    }
  }
  return ops;
}

/**
 * A view of map whose writes of the keys `match` names the kernel refuses
 * (E2BIG, as a full map) while refusals are left (refuse(n) arms n): a
 * single set() of such a key uses one up; a batch holding one stops there,
 * as the kernel's does, with the entries before it written. Every other
 * write goes to the map.
 */
export function refusingWrites<K, V>(map: BpfMap<K, V>, match: (k: K) => boolean): { map: BpfMap<K, V>; refuse: (n: number) => void } {
  let left = 0;
  const view = Object.create(map) as BpfMap<K, V>;
  view.set = (k, v, flags) => {
    if (match(k) && left-- > 0) throw new BpfError(`map update ${map.name}`, E2BIG);
    map.set(k, v, flags);
  };
  view.setMany = (kv) => {
    const at = kv.findIndex(([k]) => match(k));
    if (at >= 0 && left > 0) {
      map.setMany(kv.slice(0, at));
      throw new BpfError(`map update batch ${map.name}`, E2BIG, '', at);
    }
    map.setMany(kv);
  };
  return { map: view, refuse: (n) => (left = n) };
}
