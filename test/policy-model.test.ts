/**
 * The policy compiler and evaluator beyond reachability matrices: the
 * compiled shape (identities, HOST, endpoints), the evaluator's lookup
 * order, port ranges as prefixes, diffs that touch only what changed,
 * stable ids and seeding, generations, and compile time at scale
 * (10K policies, 5K pods, 1K of them local).
 */
import t from 'tap';
import { PolicyCompiler, compilePolicy, type PolicyInputs } from '../src/model/policy/compile.js';
import {
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  NODE_RULE_ID,
  PROTO_ANY,
  PROTO_TCP,
  PROTO_UDP,
  type CompiledPolicy,
  type EndpointPolicy,
} from '../src/model/policy/compiled.js';
import { isEmptyDiff, ruleKeyString } from '../src/model/policy/diff.js';
import { decide, evaluate, identityOf, endpointOf } from '../src/model/policy/evaluate.js';
import { portInPrefix, portRangePrefixes } from '../src/model/policy/prefix.js';
import type { NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { toNetworkPolicy } from '../src/sources/policy-convert.js';
import { Cluster, NODES, netpol, podIP, podObj } from './helpers/policy-cluster.js';
import { scaleCluster, THIS_NODE } from './helpers/policy-scale.js';

// Thousands of compilations (a loaded CI box may take minutes): more than tap's default 30 s when run alone.
t.setTimeout(300_000);

/** What every compilation must satisfy, whatever the inputs. */
function invariants(cp: CompiledPolicy): string[] {
  const bad: string[] = [];
  if (cp.generation === 0) bad.push('generation is 0');
  const prefixes = new Set<string>();
  const ids = new Set<number>([IDENTITY_ANY]);
  for (const e of cp.identities) {
    if (prefixes.has(e.prefix)) bad.push(`prefix ${e.prefix} twice`);
    prefixes.add(e.prefix);
    ids.add(e.identity);
  }
  if (!cp.identities.some((e) => e.prefix === '0.0.0.0/0' && e.identity === IDENTITY_WORLD)) bad.push('no WORLD');
  const rules = new Set(cp.rules.map((r) => r.id));
  if (cp.rules[0]?.id !== NODE_RULE_ID) bad.push('rules[0] is not the node rule');
  for (let i = 1; i < cp.rules.length; i++) if (cp.rules[i]!.id <= cp.rules[i - 1]!.id) bad.push('rules not sorted by id');
  const epIds = new Set<number>();
  for (const ep of cp.endpoints) {
    if (epIds.has(ep.id) || ep.id <= 0) bad.push(`endpoint id ${ep.id}`);
    epIds.add(ep.id);
    for (const a of ep.addresses) {
      const e = cp.identities.find((x) => x.prefix === `${a}/32`);
      if (e?.endpoint !== ep.id) bad.push(`${ep.pod} ${a}: identity entry without its endpoint id`);
    }
    const keys = new Set<string>();
    for (const e of ep.entries) {
      const k = ruleKeyString(e);
      if (keys.has(k)) bad.push(`${ep.pod}: entry ${k} twice`);
      keys.add(k);
      if (!ids.has(e.peer)) bad.push(`${ep.pod}: entry ${k} names identity ${e.peer}, which maps no address`);
      if (!rules.has(e.ruleId)) bad.push(`${ep.pod}: entry ${k} names rule ${e.ruleId}, not in rules`);
      if (e.proto === PROTO_ANY && (e.port !== 0 || e.portPrefixLen !== 0)) bad.push(`${ep.pod}: PROTO_ANY with a port`);
      if (!ep.ingressIsolated && e.direction === 'ingress') bad.push(`${ep.pod}: ingress entries while not isolated`);
      if (!ep.egressIsolated && e.direction === 'egress') bad.push(`${ep.pod}: egress entries while not isolated`);
    }
  }
  return bad;
}

const node1 = (c: Cluster) => c.compiled[0]!;
const ep = (cp: CompiledPolicy, pod: string): EndpointPolicy => {
  const e = cp.endpoints.find((x) => x.pod === pod);
  if (!e) throw new Error(`no endpoint ${pod}`);
  return e;
};
const idOf = (cp: CompiledPolicy, ns: string, pod: string) => identityOf(cp, podIP(ns, pod));
const tcpTo = (src: string, dst: string, dport = 80) => ({ src, dst, proto: PROTO_TCP, dport });

t.test('the compiled shape on the x/y/z model, without policies', async (t) => {
  const c = new Cluster();
  c.compile();
  const cp = node1(c);
  t.same(invariants(cp), []);
  t.equal(cp.generation, 1);
  t.same(
    cp.endpoints.map((e) => e.pod),
    ['x/a', 'x/b', 'y/a', 'y/b', 'z/a', 'z/b'],
    'the pods on node1 are its endpoints',
  );
  t.ok(
    cp.endpoints.every((e) => !e.ingressIsolated && !e.egressIsolated && e.entries.length === 0),
    'none isolated',
  );
  t.equal(identityOf(cp, '192.168.0.1'), IDENTITY_HOST, 'the node address is HOST');
  t.equal(identityOf(cp, '192.168.0.2'), IDENTITY_WORLD, 'another node is WORLD');
  t.equal(identityOf(cp, '8.8.8.8'), IDENTITY_WORLD);
  const xc = cp.identities.find((e) => e.prefix === `${podIP('x', 'c')}/32`);
  t.ok(xc && xc.endpoint === undefined && xc.identity >= 16, 'a remote pod has an identity, no endpoint');
  t.not(idOf(cp, 'x', 'a'), idOf(cp, 'y', 'a'), 'same labels in other namespaces: other identities');
  t.same(cp.rules, [{ id: NODE_RULE_ID, policy: '(node)', direction: 'ingress', index: 0 }]);
});

t.test('HOST: the node reaches its pods whatever the policies; egress to node addresses is ordinary ipBlock policy', async (t) => {
  const c = new Cluster([netpol('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })]);
  c.compile();
  const cp = node1(c);
  t.same(invariants(cp), []);
  const d = decide(cp, tcpTo('192.168.0.1', podIP('x', 'a'), 8080), 'ingress')!;
  t.match(d, { verdict: 'allow', reason: 'rule', ruleId: NODE_RULE_ID, peer: IDENTITY_HOST }, 'node → x/a: the node rule');
  t.match(ep(cp, 'x/a').entries, [{ peer: IDENTITY_HOST, direction: 'ingress', proto: PROTO_ANY, ruleId: NODE_RULE_ID }]);
  t.match(decide(cp, { src: '192.168.0.1', dst: podIP('x', 'a'), proto: 1, dport: 0 }, 'ingress'), { verdict: 'allow' }, 'ICMP too');
  t.match(
    decide(cp, tcpTo('192.168.0.2', podIP('x', 'a')), 'ingress'),
    { verdict: 'deny', reason: 'no-match' },
    'another node is not HOST',
  );
  t.match(decide(cp, tcpTo(podIP('y', 'a'), podIP('x', 'a')), 'ingress'), { verdict: 'deny' });
  t.match(decide(cp, tcpTo(podIP('x', 'a'), '192.168.0.1'), 'egress'), { verdict: 'deny' }, 'egress to the node is policy');
  t.equal(ep(cp, 'y/a').entries.length, 0, 'a pod without isolated ingress has no node entry');

  c.addPolicy(
    netpol('x', 'to-nodes', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '192.168.0.0/24' } }] }] }),
  );
  c.compile();
  t.match(decide(node1(c), tcpTo(podIP('x', 'a'), '192.168.0.1'), 'egress'), { verdict: 'allow', reason: 'rule' }, 'ipBlock matches HOST');
  t.match(decide(node1(c), tcpTo(podIP('x', 'a'), '192.168.0.2'), 'egress'), { verdict: 'allow' });
});

