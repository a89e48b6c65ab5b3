/**
 * Reads the Kubernetes protobuf encoding (application/vnd.kubernetes.protobuf)
 * for the kinds kubectl sends that way with no JSON fallback (a 415 is not
 * retried): its typed `kubectl create namespace|configmap|serviceaccount|
 * service|clusterrole|clusterrolebinding`, and DeleteOptions.
 * The envelope is "k8s\0" + runtime.Unknown{typeMeta, raw}; raw is the
 * object's message. Field numbers are those of the generated.proto files
 * of k8s.io/api and k8s.io/apimachinery.
 */
import { badRequest, unsupportedMediaType } from './errors.js';

type Kind = 'string' | 'bool' | 'int' | 'bytes' | 'time' | 'json-bytes' | 'intstr';
interface Field {
  name: string;
  kind?: Kind;
  message?: Desc;
  repeated?: boolean;
  /** map<string, string|bytes> */
  map?: 'string' | 'bytes';
  /** a pointer in Go: a zero value ("", 0, false) was set on purpose and is kept */
  ptr?: boolean;
}
type Desc = Record<number, Field>;

const str = (name: string): Field => ({ name, kind: 'string' });
const strs = (name: string): Field => ({ name, kind: 'string', repeated: true });
const int = (name: string, ptr = false): Field => ({ name, kind: 'int', ptr });
const bool = (name: string, ptr = false): Field => ({ name, kind: 'bool', ptr });
const msg = (name: string, message: Desc, repeated = false): Field => ({ name, message, repeated });

const OWNER_REFERENCE: Desc = {
  5: str('apiVersion'),
  1: str('kind'),
  3: str('name'),
  4: str('uid'),
  6: bool('controller', true),
  7: bool('blockOwnerDeletion', true),
};
const MANAGED_FIELDS: Desc = {
  1: str('manager'),
  2: str('operation'),
  3: str('apiVersion'),
  4: { name: 'time', kind: 'time' },
  6: str('fieldsType'),
  7: msg('fieldsV1', { 1: { name: 'Raw', kind: 'json-bytes' } }),
  8: str('subresource'),
};
const OBJECT_META: Desc = {
  1: str('name'),
  2: str('generateName'),
  3: str('namespace'),
  4: str('selfLink'),
  5: str('uid'),
  6: str('resourceVersion'),
  7: int('generation'),
  8: { name: 'creationTimestamp', kind: 'time' },
  9: { name: 'deletionTimestamp', kind: 'time' },
  10: int('deletionGracePeriodSeconds', true),
  11: { name: 'labels', map: 'string' },
  12: { name: 'annotations', map: 'string' },
  13: msg('ownerReferences', OWNER_REFERENCE, true),
  14: strs('finalizers'),
  17: msg('managedFields', MANAGED_FIELDS, true),
};
const OBJECT_REFERENCE: Desc = {
  1: str('kind'),
  2: str('namespace'),
  3: str('name'),
  4: str('uid'),
  5: str('apiVersion'),
  6: str('resourceVersion'),
  7: str('fieldPath'),
};
const LABEL_SELECTOR: Desc = {
  1: { name: 'matchLabels', map: 'string' },
  2: msg('matchExpressions', { 1: str('key'), 2: str('operator'), 3: strs('values') }, true),
};
const SERVICE_PORT: Desc = {
  1: str('name'),
  2: str('protocol'),
  6: { ...str('appProtocol'), ptr: true },
  3: int('port'),
  4: { name: 'targetPort', kind: 'intstr' },
  5: int('nodePort'),
};
const SERVICE_SPEC: Desc = {
  1: msg('ports', SERVICE_PORT, true),
  2: { name: 'selector', map: 'string' },
  3: str('clusterIP'),
  18: strs('clusterIPs'),
  4: str('type'),
  5: strs('externalIPs'),
  7: str('sessionAffinity'),
  8: str('loadBalancerIP'),
  9: strs('loadBalancerSourceRanges'),
  10: str('externalName'),
  11: str('externalTrafficPolicy'),
  12: int('healthCheckNodePort'),
  13: bool('publishNotReadyAddresses'),
  14: msg('sessionAffinityConfig', { 1: msg('clientIP', { 1: int('timeoutSeconds', true) }) }),
  19: strs('ipFamilies'),
  17: { ...str('ipFamilyPolicy'), ptr: true },
  20: bool('allocateLoadBalancerNodePorts', true),
  21: { ...str('loadBalancerClass'), ptr: true },
  22: { ...str('internalTrafficPolicy'), ptr: true },
  23: { ...str('trafficDistribution'), ptr: true },
};

/** Messages by "apiVersion/Kind" of the envelope (status is not read: creates reset it). */
const KINDS: Record<string, Desc> = {
  'v1/Namespace': { 1: msg('metadata', OBJECT_META), 2: msg('spec', { 1: strs('finalizers') }) },
  'v1/ConfigMap': {
    1: msg('metadata', OBJECT_META),
    4: bool('immutable', true),
    2: { name: 'data', map: 'string' },
    3: { name: 'binaryData', map: 'bytes' },
  },
  'v1/ServiceAccount': {
    1: msg('metadata', OBJECT_META),
    2: msg('secrets', OBJECT_REFERENCE, true),
    3: msg('imagePullSecrets', { 1: str('name') }, true),
    4: bool('automountServiceAccountToken', true),
  },
  'v1/Service': { 1: msg('metadata', OBJECT_META), 2: msg('spec', SERVICE_SPEC) },
  'rbac.authorization.k8s.io/v1/ClusterRole': {
    1: msg('metadata', OBJECT_META),
    2: msg(
      'rules',
      { 1: strs('verbs'), 2: strs('apiGroups'), 3: strs('resources'), 4: strs('resourceNames'), 5: strs('nonResourceURLs') },
      true,
    ),
    3: msg('aggregationRule', { 1: msg('clusterRoleSelectors', LABEL_SELECTOR, true) }),
  },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': {
    1: msg('metadata', OBJECT_META),
    2: msg('subjects', { 1: str('kind'), 2: str('apiGroup'), 3: str('name'), 4: str('namespace') }, true),
    3: msg('roleRef', { 1: str('apiGroup'), 2: str('kind'), 3: str('name') }),
  },
  'v1/DeleteOptions': {
    1: int('gracePeriodSeconds', true),
    2: msg('preconditions', { 1: { ...str('uid'), ptr: true }, 2: { ...str('resourceVersion'), ptr: true } }),
    3: bool('orphanDependents', true),
    4: { ...str('propagationPolicy'), ptr: true },
    5: strs('dryRun'),
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
    else if (f.kind === 'intstr') {
      const is = decodeMessage(r.bytes(), { 1: int('type', true), 2: int('intVal', true), 3: { ...str('strVal'), ptr: true } });
      v = is.type === 1 ? (is.strVal ?? '') : (is.intVal ?? 0);
    } else if (f.kind === 'bool') v = r.varint() !== 0n;
    else if (f.kind === 'int') v = signed(r.varint());
    if (f.repeated) ((out[f.name] ??= []) as unknown[]).push(v);
    else out[f.name] = v;
  }
  // Go writes every non-pointer field; JSON (omitempty) would have left out the zero ones
  for (const f of Object.values(desc)) {
    const v = out[f.name];
    if (!f.ptr && !f.repeated && !f.map && !f.message && (v === '' || v === 0 || v === false)) delete out[f.name];
  }
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
