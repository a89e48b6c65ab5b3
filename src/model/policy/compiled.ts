/**
 * Compiled NetworkPolicy: what the policy model (src/model/policy/) hands to a
 * dataplane, independent of Kubernetes objects and of map layouts. The BPF
 * dataplane writes it into maps (src/dataplane/bpf/policy-*.ts); the vector
 * engine will read the same shape.
 *
 * Shape (Cilium's, without its label machinery):
 * - every address the node may see maps to one **identity** through a
 *   longest-prefix match (one map per family: IPv6 prefixes have ':' in
 *   their text, ::/0 is IDENTITY_WORLD6): pods (/32, /128) by (namespace labels, pod labels,
 *   deepest policy CIDR containing the address), each distinct ipBlock
 *   cidr/except prefix, this node's addresses (HOST) and everything else
 *   (WORLD, 0.0.0.0/0);
 * - every **local endpoint** (a pod on this node, not host-network) has an
 *   id, an isolation bit per direction, and a rule table keyed by
 *   {peer identity (0 = any peer), direction, protocol (0 = any), port prefix};
 *   an `endPort` range becomes a few port prefixes;
 * - a lookup is: identity of the peer, then the endpoint's table at the exact
 *   identity and at identity 0; deny wins over allow, then the longer port
 *   prefix; no match in an isolated direction denies.
 * - `generation` changes whenever any decision may change; conntrack caches
 *   the decision with the generation it was taken under and re-checks a flow
 *   when they differ.
 *
 * Decisions the model takes for the dataplane (src/model/policy/compile.ts):
 * - **HOST** needs no special case in the datapath: every endpoint whose
 *   ingress is isolated carries an allow entry {peer: each host identity,
 *   ingress, PROTO_ANY} with ruleId NODE_RULE_ID, so the node reaches its
 *   pods (kubelet probes) whatever the policies, and `bpfproxy policy` and
 *   the hit counters show it. Egress from a pod to the node's addresses is
 *   ordinary policy (ipBlock rules match them). This node's addresses, IPv4
 *   and IPv6, map to IDENTITY_HOST (the datapath passes TCP of no tracked
 *   flow from HOST); only when they fall under different policy prefixes
 *   does each further group (beyond the first IPv4 and the first IPv6
 *   address's) get an identity of its own (listed in `identities` like any
 *   other /32, allowed the same way). An ipBlock matches HOST by the node's
 *   addresses of its family; the tables have no family, so an egress rule
 *   that allows HOST allows its addresses of both.
 * - **ipBlock matches pod addresses** (as Calico does, and as the upstream
 *   e2e expects): a pod's identity includes the deepest policy prefix that
 *   contains its address.
 * - **Named ports** are resolved by the model: ingress ones against the
 *   endpoint's own container ports, egress ones against each destination
 *   identity's, so the datapath sees numbers only.
 * - Host-network pods are neither endpoints nor pod peers; they are seen by
 *   their node's address.
 */

export type PolicyDirection = 'ingress' | 'egress';

/** Reserved identities. Identities the model interns start at FIRST_DYNAMIC_IDENTITY. */
export const IDENTITY_ANY = 0;
/** Addresses no more specific entry claims (0.0.0.0/0). */
export const IDENTITY_WORLD = 1;
/** This node's own addresses: traffic from the node to its pods (probes) is always allowed. */
export const IDENTITY_HOST = 2;
/** IPv6 addresses no more specific entry claims (::/0): an IPv4 ipBlock never matches them, nor an IPv6 one IPv4's WORLD. */
export const IDENTITY_WORLD6 = 3;
export const FIRST_DYNAMIC_IDENTITY = 16;

/** The rule of the entries that let the node reach its pods (see HOST above): rules[0]. */
export const NODE_RULE_ID = 0;
/** PolicyRuleRef.policy of NODE_RULE_ID (no NetworkPolicy has this name: it is not namespace/name). */
export const NODE_RULE_POLICY = '(node)';

/** IP protocol numbers a rule may name; 0 = any protocol (a rule without ports). */
export const PROTO_ANY = 0;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_SCTP = 132;

/** One prefix of the identity LPM: `prefix` like "10.244.1.11/32". */
export interface IdentityEntry {
  prefix: string;
  identity: number;
  /** Set for a local endpoint's own address: its endpoint id (see EndpointPolicy.id). */
  endpoint?: number;
}

export interface PolicyRuleKey {
  /** IDENTITY_ANY: any peer. */
  peer: number;
  direction: PolicyDirection;
  /** PROTO_ANY: any protocol and port (then port and portPrefixLen are 0). */
  proto: number;
  /** The first port of the prefix. */
  port: number;
  /** 0..16: how many leading bits of port must match (16 = exactly port; 0 = any port). */
  portPrefixLen: number;
}

export interface PolicyRuleEntry extends PolicyRuleKey {
  verdict: 'allow' | 'deny';
  /**
   * Which policy rule this entry comes from (for hit counters, monitor,
   * trace): the PolicyRuleRef with this id. When several rules give one key,
   * the lowest id.
   */
  ruleId: number;
}

export interface EndpointPolicy {
  /** Small positive integer, stable for the pod's lifetime on this node (key of the per-endpoint table). */
  id: number;
  /** "namespace/name" of the pod. */
  pod: string;
  /** The pod's IPv4 and IPv6 addresses on this node (status.podIPs). */
  addresses: string[];
  /** Selected by a policy with this direction in its policyTypes. */
  ingressIsolated: boolean;
  egressIsolated: boolean;
  /**
   * Keys unique; in the canonical order of diff.ts compareRuleKeys (ingress
   * first, then peer, proto, port, prefix length). Endpoints selected by the
   * same policies share one list object: treat it as read-only.
   */
  entries: PolicyRuleEntry[];
}

/** Where a rule came from: a NetworkPolicy's n-th ingress or egress rule. */
export interface PolicyRuleRef {
  id: number;
  /** "namespace/name" of the NetworkPolicy. */
  policy: string;
  direction: PolicyDirection;
  /** Index in spec.ingress / spec.egress. */
  index: number;
}

export interface CompiledPolicy {
  /** Changes whenever any decision may change. Never 0 (0 in conntrack = "not checked"). */
  generation: number;
  identities: IdentityEntry[];
  endpoints: EndpointPolicy[];
  /**
   * Sorted by id. rules[0] is NODE_RULE_ID; the ids of policy rules are
   * small integers from 1, stable while the rule exists, and reused (lowest
   * first) after a rule is gone, so the list can have gaps: look a ruleId up
   * by id, not by position.
   */
  rules: PolicyRuleRef[];
}
