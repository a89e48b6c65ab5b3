/**
 * The XDP side of the engine (bpf/xdp_afxdp.c, bpf/lib/xsk.h): the engine's
 * own load of the BPF object (its steering maps are not pinned: they go
 * with the engine), the XDP program on each engine interface through a BPF
 * link (closing the link detaches it: a stopped or crashed engine leaves
 * the interface as it was), and the maps saying which frames are the
 * engine's.
 */
import type { Logger } from '../../log.js';
import { BpfError, native, type LinkHandle } from '../../native/index.js';
import type { DatapathConfig } from '../../config/datapath.js';
import { feKey } from '../bpf/codecs.js';
import { fe6Key } from '../bpf/codecs6.js';
import { loadPrograms, type Programs } from '../bpf/loader.js';

export const XDP_PROGRAM = 'bpfproxy_xdp_afxdp';
export const XSK_MAPS = {
  xsks: 'bpfproxy_xsks',
  ifs: 'bpfproxy_xsk_ifs',
  fes: 'bpfproxy_xsk_fes',
  fes6: 'bpfproxy_xsk_fes6',
  cfg: 'bpfproxy_xsk_cfg',
} as const;
/** XSKMAP slots (bpf/lib/xsk.h XSK_SLOTS) and how many each interface gets (its queues). */
export const XSK_SLOTS = 1024;
export const XSK_SLOTS_PER_PORT = 16;

export interface SteeredFrontend {
  /** 0.0.0.0 (IPv6: ::): NodePort on any node address of its family */
  addr: string;
  port: number;
  proto: number;
}

const keyOf = (f: SteeredFrontend): string => `${f.addr}:${f.port}/${f.proto}`;
/** The steering map of the frontend's family and its key there. */
const entryOf = (maps: Record<keyof typeof XSK_MAPS, number>, f: SteeredFrontend): [number, Buffer] =>
  f.addr.includes(':')
    ? [maps.fes6, fe6Key.encode({ addr: f.addr, port: f.port, proto: f.proto })]
    : [maps.fes, feKey.encode({ addr: f.addr, port: f.port, proto: f.proto })];

export class XdpSteering {
  private readonly links = new Map<number, { link: LinkHandle; name: string; mode: 'native' | 'generic' }>();
  private readonly steered = new Map<string, SteeredFrontend>();
  private closed = false;

  private constructor(
    private readonly programs: Programs,
    private readonly progFd: number,
    private readonly maps: Record<keyof typeof XSK_MAPS, number>,
    private readonly log: Logger,
  ) {}

  /** Load the object for the engine (maps shared with the BPF path are adopted from the pin dir). */
  static async load(bpfDir: string, pinDir: string, cfg: DatapathConfig, log: Logger): Promise<XdpSteering> {
    const p = await loadPrograms(bpfDir, pinDir, cfg, log);
    try {
      const obj = p.objects[0]!;
      const prog = obj.programs().find((x) => x.name === XDP_PROGRAM);
      if (!prog) {
        throw new Error(
          `${bpfDir}: the BPF object has no program ${XDP_PROGRAM}: it is older than this agent (rebuild with "make bpf"); the AF_XDP engine cannot steer frames`,
        );
      }
      const byName = new Map(obj.maps().map((m) => [m.name, m.fd]));
      const maps = {} as Record<keyof typeof XSK_MAPS, number>;
      for (const [role, name] of Object.entries(XSK_MAPS) as Array<[keyof typeof XSK_MAPS, string]>) {
        const fd = byName.get(name);
        if (fd === undefined) throw new Error(`${bpfDir}: the BPF object has no map ${name}; rebuild with "make bpf"`);
        maps[role] = fd;
      }
      return new XdpSteering(p, prog.fd, maps, log);
    } catch (e) {
      p.close();
      throw e;
    }
  }

  get xsksFd(): number {
    return this.maps.xsks;
  }

  /** The XDP program (tests run it with BPF_PROG_RUN). */
  get programFd(): number {
    return this.progFd;
  }

  /** Frames of the engine's ports come to its sockets only once this is set (slots base..base+queues-1). */
  setPort(ifindex: number, base: number, queues: number): void {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(ifindex);
    const v = Buffer.alloc(8);
    v.writeUInt32LE(base, 0);
    v.writeUInt32LE(queues, 4);
    native().mapUpdate(this.maps.ifs, k, v);
  }

  setSnatPorts(min: number, max: number): void {
    const v = Buffer.alloc(8);
    v.writeUInt16LE(min, 0);
    v.writeUInt16LE(max, 2);
    native().mapUpdate(this.maps.cfg, Buffer.alloc(4), v);
  }

  /**
   * Attach the program to an interface: native XDP where the driver has it
   * (veth does), else generic. An interface with another XDP program keeps
   * it: the engine does not take it over (error naming the interface).
   */
  attach(ifindex: number, name: string): 'native' | 'generic' {
    const have = this.links.get(ifindex);
    if (have) return have.mode;
    let link: LinkHandle;
    let mode: 'native' | 'generic' = 'native';
    try {
      link = native().xdpLinkAttach(ifindex, this.progFd, 'native');
    } catch (e) {
      if (e instanceof BpfError && (e.code === 'EBUSY' || e.code === 'EEXIST')) {
        throw new Error(
          `interface ${name} (ifindex ${ifindex}) has an XDP program already: the AF_XDP engine does not replace it; remove it or leave ${name} out of --afxdp-ifaces`,
          { cause: e },
        );
      }
      mode = 'generic';
      this.log.warn(
        { interface: name, err: (e as Error).message },
        `${name}: no native XDP (${(e as Error).message}); attaching in generic mode (slower, copies every frame)`,
      );
      link = native().xdpLinkAttach(ifindex, this.progFd, 'generic');
    }
    this.links.set(ifindex, { link, name, mode });
    return mode;
  }

  /** Which frontends the engine takes: additions and removals against what is in the map. */
  setFrontends(want: readonly SteeredFrontend[], o: { removeOnly?: boolean } = {}): { added: number; removed: number } {
    const next = new Map(want.map((f) => [keyOf(f), f]));
    let added = 0;
    let removed = 0;
    for (const [k, f] of this.steered) {
      if (next.has(k)) continue;
      native().mapDelete(...entryOf(this.maps, f));
      this.steered.delete(k);
      removed++;
    }
    for (const [k, f] of next) {
      if (o.removeOnly || this.steered.has(k)) continue;
      native().mapUpdate(...entryOf(this.maps, f), Buffer.from([1]));
      this.steered.set(k, f);
      added++;
    }
    return { added, removed };
  }

  /** Which frontends are steered now. */
  get frontends(): number {
    return this.steered.size;
  }

  interfaces(): Array<{ ifindex: number; name: string; mode: 'native' | 'generic' }> {
    return [...this.links].map(([ifindex, l]) => ({ ifindex, name: l.name, mode: l.mode }));
  }

  /** Stop steering (frames go to the kernel again), detach from every interface, free the maps. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [ifindex, l] of this.links) {
      try {
        l.link.close();
      } catch (e) {
        this.log.warn({ ifindex }, `cannot detach XDP from ${l.name}: ${(e as Error).message}`);
      }
    }
    this.links.clear();
    this.programs.close();
  }
}
