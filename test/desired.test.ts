import t from 'tap';
import { backendsFor, desiredFor, frontendsFor } from '../src/model/desired.js';
import { Endpoints } from '../src/model/endpoints.js';
import type { EndpointSlice, Service, SliceEndpoint } from '../src/model/types.js';

const ep = (ip: string, node: string, c: Partial<SliceEndpoint> = {}): SliceEndpoint => ({
  addresses: [ip],
  ready: true,
  serving: true,
  terminating: false,
  nodeName: node,
  ...c,
});
const slice = (
  endpoints: SliceEndpoint[],
  ports = [{ name: 'http', port: 8080, protocol: 'TCP' as const }],
  name = 's1',
): EndpointSlice => ({
  namespace: 'ns',
  name,
  serviceName: 'web',
  ports,
  endpoints: Endpoints.of(endpoints),
});
const port = { name: 'http', protocol: 'TCP' as const, port: 80, targetPort: 'web' };

t.test('ready endpoints only; terminating-but-serving as fallback', async (t) => {
  const s = slice([ep('10.0.0.1', 'a'), ep('10.0.0.2', 'b', { ready: false, serving: true, terminating: true })]);
  t.same(
    backendsFor(port, [s], 'a').cluster.map((b) => b.ip),
    ['10.0.0.1'],
  );
  const none = slice([
    ep('10.0.0.2', 'b', { ready: false, serving: true, terminating: true }),
    ep('10.0.0.3', 'a', { ready: false, serving: false, terminating: true }),
    ep('10.0.0.4', 'a', { ready: false, serving: false, terminating: false }),
  ]);
  t.same(
    backendsFor(port, [none], 'a').cluster.map((b) => b.ip),
    ['10.0.0.2'],
    'only serving+terminating',
  );
});

t.test('local set falls back on its own, as kube-proxy does', async (t) => {
  const s = slice([ep('10.0.0.1', 'b'), ep('10.0.0.2', 'a', { ready: false, serving: true, terminating: true })]);
  const sets = backendsFor(port, [s], 'a');
  t.same(
    sets.cluster.map((b) => b.ip),
    ['10.0.0.1'],
  );
  t.same(
    sets.local.map((b) => `${b.ip}:${b.local}`),
    ['10.0.0.2:true'],
  );
});

t.test('named targetPort resolves through the slice port of the same name; slices merge and dedupe', async (t) => {
  const s1 = slice(
    [ep('10.0.0.1', 'a')],
    [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'metrics', port: 9090, protocol: 'TCP' },
    ],
  );
  const s2 = slice([ep('10.0.0.1', 'a'), ep('10.0.0.5', 'b')], [{ name: 'http', port: 8080, protocol: 'TCP' }], 's2');
  const sets = backendsFor(port, [s1, s2], 'a');
  t.same(
    sets.cluster.map((b) => `${b.ip}:${b.port}`),
    ['10.0.0.1:8080', '10.0.0.5:8080'],
  );
  t.same(backendsFor({ ...port, protocol: 'UDP' }, [s1], 'a').cluster, [], 'protocol must match');
});

t.test('frontends of each service type', async (t) => {
  const svc: Service = {
    namespace: 'ns',
    name: 'web',
    type: 'LoadBalancer',
    clusterIPs: ['10.96.0.1'],
    externalIPs: ['203.0.113.1'],
    loadBalancerIPs: ['198.51.100.1'],
    ports: [{ ...port, nodePort: 30080 }],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Local',
    internalTrafficPolicy: 'Cluster',
    hasSelector: true,
  };
  const fes = frontendsFor(svc, [slice([ep('10.0.0.1', 'a')])], 'a');
  t.same(
    fes.map((f) => `${f.kind} ${f.ip}:${f.port} ext=${f.externalLocal}`),
    [
      'ClusterIP 10.96.0.1:80 ext=false',
      'ExternalIP 203.0.113.1:80 ext=true',
      'LoadBalancer 198.51.100.1:80 ext=true',
      'NodePort 0.0.0.0:30080 ext=true',
    ],
  );
  t.equal(fes[0]!.servicePort, 'ns/web:http/TCP');
  t.same(
    frontendsFor({ ...svc, type: 'ClusterIP' }, [], 'a').map((f) => f.kind),
    ['ClusterIP', 'ExternalIP'],
    'no LB or NodePort frontends for ClusterIP',
  );
  t.same(frontendsFor({ ...svc, type: 'ExternalName' }, [], 'a'), []);
});

t.test('topology: every frontend of a port gets the zone-chosen cluster set and the hint-blind local set', async (t) => {
  const svc: Service = {
    namespace: 'ns',
    name: 'web',
    type: 'NodePort',
    clusterIPs: ['10.96.0.1'],
    externalIPs: [],
    loadBalancerIPs: [],
    ports: [{ ...port, nodePort: 30080 }],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Local',
    internalTrafficPolicy: 'Cluster',
    hasSelector: true,
  };
  const s = slice([
    ep('10.0.0.1', 'a', { zoneHints: ['zone-a'] }),
    ep('10.0.0.2', 'a', { zoneHints: ['zone-b'] }),
    ep('10.0.0.3', 'b', { zoneHints: ['zone-a'] }),
    ep('10.0.0.4', 'c', { zoneHints: ['zone-b'] }),
  ]);
  const d = desiredFor(svc, [s], { nodeName: 'a', zone: 'zone-a', nodeAddresses: new Set(), allowNodeAddressExternalIPs: false });
  for (const f of d.frontends) {
    t.same(
      f.clusterBackends.map((b) => b.ip),
      ['10.0.0.1', '10.0.0.3'],
      `${f.kind}: cluster set from zone-a hints`,
    );
    t.same(
      f.localBackends.map((b) => b.ip),
      ['10.0.0.1', '10.0.0.2'],
      `${f.kind}: local set is this node's, hints ignored`,
    );
  }
  t.same(
    d.topology.map((x) => [x.servicePort, x.mode, x.why]),
    [['ns/web:http/TCP', 'PreferSameZone', 'zone hints for zone-a']],
  );
  t.same(
    backendsFor(port, [s], 'a').cluster.map((b) => b.ip),
    ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
    'no zone given: the hints cannot apply',
  );
  const plain = desiredFor(svc, [slice([ep('10.0.0.1', 'a')])], {
    nodeName: 'a',
    zone: 'zone-a',
    nodeAddresses: new Set(),
    allowNodeAddressExternalIPs: false,
  });
  t.same(plain.topology, [], 'no hints and no request: no topology entry');
});
