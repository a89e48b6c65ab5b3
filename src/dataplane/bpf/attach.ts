/**
 * Keeps our TC programs attached to the interfaces that match the pod and
 * data patterns. Interfaces come and go through rtnetlink events (a native
 * watcher on RTNLGRP_LINK and RTNLGRP_IPV4_ROUTE): a new interface is
 * attached as soon as its event arrives, a vanished one forgotten; a slow
 * safety poll (10 s) puts back what someone removed and catches anything an
 * event could not say (a full socket buffer).
 *
 * Two ways to sit on the hooks, chosen by --tc-attach:
 * - tcx (kernel 6.6+): a BPF link per interface and direction, first in the
 *   hook's program list, pinned under the pin dir (dataplane/bpf/tcx.ts); a
 *   restarted agent adopts the pinned links and swaps programs in with
 *   BPF_LINK_UPDATE. No clsact qdisc is needed.
 * - cls: a cls_bpf filter in the interface's clsact qdisc at our fixed handle
 *   and priority (older kernels: AKS Ubuntu 5.15, EKS AL2023 6.1); only our
 *   own filter is ever touched, and attaching again replaces it atomically.
 * "auto" takes tcx where the kernel has it. Leftovers of the other mode (an
 * earlier agent's) are removed from an interface once ours is in place.
 *
 * Each matching interface gets its ingress program (pod or data) and, on
 * egress, the host-reply program (replies of host-network endpoints); on
 * pod-facing interfaces the egress program also enforces network policy on
 * what the kernel routes into the pod (bpfproxy_to_pod). Pod
 * interfaces also get their source check: the IPv4 routes that point at the
 * interface are the addresses its pod may send from (bpf/lib/pod.h); they
 * are written before the ingress program is attached and follow the routing
 * table (route events, and every safety poll).
 */
import { setImmediate } from 'node:timers';
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native, type LinkEntry, type NetlinkEvent, type NetlinkWatcher, type TcDirection } from '../../native/index.js';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import type { Datapath, ProgramRole } from './loader.js';
import type { QdiscCleanup, QdiscLedger } from './qdiscs.js';
import { TCX_DIRECTIONS, TcxLinks, detachPinnedTcxLinks, readPinnedTcxLinks } from './tcx.js';
import { detachPinnedXdpLinks } from './xdp.js';
import { detachSockLinks } from './sock.js';

export const TC_HANDLE = 0xb9f;
export const TC_PRIORITY = 1;
export const TC_DIRECTION: TcDirection = 'ingress';
/** The host-reply program sits on egress of every interface we attach to. */
export const TC_EGRESS: TcDirection = 'egress';

export type IngressRole = Exclude<ProgramRole, 'hostReply' | 'toPod'>;
export type EgressRole = Extract<ProgramRole, 'hostReply' | 'toPod'>;

/** The egress program of an interface: pod-facing ones also enforce network policy on what enters the pod. */
export const egressRoleOf = (role: IngressRole): EgressRole => (role === 'fromPod' ? 'toPod' : 'hostReply');

/** Pod-facing host interfaces of common CNIs: Calico, generic veth, Cilium, Azure, AWS VPC CNI. */
export const DEFAULT_POD_IFACES = '^(cali|veth|lxc|azv|eni).*';

/** --tc-attach: how our programs sit on the TC hooks. */
export type TcAttachMode = 'auto' | 'tcx' | 'cls';
export const TC_ATTACH_MODES: readonly TcAttachMode[] = ['auto', 'tcx', 'cls'];
export type TcHook = 'tcx' | 'cls';

let tcxKnown: boolean | undefined;
/** Whether this kernel has tcx (asked once per process). */
export function tcxAvailable(): boolean {
  if (tcxKnown === undefined) {
    try {
      tcxKnown = native().tcxSupported();
    } catch {
      tcxKnown = false;
    }
  }
  return tcxKnown;
}

/** The hook kind a mode means on this kernel; tcx on a kernel without it is an error naming the fix. */
export function resolveAttachMode(mode: TcAttachMode): TcHook {
  if (mode === 'cls') return 'cls';
  if (tcxAvailable()) return 'tcx';
  if (mode === 'tcx') {
    throw new Error(
      '--tc-attach tcx: this kernel has no tcx links (they came in Linux 6.6); use --tc-attach auto (cls_bpf filters on this kernel) or cls',
    );
  }
  return 'cls';
}

