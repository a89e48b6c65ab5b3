/**
 * The built-in kinds, with the defaulting and validation the real server
 * does for each where bpfproxy, its manifests or kubectl depend on it:
 * Service cluster IPs and node ports, Namespace phase, DaemonSet selector
 * and status, EndpointSlice address types, CRD names and status,
 * NetworkPolicy policyTypes and port protocols.
 */
import type { FieldError } from './errors.js';
import { builtin, type HookContext, type Obj, type ResourceType } from './registry.js';
import { text } from './util.js';
import { pathGetter } from './selectors.js';
import {
  clusterRoleBindingPrinter,
  configMapPrinter,
  createdAtPrinter,
  daemonSetPrinter,
  endpointSlicePrinter,
  eventPrinter,
  get,
  namespacePrinter,
  nodePrinter,
  podPrinter,
  serviceAccountPrinter,
  servicePrinter,
} from './table.js';

const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
const obj = (o: Obj, k: string): Obj => {
  const v = o[k];
  if (v && typeof v === 'object' && !Array.isArray(v)) return v as Obj;
  const fresh: Obj = {};
  o[k] = fresh;
  return fresh;
};
const deepEqual = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

// ---------------------------------------------------------------------------
// Service

const SERVICE_TYPES = ['ClusterIP', 'ExternalName', 'LoadBalancer', 'NodePort'];
const PROTOCOLS = ['SCTP', 'TCP', 'UDP'];
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function allocateClusterIP(ctx: HookContext): string {
  const used = new Set(ctx.list('/services').map((s) => get(s, 'spec', 'clusterIP')));
  for (let i = 1; i < 32768; i++) {
    const ip = `10.96.${128 + (i >> 8)}.${i & 255}`;
    if ((i & 255) !== 0 && !used.has(ip)) return ip;
  }
  throw new Error('the service cluster IP range 10.96.128.0/17 is full');
}

function allocateNodePort(ctx: HookContext, taken: Set<number>): number {
  for (const s of ctx.list('/services'))
    for (const p of arr(get(s, 'spec', 'ports'))) if (typeof p.nodePort === 'number') taken.add(p.nodePort);
  for (let p = 30000; p <= 32767; p++) if (!taken.has(p)) return p;
  throw new Error('the node port range 30000-32767 is full');
}

function defaultService(o: Obj, ctx: HookContext): void {
  const spec = obj(o, 'spec');
  spec.type ??= 'ClusterIP';
  spec.sessionAffinity ??= 'None';
  const ports = arr(spec.ports);
  for (const p of ports) {
    p.protocol ??= 'TCP';
    if (spec.type !== 'ExternalName') p.targetPort ??= p.port;
  }
  if (spec.type === 'ExternalName') return;
  if (spec.clusterIP === undefined || spec.clusterIP === '')
    spec.clusterIP = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length ? spec.clusterIPs[0] : allocateClusterIP(ctx);
  if (!Array.isArray(spec.clusterIPs) || spec.clusterIPs.length === 0) spec.clusterIPs = [spec.clusterIP];
  if (spec.clusterIP !== 'None') {
    spec.ipFamilies ??= ['IPv4'];
    spec.ipFamilyPolicy ??= 'SingleStack';
  }
  spec.internalTrafficPolicy ??= 'Cluster';
  if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
    spec.externalTrafficPolicy ??= 'Cluster';
    const taken = new Set<number>(ports.map((p) => p.nodePort).filter((n): n is number => typeof n === 'number'));
    for (const p of ports) if (p.nodePort === undefined) taken.add((p.nodePort = allocateNodePort(ctx, taken)));
  }
}

