/**
 * IPv6 NetworkPolicy and the IPv6 pod source check, through BPF_PROG_RUN
 * (the IPv6 node of test/helpers/progrun6.ts; the program runs with ctx
 * ifindex = d0, which plays the pod veth here):
 *
 *  - NetworkPolicy over IPv6 (bpf/lib/policy6.h): policies compiled from
 *    Kubernetes objects (src/sources/policy-convert.ts, the compiler) with
 *    pods' IPv6 addresses and IPv6 ipBlocks, written by the map writer into
 *    bpfproxy_ipcache6 and the shared rule tables: pod and namespace
 *    selectors, ipBlock with except, ports, egress, replies of allowed
 *    flows, service flows after DNAT, an IPv6-only pod, flows cut when a
 *    rule goes; neighbour discovery always passes;
 *  - failing closed: a pod isolated by its IPv4 address (bpfproxy_pod_addrs)
 *    sending from, or receiving at, an IPv6 address the ipcache does not
 *    know gets nothing but neighbour discovery (policy-ipv6), on tc_pod,
 *    tc_to_pod and IPv6 service traffic handed to it with bpf_redirect_peer;
 *  - the pod source check, IPv6 (bpf/lib/pod.h pod6_source_ok()): own
 *    addresses (routes pointing at the veth), link-local and :: pass,
 *    anything else is dropped as spoofed; no entry for the interface: not
 *    checked, as IPv4.
 */
