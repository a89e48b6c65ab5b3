/**
 * Handing the node back to kube-proxy without cutting connections
 * (bpfEnabled=false). Detaching at once would leave every connection
 * bpfproxy NAT'd to kube-proxy's rules, which know nothing of it: the next
 * packet of a TCP connection gets a backend drawn again (and a reset), a
 * UDP flow a new backend. So the programs first drain (lib/mode.h): flows
 * in our conntrack are served as before, a packet that would open a new
 * flow goes to the stack (kube-proxy's rules) and creates nothing. The
 * agent detaches and unpins when no open flow is left in our conntrack
 * (the GC's count: closed TCP and expired UDP flows do not count) or when
 * the drain time is up, whichever comes first. bpfEnabled=true again
 * during the drain cancels it: the programs take new flows again.
 *
 * If kube-proxy's rules are not on the node when the drain starts, new
 * connections to Services get no answer until they are: that is said
 * loudly, and again when they appear.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native } from '../../native/index.js';
import { ModeFlags, modeValue, u32Key } from './codecs.js';
import { MAP_NAMES, type DatapathMaps } from './loader.js';

/** How long a rollback keeps serving established flows at most (--rollback-drain-timeout). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 120_000;
/** How often the drain counts what is left (one conntrack GC pass). */
export const DRAIN_POLL_MS = 2_000;
/** How often, at most, the drain says how it is going. */
const PROGRESS_EVERY_MS = 10_000;

/** What the programs do (bpf/lib/mode.h): serve, stand by (attached, passing everything: taking over) or drain. */
export type Mode = 'serve' | 'standby' | 'drain';

export function setMode(maps: Pick<DatapathMaps, 'mode'>, mode: Mode): void {
  maps.mode.set({ v: 0 }, { flags: mode === 'drain' ? ModeFlags.DRAIN : mode === 'standby' ? ModeFlags.STANDBY : 0 });
}

export function setDraining(maps: Pick<DatapathMaps, 'mode'>, on: boolean): void {
  setMode(maps, on ? 'drain' : 'serve');
}

export function modeNow(maps: Pick<DatapathMaps, 'mode'>): Mode {
  return modeOf(maps.mode.get({ v: 0 })?.flags ?? 0);
}

export function isDraining(maps: Pick<DatapathMaps, 'mode'>): boolean {
  return modeNow(maps) === 'drain';
}

const modeOf = (flags: number): Mode => (flags & ModeFlags.DRAIN ? 'drain' : flags & ModeFlags.STANDBY ? 'standby' : 'serve');

/**
 * The mode of the maps pinned under pinDir, undefined when none are pinned:
 * 'drain' or 'standby' there with no agent running means one stopped in the
 * middle of handing back or taking over.
 */
export function pinnedMode(pinDir: string): Mode | undefined {
  const path = join(pinDir, MAP_NAMES.mode);
  if (!existsSync(path)) return undefined;
  const h = native().objGet(path);
  try {
    const v = native().mapLookup(h, u32Key.encode({ v: 0 }), modeValue.size);
    return modeOf(v ? modeValue.decode(v).flags : 0);
  } finally {
    h.close();
  }
}

export interface KubeProxyRules {
  /** KUBE-SERVICES in the nat table, with rules in it (iptables or iptables-legacy) */
  iptables: boolean;
  /** a kube-proxy nftables table (ip or inet) */
  nftables: boolean;
}

/**
 * Whether kube-proxy's rules are on this node (its network namespace): a
 * KUBE-SERVICES chain with at least one rule (kube-proxy writes one even
 * with no Service), or its nftables table. Cheap: one rule is listed, not
 * the chain.
 */
export function kubeProxyRules(): KubeProxyRules {
  const iptables = ['iptables', 'iptables-legacy'].some((cmd) => {
    const r = spawnSync(cmd, ['-w', '5', '-t', 'nat', '-S', 'KUBE-SERVICES', '1'], { encoding: 'utf8', timeout: 10_000 });
    return r.status === 0 && (r.stdout ?? '').trim().length > 0;
  });
  const nft = spawnSync('nft', ['list', 'tables'], { encoding: 'utf8', timeout: 10_000 });
  const nftables = nft.status === 0 && /^table (ip|inet) kube-proxy$/m.test(nft.stdout ?? '');
  return { iptables, nftables };
}

const present = (r: KubeProxyRules): boolean => r.iptables || r.nftables;

export type DrainEnd = 'empty' | 'timeout' | 'cancelled' | 'stopped';

export interface DrainDeps {
  /** switch the programs' drain mode */
  setDraining(on: boolean): void;
  /** open connections left in our conntrack (one GC pass) */
  openFlows(): Promise<number>;
  /** detach and unpin (the drain has ended) */
  detach(): void;
  kubeProxyRules(): KubeProxyRules;
}

export interface DrainOptions {
  timeoutMs: number;
  pollMs?: number;
}

/**
 * One drain, from start() to its end: 'empty' (no open flow left),
 * 'timeout', 'stopped' (the agent is exiting: detached now) or 'cancelled'
 * (bpfEnabled=true again: the programs serve again, nothing detached).
 */
export class Drain {
  private timer: Timer | undefined;
  private startedAt = 0;
  private ended: DrainEnd | undefined;
  private lastOpen = 0;
  private lastSaid = -Infinity;
  private lastSaidOpen = 0;
  private kubeProxyBack = false;
  private resolveEnd!: (e: DrainEnd) => void;
  /** how it ended */
  readonly done: Promise<DrainEnd> = new Promise((r) => (this.resolveEnd = r));

