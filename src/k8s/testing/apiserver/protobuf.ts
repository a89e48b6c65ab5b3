/**
 * Reads the Kubernetes protobuf encoding (application/vnd.kubernetes.protobuf)
 * for the few kinds kubectl sends that way with no JSON fallback: its typed
 * `kubectl create namespace|configmap|serviceaccount` and DeleteOptions.
 * The envelope is "k8s\0" + runtime.Unknown{typeMeta, raw}; raw is the
 * object's message. Field numbers are those of the generated.proto files
 * of k8s.io/api and k8s.io/apimachinery.
 */
import { badRequest, unsupportedMediaType } from './errors.js';

type Kind = 'string' | 'bool' | 'int' | 'bytes' | 'time' | 'json-bytes';
interface Field {
  name: string;
  kind?: Kind;
  message?: Desc;
  repeated?: boolean;
  /** map<string, string|bytes> */
  map?: 'string' | 'bytes';
}
type Desc = Record<number, Field>;

const TIME: Kind = 'time';
const OWNER_REFERENCE: Desc = {
  5: { name: 'apiVersion', kind: 'string' },
  1: { name: 'kind', kind: 'string' },
  3: { name: 'name', kind: 'string' },
  4: { name: 'uid', kind: 'string' },
  6: { name: 'controller', kind: 'bool' },
  7: { name: 'blockOwnerDeletion', kind: 'bool' },
};
const MANAGED_FIELDS: Desc = {
  1: { name: 'manager', kind: 'string' },
  2: { name: 'operation', kind: 'string' },
  3: { name: 'apiVersion', kind: 'string' },
  4: { name: 'time', kind: TIME },
  6: { name: 'fieldsType', kind: 'string' },
  7: { name: 'fieldsV1', message: { 1: { name: 'Raw', kind: 'json-bytes' } } },
  8: { name: 'subresource', kind: 'string' },
};
const OBJECT_META: Desc = {
  1: { name: 'name', kind: 'string' },
  2: { name: 'generateName', kind: 'string' },
  3: { name: 'namespace', kind: 'string' },
  4: { name: 'selfLink', kind: 'string' },
  5: { name: 'uid', kind: 'string' },
  6: { name: 'resourceVersion', kind: 'string' },
  7: { name: 'generation', kind: 'int' },
  8: { name: 'creationTimestamp', kind: TIME },
  9: { name: 'deletionTimestamp', kind: TIME },
  10: { name: 'deletionGracePeriodSeconds', kind: 'int' },
  11: { name: 'labels', map: 'string' },
  12: { name: 'annotations', map: 'string' },
  13: { name: 'ownerReferences', message: OWNER_REFERENCE, repeated: true },
  14: { name: 'finalizers', kind: 'string', repeated: true },
  17: { name: 'managedFields', message: MANAGED_FIELDS, repeated: true },
};
const OBJECT_REFERENCE: Desc = {
  1: { name: 'kind', kind: 'string' },
  2: { name: 'namespace', kind: 'string' },
  3: { name: 'name', kind: 'string' },
  4: { name: 'uid', kind: 'string' },
  5: { name: 'apiVersion', kind: 'string' },
  6: { name: 'resourceVersion', kind: 'string' },
  7: { name: 'fieldPath', kind: 'string' },
};

/** Messages by "apiVersion/Kind" of the envelope. */
const KINDS: Record<string, Desc> = {
  'v1/Namespace': {
    1: { name: 'metadata', message: OBJECT_META },
    2: { name: 'spec', message: { 1: { name: 'finalizers', kind: 'string', repeated: true } } },
    3: { name: 'status', message: { 1: { name: 'phase', kind: 'string' } } },
  },
  'v1/ConfigMap': {
    1: { name: 'metadata', message: OBJECT_META },
    4: { name: 'immutable', kind: 'bool' },
    2: { name: 'data', map: 'string' },
    3: { name: 'binaryData', map: 'bytes' },
  },
  'v1/ServiceAccount': {
    1: { name: 'metadata', message: OBJECT_META },
    2: { name: 'secrets', message: OBJECT_REFERENCE, repeated: true },
    3: { name: 'imagePullSecrets', message: { 1: { name: 'name', kind: 'string' } }, repeated: true },
    4: { name: 'automountServiceAccountToken', kind: 'bool' },
  },
  'v1/DeleteOptions': {
    1: { name: 'gracePeriodSeconds', kind: 'int' },
    2: { name: 'preconditions', message: { 1: { name: 'uid', kind: 'string' }, 2: { name: 'resourceVersion', kind: 'string' } } },
    3: { name: 'orphanDependents', kind: 'bool' },
    4: { name: 'propagationPolicy', kind: 'string' },
    5: { name: 'dryRun', kind: 'string', repeated: true },
  },
};
KINDS['meta.k8s.io/v1/DeleteOptions'] = KINDS['v1/DeleteOptions']!;

