/**
 * The upstream NetworkPolicy e2e suite (k/k test/e2e/network/netpol/
 * network_policy.go) re-expressed as a table: each case is policies (as
 * Kubernetes objects), optional steps that change the cluster, and the
 * expected 9×9 reachability per port/protocol, built as upstream builds it.
 * Cases upstream runs on fewer pods are widened to all nine (x/c, y/c, z/c
 * included), and cases of our own cover what upstream leaves out (named
 * ports meaning different numbers, endPort, policyTypes defaults, empty vs
 * missing, all four matchExpressions operators, namespace label changes).
 *
 * Every matrix is checked three ways: the incremental compile of both nodes
 * (compilers kept across steps), a compile from scratch, and the oracle
 * (test/helpers/policy-oracle.ts, an independent reading of the API docs).
 * A failing case prints expected vs got as grids.
 */
import t, { type Test } from 'tap';
import {
  ALL_PODS,
  Cluster,
  explain,
  matrixDiff,
  matrixOf,
  mismatches,
  netpol,
  oracleMatrix,
  podIP,
  podObj,
  Reach,
  sameDecisions,
  type Proto,
} from './helpers/policy-cluster.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- Kubernetes objects, read untyped

// Thousands of compilations (a loaded CI box may take minutes): more than tap's default 30 s when run alone.
t.setTimeout(300_000);

interface Probe {
  port: number;
  proto: Proto;
  reach: Reach;
}

interface Step {
  /** What changes before the probes (none for the first step). */
  change?: (c: Cluster) => void;
  probes: Probe[];
}

interface Case {
  name: string;
  policies: Obj[];
  steps: Step[];
}

const NS_LABEL = 'kubernetes.io/metadata.name';
const all = () => new Reach(true);
const tcp = (port: number, reach: Reach): Probe => ({ port, proto: 'TCP', reach });
const udp = (port: number, reach: Reach): Probe => ({ port, proto: 'UDP', reach });
const sctp = (port: number, reach: Reach): Probe => ({ port, proto: 'SCTP', reach });
const one = (...probes: Probe[]): Step[] => [{ probes }];

/** A policy selecting pod=<pod> (or all pods when pod is undefined). */
const pol = (ns: string, name: string, pod: string | undefined, spec: Obj) =>
  netpol(ns, name, { podSelector: pod ? { matchLabels: { pod } } : {}, ...spec });

const nsIs = (ns: string) => ({ matchLabels: { [NS_LABEL]: ns } });

