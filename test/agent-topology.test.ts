/**
 * Topology end to end in an agent process (a namespace of the test's own,
 * manifests source): the Node's zone label, the Service's
 * trafficDistribution and the EndpointSlice's hints, read from YAML; the
 * maps hold the zone's endpoints; `bpfproxy services` says which endpoints
 * this node uses and why; relabelling the Node (a file rewritten) moves the
 * node to the other zone's endpoints while the agent runs.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ip } from '../testkit/netns.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { until } from './helpers/wait.js';

const nodeYaml = (zone: string) => `apiVersion: v1
kind: Node
metadata: { name: n1, labels: { topology.kubernetes.io/zone: ${zone} } }
status: { addresses: [{ type: InternalIP, address: 192.0.2.1 }] }
`;

const webYaml = `apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  clusterIP: 10.96.0.10
  trafficDistribution: PreferClose
  selector: { app: web }
  ports: [{ name: http, port: 80, targetPort: 8080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
  - { addresses: [10.0.1.1], nodeName: n1, hints: { forZones: [{ name: zone-a }] } }
  - { addresses: [10.0.1.2], nodeName: n2, hints: { forZones: [{ name: zone-a }] } }
  - { addresses: [10.0.2.1], nodeName: n3, hints: { forZones: [{ name: zone-b }] } }
---
apiVersion: v1
kind: Service
metadata: { name: plain, namespace: shop }
spec: { clusterIP: 10.96.0.20, selector: { app: plain }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: plain-1, namespace: shop, labels: { kubernetes.io/service-name: plain } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [10.0.3.1], nodeName: n1 }, { addresses: [10.0.3.2], nodeName: n3 }]
`;

interface View {
  frontend: string;
  backends: Array<{ addr: string }>;
  topology?: { mode: string; uses: string; why: string; requested?: string };
}

t.test('the agent routes by zone hints and says why', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  const manifests = tmpDir(t, 'bpfproxy-topology-');
  writeFileSync(join(manifests, 'node.yaml'), nodeYaml('zone-a'));
  writeFileSync(join(manifests, 'web.yaml'), webYaml);
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = tmpPinDir(t);
  const a = await startAgentIn(t, ns, [
    '--manifests',
    manifests,
    '--node',
    'n1',
    '--bpf-enabled',
    'true',
    '--data-ifaces',
    '^nothing$',
    '--pod-ifaces',
    '^nothing$',
    '--pin-dir',
    pinDir,
    '--state-dir',
    state,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
  ]);
  const services = (): Record<string, View> => {
    const r = cliIn(ns, ['services', '--pin-dir', pinDir, '--state-dir', state, '-o', 'json']);
    t.equal(r.status, 0, r.stderr);
    return Object.fromEntries((JSON.parse(r.stdout) as View[]).map((v) => [v.frontend, v]));
  };
  const addrs = (v: View | undefined) => v?.backends.map((b) => b.addr) ?? [];

  let v = services();
  t.same(addrs(v['10.96.0.10:80/TCP']), ['10.0.1.1:8080', '10.0.1.2:8080'], 'zone-a node: the zone-a endpoints in the maps');
  t.same(v['10.96.0.10:80/TCP']!.topology, {
    mode: 'PreferSameZone',
    uses: 'cluster',
    why: 'zone hints for zone-a',
    requested: 'trafficDistribution: PreferClose',
  });
  t.same(addrs(v['10.96.0.20:80/TCP']), ['10.0.3.1:8080', '10.0.3.2:8080'], 'no hints: all endpoints');
  t.notOk(v['10.96.0.20:80/TCP']!.topology, 'and no topology line for it');

  const text = cliIn(ns, ['services', '--pin-dir', pinDir, '--state-dir', state]);
  t.match(text.stdout, /Node n1, zone zone-a/);
  t.match(text.stdout, /TOPOLOGY/);
  t.match(text.stdout, /10\.96\.0\.10:80\/TCP.*10\.0\.1\.1:8080.*zone hints for zone-a \[trafficDistribution: PreferClose\]/);

  writeFileSync(join(manifests, 'node.yaml'), nodeYaml('zone-b'));
  await until(
    'the node relabelled into zone-b reaches the maps',
    () => addrs(services()['10.96.0.10:80/TCP']).join() === '10.0.2.1:8080',
    20_000,
  );
  v = services();
  t.equal(v['10.96.0.10:80/TCP']!.topology?.why, 'zone hints for zone-b');
  t.same(addrs(v['10.96.0.20:80/TCP']), ['10.0.3.1:8080', '10.0.3.2:8080'], 'the other service unchanged');

  writeFileSync(join(manifests, 'node.yaml'), nodeYaml('zone-c'));
  await until('a zone no endpoint is hinted for: all endpoints', () => addrs(services()['10.96.0.10:80/TCP']).length === 3, 20_000);
  t.equal(services()['10.96.0.10:80/TCP']!.topology?.why, 'no endpoint hinted for zone zone-c: all endpoints');

  a.child.kill('SIGTERM');
  t.equal(await a.exited, 0);
});
