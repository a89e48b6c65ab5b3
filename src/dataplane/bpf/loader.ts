/**
 * Loading the datapath: the BPF object, with load-time settings written to
 * .rodata and maps pinned (or adopted) under the pin dir, and opening the
 * pinned maps alone for the CLI. A pinned map whose layout an upgrade
 * changed is migrated (conntrack entries copied) or replaced (counters).
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { BpfError, native, type MapHandle, type NativeBpfObject } from '../../native/index.js';
import * as c from './codecs.js';
import * as c6 from './codecs6.js';
import { DEFAULT_MAGLEV_CHUNKS, type DatapathConfig } from '../../config/datapath.js';
import { BPF_NOEXIST, BpfMap } from './map.js';
import { chars, type Codec } from './struct.js';
import { REASONS } from './reasons.js';

export const MAP_NAMES = {
  fe: 'bpfproxy_fe',
  slots: 'bpfproxy_slots',
  affinity: 'bpfproxy_affinity',
  nodeIps: 'bpfproxy_node_ips',
  podIfs: 'bpfproxy_pod_ifs',
  podSrcs: 'bpfproxy_pod_srcs',
  svcNames: 'bpfproxy_svc_names',
  ct: 'bpfproxy_ct',
  reasons: 'bpfproxy_reasons',
  maglev: 'bpfproxy_maglev',
  monitorCtl: 'bpfproxy_monitor_ctl',
  monitorRings: 'bpfproxy_monitor_rings',
  monitorLost: 'bpfproxy_monitor_lost',
  ipcache: 'bpfproxy_ipcache',
  policy: 'bpfproxy_policy',
  polState: 'bpfproxy_pol_state',
  polHits: 'bpfproxy_pol_hits',
  polRules: 'bpfproxy_pol_rules',
  polEps: 'bpfproxy_pol_eps',
  mode: 'bpfproxy_mode',
  lbSrcs: 'bpfproxy_lb_srcs',
  tunNodes: 'bpfproxy_tun_nodes',
  tunEps: 'bpfproxy_tun_eps',
  dsrOptout: 'bpfproxy_dsr_optout',
  tunCfg: 'bpfproxy_tun_cfg',
  ctTun: 'bpfproxy_ct_tun',
  tunStats: 'bpfproxy_tun_stats',
  sockRev: 'bpfproxy_sock_rev',
  sockStats: 'bpfproxy_sock_stats',
  // IPv6 (bpf/lib/lb6.h, conntrack6.h)
  fe6: 'bpfproxy_fe6',
  slots6: 'bpfproxy_slots6',
  affinity6: 'bpfproxy_affinity6',
  nodeIps6: 'bpfproxy_node_ips6',
  lbSrcs6: 'bpfproxy_lb_srcs6',
  ct6: 'bpfproxy_ct6',
  podSrcs6: 'bpfproxy_pod_srcs6',
  podAddrs: 'bpfproxy_pod_addrs',
  sockRev6: 'bpfproxy_sock_rev6',
  ipcache6: 'bpfproxy_ipcache6',
  // Tunnel/DSR for IPv6 services (bpf/lib/tunnel6.h)
  tun6Eps: 'bpfproxy_tun6_eps',
  dsr6Optout: 'bpfproxy_dsr6_optout',
  ct6Tun: 'bpfproxy_ct6_tun',
} as const;

/** The one object (bpf/bpfproxy.c) carrying every program; they share its maps. */
export const BPF_OBJECT = 'bpfproxy.o';

/** Each program by role, its name in BPF_OBJECT (where it is attached: attach.ts). */
export const PROGRAMS = {
  fromPod: { name: 'bpfproxy_pod' },
  fromData: { name: 'bpfproxy_data' },
  hostReply: { name: 'bpfproxy_host' },
  toPod: { name: 'bpfproxy_to_pod' },
} as const;

export type ProgramRole = keyof typeof PROGRAMS;

