/** Read-only views of the pinned maps, for the CLI (and tests' golden dumps). */
import { native } from '../../native/index.js';
import { BackendFlags, CtDir, CtFlags, CtState, ExtMode, FeFlags, IPPROTO_SCTP, IPPROTO_UDP, TunRole, maglevSizeOf } from './codecs.js';
import { tunnelCounters, tunnelMode } from './tunnel.js';
import type { DatapathMaps } from './loader.js';
import type { ConntrackGc } from './conntrack-gc.js';
import type { DatapathSnapshot, TunnelSnapshot } from '../dataplane.js';
import { REASONS } from './reasons.js';
import { canonicalIpv6 } from '../../net/ip6.js';

/** addr:port, IPv6 in brackets ([2001:db8::1]:80). */
const hostPort = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);
const proto = (n: number): string => (n === IPPROTO_UDP ? 'UDP' : n === 6 ? 'TCP' : n === IPPROTO_SCTP ? 'SCTP' : String(n));

export interface ServiceView {
  servicePort: string;
  frontend: string;
  kind: 'ClusterIP' | 'NodePort' | 'External';
  policies: string[];
  affinityTimeout: number;
  backends: Array<{ addr: string; local: boolean }>;
  localBackends: Array<{ addr: string }>;
  svcId: number;
  setId: number;
}

export function serviceViews(maps: DatapathMaps): ServiceView[] {
  const names = new Map(maps.svcNames.entries().map(([k, v]) => [k.v, v.name]));
  const slots = new Map<string, { addr: string; port: number; flags: number }>();
  for (const [k, v] of [...maps.slots.entries(), ...maps.slots6.entries()]) slots.set(`${k.setId}/${k.index}`, v);
  const out: ServiceView[] = [];
  for (const [k, v] of [...maps.fe.entries(), ...maps.fe6.entries()]) {
    const get = (i: number) => slots.get(`${v.setId}/${i}`);
    const cluster = Array.from({ length: v.clusterCount }, (_, i) => get(i));
    const local = Array.from({ length: v.localCount }, (_, i) => get(v.clusterCount + i));
    const policies: string[] = [];
    if (v.flags & FeFlags.EXT_LOCAL) policies.push('eTP=Local');
    if (v.flags & FeFlags.INT_LOCAL) policies.push('iTP=Local');
    if (v.flags & FeFlags.SRC_RANGE) policies.push('sourceRanges');
    if (v.flags & FeFlags.MAGLEV) {
      const m = maglevSizeOf(v.maglevSize);
      policies.push(v.maglevSizeLocal ? `maglev=${m}/${maglevSizeOf(v.maglevSizeLocal)}` : `maglev=${m}`);
    }
    out.push({
      servicePort: names.get(v.svcId) ?? `(svc ${v.svcId})`,
      frontend: `${k.addr === '0.0.0.0' ? '*' : k.addr === '::' ? '[*]' : k.addr.includes(':') ? `[${k.addr}]` : k.addr}:${k.port}/${proto(k.proto)}`,
      kind: v.flags & FeFlags.NODEPORT ? 'NodePort' : v.flags & FeFlags.EXTERNAL ? 'External' : 'ClusterIP',
      policies,
      affinityTimeout: v.affinityTimeout,
      backends: cluster.map((b) => ({
        addr: b ? hostPort(b.addr, b.port) : '(missing)',
        local: !!b && (b.flags & BackendFlags.LOCAL) !== 0,
      })),
      localBackends: local.map((b) => ({ addr: b ? hostPort(b.addr, b.port) : '(missing)' })),
      svcId: v.svcId,
      setId: v.setId,
    });
  }
  return out.sort((a, b) =>
    a.servicePort === b.servicePort ? (a.frontend < b.frontend ? -1 : 1) : a.servicePort < b.servicePort ? -1 : 1,
  );
}

export interface ConntrackView {
  proto: string;
  dir: 'fwd' | 'reply';
  from: string;
  to: string;
  natFrom: string;
  natTo: string;
  state: string;
  flags: string[];
  service: string;
  expiresInS: number;
  ageS: number;
  /** a flow carried between nodes (bpfExternalServiceMode Tunnel/DSR) */
  tunnel?: TunnelFlowView;
}

export interface TunnelFlowView {
  mode: 'Tunnel' | 'DSR';
  /** which end this node is */
  role: 'ingress' | 'backend';
  ingressNode: string;
  backendNode: string;
  /** the endpoint chosen */
  backend: string;
}

