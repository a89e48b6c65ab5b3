/**
 * What a Service may claim on this node: the node-port range, which
 * addresses externalIPs and LoadBalancer ingress IPs may take, and how many
 * frontends one Service may fan out to. Agent flags, with kube-proxy's and
 * the API server's names and defaults where they have one.
 */
import { isIPv4 } from '../net/ip.js';
import { parseCidr4, type Cidr4 } from '../model/addresses.js';

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
