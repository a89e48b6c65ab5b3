/**
 * NetworkPolicy domain types: what the policy model compiles, independent of
 * Kubernetes objects (src/sources/policy-convert.ts makes these from them,
 * validated as the API server would) and of map layouts (compiled.ts is what
 * the model hands on).
 *
 * Defaults are applied by the converter, so a domain object says exactly
 * what it means: every port has a protocol, every policy its policyTypes,
 * and "every peer" / "every port" are spelled 'any', never as an empty
 * list. An empty list means what it says: nothing. It is what a rule is left
 * with when validation removed all of its peers or ports (fail closed).
 */

export type PolicyProtocol = 'TCP' | 'UDP' | 'SCTP';

/** Label key → value. Read with labelOf (a key may be "constructor"). */
export type Labels = Readonly<Record<string, string>>;

export function labelOf(labels: Labels, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}

/** The label the API server sets on every namespace to its name. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export interface ContainerPort {
  /** IANA_SVC_NAME; '' for an unnamed port. */
  name: string;
  port: number;
  protocol: PolicyProtocol;
}

export interface Pod {
  namespace: string;
  name: string;
  labels: Labels;
  /** IPv4 and IPv6 addresses from status.podIPs (or status.podIP); none before the pod has one or once it has terminated. */
  ips: string[];
  /** spec.nodeName; '' while unscheduled. */
  nodeName: string;
  /** spec.hostNetwork: such pods are not subject to policy and not pod peers (they are seen by their node's address). */
  hostNetwork: boolean;
  /** Container ports of spec.containers and of restartable (sidecar) init containers. */
  containerPorts: ContainerPort[];
}

export interface Namespace {
  name: string;
  /** Including kubernetes.io/metadata.name = name. */
  labels: Labels;
}

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface LabelRequirement {
  key: string;
  operator: SelectorOperator;
  /** In, NotIn: one or more; Exists, DoesNotExist: none. */
  values: readonly string[];
}

/**
 * A label selector: every requirement must hold (matchLabels k: v is the
 * requirement k In [v]). No requirement selects everything.
 */
export interface LabelSelector {
  requirements: readonly LabelRequirement[];
}

export const SELECT_ALL: LabelSelector = { requirements: [] };

/**
 * A NetworkPolicyPeer.
 * - pods: podSelector and/or namespaceSelector. Without a namespaceSelector
 *   the peer is in the policy's own namespace; without a podSelector it is
 *   every pod of the selected namespaces.
 * - ipBlock: addresses in cidr and in none of except (normalised IPv4 or IPv6
 *   prefixes such as "10.0.0.0/8"; except entries are strict subsets of cidr).
 */
export type PolicyPeer =
  | { kind: 'pods'; namespaceSelector?: LabelSelector; podSelector?: LabelSelector }
  | { kind: 'ipBlock'; cidr: string; except: readonly string[] };

export interface PolicyPort {
  protocol: PolicyProtocol;
  /** A number, a container port name, or undefined: every port of the protocol. */
  port?: number | string;
  /** With a numeric port: the range port..endPort. */
  endPort?: number;
}

export interface PolicyRule {
  /** Index in spec.ingress / spec.egress (for rule references, counters and logs). */
  index: number;
  /** 'any': `from`/`to` missing or empty, every peer. A list: those peers only (empty: none). */
  peers: 'any' | readonly PolicyPeer[];
  /** 'any': `ports` missing or empty, every port and protocol. A list: those only (empty: none). */
  ports: 'any' | readonly PolicyPort[];
}

export interface NetworkPolicy {
  namespace: string;
  name: string;
  /** Which pods of the namespace the policy applies to. */
  podSelector: LabelSelector;
  /** The directions the policy isolates its pods in (spec.policyTypes, defaulted). */
  ingressIsolation: boolean;
  egressIsolation: boolean;
  /** Rules of spec.ingress / spec.egress; a direction without isolation has its rules ignored. */
  ingress: readonly PolicyRule[];
  egress: readonly PolicyRule[];
}

export const podKey = (p: { namespace: string; name: string }): string => `${p.namespace}/${p.name}`;
export const policyKey = podKey;
