/** The Kubernetes source against the in-process API server (no dataplane). */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { realClock } from '../src/clock.js';
import { apiConnection, kubeClients } from '../src/k8s/client.js';
import { ServiceStore } from '../src/proxy/store.js';
import { KubeSource } from '../src/sources/kubernetes.js';
import { serviceSink } from '../src/sources/sink.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';
import { service, slice } from './helpers/k8s-objects.js';
import { captureLogger } from './helpers/log.js';
import { sleep, until } from './helpers/wait.js';

t.test('list/watch into the store', async (t) => {
  // no FelixConfiguration CRD: its resource is not served at all
  const api = new FakeApiServer({ crds: [] });
  const url = await api.listen();
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-kc-'));
  t.teardown(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  writeKubeconfig(join(dir, 'kubeconfig'), url);
  for (let i = 0; i < 1200; i++) api.upsert('services', service('bulk', `s${i}`, `10.97.${i >> 8}.${i & 255}`));
  api.upsert('endpointslices', slice('bulk', 's0', 's0-a', [{ ip: '10.0.0.1' }]));

  const changes: string[] = [];
  const store = new ServiceStore((s) => changes.push(s));
  const { log, lines } = captureLogger();
  const src = new KubeSource(kubeClients(await apiConnection(join(dir, 'kubeconfig'))), serviceSink(store), log, realClock);
  t.teardown(() => src.stop());
  src.start();
  await src.servicesSynced();
  t.equal(store.size.services, 1200, 'paged list delivered every service');
  t.ok(
    api.requests.filter((r) => r.path === '/api/v1/services' && r.query.continue).length >= 2,
    'the list was paged with continue tokens',
  );
  t.ok(src.informers.Service.hasSynced && !src.informers.FelixConfiguration.hasSynced, 'a missing CRD does not hold up services');
  t.same(
    store.frontendsOf('bulk/s0', 'n')[0]!.clusterBackends.map((b) => b.ip),
    ['10.0.0.1'],
  );

  await t.test('watch delivers add, update, delete', async (t) => {
    changes.length = 0;
    api.upsert('services', service('web', 'a', '10.96.0.1'));
    await until('add', () => !!store.service('web/a'));
    api.upsert('services', service('web', 'a', '10.96.0.2'));
    await until('update', () => store.service('web/a')?.clusterIPs[0] === '10.96.0.2');
    api.upsert('endpointslices', slice('web', 'a', 'a-1', [{ ip: '10.0.0.9' }]));
    await until('slice', () => store.frontendsOf('web/a', 'n')[0]?.clusterBackends.length === 1);
    api.remove('services', 'web/a');
    await until('delete', () => !store.service('web/a'));
    t.same([...new Set(changes)], ['web/a'], 'only the service that changed was marked');
  });

  await t.test('a dropped watch resumes from the last resourceVersion, missing nothing, without a relist', async (t) => {
    const lists = src.informers.Service.stats.lists;
    api.dropWatches();
    api.upsert('services', service('web', 'b', '10.96.0.3'));
    await until('event sent while disconnected', () => !!store.service('web/b'));
    t.equal(src.informers.Service.stats.lists, lists, 'no relist');
    const rewatch = api.requests.filter((r) => r.path === '/api/v1/services' && r.query.watch === 'true').at(-1)!;
    t.ok(Number(rewatch.query.resourceVersion) > 1200, `resumed at resourceVersion ${rewatch.query.resourceVersion}`);
    t.equal(rewatch.query.allowWatchBookmarks, 'true', 'bookmarks asked for');
  });

  await t.test('bookmarks move the resourceVersion on without events', async (t) => {
    const nodeWatches = () => api.requests.filter((r) => r.query.watch === 'true' && r.path === '/api/v1/nodes');
    // the node watch may still be backing off from the previous drop
    await until('node watch connected', () => api.watchCount('nodes') === 1);
    const before = nodeWatches().at(-1)!;
    const count = nodeWatches().length;
    for (let i = 0; i < 5; i++) api.upsert('services', service('noise', `n${i}`, `10.98.0.${i}`));
    await sleep(1300); // a bookmark interval
    api.dropWatches();
    await until('node watch re-opened', () => nodeWatches().length > count);
    const after = nodeWatches().at(-1)!;
    t.ok(
      Number(after.query.resourceVersion) > Number(before.query.resourceVersion),
      `node watch resumed at ${after.query.resourceVersion} (was ${before.query.resourceVersion}) thanks to bookmarks`,
    );
  });

  await t.test('410 Gone: relist, and nothing unchanged is touched', async (t) => {
    const relists = src.informers.Service.stats.relistsAfterGone;
    api.dropWatches();
    api.compact();
    changes.length = 0;
    api.upsert('services', service('web', 'c', '10.96.0.4'));
    api.compact();
    await until('relist after 410', () => src.informers.Service.stats.relistsAfterGone > relists && !!store.service('web/c'));
    await sleep(100);
    t.same([...new Set(changes)], ['web/c'], 'only the new service changed: no flap of the 1200 others');
    t.ok(
      lines.some((l) => /410 Gone\); relisting/.test(l.msg)),
      'the relist is logged',
    );
  });

  await t.test('a bad object is named in a log line and an Event; the rest applies', async (t) => {
    api.upsert(
      'services',
      service('web', 'bad', '10.96.0.5', {}, [
        { name: 'http', port: 80 },
        { name: 'x', port: 99999 },
      ]),
    );
    await until('bad service applied', () => store.service('web/bad')?.ports.length === 1);
    await until('event', () => api.events.length > 0);
    const ev = api.events.at(-1)!;
    t.match(ev, { involvedObject: { kind: 'Service', name: 'bad', namespace: 'web' }, type: 'Warning', reason: 'BpfproxyInvalidField' });
    t.match((ev as unknown as { message: string }).message, /spec\.ports\[1\]\.port/);
    t.ok(lines.some((l) => l.level === 'warn' && /Service web\/bad field spec\.ports\[1\]\.port/.test(l.msg)));
  });
});