export interface AttachedIface {
  index: number;
  name: string;
  role: IngressRole;
  progId: number;
}

export function roleOf(name: string, dataRe: RegExp, podRe: RegExp): IngressRole | undefined {
  if (name === 'lo') return undefined;
  if (dataRe.test(name)) return 'fromData';
  if (podRe.test(name)) return 'fromPod';
  return undefined;
}

/** Our program on one hook, whichever way it sits there. */
interface Hooks {
  readonly kind: TcHook;
  /** program id of ours on the hook, 0 when none */
  current(index: number, dir: TcDirection): number;
  /** attach, or replace ours atomically */
  put(index: number, name: string, dir: TcDirection, progFd: number): void;
  /** detach ours; false when there was none */
  remove(index: number, dir: TcDirection): boolean;
  /** forget interfaces that are gone */
  prune(present: ReadonlySet<number>): void;
  /** agent exit: let go of what we hold, leave the hooks attached */
  close(): void;
}

class ClsHooks implements Hooks {
  readonly kind = 'cls' as const;
  constructor(private readonly ensureQdisc: (index: number, name: string) => void) {}
  current(index: number, dir: TcDirection): number {
    try {
      return native().tcQuery(index, dir, TC_HANDLE, TC_PRIORITY);
    } catch {
      return 0;
    }
  }
  put(index: number, name: string, dir: TcDirection, progFd: number): void {
    this.ensureQdisc(index, name);
    native().tcAttach(index, dir, progFd, TC_HANDLE, TC_PRIORITY);
  }
  remove(index: number, dir: TcDirection): boolean {
    return native().tcDetach(index, dir, TC_HANDLE, TC_PRIORITY);
  }
  prune(): void {}
  close(): void {}
}

class TcxHooks implements Hooks {
  readonly kind = 'tcx' as const;
  constructor(readonly links: TcxLinks) {}
  current(index: number, dir: TcDirection): number {
    return this.links.current(index, dir);
  }
  put(index: number, _name: string, dir: TcDirection, progFd: number): void {
    this.links.put(index, dir, progFd);
  }
  remove(index: number, dir: TcDirection): boolean {
    return this.links.remove(index, dir);
  }
  prune(present: ReadonlySet<number>): void {
    this.links.prune(present);
  }
  close(): void {
    this.links.close();
  }
}

export interface AttacherOptions {
  /** default auto: tcx where the kernel has it */
  mode?: TcAttachMode;
  /** tcx links are pinned under <pinDir>/tcx; without one they last as long as this process */
  pinDir?: string;
  /** ms between safety polls while netlink events arrive (default 10 s) */
  safetyPollMs?: number;
}

/** Safety poll interval while the netlink watcher cannot be opened. */
const POLL_WITHOUT_EVENTS_MS = 1000;

export class Attacher {
  /** how our programs sit on the hooks */
  readonly hook: TcHook;
  private readonly hooks: Hooks;
  /** cls mode: tcx links an earlier agent pinned, removed as our filters replace them */
  private readonly oldLinks: TcxLinks | undefined;
  /** interfaces checked for the other mode's leftovers */
  private readonly retired = new Set<number>();
  private readonly attached = new Map<number, AttachedIface>();
  private progIds: Record<ProgramRole, number>;
  private timer: Timer | undefined;
  private stopped = false;
  private readonly failed = new Map<number, string>();
  /** source-check entries written per pod interface, by "addr/len" */
  private readonly podSrcs = new Map<number, Set<string>>();
  /** IPv6 source-check entries written per pod interface, by "addr/len" */
  private readonly podSrcs6 = new Map<number, Set<string>>();
  /** the IPv4 address written per pod interface for IPv6 policy isolation */
  private readonly podAddrs = new Map<number, string>();
  /** pod interfaces already reported as unchecked (no route names them) */
  private readonly unchecked = new Set<number>();
  private watcher: NetlinkWatcher | undefined;
  private watchFailure = '';
  /** interfaces named by events since the last flush */
  private dirty = new Set<number>();
  private resyncAll = false;
  private flushQueued = false;
  private readonly safetyPollMs: number;
  /** Told when attaching had to create the interface's clsact qdisc (cls mode). */
  qdiscCreated: ((ifindex: number, iface: string) => void) | undefined;
  /** Told each time an interface gets its ingress program (first time, or replaced). */
  onAttached: ((a: AttachedIface) => void) | undefined;

