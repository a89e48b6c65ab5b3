/**
 * Command-line flags to Config: a flag that sets a FelixConfiguration field
 * is read by that field's parser (fields.ts), so "--min-sync-period 2s" and
 * `bpfKubeProxyMinSyncPeriod: 2s` mean the same, and fail the same way.
 */
import type { Config } from './config.js';
import { DEFAULT_CONFIG, FIELDS, type FelixField, type Field, type FieldValue } from './fields.js';

export type FlagValues = { [K in FelixField]?: FieldValue<K> };

/** One flag's text to the field's value; throws an Error naming the flag. */
export function parseFlag<K extends FelixField>(name: K, flag: string, text: string): FieldValue<K> {
  const f = FIELDS[name] as unknown as Field<FieldValue<K>>;
  const raw = f.kind.fromText(text);
  const r = raw.ok ? f.kind.parse(raw.value, f.default) : raw;
  if (!r.ok) throw new Error(r.issues.map((i) => `${flag}${i.path ? ` ${i.path.slice(1)}` : ''}: ${i.message}`).join('; '));
  return r.value;
}

/** The text a flag's default is shown as (the way it is written on the command line). */
export function formatDefault(name: FelixField): string {
  const f = FIELDS[name] as unknown as Field<unknown>;
  return f.kind.format(f.default);
}

/** Defaults <- flags: the base every FelixConfiguration overlays. */
export function configFromFlags(values: FlagValues): Config {
  const c = { ...DEFAULT_CONFIG };
  for (const [name, v] of Object.entries(values) as Array<[FelixField, unknown]>) {
    if (v !== undefined) (FIELDS[name] as unknown as Field<unknown>).set(c, v);
  }
  return c;
}