import t, { type Test } from 'tap';
import {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  IDENTITY_WORLD6,
  PROTO_ANY,
  type CompiledPolicy,
  type EndpointPolicy,
} from '../src/model/policy/compiled.js';
import { compilePolicy } from '../src/model/policy/compile.js';
import type { NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { toNetworkPolicy, toPod } from '../src/sources/policy-convert.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { policyView } from '../src/cli/policy.js';
import { setMode } from '../src/dataplane/bpf/drain.js';
import { frame6, ICMP6, TCP, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { SCTP_CHUNK } from '../src/net/frames.js';
import { CtState } from '../src/dataplane/bpf/codecs.js';
import { ip } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { reasonCount } from './helpers/progrun.js';
import { CLIENT6, NODE6, POD6, progrun6Node, type Progrun6Node } from './helpers/progrun6.js';

const POD4 = '10.244.1.99'; // the IPv4 address of the pod behind d0
const PEER6 = 'fd00:10:244:1::20';
const CIP6 = 'fd00:10:96::10';
const BACKEND6 = 'fd00:10:244:1::11';

const policy = (generation: number, ep: Partial<EndpointPolicy> | undefined): CompiledPolicy => ({
  generation,
  identities: [
    { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
    { prefix: '192.0.2.11/32', identity: IDENTITY_HOST },
    { prefix: `${POD4}/32`, identity: 100, endpoint: 1 },
  ],
  endpoints: ep ? [{ id: 1, pod: 'x/pod', addresses: [POD4], ingressIsolated: false, egressIsolated: false, entries: [], ...ep }] : [],
  rules: [],
});

/** reserved word and target address (all of ND's messages but RS are at least this long) */
const NS_BODY = Buffer.alloc(20);
const tcp = (sport: number, flags: number = TCP.SYN, dport = 80): L4v6 => ({ proto: 'tcp', sport, dport, flags });
const nd = (type: number): L4v6 => ({ proto: 'icmp6', type, code: 0, body: type === ICMP6.RS ? Buffer.alloc(4) : NS_BODY });

interface Lab {
  node: Progrun6Node;
  w: PolicyMapWriter;
  run: (role: 'fromPod' | 'toPod' | 'fromData', f: Frame6Spec, l4: L4v6) => string;
  counted: (reason: string, fn: () => void) => number;
}

async function lab(t: Test): Promise<Lab> {
  const node = await progrun6Node(t);
  const w = new PolicyMapWriter(node.dp.maps);
  return {
    node,
    w,
    run: (role, f, l4) => node.runRaw(role, frame6(f, l4)).verdict,
    counted: (reason, fn) => {
      const before = reasonCount(node.dp, reason);
      fn();
      return reasonCount(node.dp, reason) - before;
    },
  };
}

t.test('IPv6 of a pod isolated by its IPv4 address, from an IPv6 address with no policy state: dropped but ND', async (t) => {
  const { node, w, run, counted } = await lab(t);
  node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
  const out = { src: POD6, dst: PEER6 }; // from the pod (tc_pod: its egress)
  const into = { src: PEER6, dst: POD6 }; // to the pod (tc_to_pod: its ingress)

  t.test('no policy written (as --network-policy=off): everything passes', async (t) => {
    t.equal(run('fromPod', out, tcp(1000)), 'pass');
    t.equal(run('toPod', into, tcp(1001)), 'pass');
    t.equal(reasonCount(node.dp, 'policy-ipv6'), 0, 'nothing counted');
  });

  t.test('isolated for both directions', async (t) => {
    t.same(w.apply(policy(1, { ingressIsolated: true, egressIsolated: true })).problems, []);
    t.equal(
      counted('policy-ipv6', () => t.equal(run('fromPod', out, tcp(1010)), 'drop', 'TCP from the pod: dropped')),
      1,
      'counted as policy-ipv6',
    );
    t.equal(
      counted('policy-ipv6', () => t.equal(run('toPod', into, tcp(1011)), 'drop', 'TCP to the pod: dropped')),
      1,
      'counted as policy-ipv6',
    );
    t.equal(run('fromPod', out, { proto: 'udp', sport: 1012, dport: 53 }), 'drop', 'UDP from the pod');
    t.equal(
      run('fromPod', out, { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0, body: Buffer.alloc(8) }),
      'drop',
      'ICMPv6 echo: not neighbour discovery',
    );
    const ndCases: Array<[string, 'fromPod' | 'toPod', Frame6Spec, L4v6]> = [
      ['neighbour solicitation from the pod', 'fromPod', { src: POD6, dst: 'ff02::1:ff00:20', hopLimit: 255 }, nd(ICMP6.NS)],
      ['neighbour advertisement to the pod', 'toPod', { src: 'fe80::1', dst: POD6, hopLimit: 255 }, nd(ICMP6.NA)],
      ['router solicitation from the pod', 'fromPod', { src: 'fe80::99', dst: 'ff02::2', hopLimit: 255 }, nd(ICMP6.RS)],
      ['router advertisement to the pod', 'toPod', { src: 'fe80::1', dst: 'ff02::1', hopLimit: 255 }, nd(ICMP6.RA)],
      ['DAD solicitation from ::', 'fromPod', { src: '::', dst: 'ff02::1:ff00:99', hopLimit: 255 }, nd(ICMP6.NS)],
      ['redirect to the pod', 'toPod', { src: 'fe80::1', dst: POD6, hopLimit: 255 }, nd(137)],
    ];
    for (const [what, role, f, l4] of ndCases) {
      t.equal(
        counted('policy-ipv6', () => t.equal(run(role, f, l4), 'pass', `${what}: passes`)),
        0,
        `${what}: not counted`,
      );
    }
  });

  t.test('isolated for ingress only: the egress side passes', async (t) => {
    t.same(w.apply(policy(2, { ingressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1020)), 'pass', 'from the pod: passes');
    t.equal(run('toPod', into, tcp(1021)), 'drop', 'to the pod: dropped');
  });

  t.test('isolated for egress only: the ingress side passes', async (t) => {
    t.same(w.apply(policy(3, { egressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1030)), 'drop', 'from the pod: dropped');
    t.equal(run('toPod', into, tcp(1031)), 'pass', 'to the pod: passes');
  });

  t.test('its IPv6 address known to the ipcache: its rules apply, not the fallback', async (t) => {
    const p = policy(4, { ingressIsolated: true, egressIsolated: true, addresses: [POD4, POD6] });
    p.identities.push({ prefix: '::/0', identity: IDENTITY_WORLD6 }, { prefix: `${POD6}/128`, identity: 100, endpoint: 1 });
    p.rules = [{ id: 1, policy: 'x/any-out', direction: 'egress', index: 0 }];
    p.endpoints[0]!.entries = [
      { peer: IDENTITY_ANY, direction: 'egress', proto: PROTO_ANY, port: 0, portPrefixLen: 0, verdict: 'allow', ruleId: 1 },
    ];
    t.same(w.apply(p).problems, []);
    t.equal(node.dp.maps.ipcache6.get({ prefixlen: 128, addr: POD6 })?.endpoint, 1, 'the writer put its /128 in bpfproxy_ipcache6');
    t.equal(
      counted('policy-ipv6', () => t.equal(run('fromPod', out, tcp(1040)), 'pass', 'egress allowed by its rule')),
      0,
    );
    t.equal(run('toPod', { src: PEER6, dst: POD6 }, tcp(80, TCP.SYN | TCP.ACK, 1040)), 'pass', 'the reply: its flow is tracked');
    t.equal(
      counted('policy-denied', () => t.equal(run('toPod', into, tcp(1041)), 'drop', 'ingress: no rule')),
      1,
      'counted as policy-denied',
    );
    t.equal(
      counted('policy-ipv6', () => t.equal(run('fromPod', { src: 'fd00:10:244:1::77', dst: PEER6 }, tcp(1042)), 'drop')),
      1,
      'another IPv6 source of that pod the ipcache does not know: fails closed',
    );
  });

  t.test('another pod isolated, this one not: passes', async (t) => {
    const other = policy(5, undefined);
    other.identities.push({ prefix: '10.244.1.50/32', identity: 101, endpoint: 2 });
    other.endpoints.push({ id: 2, pod: 'x/other', addresses: ['10.244.1.50'], ingressIsolated: true, egressIsolated: true, entries: [] });
    t.same(w.apply(other).problems, []);
    t.ok((node.dp.maps.polState.get({ v: 0 })?.isolated ?? 0) > 0, 'something is isolated');
    t.equal(run('fromPod', out, tcp(1050)), 'pass');
    t.equal(run('toPod', into, tcp(1051)), 'pass');
  });

  t.test('isolated, then policy turned off (the maps emptied): passes again', async (t) => {
    t.same(w.apply(policy(6, { ingressIsolated: true, egressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1060)), 'drop');
    t.same(w.apply({ generation: 7, identities: [], endpoints: [], rules: [] }).problems, []);
    t.equal(node.dp.maps.ipcache6.entries().length, 0, 'bpfproxy_ipcache6 emptied');
    t.equal(run('fromPod', out, tcp(1061)), 'pass', 'from the pod');
    t.equal(run('toPod', into, tcp(1062)), 'pass', 'to the pod');
  });

  t.test('standby (taking over): the pod veth ingress enforces nothing, as IPv4; its egress does', async (t) => {
    t.same(w.apply(policy(9, { ingressIsolated: true, egressIsolated: true })).problems, []);
    setMode(node.dp.maps, 'standby');
    t.equal(run('fromPod', out, tcp(1080)), 'pass', 'from the pod: passes');
    t.equal(run('toPod', into, tcp(1081)), 'drop', 'to the pod: dropped');
    setMode(node.dp.maps, 'serve');
    t.equal(run('fromPod', out, tcp(1082)), 'drop', 'serving again: dropped');
  });

  t.test('an interface with no pod address recorded (host-network, unknown): passes', async (t) => {
    t.same(w.apply(policy(8, { ingressIsolated: true, egressIsolated: true })).problems, []);
    node.dp.maps.podAddrs.delete({ ifindex: node.ifindex });
    t.equal(run('fromPod', out, tcp(1070)), 'pass');
    t.equal(run('toPod', into, tcp(1071)), 'pass');
    node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
    t.equal(run('toPod', into, tcp(1072)), 'drop', 'recorded again: dropped');
  });
});

t.test('IPv6 service traffic handed with bpf_redirect_peer to an isolated pod with no IPv6 policy state is dropped', async (t) => {
  const { node, w, run, counted } = await lab(t);
  t.same(node.rec.syncService('test/web6', [fe('ClusterIP', CIP6, 80, 'TCP', [be(BACKEND6, 8080)])]).problems, []);
  // A neighbour, so the FIB answers SUCCESS (bpf_redirect_peer) rather than NO_NEIGH (bpf_redirect_neigh, which
  // goes through the veth's egress program).
  ip(node.ns, '-6', 'neigh', 'add', BACKEND6, 'lladdr', '02:00:00:00:00:11', 'dev', 'd0', 'nud', 'permanent');
  node.dp.maps.podIfs.set({ ifindex: node.ifindex }, { v: 1 });
  node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
  t.equal(run('fromPod', { src: POD6, dst: CIP6 }, tcp(2000)), 'redirect', 'nothing isolated: redirected into the pod');
  t.same(w.apply(policy(1, { ingressIsolated: true })).problems, []);
  t.equal(
    counted('policy-ipv6', () => t.equal(run('fromPod', { src: POD6, dst: CIP6 }, tcp(2001)), 'drop', 'isolated for ingress: dropped')),
    1,
    'counted as policy-ipv6',
  );
  node.dp.maps.podIfs.delete({ ifindex: node.ifindex });
});

// ---------------------------------------------------------------------------
// Policies compiled from Kubernetes objects.

const WEB6 = BACKEND6; // x/web
const CLIENT_POD6 = POD6; // x/client
const OTHER6 = PEER6; // y/other (labelled app=client, but in namespace y)
const V6ONLY = 'fd00:10:244:1::30'; // x/v6only: no IPv4 address at all

const podOf = (ns: string, name: string, labels: Record<string, string>, ips: string[], nodeName = 'node1'): Pod =>
  toPod({
    metadata: { name, namespace: ns, labels },
    spec: { nodeName, containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIPs: ips.map((ip) => ({ ip })) },
  }).value!;

const netpol = (ns: string, name: string, spec: Record<string, unknown>): NetworkPolicy => {
  const r = toNetworkPolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec });
  if (r.problems.length) throw new Error(JSON.stringify(r.problems));
  return r.value!;
};

const POLICIES: NetworkPolicy[] = [
  netpol('x', 'web-in', {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [
      { from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080 }] },
      { from: [{ namespaceSelector: { matchLabels: { team: 'y' } } }], ports: [{ port: 9090 }] },
      { from: [{ ipBlock: { cidr: '2001:db8:1::/64', except: ['2001:db8:1::100/126'] } }], ports: [{ port: 'http' }] },
    ],
  }),
  netpol('x', 'client-out', {
    podSelector: { matchLabels: { app: 'client' } },
    policyTypes: ['Egress'],
    egress: [
      { to: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 8080 }] },
      { to: [{ ipBlock: { cidr: '2001:db8:2::/48' } }] },
    ],
  }),
  netpol('x', 'v6only-in', { podSelector: { matchLabels: { app: 'v6' } } }),
];

