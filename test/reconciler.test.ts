/** The BPF reconciler against real maps: idempotent, make-before-break, restart-safe, full-map safe. */
import t from 'tap';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { serviceViews } from '../src/dataplane/bpf/inspect.js';
import { ServiceStore } from '../src/proxy/store.js';
import { ManifestSource } from '../src/sources/manifests.js';
import { serviceSink } from '../src/sources/sink.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { silentLogger } from '../src/log.js';
import { CtDir, IPPROTO_UDP } from '../src/dataplane/bpf/codecs.js';
import type { Frontend } from '../src/model/types.js';
import { be, fe } from './helpers/fixtures.js';
import { recordWrites } from './helpers/map-writes.js';
import { REPO, tmpDatapath } from './helpers/env.js';

const record = recordWrites;

const web = (backends = [be('10.0.0.1', 80), be('10.0.0.2', 80)]): Frontend[] => [
  fe('ClusterIP', '10.96.0.10', 80, 'TCP', backends, { servicePort: 'default/web:http/TCP' }),
  fe('NodePort', '0.0.0.0', 30080, 'TCP', backends, { servicePort: 'default/web:http/TCP' }),
];

t.test('idempotent and make-before-break', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  t.equal(rec.syncService('default/web', web()).frontendsChanged, 2);
  const ops = record(dp.maps);
  t.equal(rec.syncService('default/web', web()).frontendsChanged, 0, 'same desired state: nothing written');
  t.same(ops, [], 'not one map write');
  const before = dp.maps.fe.get({ addr: '10.96.0.10', port: 80, proto: 6 })!;
  rec.syncService('default/web', web([be('10.0.0.1', 80), be('10.0.0.3', 80)]));
  const after = dp.maps.fe.get({ addr: '10.96.0.10', port: 80, proto: 6 })!;
  t.not(after.setId, before.setId, 'a new backend set');
  t.equal(after.svcId, before.svcId, 'the service id is stable');
  t.same(ops, ['setMany slots', 'set fe', 'set fe', 'deleteMany slots'], 'new slots, then switch, then delete old slots');
  t.same(
    dp.maps.slots
      .entries()
      .map(([k]) => k.setId)
      .filter((s) => s === before.setId),
    [],
    'old set gone',
  );
});

t.test('a restarted agent adopts ids and changes nothing', async (t) => {
  const dp = await tmpDatapath(t);
  const a = new BpfReconciler(dp.maps);
  a.syncAll(
    new Map([
      ['default/web', web()],
      ['default/dns', [fe('ClusterIP', '10.96.0.53', 53, 'UDP', [be('10.0.0.9', 53)], { servicePort: 'default/dns:dns/UDP' })]],
    ]),
  );
  const dump = JSON.stringify(serviceViews(dp.maps));
  const b = new BpfReconciler(dp.maps);
  t.same(b.stats(), a.stats(), 'same state rebuilt from the pinned maps');
  const ops = record(dp.maps);
  const r = b.syncAll(
    new Map([
      ['default/web', web()],
      ['default/dns', [fe('ClusterIP', '10.96.0.53', 53, 'UDP', [be('10.0.0.9', 53)], { servicePort: 'default/dns:dns/UDP' })]],
    ]),
  );
  t.equal(r.frontendsChanged, 0);
  t.same(ops, [], 'no write after restart');
  t.equal(JSON.stringify(serviceViews(dp.maps)), dump);
  const r2 = b.syncAll(new Map([['default/web', web()]]));
  t.equal(r2.frontendsChanged, 1, 'dns pruned on full sync');
  t.same(
    dp.maps.svcNames.entries().map(([, v]) => v.name),
    ['default/web:http/TCP'],
    'its name released',
  );
});

t.test('two services claiming one address: the first keeps it, the second gets it when freed', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  rec.syncService('a/one', [fe('ExternalIP', '203.0.113.1', 80, 'TCP', [be('10.0.0.1', 80)], { servicePort: 'a/one:p/TCP' })]);
  const r = rec.syncService('b/two', [fe('ExternalIP', '203.0.113.1', 80, 'TCP', [be('10.0.0.2', 80)], { servicePort: 'b/two:p/TCP' })]);
  t.equal(r.problems.length, 1);
  t.match(r.problems[0]!.message, /already served by a\/one/);
  const freed = rec.syncService('a/one', []);
  t.same(freed.retry, ['b/two'], 'the waiting service is retried');
  t.same(
    rec.syncService('b/two', [fe('ExternalIP', '203.0.113.1', 80, 'TCP', [be('10.0.0.2', 80)], { servicePort: 'b/two:p/TCP' })]).problems,
    [],
  );
});

