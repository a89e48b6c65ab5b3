/**
 * Kubernetes objects (from YAML manifests or the API) to domain types.
 * Validation follows the API server's rules (names, addresses, node ports)
 * and is as fine-grained as it can be: a bad port drops that port, a bad IP
 * that IP, and only an object whose identity or shape is broken is dropped
 * whole. Every problem is reported with the object and the field.
 */
import { DECAP_ANNOTATION } from '../model/tunnel.js';
import { z } from 'zod';
import { isIPv4, isIPv6 } from '../net/ip.js';
import { DEFAULT_SERVICE_POLICY, formatPortRange, type PortRange, type ServicePolicy } from '../config/services.js';
import { cidrContains, intToIpv4, ipv4ToInt, nonUnicastReason, nonUnicastReason6, parseCidr6Masked } from '../model/addresses.js';
import { canonicalIpv6 } from '../net/ip6.js';
import { dns1035Label, dns1123Label, dns1123Subdomain, ianaSvcName, labelValue, quote } from '../model/names.js';
import type { Converted, Problem } from '../model/problem.js';
import { Endpoints } from '../model/endpoints.js';
import type { EndpointSlice, IpFamily, LbAlgorithm, Node, Service, ServicePort, SliceEndpoint } from '../model/types.js';
import { serviceFamilies } from '../model/types.js';
import { intern } from './intern.js';

const Meta = z.looseObject({
  name: z.string().min(1),
  namespace: z.string().min(1).optional(),
  labels: z.record(z.string(), z.string()).optional(),
  creationTimestamp: z.string().nullable().optional(),
});

const PortNumber = z.number().int().min(1).max(65535);
const ServiceShape = z.looseObject({
  metadata: Meta,
  spec: z
    .looseObject({
      type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']).optional(),
      clusterIP: z.string().optional(),
      clusterIPs: z.array(z.string()).optional(),
      ipFamilies: z.array(z.string()).nullable().optional(),
      ipFamilyPolicy: z.string().nullable().optional(),
      externalIPs: z.array(z.string()).optional(),
      ports: z.array(z.unknown()).optional(),
      selector: z.record(z.string(), z.string()).nullable().optional(),
      sessionAffinity: z.enum(['None', 'ClientIP']).optional(),
      sessionAffinityConfig: z
        .looseObject({
          clientIP: z.looseObject({ timeoutSeconds: z.number().int().min(1).max(86400).optional() }).optional(),
        })
        .optional(),
      externalTrafficPolicy: z.enum(['Cluster', 'Local']).optional(),
      healthCheckNodePort: PortNumber.optional(),
      internalTrafficPolicy: z.enum(['Cluster', 'Local']).optional(),
      loadBalancerSourceRanges: z.array(z.string()).nullable().optional(),
      trafficDistribution: z.string().nullable().optional(),
    })
    .optional(),
  status: z
    .looseObject({
      loadBalancer: z
        .looseObject({
          ingress: z.array(z.looseObject({ ip: z.string().optional(), ipMode: z.string().nullable().optional() })).optional(),
        })
        .optional(),
    })
    .optional(),
});

const PortShape = z.looseObject({
  name: z.string().optional(),
  protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
  port: PortNumber,
  targetPort: z.union([PortNumber, z.string().min(1)]).optional(),
  nodePort: PortNumber.optional(),
});

const SliceShape = z.looseObject({
  metadata: Meta,
  addressType: z.enum(['IPv4', 'IPv6', 'FQDN']),
  ports: z
    .array(
      z.looseObject({
        name: z.string().optional(),
        port: PortNumber.optional(),
        protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional(),
      }),
    )
    .nullable()
    .optional(),
  endpoints: z.array(z.unknown()).nullable().optional(),
});

const EndpointShape = z.looseObject({
  addresses: z.array(z.string()).min(1),
  conditions: z
    .looseObject({
      ready: z.boolean().nullable().optional(),
      serving: z.boolean().nullable().optional(),
      terminating: z.boolean().nullable().optional(),
    })
    .optional(),
  nodeName: z.string().optional(),
  hints: z
    .looseObject({
      forZones: z
        .array(z.looseObject({ name: z.string() }))
        .nullable()
        .optional(),
      forNodes: z
        .array(z.looseObject({ name: z.string() }))
        .nullable()
        .optional(),
    })
    .nullable()
    .optional(),
});

