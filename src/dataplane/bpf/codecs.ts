/**
 * One codec per map key/value, mirroring bpf/lib/types.h field by field
 * (test/codecs-btf.test.ts checks them against the object's BTF).
 */
import { MAGLEV_TABLE_SIZES } from '../../model/maglev.js';
import { arrayOf, arrayOfScalar, be16, be32, bytes, chars, ip4, nested, pad, struct, u16, u32, u64, u8, withDefault } from './struct.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

export const FeFlags = {
  EXTERNAL: 1 << 0,
  EXT_LOCAL: 1 << 1,
  INT_LOCAL: 1 << 2,
  NODEPORT: 1 << 3,
  MAGLEV: 1 << 4,
  SRC_RANGE: 1 << 5,
} as const;

/** enum node_ip_flags: the value of a node address in bpfproxy_node_ips. */
export const NodeIpFlags = { NODEPORT: 1 << 0 } as const;

export const BackendFlags = { LOCAL: 1 << 0 } as const;

export const CtDir = { FWD: 1, REPLY: 2 } as const;
export const CtState = { REPLY_SEEN: 1, FIN_FWD: 2, FIN_REPLY: 4, RST: 8, ESTABLISHED: 16 } as const;
export const CtFlags = { SNAT: 1, HAIRPIN: 2, EXTERNAL: 4, HOST_BE: 8, PLAIN: 16, POL_DENIED: 32, ADOPTED: 64, TUNNEL: 128 } as const;
export const ModeFlags = { DRAIN: 1, STANDBY: 2 } as const;

export const feKey = struct('fe_key', {
  addr: ip4,
  port: be16,
  proto: u8,
  pad: pad(1),
});
export type FeKey = ReturnType<typeof feKey.decode>;

export const feValue = struct('fe_value', {
  svcId: u32,
  setId: u32,
  clusterCount: u16,
  localCount: u16,
  flags: u16,
  maglevSize: u8,
  maglevSizeLocal: u8,
  affinityTimeout: u32,
});
export type FeValue = ReturnType<typeof feValue.decode>;

export const slotKey = struct('slot_key', {
  setId: u32,
  index: u32,
});
export type SlotKey = ReturnType<typeof slotKey.decode>;

export const backend = struct('backend', {
  addr: ip4,
  port: be16,
  flags: u8,
  pad: pad(1),
});
export type BackendValue = ReturnType<typeof backend.decode>;

/** Maglev tables (bpf/lib/maglev.h): which set's which table, chunk by chunk. */
export const MaglevTable = { CLUSTER: 0, LOCAL: 1 } as const;
/** Bytes of one chunk: 448 one-byte entries (sets of up to 256 backends) or 224 two-byte ones. */
export const MAGLEV_CHUNK_BYTES = 448;
/** cfg_maglev_sizes (bpf/lib/config.h): index 0 = no table, then MAGLEV_TABLE_SIZES. */
export const MAGLEV_SIZE_SLOTS = 16;
export const maglevSizeIndex = (m: number): number => {
  if (m === 0) return 0;
  const i = (MAGLEV_TABLE_SIZES as readonly number[]).indexOf(m);
  if (i < 0) throw new Error(`Maglev table size ${m} is not one of ${MAGLEV_TABLE_SIZES.join(', ')}`);
  return i + 1;
};
export const maglevSizeOf = (index: number): number => (index ? (MAGLEV_TABLE_SIZES[index - 1] ?? 0) : 0);

export const maglevKey = struct('maglev_key', {
  setId: u32,
  table: u16,
  chunk: u16,
});
export type MaglevKey = ReturnType<typeof maglevKey.decode>;

export const maglevChunk = struct('maglev_chunk', {
  ord: bytes(MAGLEV_CHUNK_BYTES),
});
export type MaglevChunk = ReturnType<typeof maglevChunk.decode>;

export const affinityKey = struct('affinity_key', {
  svcId: u32,
  client: ip4,
});
export type AffinityKey = ReturnType<typeof affinityKey.decode>;

