/**
 * The BPF dataplane while bpfproxy owns it (bpfEnabled=true): programs,
 * pinned maps, reconciler, interface attacher, conntrack GC and NodePort
 * addresses. enable() takes over (maps synced before programs attach,
 * the kernel's service flows adopted, kube-proxy's rules removed when asked:
 * dataplane/bpf/handover.ts); drain() hands back after serving the flows it
 * carries, disable() at once (detach our filters and tcx links, delete the
 * clsact qdiscs we created, unpin); stop() leaves everything running for
 * the next agent.
 */
import { existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { Attacher, teardown, type TcAttachMode } from '../dataplane/bpf/attach.js';
import { bpffsRootOf, ensureBpffs } from '../dataplane/bpf/bpffs.js';
import { ConntrackGc } from '../dataplane/bpf/conntrack-gc.js';
import { datapathSnapshot } from '../dataplane/bpf/inspect.js';
import { Handover, type HandoverConfig } from '../dataplane/bpf/handover.js';
import { MAP_NAMES, loadDatapath, loadPrograms, type Datapath } from '../dataplane/bpf/loader.js';
import { QdiscLedger } from '../dataplane/bpf/qdiscs.js';
import { XdpAccel, xdpDataProgram, type XdpMode } from '../dataplane/bpf/xdp.js';
import { BpfReconciler, DEFAULT_LOAD_BALANCING, type LoadBalancing } from '../dataplane/bpf/reconciler.js';
import type { EndpointSlice, LbAlgorithm, Node } from '../model/types.js';
import { endpointNodes, peerAddresses, tunnelAddressOf } from '../model/tunnel.js';
import { TunnelTables } from '../dataplane/bpf/tunnel.js';
import { cleanupKubeProxy } from '../dataplane/kube-proxy-cleanup.js';
import { configChange } from '../config/change.js';
import type { Config, XdpAcceleration } from '../config/config.js';
import { datapathConfig, uplinkIfaces, type DatapathConfig } from '../config/datapath.js';
import { native } from '../native/index.js';
import {
  SockDestroyer,
  attachSockLinks,
  defaultCgroupRoot,
  detachSockLinks,
  netnsPaths,
  type SocketLbScope,
} from '../dataplane/bpf/sock.js';
import type { DatapathSnapshot } from '../metrics.js';
import type { Proxier } from '../proxy/proxier.js';
import { formatNodePortAddresses, nodePortAddressesOf, type NodePortAddresses } from '../config/services.js';
import { defaultRouteAddress } from './primary-ip.js';
import { policyTarget, type PolicySync } from '../proxy/policy-sync.js';
import type { PolicyMapWriter } from '../dataplane/bpf/policy-maps.js';
import { canonicalIpv6 } from '../net/ip6.js';
import { nonUnicastReason6 } from '../model/addresses.js';

export interface RuntimeOptions {
  pinDir: string;
  bpfDir: string;
  podIfaces: RegExp;
  /** where the clsact qdiscs we create are written down (see dataplane/bpf/qdiscs.ts) */
  qdiscLedger: string;
  /** tcx links, cls_bpf filters, or tcx where the kernel has it (default) */
  tcAttach?: TcAttachMode;
  /** --lb-algorithm: NodePort, LoadBalancer and external IPs whose Service does not choose (default random) */
  lbAlgorithm?: LbAlgorithm;
  /** --nodeport-addresses: the node addresses NodePort answers on (default: all) */
  nodePortAddresses?: NodePortAddresses;
  /** This node's primary IPv4 address from its Node object, when one was seen (--nodeport-addresses primary). */
  nodePrimaryIP?: () => string | undefined;
  /** NetworkPolicy: given the policy maps while the runtime owns them */
  policy?: PolicySync;
  /** What the tunnel needs (bpfExternalServiceMode Tunnel/DSR), read each second; none: SNAT only. */
  tunnelInputs?: () => TunnelInputs;
  /** Why XDP acceleration must stay off whatever the config says (the AF_XDP engine holds the XDP hooks). */
  xdpRefused?: string;
  /** --socket-lb (default off) and --cgroup-root (default: the cgroup2 mount, as defaultCgroupRoot finds it) */
  socketLb?: { scope: SocketLbScope; cgroupRoot?: string };
}

/** The datapath settings of cfg under these options: --socket-lb=host narrows the socket hooks to this (the node's) network namespace. */
function datapathFor(o: RuntimeOptions, cfg: Config): DatapathConfig {
  const dp = datapathConfig(cfg);
  return o.socketLb?.scope === 'host' ? { ...dp, sockNetnsCookie: native().netnsCookie() } : dp;
}

export interface TunnelInputs {
  nodeName: string;
  nodes: Iterable<Node>;
  nodeOf(name: string): Node | undefined;
  slices: Iterable<EndpointSlice>;
}

const XDP_MODES: Record<XdpAcceleration, XdpMode | null> = { Off: null, Native: 'native', Generic: 'generic' };

/** Which node addresses NodePort answers on, and why (for the log line). */
export interface NodePortChoice {
  addrs: string[];
  /** --nodeport-addresses primary: the address taken and where it came from */
  primary?: { address: string; from: string };
}

/**
 * --nodeport-addresses applied to the node's addresses. For "primary", the
 * Node object's address when one was seen, else the default route's
 * (asked only then).
 */
export function nodePortChoice(
  spec: NodePortAddresses | undefined,
  addrs: readonly string[],
  fromNode: string | undefined,
  defaultRoute: () => { address: string; iface: string } | undefined = defaultRouteAddress,
): NodePortChoice {
  if (spec?.kind !== 'primary') return { addrs: nodePortAddressesOf(spec, addrs) };
  if (fromNode) return { addrs: nodePortAddressesOf(spec, addrs, fromNode), primary: { address: fromNode, from: 'the Node object' } };
  const dr = defaultRoute();
  if (!dr) return { addrs: [] };
  return {
    addrs: nodePortAddressesOf(spec, addrs, dr.address),
    primary: { address: dr.address, from: `the default route's interface ${dr.iface} (no Node object seen for this node)` },
  };
}

/**
 * Addresses of this node (its network namespace): IPv4, and IPv6 of global
 * scope (RFC 5952 text); loopback and IPv6 link-local (zoned, fe80::/10)
 * excluded: neither can be a NodePort or SNAT address.
 */
export function nodeAddresses(): string[] {
  const out = new Set<string>();
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.internal) continue;
      if (a.family === 'IPv4') out.add(a.address);
      else if (a.family === 'IPv6' && !a.scopeid) {
        const c = canonicalIpv6(a.address);
        if (c && !nonUnicastReason6(c)) out.add(c);
      }
    }
  }
  return [...out].sort();
}