export interface DatapathMaps {
  fe: BpfMap<c.FeKey, c.FeValue>;
  slots: BpfMap<c.SlotKey, c.BackendValue>;
  affinity: BpfMap<c.AffinityKey, c.AffinityValue>;
  nodeIps: BpfMap<{ addr: string }, { v: number }>;
  podIfs: BpfMap<{ ifindex: number }, { v: number }>;
  podSrcs: BpfMap<c.PodSrcKey, { v: number }>;
  svcNames: BpfMap<{ v: number }, { name: string }>;
  ct: BpfMap<c.CtKey, c.CtValue>;
  reasons: BpfMap<{ v: number }, c.ReasonCounter>;
  maglev: BpfMap<c.MaglevKey, c.MaglevChunk>;
  /** Monitor slots and their leases (dataplane/bpf/monitor.ts). */
  monitorCtl: BpfMap<{ v: number }, c.MonitorCtl>;
  /** Slot -> ring buffer (an ARRAY_OF_MAPS: written with a map fd, read as a map id). */
  monitorRings: BpfMap<{ v: number }, { v: number }>;
  monitorLost: BpfMap<{ v: number }, { v: bigint }>;
  ipcache: BpfMap<c.IpcacheKey, c.IpcacheValue>;
  /** endpoint id -> its rule table (written: the inner map's fd; read: its id) */
  policy: BpfMap<{ v: number }, { v: number }>;
  polState: BpfMap<{ v: number }, c.PolState>;
  polHits: BpfMap<{ v: number }, c.RuleHits>;
  polRules: BpfMap<{ v: number }, c.PolRuleName>;
  polEps: BpfMap<{ v: number }, c.PolEpName>;
  mode: BpfMap<{ v: number }, c.ModeValue>;
  lbSrcs: BpfMap<c.LbSrcKey, { v: number }>;
  /** Tunnel / DSR (bpf/lib/tunnel.h; dataplane/bpf/tunnel.ts) */
  tunNodes: BpfMap<{ addr: string }, { v: number }>;
  tunEps: BpfMap<{ addr: string }, c.TunEp>;
  dsrOptout: BpfMap<c.DsrOptoutKey, { v: number }>;
  tunCfg: BpfMap<{ v: number }, c.TunCfg>;
  ctTun: BpfMap<c.CtKey, c.CtTun>;
  tunStats: BpfMap<{ v: number }, c.ReasonCounter>;
  /** Socket-level LB: (socket cookie, backend) -> the service address it addressed. */
  sockRev: BpfMap<c.SockRevKey, c.SockRevValue>;
  /** Socket-level LB counters (per CPU), index c.SockStat. */
  sockStats: BpfMap<{ v: number }, { v: bigint }>;
  /** The IPv6 twins: keys and values decode to the IPv4 shapes, addresses as text (codecs6.ts). */
  fe6: BpfMap<c.FeKey, c.FeValue>;
  slots6: BpfMap<c.SlotKey, c.BackendValue>;
  affinity6: BpfMap<c.AffinityKey, c.AffinityValue>;
  nodeIps6: BpfMap<{ addr: string }, { v: number }>;
  lbSrcs6: BpfMap<c.LbSrcKey, { v: number }>;
  ct6: BpfMap<c.CtKey, c.CtValue>;
  /** IPv6 pod source check (lib/pod.h), as podSrcs */
  podSrcs6: BpfMap<c.PodSrcKey, { v: number }>;
  /** pod interface -> the pod's IPv4 address, for IPv6 policy isolation (lib/policy6.h) */
  podAddrs: BpfMap<{ ifindex: number }, { addr4: string }>;
  /** Socket-level LB of native IPv6 sockets, as sockRev (addresses as text). */
  sockRev6: BpfMap<c.SockRevKey, c.SockRevValue>;
  /** IPv6 address prefix -> identity (lib/policy6.h), as ipcache; addresses as text */
  ipcache6: BpfMap<c.IpcacheKey, c.IpcacheValue>;
  /** IPv6 endpoint on another node -> its node's IPv4 tunnel address (bpf/lib/tunnel6.h) */
  tun6Eps: BpfMap<{ addr: string }, c.TunEp>;
  /** bpfDSROptoutCIDRs' IPv6 CIDRs */
  dsr6Optout: BpfMap<c.DsrOptoutKey, { v: number }>;
  /** how each tunnelled IPv6 flow is carried, as ctTun (endpoint address as IPv6 text) */
  ct6Tun: BpfMap<c.CtKey, c.CtTun>;
}