t.test('HOST: node addresses under different policy prefixes get identities of their own, all allowed in', async (t) => {
  const d = new Cluster([
    netpol('x', 'deny-in', { podSelector: {}, policyTypes: ['Ingress'] }),
    netpol('x', 'to-lan', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '192.168.0.0/16' } }] }] }),
  ]).domain();
  const cp = compilePolicy({ ...d, node: { name: 'node1', addresses: ['192.168.0.1', '172.17.0.1'] } }).compiled;
  t.same(invariants(cp), []);
  t.equal(identityOf(cp, '192.168.0.1'), IDENTITY_HOST);
  const docker = identityOf(cp, '172.17.0.1');
  t.ok(docker >= 16, 'the second group has its own identity');
  t.match(decide(cp, tcpTo('172.17.0.1', podIP('x', 'a')), 'ingress'), { verdict: 'allow', ruleId: NODE_RULE_ID });
  t.match(decide(cp, tcpTo(podIP('x', 'a'), '192.168.0.1'), 'egress'), { verdict: 'allow' }, 'the address in the ipBlock');
  t.match(decide(cp, tcpTo(podIP('x', 'a'), '172.17.0.1'), 'egress'), { verdict: 'deny' }, 'the address outside it');
});

t.test('endpoints: host-network, unscheduled, remote and finished pods are none', async (t) => {
  const c = new Cluster();
  const hn = podObj('x', 'a');
  hn.spec.hostNetwork = true;
  hn.status.podIP = '192.168.0.1';
  hn.status.podIPs = [{ ip: '192.168.0.1' }];
  c.pods.set('x/a', hn);
  const done = podObj('x', 'b');
  done.status.phase = 'Succeeded';
  c.pods.set('x/b', done);
  const unscheduled = podObj('y', 'a');
  unscheduled.spec.nodeName = '';
  delete unscheduled.status.podIP;
  unscheduled.status.podIPs = [];
  c.pods.set('y/a', unscheduled);
  c.compile();
  const cp = node1(c);
  t.same(invariants(cp), []);
  t.same(
    cp.endpoints.map((e) => e.pod),
    ['y/b', 'z/a', 'z/b'],
  );
  t.equal(identityOf(cp, '192.168.0.1'), IDENTITY_HOST, 'a host-network pod is its node');
  t.equal(identityOf(cp, podIP('x', 'b')), IDENTITY_WORLD, 'a finished pod holds no address');
});

