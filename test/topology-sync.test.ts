/**
 * Topology through the sync pipeline into real maps: the proxier with the
 * BPF reconciler (Maglev on) over a datapath of the test's own. A hint
 * change rewrites the backends (and the Maglev table, built from the chosen
 * endpoints) of that service alone; a change of this node's zone resyncs
 * the services with hints and nothing else, without a full sync.
 */
import t from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { DEFAULT_SERVICE_POLICY } from '../src/config/services.js';
import type { Dataplane, SyncReport } from '../src/dataplane/dataplane.js';
import { BpfReconciler, DEFAULT_LOAD_BALANCING } from '../src/dataplane/bpf/reconciler.js';
import { serviceViews } from '../src/dataplane/bpf/inspect.js';
import { MAGLEV_CHUNK_BYTES, MaglevTable, maglevSizeOf } from '../src/dataplane/bpf/codecs.js';
import { maglevTable } from '../src/model/maglev.js';
import type { Frontend } from '../src/model/types.js';
import { Proxier } from '../src/proxy/proxier.js';
import { silentLogger } from '../src/log.js';
import { asService, asSlice, service } from './helpers/k8s-objects.js';
import { captureLogger } from './helpers/log.js';
import { tmpDatapath } from './helpers/env.js';

/** Passes everything to the reconciler and notes which services each sync touched. */
class Recording implements Dataplane {
  readonly synced: string[] = [];
  fullSyncs = 0;
  constructor(private readonly inner: BpfReconciler) {}
  syncService(service: string, frontends: readonly Frontend[]): SyncReport {
    this.synced.push(service);
    return this.inner.syncService(service, frontends);
  }
  syncAll(all: ReadonlyMap<string, readonly Frontend[]>): SyncReport {
    this.fullSyncs++;
    return this.inner.syncAll(all);
  }
  setNodeAddresses(ips: readonly string[], nodePort?: readonly string[]): void {
    this.inner.setNodeAddresses(ips, nodePort);
  }
}

type Ep = { ip: string; node: string; zones?: string[]; nodes?: string[] };