/** Key and value codec of each map: the layout a pinned map must have. */
const LAYOUT = {
  fe: [c.feKey, c.feValue],
  slots: [c.slotKey, c.backend],
  affinity: [c.affinityKey, c.affinityValue],
  nodeIps: [c.nodeIpKey, c.u8Value],
  podIfs: [c.podIfKey, c.u8Value],
  podSrcs: [c.podSrcKey, c.u8Value],
  svcNames: [c.u32Key, c.svcName],
  ct: [c.ctKey, c.ctValue],
  reasons: [c.u32Key, c.reasonCounter],
  maglev: [c.maglevKey, c.maglevChunk],
  monitorCtl: [c.u32Key, c.monitorCtl],
  monitorRings: [c.u32Key, c.u32Key],
  monitorLost: [c.u32Key, c.u64Value],
  ipcache: [c.ipcacheKey, c.ipcacheValue],
  policy: [c.u32Key, c.u32Value],
  polState: [c.u32Key, c.polState],
  polHits: [c.u32Key, c.ruleHits],
  polRules: [c.u32Key, c.polRuleName],
  polEps: [c.u32Key, c.polEpName],
  mode: [c.u32Key, c.modeValue],
  lbSrcs: [c.lbSrcKey, c.u8Value],
  tunNodes: [c.nodeIpKey, c.u8Value],
  tunEps: [c.tunEpKey, c.tunEp],
  dsrOptout: [c.dsrOptoutKey, c.u8Value],
  tunCfg: [c.u32Key, c.tunCfg],
  ctTun: [c.ctKey, c.ctTun],
  tunStats: [c.u32Key, c.reasonCounter],
  sockRev: [c.sockRevKey, c.sockRevValue],
  sockStats: [c.u32Key, c.u64Value],
  fe6: [c6.fe6Key, c.feValue],
  slots6: [c.slotKey, c6.backend6],
  affinity6: [c6.affinity6Key, c6.affinity6Value],
  nodeIps6: [c6.nodeIp6Key, c.u8Value],
  lbSrcs6: [c6.lbSrc6Key, c.u8Value],
  ct6: [c6.ct6Key, c6.ct6Value],
  podSrcs6: [c6.podSrc6Key, c.u8Value],
  podAddrs: [c.podIfKey, c.podAddr],
  sockRev6: [c6.sockRev6Key, c6.sockRev6Value],
  ipcache6: [c6.ipcache6Key, c.ipcacheValue],
  tun6Eps: [c6.tun6EpKey, c.tunEp],
  dsr6Optout: [c6.dsr6OptoutKey, c.u8Value],
  ct6Tun: [c6.ct6Key, c6.ct6Tun],
} as const satisfies Record<keyof typeof MAP_NAMES, readonly [Codec<unknown>, Codec<unknown>]>;

/** What is lost when a map of another layout is replaced by a new one. */
const LOST: Record<keyof typeof MAP_NAMES, string> = {
  fe: 'frontends are written again by the first sync, before the new programs attach',
  slots: 'backends are written again by the first sync, before the new programs attach',
  affinity: 'ClientIP affinity starts afresh',
  nodeIps: 'node addresses are written again at start',
  podIfs: 'pod interfaces are registered again as they are attached',
  podSrcs: 'pod source addresses are written again as interfaces are attached',
  svcNames: 'service names are written again by the first sync',
  ct: 'connections through services established before are reset once the new programs attach',
  reasons: 'drop counters start from zero',
  maglev: 'Maglev tables are written again by the first sync, before the new programs attach',
  monitorCtl: 'running monitors stop receiving events; started again, they do',
  monitorRings: 'running monitors stop receiving events; started again, they do',
  monitorLost: 'lost-event counts start from zero',
  ipcache: 'policy identities are written again by the first policy sync; until then no endpoint is isolated',
  policy: 'endpoint rule tables are written again by the first policy sync',
  polState: 'policy generation starts again: every tracked flow is checked once more',
  polHits: 'policy rule hit counters start from zero',
  polRules: 'policy rule names are written again by the first policy sync',
  polEps: 'policy endpoint names are written again by the first policy sync',
  mode: 'the programs serve as usual until the agent sets a mode again',
  lbSrcs: 'loadBalancerSourceRanges are written again by the first sync, before the new programs attach',
  tunNodes: 'node addresses for the tunnel are written again within a second of the start',
  tunEps: "endpoints' nodes for the tunnel are written again within a second of the start",
  dsrOptout: 'bpfDSROptoutCIDRs are written again within a second of the start',
  tunCfg: 'the external service mode is written again within a second of the start (until then: SNAT)',
  ctTun: 'tunnelled connections established before are carried as plain flows and break',
  tunStats: 'tunnel counters start from zero',
  sockRev: 'UDP replies and getpeername() of sockets connected through a service before read as the backend',
  sockStats: 'socket load-balancing counters start from zero',
  fe6: 'IPv6 frontends are written again by the first sync, before the new programs attach',
  slots6: 'IPv6 backends are written again by the first sync, before the new programs attach',
  affinity6: 'IPv6 ClientIP affinity starts afresh',
  nodeIps6: 'node IPv6 addresses are written again at start',
  lbSrcs6: 'IPv6 loadBalancerSourceRanges are written again by the first sync, before the new programs attach',
  ct6: 'IPv6 connections through services established before are reset once the new programs attach',
  podSrcs6: 'pod IPv6 source addresses are written again as interfaces are attached',
  podAddrs: 'pod interface addresses are written again as interfaces are attached',
  sockRev6: 'UDP replies and getpeername() of IPv6 sockets connected through a service before read as the backend',
  ipcache6:
    'IPv6 policy identities are written again by the first policy sync; until then dual-stack isolated pods get no IPv6 (policy-ipv6) and IPv6-only pods are not isolated',
  tun6Eps: "IPv6 endpoints' nodes for the tunnel are written again within a second of the start",
  dsr6Optout: 'bpfDSROptoutCIDRs (IPv6) are written again within a second of the start',
  ct6Tun: 'tunnelled IPv6 connections established before are carried as plain flows and break',
};

