/**
 * NetworkPolicy in the datapath through BPF_PROG_RUN, table-driven: maps
 * filled by the writer (src/dataplane/bpf/policy-maps.ts) from hand-written
 * CompiledPolicy objects, packets from testkit/packet.ts, one namespace with
 * the PROG_RUN node (test/helpers/progrun-node.ts: uplink d0 192.0.2.11/24,
 * 10.244.1.0/24 on it, 10.244.2.0/24 via 192.0.2.12).
 *
 * Paths: from a pod (tc_pod: its egress; a local destination's ingress),
 * service flows after DNAT (backend address and target port), into a pod
 * by our redirects (bpf_redirect_peer, FIB redirect) and, for what the
 * kernel routes, the pod veth's egress program (bpfproxy_to_pod).
 * Kernel-routed packets with real sockets: datapath-policy-netns.test.ts.
 */
import t, { type Test } from 'tap';
import {
  FIRST_DYNAMIC_IDENTITY,
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  PROTO_ANY,
  PROTO_SCTP,
  PROTO_TCP,
  PROTO_UDP,
  type CompiledPolicy,
  type EndpointPolicy,
  type IdentityEntry,
  type PolicyRuleEntry,
  type PolicyRuleRef,
} from '../src/model/policy/compiled.js';
import { CtFlags, PolIdentity } from '../src/dataplane/bpf/codecs.js';
import { PolicyMapWriter, readPinned } from '../src/dataplane/bpf/policy-maps.js';
import { portPrefixes, tableOf } from '../src/dataplane/bpf/policy-entries.js';
import type { ProgramRole } from '../src/dataplane/bpf/loader.js';
import { ethHeader, frame, ipv4Header, PROTO, TCP, type FrameSpec, type L4 } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, POD, progrunNode, type ProgrunNode } from './helpers/progrun-node.js';
import { reasonCount, type RunResult } from './helpers/progrun.js';
import { captureLogger } from './helpers/log.js';
import { refusingWrites } from './helpers/map-writes.js';

// Identities of the test policy.
const ID = { CLIENT: 100, WEB: 101, DNS: 102, OTHER: 103, REMOTE: 104, NET: 200, EXCEPT: 201 } as const;
const WEB_A = '10.244.1.11';
const WEB_B = '10.244.1.12';
const DNS = '10.244.1.13';
const OTHER = '10.244.1.20';
const REMOTE = '10.244.2.11';
const OUTSIDER = '192.0.2.101'; // in the ipBlock, not its except (CLIENT)

