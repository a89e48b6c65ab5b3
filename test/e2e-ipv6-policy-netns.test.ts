/**
 * IPv6 NetworkPolicy with real traffic, in namespaces this test creates: a
 * node with two IPv6-only pods behind veths (bpfproxy_pod on ingress,
 * bpfproxy_to_pod on egress) and an external client behind an uplink (d0,
 * bpfproxy_data): test/helpers/node-netns.ts ipv6Node(), as test/e2e-ipv6-netns.test.ts. Policies are compiled from
 * Kubernetes objects and written by the map writer; the kernel's TCP and
 * UDP stacks answer (handshakes, replies, neighbour discovery for real).
 * Every probe has a timeout; the namespaces and servers go with the test.
 */
import t from 'tap';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { compilePolicy } from '../src/model/policy/compile.js';
import type { NetworkPolicy } from '../src/model/policy/types.js';
import { toNetworkPolicy, toPod } from '../src/sources/policy-convert.js';
import { be, fe } from './helpers/fixtures.js';
import { probe6, startEcho6 } from './helpers/echo6.js';
import { IPV6_NODE, ipv6Node } from './helpers/node-netns.js';
import { reasonCount } from './helpers/progrun.js';

const { node: NODE6, ext: EXT6, a: A, b: B } = IPV6_NODE;
const VIP = 'fd00:10:96::10';
/** a probe that must fail waits this long */
const DENIED_MS = 800;

const netpol = (name: string, spec: Record<string, unknown>): NetworkPolicy => {
  const r = toNetworkPolicy({ metadata: { name, namespace: 'x' }, spec });
  if (r.problems.length) throw new Error(JSON.stringify(r.problems));
  return r.value!;
};

const pods = [
  toPod({ metadata: { name: 'a', namespace: 'x', labels: { app: 'a' } }, spec: { nodeName: 'n1' }, status: { podIPs: [{ ip: A }] } })
    .value!,
  toPod({
    metadata: { name: 'b', namespace: 'x', labels: { app: 'b' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { podIPs: [{ ip: B }] },
  }).value!,
];

const compile = (policies: NetworkPolicy[]) =>
  compilePolicy({
    pods,
    namespaces: [{ name: 'x', labels: { 'kubernetes.io/metadata.name': 'x' } }],
    policies,
    node: { name: 'n1', addresses: [NODE6] },
  }).compiled;

t.test('IPv6 NetworkPolicy with real traffic: IPv6-only pods, service and direct flows, external client', async (t) => {
  const { a, b, ext, dp } = await ipv6Node(t, 'bpx6p');
  const rec = new BpfReconciler(dp.maps);
  t.same(
    rec.syncService('x/b', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(B, 8080)]),
      fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)]),
      fe('NodePort', '::', 30080, 'TCP', [be(B, 8080)]),
    ]).problems,
    [],
  );
  rec.setNodeAddresses([NODE6]);
  await startEcho6(b, 'b', 60_000);
  const w = new PolicyMapWriter(dp.maps);

  const bIn = netpol('b-in', {
    podSelector: { matchLabels: { app: 'b' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'a' } } }], ports: [{ protocol: 'TCP', port: 'http' }] }],
  });
  t.same(w.apply(compile([bIn])).problems, [], 'b isolated for ingress: TCP 8080 from pods app=a only');

  const svc = probe6(a, 'tcp', VIP, 80);
  t.same([svc.ok, svc.pod, svc.peer], [true, 'b', A], `a -> [${VIP}]:80 -> b:8080: allowed after DNAT, replies come back`);
  const direct = probe6(a, 'tcp', B, 8080);
  t.same([direct.ok, direct.pod], [true, 'b'], 'a -> b:8080 directly: allowed');
  const deniedBefore = reasonCount(dp, 'policy-denied');
  const udp = probe6(a, 'udp', VIP, 53, DENIED_MS);
  t.equal(udp.ok, false, 'a -> service UDP 53 -> b:5353: denied (TCP 8080 only)');
  const np = probe6(ext, 'tcp', NODE6, 30080, DENIED_MS);
  t.equal(np.ok, false, 'external client -> NodePort -> b:8080: denied (not a pod app=a)');
  t.ok(reasonCount(dp, 'policy-denied') >= deniedBefore + 2, 'the denials counted as policy-denied');
  t.equal(reasonCount(dp, 'policy-ipv6'), 0, 'nothing fell back to policy-ipv6 (both pods are known by their IPv6 address)');

  const withBlock = netpol('b-ext', {
    podSelector: { matchLabels: { app: 'b' } },
    ingress: [{ from: [{ ipBlock: { cidr: '2001:db8:1::/64', except: ['2001:db8:1::200/128'] } }], ports: [{ port: 8080 }] }],
  });
  t.same(w.apply(compile([bIn, withBlock])).problems, [], 'an IPv6 ipBlock added');
  const np2 = probe6(ext, 'tcp', NODE6, 30080);
  t.same([np2.ok, np2.pod, np2.peer], [true, 'b', EXT6], 'external client in the block -> NodePort -> b: allowed, client address kept');
});
