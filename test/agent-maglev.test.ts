/**
 * `bpfproxy agent --lb-algorithm` and `--maglev-max-endpoints-per-service`
 * reach the maps: an agent in a namespace of the test's own serves a
 * LoadBalancer Service with Maglev (its cluster IP stays random), a Service
 * annotated random stays random, and `bpfproxy services` shows the table
 * size. A bad value is refused naming the flag.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ip } from '../testkit/netns.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';

const service = (name: string, clusterIP: string, lbIP: string, nodePort: number, annotations = '') => `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: ${name}, namespace: shop${annotations ? `, annotations: { ${annotations} }` : ''} }
    spec: { type: LoadBalancer, clusterIP: ${clusterIP}, ports: [{ name: http, port: 80, nodePort: ${nodePort} }], selector: { a: b } }
    status: { loadBalancer: { ingress: [{ ip: ${lbIP} }] } }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: ${name}-1, namespace: shop, labels: { kubernetes.io/service-name: ${name} } }
    addressType: IPv4
    ports: [{ name: http, port: 8080 }]
    endpoints: [{ addresses: [10.0.0.1], nodeName: n1 }, { addresses: [10.0.0.2], nodeName: n2 }]
`;

t.test('the agent flags reach the maps', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'peer0', 'up');
  ip(ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  const manifests = tmpDir(t, 'bpfproxy-maglev-');
  writeFileSync(join(manifests, 'web.yaml'), service('web', '10.96.0.10', '198.51.100.10', 30080));
  writeFileSync(
    join(manifests, 'rnd.yaml'),
    service('rnd', '10.96.0.20', '198.51.100.20', 30081, '"service.bpfproxy.io/lb-algorithm": random'),
  );
  const state = tmpDir(t, 'bpfproxy-state-');
  const common = [
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
    '--state-dir',
    state,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
  ];
  const policies = (pinDir: string): Record<string, string[]> => {
    const r = cliIn(ns, ['services', '--pin-dir', pinDir, '-o', 'json']);
    t.equal(r.status, 0, r.stderr);
    const v = JSON.parse(r.stdout) as Array<{ frontend: string; policies: string[] }>;
    return Object.fromEntries(v.map((s) => [s.frontend, s.policies]));
  };

  await t.test('--lb-algorithm maglev', async (t) => {
    const pinDir = tmpPinDir(t);
    const a = await startAgentIn(t, ns, [...common, '--pin-dir', pinDir, '--lb-algorithm', 'maglev']);
    const p = policies(pinDir);
    t.same(p['198.51.100.10:80/TCP'], ['maglev=2039'], 'LoadBalancer IP: Maglev, 2 endpoints -> 2039 entries');
    t.same(p['*:30080/TCP'], ['maglev=2039'], 'NodePort: Maglev');
    t.same(p['10.96.0.10:80/TCP'], [], 'cluster IP: random');
    t.same(p['198.51.100.20:80/TCP'], [], 'annotated random: random');
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });

  await t.test('--maglev-max-endpoints-per-service 1: tables sized for one endpoint', async (t) => {
    const pinDir = tmpPinDir(t);
    const a = await startAgentIn(t, ns, [
      ...common,
      '--pin-dir',
      pinDir,
      '--lb-algorithm',
      'maglev',
      '--maglev-max-endpoints-per-service',
      '1',
    ]);
    t.same(policies(pinDir)['198.51.100.10:80/TCP'], ['maglev=1021']);
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });

  await t.test('default: random', async (t) => {
    const pinDir = tmpPinDir(t);
    const a = await startAgentIn(t, ns, [...common, '--pin-dir', pinDir]);
    t.same(policies(pinDir)['198.51.100.10:80/TCP'], []);
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  });

  t.test('a bad value is refused, naming the flag', async (t) => {
    const r = cliIn(ns, ['agent', ...common, '--pin-dir', '/sys/fs/bpf/unused', '--lb-algorithm', 'ring-hash'], 30_000);
    t.not(r.status, 0);
    t.match(r.stderr, /--lb-algorithm.*ring-hash.*(random|maglev)/s);
  });
});
