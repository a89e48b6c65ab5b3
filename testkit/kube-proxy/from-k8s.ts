/**
 * Services and EndpointSlices as kube-proxy reads them (pkg/proxy
 * serviceport.go, endpointslicecache.go), into the generator's ServicePorts:
 * one per Service port; endpoints from the slices labelled with the
 * Service's name whose port has the same name and protocol, first address
 * only, deduplicated; conditions kept for kube-proxy's categorization.
 * IPv4 only; ExternalName and headless Services have no rules.
 */
import type { Endpoint, ServicePort } from './rules.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const isV4 = (a: unknown): a is string => typeof a === 'string' && /^\d{1,3}(\.\d{1,3}){3}$/.test(a);
const get = (o: unknown, ...path: string[]): unknown => path.reduce<unknown>((x, k) => (isObj(x) ? x[k] : undefined), o);

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** kube-proxy's default affinity timeout (v1.DefaultClientIPServiceAffinitySeconds) */
const DEFAULT_AFFINITY_SECONDS = 10800;

/** namespace/name of the Service an EndpointSlice belongs to, or undefined. */
export function sliceService(slice: unknown): string | undefined {
  const ns = str(get(slice, 'metadata', 'namespace'));
  const svc = str(get(slice, 'metadata', 'labels', SERVICE_NAME_LABEL));
  return ns && svc ? `${ns}/${svc}` : undefined;
}

/** Why kube-proxy writes no rules for this Service (ExternalName, headless, no IPv4 cluster IP), or undefined. */
export function skipReason(svc: unknown): string | undefined {
  if (get(svc, 'spec', 'type') === 'ExternalName') return 'type ExternalName';
  const ip = get(svc, 'spec', 'clusterIP');
  if (ip === 'None' || ip === '' || ip === undefined) return 'headless (no cluster IP)';
  if (!isV4(ip)) return `cluster IP ${JSON.stringify(ip)} is not IPv4`;
  return undefined;
}

/**
 * The ServicePorts of one Service on node `nodeName`, with the endpoints of
 * its slices (those of `slices` labelled with its name). Ports with a
 * protocol other than TCP or UDP are left out.
 */
export function servicePorts(svc: unknown, slices: readonly unknown[], nodeName: string): ServicePort[] {
  if (skipReason(svc)) return [];
  const spec = get(svc, 'spec') as Obj;
  const namespace = str(get(svc, 'metadata', 'namespace')) ?? 'default';
  const name = str(get(svc, 'metadata', 'name')) ?? '';
  const type = str(spec.type) ?? 'ClusterIP';
  const lb = type === 'LoadBalancer';
  const lbIPs = lb
    ? arr(get(svc, 'status', 'loadBalancer', 'ingress'))
        .filter((i) => get(i, 'ipMode') !== 'Proxy')
        .map((i) => get(i, 'ip'))
        .filter(isV4)
    : [];
  const affinity = spec.sessionAffinity === 'ClientIP';
  const timeout = get(spec, 'sessionAffinityConfig', 'clientIP', 'timeoutSeconds');
  const own = slices.filter((sl) => sliceService(sl) === `${namespace}/${name}`);
  const out: ServicePort[] = [];
  for (const p of arr(spec.ports)) {
    const protocol = str(get(p, 'protocol')) ?? 'TCP';
    if (protocol !== 'TCP' && protocol !== 'UDP') continue;
    const portName = str(get(p, 'name')) ?? '';
    const endpoints = new Map<string, Endpoint>();
    for (const slice of own) {
      if (get(slice, 'addressType') !== 'IPv4') continue;
      const sp = arr(get(slice, 'ports')).find(
        (x) => (str(get(x, 'name')) ?? '') === portName && (str(get(x, 'protocol')) ?? 'TCP') === protocol,
      );
      const port = get(sp, 'port');
      if (typeof port !== 'number') continue;
      for (const e of arr(get(slice, 'endpoints'))) {
        const ip = arr(get(e, 'addresses'))[0];
        if (!isV4(ip)) continue;
        const c = get(e, 'conditions');
        const ready = get(c, 'ready');
        const serving = get(c, 'serving');
        const terminating = get(c, 'terminating');
        endpoints.set(`${ip}:${port}`, {
          ip,
          port,
          local: get(e, 'nodeName') === nodeName,
          ...(typeof ready === 'boolean' ? { ready } : {}),
          ...(typeof serving === 'boolean' ? { serving } : {}),
          ...(typeof terminating === 'boolean' ? { terminating } : {}),
        });
      }
    }
    const nodePort = get(p, 'nodePort');
    const hc = spec.healthCheckNodePort;
    out.push({
      namespace,
      name,
      portName,
      clusterIP: spec.clusterIP as string,
      port: Number(get(p, 'port')),
      protocol,
      endpoints: [...endpoints.values()],
      ...(typeof nodePort === 'number' && nodePort > 0 ? { nodePort } : {}),
      ...(arr(spec.externalIPs).filter(isV4).length ? { externalIPs: arr(spec.externalIPs).filter(isV4) } : {}),
      ...(lbIPs.length ? { loadBalancerIPs: lbIPs } : {}),
      ...(lb && arr(spec.loadBalancerSourceRanges).length
        ? { loadBalancerSourceRanges: arr(spec.loadBalancerSourceRanges).filter((r): r is string => typeof r === 'string') }
        : {}),
      ...(spec.externalTrafficPolicy === 'Local' ? { externalPolicyLocal: true } : {}),
      ...(spec.internalTrafficPolicy === 'Local' ? { internalPolicyLocal: true } : {}),
      ...(affinity ? { affinityTimeoutSeconds: typeof timeout === 'number' ? timeout : DEFAULT_AFFINITY_SECONDS } : {}),
      ...(typeof hc === 'number' && hc > 0 ? { healthCheckNodePort: hc } : {}),
    });
  }
  return out;
}