  constructor(
    private readonly dp: Datapath,
    private dataRe: RegExp,
    private podRe: RegExp,
    private readonly log: Logger,
    private readonly clock: Clock,
    opts: AttacherOptions = {},
  ) {
    this.progIds = this.currentIds();
    this.safetyPollMs = opts.safetyPollMs ?? 10_000;
    this.hook = resolveAttachMode(opts.mode ?? 'auto');
    if (this.hook === 'tcx') {
      const links = new TcxLinks(opts.pinDir, log);
      const n = links.adopt();
      if (n) log.info({ links: n }, `adopted ${n} pinned tcx link(s) from ${opts.pinDir}; their programs are swapped in place`);
      this.hooks = new TcxHooks(links);
    } else {
      this.hooks = new ClsHooks((i, name) => this.ensureQdisc(i, name));
      if (opts.pinDir && tcxAvailable()) {
        this.oldLinks = new TcxLinks(opts.pinDir, log);
        if (!this.oldLinks.adopt()) this.oldLinks = undefined;
      }
    }
  }

  private currentIds(): Record<ProgramRole, number> {
    return {
      fromPod: native().progInfo(this.dp.programs.fromPod.fd).id,
      fromData: native().progInfo(this.dp.programs.fromData.fd).id,
      hostReply: native().progInfo(this.dp.programs.hostReply.fd).id,
      toPod: native().progInfo(this.dp.programs.toPod.fd).id,
    };
  }

  /** The datapath's programs were swapped: replace ours everywhere now. */
  programsChanged(): void {
    this.progIds = this.currentIds();
    this.poll();
  }

  /** New interface patterns (FelixConfiguration): attach, move or detach to match. */
  setPatterns(dataRe: RegExp, podRe: RegExp): void {
    this.dataRe = dataRe;
    this.podRe = podRe;
    this.poll();
  }

  /** Subscribe to interface events, attach everything that matches, arm the safety poll. */
  start(): void {
    this.openWatcher();
    this.poll();
    this.arm();
  }