/** Every map, each owning the handle open() gives; if one fails, those opened before are closed. */
function makeMaps(open: (name: string) => MapHandle): DatapathMaps {
  const opened: MapHandle[] = [];
  const m = <K, V>(name: string, [k, v]: readonly [Codec<K>, Codec<V>], cpus?: number) => {
    const h = open(name);
    opened.push(h);
    return new BpfMap(name, h, k, v, h.maxEntries, cpus);
  };
  try {
    return {
      fe: m(MAP_NAMES.fe, LAYOUT.fe),
      slots: m(MAP_NAMES.slots, LAYOUT.slots),
      affinity: m(MAP_NAMES.affinity, LAYOUT.affinity),
      nodeIps: m(MAP_NAMES.nodeIps, LAYOUT.nodeIps),
      podIfs: m(MAP_NAMES.podIfs, LAYOUT.podIfs),
      podSrcs: m(MAP_NAMES.podSrcs, LAYOUT.podSrcs),
      svcNames: m(MAP_NAMES.svcNames, LAYOUT.svcNames),
      ct: m(MAP_NAMES.ct, LAYOUT.ct),
      reasons: m(MAP_NAMES.reasons, LAYOUT.reasons, native().possibleCpus()),
      maglev: m(MAP_NAMES.maglev, LAYOUT.maglev),
      monitorCtl: m(MAP_NAMES.monitorCtl, LAYOUT.monitorCtl),
      monitorRings: m(MAP_NAMES.monitorRings, LAYOUT.monitorRings),
      monitorLost: m(MAP_NAMES.monitorLost, LAYOUT.monitorLost, native().possibleCpus()),
      ipcache: m(MAP_NAMES.ipcache, LAYOUT.ipcache),
      policy: m(MAP_NAMES.policy, LAYOUT.policy),
      polState: m(MAP_NAMES.polState, LAYOUT.polState),
      polHits: m(MAP_NAMES.polHits, LAYOUT.polHits, native().possibleCpus()),
      polRules: m(MAP_NAMES.polRules, LAYOUT.polRules),
      polEps: m(MAP_NAMES.polEps, LAYOUT.polEps),
      mode: m(MAP_NAMES.mode, LAYOUT.mode),
      lbSrcs: m(MAP_NAMES.lbSrcs, LAYOUT.lbSrcs),
      tunNodes: m(MAP_NAMES.tunNodes, LAYOUT.tunNodes),
      tunEps: m(MAP_NAMES.tunEps, LAYOUT.tunEps),
      dsrOptout: m(MAP_NAMES.dsrOptout, LAYOUT.dsrOptout),
      tunCfg: m(MAP_NAMES.tunCfg, LAYOUT.tunCfg),
      ctTun: m(MAP_NAMES.ctTun, LAYOUT.ctTun),
      tunStats: m(MAP_NAMES.tunStats, LAYOUT.tunStats, native().possibleCpus()),
      sockRev: m(MAP_NAMES.sockRev, LAYOUT.sockRev),
      sockStats: m(MAP_NAMES.sockStats, LAYOUT.sockStats, native().possibleCpus()),
      fe6: m(MAP_NAMES.fe6, LAYOUT.fe6),
      slots6: m(MAP_NAMES.slots6, LAYOUT.slots6),
      affinity6: m(MAP_NAMES.affinity6, LAYOUT.affinity6),
      nodeIps6: m(MAP_NAMES.nodeIps6, LAYOUT.nodeIps6),
      lbSrcs6: m(MAP_NAMES.lbSrcs6, LAYOUT.lbSrcs6),
      ct6: m(MAP_NAMES.ct6, LAYOUT.ct6),
      podSrcs6: m(MAP_NAMES.podSrcs6, LAYOUT.podSrcs6),
      podAddrs: m(MAP_NAMES.podAddrs, LAYOUT.podAddrs),
      sockRev6: m(MAP_NAMES.sockRev6, LAYOUT.sockRev6),
      ipcache6: m(MAP_NAMES.ipcache6, LAYOUT.ipcache6),
      tun6Eps: m(MAP_NAMES.tun6Eps, LAYOUT.tun6Eps),
      dsr6Optout: m(MAP_NAMES.dsr6Optout, LAYOUT.dsr6Optout),
      ct6Tun: m(MAP_NAMES.ct6Tun, LAYOUT.ct6Tun),
    };
  } catch (e) {
    for (const h of opened) h.close();
    throw e;
  }
}

