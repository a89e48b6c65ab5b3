/**
 * NetworkPolicy wiring (src/proxy/policy-sync.ts): the sink's Pods,
 * Namespaces and NetworkPolicies, through the compiler, into the policy
 * maps, on the bounded-frequency runner.
 *
 * First with a recording target and the FakeClock (what is handed to the
 * writer, when, and what is not), then over real maps with BPF_PROG_RUN
 * packets (test/helpers/progrun-node.ts): enforcement, a restart that
 * writes nothing, --network-policy=off with state left behind, a table
 * that does not fit.
 */
import t, { type Test } from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { TCP } from '../testkit/packet.js';
import type { CompiledPolicy } from '../src/model/policy/compiled.js';
import type { Namespace, NetworkPolicy, Pod, PolicyRule } from '../src/model/policy/types.js';
import type { CompiledPolicyDiff, PolicyApplyReport, PolicyMapStats } from '../src/dataplane/bpf/policy-maps.js';
import { PolicySync, policyTarget, type PolicyTarget } from '../src/proxy/policy-sync.js';
import { Metrics } from '../src/metrics.js';
import { captureLogger } from './helpers/log.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';

const NODE = 'n1';
const OTHER = '10.244.1.20';
const REMOTE = '10.244.2.11';

const pod = (name: string, ip: string, labels: Record<string, string>, extra: Partial<Pod> = {}): Pod => ({
  namespace: 'x',
  name,
  labels,
  ips: [ip],
  nodeName: NODE,
  hostNetwork: false,
  containerPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  ...extra,
});
const ns = (name: string, labels: Record<string, string> = {}): Namespace => ({
  name,
  labels: { ...labels, 'kubernetes.io/metadata.name': name },
});
const denyAll = (namespace = 'x'): NetworkPolicy => ({
  namespace,
  name: 'deny-all',
  podSelector: { requirements: [] },
  ingressIsolation: true,
  egressIsolation: false,
  ingress: [],
  egress: [],
});
/** ingress to app=web from app=client on TCP 8080 */
const allowClient = (ports: PolicyRule['ports'] = [{ protocol: 'TCP', port: 8080 }]): NetworkPolicy => ({
  namespace: 'x',
  name: 'web',
  podSelector: { requirements: [{ key: 'app', operator: 'In', values: ['web'] }] },
  ingressIsolation: true,
  egressIsolation: false,
  ingress: [
    { index: 0, peers: [{ kind: 'pods', podSelector: { requirements: [{ key: 'app', operator: 'In', values: ['client'] }] } }], ports },
  ],
  egress: [],
});

const EMPTY_STATS: PolicyMapStats = {
  generation: 0,
  identities: 0,
  endpoints: 0,
  isolated: 0,
  tableEntries: 0,
  rules: 0,
  tablesDenyAll: 0,
  denyAllNow: 0,
};
const report = (changed = true): PolicyApplyReport => ({
  generation: 1,
  changed,
  ipcacheWrites: 0,
  ipcacheDeletes: 0,
  tablesWritten: 0,
  tablesDeleted: 0,
  problems: [],
  ms: 0,
});

/** A target that records what it is handed. */
function recordingTarget(pinned: CompiledPolicy = { generation: 0, identities: [], endpoints: [], rules: [] }) {
  const calls: Array<{ full?: CompiledPolicy; diff?: CompiledPolicyDiff }> = [];
  let failNext = false;
  /** problems the next applyDiff reports (a write that failed) */
  const problems: PolicyApplyReport['problems'] = [];
  const target: PolicyTarget & { failNext(): void; problems: typeof problems } = {
    apply: (next) => {
      if (failNext) {
        failNext = false;
        throw new Error('EPERM (test)');
      }
      calls.push({ full: next });
      return report();
    },
    applyDiff: (diff) => {
      calls.push({ diff });
      return { ...report(), problems: problems.splice(0) };
    },
    stats: () => EMPTY_STATS,
    pinned: () => pinned,
    hitsOf: () => 0,
    tableMax: 16384,
    failNext: () => (failNext = true),
    problems,
  };
  return { target, calls };
}