t.test('evaluator: LPM identity, exact then ANY, deny wins, then the longer (proto, port) prefix, then exact', async (t) => {
  const entry = (
    peer: number,
    proto: number,
    port: number,
    portPrefixLen: number,
    ruleId: number,
    verdict: 'allow' | 'deny' = 'allow',
  ) => ({
    peer,
    direction: 'ingress' as const,
    proto,
    port,
    portPrefixLen,
    verdict,
    ruleId,
  });
  const cp = (entries: ReturnType<typeof entry>[], ingressIsolated = true): CompiledPolicy => ({
    generation: 7,
    identities: [
      { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
      { prefix: '10.0.0.0/8', identity: 20 },
      { prefix: '10.1.0.0/16', identity: 21 },
      { prefix: '10.1.2.3/32', identity: 22 },
      { prefix: '10.9.9.9/32', identity: 30, endpoint: 1 },
    ],
    endpoints: [{ id: 1, pod: 'x/a', addresses: ['10.9.9.9'], ingressIsolated, egressIsolated: false, entries }],
    rules: [
      { id: 0, policy: '(node)', direction: 'ingress', index: 0 },
      ...[1, 2, 3, 4, 5].map((id) => ({ id, policy: 'x/p', direction: 'ingress' as const, index: id })),
    ],
  });
  const base = cp([]);
  t.same(
    ['10.1.2.3', '10.1.2.4', '10.2.0.1', '11.0.0.1'].map((a) => identityOf(base, a)),
    [22, 21, 20, IDENTITY_WORLD],
  );
  t.equal(endpointOf(base, '10.9.9.9')?.pod, 'x/a');
  const from21 = (dport: number, proto = PROTO_TCP) => decide(pcp, { src: '10.1.9.9', dst: '10.9.9.9', proto, dport }, 'ingress')!;
  let pcp = cp([entry(21, PROTO_TCP, 80, 16, 1), entry(IDENTITY_ANY, PROTO_TCP, 0, 0, 2)]);
  t.match(from21(80), { verdict: 'allow', ruleId: 1 }, 'exact identity, longer port prefix');
  t.match(from21(81), { verdict: 'allow', ruleId: 2 }, 'ANY when the exact lookup misses');
  t.match(from21(81, PROTO_UDP), { verdict: 'deny', reason: 'no-match' });
  pcp = cp([entry(21, PROTO_TCP, 0, 0, 1), entry(IDENTITY_ANY, PROTO_TCP, 80, 16, 2)]);
  t.match(from21(80), { ruleId: 2 }, 'the ANY entry with the longer port prefix wins over the exact one');
  t.match(from21(443), { ruleId: 1 });
  pcp = cp([entry(21, PROTO_TCP, 80, 16, 1), entry(IDENTITY_ANY, PROTO_TCP, 80, 16, 2)]);
  t.match(from21(80), { ruleId: 1 }, 'equal prefixes: the exact identity');
  pcp = cp([entry(21, PROTO_TCP, 80, 16, 1), entry(IDENTITY_ANY, PROTO_ANY, 0, 0, 2, 'deny')]);
  t.match(from21(80), { verdict: 'deny', ruleId: 2 }, 'deny wins over a longer allow of the other lookup');
  pcp = cp([entry(21, PROTO_ANY, 0, 0, 1, 'deny'), entry(21, PROTO_TCP, 80, 16, 2)]);
  t.match(from21(80), { verdict: 'allow', ruleId: 2 }, 'within one lookup the longest prefix is all the LPM returns');
  t.match(from21(22), { verdict: 'deny', ruleId: 1 });
  pcp = cp([entry(IDENTITY_ANY, PROTO_ANY, 0, 0, 3)]);
  t.match(
    decide(pcp, { src: '10.1.9.9', dst: '10.9.9.9', proto: 1, dport: 0 }, 'ingress'),
    { verdict: 'allow', ruleId: 3 },
    'PROTO_ANY: ICMP too',
  );
  pcp = cp([entry(22, PROTO_TCP, 8080, 13, 4)]);
  t.same(
    [8079, 8080, 8087, 8088].map((p) => decide(pcp, { src: '10.1.2.3', dst: '10.9.9.9', proto: PROTO_TCP, dport: p }, 'ingress')!.verdict),
    ['deny', 'allow', 'allow', 'deny'],
    'a /13 port prefix covers 8080..8087',
  );
  t.match(decide(cp([], false), tcpTo('10.1.9.9', '10.9.9.9'), 'ingress'), { verdict: 'allow', reason: 'not-isolated' });
  t.equal(decide(base, tcpTo('10.9.9.9', '10.1.9.9'), 'ingress'), undefined, 'no local endpoint at that end');
  t.match(evaluate(base, tcpTo('10.1.9.9', '10.9.9.9')), { verdict: 'deny', ingress: { reason: 'no-match' } });
  t.match(evaluate(base, tcpTo('10.1.9.9', '10.1.9.8')), { verdict: 'allow' }, 'neither end local: nothing to decide here');
});

t.test('evaluate: between two local endpoints, egress of the source first, then ingress of the destination', async (t) => {
  const c = new Cluster([
    netpol('x', 'a-out', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Egress'], egress: [{ ports: [{ port: 80 }] }] }),
    netpol('x', 'b-in', { podSelector: { matchLabels: { pod: 'b' } }, ingress: [{ ports: [{ port: 81 }] }] }),
  ]);
  c.compile();
  const cp = node1(c);
  const [a, b] = [podIP('x', 'a'), podIP('x', 'b')];
  t.match(evaluate(cp, tcpTo(a, b, 80)), { verdict: 'deny', egress: { verdict: 'allow' }, ingress: { verdict: 'deny' } });
  const e81 = evaluate(cp, tcpTo(a, b, 81));
  t.match(e81, { verdict: 'deny', egress: { verdict: 'deny' } });
  t.equal(e81.ingress, undefined, 'a packet denied at egress never reaches ingress');
  t.match(evaluate(cp, tcpTo(b, a, 81)), { verdict: 'allow', egress: { reason: 'not-isolated' }, ingress: { reason: 'not-isolated' } });
});

t.test('port ranges as the fewest aligned prefixes', async (t) => {
  const fmt = (lo: number, hi: number) => portRangePrefixes(lo, hi).map((p) => `${p.port}/${p.prefixLen}`);
  t.same(fmt(80, 80), ['80/16']);
  t.same(fmt(80, 81), ['80/15']);
  t.same(fmt(81, 90), ['81/16', '82/15', '84/14', '88/15', '90/16']);
  t.same(fmt(1024, 65535), ['1024/6', '2048/5', '4096/4', '8192/3', '16384/2', '32768/1']);
  t.equal(fmt(1, 65535).length, 16);
  // Random ranges: exact cover, no overlap, and no two prefixes that could merge.
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 300; i++) {
    const lo = 1 + Math.floor(rnd() * 65535);
    const hi = lo + Math.floor(rnd() * (65536 - lo));
    const ps = portRangePrefixes(lo, hi);
    let next = lo;
    for (const p of ps) {
      const size = 2 ** (16 - p.prefixLen);
      if (p.port !== next || p.port % size !== 0) t.fail(`${lo}..${hi}: ${p.port}/${p.prefixLen} misplaced`);
      next += size;
    }
    if (next !== hi + 1) t.fail(`${lo}..${hi}: covers up to ${next - 1}`);
    if (ps.length > 30) t.fail(`${lo}..${hi}: ${ps.length} prefixes`);
    const probe = lo + Math.floor(rnd() * (hi - lo + 1));
    if (!ps.some((p) => portInPrefix(probe, p.port, p.prefixLen))) t.fail(`${probe} not covered`);
    if (lo > 1 && ps.some((p) => portInPrefix(lo - 1, p.port, p.prefixLen))) t.fail(`${lo - 1} covered`);
  }
  t.pass('300 random ranges covered exactly');
});

t.test('diffs touch only what changed', async (t) => {
  const c = new Cluster([
    netpol('x', 'a-from-b', {
      podSelector: { matchLabels: { pod: 'a' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }],
    }),
    netpol('y', 'from-blue', {
      podSelector: {},
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }], ports: [{ port: 80 }] }],
    }),
  ]);
  c.compile();
  let before = node1(c);
  t.same(invariants(before), []);

  t.test('recompiling the same inputs: no writes, same generation, same objects', async (t) => {
    c.compile();
    t.ok(isEmptyDiff(c.diffs[0]!));
    t.equal(node1(c).generation, before.generation);
    t.equal(node1(c).identities, before.identities);
    t.equal(node1(c).endpoints, before.endpoints);
  });

  t.test('a remote pod relabelled into a selector: one entry in one table, the address map untouched', async (t) => {
    const idXc = idOf(before, 'x', 'c');
    c.setPodLabels('x/c', { pod: 'b', extra: 'yes' });
    c.compile();
    const cp = node1(c);
    const d = c.diffs[0]!;
    t.same(invariants(cp), []);
    t.equal(idOf(cp, 'x', 'c'), idXc, 'x/c kept its identity id (its old identity had no other member)');
    t.same(d.identities, { upsert: [], delete: [] });
    t.same(d.endpoints, { upsert: [], delete: [] });
    t.same(d.entries, [
      {
        endpoint: ep(cp, 'x/a').id,
        upsert: [{ peer: idXc, direction: 'ingress', proto: PROTO_ANY, port: 0, portPrefixLen: 0, verdict: 'allow', ruleId: 1 }],
        delete: [],
      },
    ]);
    t.equal(cp.generation, before.generation + 1);
    const others = cp.endpoints.filter((e) => e.pod !== 'x/a');
    t.ok(
      others.every((e) => before.endpoints.includes(e)),
      'every other endpoint is the very same object',
    );
    before = cp;
  });

  t.test('a pod relabelled to labels another pod has: it joins that identity; only its address entry changes', async (t) => {
    c.setPodLabels('x/c', { pod: 'b' });
    c.compile();
    const cp = node1(c);
    const d = c.diffs[0]!;
    t.same(invariants(cp), []);
    t.equal(idOf(cp, 'x', 'c'), idOf(cp, 'x', 'b'));
    t.same(d.identities, { upsert: [{ prefix: `${podIP('x', 'c')}/32`, identity: idOf(cp, 'x', 'b') }], delete: [] });
    t.same(
      d.entries.map((e) => [e.endpoint, e.upsert.length, e.delete.length]),
      [[ep(cp, 'x/a').id, 0, 1]],
      "x/a's table drops the entry of x/c's former identity",
    );
    before = cp;
  });

  t.test('a namespace relabelled into a namespaceSelector: the tables of that policy only, no address entry', async (t) => {
    c.setNamespaceLabels('z', { ns: 'z', team: 'blue' });
    c.compile();
    const cp = node1(c);
    const d = c.diffs[0]!;
    t.same(invariants(cp), []);
    t.same(d.identities, { upsert: [], delete: [] }, 'namespace labels are not part of identity keys');
    t.same(d.entries.map((e) => ep(cp, cp.endpoints.find((x) => x.id === e.endpoint)!.pod).pod).sort(), ['y/a', 'y/b']);
    const zIds = ['a', 'b', 'c'].map((p) => idOf(cp, 'z', p)).sort((a, b) => a - b);
    for (const e of d.entries) {
      t.same(
        e.upsert.map((u) => u.peer).sort((a, b) => a - b),
        zIds,
        'one entry per z pod identity',
      );
      t.ok(e.upsert.every((u) => u.proto === PROTO_TCP && u.port === 80 && u.portPrefixLen === 16));
      t.same(e.delete, []);
    }
    before = cp;
  });

  t.test('a policy deleted: its endpoints lose isolation and entries, its rules go, nothing else moves', async (t) => {
    const ruleIds = before.rules.filter((r) => r.policy === 'y/from-blue').map((r) => r.id);
    c.deletePolicy('y', 'from-blue');
    c.compile();
    const cp = node1(c);
    const d = c.diffs[0]!;
    t.same(invariants(cp), []);
    t.same(d.identities, { upsert: [], delete: [] });
    t.same(d.endpoints.upsert.map((e) => [e.pod, e.ingressIsolated]).sort(), [
      ['y/a', false],
      ['y/b', false],
    ]);
    t.same(d.endpoints.delete, []);
    t.same(d.rules, { upsert: [], delete: ruleIds });
    t.same(
      d.entries.map((e) => e.upsert.length),
      [0, 0],
    );
    t.ok(
      d.entries.every((e) => e.delete.length === 4),
      'y/a, y/b: the three z entries and the node entry go',
    );
    t.equal(d.generation.to, d.generation.from + 1);
  });
});

