/**
 * Where sources deliver what they read: domain objects, converted by the
 * source (src/sources/convert.ts). An object that does not convert is never
 * delivered; the source reports its problems and the last good version
 * stays in force. The agent decides what each kind feeds.
 */
import type { EndpointSlice, Node, Service } from '../model/types.js';
import type { Namespace, NetworkPolicy, Pod } from '../model/policy/types.js';
import type { Problem } from '../model/problem.js';
import { toEndpointSlice, toFelixConfiguration, toNode, toService, type ConvertPolicy, type FelixConfiguration } from './convert.js';
import { toNamespace, toNetworkPolicy, toPod } from './policy-convert.js';

export type Kind = 'Service' | 'EndpointSlice' | 'FelixConfiguration' | 'Node' | 'Pod' | 'Namespace' | 'NetworkPolicy';
export const KINDS: readonly Kind[] = ['Service', 'EndpointSlice', 'FelixConfiguration', 'Node', 'Pod', 'Namespace', 'NetworkPolicy'];
/** The kinds the NetworkPolicy model reads. */
export const POLICY_KINDS: readonly Kind[] = ['Pod', 'Namespace', 'NetworkPolicy'];

/**
 * Domain objects by kind. `key` is namespace/name, or the name when
 * cluster-scoped; undefined: deleted. `where` says where it was read
 * ("web.yaml document 2", "API"), for messages.
 */
export interface ObjectSink {
  applyService(key: string, svc: Service | undefined, where: string): void;
  applySlice(key: string, slice: EndpointSlice | undefined, where: string): void;
  applyNode(name: string, node: Node | undefined, where: string): void;
  applyFelixConfiguration(name: string, fc: FelixConfiguration | undefined, where: string): void;
  applyPod(key: string, pod: Pod | undefined, where: string): void;
  applyNamespace(name: string, ns: Namespace | undefined, where: string): void;
  applyNetworkPolicy(key: string, np: NetworkPolicy | undefined, where: string): void;
}

/** API versions we read for each kind. */
export const API_VERSIONS: Record<Kind, readonly string[]> = {
  Service: ['v1'],
  EndpointSlice: ['discovery.k8s.io/v1'],
  FelixConfiguration: ['crd.projectcalico.org/v1', 'projectcalico.org/v3'],
  Node: ['v1'],
  Pod: ['v1'],
  Namespace: ['v1'],
  NetworkPolicy: ['networking.k8s.io/v1'],
};

export const CLUSTER_SCOPED: ReadonlySet<Kind> = new Set(['FelixConfiguration', 'Node', 'Namespace']);

/** One converted object, tagged with its kind. */
export type DomainObject =
  | { kind: 'Service'; value: Service }
  | { kind: 'EndpointSlice'; value: EndpointSlice }
  | { kind: 'Node'; value: Node }
  | { kind: 'FelixConfiguration'; value: FelixConfiguration }
  | { kind: 'Pod'; value: Pod }
  | { kind: 'Namespace'; value: Namespace }
  | { kind: 'NetworkPolicy'; value: NetworkPolicy };

/** A Kubernetes object of `kind` to its domain object (none when a fatal problem dropped it), with the problems found. */
export function convertObject(
  kind: Kind,
  key: string,
  obj: unknown,
  policy: ConvertPolicy,
): { object?: DomainObject; problems: Problem[] } {
  switch (kind) {
    case 'Service': {
      const { value, problems } = toService(obj, policy);
      return value ? { object: { kind, value }, problems } : { problems };
    }
    case 'EndpointSlice': {
      const { value, problems } = toEndpointSlice(obj);
      return value ? { object: { kind, value }, problems } : { problems };
    }
    case 'Node': {
      const { value, problems } = toNode(obj);
      return value ? { object: { kind, value }, problems } : { problems };
    }
    case 'FelixConfiguration':
      return { object: { kind, value: toFelixConfiguration(key, obj) }, problems: [] };
    case 'Pod': {
      const { value, problems } = toPod(obj);
      return value ? { object: { kind, value }, problems } : { problems };
    }
    case 'Namespace': {
      const { value, problems } = toNamespace(obj);
      return value ? { object: { kind, value }, problems } : { problems };
    }
    case 'NetworkPolicy': {
      const { value, problems } = toNetworkPolicy(obj);
      return value ? { object: { kind, value }, problems } : { problems };
    }
  }
}

/** Hand a converted object to the sink. */
export function deliver(sink: ObjectSink, key: string, o: DomainObject, where: string): void {
  switch (o.kind) {
    case 'Service':
      return sink.applyService(key, o.value, where);
    case 'EndpointSlice':
      return sink.applySlice(key, o.value, where);
    case 'Node':
      return sink.applyNode(key, o.value, where);
    case 'FelixConfiguration':
      return sink.applyFelixConfiguration(key, o.value, where);
    case 'Pod':
      return sink.applyPod(key, o.value, where);
    case 'Namespace':
      return sink.applyNamespace(key, o.value, where);
    case 'NetworkPolicy':
      return sink.applyNetworkPolicy(key, o.value, where);
  }
}

/** Tell the sink an object is gone. */
export function withdraw(sink: ObjectSink, kind: Kind, key: string, where: string): void {
  switch (kind) {
    case 'Service':
      return sink.applyService(key, undefined, where);
    case 'EndpointSlice':
      return sink.applySlice(key, undefined, where);
    case 'Node':
      return sink.applyNode(key, undefined, where);
    case 'FelixConfiguration':
      return sink.applyFelixConfiguration(key, undefined, where);
    case 'Pod':
      return sink.applyPod(key, undefined, where);
    case 'Namespace':
      return sink.applyNamespace(key, undefined, where);
    case 'NetworkPolicy':
      return sink.applyNetworkPolicy(key, undefined, where);
  }
}

/** The part of a sink that feeds the service store. */
export interface ServiceObjects {
  applyService(key: string, svc: Service | undefined): void;
  applySlice(key: string, slice: EndpointSlice | undefined): void;
}

/** A sink for Services and EndpointSlices into `store`; the other kinds go to `other` (or are dropped). */
export function serviceSink(store: ServiceObjects, other: Partial<Omit<ObjectSink, 'applyService' | 'applySlice'>> = {}): ObjectSink {
  return {
    applyService: (key, svc) => store.applyService(key, svc),
    applySlice: (key, slice) => store.applySlice(key, slice),
    applyNode: (name, node, where) => other.applyNode?.(name, node, where),
    applyFelixConfiguration: (name, fc, where) => other.applyFelixConfiguration?.(name, fc, where),
    applyPod: (key, pod, where) => other.applyPod?.(key, pod, where),
    applyNamespace: (name, ns, where) => other.applyNamespace?.(name, ns, where),
    applyNetworkPolicy: (key, np, where) => other.applyNetworkPolicy?.(key, np, where),
  };
}