/**
 * Whether a flow has `ip` on either side, before or after translation (the
 * CLI's --ip). IPv6 endpoints read `[addr]:port`; an IPv6 address is
 * compared in its one text form, however the operator wrote it.
 */
export function flowHasAddress(c: ConntrackView, ip: string): boolean {
  const six = canonicalIpv6(ip);
  const prefix = six ? `[${six}]:` : `${ip}:`;
  return [c.from, c.to, c.natFrom, c.natTo].some((a) => a.startsWith(prefix));
}

const ctKeyStr = (k: { saddr: string; daddr: string; sport: number; dport: number; proto: number }) =>
  `${k.proto}|${k.saddr}:${k.sport}|${k.daddr}:${k.dport}`;

export function ctState(protoNum: number, state: number): string {
  if (state & CtState.RST) return 'reset';
  const fins = state & (CtState.FIN_FWD | CtState.FIN_REPLY);
  if (fins === (CtState.FIN_FWD | CtState.FIN_REPLY)) return 'closing';
  if (fins) return 'fin-wait';
  if (protoNum === IPPROTO_UDP) return state & CtState.REPLY_SEEN ? 'replied' : 'new';
  if (state & CtState.ESTABLISHED) return 'established';
  // SCTP: INIT sent (cookie-wait), INIT ACK seen (cookie-echoed)
  if (state & CtState.REPLY_SEEN) return protoNum === IPPROTO_SCTP ? 'init-acked' : 'syn-received';
  return protoNum === IPPROTO_SCTP ? 'init-sent' : 'syn-sent';
}

export function conntrackViews(maps: DatapathMaps): ConntrackView[] {
  const names = new Map(maps.svcNames.entries().map(([k, v]) => [k.v, v.name]));
  const now = native().monotonicNs();
  const tun = new Map([...maps.ctTun.entries(), ...maps.ct6Tun.entries()].map(([k, v]) => [ctKeyStr(k), v]));
  return [...maps.ct.entries(), ...maps.ct6.entries()]
    .filter(([, v]) => v.expiresNs >= now)
    .map(([k, v]) => {
      const flags: string[] = [];
      if (v.flags & CtFlags.SNAT) flags.push('snat');
      if (v.flags & CtFlags.HAIRPIN) flags.push('hairpin');
      if (v.flags & CtFlags.EXTERNAL) flags.push('external');
      if (v.flags & CtFlags.PLAIN) flags.push('policy'); // tracked for network policy, not translated
      if (v.flags & CtFlags.POL_DENIED) flags.push('policy-denied');
      if (v.flags & CtFlags.ADOPTED) flags.push('adopted');
      if (v.flags & CtFlags.TUNNEL) flags.push('tunnel');
      const tv = v.flags & CtFlags.TUNNEL ? tun.get(ctKeyStr(k)) : undefined;
      const ingress = tv?.role === TunRole.INGRESS;
      return {
        proto: proto(k.proto),
        dir: v.dir === CtDir.FWD ? ('fwd' as const) : ('reply' as const),
        from: hostPort(k.saddr, k.sport),
        to: hostPort(k.daddr, k.dport),
        natFrom: hostPort(v.natSaddr, v.natSport),
        natTo: hostPort(v.natDaddr, v.natDport),
        state: ctState(k.proto, v.state),
        flags,
        service: names.get(v.svcId) ?? '',
        expiresInS: Math.round(Number(v.expiresNs - now) / 1e9),
        ageS: Math.round(Number(now - v.createdNs) / 1e9),
        ...(tv
          ? {
              tunnel: {
                mode: tv.mode === ExtMode.DSR ? ('DSR' as const) : ('Tunnel' as const),
                role: ingress ? ('ingress' as const) : ('backend' as const),
                ingressNode: ingress ? tv.local : tv.peer,
                backendNode: ingress ? tv.peer : tv.local,
                backend: `${tv.backend}:${tv.backendPort}`,
              },
            }
          : {}),
      };
    });
}

export interface ReasonView {
  reason: string;
  verdict: string;
  packets: number;
  bytes: number;
  help: string;
}

export function reasonViews(maps: DatapathMaps): ReasonView[] {
  return REASONS.slice(1).map((r, i) => {
    const per = maps.reasons.getPerCpu({ v: i + 1 });
    return {
      reason: r.name,
      verdict: r.verdict,
      packets: per.reduce((a, c) => a + Number(c.packets), 0),
      bytes: per.reduce((a, c) => a + Number(c.bytes), 0),
      help: r.help,
    };
  });
}