/** The sizes of a pinned map (opened and closed again). */
function pinnedInfo(path: string): { type: number; keySize: number; valueSize: number; maxEntries: number } {
  const h = native().objGet(path);
  try {
    return { type: h.type, keySize: h.keySize, valueSize: h.valueSize, maxEntries: h.maxEntries };
  } finally {
    h.close();
  }
}

/** Where a pinned map of an old layout waits while its entries are copied. */
export const MIGRATING_SUFFIX = '_migrating'; // bpffs refuses names with a dot

/**
 * Pinned maps whose key or value size is not what this version uses
 * (libbpf refuses to reuse them, and the agent could not start):
 * svc_names (only names, never read by the datapath) is moved aside and its
 * names copied into the new map once it exists (finishMigrations); any
 * other map is unpinned and created anew, with a log line saying what that
 * costs. The programs still attached keep the old maps until the new
 * programs replace them, after the first sync has filled the new maps.
 */
function preparePins(pinDir: string, log?: Logger): void {
  for (const [role, name] of Object.entries(MAP_NAMES) as Array<[keyof typeof MAP_NAMES, string]>) {
    const path = join(pinDir, name);
    if (!existsSync(path)) continue;
    const info = pinnedInfo(path);
    const [k, v] = LAYOUT[role];
    if (info.keySize === k.size && info.valueSize === v.size) continue;
    const sizes = `key/value ${info.keySize}/${info.valueSize} bytes; this version uses ${k.size}/${v.size}`;
    if (role === 'svcNames') {
      rmSync(path + MIGRATING_SUFFIX, { force: true });
      renameSync(path, path + MIGRATING_SUFFIX);
      log?.warn(
        { map: name, pinned: info.valueSize, now: v.size },
        `map ${name} is pinned with ${sizes}: migrating — its names are copied into a new map (no frontend changes)`,
      );
    } else {
      rmSync(path, { force: true });
      log?.warn(
        { map: name, pinned: [info.keySize, info.valueSize], now: [k.size, v.size] },
        `map ${name} is pinned with ${sizes}: replaced by a new, empty map (${LOST[role]})`,
      );
    }
  }
}

/** Copy the names of a svc_names map moved aside by preparePins into the new one. */
function finishMigrations(pinDir: string, log?: Logger): void {
  const path = join(pinDir, MAP_NAMES.svcNames);
  const old = path + MIGRATING_SUFFIX;
  if (!existsSync(old)) return;
  const from = native().objGet(old);
  try {
    const to = native().objGet(path);
    try {
      const name = chars(from.valueSize);
      const d = native().mapDump(from);
      let copied = 0;
      for (let i = 0; i < d.count; i++) {
        const id = d.keys.readUInt32LE(i * from.keySize);
        const v = name.read(d.values, i * from.valueLen);
        try {
          native().mapUpdate(to, c.u32Key.encode({ v: id }), c.svcName.encode({ name: v }), BPF_NOEXIST);
          copied++;
        } catch (e) {
          if ((e as { errno?: number }).errno !== 17) throw e; // EEXIST: written since
        }
      }
      rmSync(old, { force: true });
      log?.info(
        { map: MAP_NAMES.svcNames, names: copied },
        `map ${MAP_NAMES.svcNames} migrated: ${copied} service names copied into the new map`,
      );
    } finally {
      to.close();
    }
  } finally {
    from.close();
  }
}