const hintedSlice = (svc: string, eps: Ep[]) =>
  asSlice({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: 'IPv4',
    metadata: { name: `${svc}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      nodeName: e.node,
      ...(e.zones || e.nodes
        ? {
            hints: {
              ...(e.zones ? { forZones: e.zones.map((name) => ({ name })) } : {}),
              ...(e.nodes ? { forNodes: e.nodes.map((name) => ({ name })) } : {}),
            },
          }
        : {}),
    })),
  });

const WEB: Ep[] = [
  { ip: '10.0.1.1', node: 'n1', zones: ['zone-a'] },
  { ip: '10.0.1.2', node: 'n2', zones: ['zone-a'] },
  { ip: '10.0.2.1', node: 'n3', zones: ['zone-b'] },
  { ip: '10.0.2.2', node: 'n4', zones: ['zone-b'] },
];

t.test('hint and zone changes reach the maps, for the affected services only', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new Recording(new BpfReconciler(dp.maps, undefined, { ...DEFAULT_LOAD_BALANCING, algorithm: 'maglev' }));
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const p = new Proxier(rec, {
    nodeName: 'n1',
    minSyncPeriod: 1000,
    syncPeriod: 3_600_000,
    clock,
    log,
    services: DEFAULT_SERVICE_POLICY,
  });
  t.teardown(() => p.stop());
  const settle = async () => {
    await clock.advance(1000);
    await p.runner.idle();
  };
  const lbIP = '198.51.100.10';
  p.store.applyService(
    'shop/web',
    asService({
      ...service('shop', 'web', '10.96.0.10', { type: 'LoadBalancer', trafficDistribution: 'PreferClose' }, [
        { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 },
      ]),
      status: { loadBalancer: { ingress: [{ ip: lbIP }] } },
    }),
  );
  p.store.applySlice('shop/web-1', hintedSlice('web', WEB));
  p.store.applyService('shop/plain', asService(service('shop', 'plain', '10.96.0.20')));
  p.store.applySlice(
    'shop/plain-1',
    hintedSlice('plain', [
      { ip: '10.0.3.1', node: 'n1' },
      { ip: '10.0.3.2', node: 'n3' },
    ]),
  );
  p.setNodeZone('zone-a');
  p.setSynced();
  await settle();

  const backends = (frontend: string) =>
    serviceViews(dp.maps)
      .find((v) => v.frontend === frontend)!
      .backends.map((b) => b.addr);
  /** The Maglev table of a frontend as written in the map, and the table the model builds from `addrs`. */
  const maglev = (frontend: { addr: string; port: number; proto: number }, addrs: string[]) => {
    const fe = dp.maps.fe.get(frontend)!;
    const m = maglevSizeOf(fe.maglevSize);
    const got: number[] = [];
    for (let c = 0; c * MAGLEV_CHUNK_BYTES < m; c++) {
      const v = dp.maps.maglev.get({ setId: fe.setId, table: MaglevTable.CLUSTER, chunk: c })!;
      got.push(...v.ord.subarray(0, Math.min(MAGLEV_CHUNK_BYTES, m - c * MAGLEV_CHUNK_BYTES)));
    }
    return { got, want: [...maglevTable(addrs, m)] };
  };
  const LB = { addr: lbIP, port: 80, proto: 6 };

  t.same(backends('10.96.0.10:80/TCP'), ['10.0.1.1:8080', '10.0.1.2:8080'], 'zone-a node: the zone-a endpoints');
  t.same(backends(`${lbIP}:80/TCP`), ['10.0.1.1:8080', '10.0.1.2:8080'], 'the LoadBalancer IP too (Cluster policy)');
  const m1 = maglev(LB, ['10.0.1.1:8080', '10.0.1.2:8080']);
  t.same(m1.got, m1.want, 'the Maglev table is built from the chosen endpoints');
  t.same(backends('10.96.0.20:80/TCP'), ['10.0.3.1:8080', '10.0.3.2:8080'], 'no hints: all endpoints');
  t.same(
    p.topologyView().map((x) => [x.servicePort, x.mode, x.why, x.requested]),
    [['shop/web:http/TCP', 'PreferSameZone', 'zone hints for zone-a', 'trafficDistribution: PreferClose']],
    'the reason, for the hinted service only',
  );

  // The EndpointSlice controller moves 10.0.2.1 to zone-a.
  rec.synced.length = 0;
  const full = rec.fullSyncs;
  p.store.applySlice(
    'shop/web-1',
    hintedSlice(
      'web',
      WEB.map((e) => (e.ip === '10.0.2.1' ? { ...e, zones: ['zone-a'] } : e)),
    ),
  );
  await settle();
  t.same(rec.synced, ['shop/web'], 'a hint change syncs that service alone');
  t.equal(rec.fullSyncs, full, 'no full sync');
  t.same(backends('10.96.0.10:80/TCP'), ['10.0.1.1:8080', '10.0.1.2:8080', '10.0.2.1:8080'], 'the new zone-a endpoint is used');
  const m2 = maglev(LB, ['10.0.1.1:8080', '10.0.1.2:8080', '10.0.2.1:8080']);
  t.same(m2.got, m2.want, 'and the Maglev table follows');

  // One endpoint loses its hint: kube-proxy's fallback, all endpoints.
  rec.synced.length = 0;
  p.store.applySlice(
    'shop/web-1',
    hintedSlice(
      'web',
      WEB.map((e) => (e.ip === '10.0.2.2' ? { ip: e.ip, node: e.node } : e)),
    ),
  );
  await settle();
  t.same(backends('10.96.0.10:80/TCP'), ['10.0.1.1:8080', '10.0.1.2:8080', '10.0.2.1:8080', '10.0.2.2:8080'], 'hints incomplete: all');
  t.match(p.topologyView()[0]!.why, /^hints incomplete: all endpoints/);
  p.store.applySlice('shop/web-1', hintedSlice('web', WEB));
  await settle();

  // The node is relabelled into zone-b.
  rec.synced.length = 0;
  p.setNodeZone('zone-b');
  await settle();
  t.same(rec.synced, ['shop/web'], 'a zone change syncs the services with hints, not the others');
  t.ok(
    lines.some(
      (l) =>
        l.level === 'info' &&
        l.msg === 'node n1: zone "zone-b" (was "zone-a"); 1 service(s) with topology hints choose their endpoints again',
    ),
    'the zone change is logged with what it touches',
  );
  t.equal(rec.fullSyncs, full, 'still no full sync');
  t.same(backends('10.96.0.10:80/TCP'), ['10.0.2.1:8080', '10.0.2.2:8080'], 'zone-b: the zone-b endpoints');
  t.equal(p.topologyView()[0]!.why, 'zone hints for zone-b');

  rec.synced.length = 0;
  p.setNodeZone('zone-b');
  await settle();
  t.same(rec.synced, [], 'the same zone again: nothing');

  // The label goes away: no zone, hints cannot apply.
  p.setNodeZone(undefined);
  await settle();
  t.same(backends('10.96.0.10:80/TCP'), ['10.0.1.1:8080', '10.0.1.2:8080', '10.0.2.1:8080', '10.0.2.2:8080']);
  t.match(p.topologyView()[0]!.why, /no topology.kubernetes.io\/zone label/);

  // The service goes: so does its topology entry.
  p.setNodeZone('zone-a');
  p.store.applyService('shop/web', undefined);
  p.store.applySlice('shop/web-1', undefined);
  await settle();
  t.same(p.topologyView(), [], 'gone with the service');
  const before = p.topologyVersion;
  p.setNodeZone('zone-b');
  await settle();
  t.equal(p.topologyVersion, before, 'no hinted service left: a zone change touches nothing');
});

t.test('eTP=Local with PreferSameNode hints: the Local set is node-local, the Cluster set the node-hinted endpoints', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  const clock = new FakeClock();
  const p = new Proxier(rec, { nodeName: 'n1', minSyncPeriod: 1000, syncPeriod: 3_600_000, clock, log: silentLogger });
  t.teardown(() => p.stop());
  p.store.applyService(
    'shop/local',
    asService(
      service('shop', 'local', '10.96.0.30', { type: 'NodePort', externalTrafficPolicy: 'Local', trafficDistribution: 'PreferSameNode' }, [
        { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30081 },
      ]),
    ),
  );
  p.store.applySlice(
    'shop/local-1',
    hintedSlice('local', [
      { ip: '10.0.1.1', node: 'n1', zones: ['zone-a'], nodes: ['n1'] },
      { ip: '10.0.1.2', node: 'n1', zones: ['zone-a'], nodes: ['n9'] },
      { ip: '10.0.2.1', node: 'n2', zones: ['zone-a'], nodes: ['n2'] },
    ]),
  );
  p.setNodeZone('zone-a');
  p.setSynced();
  await clock.advance(1000);
  await p.runner.idle();
  const v = serviceViews(dp.maps);
  const np = v.find((x) => x.frontend === '*:30081/TCP')!;
  t.same(np.policies, ['eTP=Local']);
  t.same(
    np.localBackends.map((b) => b.addr),
    ['10.0.1.1:8080', '10.0.1.2:8080'],
    'NodePort (eTP=Local): every endpoint on this node, hints or not',
  );
  t.same(
    v.find((x) => x.frontend === '10.96.0.30:80/TCP')!.backends.map((b) => b.addr),
    ['10.0.1.1:8080'],
    'cluster IP (iTP=Cluster): the endpoint hinted for this node',
  );
  t.same(p.topologyView()[0]!.why, 'PreferSameNode: endpoints hinted for node n1');
});