t.test('ids: stable while things stay, reused only in a later compilation, carried over by seed()', async (t) => {
  const c = new Cluster([
    netpol('x', 'p1', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }, { ports: [{ port: 81 }] }] }),
    netpol('y', 'p2', { podSelector: {}, ingress: [{}] }),
  ]);
  c.compile();
  const first = node1(c);
  const rid = (cp: CompiledPolicy, policy: string, index: number) => cp.rules.find((r) => r.policy === policy && r.index === index)?.id;
  t.same([rid(first, 'x/p1', 0), rid(first, 'x/p1', 1), rid(first, 'y/p2', 0)].sort(), [1, 2, 3]);

  c.addPolicy(netpol('x', 'p1', { podSelector: {}, ingress: [{ ports: [{ port: 8080 }] }, { ports: [{ port: 81 }] }] }));
  c.compile();
  t.equal(rid(node1(c), 'x/p1', 0), rid(first, 'x/p1', 0), 'a changed policy keeps its rule ids');
  t.equal(rid(node1(c), 'x/p1', 1), rid(first, 'x/p1', 1));

  const freed = rid(first, 'y/p2', 0)!;
  c.deletePolicy('y', 'p2').addPolicy(netpol('z', 'p3', { podSelector: {}, ingress: [{}] }));
  c.compile();
  t.not(rid(node1(c), 'z/p3', 0), freed, 'an id freed in this compilation is not reused in it');
  c.addPolicy(netpol('z', 'p4', { podSelector: {}, egress: [{}] }));
  c.compile();
  t.equal(rid(node1(c), 'z/p4', 0), freed, 'but in the next one, lowest first');

  const epIds = new Map(node1(c).endpoints.map((e) => [e.pod, e.id]));
  const xa = epIds.get('x/a')!;
  c.pods.delete('x/a');
  c.compile();
  t.same(
    node1(c).endpoints.map((e) => [e.pod, e.id]),
    [...epIds].filter(([p]) => p !== 'x/a'),
    'the others keep their endpoint ids',
  );
  c.pods.set('x/a', podObj('x', 'a'));
  c.compile();
  t.equal(ep(node1(c), 'x/a').id, xa, 'a new endpoint takes the lowest free id');

  t.test('seed: a restarted compiler compiling the same cluster writes nothing and keeps the generation', async (t) => {
    const prev = node1(c);
    const d = c.domain();
    const fresh = new PolicyCompiler();
    fresh.seed(prev);
    const r = fresh.compile({ ...d, node: NODES[0]! });
    t.ok(isEmptyDiff(r.diff), 'no writes');
    t.equal(r.compiled.generation, prev.generation);
    t.same(r.compiled, prev);
    t.throws(() => fresh.seed(prev), /compiled already/);
  });

  t.test('seed from what pinned maps tell for sure (addresses, no pod names): the same endpoint ids', async (t) => {
    const prev = node1(c);
    const anonymous: CompiledPolicy = { ...prev, endpoints: prev.endpoints.map((e) => ({ ...e, pod: '' })) };
    const fresh = new PolicyCompiler();
    fresh.seed(anonymous);
    const r = fresh.compile({ ...c.domain(), node: NODES[0]! });
    t.same(
      r.compiled.endpoints.map((e) => [e.pod, e.id]),
      prev.endpoints.map((e) => [e.pod, e.id]),
    );
    t.same(r.diff.entries, [], 'no table rewritten');
  });

  t.test('seeded ids nobody claims go back to the pool after the first compilation', async (t) => {
    const prev = node1(c);
    const gone = ep(prev, 'y/a').id;
    const d = c.domain();
    const fresh = new PolicyCompiler();
    fresh.seed(prev);
    const without = d.pods.filter((p) => !(p.namespace === 'y' && p.name === 'a'));
    const r1 = fresh.compile({ ...d, pods: without, node: NODES[0]! });
    t.notOk(
      r1.compiled.endpoints.some((e) => e.id === gone),
      'y/a is gone: its id is not used',
    );
    const newcomer: Pod = { ...without.find((p) => p.name === 'b' && p.namespace === 'z')!, name: 'new', ips: ['10.244.1.99'] };
    const r2 = fresh.compile({ ...d, pods: [...without, newcomer], node: NODES[0]! });
    t.equal(ep(r2.compiled, 'z/new').id, gone, 'the next new endpoint takes it (lowest free)');
  });

  t.test('seed, then the cluster changed while the agent was down: only the change is written', async (t) => {
    const prev = node1(c);
    c.setPodLabels('y/a', { pod: 'a', new: 'label' });
    const d = c.domain();
    const fresh = new PolicyCompiler();
    fresh.seed(prev);
    const r = fresh.compile({ ...d, node: NODES[0]! });
    t.same(invariants(r.compiled), []);
    t.same(r.diff.endpoints, { upsert: [], delete: [] });
    t.same(r.diff.entries, []);
    t.same(r.diff.rules, { upsert: [], delete: [] });
    t.same(r.diff.identities.delete, []);
    t.ok(r.diff.identities.upsert.length <= 1, 'at most the relabelled pod');
    t.equal(r.compiled.generation, prev.generation + (r.diff.identities.upsert.length ? 1 : 0));
  });
});

