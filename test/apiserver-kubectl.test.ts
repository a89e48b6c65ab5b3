/**
 * The in-process API server driven the way a user drives a cluster: real
 * kubectl (discovery, apply with server-side validation, get/watch/patch/
 * diff/server-side apply, selectors, namespaces, events) and
 * @kubernetes/client-node through our adapter (list, watch, patch).
 * Skipped, with the reason, only when no kubectl 1.27+ is installed.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubernetesObjectApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { apiConnection, kubeClients } from '../src/k8s/client.js';
import { loadKubeConfig } from '../bench/kubeconfig.js';
import type { WatchEvent } from '../src/k8s/informer.js';
import { FakeApiServer } from './helpers/fake-apiserver.js';
import { Kubectl, kubectlMissing, type Run } from './helpers/kubectl.js';
import { service } from './helpers/k8s-objects.js';
import { sleep, until } from './helpers/wait.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MANIFESTS = join(REPO, 'manifests');
const yamlManifests = readdirSync(MANIFESTS)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map((f) => join(MANIFESTS, f));

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON from kubectl

const missing = kubectlMissing();

t.test('real kubectl against the test API server', { skip: missing }, async (t) => {
  const api = new FakeApiServer({ crds: [] });
  const url = await api.listen();
  const k = new Kubectl(url);
  t.teardown(async () => {
    k.cleanup();
    await api.close();
  });
  const failed = (r: Run, re: RegExp, what: string): void => {
    t.not(r.code, 0, `${what}: kubectl fails`);
    t.match(r.stderr, re, what);
  };

  await t.test('version, api-versions, api-resources (aggregated discovery)', async (t) => {
    t.match(await k.ok(['version']), /Server Version: v1\.32\./);
    const versions = (await k.ok(['api-versions'])).trim().split('\n');
    t.same(versions, [
      'apiextensions.k8s.io/v1',
      'apps/v1',
      'discovery.k8s.io/v1',
      'events.k8s.io/v1',
      'networking.k8s.io/v1',
      'rbac.authorization.k8s.io/v1',
      'v1',
    ]);
    const resources = await k.ok(['api-resources']);
    for (const re of [
      /^services\s+svc\s+v1\s+true\s+Service$/m,
      /^daemonsets\s+ds\s+apps\/v1\s+true\s+DaemonSet$/m,
      /^endpointslices\s+discovery\.k8s\.io\/v1\s+true\s+EndpointSlice$/m,
      /^customresourcedefinitions\s+crd,crds\s+apiextensions\.k8s\.io\/v1\s+false\s+CustomResourceDefinition$/m,
      /^namespaces\s+ns\s+v1\s+false\s+Namespace$/m,
      /^networkpolicies\s+netpol\s+networking\.k8s\.io\/v1\s+true\s+NetworkPolicy$/m,
    ]) {
      t.match(resources, re);
    }
    t.notMatch(resources, /felixconfigurations/, 'no FelixConfiguration before its CRD');
    const asked = api.requests.filter((r) => r.path === '/apis');
    t.ok(asked.length && asked.every((r) => /as=APIGroupDiscoveryList/.test(r.accept ?? '')), 'kubectl asked for aggregated discovery');
    t.notOk(
      api.requests.some((r) => r.path === '/apis/apps/v1' || r.path === '/api/v1'),
      'and used it: no per-group-version discovery',
    );
  });

  await t.test('kubectl apply -f manifests (validated on the server) and the examples', async (t) => {
    // the CRD first, as on any cluster: kubectl maps kinds before it applies
    t.match(
      await k.ok(['apply', '-f', join(MANIFESTS, 'crd-felixconfiguration.yaml')]),
      /customresourcedefinition.apiextensions.k8s.io\/felixconfigurations.crd.projectcalico.org created/,
    );
    t.match(
      await k.ok(['api-resources', '--api-group=crd.projectcalico.org']),
      /^felixconfigurations\s+crd\.projectcalico\.org\/v1\s+false\s+FelixConfiguration$/m,
      'the CRD registered its resource in discovery',
    );
    const applied = await k.ok(['apply', ...yamlManifests.flatMap((f) => ['-f', f])]);
    for (const what of [
      'daemonset.apps/bpfproxy created',
      'felixconfiguration.crd.projectcalico.org/default created',
      'configmap/kubernetes-services-endpoint created',
      'serviceaccount/bpfproxy created',
      'clusterrole.rbac.authorization.k8s.io/bpfproxy created',
      'clusterrolebinding.rbac.authorization.k8s.io/bpfproxy created',
    ]) {
      t.match(applied, what);
    }
    const creates = api.requests.filter((r) => r.method === 'POST' && r.query.fieldManager === 'kubectl-client-side-apply');
    t.ok(
      creates.length >= 7 && creates.every((r) => r.query.fieldValidation === 'Strict'),
      'OpenAPI v3 told kubectl to validate on the server (fieldValidation=Strict)',
    );
    t.match(
      await k.ok(['apply', '-f', join(MANIFESTS, 'examples')]),
      /service\/web created[\s\S]*endpointslice.discovery.k8s.io\/web-7xk2p created/,
    );
    t.match(
      await k.ok(['apply', ...yamlManifests.flatMap((f) => ['-f', f])]),
      /daemonset.apps\/bpfproxy unchanged/,
      'applied again: unchanged',
    );
    const felix = await k.json(['get', 'felixconfiguration', 'default']);
    t.same(felix.spec, { bpfEnabled: false, bpfKubeProxyIptablesCleanupEnabled: true, bpfKubeProxyMinSyncPeriod: '1s' });
    failed(
      await k.run(['apply', '-f', '-'], {
        input: 'apiVersion: v1\nkind: Service\nmetadata: {name: typo}\nspec: {ports: [{port: 80}], clusterIp: 1.2.3.4}\n',
      }),
      /strict decoding error: unknown field "spec.clusterIp"/,
      'a misspelt field is refused',
    );
  });

  await t.test('kubectl get: tables, YAML, lists across namespaces', async (t) => {
    const svcs = await k.ok(['get', 'svc', '-A']);
    t.match(svcs, /^NAMESPACE\s+NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE$/m);
    t.match(svcs, /^default\s+web\s+LoadBalancer\s+10\.96\.0\.10\s+203\.0\.113\.10\s+80:30080\/TCP\s+\d+s$/m);
    t.match(svcs, /^kube-system\s+dns\s+ClusterIP\s+10\.96\.0\.53\s+<none>\s+53\/UDP\s+/m);
    t.match(
      await k.ok(['get', 'ds', '-n', 'kube-system']),
      /^NAME\s+DESIRED\s+CURRENT\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+NODE SELECTOR\s+AGE\nbpfproxy\s+0\s+0\s+0\s+0\s+0\s+<none>\s+/m,
    );
    t.match(await k.ok(['get', 'endpointslices']), /^web-7xk2p\s+IPv4\s+8080\s+10\.244\.1\.11,10\.244\.1\.12,10\.244\.2\.11\s+/m);
    t.match(await k.ok(['get', 'felixconfigurations']), /^NAME\s+AGE\ndefault\s+\d+s$/m);
    t.match(await k.ok(['get', 'ns']), /^kube-system\s+Active\s+/m);
    t.match(await k.ok(['get', 'svc', '-A', '--chunk-size=2']), /web-local/, 'paged with limit/continue');
    t.ok(
      api.requests.some((r) => r.path === '/api/v1/services' && r.query.continue && r.query.limit === '2'),
      'kubectl followed continue tokens',
    );
    const yaml = await k.ok(['get', 'svc', 'web', '-o', 'yaml']);
    t.match(yaml, /^ {2}uid: [0-9a-f-]{36}$/m);
    t.match(yaml, /^ {2}creationTimestamp: "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"$/m);
    t.match(yaml, /^ {2}resourceVersion: "\d+"$/m);
    t.notMatch(yaml, /loadBalancer:\n\s+ingress/, "status is the server's: not taken from the manifest");
    failed(await k.run(['get', 'svc', 'nope']), /Error from server \(NotFound\): services "nope" not found/, 'a missing object');
  });

  await t.test('label and field selectors', async (t) => {
    await k.ok(['label', 'svc', 'web', 'tier=front']);
    await k.ok(['label', 'svc', 'sticky', 'tier=back']);
    const names = async (...args: string[]): Promise<string[]> =>
      (await k.ok(['get', 'svc', '-o', 'name', ...args]))
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((s) => s.replace('service/', ''));
    t.same(await names('-l', 'tier=front'), ['web']);
    t.same(await names('-l', 'tier==front'), ['web']);
    t.same(await names('-l', 'tier!=front'), ['empty', 'sticky', 'web-local']);
    t.same(await names('-l', 'tier in (front,back)'), ['sticky', 'web']);
    t.same(await names('-l', 'tier notin (front)'), ['empty', 'sticky', 'web-local']);
    t.same(await names('-l', 'tier'), ['sticky', 'web']);
    t.same(await names('-l', '!tier'), ['empty', 'web-local']);
    t.same(await names('--field-selector', 'metadata.name=web'), ['web']);
    t.same(await names('--field-selector', 'metadata.name!=web,metadata.namespace=default', '-l', 'tier'), ['sticky']);
    t.same(await names('-A', '--field-selector', 'metadata.namespace=kube-system'), ['dns']);
    failed(
      await k.run(['get', 'svc', '--field-selector', 'spec.nope=1']),
      /"spec.nope" is not a known field selector/,
      'an unsupported field selector',
    );
    failed(await k.run(['get', 'svc', '-l', 'a b c']), /BadRequest|unable to parse requirement|couldn't parse/, 'a bad label selector');
  });

  await t.test('kubectl get -w: the list, then changes as they happen', async (t) => {
    const w = k.stream(['get', 'svc', '-w', '--request-timeout=20s']);
    t.teardown(() => void w.stop());
    await until('the initial table', () => /^web\s+LoadBalancer/m.test(w.output()), 10_000);
    await until('the watch', () => api.watchCount('services') === 1, 10_000);
    api.upsert('services', service('default', 'late', '10.96.0.77'));
    await k.ok(['delete', 'svc', 'empty']);
    await until(
      'ADDED and DELETED rows',
      () => /^late\s+ClusterIP\s+10\.96\.0\.77/m.test(w.output()) && (w.output().match(/^empty\s/gm) ?? []).length === 2,
      10_000,
    );
    t.equal((w.output().match(/^NAME\s/gm) ?? []).length, 1, 'one header: column definitions come with the first table only');
    await w.stop();
    const j = k.stream(['get', 'ns', '-w', '-o', 'json', '--output-watch-events', '--request-timeout=20s']);
    t.teardown(() => void j.stop());
    await until('the namespace watch', () => api.watchCount('namespaces') === 1, 10_000);
    await k.ok(['create', 'namespace', 'watched']);
    await until(
      'ADDED event as JSON',
      () => /^\{"type":"ADDED","object":\{"apiVersion":"v1","kind":"Namespace",.*"name":"watched"/m.test(j.output()),
      10_000,
    );
    await j.stop();
    // bounded by the server: a watch that asks for a timeout ends
    const r = await k.run(['get', 'svc', '-w', '--request-timeout=2s'], { timeoutMs: 15_000 });
    t.match(r.stdout, /^web\s/m, 'watch with --request-timeout returns on its own');
  });

  await t.test('events: written by our recorder, read with kubectl get events (core v1) and events.k8s.io', async (t) => {
    const clients = kubeClients(await apiConnection(k.kubeconfig));
    await clients.events.record(
      { apiVersion: 'v1', kind: 'Service', name: 'web', namespace: 'default' },
      'Warning',
      'InvalidService',
      'spec.ports[1].port: 99999 is not a port',
    );
    await clients.events.record({ apiVersion: 'v1', kind: 'Node', name: 'node1' }, 'Normal', 'Started', 'bpfproxy took over');
    const all = await k.ok(['get', 'events']);
    t.match(all, /^LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$/m);
    t.match(all, /^\d+s\s+Warning\s+InvalidService\s+service\/web\s+spec\.ports\[1\]\.port: 99999 is not a port$/m);
    t.match(all, /node\/node1\s+bpfproxy took over/);
    const svcOnly = await k.ok(['get', 'events', '--field-selector', 'involvedObject.kind=Service,type=Warning']);
    t.match(svcOnly, /InvalidService/);
    t.notMatch(svcOnly, /Started/, 'field selector on involvedObject');
    const ev = await k.json<{ items: Obj[] }>(['get', 'events.v1.events.k8s.io', '--field-selector', 'reason=InvalidService']);
    t.equal(ev.items.length, 1);
    t.match(
      ev.items[0],
      {
        apiVersion: 'events.k8s.io/v1',
        regarding: { kind: 'Service', name: 'web' },
        note: 'spec.ports[1].port: 99999 is not a port',
        type: 'Warning',
      },
      'the same Event in its events.k8s.io/v1 form',
    );
  });

  await t.test('kubectl create/delete namespace (protobuf bodies)', async (t) => {
    t.match(await k.ok(['create', 'namespace', 'team-a']), /namespace\/team-a created/);
    t.ok(
      api.requests.some((r) => r.method === 'POST' && r.path === '/api/v1/namespaces' && /protobuf/.test(r.contentType ?? '')),
      'kubectl sent protobuf, and it was read',
    );
    failed(
      await k.run(['create', 'namespace', 'team-a']),
      /Error from server \(AlreadyExists\): namespaces "team-a" already exists/,
      'created twice',
    );
    await k.ok(['create', 'configmap', 'cfg', '-n', 'team-a', '--from-literal=key=value']);
    await k.ok(['create', 'serviceaccount', 'robot', '-n', 'team-a']);
    t.same((await k.json(['get', 'configmap', 'cfg', '-n', 'team-a'])).data, { key: 'value' });
    await k.ok(['create', 'service', 'nodeport', 'np', '-n', 'team-a', '--tcp=80:http']);
    t.match(
      (await k.json(['get', 'svc', 'np', '-n', 'team-a'])).spec,
      { type: 'NodePort', ports: [{ port: 80, targetPort: 'http', protocol: 'TCP', nodePort: Number }], selector: { app: 'np' } },
      'a Service sent as protobuf, defaulted',
    );
    await k.ok(['create', 'clusterrole', 'reader', '--verb=get,list', '--resource=pods']);
    await k.ok(['create', 'clusterrolebinding', 'reader', '--clusterrole=reader', '--serviceaccount=team-a:robot']);
    t.match(await k.ok(['get', 'clusterrolebinding', 'reader', '-o', 'wide']), /^reader\s+ClusterRole\/reader\s+\d+s\s+team-a\/robot$/m);
    failed(
      await k.run(['create', 'namespace', 'Team_B']),
      /The Namespace "Team_B" is invalid: metadata.name: Invalid value: "Team_B": a lowercase RFC 1123 label/,
      'a bad name',
    );
    failed(await k.run(['create', 'configmap', 'x', '-n', 'nowhere']), /namespaces "nowhere" not found/, 'into a missing namespace');
    t.match(await k.ok(['delete', 'namespace', 'team-a', '--timeout=20s']), /namespace "team-a" deleted/);
    failed(await k.run(['get', 'ns', 'team-a']), /namespaces "team-a" not found/, 'gone');
    t.notOk(
      (api.list('configmaps') as Obj[]).some((c) => c.metadata.namespace === 'team-a'),
      'with everything in it',
    );
  });

  await t.test('kubectl patch: merge, JSON, strategic (merge keys), errors naming the field', async (t) => {
    t.match(
      await k.ok(['patch', 'felixconfiguration', 'default', '--type=merge', '-p', '{"spec":{"bpfEnabled":true}}']),
      /felixconfiguration.crd.projectcalico.org\/default patched/,
    );
    const felix = await k.json(['get', 'felixconfiguration', 'default']);
    t.equal(felix.spec.bpfEnabled, true);
    t.equal(felix.metadata.generation, 2, 'a spec change counts a generation');
    await k.ok([
      'patch',
      'felixconfiguration',
      'default',
      '--type=json',
      '-p',
      '[{"op":"add","path":"/spec/bpfLogLevel","value":"Debug"},{"op":"remove","path":"/spec/bpfKubeProxyMinSyncPeriod"}]',
    ]);
    t.same((await k.json(['get', 'felixconfiguration', 'default'])).spec, {
      bpfEnabled: true,
      bpfKubeProxyIptablesCleanupEnabled: true,
      bpfLogLevel: 'Debug',
    });
    const bad = await k.run([
      'patch',
      'felixconfiguration',
      'default',
      '--type=merge',
      '-p',
      '{"spec":{"bpfEnabled":"yes","bpfExternalServiceMode":"Sideways"}}',
    ]);
    failed(bad, /The FelixConfiguration "default" is invalid/, 'schema from the CRD');
    t.match(bad.stderr, /spec\.bpfEnabled: Invalid value: "string": spec\.bpfEnabled in body must be of type boolean/);
    t.match(bad.stderr, /spec\.bpfExternalServiceMode: Unsupported value: "Sideways": supported values: "Tunnel", "DSR", "SNAT"/);
    failed(
      await k.run(['patch', 'felixconfiguration', 'default', '-p', '{"spec":{}}']),
      /strategic-merge-patch\+json is not supported by crd.projectcalico.org\/v1, Kind=FelixConfiguration/,
      'no strategic merge patch for custom resources',
    );
    failed(
      await k.run(['patch', 'felixconfiguration', 'default', '--type=json', '-p', '[{"op":"replace","path":"/spec/nothing","value":1}]']),
      /missing path|nothing/,
      'a JSON patch on a missing path',
    );
    // Service ports merge by port: a new port is added, the old one kept
    await k.ok(['patch', 'svc', 'web', '-p', '{"spec":{"ports":[{"name":"https","port":443,"targetPort":8443}]}}']);
    const web = await k.json(['get', 'svc', 'web']);
    t.same(
      web.spec.ports.map((p: Obj) => `${p.name}:${p.port}/${p.protocol}`),
      ['http:80/TCP', 'https:443/TCP'],
    );
    t.ok(web.spec.ports[1].nodePort >= 30000, 'a LoadBalancer port gets a node port');
    await k.ok(['patch', 'svc', 'web', '-p', '{"spec":{"ports":[{"port":443,"$patch":"delete"}]}}']);
    t.same(
      (await k.json(['get', 'svc', 'web'])).spec.ports.map((p: Obj) => p.port),
      [80],
      '$patch: delete by merge key',
    );
    // DaemonSet template containers merge by name; nodeSelector is a map (null deletes a key)
    await k.ok([
      '-n',
      'kube-system',
      'patch',
      'ds',
      'bpfproxy',
      '-p',
      '{"spec":{"template":{"spec":{"containers":[{"name":"agent","image":"bpfproxy:0.2.0"}]}}}}',
    ]);
    const ds = await k.json(['-n', 'kube-system', 'get', 'ds', 'bpfproxy']);
    t.equal(ds.spec.template.spec.containers[0].image, 'bpfproxy:0.2.0');
    t.equal(ds.spec.template.spec.containers[0].args[0], 'agent', 'the rest of the container kept');
    t.equal(ds.metadata.generation, 2);
    await k.ok(['-n', 'kube-system', 'patch', 'ds', 'bpfproxy', '--patch-file', join(MANIFESTS, 'patches', 'kube-proxy-disable.json')]);
    t.same((await k.json(['-n', 'kube-system', 'get', 'ds', 'bpfproxy'])).spec.template.spec.nodeSelector, { 'non-calico': 'true' });
    await k.ok(['-n', 'kube-system', 'patch', 'ds', 'bpfproxy', '--patch-file', join(MANIFESTS, 'patches', 'kube-proxy-enable.json')]);
    t.equal(
      (await k.json(['-n', 'kube-system', 'get', 'ds', 'bpfproxy'])).spec.template.spec.nodeSelector,
      undefined,
      'the selector key deleted (and the emptied map with it)',
    );
    failed(
      await k.run(['patch', 'svc', 'web', '--type=merge', '-p', '{"spec":{"ports":[{"port":99999}]}}']),
      /spec\.ports\[0\]\.port: Invalid value: 99999: must be between 1 and 65535, inclusive/,
      'Service validation',
    );
    failed(
      await k.run(['patch', 'svc', 'web', '--type=merge', '-p', '{"spec":{"clusterIP":"10.96.9.9"}}']),
      /spec\.clusterIPs\[0\]: Invalid value: "10\.96\.9\.9": may not change once set/,
      'cluster IP is immutable',
    );
  });

  await t.test('kubectl apply --server-side: field managers, conflicts, --force-conflicts', async (t) => {
    const cfg =
      'apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: false, bpfLogLevel: Info}\n';
    const c = await k.run(['apply', '--server-side', '-f', '-'], { input: cfg });
    failed(
      c,
      /Apply failed with 2 conflicts: conflicts with "kubectl-patch" using crd.projectcalico.org\/v1 at [^:]+:\d\d:\d\dZ:\n- \.spec\.bpfEnabled\n- \.spec\.bpfLogLevel/,
      'fields another manager set',
    );
    t.match(c.stderr, /--force-conflicts/);
    t.match(await k.ok(['apply', '--server-side', '--force-conflicts', '-f', '-'], { input: cfg }), /serverside-applied/);
    const felix = await k.json(['get', 'felixconfiguration', 'default', '--show-managed-fields']);
    t.same(
      felix.spec,
      { bpfEnabled: false, bpfLogLevel: 'Info' },
      'kubectl moved its client-side apply fields to server-side apply (rewriting managedFields), so what this apply leaves out goes',
    );
    t.notOk(
      (felix.metadata.managedFields as Obj[]).some((m) => m.manager === 'kubectl-client-side-apply'),
      'no client-side apply manager left',
    );
    const mine = (felix.metadata.managedFields as Obj[]).find((m) => m.manager === 'kubectl' && m.operation === 'Apply');
    t.same(mine?.fieldsV1, { 'f:spec': { 'f:bpfEnabled': {}, 'f:bpfLogLevel': {} } }, 'the applier owns what it applied');
    t.notOk(
      (felix.metadata.managedFields as Obj[]).some(
        (m) => m.manager === 'kubectl-patch' && JSON.stringify(m.fieldsV1).includes('bpfEnabled'),
      ),
      'taken from kubectl-patch',
    );
    // a second manager may co-own a field with the same value; a different value conflicts
    t.match(
      await k.ok(['apply', '--server-side', '--field-manager=ops', '-f', '-'], {
        input: 'apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: false}\n',
      }),
      /serverside-applied/,
    );
    failed(
      await k.run(['apply', '--server-side', '--field-manager=ops', '-f', '-'], {
        input:
          'apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: false, bpfLogLevel: Debug}\n',
      }),
      /Apply failed with 1 conflict: conflict with "kubectl": \.spec\.bpfLogLevel/,
      'against an Apply manager',
    );
    // dropping a field from the applied configuration removes it (nobody else owns it)
    await k.ok(['apply', '--server-side', '-f', '-'], {
      input: 'apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: false}\n',
    });
    t.equal((await k.json(['get', 'felixconfiguration', 'default'])).spec.bpfLogLevel, undefined, 'a field no longer applied is removed');
    // server-side apply creates, on a built-in kind with associative lists
    await k.ok(['apply', '--server-side', '-f', '-'], {
      input:
        'apiVersion: v1\nkind: Service\nmetadata: {name: ssa, namespace: default}\nspec:\n  ports:\n  - {name: a, port: 80}\n  - {name: b, port: 81, protocol: UDP}\n',
    });
    const ssa = await k.json(['get', 'svc', 'ssa', '--show-managed-fields']);
    t.same(
      Object.keys(ssa.metadata.managedFields[0].fieldsV1['f:spec']['f:ports']).sort(),
      ['k:{"port":80,"protocol":"TCP"}', 'k:{"port":81,"protocol":"UDP"}'],
      'list items keyed by port and protocol',
    );
    t.match(ssa.spec.clusterIP, /^10\.96\./, 'allocated on create');
  });

  await t.test('kubectl diff: dry-run on the server, nothing written', async (t) => {
    const before = await k.json(['get', 'felixconfiguration', 'default']);
    // "ops" co-owns bpfEnabled (previous test): the dry run must force, as the apply would
    const d = await k.run(['diff', '--server-side', '--force-conflicts', '-f', '-'], {
      input: 'apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: {bpfEnabled: true}\n',
    });
    t.equal(d.code, 1, 'exit 1: there are differences');
    t.match(d.stdout, /^- {2}bpfEnabled: false\n\+ {2}bpfEnabled: true$/m);
    t.notMatch(d.stderr, /keeps changing/, 'the dry run answered at the live resourceVersion');
    t.equal((await k.run(['diff', '-f', join(MANIFESTS, 'examples', 'dns.yaml')])).code, 0, 'exit 0: in sync');
    const dd = await k.run(['diff', '-f', '-'], {
      input: 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: brand-new, namespace: default}\ndata: {a: b}\n',
    });
    t.equal(dd.code, 1);
    t.match(dd.stdout, /\+ {2}name: brand-new/, 'a dry-run create');
    const after = await k.json(['get', 'felixconfiguration', 'default']);
    t.equal(after.metadata.resourceVersion, before.metadata.resourceVersion, 'nothing written');
    failed(await k.run(['get', 'configmap', 'brand-new']), /not found/, 'the dry-run create left nothing');
  });

  await t.test('CRD deleted: its resource leaves discovery and storage', async (t) => {
    await k.ok(['delete', 'crd', 'felixconfigurations.crd.projectcalico.org']);
    // kubectl's cached discovery still knows the kind: the list itself is a 404
    failed(
      await k.run(['get', 'felixconfigurations']),
      /could not find the requested resource|doesn't have a resource type/,
      'unknown again',
    );
    t.equal(api.watchCount('felixconfigurations'), 0);
    await k.ok(['apply', '-f', join(MANIFESTS, 'crd-felixconfiguration.yaml')]);
    const again = await k.run(['get', 'felixconfigurations']);
    t.equal(again.code, 0);
    t.match(again.stderr, /No resources found/, 'reinstalled empty');
  });
});

t.test('the README install and rollback, command by command', { skip: missing }, async (t) => {
  const api = new FakeApiServer({ crds: [] });
  const url = await api.listen();
  const k = new Kubectl(url);
  t.teardown(async () => {
    k.cleanup();
    await api.close();
  });
  const m = (f: string): string => join(MANIFESTS, f);
  const patchFile = (f: string): string => readFileSync(m(f), 'utf8');
  // kube-proxy, as a cluster has it
  const kp = { 'k8s-app': 'kube-proxy' };
  api.upsert('daemonsets', {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'kube-proxy', namespace: 'kube-system', labels: kp, generation: 1 },
    spec: {
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
      selector: { matchLabels: kp },
      template: { metadata: { labels: kp }, spec: { containers: [{ name: 'kube-proxy', image: 'registry.k8s.io/kube-proxy:v1.32.0' }] } },
    },
    status: { observedGeneration: 1, desiredNumberScheduled: 0, currentNumberScheduled: 0, numberReady: 0, numberMisscheduled: 0 },
  });
  // 2. FelixConfiguration
  await k.ok(['apply', '-f', m('crd-felixconfiguration.yaml')]);
  await k.ok(['apply', '-f', m('felixconfiguration-default.yaml')]);
  // 3. where the API server is
  await k.ok(['apply', '-f', m('kubernetes-services-endpoint.yaml')]);
  // 4. the agent
  await k.ok(['apply', '-f', m('rbac.yaml'), '-f', m('daemonset.yaml')]);
  t.match(
    await k.ok(['-n', 'kube-system', 'rollout', 'status', 'ds/bpfproxy', '--timeout=20s']),
    /daemon set "bpfproxy" successfully rolled out/,
  );
  // 5. kube-proxy off
  await k.ok(['patch', 'ds', '-n', 'kube-system', 'kube-proxy', '-p', patchFile('patches/kube-proxy-disable.json')]);
  t.same(
    (api.get('daemonsets', 'kube-system/kube-proxy') as Obj).spec.template.spec.nodeSelector,
    { 'non-calico': 'true' },
    'kube-proxy selects no node',
  );
  // 6. bpfproxy on
  await k.ok(['patch', 'felixconfiguration', 'default', '--type=merge', '-p', '{"spec":{"bpfEnabled":true}}']);
  t.equal((api.get('felixconfigurations', 'default') as Obj).spec.bpfEnabled, true);
  // rollback: kube-proxy back first, then bpfproxy drains and hands back
  await k.ok(['patch', 'ds', '-n', 'kube-system', 'kube-proxy', '-p', patchFile('patches/kube-proxy-enable.json')]);
  t.equal(
    (api.get('daemonsets', 'kube-system/kube-proxy') as Obj).spec.template.spec.nodeSelector,
    undefined,
    'kube-proxy back on every node',
  );
  t.match(await k.ok(['-n', 'kube-system', 'rollout', 'status', 'ds/kube-proxy', '--timeout=20s']), /successfully rolled out/);
  await k.ok(['patch', 'felixconfiguration', 'default', '--type=merge', '-p', '{"spec":{"bpfEnabled":false}}']);
  t.equal((api.get('felixconfigurations', 'default') as Obj).spec.bpfEnabled, false);
  const gone = await k.ok(['delete', '-f', m('daemonset.yaml'), '-f', m('rbac.yaml')]);
  t.match(gone, /daemonset.apps "bpfproxy" deleted[\s\S]*clusterrolebinding.rbac.authorization.k8s.io "bpfproxy" deleted/);
  t.equal(api.get('daemonsets', 'kube-system/bpfproxy'), undefined);
});

t.test('@kubernetes/client-node through our adapter: list, watch, patch, conflicts', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  const k = new Kubectl(url);
  t.teardown(async () => {
    k.cleanup();
    await api.close();
  });
  const kc = loadKubeConfig(k.kubeconfig);
  const clients = kubeClients(await apiConnection(k.kubeconfig));
  const core = kc.makeApiClient(CoreV1Api);
  for (let i = 0; i < 25; i++) api.upsert('services', service('apps', `s${i}`, `10.96.1.${i}`));

  const first = await clients.services.list({ limit: 10 });
  t.equal(first.items.length, 10);
  t.ok(first.continue, 'a continue token');
  const rest = await clients.services.list({ limit: 100, continue: first.continue! });
  t.equal(rest.items.length, 15);
  t.equal(typeof first.items[0]!.metadata!.resourceVersion, 'string');

  const events: WatchEvent[] = [];
  const h = await clients.services.watch(
    first.resourceVersion,
    (e) => events.push(e),
    () => undefined,
  );
  t.teardown(() => h.stop());
  await until('watch open', () => api.watchCount('services') === 1);
  const created = await core.createNamespacedService({
    namespace: 'apps',
    body: { metadata: { name: 'made' }, spec: { ports: [{ port: 80 }] } },
  });
  t.equal(created.spec?.type, 'ClusterIP', 'defaulted');
  t.match(created.spec?.clusterIP, /^10\.96\./, 'allocated');
  await core.patchNamespacedService(
    { namespace: 'apps', name: 'made', body: { metadata: { labels: { a: 'b' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  await core.deleteNamespacedService({ namespace: 'apps', name: 'made' });
  await until('three events', () => events.filter((e) => e.object.metadata?.name === 'made').length === 3);
  t.same(
    events.filter((e) => e.object.metadata?.name === 'made').map((e) => e.type),
    ['ADDED', 'MODIFIED', 'DELETED'],
  );

  const live = await core.readNamespacedService({ namespace: 'apps', name: 's1' });
  const stale = structuredClone(live);
  live.spec!.ports = [{ port: 8080, protocol: 'TCP', name: 'http' }];
  const updated = await core.replaceNamespacedService({ namespace: 'apps', name: 's1', body: live });
  t.equal(updated.spec?.ports?.[0]?.port, 8080, 'PUT is stored');
  t.not(updated.metadata?.resourceVersion, stale.metadata?.resourceVersion);
  stale.spec!.ports = [{ port: 9090, protocol: 'TCP' }];
  const conflict = await core
    .replaceNamespacedService({ namespace: 'apps', name: 's1', body: stale })
    .catch((e: { code?: number; body?: string }) => e);
  t.equal((conflict as { code?: number }).code, 409, 'a stale resourceVersion is a 409 Conflict');
  const dup = await core
    .createNamespacedService({ namespace: 'apps', body: { metadata: { name: 's2' }, spec: { ports: [{ port: 80 }] } } })
    .catch((e: { code?: number }) => e);
  t.equal((dup as { code?: number }).code, 409, 'creating an existing object is 409 AlreadyExists');
  t.equal((api.get('services', 'apps/s2') as Obj).spec.clusterIP, '10.96.1.2', 'and does not replace it');

  // the generic client: legacy discovery, server-side apply, CRs
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const felix = await objects.create({
    apiVersion: 'crd.projectcalico.org/v1',
    kind: 'FelixConfiguration',
    metadata: { name: 'default' },
    spec: { bpfEnabled: true },
  });
  t.match(
    felix,
    { kind: 'FelixConfiguration', metadata: { name: 'default', generation: 1 } },
    'POST of a custom resource answers with the object',
  );
  const applied = await objects.patch(
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'made-1', namespace: 'apps', labels: { 'kubernetes.io/service-name': 'made' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.0.0.1'] }],
    },
    undefined,
    undefined,
    'tests',
    true,
    PatchStrategy.ServerSideApply,
  );
  t.match(
    applied,
    { kind: 'EndpointSlice', metadata: { name: 'made-1', managedFields: [{ manager: 'tests', operation: 'Apply' }] } },
    'server-side apply creates an EndpointSlice',
  );
});

t.test('raw HTTP: status codes and bodies the server cannot read', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  t.teardown(() => api.close());
  const req = async (method: string, path: string, body?: string | Buffer, type?: string): Promise<{ status: number; body: Obj }> => {
    const r = await fetch(url + path, {
      method,
      ...(body !== undefined ? { body: typeof body === 'string' ? body : new Uint8Array(body) } : {}),
      headers: type ? { 'Content-Type': type } : {},
    });
    const text = await r.text();
    let parsed: Obj;
    try {
      parsed = JSON.parse(text) as Obj;
    } catch {
      parsed = { text };
    }
    return { status: r.status, body: parsed };
  };
  const svc = JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { ports: [{ port: 80 }] } });
  const cases: Array<[string, string, string | Buffer | undefined, string | undefined, number, RegExp]> = [
    ['not JSON', 'POST', 'not json', 'application/json', 400, /json parse error/],
    ['truncated JSON', 'POST', svc.slice(0, 30), 'application/json', 400, /json parse error/],
    ['an array', 'POST', '[1,2]', 'application/json', 400, /must be a JSON object/],
    [
      'form data (curl --data)',
      'POST',
      'a=b',
      'application/x-www-form-urlencoded',
      415,
      /unknown format \(application\/x-www-form-urlencoded\)/,
    ],
    ['no Content-Type', 'POST', svc, undefined, 415, /unknown format/],
    ['garbage protobuf', 'POST', Buffer.from([1, 2, 3, 4, 5]), 'application/vnd.kubernetes.protobuf', 400, /k8s/],
    ['truncated protobuf', 'POST', Buffer.from('k8s\0\x0a\x7f', 'latin1'), 'application/vnd.kubernetes.protobuf', 400, /truncated/],
    ['an unknown patch type', 'PATCH', '{}', 'application/json', 415, /accepted media types include: application\/json-patch\+json/],
    ['a merge patch that is not JSON', 'PATCH', '{"spec":', 'application/merge-patch+json', 400, /json parse error/],
    ['a JSON patch that is not a list', 'PATCH', '{"op":"add"}', 'application/json-patch+json', 400, /JSON patch is an array/],
    [
      'a failed JSON patch test',
      'PATCH',
      '[{"op":"test","path":"/spec/type","value":"NodePort"}]',
      'application/json-patch+json',
      422,
      /test failed/,
    ],
    ['apply without fieldManager', 'PATCH', svc, 'application/apply-patch+yaml', 422, /fieldManager: Required value/],
    ['an unknown path', 'GET', undefined, undefined, 404, /could not find the requested resource/],
    ['an unknown resource', 'GET', undefined, undefined, 404, /could not find the requested resource/],
  ];
  t.equal((await req('POST', '/api/v1/namespaces/default/services', svc, 'application/json')).status, 201, 'created');
  for (const [what, method, body, type, status, re] of cases) {
    const path =
      method === 'POST'
        ? '/api/v1/namespaces/default/services'
        : method === 'PATCH'
          ? '/api/v1/namespaces/default/services/web'
          : what === 'an unknown path'
            ? '/nope'
            : '/apis/apps/v1/namespaces/default/deployments';
    const r = await req(method, path, body, type);
    t.equal(r.status, status, `${what}: ${status}`);
    t.match(r.body, { kind: 'Status', status: 'Failure', code: status, message: re }, `${what}: a Status naming the problem`);
  }
  t.match(
    await req('GET', '/api/v1/namespaces/%E0%A4%A/services'),
    { status: 400, body: { message: /percent-encoding/ } },
    'a path that does not decode',
  );
  // a client that goes away in the middle of its body
  await new Promise<void>((resolve) => {
    const sock = connect(Number(new URL(url).port), '127.0.0.1', () => {
      sock.write(
        'POST /api/v1/namespaces/default/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"metadata":',
      );
      setTimeout(() => {
        sock.destroy();
        resolve();
      }, 50);
    });
  });
  const tooBig = await req('POST', '/api/v1/namespaces/default/services', Buffer.alloc(4 * 1024 * 1024, 0x20), 'application/json');
  t.equal(tooBig.status, 413, 'a body over 3 MiB');
  t.equal((await req('GET', '/version')).status, 200, 'the server is still up');

  // the real status codes
  const again = await req('POST', '/api/v1/namespaces/default/services', svc, 'application/json');
  t.match(again, {
    status: 409,
    body: { reason: 'AlreadyExists', message: 'services "web" already exists', details: { name: 'web', kind: 'services' } },
  });
  const noName = await req(
    'POST',
    '/api/v1/namespaces/default/services',
    JSON.stringify({ spec: { ports: [{ port: 1 }] } }),
    'application/json',
  );
  t.match(
    noName,
    { status: 422, body: { reason: 'Invalid', details: { causes: [{ field: 'metadata.name', reason: 'FieldValueRequired' }] } } },
    'name required',
  );
  const badName = await req(
    'POST',
    '/api/v1/namespaces/default/services',
    JSON.stringify({ metadata: { name: '1web' }, spec: { ports: [{ port: 1 }] } }),
    'application/json',
  );
  t.match(
    badName,
    { status: 422, body: { details: { causes: [{ field: 'metadata.name', message: /DNS-1035 label/ }] } } },
    'Service names are DNS-1035 labels',
  );
  const cm = await req(
    'POST',
    '/api/v1/namespaces/default/configmaps',
    JSON.stringify({ metadata: { name: '1.config' } }),
    'application/json',
  );
  t.equal(cm.status, 201, 'ConfigMap names are DNS-1123 subdomains');
  const typed = await req(
    'POST',
    '/api/v1/namespaces/default/services',
    JSON.stringify({ metadata: { name: 'typed' }, spec: { ports: [{ port: '80' }] } }),
    'application/json',
  );
  t.match(
    typed,
    { status: 400, body: { message: /cannot unmarshal string into Go struct field Service\.spec\.ports\[0\]\.port of type integer/ } },
    'a wrong type in a built-in kind',
  );
  const felix = await req(
    'POST',
    '/apis/crd.projectcalico.org/v1/felixconfigurations',
    JSON.stringify({
      apiVersion: 'crd.projectcalico.org/v1',
      kind: 'FelixConfiguration',
      metadata: { name: 'default' },
      spec: { bpfEnabled: 'on', bpfKubeProxyHealthzPort: 1.5 },
    }),
    'application/json',
  );
  t.match(felix, {
    status: 422,
    body: {
      details: {
        kind: 'FelixConfiguration',
        group: 'crd.projectcalico.org',
        causes: [{ field: 'spec.bpfEnabled', reason: 'FieldValueTypeInvalid' }, { field: 'spec.bpfKubeProxyHealthzPort' }],
      },
    },
  });
  const slice = await req(
    'POST',
    '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices',
    JSON.stringify({ metadata: { name: 'web-1' }, addressType: 'IPv4', endpoints: [{ addresses: ['10.0.0.1'] }] }),
    'application/json',
  );
  t.match(slice, { status: 201, body: { kind: 'EndpointSlice', metadata: { name: 'web-1', uid: /.+/ } } });
  const got = await req('GET', '/api/v1/namespaces/default/services/web');
  const put = JSON.stringify({ ...got.body, spec: { ...got.body.spec, ports: [{ port: 81 }] } });
  t.match(
    await req('PUT', '/api/v1/namespaces/default/services/web', put, 'application/json'),
    { status: 200, body: { spec: { ports: [{ port: 81 }] } } },
    'PUT stores',
  );
  t.match(
    await req('PUT', '/api/v1/namespaces/default/services/web', put, 'application/json'),
    { status: 409, body: { reason: 'Conflict' } },
    'PUT at a stale resourceVersion',
  );
  t.match(
    await req(
      'PATCH',
      '/api/v1/namespaces/default/services/web',
      '{"spec":{"sessionAffinity":"ClientIP"}}',
      'application/merge-patch+json',
    ),
    { status: 200, body: { spec: { sessionAffinity: 'ClientIP', ports: [{ port: 81 }] } } },
    'PATCH stores',
  );
  t.match(await req('GET', '/api/v1/namespaces/default/services/web'), { body: { spec: { sessionAffinity: 'ClientIP' } } });
  t.match(await req('DELETE', '/api/v1/namespaces/default/services/nope'), { status: 404, body: { reason: 'NotFound' } });
});

t.test('watch: selectors decide what a watcher sees; 410 after compaction', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  t.teardown(() => api.close());
  api.upsert('services', service('default', 'a', '10.96.0.1'));
  const rv = api.resourceVersion;
  const ctrl = new AbortController();
  t.teardown(() => ctrl.abort());
  const r = await fetch(`${url}/api/v1/namespaces/default/services?watch=true&resourceVersion=${rv}&labelSelector=tier%3Dfront`, {
    signal: ctrl.signal,
  });
  const lines: Obj[] = [];
  void (async () => {
    let buf = '';
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      buf += Buffer.from(chunk).toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(buf.slice(0, i)) as Obj);
        buf = buf.slice(i + 1);
      }
    }
  })().catch(() => undefined);
  await until('watch', () => api.watchCount('services') === 1);
  const labelled = (tier: string): Obj => {
    const o = service('default', 'a', '10.96.0.1') as Obj;
    o.metadata.labels = { tier };
    return o;
  };
  api.upsert('services', labelled('front'));
  api.upsert('services', labelled('back'));
  api.upsert('services', service('default', 'other', '10.96.0.2'));
  await until('two events', () => lines.length >= 2);
  await sleep(100);
  t.same(
    lines.map((l) => `${l.type} ${l.object.metadata.name}`),
    ['ADDED a', 'DELETED a'],
    'into the selector: ADDED; out of it: DELETED; never matching: nothing',
  );
  ctrl.abort();
  api.compact();
  const old = await (await fetch(`${url}/api/v1/services?watch=true&resourceVersion=${rv}`)).text();
  t.match(
    JSON.parse(old.trim()) as Obj,
    { type: 'ERROR', object: { code: 410, reason: 'Expired' } },
    'a version from before compaction: 410 Gone as an ERROR event',
  );
});
