/**
 * What the sync pipeline drives. The BPF map reconciler implements it today;
 * the AF_XDP vector engine will implement the same interface, fed by the
 * same Frontends.
 */
import type { Frontend } from '../model/types.js';

export interface SyncProblem {
  /** "namespace/name" of the service */
  service: string;
  /** "10.96.0.10:80/TCP (ClusterIP)" when one frontend was concerned */
  frontend?: string;
  /** the Service field that asked for it ("spec.externalIPs"), when the node refused it */
  field?: string;
  message: string;
  /** a map was full */
  mapFull?: boolean;
}

export interface SyncReport {
  /** frontends written or removed */
  frontendsChanged: number;
  problems: SyncProblem[];
  /** services whose sync should be retried (a frontend they wanted was freed) */
  retry: string[];
}

export interface Dataplane {
  /** Make the frontends of one service ("namespace/name") exactly these. */
  syncService(service: string, frontends: readonly Frontend[]): SyncReport;
  /** Make the whole dataplane exactly this; services not listed are removed. */
  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport;
  /**
   * The node's own addresses, and those of them NodePort answers on
   * (--nodeport-addresses; default: all of them).
   */
  setNodeAddresses(ips: readonly string[], nodePort?: readonly string[]): void;
}

export function emptyReport(): SyncReport {
  return { frontendsChanged: 0, problems: [], retry: [] };
}

export function mergeReports(into: SyncReport, r: SyncReport): SyncReport {
  into.frontendsChanged += r.frontendsChanged;
  into.problems.push(...r.problems);
  into.retry.push(...r.retry);
  return into;
}

/** What a dataplane reports for one metrics scrape (taken once per scrape). */
export interface ConntrackSnapshot {
  /** entries left after the last GC pass, by protocol */
  byProto: { tcp: number; udp: number; other: number };
  gcRuns: number;
  /** wall time of the last pass, ms */
  gcLastMs: number;
  gcRemovedTotal: number;
  /** Date.now() of the last pass; 0 before the first */
  gcLastRunAt: number;
}

export interface DatapathSnapshot {
  maps: Array<{ map: string; entries: number; maxEntries: number }>;
  reasons: Array<{ reason: string; verdict: string; packets: number; bytes: number }>;
  conntrackEntries: number;
  conntrack?: ConntrackSnapshot;
  /** bpfExternalServiceMode in force and the tunnel's counters (bpf/lib/tunnel.h) */
  tunnel?: TunnelSnapshot;
}

export interface TunnelSnapshot {
  /** Tunnel, DSR or SNAT: what new external flows to another node's endpoint get */
  mode: string;
  /** this node's tunnel address; 0.0.0.0: none (SNAT) */
  local: string;
  /** new external flows to another node's endpoint, by how they are carried */
  newFlows: { SNAT: number; Tunnel: number; DSR: number };
  /** flows that arrived through the tunnel to a local endpoint */
  newFromTunnel: number;
  /** tunnelled flows (this node the endpoint's) whose client packets came by another ingress node, or
   * straight here: replies follow them */
  moved: number;
  /** mid-flow TCP packets of no known flow to a Maglev frontend taken as new flows (the flow came
   * through another ingress node first) */
  midflow: number;
  packets: { encap: number; decap: number; dsrReply: number };
  bytes: { encap: number; decap: number; dsrReply: number };
}
