/**
 * The reconciler against real maps: who keeps a contested address (the
 * older service, on a fresh start too), names that survive restarts and
 * upgrades exactly, and a full backend map that leaves the old state
 * serving untouched.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FakeClock } from '../testkit/fake-clock.js';
import { affinityValue, CtDir, IPPROTO_UDP, svcName, u32Key } from '../src/dataplane/bpf/codecs.js';
import { loadDatapath, MAP_NAMES, MIGRATING_SUFFIX, type DatapathMaps } from '../src/dataplane/bpf/loader.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { native } from '../src/native/index.js';
import { frontendsFor } from '../src/model/desired.js';
import type { Frontend } from '../src/model/types.js';
import { Proxier } from '../src/proxy/proxier.js';
import { toService } from '../src/sources/convert.js';
import { silentLogger } from '../src/log.js';
import { be, fe } from './helpers/fixtures.js';
import { recordWrites } from './helpers/map-writes.js';
import { BPF_DIR, tmpDatapath, tmpPinDir } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';
import { asService, asSlice, service, slice } from './helpers/k8s-objects.js';
import { Endpoints } from '../src/model/endpoints.js';

const writes = recordWrites;

/** A map's entries in a stable order, as text: equal text = equal bytes. */
const dump = (m: { entries(): Array<[unknown, unknown]> }): string =>
  m
    .entries()
    .map(([k, v]) => JSON.stringify([k, v], (_, x) => (typeof x === 'bigint' ? x.toString() : x)))
    .sort()
    .join('\n');

const owners = (maps: DatapathMaps): Record<string, string> => {
  const names = new Map(maps.svcNames.entries().map(([k, v]) => [k.v, v.name]));
  return Object.fromEntries(
    maps.fe
      .entries()
      .map(([k, v]) => [`${k.addr}:${k.port}`, names.get(v.svcId) ?? '?'])
      .sort(),
  );
};

async function proxierOn(maps: DatapathMaps, clock: FakeClock, objs: Array<[string, unknown]>) {
  const p = new Proxier(new BpfReconciler(maps), { nodeName: 'n1', minSyncPeriod: 1000, syncPeriod: 60_000, clock, log: silentLogger });
  for (const [k, o] of objs) p.store.applyService(k, asService(o));
  p.setSynced();
  await clock.advance(0);
  await p.runner.idle();
  return p;
}

t.test('a clash is settled by age, not by name: after a cleanup the older service keeps its address', async (t) => {
  const dp = await tmpDatapath(t);
  const np = { type: 'NodePort', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 }] };
  const web = service('shop', 'web', '10.96.0.10', np);
  const evil = service('aaa', 'aaa-evil', '10.96.0.10', np);
  (web.metadata as Record<string, unknown>).creationTimestamp = '2021-01-01T00:00:00Z';
  (evil.metadata as Record<string, unknown>).creationTimestamp = '2024-06-01T00:00:00Z';
  const clock = new FakeClock();
  // The store happens to see the attacker first, and its name sorts first.
  const p = await proxierOn(dp.maps, clock, [
    ['aaa/aaa-evil', evil],
    ['shop/web', web],
  ]);
  t.same(owners(dp.maps), { '0.0.0.0:30080': 'shop/web:http/TCP', '10.96.0.10:80': 'shop/web:http/TCP' }, 'the older service has both');
  t.ok(p.stats.problems >= 2, 'the younger one is reported');
  p.stop();

  // A restart (new reconciler over the same maps) and a full sync change nothing.
  const ops = writes(dp.maps);
  const again = await proxierOn(dp.maps, clock, [
    ['aaa/aaa-evil', evil],
    ['shop/web', web],
  ]);
  t.same(ops, [], 'nothing written after a restart');
  again.stop();

  // Without timestamps, the one the store saw first is the older.
  const dp2 = await tmpDatapath(t);
  const strip = (o: typeof web) => ({ ...o, metadata: { name: o.metadata.name, namespace: o.metadata.namespace } });
  const p2 = await proxierOn(dp2.maps, clock, [
    ['shop/web', strip(web)],
    ['aaa/aaa-evil', strip(evil)],
  ]);
  t.same(Object.values(owners(dp2.maps)), ['shop/web:http/TCP', 'shop/web:http/TCP']);
  p2.stop();
});

