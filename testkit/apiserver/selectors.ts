/**
 * Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field
 * selectors (`metadata.name=x,involvedObject.kind!=Pod`), parsed and
 * matched as apimachinery's labels and fields packages do.
 */
import { badRequest } from './errors.js';
import { text } from './util.js';

type Op = '=' | '!=' | 'in' | 'notin' | 'exists' | '!exists';
interface Requirement {
  key: string;
  op: Op;
  values: string[];
}

export type Selector = (labels: Record<string, string>) => boolean;

const KEY = /^([A-Za-z0-9][-A-Za-z0-9_./]*)?[A-Za-z0-9]$/;

/** Parses a label selector; 400 BadRequest naming the bad part. */
export function parseLabelSelector(text: string): Selector {
  const reqs: Requirement[] = [];
  for (const part of splitTopLevel(text)) {
    const p = part.trim();
    if (!p) continue;
    let m: RegExpExecArray | null;
    if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(p))) {
      reqs.push({
        key: m[1]!,
        op: m[2] as Op,
        values: m[3]!
          .split(',')
          .map((v) => v.trim())
          .filter((v) => v !== ''),
      });
    } else if ((m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(p))) {
      reqs.push({ key: m[1]!, op: m[2] === '!=' ? '!=' : '=', values: [m[3]!] });
    } else if ((m = /^!\s*(\S+)$/.exec(p))) {
      reqs.push({ key: m[1]!, op: '!exists', values: [] });
    } else if (KEY.test(p)) {
      reqs.push({ key: p, op: 'exists', values: [] });
    } else {
      throw badRequest(`unable to parse requirement: found '${p}', expected: in, notin, =, ==, !=, gt, lt`);
    }
  }
  for (const r of reqs) if (!KEY.test(r.key)) throw badRequest(`unable to parse requirement: invalid label key "${r.key}"`);
  return (labels) =>
    reqs.every((r) => {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key);
      const v = labels[r.key];
      switch (r.op) {
        case '=':
          return has && v === r.values[0];
        case '!=':
          return !has || v !== r.values[0];
        case 'in':
          return has && r.values.includes(v!);
        case 'notin':
          return !has || !r.values.includes(v!);
        case 'exists':
          return has;
        case '!exists':
          return !has;
      }
    });
}

/** Splits on commas outside parentheses (`a in (x,y),b` is two requirements). */
function splitTopLevel(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const c of text) {
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

export type FieldGetter = (obj: Record<string, unknown>) => string | undefined;

/** Parses a field selector against the fields the kind supports; 400 for any other field. */
export function parseFieldSelector(
  text: string,
  fields: Record<string, FieldGetter>,
  kind: string,
): (obj: Record<string, unknown>) => boolean {
  const reqs: Array<{ get: FieldGetter; neg: boolean; value: string }> = [];
  for (const part of text.split(',')) {
    const p = part.trim();
    if (!p) continue;
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(p);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${p}'`);
    const field = m[1]!.trim();
    const get = fields[field];
    if (!get) {
      const known = Object.keys(fields)
        .map((f) => `"${f}"`)
        .join(', ');
      throw badRequest(`"${field}" is not a known field selector: only ${known}`, [
        { reason: 'FieldValueInvalid', message: `field label not supported for ${kind}: ${field}`, field: 'fieldSelector' },
      ]);
    }
    reqs.push({ get, neg: m[2] === '!=', value: m[3]!.trim() });
  }
  return (obj) => reqs.every((r) => ((r.get(obj) ?? '') === r.value) !== r.neg);
}

/** A getter for a dotted path into the object (`spec.nodeName`). */
export function pathGetter(path: string): FieldGetter {
  const parts = path.split('.');
  return (obj) => {
    let cur: unknown = obj;
    for (const p of parts) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
    return cur === undefined || cur === null ? undefined : text(cur);
  };
}
