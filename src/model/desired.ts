/**
 * Desired state of one service: its frontends and their backends, computed
 * as kube-proxy computes them (ready endpoints, falling back to serving and
 * terminating ones; Local policies narrowed to this node).
 */
import type { Backend, EndpointSlice, Frontend, Service, ServicePort, SliceEndpoint } from './types.js';
import { servicePortKey } from './types.js';

export interface BackendSets {
  cluster: Backend[];
  local: Backend[];
}

function usable(eps: Array<SliceEndpoint & { port: number }>, nodeName: string): Backend[] {
  const ready = eps.filter((e) => e.ready);
  const chosen = ready.length > 0 ? ready : eps.filter((e) => e.serving && e.terminating);
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

/** The endpoints of one service port, from the service's EndpointSlices. */
export function backendsFor(port: ServicePort, slices: readonly EndpointSlice[], nodeName: string): BackendSets {
  const all: Array<SliceEndpoint & { port: number }> = [];
  for (const s of slices) {
    // EndpointSlice ports carry the service port's name and the resolved
    // target port number (named targetPorts are resolved per pod).
    const sp = s.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (!sp) continue;
    for (const e of s.endpoints) all.push({ ...e, port: sp.port });
  }
  return {
    cluster: usable(all, nodeName),
    local: usable(all.filter((e) => e.nodeName === nodeName), nodeName),
  };
}

export function frontendsFor(svc: Service, slices: readonly EndpointSlice[], nodeName: string): Frontend[] {
  if (svc.type === 'ExternalName') return [];
  const out: Frontend[] = [];
  const intLocal = svc.internalTrafficPolicy === 'Local';
  const extLocal = svc.externalTrafficPolicy === 'Local';
  for (const port of svc.ports) {
    const sets = backendsFor(port, slices, nodeName);
    const base = {
      port: port.port,
      protocol: port.protocol,
      servicePort: servicePortKey(svc, port),
      internalLocal: intLocal,
      affinityTimeout: svc.affinityTimeout,
      clusterBackends: sets.cluster,
      localBackends: sets.local,
    };
    for (const ip of svc.clusterIPs) out.push({ ...base, kind: 'ClusterIP', ip, externalLocal: false });
    for (const ip of svc.externalIPs) out.push({ ...base, kind: 'ExternalIP', ip, externalLocal: extLocal });
    if (svc.type === 'LoadBalancer') {
      for (const ip of svc.loadBalancerIPs) out.push({ ...base, kind: 'LoadBalancer', ip, externalLocal: extLocal });
    }
    if ((svc.type === 'NodePort' || svc.type === 'LoadBalancer') && port.nodePort) {
      out.push({ ...base, kind: 'NodePort', ip: '0.0.0.0', port: port.nodePort, externalLocal: extLocal });
    }
  }
  return out;
}