function pathOf(prefix: string, path: ReadonlyArray<PropertyKey>): string {
  let s = prefix;
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

function zodProblems(object: string, prefix: string, err: z.ZodError, fatal: boolean): Problem[] {
  return err.issues.map((i) => ({ object, field: pathOf(prefix, i.path) || '(object)', message: i.message, fatal }));
}

function objectName(kind: string, o: unknown, clusterScoped = false): string {
  const m = (o as { metadata?: { name?: unknown; namespace?: unknown } })?.metadata;
  const short = (v: string) => (v.length > 80 ? `${v.slice(0, 80)}…` : v);
  const ns = typeof m?.namespace === 'string' ? short(m.namespace) : 'default';
  const name = typeof m?.name === 'string' ? short(m.name) : '<unnamed>';
  return clusterScoped ? `${kind} ${name}` : `${kind} ${ns}/${name}`;
}

/** Individual problems listed per list field before they are summed up. */
const LISTED_PER_FIELD = 10;

/**
 * Problems of one object. A list with thousands of bad entries gives ten
 * lines and a count, not thousands of lines.
 */
class Problems {
  readonly list: Problem[] = [];
  private readonly perList = new Map<string, number>();

  constructor(private readonly object: string) {}

  warn(field: string, message: string): void {
    this.list.push({ object: this.object, field, message, fatal: false });
  }

  fatal(field: string, message: string): Converted<never> {
    return { problems: [...this.list, { object: this.object, field, message, fatal: true }] };
  }

  /** A problem with one entry of the list `list` ("spec.externalIPs"). */
  entry(list: string, field: string, message: string): void {
    const n = (this.perList.get(list) ?? 0) + 1;
    this.perList.set(list, n);
    if (n <= LISTED_PER_FIELD) this.warn(field, message);
  }

  /** Sum up what entry() did not list. */
  done(): Problem[] {
    for (const [list, n] of this.perList) {
      if (n > LISTED_PER_FIELD) this.warn(list, `${n - LISTED_PER_FIELD} more entries with problems, not listed one by one; all skipped`);
    }
    return this.list;
  }
}

/** metadata.creationTimestamp as ms since the epoch (undefined: missing or unreadable). */
function creationTime(v: string | null | undefined, p: Problems): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const ms = Date.parse(v);
  if (Number.isNaN(ms)) {
    p.warn(
      'metadata.creationTimestamp',
      `${quote(v)} is not an RFC 3339 time; the object counts as newest when it claims an address another service has`,
    );
    return undefined;
  }
  return ms;
}

/** The annotation a Service chooses how its new connections pick an endpoint with. */
export const LB_ALGORITHM_ANNOTATION = 'service.bpfproxy.io/lb-algorithm';
const LB_ALGORITHMS: readonly LbAlgorithm[] = ['random', 'maglev'];

/** The Service's own backend selection, from its annotation (undefined: the agent's default). */
function lbAlgorithmOf(annotations: unknown, p: Problems): LbAlgorithm | undefined {
  if (!annotations || typeof annotations !== 'object') return undefined;
  const v: unknown = (annotations as Record<string, unknown>)[LB_ALGORITHM_ANNOTATION];
  if (v === undefined) return undefined;
  if (typeof v === 'string' && (LB_ALGORITHMS as readonly string[]).includes(v)) return v as LbAlgorithm;
  p.warn(
    `metadata.annotations["${LB_ALGORITHM_ANNOTATION}"]`,
    `${typeof v === 'string' ? quote(v) : `a ${typeof v}`} is not a load-balancing algorithm (${LB_ALGORITHMS.join(' or ')}); the agent's default (--lb-algorithm) applies`,
  );
  return undefined;
}

/** The annotations the EndpointSlice controller reads for topology hints, newest first. */
export const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
export const TOPOLOGY_AWARE_HINTS_ANNOTATION = 'service.kubernetes.io/topology-aware-hints';
/** spec.trafficDistribution values the API server accepts (PreferSameZone/PreferSameNode from 1.33). */
const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameZone', 'PreferSameNode'];

/**
 * What the Service asks of topology, for display: spec.trafficDistribution,
 * else the topology-mode annotation, else topology-aware-hints. The
 * endpoints follow the hints the EndpointSlice controller writes from it
 * (src/model/topology.ts), as kube-proxy's do.
 */