  /** Stop watching; what is attached stays attached (pinned tcx links included). */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.watcher?.close();
    this.watcher = undefined;
    this.hooks.close();
    this.oldLinks?.close();
  }

  list(): AttachedIface[] {
    return [...this.attached.values()];
  }

  /** Whether interface events are being received (false: polling only). */
  get watching(): boolean {
    return !!this.watcher;
  }

  private openWatcher(): void {
    if (this.watcher || this.stopped) return;
    try {
      this.watcher = native().watchNetlink((evs) => this.onEvents(evs));
      if (this.watchFailure) this.log.info('subscribed to netlink interface events again; back to the slow safety poll');
      this.watchFailure = '';
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.watchFailure) {
        this.log.warn(
          `cannot subscribe to netlink interface events (${msg}); polling the interfaces every ${POLL_WITHOUT_EVENTS_MS / 1000}s instead, and trying again`,
        );
      }
      this.watchFailure = msg;
    }
  }

  private onEvents(evs: NetlinkEvent[]): void {
    if (this.stopped) return;
    for (const e of evs) {
      switch (e.event) {
        case 'newlink':
        case 'dellink':
          this.dirty.add(e.index);
          break;
        case 'newroute':
        case 'delroute':
          // the source check of a pod interface follows its routes
          this.dirty.add(e.oif);
          break;
        case 'overflow':
          this.resyncAll = true;
          break;
        case 'error':
          this.log.error({ errno: e.errno }, `the netlink event socket failed (errno ${e.errno}); polling until it is opened again`);
          this.watcher?.close();
          this.watcher = undefined;
          this.watchFailure = `errno ${e.errno}`;
          this.resyncAll = true;
          break;
      }
    }
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.stopped) return;
    if (this.resyncAll) {
      this.resyncAll = false;
      this.dirty.clear();
      this.poll();
      return;
    }
    if (!this.dirty.size) return;
    const only = this.dirty;
    this.dirty = new Set();
    let links: LinkEntry[];
    try {
      links = native().links();
    } catch (e) {
      this.log.error(`cannot list the interfaces: ${(e as Error).message}; the next safety poll tries again`);
      return;
    }
    this.reconcile(links, only, false);
  }

  /**
   * The source check of a pod interface: one LPM entry per route that points
   * at it, plus the interface's catch-all (value 0: anything else is
   * forged). New entries go in before stale ones go out, so a pod never sees
   * a moment where its own address is refused. `mayWarn`: say that an
   * interface is unchecked (only on a full poll: a new pod's route usually
   * comes a moment after its interface, and its event then fills this in).
   */
  private syncPodSources(
    index: number,
    name: string,
    routes: ReadonlyArray<{ dst: string; prefixLen: number; oif: number }>,
    mayWarn: boolean,
  ): void {
    const want = new Set(routes.filter((r) => r.oif === index).map((r) => `${r.dst}/${r.prefixLen}`));
    const have = this.podSrcs.get(index) ?? new Set<string>();
    const key = (cidr: string) => {
      const [addr, len] = cidr.split('/') as [string, string];
      return { prefixlen: 32 + Number(len), ifindex: index, addr };
    };
    try {
      const add = [...want].filter((c) => !have.has(c));
      if (add.length) this.dp.maps.podSrcs.setMany(add.map((c) => [key(c), { v: 1 }] as const));
      // The catch-all shares its key with a default route through the pod
      // (which allows any source): then there is nothing to check.
      const checked = (set: Set<string>) => set.size > 0 && !set.has('0.0.0.0/0');
      if (checked(want) && !checked(have)) this.dp.maps.podSrcs.set(key('0.0.0.0/0'), { v: 0 });
      if (!checked(want) && checked(have) && !want.has('0.0.0.0/0')) this.dp.maps.podSrcs.delete(key('0.0.0.0/0'));
      const gone = [...have].filter((c) => !want.has(c));
      if (gone.length) this.dp.maps.podSrcs.deleteMany(gone.map(key));
      if (want.size) this.podSrcs.set(index, want);
      else this.podSrcs.delete(index);
      if (add.length || gone.length) {
        this.log.info(
          { iface: name, ifindex: index, sources: [...want] },
          `${name}: pod may send from ${want.size ? [...want].join(', ') : 'any address (no route points at it)'}`,
        );
      }
    } catch (e) {
      this.log.error({ iface: name }, `cannot write the source check of ${name}: ${(e as Error).message}; will retry`);
      throw e;
    }
    if (want.size === 0 && mayWarn && !this.unchecked.has(index)) {
      this.unchecked.add(index);
      this.log.warn(
        { iface: name, ifindex: index },
        `${name}: no route points at this pod interface, so its source addresses are not checked (bridge-based CNI?); ` +
          "the kernel's rp_filter is the only guard against a forged source there",
      );
    } else if (want.size > 0) {
      this.unchecked.delete(index);
    }
  }

  /**
   * The IPv6 source check of a pod interface, as syncPodSources: one entry
   * per IPv6 route that points at it, plus the catch-all (value 0). Link-
   * local routes (fe80::/64 exists on every interface with IPv6) neither
   * count nor go in: the datapath always lets fe80::/10 and :: through, and
   * an interface named by no other IPv6 route is not checked, as IPv4.
   */
  private syncPodSources6(index: number, name: string, routes: ReadonlyArray<{ dst: string; prefixLen: number; oif: number }>): void {
    const want = new Set(routes.filter((r) => r.oif === index && !isLinkLocal6(r.dst, r.prefixLen)).map((r) => `${r.dst}/${r.prefixLen}`));
    const have = this.podSrcs6.get(index) ?? new Set<string>();
    const key = (cidr: string) => {
      const slash = cidr.lastIndexOf('/');
      return { prefixlen: 32 + Number(cidr.slice(slash + 1)), ifindex: index, addr: cidr.slice(0, slash) };
    };
    try {
      const add = [...want].filter((c) => !have.has(c));
      if (add.length) this.dp.maps.podSrcs6.setMany(add.map((c) => [key(c), { v: 1 }] as const));
      const checked = (set: Set<string>) => set.size > 0 && !set.has('::/0');
      if (checked(want) && !checked(have)) this.dp.maps.podSrcs6.set(key('::/0'), { v: 0 });
      if (!checked(want) && checked(have) && !want.has('::/0')) this.dp.maps.podSrcs6.delete(key('::/0'));
      const gone = [...have].filter((c) => !want.has(c));
      if (gone.length) this.dp.maps.podSrcs6.deleteMany(gone.map(key));
      if (want.size) this.podSrcs6.set(index, want);
      else this.podSrcs6.delete(index);
      if (add.length || gone.length) {
        this.log.info(
          { iface: name, ifindex: index, sources6: [...want] },
          `${name}: pod may send IPv6 from ${want.size ? [...want].join(', ') : 'any address (no IPv6 route points at it)'} and link-local`,
        );
      }
    } catch (e) {
      this.log.error({ iface: name }, `cannot write the IPv6 source check of ${name}: ${(e as Error).message}; will retry`);
      throw e;
    }
  }

  /**
   * The pod's IPv4 address (a /32 route pointing at its interface, the
   * lowest when several do) for IPv6 policy's fallback: an IPv6 address of
   * the pod that bpfproxy_ipcache6 does not know fails closed when this
   * address's ipcache entry says the pod is isolated (bpf/lib/policy6.h).
   * No such route: no entry, and such IPv6 is not filtered.
   */
  private syncPodAddr(index: number, name: string, routes: ReadonlyArray<{ dst: string; prefixLen: number; oif: number }>): void {
    const hosts = routes.filter((r) => r.oif === index && r.prefixLen === 32).map((r) => r.dst);
    const want = hosts.sort(compareIp4)[0];
    const have = this.podAddrs.get(index);
    if (want === have) return;
    try {
      if (want) this.dp.maps.podAddrs.set({ ifindex: index }, { addr4: want });
      else this.dp.maps.podAddrs.delete({ ifindex: index });
    } catch (e) {
      this.log.error(
        { iface: name },
        `cannot record the IPv4 address of the pod behind ${name} (IPv6 network policy): ${(e as Error).message}; will retry`,
      );
      throw e;
    }
    if (want) this.podAddrs.set(index, want);
    else this.podAddrs.delete(index);
  }

  private forgetPodSources(index: number): void {
    const have6 = this.podSrcs6.get(index);
    this.podSrcs6.delete(index);
    const addr = this.podAddrs.get(index);
    this.podAddrs.delete(index);
    try {
      if (have6) {
        this.dp.maps.podSrcs6.deleteMany(
          [...have6, '::/0'].map((c) => {
            const slash = c.lastIndexOf('/');
            return { prefixlen: 32 + Number(c.slice(slash + 1)), ifindex: index, addr: c.slice(0, slash) };
          }),
        );
      }
      if (addr) this.dp.maps.podAddrs.delete({ ifindex: index });
    } catch {
      /* map closed */
    }
    const have = this.podSrcs.get(index);
    this.podSrcs.delete(index);
    this.unchecked.delete(index);
    if (!have) return;
    try {
      const keys = [...have, '0.0.0.0/0'].map((c) => {
        const [addr, len] = c.split('/') as [string, string];
        return { prefixlen: 32 + Number(len), ifindex: index, addr };
      });
      this.dp.maps.podSrcs.deleteMany(keys);
    } catch {
      /* map closed */
    }
  }

  /** Pod veths are entered directly by the datapath (bpf_redirect_peer). */
  private notePodIf(l: LinkEntry, role: IngressRole): void {
    try {
      if (role === 'fromPod' && l.kind === 'veth') this.dp.maps.podIfs.set({ ifindex: l.index }, { v: 1 });
      else this.dp.maps.podIfs.delete({ ifindex: l.index });
    } catch (e) {
      this.log.warn({ iface: l.name }, `cannot record ${l.name} as a pod veth: ${(e as Error).message}; its traffic takes the host path`);
    }
  }

  private forgetPodIf(index: number): void {
    this.forgetPodSources(index);
    try {
      this.dp.maps.podIfs.delete({ ifindex: index });
    } catch {
      /* map closed */
    }
  }

  /** The interface's clsact qdisc, created (and recorded for cleanup) if missing. */
  private ensureQdisc(index: number, name: string): void {
    if (!native().tcHookCreate(index)) return;
    try {
      this.qdiscCreated?.(index, name);
    } catch (e) {
      this.log.warn(
        { iface: name },
        `created the clsact qdisc on ${name} but cannot record that (${(e as Error).message}); cleanup will leave it`,
      );
    }
  }

  private hookName(dir: TcDirection): string {
    return `${this.hook === 'tcx' ? 'tcx' : 'tc'} ${dir}`;
  }

  /**
   * The egress program, where it is not already ours: host replies on every
   * interface, and on pod-facing ones network policy for what the kernel
   * routes into the pod.
   */
  private ensureEgress(l: LinkEntry, role: IngressRole): void {
    const eg = egressRoleOf(role);
    const want = this.progIds[eg];
    if (this.hooks.current(l.index, TC_EGRESS) === want) return;
    try {
      this.hooks.put(l.index, l.name, TC_EGRESS, this.dp.programs[eg].fd);
      this.failed.delete(-l.index);
      this.log.info(
        { iface: l.name, ifindex: l.index },
        `attached ${this.dp.programs[eg].name} to ${l.name} (${this.hookName(TC_EGRESS)})`,
      );
    } catch (e) {
      const msg = (e as Error).message;
      if (this.failed.get(-l.index) !== msg) {
        this.failed.set(-l.index, msg);
        this.log.error(
          { iface: l.name, ifindex: l.index },
          `cannot attach to ${l.name} (egress): ${msg}; host-network endpoints behind it will not answer` +
            `${eg === 'toPod' ? ' and network policy is not enforced on traffic the kernel routes into its pod' : ''}; will retry`,
        );
      }
    }
  }

  /**
   * Once ours is in place on an interface, what an earlier agent left there
   * in the other mode goes: our cls_bpf filters (tcx mode; they would run
   * after the tcx link otherwise) or our pinned tcx links (cls mode; they
   * run first and would shadow the filters).
   */
  private retireOtherMode(l: LinkEntry): void {
    if (this.retired.has(l.index)) return;
    try {
      for (const dir of TCX_DIRECTIONS) {
        if (this.hook === 'tcx') {
          const id = native().tcQuery(l.index, dir, TC_HANDLE, TC_PRIORITY);
          if (!id || !programName(id).startsWith('bpfproxy_')) continue;
          native().tcDetach(l.index, dir, TC_HANDLE, TC_PRIORITY);
          this.log.info(
            { iface: l.name, direction: dir },
            `${l.name}: removed the cls_bpf filter an earlier agent left (${dir}); ours is a tcx link now`,
          );
        } else if (this.oldLinks?.remove(l.index, dir)) {
          this.log.info(
            { iface: l.name, direction: dir },
            `${l.name}: detached the tcx link an earlier agent pinned (${dir}); ours is a cls_bpf filter now`,
          );
        }
      }
      this.retired.add(l.index);
    } catch (e) {
      this.log.warn(
        { iface: l.name },
        `${l.name}: cannot remove what an earlier agent attached in the other mode: ${(e as Error).message}; will retry`,
      );
    }
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.after(this.watcher ? this.safetyPollMs : POLL_WITHOUT_EVENTS_MS, () => {
      this.openWatcher();
      this.poll();
      this.arm();
    });
  }

  /** Look at every interface: attach, replace, detach, forget as needed. */
  poll(): void {
    let links: LinkEntry[];
    try {
      links = native().links();
    } catch (e) {
      this.log.error(`cannot list the interfaces: ${(e as Error).message}; will retry`);
      return;
    }
    this.reconcile(links, undefined, true);
    // Links an earlier agent pinned on interfaces we do not attach to (any
    // more: other patterns then): ours, so they go. In cls mode every old
    // link goes once our filter is in place; on a matching interface one
    // stays until then.
    if (this.hooks instanceof TcxHooks) this.dropLinksOffPattern(this.hooks.links, links, 'a link of ours');
    if (this.oldLinks) this.dropLinksOffPattern(this.oldLinks, links, 'the tcx link an earlier agent pinned');
  }

  private dropLinksOffPattern(store: TcxLinks, links: LinkEntry[], what: string): void {
    const names = new Map(links.map((l) => [l.index, l.name]));
    for (const x of store.list()) {
      const name = names.get(x.ifindex);
      if (name !== undefined && roleOf(name, this.dataRe, this.podRe)) continue;
      if (!store.remove(x.ifindex, x.direction)) continue;
      const iface = name ?? `ifindex ${x.ifindex}`;
      this.log.info(
        { iface, direction: x.direction },
        `detached ${what} from ${iface} (tcx ${x.direction}): the interface does not match the patterns`,
      );
    }
  }

  private reconcile(links: LinkEntry[], only: ReadonlySet<number> | undefined, full: boolean): void {
    const now = new Map(links.map((l) => [l.index, l]));
    for (const [index, a] of this.attached) {
      if (only && !only.has(index)) continue;
      const l = now.get(index);
      if (!l) {
        this.attached.delete(index);
        this.forgetPodIf(index);
        this.retired.delete(index);
        this.log.info({ iface: a.name, ifindex: index }, `interface ${a.name} is gone; forgotten`);
      } else if (!roleOf(l.name, this.dataRe, this.podRe)) {
        this.attached.delete(index);
        this.forgetPodIf(index);
        try {
          this.hooks.remove(index, TC_DIRECTION);
          this.hooks.remove(index, TC_EGRESS);
          this.log.info({ iface: l.name, ifindex: index }, `interface ${l.name} no longer matches the interface patterns; detached`);
        } catch (e) {
          this.log.error({ iface: l.name }, `cannot detach from ${l.name}: ${(e as Error).message}`);
        }
      } else if (l.name !== a.name) {
        this.log.info({ iface: l.name, ifindex: index }, `interface ${a.name} is now called ${l.name}`);
        this.attached.set(index, { ...a, name: l.name });
      }
    }
    this.hooks.prune(new Set(now.keys()));
    for (const i of this.failed.keys()) if (!now.has(Math.abs(i))) this.failed.delete(i);
    for (const i of this.retired) if (!now.has(i)) this.retired.delete(i);
    let routes: Array<{ dst: string; prefixLen: number; oif: number }> | undefined;
    let routes6: Array<{ dst: string; prefixLen: number; oif: number }> | undefined;
    for (const l of links) {
      if (only && !only.has(l.index)) continue;
      const role = roleOf(l.name, this.dataRe, this.podRe);
      if (!role) continue;
      if (role === 'fromPod') {
        try {
          routes ??= native().routes4();
        } catch (e) {
          this.log.error(
            { iface: l.name },
            `cannot read the routing table: ${(e as Error).message}; ${l.name} is not attached until it can be`,
          );
          continue;
        }
        try {
          routes6 ??= native().routes6();
        } catch (e) {
          this.log.error(
            { iface: l.name },
            `cannot read the IPv6 routing table: ${(e as Error).message}; ${l.name} is not attached until it can be`,
          );
          continue;
        }
        try {
          this.syncPodSources(l.index, l.name, routes, full);
          this.syncPodSources6(l.index, l.name, routes6);
          this.syncPodAddr(l.index, l.name, routes);
        } catch {
          continue;
        }
      } else if (this.podSrcs.has(l.index) || this.podSrcs6.has(l.index) || this.podAddrs.has(l.index)) {
        this.forgetPodSources(l.index);
      }
      this.ensureEgress(l, role);
      this.ensureIngress(l, role);
    }
  }

  private ensureIngress(l: LinkEntry, role: IngressRole): void {
    const want = this.progIds[role];
    const have = this.hooks.current(l.index, TC_DIRECTION);
    const prev = this.attached.get(l.index);
    if (have === want) {
      if (!prev || prev.role !== role) {
        const a = { index: l.index, name: l.name, role, progId: want };
        this.attached.set(l.index, a);
        this.notePodIf(l, role);
        this.retireOtherMode(l);
        this.onAttached?.(a);
      }
      return;
    }
    try {
      this.hooks.put(l.index, l.name, TC_DIRECTION, this.dp.programs[role].fd);
    } catch (e) {
      const msg = (e as Error).message;
      if (this.failed.get(l.index) !== msg) {
        this.failed.set(l.index, msg);
        this.log.error({ iface: l.name, ifindex: l.index }, `cannot attach to ${l.name}: ${msg}; will retry`);
      }
      return;
    }
    const a = { index: l.index, name: l.name, role, progId: want };
    this.attached.set(l.index, a);
    this.notePodIf(l, role);
    this.failed.delete(l.index);
    this.log.info(
      { iface: l.name, ifindex: l.index, role, hook: this.hook, replaced: have !== 0 },
      `attached ${this.dp.programs[role].name} to ${l.name} (${this.hookName(TC_DIRECTION)})${have ? ', replacing the previous program' : ''}`,
    );
    this.retireOtherMode(l);
    this.onAttached?.(a);
  }
}

