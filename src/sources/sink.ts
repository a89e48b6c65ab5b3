/** Where sources deliver objects; the agent decides what each kind feeds. */
import type { Problem } from './convert.js';

export type Kind = 'Service' | 'EndpointSlice' | 'FelixConfiguration' | 'Node';
export const KINDS: readonly Kind[] = ['Service', 'EndpointSlice', 'FelixConfiguration', 'Node'];

export interface ObjectSink {
  /** Record an object (undefined: deleted). `key` is namespace/name, or name when cluster-scoped. */
  apply(kind: Kind, key: string, obj: unknown, where: string): Problem[];
}

/** API versions we read for each kind. */
export const API_VERSIONS: Record<Kind, readonly string[]> = {
  Service: ['v1'],
  EndpointSlice: ['discovery.k8s.io/v1'],
  FelixConfiguration: ['crd.projectcalico.org/v1', 'projectcalico.org/v3'],
  Node: ['v1'],
};

export const CLUSTER_SCOPED: ReadonlySet<Kind> = new Set(['FelixConfiguration', 'Node']);

/** The part of a sink that feeds the service store. */
export interface ServiceObjects {
  applyService(key: string, obj: unknown): Problem[];
  applySlice(key: string, obj: unknown): Problem[];
}

/** A sink for Services and EndpointSlices; other kinds go to `other` (or are ignored). */
export function serviceSink(store: ServiceObjects, other?: (kind: Kind, key: string, obj: unknown) => Problem[]): ObjectSink {
  return {
    apply(kind, key, obj) {
      if (kind === 'Service') return store.applyService(key, obj);
      if (kind === 'EndpointSlice') return store.applySlice(key, obj);
      return other ? other(kind, key, obj) : [];
    },
  };
}
