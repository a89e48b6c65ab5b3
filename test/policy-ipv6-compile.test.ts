/**
 * The policy compiler with IPv6 (src/model/policy/): pods' IPv6 addresses
 * from status.podIPs, IPv6 ipBlocks with except, this node's IPv6
 * addresses, and the families kept apart (::/0 is IDENTITY_WORLD6; an
 * ipBlock of one family matches no identity of the other). Decisions are
 * read with the reference evaluator (evaluate.ts), which takes the
 * datapath's steps; incremental compilations are checked against fresh ones.
 */
import t from 'tap';
import { compilePolicy, PolicyCompiler, type PolicyInputs } from '../src/model/policy/compile.js';
import { IDENTITY_HOST, IDENTITY_WORLD, IDENTITY_WORLD6, NODE_RULE_ID, type CompiledPolicy } from '../src/model/policy/compiled.js';
import { decide, identityOf } from '../src/model/policy/evaluate.js';
import type { NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { toNetworkPolicy, toPod } from '../src/sources/policy-convert.js';

const pod = (ns: string, name: string, labels: Record<string, string>, ips: string[], nodeName = 'n1'): Pod =>
  toPod({
    metadata: { name, namespace: ns, labels },
    spec: { nodeName, containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIPs: ips.map((ip) => ({ ip })) },
  }).value!;

const policy = (ns: string, name: string, spec: Record<string, unknown>): NetworkPolicy => {
  const r = toNetworkPolicy({ metadata: { name, namespace: ns }, spec });
  if (r.problems.length) throw new Error(JSON.stringify(r.problems));
  return r.value!;
};

const WEB4 = '10.244.1.11';
const WEB6 = 'fd00:10:244:1::11';
const CLI4 = '10.244.1.12';
const CLI6 = 'fd00:10:244:1::12';
const V6ONLY = 'fd00:10:244:1::30';
const NODE4 = '192.168.0.1';
const NODE6 = '2001:db8::1'; // sorts before 203.0.113.1: HOST must still be the IPv4 one

const pods = (): Pod[] => [
  pod('x', 'web', { app: 'web' }, [WEB4, WEB6]),
  pod('x', 'client', { app: 'client' }, [CLI4, CLI6]),
  pod('x', 'v6only', { app: 'client' }, [V6ONLY]),
  pod('y', 'remote', { app: 'client' }, ['fd00:10:244:2::5'], 'n2'),
];

const webIn = policy('x', 'web-in', {
  podSelector: { matchLabels: { app: 'web' } },
  ingress: [
    { from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 'http' }] },
    { from: [{ ipBlock: { cidr: '2001:db8:5::/48', except: ['2001:db8:5:1::/64'] } }] },
    { from: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ port: 9999 }] },
  ],
});

const inputs = (policies: NetworkPolicy[], p: Pod[] = pods()): PolicyInputs => ({
  pods: p,
  namespaces: [
    { name: 'x', labels: { 'kubernetes.io/metadata.name': 'x' } },
    { name: 'y', labels: { 'kubernetes.io/metadata.name': 'y' } },
  ],
  policies,
  node: { name: 'n1', addresses: ['203.0.113.1', NODE6, NODE4] },
});

const verdict = (cp: CompiledPolicy, src: string, dst: string, dport: number, proto = 6) =>
  decide(cp, { src, dst, proto, dport }, 'ingress')?.verdict;

