/** enum reason of bpf/lib/drop.h, in order, with what the operator is told. */
export const REASONS = [
  { name: 'none', verdict: 'pass', help: '' },
  { name: 'malformed', verdict: 'drop', help: 'truncated or inconsistent headers' },
  { name: 'no-endpoints', verdict: 'reject', help: 'service has no endpoints (TCP RST / ICMP port unreachable sent)' },
  { name: 'no-local-endpoints', verdict: 'drop', help: 'traffic policy Local and no endpoint on this node' },
  { name: 'ct-insert', verdict: 'drop', help: 'conntrack map update failed' },
  { name: 'nat-ports', verdict: 'drop', help: 'no free SNAT port towards the backend' },
  { name: 'backend-missing', verdict: 'drop', help: 'backend slot vanished during an update' },
  { name: 'reject-failed', verdict: 'drop', help: 'could not build the reject packet' },
  { name: 'rewrite-failed', verdict: 'drop', help: 'a packet rewrite helper failed' },
  { name: 'fragment', verdict: 'pass', help: 'non-first IP fragment, left to the stack' },
  { name: 'ttl', verdict: 'pass', help: 'TTL expired while forwarding, left to the stack' },
  { name: 'frag-needed', verdict: 'icmp', help: 'too big for the next hop (DF set): ICMP fragmentation-needed sent to the client' },
  {
    name: 'no-snat-source',
    verdict: 'drop',
    help: 'no source address for the SNAT towards a backend on another node: none in the routing table, or (kernel before 6.7) traffic to a LoadBalancer or external IP (see bpf/KERNEL_REQUIREMENTS.md)',
  },
  {
    name: 'ct-full',
    verdict: 'drop',
    help: 'conntrack map full: new flow refused, established flows keep their entries (raise bpfMapSizeConntrack)',
  },
  {
    name: 'ct-not-opening',
    verdict: 'pass',
    help: 'TCP packet without SYN to a service and no flow known: left to the kernel, no state created',
  },
  {
    name: 'spoofed',
    verdict: 'drop',
    help: "packet from a pod interface whose source address is not routed to that interface, or from outside with one of the node's own addresses as source",
  },
  {
    name: 'policy-denied',
    verdict: 'drop',
    help: 'network policy: no rule of an isolated endpoint allows the flow (or a rule denies it); see the per-rule hit counters',
  },
  {
    name: 'policy-no-table',
    verdict: 'drop',
    help: 'network policy: the endpoint is isolated but its rule table is missing (being replaced, or could not be written: see the agent log); denied, never allowed',
  },
  {
    name: 'policy-unknown-flow',
    verdict: 'drop',
    help: 'network policy: TCP packet without SYN of no flow known, to or from an isolated endpoint (a connection opened before the endpoint was isolated, or whose conntrack entry expired)',
  },
  {
    name: 'drain-new',
    verdict: 'pass',
    help: "draining (bpfEnabled=false): a new flow to a service, left to the kernel (kube-proxy's rules); flows already in bpfproxy's conntrack are still served",
  },
  {
    name: 'lb-source-range',
    verdict: 'drop',
    help: "new connection to a LoadBalancer IP from a client outside the Service's spec.loadBalancerSourceRanges",
  },
  {
    name: 'tun-forged',
    verdict: 'drop',
    help: "VXLAN with bpfproxy's VNI from an address that is no node's InternalIP (bpfExternalServiceMode Tunnel/DSR): a forged tunnel packet",
  },
  { name: 'tun-malformed', verdict: 'drop', help: "bpfproxy's VXLAN from a node, headers cut short or inconsistent (or a fragment)" },
  { name: 'tun-no-route', verdict: 'drop', help: "no route to the endpoint's node for the tunnel (bpfExternalServiceMode Tunnel/DSR)" },
  {
    name: 'tun-no-flow',
    verdict: 'drop',
    help: 'a packet that came through the tunnel for no flow this node knows, and that cannot open one (or for no external frontend here)',
  },
  {
    name: 'ct-stale-reply',
    verdict: 'pass',
    help: "a backend's SYN-ACK matched the reply entry of a closed service flow (reset or both FINs seen) whose SYN this node never translated: the client reused its source port to reach the backend directly (socket LB, or pod to pod) within the old flow's closing timeout; both entries removed, the SYN-ACK passed untranslated. Also a pod's UDP datagram sent from the source port of a live service flow straight to that flow's backend (UDP has no close): the old flow's entries removed, the datagram and its answers passed untranslated",
  },
  {
    name: 'policy-ipv6',
    verdict: 'drop',
    help: 'IPv6 (other than neighbour discovery) to or from a pod isolated by a NetworkPolicy in that direction (recognised by its IPv4 address) at an IPv6 address the policy maps do not know (not in its status.podIPs): failed closed',
  },
] as const;

export type ReasonName = (typeof REASONS)[number]['name'];