function topologyRequestOf(trafficDistribution: string | null | undefined, annotations: unknown, p: Problems): string | undefined {
  if (trafficDistribution) {
    if (!TRAFFIC_DISTRIBUTIONS.includes(trafficDistribution)) {
      p.warn(
        'spec.trafficDistribution',
        `${quote(trafficDistribution)} is not a traffic distribution (${TRAFFIC_DISTRIBUTIONS.join(', ')}); endpoints still follow the EndpointSlices' hints, as with kube-proxy`,
      );
    }
    return `trafficDistribution: ${trafficDistribution}`;
  }
  const a = annotations && typeof annotations === 'object' ? (annotations as Record<string, unknown>) : {};
  for (const k of [TOPOLOGY_MODE_ANNOTATION, TOPOLOGY_AWARE_HINTS_ANNOTATION]) {
    const v = a[k];
    if (typeof v === 'string' && v !== '') return `${k.slice('service.kubernetes.io/'.length)}: ${v}`;
  }
  return undefined;
}

/** What conversion needs of the agent's service policy. */
export type ConvertPolicy = Pick<ServicePolicy, 'nodePortRange' | 'externalIPCidrs' | 'maxFrontendsPerService'>;

const inRange = (port: number, r: PortRange) => port >= r.min && port <= r.max;