/** A load failed after preparePins moved svc_names aside: put it back. */
function undoMigrations(pinDir: string): void {
  const path = join(pinDir, MAP_NAMES.svcNames);
  if (!existsSync(path) && existsSync(path + MIGRATING_SUFFIX)) renameSync(path + MIGRATING_SUFFIX, path);
}

export interface Programs {
  programs: Record<ProgramRole, { fd: number; name: string }>;
  objects: NativeBpfObject[];
  close(): void;
}

/**
 * The loaded datapath. Maps are opened from their pins with fds of their
 * own, so the programs can be reloaded (new load-time settings) under a
 * running reconciler.
 */
export interface Datapath {
  maps: DatapathMaps;
  programs: Record<ProgramRole, { fd: number; name: string }>;
  objects: NativeBpfObject[];
  /** Put newly loaded programs in place; returns the old ones to close once nothing runs them. */
  swapPrograms(p: Programs): Programs;
  close(): void;
}

const ip4Bytes = (ip: string): Buffer => Buffer.from(ip.split('.').map(Number));
const u64le = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};
const u32le = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const u16le = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};

/** DatapathConfig as the programs' rodata (bpf/lib/config.h); config/datapath.ts derives it. */
let setRetval: boolean | undefined;
/** Whether this kernel lets the socket hooks set their error (bpf_set_retval, 5.18); probed once. */
function sockSetRetval(): boolean {
  setRetval ??= native().sockSetRetvalSupported();
  return setRetval;
}

export function rodataFor(cfg: DatapathConfig): Record<string, Buffer> {
  return {
    cfg_ct_syn_sent_ns: u64le(cfg.ctTimeoutsNs.synSent),
    cfg_ct_established_ns: u64le(cfg.ctTimeoutsNs.established),
    cfg_ct_fins_seen_ns: u64le(cfg.ctTimeoutsNs.finsSeen),
    cfg_ct_rst_seen_ns: u64le(cfg.ctTimeoutsNs.rstSeen),
    cfg_ct_udp_ns: u64le(cfg.ctTimeoutsNs.udp),
    cfg_snat_ip: cfg.snatIp ? ip4Bytes(cfg.snatIp) : Buffer.alloc(4),
    cfg_hairpin_ip: ip4Bytes(cfg.hairpinIp),
    cfg_snat_port_min: u16le(cfg.snatPorts[0]),
    cfg_snat_port_max: u16le(cfg.snatPorts[1]),
    cfg_fib_redirect: Buffer.from([cfg.fibRedirect ? 1 : 0]),
    cfg_sock_netns_cookie: u64le(cfg.sockNetnsCookie ?? 0n),
    cfg_sock_set_retval: Buffer.from([(cfg.sockSetRetval ?? sockSetRetval()) ? 1 : 0]),
    cfg_sock_protos: Buffer.from([(cfg.sockProtos.tcp ? 1 : 0) | (cfg.sockProtos.udp ? 2 : 0)]),
    cfg_maglev_seed: u32le(cfg.maglevSeed),
    cfg_maglev_sizes: Buffer.concat(Array.from({ length: c.MAGLEV_SIZE_SLOTS }, (_, i) => u32le(c.maglevSizeOf(i)))),
  };
}

/**
 * Map sizes to ask for. A map already pinned keeps its size (libbpf cannot
 * adopt a pinned map of another size); the caller is told so it can say so.
 */