function compileV6(policies: NetworkPolicy[], seed?: CompiledPolicy): CompiledPolicy {
  return compilePolicy(
    {
      pods: [
        podOf('x', 'web', { app: 'web' }, ['10.244.1.11', WEB6]),
        podOf('x', 'client', { app: 'client' }, [POD4, CLIENT_POD6]),
        podOf('y', 'other', { app: 'client' }, [OTHER6]),
        podOf('x', 'v6only', { app: 'v6' }, [V6ONLY]),
        podOf('z', 'remote', { app: 'client' }, ['fd00:10:244:2::5'], 'node2'),
      ],
      namespaces: [
        { name: 'x', labels: { 'kubernetes.io/metadata.name': 'x', team: 'x' } },
        { name: 'y', labels: { 'kubernetes.io/metadata.name': 'y', team: 'y' } },
        { name: 'z', labels: { 'kubernetes.io/metadata.name': 'z', team: 'z' } },
      ],
      policies,
      node: { name: 'node1', addresses: ['192.0.2.11', NODE6] },
    },
    seed,
  ).compiled;
}

t.test('IPv6 NetworkPolicy compiled from objects: selectors, ipBlock with except, ports, egress, replies', async (t) => {
  const { node, w, run, counted } = await lab(t);
  const compiled = compileV6(POLICIES);
  t.same(w.apply(compiled).problems, []);
  const ep = (pod: string) => compiled.endpoints.find((e) => e.pod === pod)!;
  t.same(ep('x/v6only').addresses, [V6ONLY], 'an IPv6-only pod is an endpoint');
  t.equal(node.dp.maps.ipcache6.get({ prefixlen: 128, addr: V6ONLY })?.endpoint, ep('x/v6only').id, 'found by its IPv6 address');
  t.equal(node.dp.maps.ipcache6.get({ prefixlen: 0, addr: '::' })?.identity, IDENTITY_WORLD6, '::/0 is WORLD6');
  const view = policyView(node.dp.maps);
  const webView = view.endpoints.find((e) => e.pod === 'x/web')!;
  t.same(webView.addresses, ['10.244.1.11', WEB6], '`bpfproxy policy` shows both addresses, read back from both ipcaches');
  t.ok(
    webView.rules.some((r) => r.peerText.includes('2001:db8:1::/64') && r.ports === '8080' && r.rule === 'x/web-in ingress[2]'),
    '`bpfproxy policy` names the IPv6 block of a rule',
  );

  const denied = (what: string, role: 'fromPod' | 'toPod', f: Frame6Spec, l4: L4v6, reason = 'policy-denied') =>
    t.equal(
      counted(reason, () => t.equal(run(role, f, l4), 'drop', `${what}: dropped`)),
      1,
      `${what}: counted as ${reason}`,
    );

  t.test('pod selector and ports; the reply of an allowed flow passes both ways', async (t) => {
    t.equal(run('fromPod', { src: CLIENT_POD6, dst: WEB6 }, tcp(3000, TCP.SYN, 8080)), 'pass', 'x/client -> x/web:8080');
    t.equal(run('fromPod', { src: WEB6, dst: CLIENT_POD6 }, tcp(8080, TCP.SYN | TCP.ACK, 3000)), 'pass', 'its reply from x/web');
    t.equal(run('toPod', { src: WEB6, dst: CLIENT_POD6 }, tcp(8080, TCP.SYN | TCP.ACK, 3000)), 'pass', 'its reply into x/client');
    t.equal(run('toPod', { src: CLIENT_POD6, dst: WEB6 }, tcp(3000, TCP.ACK, 8080)), 'pass', 'the next packet into x/web');
    denied('x/client -> x/web:9090 (egress allows 8080 only)', 'fromPod', { src: CLIENT_POD6, dst: WEB6 }, tcp(3001, TCP.SYN, 9090));
  });

  t.test('namespace selector', async (t) => {
    t.equal(run('toPod', { src: OTHER6, dst: WEB6 }, tcp(3010, TCP.SYN, 9090)), 'pass', 'y/other -> x/web:9090 (namespace team=y)');
    denied('y/other -> x/web:8080 (app=client of another namespace)', 'toPod', { src: OTHER6, dst: WEB6 }, tcp(3011, TCP.SYN, 8080));
    denied('z/remote -> x/web:9090 (namespace z)', 'toPod', { src: 'fd00:10:244:2::5', dst: WEB6 }, tcp(3012, TCP.SYN, 9090));
  });

  t.test('ipBlock with except, named port', async (t) => {
    t.equal(run('toPod', { src: '2001:db8:1::104', dst: WEB6 }, tcp(3020, TCP.SYN, 8080)), 'pass', 'in the block: allowed on http (8080)');
    denied('in the block, another port', 'toPod', { src: '2001:db8:1::104', dst: WEB6 }, tcp(3021, TCP.SYN, 8081));
    denied('in its except (2001:db8:1::100/126)', 'toPod', { src: CLIENT6, dst: WEB6 }, tcp(3022, TCP.SYN, 8080));
    denied('outside the block', 'toPod', { src: '2001:db8:9::1', dst: WEB6 }, tcp(3023, TCP.SYN, 8080));
    denied('an IPv4-mapped look-alike is no member', 'toPod', { src: '::ffff:192.0.2.101', dst: WEB6 }, tcp(3024, TCP.SYN, 8080));
  });

  t.test('egress ipBlock; established replies; unknown flows', async (t) => {
    t.equal(run('fromPod', { src: CLIENT_POD6, dst: '2001:db8:2:5::1' }, tcp(3030, TCP.SYN, 443)), 'pass', 'x/client -> 2001:db8:2::/48');
    t.equal(run('toPod', { src: '2001:db8:2:5::1', dst: CLIENT_POD6 }, tcp(443, TCP.SYN | TCP.ACK, 3030)), 'pass', 'the reply');
    t.equal(run('fromPod', { src: CLIENT_POD6, dst: '2001:db8:2:5::1' }, tcp(3030, TCP.ACK, 443)), 'pass', 'established');
    denied(
      'x/client -> 2001:db8:3::1 (not in any egress rule)',
      'fromPod',
      { src: CLIENT_POD6, dst: '2001:db8:3::1' },
      tcp(3031, TCP.SYN, 443),
    );
    denied(
      'UDP x/client -> a pod of its egress rule, port 53 (8080 TCP only)',
      'fromPod',
      { src: CLIENT_POD6, dst: WEB6 },
      { proto: 'udp', sport: 3032, dport: 53 },
    );
    denied(
      'an ACK of no known flow into x/web',
      'toPod',
      { src: '2001:db8:1::104', dst: WEB6 },
      tcp(3033, TCP.ACK, 8080),
      'policy-unknown-flow',
    );
    t.equal(
      run(
        'fromPod',
        { src: CLIENT_POD6, dst: '2001:db8:2:5::1' },
        { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0, body: Buffer.alloc(8) },
      ),
      'pass',
      'ICMPv6 echo to the egress block (a rule without ports)',
    );
    denied(
      'ICMPv6 echo outside it',
      'fromPod',
      { src: CLIENT_POD6, dst: '2001:db8:3::1' },
      { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0, body: Buffer.alloc(8) },
    );
  });

  t.test('SCTP: an INIT opens a tracked flow as a SYN does; its replies and next chunks pass', async (t) => {
    const sctp = (sport: number, dport: number, chunk: number = SCTP_CHUNK.INIT, vtag = 0): L4v6 => ({
      proto: 'sctp',
      sport,
      dport,
      chunk,
      vtag,
    });
    const out = { src: CLIENT_POD6, dst: '2001:db8:2:5::1' };
    t.equal(run('fromPod', out, sctp(3040, 3868)), 'pass', 'INIT x/client -> 2001:db8:2::/48 (an egress rule without ports)');
    const k = { saddr: CLIENT_POD6, daddr: out.dst, sport: 3040, dport: 3868, proto: 132 };
    t.ok(node.dp.maps.ct6.get(k), 'tracked in bpfproxy_ct6');
    t.equal(run('toPod', { src: out.dst, dst: CLIENT_POD6 }, sctp(3868, 3040, SCTP_CHUNK.INIT_ACK, 5)), 'pass', 'its INIT ACK');
    t.equal(run('fromPod', out, sctp(3040, 3868, SCTP_CHUNK.COOKIE_ECHO, 5)), 'pass', 'its COOKIE ECHO');
    t.equal((node.dp.maps.ct6.get(k)?.state ?? 0) & CtState.ESTABLISHED, CtState.ESTABLISHED, 'established');
    denied('SCTP INIT outside the egress rules', 'fromPod', { src: CLIENT_POD6, dst: '2001:db8:3::1' }, sctp(3041, 3868));
    denied(
      'an SCTP DATA chunk of no known association out of x/client',
      'fromPod',
      { src: CLIENT_POD6, dst: '2001:db8:2:5::1' },
      sctp(3042, 3868, SCTP_CHUNK.DATA, 9),
      'policy-unknown-flow',
    );
  });

  t.test('an IPv6-only pod isolated for ingress', async (t) => {
    denied('y/other -> x/v6only:80', 'toPod', { src: OTHER6, dst: V6ONLY }, tcp(3040, TCP.SYN, 80));
    t.equal(run('toPod', { src: 'fe80::1', dst: V6ONLY, hopLimit: 255 }, nd(ICMP6.NA)), 'pass', 'neighbour discovery still passes');
    t.equal(run('fromPod', { src: V6ONLY, dst: OTHER6 }, tcp(3041, TCP.SYN, 80)), 'pass', 'its egress is not isolated');
    t.equal(run('toPod', { src: NODE6, dst: V6ONLY }, tcp(3042, TCP.SYN, 80)), 'pass', "the node's IPv6 address (probes): allowed");
  });

  t.test("the node's IPv6 address is HOST, as its IPv4 one: its TCP of no tracked flow into an isolated pod passes", async (t) => {
    t.equal(node.dp.maps.ipcache6.get({ prefixlen: 128, addr: NODE6 })?.identity, IDENTITY_HOST, `bpfproxy_ipcache6 ${NODE6}/128: HOST`);
    t.equal(node.dp.maps.ipcache.get({ prefixlen: 32, addr: '192.0.2.11' })?.identity, IDENTITY_HOST, 'bpfproxy_ipcache: HOST too');
    const nodeRule = webView.rules.find((r) => r.rule === '(node)');
    t.equal(nodeRule?.peerText, `host (192.0.2.11/32, ${NODE6}/128)`, '`bpfproxy policy`: one host peer, both addresses');
    t.equal(webView.rules.filter((r) => r.rule === '(node)').length, 1, 'one node-rule entry');
    for (const [dst, port] of [
      [WEB6, 8080],
      [V6ONLY, 80],
    ] as const) {
      t.equal(
        counted('policy-unknown-flow', () =>
          t.equal(
            run('toPod', { src: NODE6, dst }, tcp(3060, TCP.ACK, port)),
            'pass',
            `node -> ${dst}:${port}, ACK of no tracked flow: passes`,
          ),
        ),
        0,
        'not counted as policy-unknown-flow',
      );
    }
    t.equal(run('toPod', { src: NODE6, dst: WEB6 }, tcp(3061, TCP.SYN, 1)), 'pass', 'a new flow from the node to any port (node rule)');
  });

  t.test('a rule removed cuts the flows it allowed (conntrack re-checks at the new generation)', async (t) => {
    t.equal(run('fromPod', { src: CLIENT_POD6, dst: '2001:db8:2:5::2' }, tcp(3050, TCP.SYN, 443)), 'pass', 'allowed');
    const next = compileV6(
      POLICIES.slice(0, 1).concat(
        netpol('x', 'client-out', {
          podSelector: { matchLabels: { app: 'client' } },
          policyTypes: ['Egress'],
          egress: [{ to: [{ podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 8080 }] }],
        }),
        POLICIES.slice(2),
      ),
      compiled,
    );
    t.same(w.apply(next).problems, []);
    denied('the same flow, next packet', 'fromPod', { src: CLIENT_POD6, dst: '2001:db8:2:5::2' }, tcp(3050, TCP.ACK, 443));
    t.same(w.apply(compileV6(POLICIES, next)).problems, []);
  });
});