t.test('a full sync gives an address held by a younger service to the older one', async (t) => {
  const dp = await tmpDatapath(t);
  const { log, lines } = captureLogger();
  const rec = new BpfReconciler(dp.maps, log);
  const ext = (svc: string, b: string) => [fe('ExternalIP', '203.0.113.5', 80, 'TCP', [be(b, 80)], { servicePort: `${svc}:p/TCP` })];
  // An earlier agent (name order) gave it to a/young.
  rec.syncService('a/young', ext('a/young', '10.0.0.2'));
  const r = rec.syncAll(
    new Map([
      ['z/old', ext('z/old', '10.0.0.1')],
      ['a/young', ext('a/young', '10.0.0.2')],
    ]),
  );
  t.same(owners(dp.maps), { '203.0.113.5:80': 'z/old:p/TCP' });
  t.equal(r.frontendsChanged, 1, 'switched in one write, no gap');
  t.same(
    r.problems.map((p) => p.service),
    ['a/young'],
  );
  t.match(r.problems[0]!.message, /already served by z\/old.*the older keeps it/);
  t.ok(lines.some((l) => /now served by z\/old, which is older than a\/young/.test(l.msg)));
  t.same(
    rec.syncAll(
      new Map([
        ['z/old', ext('z/old', '10.0.0.1')],
        ['a/young', ext('a/young', '10.0.0.2')],
      ]),
    ).frontendsChanged,
    0,
    'settled',
  );
  // Between full syncs, whoever has it keeps it.
  t.equal(rec.syncService('a/young', ext('a/young', '10.0.0.2')).problems.length, 1);
});

/** The longest valid names: namespace 63, name 63, port name 63, UDP. */
function longest(): Frontend[] {
  const ns = `n${'s'.repeat(62)}`;
  const name = `w${'e'.repeat(62)}`;
  const r = toService({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: {
      type: 'NodePort',
      clusterIP: '10.96.7.7',
      sessionAffinity: 'ClientIP',
      ports: [{ name: `p${'o'.repeat(62)}`, port: 53, protocol: 'UDP', nodePort: 30053 }],
    },
  });
  if (!r.value || r.problems.length) throw new Error(JSON.stringify(r.problems));
  return frontendsFor(
    r.value,
    [
      {
        namespace: ns,
        name: 'x',
        serviceName: name,
        ports: [{ name: `p${'o'.repeat(62)}`, port: 5353, protocol: 'UDP' }],
        endpoints: Endpoints.of([{ addresses: ['10.244.1.1'], ready: true, serving: true, terminating: false, nodeName: 'n1' }]),
      },
    ],
    'n1',
  );
}

t.test('maximal-length names survive a reconciler restart with zero frontend changes', async (t) => {
  const dp = await tmpDatapath(t);
  const fes = longest();
  const svc = fes[0]!.servicePort.slice(0, fes[0]!.servicePort.lastIndexOf(':'));
  t.equal(fes[0]!.servicePort.length, 195);
  const a = new BpfReconciler(dp.maps);
  t.same(a.syncAll(new Map([[svc, fes]])).problems, []);
  t.same(
    dp.maps.svcNames.entries().map(([, v]) => v.name),
    [fes[0]!.servicePort],
    'the name is stored whole',
  );
  const before = dump(dp.maps.fe);
  const b = new BpfReconciler(dp.maps);
  const ops = writes(dp.maps);
  const r = b.syncAll(new Map([[svc, fes]]));
  t.equal(r.frontendsChanged, 0);
  t.same(ops, [], 'no write');
  t.equal(dump(dp.maps.fe), before);
});

