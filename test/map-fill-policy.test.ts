/**
 * The NetworkPolicy identity maps in the map fill that `bpfproxy status`
 * shows and /metrics exports (bpfproxy_map_entries / _max_entries):
 * bpfproxy_ipcache and bpfproxy_ipcache6 as the policy writer filled them
 * from a compiled dual-stack policy, counted on the worker thread (the
 * agent's scrape) as the CLI counts them.
 */
import t from 'tap';
import { compilePolicy } from '../src/model/policy/compile.js';
import { toNetworkPolicy, toPod } from '../src/sources/policy-convert.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
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
    namespaces: [{ name: 'x', labels: { 'kubernetes.io/metadata.name': 'x' } }],
    policies: [np],
    node: { name: 'n1', addresses: ['192.0.2.11', '2001:db8:1::11'] },
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
