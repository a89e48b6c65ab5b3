/**
 * Switching between kube-proxy and bpfproxy without dropping connections,
 * both ways (README, "Switching without dropping connections"):
 *
 *  - takeOver(): on a takeover (no conntrack pinned yet) the programs attach
 *    on standby, the kernel's service flows are adopted (adopt.ts), then
 *    they serve; only then are kube-proxy's rules removed. A restarted agent
 *    just serves;
 *  - drain(): bpfEnabled=false; the flows in our conntrack keep being served
 *    while kube-proxy takes new ones, until none is open or the drain time
 *    is up (drain.ts), then the runtime detaches;
 *  - resume(): bpfEnabled=true during the drain: adopt what kube-proxy
 *    opened meanwhile, serve new flows again, remove its rules.
 *
 * The runtime (src/agent/runtime.ts) owns the maps, the attacher and the GC;
 * this owns the order of the steps.
 */
import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import { cleanupKubeProxy } from '../kube-proxy-cleanup.js';
import { adoptKernelConntrack, settleAdopted, type AdoptionResult } from './adopt.js';
import type { ConntrackTimeouts } from '../../config/config.js';
import type { ConntrackGc } from './conntrack-gc.js';
import { Drain, kubeProxyRules, setDraining, setMode } from './drain.js';
import type { DatapathMaps } from './loader.js';

export interface HandoverRuntime {
  maps: DatapathMaps;
  gc: ConntrackGc;
  log: Logger;
  clock: Clock;
  /** detach everywhere and unpin (the runtime's disable()) */
  disable(): void;
}

/** What of the configuration the switches use. */
export interface HandoverConfig {
  ctTimeouts: ConntrackTimeouts;
  /** bpfKubeProxyIptablesCleanupEnabled */
  cleanupKubeProxy: boolean;
}

export class Handover {
  private drainer: Drain | undefined;
  /** the configuration of the last takeover or resume */
  private cfg: HandoverConfig | undefined;

  constructor(private readonly rt: HandoverRuntime) {}

  private adopt(cfg: HandoverConfig, pass: string): AdoptionResult | undefined {
    return adoptKernelConntrack(this.rt.maps, cfg.ctTimeouts, this.rt.log, pass);
  }

  /**
   * Attach (attach() puts the programs on the hooks) and serve. Taking over
   * (fresh), the programs attach on standby, passing everything, so no flow
   * is half through our NAT and half through the kernel's while interfaces
   * are attached one by one; the kernel's service flows are adopted (twice:
   * the second pass takes what opened during the first); then every
   * interface switches at once. kube-proxy's rules go only once our
   * programs see every packet first.
   */
  takeOver(cfg: HandoverConfig, fresh: boolean, attach: () => void): void {
    this.cfg = cfg;
    setMode(this.rt.maps, fresh ? 'standby' : 'serve'); // 'serve' also ends a drain a stopped agent left
    attach();
    const before = fresh ? [this.adopt(cfg, 'attached on standby'), this.adopt(cfg, 'on standby, second pass')] : [];
    setMode(this.rt.maps, 'serve');
    this.serving(cfg, before, fresh);
  }

  /** Programs serving: adopt what the kernel opened meanwhile, then remove kube-proxy's rules. */
  private serving(cfg: HandoverConfig, before: Array<AdoptionResult | undefined>, adopt: boolean): void {
    const after = adopt ? this.adopt(cfg, 'serving') : undefined;
    const passes = [...before, after].filter((r): r is AdoptionResult => !!r);
    if (passes.length) {
      const n = passes.reduce((a, r) => a + r.adopted, 0);
      this.rt.log.info(
        {
          adopted: n,
          passes: passes.map((r) => ({
            adopted: r.adopted,
            ipv6Adopted: r.ipv6.adopted,
            present: r.present,
            settled: r.settled,
            seen: r.seen,
            ms: r.ms,
          })),
          kernelEntries: passes[0]!.seen,
          skipped: passes[0]!.skipped,
        },
        `adopted ${n} flow(s) that kube-proxy's rules carried (from the kernel's conntrack, ` +
          `${passes.reduce((a, r) => a + r.ipv6.adopted, 0)} of them IPv6): they keep their backend`,
      );
    }
    if (cfg.cleanupKubeProxy) cleanupKubeProxy(this.rt.log);
  }

  /**
   * bpfEnabled=false: hand back. With a drain time, serve the flows in our
   * conntrack until none is open or the time is up, new flows going to the
   * kernel meanwhile, then detach (onDetached is called then); with 0,
   * detach now. Resolves once the drain has started (or, with nothing
   * open, ended): whether it still runs.
   */
  async drain(timeoutMs: number, onDetached: () => void): Promise<boolean> {
    if (timeoutMs <= 0) {
      if (!Object.values(kubeProxyRules()).some(Boolean)) {
        this.rt.log.error(
          "bpfEnabled is false but kube-proxy's rules are not on this node: new connections to Services get no answer until kube-proxy is back",
        );
      }
      this.rt.disable();
      onDetached();
      return false;
    }
    const d = new Drain(
      {
        setDraining: (on) => setDraining(this.rt.maps, on),
        openFlows: async () => (await this.rt.gc.run()).lastOpen,
        detach: () => {
          if (this.drainer === d) this.drainer = undefined;
          this.rt.disable();
          onDetached();
        },
        kubeProxyRules,
      },
      { timeoutMs },
      this.rt.log,
      this.rt.clock,
    );
    this.drainer = d;
    // The last adoption pass may have left an entry open whose flow ended
    // through the kernel meanwhile: read the kernel's conntrack once more.
    if (this.cfg) settleAdopted(this.rt.maps, this.cfg.ctTimeouts, this.rt.log);
    await d.start();
    return this.drainer === d;
  }

  /** bpfEnabled=true during a drain: adopt what kube-proxy took meanwhile, serve new flows again, remove its rules. */
  async resume(cfg: HandoverConfig): Promise<void> {
    this.cfg = cfg;
    // No detach from here on; the programs drain until the kernel's flows are adopted.
    this.drainer?.cancel(true);
    this.drainer = undefined;
    // A GC pass (the drain's) may be running: none may judge a key an adopted entry is then written over.
    await this.rt.gc.idle();
    const first = this.adopt(cfg, 'while draining');
    setMode(this.rt.maps, 'serve');
    this.serving(cfg, [first], true);
  }

  /** Agent exit during a drain: detach now (nobody would later). */
  stopDrain(): void {
    this.drainer?.stop();
  }
}
