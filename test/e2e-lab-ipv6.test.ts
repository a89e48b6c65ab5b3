/**
 * End to end over IPv6 in the dual-stack namespace lab: two nodes with their
 * own agents serving the example manifests (web RequireDualStack, dns
 * PreferDualStack, each with an IPv6 EndpointSlice), real TCP and UDP to the
 * IPv6 cluster IPs and to the NodePort on the nodes' IPv6 addresses, across
 * nodes; IPv4 served beside it. Everything is created with a unique prefix
 * and removed at the end, pass or fail; every probe is bounded in count and
 * time.
 */
import t from 'tap';
import { probe, type ProbeAttempt } from '../lab/lab.js';
import { labWithAgents } from './helpers/lab-agents.js';

const WEB6 = 'fd00:10:96::10';
const DNS6 = 'fd00:10:96::53';
const HAIRPIN6 = 'fd62:7078:2a01::1';

/** The address the echo server saw: "[ip]:port" (IPv6) or "ip:port". */
const peerIp = (peer: string): string => (peer.startsWith('[') ? peer.slice(1, peer.indexOf(']')) : peer.slice(0, peer.lastIndexOf(':')));
const answered = (a: ProbeAttempt[]) => a.filter((x) => !x.ok).map((x) => x.error);
const byPod = (a: ProbeAttempt[]) => {
  const m = new Map<string, Set<string>>();
  for (const x of a) if (x.ok) m.set(x.pod!, (m.get(x.pod!) ?? new Set()).add(peerIp(x.peer!)));
  return m;
};

t.test('dual-stack lab: IPv6 services with real traffic', async (t) => {
  const { lab } = await labWithAgents(t, { tag: 'bpx6e' });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const podC = n1.pods[2]!; // n1-c: no web endpoint, so never a hairpin
  const client = lab.client;

  t.test('IPv6 ClusterIP TCP from a pod reaches every endpoint on both nodes, pod address kept', async (t) => {
    const r = probe(podC.ns, 'tcp', WEB6, 80, 24, 2000);
    t.same(answered(r), [], 'every connection answered');
    const m = byPod(r);
    t.same([...m.keys()].sort(), ['n1-a', 'n1-b', 'n2-a'], 'all three IPv6 endpoints (P(one missed in 24) < 1e-4)');
    t.same([...new Set([...m.values()].flatMap((s) => [...s]))], [podC.ip6], `backends see the pod's own IPv6 address (${podC.ip6})`);
  });

  t.test('IPv6 ClusterIP from a pod on the other node', async (t) => {
    const from = n2.pods[1]!; // n2-b
    const r = probe(from.ns, 'tcp', WEB6, 80, 12, 2000);
    t.same(answered(r), [], 'every connection answered');
    t.ok(byPod(r).has('n1-a') || byPod(r).has('n1-b'), 'endpoints on node1 reached across the IPv6 route between nodes');
  });

  t.test('IPv6 ClusterIP UDP (PreferDualStack dns)', async (t) => {
    const from = n1.pods[0]!; // n1-a: no dns endpoint
    const r = probe(from.ns, 'udp', DNS6, 53, 12, 2000);
    t.same(answered(r), [], 'every datagram answered, from the service address (the socket is connected to it)');
    const m = byPod(r);
    t.ok(
      [...m.keys()].every((p) => p === 'n1-c' || p === 'n2-b'),
      `answered by the dns endpoints (${[...m.keys()].join(', ')})`,
    );
    t.same([...new Set([...m.values()].flatMap((s) => [...s]))], [from.ip6], 'the endpoint sees the pod address');
  });

  t.test("IPv6 NodePort from the client on node1's address: local endpoints see the client, the remote one the node", async (t) => {
    const r = probe(client.ns, 'tcp', n1.ip6!, 30080, 24, 2000);
    t.same(answered(r), [], 'every connection answered');
    const m = byPod(r);
    t.same([...m.keys()].sort(), ['n1-a', 'n1-b', 'n2-a'], 'all three endpoints');
    for (const p of ['n1-a', 'n1-b']) t.same([...(m.get(p) ?? [])], [client.ip6], `${p} (local) sees the client's IPv6 address`);
    t.same([...(m.get('n2-a') ?? [])], [n1.ip6], "n2-a (on node2) sees node1's IPv6 address: SNAT, so the reply comes back through node1");
  });

  t.test("IPv6 NodePort on node2's address", async (t) => {
    const r = probe(client.ns, 'tcp', n2.ip6!, 30080, 6, 2000);
    t.same(answered(r), [], 'every connection answered');
  });

  t.test('hairpin over IPv6: an endpoint reaching its own service', async (t) => {
    const self = n1.pods[0]!; // n1-a, a web endpoint
    const r = probe(self.ns, 'tcp', WEB6, 80, 12, 2000);
    t.same(answered(r), [], 'every connection answered');
    for (const [p, seen] of byPod(r))
      t.same([...seen], [p === self.name ? HAIRPIN6 : self.ip6], `${p} sees ${p === self.name ? 'the IPv6 hairpin address' : 'the pod'}`);
  });

  t.test('IPv4 is served beside it', async (t) => {
    const r = probe(podC.ns, 'tcp', '10.96.0.10', 80, 6, 2000);
    t.same(answered(r), [], 'IPv4 ClusterIP answered');
    t.same([...new Set([...byPod(r).values()].flatMap((s) => [...s]))], [podC.ip], 'with the IPv4 pod address');
  });
});