const upstream: Case[] = [
  {
    name: "should support a 'default-deny-ingress' policy",
    policies: [pol('x', 'deny-ingress', undefined, { policyTypes: ['Ingress'], ingress: [] })],
    steps: one(tcp(80, all().expectPeer({}, { ns: 'x' }, false))),
  },
  {
    name: "should support a 'default-deny-all' policy",
    policies: [pol('x', 'deny-all', undefined, { policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] })],
    steps: one(tcp(80, all().expectPeer({}, { ns: 'x' }, false).expectPeer({ ns: 'x' }, {}, false))),
  },
  {
    name: 'should enforce policy to allow traffic from pods within server namespace based on PodSelector',
    policies: [pol('x', 'x-a-allows-x-b', 'a', { ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] })],
    steps: one(tcp(80, all().expectAllIngress('x/a', false).expect('x/b', 'x/a', true))),
  },
  {
    name: 'should enforce policy to allow ingress traffic for a target',
    policies: [
      pol('x', 'deny-all', undefined, { policyTypes: ['Ingress'], ingress: [] }),
      pol('x', 'allow-all-to-a', 'a', { ingress: [{ from: [{ podSelector: {}, namespaceSelector: {} }] }] }),
    ],
    steps: one(tcp(80, all().expectPeer({}, { ns: 'x' }, false).expectAllIngress('x/a', true))),
  },
  {
    name: 'should enforce policy to allow ingress traffic from pods in all namespaces',
    policies: [pol('x', 'allow-from-another-ns', 'a', { ingress: [{ from: [{ namespaceSelector: { matchLabels: {} } }] }] })],
    steps: one(tcp(80, all())),
  },
  {
    name: 'should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector',
    policies: [pol('x', 'allow-client-a-via-ns-selector', 'a', { ingress: [{ from: [{ namespaceSelector: nsIs('y') }] }] })],
    steps: one(tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false))),
  },
  {
    name: 'should enforce policy based on PodSelector with MatchExpressions',
    policies: [
      pol('x', 'x-a-allows-x-b', 'a', {
        ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b'] }] } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectAllIngress('x/a', false).expect('x/b', 'x/a', true))),
  },
  {
    name: 'should enforce policy based on NamespaceSelector with MatchExpressions',
    policies: [
      pol('x', 'allow-ns-y-match-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: NS_LABEL, operator: 'In', values: ['y'] }] } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false))),
  },
  {
    name: 'should enforce policy based on PodSelector or NamespaceSelector',
    policies: [
      pol('x', 'allow-ns-y-match-selector', 'a', {
        ingress: [
          {
            from: [
              { namespaceSelector: { matchExpressions: [{ key: NS_LABEL, operator: 'NotIn', values: ['x'] }] } },
              { podSelector: { matchLabels: { pod: 'b' } } },
            ],
          },
        ],
      }),
    ],
    steps: one(tcp(80, all().expect('x/c', 'x/a', false))),
  },
  {
    name: 'should enforce policy based on PodSelector and NamespaceSelector',
    policies: [
      pol('x', 'allow-ns-y-podselector-and-nsselector', 'a', {
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchExpressions: [{ key: NS_LABEL, operator: 'NotIn', values: ['x'] }] },
                podSelector: { matchLabels: { pod: 'b' } },
              },
            ],
          },
        ],
      }),
    ],
    steps: one(tcp(80, all().expectAllIngress('x/a', false).expect('y/b', 'x/a', true).expect('z/b', 'x/a', true))),
  },
  {
    name: 'should enforce policy based on Multiple PodSelectors and NamespaceSelectors',
    policies: [
      pol('x', 'allow-ns-y-z-pod-b-c', 'a', {
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchExpressions: [{ key: NS_LABEL, operator: 'NotIn', values: ['x'] }] },
                podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['b', 'c'] }] },
              },
            ],
          },
        ],
      }),
    ],
    steps: one(
      tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expect('y/a', 'x/a', false).expect('z/a', 'x/a', false)),
    ),
  },
  {
    name: 'should enforce policy based on any PodSelectors',
    policies: [
      pol('x', 'allow-ns-x-pod-b-c', 'a', {
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }, { podSelector: { matchLabels: { pod: 'c' } } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectAllIngress('x/a', false).expect('x/b', 'x/a', true).expect('x/c', 'x/a', true))),
  },
  {
    name: 'should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
    policies: [
      pol('x', 'allow-ns-y-pod-a-via-namespace-pod-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectAllIngress('x/a', false).expect('y/a', 'x/a', true))),
  },
  {
    name: 'should enforce policy based on Ports',
    policies: [
      pol('x', 'allow-client-a-via-ns-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 81, protocol: 'TCP' }] }],
      }),
    ],
    steps: one(
      tcp(
        81,
        all()
          .expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false)
          .expectPeer({ ns: 'y' }, { ns: 'x', pod: 'a' }, true)
          .expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false),
      ),
      tcp(80, all().expectAllIngress('x/a', false)),
    ),
  },
  {
    name: 'should enforce multiple, stacked policies with overlapping podSelectors',
    policies: [
      pol('x', 'allow-client-a-via-ns-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 81, protocol: 'TCP' }] }],
      }),
    ],
    steps: [
      {
        probes: [
          tcp(81, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false)),
          tcp(80, all().expectAllIngress('x/a', false)),
        ],
      },
      {
        change: (c) =>
          c.addPolicy(
            pol('x', 'allow-client-a-via-ns-selector-80', 'a', {
              ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 80, protocol: 'TCP' }] }],
            }),
          ),
        probes: [
          tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false)),
        ],
      },
    ],
  },
  {
    name: 'should support allow-all policy',
    policies: [pol('x', 'allow-all', undefined, { ingress: [{}] })],
    steps: one(tcp(80, all()), tcp(81, all())),
  },
  {
    name: 'should allow ingress access on one named port',
    policies: [pol('x', 'allow-all', undefined, { ingress: [{ ports: [{ port: 'serve-81-tcp' }] }] })],
    steps: one(tcp(81, all()), tcp(80, all().expectPeer({}, { ns: 'x' }, false))),
  },
  {
    name: 'should allow ingress access from namespace on one named port',
    policies: [
      pol('x', 'allow-client-a-via-ns-selector-80', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 'serve-80-tcp', protocol: 'TCP' }] }],
      }),
    ],
    steps: one(
      tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false)),
      tcp(81, all().expectAllIngress('x/a', false)),
    ),
  },
  {
    name: 'should allow egress access on one named port',
    policies: [pol('x', 'allow-egress', undefined, { policyTypes: ['Egress'], egress: [{ ports: [{ port: 'serve-80-tcp' }] }] })],
    steps: one(tcp(80, all()), tcp(81, all().expectPeer({ ns: 'x' }, {}, false))),
  },
  {
    name: 'should enforce updated policy',
    policies: [pol('x', 'allow-all-mutate-to-deny-all', undefined, { ingress: [{}] })],
    steps: [
      { probes: [tcp(81, all())] },
      {
        change: (c) => c.addPolicy(pol('x', 'allow-all-mutate-to-deny-all', undefined, { ingress: [] })),
        probes: [tcp(81, all().expectPeer({}, { ns: 'x' }, false))],
      },
    ],
  },
  {
    name: 'should allow ingress access from updated namespace',
    policies: [
      pol('x', 'allow-client-a-via-ns-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns2: 'updated' } } }] }],
      }),
    ],
    steps: [
      { probes: [tcp(80, all().expectAllIngress('x/a', false))] },
      {
        change: (c) => c.setNamespaceLabels('y', { ns: 'y', ns2: 'updated' }),
        probes: [tcp(80, all().expectAllIngress('x/a', false).expectPeer({ ns: 'y' }, { ns: 'x', pod: 'a' }, true))],
      },
    ],
  },
  {
    name: 'should allow ingress access from updated pod',
    policies: [
      pol('x', 'allow-client-a-via-pod-selector', 'a', {
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b', pod2: 'updated' } } }] }],
      }),
    ],
    steps: [
      { probes: [tcp(80, all().expectAllIngress('x/a', false))] },
      {
        change: (c) => c.setPodLabels('x/b', { pod: 'b', pod2: 'updated' }),
        probes: [tcp(80, all().expectAllIngress('x/a', false).expect('x/b', 'x/a', true))],
      },
    ],
  },
  {
    name: 'should deny ingress from pods on other namespaces',
    policies: [pol('x', 'deny-empty-policy', undefined, { ingress: [{ from: [{ podSelector: { matchLabels: {} } }] }] })],
    steps: one(tcp(80, all().expectPeer({ ns: 'y' }, { ns: 'x' }, false).expectPeer({ ns: 'z' }, { ns: 'x' }, false))),
  },
  {
    name: 'should deny ingress access to updated pod',
    policies: [
      netpol('x', 'deny-ingress-via-label-selector', {
        podSelector: { matchLabels: { target: 'isolated' } },
        policyTypes: ['Ingress'],
        ingress: [],
      }),
    ],
    steps: [
      { probes: [tcp(80, all())] },
      { change: (c) => c.setPodLabels('x/a', { pod: 'a', target: 'isolated' }), probes: [tcp(80, all().expectAllIngress('x/a', false))] },
    ],
  },
  {
    name: 'should deny egress from pods based on PodSelector',
    policies: [pol('x', 'deny-egress-pod-a', 'a', { policyTypes: ['Egress'], egress: [] })],
    steps: one(tcp(80, all().expectAllEgress('x/a', false))),
  },
  {
    name: 'should deny egress from all pods in a namespace',
    policies: [pol('x', 'deny-egress-ns-x', undefined, { policyTypes: ['Egress'], egress: [] })],
    steps: one(tcp(80, all().expectPeer({ ns: 'x' }, {}, false))),
  },
  {
    name: 'should work with Ingress, Egress specified together',
    policies: [
      pol('x', 'allow-client-a-via-pod-selector', 'a', {
        policyTypes: ['Egress', 'Ingress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
        egress: [{ ports: [{ port: 80 }] }],
      }),
    ],
    steps: one(
      tcp(80, all().expectAllIngress('x/a', false).expect('x/b', 'x/a', true)),
      tcp(81, all().expectAllIngress('x/a', false).expectAllEgress('x/a', false).expect('x/b', 'x/a', true)),
    ),
  },
  {
    name: 'should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)',
    policies: [
      pol('x', 'allow-to-ns-y-pod-a', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: nsIs('y'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
      pol('y', 'allow-from-xa-on-ya-match-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('x'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
      pol('y', 'allow-from-xa-on-yb-match-selector', 'b', {
        ingress: [{ from: [{ namespaceSelector: nsIs('x'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
    ],
    steps: one(
      tcp(
        80,
        all()
          .expectPeer({ ns: 'x', pod: 'a' }, {}, false)
          .expectPeer({}, { ns: 'y', pod: 'a' }, false)
          .expectPeer({ ns: 'x', pod: 'a' }, { ns: 'y', pod: 'a' }, true)
          .expectPeer({}, { ns: 'y', pod: 'b' }, false),
      ),
    ),
  },
  {
    name: 'should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector',
    policies: [
      pol('x', 'allow-to-ns-y-pod-a', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: nsIs('y'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectAllEgress('x/a', false).expect('x/a', 'y/a', true))),
  },
  {
    name: 'should enforce ingress policy allowing any port traffic to a server on a specific protocol',
    policies: [pol('x', 'allow-ingress-by-proto', 'a', { ingress: [{ ports: [{ protocol: 'TCP' }] }] })],
    steps: one(tcp(80, all()), udp(80, all().expectAllIngress('x/a', false))),
  },
  {
    name: 'should enforce multiple ingress policies with ingress allow-all policy taking precedence',
    policies: [pol('x', 'allow-ingress-port-80', undefined, { ingress: [{ ports: [{ port: 80 }] }] })],
    steps: [
      { probes: [tcp(81, all().expectPeer({}, { ns: 'x' }, false))] },
      { change: (c) => c.addPolicy(pol('x', 'allow-ingress', undefined, { ingress: [{}] })), probes: [tcp(81, all())] },
    ],
  },
  {
    name: 'should enforce multiple egress policies with egress allow-all policy taking precedence',
    policies: [pol('x', 'allow-egress-port-80', undefined, { policyTypes: ['Egress'], egress: [{ ports: [{ port: 80 }] }] })],
    steps: [
      { probes: [tcp(81, all().expectPeer({ ns: 'x' }, {}, false))] },
      {
        change: (c) => c.addPolicy(pol('x', 'allow-egress', undefined, { policyTypes: ['Egress'], egress: [{}] })),
        probes: [tcp(81, all())],
      },
    ],
  },
  {
    name: 'should stop enforcing policies after they are deleted',
    policies: [pol('x', 'deny-all', undefined, { policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] })],
    steps: [
      { probes: [tcp(80, all().expectPeer({ ns: 'x' }, {}, false).expectPeer({}, { ns: 'x' }, false))] },
      { change: (c) => c.deletePolicy('x', 'deny-all'), probes: [tcp(80, all())] },
    ],
  },
  {
    name: 'should allow egress access to server in CIDR block',
    policies: [
      pol('x', 'allow-client-a-via-cidr-egress-rule', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: `${podIP('y', 'b')}/32` } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectAllEgress('x/a', false).expect('x/a', 'y/b', true))),
  },
  {
    name: 'should enforce except clause while egress access to server in CIDR block',
    policies: [
      pol('x', 'allow-client-a-via-cidr-egress-rule', 'a', {
        policyTypes: ['Egress'],
        // makeLargeCIDRForIP: the pod's address under a /4
        egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${podIP('x', 'b')}/32`] } }] }],
      }),
    ],
    steps: one(tcp(80, all().expect('x/a', 'x/b', false))),
  },
  {
    name: 'should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed',
    policies: [
      pol('x', 'allow-client-a-via-cidr-egress-rule', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/4', except: [`${podIP('x', 'b')}/32`] } }] }],
      }),
    ],
    steps: [
      { probes: [tcp(80, all().expect('x/a', 'x/b', false))] },
      {
        change: (c) =>
          c.addPolicy(
            pol('x', 'allow-client-a-via-cidr-egress-rule', 'a', {
              policyTypes: ['Egress'],
              egress: [{ to: [{ ipBlock: { cidr: `${podIP('x', 'b')}/32` } }] }],
            }),
          ),
        probes: [tcp(80, all().expectAllEgress('x/a', false).expect('x/a', 'x/b', true))],
      },
    ],
  },
  {
    name: 'should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector',
    policies: [pol('x', 'allow-egress-for-target', 'a', { policyTypes: ['Egress'], egress: [{}] })],
    steps: [
      { probes: [tcp(80, all())] },
      {
        change: (c) => c.addPolicy(pol('x', 'deny-ingress-via-label-selector', 'a', { policyTypes: ['Ingress'], ingress: [] })),
        probes: [tcp(80, all().expectAllIngress('x/a', false))],
      },
    ],
  },
  {
    name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
    policies: [
      pol('x', 'deny-ingress', undefined, { policyTypes: ['Ingress'], ingress: [] }),
      pol('x', 'allow-only-sctp-ingress-on-port-81', 'a', { ingress: [{ ports: [{ port: 81, protocol: 'SCTP' }] }] }),
    ],
    steps: one(
      tcp(81, all().expectPeer({}, { ns: 'x' }, false)),
      sctp(81, all().expectPeer({}, { ns: 'x' }, false).expectAllIngress('x/a', true)),
    ),
  },
  {
    name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
    policies: [pol('x', 'allow-only-sctp-ingress-on-port-80', 'a', { ingress: [{ ports: [{ port: 80, protocol: 'SCTP' }] }] })],
    steps: one(tcp(81, all().expectAllIngress('x/a', false))),
  },
  {
    name: 'should not allow access by TCP when a policy specifies only UDP',
    policies: [pol('x', 'allow-only-udp-ingress-on-port-81', 'a', { ingress: [{ ports: [{ port: 81, protocol: 'UDP' }] }] })],
    steps: one(tcp(81, all().expectAllIngress('x/a', false)), udp(81, all())),
  },
  {
    name: 'should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label',
    policies: [
      pol('x', 'allow-client-a-via-ns-selector-for-immutable-ns-label', 'a', { ingress: [{ from: [{ namespaceSelector: nsIs('y') }] }] }),
    ],
    steps: one(tcp(80, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false))),
  },
  {
    name: 'should enforce policy based on NamespaceSelector with MatchExpressions using default ns label',
    policies: [
      pol('x', 'allow-ns-y-match-selector-for-immutable-ns-label', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: { matchExpressions: [{ key: NS_LABEL, operator: 'NotIn', values: ['y'] }] } }] }],
      }),
    ],
    steps: one(tcp(80, all().expectPeer({ ns: 'x', pod: 'a' }, { ns: 'y' }, false))),
  },
  // "NetworkPolicy between server and client using UDP"
  {
    name: "UDP: should support a 'default-deny-ingress' policy",
    policies: [pol('x', 'deny-all', undefined, { policyTypes: ['Ingress'], ingress: [] })],
    steps: one(udp(80, all().expectPeer({}, { ns: 'x' }, false))),
  },
  {
    name: 'UDP: should enforce policy based on Ports',
    policies: [
      pol('x', 'allow-ingress-on-port-81-ns-x', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 81, protocol: 'UDP' }] }],
      }),
    ],
    steps: one(
      udp(81, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false)),
      tcp(81, all().expectAllIngress('x/a', false)),
    ),
  },
  {
    name: 'UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
    policies: [
      pol('x', 'allow-ns-y-pod-a-via-namespace-pod-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
    ],
    steps: one(udp(80, all().expectAllIngress('x/a', false).expect('y/a', 'x/a', true))),
  },
  // "NetworkPolicy between server and client using SCTP"
  {
    name: "SCTP: should support a 'default-deny-ingress' policy",
    policies: [pol('x', 'deny-all', undefined, { policyTypes: ['Ingress'], ingress: [] })],
    steps: one(sctp(80, all().expectPeer({}, { ns: 'x' }, false))),
  },
  {
    name: 'SCTP: should enforce policy based on Ports',
    policies: [
      pol('x', 'allow-ingress-on-port-81-ns-x', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 81, protocol: 'SCTP' }] }],
      }),
    ],
    steps: one(sctp(81, all().expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, false).expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false))),
  },
  {
    name: 'SCTP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector',
    policies: [
      pol('x', 'allow-ns-y-pod-a-via-namespace-pod-selector', 'a', {
        ingress: [{ from: [{ namespaceSelector: nsIs('y'), podSelector: { matchLabels: { pod: 'a' } } }] }],
      }),
    ],
    steps: one(sctp(80, all().expectAllIngress('x/a', false).expect('y/a', 'x/a', true))),
  },
];

/** Named ports with a different number per pod: "web" is 80 on a and b, 81 on c. */
const webPorts = (pod: string) => [
  { name: 'web', containerPort: pod === 'c' ? 81 : 80, protocol: 'TCP' },
  { name: 'other', containerPort: pod === 'c' ? 80 : 81, protocol: 'TCP' },
];
const withWebPorts = (c: Cluster) => {
  for (const key of ALL_PODS) {
    const [ns, pod] = key.split('/') as [string, string];
    c.pods.set(key, podObj(ns, pod, { ports: webPorts(pod) }));
  }
};

const ours: Array<Case & { setup?: (c: Cluster) => void }> = [
  {
    name: 'ingress named port resolves per destination pod: "web" is 80 on a and b, 81 on c',
    setup: withWebPorts,
    policies: [pol('x', 'allow-web', undefined, { ingress: [{ ports: [{ port: 'web' }] }] })],
    steps: one(tcp(80, all().expectAllIngress('x/c', false)), tcp(81, all().expectAllIngress('x/a', false).expectAllIngress('x/b', false))),
  },
  {
    name: 'egress named port resolves per destination pod: one rule, 80 towards a and b, 81 towards c',
    setup: withWebPorts,
    policies: [pol('x', 'egress-web', 'a', { policyTypes: ['Egress'], egress: [{ ports: [{ port: 'web' }] }] })],
    steps: one(
      tcp(80, all().expectPeer({ ns: 'x', pod: 'a' }, { pod: 'c' }, false)),
      tcp(81, all().expectPeer({ ns: 'x', pod: 'a' }, { pod: 'a' }, false).expectPeer({ ns: 'x', pod: 'a' }, { pod: 'b' }, false)),
    ),
  },
  {
    name: 'egress named port with peers: only the selected destinations, each with its own number',
    setup: withWebPorts,
    policies: [
      pol('x', 'egress-web-y', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: nsIs('y') }], ports: [{ port: 'web' }] }],
      }),
    ],
    steps: one(
      tcp(80, all().expectAllEgress('x/a', false).expect('x/a', 'y/a', true).expect('x/a', 'y/b', true)),
      tcp(81, all().expectAllEgress('x/a', false).expect('x/a', 'y/c', true)),
    ),
  },
  {
    name: 'named port with a protocol the container port does not have matches nothing',
    policies: [pol('x', 'udp-name', 'a', { ingress: [{ ports: [{ port: 'serve-80-tcp', protocol: 'UDP' }] }] })],
    steps: one(tcp(80, all().expectAllIngress('x/a', false)), udp(80, all().expectAllIngress('x/a', false))),
  },
  {
    name: 'endPort: 80..81 allows both ports of TCP only',
    policies: [pol('x', 'range', 'a', { ingress: [{ ports: [{ port: 80, endPort: 81 }] }] })],
    steps: one(tcp(80, all()), tcp(81, all()), udp(80, all().expectAllIngress('x/a', false))),
  },
  {
    name: 'endPort: 81..1000 leaves 80 out; egress 1..80 leaves 81 out',
    policies: [
      pol('x', 'range', 'a', { ingress: [{ ports: [{ port: 81, endPort: 1000 }] }] }),
      pol('y', 'egress-range', 'b', { policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 1, endPort: 80 }] }] }),
    ],
    steps: one(
      tcp(80, all().expectAllIngress('x/a', false).expectAllEgress('y/b', false)),
      tcp(81, all().expectAllEgress('y/b', false)),
      udp(80, all().expectAllIngress('x/a', false)),
      udp(81, all().expectAllIngress('x/a', false).expectAllEgress('y/b', false)),
    ),
  },
  {
    name: 'policyTypes default: egress rules make it Egress too; `egress: []` does not',
    policies: [
      pol('x', 'with-egress', 'a', { ingress: [{}], egress: [{ ports: [{ port: 80 }] }] }),
      pol('y', 'empty-egress', 'a', { ingress: [{}], egress: [] }),
    ],
    steps: one(tcp(80, all()), tcp(81, all().expectAllEgress('x/a', false))),
  },
  {
    name: 'policyTypes [Egress] ignores ingress rules and does not isolate ingress',
    policies: [
      pol('x', 'egress-only', 'a', {
        policyTypes: ['Egress'],
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'zzz' } } }] }],
        egress: [],
      }),
    ],
    steps: one(tcp(80, all().expectAllEgress('x/a', false))),
  },
  {
    name: 'empty vs missing: `from: []` and `ports: []` mean everything, like missing; `ingress: []` nothing',
    policies: [
      pol('x', 'from-empty', 'a', { ingress: [{ from: [], ports: [] }] }),
      pol('x', 'no-rules', 'b', { ingress: [] }),
      pol('y', 'missing', 'a', { ingress: [{}] }),
    ],
    steps: one(tcp(80, all().expectAllIngress('x/b', false)), udp(81, all().expectAllIngress('x/b', false))),
  },
  {
    name: 'podSelector {} in a peer: every pod of the policy namespace; namespaceSelector {}: every namespace',
    policies: [
      pol('x', 'same-ns', 'a', { ingress: [{ from: [{ podSelector: {} }] }] }),
      pol('y', 'all-ns-pod-c', 'a', { ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { pod: 'c' } } }] }] }),
    ],
    steps: one(
      tcp(
        80,
        all()
          .expectAllIngress('x/a', false)
          .expectPeer({ ns: 'x' }, { ns: 'x', pod: 'a' }, true)
          .expectAllIngress('y/a', false)
          .expectPeer({ pod: 'c' }, { ns: 'y', pod: 'a' }, true),
      ),
    ),
  },
  {
    name: 'matchExpressions Exists and DoesNotExist, on pods and namespaces',
    policies: [
      pol('x', 'exists', 'a', {
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchExpressions: [{ key: 'tier', operator: 'Exists' }] } }] }],
      }),
      pol('x', 'not-exists', 'b', {
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'DoesNotExist' }] } }] }],
      }),
    ],
    steps: [
      {
        change: (c) => {
          c.setPodLabels('y/c', { pod: 'c', tier: 'web' });
          c.setPodLabels('z/a', { pod: 'a', tier: '' });
          c.setNamespaceLabels('z', { ns: 'z', team: 'blue' });
        },
        probes: [
          tcp(
            80,
            all()
              .expectAllIngress('x/a', false)
              .expect('y/c', 'x/a', true)
              .expect('z/a', 'x/a', true)
              .expectPeer({ ns: 'z' }, { ns: 'x', pod: 'b' }, false),
          ),
        ],
      },
    ],
  },
  {
    name: 'ipBlock matches pod addresses, with except, on ingress',
    policies: [
      pol('x', 'cidr-in', 'a', {
        ingress: [{ from: [{ ipBlock: { cidr: '10.244.1.0/24', except: [`${podIP('y', 'a')}/32`, '10.244.1.30/31'] } }] }],
      }),
    ],
    // a and b pods are 10.244.1.x (node1), c pods 10.244.2.x; y/a (.21) and z/a (.31, in .30/31) excepted
    steps: one(
      tcp(
        80,
        all()
          .expectAllIngress('x/a', false)
          .expectPeer({ pod: 'a' }, { ns: 'x', pod: 'a' }, true)
          .expect('x/b', 'x/a', true)
          .expect('y/b', 'x/a', true)
          .expect('z/b', 'x/a', true)
          .expect('y/a', 'x/a', false)
          .expect('z/a', 'x/a', false),
      ),
    ),
  },
  {
    name: 'ipBlock 0.0.0.0/0 (WORLD) covers every pod; a second policy carving a /32 changes nothing',
    policies: [
      pol('x', 'world', 'a', { policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0' } }] }] }),
      pol('y', 'carve', 'a', {
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: [`${podIP('z', 'c')}/32`] } }] }],
      }),
    ],
    steps: one(tcp(80, all().expect('y/a', 'z/c', false))),
  },
  {
    name: 'namespace relabelled so a NotIn selector stops matching it, then a pod moves out of a selected label',
    policies: [
      pol('x', 'not-in', 'a', {
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['prod'] }] } }] }],
      }),
    ],
    steps: [
      { probes: [tcp(80, all())] },
      {
        change: (c) => c.setNamespaceLabels('z', { ns: 'z', env: 'prod' }),
        probes: [tcp(80, all().expectPeer({ ns: 'z' }, { ns: 'x', pod: 'a' }, false))],
      },
      { change: (c) => c.setNamespaceLabels('z', { ns: 'z', env: 'dev' }), probes: [tcp(80, all())] },
      {
        change: (c) => c.setPodLabels('x/a', { pod: 'moved' }),
        probes: [tcp(80, all())],
      },
    ],
  },
];

function runCase(t: Test, cs: Case & { setup?: (c: Cluster) => void }) {
  const c = new Cluster();
  cs.setup?.(c);
  for (const p of cs.policies) c.addPolicy(p);
  cs.steps.forEach((step, i) => {
    step.change?.(c);
    const problems = c.compile();
    t.same(problems, [], `step ${i}: the objects convert without problems`);
    const fresh = c.compileFresh();
    for (const probe of step.probes) {
      const title = `step ${i} ${probe.proto}/${probe.port}`;
      const got = matrixOf(c.compiled, probe.port, probe.proto);
      const bad = mismatches(probe.reach.m, got);
      if (bad.length) {
        t.comment(matrixDiff(probe.reach.m, got, `${cs.name}, ${title}`));
        const why = bad.map((pair) => explain(c.compiled, ...(pair.split(' → ') as [string, string]), probe.port, probe.proto));
        t.fail(`${title}: ${bad.length} pairs wrong (grid above)`, { diagnostic: true, decisions: why });
      } else t.pass(`${title}: matrix as expected`);
      const oracle = oracleMatrix(c, probe.port, probe.proto);
      const badOracle = mismatches(probe.reach.m, oracle);
      if (badOracle.length) {
        t.comment(matrixDiff(probe.reach.m, oracle, `${cs.name}, ${title}, oracle`));
        t.fail(`${title}: the oracle disagrees with the expectation (grid above)`);
      }
      t.same(sameDecisions(c.compiled, fresh, [probe.port], [probe.proto]), [], `${title}: incremental and fresh compiles decide alike`);
    }
  });
}

t.test('upstream e2e cases', async (t) => {
  for (const cs of upstream) t.test(cs.name, async (t) => runCase(t, cs));
});

t.test('cases of our own', async (t) => {
  for (const cs of ours) t.test(cs.name, async (t) => runCase(t, cs));
});

// ---------------------------------------------------------------------------
// Generated cases, after network-policy-api's policy-assistant generator
// (cmd/policy-assistant/pkg/generator: target, peers, ports, protocols,
// 2-peer combinations, ipBlock with except, named ports, endPort, label
// changes). Expectations come from the oracle; one pair of compilers runs
// through all of them in sequence, so every case is also a transition
// from the previous one for the incremental path.

const PROBES: Array<[number, Proto]> = [
  [80, 'TCP'],
  [81, 'TCP'],
  [80, 'UDP'],
  [81, 'UDP'],
  [80, 'SCTP'],
];

const podSel = {
  empty: {},
  podA: { matchLabels: { pod: 'a' } },
  podC: { matchLabels: { pod: 'c' } },
  podAB: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a', 'b'] }] },
  notB: { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['b'] }] },
};
const nsSel = {
  empty: {},
  nsX: { matchLabels: { ns: 'x' } },
  nsXY: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['x', 'y'] }] },
  nsYZ: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y', 'z'] }] },
  nsZDefault: { matchLabels: { [NS_LABEL]: 'z' } },
};
// policy-assistant: MakeCIDRFromZeroes(podIP, 8) and (podIP, 4), around y/b
const cidr24 = `${podIP('y', 'b').split('.').slice(0, 3).join('.')}.0/24`;
const cidr28 = '10.244.1.16/28';

const peers: Array<[string, Obj]> = [
  ['empty pods + nil ns', { podSelector: podSel.empty }],
  ['pods by label + nil ns', { podSelector: podSel.podC }],
  ['nil pods + empty ns', { namespaceSelector: nsSel.empty }],
  ['empty pods + empty ns', { podSelector: podSel.empty, namespaceSelector: nsSel.empty }],
  ['pods by label + empty ns', { podSelector: podSel.podC, namespaceSelector: nsSel.empty }],
  ['nil pods + ns by label', { namespaceSelector: nsSel.nsX }],
  ['empty pods + ns by label', { podSelector: podSel.empty, namespaceSelector: nsSel.nsX }],
  ['pods by label + ns by label', { podSelector: podSel.podC, namespaceSelector: nsSel.nsX }],
  ['pods by NotIn + ns by In', { podSelector: podSel.notB, namespaceSelector: nsSel.nsYZ }],
  ['ns by default label', { namespaceSelector: nsSel.nsZDefault }],
  ['simple ipblock', { ipBlock: { cidr: cidr24 } }],
  ['ipblock with except', { ipBlock: { cidr: cidr24, except: [cidr28] } }],
];

const portSets: Array<[string, Obj[] | undefined]> = [
  ['all ports', undefined],
  ['TCP 80', [{ protocol: 'TCP', port: 80 }]],
  ['UDP 81', [{ protocol: 'UDP', port: 81 }]],
  ['named serve-81-tcp', [{ port: 'serve-81-tcp' }]],
  ['named serve-80-udp', [{ protocol: 'UDP', port: 'serve-80-udp' }]],
  ['TCP 80..81', [{ port: 80, endPort: 81 }]],
  ['SCTP, any port', [{ protocol: 'SCTP' }]],
  ['TCP 81 + UDP 80', [{ port: 81 }, { protocol: 'UDP', port: 80 }]],
];

function generated(): Array<{ name: string; policies: Obj[]; change?: (c: Cluster) => void }> {
  const out: Array<{ name: string; policies: Obj[]; change?: (c: Cluster) => void }> = [];
  const rule = (dir: 'ingress' | 'egress', ps: Obj[] | undefined, ports: Obj[] | undefined) => ({
    [dir === 'ingress' ? 'from' : 'to']: ps,
    ...(ports ? { ports } : {}),
  });
  const policy = (dir: 'ingress' | 'egress', r: Obj, ns = 'x', sel: Obj = podSel.podA) =>
    netpol(ns, 'gen', { podSelector: sel, policyTypes: [dir === 'ingress' ? 'Ingress' : 'Egress'], [dir]: [r] });
  for (const dir of ['ingress', 'egress'] as const) {
    out.push({ name: `${dir}: empty peers`, policies: [policy(dir, rule(dir, [], undefined))] });
    out.push({
      name: `${dir}: deny all`,
      policies: [netpol('x', 'gen', { podSelector: {}, policyTypes: [dir === 'ingress' ? 'Ingress' : 'Egress'] })],
    });
    for (const [pn, p] of peers) out.push({ name: `${dir}: ${pn}`, policies: [policy(dir, rule(dir, [p], undefined))] });
    for (let i = 0; i < peers.length; i++) {
      for (let j = i + 1; j < peers.length; j++) {
        out.push({
          name: `${dir}, 2-peer: ${peers[i]![0]}, ${peers[j]![0]}`,
          policies: [policy(dir, rule(dir, [peers[i]![1], peers[j]![1]], undefined))],
        });
      }
    }
    for (const [qn, q] of portSets) {
      out.push({ name: `${dir}: ports ${qn}`, policies: [policy(dir, rule(dir, undefined, q))] });
      out.push({ name: `${dir}: ports ${qn}, peers pods c in x`, policies: [policy(dir, rule(dir, [peers[7]![1]], q))] });
      out.push({ name: `${dir}: ports ${qn}, ipblock with except`, policies: [policy(dir, rule(dir, [peers[11]![1]], q))] });
    }
    for (const ns of NAMESPACES_) {
      for (const [sn, s] of Object.entries(podSel)) {
        out.push({
          name: `${dir}: target ${ns}, pod selector ${sn}`,
          policies: [policy(dir, rule(dir, [peers[1]![1]], [{ port: 80 }]), ns, s)],
        });
      }
    }
  }
  // Both directions, several policies, and label changes under them.
  const both = [
    netpol('x', 'in', { podSelector: podSel.podAB, ingress: [{ from: [peers[8]![1]], ports: [{ port: 'serve-80-tcp' }] }] }),
    netpol('x', 'out', { podSelector: podSel.notB, policyTypes: ['Egress'], egress: [{ to: [peers[5]![1], peers[11]![1]] }] }),
    netpol('y', 'in', { podSelector: {}, ingress: [{ from: [peers[2]![1]], ports: [{ port: 80, endPort: 81 }] }] }),
  ];
  out.push({ name: 'three policies, two namespaces', policies: both });
  out.push({ name: 'three policies; y/b becomes pod=c', policies: both, change: (c) => c.setPodLabels('y/b', { pod: 'c' }) });
  out.push({ name: 'three policies; z relabelled ns=x', policies: both, change: (c) => c.setNamespaceLabels('z', { ns: 'x' }) });
  out.push({ name: 'three policies; x/a loses its labels', policies: both, change: (c) => c.setPodLabels('x/a', {}) });
  out.push({
    name: 'three policies; labels back',
    policies: both,
    change: (c) => {
      c.setPodLabels('y/b', { pod: 'b' }).setPodLabels('x/a', { pod: 'a' }).setNamespaceLabels('z', { ns: 'z' });
    },
  });
  return out;
}
const NAMESPACES_ = ['x', 'y', 'z'];

function checkAgainstOracle(t: Test, c: Cluster, name: string): void {
  let wrong = 0;
  for (const [port, proto] of PROBES) {
    const got = matrixOf(c.compiled, port, proto);
    const want = oracleMatrix(c, port, proto);
    const bad = mismatches(want, got);
    if (bad.length) {
      wrong++;
      t.comment(matrixDiff(want, got, `${name}, ${proto}/${port} (expected: the oracle)`));
      const why = bad.map((pair) => explain(c.compiled, ...(pair.split(' → ') as [string, string]), port, proto));
      t.fail(`${name} ${proto}/${port}: ${bad.length} pairs differ from the oracle`, { diagnostic: true, decisions: why });
    }
  }
  if (!wrong) t.pass(`${name}: ${PROBES.length} matrices as the oracle`);
}

t.test('generated cases against the oracle, one incremental compiler through all', async (t) => {
  const c = new Cluster();
  const cases = generated();
  for (const cs of cases) {
    c.policies.clear();
    for (const p of cs.policies) c.addPolicy(p);
    cs.change?.(c);
    t.same(c.compile(), [], `${cs.name}: converts without problems`);
    checkAgainstOracle(t, c, cs.name);
  }
  t.comment(`${cases.length} generated cases, ${cases.length * PROBES.length} matrices of 81 flows`);
});

/** Deterministic PRNG (mulberry32), so a failing walk can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('random walk: policies and labels change step by step, incremental compile vs oracle and vs fresh compile', async (t) => {
  const seed = Number(process.env.POLICY_WALK_SEED ?? 20261123);
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const c = new Cluster();
  const labelsPool: Array<Record<string, string>> = [
    { pod: 'a' },
    { pod: 'b' },
    { pod: 'c' },
    { pod: 'a', tier: 'web' },
    { tier: 'db' },
    {},
  ];
  const nsLabelsPool = (ns: string): Array<Record<string, string>> => [{ ns }, { ns, env: 'prod' }, { ns: pick(NAMESPACES_) }, {}];
  const randomPolicy = (i: number) => {
    const dirs = pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']]);
    const mk = () => {
      const n = Math.floor(r() * 3);
      const ps = n === 0 && r() < 0.5 ? undefined : Array.from({ length: n }, () => pick(peers)[1]);
      const q = pick(portSets)[1];
      return { ...(ps ? { from: ps, to: ps } : {}), ...(q ? { ports: q } : {}) };
    };
    const rules = () => Array.from({ length: Math.floor(r() * 3) }, mk);
    const split = (rs: Obj[], dir: 'from' | 'to') =>
      rs.map(({ from, to, ...rest }) => ({ ...rest, ...(dir === 'from' ? { from } : { to }) }));
    return netpol(pick(NAMESPACES_), `p${i}`, {
      podSelector: pick(Object.values(podSel)),
      policyTypes: dirs,
      ingress: split(rules(), 'from'),
      egress: split(rules(), 'to'),
    });
  };
  const steps = Number(process.env.POLICY_WALK_STEPS ?? 150);
  for (let step = 0; step < steps; step++) {
    const what = r();
    let did: string;
    if (what < 0.35) {
      const p = randomPolicy(Math.floor(r() * 6));
      c.addPolicy(p);
      did = `set policy ${p.metadata.namespace}/${p.metadata.name}`;
    } else if (what < 0.5 && c.policies.size) {
      const key = pick([...c.policies.keys()]);
      c.policies.delete(key);
      did = `delete policy ${key}`;
    } else if (what < 0.8) {
      const key = pick(ALL_PODS);
      const labels = pick(labelsPool);
      c.setPodLabels(key, labels);
      did = `pod ${key} labels ${JSON.stringify(labels)}`;
    } else {
      const ns = pick(NAMESPACES_);
      const labels = pick(nsLabelsPool(ns));
      c.setNamespaceLabels(ns, labels);
      did = `namespace ${ns} labels ${JSON.stringify(labels)}`;
    }
    c.compile();
    const name = `seed ${seed} step ${step} (${did})`;
    let ok = true;
    for (const [port, proto] of PROBES) {
      const got = matrixOf(c.compiled, port, proto);
      const want = oracleMatrix(c, port, proto);
      const bad = mismatches(want, got);
      if (bad.length) {
        ok = false;
        t.comment(matrixDiff(want, got, `${name}, ${proto}/${port} (expected: the oracle)`));
        t.fail(`${name} ${proto}/${port}: ${bad.length} pairs differ from the oracle`, {
          diagnostic: true,
          decisions: bad.map((pair) => explain(c.compiled, ...(pair.split(' → ') as [string, string]), port, proto)),
          policies: [...c.policies.values()],
        });
      }
    }
    const diff = sameDecisions(c.compiled, c.compileFresh(), [80, 81], ['TCP', 'UDP']);
    if (diff.length) {
      ok = false;
      t.fail(`${name}: the incremental compile decides otherwise than a fresh one`, { diagnostic: true, flows: diff.slice(0, 20) });
    }
    if (!ok) break;
  }
  t.pass(`${steps} steps of seed ${seed} agree with the oracle and a fresh compile`);
});
