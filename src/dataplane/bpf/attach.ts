/**
 * Keeps our TC programs attached to the interfaces that match the pod and
 * data patterns: new interfaces are attached within one poll, vanished ones
 * forgotten, and a filter someone removed is put back. Only our own filter
 * (fixed handle and priority) is ever touched.
 *
 * Each matching interface gets its ingress program (pod or data) and, on
 * egress, the host-reply program (replies of host-network endpoints). Pod
 * interfaces also get their source check: the IPv4 routes that point at the
 * interface are the addresses its pod may send from (bpf/lib/pod.h); they
 * are written before the ingress program is attached and follow the routing
 * table on every poll.
 */
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native, type TcDirection } from '../../native/index.js';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import type { Datapath, ProgramRole } from './loader.js';
import type { QdiscCleanup, QdiscLedger } from './qdiscs.js';

/** Whether an interface in this namespace is a veth (netlink, via iproute2). */
export function isVeth(name: string): boolean {
  const r = spawnSync('ip', ['-d', '-j', 'link', 'show', 'dev', name], { encoding: 'utf8' });
  try {
    return (JSON.parse(r.stdout) as Array<{ linkinfo?: { info_kind?: string } }>)[0]?.linkinfo?.info_kind === 'veth';
  } catch {
    return false;
  }
}

export const TC_HANDLE = 0xb9f;
export const TC_PRIORITY = 1;
export const TC_DIRECTION: TcDirection = 'ingress';
/** The host-reply program sits on egress of every interface we attach to. */
export const TC_EGRESS: TcDirection = 'egress';

export type IngressRole = Exclude<ProgramRole, 'hostReply'>;

/** Calico's bpfDataIfacePattern default. */
export const DEFAULT_DATA_IFACES = '^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)';
/** Pod-facing host interfaces of common CNIs: Calico, generic veth, Cilium, Azure, AWS VPC CNI. */
export const DEFAULT_POD_IFACES = '^(cali|veth|lxc|azv|eni).*';

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

export class Attacher {
  private readonly attached = new Map<number, AttachedIface>();
  private progIds: Record<ProgramRole, number>;
  private timer: Timer | undefined;
  private stopped = false;
  private readonly failed = new Map<number, string>();
  /** source-check entries written per pod interface, by "addr/len" */
  private readonly podSrcs = new Map<number, Set<string>>();
  /** pod interfaces already reported as unchecked (no route names them) */
  private readonly unchecked = new Set<number>();
  /** Told when attaching had to create the interface's clsact qdisc. */
  qdiscCreated: ((ifindex: number, iface: string) => void) | undefined;

  constructor(
    private readonly dp: Datapath,
    private dataRe: RegExp,
    private podRe: RegExp,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly pollMs = 500,
  ) {
    this.progIds = this.currentIds();
  }

  private currentIds(): Record<ProgramRole, number> {
    return {
      fromPod: native().progInfo(this.dp.programs.fromPod.fd).id,
      fromData: native().progInfo(this.dp.programs.fromData.fd).id,
      hostReply: native().progInfo(this.dp.programs.hostReply.fd).id,
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

  start(): void {
    this.poll();
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
  }

  list(): AttachedIface[] {
    return [...this.attached.values()];
  }

  /**
   * The source check of a pod interface: one LPM entry per route that points
   * at it, plus the interface's catch-all (value 0: anything else is
   * forged). New entries go in before stale ones go out, so a pod never sees
   * a moment where its own address is refused.
   */
  private syncPodSources(index: number, name: string, routes: ReadonlyArray<{ dst: string; prefixLen: number; oif: number }>): void {
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
        this.log.info({ iface: name, ifindex: index, sources: [...want] }, `${name}: pod may send from ${want.size ? [...want].join(', ') : 'any address (no route points at it)'}`);
      }
    } catch (e) {
      this.log.error({ iface: name }, `cannot write the source check of ${name}: ${(e as Error).message}; will retry`);
      return;
    }
    if (want.size === 0 && !this.unchecked.has(index)) {
      this.unchecked.add(index);
      this.log.warn(
        { iface: name, ifindex: index },
        `${name}: no route points at this pod interface, so its source addresses are not checked (bridge-based CNI?); ` +
          'the kernel\'s rp_filter is the only guard against a forged source there',
      );
    } else if (want.size > 0) {
      this.unchecked.delete(index);
    }
  }

