/**
 * Field management (metadata.managedFields) and server-side apply.
 *
 * A field set is the set of paths an object sets, as structured-merge-diff
 * computes it: each path is a list of fieldsV1 segments (`f:spec`,
 * `k:{"port":80,"protocol":"TCP"}` for an item of an associative list,
 * `v:"x"` for a set member). Scalars, atomic lists and atomic maps are
 * leaves; associative list items and map entries are members themselves.
 *
 * - Update operations (create, PUT, merge/JSON/strategic patch): the writer
 *   takes the fields it changed; the others lose them (no conflicts).
 * - Apply: the applier's field set becomes exactly what it sent; a field
 *   another manager owns with a different value is a conflict (409) unless
 *   force=true, which takes it over; fields the applier set before and no
 *   longer sends, and nobody else owns, are removed.
 */
import { ApiError } from './errors.js';
import { deepEqual } from './patch.js';
import { isAtomic, listKind, type Schema, type Schemas } from './schema.js';
import { isObj, text, type Obj } from './util.js';

const SEP = '\n';
export type FieldSet = Set<string>;
const pathOf = (segs: string[]): string => segs.join(SEP);
const segsOf = (p: string): string[] => (p === '' ? [] : p.split(SEP));

export interface ManagedEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  subresource?: string;
  set: FieldSet;
}

