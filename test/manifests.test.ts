/** The manifest source: bad input is named precisely and the rest applies. */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync, unlinkSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../testkit/fake-clock.js';
import { ServiceStore } from '../src/proxy/store.js';
import { ManifestSource } from '../src/sources/manifests.js';
import { serviceSink } from '../src/sources/sink.js';
import { captureLogger } from './helpers/log.js';
import { REPO } from './helpers/env.js';

function setup(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-manifests-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const changed: string[] = [];
  const store = new ServiceStore((s) => changed.push(s));
  const { log, lines } = captureLogger();
  const src = new ManifestSource(dir, serviceSink(store), log, new FakeClock());
  return { dir, store, src, lines, changed };
}

const svcYaml = (name: string, ip: string, extra = '') => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: default }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports:
    - { name: http, port: 80 }
${extra}`;

t.test('the example manifests load without a problem', async (t) => {
  const { dir, store, src, lines } = setup(t);
  cpSync(join(REPO, 'manifests', 'examples'), dir, { recursive: true });
  src.scan();
  t.same(
    lines.filter((l) => l.level !== 'debug' && l.level !== 'info'),
    [],
    'no warnings or errors',
  );
  t.same(store.size, { services: 5, slices: 6 }, 'web and dns are dual-stack: an EndpointSlice per family');
  t.same(store.serviceKeys().sort(), ['default/empty', 'default/sticky', 'default/web', 'default/web-local', 'kube-system/dns']);
});

t.test('bad input: each problem named by file, object and field; everything else applied', async (t) => {
  const { dir, store, src, lines } = setup(t);
  writeFileSync(join(dir, 'a-good.yaml'), svcYaml('good', '10.96.0.1'));
  writeFileSync(join(dir, 'b-broken.yaml'), 'kind: Service\nmetadata: [unclosed\n');
  writeFileSync(join(dir, 'c-unknown.yaml'), 'apiVersion: v1\nkind: Gizmo\nmetadata: { name: g }\n---\n' + svcYaml('second', '10.96.0.2'));
  writeFileSync(
    join(dir, 'd-badfields.yaml'),
    svcYaml('bad', '10.96.0.999', '    - { name: http, port: 81 }\n    - { name: other, port: 80 }\n  externalIPs: [1.2.3]\n'),
  );
  writeFileSync(
    join(dir, 'e-noselector.yaml'),
    `apiVersion: v1
kind: Service
metadata: { name: manual }
spec:
  clusterIP: 10.96.0.5
  ports: [{ port: 80 }]
`,
  );
  writeFileSync(join(dir, 'f-dup.yaml'), svcYaml('good', '10.96.0.77'));
  src.scan();
  t.same(store.serviceKeys().sort(), ['default/bad', 'default/good', 'default/manual', 'default/second']);
  t.equal(store.service('default/good')!.clusterIPs[0], '10.96.0.1', 'the first file wins a duplicate');
  t.same(
    store.service('default/bad')!.ports.map((p) => p.port),
    [80],
    'bad ports skipped, the first kept',
  );
  const msgs = lines.filter((l) => l.level === 'error' || l.level === 'warn').map((l) => l.msg);
  const has = (re: RegExp, what: string) =>
    t.ok(
      msgs.some((m) => re.test(m)),
      `${what}: ${msgs.find((m) => re.test(m)) ?? '(missing)'}`,
    );
  has(/^b-broken\.yaml: document 1 is not valid YAML/, 'malformed YAML names the file');
  has(/^c-unknown\.yaml document 1: unknown kind "Gizmo"/, 'unknown kind names file and kind');
  has(/d-badfields\.yaml document 1: Service default\/bad field spec\.clusterIP: "10\.96\.0\.999" is not an IP address/, 'invalid IP');
  has(/field spec\.ports\[1\]\.name: duplicate port name "http"/, 'duplicate port name');
  has(/field spec\.ports\[2\]\.port: duplicate of spec\.ports\[0\]/, 'duplicate port');
  has(/field spec\.externalIPs\[0\]: "1\.2\.3" is not an IP address/, 'invalid external IP');
  has(/f-dup\.yaml document 1: Service default\/good is also defined in a-good\.yaml document 1/, 'duplicate object across files');
});

t.test('changes apply; a file that stops parsing keeps its last good objects; removal withdraws', async (t) => {
  const { dir, store, src, changed, lines } = setup(t);
  const f = join(dir, 'svc.yaml');
  writeFileSync(f, svcYaml('web', '10.96.0.1'));
  src.scan();
  t.same(changed, ['default/web']);
  changed.length = 0;
  writeFileSync(f, svcYaml('web', '10.96.0.2'));
  src.scan();
  t.same(changed, ['default/web'], 'change detected');
  t.equal(store.service('default/web')!.clusterIPs[0], '10.96.0.2');
  changed.length = 0;
  writeFileSync(f, svcYaml('web', '10.96.0.2') + '  nonsense: [\n');
  src.scan();
  t.same(changed, [], 'a broken edit withdraws nothing');
  t.ok(lines.some((l) => l.level === 'error' && /keeping this file's last good objects/.test(l.msg)));
  src.scan();
  t.same(changed, [], 'unchanged file is not re-read');
  unlinkSync(f);
  src.scan();
  t.same(changed, ['default/web'], 'deleted file withdraws its objects');
  t.equal(store.service('default/web'), undefined);
});

t.test('kind: List and EndpointSlices bind to their service', async (t) => {
  const { dir, store, src } = setup(t);
  writeFileSync(
    join(dir, 'list.yaml'),
    `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: shop }
    spec: { clusterIP: 10.96.0.1, ports: [{ name: http, port: 80, targetPort: web }], selector: { a: b } }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports: [{ name: http, port: 8080 }]
    endpoints: [{ addresses: [10.0.0.1], nodeName: me }]