function validateService(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const spec = (o.spec ?? {}) as Obj;
  if (!SERVICE_TYPES.includes(String(spec.type)))
    errs.push({ type: 'FieldValueNotSupported', field: 'spec.type', value: spec.type, detail: '', supported: SERVICE_TYPES });
  const ports = arr(spec.ports);
  if (!ports.length && spec.type !== 'ExternalName' && spec.clusterIP !== 'None')
    errs.push({ type: 'FieldValueRequired', field: 'spec.ports', detail: '' });
  const names = new Set<string>();
  ports.forEach((p, i) => {
    const at = `spec.ports[${i}]`;
    if (typeof p.port !== 'number' || p.port < 1 || p.port > 65535)
      errs.push({ type: 'FieldValueInvalid', field: `${at}.port`, value: p.port, detail: 'must be between 1 and 65535, inclusive' });
    if (!PROTOCOLS.includes(String(p.protocol)))
      errs.push({ type: 'FieldValueNotSupported', field: `${at}.protocol`, value: p.protocol, detail: '', supported: PROTOCOLS });
    if (ports.length > 1 && !p.name) errs.push({ type: 'FieldValueRequired', field: `${at}.name`, detail: '' });
    if (typeof p.name === 'string' && p.name) {
      if (names.has(p.name)) errs.push({ type: 'FieldValueDuplicate', field: `${at}.name`, value: p.name, detail: '' });
      names.add(p.name);
    }
    if (p.nodePort !== undefined && (typeof p.nodePort !== 'number' || p.nodePort < 30000 || p.nodePort > 32767)) {
      errs.push({
        type: 'FieldValueInvalid',
        field: `${at}.nodePort`,
        value: p.nodePort,
        detail: 'provided port is not in the valid range. The range of valid ports is 30000-32767',
      });
    }
  });
  const ip = spec.clusterIP;
  if (typeof ip === 'string' && ip !== 'None' && ip !== '' && !IPV4.test(ip))
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.clusterIPs[0]',
      value: ip,
      detail: 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
    });
  if (old) {
    const was = get(old, 'spec', 'clusterIP');
    if (was !== undefined && was !== '' && ip !== was && spec.type !== 'ExternalName' && get(old, 'spec', 'type') !== 'ExternalName') {
      errs.push({ type: 'FieldValueInvalid', field: 'spec.clusterIPs[0]', value: ip, detail: 'may not change once set' });
    }
  }
  return errs;
}

/** An update that leaves out allocated values keeps them (the real server's patchAllocatedValues). */
function keepAllocated(next: Obj, old: Obj): void {
  const spec = obj(next, 'spec');
  const was = (old.spec ?? {}) as Obj;
  if (spec.type === 'ExternalName' || was.type === 'ExternalName') return;
  for (const k of ['clusterIP', 'clusterIPs', 'ipFamilies', 'ipFamilyPolicy'])
    if (spec[k] === undefined || spec[k] === '') spec[k] = structuredClone(was[k]);
  if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
    for (const p of arr(spec.ports)) {
      if (p.nodePort !== undefined) continue;
      const match = arr(was.ports).find((q) => q.port === p.port && (q.protocol ?? 'TCP') === (p.protocol ?? 'TCP'));
      if (match?.nodePort !== undefined) p.nodePort = match.nodePort;
    }
  }
}

// ---------------------------------------------------------------------------
// the rest

const ADDRESS_TYPES = ['FQDN', 'IPv4', 'IPv6'];

function validateEndpointSlice(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  if (!o.addressType) errs.push({ type: 'FieldValueRequired', field: 'addressType', detail: '' });
  else if (!ADDRESS_TYPES.includes(text(o.addressType)))
    errs.push({ type: 'FieldValueNotSupported', field: 'addressType', value: o.addressType, detail: '', supported: ADDRESS_TYPES });
  if (old && old.addressType !== o.addressType)
    errs.push({ type: 'FieldValueInvalid', field: 'addressType', value: o.addressType, detail: 'field is immutable' });
  arr(o.endpoints).forEach((e, i) => {
    const a = arr(e.addresses);
    if (a.length !== 1)
      errs.push({
        type: 'FieldValueInvalid',
        field: `endpoints[${i}].addresses`,
        value: e.addresses ?? [],
        detail: 'must contain exactly 1 address',
      });
  });
  arr(o.ports).forEach((p, i) => {
    if (p.port !== undefined && (typeof p.port !== 'number' || p.port < 1 || p.port > 65535))
      errs.push({ type: 'FieldValueInvalid', field: `ports[${i}].port`, value: p.port, detail: 'must be between 1 and 65535, inclusive' });
  });
  return errs;
}

