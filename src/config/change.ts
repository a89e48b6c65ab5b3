/**
 * What changed between two configs, by what the change takes (the change
 * class of each field in fields.ts): nothing, live (applied in place),
 * reload (programs loaded again under the same maps) or resize (maps would
 * have to be created again).
 */
import type { Config } from './config.js';
import { FIELDS, FIELD_NAMES, type ChangeClass, type FelixField } from './fields.js';

export interface ConfigChange {
  /** the most that has to happen: resize > reload > live > nothing */
  class: ChangeClass | 'nothing';
  live: FelixField[];
  reload: FelixField[];
  resize: FelixField[];
}

export function configChange(a: Config, b: Config): ConfigChange {
  const by: Record<ChangeClass, FelixField[]> = { live: [], reload: [], resize: [] };
  for (const name of FIELD_NAMES) {
    const f = FIELDS[name];
    if (!f.same(a, b)) by[f.change].push(name);
  }
  const cls = by.resize.length ? 'resize' : by.reload.length ? 'reload' : by.live.length ? 'live' : 'nothing';
  return { class: cls, ...by };
}
