/**
 * End to end in the namespace lab: two nodes with their own agents and pin
 * dirs, pods, an external client; real TCP and UDP through every service
 * type. Everything is created with a unique prefix and removed at the end,
 * pass or fail. Every traffic loop is bounded in count and time.
 */
import t from 'tap';
import { existsSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { AGENT_CLI, addPod, probe, startAgent, startStream, type ProbeAttempt } from '../lab/lab.js';
import { delNetns, ip, nsPath } from '../testkit/netns.js';
import { sleep } from './helpers/wait.js';
import { labWithAgents } from './helpers/lab-agents.js';

const pods = (a: ProbeAttempt[]) => a.map((x) => (x.ok ? x.pod! : `!${x.error}`));
const srcs = (a: ProbeAttempt[]) => new Set(a.filter((x) => x.ok).map((x) => x.peer!.split(':')[0]));
const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());

/** Extra services for cross-node cases: endpoints only on node2. */
const REMOTE = `apiVersion: v1
kind: Service
metadata: { name: remote, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  selector: { app: remote }
  ports: [{ name: http, port: 80, targetPort: 8080, nodePort: 30090 }]
---
apiVersion: v1
kind: Service
metadata: { name: remote-local, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.21
  externalTrafficPolicy: Local
  selector: { app: remote }
  ports: [{ name: http, port: 80, targetPort: 8080, nodePort: 30091 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: remote-1, namespace: default, labels: { kubernetes.io/service-name: remote } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [10.244.2.11], nodeName: node2 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: remote-local-1, namespace: default, labels: { kubernetes.io/service-name: remote-local } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [10.244.2.11], nodeName: node2 }]
`;