function selectorMatches(selector: Obj, labels: Obj): boolean {
  const ml = (selector.matchLabels ?? {}) as Obj;
  if (!Object.entries(ml).every(([k, v]) => labels[k] === v)) return false;
  return arr(selector.matchExpressions).every((e) => {
    const has = Object.prototype.hasOwnProperty.call(labels, String(e.key));
    const v = labels[String(e.key)];
    const values = Array.isArray(e.values) ? e.values : [];
    switch (e.operator) {
      case 'In':
        return has && values.includes(v);
      case 'NotIn':
        return !has || !values.includes(v);
      case 'Exists':
        return has;
      case 'DoesNotExist':
        return !has;
      default:
        return false;
    }
  });
}

function validateContainers(containers: unknown, field: string): FieldError[] {
  const list = arr(containers);
  if (!list.length) return [{ type: 'FieldValueRequired', field, detail: '' }];
  const errs: FieldError[] = [];
  list.forEach((c, i) => {
    if (!c.name) errs.push({ type: 'FieldValueRequired', field: `${field}[${i}].name`, detail: '' });
    if (!c.image) errs.push({ type: 'FieldValueRequired', field: `${field}[${i}].image`, detail: '' });
  });
  return errs;
}

function validateDaemonSet(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const sel = get(o, 'spec', 'selector') as Obj | undefined;
  const labels = (get(o, 'spec', 'template', 'metadata', 'labels') ?? {}) as Obj;
  if (!sel || (!sel.matchLabels && !sel.matchExpressions)) errs.push({ type: 'FieldValueRequired', field: 'spec.selector', detail: '' });
  else if (!selectorMatches(sel, labels))
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.template.metadata.labels',
      value: labels,
      detail: '`selector` does not match template `labels`',
    });
  if (old && !deepEqual(get(old, 'spec', 'selector'), sel))
    errs.push({ type: 'FieldValueInvalid', field: 'spec.selector', value: sel, detail: 'field is immutable' });
  errs.push(...validateContainers(get(o, 'spec', 'template', 'spec', 'containers'), 'spec.template.spec.containers'));
  return errs;
}

/** container ports default to TCP, as the real server's defaulting does */
function defaultPodSpec(spec: unknown): void {
  if (!spec || typeof spec !== 'object') return;
  for (const field of ['containers', 'initContainers'])
    for (const c of arr((spec as Obj)[field])) for (const p of arr(c.ports)) p.protocol ??= 'TCP';
}

function defaultDaemonSet(o: Obj): void {
  const spec = obj(o, 'spec');
  defaultPodSpec(get(spec, 'template', 'spec'));
  spec.revisionHistoryLimit ??= 10;
  const strategy = obj(spec, 'updateStrategy');
  strategy.type ??= 'RollingUpdate';
  if (strategy.type === 'RollingUpdate') {
    const ru = obj(strategy, 'rollingUpdate');
    ru.maxUnavailable ??= 1;
    ru.maxSurge ??= 0;
  }
  o.status = { currentNumberScheduled: 0, desiredNumberScheduled: 0, numberMisscheduled: 0, numberReady: 0 };
}

const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;

function validateConfigMap(o: Obj): FieldError[] {
  const errs: FieldError[] = [];
  for (const field of ['data', 'binaryData']) {
    for (const k of Object.keys(o[field] ?? {})) {
      if (!CONFIG_KEY.test(k) || k.length > 253) {
        errs.push({
          type: 'FieldValueInvalid',
          field: `${field}[${k}]`,
          value: k,
          detail:
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        });
      }
    }
  }
  return errs;
}

function validateEvent(o: Obj): FieldError[] {
  const ns = get(o, 'metadata', 'namespace');
  const involved = get(o, 'involvedObject', 'namespace');
  if (involved && involved !== ns)
    return [{ type: 'FieldValueInvalid', field: 'involvedObject.namespace', value: involved, detail: 'does not match event.namespace' }];
  return [];
}

const SUBJECT_KINDS = ['Group', 'ServiceAccount', 'User'];

function validateBinding(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const ref = (o.roleRef ?? {}) as Obj;
  if (!ref.name) errs.push({ type: 'FieldValueRequired', field: 'roleRef.name', detail: '' });
  if (ref.kind !== 'ClusterRole')
    errs.push({ type: 'FieldValueNotSupported', field: 'roleRef.kind', value: ref.kind, detail: '', supported: ['ClusterRole'] });
  if (old && !deepEqual(old.roleRef, o.roleRef))
    errs.push({ type: 'FieldValueInvalid', field: 'roleRef', value: o.roleRef, detail: 'cannot change roleRef' });
  arr(o.subjects).forEach((s, i) => {
    if (!SUBJECT_KINDS.includes(String(s.kind)))
      errs.push({ type: 'FieldValueNotSupported', field: `subjects[${i}].kind`, value: s.kind, detail: '', supported: SUBJECT_KINDS });
    if (s.kind === 'ServiceAccount' && !s.namespace)
      errs.push({ type: 'FieldValueRequired', field: `subjects[${i}].namespace`, detail: '' });
    if (!s.name) errs.push({ type: 'FieldValueRequired', field: `subjects[${i}].name`, detail: '' });
  });
  return errs;
}

