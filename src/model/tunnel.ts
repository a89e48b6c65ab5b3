/**
 * What the tunnel (bpfExternalServiceMode Tunnel / DSR) needs to know about
 * the cluster: the other nodes' addresses, from which VXLAN is accepted,
 * and for each endpoint on another node the address of its node, where the
 * ingress node sends it. Pure functions over domain objects.
 */
import type { EndpointSlice, Node } from './types.js';

/** The address a node is reached at through the tunnel: its first IPv4 InternalIP. */
export const tunnelAddressOf = (n: Node): string | undefined => n.internalIPs[0];

/** Every InternalIP of every node but this one: the sources VXLAN is taken from. */
export function peerAddresses(nodes: Iterable<Node>, self: string): string[] {
  const out = new Set<string>();
  for (const n of nodes) if (n.name !== self) for (const a of n.internalIPs) out.add(a);
  return [...out].sort();
}

/**
 * Endpoint address -> its node's tunnel address, for endpoints on other
 * nodes whose Node is known with an InternalIP. An endpoint without a
 * nodeName, or on a node not (yet) seen, is left out: flows to it are
 * SNATed, as before.
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
      const at = n && tunnelAddressOf(n);
      if (!at) continue;
      for (const a of e.addresses) out.set(a, at);
    }
  }
  return out;
}