t.test('two-node lab, real traffic', async (t) => {
  const { prefix, lab, dir, agents } = await labWithAgents(t, { tag: 'bpxt', manifests: { 'remote.yaml': REMOTE } });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];

  const client = lab.client;
  const podC = n1.pods[2]!; // 10.244.1.13: no web backend, so never a hairpin

  t.test('ClusterIP TCP from a pod spreads over all endpoints, source IP kept', async (t) => {
    const r = probe(podC.ns, 'tcp', '10.96.0.10', 80, 30, 2000);
    t.same(
      pods(r).filter((p) => p.startsWith('!')),
      [],
      'every connection answered',
    );
    const c = count(pods(r));
    t.same([...c.keys()].sort(), ['n1-a', 'n1-b', 'n2-a'], 'all three endpoints, on both nodes');
    for (const [p, n] of c) t.ok(n >= 2, `${p}: ${n}/30 (P(<2) ≈ 1e-4 each under uniform choice)`);
    t.same([...srcs(r)], [podC.ip], 'backends see the pod address');
  });

  t.test('ClusterIP UDP from a pod', async (t) => {
    const r = probe(podC.ns, 'udp', '10.96.0.53', 53, 16, 2000);
    t.ok(
      r.every((x) => x.ok),
      'every datagram answered',
    );
    t.same([...new Set(pods(r))].sort(), ['n1-c', 'n2-b'], 'both endpoints');
  });

  t.test('hairpin: a pod reaching itself through its service', async (t) => {
    const a = n1.pods[0]!;
    const r = probe(a.ns, 'tcp', '10.96.0.10', 80, 20, 2000);
    t.ok(
      r.every((x) => x.ok),
      'every connection answered',
    );
    const self = r.filter((x) => x.pod === a.name);
    t.ok(self.length > 0, 'reached itself at least once');
    t.ok(
      self.every((x) => x.peer!.startsWith('169.254.42.1:')),
      'hairpin traffic arrives from the hairpin address',
    );
  });

  t.test('NodePort and LoadBalancer IP from the external client (eTP=Cluster)', async (t) => {
    for (const [host, port] of [
      [n1.ip, 30080],
      ['198.51.100.10', 80],
      ['203.0.113.10', 80],
    ] as const) {
      const r = probe(client.ns, 'tcp', host, port, 15, 2000);
      t.ok(
        r.every((x) => x.ok),
        `${host}:${port}: every connection answered`,
      );
      for (const x of r) {
        const want = x.pod === 'n2-a' ? n1.ip : client.ip;
        t.equal(
          x.peer!.split(':')[0],
          want,
          `${host}:${port} → ${x.pod}: source ${want === client.ip ? 'is the client (local endpoint)' : 'is node1 (SNAT to the remote endpoint)'}`,
        );
      }
    }
  });

  t.test("eTP=Local: only this node's endpoints, client address preserved", async (t) => {
    const r1 = probe(client.ns, 'tcp', n1.ip, 30081, 10, 2000);
    t.ok(
      pods(r1).every((p) => p === 'n1-a' || p === 'n1-b'),
      `node1 answers from node1 pods only: ${pods(r1).join(',')}`,
    );
    t.same([...srcs(r1)], [client.ip]);
    const r2 = probe(client.ns, 'tcp', n2.ip, 30081, 5, 2000);
    t.ok(
      pods(r2).every((p) => p === 'n2-a'),
      'node2 answers from its own pod',
    );
    t.same([...srcs(r2)], [client.ip]);
  });

  t.test('cross-node: NodePort eTP=Cluster to an endpoint on the other node, and eTP=Local without one', async (t) => {
    const r = probe(client.ns, 'tcp', n1.ip, 30090, 5, 2000);
    t.ok(
      r.every((x) => x.ok && x.pod === 'n2-a'),
      "node1 forwards to node2's pod",
    );
    t.same([...srcs(r)], [n1.ip], 'SNAT to node1 (kube-proxy parity for eTP=Cluster)');
    const none = probe(client.ns, 'tcp', n1.ip, 30091, 1, 1000);
    t.equal(none[0]!.error, 'timeout', 'eTP=Local on a node with no endpoint: dropped, as kube-proxy does');
    const other = probe(client.ns, 'tcp', n2.ip, 30091, 3, 2000);
    t.ok(
      other.every((x) => x.ok && x.pod === 'n2-a' && x.peer!.startsWith(`${client.ip}:`)),
      'node2 serves it with the client address',
    );
  });

  t.test('ClientIP affinity sticks', async (t) => {
    const r = probe(podC.ns, 'tcp', '10.96.0.12', 80, 10, 2000);
    t.ok(r.every((x) => x.ok));
    t.equal(new Set(pods(r)).size, 1, `one endpoint for one client: ${pods(r).join(',')}`);
  });

  t.test('no endpoints: refused at once, TCP and UDP', async (t) => {
    t.equal(probe(podC.ns, 'tcp', '10.96.0.99', 80, 1, 2000)[0]!.error, 'ECONNREFUSED');
    t.equal(probe(podC.ns, 'udp', '10.96.0.99', 53, 1, 2000)[0]!.error, 'ECONNREFUSED');
  });

  t.test('manifest changes are applied live', async (t) => {
    const f = join(dir, 'web-local.yaml');
    writeFileSync(f, readFileSync(f, 'utf8').replace('  - addresses: [10.244.1.12]\n    nodeName: node1\n', ''));
    writeFileSync(
      join(dir, 'new.yaml'),
      `apiVersion: v1
kind: Service
metadata: { name: fresh, namespace: default }
spec:
  clusterIP: 10.96.0.77
  selector: { app: x }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: fresh-1, namespace: default, labels: { kubernetes.io/service-name: fresh } }
addressType: IPv4
ports: [{ port: 8080 }]
endpoints: [{ addresses: [10.244.1.12], nodeName: node1 }]
`,
    );
    const t0 = Date.now();
    let ok = false;
    while (Date.now() - t0 < 5000 && !ok) {
      const fresh = probe(podC.ns, 'tcp', '10.96.0.77', 80, 1, 500)[0]!;
      const local = probe(client.ns, 'tcp', n1.ip, 30081, 6, 1000);
      ok = fresh.ok && fresh.pod === 'n1-b' && pods(local).every((p) => p === 'n1-a');
      if (!ok) await sleep(100);
    }
    t.ok(ok, `new service served and removed endpoint gone after ${Date.now() - t0} ms`);
  });

  /** bpfproxy CLI inside a node's network namespace, JSON output. */
  const cli = <T>(n: typeof n1, ...args: string[]): T => {
    const r = spawnSync(
      'nsenter',
      [`--net=${nsPath(n.ns)}`, '--', process.execPath, AGENT_CLI, ...args, '--pin-dir', n.pinDir, '-o', 'json'],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`bpfproxy ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  t.test('PMTU discovery works through a service when the node is the narrow hop', async (t) => {
    // node1 reaches node2's pods over a route with a smaller MTU than the pods'
    ip(n1.ns, 'route', 'replace', n2.podCidr, 'via', n2.ip, 'mtu', 'lock', '1200');
    t.teardown(() => ip(n1.ns, 'route', 'replace', n2.podCidr, 'via', n2.ip));
    const r = await startStream(podC.ns, '10.96.0.20', 80, 1500);
    t.ok(r.ok, `stream with 8 KiB writes completes (${r.error ?? 'ok'})`);
    t.equal(r.received, r.sent, `${r.sent} bytes sent, all echoed`);
    const st = cli<{ reasons: Array<{ reason: string; packets: number }> }>(n1, 'status');
    t.ok(st.reasons.find((x) => x.reason === 'frag-needed')!.packets > 0, 'the pod was told the path MTU by BPF');
  });

  t.test('operator commands read what is programmed and what happened', async (t) => {
    const svcs = cli<Array<{ servicePort: string; frontend: string; kind: string; backends: Array<{ addr: string; local: boolean }> }>>(
      n1,
      'services',
    );
    const web = svcs.find((s) => s.frontend === '10.96.0.10:80/TCP');
    t.equal(web?.servicePort, 'default/web:http/TCP');
    t.same(web?.backends, [
      { addr: '10.244.1.11:8080', local: true },
      { addr: '10.244.1.12:8080', local: true },
      { addr: '10.244.2.11:8080', local: false },
    ]);
    t.ok(svcs.some((s) => s.frontend === '*:30080/TCP' && s.kind === 'NodePort'));
    const ct = cli<Array<{ proto: string; dir: string; service: string; state: string; flags: string[] }>>(
      n1,
      'conntrack',
      '--service',
      'default/web',
      '--proto',
      'tcp',
    );
    t.ok(ct.length > 0 && ct.every((c) => c.service === 'default/web:http/TCP' && c.proto === 'TCP'), `${ct.length} web flows, filtered`);
    t.ok(
      ct.some((c) => c.flags.includes('snat')),
      'SNATed flows are marked',
    );
    t.ok(
      ct.some((c) => c.flags.includes('hairpin')),
      'hairpin flows are marked',
    );
    const st = cli<{
      interfaces: Array<{ iface: string; program: string }>;
      maps: Array<{ map: string; entries: number }>;
      reasons: Array<{ reason: string; packets: number }>;
    }>(n1, 'status');
    t.ok(
      st.interfaces.some((i) => i.iface === 'eth0' && i.program === 'bpfproxy_data'),
      'uplink runs the data program',
    );
    t.ok(st.interfaces.filter((i) => i.iface.startsWith('cali')).length >= 3, 'pod interfaces run the pod program');
    t.ok(st.maps.find((m) => m.map === 'bpfproxy_fe')!.entries >= 10, 'frontend fill level');
    t.equal(st.maps.find((m) => m.map === 'bpfproxy_pod_ifs')!.entries, 3, 'the three pod veths are entered directly (redirect_peer)');
    t.ok(st.reasons.find((r) => r.reason === 'no-endpoints')!.packets >= 2, 'rejects counted by reason');
  });

  t.test('a pod interface that appears later is attached within a second; a vanished one is forgotten', async (t) => {
    const pod = { name: 'n1-d', ns: `${prefix}-n1d`, ip: '10.244.1.14', hostIf: 'calid1' };
    t.teardown(() => delNetns(pod.ns));
    addPod(n1, pod);
    const t0 = Date.now();
    let attached = false;
    while (!attached && Date.now() - t0 < 3000) {
      attached = cli<{ interfaces: Array<{ iface: string }> }>(n1, 'status').interfaces.some((i) => i.iface === 'calid1');
      if (!attached) await sleep(50);
    }
    t.ok(attached, `attached after ${Date.now() - t0} ms`);
    const r = probe(pod.ns, 'tcp', '10.96.0.10', 80, 3, 2000);
    t.ok(
      r.every((x) => x.ok),
      'the new pod reaches the service',
    );
    delNetns(pod.ns);
    const agent = agents.get('node1')!;
    const t1 = Date.now();
    while (!agent.logs.some((l) => l.includes('interface calid1 is gone')) && Date.now() - t1 < 3000) await sleep(50);
    t.ok(
      agent.logs.some((l) => l.includes('interface calid1 is gone; forgotten')),
      'forgotten',
    );
  });

  t.test('agent restart in the middle of long TCP transfers breaks nothing', async (t) => {
    const snat = startStream(client.ns, n1.ip, 30090, 4000);
    const local = startStream(client.ns, n1.ip, 30081, 4000);
    const cluster = startStream(podC.ns, '10.96.0.20', 80, 4000);
    await sleep(1200);
    const old = agents.get('node1')!;
    t.equal(await old.stop(), 0, 'agent exits cleanly on SIGTERM');
    await sleep(300);
    const fresh = startAgent(n1, { manifests: dir });
    agents.set('node1', fresh);
    await fresh.ready;
    t.ok(
      fresh.logs.some((l) => l.includes('adopted service state from pinned maps')),
      'the new agent adopted the pinned maps',
    );
    for (const [what, p] of [
      ['NodePort via SNAT to node2', snat],
      ['NodePort eTP=Local', local],
      ['ClusterIP to node2', cluster],
    ] as const) {
      const r = await p;
      t.ok(r.ok, `${what}: transfer completed (${r.error ?? 'ok'})`);
      t.ok(r.sent > 100_000, `${what}: ${r.sent} bytes sent`);
      t.equal(r.received, r.sent, `${what}: every byte came back`);
    }
  });

  t.test('cleanup detaches and unpins; the node is as before', async (t) => {
    const a = agents.get('node2')!;
    await a.stop();
    agents.delete('node2');
    const r = spawnSync('nsenter', [`--net=${nsPath(n2.ns)}`, '--', process.execPath, AGENT_CLI, 'cleanup', '--pin-dir', n2.pinDir], {
      encoding: 'utf8',
    });
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /detached from 3 interface\(s\)/);
    const filters = spawnSync('nsenter', [`--net=${nsPath(n2.ns)}`, '--', 'tc', 'filter', 'show', 'dev', 'eth0', 'ingress'], {
      encoding: 'utf8',
    }).stdout;
    t.notMatch(filters, /bpfproxy/, 'no filter of ours left on the uplink');
    t.notOk(existsSync(n2.pinDir), 'pin dir removed');
  });
});