t.test('upgrade: a pinned svc_names map of the old 128-byte layout is migrated, no frontend flaps', async (t) => {
  const pinDir = tmpPinDir(t);
  const fes = longest();
  const svc = fes[0]!.servicePort.slice(0, fes[0]!.servicePort.lastIndexOf(':'));
  const other = [fe('ClusterIP', '10.96.0.10', 80, 'TCP', [be('10.0.0.1', 80)], { servicePort: 'default/web:http/TCP' })];
  const all = new Map([
    [svc, fes],
    ['default/web', other],
  ]);
  let dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  new BpfReconciler(dp.maps).syncAll(all);
  const names = dp.maps.svcNames.entries();
  const feBefore = dump(dp.maps.fe);
  const slotsBefore = dump(dp.maps.slots);
  dp.close();

  // What an earlier version left pinned: 128-byte names, long ones cut at 127.
  const path = join(pinDir, MAP_NAMES.svcNames);
  execFileSync('rm', ['-f', path]);
  execFileSync('bpftool', [
    'map',
    'create',
    path,
    'type',
    'hash',
    'key',
    '4',
    'value',
    '128',
    'entries',
    '65536',
    'name',
    'bpfproxy_svc_na',
    'flags',
    '1',
  ]);
  const old = native().objGet(path);
  for (const [k, v] of names) {
    const val = Buffer.alloc(128);
    val.write(v.name.slice(0, 127), 'utf8');
    native().mapUpdate(old, u32Key.encode(k), val);
  }
  old.close();

  const { log, lines } = captureLogger();
  dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH, log);
  t.teardown(() => dp.close());
  t.ok(
    lines.some(
      (l) =>
        l.level === 'warn' && /bpfproxy_svc_names is pinned with key\/value 4\/128 bytes; this version uses 4\/256: migrating/.test(l.msg),
    ),
  );
  t.ok(lines.some((l) => /migrated: 2 service names copied/.test(l.msg)));
  t.notOk(existsSync(path + MIGRATING_SUFFIX), 'the old map is gone');
  const now = native().objGet(path);
  t.equal(now.valueSize, svcName.size);
  now.close();

  const rec = new BpfReconciler(dp.maps, log);
  const ops = writes(dp.maps);
  const r = rec.syncAll(all);
  t.same(r.problems, []);
  t.equal(r.frontendsChanged, 0, 'no frontend changed');
  t.same(ops, ['set svcNames'], 'only the cut name is written again, whole');
  t.equal(dump(dp.maps.fe), feBefore);
  t.equal(dump(dp.maps.slots), slotsBefore);
  t.same(
    dp.maps.svcNames
      .entries()
      .map(([, v]) => v.name)
      .sort(),
    names.map(([, v]) => v.name).sort(),
  );
  t.equal(new BpfReconciler(dp.maps).syncAll(all).frontendsChanged, 0, 'and the next restart is quiet too');
});

