/**
 * Structural schemas: what each kind's fields are, their types, and how
 * lists and maps merge. One model serves strict field validation and
 * pruning, strategic merge patch, server-side apply field sets and the
 * OpenAPI v3 documents kubectl reads.
 *
 * Built-in kinds are described from @kubernetes/client-node's generated
 * models (every field with its JSON name and type) plus the list and map
 * markers of the Kubernetes Go types that the models do not carry
 * (MARKERS below). Custom resources take their schema from the CRD's
 * openAPIV3Schema.
 */
import * as models from '@kubernetes/client-node';

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  /** named definition this schema stands for (resolved through a Schemas registry) */
  ref?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema;
  items?: Schema;
  format?: string;
  enum?: unknown[];
  default?: unknown;
  required?: string[];
  nullable?: boolean;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  /** any value at all is kept (x-kubernetes-preserve-unknown-fields) */
  preserveUnknown?: boolean;
  intOrString?: boolean;
  embeddedResource?: boolean;
  listType?: 'atomic' | 'set' | 'map';
  listMapKeys?: string[];
  mapType?: 'atomic' | 'granular';
  structType?: 'atomic' | 'granular';
  patchStrategy?: string;
  patchMergeKey?: string;
  description?: string;
}

/** Named definitions (component schemas), so recursive types stay finite. */
export class Schemas {
  readonly defs = new Map<string, Schema>();

  resolve(s: Schema | undefined): Schema | undefined {
    let cur = s;
    for (let i = 0; cur?.ref && i < 16; i++) {
      const target = this.defs.get(cur.ref);
      if (!target) return undefined;
      // markers on the reference (patch strategy of a field) win over the target's
      const { ref: _ref, ...own } = cur;
      cur = { ...target, ...own };
    }
    return cur;
  }

  /** The schema of an object's field: declared property, map value, or undefined if unknown. */
  field(s: Schema | undefined, key: string): { schema: Schema | undefined; declared: boolean } {
    const r = this.resolve(s);
    if (!r) return { schema: undefined, declared: false };
    const p = r.properties?.[key];
    if (p) return { schema: p, declared: true };
    if (r.additionalProperties) return { schema: r.additionalProperties, declared: false };
    if (r.preserveUnknown) return { schema: { preserveUnknown: true }, declared: false };
    return { schema: undefined, declared: false };
  }
}

export type ListKind = { kind: 'atomic' } | { kind: 'set' } | { kind: 'map'; keys: string[] };

/** How a list merges for server-side apply: associative by keys, a set, or atomic. */
export function listKind(s: Schema): ListKind {
  if (s.listType === 'map' && s.listMapKeys?.length) return { kind: 'map', keys: s.listMapKeys };
  if (s.listType === 'set') return { kind: 'set' };
  if (s.listType === 'atomic') return { kind: 'atomic' };
  const merge = s.patchStrategy?.split(',').includes('merge');
  if (merge && s.patchMergeKey) return { kind: 'map', keys: [s.patchMergeKey] };
  if (merge) return { kind: 'set' };
  return { kind: 'atomic' };
}