t.test('generation: 1 first, unchanged by a no-op, bumped by a change, never 0 when it wraps', async (t) => {
  const c = new Cluster();
  c.compile();
  t.equal(node1(c).generation, 1);
  c.compile();
  t.equal(node1(c).generation, 1);
  c.addPolicy(netpol('x', 'p', { podSelector: {} }));
  c.compile();
  t.equal(node1(c).generation, 2);
  const top = { ...node1(c), generation: 0xffffffff };
  const fresh = new PolicyCompiler();
  fresh.seed(top);
  c.addPolicy(netpol('x', 'q', { podSelector: {}, policyTypes: ['Egress'] }));
  t.equal(fresh.compile({ ...c.domain(), node: NODES[0]! }).compiled.generation, 1);
});

t.test('two pods claiming one address: the local one holds it, the other takes over when it goes', async (t) => {
  const c = new Cluster();
  const stale = podObj('y', 'c');
  stale.status.podIP = podIP('x', 'a');
  stale.status.podIPs = [{ ip: podIP('x', 'a') }];
  stale.metadata.labels = { pod: 'stale' };
  c.pods.set('y/c', stale);
  const d = c.domain();
  const comp = new PolicyCompiler();
  const r = comp.compile({ ...d, node: NODES[0]! });
  t.same(invariants(r.compiled), []);
  t.match(r.notes, [/address 10\.244\.1\.11 is claimed by pods x\/a and y\/c; it counts as x\/a's/]);
  t.equal(endpointOf(r.compiled, podIP('x', 'a'))?.pod, 'x/a');
  const xaId = identityOf(r.compiled, podIP('x', 'a'));
  const r2 = comp.compile({ ...d, pods: d.pods.filter((p) => !(p.namespace === 'x' && p.name === 'a')), node: NODES[0]! });
  t.same(invariants(r2.compiled), []);
  t.equal(endpointOf(r2.compiled, podIP('x', 'a')), undefined, 'no endpoint: y/c is on node2');
  t.equal(identityOf(r2.compiled, podIP('x', 'a')), xaId, 'the address now maps to y/c (the id passes on, as x/a left it empty)');
  t.same(r2.notes, []);
});

t.test('named ports: the same name in two containers means both numbers', async (t) => {
  const c = new Cluster([netpol('x', 'web', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ port: 'web' }] }] })]);
  c.pods.set(
    'x/a',
    podObj('x', 'a', {
      ports: [
        { name: 'web', containerPort: 80, protocol: 'TCP' },
        { name: 'web', containerPort: 8080, protocol: 'TCP' },
      ],
    }),
  );
  c.compile();
  const cp = node1(c);
  const verdict = (p: number) => decide(cp, tcpTo(podIP('y', 'a'), podIP('x', 'a'), p), 'ingress')!.verdict;
  t.same([80, 81, 8080].map(verdict), ['allow', 'deny', 'allow']);
});

