/** Kubernetes objects for tests (what kubectl would store), and their domain objects. */
import { toEndpointSlice, toService } from '../../src/sources/convert.js';
import type { EndpointSlice, Service } from '../../src/model/types.js';

export function service(
  ns: string,
  name: string,
  ip: string,
  extra: Record<string, unknown> = {},
  ports: unknown[] = [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: { clusterIP: ip, clusterIPs: [ip], selector: { app: name }, ports, ...extra },
  };
}

export function slice(ns: string, svc: string, name: string, eps: Array<{ ip: string; node?: string; ready?: boolean }>, port = 8080) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: 'IPv4',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': svc } },
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready ?? true }, ...(e.node ? { nodeName: e.node } : {}) })),
  };
}

export function felix(name: string, spec: Record<string, unknown>) {
  return { apiVersion: 'crd.projectcalico.org/v1', kind: 'FelixConfiguration', metadata: { name }, spec };
}

/** The domain Service a source delivers for this object (it must convert). */
export function asService(o: unknown): Service {
  const r = toService(o);
  if (!r.value) throw new Error(`test object does not convert: ${JSON.stringify(r.problems)}`);
  return r.value;
}

/** The domain EndpointSlice a source delivers for this object (it must convert). */
export function asSlice(o: unknown): EndpointSlice {
  const r = toEndpointSlice(o);
  if (!r.value) throw new Error(`test object does not convert: ${JSON.stringify(r.problems)}`);
  return r.value;
}