const identities: IdentityEntry[] = [
  { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
  { prefix: `${NODE_IP}/32`, identity: IDENTITY_HOST },
  { prefix: '192.0.2.0/24', identity: ID.NET },
  { prefix: `${CLIENT}/32`, identity: ID.EXCEPT },
  { prefix: `${POD}/32`, identity: ID.CLIENT, endpoint: 1 },
  { prefix: `${WEB_A}/32`, identity: ID.WEB, endpoint: 2 },
  { prefix: `${WEB_B}/32`, identity: ID.WEB, endpoint: 3 },
  { prefix: `${DNS}/32`, identity: ID.DNS, endpoint: 4 },
  { prefix: `${OTHER}/32`, identity: ID.OTHER, endpoint: 5 },
  { prefix: `${REMOTE}/32`, identity: ID.REMOTE },
];

const R = {
  clientToOther80: 0,
  clientToWeb8080: 1,
  clientToDnsAny: 2,
  clientToOtherSctp: 3,
  webFromClient: 4,
  webFromNet: 5,
  webRange: 6,
  webDeny30005: 7,
  webDenyOtherTcp: 8,
  webAllowOther8080: 9,
  webDenyAnyUdp: 10,
  webAllowRemoteUdp: 11,
} as const;

const rules: PolicyRuleRef[] = Object.entries(R).map(([name, id]) => ({
  id,
  policy: `test/${name}`,
  direction: name.startsWith('client') ? 'egress' : 'ingress',
  index: 0,
}));

const allow = (
  peer: number,
  direction: 'ingress' | 'egress',
  proto: number,
  port: number,
  portPrefixLen: number,
  ruleId: number,
): PolicyRuleEntry => ({
  peer,
  direction,
  proto,
  port,
  portPrefixLen,
  verdict: 'allow',
  ruleId,
});
const deny = (...a: Parameters<typeof allow>): PolicyRuleEntry => ({ ...allow(...a), verdict: 'deny' });

const clientEgress: PolicyRuleEntry[] = [
  allow(ID.OTHER, 'egress', PROTO_TCP, 80, 16, R.clientToOther80),
  allow(ID.WEB, 'egress', PROTO_TCP, 8080, 16, R.clientToWeb8080),
  allow(ID.DNS, 'egress', PROTO_ANY, 0, 0, R.clientToDnsAny),
  allow(ID.OTHER, 'egress', PROTO_SCTP, 9999, 16, R.clientToOtherSctp),
];
const webIngress: PolicyRuleEntry[] = [
  allow(ID.CLIENT, 'ingress', PROTO_TCP, 8080, 16, R.webFromClient),
  allow(ID.NET, 'ingress', PROTO_TCP, 8080, 16, R.webFromNet),
  ...portPrefixes(30000, 30010).map((p) => allow(IDENTITY_ANY, 'ingress', PROTO_TCP, p.port, p.portPrefixLen, R.webRange)),
  deny(IDENTITY_ANY, 'ingress', PROTO_TCP, 30005, 16, R.webDeny30005),
  deny(ID.OTHER, 'ingress', PROTO_TCP, 0, 0, R.webDenyOtherTcp),
  allow(ID.OTHER, 'ingress', PROTO_TCP, 8080, 16, R.webAllowOther8080),
  deny(IDENTITY_ANY, 'ingress', PROTO_UDP, 0, 0, R.webDenyAnyUdp),
  allow(ID.REMOTE, 'ingress', PROTO_UDP, 53, 16, R.webAllowRemoteUdp),
];

function endpoints(over: Partial<Record<number, Partial<EndpointPolicy>>> = {}): EndpointPolicy[] {
  const base: EndpointPolicy[] = [
    { id: 1, pod: 'x/client', addresses: [POD], ingressIsolated: true, egressIsolated: true, entries: clientEgress },
    { id: 2, pod: 'x/web-a', addresses: [WEB_A], ingressIsolated: true, egressIsolated: false, entries: webIngress },
    { id: 3, pod: 'x/web-b', addresses: [WEB_B], ingressIsolated: true, egressIsolated: false, entries: webIngress },
    { id: 4, pod: 'x/dns', addresses: [DNS], ingressIsolated: false, egressIsolated: true, entries: [] },
    { id: 5, pod: 'y/other', addresses: [OTHER], ingressIsolated: false, egressIsolated: false, entries: [] },
  ];
  return base.map((e) => ({ ...e, ...(over[e.id] ?? {}) }));
}

const policy = (generation: number, eps = endpoints()): CompiledPolicy => ({ generation, identities, endpoints: eps, rules });

/** A frame of any IP protocol with a raw L4 payload. */
const rawFrame = (f: FrameSpec, proto: number, l4: Buffer): Buffer => Buffer.concat([ethHeader(f), ipv4Header(f, proto, l4.length), l4]);
/** An SCTP INIT: it opens an association, as a SYN opens a TCP connection. */
function sctp(f: FrameSpec, sport: number, dport: number): Buffer {
  return frame(f, { proto: 'sctp', sport, dport });
}
function icmpEcho(f: FrameSpec, type = 8): Buffer {
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt16BE(7, 4);
  return rawFrame(f, PROTO.ICMP, h);
}

interface Lab {
  node: ProgrunNode;
  w: PolicyMapWriter;
  run: (role: ProgramRole, f: FrameSpec, l4: L4) => RunResult;
  hits: (rule: number) => number;
}

async function lab(t: Test): Promise<Lab> {
  const node = await progrunNode(t);
  const web = [be(WEB_A, 8080), be(WEB_B, 8080)];
  const r1 = node.rec.syncService('test/web', [
    fe('ClusterIP', '10.96.0.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('NodePort', '0.0.0.0', 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
  ]);
  const r2 = node.rec.syncService('test/remote', [fe('ClusterIP', '10.96.0.20', 80, 'TCP', [be(REMOTE, 8080, false)])]);
  const r3 = node.rec.syncService('test/self', [fe('ClusterIP', '10.96.0.60', 80, 'TCP', [be(POD, 8080)])]);
  t.same([...r1.problems, ...r2.problems, ...r3.problems], [], 'services programmed');
  node.rec.setNodeAddresses([NODE_IP]);
  const w = new PolicyMapWriter(node.dp.maps);
  return {
    node,
    w,
    run: (role, f, l4) => node.run(role, f, l4),
    hits: (rule) => w.hitsOf(rule),
  };
}

t.test('identities and enum values agree with the model', async (t) => {
  t.same([IDENTITY_ANY, IDENTITY_WORLD, IDENTITY_HOST], [PolIdentity.ANY, PolIdentity.WORLD, PolIdentity.HOST]);
  t.ok(FIRST_DYNAMIC_IDENTITY > IDENTITY_HOST);
});

t.test('with no policy at all every path passes as before', async (t) => {
  const { node, run } = await lab(t);
  t.equal(node.dp.maps.polState.get({ v: 0 })?.isolated ?? 0, 0, 'nothing isolated');
  t.equal(run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 1000, dport: 22 }).verdict, 'pass');
  t.equal(run('toPod', { src: REMOTE, dst: POD }, { proto: 'tcp', sport: 1001, dport: 22, flags: TCP.ACK }).verdict, 'pass');
  t.equal(run('fromPod', { src: POD, dst: '10.96.0.20' }, { proto: 'tcp', sport: 1002, dport: 80 }).verdict, 'redirect');
  t.notOk(
    node.dp.maps.ct.get({ saddr: POD, daddr: OTHER, sport: 1000, dport: 22, proto: PROTO.TCP }),
    'no conntrack for a flow to no service without policy',
  );
});