/** JSON with object keys sorted, as structured-merge-diff writes key values. */
const sortedJson = (v: unknown): string => {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(',')}]`;
  if (isObj(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${sortedJson(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
};

function keyValues(schemas: Schemas, item: Obj, keys: string[], itemSchema: Schema | undefined): Obj {
  const s = schemas.resolve(itemSchema);
  const out: Obj = {};
  for (const k of keys) {
    const v = item[k] ?? s?.properties?.[k]?.default;
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** The field set of `value` under `schema`. */
export function fieldSetOf(schemas: Schemas, value: unknown, schema: Schema | undefined): FieldSet {
  const out: FieldSet = new Set();
  walk(schemas, value, schema, [], out);
  return out;
}

function walk(schemas: Schemas, v: unknown, schema: Schema | undefined, path: string[], out: FieldSet): void {
  const s = schemas.resolve(schema);
  if (v === null || typeof v !== 'object') {
    if (path.length) out.add(pathOf(path));
    return;
  }
  if (Array.isArray(v)) {
    const lk = s ? listKind(s) : ({ kind: 'atomic' } as const);
    if (lk.kind === 'atomic') out.add(pathOf(path));
    else if (lk.kind === 'set') for (const item of v) out.add(pathOf([...path, `v:${sortedJson(item)}`]));
    else {
      for (const item of v) {
        if (!isObj(item)) continue;
        const p = [...path, `k:${sortedJson(keyValues(schemas, item, lk.keys, s?.items))}`];
        walkObject(schemas, item, s?.items, p, out);
        out.add(pathOf(p));
      }
    }
    return;
  }
  if (s && isAtomic(s) && path.length) {
    out.add(pathOf(path));
    return;
  }
  walkObject(schemas, v as Obj, s, path, out);
}

function walkObject(schemas: Schemas, v: Obj, schema: Schema | undefined, path: string[], out: FieldSet): void {
  for (const [k, val] of Object.entries(v)) {
    const { schema: sub, declared } = schemas.field(schema, k);
    const p = [...path, `f:${k}`];
    walk(schemas, val, sub, p, out);
    if (val === null || (isObj(val) && Object.keys(val).length === 0) || !declared) out.add(pathOf(p));
  }
}

// ---------------------------------------------------------------------------
// fieldsV1 <-> field sets

const MEMBER = Symbol('member');
type Tree = { [k: string]: Tree; [MEMBER]?: true };

export function toFieldsV1(set: FieldSet): Obj {
  const root: Tree = {};
  for (const p of set) {
    let node = root;
    for (const seg of segsOf(p)) node = node[seg] ??= {};
    node[MEMBER] = true;
  }
  const ser = (node: Tree): Obj => {
    const keys = Object.keys(node).sort();
    const out: Obj = {};
    if (node[MEMBER] && keys.length) out['.'] = {};
    for (const k of keys) out[k] = ser(node[k]!);
    return out;
  };
  return ser(root);
}

export function fromFieldsV1(tree: unknown): FieldSet {
  const out: FieldSet = new Set();
  const rec = (node: unknown, prefix: string[]): void => {
    if (!isObj(node)) return;
    for (const [k, v] of Object.entries(node)) {
      if (k === '.') out.add(pathOf(prefix));
      else if (isObj(v) && Object.keys(v).length === 0) out.add(pathOf([...prefix, k]));
      else rec(v, [...prefix, k]);
    }
  };
  rec(tree, []);
  return out;
}

export function readManaged(meta: Obj | undefined): ManagedEntry[] {
  const raw = meta?.managedFields;
  if (!Array.isArray(raw)) return [];
  return raw.filter(isObj).map((e) => ({
    manager: text(e.manager),
    operation: e.operation === 'Apply' ? 'Apply' : 'Update',
    apiVersion: text(e.apiVersion),
    time: text(e.time) || new Date().toISOString(),
    ...(typeof e.subresource === 'string' && e.subresource ? { subresource: e.subresource } : {}),
    set: fromFieldsV1(e.fieldsV1),
  }));
}

export function writeManaged(entries: ManagedEntry[]): Obj[] {
  return entries
    .filter((e) => e.set.size > 0)
    .map((e) => ({
      manager: e.manager,
      operation: e.operation,
      apiVersion: e.apiVersion,
      time: e.time,
      fieldsType: 'FieldsV1',
      fieldsV1: toFieldsV1(e.set),
      ...(e.subresource ? { subresource: e.subresource } : {}),
    }));
}

// ---------------------------------------------------------------------------
// paths in objects

function findItem(schemas: Schemas, list: unknown[], seg: string, itemSchema: Schema | undefined, keys: string[]): number {
  const want = seg.slice(2);
  if (seg.startsWith('v:')) return list.findIndex((x) => sortedJson(x) === want);
  return list.findIndex((x) => isObj(x) && sortedJson(keyValues(schemas, x, keys, itemSchema)) === want);
}

/** The value at a path, or undefined. */
function valueAt(schemas: Schemas, obj: unknown, segs: string[], schema: Schema | undefined): unknown {
  let cur = obj;
  let s = schema;
  for (const seg of segs) {
    const r = schemas.resolve(s);
    if (seg.startsWith('f:')) {
      if (!isObj(cur)) return undefined;
      const k = seg.slice(2);
      cur = cur[k];
      s = schemas.field(r, k).schema;
    } else {
      if (!Array.isArray(cur)) return undefined;
      const lk = r ? listKind(r) : ({ kind: 'atomic' } as const);
      const i = findItem(schemas, cur, seg, r?.items, lk.kind === 'map' ? lk.keys : []);
      cur = i >= 0 ? cur[i] : undefined;
      s = r?.items;
    }
    if (cur === undefined) return undefined;
  }
  return cur;
}

function removeAt(schemas: Schemas, obj: Obj, segs: string[], schema: Schema | undefined): void {
  let cur: unknown = obj;
  let s = schema;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const last = i === segs.length - 1;
    const r = schemas.resolve(s);
    if (seg.startsWith('f:')) {
      if (!isObj(cur)) return;
      const k = seg.slice(2);
      if (last) {
        delete cur[k];
        return;
      }
      cur = cur[k];
      s = schemas.field(r, k).schema;
    } else {
      if (!Array.isArray(cur)) return;
      const lk = r ? listKind(r) : ({ kind: 'atomic' } as const);
      const at = findItem(schemas, cur, seg, r?.items, lk.kind === 'map' ? lk.keys : []);
      if (at < 0) return;
      if (last) {
        cur.splice(at, 1);
        return;
      }
      cur = cur[at];
      s = r?.items;
    }
  }
}

/** `.spec.ports[port=80,protocol="TCP"].targetPort`, as conflicts are reported. */
export function pathString(p: string): string {
  return segsOf(p)
    .map((seg) => {
      const body = seg.slice(2);
      if (seg.startsWith('f:')) return `.${body}`;
      if (seg.startsWith('v:')) return `[=${body}]`;
      if (seg.startsWith('i:')) return `[${body}]`;
      const kv = JSON.parse(body) as Obj;
      return `[${Object.entries(kv)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? JSON.stringify(v) : String(v)}`)
        .join(',')}]`;
    })
    .join('');
}

// ---------------------------------------------------------------------------
// what the server strips before it tracks fields

