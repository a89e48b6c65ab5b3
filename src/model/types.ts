/**
 * Domain types: what bpfproxy serves, independent of Kubernetes objects
 * (src/sources/convert.ts) and of map layouts (src/dataplane/bpf/codecs.ts).
 * Every dataplane backend (BPF maps today, the vector engine later)
 * consumes Frontends.
 */

import type { Endpoints } from './endpoints.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type IpFamily = 'IPv4' | 'IPv6';
export type TrafficPolicy = 'Cluster' | 'Local';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
/**
 * How a new connection picks its backend: uniformly at random, or by the
 * Maglev table of the backend set (the same backend for the same flow on
 * every node: src/model/maglev.ts).
 */
export type LbAlgorithm = 'random' | 'maglev';

export interface ServicePort {
  name: string;
  protocol: Protocol;
  port: number;
  /** Number, or the name of a container port (resolved through EndpointSlice ports). */
  targetPort: number | string;
  nodePort?: number;
}

export interface Service {
  namespace: string;
  name: string;
  type: ServiceType;
  /** Cluster IPs, at most one per family (IPv6 in RFC 5952 text); empty for headless services. */
  clusterIPs: string[];
  /**
   * spec.ipFamilies: the families the Service is served in (NodePorts,
   * external and LoadBalancer IPs of that family, endpoints of that
   * family). undefined: those of its cluster IPs, else IPv4.
   */
  ipFamilies?: readonly IpFamily[];
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip */
  loadBalancerIPs: string[];
  ports: ServicePort[];
  /** ClientIP affinity timeout in seconds; 0 = no affinity. */
  affinityTimeout: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  hasSelector: boolean;
  /** spec.healthCheckNodePort (LoadBalancer, externalTrafficPolicy: Local) */
  healthCheckNodePort?: number;
  /**
   * metadata.creationTimestamp, ms since the epoch. When two services claim
   * one address the older keeps it; missing counts as newest.
   */
  createdAt?: number;
  /**
   * spec.loadBalancerSourceRanges as IPv4 CIDRs ("203.0.113.0/25"): the
   * clients its LoadBalancer IPs accept. undefined: anyone (the field is
   * empty). Empty: no one (every range listed was unusable; reported).
   */
  loadBalancerSourceRanges?: string[];
  /**
   * The Service's own choice (annotation service.bpfproxy.io/lb-algorithm);
   * undefined: the agent's (--lb-algorithm for NodePort, LoadBalancer and
   * external IPs; random for cluster IPs).
   */
  lbAlgorithm?: LbAlgorithm;
  /**
   * What the Service asked of topology, as written: spec.trafficDistribution
   * ("PreferClose", "PreferSameZone", "PreferSameNode"), else the
   * service.kubernetes.io/topology-mode annotation (or the older
   * topology-aware-hints), e.g. "topology-mode: Auto". The EndpointSlice
   * controller turns it into hints; like kube-proxy (ServiceTrafficDistribution
   * on, 1.31+) the choice of endpoints follows the hints alone
   * (src/model/topology.ts). Kept to explain that choice.
   */
  topologyRequest?: string;
}

export interface SliceEndpoint {
  addresses: string[];
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  nodeName?: string;
  /** hints.forZones[].name: the zones whose nodes should use this endpoint */
  zoneHints?: readonly string[];
  /** hints.forNodes[].name: the nodes that should use this endpoint (PreferSameNode) */
  nodeHints?: readonly string[];
}

export interface EndpointSlice {
  namespace: string;
  name: string;
  serviceName: string;
  ports: Array<{ name: string; port: number; protocol: Protocol }>;
  /** packed (endpoints.ts); iterating gives SliceEndpoints */
  endpoints: Endpoints;
}