function programName(id: number): string {
  try {
    const p = native().progById(id);
    try {
      return p.name;
    } finally {
      p.close();
    }
  } catch {
    return '?';
  }
}

/** One of our programs on a hook of this namespace. */
export interface Attachment {
  iface: string;
  ifindex: number;
  direction: TcDirection;
  /** cls: a cls_bpf filter at our handle and priority; tcx: a tcx link */
  hook: TcHook;
  progId: number;
  program: string;
  /** tcx: the link's id */
  linkId?: number;
  /** tcx: whether the link is pinned in the given pin dir (false: someone else holds it, e.g. another pin dir's agent) */
  pinned?: boolean;
}

/**
 * Our programs on the interfaces of this namespace: filters at our handle
 * and priority (whatever they run), and tcx links that run a bpfproxy_
 * program or are pinned in pinDir.
 */
export function attachedHere(pinDir?: string): Attachment[] {
  const out: Attachment[] = [];
  const tcx = tcxAvailable();
  const pinned = new Set(tcx && pinDir ? readPinnedTcxLinks(pinDir).links.map((l) => l.linkId) : []);
  for (const i of native().interfaces()) {
    for (const direction of [TC_DIRECTION, TC_EGRESS]) {
      let id: number;
      try {
        id = native().tcQuery(i.index, direction, TC_HANDLE, TC_PRIORITY);
      } catch {
        id = 0;
      }
      if (id) out.push({ iface: i.name, ifindex: i.index, direction, hook: 'cls', progId: id, program: programName(id) });
      if (!tcx) continue;
      let list: Array<{ progId: number; linkId: number }>;
      try {
        list = native().tcxList(i.index, direction);
      } catch {
        continue;
      }
      for (const p of list) {
        const program = programName(p.progId);
        if (!program.startsWith('bpfproxy_') && !pinned.has(p.linkId)) continue;
        out.push({
          iface: i.name,
          ifindex: i.index,
          direction,
          hook: 'tcx',
          progId: p.progId,
          program,
          linkId: p.linkId,
          ...(pinDir ? { pinned: pinned.has(p.linkId) } : {}),
        });
      }
    }
  }
  return out;
}

