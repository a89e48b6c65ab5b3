/**
 * The current Services and EndpointSlices, as domain objects, from whatever
 * source (manifests, the Kubernetes API). Applying an object only records
 * it and marks the service it belongs to as changed; nothing is computed
 * or programmed here.
 */
import { createHash } from 'node:crypto';
import { DEFAULT_SERVICE_POLICY } from '../config/services.js';
import { desiredFor, frontendsFor, type Desired, type NodeContext } from '../model/desired.js';
import type { EndpointSlice, Frontend, Service } from '../model/types.js';
import { serviceKey } from '../model/types.js';
import { toEndpointSlice, toService, type ConvertPolicy, type Problem } from '../sources/convert.js';

export type ChangeListener = (service: string) => void;

/** A digest of a converted object: change detection without keeping a copy. */
const digest = (v: unknown): string => createHash('sha1').update(JSON.stringify(v)).digest('base64');

export class ServiceStore {
  /** `seq`: when the store first saw the service (kept across updates) */
  private readonly services = new Map<string, { svc: Service; digest: string; seq: number }>();
  private seq = 0;
  private readonly slices = new Map<string, { slice: EndpointSlice; digest: string }>();
  private readonly slicesBySvc = new Map<string, Set<string>>();

  constructor(
    private readonly onChange: ChangeListener,
    /** told of each recorded change, for metrics */
    private readonly onRecorded: (kind: 'service' | 'slice') => void = () => undefined,
    private readonly policy: ConvertPolicy = DEFAULT_SERVICE_POLICY,
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
    const { value, problems } = toService(obj, this.policy);
    if (!value) {
      // A broken object withdraws nothing it did not already have: the last
      // good version (if any) stays in force.
      return problems;
    }
    const k = serviceKey(value.namespace, value.name);
    const d = digest(value);
    const old = this.services.get(k);
    if (old?.digest !== d) {
      this.services.set(k, { svc: value, digest: d, seq: old?.seq ?? this.seq++ });
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

  /**
   * Service keys oldest first: by metadata.creationTimestamp (missing counts
   * as newest), then by when the store first saw them. When two services
   * claim one address, the first in this order keeps it, whatever their
   * names and whichever the agent happened to program first.
   */
  serviceKeysByAge(): string[] {
    return [...this.services.entries()]
      .sort(([, a], [, b]) => (a.svc.createdAt ?? Infinity) - (b.svc.createdAt ?? Infinity) || a.seq - b.seq)
      .map(([k]) => k);
  }

  /** Services that claim any of these addresses (cluster, external or LoadBalancer IPs). */
  servicesClaiming(ips: ReadonlySet<string>): string[] {
    const out: string[] = [];
    for (const [k, { svc }] of this.services) {
      if ([svc.clusterIPs, svc.externalIPs, svc.loadBalancerIPs].some((l) => l.some((ip) => ips.has(ip)))) out.push(k);
    }
    return out;
  }

  get size(): { services: number; slices: number } {
    return { services: this.services.size, slices: this.slices.size };
  }

  /** Services this node must answer health checks for, by healthCheckNodePort. */
  healthCheckPorts(nodeName: string): Map<number, { namespace: string; name: string; localEndpoints: number }> {
    const out = new Map<number, { namespace: string; name: string; localEndpoints: number }>();
    for (const k of this.serviceKeysByAge()) {
      const { svc } = this.services.get(k)!;
      // two services on one port: the older keeps it, as with addresses
      if (!svc.healthCheckNodePort || out.has(svc.healthCheckNodePort)) continue;
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

  /** The same, minus what this node refuses to serve (its own addresses), with why. */
  desiredOf(key: string, node: NodeContext): Desired {
    const svc = this.service(key);
    return svc ? desiredFor(svc, this.slicesOf(key), node) : { frontends: [], problems: [] };
  }
}
