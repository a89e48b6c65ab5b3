/**
 * Sources deliver domain objects: the store never sees a Kubernetes
 * object. What does not convert never reaches the sink, and its problems
 * are reported as they always were (same lines, same Events).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../testkit/fake-clock.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';
import { realClock } from '../src/clock.js';
import { apiConnection, kubeClients } from '../src/k8s/client.js';
import { Endpoints } from '../src/model/endpoints.js';
import type { EndpointSlice, Node, Service } from '../src/model/types.js';
import type { Namespace, NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { NodeStore } from '../src/proxy/nodes.js';
import { ServiceStore } from '../src/proxy/store.js';
import type { FelixConfiguration } from '../src/sources/convert.js';
import { KubeSource } from '../src/sources/kubernetes.js';
import { ManifestSource } from '../src/sources/manifests.js';
import type { ObjectSink } from '../src/sources/sink.js';
import { asService, felix, service, slice } from './helpers/k8s-objects.js';
import { captureLogger } from './helpers/log.js';
import { until } from './helpers/wait.js';

/** Everything a sink is handed, by method. */
function recorder() {
  const got = {
    services: new Map<string, Service | undefined>(),
    slices: new Map<string, EndpointSlice | undefined>(),
    nodes: new Map<string, Node | undefined>(),
    felix: new Map<string, FelixConfiguration | undefined>(),
    pods: new Map<string, Pod | undefined>(),
    namespaces: new Map<string, Namespace | undefined>(),
    policies: new Map<string, NetworkPolicy | undefined>(),
    calls: [] as string[],
  };
  const sink: ObjectSink = {
    applyService: (k, v) => (got.calls.push(`Service ${k}`), got.services.set(k, v)),
    applySlice: (k, v) => (got.calls.push(`EndpointSlice ${k}`), got.slices.set(k, v)),
    applyNode: (k, v) => (got.calls.push(`Node ${k}`), got.nodes.set(k, v)),
    applyFelixConfiguration: (k, v) => (got.calls.push(`FelixConfiguration ${k}`), got.felix.set(k, v)),
    applyPod: (k, v) => (got.calls.push(`Pod ${k}`), got.pods.set(k, v)),
    applyNamespace: (k, v) => (got.calls.push(`Namespace ${k}`), got.namespaces.set(k, v)),
    applyNetworkPolicy: (k, v) => (got.calls.push(`NetworkPolicy ${k}`), got.policies.set(k, v)),
  };
  return { sink, got };
}

const SERVICE = `apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z" }
spec:
  clusterIP: 10.96.0.10
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: 8080 }]
`;
const SLICE = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [10.244.1.5], nodeName: n1 }, { addresses: [10.244.2.5], nodeName: n2, conditions: { ready: false } }]
`;
const NODE = `apiVersion: v1
kind: Node
metadata: { name: n1 }
status:
  addresses:
    - { type: Hostname, address: n1 }
    - { type: InternalIP, address: 192.168.1.11 }
    - { type: InternalIP, address: "fd00::11" }
    - { type: ExternalIP, address: 203.0.113.11 }
