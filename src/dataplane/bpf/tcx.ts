/**
 * Our tcx links (kernel 6.6 and later): one BPF link per interface and
 * direction, pinned as <pinDir>/tcx/<ifindex>-<ingress|egress> so they
 * outlive the agent like the maps do. A restarted agent opens the pins
 * (adopt), checks each link still sits on the interface it is named after,
 * and swaps programs in with BPF_LINK_UPDATE: the hook never runs without
 * a program, and never runs two of ours.
 *
 * A link is ours because it is pinned in our pin dir, not because of its
 * program's name: another agent's links (another pin dir) or a foreign tcx
 * program on the same interface are never touched. The kernel detaches a
 * link when its interface goes away; the pin then holds a defunct link
 * (ifindex 0), which is unpinned here as soon as it is seen.
 *
 * Without a pin dir (benchmarks), links live as long as this process holds
 * their fds.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { native, type FdRef, type LinkHandle, type TcDirection } from '../../native/index.js';

export const TCX_DIRECTIONS: readonly TcDirection[] = ['ingress', 'egress'];

/** Where the links of a pin dir are pinned. */
export const tcxPinDir = (pinDir: string): string => join(pinDir, 'tcx');

const pinName = (ifindex: number, dir: TcDirection) => `${ifindex}-${dir}`;
const PIN_RE = /^(\d+)-(ingress|egress)$/;

interface Link {
  handle: LinkHandle;
  id: number;
  ifindex: number;
  dir: TcDirection;
}

/** One link of ours as found under a pin dir. */
export interface PinnedTcxLink {
  path: string;
  ifindex: number;
  direction: TcDirection;
  linkId: number;
  progId: number;
  /** false: the interface is gone (or someone detached it); the pin holds nothing */
  live: boolean;
}

/** Every pin under <pinDir>/tcx, opened and checked (links that cannot be opened are skipped, named in `bad`). */
export function readPinnedTcxLinks(pinDir: string): { links: PinnedTcxLink[]; bad: Array<{ path: string; reason: string }> } {
  const dir = tcxPinDir(pinDir);
  const out: PinnedTcxLink[] = [];
  const bad: Array<{ path: string; reason: string }> = [];
  if (!existsSync(dir)) return { links: out, bad };
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const m = PIN_RE.exec(name);
    if (!m) {
      bad.push({ path, reason: 'not a name bpfproxy pins links under (<ifindex>-<ingress|egress>)' });
      continue;
    }
    let link: LinkHandle;
    try {
      link = native().linkOpen(path);
    } catch (e) {
      bad.push({ path, reason: (e as Error).message });
      continue;
    }
    try {
      const info = native().linkInfo(link);
      if (info.type !== 'tcx') {
        bad.push({ path, reason: 'not a tcx link' });
        continue;
      }
      const ifindex = Number(m[1]);
      const direction = m[2] as TcDirection;
      out.push({
        path,
        ifindex,
        direction,
        linkId: info.id,
        progId: info.progId,
        live: info.ifindex === ifindex && info.direction === direction,
      });
    } catch (e) {
      bad.push({ path, reason: (e as Error).message });
    } finally {
      link.close();
    }
  }
  return { links: out, bad };
}

/**
 * Detach and unpin every link pinned under pinDir (cleanup, bpfEnabled=false).
 * Returns the ifindexes whose links were live (detached now).
 */
export function detachPinnedTcxLinks(pinDir: string, log?: Logger): Array<{ ifindex: number; direction: TcDirection }> {
  const out: Array<{ ifindex: number; direction: TcDirection }> = [];
  const { links, bad } = readPinnedTcxLinks(pinDir);
  for (const l of links) {
    let link: LinkHandle | undefined;
    try {
      link = native().linkOpen(l.path);
      if (l.live && native().linkDetach(link)) out.push({ ifindex: l.ifindex, direction: l.direction });
    } catch (e) {
      log?.error(
        { pin: l.path },
        `cannot detach the tcx link pinned at ${l.path}: ${(e as Error).message}; unpinning it anyway (the kernel detaches it once nothing else holds it)`,
      );
    } finally {
      link?.close();
    }
    rmSync(l.path, { force: true });
  }
  for (const b of bad) log?.warn({ pin: b.path }, `${b.path}: ${b.reason}; left in place`);
  return out;
}

/** The links of one agent: created, adopted, updated, detached; pinned when a pin dir is given. */
export class TcxLinks {
  private readonly links = new Map<string, Link>();

  constructor(
    private readonly pinDir: string | undefined,
    private readonly log: Logger,
  ) {}

