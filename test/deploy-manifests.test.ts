/** The deployment manifests agree with each other and with the agent. */
import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { effectiveConfig } from '../src/config/felix.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { parseBindAddress } from '../src/health/bind-address.js';
import { FELIX_GROUP, FELIX_PLURAL, FELIX_VERSION } from '../src/k8s/client.js';
import { REPO } from './helpers/env.js';

type Obj = { kind: string; metadata: { name: string; namespace?: string }; [k: string]: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
const dir = join(REPO, 'manifests');
const objs: Obj[] = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => {
      if (d.errors.length) throw new Error(`${f}: ${d.errors[0]!.message}`);
      return d.toJS() as Obj;
    }),
  );
const find = (kind: string, name?: string) => objs.find((o) => o.kind === kind && (!name || o.metadata.name === name));

t.test('DaemonSet wiring', async (t) => {
  const ds = find('DaemonSet', 'bpfproxy')!;
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  t.equal(pod.hostNetwork, true);
  t.ok(find('ServiceAccount', pod.serviceAccountName), 'service account defined');
  t.ok(find('ConfigMap', c.envFrom[0].configMapRef.name), 'kubernetes-services-endpoint ConfigMap defined');
  t.same(
    c.securityContext.capabilities.add.sort(),
    ['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_RESOURCE'],
    'capabilities it needs, nothing broad',
  );
  t.equal(c.securityContext.privileged, undefined, 'agent not privileged');
  t.equal(c.livenessProbe.httpGet.port, 9099, 'probes on the agent health port');
  const arg = (flag: string) => (c.args as string[]).find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
  const health = parseBindAddress('--health-bind-address', arg('--health-bind-address') ?? '') as { host: string; port: number };
  for (const p of [c.livenessProbe, c.readinessProbe]) {
    t.equal(p.httpGet.port, health.port, `${p.httpGet.path} probes the port the agent serves it on`);
    t.ok(
      health.host === '0.0.0.0' || health.host === p.httpGet.host,
      `${p.httpGet.path}: the kubelet probes ${p.httpGet.host}, the agent listens on ${health.host}`,
    );
  }
  const ports = Object.fromEntries((c.ports as Array<{ name: string; containerPort: number }>).map((p) => [p.name, p.containerPort]));
  t.same(
    parseBindAddress('--metrics-bind-address', arg('--metrics-bind-address') ?? ''),
    { host: '0.0.0.0', port: ports.metrics },
    'metrics served on every address, on the declared port',
  );
  t.same(
    parseBindAddress('--healthz-bind-address', arg('--healthz-bind-address') ?? ''),
    { host: '0.0.0.0', port: ports.healthz },
    'healthz on the declared port',
  );
  t.equal(ports.healthz, DEFAULT_CONFIG.healthzPort, "which is bpfKubeProxyHealthzPort's default");
  const stateDir = arg('--state-dir');
  t.ok(
    stateDir &&
      c.volumeMounts.some(
        (m: { name: string; mountPath: string }) =>
          m.mountPath === stateDir && pod.volumes.find((v: { name: string }) => v.name === m.name)?.hostPath?.path === stateDir,
      ),
    "state dir (pin dir lock) is the host's, so cleanup on the host sees the agent",
  );
  t.ok(
    pod.tolerations.some((x: { operator: string }) => x.operator === 'Exists'),
    'runs on every node',
  );
  t.ok(
    pod.volumes.some((v: { hostPath?: { path: string } }) => v.hostPath?.path === '/sys/fs/bpf'),
    'host bpffs for pins',
  );
});

t.test("RBAC: read-only but for Events and patching Nodes (the agent's decap annotation)", async (t) => {
  const role = find('ClusterRole', 'bpfproxy')!;
  const binding = find('ClusterRoleBinding', 'bpfproxy')!;
  t.equal(binding.roleRef.name, 'bpfproxy');
  const can = (res: string, verb: string) =>
    role.rules.some((r: { resources: string[]; verbs: string[] }) => r.resources.includes(res) && r.verbs.includes(verb));
  for (const r of ['services', 'endpointslices', 'nodes', 'felixconfigurations', 'networkpolicies', 'pods', 'namespaces'])
    t.ok(can(r, 'get') && can(r, 'watch') && can(r, 'list'), `${r}: get, list, watch`);
  for (const rule of role.rules) {
    const writes = rule.verbs.filter((v: string) => !['get', 'list', 'watch'].includes(v));
    if (writes.length && rule.resources.includes('nodes'))
      t.same([rule.resources, writes], [['nodes'], ['patch']], 'nodes: patch only (src/agent/decap-announce.ts)');
    else if (writes.length) t.same(rule.resources, ['events'], `only events are written (${writes.join(',')})`);
  }
  t.ok(can('nodes', 'patch'), 'nodes: patch');
});

t.test('FelixConfiguration CRD and default', async (t) => {
  const crd = find('CustomResourceDefinition')!;
  t.equal(crd.spec.group, FELIX_GROUP);
  t.equal(crd.spec.names.plural, FELIX_PLURAL);
  t.equal(crd.spec.versions[0].name, FELIX_VERSION);
  t.equal(crd.spec.scope, 'Cluster');
  const def = find('FelixConfiguration', 'default')!;
  const r = effectiveConfig(DEFAULT_CONFIG, def.spec, undefined, 'n');
  t.same(r.problems, []);
  t.equal(r.config!.enabled, false, 'off until switched on');
});

t.test('kube-proxy patches', async (t) => {
  const off = JSON.parse(readFileSync(join(dir, 'patches', 'kube-proxy-disable.json'), 'utf8'));
  const on = JSON.parse(readFileSync(join(dir, 'patches', 'kube-proxy-enable.json'), 'utf8'));
  t.same(off.spec.template.spec.nodeSelector, { 'non-calico': 'true' });
  t.same(on.spec.template.spec.nodeSelector, { 'non-calico': null });
});
