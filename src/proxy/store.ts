/**
 * The current Services and EndpointSlices, as domain objects, from whatever
 * source (manifests, the Kubernetes API). Applying an object only records
 * it and marks the service it belongs to as changed; nothing is computed
 * or programmed here.
 */
import { createHash } from 'node:crypto';
import { frontendsFor } from '../model/desired.js';
import type { EndpointSlice, Frontend, Service } from '../model/types.js';
import { serviceKey } from '../model/types.js';
import { toEndpointSlice, toService, type Problem } from '../sources/convert.js';

export type ChangeListener = (service: string) => void;

/** A digest of a converted object: change detection without keeping a copy. */
const digest = (v: unknown): string => createHash('sha1').update(JSON.stringify(v)).digest('base64');

export class ServiceStore {
  private readonly services = new Map<string, { svc: Service; digest: string }>();
  private readonly slices = new Map<string, { slice: EndpointSlice; digest: string }>();
  private readonly slicesBySvc = new Map<string, Set<string>>();

  constructor(
    private readonly onChange: ChangeListener,
    /** told of each recorded change, for metrics */
    private readonly onRecorded: (kind: 'service' | 'slice') => void = () => undefined,
  ) {}

  /** Record a Service (or its deletion: obj undefined). Returns problems found. */
  applyService(key: string, obj: unknown): Problem[] {
    if (obj === undefined) {
      if (this.services.delete(key)) {
        this.onRecorded('service');
        this.onChange(key);
      }
      return [];
    }
    const { value, problems } = toService(obj);
    if (!value) {
      // A broken object withdraws nothing it did not already have: the last
      // good version (if any) stays in force.
      return problems;
    }
    const k = serviceKey(value.namespace, value.name);
    const d = digest(value);
    if (this.services.get(k)?.digest !== d) {
      this.services.set(k, { svc: value, digest: d });
      this.onRecorded('service');
      this.onChange(k);
    }
    return problems;
  }

  applySlice(key: string, obj: unknown): Problem[] {
    if (obj === undefined) {
      const old = this.slices.get(key);
      if (old) {
        this.slices.delete(key);
        const sk = serviceKey(old.slice.namespace, old.slice.serviceName);
        this.slicesBySvc.get(sk)?.delete(key);
        this.onRecorded('slice');
        this.onChange(sk);
      }
      return [];
    }
    const { value, problems } = toEndpointSlice(obj);
    if (!value) return problems;
    const d = digest(value);
    const old = this.slices.get(key);
    if (old?.digest === d) return problems;
    const sk = serviceKey(value.namespace, value.serviceName);
    if (old) {
      const oldSk = serviceKey(old.slice.namespace, old.slice.serviceName);
      if (oldSk !== sk) {
        this.slicesBySvc.get(oldSk)?.delete(key);
        this.onChange(oldSk);
      }
    }
    this.slices.set(key, { slice: value, digest: d });
    let s = this.slicesBySvc.get(sk);
    if (!s) this.slicesBySvc.set(sk, (s = new Set()));
    s.add(key);
    this.onRecorded('slice');
    this.onChange(sk);
    return problems;
  }

  service(key: string): Service | undefined {
    return this.services.get(key)?.svc;
  }

  slicesOf(key: string): EndpointSlice[] {
    return [...(this.slicesBySvc.get(key) ?? [])].map((k) => this.slices.get(k)!.slice);
  }

  serviceKeys(): string[] {
    return [...this.services.keys()];
  }

  get size(): { services: number; slices: number } {
    return { services: this.services.size, slices: this.slices.size };
  }

  /** Services this node must answer health checks for, by healthCheckNodePort. */
  healthCheckPorts(nodeName: string): Map<number, { namespace: string; name: string; localEndpoints: number }> {
    const out = new Map<number, { namespace: string; name: string; localEndpoints: number }>();
    for (const [k, { svc }] of this.services) {
      if (!svc.healthCheckNodePort) continue;
      const local = new Set<string>();
      for (const f of this.frontendsOf(k, nodeName)) for (const b of f.localBackends) local.add(b.ip);
      out.set(svc.healthCheckNodePort, { namespace: svc.namespace, name: svc.name, localEndpoints: local.size });
    }
    return out;
  }

  /** The desired frontends of one service on this node ([] when it is gone). */
  frontendsOf(key: string, nodeName: string): Frontend[] {
    const svc = this.service(key);
    return svc ? frontendsFor(svc, this.slicesOf(key), nodeName) : [];
  }
}
