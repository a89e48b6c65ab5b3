/**
 * XDP acceleration on data interfaces (--xdp-acceleration, FelixConfiguration
 * bpfXDPAcceleration): the program bpf/xdp_data.c from the one object, on
 * each data interface through a BPF link pinned as
 * <pinDir>/xdp/<ifindex>-<native|generic>, so that it outlives the agent as
 * the tcx links do (tcx.ts). A restarted agent adopts the pins and swaps its
 * program in with BPF_LINK_UPDATE; a mode change (native <-> generic)
 * detaches and attaches again (the kernel cannot change a link's mode);
 * `bpfproxy cleanup` and bpfEnabled=false detach them.
 *
 * The TC program stays on every data interface: it serves whatever XDP
 * passes up (bpf/xdp_data.c says what), and everything when XDP is off.
 * An interface whose XDP hook is taken (the AF_XDP engine's program, or
 * anyone else's) keeps it: it is served by TC alone, and the log says so.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { BpfError, native, type FdRef, type LinkHandle } from '../../native/index.js';
import type { NativeBpfObject } from '../../native/index.js';

export const XDP_DATA_PROGRAM = 'bpfproxy_xdp_data';

export type XdpMode = 'native' | 'generic';

/** Where the XDP links of a pin dir are pinned. */
export const xdpPinDir = (pinDir: string): string => join(pinDir, 'xdp');

const PIN_RE = /^(\d+)-(native|generic)$/;

/** The XDP data program's fd in a loaded object. */
export function xdpDataProgram(obj: NativeBpfObject, path: string): number {
  const p = obj.programs().find((x) => x.name === XDP_DATA_PROGRAM);
  if (!p) {
    throw new Error(
      `${path} has no program ${XDP_DATA_PROGRAM}: the BPF object is older than this agent (rebuild with "make bpf"); XDP acceleration cannot be attached`,
    );
  }
  return p.fd;
}

/** One XDP link of ours as found under a pin dir. */
export interface PinnedXdpLink {
  path: string;
  ifindex: number;
  mode: XdpMode;
  linkId: number;
  progId: number;
  /** false: the interface is gone; the pin holds nothing */
  live: boolean;
}

/** Every pin under <pinDir>/xdp, opened and checked (ones that cannot be read are named in `bad`). */
export function readPinnedXdpLinks(pinDir: string): { links: PinnedXdpLink[]; bad: Array<{ path: string; reason: string }> } {
  const dir = xdpPinDir(pinDir);
  const links: PinnedXdpLink[] = [];
  const bad: Array<{ path: string; reason: string }> = [];
  if (!existsSync(dir)) return { links, bad };
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const m = PIN_RE.exec(name);
    if (!m) {
      bad.push({ path, reason: 'not a name bpfproxy pins XDP links under (<ifindex>-<native|generic>)' });
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
      if (info.type !== 'xdp') {
        bad.push({ path, reason: 'not an XDP link' });
        continue;
      }
      const ifindex = Number(m[1]);
      links.push({ path, ifindex, mode: m[2] as XdpMode, linkId: info.id, progId: info.progId, live: info.ifindex === ifindex });
    } catch (e) {
      bad.push({ path, reason: (e as Error).message });
    } finally {
      link.close();
    }
  }
  return { links, bad };
}

/** Detach and unpin every XDP link pinned under pinDir (cleanup, bpfEnabled=false); the ifindexes detached. */
export function detachPinnedXdpLinks(pinDir: string, log?: Logger): number[] {
  const out: number[] = [];
  const { links, bad } = readPinnedXdpLinks(pinDir);
  for (const l of links) {
    let link: LinkHandle | undefined;
    try {
      link = native().linkOpen(l.path);
      if (l.live && native().linkDetach(link)) out.push(l.ifindex);
    } catch (e) {
      log?.error(
        { pin: l.path },
        `cannot detach the XDP link pinned at ${l.path}: ${(e as Error).message}; unpinning it anyway (the kernel detaches it once nothing else holds it)`,
      );
    } finally {
      link?.close();
    }
    rmSync(l.path, { force: true });
  }
  for (const b of bad) log?.warn({ pin: b.path }, `${b.path}: ${b.reason}; left in place`);
  return out;
}

interface Held {
  handle: LinkHandle;
  ifindex: number;
  name: string;
  mode: XdpMode;
}

/** An interface as the attacher names it. */
export interface XdpIface {
  index: number;
  name: string;
}

/** The XDP links of one agent: adopted, attached, updated, detached to match (mode, data interfaces). */
export class XdpAccel {
  private readonly held = new Map<number, Held>();
  /** interfaces whose attach failed, with why (logged once per reason) */
  private readonly failed = new Map<number, string>();

  constructor(
    private readonly pinDir: string | undefined,
    private readonly log: Logger,
  ) {}

  private pinPath(ifindex: number, mode: XdpMode): string | undefined {
    return this.pinDir ? join(xdpPinDir(this.pinDir), `${ifindex}-${mode}`) : undefined;
  }

  /** Open the links a previous agent pinned; defunct ones are unpinned. Returns how many were adopted. */
  adopt(): number {
    if (!this.pinDir) return 0;
    const { links, bad } = readPinnedXdpLinks(this.pinDir);
    for (const b of bad) this.log.warn({ pin: b.path }, `${b.path}: ${b.reason}; left in place, not adopted`);
    let n = 0;
    for (const l of links) {
      if (!l.live) {
        rmSync(l.path, { force: true });
        this.log.info({ pin: l.path, ifindex: l.ifindex }, `XDP link pinned at ${l.path}: interface ${l.ifindex} is gone; unpinned`);
        continue;
      }
      try {
        this.held.set(l.ifindex, { handle: native().linkOpen(l.path), ifindex: l.ifindex, name: `ifindex ${l.ifindex}`, mode: l.mode });
        n++;
      } catch (e) {
        this.log.warn(
          { pin: l.path },
          `cannot open the XDP link pinned at ${l.path}: ${(e as Error).message}; it is attached again when the interface is`,
        );
      }
    }
    return n;
  }