/** Backend choice: the flag's algorithm, Maglev sized by the FelixConfiguration field. */
export function loadBalancingOf(o: Pick<RuntimeOptions, 'lbAlgorithm'>, cfg: Config): LoadBalancing {
  return {
    ...DEFAULT_LOAD_BALANCING,
    algorithm: o.lbAlgorithm ?? DEFAULT_LOAD_BALANCING.algorithm,
    maglev: { ...DEFAULT_LOAD_BALANCING.maglev, maxEndpointsPerService: cfg.maglevMaxEndpointsPerService },
  };
}

const handoverConfig = (c: Config): HandoverConfig => ({
  ctTimeouts: c.conntrack,
  cleanupKubeProxy: c.kubeProxyIptablesCleanup,
});

export class BpfRuntime {
  private addrTimer: Timer | undefined;
  private lastAddrs = '';
  private readonly handover: Handover;
  private readonly tunnel: TunnelTables;
  private tunnelCfg: Pick<Config, 'externalServiceMode' | 'dsrOptoutCIDRs'>;
  /** XDP acceleration on the data interfaces (dataplane/bpf/xdp.ts) */
  readonly xdp: XdpAccel;
  private xdpMode: XdpMode | null;
  private destroyer: SockDestroyer | undefined;
  /** the policy maps' writer while NetworkPolicy writes them: it knows the ipcache fill */
  private policyWriter: PolicyMapWriter | undefined;