/** Detach our cls_bpf filters from every interface in this namespace. */
export function detachAll(log?: Logger): string[] {
  const out: string[] = [];
  for (const a of attachedHere()) {
    if (a.hook !== 'cls') continue;
    if (a.program !== '?' && !a.program.startsWith('bpfproxy_')) {
      log?.warn({ iface: a.iface }, `${a.iface}: filter at our handle runs ${a.program}, not ours; left alone`);
      continue;
    }
    if (native().tcDetach(a.ifindex, a.direction, TC_HANDLE, TC_PRIORITY)) {
      if (!out.includes(a.iface)) out.push(a.iface);
      log?.info({ iface: a.iface, direction: a.direction }, `detached from ${a.iface} (${a.direction})`);
    }
  }
  return out;
}

export interface TeardownResult {
  detached: string[];
  /** interfaces whose XDP link (--xdp-acceleration) was detached */
  xdp: string[];
  /** socket hooks (bpf/sock.c) detached from their cgroup */
  sockHooks: string[];
  qdiscs: QdiscCleanup;
  unpinned: number;
}

/**
 * Remove what bpfproxy put on this node (this network namespace): our
 * filters, our tcx and XDP links (those pinned in pinDir), the clsact qdiscs we
 * created that are empty once ours are gone, and the pinned maps. The
 * caller makes sure no agent is running on the pin dir (the pin dir lock),
 * or is that agent (stopped watching first).
 */
