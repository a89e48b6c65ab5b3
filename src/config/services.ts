/**
 * What a Service may claim on this node: the node-port range, which
 * addresses externalIPs and LoadBalancer ingress IPs may take, and how many
 * frontends one Service may fan out to. Agent flags, with kube-proxy's and
 * the API server's names and defaults where they have one.
 */
import { isIPv4, isIPv6 } from '../net/ip.js';
import { cidr6Contains, cidrContains, intToIpv4, ipv4ToInt, parseCidr4, parseCidr6Masked, type Cidr4 } from '../model/addresses.js';

export interface PortRange {
  /** inclusive */
  min: number;
  max: number;
}

export interface ServicePolicy {
  /** --service-node-port-range: nodePort and healthCheckNodePort must fall in it */
  nodePortRange: PortRange;
  /** --external-ip-cidrs: externalIPs and LoadBalancer ingress IPs must fall in one; undefined = any */
  externalIPCidrs?: readonly Cidr4[];
  /** --allow-node-address-external-ips: let an externalIP or LoadBalancer IP be one of this node's addresses */
  allowNodeAddressExternalIPs: boolean;
  /** --max-frontends-per-service: frontends (address, port, protocol) one Service may have on a node */
  maxFrontendsPerService: number;
  /** --nodeport-addresses: which of the node's addresses NodePort answers on; undefined = all of them */
  nodePortAddresses?: NodePortAddresses;
}

/**
 * kube-proxy's --nodeport-addresses. all: every address of the node (the
 * default, as kube-proxy's iptables mode); primary: the node's primary
 * IPv4 address (kube-proxy 1.29+: the Node object's InternalIP, else its
 * ExternalIP); cidrs: the node's addresses inside one of them. IPv6 CIDRs
 * are accepted and kept for an IPv6 datapath; they select no IPv4 address.
 */
export type NodePortAddresses = { kind: 'all' } | { kind: 'primary' } | { kind: 'cidrs'; cidrs: readonly Cidr4[]; ipv6: readonly string[] };

/**
 * "primary", or comma-separated CIDRs ("192.168.0.0/24,10.0.0.0/8"), or
 * empty (all addresses). Like kube-proxy: a bare address is not a CIDR,
 * host bits are masked, "primary" stands alone. Throws naming the value.
 */
export function parseNodePortAddresses(s: string): NodePortAddresses {
  const parts = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (parts.length === 0) return { kind: 'all' };
  if (parts.includes('primary')) {
    if (parts.length > 1) throw new Error(`"${s}": "primary" cannot be combined with CIDRs`);
    return { kind: 'primary' };
  }
  const cidrs: Cidr4[] = [];
  const ipv6: string[] = [];
  for (const p of parts) {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(p);
    if (m && isIPv6(m[1]!) && Number(m[2]) <= 128) {
      ipv6.push(p);
      continue;
    }
    if (!m || !isIPv4(m[1]!) || Number(m[2]) > 32) {
      throw new Error(`"${p}" is not a CIDR such as 192.168.0.0/24 (or the single value "primary")`);
    }
    const bits = Number(m[2]);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    const base = (ipv4ToInt(m[1]!) & mask) >>> 0;
    cidrs.push({ text: `${intToIpv4(base)}/${bits}`, base, bits });
  }
  return { kind: 'cidrs', cidrs, ipv6 };
}

export function formatNodePortAddresses(n: NodePortAddresses | undefined): string {
  if (!n || n.kind === 'all') return '';
  if (n.kind === 'primary') return 'primary';
  return [...n.cidrs.map((c) => c.text), ...n.ipv6].join(',');
}

/**
 * The node addresses NodePort answers on: of `addrs` (the node's own), the
 * ones --nodeport-addresses selects. `primary` is the node's primary IPv4
 * address where known; it counts only when it is one of `addrs` (NodePort
 * cannot answer on an address the node does not have).
 */
export function nodePortAddressesOf(n: NodePortAddresses | undefined, addrs: readonly string[], primary?: string): string[] {
  if (!n || n.kind === 'all') return [...addrs];
  if (n.kind === 'primary') return primary !== undefined && addrs.includes(primary) ? [primary] : [];
  const v6 = n.ipv6.map((c) => parseCidr6Masked(c)).filter((c) => c !== undefined);
  return addrs.filter((a) => (a.includes(':') ? v6.some((c) => cidr6Contains(c, a)) : n.cidrs.some((c) => cidrContains(c, a))));
}

export const DEFAULT_NODE_PORT_RANGE: PortRange = { min: 30000, max: 32767 };
export const DEFAULT_MAX_FRONTENDS_PER_SERVICE = 1024;

export const DEFAULT_SERVICE_POLICY: ServicePolicy = {
  nodePortRange: DEFAULT_NODE_PORT_RANGE,
  allowNodeAddressExternalIPs: false,
  maxFrontendsPerService: DEFAULT_MAX_FRONTENDS_PER_SERVICE,
};

/**
 * The API server's --service-node-port-range syntax: "30000-32767",
 * "30000+2767" (base and size) or a single port.
 */
export function parsePortRange(s: string): PortRange {
  const t = s.trim();
  const m = /^(\d+)(?:([-+])(\d+))?$/.exec(t);
  if (!m) throw new Error(`node port range "${s}" is not "min-max" (e.g. 30000-32767)`);
  const min = Number(m[1]);
  const max = m[2] === undefined ? min : m[2] === '-' ? Number(m[3]) : min + Number(m[3]);
  if (min < 1 || max > 65535 || min > max) throw new Error(`node port range "${s}": ports must be 1-65535 and min <= max`);
  return { min, max };
}

export const formatPortRange = (r: PortRange): string => `${r.min}-${r.max}`;

/** "203.0.113.0/24,198.51.100.0/24"; empty = no restriction (undefined). */
export function parseCidrList(s: string): Cidr4[] | undefined {
  const parts = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (parts.length === 0) return undefined;
  return parts.map((p) => parseCidr4(p, isIPv4));
}