function sync(t: Test, enabled = true) {
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const s = new PolicySync({ nodeName: NODE, enabled, minSyncPeriod: 1000, syncPeriod: 30_000, clock, log });
  t.teardown(() => s.stop());
  return { s, clock, lines };
}

t.test('nothing is written before the sources have listed everything; then one full sync', async (t) => {
  const { s, clock } = sync(t);
  const { target, calls } = recordingTarget();
  s.setTarget(target);
  s.applyNamespace('x', ns('x'));
  s.applyPod('x/a', pod('a', '10.244.1.2', { app: 'web' }));
  s.applyNetworkPolicy('x/deny-all', denyAll());
  await clock.advance(5000);
  t.same(calls, [], 'a half-listed cluster is never programmed');
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  t.equal(calls.length, 1);
  const full = calls[0]!.full!;
  t.same(
    full.endpoints.map((e) => [e.pod, e.addresses, e.ingressIsolated, e.egressIsolated, e.entries.length]),
    [['x/a', ['10.244.1.2'], true, false, 0]],
    'the local pod is isolated for ingress by deny-all, with no allow entry (no node address known yet)',
  );
});

t.test('changes are batched by the runner; one pod relabelled hands on only what changed', async (t) => {
  const { s, clock } = sync(t);
  const { target, calls } = recordingTarget();
  s.setTarget(target);
  s.applyNamespace('x', ns('x'));
  s.setNodeAddresses([NODE_IP]);
  s.applyPod('x/web', pod('web', '10.244.1.2', { app: 'web' }));
  s.applyPod('x/client', pod('client', '10.244.1.3', { app: 'client' }));
  s.applyPod('x/other', pod('other', '10.244.1.4', { app: 'other' }));
  s.applyPod('x/remote', pod('remote', REMOTE, { app: 'client' }, { nodeName: 'n2' }));
  s.applyPod('x/hostnet', pod('hostnet', NODE_IP, { app: 'web' }, { hostNetwork: true, ips: [] }));
  s.applyNetworkPolicy('x/web', allowClient());
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  const full = calls.at(-1)!.full!;
  t.same(
    full.endpoints.map((e) => e.pod).sort(),
    ['x/client', 'x/other', 'x/web'],
    "only this node's pods get endpoints: not the remote one, not the host-network one",
  );
  t.ok(
    full.identities.some((i) => i.prefix === `${REMOTE}/32`),
    'the remote pod is in the ipcache',
  );
  const web = full.endpoints.find((e) => e.pod === 'x/web')!;
  t.ok(web.ingressIsolated);
  t.notOk(full.endpoints.find((e) => e.pod === 'x/client')!.ingressIsolated, 'a pod no policy selects is not isolated');

  calls.length = 0;
  // the same object again, and an equal copy: no sync
  s.applyPod('x/other', pod('other', '10.244.1.4', { app: 'other' }));
  await clock.advance(5000);
  t.same(calls, [], 'an equal object is no change');

  // other becomes a client of a label set of its own: it gets a new identity and web's table gains it; nothing else
  s.applyPod('x/other', pod('other', '10.244.1.4', { app: 'client', tier: 'b' }));
  await clock.advance(0);
  await s.runner.idle();
  t.equal(calls.length, 1);
  const d = calls[0]!.diff!;
  t.ok(d, 'handed on as a diff, not the whole policy');
  t.same(
    (d.identities?.upsert ?? []).map((i) => i.prefix),
    [],
    'no ipcache write: the pod was the only member of its identity, which it keeps under its new labels',
  );
  t.same(
    (d.endpoints?.upsert ?? []).map((e) => e.pod),
    ['x/web'],
    'only the endpoint whose table changes is rewritten',
  );
  t.same(d.identities?.remove ?? [], []);

  // a label set another pod has already: it takes that identity (one ipcache write), and web's
  // table loses the identity that is gone; the other endpoints are not touched
  calls.length = 0;
  s.applyPod('x/other', pod('other', '10.244.1.4', { app: 'client' }));
  await clock.advance(1000);
  await s.runner.idle();
  const d2 = calls[0]!.diff!;
  t.same(
    (d2.identities?.upsert ?? []).map((i) => i.prefix),
    ['10.244.1.4/32'],
    "only the relabelled pod's address changes identity",
  );
  t.same(
    (d2.endpoints?.upsert ?? []).map((e) => e.pod),
    ['x/web'],
  );

  // a burst of changes: the runner's burst, then one sync per min interval
  calls.length = 0;
  for (let i = 0; i < 20; i++) s.applyPod(`x/p${i}`, pod(`p${i}`, `10.244.1.${100 + i}`, { app: 'web' }));
  for (let i = 0; i < 20; i++) {
    await clock.advance(100);
    await s.runner.idle();
  }
  t.ok(calls.length <= 3, `20 changes within 2 s: ${calls.length} syncs`);
  const eps = new Set<string>();
  for (const c of calls) for (const e of c.diff?.endpoints?.upsert ?? c.full?.endpoints ?? []) eps.add(e.pod);
  t.equal([...eps].filter((p) => /^x\/p\d+$/.test(p)).length, 20, 'every new pod programmed');
});

