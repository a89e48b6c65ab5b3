/**
 * The tunnel's maps (bpf/lib/tunnel.h): the mode for new flows and this
 * node's tunnel address (bpfproxy_tun_cfg), the other nodes' addresses
 * (bpfproxy_tun_nodes), the node of each endpoint on another node
 * (bpfproxy_tun_eps) and bpfDSROptoutCIDRs (bpfproxy_dsr_optout). Written
 * by difference against what this process wrote last (the first call
 * reads what is there, so a restarted agent removes only what is stale).
 * IPv6 endpoints and IPv6 opt-out CIDRs go to their IPv6 twins
 * (bpfproxy_tun6_eps, bpfproxy_dsr6_optout, bpf/lib/tunnel6.h); the nodes
 * are IPv4 addresses either way (the underlay is IPv4).
 */
import type { Logger } from 'pino';
import type { ExternalServiceMode } from '../../config/config.js';
import { ExtMode, TunCounter, type CtTun } from './codecs.js';
import type { DatapathMaps } from './loader.js';

export interface TunnelState {
  mode: ExternalServiceMode;
  /** this node's tunnel address (its InternalIP); undefined: no tunnel (SNAT) */
  local: string | undefined;
  /** other nodes' addresses */
  peers: readonly string[];
  /** endpoint address (IPv4 or IPv6) -> its node's tunnel address (IPv4) */
  endpoints: ReadonlyMap<string, string>;
  dsrOptout: readonly string[];
}

const MODE: Record<ExternalServiceMode, number> = { SNAT: ExtMode.SNAT, Tunnel: ExtMode.TUNNEL, DSR: ExtMode.DSR };
export const MODE_NAME: Record<number, string> = { [ExtMode.SNAT]: 'SNAT', [ExtMode.TUNNEL]: 'Tunnel', [ExtMode.DSR]: 'DSR' };

type Maps = Pick<DatapathMaps, 'tunNodes' | 'tunEps' | 'dsrOptout' | 'tunCfg' | 'tun6Eps' | 'dsr6Optout'>;

const isIPv6 = (a: string): boolean => a.includes(':');

export class TunnelTables {
  private peers: Set<string> | undefined;
  private eps: Map<string, string> | undefined;
  private optout: Set<string> | undefined;
  private eps6: Map<string, string> | undefined;
  private optout6: Set<string> | undefined;
  private cfg = '';

  constructor(
    private readonly maps: Maps,
    private readonly log?: Logger,
  ) {}

  apply(s: TunnelState): void {
    const mode = s.local ? MODE[s.mode] : ExtMode.SNAT;
    const cfgKey = `${mode}|${s.local ?? ''}`;
    if (cfgKey !== this.cfg) {
      this.maps.tunCfg.set({ v: 0 }, { mode, local: s.local ?? '0.0.0.0' });
      this.cfg = cfgKey;
      this.log?.info(
        { externalServiceMode: s.mode, tunnelAddress: s.local },
        s.local
          ? `bpfExternalServiceMode ${s.mode}: new external flows to endpoints on other nodes are ${s.mode === 'SNAT' ? 'SNATed to this node' : `tunnelled from ${s.local}`}; established flows keep how they are carried`
          : `bpfExternalServiceMode ${s.mode}: this node has no InternalIP (no Node object seen): new external flows to endpoints on other nodes are SNATed until it has one`,
      );
    }
    this.peers = this.syncSet(this.maps.tunNodes, this.peers ?? this.readSet(this.maps.tunNodes), new Set(s.peers), (a) => ({ addr: a }), {
      v: 1,
    });
    const cidrKey = (c: string) => {
      const [addr, len] = c.split('/');
      return { prefixlen: Number(len), addr: addr! };
    };
    this.optout = this.syncSet(
      this.maps.dsrOptout,
      this.optout ?? new Set(this.maps.dsrOptout.keys().map((k) => `${k.addr}/${k.prefixlen}`)),
      new Set(s.dsrOptout.filter((c) => !isIPv6(c))),
      cidrKey,
      { v: 1 },
    );
    this.optout6 = this.syncSet(
      this.maps.dsr6Optout,
      this.optout6 ?? new Set(this.maps.dsr6Optout.keys().map((k) => `${k.addr}/${k.prefixlen}`)),
      new Set(s.dsrOptout.filter(isIPv6)),
      cidrKey,
      { v: 1 },
    );
    const want4 = new Map<string, string>();
    const want6 = new Map<string, string>();
    for (const [ep, node] of s.endpoints) (isIPv6(ep) ? want6 : want4).set(ep, node);
    this.eps = this.syncEps(this.maps.tunEps, this.eps, want4);
    this.eps6 = this.syncEps(this.maps.tun6Eps, this.eps6, want6);
  }

  private syncEps(
    m: Maps['tunEps'] | Maps['tun6Eps'],
    had: Map<string, string> | undefined,
    want: Map<string, string>,
  ): Map<string, string> {
    const was = had ?? new Map(m.entries().map(([k, v]) => [k.addr, v.node]));
    const set: Array<[{ addr: string }, { node: string }]> = [];
    for (const [ep, node] of want) if (was.get(ep) !== node) set.push([{ addr: ep }, { node }]);
    if (set.length) m.setMany(set);
    for (const ep of was.keys()) if (!want.has(ep)) m.delete({ addr: ep });
    return want;
  }

  private readSet(m: Maps['tunNodes']): Set<string> {
    return new Set(m.keys().map((k) => k.addr));
  }

  private syncSet<K>(
    m: { set(k: K, v: { v: number }): void; delete(k: K): unknown },
    had: Set<string>,
    want: Set<string>,
    key: (s: string) => K,
    v: { v: number },
  ): Set<string> {
    for (const x of want) if (!had.has(x)) m.set(key(x), v);
    for (const x of had) if (!want.has(x)) m.delete(key(x));
    return want;
  }
}

/** The tunnel counters, summed over CPUs (status, metrics). */
export function tunnelCounters(maps: Pick<DatapathMaps, 'tunStats'>): Record<keyof typeof TunCounter, { packets: number; bytes: number }> {
  const out = {} as Record<keyof typeof TunCounter, { packets: number; bytes: number }>;
  for (const [name, i] of Object.entries(TunCounter) as Array<[keyof typeof TunCounter, number]>) {
    const per = maps.tunStats.getPerCpu({ v: i });
    out[name] = {
      packets: per.reduce((a, c) => a + Number(c.packets), 0),
      bytes: per.reduce((a, c) => a + Number(c.bytes), 0),
    };
  }
  return out;
}

/** The mode in force for new flows (bpfproxy_tun_cfg). */
export function tunnelMode(maps: Pick<DatapathMaps, 'tunCfg'>): { mode: string; local: string } {
  const c = maps.tunCfg.get({ v: 0 });
  return { mode: MODE_NAME[c?.mode ?? 0] ?? `unknown (${c?.mode})`, local: c?.local ?? '0.0.0.0' };
}

export type { CtTun };