t.test('pods: every address of status.podIPs is an endpoint address, one identity per family', async (t) => {
  const cp = compilePolicy(inputs([webIn])).compiled;
  const web = cp.endpoints.find((e) => e.pod === 'x/web')!;
  t.same(web.addresses, [WEB4, WEB6], 'both families');
  t.same(cp.endpoints.find((e) => e.pod === 'x/v6only')!.addresses, [V6ONLY], 'an IPv6-only pod is an endpoint');
  const entry = (prefix: string) => cp.identities.find((i) => i.prefix === prefix);
  t.equal(entry(`${WEB6}/128`)?.endpoint, web.id, 'its /128 carries the endpoint');
  t.equal(entry(`${WEB4}/32`)?.endpoint, web.id, 'its /32 too');
  t.not(entry(`${WEB6}/128`)?.identity, entry(`${WEB4}/32`)?.identity, 'one identity per family (the keys differ by prefix)');
  t.equal(entry('::/0')?.identity, IDENTITY_WORLD6, '::/0 is WORLD6');
  t.equal(entry('0.0.0.0/0')?.identity, IDENTITY_WORLD, '0.0.0.0/0 stays WORLD');
});

t.test('decisions: pod selector over both families, IPv6 ipBlock with except, no crossing of families', async (t) => {
  const cp = compilePolicy(inputs([webIn])).compiled;
  t.equal(verdict(cp, CLI6, WEB6, 8080), 'allow', 'client (IPv6) -> web: selected by labels, named port resolved');
  t.equal(verdict(cp, CLI4, WEB4, 8080), 'allow', 'client (IPv4) -> web');
  t.equal(verdict(cp, V6ONLY, WEB6, 8080), 'allow', 'an IPv6-only client');
  t.equal(verdict(cp, 'fd00:10:244:2::5', WEB6, 8080), 'deny', 'app=client of another namespace');
  t.equal(verdict(cp, CLI6, WEB6, 8081), 'deny', 'another port');
  t.equal(verdict(cp, '2001:db8:5:2::9', WEB6, 1), 'allow', 'in the IPv6 block, any port');
  t.equal(verdict(cp, '2001:db8:5:1::9', WEB6, 1), 'deny', 'in its except');
  t.equal(verdict(cp, '2001:db8:6::9', WEB6, 1), 'deny', 'outside it');
  t.equal(verdict(cp, '198.51.100.7', WEB4, 9999), 'allow', '0.0.0.0/0 allows IPv4 WORLD');
  t.equal(verdict(cp, '2001:db8:6::9', WEB6, 9999), 'deny', '0.0.0.0/0 does not allow IPv6 WORLD');
  t.equal(verdict(cp, CLI6, WEB6, 9999), 'deny', 'nor IPv6 pods');
  t.equal(verdict(cp, CLI4, WEB4, 9999), 'allow', 'but IPv4 pods (ipBlock matches pod addresses)');

  const all6 = compilePolicy(
    inputs([
      policy('x', 'all6', {
        podSelector: { matchLabels: { app: 'web' } },
        ingress: [{ from: [{ ipBlock: { cidr: '::/0', except: ['fd00:10:244::/48'] } }] }],
      }),
    ]),
  ).compiled;
  t.equal(verdict(all6, '2001:db8:6::9', WEB6, 1), 'allow', '::/0 allows IPv6 WORLD');
  t.equal(verdict(all6, '198.51.100.7', WEB4, 1), 'deny', 'and not IPv4 WORLD');
  t.equal(verdict(all6, CLI6, WEB6, 1), 'deny', 'pods in its except (fd00:10:244::/48) are out');
});

