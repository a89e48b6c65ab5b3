/**
 * The current Services and EndpointSlices, as domain objects, from whatever
 * source (manifests, the Kubernetes API): the sources convert and validate,
 * the store sees only what converted. Applying an object only records it
 * and marks the service it belongs to as changed; nothing is computed or
 * programmed here.
 */
import { desiredFor, frontendsFor, type Desired, type NodeContext } from '../model/desired.js';
import { sameData } from '../model/equal.js';
import type { EndpointSlice, Frontend, Service } from '../model/types.js';
import { serviceKey } from '../model/types.js';

export type ChangeListener = (service: string) => void;

export class ServiceStore {
  /** `seq`: when the store first saw the service (kept across updates) */
  private readonly services = new Map<string, { svc: Service; seq: number }>();
  private seq = 0;
  private readonly slices = new Map<string, EndpointSlice>();
  /** slice keys of each service: one key alone, or a set of them */
  private readonly slicesBySvc = new Map<string, string | Set<string>>();
  /** services with slices whose endpoints carry topology hints: how many such slices */
  private readonly hintedBySvc = new Map<string, number>();

  constructor(
    private readonly onChange: ChangeListener,
    /** told of each recorded change, for metrics */
    private readonly onRecorded: (kind: 'service' | 'slice') => void = () => undefined,
  ) {}

  /**
   * Record a Service (undefined: deleted). An equal one changes nothing.
   * `key` is its namespace/name.
   */
  applyService(key: string, svc: Service | undefined): void {
    if (svc === undefined) {
      if (this.services.delete(key)) {
        this.onRecorded('service');
        this.onChange(key);
      }
      return;
    }
    const k = serviceKey(svc.namespace, svc.name);
    const old = this.services.get(k);
    if (old && sameData(old.svc, svc)) return;
    this.services.set(k, { svc, seq: old?.seq ?? this.seq++ });
    this.onRecorded('service');
    this.onChange(k);
  }

  /** Record an EndpointSlice (undefined: deleted), by its namespace/name. */
  applySlice(key: string, slice: EndpointSlice | undefined): void {
    if (slice === undefined) {
      const old = this.slices.get(key);
      if (old) {
        this.slices.delete(key);
        const sk = serviceKey(old.namespace, old.serviceName);
        this.unlink(sk, key);
        this.countHinted(sk, old, -1);
        this.onRecorded('slice');
        this.onChange(sk);
      }
      return;
    }
    const old = this.slices.get(key);
    if (old && sameData(old, slice)) return;
    const sk = serviceKey(slice.namespace, slice.serviceName);
    if (old) this.countHinted(serviceKey(old.namespace, old.serviceName), old, -1);
    this.countHinted(sk, slice, 1);
    if (old) {
      const oldSk = serviceKey(old.namespace, old.serviceName);
      if (oldSk !== sk) {
        this.unlink(oldSk, key);
        this.onChange(oldSk);
      }
    }
    this.slices.set(key, slice);
    this.link(sk, key);
    this.onRecorded('slice');
    this.onChange(sk);
  }

  private countHinted(svc: string, slice: EndpointSlice, by: 1 | -1): void {
    if (!slice.endpoints.hinted) return;
    const n = (this.hintedBySvc.get(svc) ?? 0) + by;
    if (n > 0) this.hintedBySvc.set(svc, n);
    else this.hintedBySvc.delete(svc);
  }

  /**
   * Services with an EndpointSlice whose endpoints carry topology hints:
   * the ones whose endpoints on this node depend on its zone.
   */
  servicesWithHints(): string[] {
    return [...this.hintedBySvc.keys()];
  }

  /** Most services have one slice: its key stands alone, a Set only from the second. */
  private link(svc: string, slice: string): void {
    const cur = this.slicesBySvc.get(svc);
    if (cur === undefined) this.slicesBySvc.set(svc, slice);
    else if (typeof cur === 'string') {
      if (cur !== slice) this.slicesBySvc.set(svc, new Set([cur, slice]));
    } else cur.add(slice);
  }

  private unlink(svc: string, slice: string): void {
    const cur = this.slicesBySvc.get(svc);
    if (cur === slice) this.slicesBySvc.delete(svc);
    else if (typeof cur === 'object') {
      cur.delete(slice);
      if (cur.size === 1) this.slicesBySvc.set(svc, [...cur][0]!);
    }
  }

  service(key: string): Service | undefined {
    return this.services.get(key)?.svc;
  }

  slicesOf(key: string): EndpointSlice[] {
    const keys = this.slicesBySvc.get(key);
    if (keys === undefined) return [];
    return typeof keys === 'string' ? [this.slices.get(keys)!] : [...keys].map((k) => this.slices.get(k)!);
  }

  /** Every EndpointSlice held. */
  allSlices(): IterableIterator<EndpointSlice> {
    return this.slices.values();
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
    return svc ? desiredFor(svc, this.slicesOf(key), node) : { frontends: [], problems: [], topology: [] };
  }
}
