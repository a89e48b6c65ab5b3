/**
 * Codecs of the IPv6 maps (bpf/lib/types6.h), field by field; the values
 * without an address (fe_value, slot_key) and every flag are codecs.ts's.
 * Addresses are RFC 5952 text ("2001:db8::1"), so an IPv6 key decodes to
 * the same shape as its IPv4 twin (FeKey, BackendValue, ...): the
 * reconciler handles both families with one code path (family-maps.ts).
 */
import { readIpv6, writeIpv6 } from '../../net/ip6.js';
import { be16, be32, ip4, nested, pad, struct, u32, u64, u8, withDefault, type Field } from './struct.js';

export const ip6: Field<string> = {
  size: 16,
  align: 4,
  read: (b, o) => readIpv6(b, o),
  write: (b, o, v) => writeIpv6(b, o, v),
};

export const fe6Key = struct('fe6_key', {
  addr: ip6,
  port: be16,
  proto: u8,
  pad: pad(1),
});

export const backend6 = struct('backend6', {
  addr: ip6,
  port: be16,
  flags: u8,
  pad: pad(1),
});

export const affinity6Key = struct('affinity6_key', {
  svcId: u32,
  pad: pad(4),
  client: ip6,
});

export const affinity6Value = struct('affinity6_value', {
  backend: nested(backend6),
  lastUsedNs: u64,
});

export const nodeIp6Key = struct('node_ip6_key', {
  addr: ip6,
});

/** LPM key: prefixlen counts the 32 service-port-id bits plus the client prefix. */
export const lbSrc6Key = struct('lb_src6_key', {
  prefixlen: u32,
  svcId: be32,
  addr: ip6,
});

/** LPM key of the IPv6 ipcache (bpf/lib/policy6.h): prefixlen 0..128 over addr; value: codecs.ts ipcacheValue. */
export const ipcache6Key = struct('ipcache6_key', {
  prefixlen: u32,
  addr: ip6,
});

/** LPM key of the IPv6 pod source check: prefixlen counts the 32 ifindex bits plus the address prefix. */
export const podSrc6Key = struct('pod_src6_key', {
  prefixlen: u32,
  ifindex: be32,
  addr: ip6,
});

export const ct6Key = struct('ct6_key', {
  saddr: ip6,
  daddr: ip6,
  sport: be16,
  dport: be16,
  proto: u8,
  pad: pad(3),
});

const ct6ValueFields = {
  expiresNs: u64,
  createdNs: u64,
  natSaddr: ip6,
  natDaddr: ip6,
  natSport: be16,
  natDport: be16,
  dir: u8,
  state: u8,
  flags: u8,
  pad: pad(1),
  svcId: u32,
  polGen: withDefault(u32, 0),
};
export const ct6Value = struct('ct6_value', {
  ...ct6ValueFields,
  /**
   * struct ct_fwd: the TC hooks' forwarding cache (bpf/lib/fib.h). The
   * agent never reads it and writes zeros (nothing cached: the next packet
   * of the flow looks its route up).
   */
  fwd: pad(24),
});

/** struct ct6_value before the forwarding cache (64 bytes): read once to carry pinned IPv6 conntrack over an upgrade. */
export const ct6ValueNoFwd = struct('ct6_value', ct6ValueFields);

/** Socket-level LB of native IPv6 sockets (bpf/sock.c): decodes to the IPv4 twin's shape (SockRevKey). */
export const sockRev6Key = struct('sock_rev6_key', {
  cookie: u64,
  addr: ip6,
  port: be16,
  proto: u8,
  pad: pad(1),
  pad2: pad(4),
});

export const sockRev6Value = struct('sock_rev6_value', {
  addr: ip6,
  port: be16,
  pad: pad(2),
  svcId: u32,
});

// ---- Tunnel/DSR for IPv6 services (bpf/lib/tunnel6.h): IPv6 endpoints and clients, IPv4 nodes ----

/** bpfproxy_tun6_eps key: an IPv6 endpoint on another node (value: codecs.ts tunEp, the node's IPv4 address). */
export const tun6EpKey = struct('tun6_ep_key', { addr: ip6 });

/** LPM key of bpfDSROptoutCIDRs' IPv6 CIDRs: prefixlen 0..128; decodes to the IPv4 twin's shape (DsrOptoutKey). */
export const dsr6OptoutKey = struct('dsr6_optout_key', { prefixlen: u32, addr: ip6 });

/** bpfproxy_ct6_tun value: as codecs.ts ctTun, the endpoint an IPv6 address (the nodes stay IPv4). */
export const ct6Tun = struct('ct6_tun', {
  peer: ip4,
  local: ip4,
  backend: ip6,
  backendPort: be16,
  role: u8,
  mode: u8,
});