function validateClusterRole(o: Obj): FieldError[] {
  return arr(o.rules).flatMap((r, i) =>
    arr(r.verbs).length
      ? []
      : [{ type: 'FieldValueRequired' as const, field: `rules[${i}].verbs`, detail: 'verbs must contain at least one value' }],
  );
}

// ---------------------------------------------------------------------------
// CustomResourceDefinition

function validateCrd(o: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const spec = (o.spec ?? {}) as Obj;
  const names = (spec.names ?? {}) as Obj;
  if (!spec.group) errs.push({ type: 'FieldValueRequired', field: 'spec.group', detail: '' });
  if (!names.plural) errs.push({ type: 'FieldValueRequired', field: 'spec.names.plural', detail: '' });
  if (!names.kind) errs.push({ type: 'FieldValueRequired', field: 'spec.names.kind', detail: '' });
  const name = get(o, 'metadata', 'name');
  if (names.plural && spec.group && name !== `${text(names.plural)}.${text(spec.group)}`) {
    errs.push({ type: 'FieldValueInvalid', field: 'metadata.name', value: name, detail: 'must be spec.names.plural+"."+spec.group' });
  }
  if (spec.scope !== 'Cluster' && spec.scope !== 'Namespaced')
    errs.push({ type: 'FieldValueNotSupported', field: 'spec.scope', value: spec.scope, detail: '', supported: ['Cluster', 'Namespaced'] });
  const versions = arr(spec.versions);
  if (!versions.length)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.versions',
      value: [],
      detail: 'must have exactly one version marked as storage version',
    });
  else if (versions.filter((v) => v.storage === true).length !== 1)
    errs.push({
      type: 'FieldValueInvalid',
      field: 'spec.versions',
      value: versions.map((v) => v.name),
      detail: 'must have exactly one version marked as storage version',
    });
  versions.forEach((v, i) => {
    if (!get(v, 'schema', 'openAPIV3Schema'))
      errs.push({ type: 'FieldValueRequired', field: `spec.versions[${i}].schema.openAPIV3Schema`, detail: 'schemas are required' });
  });
  if (old) {
    if (get(old, 'spec', 'group') !== spec.group)
      errs.push({ type: 'FieldValueInvalid', field: 'spec.group', value: spec.group, detail: 'field is immutable' });
    if (get(old, 'spec', 'scope') !== spec.scope)
      errs.push({ type: 'FieldValueInvalid', field: 'spec.scope', value: spec.scope, detail: 'field is immutable' });
  }
  return errs;
}

/** The real server's controllers accept the names and establish the CRD right away here. */
function establishCrd(o: Obj, ctx: HookContext): void {
  const spec = (o.spec ?? {}) as Obj;
  const storage = arr(spec.versions).find((v) => v.storage === true);
  const cond = (type: string, reason: string, message: string): Obj => ({
    type,
    status: 'True',
    lastTransitionTime: ctx.now,
    reason,
    message,
  });
  o.status = {
    acceptedNames: structuredClone(spec.names),
    conditions: [
      cond('NamesAccepted', 'NoConflicts', 'no conflicts found'),
      cond('Established', 'InitialNamesAccepted', 'the initial names have been accepted'),
    ],
    storedVersions: storage ? [storage.name] : [],
  };
}

// ---------------------------------------------------------------------------
// Events: core/v1 is the stored form; events.k8s.io/v1 is converted

const RENAMES: Array<[core: string, events: string]> = [
  ['involvedObject', 'regarding'],
  ['message', 'note'],
  ['reportingComponent', 'reportingController'],
  ['source', 'deprecatedSource'],
  ['firstTimestamp', 'deprecatedFirstTimestamp'],
  ['lastTimestamp', 'deprecatedLastTimestamp'],
  ['count', 'deprecatedCount'],
];
const SHARED = ['metadata', 'eventTime', 'series', 'reportingInstance', 'action', 'reason', 'related', 'type'];

