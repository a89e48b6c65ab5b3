/**
 * Prometheus metrics (prom-client), read on scrape, never on the data path.
 * kube-proxy's names where kube-proxy has the metric; bpfproxy_* for the
 * rest (map fill, drops by reason, conntrack).
 *
 * A scrape takes one datapath snapshot (maps counted on a worker thread,
 * conntrack figures from the GC's last pass) that every gauge reads:
 * nothing dumps a map on the event loop, nothing is counted twice.
 */
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';
import type { DatapathSnapshot } from './dataplane/dataplane.js';

export type { ConntrackSnapshot, DatapathSnapshot } from './dataplane/dataplane.js';
import type { BindAddress } from './health/bind-address.js';
import { listenHttp } from './health/servers.js';
import type { PolicyFigures, PolicySyncResult } from './proxy/policy-sync.js';

export type SnapshotSource = () => DatapathSnapshot | Promise<DatapathSnapshot | undefined> | undefined;

export class Metrics {
  readonly registry = new Registry();
  readonly syncDuration: Histogram;
  readonly programmingDuration: Histogram;
  readonly lastSync: Gauge;
  readonly serviceChanges: Counter;
  readonly endpointChanges: Counter;
  readonly syncProblems: Gauge;
  readonly mapFull: Counter;
  readonly enabled: Gauge;
  readonly policySyncDuration: Histogram;
  readonly policyTableFull: Counter;
  private policy: () => PolicyFigures | undefined = () => undefined;
  private server: Server | undefined;
  private source: SnapshotSource = () => undefined;
  /** what the datapath gauges report: taken once per scrape */
  private current: DatapathSnapshot | undefined;
  private refreshing: Promise<void> | undefined;
  private log: Logger | undefined;
  private lastError = '';

