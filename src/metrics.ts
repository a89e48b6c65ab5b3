/**
 * Prometheus metrics (prom-client), read on scrape, never on the data path.
 * kube-proxy's names where kube-proxy has the metric; bpfproxy_* for the
 * rest (map fill, drops by reason, conntrack).
 */
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from './log.js';
import type { BindAddress } from './health/bind-address.js';
import { listenHttp } from './health/servers.js';

export interface DatapathSnapshot {
  maps: Array<{ map: string; entries: number; maxEntries: number }>;
  reasons: Array<{ reason: string; verdict: string; packets: number; bytes: number }>;
  conntrackEntries: number;
}

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
  private server: Server | undefined;
  private snapshot: () => DatapathSnapshot | undefined = () => undefined;

  constructor() {
    const r = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.syncDuration = new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds', help: 'SyncProxyRules latency in seconds',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5], registers: r,
    });
    this.programmingDuration = new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds', help: 'In-cluster network programming latency in seconds (from the change being seen to it being in the maps)',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30], registers: r,
    });
    this.lastSync = new Gauge({ name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds', help: 'The last time the maps were successfully synced', registers: r });
    this.serviceChanges = new Counter({ name: 'kubeproxy_sync_proxy_rules_service_changes_total', help: 'Cumulative service changes', registers: r });
    this.endpointChanges = new Counter({ name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total', help: 'Cumulative endpoint (EndpointSlice) changes', registers: r });
    this.syncProblems = new Gauge({ name: 'bpfproxy_sync_problems', help: 'Frontends the last sync could not program', registers: r });
    this.mapFull = new Counter({ name: 'bpfproxy_map_full_total', help: 'Frontends not programmed because a map was full', registers: r });
    this.enabled = new Gauge({ name: 'bpfproxy_dataplane_enabled', help: '1 while bpfproxy owns the service dataplane (bpfEnabled)', registers: r });
    const self = this;
    new Gauge({
      name: 'bpfproxy_map_entries', help: 'Entries in each BPF map', labelNames: ['map'], registers: r,
      collect() {
        this.reset();
        for (const m of self.snapshot()?.maps ?? []) this.set({ map: m.map }, m.entries);
      },
    });
    new Gauge({
      name: 'bpfproxy_map_max_entries', help: 'Capacity of each BPF map', labelNames: ['map'], registers: r,
      collect() {
        this.reset();
        for (const m of self.snapshot()?.maps ?? []) this.set({ map: m.map }, m.maxEntries);
      },
    });
    new Gauge({
      name: 'bpfproxy_datapath_packets_total', help: 'Packets not simply passed, by reason and verdict (from the per-CPU counters)', labelNames: ['reason', 'verdict'], registers: r,
      collect() {
        this.reset();
        for (const x of self.snapshot()?.reasons ?? []) this.set({ reason: x.reason, verdict: x.verdict }, x.packets);
      },
    });
    new Gauge({
      name: 'bpfproxy_conntrack_entries', help: 'Conntrack entries, two per connection (expired ones count until the GC removes them)', registers: r,
      collect() {
        const s = self.snapshot();
        this.set(s?.conntrackEntries ?? 0);
      },
    });
  }

  setSnapshot(fn: () => DatapathSnapshot | undefined): void {
    this.snapshot = fn;
  }

  /** Serve /metrics on addr (--metrics-bind-address). */
  listen(addr: BindAddress, log: Logger): void {
    this.server?.close();
    this.server = listenHttp(addr, (req, res) => {
      if (!req.url?.startsWith('/metrics')) {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then((body) => {
        res.writeHead(200, { 'Content-Type': this.registry.contentType });
        res.end(body);
      }, (e: Error) => {
        res.writeHead(500).end(e.message);
      });
    }, log, 'metrics');
  }

  close(): void {
    this.server?.close();
  }
}