function eventsToCore(o: Obj): Obj {
  const out: Obj = { apiVersion: 'v1', kind: 'Event' };
  for (const k of SHARED) if (o[k] !== undefined) out[k] = o[k];
  for (const [c, e] of RENAMES) if (o[e] !== undefined) out[c] = o[e];
  return out;
}

function coreToEvents(o: Obj): Obj {
  const out: Obj = { apiVersion: 'events.k8s.io/v1', kind: 'Event' };
  for (const k of SHARED) if (o[k] !== undefined) out[k] = o[k];
  for (const [c, e] of RENAMES) if (o[c] !== undefined) out[e] = o[c];
  return out;
}

const EVENT_FIELDS = Object.fromEntries(
  [
    'involvedObject.kind',
    'involvedObject.namespace',
    'involvedObject.name',
    'involvedObject.uid',
    'involvedObject.apiVersion',
    'involvedObject.resourceVersion',
    'involvedObject.fieldPath',
    'reason',
    'reportingComponent',
    'source',
    'type',
  ].map((f) => [f, f === 'source' ? (o: Obj) => text(get(o, 'source', 'component')) : pathGetter(f)]),
);

// ---------------------------------------------------------------------------
// NetworkPolicy

/**
 * SetDefaults_NetworkPolicySpec and SetDefaults_NetworkPolicyPort: an
 * empty policyTypes becomes Ingress, plus Egress when spec.egress has
 * rules; a port without protocol is TCP.
 */
function defaultNetworkPolicy(o: Obj): void {
  const spec = obj(o, 'spec');
  spec.podSelector ??= {};
  for (const dir of ['ingress', 'egress']) {
    for (const rule of arr(spec[dir])) for (const p of arr(rule.ports)) p.protocol ??= 'TCP';
  }
  if (!Array.isArray(spec.policyTypes) || spec.policyTypes.length === 0) {
    spec.policyTypes = ['Ingress', ...(arr(spec.egress).length > 0 ? ['Egress'] : [])];
  }
}

// ---------------------------------------------------------------------------