export const affinityValue = struct('affinity_value', {
  backend: nested(backend),
  lastUsedNs: u64,
});
export type AffinityValue = ReturnType<typeof affinityValue.decode>;

export const nodeIpKey = struct('node_ip_key', {
  addr: ip4,
});

export const podIfKey = struct('pod_if_key', {
  ifindex: u32,
});

/** LPM key: prefixlen counts the 32 ifindex bits plus the address prefix. */
export const podSrcKey = struct('pod_src_key', {
  prefixlen: u32,
  ifindex: be32,
  addr: ip4,
});
export type PodSrcKey = ReturnType<typeof podSrcKey.decode>;

/** The IPv4 address of the pod behind a pod interface (IPv6 policy isolation, lib/policy6.h). */
export const podAddr = struct('pod_addr', {
  addr4: ip4,
});

/** LPM key of loadBalancerSourceRanges: prefixlen counts the 32 service-port-id bits plus the client prefix. */
export const lbSrcKey = struct('lb_src_key', {
  prefixlen: u32,
  svcId: be32,
  addr: ip4,
});
export type LbSrcKey = ReturnType<typeof lbSrcKey.decode>;

/**
 * struct svc_name: "namespace/name:port/PROTO" with its NUL. Valid names
 * make at most SERVICE_PORT_KEY_MAX (196) bytes, so a name is never cut.
 * Maps pinned by versions with 128 bytes are migrated by the loader.
 */
export const SVC_NAME_BYTES = 256;
export const svcName = struct('svc_name', {
  name: chars(SVC_NAME_BYTES),
});

export const ctKey = struct('ct_key', {
  saddr: ip4,
  daddr: ip4,
  sport: be16,
  dport: be16,
  proto: u8,
  pad: pad(3),
});
export type CtKey = ReturnType<typeof ctKey.decode>;

const ctValueFields = {
  expiresNs: u64,
  createdNs: u64,
  natSaddr: ip4,
  natDaddr: ip4,
  natSport: be16,
  natDport: be16,
  dir: u8,
  state: u8,
  flags: u8,
  pad: pad(1),
  svcId: u32,
  /** policy generation the flow was checked at; 0 (the default) = never */
  polGen: withDefault(u32, 0),
};
export const ctValue = struct('ct_value', {
  ...ctValueFields,
  /**
   * struct ct_fwd: the XDP program's forwarding cache (bpf/lib/xdp.h). The
   * agent never reads it and writes zeros (nothing cached: the next XDP
   * packet of the flow looks its route up).
   */
  fwd: pad(24),
});
export type CtValue = ReturnType<typeof ctValue.decode>;
/** struct ct_value before the XDP forwarding cache (40 bytes): read once to carry pinned conntrack over an upgrade. */
export const ctValueNoFwd = struct('ct_value', ctValueFields);

/** The one entry of bpfproxy_mode (lib/mode.h): what the programs do now. */
export const modeValue = struct('mode_value', {
  flags: u32,
  pad: pad(4),
});
export type ModeValue = ReturnType<typeof modeValue.decode>;

export const reasonCounter = struct('reason_counter', {
  packets: u64,
  bytes: u64,
});
export type ReasonCounter = ReturnType<typeof reasonCounter.decode>;

// ---- network policy (bpf/lib/policy.h) ----

export const IpcacheFlags = { INGRESS_ISO: 1, EGRESS_ISO: 2 } as const;
export const PolIdentity = { ANY: 0, WORLD: 1, HOST: 2, WORLD6: 3 } as const;
export const PolDir = { INGRESS: 1, EGRESS: 2 } as const;
export const PolVerdict = { ALLOW: 1, DENY: 2 } as const;

/** LPM key: prefixlen 0..32 over addr. */
export const ipcacheKey = struct('ipcache_key', {
  prefixlen: u32,
  addr: ip4,
});
export type IpcacheKey = ReturnType<typeof ipcacheKey.decode>;