function sizesFor(cfg: DatapathConfig, pinDir: string, log?: Logger): Record<string, number> {
  const wanted: Record<string, number> = {
    [MAP_NAMES.ct]: cfg.mapSizes.conntrack,
    [MAP_NAMES.ctTun]: cfg.mapSizes.conntrack,
    [MAP_NAMES.fe]: cfg.mapSizes.natFrontend,
    // one name per service port: never more than frontends
    [MAP_NAMES.svcNames]: cfg.mapSizes.natFrontend,
    [MAP_NAMES.slots]: cfg.mapSizes.natBackend,
    [MAP_NAMES.affinity]: cfg.mapSizes.natAffinity,
    [MAP_NAMES.maglev]: cfg.mapSizes.maglev ?? DEFAULT_MAGLEV_CHUNKS,
    [MAP_NAMES.ct6]: cfg.mapSizes.conntrack,
    [MAP_NAMES.fe6]: cfg.mapSizes.natFrontend,
    [MAP_NAMES.slots6]: cfg.mapSizes.natBackend,
    [MAP_NAMES.affinity6]: cfg.mapSizes.natAffinity,
    // an LRU is preallocated: a quarter, so nodes without IPv6 tunnelled flows pay little (bpf/lib/tunnel6.h)
    [MAP_NAMES.ct6Tun]: Math.max(1024, Math.floor(cfg.mapSizes.conntrack / 4)),
  };
  for (const [name, size] of Object.entries(wanted)) {
    const path = join(pinDir, name);
    if (!existsSync(path)) continue;
    const have = pinnedInfo(path).maxEntries;
    if (have !== size) {
      log?.warn(
        { map: name, pinned: have, configured: size },
        `map ${name} is pinned with ${have} entries; keeping that size so no state is lost ` +
          `(run "bpfproxy cleanup" while the node is drained to resize)`,
      );
      wanted[name] = have;
    }
  }
  return wanted;
}

const BPF_MAP_TYPE_HASH = 1;

/**
 * Pinned maps whose layout changed between releases. libbpf refuses to
 * reuse a pin that differs from the object's definition, so before loading:
 * conntrack (an LRU hash before 0.2, a plain hash since; a 40-byte value
 * before the XDP forwarding cache was added to it) and IPv6 conntrack (a
 * 64-byte value before the TC forwarding cache) are read out, unpinned
 * and written back into the new map after the load, so established flows
 * survive the upgrade (a flow opened between the copy and the new programs'
 * attach has no entry in the new map: the stack sees its next packets); the
 * drop-reason counters (more reasons) start again from zero. Returns what
 * to write back.
 */
function migratePins(pinDir: string, log?: Logger): Array<{ map: keyof DatapathMaps; entries: Array<[unknown, unknown]> }> {
  const carry: Array<{ map: keyof DatapathMaps; entries: Array<[unknown, unknown]> }> = [];
  const ctPath = join(pinDir, MAP_NAMES.ct);
  if (existsSync(ctPath)) {
    const ct = native().objGet(ctPath);
    try {
      const codec = [c.ctValue, c.ctValueNoFwd].find((v) => v.size === ct.valueSize);
      if ((ct.type !== BPF_MAP_TYPE_HASH || ct.valueSize !== c.ctValue.size) && ct.keySize === c.ctKey.size && codec) {
        const entries = new BpfMap(MAP_NAMES.ct, ct, c.ctKey, codec).entries();
        rmSync(join(pinDir, MAP_NAMES.ct));
        carry.push({ map: 'ct', entries });
        log?.info(
          { map: MAP_NAMES.ct, entries: entries.length, type: ct.type, valueSize: ct.valueSize },
          `conntrack map is pinned in the old layout (type ${ct.type}, ${ct.valueSize}-byte values); its ${entries.length} entries move to the new map`,
        );
      }
    } finally {
      ct.close();
    }
  }
  const ct6Path = join(pinDir, MAP_NAMES.ct6);
  if (existsSync(ct6Path)) {
    const ct6 = native().objGet(ct6Path);
    try {
      if (ct6.keySize === c6.ct6Key.size && ct6.valueSize === c6.ct6ValueNoFwd.size) {
        const entries = new BpfMap(MAP_NAMES.ct6, ct6, c6.ct6Key, c6.ct6ValueNoFwd).entries();
        rmSync(ct6Path);
        carry.push({ map: 'ct6', entries });
        log?.info(
          { map: MAP_NAMES.ct6, entries: entries.length, valueSize: ct6.valueSize },
          `IPv6 conntrack map is pinned in the old layout (${ct6.valueSize}-byte values); its ${entries.length} entries move to the new map`,
        );
      }
    } finally {
      ct6.close();
    }
  }
  const reasonsPath = join(pinDir, MAP_NAMES.reasons);
  if (existsSync(reasonsPath)) {
    const info = pinnedInfo(reasonsPath);
    if (info.maxEntries !== REASONS.length) {
      rmSync(reasonsPath);
      log?.info(
        { map: MAP_NAMES.reasons, pinned: info.maxEntries, now: REASONS.length },
        'drop-reason counters are pinned for another set of reasons; they start again from zero',
      );
    }
  }
  return carry;
}

