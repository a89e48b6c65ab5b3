/**
 * NetworkPolicy in the vector engine (addon/engine/policy.h, the policy
 * node), through its test entry:
 *  - vector by vector, over mixed vectors: allowed and denied new flows
 *    (ingress of the local backend after DNAT, egress of a pod client),
 *    flows of no isolated endpoint, hairpin, established flows (no
 *    re-evaluation: they skip the node), a policy change that cuts an
 *    established flow in both directions, a missing table and a policy not
 *    loaded yet (fail closed), blobs refused whole;
 *  - against the BPF path: one compiled policy set written by the map
 *    writer into the BPF maps and handed to the engine from the writer's
 *    mirror (written()), the same services in both, and a table of flows
 *    run through BPF_PROG_RUN and through the engine: the same verdict and
 *    reason for every one, new flows and, after a policy change, the
 *    established ones.
 */
import t, { type Test } from 'tap';
import {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  PROTO_ANY,
  PROTO_TCP,
  PROTO_UDP,
  type CompiledPolicy,
  type EndpointPolicy,
  type IdentityEntry,
  type PolicyRuleEntry,
  type PolicyRuleRef,
} from '../src/model/policy/compiled.js';
import { IpcacheFlags } from '../src/dataplane/bpf/codecs.js';
import { portPrefixes, tableOf, ipcacheKeyOf, type TableEntry } from '../src/dataplane/bpf/policy-entries.js';
import { PolicyMapWriter, type WrittenPolicy } from '../src/dataplane/bpf/policy-maps.js';
import { encodePolicy } from '../src/dataplane/afxdp/policy.js';
import type { EngineStatus } from '../src/dataplane/afxdp/runtime.js';
import { enginePolicyText } from '../src/cli/engine.js';
import { EngineDataplane } from '../src/dataplane/afxdp/dataplane.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import type { Frontend } from '../src/model/types.js';
import { frame, TCP, type FrameSpec, type L4 } from '../testkit/packet.js';
import { CLIENT, CLIENT_MAC, LOCAL_BE, NODE, NODE_MAC, POD_PORT_MAC, testEngine } from './helpers/engine.js';
import { be, fe } from './helpers/fixtures.js';
import { NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';

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

/** What the maps would hold for these identities and endpoints (the writer's normalization, by hand). */
function written(generation: number, identities: IdentityEntry[], eps: EndpointPolicy[], withTable = eps.map((e) => e.id)): WrittenPolicy {
  const byAddr = new Map<string, EndpointPolicy>(eps.flatMap((e) => e.addresses.map((a) => [`${a}/32`, e] as const)));
  const flags = (e: EndpointPolicy) =>
    (e.ingressIsolated ? IpcacheFlags.INGRESS_ISO : 0) | (e.egressIsolated ? IpcacheFlags.EGRESS_ISO : 0);
  const tables = new Map<number, readonly TableEntry[]>();
  for (const e of eps) if ((e.ingressIsolated || e.egressIsolated) && withTable.includes(e.id)) tables.set(e.id, tableOf(e).entries);
  return {
    generation,
    isolated: eps.filter((e) => e.ingressIsolated || e.egressIsolated).length,
    ipcache: identities.map((i) => {
      const e = byAddr.get(i.prefix);
      return [ipcacheKeyOf(i.prefix)!, { identity: i.identity, endpoint: e?.id ?? 0, flags: e ? flags(e) : 0 }] as const;
    }),
    tables,
  };
}

// ---- vector-level: the node over mixed vectors --------------------------------------------------------

const NET_ID = 200;
const POD_A = '10.244.1.9'; // not isolated, identity 100
const POD_B = '10.244.1.10'; // egress isolated, allowed nowhere useful
const WORLD_CLIENT = '198.18.0.5';
const ETP_LOCAL = '198.51.100.12'; // -> LOCAL_BE:8080, eTP Local
const CLUSTER_IP = '10.96.0.10'; // -> LOCAL_BE:8080

const unitIds: IdentityEntry[] = [
  { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
  { prefix: `${NODE}/32`, identity: IDENTITY_HOST },
  { prefix: '203.0.113.0/24', identity: NET_ID },
  { prefix: `${LOCAL_BE}/32`, identity: 101, endpoint: 1 },
  { prefix: `${POD_A}/32`, identity: 100, endpoint: 2 },
  { prefix: `${POD_B}/32`, identity: 102, endpoint: 3 },
];
const unitEps = (ingress: PolicyRuleEntry[]): EndpointPolicy[] => [
  { id: 1, pod: 'x/web', addresses: [LOCAL_BE], ingressIsolated: true, egressIsolated: false, entries: ingress },
  { id: 2, pod: 'x/a', addresses: [POD_A], ingressIsolated: false, egressIsolated: false, entries: [] },
  {
    id: 3,
    pod: 'x/b',
    addresses: [POD_B],
    ingressIsolated: false,
    egressIsolated: true,
    entries: [allow(999, 'egress', PROTO_ANY, 0, 0, 3)],
  },
];
const webFromNet = allow(NET_ID, 'ingress', PROTO_TCP, 8080, 16, 1);
const webFromA = allow(100, 'ingress', PROTO_TCP, 8080, 16, 2);

const up = (src: string, dst: string, l4: L4): Buffer => frame({ src, dst, srcMac: CLIENT_MAC, dstMac: NODE_MAC }, l4);
const pod = (src: string, dst: string, l4: L4): Buffer => frame({ src, dst, srcMac: '02:00:00:00:00:d1', dstMac: POD_PORT_MAC }, l4);
const syn = (sport: number, dport: number): L4 => ({ proto: 'tcp', sport, dport, flags: TCP.SYN, seq: 1000 });
const ack = (sport: number, dport: number): L4 => ({ proto: 'tcp', sport, dport, flags: TCP.ACK, seq: 1001, ack: 1 });
const udp = (sport: number, dport: number): L4 => ({ proto: 'udp', sport, dport, payload: Buffer.from('x') });

const verdicts = (rs: Array<{ next: string; reason: string }>) => rs.map((r) => (r.next === 'output' ? 'output' : `drop ${r.reason}`));
const nodePackets = (e: ReturnType<typeof testEngine>, name: string) => e.stats().nodes.find((n) => n.name === name)!.packets;

t.test('the policy node over mixed vectors: new flows decided after DNAT, established ones pass without it', async (t) => {
  const e = testEngine(t);
  const info = e.setPolicy(encodePolicy(written(7, unitIds, unitEps([webFromNet, webFromA]))).blob);
  t.match(info, { generation: 7, isolated: 2, prefixes: 6, endpoints: 2, tables: 2, epoch: 1 }, 'the policy in force');

  e.trace(16);
  const v1 = e.runVector(
    [
      up(CLIENT, ETP_LOCAL, syn(41000, 80)), // ingress of LOCAL_BE from NET: allowed
      up(WORLD_CLIENT, ETP_LOCAL, syn(41001, 80)), // from WORLD: no rule
      pod(POD_A, CLUSTER_IP, syn(41002, 80)), // from identity 100: allowed
      pod(POD_B, CLUSTER_IP, syn(41003, 80)), // POD_B's egress: denied
      up(CLIENT, NODE, udp(41004, 30080)), // remote backends, nobody isolated: allowed
      pod(LOCAL_BE, CLUSTER_IP, syn(41005, 80)), // hairpin: never blocked
    ],
    { rxPort: [0, 0, 1, 1, 0, 1] },
  );
  t.same(
    verdicts(v1),
    ['output', 'drop policy-denied', 'output', 'drop policy-denied', 'output', 'output'],
    'allowed, denied (ingress), allowed, denied (egress), not isolated, hairpin',
  );
  t.equal(nodePackets(e, 'policy'), 6, 'every new flow went through the policy node');
  t.equal(e.stats().reasons['policy-denied'], 2, 'denials counted per reason');
  t.equal(e.stats().sessions.live, 8, 'sessions for the four allowed flows only (none for the denied ones)');

  const v2 = e.runVector(
    [
      up(CLIENT, ETP_LOCAL, ack(41000, 80)),
      pod(LOCAL_BE, CLIENT, { proto: 'tcp', sport: 8080, dport: 41000, flags: TCP.SYN | TCP.ACK }),
      pod(POD_A, CLUSTER_IP, ack(41002, 80)),
      up(CLIENT, NODE, udp(41004, 30080)),
      up(WORLD_CLIENT, ETP_LOCAL, ack(41001, 80)), // the denied flow has no session: not opening
    ],
    { rxPort: [0, 1, 1, 0, 0] },
  );
  t.same(verdicts(v2), ['output', 'output', 'output', 'output', 'drop not-opening'], 'established flows and replies pass');
  t.equal(nodePackets(e, 'policy'), 6, 'established flows of the policy in force skip the node (one compare in session)');
  const recs = e.traceTake();
  t.same(recs[6]!.path, ['input', 'ip4-parse', 'session', 'nat', 'l2-rewrite', 'output'], 'an established packet: no policy node');
  t.same(recs[0]!.path, ['input', 'ip4-parse', 'session', 'lb', 'policy', 'nat', 'l2-rewrite', 'output'], 'a new flow: lb, then policy');

  // The allow from NET goes: the established flow is checked again and cut, both directions.
  t.equal(e.setPolicy(encodePolicy(written(8, unitIds, unitEps([webFromA]))).blob).epoch, 2, 'a new epoch');
  const v3 = e.runVector(
    [
      up(CLIENT, ETP_LOCAL, ack(41000, 80)),
      pod(LOCAL_BE, CLIENT, { proto: 'tcp', sport: 8080, dport: 41000, flags: TCP.ACK }),
      pod(POD_A, CLUSTER_IP, ack(41002, 80)),
      up(CLIENT, NODE, udp(41004, 30080)),
    ],
    { rxPort: [0, 1, 1, 0] },
  );
  t.same(verdicts(v3), ['drop policy-denied', 'drop policy-denied', 'output', 'output'], 'the cut flow drops both ways; the others pass');
  // both halves of the cut flow are in this vector: the session node has looked both up before the policy node runs
  t.equal(nodePackets(e, 'policy'), 10, 'each packet of the vector re-checked once');
  const v4 = e.runVector([up(CLIENT, ETP_LOCAL, ack(41000, 80)), pod(POD_A, CLUSTER_IP, ack(41002, 80))], { rxPort: [0, 1] });
  t.same(verdicts(v4), ['drop policy-denied', 'output'], 'decisions stand until the next change');
  t.equal(nodePackets(e, 'policy'), 10, 'without the node');

  // Nothing isolated: nothing enforced, the node is not even visited (the BPF path's pol_active_gen() 0).
  e.setPolicy(encodePolicy(written(9, unitIds, [])).blob);
  t.same(verdicts(e.runVector([up(CLIENT, ETP_LOCAL, ack(41000, 80))])), ['output'], 'the flow passes again with nobody isolated');
  t.equal(nodePackets(e, 'policy'), 10, 'no policy node with nobody isolated');
});

t.test('fails closed: an isolated endpoint without a table, a policy required and not loaded', async (t) => {
  const e = testEngine(t);
  e.setPolicy(encodePolicy(written(1, unitIds, unitEps([webFromNet]), [3])).blob);
  t.same(
    verdicts(e.runVector([up(CLIENT, ETP_LOCAL, syn(42000, 80)), up(CLIENT, NODE, udp(42001, 30080))])),
    ['drop policy-no-table', 'output'],
    'no table: the isolated endpoint denies; others pass',
  );
  t.equal(e.stats().reasons['policy-no-table'], 1, 'counted as policy-no-table');

  const f = testEngine(t);
  f.requirePolicy(true);
  t.equal(f.stats().policy, null, 'no policy loaded');
  t.equal(f.stats().policyRequired, true, 'required');
  t.same(
    verdicts(f.runVector([up(CLIENT, NODE, udp(42002, 30080)), up(CLIENT, ETP_LOCAL, syn(42003, 80))])),
    ['drop policy-not-loaded', 'drop policy-not-loaded'],
    'required and not loaded: nothing forwarded',
  );
  f.setPolicy(encodePolicy(written(1, unitIds, unitEps([webFromNet]))).blob);
  t.same(
    verdicts(f.runVector([up(CLIENT, NODE, udp(42002, 30080)), up(CLIENT, ETP_LOCAL, syn(42003, 80))])),
    ['output', 'output'],
    'once loaded, decided by it',
  );

  const g = testEngine(t);
  t.same(verdicts(g.runVector([up(CLIENT, ETP_LOCAL, syn(42004, 80))])), ['output'], 'no policy, not required (policy off): as before');
  t.equal(nodePackets(g, 'policy'), 0, 'and no policy node');
});

t.test('the epoch wraps after 32767 policies: decisions recorded before are forgotten, not taken for new ones', async (t) => {
  const e = testEngine(t);
  const allowing = encodePolicy(written(1, unitIds, unitEps([webFromNet]))).blob;
  const denying = encodePolicy(written(2, unitIds, unitEps([]))).blob;
  t.equal(e.setPolicy(allowing).epoch, 1, 'epoch 1 allows the flow');
  t.same(verdicts(e.runVector([up(CLIENT, ETP_LOCAL, syn(45000, 80))])), ['output'], 'opened and allowed under epoch 1');
  let last = 0;
  for (let i = 0; i < 32766; i++) last = e.setPolicy(denying).epoch;
  t.equal(last, 32767, 'the last epoch before the wrap');
  t.equal(e.setPolicy(denying).epoch, 1, 'wrapped to 1 again');
  t.same(
    verdicts(e.runVector([up(CLIENT, ETP_LOCAL, ack(45000, 80))])),
    ['drop policy-denied'],
    "the flow's epoch-1 decision was forgotten: checked again under the policy in force, denied",
  );
});

t.test('a policy blob that fails a check is refused whole; the one in force stays', async (t) => {
  const e = testEngine(t);
  const good = encodePolicy(written(3, unitIds, unitEps([webFromA]))).blob;
  e.setPolicy(good);
  t.throws(() => e.setPolicy(good.subarray(0, good.length - 4)), /policy blob: \d+ bytes, its counts say \d+/);
  const badDir = Buffer.from(good);
  badDir[badDir.length - 16 + 10] = 7;
  t.throws(() => e.setPolicy(badDir), /direction 7/);
  const badTable = Buffer.from(good);
  badTable.writeUInt32LE(99, 40 + 6 * 16 + 4); // the first endpoint's table (header 40)
  t.throws(() => e.setPolicy(badTable), /endpoint 1 names table 99 of 2/);
  const hostBits = Buffer.from(good);
  hostBits[40 + 2 * 16 + 3] = 1; // 203.0.113.1/24
  t.throws(() => e.setPolicy(hostBits), /prefix 2 has length 24 or host bits set/);
  t.match(e.stats().policy, { generation: 3, epoch: 1 }, 'the first policy still in force');
  t.same(verdicts(e.runVector([up(CLIENT, ETP_LOCAL, syn(43000, 80))])), ['drop policy-denied'], 'and enforced');
});

t.test('the rule lookup is the LPM trie lookup: longest port prefix, deny over allow, ANY identity', async (t) => {
  // ports 30000-30010 allowed to anyone by prefixes, 30005 denied; UDP denied to all but identity 100 on 53.
  const entries = [
    ...portPrefixes(30000, 30010).map((p) => allow(IDENTITY_ANY, 'ingress', PROTO_TCP, p.port, p.portPrefixLen, 4)),
    deny(IDENTITY_ANY, 'ingress', PROTO_TCP, 30005, 16, 5),
    deny(IDENTITY_ANY, 'ingress', PROTO_UDP, 0, 0, 6),
    allow(100, 'ingress', PROTO_UDP, 53, 16, 7),
    deny(NET_ID, 'ingress', PROTO_TCP, 0, 0, 8),
    allow(NET_ID, 'ingress', PROTO_TCP, 30001, 16, 9),
  ];
  const svc = (port: number, protocol: 'TCP' | 'UDP') => ({
    ip: '10.96.1.1',
    port,
    protocol,
    flags: 0,
    svcId: 100 + port,
    affinityTimeout: 0,
    cluster: [{ ip: LOCAL_BE, port, local: true }],
    local: [{ ip: LOCAL_BE, port, local: true }],
  });
  const { table } = await import('./helpers/engine.js');
  const e = testEngine(t, {
    table: table({
      frontends: [
        svc(29999, 'TCP'),
        svc(30000, 'TCP'),
        svc(30001, 'TCP'),
        svc(30005, 'TCP'),
        svc(30010, 'TCP'),
        svc(30011, 'TCP'),
        svc(53, 'UDP'),
      ],
    }),
  });
  e.setPolicy(encodePolicy(written(1, unitIds, unitEps(entries))).blob);
  const cases: Array<[string, string, L4, string]> = [
    ['any peer, 29999', POD_A, syn(44000, 29999), 'drop policy-denied'],
    ['any peer, 30000', POD_A, syn(44001, 30000), 'output'],
    ['any peer, 30005 (denied within the range)', POD_A, syn(44002, 30005), 'drop policy-denied'],
    ['any peer, 30010', POD_A, syn(44003, 30010), 'output'],
    ['any peer, 30011', POD_A, syn(44004, 30011), 'drop policy-denied'],
    ['udp 53 from identity 100: the ANY deny wins', POD_A, udp(44005, 53), 'drop policy-denied'],
    ['NET: its TCP deny wins over the ANY range', '203.0.113.9', syn(44006, 30000), 'drop policy-denied'],
    ['NET: its own narrower allow is under its deny', '203.0.113.9', syn(44007, 30001), 'drop policy-denied'],
  ];
  const rs = e.runVector(
    cases.map(([, src, l4]) => pod(src, '10.96.1.1', l4)),
    { rxPort: cases.map(() => 1) },
  );
  verdicts(rs).forEach((v, i) => t.equal(v, cases[i]![3], cases[i]![0]));
});

t.test('bpfproxy engine stats: the policy line says what the engine enforces, and when it cannot', async (t) => {
  const e = testEngine(t);
  const status = (over: Partial<EngineStatus> = {}) => ({ engine: e.stats(), ...over }) as EngineStatus;
  t.equal(enginePolicyText(status()), 'off (not enforced by the engine)', 'no policy, not required');
  e.requirePolicy(true);
  t.equal(enginePolicyText(status()), 'not loaded: the policy node drops what it gets', 'required, none loaded');
  e.setPolicy(encodePolicy(written(4, unitIds, [])).blob);
  t.equal(enginePolicyText(status()), 'generation 4, no endpoint isolated: nothing to enforce');
  e.setPolicy(encodePolicy(written(5, unitIds, unitEps([webFromA]))).blob);
  e.runVector([up(CLIENT, ETP_LOCAL, syn(46000, 80))]);
  t.match(
    enginePolicyText(status()),
    /^generation 5 \(the BPF path's\), 2 isolated endpoint\(s\), 6 prefixes, 2 table\(s\) of 2 entries \([\d.]+ MiB\); 1 packet\(s\) denied$/,
  );
  t.match(
    enginePolicyText(status({ policyError: 'no policy writer' })),
    /^NOT LOADED \(no policy writer\): no frontend is steered to the engine$/,
  );
});

// ---- against the BPF path: one compiled policy set, both dataplanes -------------------------------------

const ID = { CLIENT: 100, WEB: 101, DNS: 102, OTHER: 103, REMOTE: 104, NET: 200, EXCEPT: 201 } as const;
const P_CLIENT = '10.244.1.99';
const WEB_A = '10.244.1.11';
const WEB_B = '10.244.1.12';
const WEB_C = '10.244.1.14';
const DNS = '10.244.1.13';
const OTHER = '10.244.1.20';
const REMOTE = '10.244.2.11';
const EXCEPT = '192.0.2.100';
const OUTSIDER = '192.0.2.101';
const WORLD = '198.18.0.7';

const bpfIds: IdentityEntry[] = [
  { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
  { prefix: `${NODE_IP}/32`, identity: IDENTITY_HOST },
  { prefix: '192.0.2.0/24', identity: ID.NET },
  { prefix: `${EXCEPT}/32`, identity: ID.EXCEPT },
  { prefix: `${P_CLIENT}/32`, identity: ID.CLIENT, endpoint: 1 },
  { prefix: `${WEB_A}/32`, identity: ID.WEB, endpoint: 2 },
  { prefix: `${WEB_B}/32`, identity: ID.WEB, endpoint: 3 },
  { prefix: `${WEB_C}/32`, identity: ID.WEB, endpoint: 6 },
  { prefix: `${DNS}/32`, identity: ID.DNS, endpoint: 4 },
  { prefix: `${OTHER}/32`, identity: ID.OTHER, endpoint: 5 },
  { prefix: `${REMOTE}/32`, identity: ID.REMOTE },
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
  identities: bpfIds,
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

t.test('the engine and BPF_PROG_RUN take the same policy decisions from one compiled policy set', async (t) => {
  const node = await progrunNode(t);
  // Backends are picked at random in both: the sets hold endpoints with the same rules and none of the
  // clients (a client that is its own backend is never blocked: test/self has that on its own).
  const web = [be(WEB_B, 8080), be(WEB_C, 8080)];
  const services = new Map<string, Frontend[]>([
    [
      'test/web',
      [
        fe('ClusterIP', '10.96.0.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
        fe('NodePort', '0.0.0.0', 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
        fe('LoadBalancer', '198.51.100.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
      ],
    ],
    ['test/range', [fe('ClusterIP', '10.96.0.30', 30005, 'TCP', [be(WEB_B, 30005), be(WEB_C, 30005)])]],
    ['test/range2', [fe('ClusterIP', '10.96.0.31', 30004, 'TCP', [be(WEB_B, 30004), be(WEB_C, 30004)])]],
    ['test/udp', [fe('LoadBalancer', '198.51.100.20', 53, 'UDP', [be(WEB_B, 53), be(WEB_C, 53)])]],
    ['test/remote', [fe('ClusterIP', '10.96.0.20', 80, 'TCP', [be(REMOTE, 8080, false)])]],
    ['test/dns', [fe('ClusterIP', '10.96.0.53', 53, 'UDP', [be(DNS, 53)])]],
    ['test/other', [fe('ClusterIP', '10.96.0.40', 80, 'TCP', [be(OTHER, 80)])]],
    ['test/self', [fe('ClusterIP', '10.96.0.60', 80, 'TCP', [be(P_CLIENT, 8080)])]],
  ]);
  node.rec.setNodeAddresses([NODE_IP]);
  t.same(node.rec.syncAll(services).problems, [], 'BPF path programmed');
  const w = new PolicyMapWriter(node.dp.maps);
  t.same(w.apply(compiled(1, true)).problems, [], 'policy written to the BPF maps');

  const engine = createEngine({ vector: 256, sessions: 1 << 14 });
  t.teardown(() => engine.close());
  const edp = new EngineDataplane((blob) => engine.setTable(blob), {
    snatPorts: [40000, 49999],
    hairpinIp: '169.254.42.1',
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
  });
  edp.setPorts([
    { ifindex: 2, name: 'd0', mac: NODE_MAC, pod: false },
    { ifindex: 3, name: 'cali0', mac: POD_PORT_MAC, pod: true },
  ]);
  edp.setNodeAddresses([NODE_IP]);
  const backends = [WEB_B, WEB_C, REMOTE, DNS, OTHER, P_CLIENT];
  edp.setNeighbours(backends.map((ip) => ({ ip, port: ip === REMOTE ? 0 : 1, mac: '02:00:00:00:00:b1', snat: NODE_IP })));
  t.same(edp.syncAll(services).problems, [], 'engine programmed');
  engine.requirePolicy(true);
  engine.setPolicy(encodePolicy(w.written()).blob);

  const POLICY_REASONS = ['policy-denied', 'policy-no-table', 'policy-unknown-flow'];
  const bpf = (c: Case, flags: number): string => {
    const before = POLICY_REASONS.map((r) => reasonCount(node.dp, r));
    const l4: L4 =
      c.proto === 'tcp'
        ? { proto: 'tcp', sport: c.sport, dport: c.dport, flags, seq: 1 }
        : { proto: 'udp', sport: c.sport, dport: c.dport };
    const r = node.run(c.from === 'pod' ? 'fromPod' : 'fromData', { src: c.src, dst: c.dst }, l4);
    if (r.verdict !== 'drop') return 'pass';
    const after = POLICY_REASONS.map((r) => reasonCount(node.dp, r));
    const which = POLICY_REASONS.find((_, i) => after[i]! > before[i]!);
    return `drop ${which ?? 'other'}`;
  };
  const eng = (cases: Case[], flags: number): string[] => {
    const frames = cases.map((c) => {
      const f: FrameSpec = { src: c.src, dst: c.dst, srcMac: '02:00:00:00:00:c1', dstMac: c.from === 'pod' ? POD_PORT_MAC : NODE_MAC };
      return frame(
        f,
        c.proto === 'tcp'
          ? { proto: 'tcp', sport: c.sport, dport: c.dport, flags, seq: 1 }
          : { proto: 'udp', sport: c.sport, dport: c.dport },
      );
    });
    return engine
      .runVector(frames, { rxPort: cases.map((c) => (c.from === 'pod' ? 1 : 0)) })
      .map((r) => (r.next === 'output' ? 'pass' : `drop ${r.reason}`));
  };

  let sport = 20000;
  const cases: Case[] = [];
  const pods = [P_CLIENT, WEB_A, DNS, OTHER];
  const outside = [EXCEPT, OUTSIDER, WORLD, REMOTE];
  const podDsts: Array<[string, number, 'tcp' | 'udp']> = [
    ['10.96.0.10', 80, 'tcp'],
    ['10.96.0.30', 30005, 'tcp'],
    ['10.96.0.31', 30004, 'tcp'],
    ['10.96.0.20', 80, 'tcp'],
    ['10.96.0.53', 53, 'udp'],
    ['10.96.0.40', 80, 'tcp'],
    ['10.96.0.60', 80, 'tcp'],
  ];
  const dataDsts: Array<[string, number, 'tcp' | 'udp']> = [
    [NODE_IP, 30080, 'tcp'],
    ['198.51.100.10', 80, 'tcp'],
    ['198.51.100.20', 53, 'udp'],
  ];
  for (const src of pods) for (const [dst, dport, proto] of podDsts) cases.push({ from: 'pod', src, dst, dport, proto, sport: sport++ });
  for (const src of outside)
    for (const [dst, dport, proto] of dataDsts) cases.push({ from: 'data', src, dst, dport, proto, sport: sport++ });

  const describe = (c: Case) => `${c.from} ${c.src}:${c.sport} -> ${c.dst}:${c.dport}/${c.proto}`;
  const compare = (t: Test, what: string, flags: number, list: Case[]) => {
    const e = eng(list, flags);
    const b = list.map((c) => bpf(c, flags));
    const differ = list.map((c, i) => [describe(c), e[i], b[i]] as const).filter(([, x, y]) => x !== y);
    t.same(differ, [], `${what}: the engine and the BPF path agree on all ${list.length} (engine, BPF listed where not)`);
    return { e, b };
  };

  const opened = compare(t, 'new flows', TCP.SYN, cases);
  const allowed = opened.e.filter((v) => v === 'pass').length;
  const denied = opened.e.filter((v) => v.startsWith('drop policy')).length;
  t.ok(allowed >= 10 && denied >= 10, `a table with both outcomes (${allowed} allowed, ${denied} denied)`);
  t.equal(opened.e.filter((v) => v.startsWith('drop') && !v.startsWith('drop policy')).length, 0, 'no drop for any other reason');

  // The allow from NET goes: flows it let in are cut at their next packet, in both.
  t.same(w.apply(compiled(2, false)).problems, [], 'policy changed in the BPF maps');
  engine.setPolicy(encodePolicy(w.written()).blob);
  const established = cases.filter((_, i) => opened.e[i] === 'pass');
  const after = compare(t, 'established flows after the change', TCP.ACK, established);
  t.ok(
    after.e.some((v) => v === 'drop policy-denied'),
    'some established flows are cut by the change',
  );
  t.ok(
    after.e.some((v) => v === 'pass'),
    'others go on',
  );

  // Tables that do not fit are written deny-all (the writer fails closed): the engine holds the same.
  const small = new PolicyMapWriter(node.dp.maps, undefined, 3);
  const report = small.apply(compiled(3, true));
  t.ok(
    report.problems.some((p) => p.denyAll),
    'some tables did not fit and are deny-all in the BPF maps',
  );
  const held = small.written();
  t.ok(
    [...held.tables.values()].some((l) => l.length === 0),
    'written() shows them empty, as the maps hold them',
  );
  engine.setPolicy(encodePolicy(held).blob);
  const fresh = cases.map((c) => ({ ...c, sport: c.sport + 10_000 }));
  const denyAll = compare(t, 'new flows under deny-all tables', TCP.SYN, fresh);
  t.ok(denyAll.e.filter((v) => v === 'pass').length < allowed, 'fewer flows pass than with the whole tables');
});