t.test('a failed write leaves the maps as they are; the next sync starts again from the pinned state', async (t) => {
  const { s, clock, lines } = sync(t);
  const { target, calls } = recordingTarget();
  s.setTarget(target);
  s.applyNetworkPolicy('x/deny-all', denyAll());
  s.applyPod('x/a', pod('a', '10.244.1.2', {}));
  target.failNext();
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  t.same(calls, [], 'nothing recorded');
  t.ok(
    lines.some((l) => l.level === 'error' && /could not write the policy maps: EPERM \(test\).*tried again at the next sync/.test(l.msg)),
  );
  t.equal(s.stats.failures, 1);
  s.applyPod('x/b', pod('b', '10.244.1.3', {}));
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(calls.length, 1);
  t.ok(calls[0]!.full, 'a full apply from a compiler seeded with the pinned maps');
  t.same(calls[0]!.full!.endpoints.map((e) => e.pod).sort(), ['x/a', 'x/b']);
});

t.test('a write the writer could not make is tried again within seconds, without waiting for a change', async (t) => {
  const { s, clock } = sync(t);
  const { target, calls } = recordingTarget();
  s.setTarget(target);
  s.applyPod('x/a', pod('a', '10.244.1.2', {}));
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  target.problems.push({ prefix: '10.244.1.3/32', message: 'cannot write identity prefix 10.244.1.3/32: ENOSPC (test)' });
  s.applyPod('x/b', pod('b', '10.244.1.3', {}));
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(calls.length, 2);
  await clock.advance(5000);
  await s.runner.idle();
  t.equal(calls.length, 3, 'a retry sync 5 s later');
  await clock.advance(20_000);
  await s.runner.idle();
  t.equal(calls.length, 3, 'and no more once nothing failed');
});

t.test('--network-policy=off: nothing compiled or written; on at run time programs', async (t) => {
  const { s, clock } = sync(t, false);
  const { target, calls } = recordingTarget();
  s.setTarget(target);
  s.applyNetworkPolicy('x/deny-all', denyAll());
  s.applyPod('x/a', pod('a', '10.244.1.2', {}));
  s.setSynced();
  await clock.advance(60_000);
  await s.runner.idle();
  t.same(calls, [], 'empty maps stay untouched');
  t.equal(s.figures().enabled, false);
  s.setEnabled(true);
  await clock.advance(0);
  await s.runner.idle();
  t.equal(calls.length, 1);
  t.ok(calls[0]!.full!.endpoints[0]!.ingressIsolated);
});

// ---------------------------------------------------------------------------
// Real maps, BPF_PROG_RUN packets

