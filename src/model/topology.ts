/**
 * Topology-aware routing as kube-proxy decides it (pkg/proxy/topology.go,
 * CategorizeEndpoints): which endpoints of one service port this node uses.
 *
 * - Topology narrows the Cluster-policy set only; the Local-policy set is
 *   this node's endpoints whatever their hints.
 * - PreferSameNode when every ready endpoint has a node hint and one names
 *   this node; else PreferSameZone when every ready endpoint has a zone
 *   hint and one names this node's zone; else every endpoint.
 * - The hints decide, not the Service: the EndpointSlice controller writes
 *   them for spec.trafficDistribution or the topology-mode annotation, and
 *   kube-proxy (ServiceTrafficDistribution on, 1.31+) reads only them.
 * - No ready endpoint anywhere: serving-terminating ones, topology ignored
 *   (had a ready one existed for the zone, the mode would have kept it).
 */
import type { SliceEndpoint } from './types.js';

export type TopologyMode = 'PreferSameNode' | 'PreferSameZone' | '';

/** Where this node stands: its name and its Node's topology.kubernetes.io/zone label ('' when none). */
export interface TopologyNode {
  nodeName: string;
  zone: string;
}

/** Why the cluster set is what it is, for `bpfproxy services`. */
export type TopologyReason =
  /** no endpoint carries a hint: nothing to decide */
  | 'no-hints'
  /** PreferSameNode: the endpoints hinted for this node */
  | 'same-node'
  /** PreferSameZone: the endpoints hinted for this node's zone */
  | 'same-zone'
  /** some ready endpoint lacks a zone hint: all endpoints */
  | 'hints-incomplete'
  /** every ready endpoint has node hints only, none for this node: all endpoints */
  | 'no-hints-for-node'
  /** every ready endpoint has a zone hint, none for this node's zone (or the node has no zone): all endpoints */
  | 'no-hints-for-zone'
  | 'node-has-no-zone'
  /** no ready endpoint: serving-terminating ones, hints ignored */
  | 'terminating-fallback'
  /** no endpoint usable at all */
  | 'no-endpoints';

export interface TopologyChoice {
  mode: TopologyMode;
  reason: TopologyReason;
}

/** An endpoint as categorize() needs it: its conditions, node and hints. */
export type TopologyEndpoint = Pick<SliceEndpoint, 'ready' | 'serving' | 'terminating' | 'nodeName' | 'zoneHints' | 'nodeHints'>;

export interface Categorized<E> {
  /** Cluster-policy endpoints, topology applied (ready, else serving-terminating) */
  cluster: E[];
  /** Local-policy endpoints: this node's ready ones, else its serving-terminating ones */
  local: E[];
  /** how the cluster set was chosen */
  topology: TopologyChoice;
  /**
   * kube-proxy's hasAnyEndpoints: some endpoint anywhere is usable (ready,
   * or serving-terminating). A Local frontend without local endpoints drops
   * rather than rejects when this holds.
   */
  anyUsable: boolean;
}

/** kube-proxy's topologyModeFromHints, with the reason it fell back when it did. */
export function topologyMode(endpoints: Iterable<TopologyEndpoint>, node: TopologyNode): TopologyChoice {
  let anyReady = false;
  let anyHint = false;
  let allNodeHints = true;
  let forNode = false;
  let allZoneHints = true;
  let forZone = false;
  for (const e of endpoints) {
    if (e.zoneHints?.length || e.nodeHints?.length) anyHint = true;
    if (!e.ready) continue;
    anyReady = true;
    if (!e.nodeHints?.length) allNodeHints = false;
    else if (e.nodeHints.includes(node.nodeName)) forNode = true;
    if (!e.zoneHints?.length) allZoneHints = false;
    else if (e.zoneHints.includes(node.zone)) forZone = true;
  }
  if (!anyReady) return { mode: '', reason: 'terminating-fallback' };
  if (allNodeHints && forNode) return { mode: 'PreferSameNode', reason: 'same-node' };
  if (allZoneHints) {
    if (forZone) return { mode: 'PreferSameZone', reason: 'same-zone' };
    return { mode: '', reason: node.zone === '' ? 'node-has-no-zone' : 'no-hints-for-zone' };
  }
  if (allNodeHints) return { mode: '', reason: 'no-hints-for-node' };
  return { mode: '', reason: anyHint ? 'hints-incomplete' : 'no-hints' };
}

/** kube-proxy's availableForTopology: no fallback here, the mode already chose. */
function available(e: TopologyEndpoint, mode: TopologyMode, node: TopologyNode): boolean {
  switch (mode) {
    case '':
      return true;
    case 'PreferSameNode':
      return e.nodeHints?.includes(node.nodeName) ?? false;
    case 'PreferSameZone':
      return e.zoneHints?.includes(node.zone) ?? false;
  }
}

const servingTerminating = (e: TopologyEndpoint): boolean => e.serving && e.terminating;

/**
 * The endpoints of one service port this node uses: kube-proxy's
 * CategorizeEndpoints for a service that has both policies (the frontends
 * carry both sets; the datapath picks by each frontend's policy).
 */
export function categorize<E extends TopologyEndpoint>(endpoints: readonly E[], node: TopologyNode): Categorized<E> {
  let topology = topologyMode(endpoints, node);
  let cluster = endpoints.filter((e) => e.ready && available(e, topology.mode, node));
  if (cluster.length === 0) {
    // No ready endpoint anywhere (a mode needs one for this node or zone).
    cluster = endpoints.filter(servingTerminating);
    topology = { mode: '', reason: cluster.length > 0 ? 'terminating-fallback' : 'no-endpoints' };
  }
  const mine = endpoints.filter((e) => e.nodeName === node.nodeName);
  const localReady = mine.filter((e) => e.ready);
  const local = localReady.length > 0 ? localReady : mine.filter(servingTerminating);
  const anyUsable = cluster.length > 0 || endpoints.some((e) => e.ready || servingTerminating(e));
  return { cluster, local, topology, anyUsable };
}

/** The reason in words, naming the zone or node: "zone hints for zone-a". */
export function describeTopology(c: TopologyChoice, node: TopologyNode): string {
  switch (c.reason) {
    case 'no-hints':
      return 'no topology hints: all endpoints';
    case 'same-node':
      return `PreferSameNode: endpoints hinted for node ${node.nodeName}`;
    case 'same-zone':
      return `zone hints for ${node.zone}`;
    case 'hints-incomplete':
      return 'hints incomplete: all endpoints (a ready endpoint has no zone hint)';
    case 'no-hints-for-node':
      return `no endpoint hinted for node ${node.nodeName} and no zone hints: all endpoints`;
    case 'no-hints-for-zone':
      return `no endpoint hinted for zone ${node.zone}: all endpoints`;
    case 'node-has-no-zone':
      return 'this node has no topology.kubernetes.io/zone label: all endpoints';
    case 'terminating-fallback':
      return 'no ready endpoint: serving-terminating endpoints, hints ignored';
    case 'no-endpoints':
      return 'no usable endpoint';
  }
}