t.test("this node's IPv6 addresses are HOST, as its IPv4 ones: one identity number for both families", async (t) => {
  const cp = compilePolicy(inputs([webIn])).compiled;
  const idOf = (prefix: string) => cp.identities.find((i) => i.prefix === prefix)?.identity;
  t.equal(idOf(`${NODE6}/128`), IDENTITY_HOST, 'the node IPv6 address is HOST');
  t.equal(idOf(`${NODE4}/32`), IDENTITY_HOST, 'its IPv4 addresses too');
  t.equal(idOf('203.0.113.1/32'), IDENTITY_HOST, 'every IPv4 one under the same prefix');
  const d = decide(cp, { src: NODE6, dst: WEB6, proto: 6, dport: 1234 }, 'ingress');
  t.equal(d?.verdict, 'allow', 'probes from the node over IPv6 pass');
  t.equal(d?.entry?.ruleId, NODE_RULE_ID, 'by the node rule');
  t.equal(d?.peer, IDENTITY_HOST, 'seen as HOST (the datapath passes its TCP segments of no tracked flow, as IPv4)');
  const web = cp.endpoints.find((e) => e.pod === 'x/web')!;
  t.same(
    web.entries.filter((e) => e.ruleId === NODE_RULE_ID).map((e) => e.peer),
    [IDENTITY_HOST],
    'one node-rule entry: HOST for both families',
  );

  const v6Only = compilePolicy({ ...inputs([webIn]), node: { name: 'n1', addresses: [NODE6] } }).compiled;
  t.equal(v6Only.identities.find((i) => i.prefix === `${NODE6}/128`)?.identity, IDENTITY_HOST, 'an IPv6-only node: its address is HOST');
});

t.test("HOST and ipBlocks: each family's block matches HOST by the node's addresses of that family", async (t) => {
  const NODE6B = '2001:db8:5:2::7'; // a second node IPv6 address, inside web-in's block 2001:db8:5::/48
  const egress = (name: string, blocks: Array<{ cidr: string; except?: string[] }>) =>
    policy('x', name, {
      podSelector: { matchLabels: { app: 'client' } },
      policyTypes: ['Egress'],
      egress: [{ to: blocks.map((b) => ({ ipBlock: b })) }],
    });
  const compile = (pols: NetworkPolicy[], addresses = ['203.0.113.1', NODE6, NODE4]) =>
    compilePolicy({ ...inputs([webIn, ...pols]), node: { name: 'n1', addresses } }).compiled;
  const out = (cp: CompiledPolicy, dst: string) => decide(cp, { src: CLI6, dst, proto: 6, dport: 443 }, 'egress')?.verdict;
  const out4 = (cp: CompiledPolicy, dst: string) => decide(cp, { src: CLI4, dst, proto: 6, dport: 443 }, 'egress')?.verdict;

  const in6 = compile([egress('to-node6', [{ cidr: '2001:db8::/32' }])]);
  t.equal(out(in6, NODE6), 'allow', 'an IPv6 block holding the node IPv6 address allows egress to it');
  t.equal(identityOf(in6, NODE6), IDENTITY_HOST, 'which stays HOST under that block');

  const other6 = compile([egress('elsewhere6', [{ cidr: '2001:db9::/32' }])]);
  t.equal(out(other6, NODE6), 'deny', 'an IPv6 block without it does not');
  t.equal(out4(other6, NODE4), 'deny', 'nor the node IPv4 address');

  const except6 = compile([egress('all-but-node6', [{ cidr: '::/0', except: [`${NODE6}/128`] }])]);
  t.equal(identityOf(except6, NODE6), IDENTITY_HOST, 'a /128 except of the node address: still HOST');
  t.equal(out(except6, NODE6), 'deny', 'and excepted');
  t.equal(out(except6, '2001:db8:77::1'), 'allow', 'the rest of IPv6 allowed');
  t.equal(out4(except6, NODE4), 'deny', 'an IPv6 block never allows the node IPv4 address');

  const only4 = compile([egress('to-node4', [{ cidr: '192.168.0.0/16' }])]);
  t.equal(out4(only4, NODE4), 'allow', 'an IPv4 block holding a node IPv4 address allows it');
  t.not(identityOf(only4, NODE4), IDENTITY_HOST, 'an identity of its own: not the group of the first IPv4 address (203.0.113.1)');
  t.equal(out4(only4, '203.0.113.1'), 'deny', 'HOST (outside the block) stays denied');
  t.equal(out(only4, NODE6), 'deny', 'and so does the node IPv6 address');

  const host4 = compile([egress('to-host4', [{ cidr: '203.0.113.0/24' }])]);
  t.equal(identityOf(host4, '203.0.113.1'), IDENTITY_HOST, 'HOST: the group of the first IPv4 address...');
  t.equal(identityOf(host4, NODE6), IDENTITY_HOST, '...and of the first IPv6 one');
  t.equal(out4(host4, '203.0.113.1'), 'allow', 'an IPv4 block holding HOST allows it');
  t.equal(
    out(host4, NODE6),
    'allow',
    'the rule tables have no family: HOST allowed by an IPv4 block is allowed over IPv6 too (README Limits)',
  );

  const two6 = compile([], ['203.0.113.1', NODE6, NODE6B]);
  t.equal(identityOf(two6, NODE6), IDENTITY_HOST, 'the first IPv6 address: HOST');
  t.not(identityOf(two6, NODE6B), IDENTITY_HOST, 'an IPv6 address under another policy prefix: an identity of its own');
  t.equal(decide(two6, { src: NODE6B, dst: WEB6, proto: 6, dport: 1 }, 'ingress')?.ruleId, NODE_RULE_ID, 'still let in by the node rule');
});