/** The cluster of the datapath tests: POD (client) and OTHER (web) on this node; CLIENT outside. */
function feed(s: PolicySync, policies: NetworkPolicy[]) {
  s.applyNamespace('x', ns('x'));
  s.setNodeAddresses([NODE_IP]);
  s.applyPod('x/client', pod('client', POD, { app: 'client' }));
  s.applyPod('x/web', pod('web', OTHER, { app: 'web' }));
  for (const p of policies) s.applyNetworkPolicy(`x/${p.name}`, p);
}

t.test('over real maps: deny-all blocks, removing it allows; a restart writes nothing and keeps flows', async (t) => {
  const node = await progrunNode(t);
  const { log } = captureLogger();
  const clock = new FakeClock();
  const opts = { nodeName: NODE, enabled: true, minSyncPeriod: 1000, syncPeriod: 30_000, clock, log };
  const s = new PolicySync(opts);
  t.teardown(() => s.stop());
  s.setTarget(policyTarget(node.dp.maps, log));
  feed(s, [allowClient()]);
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  const tcp = (src: string, sport: number, flags?: number) =>
    node.run('fromPod', { src, dst: OTHER }, { proto: 'tcp', sport, dport: 8080, ...(flags ? { flags } : {}) }).verdict;
  t.equal(tcp(POD, 3000), 'pass', 'client -> web:8080 allowed by the policy');
  t.equal(node.run('toPod', { src: CLIENT, dst: OTHER }, { proto: 'tcp', sport: 3001, dport: 8080 }).verdict, 'drop', 'an outsider is not');

  s.applyNetworkPolicy('x/deny-all', denyAll());
  s.applyNetworkPolicy('x/web', undefined);
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(tcp(POD, 3002), 'drop', 'deny-all alone: blocked');
  s.applyNetworkPolicy('x/deny-all', undefined);
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(tcp(POD, 3003), 'pass', 'no policy: allowed');
  t.equal(node.dp.maps.polState.get({ v: 0 })?.isolated, 0, 'nothing isolated');

  // under policy again, a flow opens; then the agent restarts
  s.applyNetworkPolicy('x/web', allowClient());
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(tcp(POD, 3004, TCP.SYN), 'pass', 'a flow opens under policy');
  const gen = node.dp.maps.polState.get({ v: 0 })!.generation;
  const dump = () =>
    JSON.stringify([
      node.dp.maps.ipcache.entries(),
      node.dp.maps.policy.entries(),
      node.dp.maps.polEps.entries(),
      node.dp.maps.polRules.entries(),
    ]);
  const before = dump();
  s.stop();

  const s2 = new PolicySync(opts);
  t.teardown(() => s2.stop());
  const reports: Array<PolicyApplyReport | undefined> = [];
  s2.onSync((r) => reports.push(r.report));
  s2.setTarget(policyTarget(node.dp.maps, log));
  // the sources list in another order than before
  s2.applyNetworkPolicy('x/web', allowClient());
  s2.applyPod('x/web', pod('web', OTHER, { app: 'web' }));
  s2.applyPod('x/client', pod('client', POD, { app: 'client' }));
  s2.setNodeAddresses([NODE_IP]);
  s2.applyNamespace('x', ns('x'));
  s2.setSynced();
  await clock.advance(0);
  await s2.runner.idle();
  t.equal(reports.length, 1);
  const r = reports[0]!;
  t.same(
    [r.changed, r.ipcacheWrites, r.ipcacheDeletes, r.tablesWritten, r.tablesDeleted],
    [false, 0, 0, 0, 0],
    'the first sync after the restart writes nothing',
  );
  t.equal(node.dp.maps.polState.get({ v: 0 })!.generation, gen, 'the generation is unchanged: no flow is checked again');
  t.equal(dump(), before, 'every policy map entry as it was (the same inner maps too)');
  t.equal(tcp(POD, 3004, TCP.ACK), 'pass', 'the flow opened before the restart goes on');
});