  constructor(
    private readonly deps: DrainDeps,
    private readonly o: DrainOptions,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  get active(): boolean {
    return this.startedAt > 0 && !this.ended;
  }

  /** Set drain mode, count what is open, say what happens next. */
  async start(): Promise<void> {
    this.deps.setDraining(true);
    this.startedAt = this.clock.now();
    const kp = this.deps.kubeProxyRules();
    this.kubeProxyBack = present(kp);
    if (!this.kubeProxyBack) {
      this.log.error(
        { kubeProxy: kp },
        "bpfEnabled is false but kube-proxy's rules are not on this node (no KUBE-SERVICES chain with rules in the iptables nat table, " +
          'no kube-proxy nftables table): new connections to Services get no answer until kube-proxy is back ' +
          '(kubectl patch ds -n kube-system kube-proxy -p "$(cat manifests/patches/kube-proxy-enable.json)"); ' +
          'connections already through bpfproxy keep being served while the drain lasts',
      );
    }
    let open: number | undefined;
    try {
      open = await this.deps.openFlows();
    } catch (e) {
      this.log.warn({ err: e }, `draining: cannot count open connections (${(e as Error).message}); detaching when the drain time is up`);
    }
    if (this.ended) return;
    this.lastOpen = open ?? 0;
    const at = new Date(Date.now() + this.o.timeoutMs).toISOString();
    this.log.info(
      { openConnections: open, timeoutS: this.o.timeoutMs / 1000, detachAt: at, kubeProxyRules: this.kubeProxyBack },
      `bpfEnabled is false: draining. ${open ?? 'an unknown number of'} open connection(s) through bpfproxy keep being served ` +
        `from its conntrack; new connections go to the kernel (kube-proxy's rules). Detaching when none is left, ` +
        `at the latest at ${at} (--rollback-drain-timeout ${this.o.timeoutMs / 1000}s); bpfEnabled=true meanwhile cancels the drain`,
    );
    this.lastSaid = this.clock.now();
    this.lastSaidOpen = this.lastOpen;
    if (open === 0) {
      this.finish('empty');
      return;
    }
    this.arm();
  }

  private arm(): void {
    const left = this.o.timeoutMs - (this.clock.now() - this.startedAt);
    this.timer = this.clock.after(Math.max(0, Math.min(this.o.pollMs ?? DRAIN_POLL_MS, left)), () => void this.poll());
  }

  private async poll(): Promise<void> {
    this.timer = undefined;
    if (this.ended) return;
    const elapsed = this.clock.now() - this.startedAt;
    if (elapsed >= this.o.timeoutMs) {
      this.finish('timeout');
      return;
    }
    if (!this.kubeProxyBack && present(this.deps.kubeProxyRules())) {
      this.kubeProxyBack = true;
      this.log.info("draining: kube-proxy's rules are on this node now; new connections to Services are answered again");
    }
    let open: number | undefined;
    try {
      open = await this.deps.openFlows();
    } catch (e) {
      this.log.warn({ err: e }, `draining: cannot count open connections (${(e as Error).message}); trying again`);
    }
    if (this.ended) return;
    if (open === 0) {
      this.finish('empty');
      return;
    }
    if (open !== undefined) {
      const now = this.clock.now();
      if (open !== this.lastSaidOpen && now - this.lastSaid >= PROGRESS_EVERY_MS) {
        const leftS = Math.round((this.o.timeoutMs - (now - this.startedAt)) / 1000);
        this.log.info(
          { openConnections: open, detachInS: leftS },
          `draining: ${open} open connection(s) through bpfproxy left; detaching when none is, or in ${leftS}s`,
        );
        this.lastSaid = now;
        this.lastSaidOpen = open;
      }
      this.lastOpen = open;
    }
    this.arm();
  }

  /**
   * bpfEnabled=true again: nothing is detached; the programs take new flows
   * again (unless the caller switches them itself, after adopting what the
   * kernel carries: keepDraining).
   */
  cancel(keepDraining = false): void {
    if (this.ended) return;
    this.end('cancelled');
    if (!keepDraining) this.deps.setDraining(false);
    this.log.info(
      { afterS: Math.round((this.clock.now() - this.startedAt) / 1000), openConnections: this.lastOpen },
      'bpfEnabled is true again: drain cancelled, bpfproxy takes new connections again',
    );
  }

  /** The agent is exiting during the drain: detach now rather than leave programs nobody will detach. */
  stop(): void {
    if (this.ended) return;
    this.finish('stopped');
  }

  private end(how: DrainEnd): void {
    this.ended = how;
    this.timer?.cancel();
    this.timer = undefined;
    this.resolveEnd(how);
  }

  private finish(how: Exclude<DrainEnd, 'cancelled'>): void {
    const afterS = Math.round((this.clock.now() - this.startedAt) / 1000);
    this.end(how);
    if (how === 'empty') {
      this.log.info({ afterS }, `drain finished after ${afterS}s: no open connection through bpfproxy is left; detaching`);
    } else {
      this.log.warn(
        { afterS, openConnections: this.lastOpen },
        how === 'timeout'
          ? `drain time is up (${this.o.timeoutMs / 1000}s): detaching; the ${this.lastOpen} connection(s) still open through bpfproxy at the last count ` +
              'are cut (their next packet meets kube-proxy, which does not know them) and have to reconnect'
          : `agent stopping during the drain: detaching now; the ${this.lastOpen} connection(s) still open through bpfproxy at the last count are cut`,
      );
    }
    try {
      this.deps.detach();
    } catch (e) {
      this.log.error(
        { err: e },
        `could not detach at the end of the drain: ${(e as Error).message}; run "bpfproxy cleanup" on this node to remove what is left`,
      );
    }
  }
}
