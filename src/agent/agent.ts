/**
 * The node agent: loads (or adopts) the datapath, feeds the sync pipeline
 * from the manifest source, attaches to interfaces once the maps hold the
 * first full sync, and keeps conntrack tidy. Stopping leaves the dataplane
 * running: programs stay attached, maps stay pinned.
 */
import { networkInterfaces } from 'node:os';
import { realClock, type Clock, type Timer } from '../clock.js';
import type { Logger } from '../log.js';
import { Attacher } from '../dataplane/bpf/attach.js';
import { ensureBpffs, bpffsRootOf } from '../dataplane/bpf/bpffs.js';
import type { DatapathConfig } from '../dataplane/bpf/config.js';
import { ConntrackGc } from '../dataplane/bpf/conntrack-gc.js';
import { loadDatapath, type Datapath } from '../dataplane/bpf/loader.js';
import { BpfReconciler } from '../dataplane/bpf/reconciler.js';
import { Proxier } from '../proxy/proxier.js';
import { ManifestSource } from '../sources/manifests.js';

export interface AgentOptions {
  manifests: string;
  nodeName: string;
  dataIfaces: RegExp;
  podIfaces: RegExp;
  pinDir: string;
  bpfDir: string;
  datapath: DatapathConfig;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  clock?: Clock;
}

/** IPv4 addresses of this node (its network namespace), loopback excluded. */
export function nodeAddresses(): string[] {
  const out = new Set<string>();
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) out.add(a.address);
  }
  return [...out].sort();
}

export class Agent {
  private addrTimer: Timer | undefined;
  private lastAddrs = '';

  private constructor(
    readonly dp: Datapath,
    readonly reconciler: BpfReconciler,
    readonly proxier: Proxier,
    readonly source: ManifestSource,
    readonly attacher: Attacher,
    readonly gc: ConntrackGc,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  static async start(o: AgentOptions, log: Logger): Promise<Agent> {
    const clock = o.clock ?? realClock;
    if (!bpffsRootOf(o.pinDir)) {
      if (o.pinDir.startsWith('/sys/fs/bpf/')) ensureBpffs('/sys/fs/bpf');
      else throw new Error(`--pin-dir ${o.pinDir} is not on a BPF filesystem (mount -t bpf bpf <dir>)`);
    }
    const t0 = performance.now();
    const dp = await loadDatapath(o.bpfDir, o.pinDir, o.datapath, log);
    log.info({ pinDir: o.pinDir, ms: Math.round(performance.now() - t0) }, 'datapath loaded, maps pinned or adopted');
    const reconciler = new BpfReconciler(dp.maps, log);
    const proxier = new Proxier(reconciler, {
      nodeName: o.nodeName,
      minSyncPeriod: o.minSyncPeriodMs,
      syncPeriod: o.syncPeriodMs,
      clock,
      log,
    });
    const source = new ManifestSource(o.manifests, proxier.store, log, clock);
    const attacher = new Attacher(dp, o.dataIfaces, o.podIfaces, log, clock);
    const gc = new ConntrackGc(dp.maps, log, clock);
    const agent = new Agent(dp, reconciler, proxier, source, attacher, gc, log, clock);

    agent.refreshAddresses();
    source.start();
    proxier.setSynced();
    await proxier.runner.idle();
    // Maps first, then hooks: a fresh node never runs programs on empty maps,
    // and a restarted agent swaps programs over maps that are already right.
    attacher.start();
    gc.start();
    agent.armAddresses();
    const st = proxier.store.size;
    log.info(
      { node: o.nodeName, services: st.services, endpointSlices: st.slices, ...reconciler.stats(), interfaces: attacher.list().map((a) => a.name) },
      'agent ready',
    );
    return agent;
  }

  private refreshAddresses(): void {
    const addrs = nodeAddresses();
    const s = addrs.join(',');
    if (s === this.lastAddrs) return;
    this.lastAddrs = s;
    this.reconciler.setNodeAddresses(addrs);
    this.log.info({ addresses: addrs }, 'NodePort answers on these node addresses');
  }

  private armAddresses(): void {
    this.addrTimer = this.clock.after(1000, () => {
      try {
        this.refreshAddresses();
      } catch (e) {
        this.log.error(`cannot update node addresses: ${(e as Error).message}`);
      }
      this.armAddresses();
    });
  }

  /** Stop the control plane; the dataplane keeps running. */
  stop(): void {
    this.addrTimer?.cancel();
    this.source.stop();
    this.proxier.stop();
    this.attacher.stop();
    this.gc.stop();
    this.dp.close();
  }
}
