/**
 * The three PATCH formats besides server-side apply:
 * - JSON merge patch (RFC 7386): maps merge, null deletes, lists replace;
 * - JSON patch (RFC 6902): add/remove/replace/move/copy/test by JSON pointer;
 * - strategic merge patch (built-in kinds only): like a merge patch, but
 *   lists with a patch merge key merge item by item ($patch: delete,
 *   $patch: replace, $setElementOrder/, $deleteFromPrimitiveList/,
 *   $retainKeys), as kubectl apply and kubectl patch send them.
 * Errors: a patch that cannot be read is 400; one that cannot be applied
 * (a failed test, a missing path) is 422, as the real server answers.
 */
import { ApiError, badRequest } from './errors.js';
import type { Schema, Schemas } from './schema.js';

type Json = unknown;
import { isObj, type Obj } from './util.js';

export const deepEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
};

const unprocessable = (message: string): ApiError => new ApiError(422, 'Invalid', message);

// ---------------------------------------------------------------------------
// RFC 7386

export function mergePatch(target: Json, patch: Json): Json {
  if (!isObj(patch)) return patch;
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---------------------------------------------------------------------------
// RFC 6902

interface Operation {
  op: string;
  path: string;
  from?: string;
  value?: unknown;
}

function pointer(p: string, what: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw badRequest(`${what}: JSON pointer "${p}" must start with "/"`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parent(doc: Json, parts: string[], path: string): { container: Obj | unknown[]; last: string } {
  let cur: unknown = doc;
  for (const part of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(part)];
    else if (isObj(cur)) cur = cur[part];
    else cur = undefined;
    if (cur === undefined)
      throw unprocessable(`the server rejected our request due to an error in our request: doc is missing path: "${path}": missing value`);
  }
  if (!Array.isArray(cur) && !isObj(cur))
    throw unprocessable(`the server rejected our request due to an error in our request: doc is missing path: "${path}": missing value`);
  return { container: cur, last: parts.at(-1)! };
}

function index(arr: unknown[], s: string, path: string, forAdd: boolean): number {
  if (forAdd && s === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(s))
    throw unprocessable(`the server rejected our request due to an error in our request: invalid array index "${s}" in "${path}"`);
  const i = Number(s);
  if (i > arr.length || (!forAdd && i === arr.length))
    throw unprocessable(`the server rejected our request due to an error in our request: array index ${i} out of bounds in "${path}"`);
  return i;
}

function getAt(doc: Json, path: string): unknown {
  let cur: unknown = doc;
  for (const part of pointer(path, 'get')) {
    if (Array.isArray(cur)) cur = cur[Number(part)];
    else if (isObj(cur)) cur = Object.prototype.hasOwnProperty.call(cur, part) ? cur[part] : undefined;
    else cur = undefined;
    if (cur === undefined)
      throw unprocessable(`the server rejected our request due to an error in our request: doc is missing path: "${path}": missing value`);
  }
  return cur;
}

function addAt(doc: Json, path: string, value: unknown): Json {
  const parts = pointer(path, 'add');
  if (!parts.length) return value;
  const { container, last } = parent(doc, parts, path);
  if (Array.isArray(container)) container.splice(index(container, last, path, true), 0, value);
  else container[last] = value;
  return doc;
}

function removeAt(doc: Json, path: string): Json {
  const parts = pointer(path, 'remove');
  if (!parts.length)
    throw unprocessable('the server rejected our request due to an error in our request: cannot remove the whole document');
  const { container, last } = parent(doc, parts, path);
  if (Array.isArray(container)) container.splice(index(container, last, path, false), 1);
  else {
    if (!Object.prototype.hasOwnProperty.call(container, last))
      throw unprocessable(
        `the server rejected our request due to an error in our request: Unable to remove nonexistent key: ${last}: missing value`,
      );
    delete container[last];
  }
  return doc;
}

/** Applies an RFC 6902 patch document (already parsed JSON) to a copy of `doc`. */
export function jsonPatch(doc: Json, ops: unknown): Json {
  if (!Array.isArray(ops))
    throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch (a JSON patch is an array of operations)');
  let out = structuredClone(doc);
  ops.forEach((raw, i) => {
    if (!isObj(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string')
      throw badRequest(`JSON patch operation ${i} needs "op" and "path" strings`);
    const op = raw as unknown as Operation;
    switch (op.op) {
      case 'add':
        if (!('value' in op)) throw badRequest(`JSON patch operation ${i} (add ${op.path}) has no "value"`);
        out = addAt(out, op.path, structuredClone(op.value));
        break;
      case 'remove':
        out = removeAt(out, op.path);
        break;
      case 'replace':
        if (!('value' in op)) throw badRequest(`JSON patch operation ${i} (replace ${op.path}) has no "value"`);
        getAt(out, op.path);
        out = op.path === '' ? structuredClone(op.value) : addAt(removeAt(out, op.path), op.path, structuredClone(op.value));
        break;
      case 'move': {
        if (typeof op.from !== 'string') throw badRequest(`JSON patch operation ${i} (move) has no "from"`);
        const v = getAt(out, op.from);
        out = addAt(removeAt(out, op.from), op.path, v);
        break;
      }
      case 'copy': {
        if (typeof op.from !== 'string') throw badRequest(`JSON patch operation ${i} (copy) has no "from"`);
        out = addAt(out, op.path, structuredClone(getAt(out, op.from)));
        break;
      }
      case 'test':
        if (!deepEqual(getAt(out, op.path), op.value))
          throw unprocessable(
            `the server rejected our request due to an error in our request: testing value ${op.path} failed: test failed`,
          );
        break;
      default:
        throw badRequest(`Unexpected kind: ${op.op}`);
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// strategic merge patch

const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

/** Applies a strategic merge patch to `original` (not modified), guided by the kind's schema. */
export function strategicMergePatch(schemas: Schemas, original: Json, patch: Json, schema: Schema | undefined): Json {
  if (!isObj(patch)) throw badRequest('strategic merge patch: the patch must be a JSON object');
  return mergeMap(schemas, isObj(original) ? original : {}, patch, schema);
}

function mergeMap(schemas: Schemas, original: Obj, patch: Obj, schema: Schema | undefined): Json {
  const directive = patch.$patch;
  if (directive === 'delete') return undefined;
  if (directive === 'replace') {
    const { $patch: _p, ...rest } = patch;
    return stripDirectives(rest);
  }
  if (directive !== undefined && directive !== 'merge') throw badRequest(`Unknown patch type: ${JSON.stringify(directive)}`);
  const s = schemas.resolve(schema);
  const out: Obj = { ...original };
  const orders: Record<string, unknown[]> = {};
  const deletes: Record<string, unknown[]> = {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys') continue;
    if (k.startsWith(SET_ORDER)) {
      if (!Array.isArray(v)) throw badRequest(`invalid ${k}: must be a list`);
      orders[k.slice(SET_ORDER.length)] = v;
      continue;
    }
    if (k.startsWith(DELETE_PRIMITIVE)) {
      if (!Array.isArray(v)) throw badRequest(`invalid ${k}: must be a list`);
      deletes[k.slice(DELETE_PRIMITIVE.length)] = v;
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    const sub = s ? (s.properties?.[k] ?? s.additionalProperties) : undefined;
    const cur = out[k];
    let next: Json;
    if (Array.isArray(v)) next = mergeList(schemas, Array.isArray(cur) ? cur : undefined, v, sub);
    else if (isObj(v)) next = mergeMap(schemas, isObj(cur) ? cur : {}, v, sub);
    else next = v;
    if (next === undefined) delete out[k];
    else out[k] = next;
  }
  for (const [k, values] of Object.entries(deletes)) {
    if (Array.isArray(out[k])) out[k] = (out[k] as unknown[]).filter((x) => !values.some((d) => deepEqual(d, x)));
  }
  for (const [k, order] of Object.entries(orders)) {
    const sub = s ? (s.properties?.[k] ?? s.additionalProperties) : undefined;
    if (Array.isArray(out[k])) out[k] = reorder(out[k] as unknown[], order, sub);
  }
  const retain = patch.$retainKeys;
  if (retain !== undefined) {
    if (!Array.isArray(retain)) throw badRequest('invalid $retainKeys: must be a list');
    for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  }
  return out;
}

function mergeList(schemas: Schemas, original: unknown[] | undefined, patch: unknown[], schema: Schema | undefined): unknown[] {
  const s = schemas.resolve(schema);
  const strategies = s?.patchStrategy?.split(',') ?? [];
  if (!strategies.includes('merge')) return patch.map(stripDirectives);
  const orig = original ?? [];
  const key = s?.patchMergeKey;
  if (!key) {
    // a merging list of primitives: union, in order
    const out = [...orig];
    for (const v of patch) if (!out.some((x) => deepEqual(x, v))) out.push(v);
    return out;
  }
  if (patch.some((item) => isObj(item) && item.$patch === 'replace')) {
    return patch.filter((item) => !(isObj(item) && item.$patch === 'replace')).map(stripDirectives);
  }
  const out = [...orig];
  for (const item of patch) {
    if (!isObj(item)) throw badRequest(`strategic merge patch: list items must be objects with the merge key "${key}"`);
    if (!(key in item)) throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${key}`);
    const at = out.findIndex((x) => isObj(x) && deepEqual(x[key], item[key]));
    if (item.$patch === 'delete') {
      if (at >= 0) out.splice(at, 1);
      continue;
    }
    const merged = mergeMap(schemas, at >= 0 ? (out[at] as Obj) : {}, item, s?.items);
    if (at >= 0) out[at] = merged;
    else out.push(merged);
  }
  return out;
}

/** $setElementOrder: listed items first, in the listed order; the rest keep their order after them. */
function reorder(list: unknown[], order: unknown[], schema: Schema | undefined): unknown[] {
  const key = schema?.patchMergeKey;
  const matches = (item: unknown, o: unknown): boolean =>
    key && isObj(item) && isObj(o) ? deepEqual(item[key], o[key]) : deepEqual(item, o);
  const ordered: unknown[] = [];
  for (const o of order) {
    const found = list.find((item) => matches(item, o) && !ordered.includes(item));
    if (found !== undefined) ordered.push(found);
  }
  return [...ordered, ...list.filter((item) => !ordered.includes(item))];
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === '$patch' || k === '$retainKeys' || k.startsWith(SET_ORDER) || k.startsWith(DELETE_PRIMITIVE)) continue;
    out[k] = stripDirectives(x);
  }
  return out;
}