export const PROTOBUF = 'application/vnd.kubernetes.protobuf';

class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw badRequest('protobuf: truncated varint');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
      if (shift > 70n) throw badRequest('protobuf: varint too long');
    }
  }

  bytes(): Buffer {
    const len = Number(this.varint());
    if (this.pos + len > this.buf.length) throw badRequest('protobuf: truncated length-delimited field');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw badRequest(`protobuf: unsupported wire type ${wire}`);
  }
}

function signed(v: bigint): number {
  return Number(BigInt.asIntN(64, v));
}

function decodeTime(buf: Buffer): string {
  const r = new Reader(buf);
  let seconds = 0;
  while (!r.done()) {
    const tag = Number(r.varint());
    if (tag >> 3 === 1 && (tag & 7) === 0) seconds = signed(r.varint());
    else r.skip(tag & 7);
  }
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function decodeMessage(buf: Buffer, desc: Desc): Record<string, unknown> {
  const r = new Reader(buf);
  const out: Record<string, unknown> = {};
  while (!r.done()) {
    const tag = Number(r.varint());
    const f = desc[tag >> 3];
    const wire = tag & 7;
    if (!f) {
      r.skip(wire);
      continue;
    }
    let v: unknown;
    if (f.map) {
      const entry = new Reader(r.bytes());
      let key = '';
      let value: unknown = f.map === 'bytes' ? '' : '';
      while (!entry.done()) {
        const t = Number(entry.varint());
        const b = entry.bytes();
        if (t >> 3 === 1) key = b.toString('utf8');
        else if (t >> 3 === 2) value = f.map === 'bytes' ? b.toString('base64') : b.toString('utf8');
      }
      ((out[f.name] ??= {}) as Record<string, unknown>)[key] = value;
      continue;
    }
    if (f.message) v = decodeMessage(r.bytes(), f.message);
    else if (f.kind === 'string') v = r.bytes().toString('utf8');
    else if (f.kind === 'bytes') v = r.bytes().toString('base64');
    else if (f.kind === 'json-bytes') v = JSON.parse(r.bytes().toString('utf8')) as unknown;
    else if (f.kind === 'time') v = decodeTime(r.bytes());
    else if (f.kind === 'bool') v = r.varint() !== 0n;
    else if (f.kind === 'int') v = signed(r.varint());
    if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(v);
    else out[f.name] = v;
  }
  // Go writes every non-pointer field; JSON would have omitted the empty ones
  for (const [k, v] of Object.entries(out)) if (v === '' || (k === 'generation' && v === 0)) delete out[k];
  if (out.fieldsV1 && typeof out.fieldsV1 === 'object') out.fieldsV1 = (out.fieldsV1 as { Raw?: unknown }).Raw ?? {};
  return out;
}

/** The object in a protobuf body, as JSON would have carried it; 415 for kinds we cannot read. */
export function decodeProtobuf(body: Buffer): Record<string, unknown> {
  if (body.length < 4 || body.subarray(0, 4).toString('latin1') !== 'k8s\0')
    throw badRequest('protobuf: the body does not start with the "k8s\\x00" envelope prefix');
  const unknown = decodeMessage(body.subarray(4), {
    1: { name: 'typeMeta', message: { 1: { name: 'apiVersion', kind: 'string' }, 2: { name: 'kind', kind: 'string' } } },
    2: { name: 'raw', kind: 'bytes' },
  });
  const tm = (unknown.typeMeta ?? {}) as { apiVersion?: string; kind?: string };
  const desc = KINDS[`${tm.apiVersion ?? ''}/${tm.kind ?? ''}`];
  if (!desc) {
    throw unsupportedMediaType(
      `${PROTOBUF} (${tm.apiVersion ?? '?'}/${tm.kind ?? '?'}; this test server reads protobuf only for ${Object.keys(KINDS).join(', ')}: send JSON)`,
      ['application/json', 'application/yaml'],
    );
  }
  const raw = Buffer.from(typeof unknown.raw === 'string' ? unknown.raw : '', 'base64');
  return { apiVersion: tm.apiVersion, kind: tm.kind, ...decodeMessage(raw, desc) };
}