/** A v1 Service. */
export function toService(o: unknown, policy: ConvertPolicy = DEFAULT_SERVICE_POLICY): Converted<Service> {
  const object = objectName('Service', o);
  const r = ServiceShape.safeParse(o);
  if (!r.success) return { problems: zodProblems(object, '', r.error, true) };
  const p = new Problems(object);
  const { metadata, spec = {}, status } = r.data;
  const nameErr = dns1035Label(metadata.name);
  if (nameErr) return p.fatal('metadata.name', `a Service name ${nameErr}`);
  const namespace = metadata.namespace ?? 'default';
  const nsErr = dns1123Label(namespace);
  if (nsErr) return p.fatal('metadata.namespace', `a namespace ${nsErr}`);
  const createdAt = creationTime(metadata.creationTimestamp, p);
  const lbAlgorithm = lbAlgorithmOf(metadata.annotations, p);
  const topologyRequest = topologyRequestOf(spec.trafficDistribution, metadata.annotations, p);
  const type = spec.type ?? 'ClusterIP';
  const nodePorts = type === 'NodePort' || type === 'LoadBalancer';
  const range = `${formatPortRange(policy.nodePortRange)} (--service-node-port-range)`;

  // Cluster IPs: at most one per family (dual-stack: one IPv4 and one IPv6).
  const clusterIPs: string[] = [];
  const rawIPs = spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : []);
  rawIPs.forEach((ip, i) => {
    const field = spec.clusterIPs ? `spec.clusterIPs[${i}]` : 'spec.clusterIP';
    if (ip === 'None' || ip === '') return;
    const v6 = canonicalIpv6(ip);
    if (!v6 && !isIPv4(ip)) return p.entry('spec.clusterIPs', field, `${quote(ip)} is not an IP address`);
    const addr = v6 ?? ip;
    const why = v6 ? nonUnicastReason6(v6) : nonUnicastReason(ip);
    if (why) return p.entry('spec.clusterIPs', field, `${addr} ${why}: a cluster IP must be a unicast address; not served`);
    if (clusterIPs.some((c) => c.includes(':') === !!v6)) {
      return p.entry(
        'spec.clusterIPs',
        field,
        `${addr} is a second ${v6 ? 'IPv6' : 'IPv4'} cluster IP (a Service has at most one per IP family); not served`,
      );
    }
    clusterIPs.push(addr);
  });
  const families = ipFamiliesOf(spec.ipFamilies, clusterIPs, p);
  const hasFamily = (ip: string) => families.includes(ip.includes(':') ? 'IPv6' : 'IPv4');

  /** externalIPs and LoadBalancer ingress IPs: unicast, inside --external-ip-cidrs, once each. */
  const frontendIP = (raw: string, list: string, field: string, seen: Map<string, string>): string | undefined => {
    const v6 = canonicalIpv6(raw);
    if (!v6 && !isIPv4(raw)) return void p.entry(list, field, `${quote(raw)} is not an IP address`);
    const ip = v6 ?? raw;
    const why = v6 ? nonUnicastReason6(v6) : nonUnicastReason(ip);
    if (why) return void p.entry(list, field, `${ip} ${why}; not served`);
    if (!hasFamily(ip)) {
      // kube-proxy serves a Service in the families it has (spec.ipFamilies) only.
      return void p.entry(
        list,
        field,
        `${ip} is ${v6 ? 'IPv6' : 'IPv4'}, a family this Service does not have (spec.ipFamilies ${families.join(',')}); not served`,
      );
    }
    if (policy.externalIPCidrs && (v6 || !policy.externalIPCidrs.some((c) => cidrContains(c, ip)))) {
      p.entry(
        list,
        field,
        `${ip} is outside the addresses allowed for external and LoadBalancer IPs (--external-ip-cidrs ${policy.externalIPCidrs.map((c) => c.text).join(',')}); not served`,
      );
      return undefined;
    }
    const dup = seen.get(ip);
    if (dup) return void p.entry(list, field, `${ip} is listed already (${dup}); skipped`);
    seen.set(ip, field);
    return ip;
  };
  const externalIPs: Array<{ ip: string; field: string }> = [];
  const seenExt = new Map<string, string>();
  (spec.externalIPs ?? []).forEach((ip, i) => {
    const field = `spec.externalIPs[${i}]`;
    const addr = frontendIP(ip, 'spec.externalIPs', field, seenExt);
    if (addr) externalIPs.push({ ip: addr, field });
  });
  const lbIPs: Array<{ ip: string; field: string }> = [];
  const seenLb = new Map<string, string>();
  (status?.loadBalancer?.ingress ?? []).forEach((ing, i) => {
    if (ing.ip === undefined) return; // hostname-only ingress (e.g. AWS ELB): nothing to match on
    if (!isVipIngress(ing.ipMode, i, p)) return;
    const field = `status.loadBalancer.ingress[${i}].ip`;
    const addr = frontendIP(ing.ip, 'status.loadBalancer.ingress', field, seenLb);
    if (addr) lbIPs.push({ ip: addr, field });
  });

  const ports: Array<ServicePort & { field: string }> = [];
  const seen = new Map<string, number>();
  const names = new Map<string, number>();
  const seenNodePorts = new Map<string, number>();
  (spec.ports ?? []).forEach((raw, i) => {
    const at = `spec.ports[${i}]`;
    const pr = PortShape.safeParse(raw);
    if (!pr.success) {
      for (const z of zodProblems(object, at, pr.error, false)) p.entry('spec.ports', z.field, `${z.message}; port skipped`);
      return;
    }
    const sp = pr.data;
    const protocol = sp.protocol ?? 'TCP';
    const name = sp.name ?? '';
    const nameErr = name ? dns1123Label(name) : undefined;
    if (nameErr) return p.entry('spec.ports', `${at}.name`, `a port name ${nameErr}; port skipped`);
    if (typeof sp.targetPort === 'string') {
      const tpErr = ianaSvcName(sp.targetPort);
      if (tpErr) return p.entry('spec.ports', `${at}.targetPort`, `a named targetPort ${tpErr}; port skipped`);
    }
    const key = `${sp.port}/${protocol}`;
    if (seen.has(key)) {
      p.entry('spec.ports', `${at}.port`, `duplicate of spec.ports[${seen.get(key)}] (${key}); port skipped`);
      return;
    }
    if (names.has(name)) {
      p.entry('spec.ports', `${at}.name`, `duplicate port name "${name}" (also spec.ports[${names.get(name)}]); port skipped`);
      return;
    }
    let nodePort = sp.nodePort;
    if (nodePort !== undefined && !nodePorts) {
      p.entry('spec.ports', `${at}.nodePort`, `ignored for type ${type}`);
      nodePort = undefined;
    }
    if (nodePort !== undefined && !inRange(nodePort, policy.nodePortRange)) {
      p.entry(
        'spec.ports',
        `${at}.nodePort`,
        `${nodePort} is outside the node-port range ${range}: it could take a port a host daemon listens on; the NodePort is not served, the rest of the port is`,
      );
      nodePort = undefined;
    }
    const npKey = `${nodePort}/${protocol}`;
    if (nodePort !== undefined && seenNodePorts.has(npKey)) {
      p.entry(
        'spec.ports',
        `${at}.nodePort`,
        `${npKey} is also the nodePort of spec.ports[${seenNodePorts.get(npKey)}]; this NodePort is not served`,
      );
      nodePort = undefined;
    }
    seen.set(key, i);
    names.set(name, i);
    if (nodePort !== undefined) seenNodePorts.set(npKey, i);
    ports.push({
      name: intern(name),
      protocol,
      port: sp.port,
      targetPort: typeof sp.targetPort === 'string' ? intern(sp.targetPort) : (sp.targetPort ?? sp.port),
      field: at,
      ...(nodePort !== undefined ? { nodePort } : {}),
    });
  });

  let healthCheckNodePort: number | undefined;
  if (spec.healthCheckNodePort && type === 'LoadBalancer' && spec.externalTrafficPolicy === 'Local') {
    if (inRange(spec.healthCheckNodePort, policy.nodePortRange)) healthCheckNodePort = spec.healthCheckNodePort;
    else
      p.warn(
        'spec.healthCheckNodePort',
        `${spec.healthCheckNodePort} is outside the node-port range ${range}; no health check is served for it`,
      );
  }

  // Fan-out: every port times every address is one frontend (one map entry).
  // Kubernetes bounds neither externalIPs nor ingress IPs; we bound the sum.
  // Kept first: cluster IPs and NodePorts (port by port), then LoadBalancer
  // ingress IPs, then externalIPs, each in the order listed.
  const max = policy.maxFrontendsPerService;
  const flag = `--max-frontends-per-service=${max}`;
  const perPort = (sp: { nodePort?: number }) =>
    type === 'ExternalName' ? 0 : clusterIPs.length + (sp.nodePort !== undefined ? families.length : 0);
  let used = 0;
  let keptPorts = ports.length;
  for (let i = 0; i < ports.length; i++) {
    if (used + perPort(ports[i]!) > max) {
      keptPorts = i;
      break;
    }
    used += perPort(ports[i]!);
  }
  if (keptPorts < ports.length) {
    p.warn(
      'spec.ports',
      `${ports.length} ports need more than ${flag} frontends for their cluster IP and NodePorts alone; ` +
        `${ports[keptPorts]!.field} and the ${ports.length - keptPorts - 1} after it are not served, nor any external or LoadBalancer IP`,
    );
  }
  const servedPorts = ports.slice(0, keptPorts);
  const bound = (ips: Array<{ ip: string; field: string }>, list: string, what: string): string[] => {
    const n = servedPorts.length;
    if (n === 0 || ips.length === 0) return ips.map((x) => x.ip);
    const fit = Math.min(ips.length, Math.floor((max - used) / n));
    used += fit * n;
    if (fit < ips.length) {
      p.warn(
        list,
        `${ips.length} ${what} × ${n} port(s) would take this Service past ${flag} frontends; ` +
          `${fit === 0 ? 'none is served' : `the first ${fit} are served`}, ${ips[fit]!.field} and the ${ips.length - fit - 1} after it are not`,
      );
    }
    return ips.slice(0, fit).map((x) => x.ip);
  };
  const loadBalancerIPs = type === 'LoadBalancer' ? bound(lbIPs, 'status.loadBalancer.ingress', 'LoadBalancer ingress IPs') : [];
  const served = bound(externalIPs, 'spec.externalIPs', 'external IPs');

  const sourceRanges = type === 'LoadBalancer' ? loadBalancerSourceRangesOf(spec.loadBalancerSourceRanges, p) : undefined;
  const hasSelector = !!spec.selector && Object.keys(spec.selector).length > 0;
  const affinity = spec.sessionAffinity === 'ClientIP' ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : 0;
  // Arrays built by push have room to grow; the ones kept are copied to their size.
  return {
    value: {
      namespace: intern(namespace),
      name: metadata.name,
      type,
      clusterIPs: type === 'ExternalName' ? [] : clusterIPs.slice(),
      // Kept only where it says more than the cluster IPs do (serviceFamilies): most Services need no copy.
      ...(families.join() !== serviceFamilies({ clusterIPs }).join() ? { ipFamilies: families } : {}),
      externalIPs: served,
      loadBalancerIPs,
      ports: servedPorts.map(({ field: _f, ...sp }) => sp),
      affinityTimeout: affinity,
      externalTrafficPolicy: spec.externalTrafficPolicy ?? 'Cluster',
      internalTrafficPolicy: spec.internalTrafficPolicy ?? 'Cluster',
      hasSelector,
      ...(healthCheckNodePort !== undefined ? { healthCheckNodePort } : {}),
      ...(createdAt !== undefined ? { createdAt } : {}),
      ...(lbAlgorithm ? { lbAlgorithm } : {}),
      ...(sourceRanges ? { loadBalancerSourceRanges: sourceRanges } : {}),
      ...(topologyRequest !== undefined ? { topologyRequest } : {}),
    },
    problems: p.done(),
  };
}

