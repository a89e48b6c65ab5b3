/**
 * The engine's neighbour table: for every backend address, where frames to
 * it leave (an engine port), the MAC of the next hop, and the node address
 * SNAT uses towards it, from the kernel's own routing and neighbour tables
 * (rtnetlink, addon/engine/nl.c). The engine never answers ARP itself: a
 * next hop the kernel has no MAC for is asked for (RTM_NEWNEIGH with
 * NTF_USE: the kernel resolves it as if it sent a packet), and stale ones
 * are refreshed the same way, since the engine's traffic bypasses the
 * kernel and would never confirm them.
 */
import type { Clock } from '../../clock.js';
import type { Logger } from '../../log.js';
import { native } from '../../native/index.js';
import type { EngineNeighbour, EnginePort } from './table.js';

interface Route {
  oif: number;
  gateway: string | null;
  prefsrc: string | null;
}

export interface NeighbourSource {
  routeGet(ip: string): Route;
  neighbours(): Array<{ ip: string; ifindex: number; state: number; mac: string | null }>;
  resolve(ip: string, ifindex: number): void;
}

export const kernelNeighbours = (): NeighbourSource => ({
  routeGet: (ip) => native().engineRouteGet(ip),
  neighbours: () => native().engineNeighbours(),
  resolve: (ip, ifindex) => native().engineNeighResolve(ip, ifindex),
});

// NUD_* (linux/neighbour.h)
const NUD_REACHABLE = 0x02;
const NUD_STALE = 0x04;
const NUD_DELAY = 0x08;
const NUD_PROBE = 0x10;
const NUD_NOARP = 0x40;
const NUD_PERMANENT = 0x80;
const USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT;

/** How often one missing next hop is asked for, and a stale one refreshed. */
const RESOLVE_EVERY_MS = 1000;
const REFRESH_STALE_EVERY_MS = 30_000;
/** How long a route lookup is reused. */
const ROUTE_TTL_MS = 5000;

export interface NeighbourView {
  entries: EngineNeighbour[];
  /** backend addresses routed through an engine port whose next hop has no MAC yet */
  unresolved: string[];
  /** backend addresses routed elsewhere (not an engine port), or not routed */
  elsewhere: string[];
}

export class Neighbours {
  private readonly asked = new Map<string, number>();
  private readonly routes = new Map<string, { at: number; r: Route | null }>();

  constructor(
    private readonly src: NeighbourSource,
    private readonly clock: Clock,
    private readonly log?: Logger,
  ) {}

  private route(ip: string): Route | null {
    const now = this.clock.now();
    const c = this.routes.get(ip);
    if (c && now - c.at < ROUTE_TTL_MS) return c.r;
    let r: Route | null;
    try {
      r = this.src.routeGet(ip);
    } catch {
      r = null; // not routed: looked up again next time
    }
    this.routes.set(ip, { at: now, r });
    return r;
  }

  private ask(ip: string, ifindex: number, every: number): void {
    const k = `${ip}@${ifindex}`;
    const now = this.clock.now();
    const last = this.asked.get(k);
    if (last !== undefined && now - last < every) return;
    this.asked.set(k, now);
    try {
      this.src.resolve(ip, ifindex);
    } catch (e) {
      this.log?.debug(`cannot ask the kernel to resolve ${ip} on ifindex ${ifindex}: ${(e as Error).message}`);
    }
  }

  /** The entries for these backend addresses, over these ports (in table order). */
  compute(backends: Iterable<string>, ports: readonly EnginePort[]): NeighbourView {
    const portOf = new Map(ports.map((p, i) => [p.ifindex, i]));
    const macs = new Map<string, { mac: string; state: number }>();
    for (const n of this.src.neighbours()) if (n.mac && n.state & USABLE) macs.set(`${n.ip}@${n.ifindex}`, { mac: n.mac, state: n.state });
    const view: NeighbourView = { entries: [], unresolved: [], elsewhere: [] };
    const wanted = new Set(backends);
    for (const ip of this.routes.keys()) if (!wanted.has(ip)) this.routes.delete(ip);
    for (const ip of wanted) {
      const r = this.route(ip);
      const port = r ? portOf.get(r.oif) : undefined;
      if (!r || port === undefined) {
        view.elsewhere.push(ip);
        continue;
      }
      const hop = r.gateway ?? ip;
      const m = macs.get(`${hop}@${r.oif}`);
      if (!m) {
        view.unresolved.push(ip);
        this.ask(hop, r.oif, RESOLVE_EVERY_MS);
        continue;
      }
      if (m.state & NUD_STALE) this.ask(hop, r.oif, REFRESH_STALE_EVERY_MS);
      view.entries.push({ ip, port, mac: m.mac, ...(r.prefsrc ? { snat: r.prefsrc } : {}) });
    }
    for (const k of [...this.asked.keys()]) if (this.clock.now() - this.asked.get(k)! > 10 * REFRESH_STALE_EVERY_MS) this.asked.delete(k);
    return view;
  }
}