t.test('an ipBlock /32 equal to a pod address: one prefix entry, the pod identity matches the block', async (t) => {
  const c = new Cluster([
    netpol('x', 'to-yb', {
      podSelector: { matchLabels: { pod: 'a' } },
      policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: `${podIP('y', 'b')}/32` } }] }],
    }),
  ]);
  c.compile();
  const cp = node1(c);
  t.same(invariants(cp), []);
  t.equal(cp.identities.filter((e) => e.prefix === `${podIP('y', 'b')}/32`).length, 1);
  t.match(decide(cp, tcpTo(podIP('x', 'a'), podIP('y', 'b')), 'egress'), { verdict: 'allow' });
  // The pod goes: its address falls back to the block's own identity, still allowed.
  c.pods.delete('y/b');
  c.compile();
  t.same(invariants(node1(c)), []);
  t.match(decide(node1(c), tcpTo(podIP('x', 'a'), podIP('y', 'b')), 'egress'), { verdict: 'allow' });
});

t.test('a policy with a bad peer converts with a problem and compiles isolating', async (t) => {
  const r = toNetworkPolicy(netpol('x', 'bad', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 'nope' } }] }] }));
  t.equal(r.problems.length, 1);
  const d = new Cluster().domain();
  const cp = compilePolicy({ ...d, policies: [r.value!], node: NODES[0]! }).compiled;
  t.ok(ep(cp, 'x/a').ingressIsolated);
  t.same(
    ep(cp, 'x/a').entries.map((e) => e.ruleId),
    [NODE_RULE_ID],
    'nothing but the node',
  );
});

