/**
 * NetworkPolicy end to end through the agent, with real sockets in
 * namespaces of the test's own: a node namespace with two pods (a, b) on
 * cali* veths, the agent attached to them.
 *
 * - From a manifest directory (`bpfproxy agent --manifests`, a child
 *   process): deny-all blocks a -> b; removing it allows; under an allow
 *   policy a stream a -> b survives an agent restart, which writes nothing
 *   (same generation, same entries); `bpfproxy policy -o json` shows what is
 *   programmed, with hits.
 * - From the API (the in-process API server, the agent in this process):
 *   a NetworkPolicy created with POST takes effect, a PATCH that allows
 *   takes effect, a pod relabelled out of its peers is cut off, the
 *   FelixConfiguration turns policy off and on live, a DELETE allows.
 * Every probe is bounded in count and time.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent } from '../src/agent/agent.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { silentLogger } from '../src/log.js';
import { native } from '../src/native/index.js';
import { ip, nsPath, sh, sysctl } from '../testkit/netns.js';
import { probe, REPO_ROOT, startEcho, type StreamOutcome } from '../lab/lab.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';
import { felix } from './helpers/k8s-objects.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { BPF_DIR, tmpNetns, tmpPinDir } from './helpers/env.js';
import { until } from './helpers/wait.js';

const NODE_IP = '192.0.2.11';
const A = '10.244.1.2';
const B = '10.244.1.3';

/** A pod namespace behind a cali* veth of the node: /32 address, the node side as its gateway. */
function attachPod(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpap');
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', NODE_IP);
  return ns;
}

/** The node namespace with pods a and b serving TCP 8080 (echo servers until the deadline). */
function cluster(t: Test) {
  const node = tmpNetns(t, 'bpan');
  sysctl(node, 'net.ipv4.ip_forward', '1');
  sysctl(node, 'net.ipv4.conf.all.rp_filter', '0');
  sysctl(node, 'net.ipv4.conf.default.rp_filter', '0');
  // the node's address on an uplink of its own (no program: --data-ifaces matches nothing)
  ip(node, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
  for (const l of ['eth0', 'eth1']) ip(node, 'link', 'set', l, 'up');
  ip(node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'eth0');
  const a = attachPod(t, node, 'calia', A);
  const b = attachPod(t, node, 'calib', B);
  const deadline = Date.now() + 180_000;
  startEcho(a, 'a', deadline);
  startEcho(b, 'b', deadline);
  return { node, a, b };
}

const tcpOk = (ns: string, host: string): boolean => probe(ns, 'tcp', host, 8080, 1, 1000)[0]?.ok ?? false;

/** Poll (at most `ms`) until a -> b reaches `want`; the last outcome. */
async function reach(ns: string, host: string, want: boolean, ms = 10_000): Promise<boolean> {
  let got = !want;
  for (const end = Date.now() + ms; Date.now() < end;) {
    got = tcpOk(ns, host);
    if (got === want) return got;
    await new Promise((r) => setTimeout(r, 200));
  }
  return got;
}

/** A paced TCP stream (the lab's probe) that gives up 3 s after its last chunk. */
function stream(ns: string, host: string, durationMs: number): Promise<StreamOutcome> {
  return new Promise((resolve, reject) => {
    const args = [join(REPO_ROOT, 'dist', 'lab', 'probe.js'), 'stream', host, '8080'];
    const c = spawn(
      'nsenter',
      [
        `--net=${nsPath(ns)}`,
        '--',
        process.execPath,
        ...args,
        '--duration',
        String(durationMs),
        '--chunk',
        '1024',
        '--interval',
        '20',
        '--timeout',
        '3000',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out) as StreamOutcome) : reject(new Error(`stream probe in ${ns} exited ${code}`)),
    );
  });
}