/** A scalar, an atomic struct or map, or an unstructured value: owned and replaced as a whole. */
export function isAtomic(s: Schema): boolean {
  if (s.intOrString) return true;
  if (s.type === 'object' || s.properties || s.additionalProperties) {
    if (s.structType === 'atomic' || s.mapType === 'atomic') return true;
    return false;
  }
  if (s.type === 'array') return listKind(s).kind === 'atomic';
  if (s.preserveUnknown) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Built-in kinds from the client-node models

type Marker = Pick<Schema, 'listType' | 'listMapKeys' | 'mapType' | 'patchStrategy' | 'patchMergeKey'>;

const mapList = (key: string, ...more: string[]): Marker => ({
  patchStrategy: 'merge',
  patchMergeKey: key,
  listType: 'map',
  listMapKeys: [key, ...more],
});
const byName = mapList('name');
const byType = mapList('type');
const containerMarkers: Record<string, Marker> = {
  ports: mapList('containerPort', 'protocol'),
  env: byName,
  volumeMounts: mapList('mountPath'),
  volumeDevices: mapList('devicePath'),
};

/**
 * List and map markers of the Go types (+patchStrategy, +patchMergeKey,
 * +listType, +listMapKey, +mapType), keyed by client-node model and JSON
 * field. Lists not named here are atomic, as in the Go types.
 */
const MARKERS: Record<string, Record<string, Marker>> = {
  V1ObjectMeta: { ownerReferences: mapList('uid'), finalizers: { patchStrategy: 'merge', listType: 'set' } },
  V1PodSpec: {
    containers: byName,
    initContainers: byName,
    ephemeralContainers: byName,
    volumes: { ...byName, patchStrategy: 'merge,retainKeys' },
    imagePullSecrets: byName,
    hostAliases: mapList('ip'),
    topologySpreadConstraints: mapList('topologyKey', 'whenUnsatisfiable'),
    schedulingGates: byName,
    resourceClaims: { ...byName, patchStrategy: 'merge,retainKeys' },
    nodeSelector: { mapType: 'atomic' },
  },
  V1Container: containerMarkers,
  V1EphemeralContainer: containerMarkers,
  V1ContainerStatus: { volumeMounts: mapList('mountPath'), allocatedResourcesStatus: byName },
  V1PodStatus: { conditions: byType, podIPs: mapList('ip'), resourceClaimStatuses: { ...byName, patchStrategy: 'merge,retainKeys' } },
  V1ServiceSpec: { ports: mapList('port', 'protocol'), selector: { mapType: 'atomic' } },
  V1ServiceStatus: { conditions: byType },
  V1ServiceAccount: { secrets: byName },
  V1NodeSpec: { podCIDRs: { patchStrategy: 'merge', listType: 'set' } },
  V1NodeStatus: { conditions: byType, addresses: byType },
  V1NamespaceStatus: { conditions: byType },
  V1DaemonSetStatus: { conditions: byType },
  V1DeploymentStatus: { conditions: byType },
  V1ReplicationControllerSpec: { selector: { mapType: 'atomic' } },
  V1Endpoint: { addresses: { listType: 'set' } },
  V1ResourceRequirements: { claims: { listType: 'map', listMapKeys: ['name'] } },
  V1CustomResourceDefinitionStatus: { conditions: byType },
};

/** Defaults the real schemas declare, needed where a defaulted field is a list-map key (protocol). */
const DEFAULTS: Record<string, Record<string, unknown>> = {
  V1ServicePort: { protocol: 'TCP' },
  V1ContainerPort: { protocol: 'TCP' },
  DiscoveryV1EndpointPort: { protocol: 'TCP' },
};

/** Structs that are replaced and owned as a whole (+structType=atomic). */
const ATOMIC_STRUCTS = new Set([
  'V1LabelSelector',
  'V1OwnerReference',
  'V1ObjectReference',
  'V1LocalObjectReference',
  'V1TypedLocalObjectReference',
  'V1SecretReference',
  'V1FileKeySelector',
  'V1ObjectFieldSelector',
  'V1ResourceFieldSelector',
  'V1ConfigMapKeySelector',
  'V1SecretKeySelector',
  'V1NodeSelector',
  'V1NodeSelectorTerm',
  'V1TopologySelectorTerm',
  'V1EndpointAddress',
  'CoreV1EndpointPort',
  'DiscoveryV1EndpointPort',
  'RbacV1Subject',
  'V1RoleRef',
  'V1ScopeSelector',
]);

/** resource.Quantity fields: a string ("96Mi") or a number (2). The models type them as strings. */
const QUANTITY_MAPS: Record<string, string[]> = {
  V1ResourceRequirements: ['limits', 'requests'],
  V1NodeStatus: ['capacity', 'allocatable'],
  V1ContainerStatus: ['allocatedResources'],
  V1ResourceQuotaSpec: ['hard'],
  V1ResourceQuotaStatus: ['hard', 'used'],
};
const QUANTITY_FIELDS: Record<string, string[]> = { V1EmptyDirVolumeSource: ['sizeLimit'] };

interface Attr {
  name: string;
  baseName: string;
  type: string;
  format: string;
}
type Model = { getAttributeTypeMap(): Attr[] };
const MODELS = models as unknown as Record<string, Model | undefined>;

function scalar(type: string, format: string): Schema | undefined {
  switch (type) {
    case 'string':
      return format ? { type: 'string', format } : { type: 'string' };
    case 'number':
      return format === 'double' || format === 'float' || !format
        ? { type: 'number', ...(format ? { format } : {}) }
        : { type: 'integer', format };
    case 'boolean':
      return { type: 'boolean' };
    case 'Date':
      return { type: 'string', format: 'date-time' };
    case 'IntOrString':
      return { intOrString: true, format: 'int-or-string' };
    case 'any':
    case 'object':
      return { preserveUnknown: true };
    default:
      return undefined;
  }
}

/** Defines `model` (and everything it references) in `into`; returns a reference to it. */
export function fromModel(into: Schemas, model: string): Schema {
  const ref = { ref: model };
  if (into.defs.has(model)) return ref;
  const cls = MODELS[model];
  if (!cls?.getAttributeTypeMap) {
    // time types without fields of their own (V1MicroTime)
    into.defs.set(model, { type: 'string', format: 'date-time' });
    return ref;
  }
  const def: Schema = { type: 'object', properties: {} };
  if (ATOMIC_STRUCTS.has(model)) def.structType = 'atomic';
  into.defs.set(model, def);
  const markers = MARKERS[model] ?? {};
  for (const a of cls.getAttributeTypeMap()) {
    let s = typeSchema(into, a.type, a.format);
    if (QUANTITY_MAPS[model]?.includes(a.baseName)) s = { type: 'object', additionalProperties: { intOrString: true, format: 'quantity' } };
    if (QUANTITY_FIELDS[model]?.includes(a.baseName)) s = { intOrString: true, format: 'quantity' };
    const m = markers[a.baseName];
    if (m) s = { ...s, ...m };
    const dflt = DEFAULTS[model]?.[a.baseName];
    if (dflt !== undefined) s = { ...s, default: dflt };
    def.properties![a.baseName] = s;
  }
  return ref;
}

function typeSchema(into: Schemas, type: string, format: string): Schema {
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return { type: 'array', items: typeSchema(into, arr[1]!, format) };
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return { type: 'object', additionalProperties: typeSchema(into, map[1]!, format) };
  return scalar(type, format) ?? fromModel(into, type);
}

// ---------------------------------------------------------------------------
// Custom resources from a CRD's openAPIV3Schema

type Json = Record<string, unknown>;

/** The CRD schema as our structural schema; unknown keywords are ignored. */
export function fromOpenAPIV3(j: Json | undefined): Schema {
  if (!j || typeof j !== 'object') return { preserveUnknown: true };
  const s: Schema = {};
  const t = j.type;
  if (t === 'object' || t === 'array' || t === 'string' || t === 'integer' || t === 'number' || t === 'boolean') s.type = t;
  if (j.properties && typeof j.properties === 'object') {
    s.properties = {};
    for (const [k, v] of Object.entries(j.properties as Json)) s.properties[k] = fromOpenAPIV3(v as Json);
  }
  if (j.additionalProperties && typeof j.additionalProperties === 'object')
    s.additionalProperties = fromOpenAPIV3(j.additionalProperties as Json);
  if (j.items && typeof j.items === 'object') s.items = fromOpenAPIV3(j.items as Json);
  if (typeof j.format === 'string') s.format = j.format;
  if (Array.isArray(j.enum)) s.enum = j.enum;
  if ('default' in j) s.default = j.default;
  if (Array.isArray(j.required)) s.required = j.required as string[];
  if (j.nullable === true) s.nullable = true;
  for (const k of ['minimum', 'maximum', 'minLength', 'maxLength'] as const) if (typeof j[k] === 'number') s[k] = j[k];
  if (typeof j.pattern === 'string') s.pattern = j.pattern;
  if (typeof j.description === 'string') s.description = j.description;
  if (j['x-kubernetes-preserve-unknown-fields'] === true) s.preserveUnknown = true;
  if (j['x-kubernetes-int-or-string'] === true) s.intOrString = true;
  if (j['x-kubernetes-embedded-resource'] === true) s.embeddedResource = true;
  const lt = j['x-kubernetes-list-type'];
  if (lt === 'atomic' || lt === 'set' || lt === 'map') s.listType = lt;
  if (Array.isArray(j['x-kubernetes-list-map-keys'])) s.listMapKeys = j['x-kubernetes-list-map-keys'] as string[];
  const mt = j['x-kubernetes-map-type'];
  if (mt === 'atomic' || mt === 'granular') s.mapType = mt;
  return s;
}

/** Our schema as an OpenAPI v3 schema object (component references under #/components/schemas). */
export function toOpenAPIV3(s: Schema): Json {
  if (s.ref) {
    const extra = markersJson(s);
    return Object.keys(extra).length
      ? { allOf: [{ $ref: `#/components/schemas/${s.ref}` }], ...extra }
      : { $ref: `#/components/schemas/${s.ref}` };
  }
  const j: Json = {};
  if (s.type) j.type = s.type;
  if (s.description) j.description = s.description;
  if (s.format) j.format = s.format;
  if (s.enum) j.enum = s.enum;
  if (s.default !== undefined) j.default = s.default;
  if (s.required) j.required = s.required;
  if (s.nullable) j.nullable = true;
  for (const k of ['minimum', 'maximum', 'minLength', 'maxLength', 'pattern'] as const) if (s[k] !== undefined) j[k] = s[k];
  if (s.properties) j.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, toOpenAPIV3(v)]));
  if (s.additionalProperties) j.additionalProperties = toOpenAPIV3(s.additionalProperties);
  if (s.items) j.items = toOpenAPIV3(s.items);
  if (s.preserveUnknown) j['x-kubernetes-preserve-unknown-fields'] = true;
  if (s.intOrString) j['x-kubernetes-int-or-string'] = true;
  if (s.embeddedResource) j['x-kubernetes-embedded-resource'] = true;
  if (s.structType) j['x-kubernetes-map-type'] = s.structType;
  return { ...j, ...markersJson(s) };
}

function markersJson(s: Schema): Json {
  const j: Json = {};
  if (s.listType) j['x-kubernetes-list-type'] = s.listType;
  if (s.listMapKeys) j['x-kubernetes-list-map-keys'] = s.listMapKeys;
  if (s.mapType) j['x-kubernetes-map-type'] = s.mapType;
  if (s.patchStrategy) j['x-kubernetes-patch-strategy'] = s.patchStrategy;
  if (s.patchMergeKey) j['x-kubernetes-patch-merge-key'] = s.patchMergeKey;
  return j;
}
