/**
 * The node agent. Sources (a manifest directory or the Kubernetes API)
 * deliver Services, EndpointSlices, Nodes and FelixConfigurations; the
 * proxier keeps the service dataplane in sync; the FelixConfiguration
 * decides whether bpfproxy owns the dataplane at all (bpfEnabled) and how.
 * Stopping the agent leaves the dataplane serving. One agent per pin dir:
 * it holds the pin dir's lock (agent/lock.ts) from start to stop, so
 * `bpfproxy cleanup` does not pull the dataplane from under it.
 */
import type { SocketLbScope } from '../dataplane/bpf/sock.js';
import { realClock, type Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { ConfigController } from '../config/controller.js';
import type { Config } from '../config/config.js';
import { unsupported, type ConfigProblem } from '../config/felix.js';
import { DEFAULT_SERVICE_POLICY, type ServicePolicy } from '../config/services.js';
import { HealthServers } from '../health/servers.js';
import { DEFAULT_STATE_DIR, PinDirLock, statePaths } from './lock.js';
import type { KubeClients } from '../k8s/client.js';
import { Metrics } from '../metrics.js';
import { NodeStore } from '../proxy/nodes.js';
import { Proxier } from '../proxy/proxier.js';
import { PolicySync } from '../proxy/policy-sync.js';
import type { KubeSource } from '../sources/kubernetes.js';
import { ManifestSource } from '../sources/manifests.js';
import { serviceSink, type ObjectSink } from '../sources/sink.js';
import { collectStartupGarbage } from './heap.js';
import { BpfRuntime } from './runtime.js';
import { teardown, type TcAttachMode } from '../dataplane/bpf/attach.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, pinnedMode } from '../dataplane/bpf/drain.js';
import { QdiscLedger } from '../dataplane/bpf/qdiscs.js';
import { nodePrimaryIPv4, type LbAlgorithm } from '../model/types.js';
import { DEFAULT_ENGINE_SETTINGS, type EngineSettings } from '../config/engine.js';
import { uplinkIfaces } from '../config/datapath.js';
import { AfxdpRuntime } from '../dataplane/afxdp/runtime.js';
import { TeeDataplane } from '../dataplane/afxdp/dataplane.js';
import { serveEngineControl } from '../dataplane/afxdp/control.js';
import type { Server } from 'node:http';
import { writeTopologyFile } from './topology-file.js';
import { DecapAnnouncer } from './decap-announce.js';
import { loadBalancingOf, nodeAddresses } from './runtime.js';

export { nodeAddresses } from './runtime.js';

export type SourceSpec =
  { kind: 'manifests'; dir: string; maxFileBytes?: number } | { kind: 'kubernetes'; kubeconfig?: string; clients?: KubeClients };

export interface AgentOptions {
  source: SourceSpec;
  nodeName: string;
  pinDir: string;
  bpfDir: string;
  podIfaces: RegExp;
  /** how programs sit on the TC hooks: tcx links, cls_bpf filters, or auto (tcx where the kernel has it; default) */
  tcAttach?: TcAttachMode;
  /** defaults and command-line settings, under any FelixConfiguration */
  base: Config;
  /** ms between full resyncs */
  syncPeriodMs: number;
  /** --lb-algorithm (default random; a Service may choose for itself) */
  lbAlgorithm?: LbAlgorithm;
  /** --socket-lb and --cgroup-root: socket-level load balancing (default off) */
  socketLb?: { scope: SocketLbScope; cgroupRoot?: string };
  /** what a Service may claim: node-port range, external IPs, fan-out (default: DEFAULT_SERVICE_POLICY) */
  services?: ServicePolicy;
  /** Prometheus metrics port; 0 or undefined: off */
  metricsPort?: number;
  /** address metrics listen on (default 127.0.0.1, as kube-proxy's) */
  metricsHost?: string;
  /** agent /liveness and /readiness port; 0 or undefined: off */
  healthPort?: number;
  /** address /liveness and /readiness listen on (default 127.0.0.1, where the DaemonSet probes) */
  healthHost?: string;
  /** address kube-proxy's /healthz listens on, port bpfKubeProxyHealthzPort (default 0.0.0.0); null: never served */
  healthzHost?: string | null;
  /** lock and qdisc records (default /run/bpfproxy) */
  stateDir?: string;
  /** how long to wait at start for another agent on the same pin dir to exit (default 10 s) */
  lockWaitMs?: number;
  /** bpfEnabled=false: how long at most to keep serving the flows bpfproxy carries before detaching (0: at once; default DEFAULT_DRAIN_TIMEOUT_MS) */
  rollbackDrainMs?: number;
  /** --dataplane and the AF_XDP engine's settings (default: the BPF path alone) */
  engine?: EngineSettings;
  clock?: Clock;
}

export class Agent {
  readonly proxier: Proxier;
  /** NetworkPolicy: Pods, Namespaces and NetworkPolicies to the policy maps */
  readonly policy: PolicySync;
  /** the cluster's Nodes (name, addresses), from the source */
  readonly nodes = new NodeStore();
  readonly config: ConfigController;
  readonly health: HealthServers;
  readonly metrics = new Metrics();
  runtime: BpfRuntime | undefined;
  /** handing back (bpfEnabled=false): still serving the flows it carries, until its drain ends */
  draining: BpfRuntime | undefined;
  private drainCfg: Config | undefined;
  /** the AF_XDP engine, beside the BPF path (--dataplane afxdp) */
  engine: AfxdpRuntime | undefined;
  private engineWhy = 'not started';
  private engineControl: Server | undefined;
  private source: ManifestSource | KubeSource | undefined;
  private clients: KubeClients | undefined;
  /** the Node annotation saying this node decapsulates the tunnel (API mode only) */
  private decap: DecapAnnouncer | undefined;
  private transition: Promise<void> = Promise.resolve();
  private active: Config | undefined;
  private saidUnsupported = '';
  private readonly cliLogLevel: string;
  private readonly clock: Clock;
  private stopped = false;
  private lock: PinDirLock | undefined;
  /** the primary IPv4 address in this node's Node object, when seen */
  private nodePrimaryIP: string | undefined;
  /** the proxier's topologyVersion last written out (-1: never; -2: the last write failed) */
  private topologyWritten = -1;

  private constructor(
    private readonly o: AgentOptions,
    private readonly log: Logger,
  ) {
    this.clock = o.clock ?? realClock;
    this.cliLogLevel = log.level;
    this.proxier = new Proxier(
      undefined,
      {
        nodeName: o.nodeName,
        minSyncPeriod: o.base.minSyncPeriodMs,
        syncPeriod: o.syncPeriodMs,
        clock: this.clock,
        log,
        ...(o.services ? { services: o.services } : {}),
      },
      (kind) => (kind === 'service' ? this.metrics.serviceChanges : this.metrics.endpointChanges).inc(),
    );
    this.policy = new PolicySync({
      nodeName: o.nodeName,
      enabled: o.base.networkPolicy === 'on',
      minSyncPeriod: o.base.minSyncPeriodMs,
      syncPeriod: o.syncPeriodMs,
      clock: this.clock,
      log,
    });
    this.policy.onSync((r) => this.metrics.policySynced(r));
    // the AF_XDP engine takes the same policy decisions: what the maps hold, in the same turn
    this.policy.onSync(() => this.engine?.setPolicy());
    this.metrics.setPolicy(() => this.policy.figures());
    this.config = new ConfigController(o.base, o.nodeName, log, (p) => this.reportInvalid(p));
    this.health = new HealthServers(log);
    this.proxier.onSync((s) => {
      this.metrics.syncDuration.observe(s.lastSyncMs / 1000);
      for (const ms of s.programmingMs ?? []) this.metrics.programmingDuration.observe(ms / 1000);
      this.metrics.lastSync.set(Date.now() / 1000);
      this.metrics.syncProblems.set(s.problems);
      if (s.mapFull) this.metrics.mapFull.inc(s.mapFull);
      if (this.runtime) this.health.setServiceHealth(this.proxier.store.healthCheckPorts(o.nodeName));
      if (this.runtime) this.writeTopology();
    });
    this.metrics.setSnapshot(() => (this.runtime ?? this.draining)?.snapshot());
  }

  static async start(o: AgentOptions, log: Logger): Promise<Agent> {
    const lock = await PinDirLock.acquire(o.stateDir ?? DEFAULT_STATE_DIR, o.pinDir, 'agent', o.lockWaitMs ?? 10_000, log);
    const a = new Agent(o, log);
    a.lock = lock;
    try {
      await a.boot();
    } catch (e) {
      a.stop();
      throw e;
    }
    return a;
  }

  private sink(): ObjectSink {
    return serviceSink(this.proxier.store, {
      applyNode: (name, node) => {
        this.nodes.apply(name, node);
        // This node's primary address (--nodeport-addresses primary); the runtime reads it each second.
        if (name === this.o.nodeName) {
          this.nodePrimaryIP = node ? nodePrimaryIPv4(node) : undefined;
          // topology hints for this node's zone (only hinted services resync)
          this.proxier.setNodeZone(node?.zone);
        }
      },
      applyFelixConfiguration: (name, fc) => {
        if (this.config.apply(name, fc)) this.clock.after(0, () => this.reevaluate());
      },
      applyPod: (key, pod) => this.policy.applyPod(key, pod),
      applyNamespace: (name, ns) => this.policy.applyNamespace(name, ns),
      applyNetworkPolicy: (key, np) => this.policy.applyNetworkPolicy(key, np),
    });
  }

  private async boot(): Promise<void> {
    const { o, log } = this;
    if (o.source.kind === 'manifests') {
      const src = new ManifestSource(o.source.dir, this.sink(), log, this.clock, {
        maxFileBytes: o.source.maxFileBytes,
        policy: o.services ?? DEFAULT_SERVICE_POLICY,
      });
      this.source = src;
      src.start();
      this.policy.setSynced();
    } else {
      const { apiConnection, kubeClients } = await import('../k8s/client.js');
      const { KubeSource: Source } = await import('../sources/kubernetes.js');
      const conn = o.source.clients ? undefined : await apiConnection(o.source.kubeconfig);
      this.clients = o.source.clients ?? kubeClients(conn!);
      if (this.clients.annotateNode) this.decap = new DecapAnnouncer(this.clients.annotateNode, o.nodeName, log);
      log.info(
        { server: this.clients.server, ...(conn ? { via: conn.describe } : {}) },
        `watching the Kubernetes API at ${this.clients.server}${conn ? ` (${conn.describe})` : ''}`,
      );
      const src = new Source(this.clients, this.sink(), log, this.clock, o.services ?? DEFAULT_SERVICE_POLICY);
      this.source = src;
      src.start();
      await src.servicesSynced();
      // FelixConfiguration: give its first list a moment; if the CRD is not
      // there yet the informer keeps trying and the config applies when it comes.
      await Promise.race([src.informers.FelixConfiguration.waitSynced(), new Promise((r) => setTimeout(r, 5000))]);
      // NetworkPolicy: programmed once Pods, Namespaces and NetworkPolicies are all listed (never from a
      // half-listed cluster); given a moment here so that a node taken over has its policy before the programs attach.
      const policyListed = src.policySynced().then(() => {
        this.policy.setSynced();
        return true;
      });
      const listed = await Promise.race([policyListed, new Promise<false>((r) => setTimeout(() => r(false), 10_000).unref())]);
      if (!listed && this.policy.isEnabled) {
        log.warn(
          'network policy: Pods, Namespaces and NetworkPolicies are not all listed after 10 s (can the agent list pods, namespaces and networkpolicies? see manifests/rbac.yaml); ' +
            'starting without: policy is programmed once they are, and until then the policy maps keep what they hold',
        );
      }
    }
    this.config.evaluate();
    await this.apply(this.config.config);
    this.proxier.setSynced();
    await this.proxier.runner.idle();
    collectStartupGarbage(log);
    this.health.setProbes(
      o.healthPort ? { host: o.healthHost ?? '127.0.0.1', port: o.healthPort } : undefined,
      () => this.proxier.isSynced || !this.runtime,
    );
    if (o.metricsPort) this.metrics.listen({ host: o.metricsHost ?? '127.0.0.1', port: o.metricsPort }, log);
    if ((o.engine ?? DEFAULT_ENGINE_SETTINGS).dataplane === 'afxdp') {
      this.engineControl = serveEngineControl(
        statePaths(o.stateDir ?? DEFAULT_STATE_DIR, o.pinDir).engine,
        () => this.engine,
        () => this.engineWhy,
        log,
      );
    }
    const st = this.proxier.store.size;
    log.info(
      {
        node: o.nodeName,
        bpfEnabled: !!this.runtime,
        services: st.services,
        endpointSlices: st.slices,
        ...(this.runtime ? { ...this.runtime.reconciler.stats(), interfaces: this.runtime.attacher.list().map((x) => x.name) } : {}),
      },
      'agent ready',
    );
  }

  /** Write how topology chose endpoints (for `bpfproxy services`) when a sync changed it. */
  private writeTopology(): void {
    const v = this.proxier.topologyVersion;
    if (v === this.topologyWritten) return;
    const path = statePaths(this.o.stateDir ?? DEFAULT_STATE_DIR, this.o.pinDir).topology;
    try {
      writeTopologyFile(path, {
        node: this.o.nodeName,
        zone: this.proxier.nodeZone,
        written: new Date().toISOString(),
        ports: this.proxier.topologyView(),
      });
      this.topologyWritten = v;
    } catch (e) {
      if (this.topologyWritten !== -2) {
        this.log.warn(
          { err: e, path },
          `could not write ${path} (${(e as Error).message}): the dataplane is programmed, but "bpfproxy services" cannot say why this node uses the endpoints it does; retried after each sync`,
        );
      }
      this.topologyWritten = -2;
    }
  }

  private reevaluate(): void {
    const next = this.config.evaluate();
    if (next) void this.apply(next);
  }

  /** Serialize transitions: one config change is applied fully before the next. */
  private apply(cfg: Config): Promise<void> {
    this.transition = this.transition
      .then(() => this.applyNow(cfg))
      .catch((e: Error) => {
        this.log.error({ err: e }, `could not apply the configuration: ${e.message}`);
      });
    return this.transition;
  }

  private async applyNow(cfg: Config): Promise<void> {
    if (this.stopped) return;
    const old = this.active;
    const { o, log } = this;
    log.level = cfg.logLevel === 'Debug' ? 'debug' : this.cliLogLevel;
    this.proxier.runner.setMinInterval(cfg.minSyncPeriodMs);
    this.policy.runner.setMinInterval(cfg.minSyncPeriodMs);
    this.policy.setEnabled(cfg.networkPolicy === 'on');
    if (cfg.enabled && !this.runtime && this.draining) {
      this.runtime = this.draining;
      this.draining = undefined;
      await this.runtime.resume(cfg);
      if (this.drainCfg) await this.runtime.reconfigure(this.drainCfg, cfg);
      this.health.setServiceHealth(this.proxier.store.healthCheckPorts(o.nodeName));
      this.decap?.set(true);
    } else if (cfg.enabled && !this.runtime) {
      log.info('bpfEnabled is true: taking over the service dataplane');
      this.runtime = await BpfRuntime.enable(
        {
          pinDir: o.pinDir,
          bpfDir: o.bpfDir,
          podIfaces: o.podIfaces,
          tcAttach: o.tcAttach ?? 'auto',
          qdiscLedger: statePaths(o.stateDir ?? DEFAULT_STATE_DIR, o.pinDir).qdiscs,
          ...(o.lbAlgorithm ? { lbAlgorithm: o.lbAlgorithm } : {}),
          ...(o.services?.nodePortAddresses ? { nodePortAddresses: o.services.nodePortAddresses } : {}),
          nodePrimaryIP: () => this.nodePrimaryIP,
          policy: this.policy,
          tunnelInputs: () => ({
            nodeName: o.nodeName,
            nodes: this.nodes.all(),
            nodeOf: (n) => this.nodes.get(n),
            slices: this.proxier.store.allSlices(),
          }),
          ...((o.engine ?? DEFAULT_ENGINE_SETTINGS).dataplane === 'afxdp'
            ? { xdpRefused: 'the AF_XDP engine (--dataplane afxdp) holds the XDP hook of the interfaces it runs on' }
            : {}),
          ...(o.socketLb ? { socketLb: o.socketLb } : {}),
        },
        cfg,
        this.proxier,
        log,
        this.clock,
      );
      this.health.setServiceHealth(this.proxier.store.healthCheckPorts(o.nodeName));
      this.decap?.set(true); // the programs are attached: they decapsulate
      await this.startEngine(cfg);
    } else if (!cfg.enabled && this.runtime) {
      this.stopEngine('bpfEnabled is false');
      this.decap?.set(false); // new flows from other nodes: SNAT (tunnelled ones keep going while draining)
      const rt = this.runtime;
      this.runtime = undefined;
      this.health.setServiceHealth(new Map());
      this.drainCfg = old;
      this.draining = rt; // until the drain ends (at once when nothing is open)
      await rt.drain(o.rollbackDrainMs ?? DEFAULT_DRAIN_TIMEOUT_MS, () => {
        if (this.draining === rt) this.draining = undefined;
      });
    } else if (this.runtime && old) {
      await this.runtime.reconfigure(old, cfg);
    }
    if (!cfg.enabled && !old) {
      const left = pinnedMode(o.pinDir);
      if (left === 'drain' || left === 'standby') {
        const r = teardown(o.pinDir, new QdiscLedger(statePaths(o.stateDir ?? DEFAULT_STATE_DIR, o.pinDir).qdiscs, log), log);
        log.warn(
          { pinDir: o.pinDir, mode: left, interfaces: r.detached },
          `a previous agent stopped while ${left === 'drain' ? 'draining (handing back to kube-proxy)' : 'taking over (programs on standby)'}: ` +
            `bpfEnabled is false, so detached from ${r.detached.length} interface(s) and unpinned ${o.pinDir} now`,
        );
      }
      log.info('bpfEnabled is false: not touching the dataplane (kube-proxy keeps serving); waiting for FelixConfiguration');
    }
    this.metrics.enabled.set(this.runtime ? 1 : 0);
    const healthzHost = o.healthzHost === undefined ? '0.0.0.0' : o.healthzHost;
    this.health.setHealthz(this.runtime && healthzHost !== null ? { host: healthzHost, port: cfg.healthzPort } : undefined, () =>
      this.healthz(),
    );
    const warn = this.runtime ? unsupported(cfg).join('\n') : '';
    if (warn && warn !== this.saidUnsupported) for (const w of unsupported(cfg)) log.warn(w);
    this.saidUnsupported = warn;
    this.active = cfg;
  }

  /**
   * --dataplane afxdp: the engine beside the BPF path, fed the same desired
   * state (the BPF path first: it is the fallback and must always be whole).
   * An engine that cannot start is logged and the BPF path serves alone.
   */
  private async startEngine(cfg: Config): Promise<void> {
    const { o, log } = this;
    const settings = o.engine ?? DEFAULT_ENGINE_SETTINGS;
    const rt = this.runtime;
    if (settings.dataplane !== 'afxdp' || !rt || this.engine) return;
    try {
      this.engine = await AfxdpRuntime.start({
        bpfDir: o.bpfDir,
        pinDir: o.pinDir,
        settings,
        uplinks: uplinkIfaces(cfg),
        podIfaces: o.podIfaces,
        config: cfg,
        conntrack: rt.dp.maps.ct.handle,
        conntrack6: rt.dp.maps.ct6.handle,
        svcIdOf: (spk) => rt.reconciler.svcIdOf(spk),
        loadBalancing: () => loadBalancingOf(o, this.active ?? cfg),
        nodeAddresses,
        policy: () => this.policy.written(),
        podAddrs: () => new Map(rt.dp.maps.podAddrs.entries().map(([k, v]) => [k.ifindex, v.addr4])),
        log,
        clock: this.clock,
      });
      this.engineWhy = '';
      this.proxier.setDataplane(new TeeDataplane(rt.reconciler, this.engine.dataplane));
      await this.proxier.runner.idle();
      this.engine.refresh();
    } catch (e) {
      this.engineWhy = (e as Error).message;
      log.error({ err: e }, `AF_XDP engine not started: ${(e as Error).message}; the BPF path serves every frame`);
    }
  }

  private stopEngine(why: string): void {
    if (!this.engine) return;
    if (this.runtime) this.proxier.setDataplane(this.runtime.reconciler);
    this.engine.stop();
    this.engine = undefined;
    this.engineWhy = why;
  }

  private healthz(): { healthy: boolean; lastUpdated: Date | undefined; warnings: string[] } {
    const s = this.proxier.stats;
    const limit = Math.max(2 * this.o.syncPeriodMs, 10_000);
    const healthy = !!this.runtime && this.proxier.isSynced && this.proxier.oldestPendingMs() < limit;
    return {
      healthy,
      lastUpdated: s.lastSyncAt ? new Date(Date.now() - (this.clock.now() - s.lastSyncAt)) : undefined,
      warnings: [
        ...(this.active && this.runtime ? unsupported(this.active) : []),
        ...(s.problems ? [`${s.problems} frontend(s) could not be programmed (see logs)`] : []),
      ],
    };
  }

  private reportInvalid(problems: ConfigProblem[]): void {
    if (!this.clients) return;
    const byObject = new Map<string, ConfigProblem[]>();
    for (const p of problems) byObject.set(p.object, [...(byObject.get(p.object) ?? []), p]);
    for (const [name, ps] of byObject) {
      this.clients.events
        .record(
          { apiVersion: 'crd.projectcalico.org/v1', kind: 'FelixConfiguration', name },
          'Warning',
          'InvalidConfiguration',
          `${ps.map((p) => `field ${p.field}: ${p.message}`).join('; ')}; the last good configuration stays in force`.slice(0, 1000),
        )
        .catch((e: Error) => this.log.debug(`could not write an Event for FelixConfiguration ${name}: ${e.message}`));
    }
  }

  /** Whether bpfproxy owns the dataplane now. */
  get enabled(): boolean {
    return !!this.runtime;
  }

  /** Wait until pending config transitions are applied. */
  settled(): Promise<void> {
    return this.transition;
  }

  /** Stop the control plane; the dataplane keeps running. */
  stop(): void {
    this.stopped = true;
    this.source?.stop();
    this.decap?.stop();
    this.proxier.stop();
    this.policy.stop();
    this.draining?.stopDrain();
    this.stopEngine('the agent stopped');
    this.engineControl?.close();
    this.runtime?.stop();
    this.health.close();
    this.metrics.close();
    this.lock?.release();
  }
}
