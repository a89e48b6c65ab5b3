/**
 * The NetworkPolicy identity maps in the map fill that `bpfproxy status`
 * shows and /metrics exports (bpfproxy_map_entries / _max_entries):
 * bpfproxy_ipcache and bpfproxy_ipcache6 as the policy writer filled them
 * from a compiled dual-stack policy, counted on the worker thread as the
 * CLI counts them; and the agent's scrape, which takes the writer's own
 * count (PolicyMapWriter.ipcacheCounts()) instead of reading the tries key
 * by key: that count after writes, deletes, a refused write and a restart.
 */
import t from 'tap';
import { compilePolicy } from '../src/model/policy/compile.js';
import { toNetworkPolicy, toPod } from '../src/sources/policy-convert.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { refusingWrites } from './helpers/map-writes.js';
import { ConntrackGc } from '../src/dataplane/bpf/conntrack-gc.js';
import { datapathSnapshot, mapFills } from '../src/dataplane/bpf/inspect.js';
import { Metrics } from '../src/metrics.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { captureLogger } from './helpers/log.js';
import { tmpDatapath } from './helpers/env.js';

const pod = (name: string, ips: string[]) =>
  toPod({
    metadata: { name, namespace: 'x', labels: { app: name } },
    spec: { nodeName: 'n1', containers: [{ name: 'c' }] },
    status: { phase: 'Running', podIPs: ips.map((ip) => ({ ip })) },
  }).value!;

const NAMESPACES = [{ name: 'x', labels: { 'kubernetes.io/metadata.name': 'x' } }];
const NODE = { name: 'n1', addresses: ['192.0.2.11', '2001:db8:1::11'] };

t.test('bpfproxy_ipcache and bpfproxy_ipcache6 are in the map fill of status and metrics', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, natFrontend: 64, natBackend: 64, natAffinity: 64 } });
  const np = toNetworkPolicy({
    metadata: { name: 'web-in', namespace: 'x' },
    spec: {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ ipBlock: { cidr: '2001:db8:5::/48' } }, { ipBlock: { cidr: '198.51.100.0/24' } }] }],
    },
  }).value!;
  const compiled = compilePolicy({
    pods: [pod('web', ['10.244.1.11', 'fd00:10:244:1::11']), pod('client', ['10.244.1.12', 'fd00:10:244:1::12'])],
    namespaces: NAMESPACES,
    policies: [np],
    node: NODE,
  }).compiled;
  t.same(new PolicyMapWriter(dp.maps).apply(compiled).problems, []);
  const n4 = dp.maps.ipcache.count();
  const n6 = dp.maps.ipcache6.count();
  t.ok(n4 >= 4, `bpfproxy_ipcache holds the IPv4 prefixes (${n4})`);
  t.ok(n6 >= 4, `bpfproxy_ipcache6 holds the IPv6 prefixes (${n6})`);

  const snap = await datapathSnapshot(dp.maps, new ConntrackGc(dp.maps, captureLogger().log, new FakeClock()));
  const fill = (name: string) => snap.maps.find((m) => m.map === name);
  t.match(fill('bpfproxy_ipcache'), { entries: n4, maxEntries: dp.maps.ipcache.maxEntries }, 'bpfproxy_ipcache: entries and capacity');
  t.match(fill('bpfproxy_ipcache6'), { entries: n6, maxEntries: dp.maps.ipcache6.maxEntries }, 'bpfproxy_ipcache6 too');
  t.same(mapFills(dp.maps), snap.maps, 'bpfproxy status reads the same fill');

  const m = new Metrics();
  m.setSnapshot(() => Promise.resolve(snap));
  const body = await m.scrape();
  for (const line of [
    `bpfproxy_map_entries{map="bpfproxy_ipcache"} ${n4}`,
    `bpfproxy_map_entries{map="bpfproxy_ipcache6"} ${n6}`,
    `bpfproxy_map_max_entries{map="bpfproxy_ipcache6"} ${dp.maps.ipcache6.maxEntries}`,
  ])
    t.ok(body.includes(line), line);
});

