/** Record every write to the datapath maps, in order ("set bpfproxy_fe"-style lines under the map's role). */
import type { DatapathMaps } from '../../src/dataplane/bpf/loader.js';

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