t.test('enforcement paths', async (t) => {
  const L = await lab(t);
  const { node, w, run, hits } = L;
  const rep = w.apply(policy(1));
  t.same(rep.problems, [], 'policy written without problems');
  t.ok(rep.changed && rep.generation > 0, `generation ${rep.generation}`);
  const gen = rep.generation;
  t.same(node.dp.maps.polState.get({ v: 0 }), { generation: gen, isolated: 4 }, 'state: generation and four isolated endpoints');

  const cases: Array<{
    name: string;
    role: ProgramRole;
    f: FrameSpec;
    l4: L4 | Buffer;
    verdict: string;
    reason?: string;
    rule?: number;
    dst?: string[];
  }> = [
    // (a) from a pod: its egress, to no service
    {
      name: 'egress allowed to OTHER tcp/80',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: { proto: 'tcp', sport: 2000, dport: 80 },
      verdict: 'pass',
      rule: R.clientToOther80,
    },
    {
      name: 'egress denied to OTHER tcp/81',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: { proto: 'tcp', sport: 2001, dport: 81 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    {
      name: 'egress denied to a remote pod',
      role: 'fromPod',
      f: { src: POD, dst: REMOTE },
      l4: { proto: 'tcp', sport: 2002, dport: 8080 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    // proto wildcard: any protocol to DNS
    {
      name: 'proto wildcard: udp/53 to DNS',
      role: 'fromPod',
      f: { src: POD, dst: DNS },
      l4: { proto: 'udp', sport: 2003, dport: 53 },
      verdict: 'pass',
      rule: R.clientToDnsAny,
    },
    {
      name: 'proto wildcard: tcp/5353 to DNS',
      role: 'fromPod',
      f: { src: POD, dst: DNS },
      l4: { proto: 'tcp', sport: 2004, dport: 5353 },
      verdict: 'pass',
      rule: R.clientToDnsAny,
    },
    {
      name: 'proto wildcard: ICMP echo to DNS',
      role: 'fromPod',
      f: { src: POD, dst: DNS },
      l4: icmpEcho({ src: POD, dst: DNS }),
      verdict: 'pass',
      rule: R.clientToDnsAny,
    },
    {
      name: 'ICMP echo to OTHER: no rule',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: icmpEcho({ src: POD, dst: OTHER }),
      verdict: 'drop',
      reason: 'policy-denied',
    },
    // SCTP ports are read for policy
    {
      name: 'SCTP 9999 to OTHER allowed',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: sctp({ src: POD, dst: OTHER }, 3000, 9999),
      verdict: 'pass',
      rule: R.clientToOtherSctp,
    },
    {
      name: 'SCTP 9998 to OTHER denied',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: sctp({ src: POD, dst: OTHER }, 3001, 9998),
      verdict: 'drop',
      reason: 'policy-denied',
    },
    // (b) service flows: checked after DNAT, on the backend's address and target port
    {
      name: 'service to WEB: egress tcp/8080 and WEB ingress from CLIENT',
      role: 'fromPod',
      f: { src: POD, dst: '10.96.0.10' },
      l4: { proto: 'tcp', sport: 2010, dport: 80 },
      verdict: 'redirect',
      dst: [WEB_A, WEB_B],
    },
    {
      name: 'service to a remote backend: egress denied after DNAT',
      role: 'fromPod',
      f: { src: POD, dst: '10.96.0.20' },
      l4: { proto: 'tcp', sport: 2011, dport: 80 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    {
      name: 'service from OTHER (not isolated): WEB ingress denies OTHER tcp',
      role: 'fromPod',
      f: { src: OTHER, dst: '10.96.0.10' },
      l4: { proto: 'tcp', sport: 2012, dport: 80 },
      verdict: 'drop',
      reason: 'policy-denied',
      rule: R.webDenyOtherTcp,
    },
    {
      name: 'hairpin through a service: a pod always reaches itself',
      role: 'fromPod',
      f: { src: POD, dst: '10.96.0.60' },
      l4: { proto: 'tcp', sport: 2013, dport: 80 },
      verdict: 'redirect',
      dst: [POD],
    },
    // (c) from data interfaces into local pods: the client's real address
    {
      name: 'NodePort from the ipBlock: allowed',
      role: 'fromData',
      f: { src: OUTSIDER, dst: NODE_IP },
      l4: { proto: 'tcp', sport: 2020, dport: 30080 },
      verdict: 'redirect',
      dst: [WEB_A, WEB_B],
      rule: R.webFromNet,
    },
    {
      name: "NodePort from the ipBlock's except: denied",
      role: 'fromData',
      f: { src: CLIENT, dst: NODE_IP },
      l4: { proto: 'tcp', sport: 2021, dport: 30080 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    // kernel-routed into a pod: the pod veth's egress program
    {
      name: 'to WEB from the ipBlock, kernel routed',
      role: 'toPod',
      f: { src: OUTSIDER, dst: WEB_A },
      l4: { proto: 'tcp', sport: 2030, dport: 8080 },
      verdict: 'pass',
      rule: R.webFromNet,
    },
    {
      name: 'to WEB from the except, kernel routed',
      role: 'toPod',
      f: { src: CLIENT, dst: WEB_A },
      l4: { proto: 'tcp', sport: 2031, dport: 8080 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    {
      name: 'host to an isolated pod passes',
      role: 'toPod',
      f: { src: NODE_IP, dst: WEB_A },
      l4: { proto: 'tcp', sport: 2032, dport: 9 },
      verdict: 'pass',
    },
    {
      name: 'host TCP without SYN to an isolated pod passes too',
      role: 'toPod',
      f: { src: NODE_IP, dst: POD },
      l4: { proto: 'tcp', sport: 2033, dport: 9, flags: TCP.ACK },
      verdict: 'pass',
    },
    {
      name: 'to a pod not isolated for ingress',
      role: 'toPod',
      f: { src: REMOTE, dst: DNS },
      l4: { proto: 'udp', sport: 2034, dport: 53 },
      verdict: 'pass',
    },
    {
      name: 'to the client (ingress isolated, no rule)',
      role: 'toPod',
      f: { src: REMOTE, dst: POD },
      l4: { proto: 'udp', sport: 2035, dport: 53 },
      verdict: 'drop',
      reason: 'policy-denied',
    },
    // port prefixes of an endPort range (30000-30010) and a deny inside it
    ...[29999, 30000, 30004, 30005, 30006, 30010, 30011].map((port) => ({
      name: `endPort range 30000-30010, deny 30005: port ${port}`,
      role: 'toPod' as const,
      f: { src: REMOTE, dst: WEB_B },
      l4: { proto: 'tcp' as const, sport: 2040 + (port % 100), dport: port },
      verdict: port >= 30000 && port <= 30010 && port !== 30005 ? 'pass' : 'drop',
      reason: port >= 30000 && port <= 30010 && port !== 30005 ? undefined : 'policy-denied',
      rule: port === 30005 ? R.webDeny30005 : port >= 30000 && port <= 30010 ? R.webRange : undefined,
    })),
    // deny wins: OTHER's tcp deny covers its narrower allow (same identity)
    {
      name: 'deny wins over a narrower allow of the same peer',
      role: 'toPod',
      f: { src: OTHER, dst: WEB_A },
      l4: { proto: 'tcp', sport: 2050, dport: 8080 },
      verdict: 'drop',
      reason: 'policy-denied',
      rule: R.webDenyOtherTcp,
    },
    // deny wins across identities: udp denied for any peer, allowed for REMOTE on 53
    {
      name: "deny of any peer wins over a peer's allow",
      role: 'toPod',
      f: { src: REMOTE, dst: WEB_A },
      l4: { proto: 'udp', sport: 2051, dport: 53 },
      verdict: 'drop',
      reason: 'policy-denied',
      rule: R.webDenyAnyUdp,
    },
    // fail closed: TCP without SYN, no flow known
    {
      name: 'TCP ACK of no known flow to an isolated pod',
      role: 'toPod',
      f: { src: OUTSIDER, dst: WEB_A },
      l4: { proto: 'tcp', sport: 2060, dport: 8080, flags: TCP.ACK },
      verdict: 'drop',
      reason: 'policy-unknown-flow',
    },
    {
      name: 'TCP ACK of no known flow from an egress-isolated pod',
      role: 'fromPod',
      f: { src: POD, dst: OTHER },
      l4: { proto: 'tcp', sport: 2061, dport: 80, flags: TCP.ACK },
      verdict: 'drop',
      reason: 'policy-unknown-flow',
    },
    {
      name: 'TCP ACK of no known flow between pods not isolated that way',
      role: 'fromPod',
      f: { src: OTHER, dst: DNS },
      l4: { proto: 'tcp', sport: 2062, dport: 80, flags: TCP.ACK },
      verdict: 'pass',
    },
  ];
  for (const c of cases) {
    const hitsBefore = c.rule === undefined ? 0 : hits(c.rule);
    const reasonBefore = c.reason ? reasonCount(node.dp, c.reason) : 0;
    const r = Buffer.isBuffer(c.l4) ? node.runRaw(c.role, c.l4) : run(c.role, c.f, c.l4);
    t.equal(r.verdict, c.verdict, `${c.name}: ${c.verdict}`);
    if (c.reason) t.equal(reasonCount(node.dp, c.reason), reasonBefore + 1, `${c.name}: counted as ${c.reason}`);
    if (c.rule !== undefined) t.equal(hits(c.rule), hitsBefore + 1, `${c.name}: rule ${c.rule} counted`);
    if (c.dst) t.ok(c.dst.includes(r.out.dst), `${c.name}: to ${r.out.dst}`);
  }

  t.test('a flow checked on its way in is not checked (nor counted) again at the veth egress', async (t) => {
    node.dp.maps.podIfs.delete({ ifindex: node.ifindex }); // FIB redirect (bpf_redirect): the veth egress runs
    const before = hits(R.webFromClient);
    const syn = run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2100, dport: 80 });
    t.equal(syn.verdict, 'redirect', 'FIB redirect to the backend');
    t.equal(hits(R.webFromClient), before + 1, 'the backend ingress decided once');
    const atVeth = node.runRaw('toPod', syn.raw);
    t.equal(atVeth.verdict, 'pass', 'the translated packet passes the backend veth egress');
    t.equal(hits(R.webFromClient), before + 1, 'and is not counted again');
    const ack = run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2100, dport: 80, flags: TCP.ACK });
    t.equal(node.runRaw('toPod', ack.raw).verdict, 'pass', 'later packets too');
    // the backend's reply reaches the client through tc_pod, then the client's veth egress
    const back = run('fromPod', { src: syn.out.dst, dst: POD }, { proto: 'tcp', sport: 8080, dport: 2100, flags: TCP.SYN | TCP.ACK });
    t.equal(back.verdict, 'redirect', 'the reply is reverse-translated');
    t.equal(back.out.src, '10.96.0.10');
    t.equal(node.runRaw('toPod', back.raw).verdict, 'pass', 'and passes the client veth egress (client ingress-isolated)');
  });

  t.test('redirect into a pod with bpf_redirect_peer is checked before the redirect', async (t) => {
    node.dp.maps.podIfs.set({ ifindex: node.ifindex }, { v: 1 }); // the FIB's device is a pod veth now
    const ok = run('fromData', { src: OUTSIDER, dst: NODE_IP }, { proto: 'tcp', sport: 2110, dport: 30080 });
    t.equal(ok.verdict, 'redirect', 'allowed: redirected into the pod');
    const no = run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 2111, dport: 30080 });
    t.equal(no.verdict, 'drop', 'denied before the redirect');
    const fromPod = run('fromPod', { src: OTHER, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2112, dport: 80 });
    t.equal(fromPod.verdict, 'drop', 'pod to service to pod: denied before the redirect');
    node.dp.maps.podIfs.delete({ ifindex: node.ifindex });
  });

  t.test('replies of an allowed flow pass; the reverse new flow is denied', async (t) => {
    t.equal(run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 2200, dport: 80 }).verdict, 'pass', 'client -> other:80 opens');
    const ct = node.dp.maps.ct.get({ saddr: POD, daddr: OTHER, sport: 2200, dport: 80, proto: PROTO.TCP });
    t.ok(ct && ct.flags & CtFlags.PLAIN, 'tracked for policy (no translation)');
    t.equal(ct?.polGen, gen, 'with the generation it was checked at');
    const reply = { src: OTHER, dst: POD };
    const l4 = { proto: 'tcp' as const, sport: 80, dport: 2200, flags: TCP.SYN | TCP.ACK };
    t.equal(run('fromPod', reply, l4).verdict, 'pass', 'the reply leaves OTHER');
    t.equal(run('toPod', reply, l4).verdict, 'pass', "the reply enters the client (ingress isolated) as its flow's");
    t.equal(
      run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 2200, dport: 80, flags: TCP.ACK }).verdict,
      'pass',
      'the handshake completes',
    );
    const rev = { proto: 'tcp' as const, sport: 2201, dport: 80 };
    t.equal(run('toPod', reply, rev).verdict, 'drop', 'a new flow from OTHER into the client is denied');
    // UDP: the reply is its flow's, a new datagram the other way is not
    t.equal(run('fromPod', { src: POD, dst: DNS }, { proto: 'udp', sport: 2202, dport: 53 }).verdict, 'pass', 'client -> dns udp/53');
    t.equal(
      run('fromPod', { src: DNS, dst: POD }, { proto: 'udp', sport: 53, dport: 2202 }).verdict,
      'pass',
      'dns (egress isolated) answers',
    );
    t.equal(run('toPod', { src: DNS, dst: POD }, { proto: 'udp', sport: 53, dport: 2202 }).verdict, 'pass', 'the answer enters the client');
    t.equal(run('fromPod', { src: DNS, dst: POD }, { proto: 'udp', sport: 53, dport: 2203 }).verdict, 'drop', 'dns cannot open a flow');
    // ICMP: an error about a tracked flow is related
    const quoted = frame({ src: POD, dst: OTHER }, { proto: 'tcp', sport: 2200, dport: 80 }).subarray(14, 14 + 40);
    const err = Buffer.concat([ethHeader({ src: OTHER, dst: POD }), ipv4Header({ src: OTHER, dst: POD }, PROTO.ICMP, 8 + quoted.length)]);
    const icmp = Buffer.alloc(8);
    icmp[0] = 3;
    icmp[1] = 3;
    t.equal(node.runRaw('toPod', Buffer.concat([err, icmp, quoted])).verdict, 'pass', 'an ICMP error about a tracked flow enters');
    // non-first fragments carry no ports: left to the stack
    const frag = frame({ src: REMOTE, dst: POD, fragOffset: 100 }, { proto: 'udp', sport: 1, dport: 2 });
    t.equal(node.runRaw('toPod', frag).verdict, 'pass', 'a later fragment passes (its first fragment was checked)');
  });

  t.test('a generation bump re-checks tracked flows and cuts those whose rule went', async (t) => {
    const open = (sport: number) => run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport, dport: 80 });
    const ack = (sport: number) => run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport, dport: 80, flags: TCP.ACK });
    const back = (sport: number) => run('toPod', { src: OTHER, dst: POD }, { proto: 'tcp', sport: 80, dport: sport, flags: TCP.ACK });
    t.equal(open(2300).verdict, 'pass');
    t.equal(ack(2300).verdict, 'pass');
    const svc = run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2301, dport: 80 });
    t.equal(svc.verdict, 'redirect', 'a service flow to WEB');
    const before = hits(R.clientToOther80);
    t.equal(ack(2300).verdict, 'pass');
    t.equal(hits(R.clientToOther80), before, 'packets of a decided flow are not counted');

    // an unrelated change moves the generation: the flow is checked again, still allowed
    const r1 = w.apply(
      policy(2, endpoints({ 5: { pod: 'y/other', ingressIsolated: false, egressIsolated: false, entries: [] }, 4: { entries: [] } })),
    );
    t.notOk(r1.changed, 'the same policy again changes nothing');
    const more = endpoints();
    more[3] = { ...more[3]!, ingressIsolated: true }; // dns isolated for ingress too
    const r2 = w.apply(policy(3, more));
    t.ok(r2.changed && r2.generation === gen + 1, 'another change moves the generation by one');
    t.equal(ack(2300).verdict, 'pass', 'still allowed after the re-check');
    t.equal(hits(R.clientToOther80), before + 1, 'the re-check decided once');
    t.equal(node.dp.maps.ct.get({ saddr: POD, daddr: OTHER, sport: 2300, dport: 80, proto: PROTO.TCP })?.polGen, r2.generation, 'recorded');
    t.equal(
      node.dp.maps.ct.get({ saddr: OTHER, daddr: POD, sport: 80, dport: 2300, proto: PROTO.TCP })?.polGen,
      r2.generation,
      'in both halves',
    );

    // the rule that allowed it goes: the flow is cut, both ways
    const without = more.map((e) => (e.id === 1 ? { ...e, entries: clientEgress.filter((x) => x.ruleId !== R.clientToOther80) } : e));
    const r3 = w.apply(policy(4, without));
    t.ok(r3.changed && r3.tablesWritten === 1, 'one table written again');
    const denied = reasonCount(node.dp, 'policy-denied');
    t.equal(ack(2300).verdict, 'drop', "the flow's next packet is denied");
    t.equal(back(2300).verdict, 'drop', 'and so is its reply');
    t.equal(reasonCount(node.dp, 'policy-denied'), denied + 2, 'both counted as policy-denied');
    t.equal(
      run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2301, dport: 80, flags: TCP.ACK }).verdict,
      'redirect',
      'a flow the change does not concern goes on',
    );
    // and back: the flow passes again
    w.apply(policy(5, more));
    t.equal(ack(2300).verdict, 'pass', 'allowed again once the rule is back');
  });

  t.test('a pod reaching itself is never blocked, and leaves no conntrack', async (t) => {
    // found by the fuzzer: a tuple that is its own reverse made one entry, not a pair
    const self = rawFrame({ src: WEB_A, dst: WEB_A }, 128, Buffer.alloc(8));
    t.equal(node.runRaw('toPod', self).verdict, 'pass');
    t.notOk(node.dp.maps.ct.get({ saddr: WEB_A, daddr: WEB_A, sport: 0, dport: 0, proto: 128 }), 'nothing tracked');
    t.equal(run('fromPod', { src: POD, dst: POD }, { proto: 'tcp', sport: 2390, dport: 2390 }).verdict, 'pass');
    t.notOk(node.dp.maps.ct.get({ saddr: POD, daddr: POD, sport: 2390, dport: 2390, proto: PROTO.TCP }), 'nothing tracked');
  });

  t.test('an isolated endpoint without a table fails closed', async (t) => {
    node.dp.maps.policy.delete({ v: 2 }); // web-a's table, behind the writer's back
    const before = reasonCount(node.dp, 'policy-no-table');
    t.equal(run('toPod', { src: OUTSIDER, dst: WEB_A }, { proto: 'tcp', sport: 2400, dport: 8080 }).verdict, 'drop');
    t.equal(reasonCount(node.dp, 'policy-no-table'), before + 1, 'counted as policy-no-table');
    t.equal(
      run('toPod', { src: OUTSIDER, dst: WEB_B }, { proto: 'tcp', sport: 2401, dport: 8080 }).verdict,
      'pass',
      'web-b still has its table',
    );
  });
});

