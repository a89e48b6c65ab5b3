/**
 * What the tunnel (bpfExternalServiceMode Tunnel / DSR) needs to know about
 * the cluster: the other nodes' addresses, from which VXLAN is accepted,
 * and for each endpoint on another node the address of its node, where the
 * ingress node sends it. Pure functions over domain objects.
 *
 * Mixed versions: a node whose bpfproxy decapsulates says so on its Node
 * object (DECAP_ANNOTATION, written by the agent when its programs are
 * attached; in manifest-directory mode the Node file carries it). Endpoints
 * on a node that does not say so (an older bpfproxy, kube-proxy, a node
 * handed back) are reached with SNAT, as before the tunnel existed, so a
 * rolling upgrade needs no SNAT phase.
 *
 * The tunnel runs between the nodes' IPv4 InternalIPs whatever the
 * service's family (bpf/lib/tunnel6.h carries IPv6 inside): IPv6
 * InternalIPs are no tunnel addresses. IPv6 endpoints are tunnelled only
 * to nodes that also say DECAP_FORMAT6 (their kernel decapsulates IPv6 from
 * IPv4, and their bpfproxy serves it); the others' are SNATed.
 */
import type { EndpointSlice, Node } from './types.js';

/** The Node annotation listing the tunnel formats the node's bpfproxy decapsulates (comma-separated). */
export const DECAP_ANNOTATION = 'bpfproxy.io/decap';
/** Our format: VXLAN UDP 4789, VNIs 0x627078/0x627079, inner Ethernet (bpf/lib/tunnel.h). */
export const DECAP_FORMAT = 'vxlan-v1';

/** The same tunnel carrying IPv6 services (inner Ethernet type 0x86dd, bpf/lib/tunnel6.h). */
export const DECAP_FORMAT6 = 'vxlan-v1-ipv6';

const says = (n: Node, format: string): boolean => (n.decap ?? '').split(',').some((f) => f.trim() === format);

/** Whether the node's bpfproxy says it decapsulates our tunnel. */
export const decapsulates = (n: Node): boolean => says(n, DECAP_FORMAT);

/** Whether it says so for IPv6 services too. */
export const decapsulates6 = (n: Node): boolean => decapsulates(n) && says(n, DECAP_FORMAT6);

/** Addresses here are checked already (sources/convert.ts): IPv6 ones are the ones with a colon. */
const isIPv4 = (a: string): boolean => !a.includes(':');

/**
 * The address a node is reached at through the tunnel: its first IPv4
 * InternalIP (an IPv6-first dual-stack node lists its IPv6 one first).
 */
export const tunnelAddressOf = (n: Node): string | undefined => n.internalIPs.find(isIPv4);

/** Every IPv4 InternalIP of every node but this one: the sources VXLAN is taken from. */
export function peerAddresses(nodes: Iterable<Node>, self: string): string[] {
  const out = new Set<string>();
  for (const n of nodes) if (n.name !== self) for (const a of n.internalIPs) if (isIPv4(a)) out.add(a);
  return [...out].sort();
}

/**
 * Endpoint address -> its node's tunnel address, for endpoints on other
 * nodes whose Node is known with an InternalIP and says it decapsulates
 * (decapsulates()). An endpoint without a nodeName, on a node not (yet)
 * seen, or on one that does not decapsulate, is left out: flows to it are
 * SNATed, as before. So are IPv6 endpoints on nodes that do not say
 * decapsulates6().
 */
export function endpointNodes(
  slices: Iterable<EndpointSlice>,
  nodeOf: (name: string) => Node | undefined,
  self: string,
): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of slices) {
    for (const e of s.endpoints) {
      if (!e.nodeName || e.nodeName === self) continue;
      const n = nodeOf(e.nodeName);
      const at = n && decapsulates(n) ? tunnelAddressOf(n) : undefined;
      if (!n || !at) continue;
      const six = decapsulates6(n);
      for (const a of e.addresses) if (isIPv4(a) || six) out.set(a, at);
    }
  }
  return out;
}