  private constructor(
    readonly dp: Datapath,
    readonly reconciler: BpfReconciler,
    readonly attacher: Attacher,
    readonly gc: ConntrackGc,
    private readonly ledger: QdiscLedger,
    private readonly proxier: Proxier,
    private readonly o: RuntimeOptions,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {
    this.handover = new Handover({ maps: dp.maps, gc, log, clock, disable: () => this.disable() });
    this.tunnel = new TunnelTables(dp.maps, log);
    this.tunnelCfg = { externalServiceMode: 'SNAT', dsrOptoutCIDRs: [] };
    this.xdp = new XdpAccel(o.pinDir, log);
    this.xdpMode = null;
  }

  /** bpfXDPAcceleration as it applies here (off when the AF_XDP engine holds the XDP hooks). */
  private setXdpMode(cfg: Config): void {
    const want = XDP_MODES[cfg.xdpAcceleration];
    if (want && this.o.xdpRefused) {
      this.log.error(
        { bpfXDPAcceleration: cfg.xdpAcceleration },
        `bpfXDPAcceleration=${cfg.xdpAcceleration} not applied: ${this.o.xdpRefused}`,
      );
      this.xdpMode = null;
      return;
    }
    this.xdpMode = want;
  }

  /** XDP on exactly the data interfaces the TC program is on (none when off). */
  private syncXdp(): void {
    try {
      const data = this.attacher
        .list()
        .filter((a) => a.role === 'fromData')
        .map((a) => ({ index: a.index, name: a.name }));
      this.xdp.sync(this.xdpMode, data, xdpDataProgram(this.dp.objects[0]!, this.o.bpfDir));
    } catch (e) {
      this.log.error(`XDP acceleration: cannot update the attachments: ${(e as Error).message}; TC serves every data interface meanwhile`);
    }
  }

  static async enable(o: RuntimeOptions, cfg: Config, proxier: Proxier, log: Logger, clock: Clock): Promise<BpfRuntime> {
    if (!bpffsRootOf(o.pinDir)) {
      if (o.pinDir.startsWith('/sys/fs/bpf/')) ensureBpffs('/sys/fs/bpf');
      else throw new Error(`pin dir ${o.pinDir} is not on a BPF filesystem (mount -t bpf bpf <dir>)`);
    }
    // No conntrack pinned: a takeover, not a restart (handover.ts adopts the kernel's flows then).
    const fresh = !existsSync(join(o.pinDir, MAP_NAMES.ct));
    const t0 = performance.now();
    const dp = await loadDatapath(o.bpfDir, o.pinDir, datapathFor(o, cfg), log);
    log.info({ pinDir: o.pinDir, ms: Math.round(performance.now() - t0) }, 'datapath loaded, maps pinned or adopted');
    const reconciler = new BpfReconciler(dp.maps, log, loadBalancingOf(o, cfg));
    let attacher: Attacher;
    try {
      attacher = new Attacher(dp, uplinkIfaces(cfg), o.podIfaces, log, clock, { mode: o.tcAttach ?? 'auto', pinDir: o.pinDir });
    } catch (e) {
      dp.close();
      throw e;
    }
    log.info(
      { hook: attacher.hook, mode: o.tcAttach ?? 'auto' },
      attacher.hook === 'tcx'
        ? `attaching through tcx links, pinned under ${o.pinDir}/tcx`
        : 'attaching through cls_bpf filters in clsact qdiscs',
    );
    const gc = new ConntrackGc(dp.maps, log, clock);
    const ledger = new QdiscLedger(o.qdiscLedger, log);
    attacher.qdiscCreated = (ifindex, iface) => ledger.add(ifindex, iface);
    const rt = new BpfRuntime(dp, reconciler, attacher, gc, ledger, proxier, o, log, clock);
    rt.tunnelCfg = cfg;
    const adopted = rt.xdp.adopt();
    if (adopted) log.info({ links: adopted }, `adopted ${adopted} pinned XDP link(s) from ${o.pinDir}/xdp`);
    rt.setXdpMode(cfg);
    // XDP follows the TC program onto each data interface (after the takeover below).
    attacher.onAttached = () => rt.syncXdp();
    await rt.armSockDestroy();
    rt.refreshAddresses();
    proxier.setDataplane(reconciler);
    await proxier.runner.idle();
    if (o.policy) {
      // Adopts what the pinned policy maps hold: a restart opens and closes nothing.
      const target = policyTarget(dp.maps, log);
      rt.policyWriter = target.writer;
      o.policy.setTarget(target);
      await o.policy.runner.idle();
    }
    // Maps first, then hooks: a fresh node never runs programs on empty maps,
    // and a restarted agent swaps programs over maps that are already right.
    rt.handover.takeOver(handoverConfig(cfg), fresh, () => {
      attacher.start();
      rt.syncXdp();
      rt.applySocketLb(cfg);
    });
    gc.start();
    rt.armAddresses();
    return rt;
  }

  /** bpfEnabled=false: drain, then detach (onDetached); 0: at once (handover.ts). Resolves when the drain has started. */
  drain(timeoutMs: number, onDetached: () => void): Promise<boolean> {
    return this.handover.drain(timeoutMs, onDetached);
  }

  /** bpfEnabled=true during a drain. */
  resume(cfg: Config): Promise<void> {
    return this.handover.resume(handoverConfig(cfg));
  }

  /** Agent exit during a drain: detach now. */
  stopDrain(): void {
    this.handover.stopDrain();
  }

  /** Apply a changed config while running: each field as its change class says (config/fields.ts). */
  async reconfigure(old: Config, cfg: Config): Promise<void> {
    const change = configChange(old, cfg);
    if (change.live.includes('bpfDataIfacePattern') || change.live.includes('bpfL3IfacePattern')) {
      this.attacher.setPatterns(uplinkIfaces(cfg), this.o.podIfaces);
    }
    if (change.live.includes('bpfExternalServiceMode') || change.live.includes('bpfDSROptoutCIDRs')) {
      this.tunnelCfg = cfg;
      this.refreshTunnel();
    }
    if (change.live.includes('bpfMaglevMaxEndpointsPerService')) {
      this.reconciler.setLoadBalancing(loadBalancingOf(this.o, cfg));
      this.proxier.resyncAll();
      this.log.info(
        { maxEndpointsPerService: cfg.maglevMaxEndpointsPerService },
        'bpfMaglevMaxEndpointsPerService changed: Maglev tables whose size changes are rebuilt by the next full sync',
      );
    }
    if (change.live.includes('bpfXDPAcceleration')) {
      this.setXdpMode(cfg);
      this.syncXdp();
    }
    if (change.reload.length) {
      const fresh = await loadPrograms(this.o.bpfDir, this.o.pinDir, datapathFor(this.o, cfg), this.log);
      const prev = this.dp.swapPrograms(fresh);
      this.attacher.programsChanged();
      this.xdp.update(xdpDataProgram(this.dp.objects[0]!, this.o.bpfDir));
      this.applySocketLb(cfg);
      prev.close();
      this.log.info({ fields: change.reload }, `${change.reload.join(', ')} changed: programs reloaded and swapped in place`);
    }
    if (change.resize.length) {
      this.log.warn(
        { fields: change.resize },
        `${change.resize.join(', ')} changed: the pinned maps keep their size until they are created again (bpfEnabled off and on, or bpfproxy cleanup)`,
      );
    }
    if (!old.kubeProxyIptablesCleanup && cfg.kubeProxyIptablesCleanup) cleanupKubeProxy(this.log);
  }

  /** The tunnel's maps from the Nodes and EndpointSlices seen and the config in force. */
  private refreshTunnel(): void {
    const inp = this.o.tunnelInputs?.();
    const self = inp?.nodeOf(inp.nodeName);
    this.tunnel.apply({
      mode: inp ? this.tunnelCfg.externalServiceMode : 'SNAT',
      local: self && tunnelAddressOf(self),
      peers: inp ? peerAddresses(inp.nodes, inp.nodeName) : [],
      endpoints: inp ? endpointNodes(inp.slices, (n) => inp.nodeOf(n), inp.nodeName) : new Map(),
      dsrOptout: this.tunnelCfg.dsrOptoutCIDRs,
    });
  }

  /** --socket-lb host|all: connected UDP sockets on a backend that leaves its service are destroyed (where the kernel can: 6.5+). */
  private async armSockDestroy(): Promise<void> {
    const scope = this.o.socketLb?.scope ?? 'off';
    if (scope === 'off') return;
    this.destroyer = await SockDestroyer.load(this.o.bpfDir, this.o.pinDir, this.log);
    const d = this.destroyer;
    if (!d) return;
    this.reconciler.onBackendsGone = (backends) => {
      try {
        // host: the agent's (the node's) namespace; all: every namespace on the node
        const n = d.destroy(backends, scope === 'host' ? undefined : netnsPaths(), this.log);
        if (n)
          this.log.info(
            { sockets: n, backends },
            `destroyed ${n} connected UDP socket(s) whose backend left its service; their applications connect again`,
          );
      } catch (e) {
        this.log.warn(
          { err: e, backends },
          `socket destroy failed: ${(e as Error).message}; connected UDP sockets keep their removed backend`,
        );
      }
    };
  }

  /**
   * --socket-lb host|all: the socket hooks on the cgroup root, attached or
   * adopted (their pinned links get the programs now loaded); off: any left
   * by an earlier run are detached. A failure is logged and the TC path
   * keeps serving (pods; host-network clients then reach no service).
   */
  applySocketLb(cfg: Config): void {
    const sl = this.o.socketLb ?? { scope: 'off' };
    try {
      if (sl.scope === 'off') {
        const gone = detachSockLinks(this.o.pinDir, this.log);
        if (gone.length) this.log.info({ hooks: gone }, '--socket-lb is off: detached the socket hooks an earlier run had attached');
        return;
      }
      const root = sl.cgroupRoot ?? defaultCgroupRoot();
      const done = attachSockLinks(this.o.pinDir, root, this.dp.objects[0]!, this.log);
      this.log.info(
        { cgroup: root, scope: sl.scope, connectTimeLb: cfg.connectTimeLb, hooks: done },
        `socket-level load balancing on cgroup ${root} (${sl.scope === 'host' ? "the node's network namespace only" : 'every network namespace'}; ` +
          `bpfConnectTimeLoadBalancing ${cfg.connectTimeLb})`,
      );
    } catch (e) {
      this.log.error(
        { err: e, scope: sl.scope, cgroupRoot: sl.cgroupRoot },
        `socket-level load balancing could not be set up: ${(e as Error).message}; the TC path keeps serving pods, host-network clients reach no service until this is fixed and the agent restarted`,
      );
    }
  }

  private refreshAddresses(): void {
    this.refreshTunnel();
    const addrs = nodeAddresses();
    const np = nodePortChoice(this.o.nodePortAddresses, addrs, this.o.nodePrimaryIP?.());
    const s = `${addrs.join(',')}|${np.addrs.join(',')}`;
    if (s === this.lastAddrs) return;
    this.lastAddrs = s;
    this.reconciler.setNodeAddresses(addrs, np.addrs);
    this.o.policy?.setNodeAddresses(addrs);
    // externalIPs / LoadBalancer IPs equal to one of these are refused (CVE-2020-8554)
    this.proxier.setNodeAddresses(addrs);
    const flag = formatNodePortAddresses(this.o.nodePortAddresses);
    const ctx = { addresses: addrs, nodePort: np.addrs, ...(flag ? { nodePortAddresses: flag } : {}), ...(np.primary ?? {}) };
    if (np.addrs.length === 0 && addrs.length > 0) {
      this.log.warn(
        ctx,
        np.primary
          ? `--nodeport-addresses primary: the primary address ${np.primary.address} (from ${np.primary.from}) is not an address of this node: NodePort answers on no address`
          : `--nodeport-addresses ${flag || 'primary'} selects none of this node's addresses (${addrs.join(', ')})${flag ? '' : ': no Node object and no default route name a primary address'}: NodePort answers on no address`,
      );
    } else {
      this.log.info(
        ctx,
        `NodePort answers on ${np.addrs.join(', ') || 'no address'}${np.primary ? ` (the primary address, from ${np.primary.from})` : ''}`,
      );
    }
  }

  private armAddresses(): void {
    this.addrTimer = this.clock.after(1000, () => {
      try {
        this.refreshAddresses();
      } catch (e) {
        this.log.error(`cannot update node addresses: ${(e as Error).message}`);
      }
      // data interfaces that went away or stopped matching lose their XDP link too
      if (!this.stopped) this.syncXdp();
      this.armAddresses();
    });
  }

  /** What a scrape reports (one per scrape; nothing read on the event loop but the drop counters). */
  snapshot(): Promise<DatapathSnapshot> {
    return datapathSnapshot(this.dp.maps, this.gc, this.policyWriter?.ipcacheCounts());
  }

  private stopped = false;

  private stopTimers(): void {
    this.o.policy?.setTarget(undefined);
    this.policyWriter = undefined;
    this.stopped = true;
    this.addrTimer?.cancel();
    this.xdp.close();
    this.attacher.stop();
    this.gc.stop();
  }

  /** Agent exit: the dataplane keeps serving. */
  stop(): void {
    this.stopTimers();
    this.destroyer?.close();
    this.dp.close();
  }

  /** Hand the node back (bpfEnabled=false): detach everywhere, delete the qdiscs we created, unpin. */
  disable(): void {
    this.stopTimers();
    this.proxier.setDataplane(undefined);
    this.destroyer?.close();
    this.dp.close();
    const r = teardown(this.o.pinDir, this.ledger, this.log);
    this.log.info(
      { interfaces: r.detached, xdp: r.xdp, qdiscsRemoved: r.qdiscs.removed },
      `bpfEnabled is false: detached from ${r.detached.length} interface(s)${r.xdp.length ? ` (XDP from ${r.xdp.length})` : ''}, deleted ${r.qdiscs.removed.length} clsact qdisc(s) bpfproxy had created and unpinned the maps; kube-proxy can take over`,
    );
  }
}