/** Write what migratePins read out of replaced maps into the new ones. */
function writeBack(pinDir: string, carry: ReturnType<typeof migratePins>, log?: Logger): void {
  const pinned = openPinnedMaps(pinDir);
  try {
    for (const { map, entries } of carry) {
      const m = pinned.maps[map] as unknown as BpfMap<unknown, unknown>;
      const fit = entries.slice(0, m.maxEntries);
      if (fit.length) m.setMany(fit);
      if (fit.length < entries.length) {
        log?.warn(
          { map: m.name, dropped: entries.length - fit.length },
          `${m.name}: ${entries.length - fit.length} entries did not fit the new map`,
        );
      }
    }
  } finally {
    pinned.close();
  }
}

/**
 * Load the BPF object; its maps are pinned under pinDir (or adopted).
 * On any failure the object is closed (with its fds).
 */
export async function loadPrograms(bpfDir: string, pinDir: string, cfg: DatapathConfig, log?: Logger): Promise<Programs> {
  mkdirSync(pinDir, { recursive: true });
  const carry = migratePins(pinDir, log);
  preparePins(pinDir, log);
  const rodata = rodataFor(cfg);
  const maxEntries = sizesFor(cfg, pinDir, log);
  const objects: NativeBpfObject[] = [];
  const programs = {} as Record<ProgramRole, { fd: number; name: string }>;
  try {
    const path = join(bpfDir, BPF_OBJECT);
    const obj = await native().loadObject(path, { pinRoot: pinDir, rodata, maxEntries });
    objects.push(obj);
    const loaded = obj.programs();
    for (const [role, p] of Object.entries(PROGRAMS) as Array<[ProgramRole, (typeof PROGRAMS)[ProgramRole]]>) {
      const prog = loaded.find((x) => x.name === p.name);
      if (!prog) {
        throw new Error(
          `${path} has no program ${p.name} (it has: ${loaded.map((x) => x.name).join(', ') || 'none'}); ` +
            'the BPF object and the agent are from different builds: rebuild with "make bpf"',
        );
      }
      programs[role] = { fd: prog.fd, name: prog.name };
    }
    finishMigrations(pinDir, log);
    if (carry.length) writeBack(pinDir, carry, log);
  } catch (e) {
    for (const o of objects) o.close();
    undoMigrations(pinDir);
    throw e;
  }
  return {
    programs,
    objects,
    close() {
      for (const o of objects) o.close();
    },
  };
}

export async function loadDatapath(bpfDir: string, pinDir: string, cfg: DatapathConfig, log?: Logger): Promise<Datapath> {
  let cur = await loadPrograms(bpfDir, pinDir, cfg, log);
  let pinned: ReturnType<typeof openPinnedMaps>;
  try {
    pinned = openPinnedMaps(pinDir);
  } catch (e) {
    cur.close();
    throw e;
  }
  const dp: Datapath = {
    maps: pinned.maps,
    programs: cur.programs,
    objects: cur.objects,
    swapPrograms(p) {
      const old = cur;
      cur = p;
      dp.programs = p.programs;
      dp.objects = p.objects;
      return old;
    },
    close() {
      cur.close();
      pinned.close();
    },
  };
  return dp;
}

/**
 * The pinned maps of a running (or stopped) agent, each with an fd of its
 * own. If one is missing, those opened before are closed and the error
 * says which; close() closes them all.
 */
export function openPinnedMaps(pinDir: string): { maps: DatapathMaps; close(): void } {
  const maps = makeMaps((name) => {
    const path = join(pinDir, name);
    try {
      return native().objGet(path);
    } catch (e) {
      if (e instanceof BpfError && e.errno === 2) {
        throw new Error(`no pinned map at ${path}: is the agent running with --pin-dir ${pinDir}?`, { cause: e });
      }
      throw e;
    }
  });
  return {
    maps,
    close() {
      for (const m of Object.values(maps) as Array<BpfMap<unknown, unknown>>) m.close();
    },
  };
}

export const REASON_COUNT = REASONS.length;