export const ipcacheValue = struct('ipcache_value', {
  identity: u32,
  /** local endpoint id; 0 = not a local endpoint */
  endpoint: u32,
  flags: u8,
  pad: pad(3),
});
export type IpcacheValue = ReturnType<typeof ipcacheValue.decode>;

/** Bits of a rule-table key after prefixlen: identity 32 + direction 8 (then proto 8, port 16). */
export const POL_PREFIX_ANY_PROTO = 40;
export const POL_PREFIX_PROTO = 48;
export const POL_PREFIX_FULL = 64;

/** LPM key of an endpoint's rule table: prefixlen 40 (any protocol) or 48 + port prefix bits. */
export const polKey = struct('pol_key', {
  prefixlen: u32,
  identity: be32,
  dir: u8,
  proto: u8,
  port: be16,
});
export type PolKey = ReturnType<typeof polKey.decode>;

export const polValue = struct('pol_value', {
  ruleId: u32,
  verdict: u8,
  pad: pad(3),
});
export type PolValue = ReturnType<typeof polValue.decode>;

export const polState = struct('pol_state', {
  generation: u32,
  /** local endpoints isolated in some direction; 0 = the programs skip policy */
  isolated: u32,
});
export type PolState = ReturnType<typeof polState.decode>;

export const ruleHits = struct('rule_hits', {
  hits: u64,
});
export type RuleHits = ReturnType<typeof ruleHits.decode>;

/** "namespace/name" of a NetworkPolicy or a pod: at most 63 + 1 + 253 bytes, NUL padded. */
export const POL_NAME_BYTES = 320;

export const polRuleName = struct('pol_rule_name', {
  policy: chars(POL_NAME_BYTES),
  index: u32,
  dir: u8,
  pad: pad(3),
});
export type PolRuleName = ReturnType<typeof polRuleName.decode>;

export const polEpName = struct('pol_ep_name', {
  pod: chars(POL_NAME_BYTES),
});
export type PolEpName = ReturnType<typeof polEpName.decode>;

/** u32 keys (svc_names, per-CPU array index) and u8 values (node_ips). */
export const u32Key = struct('__u32', { v: u32 });
export const u8Value = struct('__u8', { v: u8 });

/** u64 values (per-CPU counters of lost monitor events). */
export const u64Value = struct('__u64', { v: u64 });

// ---- monitor (bpf/lib/monitor.h) ------------------------------------------

export const MonType = { FLOW_NEW: 1, FLOW_CLOSE: 2, DROP: 3, POLICY: 4 } as const;
export const MonHook = { POD: 1, DATA: 2, HOST: 3 } as const;
export const MonClose = { FIN: 1, RST: 2 } as const;
export const MonVerdict = { ALLOW: 1, DENY: 2 } as const;
export const MonDirection = { INGRESS: 1, EGRESS: 2 } as const;

/** MONITOR_SNAP_LEN, MONITOR_SLOTS, MONITOR_RING_BYTES of bpf/lib/types.h. */
export const MONITOR_SNAP_LEN = 128;
export const MONITOR_SLOTS = 4;
export const MONITOR_RING_BYTES = 4 << 20;

export const monitorEvent = struct('monitor_event', {
  tsNs: u64,
  type: u8,
  hook: u8,
  code: u8,
  flags: u8,
  ifindex: u32,
  tuple: nested(ctKey),
  nat: nested(ctKey),
  svcId: u32,
  ruleId: u32,
  endpoint: u32,
  pktLen: u32,
  durationNs: u64,
  capLen: u16,
  /** 4, 6, or 0 (a drop of a frame that is neither) */
  family: u8,
  pad: pad(5),
  data: bytes(MONITOR_SNAP_LEN),
  /** family 6: the addresses (tuple and nat keep ports and proto; their IPv4 addresses are zero) */
  saddr6: bytes(16),
  daddr6: bytes(16),
  natSaddr6: bytes(16),
  natDaddr6: bytes(16),
});
export type MonitorEventValue = ReturnType<typeof monitorEvent.decode>;

