/**
 * Socket-level load balancing (bpf/sock.c): the cgroup v2 hooks, attached
 * to one cgroup (--cgroup-root) through BPF links pinned as
 * <pinDir>/sock/<hook>, so they outlive the agent like the maps and tcx
 * links do. A restarted agent adopts them: a pin on the same cgroup gets
 * the new program with BPF_LINK_UPDATE (the hook never runs without one);
 * a pin on another cgroup is detached first. `bpfproxy cleanup` detaches
 * and unpins them (detachSockLinks).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { native, type LinkHandle, type NativeBpfObject, type SockHook } from '../../native/index.js';
import type { DatapathMaps } from './loader.js';
import { SockStat } from './codecs.js';

/** --socket-lb: off; host (the hooks on the cgroup root, only sockets of the node's network namespace translated); all (also pods'). */
export const SOCKET_LB_SCOPES = ['off', 'host', 'all'] as const;
export type SocketLbScope = (typeof SOCKET_LB_SCOPES)[number];

/** Every hook bpf/sock.c has a program for; the program is bpfproxy_sock_<hook>. */
export const SOCK_HOOKS: readonly SockHook[] = [
  'connect4',
  'sendmsg4',
  'recvmsg4',
  'getpeername4',
  'connect6',
  'sendmsg6',
  'recvmsg6',
  'getpeername6',
];

export const sockProgramName = (hook: SockHook): string => `bpfproxy_sock_${hook}`;
export const sockPinDir = (pinDir: string): string => join(pinDir, 'sock');

/** The cgroup v2 mount to attach to when --cgroup-root is not given: /sys/fs/cgroup on a unified host, else the hybrid layout's /sys/fs/cgroup/unified (as Cilium looks). */
export function defaultCgroupRoot(mounts = readFileSync('/proc/mounts', 'utf8')): string {
  const cg2 = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1]!);
  if (cg2.includes('/sys/fs/cgroup')) return '/sys/fs/cgroup';
  if (cg2.includes('/sys/fs/cgroup/unified')) return '/sys/fs/cgroup/unified';
  if (cg2[0]) return cg2[0];
  throw new Error('no cgroup v2 mount in /proc/mounts: socket load balancing needs one (mount cgroup2, or pass --cgroup-root)');
}

/** A cgroup's id as BPF sees it (its inode number on cgroup2). */
export const cgroupId = (path: string): bigint => statSync(path, { bigint: true }).ino;

/** The programs of the loaded object by hook (fds owned by the object). */
export function sockPrograms(obj: NativeBpfObject): Record<SockHook, number> {
  const loaded = obj.programs();
  const out = {} as Record<SockHook, number>;
  for (const hook of SOCK_HOOKS) {
    const p = loaded.find((x) => x.name === sockProgramName(hook));
    if (!p) throw new Error(`the BPF object has no program ${sockProgramName(hook)}: rebuild with "make bpf"`);
    out[hook] = p.fd;
  }
  return out;
}

export interface PinnedSockLink {
  hook: SockHook;
  path: string;
  linkId: number;
  progId: number;
  /** 0n: the cgroup is gone */
  cgroupId: bigint;
}

/** Our pinned socket hooks (pins that are not one of ours are left alone and named in `bad`). */
export function readSockLinks(pinDir: string): { links: PinnedSockLink[]; bad: Array<{ path: string; reason: string }> } {
  const dir = sockPinDir(pinDir);
  const links: PinnedSockLink[] = [];
  const bad: Array<{ path: string; reason: string }> = [];
  if (!existsSync(dir)) return { links, bad };
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (!(SOCK_HOOKS as readonly string[]).includes(name)) {
      bad.push({ path, reason: `not a hook name bpfproxy pins (${SOCK_HOOKS.join(', ')})` });
      continue;
    }
    let h: LinkHandle;
    try {
      h = native().linkOpen(path);
    } catch (e) {
      bad.push({ path, reason: (e as Error).message });
      continue;
    }
    try {
      const info = native().cgroupLinkInfo(h);
      if (!info || info.hook !== name) {
        bad.push({ path, reason: `not a cgroup ${name} link` });
        continue;
      }
      links.push({ hook: name, path, linkId: info.id, progId: info.progId, cgroupId: info.cgroupId });
    } finally {
      h.close();
    }
  }
  return { links, bad };
}

