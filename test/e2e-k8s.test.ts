/**
 * End to end on the Kubernetes API: the in-process API server on the lab's
 * LAN, agents in both nodes watching it. FelixConfiguration on/off/on with
 * real traffic, service and endpoint changes through the API, and an agent
 * restart in the middle of a transfer.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { labDown, labSpec, labUp, probe, startAgent, startStream, type AgentProcess } from '../lab/lab.js';
import { uniqueTag } from '../testkit/netns.js';
import { sleep } from './helpers/wait.js';
import { FakeApiServer, writeKubeconfig, type Resource } from './helpers/fake-apiserver.js';
import { felix, service, slice } from './helpers/k8s-objects.js';
import { REPO, inNetns } from './helpers/env.js';
import { attachedHere } from '../src/dataplane/bpf/attach.js';

t.test('two-node lab on the Kubernetes API', async (t) => {
  const prefix = `bpxk${uniqueTag(5)}`;
  const lab = labSpec(prefix);
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-e2e-k8s-'));
  const agents = new Map<string, AgentProcess>();
  const api = new FakeApiServer();
  t.teardown(async () => {
    for (const a of agents.values()) await a.stop();
    await api.close().catch(() => undefined);
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  labUp(lab);
  // The API server's socket lives in the lab's api namespace.
  const url = await inNetns(lab.api.ns, () => api.listen(lab.api.ip, 6443, true));
  const kubeconfig = join(dir, 'kubeconfig');
  writeKubeconfig(kubeconfig, url);
  const kinds: Record<string, Resource> = { Service: 'services', EndpointSlice: 'endpointslices' };
  const exDir = join(REPO, 'manifests', 'examples');
  for (const f of readdirSync(exDir)) {
    for (const d of parseAllDocuments(readFileSync(join(exDir, f), 'utf8'))) {
      const o = d.toJS() as { kind: string };
      api.upsert(kinds[o.kind]!, o);
    }
  }
  api.upsert('felixconfigurations', felix('default', { bpfEnabled: true }));
  // The toggles below check an immediate hand-back; the rollback drain has its own test (e2e-migration).
  for (const n of lab.nodes) agents.set(n.name, startAgent(n, { kubeconfig }, ['--metrics-port', '0', '--rollback-drain-timeout', '0']));
  await Promise.all([...agents.values()].map((a) => a.ready));
  const podC = n1.pods[2]!;
  const client = lab.client;
  const ok = (r: ReturnType<typeof probe>) => r.every((x) => x.ok);

  t.test('services from the API are served', async (t) => {
    t.ok(ok(probe(podC.ns, 'tcp', '10.96.0.10', 80, 6, 2000)), 'ClusterIP');
    t.ok(ok(probe(client.ns, 'tcp', n1.ip, 30080, 6, 2000)), 'NodePort');
    t.ok(ok(probe(podC.ns, 'udp', '10.96.0.53', 53, 4, 2000)), 'UDP');
  });

  t.test('service and endpoint changes through the API', async (t) => {
    api.upsert('services', service('default', 'api-made', '10.96.0.70'));
    api.upsert('endpointslices', slice('default', 'api-made', 'api-made-1', [{ ip: '10.244.2.12', node: 'node2' }]));
    let r = probe(podC.ns, 'tcp', '10.96.0.70', 80, 1, 500);
    for (let i = 0; i < 40 && !r[0]!.ok; i++) {
      await sleep(100);
      r = probe(podC.ns, 'tcp', '10.96.0.70', 80, 1, 500);
    }
    t.equal(r[0]!.pod, 'n2-b', 'new service reachable');
    api.upsert('endpointslices', slice('default', 'api-made', 'api-made-1', [{ ip: '10.244.1.12', node: 'node1' }]));
    for (let i = 0; i < 40 && r[0]!.pod !== 'n1-b'; i++) {
      await sleep(100);
      r = probe(podC.ns, 'tcp', '10.96.0.70', 80, 1, 500);
    }
    t.equal(r[0]!.pod, 'n1-b', 'endpoint churn followed');
    api.remove('services', 'default/api-made');
    for (let i = 0; i < 40 && r[0]!.ok; i++) {
      await sleep(100);
      r = probe(podC.ns, 'tcp', '10.96.0.70', 80, 1, 500);
    }
    t.notOk(r[0]!.ok, 'deleted service no longer answers');
  });

  t.test('FelixConfiguration bpfEnabled on, off, on, with traffic flowing', async (t) => {
    const filters = () => inNetns(n1.ns, () => attachedHere().length);
    const stream = startStream(podC.ns, '10.244.2.11', 8080, 4000); // pod to pod: must never notice
    api.upsert('felixconfigurations', felix('default', { bpfEnabled: false }));
    for (let i = 0; i < 100 && filters() > 0; i++) await sleep(50);
    t.equal(filters(), 0, 'off: our filters are gone from node1');
    const off = probe(podC.ns, 'tcp', '10.96.0.10', 80, 1, 700)[0]!;
    t.notOk(off.ok, `off: the ClusterIP is no longer translated (${off.error})`);
    api.upsert('felixconfigurations', felix('default', { bpfEnabled: true }));
    let r = probe(podC.ns, 'tcp', '10.96.0.10', 80, 1, 500);
    for (let i = 0; i < 60 && !r[0]!.ok; i++) {
      await sleep(100);
      r = probe(podC.ns, 'tcp', '10.96.0.10', 80, 1, 500);
    }
    t.ok(r[0]!.ok, 'on again: served');
    t.ok(ok(probe(client.ns, 'tcp', n1.ip, 30080, 6, 2000)), 'NodePort served again');
    const s = await stream;
    t.ok(s.ok && s.received === s.sent, `pod-to-pod traffic untouched through the toggles (${s.sent} bytes)`);
  });

  t.test('agent restart in the middle of a transfer, on the API', async (t) => {
    const st = startStream(client.ns, n1.ip, 30081, 3500);
    await sleep(1000);
    await agents.get('node1')!.stop();
    const fresh = startAgent(n1, { kubeconfig }, ['--metrics-port', '0']);
    agents.set('node1', fresh);
    await fresh.ready;
    const r = await st;
    t.ok(r.ok, `completed (${r.error ?? 'ok'})`);
    t.equal(r.received, r.sent, `${r.sent} bytes, all back`);
  });
  void n2;
});