  private static key(ifindex: number, dir: TcDirection): string {
    return `${ifindex}/${dir}`;
  }

  private pinPath(ifindex: number, dir: TcDirection): string | undefined {
    return this.pinDir ? join(tcxPinDir(this.pinDir), pinName(ifindex, dir)) : undefined;
  }

  /** Open the links a previous agent pinned; defunct ones are unpinned. Returns how many were adopted. */
  adopt(): number {
    if (!this.pinDir) return 0;
    const { links, bad } = readPinnedTcxLinks(this.pinDir);
    for (const b of bad) this.log.warn({ pin: b.path }, `${b.path}: ${b.reason}; left in place, not adopted`);
    let n = 0;
    for (const l of links) {
      if (!l.live) {
        rmSync(l.path, { force: true });
        this.log.info(
          { pin: l.path, ifindex: l.ifindex },
          `tcx link pinned at ${l.path} no longer sits on ifindex ${l.ifindex} (interface gone); unpinned`,
        );
        continue;
      }
      try {
        const handle = native().linkOpen(l.path);
        this.links.set(TcxLinks.key(l.ifindex, l.direction), { handle, id: l.linkId, ifindex: l.ifindex, dir: l.direction });
        n++;
      } catch (e) {
        this.log.warn(
          { pin: l.path },
          `cannot open the tcx link pinned at ${l.path}: ${(e as Error).message}; a new one is made when the interface is attached`,
        );
      }
    }
    return n;
  }

  has(ifindex: number, dir: TcDirection): boolean {
    return this.links.has(TcxLinks.key(ifindex, dir));
  }

  /** The program our link runs on this hook; 0 when we have no live link there. A defunct link is dropped. */
  current(ifindex: number, dir: TcDirection): number {
    const k = TcxLinks.key(ifindex, dir);
    const l = this.links.get(k);
    if (!l) return 0;
    try {
      const info = native().linkInfo(l.handle);
      if (info.ifindex === ifindex) return info.progId;
    } catch {
      /* treated as defunct */
    }
    this.drop(k, l, false);
    return 0;
  }

  /** Attach prog, or swap it into our existing link atomically. Returns whether a link was created. */
  put(ifindex: number, dir: TcDirection, prog: FdRef): boolean {
    const k = TcxLinks.key(ifindex, dir);
    const l = this.links.get(k);
    if (l && this.current(ifindex, dir)) {
      native().linkUpdate(l.handle, prog);
      return false;
    }
    const handle = native().tcxAttach(ifindex, dir, prog);
    this.links.set(k, { handle, id: handle.id, ifindex, dir });
    const path = this.pinPath(ifindex, dir);
    if (path) {
      try {
        mkdirSync(tcxPinDir(this.pinDir!), { recursive: true });
        rmSync(path, { force: true });
        native().objPin(handle, path);
      } catch (e) {
        this.log.warn(
          { pin: path, ifindex },
          `tcx link on ifindex ${ifindex} (${dir}) works but cannot be pinned at ${path}: ${(e as Error).message}; it goes away when this agent stops`,
        );
      }
    }
    return true;
  }

  /** Detach our link from this hook; false when we had none. */
  remove(ifindex: number, dir: TcDirection): boolean {
    const k = TcxLinks.key(ifindex, dir);
    const l = this.links.get(k);
    if (!l) return false;
    this.drop(k, l, true);
    return true;
  }

  /** Detach (and unpin) our links on interfaces that are not in `present`. */
  prune(present: ReadonlySet<number>): void {
    for (const [k, l] of this.links) if (!present.has(l.ifindex)) this.drop(k, l, true);
  }

  /** Every hook we hold a link on. */
  list(): Array<{ ifindex: number; direction: TcDirection; linkId: number }> {
    return [...this.links.values()].map((l) => ({ ifindex: l.ifindex, direction: l.dir, linkId: l.id }));
  }

  private drop(k: string, l: Link, detach: boolean): void {
    this.links.delete(k);
    if (detach) {
      try {
        native().linkDetach(l.handle);
      } catch (e) {
        this.log.warn(
          { ifindex: l.ifindex },
          `cannot detach tcx link ${l.id} from ifindex ${l.ifindex} (${l.dir}): ${(e as Error).message}; unpinning it, the kernel drops it once nothing holds it`,
        );
      }
    }
    l.handle.close();
    const path = this.pinPath(l.ifindex, l.dir);
    if (path) rmSync(path, { force: true });
  }

  /** Close our fds; pinned links stay attached (agent exit). */
  close(): void {
    for (const l of this.links.values()) l.handle.close();
    this.links.clear();
  }
}