export function builtinKinds(): ResourceType[] {
  return [
    builtin({
      group: '',
      version: 'v1',
      kind: 'Namespace',
      plural: 'namespaces',
      namespaced: false,
      model: 'V1Namespace',
      shortNames: ['ns'],
      nameRule: 'label',
      subresources: ['status'],
      printer: namespacePrinter,
      fieldSelectors: { 'status.phase': pathGetter('status.phase') },
      prepareCreate: (o) => {
        const meta = obj(o, 'metadata');
        obj(meta, 'labels')['kubernetes.io/metadata.name'] = meta.name;
        const spec = obj(o, 'spec');
        spec.finalizers ??= ['kubernetes'];
        o.status = { phase: 'Active' };
      },
      prepareUpdate: (o) => {
        const meta = obj(o, 'metadata');
        obj(meta, 'labels')['kubernetes.io/metadata.name'] = meta.name;
      },
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Service',
      plural: 'services',
      namespaced: true,
      model: 'V1Service',
      shortNames: ['svc'],
      categories: ['all'],
      nameRule: 'dns1035',
      subresources: ['status'],
      printer: servicePrinter,
      fieldSelectors: { 'spec.clusterIP': pathGetter('spec.clusterIP'), 'spec.type': pathGetter('spec.type') },
      prepareCreate: (o, ctx) => {
        o.status = { loadBalancer: {} };
        defaultService(o, ctx);
      },
      prepareUpdate: (o, old, ctx) => {
        keepAllocated(o, old);
        defaultService(o, ctx);
      },
      validate: validateService,
    }),
    builtin({
      group: 'discovery.k8s.io',
      version: 'v1',
      kind: 'EndpointSlice',
      plural: 'endpointslices',
      namespaced: true,
      model: 'V1EndpointSlice',
      printer: endpointSlicePrinter,
      validate: validateEndpointSlice,
      prepareCreate: (o) => {
        for (const p of arr(o.ports)) p.protocol ??= 'TCP';
      },
      prepareUpdate: (o) => {
        for (const p of arr(o.ports)) p.protocol ??= 'TCP';
      },
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Node',
      plural: 'nodes',
      namespaced: false,
      model: 'V1Node',
      shortNames: ['no'],
      subresources: ['status'],
      printer: nodePrinter,
      fieldSelectors: { 'spec.unschedulable': (o) => text(get(o, 'spec', 'unschedulable') ?? false) },
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Pod',
      plural: 'pods',
      namespaced: true,
      model: 'V1Pod',
      shortNames: ['po'],
      categories: ['all'],
      subresources: ['status', 'log'],
      printer: podPrinter,
      fieldSelectors: Object.fromEntries(
        [
          'spec.nodeName',
          'spec.restartPolicy',
          'spec.schedulerName',
          'spec.serviceAccountName',
          'status.phase',
          'status.podIP',
          'status.nominatedNodeName',
        ].map((f) => [f, pathGetter(f)]),
      ),
      prepareCreate: (o) => {
        const spec = obj(o, 'spec');
        spec.restartPolicy ??= 'Always';
        defaultPodSpec(spec);
        o.status = { phase: 'Pending', qosClass: 'BestEffort' };
      },
      validate: (o) => validateContainers(get(o, 'spec', 'containers'), 'spec.containers'),
    }),
    builtin({
      group: 'networking.k8s.io',
      version: 'v1',
      kind: 'NetworkPolicy',
      plural: 'networkpolicies',
      namespaced: true,
      model: 'V1NetworkPolicy',
      shortNames: ['netpol'],
      printer: createdAtPrinter,
      generation: true,
      prepareCreate: defaultNetworkPolicy,
      prepareUpdate: defaultNetworkPolicy,
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Event',
      plural: 'events',
      namespaced: true,
      model: 'CoreV1Event',
      shortNames: ['ev'],
      printer: eventPrinter,
      fieldSelectors: EVENT_FIELDS,
      validate: validateEvent,
    }),
    builtin({
      group: 'events.k8s.io',
      version: 'v1',
      kind: 'Event',
      plural: 'events',
      namespaced: true,
      model: 'EventsV1Event',
      shortNames: ['ev'],
      storageKey: '/events',
      toStorage: eventsToCore,
      fromStorage: coreToEvents,
      printer: eventPrinter,
      printStored: true,
      fieldSelectors: EVENT_FIELDS,
      validate: validateEvent,
    }),
    builtin({
      group: 'apps',
      version: 'v1',
      kind: 'DaemonSet',
      plural: 'daemonsets',
      namespaced: true,
      model: 'V1DaemonSet',
      shortNames: ['ds'],
      categories: ['all'],
      subresources: ['status'],
      printer: daemonSetPrinter,
      generation: true,
      validate: validateDaemonSet,
      prepareCreate: defaultDaemonSet,
      prepareUpdate: (o) => defaultPodSpec(get(o, 'spec', 'template', 'spec')),
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'ConfigMap',
      plural: 'configmaps',
      namespaced: true,
      model: 'V1ConfigMap',
      shortNames: ['cm'],
      printer: configMapPrinter,
      validate: validateConfigMap,
    }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'ServiceAccount',
      plural: 'serviceaccounts',
      namespaced: true,
      model: 'V1ServiceAccount',
      shortNames: ['sa'],
      printer: serviceAccountPrinter,
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRole',
      plural: 'clusterroles',
      namespaced: false,
      model: 'V1ClusterRole',
      nameRule: 'path',
      printer: createdAtPrinter,
      validate: validateClusterRole,
    }),
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRoleBinding',
      plural: 'clusterrolebindings',
      namespaced: false,
      model: 'V1ClusterRoleBinding',
      nameRule: 'path',
      printer: clusterRoleBindingPrinter,
      validate: validateBinding,
    }),
    builtin({
      group: 'apiextensions.k8s.io',
      version: 'v1',
      kind: 'CustomResourceDefinition',
      plural: 'customresourcedefinitions',
      namespaced: false,
      model: 'V1CustomResourceDefinition',
      shortNames: ['crd', 'crds'],
      categories: ['api-extensions'],
      subresources: ['status'],
      printer: createdAtPrinter,
      generation: true,
      validate: validateCrd,
      prepareCreate: establishCrd,
      prepareUpdate: (o, _old, ctx) => establishCrd(o, ctx),
    }),
  ];
}