t.test('over real maps: off removes what a previous agent left; every pod unisolated', async (t) => {
  const node = await progrunNode(t);
  const { log, lines } = captureLogger();
  const clock = new FakeClock();
  const on = new PolicySync({ nodeName: NODE, enabled: true, minSyncPeriod: 1000, syncPeriod: 30_000, clock, log });
  on.setTarget(policyTarget(node.dp.maps, log));
  feed(on, [denyAll()]);
  on.setSynced();
  await clock.advance(0);
  await on.runner.idle();
  on.stop();
  const run = (sport: number) => node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport, dport: 8080 }).verdict;
  t.equal(run(3100), 'drop', 'deny-all enforced');

  const off = new PolicySync({ nodeName: NODE, enabled: false, minSyncPeriod: 1000, syncPeriod: 30_000, clock, log });
  t.teardown(() => off.stop());
  off.setTarget(policyTarget(node.dp.maps, log));
  feed(off, [denyAll()]);
  off.setSynced();
  await clock.advance(0);
  await off.runner.idle();
  t.equal(run(3101), 'pass', 'off: allowed');
  t.equal(node.dp.maps.ipcache.count() + node.dp.maps.policy.count(), 0, 'no policy map entry left');
  t.ok(lines.some((l) => /network policy is off .*removed the policy state a previous agent left \(2 endpoint/.test(l.msg)));
  const gen = node.dp.maps.polState.get({ v: 0 })!.generation;
  off.applyNetworkPolicy('x/other', { ...denyAll(), name: 'other' });
  await clock.advance(60_000);
  await off.runner.idle();
  t.equal(node.dp.maps.polState.get({ v: 0 })!.generation, gen, 'off: later changes write nothing');
});

t.test('over real maps: a table that does not fit denies for its endpoint, in logs and metrics; never allows', async (t) => {
  const node = await progrunNode(t);
  const { log, lines } = captureLogger();
  const clock = new FakeClock();
  const metrics = new Metrics();
  const s = new PolicySync({ nodeName: NODE, enabled: true, minSyncPeriod: 1000, syncPeriod: 30_000, clock, log });
  t.teardown(() => s.stop());
  s.onSync((r) => metrics.policySynced(r));
  metrics.setPolicy(() => s.figures());
  // tables of at most 3 entries; web's needs a host entry and 4 ports
  s.setTarget(policyTarget(node.dp.maps, log, 3));
  const ports = [8080, 8081, 8082, 8083].map((port) => ({ protocol: 'TCP' as const, port }));
  feed(s, [allowClient(ports)]);
  s.setSynced();
  await clock.advance(0);
  await s.runner.idle();
  t.equal(
    node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 3200, dport: 8080 }).verdict,
    'drop',
    'what the table would allow is denied',
  );
  t.ok(
    lines.some((l) => l.level === 'error' && /x\/web .*denies everything/.test(l.msg)),
    'the log names the pod and says it denies',
  );
  const text = await metrics.scrape();
  t.match(text, /^bpfproxy_policy_table_full_total 1$/m, 'counted');
  t.match(text, /^bpfproxy_policy_endpoints_deny_all 1$/m, 'and shown as denying now');
  t.match(text, /^bpfproxy_policy_table_max_entries 3$/m);
  t.match(text, /^bpfproxy_network_policy_enabled 1$/m);
  t.match(text, /^bpfproxy_policy_sync_duration_seconds_count 1$/m);

  // fits again: allowed, and the hit counter of the policy moves
  s.applyNetworkPolicy('x/web', allowClient());
  await clock.advance(1000);
  await s.runner.idle();
  t.equal(node.run('fromPod', { src: POD, dst: OTHER }, { proto: 'tcp', sport: 3201, dport: 8080 }).verdict, 'pass');
  const after = await metrics.scrape();
  t.match(after, /^bpfproxy_policy_endpoints_deny_all 0$/m);
  t.match(after, /^bpfproxy_policy_hits_total\{policy="x\/web"\} [1-9]/m, 'per-policy hits');
});