export function teardown(pinDir: string, ledger: QdiscLedger, log?: Logger): TeardownResult {
  const detached = detachAll(log);
  const sockHooks = detachSockLinks(pinDir, log);
  const links = detachPinnedTcxLinks(pinDir, log);
  const xdpIfindexes = detachPinnedXdpLinks(pinDir, log);
  const xdp: string[] = [];
  if (links.length || xdpIfindexes.length) {
    const names = new Map(
      native()
        .interfaces()
        .map((i) => [i.index, i.name]),
    );
    for (const ifindex of xdpIfindexes) {
      const iface = names.get(ifindex) ?? `ifindex ${ifindex}`;
      log?.info({ iface }, `detached the XDP link from ${iface}`);
      xdp.push(iface);
    }
    for (const l of links) {
      const iface = names.get(l.ifindex) ?? `ifindex ${l.ifindex}`;
      log?.info({ iface, direction: l.direction }, `detached the tcx link from ${iface} (${l.direction})`);
      if (!detached.includes(iface)) detached.push(iface);
    }
  }
  const qdiscs = ledger.removeEmpty();
  let unpinned = 0;
  if (existsSync(pinDir)) {
    unpinned = readdirSync(pinDir).filter((n) => n !== 'tcx' && n !== 'xdp' && n !== 'sock').length;
    rmSync(pinDir, { recursive: true, force: true });
  }
  return { detached, xdp, sockHooks, qdiscs, unpinned };
}

/** fe80::/10 (what inet_ntop writes: lower case). */
function isLinkLocal6(dst: string, prefixLen: number): boolean {
  return prefixLen >= 10 && /^fe[89ab]/.test(dst);
}

function compareIp4(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  return n(a) - n(b);
}
