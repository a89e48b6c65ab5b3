/**
 * IPv6 NetworkPolicy in the vector engine (the policy6 node) against the
 * BPF path: one compiled policy set with IPv6 identities written by the map
 * writer into the BPF maps (bpfproxy_ipcache6, the shared rule tables) and
 * handed to the engine from the writer's mirror (written(): the IPv6
 * prefixes too), the same IPv6 services in both, and a table of IPv6 flows
 * run through BPF_PROG_RUN (test/helpers/progrun6.ts) and through the
 * engine: the same verdict and reason for every one, new flows and, after
 * a policy change, the established ones.
 */
import t, { type Test } from 'tap';
import {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  IDENTITY_WORLD6,
  PROTO_ANY,
  PROTO_TCP,
  PROTO_UDP,
  type CompiledPolicy,
  type IdentityEntry,
  type PolicyRuleEntry,
  type PolicyRuleRef,
} from '../src/model/policy/compiled.js';
import { portPrefixes } from '../src/dataplane/bpf/policy-entries.js';
import { PolicyMapWriter, type WrittenPolicy } from '../src/dataplane/bpf/policy-maps.js';
import { IpcacheFlags } from '../src/dataplane/bpf/codecs.js';
import { encodePolicy } from '../src/dataplane/afxdp/policy.js';
import { EngineDataplane } from '../src/dataplane/afxdp/dataplane.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import type { Frontend } from '../src/model/types.js';
import { frame6, TCP, type L4v6 } from '../testkit/packet6.js';
import {
  CLIENT6 as CLIENT6_E,
  LB6 as LB6_E,
  LOCAL_BE,
  LOCAL_BE6,
  NODE6 as NODE6_E,
  NODE_MAC,
  POD_PORT_MAC,
  testEngine,
} from './helpers/engine.js';
import { be, fe } from './helpers/fixtures.js';
import { NODE6, progrun6Node } from './helpers/progrun6.js';
import { reasonCount } from './helpers/progrun.js';

const allow = (
  peer: number,
  direction: 'ingress' | 'egress',
  proto: number,
  port: number,
  portPrefixLen: number,
  ruleId: number,
): PolicyRuleEntry => ({ peer, direction, proto, port, portPrefixLen, verdict: 'allow', ruleId });
const deny = (...a: Parameters<typeof allow>): PolicyRuleEntry => ({ ...allow(...a), verdict: 'deny' });

const ID = { CLIENT: 100, WEB: 101, DNS: 102, OTHER: 103, REMOTE: 104, NET: 200, EXCEPT: 201 } as const;
// pods on d0's link (fd00:10:244:1::/64), one behind the router (fd00:10:244:2::/64)
const P_CLIENT = 'fd00:10:244:1::99';
const WEB_A = 'fd00:10:244:1::11';
const WEB_B = 'fd00:10:244:1::12';
const WEB_C = 'fd00:10:244:1::14';
const DNS = 'fd00:10:244:1::13';
const OTHER = 'fd00:10:244:1::20';
const REMOTE = 'fd00:10:244:2::11';
const EXCEPT = '2001:db8:5::100';
const OUTSIDER = '2001:db8:5::101';
const WORLD = '2001:db8:77::7';