t.test('incremental compilations agree with fresh ones as IPv6 prefixes and addresses come and go', async (t) => {
  const c = new PolicyCompiler();
  const narrow = policy('x', 'narrow', {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [{ from: [{ ipBlock: { cidr: 'fd00:10:244:1::/64', except: [`${CLI6}/128`] } }] }],
  });
  const probes: Array<[string, string, number]> = [
    [CLI6, WEB6, 8080],
    [V6ONLY, WEB6, 8080],
    [V6ONLY, WEB6, 1],
    [CLI6, WEB6, 1],
    ['2001:db8:5:2::9', WEB6, 1],
    [CLI4, WEB4, 9999],
    ['fd00:10:244:2::5', WEB6, 1],
    [NODE6, WEB6, 1],
    [NODE4, WEB6, 1],
  ];
  const steps: Array<[string, PolicyInputs]> = [
    ['web-in', inputs([webIn])],
    ['a narrower IPv6 block added (pods under it get new identities)', inputs([webIn, narrow])],
    [
      'the client moves to another IPv6 address',
      inputs(
        [webIn, narrow],
        [...pods().filter((p) => p.name !== 'client'), pod('x', 'client', { app: 'client' }, [CLI4, 'fd00:10:244:1::77'])],
      ),
    ],
    [
      "an IPv6 block holding the node's IPv6 address (HOST's IPv6 prefix changes)",
      inputs([webIn, narrow, policy('x', 'node6', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '2001:db8::/32' } }] }] })]),
    ],
    ['the block removed', inputs([webIn])],
    ['the node loses its IPv6 address', { ...inputs([webIn]), node: { name: 'n1', addresses: ['203.0.113.1', NODE4] } }],
    ['and gets it back', inputs([webIn])],
  ];
  for (const [what, i] of steps) {
    const inc = c.compile(i).compiled;
    const fresh = compilePolicy(i).compiled;
    for (const [src, dst, port] of probes) {
      t.equal(verdict(inc, src, dst, port), verdict(fresh, src, dst, port), `${what}: ${src} -> ${dst}:${port}`);
    }
    for (const a of i.node.addresses) {
      t.equal(identityOf(inc, a), identityOf(fresh, a), `${what}: node address ${a} has the identity a fresh compilation gives it`);
    }
    if (i.node.addresses.includes(NODE6)) t.equal(identityOf(inc, NODE6), IDENTITY_HOST, `${what}: the node IPv6 address is HOST`);
  }
  const withNarrow = compilePolicy(inputs([webIn, narrow])).compiled;
  t.equal(verdict(withNarrow, V6ONLY, WEB6, 1), 'allow', 'the narrower block allows pods under it on any port');
  t.equal(verdict(withNarrow, CLI6, WEB6, 1), 'deny', 'but not its except');
});