  /**
   * Make the links match: `prog` in `mode` on each of `ifaces`, none
   * elsewhere (mode null: none at all). Errors are per interface: logged,
   * that interface stays on TC alone.
   */
  sync(mode: XdpMode | null, ifaces: readonly XdpIface[], prog: FdRef): void {
    const want = new Map(mode ? ifaces.map((i) => [i.index, i]) : []);
    for (const [ifindex, h] of this.held) {
      if (!want.has(ifindex) || h.mode !== mode || !this.alive(h)) this.drop(h, true);
    }
    for (const [ifindex, i] of want) {
      const h = this.held.get(ifindex);
      if (h) {
        h.name = i.name;
        continue;
      }
      this.attach(i, mode!, prog);
    }
    for (const k of this.failed.keys()) if (!want.has(k)) this.failed.delete(k);
  }

  /** New programs (reload): swap them into every link in place. */
  update(prog: FdRef): void {
    for (const h of this.held.values()) {
      try {
        native().linkUpdate(h.handle, prog);
      } catch (e) {
        this.log.error(
          { interface: h.name, ifindex: h.ifindex },
          `cannot swap the new XDP program into ${h.name}: ${(e as Error).message}; detaching it there (TC serves it alone) until the next sync attaches it again`,
        );
        this.drop(h, true);
      }
    }
  }

  private alive(h: Held): boolean {
    try {
      return native().linkInfo(h.handle).ifindex === h.ifindex;
    } catch {
      return false;
    }
  }

  private attach(i: XdpIface, mode: XdpMode, prog: FdRef): void {
    let handle: LinkHandle;
    try {
      handle = native().xdpLinkAttach(i.index, prog, mode);
    } catch (e) {
      const code = e instanceof BpfError ? e.code : '';
      const why =
        code === 'EBUSY' || code === 'EEXIST'
          ? `${i.name} has an XDP program already (the AF_XDP engine's, or another tool's); it is left in place and ${i.name} is served by TC alone`
          : mode === 'native'
            ? `${i.name}: native XDP refused (${(e as Error).message}): its driver may not support it; ${i.name} is served by TC alone (--xdp-acceleration generic works on any interface, slower)`
            : `${i.name}: generic XDP refused (${(e as Error).message}); ${i.name} is served by TC alone`;
      if (this.failed.get(i.index) !== why) this.log.error({ interface: i.name, ifindex: i.index, mode }, why);
      this.failed.set(i.index, why);
      return;
    }
    this.failed.delete(i.index);
    this.held.set(i.index, { handle, ifindex: i.index, name: i.name, mode });
    const path = this.pinPath(i.index, mode);
    if (path) {
      try {
        mkdirSync(xdpPinDir(this.pinDir!), { recursive: true });
        rmSync(path, { force: true });
        native().objPin(handle, path);
      } catch (e) {
        this.log.warn(
          { pin: path, interface: i.name },
          `XDP link on ${i.name} works but cannot be pinned at ${path}: ${(e as Error).message}; it goes away when this agent stops`,
        );
      }
    }
    this.log.info({ interface: i.name, ifindex: i.index, mode }, `XDP acceleration attached to ${i.name} (${mode})`);
  }

  private drop(h: Held, detach: boolean): void {
    this.held.delete(h.ifindex);
    if (detach) {
      try {
        native().linkDetach(h.handle);
      } catch (e) {
        this.log.warn({ interface: h.name }, `cannot detach the XDP link from ${h.name}: ${(e as Error).message}; unpinning it`);
      }
      this.log.info({ interface: h.name, ifindex: h.ifindex, mode: h.mode }, `XDP acceleration detached from ${h.name}`);
    }
    h.handle.close();
    const path = this.pinPath(h.ifindex, h.mode);
    if (path) rmSync(path, { force: true });
  }

  /** Where XDP sits now. */
  list(): Array<{ ifindex: number; name: string; mode: XdpMode }> {
    return [...this.held.values()].map((h) => ({ ifindex: h.ifindex, name: h.name, mode: h.mode }));
  }

  /** Interfaces where the attach failed, with why. */
  failures(): Array<{ ifindex: number; reason: string }> {
    return [...this.failed].map(([ifindex, reason]) => ({ ifindex, reason }));
  }

  /** Close our fds; pinned links stay attached (agent exit). */
  close(): void {
    for (const h of this.held.values()) h.handle.close();
    this.held.clear();
  }
}

/** An XDP attachment of ours as `bpfproxy status` shows it. */
export interface XdpAttachment {
  iface: string;
  ifindex: number;
  mode: XdpMode;
  progId: number;
  linkId: number;
  /** false: the pin outlived its interface (the next agent, or cleanup, removes it) */
  live: boolean;
}

/** The XDP links pinned under pinDir, with interface names from this network namespace. */
export function xdpAttachedHere(pinDir: string): XdpAttachment[] {
  const names = new Map(
    native()
      .interfaces()
      .map((i) => [i.index, i.name]),
  );
  return readPinnedXdpLinks(pinDir).links.map((l) => ({
    iface: names.get(l.ifindex) ?? `ifindex ${l.ifindex}`,
    ifindex: l.ifindex,
    mode: l.mode,
    progId: l.progId,
    linkId: l.linkId,
    live: l.live,
  }));
}