async function established(ns: string, host: string): Promise<boolean> {
  for (const end = Date.now() + 5000; Date.now() < end;) {
    if (sh('ss', ['-H', '-tn', 'state', 'established', 'dst', `${host}:8080`], { ns, allowFail: true }).trim()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

const PODS = `apiVersion: v1
kind: Namespace
metadata: { name: x }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: x, labels: { app: a } }
spec: { nodeName: n1, containers: [{ name: c, image: i, ports: [{ name: http, containerPort: 8080 }] }] }
status: { phase: Running, podIPs: [{ ip: ${A} }] }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: x, labels: { app: b } }
spec: { nodeName: n1, containers: [{ name: c, image: i, ports: [{ name: http, containerPort: 8080 }] }] }
status: { phase: Running, podIPs: [{ ip: ${B} }] }
`;
const DENY_ALL = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: x }
spec: { podSelector: {}, policyTypes: [Ingress] }
`;
const ALLOW_A = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: b-from-a, namespace: x }
spec:
  podSelector: { matchLabels: { app: b } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: a } } }], ports: [{ port: http }] }]
`;

interface PolicyJson {
  generation: number;
  endpoints: Array<{
    pod: string;
    ingressIsolated: boolean;
    rules: Array<{ direction: string; verdict: string; rule: string; ports: string; hits: number }>;
  }>;
}

t.test('agent from a manifest directory: deny-all, removal, restart under policy', async (t) => {
  const { node, a, b } = cluster(t);
  const manifests = tmpDir(t, 'bpfproxy-policy-');
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = tmpPinDir(t);
  writeFileSync(join(manifests, 'pods.yaml'), PODS);
  writeFileSync(join(manifests, 'deny.yaml'), DENY_ALL);
  const args = [
    '--manifests',
    manifests,
    '--node',
    'n1',
    '--bpf-enabled',
    'true',
    '--data-ifaces',
    '^nothing$',
    '--pod-ifaces',
    '^cali',
    '--pin-dir',
    pinDir,
    '--state-dir',
    state,
    '--min-sync-period',
    '200ms',
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
  ];
  t.ok(tcpOk(a, B), 'before the agent: a -> b');
  const first = await startAgentIn(t, node, args);
  t.notOk(await reach(a, B, false), 'deny-all: a -> b blocked');
  t.ok(tcpOk(node, B), 'the node itself still reaches b (probes)');

  rmSync(join(manifests, 'deny.yaml'));
  t.ok(await reach(a, B, true), 'deny-all removed: a -> b allowed');

  writeFileSync(join(manifests, 'allow.yaml'), ALLOW_A);
  writeFileSync(join(manifests, 'deny.yaml'), DENY_ALL);
  t.ok(await reach(a, B, true), 'deny-all and an allow from a on the named port http: allowed');
  t.notOk(tcpOk(b, A), 'b -> a: a is isolated by deny-all and nothing allows b');

  const pol = () => {
    const r = cliIn(node, ['policy', '--pin-dir', pinDir, '-o', 'json']);
    t.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as PolicyJson;
  };
  const before = pol();
  const bView = before.endpoints.find((e) => e.pod === 'x/b');
  t.ok(bView?.ingressIsolated, '`bpfproxy policy`: b isolated for ingress');
  const allow = bView?.rules.find((r) => r.rule === 'x/b-from-a ingress[0]');
  t.match(allow, { direction: 'ingress', verdict: 'allow', ports: '8080' }, 'the named port resolved to 8080');
  t.ok((allow?.hits ?? 0) > 0, `with hits (${allow?.hits})`);
  const table = cliIn(node, ['policy', '--pin-dir', pinDir]);
  t.match(table.stdout, /x\/b \(endpoint \d+, 10\.244\.1\.3\): isolated for ingress/);
  const status = cliIn(node, ['status', '--pin-dir', pinDir]);
  t.match(status.stdout, /Network policy: on \(generation \d+\); 2 endpoint\(s\), 2 isolated/);

  // an established flow allowed by policy, across a restart of the agent
  const dump = () => {
    const p = openPinnedMaps(pinDir);
    try {
      const m = p.maps;
      return {
        gen: m.polState.get({ v: 0 })!.generation,
        entries: JSON.stringify([m.ipcache.entries(), m.policy.entries(), m.polEps.entries(), m.polRules.entries()]),
      };
    } finally {
      p.close();
    }
  };
  const s0 = dump();
  const flow = stream(a, B, 8000);
  t.ok(await established(a, B), 'stream a -> b connected');
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0, 'agent stopped');
  const second = await startAgentIn(t, node, args);
  await new Promise((r) => setTimeout(r, 1500)); // a few policy syncs
  const s1 = dump();
  t.equal(s1.gen, s0.gen, 'the restarted agent left the generation as it was: no flow re-checked');
  t.equal(s1.entries, s0.entries, 'and every policy map entry (the same inner maps)');
  const out = await flow;
  t.ok(out.ok, `the flow survived the restart (sent ${out.sent}, got back ${out.received})`);
  t.notOk(tcpOk(b, A), 'and the policy still holds');
  t.ok(
    second.logs.some((l) => l.includes('adopted network policy state from pinned maps')),
    'the restarted agent adopted the pinned policy',
  );
  second.child.kill('SIGTERM');
  t.equal(await second.exited, 0);
});

t.test('agent from the API: a NetworkPolicy created with POST, patched, deleted', async (t) => {
  const { node, a } = cluster(t);
  const prev = native().enterNetns(nsPath(node));
  t.teardown(() => native().restoreNetns(prev));
  const api = new FakeApiServer();
  const url = await api.listen('127.0.0.1');
  const dir = tmpDir(t, 'bpfproxy-policy-api-');
  writeKubeconfig(join(dir, 'kubeconfig'), url);
  api.upsert('felixconfigurations', felix('default', { bpfEnabled: true }));
  const ips: Record<string, string> = { a: A, b: B };
  api.kubelet = (pod, set) => set({ phase: 'Running', podIP: ips[pod.metadata.name], podIPs: [{ ip: ips[pod.metadata.name] }] });
  const send = async (method: string, path: string, body?: unknown, type = 'application/json') => {
    const r = await fetch(url + path, { method, headers: { 'content-type': type }, ...(body ? { body: JSON.stringify(body) } : {}) });
    t.ok(r.ok, `${method} ${path}: ${r.status}`);
  };
  await send('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'x' } });
  for (const name of ['a', 'b']) {
    await send('POST', '/api/v1/namespaces/x/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels: { app: name } },
      spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'i', ports: [{ name: 'http', containerPort: 8080 }] }] },
    });
  }
  const agent = await Agent.start(
    {
      source: { kind: 'kubernetes', kubeconfig: join(dir, 'kubeconfig') },
      nodeName: 'n1',
      pinDir: tmpPinDir(t),
      bpfDir: BPF_DIR,
      podIfaces: /^cali/,
      stateDir: tmpDir(t, 'bpfproxy-state-'),
      base: { ...DEFAULT_CONFIG, dataIfaces: /^nothing$/, minSyncPeriodMs: 200 },
      syncPeriodMs: 30_000,
    },
    silentLogger,
  );
  t.teardown(async () => {
    agent.stop();
    await api.close();
  });
  await until('enabled', () => agent.enabled, 45_000); // the load verifies every program: slow on a loaded machine
  await agent.settled();
  t.ok(agent.policy.isSynced, 'pods, namespaces and policies listed');
  t.ok(await reach(a, B, true), 'no policy: a -> b');

  const path = '/apis/networking.k8s.io/v1/namespaces/x/networkpolicies';
  await send('POST', path, {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'b' },
    spec: { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'nobody' } } }] }] },
  });
  t.notOk(await reach(a, B, false), 'created with POST: b allows only app=nobody, a -> b blocked');
  await send(
    'PATCH',
    `${path}/b`,
    { spec: { ingress: [{ from: [{ podSelector: { matchLabels: { app: 'a' } } }], ports: [{ port: 'http' }] }] } },
    'application/merge-patch+json',
  );
  t.ok(await reach(a, B, true), 'patched to allow a on the named port: a -> b allowed');
  await send('PATCH', '/api/v1/namespaces/x/pods/a', { metadata: { labels: { app: 'c' } } }, 'application/merge-patch+json');
  t.notOk(await reach(a, B, false), 'a relabelled out of the peer selector: blocked');
  // the FelixConfiguration turns policy off and on again, live
  api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfNetworkPolicy: 'off' }));
  t.ok(await reach(a, B, true), 'bpfNetworkPolicy: off: every pod unisolated, a -> b allowed');
  t.equal(agent.runtime!.dp.maps.ipcache.count(), 0, 'no policy map entry left');
  api.upsert('felixconfigurations', felix('default', { bpfEnabled: true, bpfNetworkPolicy: 'on' }));
  t.notOk(await reach(a, B, false), 'on again: blocked');
  await send('DELETE', `${path}/b`);
  t.ok(await reach(a, B, true), 'deleted: allowed');
  t.ok(agent.policy.stats.syncs >= 4, `policy synced (${agent.policy.stats.syncs} syncs)`);
});