/** Fields no manager owns: identity and server-set metadata. */
function tracked(p: string, scope: 'main' | 'status', resetsStatus: boolean): boolean {
  const segs = segsOf(p);
  const top = segs[0];
  if (top === 'f:apiVersion' || top === 'f:kind') return false;
  if (top === 'f:metadata') {
    const m = segs[1];
    if (!m) return false;
    if (
      [
        'f:name',
        'f:namespace',
        'f:uid',
        'f:resourceVersion',
        'f:generation',
        'f:creationTimestamp',
        'f:managedFields',
        'f:selfLink',
        'f:deletionTimestamp',
        'f:deletionGracePeriodSeconds',
      ].includes(m)
    )
      return false;
  }
  if (scope === 'status') return top === 'f:status';
  return !(resetsStatus && top === 'f:status');
}

const filterSet = (set: FieldSet, scope: 'main' | 'status', resetsStatus: boolean): FieldSet =>
  new Set([...set].filter((p) => tracked(p, scope, resetsStatus)));

const isUnder = (p: string, prefix: string): boolean => p === prefix || p.startsWith(prefix + SEP);

export interface Tracking {
  schemas: Schemas;
  schema: Schema;
  manager: string;
  apiVersion: string;
  /** writes to the status subresource track only status; main writes ignore status when the kind has the subresource */
  scope: 'main' | 'status';
  resetsStatus: boolean;
  now: string;
}

const sameSlot = (e: ManagedEntry, t: Tracking, op: ManagedEntry['operation']): boolean =>
  e.manager === t.manager && e.operation === op && (e.subresource ?? '') === (t.scope === 'status' ? 'status' : '');

/** managedFields after an Update operation turned `old` (undefined on create) into `next`. */
export function trackUpdate(old: Obj | undefined, next: Obj, t: Tracking, given?: unknown[]): Obj[] {
  // managedFields the writer sent (kubectl rewrites them when it moves from client-side to
  // server-side apply) replace the live ones, as on the real server; none sent: the live ones
  const entries = readManaged(given?.length ? { managedFields: given } : (old?.metadata as Obj | undefined));
  const newSet = filterSet(fieldSetOf(t.schemas, next, t.schema), t.scope, t.resetsStatus);
  const oldSet = old ? filterSet(fieldSetOf(t.schemas, old, t.schema), t.scope, t.resetsStatus) : new Set<string>();
  const changed = new Set(
    [...newSet].filter(
      (p) =>
        !oldSet.has(p) ||
        (p.split(SEP).at(-1)!.startsWith('f:') &&
          !deepEqual(valueAt(t.schemas, old, segsOf(p), t.schema), valueAt(t.schemas, next, segsOf(p), t.schema))),
    ),
  );
  const removed = [...oldSet].filter((p) => !newSet.has(p));
  let mine = entries.find((e) => sameSlot(e, t, 'Update'));
  if (!mine && changed.size) {
    mine = {
      manager: t.manager,
      operation: 'Update',
      apiVersion: t.apiVersion,
      time: t.now,
      ...(t.scope === 'status' ? { subresource: 'status' } : {}),
      set: new Set(),
    };
    entries.push(mine);
  }
  for (const e of entries) {
    if (e === mine) continue;
    for (const p of [...e.set]) if (changed.has(p) || removed.some((r) => isUnder(p, r))) e.set.delete(p);
  }
  if (mine) {
    for (const p of changed) mine.set.add(p);
    for (const p of [...mine.set]) if (!newSet.has(p)) mine.set.delete(p);
    if (changed.size) mine.time = t.now;
  }
  return writeManaged(entries);
}

/** Merges an applied configuration into the live object (apply semantics, not strategic merge). */
export function mergeApplied(schemas: Schemas, live: unknown, applied: unknown, schema: Schema | undefined): unknown {
  const s = schemas.resolve(schema);
  if (applied === undefined) return live;
  if (applied === null || typeof applied !== 'object') return applied;
  if (Array.isArray(applied)) {
    const lk = s ? listKind(s) : ({ kind: 'atomic' } as const);
    if (lk.kind === 'atomic' || !Array.isArray(live)) return applied;
    const out: unknown[] = [...(live as unknown[])];
    if (lk.kind === 'set') {
      for (const v of applied) if (!out.some((x) => deepEqual(x, v))) out.push(v);
      return out;
    }
    for (const item of applied) {
      if (!isObj(item)) continue;
      const k = sortedJson(keyValues(schemas, item, lk.keys, s?.items));
      const at = out.findIndex((x) => isObj(x) && sortedJson(keyValues(schemas, x, lk.keys, s?.items)) === k);
      if (at >= 0) out[at] = mergeApplied(schemas, out[at], item, s?.items);
      else out.push(item);
    }
    return out;
  }
  if (!isObj(live) || (s && isAtomic(s))) return applied;
  const out: Obj = { ...live };
  for (const [k, v] of Object.entries(applied)) out[k] = mergeApplied(schemas, live[k], v, schemas.field(s, k).schema);
  return out;
}