t.test("the scrape's ipcache fill is the policy writer's count: after writes, deletes, a refused write and a restart", async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, natFrontend: 64, natBackend: 64, natAffinity: 64 } });
  // n dual-stack pods, every pod address an identity; the pods named isolated for ingress
  const compiled = (n: number, isolated = ['p0']) =>
    compilePolicy({
      pods: Array.from({ length: n }, (_, i) => pod(`p${i}`, [`10.244.1.${10 + i}`, `fd00:10:244:1::${(10 + i).toString(16)}`])),
      namespaces: NAMESPACES,
      policies: isolated.map(
        (name) =>
          toNetworkPolicy({ metadata: { name: `${name}-in`, namespace: 'x' }, spec: { podSelector: { matchLabels: { app: name } } } })
            .value!,
      ),
      node: NODE,
    }).compiled;
  const inMaps = () => ({ bpfproxy_ipcache: dp.maps.ipcache.count(), bpfproxy_ipcache6: dp.maps.ipcache6.count() });
  // one IPv6 pod address refused once, single write and batch alike (a batch stops there, as the kernel's does)
  const REFUSED = 'fd00:10:244:1::f'; // pod p5's
  const ipcache6 = refusingWrites(dp.maps.ipcache6, (k) => k.addr === REFUSED);
  const w = new PolicyMapWriter({ ...dp.maps, ipcache6: ipcache6.map });
  t.same(w.ipcacheCounts(), { bpfproxy_ipcache: 0, bpfproxy_ipcache6: 0 }, 'empty maps: nothing');

  t.same(w.apply(compiled(8)).problems, []);
  const full = inMaps();
  t.ok(full.bpfproxy_ipcache >= 8 && full.bpfproxy_ipcache6 >= 8, `written: ${JSON.stringify(full)}`);
  t.same(w.ipcacheCounts(), full, 'after writes: the count of each map');

  t.same(w.apply(compiled(3)).problems, []);
  const fewer = inMaps();
  t.ok(
    fewer.bpfproxy_ipcache < full.bpfproxy_ipcache && fewer.bpfproxy_ipcache6 < full.bpfproxy_ipcache6,
    `deleted: ${JSON.stringify(fewer)}`,
  );
  t.same(w.ipcacheCounts(), fewer, 'after deletes: the count of each map');

  const rewrites = w.apply(compiled(3, ['p0', 'p1', 'p2']));
  t.same([rewrites.problems, inMaps()], [[], fewer], 'p1 and p2 isolated too: their entries rewritten in place');
  t.ok(rewrites.ipcacheWrites >= 4, `entries rewritten (${rewrites.ipcacheWrites})`);
  t.same(w.ipcacheCounts(), fewer, 'after rewrites: the count of each map');

  ipcache6.refuse(1);
  t.equal(w.apply(compiled(8)).problems.length, 1, 'one IPv6 identity refused');
  t.same(w.ipcacheCounts(), inMaps(), 'a refused write is not counted');
  t.equal(inMaps().bpfproxy_ipcache6, full.bpfproxy_ipcache6 - 1, 'one short of them all');
  t.same(w.apply(compiled(8)).problems, [], 'written on the next apply');
  t.same(w.ipcacheCounts(), full, 'and counted');

  t.same(new PolicyMapWriter(dp.maps).ipcacheCounts(), full, 'a restarted writer counts what it adopts');

  const gc = new ConntrackGc(dp.maps, captureLogger().log, new FakeClock());
  const entries = async (known?: Record<string, number>) =>
    Object.fromEntries(
      (await datapathSnapshot(dp.maps, gc, known)).maps.filter((m) => m.map.startsWith('bpfproxy_ipcache')).map((m) => [m.map, m.entries]),
    );
  t.same(await entries(w.ipcacheCounts()), full, "the scrape's map fill with the writer's count");
  t.same(await entries(), full, 'as counting the maps says');
  t.same(
    await entries({ bpfproxy_ipcache: 1, bpfproxy_ipcache6: 2 }),
    { bpfproxy_ipcache: 1, bpfproxy_ipcache6: 2 },
    'a count given is taken as it is: the scrape does not read those maps',
  );
});