t.test('IPv6 service flows: policy after DNAT (backend address and target port), established, cut', async (t) => {
  const { node, w, run, counted } = await lab(t);
  t.same(
    node.rec.syncService('x/web6', [fe('ClusterIP', CIP6, 80, 'TCP', [be(WEB6, 8080)]), fe('ClusterIP', CIP6, 90, 'TCP', [be(WEB6, 9090)])])
      .problems,
    [],
  );
  ip(node.ns, '-6', 'neigh', 'add', WEB6, 'lladdr', '02:00:00:00:00:11', 'dev', 'd0', 'nud', 'permanent');
  node.dp.maps.podIfs.set({ ifindex: node.ifindex }, { v: 1 });
  const compiled = compileV6(POLICIES);
  t.same(w.apply(compiled).problems, []);

  t.equal(
    run('fromPod', { src: CLIENT_POD6, dst: CIP6 }, tcp(4000, TCP.SYN, 80)),
    'redirect',
    'x/client -> service:80 -> x/web:8080: allowed both ways',
  );
  t.equal(run('fromPod', { src: CLIENT_POD6, dst: CIP6 }, tcp(4000, TCP.ACK, 80)), 'redirect', 'its next packet');
  t.equal(
    counted('policy-denied', () => t.equal(run('fromPod', { src: CLIENT_POD6, dst: CIP6 }, tcp(4001, TCP.SYN, 90)), 'drop')),
    1,
    'x/client -> service:90 -> x/web:9090: its egress allows 8080 only (the target port decides, not the service port)',
  );
  t.equal(
    counted('policy-denied', () => t.equal(run('fromPod', { src: OTHER6, dst: CIP6 }, tcp(4002, TCP.SYN, 80)), 'drop')),
    1,
    "y/other -> service:80 -> x/web:8080: x/web's ingress allows namespace y on 9090 only",
  );
  t.equal(run('fromPod', { src: OTHER6, dst: CIP6 }, tcp(4003, TCP.SYN, 90)), 'redirect', 'y/other -> service:90 -> x/web:9090: allowed');
  t.equal(node.dp.maps.ct6.entries().filter(([k]) => k.sport === 4002).length, 0, 'a denied flow leaves no conntrack entry');

  // x/web's ingress loses its namespace rule: the established service flow from y/other is cut.
  const webIn = netpol('x', 'web-in', {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 8080 }] }],
  });
  t.same(w.apply(compileV6([webIn, ...POLICIES.slice(1)], compiled)).problems, []);
  t.equal(
    counted('policy-denied', () => t.equal(run('fromPod', { src: OTHER6, dst: CIP6 }, tcp(4003, TCP.ACK, 90)), 'drop')),
    1,
    'its next packet: dropped',
  );
  t.equal(
    run('fromPod', { src: CLIENT_POD6, dst: CIP6 }, tcp(4000, TCP.ACK, 80)),
    'redirect',
    'the flow the remaining rule allows goes on',
  );
  node.dp.maps.podIfs.delete({ ifindex: node.ifindex });
});