// ---------------------------------------------------------------------------
// Scale

/** CPU milliseconds of fn (this process, all threads), and wall milliseconds. */
function measure<T>(fn: () => T): { value: T; cpu: number; wall: number } {
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  const value = fn();
  const wall = performance.now() - w0;
  const c = process.cpuUsage(c0);
  return { value, cpu: (c.user + c.system) / 1000, wall };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

t.test('scale: 10K policies, 5K pods, 1K local: full compile, and one change at a time', async (t) => {
  const opts = { namespaces: 100, pods: 5000, localPods: 1000, policies: 10000 };
  const d = scaleCluster(opts);
  const inputs = (over: Partial<PolicyInputs> = {}): PolicyInputs => ({ ...d, node: THIS_NODE, ...over });
  const full: number[] = [];
  const fullWall: number[] = [];
  let compiler = new PolicyCompiler();
  let last: CompiledPolicy | undefined;
  for (let i = 0; i < 3; i++) {
    compiler = new PolicyCompiler();
    const m = measure(() => compiler.compile(inputs()));
    full.push(m.cpu);
    fullWall.push(m.wall);
    last = m.value.compiled;
  }
  const stats = compiler.stats();
  t.same(invariants(last!), []);
  t.equal(stats.endpoints, 1000);
  t.equal(stats.policies, 10000);

  // One change at a time, each measured and then undone, five times each.
  const pods = d.pods;
  const local = pods.findIndex((p) => p.nodeName === THIS_NODE.name && p.labels.tier === 'web');
  // ns-0 has policies allowing from tier=web: relabelling a remote web pod there rewrites local tables.
  const remote = pods.findIndex((p) => p.nodeName !== THIS_NODE.name && p.labels.tier === 'web' && p.namespace === 'ns-0');
  const relabel = (i: number): Pod[] => pods.map((p, j) => (j === i ? { ...p, labels: { ...p.labels, tier: 'db' } } : p));
  const changedPolicy = (k: number): NetworkPolicy[] =>
    d.policies.map((p, j) =>
      j === k ? { ...p, ingress: p.ingress.map((r) => ({ ...r, ports: [{ protocol: 'TCP' as const, port: 9999 }] })) } : p,
    );
  const extra: NetworkPolicy = {
    namespace: 'ns-5',
    name: 'extra',
    podSelector: { requirements: [] },
    ingressIsolation: true,
    egressIsolation: false,
    ingress: [{ index: 0, peers: [{ kind: 'ipBlock', cidr: '10.64.3.0/24', except: ['10.64.3.128/25'] }], ports: 'any' }],
    egress: [],
  };
  // ns-5 (dev, pods of version v1) becomes prod: policies allowing from prod namespaces' v1 pods now name them.
  const nsRelabel = d.namespaces.map((n, i) => (i === 5 ? { ...n, labels: { ...n.labels, env: 'prod' } } : n));
  // Changes that matter here: policies selecting local pods, a namespace whose pods local tables name.
  const localApps = new Set(pods.filter((p) => p.nodeName === THIS_NODE.name).map((p) => `${p.namespace}/${p.labels.app}`));
  const selectsLocal = (p: NetworkPolicy) => localApps.has(`${p.namespace}/${p.podSelector.requirements[0]?.values[0]}`);
  const toChange = d.policies.findIndex((p) => selectsLocal(p) && p.ingressIsolation);
  const toDelete = d.policies.findIndex((p, j) => j !== toChange && selectsLocal(p) && p.ingressIsolation);
  const changes: Array<[string, Partial<PolicyInputs>]> = [
    ['no change', {}],
    ['a local pod relabelled', { pods: relabel(local) }],
    ['a remote pod relabelled', { pods: relabel(remote) }],
    ['a policy changed (its port)', { policies: changedPolicy(toChange) }],
    ['a policy added (ipBlock, new prefix splitting pod groups)', { policies: [...d.policies, extra] }],
    ['a policy deleted', { policies: d.policies.filter((_, j) => j !== toDelete) }],
    ['a namespace relabelled', { namespaces: nsRelabel }],
  ];
  const rows: string[] = [];
  for (const [name, over] of changes) {
    const cpu: number[] = [];
    const wall: number[] = [];
    let writes = '';
    for (let i = 0; i < 5; i++) {
      const m = measure(() => compiler.compile(inputs(over)));
      cpu.push(m.cpu);
      wall.push(m.wall);
      const df = m.value.diff;
      writes = `${df.identities.upsert.length + df.identities.delete.length} identity, ${df.entries.reduce((n, e) => n + e.upsert.length + e.delete.length, 0)} entry writes in ${df.entries.length} tables`;
      compiler.compile(inputs());
    }
    rows.push(
      `${name.padEnd(58)} ${median(cpu).toFixed(1).padStart(7)} ms cpu ${median(wall).toFixed(1).padStart(7)} ms wall   (${writes})`,
    );
  }
  // The incremental compiler decides as a fresh one after all that.
  const end = compiler.compile(
    inputs({ pods: relabel(local), namespaces: nsRelabel, policies: [...changedPolicy(toChange), extra] }),
  ).compiled;
  const ref = compilePolicy(
    inputs({ pods: relabel(local), namespaces: nsRelabel, policies: [...changedPolicy(toChange), extra] }),
  ).compiled;
  let differ = 0;
  const localPods = pods.filter((p) => p.nodeName === THIS_NODE.name);
  for (let i = 0; i < 2000; i++) {
    const a = localPods[(i * 7919) % localPods.length]!;
    const b = pods[(i * 104729) % pods.length]!;
    for (const [src, dst] of [
      [a, b],
      [b, a],
    ] as const) {
      const pkt = { src: src.ips[0]!, dst: dst.ips[0]!, proto: PROTO_TCP, dport: [8080, 8081, 5432, 9999][i % 4]! };
      if (evaluate(end, pkt).verdict !== evaluate(ref, pkt).verdict) differ++;
    }
  }
  t.equal(differ, 0, 'after the changes, the incremental compile decides 4000 sampled flows as a fresh one');
  const load = (await import('node:os')).loadavg()[0]!.toFixed(1);
  t.comment(
    [
      `policy compile at ${opts.policies} policies, ${opts.pods} pods (${opts.localPods} local), ${opts.namespaces} namespaces; load average ${load}:`,
      `identities ${stats.identities}, table entries ${stats.entries}, distinct selectors ${stats.selectors}`,
      `${'full compile (fresh compiler)'.padEnd(58)} ${median(full).toFixed(1).padStart(7)} ms cpu ${median(fullWall).toFixed(1).padStart(7)} ms wall`,
      ...rows,
    ].join('\n'),
  );
  // Loose bounds: the figures above are the result; these only catch a blow-up.
  t.ok(median(full) < 20000, `full compile ${median(full).toFixed(0)} ms cpu`);
});
