import t from 'tap';
import { toEndpointSlice, toFelixConfiguration, toNode, toService } from '../src/sources/convert.js';

const svc = (spec: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'shop' },
  spec,
  ...extra,
});

t.test('a well-formed Service converts whole', async (t) => {
  const r = toService(
    svc(
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        externalIPs: ['203.0.113.1'],
        sessionAffinity: 'ClientIP',
        externalTrafficPolicy: 'Local',
        selector: { app: 'web' },
        ports: [
          { name: 'http', port: 80, targetPort: 'http', nodePort: 30080 },
          { name: 'dns', port: 53, protocol: 'UDP' },
        ],
      },
      { status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { hostname: 'lb.example' }] } } },
    ),
  );
  t.same(r.problems, []);
  t.match(r.value, {
    namespace: 'shop',
    name: 'web',
    type: 'LoadBalancer',
    clusterIPs: ['10.96.0.10'],
    externalIPs: ['203.0.113.1'],
    loadBalancerIPs: ['198.51.100.1'],
    affinityTimeout: 10800,
    externalTrafficPolicy: 'Local',
    internalTrafficPolicy: 'Cluster',
    hasSelector: true,
    ports: [
      { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 },
      { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 },
    ],
  });
});

t.test('bad fields are named and skipped, the rest applies', async (t) => {
  const r = toService(
    svc({
      clusterIP: '10.96.0.300',
      externalIPs: ['203.0.113.1', 'not-an-ip', '2001:db8::1'],
      ports: [
        { name: 'a', port: 80 },
        { name: 'b', port: 80 },
        { name: 'c', port: 70000 },
        { name: 'a', port: 81 },
        { name: 'd', port: 82, protocol: 'ICMP' },
        { name: 'e', port: 83 },
        { name: 'f', port: 83, protocol: 'SCTP' },
      ],
    }),
  );
  t.ok(r.value, 'service still converted');
  t.same(
    r.value!.ports.map((p) => p.name),
    ['a', 'e', 'f'],
    'only the good ports kept (SCTP is served; the same number over SCTP is another port)',
  );
  t.same(r.value!.externalIPs, ['203.0.113.1'], 'bad IP dropped; IPv6 refused: the Service has no IPv6 family');
  t.same(r.value!.clusterIPs, []);
  const fields = r.problems.map((p) => p.field);
  t.same(fields, [
    'spec.clusterIP',
    'spec.externalIPs[1]',
    'spec.externalIPs[2]',
    'spec.ports[1].port',
    'spec.ports[2].port',
    'spec.ports[3].name',
    'spec.ports[4].protocol',
  ]);
  t.ok(r.problems.every((p) => p.object === 'Service shop/web' && !p.fatal));
  t.match(r.problems[2]!.message, /a family this Service does not have/);
  t.match(r.problems[3]!.message, /duplicate of spec.ports\[0\]/);
});

t.test('a Service without a name is refused whole, naming the field', async (t) => {
  const r = toService({ kind: 'Service', metadata: { namespace: 'x' }, spec: {} });
  t.notOk(r.value);
  t.equal(r.problems[0]!.field, 'metadata.name');
  t.equal(r.problems[0]!.fatal, true);
});

t.test('ExternalName and headless services have no cluster IP frontend', async (t) => {
  t.same(toService(svc({ type: 'ExternalName', externalName: 'x.example' })).value!.clusterIPs, []);
  t.same(toService(svc({ clusterIP: 'None', ports: [{ port: 80 }] })).value!.clusterIPs, []);
});