t.test('IPv6 pod source check', async (t) => {
  const { node, run, counted } = await lab(t);
  const key = (addr: string, len: number) => ({ prefixlen: 32 + len, ifindex: node.ifindex, addr });
  const from = (src: string, sport: number) => run('fromPod', { src, dst: PEER6 }, tcp(sport));

  t.equal(from('2001:db8:bad::1', 3000), 'pass', 'no entry for the interface: not checked (as IPv4)');
  node.dp.maps.podSrcs6.set(key(POD6, 128), { v: 1 });
  node.dp.maps.podSrcs6.set(key('fd00:10:244:7::', 64), { v: 1 });
  node.dp.maps.podSrcs6.set(key('::', 0), { v: 0 });
  t.equal(from(POD6, 3001), 'pass', 'its own address passes');
  t.equal(from('fd00:10:244:7::5', 3002), 'pass', 'an address of a prefix routed to it passes');
  t.equal(from('fe80::1234', 3003), 'pass', 'link-local passes');
  t.equal(from('febf::1', 3004), 'pass', 'link-local: the whole fe80::/10');
  t.equal(run('fromPod', { src: '::', dst: 'ff02::1:ff00:99', hopLimit: 255 }, nd(ICMP6.NS)), 'pass', ':: (DAD) passes');
  for (const [src, what] of [
    ['fd00:10:244:1::98', "a neighbour pod's address"],
    [NODE6, "the node's address"],
    ['fec0::1', 'just outside fe80::/10'],
    ['2001:db8:bad::1', 'anything else'],
  ] as const) {
    t.equal(
      counted('spoofed', () => t.equal(from(src, 3010), 'drop', `${what}: dropped`)),
      1,
      `${what}: counted as spoofed`,
    );
  }
  t.equal(
    run('fromPod', { src: 'fd00:10:244:1::98', dst: PEER6, ext: [{ type: 'frag', offset: 8, more: false }] }, tcp(3020)),
    'drop',
    'a later fragment with a forged source: dropped too',
  );
  t.equal(run('fromData', { src: '2001:db8:bad::1', dst: PEER6 }, tcp(3030)), 'pass', 'not checked on data interfaces');
});