`;
const FELIX = `apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: { name: default }
spec: { bpfEnabled: true }
`;
/** A fatal problem: the name is not a DNS-1035 label. */
const BROKEN = SERVICE.replace('name: web,', 'name: Web_1,');

function manifests(t: Test, files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-typed-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [f, body] of Object.entries(files)) writeFileSync(join(dir, f), body);
  const { sink, got } = recorder();
  const { log, lines } = captureLogger();
  const src = new ManifestSource(dir, sink, log, new FakeClock());
  src.scan();
  return { dir, src, got, lines };
}

t.test('manifests: each kind is delivered as its domain object', async (t) => {
  const { got } = manifests(t, { 'all.yaml': [SERVICE, SLICE, NODE, FELIX].join('---\n') });
  t.same(got.services.get('shop/web'), {
    namespace: 'shop',
    name: 'web',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.10'],
    externalIPs: [],
    loadBalancerIPs: [],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    hasSelector: true,
    createdAt: Date.parse('2024-01-01T00:00:00Z'),
  });
  t.notOk('spec' in (got.services.get('shop/web') ?? {}), 'no Kubernetes object reaches the sink');
  const s = got.slices.get('shop/web-1')!;
  t.ok(s.endpoints instanceof Endpoints, 'endpoints packed');
  t.same(
    { ...s, endpoints: s.endpoints.toArray() },
    {
      namespace: 'shop',
      name: 'web-1',
      serviceName: 'web',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [
        { addresses: ['10.244.1.5'], ready: true, serving: true, terminating: false, nodeName: 'n1' },
        { addresses: ['10.244.2.5'], ready: false, serving: false, terminating: false, nodeName: 'n2' },
      ],
    },
  );
  t.same(got.nodes.get('n1'), { name: 'n1', internalIPs: ['192.168.1.11'], externalIPs: ['203.0.113.11'] }, 'a Node: its IPv4 addresses');
  t.same(got.felix.get('default'), { name: 'default', spec: { bpfEnabled: true } }, 'a FelixConfiguration: name and spec');
});

t.test('manifests: an object that does not convert never reaches the sink; its problem is logged as before', async (t) => {
  const { got, lines } = manifests(t, { 'web.yaml': BROKEN });
  t.same(got.calls, [], 'the sink is not called');
  const errors = lines.filter((l) => l.level === 'error');
  t.equal(errors.length, 1);
  t.match(errors[0]?.msg, /^web\.yaml document 1: Service shop\/Web_1 field metadata\.name: a Service name .*; object skipped$/);
  t.match(errors[0], { where: 'web.yaml document 1', object: 'Service shop/Web_1', field: 'metadata.name' });
});

t.test('manifests: a broken version withdraws nothing; removing the file withdraws the last good one', async (t) => {
  const { dir, src, got, lines } = manifests(t, { 'web.yaml': SERVICE });
  t.ok(got.services.get('shop/web'));
  got.calls.length = 0;
  writeFileSync(join(dir, 'web.yaml'), SERVICE.replace(/spec:[\s\S]*$/, 'spec: not-a-mapping\n'));
  src.scan();
  t.same(got.calls, [], 'not delivered: the last good version stays in force');
  t.ok(lines.some((l) => l.level === 'error' && /^web\.yaml document 1: Service shop\/web field spec: .*; object skipped$/.test(l.msg)));
  rmSync(join(dir, 'web.yaml'));
  src.scan();
  t.same(got.calls, ['Service shop/web'], 'withdrawn');
  t.equal(got.services.get('shop/web'), undefined);
});

t.test('the store: equal objects change nothing, whatever their identity', async (t) => {
  const changes: string[] = [];
  const store = new ServiceStore((k) => changes.push(k));
  const svc = () => asService(service('shop', 'web', '10.96.0.10'));
  store.applyService('shop/web', svc());
  store.applyService('shop/web', svc());
  t.same(changes, ['shop/web'], 'a second, equal Service is no change');
  store.applyService('shop/web', asService(service('shop', 'web', '10.96.0.11')));
  t.same(changes, ['shop/web', 'shop/web'], 'a different one is');
  const sl = (ip: string): EndpointSlice => ({
    namespace: 'shop',
    name: 'web-1',
    serviceName: 'web',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: Endpoints.of([{ addresses: [ip], ready: true, serving: true, terminating: false }]),
  });
  changes.length = 0;
  store.applySlice('shop/web-1', sl('10.244.1.1'));
  store.applySlice('shop/web-1', sl('10.244.1.1'));
  store.applySlice('shop/web-1', sl('10.244.1.2'));
  t.same(changes, ['shop/web', 'shop/web'], 'slices too: packed endpoints compare by content');
  t.same(
    store.frontendsOf('shop/web', 'n1')[0]!.clusterBackends.map((b) => b.ip),
    ['10.244.1.2'],
  );
  store.applySlice('shop/web-2', { ...sl('10.244.1.3'), name: 'web-2' });
  t.same(store.slicesOf('shop/web').length, 2, 'a second slice of the service');
  store.applySlice('shop/web-1', undefined);
  t.same(
    store.slicesOf('shop/web').map((s) => s.name),
    ['web-2'],
  );
});

t.test('the API: domain objects delivered; a broken object never reaches the sink, logged and an Event as before', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-typed-kc-'));
  t.teardown(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  writeKubeconfig(join(dir, 'kubeconfig'), url);
  api.upsert('services', service('shop', 'web', '10.96.0.10'));
  api.upsert('endpointslices', slice('shop', 'web', 'web-1', [{ ip: '10.244.1.5', node: 'n1' }]));
  api.upsert('nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'n1' },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.1.11' }] },
  });
  api.upsert('felixconfigurations', felix('default', { bpfEnabled: true }));
  const { sink, got } = recorder();
  const { log, lines } = captureLogger();
  const src = new KubeSource(kubeClients(await apiConnection(join(dir, 'kubeconfig'))), sink, log, realClock);
  t.teardown(() => src.stop());
  src.start();
  await src.servicesSynced();
  await src.policySynced(); // namespaces too: every list delivered before the calls are counted
  await until('node and felix listed', () => got.nodes.has('n1') && got.felix.has('default'));
  t.match(got.services.get('shop/web'), { namespace: 'shop', name: 'web', clusterIPs: ['10.96.0.10'] });
  t.notOk('spec' in (got.services.get('shop/web') ?? {}), 'no Kubernetes object reaches the sink');
  t.same(got.slices.get('shop/web-1')?.endpoints.toArray(), [
    { addresses: ['10.244.1.5'], ready: true, serving: true, terminating: false, nodeName: 'n1' },
  ]);
  t.same(got.nodes.get('n1'), { name: 'n1', internalIPs: ['192.168.1.11'], externalIPs: [] });
  t.same(got.felix.get('default'), { name: 'default', spec: { bpfEnabled: true } });

  got.calls.length = 0;
  // The API server would refuse this type; an object stored by other means must still not get through.
  api.upsert('services', service('shop', 'x', '10.96.0.20', { type: 'Bogus' }));
  await until('event', () => api.events.length > 0);
  t.same(got.calls, [], 'the sink is not called');
  t.match(api.events.at(-1), { involvedObject: { kind: 'Service', name: 'x', namespace: 'shop' }, reason: 'BpfproxyInvalidField' });
  t.match((api.events.at(-1) as unknown as { message: string }).message, /^field spec\.type: /);
  t.ok(
    lines.some((l) => l.level === 'error' && /^Service shop\/x field spec\.type: .*; object skipped$/.test(l.msg)),
    'logged, naming the object and field',
  );
});

t.test("the agent's node store: domain Nodes by name; equal ones change nothing", async (t) => {
  const changed: string[] = [];
  const nodes = new NodeStore((n) => changed.push(n));
  nodes.apply('n1', { name: 'n1', internalIPs: ['192.168.1.11'], externalIPs: [] });
  nodes.apply('n1', { name: 'n1', internalIPs: ['192.168.1.11'], externalIPs: [] });
  nodes.apply('n2', { name: 'n2', internalIPs: ['192.168.1.12'], externalIPs: [] });
  nodes.apply('n1', { name: 'n1', internalIPs: ['192.168.1.21'], externalIPs: [] });
  t.same(changed, ['n1', 'n2', 'n1']);
  t.same(nodes.get('n1')?.internalIPs, ['192.168.1.21']);
  nodes.apply('n2', undefined);
  nodes.apply('n3', undefined);
  t.same(nodes.names(), ['n1']);
  t.equal(nodes.size, 1);
  t.same(changed, ['n1', 'n2', 'n1', 'n2'], 'removing what is not there is no change');
});

const NAMESPACE = `apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { team: a } }
`;
const POD = `apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: shop, labels: { app: web } }
spec:
  nodeName: n1
  containers: [{ name: c, image: i, ports: [{ name: http, containerPort: 8080 }] }]