  private forgetPodSources(index: number): void {
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
  private notePodIf(index: number, name: string, role: IngressRole): void {
    try {
      if (role === 'fromPod' && isVeth(name)) this.dp.maps.podIfs.set({ ifindex: index }, { v: 1 });
      else this.dp.maps.podIfs.delete({ ifindex: index });
    } catch (e) {
      this.log.warn({ iface: name }, `cannot record ${name} as a pod veth: ${(e as Error).message}; its traffic takes the host path`);
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
  private ensureHook(index: number, name: string): void {
    if (!native().tcHookCreate(index)) return;
    try {
      this.qdiscCreated?.(index, name);
    } catch (e) {
      this.log.warn({ iface: name }, `created the clsact qdisc on ${name} but cannot record that (${(e as Error).message}); cleanup will leave it`);
    }
  }

  /** The host-reply program on egress, where it is not already ours. */
  private ensureEgress(index: number, name: string): void {
    const want = this.progIds.hostReply;
    let have = 0;
    try {
      have = native().tcQuery(index, TC_EGRESS, TC_HANDLE, TC_PRIORITY);
    } catch {
      have = 0;
    }
    if (have === want) return;
    try {
      this.ensureHook(index, name);
      native().tcAttach(index, TC_EGRESS, this.dp.programs.hostReply.fd, TC_HANDLE, TC_PRIORITY);
      this.log.info({ iface: name, ifindex: index }, `attached ${this.dp.programs.hostReply.name} to ${name} (tc ${TC_EGRESS})`);
    } catch (e) {
      const msg = (e as Error).message;
      if (this.failed.get(-index) !== msg) {
        this.failed.set(-index, msg);
        this.log.error({ iface: name, ifindex: index }, `cannot attach to ${name} (egress): ${msg}; host-network endpoints behind it will not answer; will retry`);
      }
    }
  }

  private arm(): void {
    if (this.stopped) return;
    this.timer = this.clock.after(this.pollMs, () => {
      this.poll();
      this.arm();
    });
  }

  poll(): void {
    const now = new Map(native().interfaces().map((i) => [i.index, i.name]));
    for (const [index, a] of this.attached) {
      if (now.get(index) !== a.name) {
        this.attached.delete(index);
        this.forgetPodIf(index);
        this.log.info({ iface: a.name, ifindex: index }, `interface ${a.name} is gone; forgotten`);
      } else if (!roleOf(a.name, this.dataRe, this.podRe)) {
        this.attached.delete(index);
        this.forgetPodIf(index);
        try {
          native().tcDetach(index, TC_DIRECTION, TC_HANDLE, TC_PRIORITY);
          native().tcDetach(index, TC_EGRESS, TC_HANDLE, TC_PRIORITY);
          this.log.info({ iface: a.name, ifindex: index }, `interface ${a.name} no longer matches the interface patterns; detached`);
        } catch (e) {
          this.log.error({ iface: a.name }, `cannot detach from ${a.name}: ${(e as Error).message}`);
        }
      }
    }
    let routes: Array<{ dst: string; prefixLen: number; oif: number }> | undefined;
    for (const [index, name] of now) {
      const role = roleOf(name, this.dataRe, this.podRe);
      if (!role) continue;
      if (role === 'fromPod') {
        try {
          routes ??= native().routes4();
          this.syncPodSources(index, name, routes);
        } catch (e) {
          this.log.error({ iface: name }, `cannot read the routing table: ${(e as Error).message}; ${name} is not attached until it can be`);
          continue;
        }
      } else if (this.podSrcs.has(index)) {
        this.forgetPodSources(index);
      }
      this.ensureEgress(index, name);
      const want = this.progIds[role];
      let have: number;
      try {
        have = native().tcQuery(index, TC_DIRECTION, TC_HANDLE, TC_PRIORITY);
      } catch {
        have = 0;
      }
      if (have === want) {
        if (!this.attached.has(index)) {
          this.attached.set(index, { index, name, role, progId: want });
          this.notePodIf(index, name, role);
        }
        continue;
      }
      try {
        this.ensureHook(index, name);
        native().tcAttach(index, TC_DIRECTION, this.dp.programs[role].fd, TC_HANDLE, TC_PRIORITY);
        this.attached.set(index, { index, name, role, progId: want });
        this.notePodIf(index, name, role);
        this.failed.delete(index);
        this.log.info(
          { iface: name, ifindex: index, role, replaced: have !== 0 },
          `attached ${this.dp.programs[role].name} to ${name} (tc ${TC_DIRECTION})${have ? ', replacing the previous program' : ''}`,
        );
      } catch (e) {
        const msg = (e as Error).message;
        if (this.failed.get(index) !== msg) {
          this.failed.set(index, msg);
          this.log.error({ iface: name, ifindex: index }, `cannot attach to ${name}: ${msg}; will retry`);
        }
      }
    }
  }
}

/** Filters in this namespace at our handle and priority, on either direction. */
export function attachedHere(): Array<{ iface: string; ifindex: number; direction: TcDirection; progId: number; program: string }> {
  const out = [];
  for (const i of native().interfaces()) {
    for (const direction of [TC_DIRECTION, TC_EGRESS]) {
      let id = 0;
      try {
        id = native().tcQuery(i.index, direction, TC_HANDLE, TC_PRIORITY);
      } catch {
        continue;
      }
      if (!id) continue;
      let program = '?';
      try {
        const p = native().progById(id);
        try {
          program = p.name;
        } finally {
          p.close();
        }
      } catch {
        /* gone meanwhile */
      }
      out.push({ iface: i.name, ifindex: i.index, direction, progId: id, program });
    }
  }
  return out;
}

/** Detach our filters from every interface in this namespace. */
export function detachAll(log?: Logger): string[] {
  const out: string[] = [];
  for (const a of attachedHere()) {
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
  qdiscs: QdiscCleanup;
  unpinned: number;
}

/**
 * Remove what bpfproxy put on this node (this network namespace): our
 * filters, the clsact qdiscs we created that are empty once ours are gone,
 * and the pinned maps. The caller makes sure no agent is running on the pin
 * dir (the pin dir lock), or is that agent.
 */
export function teardown(pinDir: string, ledger: QdiscLedger, log?: Logger): TeardownResult {
  const detached = detachAll(log);
  const qdiscs = ledger.removeEmpty();
  let unpinned = 0;
  if (existsSync(pinDir)) {
    unpinned = readdirSync(pinDir).length;
    rmSync(pinDir, { recursive: true, force: true });
  }
  return { detached, qdiscs, unpinned };
}