const ids: IdentityEntry[] = [
  { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
  { prefix: '::/0', identity: IDENTITY_WORLD6 },
  { prefix: `${NODE6}/128`, identity: IDENTITY_HOST },
  { prefix: '2001:db8:5::/64', identity: ID.NET },
  { prefix: `${EXCEPT}/128`, identity: ID.EXCEPT },
  { prefix: `${P_CLIENT}/128`, identity: ID.CLIENT, endpoint: 1 },
  { prefix: `${WEB_A}/128`, identity: ID.WEB, endpoint: 2 },
  { prefix: `${WEB_B}/128`, identity: ID.WEB, endpoint: 3 },
  { prefix: `${WEB_C}/128`, identity: ID.WEB, endpoint: 6 },
  { prefix: `${DNS}/128`, identity: ID.DNS, endpoint: 4 },
  { prefix: `${OTHER}/128`, identity: ID.OTHER, endpoint: 5 },
  { prefix: `${REMOTE}/128`, identity: ID.REMOTE },
];
const ruleRefs: PolicyRuleRef[] = Array.from({ length: 12 }, (_, id) => ({ id, policy: `test/r${id}`, direction: 'ingress', index: 0 }));
const clientEgress = [
  allow(ID.OTHER, 'egress', PROTO_TCP, 80, 16, 0),
  allow(ID.WEB, 'egress', PROTO_TCP, 8080, 16, 1),
  allow(ID.DNS, 'egress', PROTO_ANY, 0, 0, 2),
  allow(ID.REMOTE, 'egress', PROTO_TCP, 8080, 16, 3),
];
const webIngress = (fromNet: boolean) => [
  allow(ID.CLIENT, 'ingress', PROTO_TCP, 8080, 16, 4),
  ...(fromNet ? [allow(ID.NET, 'ingress', PROTO_TCP, 8080, 16, 5)] : []),
  ...portPrefixes(30000, 30010).map((p) => allow(IDENTITY_ANY, 'ingress', PROTO_TCP, p.port, p.portPrefixLen, 6)),
  deny(IDENTITY_ANY, 'ingress', PROTO_TCP, 30005, 16, 7),
  deny(ID.OTHER, 'ingress', PROTO_TCP, 0, 0, 8),
  allow(ID.OTHER, 'ingress', PROTO_TCP, 8080, 16, 9),
  deny(IDENTITY_ANY, 'ingress', PROTO_UDP, 0, 0, 10),
  allow(ID.REMOTE, 'ingress', PROTO_UDP, 53, 16, 11),
];
const compiled = (generation: number, fromNet: boolean): CompiledPolicy => ({
  generation,
  identities: ids,
  rules: ruleRefs,
  endpoints: [
    { id: 1, pod: 'x/client', addresses: [P_CLIENT], ingressIsolated: true, egressIsolated: true, entries: clientEgress },
    { id: 2, pod: 'x/web-a', addresses: [WEB_A], ingressIsolated: true, egressIsolated: false, entries: webIngress(fromNet) },
    { id: 3, pod: 'x/web-b', addresses: [WEB_B], ingressIsolated: true, egressIsolated: false, entries: webIngress(fromNet) },
    { id: 4, pod: 'x/dns', addresses: [DNS], ingressIsolated: false, egressIsolated: true, entries: [] },
    { id: 5, pod: 'y/other', addresses: [OTHER], ingressIsolated: false, egressIsolated: false, entries: [] },
    { id: 6, pod: 'x/web-c', addresses: [WEB_C], ingressIsolated: true, egressIsolated: false, entries: webIngress(fromNet) },
  ],
});

interface Case {
  from: 'pod' | 'data';
  src: string;
  dst: string;
  proto: 'tcp' | 'udp';
  dport: number;
  sport: number;
}

t.test('the engine and BPF_PROG_RUN take the same IPv6 policy decisions from one compiled policy set', async (t) => {
  const node = await progrun6Node(t);
  const web = [be(WEB_B, 8080), be(WEB_C, 8080)];
  const services = new Map<string, Frontend[]>([
    [
      'test/web',
      [
        fe('ClusterIP', 'fd00:10:96::10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
        fe('NodePort', '::', 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
        fe('LoadBalancer', '2001:db8:100::10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
      ],
    ],
    ['test/range', [fe('ClusterIP', 'fd00:10:96::30', 30005, 'TCP', [be(WEB_B, 30005), be(WEB_C, 30005)])]],
    ['test/range2', [fe('ClusterIP', 'fd00:10:96::31', 30004, 'TCP', [be(WEB_B, 30004), be(WEB_C, 30004)])]],
    ['test/udp', [fe('LoadBalancer', '2001:db8:100::20', 53, 'UDP', [be(WEB_B, 53), be(WEB_C, 53)])]],
    ['test/remote', [fe('ClusterIP', 'fd00:10:96::20', 80, 'TCP', [be(REMOTE, 8080, false)])]],
    ['test/dns', [fe('ClusterIP', 'fd00:10:96::53', 53, 'UDP', [be(DNS, 53)])]],
    ['test/other', [fe('ClusterIP', 'fd00:10:96::40', 80, 'TCP', [be(OTHER, 80)])]],
  ]);
  node.rec.setNodeAddresses(['192.0.2.11', NODE6]);
  t.same(node.rec.syncAll(services).problems, [], 'BPF path programmed');
  const w = new PolicyMapWriter(node.dp.maps);
  t.same(w.apply(compiled(1, true)).problems, [], 'policy written to the BPF maps');
  t.ok((w.written().ipcache6 ?? []).length >= 10, 'the writer mirror carries the IPv6 identities');

  const engine = createEngine({ vector: 256, sessions: 1 << 14 });
  t.teardown(() => engine.close());
  const edp = new EngineDataplane((blob) => engine.setTable(blob), {
    snatPorts: [40000, 49999],
    hairpinIp: '169.254.42.1',
    hairpinIp6: 'fd62:7078:2a01::1',
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
  });
  edp.setPorts([
    { ifindex: 2, name: 'd0', mac: NODE_MAC, pod: false },
    { ifindex: 3, name: 'cali0', mac: POD_PORT_MAC, pod: true },
  ]);
  edp.setNodeAddresses(['192.0.2.11', NODE6]);
  const backends = [WEB_B, WEB_C, REMOTE, DNS, OTHER];
  edp.setNeighbours(backends.map((ip) => ({ ip, port: ip === REMOTE ? 0 : 1, mac: '02:00:00:00:00:b1', snat: NODE6 })));
  t.same(edp.syncAll(services).problems, [], 'engine programmed');
  engine.requirePolicy(true);
  engine.setPolicy(encodePolicy(w.written()).blob);

  const POLICY_REASONS = ['policy-denied', 'policy-no-table', 'policy-unknown-flow', 'policy-ipv6'];
  const l4 = (c: Case, flags: number): L4v6 =>
    c.proto === 'tcp' ? { proto: 'tcp', sport: c.sport, dport: c.dport, flags, seq: 1 } : { proto: 'udp', sport: c.sport, dport: c.dport };
  const bpf = (c: Case, flags: number): string => {
    const before = POLICY_REASONS.map((r) => reasonCount(node.dp, r));
    const r = node.runRaw(c.from === 'pod' ? 'fromPod' : 'fromData', frame6({ src: c.src, dst: c.dst }, l4(c, flags)));
    if (r.verdict !== 'drop') return 'pass';
    const after = POLICY_REASONS.map((r) => reasonCount(node.dp, r));
    const which = POLICY_REASONS.find((_, i) => after[i]! > before[i]!);
    return `drop ${which ?? 'other'}`;
  };
  const eng = (cases: Case[], flags: number): string[] =>
    engine
      .runVector(
        cases.map((c) =>
          frame6({ src: c.src, dst: c.dst, srcMac: '02:00:00:00:00:c1', dstMac: c.from === 'pod' ? POD_PORT_MAC : NODE_MAC }, l4(c, flags)),
        ),
        { rxPort: cases.map((c) => (c.from === 'pod' ? 1 : 0)) },
      )
      .map((r) => (r.next === 'output' ? 'pass' : `drop ${r.reason}`));

  let sport = 20000;
  const cases: Case[] = [];
  const pods = [P_CLIENT, WEB_A, DNS, OTHER];
  const outside = [EXCEPT, OUTSIDER, WORLD, REMOTE];
  const podDsts: Array<[string, number, 'tcp' | 'udp']> = [
    ['fd00:10:96::10', 80, 'tcp'],
    ['fd00:10:96::30', 30005, 'tcp'],
    ['fd00:10:96::31', 30004, 'tcp'],
    ['fd00:10:96::20', 80, 'tcp'],
    ['fd00:10:96::53', 53, 'udp'],
    ['fd00:10:96::40', 80, 'tcp'],
  ];
  const dataDsts: Array<[string, number, 'tcp' | 'udp']> = [
    [NODE6, 30080, 'tcp'],
    ['2001:db8:100::10', 80, 'tcp'],
    ['2001:db8:100::20', 53, 'udp'],
  ];
  for (const src of pods) for (const [dst, dport, proto] of podDsts) cases.push({ from: 'pod', src, dst, dport, proto, sport: sport++ });
  for (const src of outside)
    for (const [dst, dport, proto] of dataDsts) cases.push({ from: 'data', src, dst, dport, proto, sport: sport++ });

  const describe = (c: Case) => `${c.from} [${c.src}]:${c.sport} -> [${c.dst}]:${c.dport}/${c.proto}`;
  const compare = (t: Test, what: string, flags: number, list: Case[]) => {
    const e = eng(list, flags);
    const b = list.map((c) => bpf(c, flags));
    const differ = list.map((c, i) => [describe(c), e[i], b[i]] as const).filter(([, x, y]) => x !== y);
    t.same(differ, [], `${what}: the engine and the BPF path agree on all ${list.length} (engine, BPF listed where not)`);
    return { e, b };
  };

  const opened = compare(t, 'new IPv6 flows', TCP.SYN, cases);
  const allowed = opened.e.filter((v) => v === 'pass').length;
  const denied = opened.e.filter((v) => v.startsWith('drop policy')).length;
  t.ok(allowed >= 8 && denied >= 8, `a table with both outcomes (${allowed} allowed, ${denied} denied)`);
  t.equal(opened.e.filter((v) => v.startsWith('drop') && !v.startsWith('drop policy')).length, 0, 'no drop for any other reason');
  t.ok(engine.stats().nodes.find((n) => n.name === 'policy6')!.packets >= cases.length, 'decided in policy6');

  t.same(w.apply(compiled(2, false)).problems, [], 'policy changed in the BPF maps (the allow from NET goes)');
  engine.setPolicy(encodePolicy(w.written()).blob);
  const established = cases.filter((_, i) => opened.e[i] === 'pass');
  const after = compare(t, 'established IPv6 flows after the change', TCP.ACK, established);
  t.ok(
    after.e.some((v) => v === 'drop policy-denied'),
    'some established flows are cut by the change',
  );
  t.ok(
    after.e.some((v) => v === 'pass'),
    'others go on',
  );
});

t.test(
  'a pod isolated by its IPv4 address, at an IPv6 address the ipcache lacks: dropped both ways (policy-ipv6), as the BPF path',
  async (t) => {
    // the pod behind the pod port (ifindex 3): LOCAL_BE (IPv4, isolated both ways, its table allows everything) and LOCAL_BE6
    const allowAll = [allow(IDENTITY_ANY, 'ingress', PROTO_ANY, 0, 0, 1), allow(IDENTITY_ANY, 'egress', PROTO_ANY, 0, 0, 2)];
    const written = (withIpv6: boolean): WrittenPolicy => ({
      generation: 1,
      isolated: 1,
      ipcache: [
        [
          { prefixlen: 0, addr: '0.0.0.0' },
          { identity: IDENTITY_WORLD, endpoint: 0, flags: 0 },
        ],
        [
          { prefixlen: 32, addr: LOCAL_BE },
          { identity: 300, endpoint: 9, flags: IpcacheFlags.INGRESS_ISO | IpcacheFlags.EGRESS_ISO },
        ],
      ],
      ...(withIpv6
        ? {
            ipcache6: [
              [
                { prefixlen: 128, addr: LOCAL_BE6 },
                { identity: 300, endpoint: 9, flags: IpcacheFlags.INGRESS_ISO | IpcacheFlags.EGRESS_ISO },
              ],
            ] as const,
          }
        : {}),
      tables: new Map([[9, allowAll.map((e) => ({ ...e }))]]),
    });
    const e = testEngine(t);
    const frames = () => [
      // from the pod (rx: the pod port), its IPv6 source
      frame6(
        { src: LOCAL_BE6, dst: NODE6_E, srcMac: '02:00:00:00:00:b2', dstMac: POD_PORT_MAC },
        { proto: 'udp', sport: 41000, dport: 30080, payload: Buffer.from('x') },
      ),
      // to the pod: eTP Local to its IPv6 address, out of the pod port
      frame6(
        { src: CLIENT6_E, dst: LB6_E(12), srcMac: '02:00:00:00:00:c1', dstMac: NODE_MAC },
        { proto: 'tcp', sport: 41001, dport: 80, flags: TCP.SYN },
      ),
    ];
    const run = () => e.runVector(frames(), { rxPort: [1, 0] }).map((r) => (r.next === 'output' ? 'pass' : `drop ${r.reason}`));
    e.setPolicy(encodePolicy(written(false), new Map([[3, LOCAL_BE]])).blob);
    t.same(run(), ['drop policy-ipv6', 'drop policy-ipv6'], 'the pod IPv6 address unknown: from it and to it, dropped');
    e.setPolicy(encodePolicy(written(false)).blob);
    t.same(run(), ['pass', 'pass'], 'without the pod interface known: not judged (as the BPF path without its pod_addrs entry)');
    e.setPolicy(encodePolicy(written(true), new Map([[3, LOCAL_BE]])).blob);
    t.same(run(), ['pass', 'pass'], 'the pod IPv6 address in the ipcache: its own policy (allow all) decides');
    t.ok((e.stats().reasons['policy-ipv6'] ?? 0) === 2, 'counted under policy-ipv6');
  },
);