t.test('a full backend map during an endpoint change leaves the old state serving, byte for byte', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 64, natBackend: 4, natAffinity: 64 } });
  const rec = new BpfReconciler(dp.maps);
  /** remote backends: one slot each */
  const rb = (ip: string, port: number) => be(ip, port, false);
  const dns = (bs: ReturnType<typeof be>[]) => [
    fe('ClusterIP', '10.96.0.53', 53, 'UDP', bs, { servicePort: 'k/dns:dns/UDP', affinityTimeout: 60 }),
  ];
  rec.syncService('k/dns', dns([rb('10.0.0.1', 53), rb('10.0.0.2', 53)]));
  // Another service takes the rest of the slots map.
  rec.syncService('k/other', [
    fe('ClusterIP', '10.96.0.54', 80, 'TCP', [rb('10.0.1.1', 80), rb('10.0.1.2', 80)], { servicePort: 'k/other:p/TCP' }),
  ]);
  t.equal(dp.maps.slots.count(), 4, 'the slots map is full');
  const key = { addr: '10.96.0.53', port: 53, proto: IPPROTO_UDP };
  const svcId = dp.maps.fe.get(key)!.svcId;
  for (const b of ['10.0.0.1', '10.0.0.2']) {
    const client = b === '10.0.0.1' ? '10.1.1.1' : '10.1.1.2';
    dp.maps.ct.set(
      { saddr: client, daddr: '10.96.0.53', sport: 999, dport: 53, proto: IPPROTO_UDP },
      {
        expiresNs: 1n << 62n,
        createdNs: 0n,
        natSaddr: client,
        natSport: 999,
        natDaddr: b,
        natDport: 53,
        dir: CtDir.FWD,
        state: 0,
        flags: 0,
        svcId,
      },
    );
    dp.maps.ct.set(
      { saddr: b, daddr: client, sport: 53, dport: 999, proto: IPPROTO_UDP },
      {
        expiresNs: 1n << 62n,
        createdNs: 0n,
        natSaddr: '10.96.0.53',
        natSport: 53,
        natDaddr: client,
        natDport: 999,
        dir: CtDir.REPLY,
        state: 0,
        flags: 0,
        svcId,
      },
    );
    dp.maps.affinity.set({ svcId, client }, { backend: { addr: b, port: 53, flags: 1 }, lastUsedNs: 1n });
  }
  const before = {
    fe: dump(dp.maps.fe),
    slots: dump(dp.maps.slots),
    aff: dump(dp.maps.affinity),
    ct: dump(dp.maps.ct),
    names: dump(dp.maps.svcNames),
  };

  // 10.0.0.2 goes, 10.0.0.3 comes: the new set does not fit.
  const r = rec.syncService('k/dns', dns([rb('10.0.0.1', 53), rb('10.0.0.3', 53)]));
  t.equal(r.frontendsChanged, 0);
  t.equal(r.problems.length, 1);
  const p = r.problems[0]!;
  t.ok(p.mapFull);
  t.match(p.message, /backend map bpfproxy_slots is full \(4 entries\)/);
  t.match(p.message, /old endpoints keep serving/);
  t.match(p.message, /bpfMapSizeNATBackend.*--map-size-nat-backend/);
  t.match(p.message, /retried on the next sync/);
  t.same(
    { fe: dump(dp.maps.fe), slots: dump(dp.maps.slots), aff: dump(dp.maps.affinity), ct: dump(dp.maps.ct), names: dump(dp.maps.svcNames) },
    before,
    'frontend, old backend set, affinity, conntrack and names untouched',
  );
  t.same(rec.stats(), { frontends: 2, backendSets: 2, servicePorts: 2, slots: 4 }, 'nothing leaked');

  const r2 = rec.syncService('k/dns', dns([rb('10.0.0.1', 53), rb('10.0.0.2', 53)]));
  t.same(r2.problems, [], 'back to the old endpoints: nothing to write');
  t.equal(r2.frontendsChanged, 0);

  // Room frees up: the retry goes through and only then is the old state cleaned.
  rec.syncService('k/other', []);
  const r3 = rec.syncService('k/dns', dns([rb('10.0.0.1', 53), rb('10.0.0.3', 53)]));
  t.same(r3.problems, []);
  t.equal(r3.frontendsChanged, 1);
  t.same(
    dp.maps.affinity.entries().map(([, v]) => v.backend.addr),
    ['10.0.0.1'],
    'affinity to the removed endpoint cleared now',
  );
});