t.test('a table that does not fit is deny-all, logged and counted; never allow', async (t) => {
  const node = await progrunNode(t);
  const { log, lines } = captureLogger();
  const w = new PolicyMapWriter(node.dp.maps, log, 3);
  const eps = endpoints();
  const rep = w.apply(policy(1, eps));
  const full = rep.problems.filter((p) => p.denyAll);
  t.same(full.map((p) => p.pod).sort(), ['x/client', 'x/web-a', 'x/web-b'], 'the three tables with more than 3 entries are deny-all');
  t.ok(
    lines.some((l) => l.level === 'error' && /x\/web-a cannot be written .*more than the 3 a table holds.*denies everything/.test(l.msg)),
    'and the operator is told',
  );
  t.equal(w.stats().tablesDenyAll, 3, 'counted');
  t.equal(w.stats().denyAllNow, 3);
  t.equal(
    node.run('toPod', { src: OUTSIDER, dst: WEB_A }, { proto: 'tcp', sport: 2500, dport: 8080 }).verdict,
    'drop',
    'what the full table would allow is denied',
  );
  t.equal(node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 2501, dport: 80 }).verdict, 'drop', 'in both directions');
  t.equal(
    node.run('toPod', { src: NODE_IP, dst: WEB_A }, { proto: 'tcp', sport: 2502, dport: 8080 }).verdict,
    'pass',
    'the host still reaches it',
  );
  t.equal(
    node.run('toPod', { src: OUTSIDER, dst: DNS }, { proto: 'tcp', sport: 2503, dport: 53 }).verdict,
    'pass',
    'other endpoints are not concerned',
  );
  const again = w.apply(policy(2, eps));
  t.equal(again.tablesWritten, 0, 'the same too-big tables are not tried again until they change');
  const small = eps.map((e) => (e.id === 2 ? { ...e, entries: webIngress.slice(0, 2) } : e));
  const fits = w.apply(policy(3, small));
  t.equal(fits.tablesWritten, 1, 'once it fits it is written');
  t.equal(w.stats().denyAllNow, 2);
  t.equal(node.run('toPod', { src: OUTSIDER, dst: WEB_A }, { proto: 'tcp', sport: 2504, dport: 8080 }).verdict, 'pass', 'and allows again');
});

