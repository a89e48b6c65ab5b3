/**
 * The lab's kube-proxy (testkit/kube-proxy): the rules of every service kind
 * as kube-proxy writes them (its TestOverallIPTablesRulesWithMultipleServices
 * services, re-expressed), Local policies, affinity and terminating
 * endpoints; Services and EndpointSlices read as kube-proxy reads them; the
 * sync loop against real iptables (partial syncs, stale chains, the canary);
 * and `kube-proxy --cleanup` leaving kubelet's and everyone else's rules.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { silentLogger } from '../src/log.js';
import { servicePorts, skipReason } from '../testkit/kube-proxy/from-k8s.js';
import { KubeProxyTables, isKubeProxyOwnChain } from '../testkit/kube-proxy/iptables.js';
import { KubeProxyStandIn } from '../testkit/kube-proxy/proxier.js';
import {
  categorizeEndpoints,
  extChain,
  fwChain,
  iptablesRestoreInput,
  iptablesRules,
  sepChain,
  svcChain,
  svlChain,
  type ServicePort,
} from '../testkit/kube-proxy/rules.js';
import { sh } from '../testkit/netns.js';
import { REPO, tmpNetns } from './helpers/env.js';
import { until } from './helpers/wait.js';

/** Per table: declared chains (a set), each chain's rules in order, deleted chains. */
function canon(input: string): Record<string, { chains: string[]; rules: Record<string, string[]>; deleted: string[] }> {
  const out: ReturnType<typeof canon> = {};
  let cur: ReturnType<typeof canon>[string] | undefined;
  for (const line of input
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)) {
    if (line.startsWith('*')) out[line.slice(1)] = cur = { chains: [], rules: {}, deleted: [] };
    else if (line === 'COMMIT' || !cur) continue;
    else if (line.startsWith(':')) cur.chains.push(line.slice(1).split(' ')[0]!);
    else if (line.startsWith('-X ')) cur.deleted.push(line.slice(3));
    else (cur.rules[line.split(' ')[1]!] ??= []).push(line);
  }
  for (const x of Object.values(out)) {
    x.chains.sort();
    x.deleted.sort();
  }
  return out;
}

const ep = (ip: string, extra: Partial<ServicePort['endpoints'][0]> = {}) => ({ ip, port: 80, ...extra });
const base = (ns: string, ip: string, endpoints: ServicePort['endpoints'], extra: Partial<ServicePort> = {}): ServicePort => ({
  namespace: ns,
  name: ns.replace('ns', 'svc'),
  portName: 'p80',
  clusterIP: ip,
  port: 80,
  protocol: 'TCP',
  endpoints,
  ...extra,
});

// kube-proxy's TestOverallIPTablesRulesWithMultipleServices: a ClusterIP, a
// LoadBalancer with eTP=Local and no local endpoint, a NodePort, an external
// IP, a LoadBalancer with source ranges, and a service without endpoints.
const overall: ServicePort[] = [
  base('ns1', '172.30.0.41', [ep('10.180.0.1')]),
  base('ns2', '172.30.0.42', [ep('10.180.0.2')], {
    nodePort: 3001,
    loadBalancerIPs: ['1.2.3.4'],
    externalIPs: ['192.168.99.22'],
    externalPolicyLocal: true,
    healthCheckNodePort: 30000,
  }),
  base('ns3', '172.30.0.43', [ep('10.180.0.3')], { nodePort: 3003 }),
  base('ns4', '172.30.0.44', [ep('10.180.0.4'), ep('10.180.0.5', { local: true })], { externalIPs: ['192.168.99.33'] }),
  base('ns5', '172.30.0.45', [ep('10.180.0.3')], {
    nodePort: 3002,
    loadBalancerIPs: ['5.6.7.8'],
    healthCheckNodePort: 30000,
    loadBalancerSourceRanges: [' 203.0.113.0/25'],
  }),
  base('ns6', '172.30.0.46', []),
];