t.test('the proxier retries a full-map failure on later syncs, and it goes through once there is room', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 64, natBackend: 4, natAffinity: 64 } });
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const p = new Proxier(new BpfReconciler(dp.maps), { nodeName: 'n1', minSyncPeriod: 1000, syncPeriod: 60_000, clock, log });
  t.teardown(() => p.stop());
  p.store.applyService('shop/web', asService(service('shop', 'web', '10.96.0.10')));
  p.store.applySlice('shop/web-1', asSlice(slice('shop', 'web', 'web-1', [{ ip: '10.244.1.1' }, { ip: '10.244.1.2' }])));
  p.store.applyService('shop/x', asService(service('shop', 'x', '10.96.0.11')));
  p.store.applySlice('shop/x-1', asSlice(slice('shop', 'x', 'x-1', [{ ip: '10.244.1.9' }])));
  p.setSynced();
  await clock.advance(0);
  await p.runner.idle();
  const key = { addr: '10.96.0.10', port: 80, proto: 6 };
  const old = JSON.stringify(dp.maps.fe.get(key));
  p.store.applySlice('shop/web-1', asSlice(slice('shop', 'web', 'web-1', [{ ip: '10.244.1.1' }, { ip: '10.244.1.3' }])));
  await clock.advance(1000); // (no idle(): a retry stays pending while the map is full)
  t.equal(JSON.stringify(dp.maps.fe.get(key)), old, 'the frontend still points at the old endpoints');
  t.ok(lines.some((l) => l.level === 'error' && l.mapFull === true && /old endpoints keep serving/.test(l.msg)));
  await clock.advance(3000);
  t.equal(JSON.stringify(dp.maps.fe.get(key)), old, 'still full: still the old state');
  t.ok(p.stats.syncs >= 4, 'retried meanwhile');
  // Room frees up (another service goes); nothing about web changes, its retry goes through.
  p.store.applyService('shop/x', undefined);
  await clock.advance(3000);
  const now = dp.maps.fe.get(key)!;
  t.not(JSON.stringify(now), old, 'programmed once it fits');
  t.same(
    dp.maps.slots
      .entries()
      .filter(([k]) => k.setId === now.setId)
      .map(([, v]) => v.addr)
      .sort(),
    ['10.244.1.1', '10.244.1.3'],
  );
});

t.test('a frontend the full frontend map refuses leaves no backend set or name behind', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 2, natBackend: 64, natAffinity: 64 } });
  const rec = new BpfReconciler(dp.maps);
  const a = [be('10.0.0.1', 80, false)];
  // two frontends, one name: the frontend map is full, the name map is not
  rec.syncService('k/a', [
    fe('ClusterIP', '10.96.0.1', 80, 'TCP', a, { servicePort: 'k/a:p/TCP' }),
    fe('NodePort', '0.0.0.0', 30080, 'TCP', a, { servicePort: 'k/a:p/TCP' }),
  ]);
  const before = { slots: dump(dp.maps.slots), names: dump(dp.maps.svcNames), stats: rec.stats() };
  const r = rec.syncService('k/b', [fe('ClusterIP', '10.96.0.2', 80, 'TCP', [be('10.0.0.2', 80, false)], { servicePort: 'k/b:p/TCP' })]);
  t.match(
    r.problems[0]!.message,
    /frontend map bpfproxy_fe is full \(2 entries\): 10.96.0.2:80\/TCP \(ClusterIP\) is not programmed; retried/,
  );
  t.same(
    { slots: dump(dp.maps.slots), names: dump(dp.maps.svcNames), stats: rec.stats() },
    before,
    'its backend set and name are gone again',
  );
});

t.test('upgrade: another pinned map of another layout is replaced, with a line saying what that costs', async (t) => {
  const pinDir = tmpPinDir(t);
  execFileSync('mkdir', ['-p', pinDir]);
  const path = join(pinDir, MAP_NAMES.affinity);
  execFileSync('bpftool', [
    'map',
    'create',
    path,
    'type',
    'lru_hash',
    'key',
    '8',
    'value',
    '8',
    'entries',
    '64',
    'name',
    'bpfproxy_affini',
  ]);
  const { log, lines } = captureLogger();
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH, log);
  t.teardown(() => dp.close());
  t.ok(
    lines.some(
      (l) =>
        l.level === 'warn' &&
        new RegExp(
          String.raw`bpfproxy_affinity is pinned with key\/value 8\/8 bytes; this version uses 8\/${affinityValue.size}: replaced by a new, empty map \(ClientIP affinity starts afresh\)`,
        ).test(l.msg),
    ),
    lines.map((l) => l.msg).join(' | '),
  );
  const now = native().objGet(path);
  t.equal(now.valueSize, affinityValue.size);
  now.close();
});