export interface Conflict {
  entry: ManagedEntry;
  path: string;
}

/** How the real server names a manager in conflicts: Update managers with their version and time. */
function managerText(e: ManagedEntry): string {
  let s = JSON.stringify(e.manager);
  if (e.subresource) s += ` with subresource ${JSON.stringify(e.subresource)}`;
  if (e.operation === 'Update') s += ` using ${e.apiVersion} at ${e.time}`;
  return s;
}

/** 409 Conflict with the real server's message; kubectl prints it and suggests --force-conflicts. */
export function conflictError(kindName: string, name: string, conflicts: Conflict[]): ApiError {
  let message: string;
  if (conflicts.length === 1)
    message = `Apply failed with 1 conflict: conflict with ${managerText(conflicts[0]!.entry)}: ${pathString(conflicts[0]!.path)}`;
  else {
    const byManager = new Map<string, string[]>();
    for (const c of conflicts) byManager.set(managerText(c.entry), [...(byManager.get(managerText(c.entry)) ?? []), pathString(c.path)]);
    const lines = [...byManager.keys()].sort().flatMap((m) => [`conflicts with ${m}:`, ...byManager.get(m)!.map((p) => `- ${p}`)]);
    message = `Apply failed with ${conflicts.length} conflicts: ${lines.join('\n')}`;
  }
  return new ApiError(409, 'Conflict', message, {
    name,
    kind: kindName,
    causes: conflicts.map((c) => ({
      reason: 'FieldManagerConflict',
      message: `conflict with ${managerText(c.entry)}`,
      field: pathString(c.path),
    })),
  });
}

/**
 * Server-side apply of `config` over `live` (undefined: the apply creates).
 * Returns the new object, managedFields included. Throws 409 on conflicts
 * unless `force`.
 */
export function apply(live: Obj | undefined, config: Obj, t: Tracking & { force: boolean; kindName: string; name: string }): Obj {
  const entries = readManaged(live?.metadata as Obj | undefined);
  const cfg = structuredClone(config);
  const appliedSet = filterSet(fieldSetOf(t.schemas, cfg, t.schema), t.scope, t.resetsStatus);
  // what the applier may not set is dropped from what it sends
  if (t.scope === 'main' && t.resetsStatus) delete cfg.status;
  const base: Obj = live ? structuredClone(live) : {};
  const merged = mergeApplied(t.schemas, base, cfg, t.schema) as Obj;
  const mine = entries.find((e) => sameSlot(e, t, 'Apply'));
  const conflicts: Conflict[] = [];
  const takeOver = new Map<ManagedEntry, string[]>();
  for (const e of entries) {
    if (e === mine) continue;
    for (const p of e.set) {
      if (!appliedSet.has(p) || !p.split(SEP).at(-1)!.startsWith('f:')) continue;
      const segs = segsOf(p);
      if (deepEqual(valueAt(t.schemas, live, segs, t.schema), valueAt(t.schemas, merged, segs, t.schema))) continue;
      conflicts.push({ entry: e, path: p });
      takeOver.set(e, [...(takeOver.get(e) ?? []), p]);
    }
  }
  if (conflicts.length && !t.force) throw conflictError(t.kindName, t.name, conflicts);
  for (const [e, paths] of takeOver) for (const p of paths) e.set.delete(p);
  // fields this manager applied before, no longer applies, and nobody else owns
  if (mine) {
    const others = entries.filter((e) => e !== mine);
    const dropped = [...mine.set].filter((p) => !appliedSet.has(p) && !others.some((e) => [...e.set].some((q) => isUnder(q, p))));
    dropped.sort((a, b) => b.split(SEP).length - a.split(SEP).length);
    for (const p of dropped) removeAt(t.schemas, merged, segsOf(p), t.schema);
    mine.set = appliedSet;
    mine.time = t.now;
    mine.apiVersion = t.apiVersion;
  } else if (appliedSet.size) {
    entries.push({
      manager: t.manager,
      operation: 'Apply',
      apiVersion: t.apiVersion,
      time: t.now,
      ...(t.scope === 'status' ? { subresource: 'status' } : {}),
      set: appliedSet,
    });
  }
  const meta = (merged.metadata ??= {}) as Obj;
  meta.managedFields = writeManaged(entries);
  return merged;
}