/** A node of the cluster, as the dataplane needs it (from a v1 Node). */
export interface Node {
  name: string;
  /** status.addresses of type InternalIP, IPv4, in the order listed */
  internalIPs: string[];
  /** status.addresses of type ExternalIP, IPv4, in the order listed */
  externalIPs: string[];
  /** metadata.labels["topology.kubernetes.io/zone"], when set and not empty */
  zone?: string;
  /** metadata.annotations["bpfproxy.io/decap"]: the tunnel formats its bpfproxy decapsulates (model/tunnel.ts) */
  decap?: string;
}

/** A node's primary address as kube-proxy's --nodeport-addresses primary means it: the first IPv4 InternalIP, else ExternalIP. */
/** The families a Service is served in (see Service.ipFamilies). */
export function serviceFamilies(s: Pick<Service, 'ipFamilies' | 'clusterIPs'>): readonly IpFamily[] {
  if (s.ipFamilies?.length) return s.ipFamilies;
  const fromIPs = s.clusterIPs.map((ip): IpFamily => (ip.includes(':') ? 'IPv6' : 'IPv4'));
  return fromIPs.length ? fromIPs : ['IPv4'];
}

export const ipFamilyOf = (ip: string): IpFamily => (ip.includes(':') ? 'IPv6' : 'IPv4');

export const nodePrimaryIPv4 = (n: Node): string | undefined => n.internalIPs[0] ?? n.externalIPs[0];

export interface Backend {
  ip: string;
  port: number;
  /** On this node. */
  local: boolean;
}

export type FrontendKind = 'ClusterIP' | 'ExternalIP' | 'LoadBalancer' | 'NodePort';

/** "namespace/name:port/PROTO": one service port, the unit of load balancing. */
export type ServicePortKey = string;

export interface Frontend {
  kind: FrontendKind;
  /** 0.0.0.0 (IPv4) or :: (IPv6) for NodePort: any of the node's addresses of that family. */
  ip: string;
  port: number;
  protocol: Protocol;
  servicePort: ServicePortKey;
  externalLocal: boolean;
  internalLocal: boolean;
  affinityTimeout: number;
  /**
   * Ready endpoints, narrowed by topology hints when they apply
   * (model/topology.ts), or serving-terminating ones when none is ready.
   */
  clusterBackends: Backend[];
  /** This node's ready endpoints, or its serving-terminating ones; hints never narrow them. */
  localBackends: Backend[];
  /** The Service's choice of backend selection; undefined: the agent's default for this kind (lbAlgorithmOf). */
  lbAlgorithm?: LbAlgorithm;
  /**
   * LoadBalancer frontends of a Service with loadBalancerSourceRanges: the
   * client prefixes that may open connections ("203.0.113.0/25"); empty:
   * no one. undefined (every other frontend): anyone.
   */
  sourceRanges?: readonly string[];
}

/**
 * The backend selection a frontend gets: its Service's choice, else the
 * agent's default for external frontends (NodePort, LoadBalancer, external
 * IPs: the ones whose packets can arrive at any node) and random for
 * cluster IPs, which pods reach on their own node.
 */
export const lbAlgorithmOf = (f: Pick<Frontend, 'kind' | 'lbAlgorithm'>, agentDefault: LbAlgorithm): LbAlgorithm =>
  f.lbAlgorithm ?? (f.kind === 'ClusterIP' ? 'random' : agentDefault);

/**
 * The longest ServicePortKey valid names make: namespace (63) "/" name (63)
 * ":" port name (63, a DNS-1123 label as the API server validates Service
 * port names) "/" protocol (4, "SCTP") = 196 bytes. struct svc_name holds it
 * with room to spare (bpf/lib/types.h, 256 bytes with the NUL).
 */
export const SERVICE_PORT_KEY_MAX = 63 + 1 + 63 + 1 + 63 + 1 + 4;

export const serviceKey = (ns: string, name: string): string => `${ns}/${name}`;
export const servicePortKey = (s: { namespace: string; name: string }, p: ServicePort): ServicePortKey =>
  `${s.namespace}/${s.name}:${p.name || p.port}/${p.protocol}`;
export const frontendKey = (f: { ip: string; port: number; protocol: Protocol }): string => `${f.ip}:${f.port}/${f.protocol}`;