t.test('EndpointSlice conversion', async (t) => {
  const base = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: 'IPv4',
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    ports: [{ name: 'http', port: 8080 }],
  };
  const r = toEndpointSlice({
    ...base,
    endpoints: [
      { addresses: ['10.0.0.1'], nodeName: 'n1' },
      { addresses: ['10.0.0.2'], conditions: { ready: false, serving: true, terminating: true } },
      { addresses: ['bogus', '10.0.0.3'] },
      { addresses: [] },
    ],
  });
  t.same(r.value!.endpoints.toArray(), [
    { addresses: ['10.0.0.1'], ready: true, serving: true, terminating: false, nodeName: 'n1' },
    { addresses: ['10.0.0.2'], ready: false, serving: true, terminating: true },
    { addresses: ['10.0.0.3'], ready: true, serving: true, terminating: false },
  ]);
  t.same(
    r.problems.map((p) => p.field),
    ['endpoints[2].addresses[0]', 'endpoints[3].addresses'],
  );
  const noLabel = toEndpointSlice({ ...base, metadata: { name: 'x', namespace: 'shop' } });
  t.notOk(noLabel.value);
  t.match(noLabel.problems[0]!.field, /kubernetes.io\/service-name/);
  t.same(
    toEndpointSlice({ ...base, addressType: 'IPv6', endpoints: [{ addresses: ['2001:DB8:0::1'] }] }).value!.endpoints.toArray(),
    [{ addresses: ['2001:db8::1'], ready: true, serving: true, terminating: false }],
    'IPv6 slices yield their endpoints, addresses in RFC 5952 text',
  );
});

t.test('Node conversion: the name and IPv4 InternalIP and ExternalIP addresses', async (t) => {
  const node = (addresses: unknown, name: unknown = 'n1') => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name },
    status: { addresses },
  });
  const r = toNode(
    node([
      { type: 'Hostname', address: 'n1' },
      { type: 'InternalIP', address: '192.168.1.11' },
      { type: 'InternalIP', address: 'fd00::11' },
      { type: 'InternalIP', address: '192.168.1.11' },
      { type: 'InternalIP', address: 'not-an-ip' },
      { type: 'ExternalIP', address: '203.0.113.11' },
      { type: 'InternalDNS', address: 'n1.internal' },
    ]),
  );
  t.same(
    r.value,
    { name: 'n1', internalIPs: ['192.168.1.11'], externalIPs: ['203.0.113.11'] },
    'IPv6 and other types skipped, duplicates once',
  );
  t.same(r.problems, [
    { object: 'Node n1', field: 'status.addresses[4].address', message: '"not-an-ip" is not an IP address; skipped', fatal: false },
  ]);
  t.same(toNode({ metadata: { name: 'n2' } }).value, { name: 'n2', internalIPs: [], externalIPs: [] }, 'no status: no addresses');
  const bad = toNode(node([], 'Not_A_Node'));
  t.notOk(bad.value, 'a bad name drops the Node');
  t.match(bad.problems, [{ object: 'Node Not_A_Node', field: 'metadata.name', fatal: true }]);
  t.match(toNode({ kind: 'Node' }).problems, [{ object: 'Node <unnamed>', field: 'metadata', fatal: true }]);
});

t.test('FelixConfiguration: name and spec as written for the config controller', async (t) => {
  t.same(toFelixConfiguration('default', { spec: { bpfEnabled: true } }), { name: 'default', spec: { bpfEnabled: true } });
  t.same(toFelixConfiguration('default', { spec: [1] }), { name: 'default', spec: {} }, 'a spec that is not a mapping counts as empty');
  t.same(toFelixConfiguration('node.n1', {}), { name: 'node.n1', spec: {} });
});