  constructor() {
    const r = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.syncDuration = new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers: r,
    });
    this.programmingDuration = new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: 'In-cluster network programming latency in seconds (from the change being seen to it being in the maps)',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: r,
    });
    this.lastSync = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time the maps were successfully synced',
      registers: r,
    });
    this.serviceChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative service changes',
      registers: r,
    });
    this.endpointChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative endpoint (EndpointSlice) changes',
      registers: r,
    });
    this.syncProblems = new Gauge({ name: 'bpfproxy_sync_problems', help: 'Frontends the last sync could not program', registers: r });
    this.mapFull = new Counter({ name: 'bpfproxy_map_full_total', help: 'Frontends not programmed because a map was full', registers: r });
    this.enabled = new Gauge({
      name: 'bpfproxy_dataplane_enabled',
      help: '1 while bpfproxy owns the service dataplane (bpfEnabled)',
      registers: r,
    });
    const cur = () => this.current;
    this.policySyncDuration = new Histogram({
      name: 'bpfproxy_policy_sync_duration_seconds',
      help: 'NetworkPolicy sync latency: compiling the policies and writing what changed into the policy maps',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    });
    this.policyTableFull = new Counter({
      name: 'bpfproxy_policy_table_full_total',
      help: 'Endpoint rule tables that did not fit (or the kernel refused): the endpoint denies everything in its isolated directions until its policy fits (see the agent log)',
      registers: r,
    });
    const pol = () => this.policy();
    const policyGauge = (name: string, help: string, pick: (f: PolicyFigures) => number) =>
      new Gauge({
        name,
        help,
        registers: r,
        collect() {
          this.reset();
          const f = pol();
          if (f) this.set(pick(f));
        },
      });
    policyGauge('bpfproxy_network_policy_enabled', '1 when NetworkPolicy is enforced (--network-policy on)', (f) => (f.enabled ? 1 : 0));
    policyGauge('bpfproxy_policy_identities', 'Identities (address prefixes) in the policy ipcache', (f) => f.identities);
    policyGauge('bpfproxy_policy_endpoints', 'Local pods with a policy endpoint', (f) => f.endpoints);
    policyGauge('bpfproxy_policy_endpoints_isolated', 'Local pods isolated in at least one direction', (f) => f.isolated);
    policyGauge('bpfproxy_policy_table_entries', 'Rule table entries over all endpoints', (f) => f.tableEntries);
    policyGauge(
      'bpfproxy_policy_table_largest_entries',
      'Entries of the largest endpoint rule table (fill: over bpfproxy_policy_table_max_entries)',
      (f) => f.largestTable,
    );
    policyGauge('bpfproxy_policy_table_max_entries', 'Entries one endpoint rule table holds at most', (f) => f.tableMax);
    policyGauge(
      'bpfproxy_policy_endpoints_deny_all',
      'Endpoints whose rule table did not fit and which deny everything in their isolated directions now',
      (f) => f.denyAllNow,
    );
    new Gauge({
      name: 'bpfproxy_policy_hits_total',
      help: 'Policy decisions (new flows and re-checks) taken by the rules of each NetworkPolicy; "(node)": the node reaching its pods',
      labelNames: ['policy'],
      registers: r,
      collect() {
        this.reset();
        for (const [policy, n] of pol()?.hitsByPolicy ?? []) this.set({ policy }, n);
      },
    });
    new Gauge({
      name: 'bpfproxy_policy_drops_total',
      help: 'Packets dropped by NetworkPolicy, by reason (policy-denied, policy-no-table, policy-unknown-flow, policy-ipv6; from the per-CPU counters)',
      labelNames: ['reason'],
      registers: r,
      collect() {
        this.reset();
        for (const x of cur()?.reasons ?? []) if (x.reason.startsWith('policy-')) this.set({ reason: x.reason }, x.packets);
      },
    });
    new Gauge({
      name: 'bpfproxy_map_entries',
      help: 'Entries in each BPF map',
      labelNames: ['map'],
      registers: r,
      collect() {
        this.reset();
        for (const m of cur()?.maps ?? []) this.set({ map: m.map }, m.entries);
      },
    });
    new Gauge({
      name: 'bpfproxy_map_max_entries',
      help: 'Capacity of each BPF map',
      labelNames: ['map'],
      registers: r,
      collect() {
        this.reset();
        for (const m of cur()?.maps ?? []) this.set({ map: m.map }, m.maxEntries);
      },
    });
    new Gauge({
      name: 'bpfproxy_external_mode',
      help: 'bpfExternalServiceMode in force for new flows: 1 for the mode in force (Tunnel, DSR or SNAT)',
      labelNames: ['mode'],
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) for (const m of ['Tunnel', 'DSR', 'SNAT']) this.set({ mode: m }, x.mode === m ? 1 : 0);
      },
    });
    new Gauge({
      name: 'bpfproxy_external_remote_flows_total',
      help: 'New external flows to an endpoint on another node, by how they were carried (SNAT, Tunnel, DSR)',
      labelNames: ['mode'],
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) for (const [m, n] of Object.entries(x.newFlows)) this.set({ mode: m }, n);
      },
    });
    new Gauge({
      name: 'bpfproxy_tunnel_packets_total',
      help: 'Tunnel packets: encap (sent in VXLAN), decap (received from another node), dsr_reply (replies sent straight to the client)',
      labelNames: ['direction'],
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) {
          this.set({ direction: 'encap' }, x.packets.encap);
          this.set({ direction: 'decap' }, x.packets.decap);
          this.set({ direction: 'dsr_reply' }, x.packets.dsrReply);
        }
      },
    });
    new Gauge({
      name: 'bpfproxy_tunnel_flows_from_remote_total',
      help: 'New flows that arrived through the tunnel from another ingress node to a local endpoint (FROM TUNNEL in bpfproxy status)',
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) this.set(x.newFromTunnel);
      },
    });
    new Gauge({
      name: 'bpfproxy_tunnel_flows_moved_total',
      help: 'Tunnelled flows to a local endpoint whose client packets then came by another ingress node or straight to this node; their replies follow the new way (MOVED in bpfproxy status)',
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) this.set(x.moved);
      },
    });
    new Gauge({
      name: 'bpfproxy_maglev_midflow_flows_total',
      help: 'Mid-flow TCP packets of no known flow to a Maglev frontend taken as new flows: the flow came through another ingress node first (MAGLEV MID-FLOW in bpfproxy status)',
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) this.set(x.midflow);
      },
    });
    new Gauge({
      name: 'bpfproxy_tunnel_bytes_total',
      help: 'Tunnel bytes, as bpfproxy_tunnel_packets_total (encap: with the outer headers; decap: without them)',
      labelNames: ['direction'],
      registers: r,
      collect() {
        this.reset();
        const x = cur()?.tunnel;
        if (x) {
          this.set({ direction: 'encap' }, x.bytes.encap);
          this.set({ direction: 'decap' }, x.bytes.decap);
          this.set({ direction: 'dsr_reply' }, x.bytes.dsrReply);
        }
      },
    });
    new Gauge({
      name: 'bpfproxy_datapath_packets_total',
      help: 'Packets not simply passed, by reason and verdict (from the per-CPU counters)',
      labelNames: ['reason', 'verdict'],
      registers: r,
      collect() {
        this.reset();
        for (const x of cur()?.reasons ?? []) this.set({ reason: x.reason, verdict: x.verdict }, x.packets);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_entries',
      help: "Conntrack entries (IPv4 and IPv6) after the conntrack GC's last pass (every 10 s), two per connection",
      registers: r,
      collect() {
        this.set(cur()?.conntrackEntries ?? 0);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_entries_by_protocol',
      help: "Conntrack entries (IPv4 and IPv6) after the conntrack GC's last pass, by protocol",
      labelNames: ['protocol'],
      registers: r,
      collect() {
        this.reset();
        const ct = cur()?.conntrack;
        if (!ct) return;
        this.set({ protocol: 'TCP' }, ct.byProto.tcp);
        this.set({ protocol: 'UDP' }, ct.byProto.udp);
        this.set({ protocol: 'other' }, ct.byProto.other);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_gc_duration_seconds',
      help: "Wall time of the conntrack GC's last pass (on a worker thread, not the event loop)",
      registers: r,
      collect() {
        this.reset();
        const ct = cur()?.conntrack;
        if (ct?.gcRuns) this.set(ct.gcLastMs / 1000);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_gc_removed_total',
      help: 'Conntrack entries the GC removed since the agent started (dead connections, both halves)',
      registers: r,
      collect() {
        this.set(cur()?.conntrack?.gcRemovedTotal ?? 0);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_gc_last_run_timestamp_seconds',
      help: 'When the conntrack GC last finished a pass',
      registers: r,
      collect() {
        this.reset();
        const ct = cur()?.conntrack;
        if (ct?.gcLastRunAt) this.set(ct.gcLastRunAt / 1000);
      },
    });
  }

  /** Where the policy figures come from. */
  setPolicy(fn: () => PolicyFigures | undefined): void {
    this.policy = fn;
  }

  /** After each policy sync: its duration, and tables that did not fit. */
  policySynced(r: PolicySyncResult): void {
    this.policySyncDuration.observe(r.ms / 1000);
    if (r.denyAll.length) this.policyTableFull.inc(r.denyAll.length);
  }

  /** Where the datapath figures come from (undefined while the dataplane is off). */
  setSnapshot(fn: SnapshotSource): void {
    this.source = fn;
  }

  /**
   * Take the datapath snapshot the gauges report. Concurrent scrapes share
   * one; a failed one leaves the datapath gauges empty for that scrape.
   */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        this.current = await this.source();
        this.lastError = '';
      } catch (e) {
        this.current = undefined;
        const msg = e instanceof Error ? e.message : String(e);
        if (msg !== this.lastError) {
          this.log?.error(
            `cannot read the datapath for /metrics: ${msg}; map and conntrack gauges are left out of this scrape and read again on the next`,
          );
        }
        this.lastError = msg;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** One scrape: one snapshot, then every metric in the exposition format. */
  async scrape(): Promise<string> {
    await this.refresh();
    return this.registry.metrics();
  }

  /** Serve /metrics on addr (--metrics-bind-address). */
  listen(addr: BindAddress, log: Logger): void {
    this.log = log;
    this.server?.close();
    this.server = listenHttp(
      addr,
      (req, res) => {
        if (!req.url?.startsWith('/metrics')) {
          res.writeHead(404).end();
          return;
        }
        this.scrape().then(
          (body) => {
            res.writeHead(200, { 'Content-Type': this.registry.contentType });
            res.end(body);
          },
          (e: Error) => {
            res.writeHead(500).end(e.message);
          },
        );
      },
      log,
      'metrics',
    );
  }

  close(): void {
    this.server?.close();
  }
}
