/**
 * One codec per map key/value, mirroring bpf/lib/types.h field by field
 * (test/codecs-btf.test.ts checks them against the object's BTF).
 */
import { MAGLEV_TABLE_SIZES } from '../../model/maglev.js';
import { be16, be32, bytes, chars, ip4, nested, pad, struct, u16, u32, u64, u8 } from './struct.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

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
export const CtFlags = { SNAT: 1, HAIRPIN: 2, EXTERNAL: 4, HOST_BE: 8 } as const;

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

export const ctValue = struct('ct_value', {
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
  pad2: pad(4),
});
export type CtValue = ReturnType<typeof ctValue.decode>;

export const reasonCounter = struct('reason_counter', {
  packets: u64,
  bytes: u64,
});
export type ReasonCounter = ReturnType<typeof reasonCounter.decode>;

/** u32 keys (svc_names, per-CPU array index) and u8 values (node_ips). */
export const u32Key = struct('__u32', { v: u32 });
export const u8Value = struct('__u8', { v: u8 });
