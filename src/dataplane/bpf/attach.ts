/**
 * Keeps our TC programs attached to the interfaces that match the pod and
 * data patterns: new interfaces are attached within one poll, vanished ones
 * forgotten, and a filter someone removed is put back. Only our own filter
 * (fixed handle and priority) is ever touched.
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

/** Calico's bpfDataIfacePattern default. */
export const DEFAULT_DATA_IFACES = '^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*)';
/** Pod-facing host interfaces of common CNIs: Calico, generic veth, Cilium, Azure, AWS VPC CNI. */
export const DEFAULT_POD_IFACES = '^(cali|veth|lxc|azv|eni).*';

export interface AttachedIface {
  index: number;
  name: string;
  role: ProgramRole;
  progId: number;
}

export function roleOf(name: string, dataRe: RegExp, podRe: RegExp): ProgramRole | undefined {
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

  /** Pod veths are entered directly by the datapath (bpf_redirect_peer). */
  private notePodIf(index: number, name: string, role: ProgramRole): void {
    try {
      if (role === 'fromPod' && isVeth(name)) this.dp.maps.podIfs.set({ ifindex: index }, { v: 1 });
      else this.dp.maps.podIfs.delete({ ifindex: index });
    } catch (e) {
      this.log.warn({ iface: name }, `cannot record ${name} as a pod veth: ${(e as Error).message}; its traffic takes the host path`);
    }
  }

  private forgetPodIf(index: number): void {
    try {
      this.dp.maps.podIfs.delete({ ifindex: index });
    } catch {
      /* map closed */
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
          this.log.info({ iface: a.name, ifindex: index }, `interface ${a.name} no longer matches the interface patterns; detached`);
        } catch (e) {
          this.log.error({ iface: a.name }, `cannot detach from ${a.name}: ${(e as Error).message}`);
        }
      }
    }
    for (const [index, name] of now) {
      const role = roleOf(name, this.dataRe, this.podRe);
      if (!role) continue;
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
        if (native().tcHookCreate(index)) {
          try {
            this.qdiscCreated?.(index, name);
          } catch (e) {
            this.log.warn({ iface: name }, `created the clsact qdisc on ${name} but cannot record that (${(e as Error).message}); cleanup will leave it`);
          }
        }
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

/** Interfaces in this namespace where a filter sits at our handle and priority. */
export function attachedHere(): Array<{ iface: string; ifindex: number; progId: number; program: string }> {
  const out = [];
  for (const i of native().interfaces()) {
    let id = 0;
    try {
      id = native().tcQuery(i.index, TC_DIRECTION, TC_HANDLE, TC_PRIORITY);
    } catch {
      continue;
    }
    if (!id) continue;
    let program = '?';
    try {
      const fd = native().progFdById(id);
      program = native().progInfo(fd).name;
      native().closeFd(fd);
    } catch {
      /* gone meanwhile */
    }
    out.push({ iface: i.name, ifindex: i.index, progId: id, program });
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
    if (native().tcDetach(a.ifindex, TC_DIRECTION, TC_HANDLE, TC_PRIORITY)) {
      out.push(a.iface);
      log?.info({ iface: a.iface }, `detached from ${a.iface}`);
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