`,
  );
  src.scan();
  const fes = store.frontendsOf('shop/web', 'me');
  t.equal(fes.length, 1);
  t.same(fes[0]!.clusterBackends, [{ ip: '10.0.0.1', port: 8080, local: true }]);
});

t.test('topology fields in YAML: Node zone label, trafficDistribution, EndpointSlice hints', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-manifests-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new ServiceStore(() => undefined);
  const zones = new Map<string, string | undefined>();
  const { log, lines } = captureLogger();
  const src = new ManifestSource(dir, serviceSink(store, { applyNode: (name, node) => zones.set(name, node?.zone) }), log, new FakeClock());
  writeFileSync(
    join(dir, 'topology.yaml'),
    `apiVersion: v1
kind: Node
metadata: { name: me, labels: { topology.kubernetes.io/zone: zone-a } }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop, annotations: { service.kubernetes.io/topology-mode: Auto } }
spec: { clusterIP: 10.96.0.1, trafficDistribution: PreferSameZone, ports: [{ name: http, port: 80 }], selector: { a: b } }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
  - addresses: [10.0.0.1]
    nodeName: me
    hints: { forZones: [{ name: zone-a }], forNodes: [{ name: me }] }
  - addresses: [10.0.0.2]
    nodeName: other
    hints: { forZones: [{ name: zone-a }], forNodes: [{ name: other }] }
  - addresses: [10.0.0.3]
    nodeName: far
    hints: { forZones: [{ name: zone-b }], forNodes: [{ name: far }] }
`,
  );
  src.scan();
  t.same(
    lines.filter((l) => l.level === 'warn' || l.level === 'error'),
    [],
    'no problem',
  );
  t.equal(zones.get('me'), 'zone-a', "the Node's zone label");
  t.equal(store.service('shop/web')!.topologyRequest, 'trafficDistribution: PreferSameZone', 'the field, over the annotation');
  t.same(
    store
      .slicesOf('shop/web')[0]!
      .endpoints.toArray()
      .map((e) => [e.zoneHints, e.nodeHints]),
    [
      [['zone-a'], ['me']],
      [['zone-a'], ['other']],
      [['zone-b'], ['far']],
    ],
  );
  const desired = (nodeName: string, zone: string) =>
    store.desiredOf('shop/web', { nodeName, zone, nodeAddresses: new Set(), allowNodeAddressExternalIPs: false });
  const me = desired('me', 'zone-a');
  t.same(
    me.frontends[0]!.clusterBackends.map((b) => b.ip),
    ['10.0.0.1'],
    'every endpoint has a node hint and one names this node: PreferSameNode',
  );
  t.same(me.topology, [
    {
      servicePort: 'shop/web:http/TCP',
      mode: 'PreferSameNode',
      reason: 'same-node',
      why: 'PreferSameNode: endpoints hinted for node me',
      requested: 'trafficDistribution: PreferSameZone',
    },
  ]);
  t.same(
    desired('elsewhere', 'zone-a').frontends[0]!.clusterBackends.map((b) => b.ip),
    ['10.0.0.1', '10.0.0.2'],
    'a node no endpoint is hinted for: its zone',
  );
});