const IP_FAMILIES: readonly IpFamily[] = ['IPv4', 'IPv6'];

/**
 * spec.ipFamilies as kube-proxy serves it: the families listed (the API
 * server fills it: one for SingleStack, two for dual-stack), else those of
 * the cluster IPs, else IPv4. A family listed without a cluster IP of it
 * (a headless dual-stack Service) still counts: its NodePorts and external
 * IPs are served in it.
 */
function ipFamiliesOf(raw: readonly string[] | null | undefined, clusterIPs: readonly string[], p: Problems): IpFamily[] {
  const out: IpFamily[] = [];
  (raw ?? []).forEach((f, i) => {
    if (!(IP_FAMILIES as readonly string[]).includes(f)) {
      return p.entry('spec.ipFamilies', `spec.ipFamilies[${i}]`, `${quote(f)} is not IPv4 or IPv6; skipped`);
    }
    if (!out.includes(f as IpFamily)) out.push(f as IpFamily);
  });
  for (const ip of clusterIPs) {
    const f: IpFamily = ip.includes(':') ? 'IPv6' : 'IPv4';
    if (!out.includes(f)) out.push(f);
  }
  return out.length ? out : ['IPv4'];
}

/**
 * status.loadBalancer.ingress[].ipMode: kube-proxy (1.30+, GA in 1.32)
 * programs an ingress IP only in VIP mode (unset counts as VIP). With
 * Proxy the load balancer is a proxy that sends its traffic to the nodes
 * (NodePorts): no frontend for the IP, so pods and the node reach the load
 * balancer itself instead of being short-circuited to the endpoints.
 */