t.test("every service kind, as kube-proxy's own test expects it", async (t) => {
  const [s1, s2, s3, s4, s5, s6] = overall as [ServicePort, ServicePort, ServicePort, ServicePort, ServicePort, ServicePort];
  // chain names kube-proxy's test lists for these services
  t.equal(svcChain(s2), 'KUBE-SVC-GNZBNJ2PO5MGZ6GT');
  t.equal(extChain(s2), 'KUBE-EXT-GNZBNJ2PO5MGZ6GT');
  t.equal(fwChain(s5), 'KUBE-FW-NUKIZ6OKUXPJNT4C');
  t.equal(sepChain(s4, ep('10.180.0.5')), 'KUBE-SEP-C6EBXVWJJZMIWKLZ');
  const r = iptablesRestoreInput(overall, { clusterCidr: '10.0.0.0/8', full: true, existingNatChains: new Set(), randomFully: false });
  const got = canon(r.input);
  const n = (s: ServicePort) => `${s.namespace}/${s.name}:${s.portName}`;
  const tcp = (s: ServicePort, ip = s.clusterIP) => `-m tcp -p tcp -d ${ip} --dport 80`;
  const noLocal = (s: ServicePort) => `-m comment --comment "${n(s)} has no local endpoints"`;
  t.same(got.filter!.rules, {
    'KUBE-NODEPORTS': [`-A KUBE-NODEPORTS -m comment --comment "${n(s2)} health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT`],
    'KUBE-SERVICES': [`-A KUBE-SERVICES -m comment --comment "${n(s6)} has no endpoints" ${tcp(s6)} -j REJECT`],
    'KUBE-EXTERNAL-SERVICES': [
      `-A KUBE-EXTERNAL-SERVICES ${noLocal(s2)} ${tcp(s2, '192.168.99.22')} -j DROP`,
      `-A KUBE-EXTERNAL-SERVICES ${noLocal(s2)} ${tcp(s2, '1.2.3.4')} -j DROP`,
      `-A KUBE-EXTERNAL-SERVICES ${noLocal(s2)} -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP`,
    ],
    'KUBE-FIREWALL': [
      '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    ],
    'KUBE-FORWARD': [
      '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ],
    'KUBE-PROXY-FIREWALL': [
      `-A KUBE-PROXY-FIREWALL -m comment --comment "${n(s5)} traffic not accepted by ${fwChain(s5)}" ${tcp(s5, '5.6.7.8')} -j DROP`,
    ],
  });
  const seps = [s1, s2, s3, s5].map((s) => sepChain(s, s.endpoints[0]!));
  const seps4 = s4.endpoints.map((e) => sepChain(s4, e));
  t.same(
    got.nat!.chains,
    [
      'KUBE-NODEPORTS',
      'KUBE-SERVICES',
      'KUBE-MARK-MASQ',
      'KUBE-POSTROUTING',
      ...[s2, s3, s4, s5].map(extChain),
      fwChain(s5),
      ...seps,
      ...seps4,
      ...[s1, s2, s3, s4, s5].map(svcChain),
    ].sort(),
    'nat chains: no SVL chain (no local endpoint where Local applies), one FW chain (source ranges)',
  );
  const nat = got.nat!.rules;
  t.same(nat['KUBE-NODEPORTS'], [
    `-A KUBE-NODEPORTS -m comment --comment ${n(s2)} -m tcp -p tcp --dport 3001 -j ${extChain(s2)}`,
    `-A KUBE-NODEPORTS -m comment --comment ${n(s3)} -m tcp -p tcp --dport 3003 -j ${extChain(s3)}`,
    `-A KUBE-NODEPORTS -m comment --comment ${n(s5)} -m tcp -p tcp --dport 3002 -j ${extChain(s5)}`,
  ]);
  t.same(nat['KUBE-SERVICES'], [
    `-A KUBE-SERVICES -m comment --comment "${n(s1)} cluster IP" ${tcp(s1)} -j ${svcChain(s1)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s2)} cluster IP" ${tcp(s2)} -j ${svcChain(s2)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s2)} external IP" ${tcp(s2, '192.168.99.22')} -j ${extChain(s2)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s2)} loadbalancer IP" ${tcp(s2, '1.2.3.4')} -j ${extChain(s2)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s3)} cluster IP" ${tcp(s3)} -j ${svcChain(s3)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s4)} cluster IP" ${tcp(s4)} -j ${svcChain(s4)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s4)} external IP" ${tcp(s4, '192.168.99.33')} -j ${extChain(s4)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s5)} cluster IP" ${tcp(s5)} -j ${svcChain(s5)}`,
    `-A KUBE-SERVICES -m comment --comment "${n(s5)} loadbalancer IP" ${tcp(s5, '5.6.7.8')} -j ${fwChain(s5)}`,
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  ]);
  const masqAll = (s: ServicePort) => [
    `-A ${extChain(s)} -m comment --comment "masquerade traffic for ${n(s)} external destinations" -j KUBE-MARK-MASQ`,
    `-A ${extChain(s)} -j ${svcChain(s)}`,
  ];
  t.same(nat[extChain(s3)], masqAll(s3));
  t.same(nat[extChain(s4)], masqAll(s4));
  t.same(nat[extChain(s5)], masqAll(s5));
  t.same(
    nat[extChain(s2)],
    [
      `-A ${extChain(s2)} -m comment --comment "pod traffic for ${n(s2)} external destinations" -s 10.0.0.0/8 -j ${svcChain(s2)}`,
      `-A ${extChain(s2)} -m comment --comment "masquerade LOCAL traffic for ${n(s2)} external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
      `-A ${extChain(s2)} -m comment --comment "route LOCAL traffic for ${n(s2)} external destinations" -m addrtype --src-type LOCAL -j ${svcChain(s2)}`,
    ],
    'eTP=Local without a local endpoint: short circuits only, no jump to a policy chain',
  );
  t.same(nat[fwChain(s5)], [
    `-A ${fwChain(s5)} -m comment --comment "${n(s5)} loadbalancer IP" -s 203.0.113.0/25 -j ${extChain(s5)}`,
    `-A ${fwChain(s5)} -m comment --comment "other traffic to ${n(s5)} will be dropped by KUBE-PROXY-FIREWALL"`,
  ]);
  t.same(nat[svcChain(s4)], [
    `-A ${svcChain(s4)} -m comment --comment "${n(s4)} cluster IP" ${tcp(s4)} ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`,
    `-A ${svcChain(s4)} -m comment --comment "${n(s4)} -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j ${seps4[0]}`,
    `-A ${svcChain(s4)} -m comment --comment "${n(s4)} -> 10.180.0.5:80" -j ${seps4[1]}`,
  ]);
  t.same(nat[seps4[1]!], [
    `-A ${seps4[1]} -m comment --comment ${n(s4)} -s 10.180.0.5 -j KUBE-MARK-MASQ`,
    `-A ${seps4[1]} -m comment --comment ${n(s4)} -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80`,
  ]);
  t.same(
    nat['KUBE-POSTROUTING']!.at(-1),
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
  );
});

t.test('Local traffic policies, ClientIP affinity, terminating endpoints', async (t) => {
  const local = base('ns1', '172.30.0.41', [ep('10.180.0.1', { local: true }), ep('10.180.0.2')], {
    nodePort: 3001,
    externalPolicyLocal: true,
  });
  let nat = canon(iptablesRules([local], '10.0.0.0/8')).nat!.rules;
  t.same(nat[extChain(local)]!.at(-1), `-A ${extChain(local)} -j ${svlChain(local)}`, 'external traffic to the local endpoints');
  t.same(
    nat[svlChain(local)],
    [`-A ${svlChain(local)} -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j ${sepChain(local, local.endpoints[0]!)}`],
    'only the local endpoint',
  );
  t.equal(nat[svcChain(local)]!.length, 3, 'cluster traffic to both (masquerade rule + 2)');

  const itp = base('ns1', '172.30.0.41', [ep('10.180.0.2')], { internalPolicyLocal: true });
  const out = canon(iptablesRules([itp], '10.0.0.0/8'));
  t.same(
    out.filter!.rules['KUBE-SERVICES'],
    ['-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP'],
    'iTP=Local with no local endpoint: dropped, not rejected',
  );
  t.notOk(out.nat!.chains.includes(svcChain(itp)), 'and no service chain');

  const sticky = base('ns1', '172.30.0.41', [ep('10.180.0.1'), ep('10.180.0.2')], { affinityTimeoutSeconds: 600 });
  nat = canon(iptablesRules([sticky], '10.0.0.0/8')).nat!.rules;
  const [a, b] = sticky.endpoints.map((e) => sepChain(sticky, e)) as [string, string];
  t.match(nat[svcChain(sticky)]![1], `-m recent --name ${a} --rcheck --seconds 600 --reap -j ${a}`, 'affinity checks come first');
  t.match(nat[svcChain(sticky)]![2], `-m recent --name ${b} --rcheck --seconds 600 --reap -j ${b}`);
  t.match(
    nat[a]![1],
    `-m recent --name ${a} --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80`,
    'the endpoint chain records the client',
  );

  const terminating = base('ns1', '172.30.0.41', [
    ep('10.180.0.1', { ready: false, serving: true, terminating: true }),
    ep('10.180.0.2', { ready: false, serving: false, terminating: true }),
  ]);
  t.same(
    categorizeEndpoints(terminating).cluster.map((e) => e.ip),
    ['10.180.0.1'],
    'no ready endpoint: serving-and-terminating ones serve',
  );
  t.same(
    categorizeEndpoints({ ...terminating, endpoints: [ep('10.180.0.3'), ...terminating.endpoints] }).cluster.map((e) => e.ip),
    ['10.180.0.3'],
  );
});

const exampleObjects = (): Array<Record<string, unknown>> =>
  readdirSync(join(REPO, 'manifests', 'examples'))
    .sort()
    .flatMap((f) =>
      parseAllDocuments(readFileSync(join(REPO, 'manifests', 'examples', f), 'utf8')).map((d) => d.toJS() as Record<string, unknown>),
    );
const keyOf = (o: Record<string, unknown>) => {
  const m = o.metadata as { namespace: string; name: string };
  return `${m.namespace}/${m.name}`;
};

t.test('Services and EndpointSlices read as kube-proxy reads them (the lab examples)', async (t) => {
  const objs = exampleObjects();
  const slices = objs.filter((o) => o.kind === 'EndpointSlice');
  const svc = (name: string) => objs.find((o) => o.kind === 'Service' && (o.metadata as { name: string }).name === name)!;
  const [web] = servicePorts(svc('web'), slices, 'node2');
  t.match(web, {
    clusterIP: '10.96.0.10',
    port: 80,
    nodePort: 30080,
    loadBalancerIPs: ['198.51.100.10'],
    externalIPs: ['203.0.113.10'],
  });
  t.notOk(web!.externalPolicyLocal);
  t.same(
    web!.endpoints.map((e) => `${e.ip}:${e.port}${e.local ? ' local' : ''}`),
    ['10.244.1.11:8080', '10.244.1.12:8080', '10.244.2.11:8080 local'],
    'endpoint ports from the slice port named like the service port; local by nodeName',
  );
  t.match(servicePorts(svc('web-local'), slices, 'node1')[0], { externalPolicyLocal: true, nodePort: 30081 });
  t.match(servicePorts(svc('sticky'), slices, 'node1')[0], { affinityTimeoutSeconds: 600 });
  t.match(servicePorts(svc('dns'), slices, 'node1')[0], { protocol: 'UDP', endpoints: [{ port: 5353 }, { port: 5353 }] });
  t.same(
    servicePorts(svc('empty'), slices, 'node1').map((p) => [p.portName, p.protocol, p.endpoints.length]),
    [
      ['http', 'TCP', 0],
      ['dns', 'UDP', 0],
    ],
  );
  t.match(skipReason({ spec: { clusterIP: 'None' } }), /headless/);
  t.match(skipReason({ spec: { type: 'ExternalName' } }), /ExternalName/);
});

const inNs = (ns: string, ...args: string[]) => sh(args[0]!, args.slice(1), { ns });

t.test('the sync loop on real iptables: first sync, partial syncs, stale chains, the canary', async (t) => {
  const ns = tmpNetns(t);
  const tables = new KubeProxyTables(ns);
  let synced!: () => void;
  const firstSync = new Promise<void>((r) => (synced = r));
  const proxier = new KubeProxyStandIn(tables, { nodeName: 'node1', clusterCidr: '10.244.0.0/16', syncPeriodMs: 300 }, silentLogger, () =>
    synced(),
  );
  t.teardown(() => proxier.stop());
  proxier.start();
  const objs = exampleObjects();
  for (const o of objs) {
    if (o.kind === 'Service') proxier.upsertService(keyOf(o), o);
    else proxier.upsertSlice(keyOf(o), o);
  }
  proxier.setSynced('services');
  t.equal(proxier.syncs.length, 0, 'no sync before both kinds are listed');
  proxier.setSynced('slices');
  await firstSync;
  t.match(proxier.syncs[0], { kind: 'full', services: 5, servicePorts: 6, endpoints: 11 });
  const save = () => inNs(ns, 'iptables-save');
  const web = servicePorts(
    objs.find((o) => keyOf(o) === 'default/web'),
    objs.filter((o) => o.kind === 'EndpointSlice'),
    'node1',
  )[0]!;
  t.match(save(), `:${extChain(web)} `, "the web service's chains");
  t.match(inNs(ns, 'iptables', '-t', 'filter', '-S', 'INPUT'), /-j KUBE-EXTERNAL-SERVICES/, 'the jumps from the built-in chains');

  const slice = structuredClone(objs.find((o) => o.kind === 'EndpointSlice' && keyOf(o) === 'default/web-7xk2p')!);
  (slice.endpoints as Array<{ addresses: string[] }>).splice(2);
  proxier.upsertSlice(keyOf(slice), slice);
  await until('a partial sync', () => proxier.syncs.length === 2, 5000);
  t.match(proxier.syncs[1], { kind: 'partial', changed: 1, deletedChains: 1 }, "only web's chains written; the endpoint gone is deleted");
  t.notMatch(save(), `:${sepChain(web, web.endpoints[2]!)} `);

  inNs(ns, 'iptables', '-t', 'mangle', '-X', 'KUBE-PROXY-CANARY');
  await until('a full resync after the canary went', () => proxier.syncs.length === 3, 5000);
  t.match(proxier.syncs[2], { kind: 'full' });
  t.equal(inNs(ns, 'iptables', '-t', 'mangle', '-S', 'KUBE-PROXY-CANARY').trim(), '-N KUBE-PROXY-CANARY', 'the canary is back');
});

t.test("kube-proxy --cleanup: its chains and jumps go, kubelet's and others' rules stay", async (t) => {
  const ns = tmpNetns(t);
  const tables = new KubeProxyTables(ns);
  // kubelet's chains, and someone else's rules
  inNs(ns, 'iptables', '-t', 'filter', '-N', 'KUBE-KUBELET-CANARY');
  inNs(ns, 'iptables', '-t', 'nat', '-N', 'KUBE-KUBELET-CANARY');
  inNs(ns, 'iptables', '-t', 'filter', '-A', 'INPUT', '-s', '1.2.3.4', '-m', 'comment', '--comment', "someone else's", '-j', 'DROP');
  inNs(ns, 'iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '1.2.3.4', '-j', 'MASQUERADE');
  tables.startMonitor();
  tables.ensureJumps();
  tables.restore(iptablesRules(overall, '10.0.0.0/8'));
  const before = inNs(ns, 'iptables-save');
  t.match(before, /:KUBE-SVC-/);
  const r = tables.cleanup();
  t.ok(r.removed.includes('nat/KUBE-SERVICES') && r.removed.includes('mangle/KUBE-PROXY-CANARY'), `removed ${r.removed.length} chains`);
  t.equal(r.jumps, 12, 'the 12 jumps from the built-in chains into them (not the 2 into KUBE-FIREWALL)');
  const after = inNs(ns, 'iptables-save');
  const chains = after
    .split('\n')
    .filter((l) => l.startsWith(':KUBE-'))
    .map((l) => l.slice(1).split(' ')[0]);
  t.same(
    chains.filter((c) => isKubeProxyOwnChain(c!)),
    [],
    'no kube-proxy chain left in any table',
  );
  t.same(chains.sort(), ['KUBE-FIREWALL', 'KUBE-KUBELET-CANARY', 'KUBE-KUBELET-CANARY'], "kubelet's chains stay");
  t.match(after, /-A INPUT -j KUBE-FIREWALL/, "and kubelet's jumps");
  t.match(after, /-A INPUT -s 1\.2\.3\.4\/32 .*someone else.* -j DROP/, "someone else's filter rule stays");
  t.match(after, /-A POSTROUTING -s 1\.2\.3\.4\/32 -j MASQUERADE/, 'and their nat rule');
  t.same(tables.cleanup(), { removed: [], jumps: 0 }, 'a second cleanup finds nothing');
});