t.test('adopted from the pins: a restarted writer writes nothing and reads the policy back', async (t) => {
  const node = await progrunNode(t);
  const w1 = new PolicyMapWriter(node.dp.maps);
  const first = w1.apply(policy(1));
  t.ok(first.changed);
  t.equal(
    node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 2600, dport: 80 }).verdict,
    'pass',
    'a flow opened before the restart',
  );

  const back = readPinned(node.dp.maps);
  t.equal(back.generation, first.generation, 'generation read back');
  t.same(
    back.identities.map((i) => `${i.prefix}=${i.identity}${i.endpoint ? `@${i.endpoint}` : ''}`).sort(),
    identities.map((i) => `${i.prefix}=${i.identity}${i.endpoint ? `@${i.endpoint}` : ''}`).sort(),
    'identities read back',
  );
  t.same(
    back.rules,
    [...rules].sort((a, b) => a.id - b.id),
    'rule names read back',
  );
  for (const e of endpoints()) {
    const b = back.endpoints.find((x) => x.id === e.id);
    t.ok(b, `endpoint ${e.id} read back`);
    t.same(
      [b?.pod, b?.addresses, b?.ingressIsolated, b?.egressIsolated],
      [e.pod, e.addresses, e.ingressIsolated, e.egressIsolated],
      `${e.pod}: name, addresses, isolation`,
    );
    t.same(b?.entries, tableOf(e).entries, `${e.pod}: its table as written (normalized)`);
  }

  // a new writer (the agent restarted) with the same policy: nothing written, nothing re-checked
  const w2 = new PolicyMapWriter(node.dp.maps);
  t.equal(w2.generation, first.generation, 'the generation is adopted');
  const again = w2.apply(policy(1));
  t.same(
    [again.changed, again.ipcacheWrites, again.ipcacheDeletes, again.tablesWritten, again.tablesDeleted],
    [false, 0, 0, 0, 0],
    'the same policy after a restart writes nothing',
  );
  t.equal(
    node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 2600, dport: 80, flags: TCP.ACK }).verdict,
    'pass',
    'the flow goes on',
  );
  // the model numbers its generations from 1 again: the datapath's moves on regardless
  const next = w2.apply(policy(1, endpoints({ 5: { ingressIsolated: true } })));
  t.equal(next.generation, first.generation + 1, 'the datapath generation moves on from the pinned one');

  // removing everything: no endpoint isolated, every path skips policy
  const none = w2.apply({ generation: 9, identities: [], endpoints: [], rules: [] });
  t.ok(none.changed);
  t.same(node.dp.maps.polState.get({ v: 0 }), { generation: none.generation, isolated: 0 }, 'nothing isolated');
  t.equal(
    node.dp.maps.ipcache.count() + node.dp.maps.policy.count() + node.dp.maps.polRules.count() + node.dp.maps.polEps.count(),
    0,
    'every map emptied',
  );
  t.equal(node.run('toPod', { src: REMOTE, dst: WEB_A }, { proto: 'tcp', sport: 2601, dport: 1 }).verdict, 'pass');
});