function isVipIngress(ipMode: string | null | undefined, i: number, p: Problems): boolean {
  if (ipMode === undefined || ipMode === null || ipMode === 'VIP') return true;
  if (ipMode !== 'Proxy') {
    p.entry(
      'status.loadBalancer.ingress',
      `status.loadBalancer.ingress[${i}].ipMode`,
      `${quote(ipMode)} is neither VIP nor Proxy; like kube-proxy, the IP is served only in VIP mode: not served`,
    );
  }
  return false;
}

/** Source ranges one Service may list; the rest are not applied (their clients are refused). */
export const MAX_SOURCE_RANGES = 1024;

/**
 * spec.loadBalancerSourceRanges as kube-proxy reads them: each entry
 * trimmed (the API server lets whitespace through), host bits masked, IPv4
 * and IPv6 alike, a bad entry skipped and reported. undefined: no
 * restriction. Where kube-proxy would then accept everyone because no
 * range is left, this accepts no one (an empty list) and says so: a Service
 * that asked for a restriction keeps one. Each family's LoadBalancer IPs
 * check the ranges of their own family (a family with none accepts no
 * client of it).
 */
function loadBalancerSourceRangesOf(raw: readonly string[] | null | undefined, p: Problems): string[] | undefined {
  const list = 'spec.loadBalancerSourceRanges';
  if (!raw || raw.length === 0) return undefined;
  const out = new Set<string>();
  raw.forEach((entry, i) => {
    const t = entry.trim();
    const c6 = parseCidr6Masked(t);
    if (c6) return void out.add(c6.text);
    const m = /^([^/]+)\/(\d{1,3})$/.exec(t);
    if (!m || !isIPv4(m[1]!) || Number(m[2]) > 32) {
      return p.entry(
        list,
        `${list}[${i}]`,
        `${quote(entry)} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/64; skipped (kube-proxy skips it too)`,
      );
    }
    const bits = Number(m[2]);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    out.add(`${intToIpv4((ipv4ToInt(m[1]!) & mask) >>> 0)}/${bits}`);
  });
  const ranges = [...out];
  if (ranges.length > MAX_SOURCE_RANGES) {
    p.warn(
      list,
      `${ranges.length} ranges, more than the ${MAX_SOURCE_RANGES} bpfproxy applies; clients only in ${quote(ranges[MAX_SOURCE_RANGES]!)} and the ranges after it are refused`,
    );
    return ranges.slice(0, MAX_SOURCE_RANGES);
  }
  if (ranges.length === 0) {
    p.warn(
      list,
      `none of the ${raw.length} ranges is a usable CIDR: ` +
        "the Service's LoadBalancer IPs accept no client (kube-proxy would accept every client); NodePorts and cluster IPs are not affected",
    );
  }
  return ranges;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** The API server's bounds on one EndpointSlice (pkg/apis/discovery/validation). */
export const SLICE_MAX_ENDPOINTS = 1000;
export const SLICE_MAX_PORTS = 100;
export const ENDPOINT_MAX_ADDRESSES = 100;
/** The API server's bound on hints.forZones and hints.forNodes (each). */
export const ENDPOINT_MAX_HINTS = 8;

/**
 * One hints list (hints.forZones or hints.forNodes) as kube-proxy reads
 * it: the names, each once. A name the API server would refuse is
 * skipped; past the API server's 8, the rest are skipped. undefined: no
 * hint (kube-proxy counts an empty list as none).
 */
function hintNames(
  raw: ReadonlyArray<{ name: string }> | null | undefined,
  field: string,
  check: (v: string) => string | undefined,
  p: Problems,
): string[] | undefined {
  if (!raw || raw.length === 0) return undefined;
  if (raw.length > ENDPOINT_MAX_HINTS) {
    p.entry('endpoints', field, `${raw.length} hints, more than the ${ENDPOINT_MAX_HINTS} the API server allows; the rest are ignored`);
  }
  const out: string[] = [];
  raw.slice(0, ENDPOINT_MAX_HINTS).forEach((h, j) => {
    const err = check(h.name);
    if (err) return p.entry('endpoints', `${field}[${j}].name`, `${quote(h.name)} ${err}; this hint is ignored`);
    if (!out.includes(h.name)) out.push(intern(h.name));
  });
  return out.length > 0 ? out : undefined;
}

/** A discovery.k8s.io/v1 EndpointSlice. FQDN slices yield nothing (kube-proxy ignores them too). */
export function toEndpointSlice(o: unknown): Converted<EndpointSlice> {
  const object = objectName('EndpointSlice', o);
  const r = SliceShape.safeParse(o);
  if (!r.success) return { problems: zodProblems(object, '', r.error, true) };
  const p = new Problems(object);
  const { metadata } = r.data;
  const nameErr = dns1123Subdomain(metadata.name);
  if (nameErr) return p.fatal('metadata.name', `an EndpointSlice name ${nameErr}`);
  const namespace = metadata.namespace ?? 'default';
  const nsErr = dns1123Label(namespace);
  if (nsErr) return p.fatal('metadata.namespace', `a namespace ${nsErr}`);
  const labelField = `metadata.labels["${SERVICE_NAME_LABEL}"]`;
  const serviceName = metadata.labels?.[SERVICE_NAME_LABEL];
  if (!serviceName) return p.fatal(labelField, 'missing: the slice belongs to no service');
  const labelErr = labelValue(serviceName) ?? dns1035Label(serviceName);
  if (labelErr) return p.fatal(labelField, `names no Service: ${labelErr}`);
  const base = { namespace: intern(namespace), name: metadata.name, serviceName };
  if (r.data.addressType === 'FQDN') return { value: { ...base, ports: [], endpoints: Endpoints.none }, problems: p.done() };
  const v6 = r.data.addressType === 'IPv6';

  const ports: EndpointSlice['ports'] = [];
  const rawPorts = r.data.ports ?? [];
  if (rawPorts.length > SLICE_MAX_PORTS) {
    p.warn(
      'ports',
      `${rawPorts.length} ports, more than the ${SLICE_MAX_PORTS} an EndpointSlice may have; ports[${SLICE_MAX_PORTS}] on are skipped`,
    );
  }
  rawPorts.slice(0, SLICE_MAX_PORTS).forEach((sp, i) => {
    if (sp.port === undefined) return p.entry('ports', `ports[${i}].port`, 'missing; port skipped');
    const err = sp.name ? dns1123Label(sp.name) : undefined;
    if (err) return p.entry('ports', `ports[${i}].name`, `a port name ${err}; port skipped`);
    ports.push({ name: intern(sp.name ?? ''), port: sp.port, protocol: sp.protocol ?? 'TCP' });
  });
  const endpoints: SliceEndpoint[] = [];
  const rawEps = r.data.endpoints ?? [];
  if (rawEps.length > SLICE_MAX_ENDPOINTS) {
    p.warn(
      'endpoints',
      `${rawEps.length} endpoints, more than the ${SLICE_MAX_ENDPOINTS} an EndpointSlice may have; endpoints[${SLICE_MAX_ENDPOINTS}] on are skipped`,
    );
  }
  rawEps.slice(0, SLICE_MAX_ENDPOINTS).forEach((raw, i) => {
    const er = EndpointShape.safeParse(raw);
    if (!er.success) {
      for (const z of zodProblems(object, `endpoints[${i}]`, er.error, false))
        p.entry('endpoints', z.field, `${z.message}; endpoint skipped`);
      return;
    }
    const nodeName = er.data.nodeName;
    const nodeErr = nodeName ? dns1123Subdomain(nodeName) : undefined;
    if (nodeErr) return p.entry('endpoints', `endpoints[${i}].nodeName`, `a node name ${nodeErr}; endpoint skipped`);
    if (er.data.addresses.length > ENDPOINT_MAX_ADDRESSES) {
      p.entry(
        'endpoints',
        `endpoints[${i}].addresses`,
        `${er.data.addresses.length} addresses, more than ${ENDPOINT_MAX_ADDRESSES}; the rest are skipped`,
      );
    }
    const addresses: string[] = [];
    er.data.addresses.slice(0, ENDPOINT_MAX_ADDRESSES).forEach((raw, j) => {
      const field = `endpoints[${i}].addresses[${j}]`;
      const a = v6 ? canonicalIpv6(raw) : isIPv4(raw) ? raw : undefined;
      if (!a)
        return p.entry(
          'endpoints',
          field,
          `${quote(raw)} is not an ${v6 ? 'IPv6' : 'IPv4'} address (addressType ${r.data.addressType}); skipped`,
        );
      const why = v6 ? nonUnicastReason6(a) : nonUnicastReason(a);
      if (why) return p.entry('endpoints', field, `${a} ${why}: an endpoint must be a unicast address; skipped`);
      addresses.push(a);
    });
    if (addresses.length === 0) return;
    const c = er.data.conditions ?? {};
    const ready = c.ready ?? true;
    const serving = c.serving ?? ready;
    const terminating = c.terminating ?? false;
    const e: SliceEndpoint = nodeName
      ? { addresses, ready, serving, terminating, nodeName: intern(nodeName) }
      : { addresses, ready, serving, terminating };
    const zoneHints = hintNames(er.data.hints?.forZones, `endpoints[${i}].hints.forZones`, labelValue, p);
    const nodeHints = hintNames(
      er.data.hints?.forNodes,
      `endpoints[${i}].hints.forNodes`,
      (v) => (v === '' ? 'is empty' : dns1123Subdomain(v)),
      p,
    );
    if (zoneHints) e.zoneHints = zoneHints;
    if (nodeHints) e.nodeHints = nodeHints;
    endpoints.push(e);
  });
  return { value: { ...base, ports: ports.slice(), endpoints: Endpoints.of(endpoints) }, problems: p.done() };
}

const NodeShape = z.looseObject({
  metadata: Meta.extend({ annotations: z.record(z.string(), z.string()).nullable().optional() }),
  status: z
    .looseObject({
      addresses: z
        .array(z.looseObject({ type: z.string(), address: z.string() }))
        .nullable()
        .optional(),
    })
    .optional(),
});

/** The Node label kube-proxy reads a node's zone from. */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

/** A v1 Node: its name, IPv4 InternalIP and ExternalIP addresses, and zone. */
export function toNode(o: unknown): Converted<Node> {
  const object = objectName('Node', o, true);
  const r = NodeShape.safeParse(o);
  if (!r.success) return { problems: zodProblems(object, '', r.error, true) };
  const p = new Problems(object);
  const name = r.data.metadata.name;
  const nameErr = dns1123Subdomain(name);
  if (nameErr) return p.fatal('metadata.name', `a node name ${nameErr}`);
  const internalIPs: string[] = [];
  const externalIPs: string[] = [];
  (r.data.status?.addresses ?? []).forEach((a, i) => {
    const list = a.type === 'InternalIP' ? internalIPs : a.type === 'ExternalIP' ? externalIPs : undefined;
    if (!list || isIPv6(a.address)) return; // Hostname, InternalDNS...; IPv6 is not served yet
    const field = `status.addresses[${i}].address`;
    if (!isIPv4(a.address)) return p.entry('status.addresses', field, `${quote(a.address)} is not an IP address; skipped`);
    if (!list.includes(a.address)) list.push(a.address);
  });
  const zone = r.data.metadata.labels?.[ZONE_LABEL];
  const decap = r.data.metadata.annotations?.[DECAP_ANNOTATION];
  return {
    value: { name, internalIPs, externalIPs, ...(zone ? { zone: intern(zone) } : {}), ...(decap ? { decap: intern(decap) } : {}) },
    problems: p.done(),
  };
}

/**
 * A FelixConfiguration, for the config controller: its name and spec as
 * written (src/config/felix.ts validates the spec; a spec that is not a
 * mapping counts as empty).
 */
export interface FelixConfiguration {
  name: string;
  spec: Record<string, unknown>;
}

export function toFelixConfiguration(name: string, o: unknown): FelixConfiguration {
  const spec = (o as { spec?: unknown } | undefined)?.spec;
  return { name, spec: spec && typeof spec === 'object' && !Array.isArray(spec) ? (spec as Record<string, unknown>) : {} };
}
