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
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { native, type LinkHandle, type NativeBpfObject, type SockHook } from '../../native/index.js';
import type { DatapathMaps } from './loader.js';
import { feKey, SockStat } from './codecs.js';
import { fe6Key } from './codecs6.js';

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

/** The socket destroy object (bpf/sock_destroy.c): kernel 6.5+. */
export const SOCK_DESTROY_OBJECT = 'sock_destroy.o';
const IPPROTO_UDP = 17;

/**
 * Connected UDP sockets on a removed backend, destroyed (bpf_sock_destroy
 * through a UDP socket iterator; the application's next call fails with
 * ECONNABORTED and it connects again). Only sockets the socket LB sent to
 * that backend (their reverse entry) are touched.
 */
export class SockDestroyer {
  private constructor(
    private readonly obj: NativeBpfObject,
    private readonly prog: number,
    private readonly dead: number,
    private readonly dead6: number,
  ) {}

  /** Load it over pinDir's maps; undefined (and why, logged once) where the kernel cannot. */
  static async load(bpfDir: string, pinDir: string, log?: Logger): Promise<SockDestroyer | undefined> {
    let obj: NativeBpfObject;
    try {
      obj = await native().loadObject(join(bpfDir, SOCK_DESTROY_OBJECT), { pinRoot: pinDir });
    } catch (e) {
      log?.warn(
        { err: (e as Error).message },
        'socket destroy (bpf_sock_destroy, kernel 6.5+) is not available: a connected UDP socket keeps the backend it connected to after that backend leaves its service, until the application reconnects',
      );
      return undefined;
    }
    const prog = obj.programs().find((p) => p.name === 'bpfproxy_sock_destroy_udp');
    const dead = obj.maps().find((m) => m.name === 'bpfproxy_sock_dead');
    const dead6 = obj.maps().find((m) => m.name === 'bpfproxy_sock_dead6');
    if (!prog || !dead || !dead6) {
      obj.close();
      throw new Error(
        `${SOCK_DESTROY_OBJECT} has no bpfproxy_sock_destroy_udp program or bpfproxy_sock_dead / bpfproxy_sock_dead6 map: rebuild with "make bpf"`,
      );
    }
    return new SockDestroyer(obj, prog.fd, dead.fd, dead6.fd);
  }

  /**
   * Destroy the connected UDP sockets reaching these backends through a
   * service, in each network namespace (paths; undefined: this thread's).
   * Returns how many were destroyed. A namespace that cannot be entered is
   * skipped (it went away meanwhile).
   */
  destroy(backends: ReadonlyArray<{ addr: string; port: number }>, netns?: readonly string[], log?: Logger): number {
    if (backends.length === 0) return 0;
    // IPv4 and IPv6 backends in their own maps, at most 4096 of each (the maps' size) a call
    const keys = [
      ...backends
        .filter((b) => !isIPv6(b.addr))
        .slice(0, 4096)
        .map((b) => ({ map: this.dead, key: feKey.encode({ addr: b.addr, port: b.port, proto: IPPROTO_UDP }) })),
      ...backends
        .filter((b) => isIPv6(b.addr))
        .slice(0, 4096)
        .map((b) => ({ map: this.dead6, key: fe6Key.encode({ addr: b.addr, port: b.port, proto: IPPROTO_UDP }) })),
    ];
    for (const k of keys) native().mapUpdate(k.map, k.key, Buffer.from([1]));
    let n = 0;
    try {
      if (!netns) return (n = native().iterRun(this.prog));
      for (const path of netns) {
        let prev: number;
        try {
          prev = native().enterNetns(path);
        } catch {
          continue;
        }
        try {
          n += native().iterRun(this.prog);
        } catch (e) {
          log?.warn(
            { netns: path, err: (e as Error).message },
            `socket destroy in ${path} failed; its connected UDP sockets keep their backend`,
          );
        } finally {
          native().restoreNetns(prev);
        }
      }
      return n;
    } finally {
      for (const k of keys) native().mapDelete(k.map, k.key);
    }
  }

  close(): void {
    this.obj.close();
  }
}

/** One /proc/<pid>/ns/net path per network namespace on the node (the socket LB's "all": every pod's). */
export function netnsPaths(proc = '/proc'): string[] {
  const seen = new Map<bigint, string>();
  for (const d of readdirSync(proc)) {
    if (!/^\d+$/.test(d)) continue;
    const p = join(proc, d, 'ns', 'net');
    try {
      const ino = statSync(p, { bigint: true }).ino;
      if (!seen.has(ino)) seen.set(ino, p);
    } catch {
      // the process ended
    }
  }
  return [...seen.values()];
}