/**
 * Attach (or adopt) every socket hook on cgroupPath with the programs of
 * obj. Pins on another cgroup are detached and replaced. Returns what was
 * done per hook. On failure the hooks attached by this call are detached
 * again (adopted ones keep their previous program).
 */
export function attachSockLinks(
  pinDir: string,
  cgroupPath: string,
  obj: NativeBpfObject,
  log?: Logger,
): Array<{ hook: SockHook; action: 'attached' | 'updated' }> {
  const progs = sockPrograms(obj);
  const want = cgroupId(cgroupPath);
  const dir = sockPinDir(pinDir);
  mkdirSync(dir, { recursive: true });
  const pinned = new Map(readSockLinks(pinDir).links.map((l) => [l.hook, l]));
  const done: Array<{ hook: SockHook; action: 'attached' | 'updated' }> = [];
  const created: string[] = [];
  try {
    for (const hook of SOCK_HOOKS) {
      const path = join(dir, hook);
      const old = pinned.get(hook);
      if (old && old.cgroupId === want) {
        const h = native().linkOpen(path);
        try {
          native().linkUpdate(h, progs[hook]);
        } finally {
          h.close();
        }
        done.push({ hook, action: 'updated' });
        continue;
      }
      if (old || existsSync(path)) {
        detachPin(path, log);
        log?.info(
          { hook, pin: path, cgroupId: String(old?.cgroupId ?? 0n) },
          `socket hook ${hook} was on another cgroup; moved to ${cgroupPath}`,
        );
      }
      const h = native().cgroupAttach(cgroupPath, hook, progs[hook]);
      try {
        native().objPin(h, path);
        created.push(path);
      } catch (e) {
        native().linkDetach(h);
        throw e;
      } finally {
        h.close();
      }
      done.push({ hook, action: 'attached' });
    }
  } catch (e) {
    for (const p of created) detachPin(p, log);
    throw e;
  }
  return done;
}

function detachPin(path: string, log?: Logger): void {
  try {
    const h = native().linkOpen(path);
    try {
      native().linkDetach(h);
    } finally {
      h.close();
    }
  } catch (e) {
    log?.warn(
      { pin: path, err: (e as Error).message },
      `could not detach the socket hook pinned at ${path}; unpinning it (the kernel frees the link when nothing holds it)`,
    );
  }
  rmSync(path, { force: true });
}

/** Detach and unpin every socket hook of pinDir (bpfproxy cleanup, --socket-lb=off). Returns the hooks removed. */
export function detachSockLinks(pinDir: string, log?: Logger): SockHook[] {
  const { links, bad } = readSockLinks(pinDir);
  for (const b of bad) log?.warn(b, `left alone under ${sockPinDir(pinDir)}: ${b.reason}`);
  for (const l of links) detachPin(l.path, log);
  const dir = sockPinDir(pinDir);
  if (existsSync(dir) && readdirSync(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  return links.map((l) => l.hook);
}

export type SockStats = Record<Lowercase<keyof typeof SockStat>, bigint>;

/** The socket LB counters, summed over CPUs. */
export function readSockStats(maps: Pick<DatapathMaps, 'sockStats'>): SockStats {
  const out = {} as SockStats;
  for (const [name, idx] of Object.entries(SockStat) as Array<[keyof typeof SockStat, number]>) {
    out[name.toLowerCase() as Lowercase<keyof typeof SockStat>] = maps.sockStats.getPerCpu({ v: idx }).reduce((a, c) => a + c.v, 0n);
  }
  return out;
}
