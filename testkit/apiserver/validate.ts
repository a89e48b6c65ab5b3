/**
 * Checks an object against its kind's schema the way the API server
 * decodes it: unknown fields are pruned (and reported for
 * fieldValidation=Strict/Warn), values of the wrong type are refused, and
 * custom resources are also held to their CRD's enums, bounds and required
 * fields. Plus the name rules of each kind (DNS-1123 subdomain, label,
 * DNS-1035 label, path segment) and label syntax.
 */
import type { FieldError } from './errors.js';
import { type Schema, type Schemas } from './schema.js';

export interface Checked {
  /** paths of fields the schema does not declare (pruned from the value) */
  unknown: string[];
  /** values of the wrong type, out-of-enum values, missing required fields */
  errors: FieldError[];
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const typeName = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v;

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

/**
 * Prunes `value` in place against `schema` and returns it (undefined when
 * the value itself is dropped: a null where null is not allowed).
 * `custom` turns on the CRD-only checks (enum, bounds, required).
 */
export function check(schemas: Schemas, value: unknown, schema: Schema | undefined, path: string, custom: boolean, out: Checked): unknown {
  const s = schemas.resolve(schema);
  if (!s) return value;
  if (value === null) return s.nullable ? null : undefined;
  if (s.intOrString) {
    if (!(typeof value === 'string' || (typeof value === 'number' && Number.isInteger(value)))) {
      out.errors.push({
        type: 'FieldValueTypeInvalid',
        field: path,
        value,
        detail: `${path} in body must be of type integer-or-string: ${JSON.stringify(typeName(value))}`,
      });
    }
    return value;
  }
  const wantsObject = s.type === 'object' || !!s.properties || !!s.additionalProperties;
  if (wantsObject) {
    if (!isPlainObject(value)) {
      out.errors.push(typeError(path, value, 'object'));
      return value;
    }
    for (const key of Object.keys(value)) {
      const p = s.properties?.[key];
      const sub = p ?? s.additionalProperties;
      if (!sub) {
        if (s.preserveUnknown) continue;
        out.unknown.push(join(path, key));
        delete value[key];
        continue;
      }
      const v = check(schemas, value[key], sub, join(path, key), custom, out);
      if (v === undefined) delete value[key];
      else value[key] = v;
    }
    if (custom)
      for (const r of s.required ?? [])
        if (!(r in value)) out.errors.push({ type: 'FieldValueRequired', field: join(path, r), detail: '' });
    return value;
  }
  if (s.type === 'array' || s.items) {
    if (!Array.isArray(value)) {
      out.errors.push(typeError(path, value, 'array'));
      return value;
    }
    for (let i = 0; i < value.length; i++) {
      const v = check(schemas, value[i], s.items, `${path}[${i}]`, custom, out);
      value[i] = v === undefined ? null : v;
    }
    return value;
  }
  if (!s.type) return value; // preserve-unknown or untyped: anything goes
  const ok =
    s.type === 'string'
      ? typeof value === 'string'
      : s.type === 'boolean'
        ? typeof value === 'boolean'
        : s.type === 'integer'
          ? typeof value === 'number' && Number.isInteger(value)
          : typeof value === 'number';
  if (!ok) {
    out.errors.push(typeError(path, value, s.type));
    return value;
  }
  if (custom) {
    if (s.enum && !s.enum.some((e) => e === value)) {
      out.errors.push({ type: 'FieldValueNotSupported', field: path, value, detail: '', supported: s.enum.map(String) });
    }
    if (typeof value === 'number') {
      if (s.minimum !== undefined && value < s.minimum)
        out.errors.push({ type: 'FieldValueInvalid', field: path, value, detail: `should be greater than or equal to ${s.minimum}` });
      if (s.maximum !== undefined && value > s.maximum)
        out.errors.push({ type: 'FieldValueInvalid', field: path, value, detail: `should be less than or equal to ${s.maximum}` });
    }
    if (typeof value === 'string' && s.pattern && !new RegExp(s.pattern).test(value)) {
      out.errors.push({ type: 'FieldValueInvalid', field: path, value, detail: `should match '${s.pattern}'` });
    }
  }
  return value;
}

function typeError(path: string, value: unknown, want: string): FieldError {
  return {
    type: 'FieldValueTypeInvalid',
    field: path,
    value: typeName(value),
    detail: `${path} in body must be of type ${want}: ${JSON.stringify(typeName(value))}`,
  };
}

/**
 * Built-in kinds are Go structs whose maps are `omitempty`: an emptied map
 * (the last nodeSelector key deleted) is not stored. Custom resources keep
 * what they are given.
 */
export function dropEmptyMaps(schemas: Schemas, value: unknown, schema: Schema | undefined): void {
  const s = schemas.resolve(schema);
  if (!s || typeof value !== 'object' || value === null) return;
  if (Array.isArray(value)) {
    for (const v of value) dropEmptyMaps(schemas, v, s.items);
    return;
  }
  const o = value as Record<string, unknown>;
  for (const [k, v] of Object.entries(o)) {
    const sub = schemas.resolve(s.properties?.[k] ?? s.additionalProperties);
    if (!sub) continue;
    if (sub.additionalProperties && !sub.properties && isPlainObject(v) && Object.keys(v).length === 0) delete o[k];
    else dropEmptyMaps(schemas, v, sub);
  }
}

// ---------------------------------------------------------------------------
// names and labels (apimachinery/pkg/util/validation)

export type NameRule = 'subdomain' | 'label' | 'dns1035' | 'path' | 'none';

const DNS1123_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS1123_SUBDOMAIN = `${DNS1123_LABEL}(\\.${DNS1123_LABEL})*`;
const DNS1035_LABEL = '[a-z]([-a-z0-9]*[a-z0-9])?';

/** Why `name` is not valid under `rule`, or undefined. Messages are the real server's. */
export function nameProblem(rule: NameRule, name: string): string | undefined {
  switch (rule) {
    case 'none':
      return undefined;
    case 'path':
      if (name === '.' || name === '..') return `may not be '${name}'`;
      if (name.includes('/')) return `may not contain '/'`;
      if (name.includes('%')) return `may not contain '%'`;
      return undefined;
    case 'label':
      if (name.length > 63) return 'must be no more than 63 characters';
      if (!new RegExp(`^${DNS1123_LABEL}$`).test(name)) {
        return `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '${DNS1123_LABEL}')`;
      }
      return undefined;
    case 'dns1035':
      if (name.length > 63) return 'must be no more than 63 characters';
      if (!new RegExp(`^${DNS1035_LABEL}$`).test(name)) {
        return `a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '${DNS1035_LABEL}')`;
      }
      return undefined;
    case 'subdomain':
      if (name.length > 253) return 'must be no more than 253 characters';
      if (!new RegExp(`^${DNS1123_SUBDOMAIN}$`).test(name)) {
        return `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '${DNS1123_SUBDOMAIN}')`;
      }
      return undefined;
  }
}

const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function qualifiedNameProblem(key: string): string | undefined {
  const parts = key.split('/');
  if (parts.length > 2)
    return "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
  const name = parts.at(-1)!;
  if (parts.length === 2 && nameProblem('subdomain', parts[0]!)) return `prefix part ${nameProblem('subdomain', parts[0]!)}`;
  if (name.length === 0) return 'name part must be non-empty';
  if (name.length > 63) return 'name part must be no more than 63 characters';
  if (!QUALIFIED_NAME.test(name))
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
  return undefined;
}

/** metadata.name / generateName and labels, as ValidateObjectMeta checks them. */
export function checkMeta(meta: Record<string, unknown>, rule: NameRule, namespaced: boolean): FieldError[] {
  const errs: FieldError[] = [];
  const name = meta.name;
  if (typeof name !== 'string' || name === '') {
    errs.push({ type: 'FieldValueRequired', field: 'metadata.name', detail: 'name or generateName is required' });
  } else {
    const why = nameProblem(rule, name);
    if (why) errs.push({ type: 'FieldValueInvalid', field: 'metadata.name', value: name, detail: why });
  }
  if (namespaced && !meta.namespace) errs.push({ type: 'FieldValueRequired', field: 'metadata.namespace', detail: '' });
  const labels = meta.labels;
  if (labels && typeof labels === 'object') {
    for (const [k, v] of Object.entries(labels as Record<string, unknown>)) {
      const kp = qualifiedNameProblem(k);
      if (kp) errs.push({ type: 'FieldValueInvalid', field: 'metadata.labels', value: k, detail: kp });
      if (typeof v === 'string' && (v.length > 63 || !LABEL_VALUE.test(v))) {
        errs.push({
          type: 'FieldValueInvalid',
          field: 'metadata.labels',
          value: v,
          detail:
            v.length > 63
              ? 'must be no more than 63 characters'
              : "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        });
      }
    }
  }
  const annotations = meta.annotations;
  if (annotations && typeof annotations === 'object') {
    for (const k of Object.keys(annotations)) {
      const kp = qualifiedNameProblem(k);
      if (kp) errs.push({ type: 'FieldValueInvalid', field: 'metadata.annotations', value: k, detail: kp });
    }
  }
  return errs;
}