status: { phase: Running, podIP: 10.244.1.5, podIPs: [{ ip: 10.244.1.5 }, { ip: "fd00::5" }] }
`;
const POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: shop }
spec: { podSelector: {} }
`;

t.test('manifests: Pods, Namespaces and NetworkPolicies are delivered as policy domain objects', async (t) => {
  const { got } = manifests(t, { 'policy.yaml': [NAMESPACE, POD, POLICY].join('---\n') });
  t.same(got.namespaces.get('shop'), { name: 'shop', labels: { team: 'a', 'kubernetes.io/metadata.name': 'shop' } });
  t.same(got.pods.get('shop/web-0'), {
    namespace: 'shop',
    name: 'web-0',
    labels: { app: 'web' },
    ips: ['10.244.1.5', 'fd00::5'], // both families: IPv6 NetworkPolicy takes status.podIPs' IPv6 too
    nodeName: 'n1',
    hostNetwork: false,
    containerPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
  t.same(got.policies.get('shop/deny-all'), {
    namespace: 'shop',
    name: 'deny-all',
    podSelector: { requirements: [] },
    ingressIsolation: true,
    egressIsolation: false,
    ingress: [],
    egress: [],
  });
});

t.test('manifests: a bad NetworkPolicy field is logged naming the policy and field; the policy still isolates', async (t) => {
  const bad = POLICY.replace(
    'spec: { podSelector: {} }',
    'spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 10.0.0.0/33 } }] }] }',
  );
  const { got, lines } = manifests(t, { 'policy.yaml': bad });
  t.match(
    got.policies.get('shop/deny-all'),
    { ingressIsolation: true, ingress: [{ peers: [] }] },
    'the bad peer is left out: allows nothing',
  );
  t.ok(
    lines.some(
      (l) => l.level === 'warn' && /NetworkPolicy shop\/deny-all field spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: /.test(l.msg),
    ),
    'logged with the policy and the field',
  );
});

t.test('the API: Pods (status.podIPs), Namespaces and NetworkPolicies listed and watched; created, patched and deleted', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-typed-kc-'));
  t.teardown(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  writeKubeconfig(join(dir, 'kubeconfig'), url);
  // the kubelet gives each pod its addresses, as the real one does through the status subresource
  api.kubelet = (pod, set) => set({ phase: 'Running', podIP: '10.244.1.7', podIPs: [{ ip: '10.244.1.7' }] });
  const send = async (method: string, path: string, body: unknown, type = 'application/json') => {
    const r = await fetch(url + path, { method, headers: { 'content-type': type }, body: JSON.stringify(body) });
    t.ok(r.ok, `${method} ${path}: ${r.status}`);
  };
  const { sink, got } = recorder();
  const { log, lines } = captureLogger();
  const src = new KubeSource(kubeClients(await apiConnection(join(dir, 'kubeconfig'))), sink, log, realClock);
  t.teardown(() => src.stop());
  src.start();
  await src.policySynced();
  t.ok(got.namespaces.has('kube-system'), 'namespaces listed');

  await send('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { team: 'a' } } });
  await send('POST', '/api/v1/namespaces/shop/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-0', labels: { app: 'web' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'i', ports: [{ name: 'http', containerPort: 8080 }] }] },
  });
  await until('pod with its address', () => got.pods.get('shop/web-0')?.ips[0] === '10.244.1.7');
  t.match(got.namespaces.get('shop'), { labels: { team: 'a', 'kubernetes.io/metadata.name': 'shop' } });
  t.match(got.pods.get('shop/web-0'), { nodeName: 'n1', containerPorts: [{ name: 'http', port: 8080 }] });

  await send('POST', '/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies', {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'web' },
    spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }] }] },
  });
  await until('policy', () => got.policies.has('shop/web'));
  t.match(got.policies.get('shop/web'), {
    ingressIsolation: true,
    egressIsolation: false,
    ingress: [{ ports: [{ protocol: 'TCP', port: 'http' }] }],
  });
  await send(
    'PATCH',
    '/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web',
    { spec: { policyTypes: ['Ingress', 'Egress'] } },
    'application/merge-patch+json',
  );
  await until('patched', () => got.policies.get('shop/web')?.egressIsolation === true);
  await send('PATCH', '/api/v1/namespaces/shop/pods/web-0', { metadata: { labels: { app: 'db' } } }, 'application/merge-patch+json');
  await until('relabelled', () => got.pods.get('shop/web-0')?.labels.app === 'db');
  // the kubelet's own way: the status subresource
  await send(
    'PATCH',
    '/api/v1/namespaces/shop/pods/web-0/status',
    { status: { podIP: '10.244.1.8', podIPs: [{ ip: '10.244.1.8' }, { ip: 'fd00::8' }] } },
    'application/merge-patch+json',
  );
  await until('new address', () => got.pods.get('shop/web-0')?.ips[0] === '10.244.1.8');
  t.same(got.pods.get('shop/web-0')?.ips, ['10.244.1.8', 'fd00::8'], 'status.podIPs through the status subresource (both families)');

  // a policy the API server would take but with a peer that cannot be enforced as written: an Event names the field
  api.upsert('networkpolicies', {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'bad', namespace: 'shop' },
    spec: {
      podSelector: {},
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }],
    },
  });
  await until('event', () => api.events.some((e) => (e.involvedObject as { name?: string }).name === 'bad'));
  const ev = api.events.find((e) => (e.involvedObject as { name?: string }).name === 'bad')!;
  t.match(ev, {
    involvedObject: { kind: 'NetworkPolicy', namespace: 'shop', apiVersion: 'networking.k8s.io/v1' },
    reason: 'BpfproxyInvalidField',
  });
  t.match((ev as { message: string }).message, /field spec\.ingress\[0\]\.from\[0\]\.ipBlock\.except\[0\]: /);
  t.ok(lines.some((l) => l.level === 'warn' && /^NetworkPolicy shop\/bad field spec\.ingress\[0\]/.test(l.msg)));
  t.match(got.policies.get('shop/bad'), { ingressIsolation: true, ingress: [{ peers: [] }] }, 'delivered, failing closed');

  await send('DELETE', '/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web', undefined);
  await until('deleted', () => got.policies.has('shop/web') && got.policies.get('shop/web') === undefined);
});