t.test('topology: EndpointSlice hints, Service trafficDistribution and annotations, the Node zone label', async (t) => {
  const slice = (endpoints: unknown[]) =>
    toEndpointSlice({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      addressType: 'IPv4',
      metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      ports: [{ name: 'http', port: 8080 }],
      endpoints,
    });
  const r = slice([
    { addresses: ['10.0.0.1'], nodeName: 'n1', hints: { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'n1' }] } },
    { addresses: ['10.0.0.2'], hints: { forZones: [{ name: 'zone-b' }, { name: 'zone-c' }, { name: 'zone-b' }] } },
    { addresses: ['10.0.0.3'], hints: { forZones: [] } },
    { addresses: ['10.0.0.4'], hints: { forZones: [{ name: 'not a zone!' }, { name: 'zone-a' }], forNodes: [{ name: 'Bad_Node' }] } },
    { addresses: ['10.0.0.5'], hints: null },
    { addresses: ['10.0.0.6'], hints: { forZones: Array.from({ length: 9 }, (_, i) => ({ name: `z${i}` })) } },
  ]);
  const eps = r.value!.endpoints.toArray();
  t.same(eps[0], {
    addresses: ['10.0.0.1'],
    ready: true,
    serving: true,
    terminating: false,
    nodeName: 'n1',
    zoneHints: ['zone-a'],
    nodeHints: ['n1'],
  });
  t.same(eps[1]!.zoneHints, ['zone-b', 'zone-c'], 'each zone once');
  t.notOk('zoneHints' in eps[2]!, 'an empty forZones is no hint (kube-proxy counts it as missing)');
  t.same(eps[3]!.zoneHints, ['zone-a'], 'a bad zone name is skipped, the rest kept');
  t.notOk('nodeHints' in eps[3]!, 'a bad node name is skipped');
  t.notOk('zoneHints' in eps[4]!, 'hints: null');
  t.same(eps[5]!.zoneHints, ['z0', 'z1', 'z2', 'z3', 'z4', 'z5', 'z6', 'z7'], "the API server's 8 at most");
  t.same(
    r.problems.map((p) => p.field),
    ['endpoints[3].hints.forZones[0].name', 'endpoints[3].hints.forNodes[0].name', 'endpoints[5].hints.forZones'],
  );
  t.ok(r.value!.endpoints.hinted, 'the slice knows it carries hints');
  t.notOk(slice([{ addresses: ['10.0.0.1'] }]).value!.endpoints.hinted, 'no hint: not hinted');
  // a hint change is a change of the slice (the store compares them)
  const again = slice([{ addresses: ['10.0.0.1'], nodeName: 'n1', hints: { forZones: [{ name: 'zone-b' }] } }]);
  const before = slice([{ addresses: ['10.0.0.1'], nodeName: 'n1', hints: { forZones: [{ name: 'zone-a' }] } }]);
  t.notOk(again.value!.endpoints.equals(before.value!.endpoints), 'zone-a vs zone-b: different');
  t.ok(
    before.value!.endpoints.equals(
      slice([{ addresses: ['10.0.0.1'], nodeName: 'n1', hints: { forZones: [{ name: 'zone-a' }] } }]).value!.endpoints,
    ),
  );

  const svcOf = (spec: Record<string, unknown>, annotations?: Record<string, string>) =>
    toService({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop', ...(annotations ? { annotations } : {}) },
      spec: { clusterIP: '10.96.0.10', ports: [{ port: 80 }], ...spec },
    });
  t.equal(svcOf({ trafficDistribution: 'PreferClose' }).value!.topologyRequest, 'trafficDistribution: PreferClose');
  t.equal(svcOf({ trafficDistribution: 'PreferSameNode' }).value!.topologyRequest, 'trafficDistribution: PreferSameNode');
  t.equal(
    svcOf({ trafficDistribution: 'PreferSameZone' }, { 'service.kubernetes.io/topology-mode': 'Auto' }).value!.topologyRequest,
    'trafficDistribution: PreferSameZone',
    'the field wins over the annotation',
  );
  t.equal(svcOf({}, { 'service.kubernetes.io/topology-mode': 'Auto' }).value!.topologyRequest, 'topology-mode: Auto');
  t.equal(svcOf({}, { 'service.kubernetes.io/topology-aware-hints': 'auto' }).value!.topologyRequest, 'topology-aware-hints: auto');
  t.notOk('topologyRequest' in svcOf({}).value!, 'nothing asked: nothing kept');
  const odd = svcOf({ trafficDistribution: 'Nearby' });
  t.equal(odd.value!.topologyRequest, 'trafficDistribution: Nearby', 'kept as written for display');
  t.match(odd.problems, [{ field: 'spec.trafficDistribution', fatal: false, message: /not a traffic distribution.*hints/ }]);

  const node = (labels?: Record<string, string>) => toNode({ kind: 'Node', metadata: { name: 'n1', ...(labels ? { labels } : {}) } });
  t.equal(node({ 'topology.kubernetes.io/zone': 'zone-a' }).value!.zone, 'zone-a');
  t.notOk('zone' in node({ 'topology.kubernetes.io/zone': '' }).value!, 'an empty label: no zone');
  t.notOk('zone' in node({ 'failure-domain.beta.kubernetes.io/zone': 'zone-a' }).value!, 'only the GA label, as kube-proxy');
  t.notOk('zone' in node().value!);
});