t.test('applyDiff: one endpoint changes, only its entries are written', async (t) => {
  const node = await progrunNode(t);
  const w = new PolicyMapWriter(node.dp.maps);
  w.apply(policy(1));
  const ids = new Map<number, number>();
  for (const [k, v] of node.dp.maps.policy.entries()) ids.set(k.v, v.v);
  const rep = w.applyDiff({ endpoints: { upsert: [{ ...endpoints()[2]!, entries: webIngress.slice(0, 1) }] } });
  t.same([rep.tablesWritten, rep.ipcacheWrites, rep.tablesDeleted], [1, 0, 0], 'one table, no identity');
  for (const [k, v] of node.dp.maps.policy.entries()) {
    if (k.v === 3) t.not(v.v, ids.get(3), 'web-b got a new inner map (make-before-break)');
    else t.equal(v.v, ids.get(k.v), `endpoint ${k.v} keeps its inner map`);
  }
  // a label change: the pod's identity moves; only its ipcache entry is written
  const moved = w.applyDiff({ identities: { upsert: [{ prefix: `${OTHER}/32`, identity: ID.WEB, endpoint: 5 }] } });
  t.same([moved.ipcacheWrites, moved.tablesWritten], [1, 0], 'one ipcache entry');
  t.equal(node.dp.maps.ipcache.get({ prefixlen: 32, addr: OTHER })?.identity, ID.WEB);
  // bad input is reported and left out, never allowing more
  const bad = w.applyDiff({
    identities: { upsert: [{ prefix: '10.0.0.300/8', identity: 300 }] },
    endpoints: { upsert: [{ ...endpoints()[1]!, entries: [...webIngress, allow(ID.REMOTE, 'ingress', PROTO_TCP, 70000, 16, 99)] }] },
  });
  t.equal(bad.problems.length, 2, 'both problems reported');
  t.match(bad.problems.map((p) => p.message).join('\n'), /not an IPv4 or IPv6 prefix[\s\S]*port 70000 is not 0\.\.65535/);
});