export const monitorSlot = struct('monitor_slot', {
  owner: u64,
  untilNs: u64,
});

export const monitorCtl = struct('monitor_ctl', {
  untilNs: u64,
  slot: arrayOf(monitorSlot, MONITOR_SLOTS),
});
export type MonitorCtl = ReturnType<typeof monitorCtl.decode>;

// ---- trace (bpf/lib/trace.h) ----------------------------------------------

export const TraceKind = {
  CT_HIT: 1,
  CT_MISS: 2,
  FRONTEND: 3,
  NO_FRONTEND: 4,
  BACKEND: 5,
  NAT: 6,
  FIB: 7,
  REASON: 8,
  POLICY: 9,
  /** IPv6: an address (and port) of the step before, in the order of its address words */
  ADDR6: 10,
} as const;
export const TRACE_MAX_STEPS = 16;

export const traceStep = struct('trace_step', {
  kind: u8,
  b: arrayOfScalar(u8, 3),
  w: arrayOfScalar(u32, 5),
});
export type TraceStepValue = ReturnType<typeof traceStep.decode>;

export const traceBuf = struct('trace_buf', {
  count: u32,
  pad: pad(4),
  step: arrayOf(traceStep, TRACE_MAX_STEPS),
});
export type TraceBufValue = ReturnType<typeof traceBuf.decode>;
/** u32 values: the outer policy map (an inner map's fd when written, its id when read). */
export const u32Value = struct('__u32', { v: u32 });

/* ---- Tunnel and DSR (bpf/lib/tunnel.h) ---- */

/** enum ext_mode: how new external flows to another node's endpoint are carried. */
export const ExtMode = { SNAT: 0, TUNNEL: 1, DSR: 2 } as const;
/** enum tun_role */
export const TunRole = { INGRESS: 1, BACKEND: 2 } as const;
/** enum tun_counter: index in bpfproxy_tun_stats */
export const TunCounter = {
  ENCAP: 0,
  DECAP: 1,
  DSR_REPLY: 2,
  NEW_SNAT: 3,
  NEW_TUNNEL: 4,
  NEW_DSR: 5,
  NEW_REMOTE: 6,
  MOVED: 7,
  MIDFLOW: 8,
} as const;

export const tunEpKey = struct('tun_ep_key', { addr: ip4 });
export const tunEp = struct('tun_ep', { node: ip4 });
export type TunEp = ReturnType<typeof tunEp.decode>;

/** LPM key of bpfDSROptoutCIDRs: prefixlen 0..32 over the client address. */
export const dsrOptoutKey = struct('dsr_optout_key', { prefixlen: u32, addr: ip4 });
export type DsrOptoutKey = ReturnType<typeof dsrOptoutKey.decode>;

export const tunCfg = struct('tun_cfg', { mode: u32, local: ip4 });
export type TunCfg = ReturnType<typeof tunCfg.decode>;

export const ctTun = struct('ct_tun', {
  peer: ip4,
  local: ip4,
  backend: ip4,
  backendPort: be16,
  role: u8,
  mode: u8,
});
export type CtTun = ReturnType<typeof ctTun.decode>;
// ---- socket-level load balancing (bpf/sock.c) ----

export const sockRevKey = struct('sock_rev_key', {
  cookie: u64,
  addr: ip4,
  port: be16,
  proto: u8,
  pad: pad(1),
});
export type SockRevKey = ReturnType<typeof sockRevKey.decode>;

export const sockRevValue = struct('sock_rev_value', {
  addr: ip4,
  port: be16,
  pad: pad(2),
  svcId: u32,
});
export type SockRevValue = ReturnType<typeof sockRevValue.decode>;

/** enum sock_stat: the counters of bpfproxy_sock_stats, by index. */
export const SockStat = {
  CONNECT: 0,
  SENDMSG: 1,
  RECVMSG: 2,
  GETPEERNAME: 3,
  REFUSED: 4,
  NO_LOCAL: 5,
  LEFT_TO_TC: 6,
  REV_FULL: 7,
} as const;