t.test('a full map is reported per frontend, never thrown; the rest is programmed', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 3, natBackend: 64, natAffinity: 64 } });
  const rec = new BpfReconciler(dp.maps);
  const all = new Map<string, Frontend[]>();
  for (let i = 1; i <= 5; i++)
    all.set(`default/s${i}`, [fe('ClusterIP', `10.96.1.${i}`, 80, 'TCP', [be(`10.0.1.${i}`, 80)], { servicePort: `default/s${i}:p/TCP` })]);
  const r = rec.syncAll(all);
  t.equal(dp.maps.fe.count(), 3, 'as many as fit');
  t.equal(r.problems.length, 2);
  t.ok(
    r.problems.every((p) => p.mapFull && /bpfMapSizeNATFrontend/.test(p.message)),
    r.problems.map((p) => p.message).join(' | '),
  );
  all.delete('default/s1');
  const r2 = rec.syncAll(all);
  t.equal(r2.problems.length, 1, 'room freed: one more programmed');
});

t.test('removing an endpoint clears its affinity and its UDP conntrack, not TCP', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  const dns = (bs: ReturnType<typeof be>[]) => [
    fe('ClusterIP', '10.96.0.53', 53, 'UDP', bs, { servicePort: 'k/dns:dns/UDP', affinityTimeout: 60 }),
  ];
  rec.syncService('k/dns', dns([be('10.0.0.1', 53), be('10.0.0.2', 53)]));
  const svcId = dp.maps.fe.get({ addr: '10.96.0.53', port: 53, proto: IPPROTO_UDP })!.svcId;
  const ctv = (dir: number, nat: [string, number, string, number]) => ({
    expiresNs: 1n << 62n,
    createdNs: 0n,
    natSaddr: nat[0],
    natSport: nat[1],
    natDaddr: nat[2],
    natDport: nat[3],
    dir,
    state: 0,
    flags: 0,
    svcId,
  });
  for (const b of ['10.0.0.1', '10.0.0.2']) {
    dp.maps.ct.set(
      { saddr: '10.1.1.1', daddr: '10.96.0.53', sport: 999, dport: 53, proto: IPPROTO_UDP },
      ctv(CtDir.FWD, ['10.1.1.1', 999, b, 53]),
    );
    dp.maps.ct.set(
      { saddr: b, daddr: '10.1.1.1', sport: 53, dport: 999, proto: IPPROTO_UDP },
      ctv(CtDir.REPLY, ['10.96.0.53', 53, '10.1.1.1', 999]),
    );
    dp.maps.affinity.set(
      { svcId, client: b === '10.0.0.1' ? '10.1.1.1' : '10.1.1.2' },
      { backend: { addr: b, port: 53, flags: 1 }, lastUsedNs: 1n },
    );
  }
  rec.syncService('k/dns', dns([be('10.0.0.1', 53)]));
  await rec.flushed(); // the UDP conntrack flush runs off the event loop, just after the sync
  const ct = dp.maps.ct.entries();
  t.ok(
    ct.every(([k, v]) => k.saddr !== '10.0.0.2' && v.natDaddr !== '10.0.0.2'),
    'UDP flows to the removed endpoint are gone',
  );
  t.ok(
    ct.some(([k]) => k.saddr === '10.0.0.1'),
    'flows to the remaining endpoint stay',
  );
  t.same(
    dp.maps.affinity.entries().map(([, v]) => v.backend.addr),
    ['10.0.0.1'],
    'affinity to the removed endpoint gone',
  );
});

t.test('golden dump of the example manifests as programmed', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  const store = new ServiceStore(() => undefined);
  new ManifestSource(join(REPO, 'manifests', 'examples'), serviceSink(store), silentLogger, new FakeClock()).scan();
  const all = new Map(store.serviceKeys().map((k) => [k, store.frontendsOf(k, 'node1')]));
  t.same(rec.syncAll(all).problems, []);
  const text =
    serviceViews(dp.maps)
      .map(
        (s) =>
          `${s.servicePort} ${s.frontend} ${s.kind}${s.policies.length ? ` [${s.policies.join(',')}]` : ''}${s.affinityTimeout ? ` affinity=${s.affinityTimeout}` : ''}\n` +
          `  cluster: ${s.backends.map((b) => b.addr + (b.local ? '*' : '')).join(' ') || '-'}\n` +
          `  local:   ${s.localBackends.map((b) => b.addr).join(' ') || '-'}`,
      )
      .join('\n') + '\n';
  const golden = join(REPO, 'test', 'golden', 'examples-node1.txt');
  if (process.env.UPDATE_GOLDEN || !existsSync(golden)) writeFileSync(golden, text);
  t.equal(text, readFileSync(golden, 'utf8'), 'maps match test/golden/examples-node1.txt (UPDATE_GOLDEN=1 to rewrite)');
});