t.test('a write that fails is said and tried again by the next apply', async (t) => {
  const node = await progrunNode(t);
  const { log, lines } = captureLogger();
  // the ipcache refuses the client's entry once, as a full map would
  const ipcache = refusingWrites(node.dp.maps.ipcache, (k) => k.addr === POD);
  ipcache.refuse(1);
  const w = new PolicyMapWriter({ ...node.dp.maps, ipcache: ipcache.map }, log);
  const first = w.apply(policy(1));
  t.equal(first.problems.length, 1, 'one problem');
  t.match(first.problems[0]?.message, /cannot write identity prefix 10\.244\.1\.99\/32: .*E2BIG.*map full.*retried on the next sync/);
  t.ok(
    lines.some((l) => l.level === 'error' && /x\/client .*isolation is NOT enforced until it is written/.test(l.msg)),
    'the operator is told the client is not isolated meanwhile',
  );
  t.equal(node.run('toPod', { src: REMOTE, dst: POD }, { proto: 'udp', sport: 2700, dport: 53 }).verdict, 'pass', 'not enforced meanwhile');
  const second = w.apply(policy(1));
  t.same([second.problems, second.ipcacheWrites, second.changed], [[], 1, true], 'the next apply writes it (the policy is unchanged)');
  t.equal(node.run('toPod', { src: REMOTE, dst: POD }, { proto: 'udp', sport: 2701, dport: 53 }).verdict, 'drop', 'enforced');
});
