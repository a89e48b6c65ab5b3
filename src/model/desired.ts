/**
 * Desired state of one service: its frontends and their backends, computed
 * as kube-proxy computes them (ready endpoints, falling back to serving and
 * terminating ones; topology hints narrowing the Cluster set; Local
 * policies narrowed to this node), minus the addresses this node must not
 * serve.
 */
import { nonUnicastReasonOf } from './addresses.js';
import { categorize, describeTopology, type TopologyChoice, type TopologyNode } from './topology.js';
import type {
  Backend,
  EndpointSlice,
  Frontend,
  FrontendKind,
  IpFamily,
  Service,
  ServicePort,
  ServicePortKey,
  SliceEndpoint,
} from './types.js';
import { frontendKey, ipFamilyOf, serviceFamilies, servicePortKey } from './types.js';

export interface BackendSets {
  cluster: Backend[];
  local: Backend[];
  /** how topology chose the cluster set */
  topology: TopologyChoice;
}

function toBackends(chosen: Array<SliceEndpoint & { port: number }>, nodeName: string): Backend[] {
  const seen = new Set<string>();
  const out: Backend[] = [];
  for (const e of chosen) {
    for (const ip of e.addresses) {
      const k = `${ip}:${e.port}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push({ ip, port: e.port, local: e.nodeName === nodeName });
    }
  }
  return out.sort((a, b) => (a.ip === b.ip ? a.port - b.port : a.ip < b.ip ? -1 : 1));
}

/**
 * The endpoints of one service port, from the service's EndpointSlices.
 * `node`: this node's name, or its name and zone (topology hints).
 */
export function backendsFor(
  port: ServicePort,
  slices: readonly EndpointSlice[],
  node: string | TopologyNode,
  family?: IpFamily,
): BackendSets {
  const where = typeof node === 'string' ? { nodeName: node, zone: '' } : node;
  const all: Array<SliceEndpoint & { port: number }> = [];
  for (const s of slices) {
    // EndpointSlice ports carry the service port's name and the resolved
    // target port number (named targetPorts are resolved per pod).
    const sp = s.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (!sp) continue;
    for (const e of s.endpoints) if (!family || ipFamilyOf(e.addresses[0]!) === family) all.push({ ...e, port: sp.port });
  }
  const c = categorize(all, where);
  return { cluster: toBackends(c.cluster, where.nodeName), local: toBackends(c.local, where.nodeName), topology: c.topology };
}

/** What the desired frontends of a service depend on besides the service: this node. */
export interface NodeContext {
  nodeName: string;
  /** this node's topology.kubernetes.io/zone label (undefined or '': none) */
  zone?: string;
  /** This node's own addresses (the ones NodePort answers on). */
  nodeAddresses: ReadonlySet<string>;
  /** --allow-node-address-external-ips */
  allowNodeAddressExternalIPs: boolean;
}

/** A frontend the service asked for and does not get, and why. */
export interface DesiredProblem {
  /** "spec.externalIPs" */
  field: string;
  /** "192.0.2.11:80/TCP (ExternalIP)" */
  frontend: string;
  message: string;
}

/** How topology chose one service port's endpoints on this node (`bpfproxy services`). */
export interface PortTopology {
  servicePort: ServicePortKey;
  /** '' (all endpoints), PreferSameZone or PreferSameNode: what kube-proxy would use */
  mode: TopologyChoice['mode'];
  reason: TopologyChoice['reason'];
  /** the reason in words: "zone hints for zone-a" */
  why: string;
  /** what the Service asked for (spec.trafficDistribution or the annotation), when it did */
  requested?: string;
}

export interface Desired {
  frontends: Frontend[];
  problems: DesiredProblem[];
  /** service ports whose endpoints carry hints or whose Service asks for topology; [] for the others */
  topology: PortTopology[];
}

const FIELD: Record<FrontendKind, string> = {
  ClusterIP: 'spec.clusterIPs',
  ExternalIP: 'spec.externalIPs',
  LoadBalancer: 'status.loadBalancer.ingress',
  NodePort: 'spec.ports.nodePort',
};

/**
 * Why this frontend must not be served on this node, or undefined. An
 * address of the node itself would capture the node's own ports (the
 * kubelet's, sshd's) for everyone who can create a Service: CVE-2020-8554.
 */
function refusal(f: Frontend, node: NodeContext): string | undefined {
  if (f.kind === 'NodePort') return undefined;
  const why = nonUnicastReasonOf(f.ip);
  if (why) return `${f.ip} ${why}; not served`;
  if (!node.nodeAddresses.has(f.ip)) return undefined;
  if (f.kind === 'ClusterIP') {
    return `${f.ip} is an address of this node: a cluster IP there would capture the node's own port ${f.port}/${f.protocol}; not served`;
  }
  if (node.allowNodeAddressExternalIPs) return undefined;
  return (
    `${f.ip} is an address of this node: serving it would capture the node's own port ${f.port}/${f.protocol} (a host daemon's, ` +
    `such as the kubelet's), the CVE-2020-8554 class; not served. An operator who wants this starts the agent with --allow-node-address-external-ips`
  );
}

/** The frontends of one service on this node, and the ones refused here. */
export function desiredFor(svc: Service, slices: readonly EndpointSlice[], node: NodeContext): Desired {
  const problems: DesiredProblem[] = [];
  const topology: PortTopology[] = [];
  const where = { nodeName: node.nodeName, zone: node.zone ?? '' };
  const frontends = allFrontends(svc, slices, where, topology).filter((f) => {
    const why = refusal(f, node);
    if (why) problems.push({ field: FIELD[f.kind], frontend: `${frontendKey(f)} (${f.kind})`, message: why });
    return !why;
  });
  return { frontends, problems, topology };
}

/** The frontends of one service, as if no address of it were refused (unit tests, tools). */
export function frontendsFor(svc: Service, slices: readonly EndpointSlice[], nodeName: string): Frontend[] {
  return desiredFor(svc, slices, { nodeName, nodeAddresses: new Set(), allowNodeAddressExternalIPs: false }).frontends;
}

function allFrontends(svc: Service, slices: readonly EndpointSlice[], node: TopologyNode, topology: PortTopology[]): Frontend[] {
  if (svc.type === 'ExternalName') return [];
  const out: Frontend[] = [];
  const intLocal = svc.internalTrafficPolicy === 'Local';
  const extLocal = svc.externalTrafficPolicy === 'Local';
  const topologyMatters = svc.topologyRequest !== undefined || slices.some((s) => s.endpoints.hinted);
  const families = serviceFamilies(svc);
  for (const port of svc.ports) {
    // kube-proxy runs one proxier per IP family: a frontend is served by the
    // endpoints of its own family (dual-stack Services have an EndpointSlice
    // per family), their topology chosen among them.
    const byFamily = new Map<IpFamily, BackendSets>();
    const setsOf = (f: IpFamily): BackendSets => {
      let sets = byFamily.get(f);
      if (!sets) byFamily.set(f, (sets = backendsFor(port, slices, node, f)));
      return sets;
    };
    const sets = setsOf(families[0]!);
    if (topologyMatters) {
      topology.push({
        servicePort: servicePortKey(svc, port),
        mode: sets.topology.mode,
        reason: sets.topology.reason,
        why: describeTopology(sets.topology, node),
        ...(svc.topologyRequest !== undefined ? { requested: svc.topologyRequest } : {}),
      });
    }
    const fam = (ip: string) => {
      const f = setsOf(ipFamilyOf(ip));
      return { clusterBackends: f.cluster, localBackends: f.local };
    };
    const base = {
      port: port.port,
      protocol: port.protocol,
      servicePort: servicePortKey(svc, port),
      internalLocal: intLocal,
      affinityTimeout: svc.affinityTimeout,
      ...(svc.lbAlgorithm ? { lbAlgorithm: svc.lbAlgorithm } : {}),
    };
    for (const ip of svc.clusterIPs) out.push({ ...base, ...fam(ip), kind: 'ClusterIP', ip, externalLocal: false });
    for (const ip of svc.externalIPs) out.push({ ...base, ...fam(ip), kind: 'ExternalIP', ip, externalLocal: extLocal });
    if (svc.type === 'LoadBalancer') {
      // kube-proxy applies loadBalancerSourceRanges to LoadBalancer IPs only
      // (not NodePorts, cluster IPs or external IPs).
      const ranges = svc.loadBalancerSourceRanges ? { sourceRanges: svc.loadBalancerSourceRanges } : {};
      for (const ip of svc.loadBalancerIPs) out.push({ ...base, ...fam(ip), kind: 'LoadBalancer', ip, externalLocal: extLocal, ...ranges });
    }
    if ((svc.type === 'NodePort' || svc.type === 'LoadBalancer') && port.nodePort) {
      for (const f of families) {
        const ip = f === 'IPv6' ? '::' : '0.0.0.0';
        out.push({ ...base, ...fam(ip), kind: 'NodePort', ip, port: port.nodePort, externalLocal: extLocal });
      }
    }
  }
  return out;
}