/** The external service mode in force and the tunnel's counters. */
export function tunnelView(maps: DatapathMaps): TunnelSnapshot {
  const m = tunnelMode(maps);
  const c = tunnelCounters(maps);
  return {
    mode: m.mode,
    local: m.local,
    newFlows: { SNAT: c.NEW_SNAT.packets, Tunnel: c.NEW_TUNNEL.packets, DSR: c.NEW_DSR.packets },
    newFromTunnel: c.NEW_REMOTE.packets,
    moved: c.MOVED.packets,
    midflow: c.MIDFLOW.packets,
    packets: { encap: c.ENCAP.packets, decap: c.DECAP.packets, dsrReply: c.DSR_REPLY.packets },
    bytes: { encap: c.ENCAP.bytes, decap: c.DECAP.bytes, dsrReply: c.DSR_REPLY.bytes },
  };
}

export interface MapFill {
  map: string;
  entries: number;
  maxEntries: number;
  percent: number;
}

const filledMaps = (maps: DatapathMaps) => [
  maps.fe,
  maps.slots,
  maps.affinity,
  maps.ct,
  maps.nodeIps,
  maps.podIfs,
  maps.svcNames,
  maps.maglev,
  maps.lbSrcs,
  maps.tunEps,
  maps.tunNodes,
  maps.ctTun,
  maps.sockRev,
  // IPv6 (lib/lb6.h, conntrack6.h)
  maps.fe6,
  maps.slots6,
  maps.affinity6,
  maps.ct6,
  maps.nodeIps6,
  maps.lbSrcs6,
  // Tunnel/DSR for IPv6 services (bpf/lib/tunnel6.h)
  maps.tun6Eps,
  maps.ct6Tun,
  // NetworkPolicy identities (lib/policy.h, policy6.h): every pod address of the cluster may have an entry
  maps.ipcache,
  maps.ipcache6,
];

const fill = (map: string, entries: number, maxEntries: number): MapFill => ({
  map,
  entries,
  maxEntries,
  percent: +((entries / maxEntries) * 100).toFixed(2),
});

/** Entries in each map, read here and now (the CLI). */
export function mapFills(maps: DatapathMaps): MapFill[] {
  return filledMaps(maps).map((m) => fill(m.name, m.count(), m.maxEntries));
}

/**
 * The same, counted on a worker thread (addon/bulk.cc) in one call: what
 * the agent uses, so a scrape never dumps a map on the event loop. Maps
 * whose count is already known (by name: the conntrack GC's last pass)
 * are not read again.
 */
export async function countMapFills(maps: DatapathMaps, known: Readonly<Record<string, number>> = {}): Promise<MapFill[]> {
  const all = filledMaps(maps);
  const toCount = all.filter((m) => known[m.name] === undefined);
  const { counts } = toCount.length ? await native().mapCount(toCount.map((m) => m.fd)) : { counts: [] };
  const counted = new Map(toCount.map((m, i) => [m.name, counts[i] ?? 0]));
  return all.map((m) => fill(m.name, known[m.name] ?? counted.get(m.name) ?? 0, m.maxEntries));
}

/**
 * What a scrape reports: map fill counted on a worker thread, conntrack
 * from the GC's last pass (the first scrape waits for the first pass; if
 * no pass has succeeded yet, the conntrack map is counted too), and the
 * maps whose writer knows their count (known, by map name: the policy
 * writer's ipcache) not read at all.
 */
export async function datapathSnapshot(
  maps: DatapathMaps,
  gc: ConntrackGc,
  known: Readonly<Record<string, number>> = {},
): Promise<DatapathSnapshot> {
  if (!gc.stats.runs) await gc.run().catch(() => undefined);
  const s = gc.stats;
  const ct = maps.ct.name;
  const ct6 = maps.ct6.name;
  const fills = await countMapFills(maps, s.runs ? { ...known, [ct]: s.lastLive, [ct6]: gc.ipv6Live } : known);
  return {
    maps: fills,
    reasons: reasonViews(maps),
    tunnel: tunnelView(maps),
    conntrackEntries: fills.filter((m) => m.map === ct || m.map === ct6).reduce((n, m) => n + m.entries, 0),
    ...(s.runs
      ? {
          conntrack: {
            byProto: { ...s.liveByProto },
            gcRuns: s.runs,
            gcLastMs: s.lastMs,
            gcRemovedTotal: s.removedTotal,
            gcLastRunAt: s.lastRunAt,
          },
        }
      : {}),
  };
}
