/**
 * The AF_XDP engine end to end in its two configurations, in namespaces this
 * test creates:
 *
 *   client 10.78.1.2 --veth-- n0 10.78.1.1 [node: agent] n1 10.78.2.1 --veth-- backend 10.78.2.2
 *                                                         n2 10.78.4.1 --veth-- backend2 10.78.4.2
 *                                          cali1 10.78.3.1 --veth-- pod 10.78.3.2
 *
 * The engine runs on the data interfaces (n0-n2) and the pod interface
 * (cali1). From the client: a LoadBalancer IP and an external IP (TCP and
 * UDP) are served by the engine (the backend sees the node's address with the
 * engine's SNAT ports). From the pod: the cluster IP is served by the engine
 * (the pod's address kept, as the BPF path does). Then the endpoints change
 * six times while UDP requests run: every request is answered (each table is
 * whole before it is swapped in; the workers never see a half-written one).
 * NetworkPolicy: the pod (a Pod of this node in the manifests) is isolated
 * for egress with nothing allowed: its requests to the cluster IP are
 * denied by the engine's policy node (as the BPF path would), the client's
 * still pass, and all pass again once the policy is gone.
 * IPv6 (dual-stack: the node fd00:192:0:2::1/64 towards the client, the
 * backends in fd00:10:244:2::/64 and fd00:10:244:4::/64, the pod
 * fd00:10:244:3::2): an IPv6-only LoadBalancer service, its LoadBalancer IP
 * and external IP from the client and its cluster IP from the pod, served
 * by the engine's IPv6 nodes alike (SNAT to the node's IPv6 address with
 * the engine's ports; the pod's IPv6 address kept), and denied by policy6
 * while the pod is isolated.
 * `bpfproxy status` reports the engine's memory with what each part is sized
 * from. Every traffic loop is bounded in count and time.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probe, startEcho, type ProbeAttempt } from '../lab/lab.js';
import { ip, sysctl, uniqueTag } from '../testkit/netns.js';
import type { EngineStatus } from '../src/dataplane/afxdp/runtime.js';
import { CLI, startAgentIn } from './helpers/agent-proc.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { sleep } from './helpers/wait.js';

const NODE_IP = '10.78.1.1';
const SNAT_IPS = ['10.78.2.1', '10.78.4.1'];
const BACKENDS = ['10.78.2.2', '10.78.4.2'];
const POD_IP = '10.78.3.2';
const LB_IP = '198.51.100.77';
const EXT_IP = '198.51.100.78';
const CLUSTER_IP = '10.96.0.80';
const ENGINE_PORTS = [15000, 19999];
// IPv6
const NODE6 = 'fd00:192:0:2::1';
const CLIENT6 = 'fd00:192:0:2::2';
const SNAT6 = ['fd00:10:244:2::1', 'fd00:10:244:4::1'];
const BACKENDS6 = ['fd00:10:244:2::2', 'fd00:10:244:4::2'];
const POD6 = 'fd00:10:244:3::2';
const LB6 = '2001:db8:100::77';
const EXT6 = '2001:db8:100::78';
const CLUSTER6 = 'fd00:10:96::80';
const CT_ENTRIES = 65536;

const service = `apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: ${CLUSTER_IP}
  externalIPs: [${EXT_IP}]
  ports:
  - { name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30090 }
  - { name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30090 }
status:
  loadBalancer:
    ingress: [{ ip: ${LB_IP} }]
`;
const service6 = `apiVersion: v1
kind: Service
metadata: { name: web6, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: '${CLUSTER6}'
  clusterIPs: ['${CLUSTER6}']
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  externalIPs: ['${EXT6}']
  ports:
  - { name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30091 }
  - { name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30091 }
status:
  loadBalancer:
    ingress: [{ ip: '${LB6}' }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web6-1, namespace: default, labels: { kubernetes.io/service-name: web6 } }
addressType: IPv6
ports: [{ name: dns, port: 5353, protocol: UDP }, { name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: ['${BACKENDS6[0]}'], nodeName: other-node }]
`;
const slice = (addrs: string[]) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: dns, port: 5353, protocol: UDP }, { name: http, port: 8080, protocol: TCP }]
endpoints: [${addrs.map((a) => `{ addresses: [${a}], nodeName: other-node }`).join(', ')}]
`;

const POD = `apiVersion: v1
kind: Namespace
metadata: { name: default }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: default, labels: { app: client } }
spec: { nodeName: engine-node, containers: [{ name: c, image: i }] }
status: { phase: Running, podIP: ${POD_IP}, podIPs: [{ ip: ${POD_IP} }, { ip: '${POD6}' }] }
`;
const NO_EGRESS = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: client-no-egress, namespace: default }
spec: { podSelector: { matchLabels: { app: client } }, policyTypes: [Egress] }
`;

const portOf = (a: ProbeAttempt): number => Number(a.peer!.slice(a.peer!.lastIndexOf(':') + 1));
/** The address the echo server saw: "[ip]:port" (IPv6) or "ip:port". */
const peerIp = (peer: string): string => (peer.startsWith('[') ? peer.slice(1, peer.indexOf(']')) : peer.slice(0, peer.lastIndexOf(':')));
const viaEngine6 = (a: ProbeAttempt): boolean =>
  a.ok && SNAT6.includes(peerIp(a.peer!)) && portOf(a) >= ENGINE_PORTS[0]! && portOf(a) <= ENGINE_PORTS[1]!;
const viaEngine = (a: ProbeAttempt): boolean =>
  a.ok && SNAT_IPS.includes(a.peer!.split(':')[0]!) && portOf(a) >= ENGINE_PORTS[0]! && portOf(a) <= ENGINE_PORTS[1]!;
const show = (as: ProbeAttempt[]) => as.map((a) => a.peer ?? a.error).join(' ');

function cli(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`bpfproxy ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

t.test(
  'LoadBalancer and external IPs from outside, the cluster IP from a pod, live endpoint changes: all through the engine',
  async (t) => {
    const tag = uniqueTag(4);
    const client = tmpNetns(t, 'bpxsc');
    const node = tmpNetns(t, 'bpxsn');
    const backend = tmpNetns(t, 'bpxsb');
    const backend2 = tmpNetns(t, 'bpxsd');
    const pod = tmpNetns(t, 'bpxsp');
    const pair = (a: string, an: string, aname: string, b: string, bn: string, bname: string) => {
      ip(undefined, 'link', 'add', `${a}${tag}`, 'type', 'veth', 'peer', 'name', `${b}${tag}`);
      ip(undefined, 'link', 'set', `${a}${tag}`, 'netns', an, 'name', aname);
      ip(undefined, 'link', 'set', `${b}${tag}`, 'netns', bn, 'name', bname);
    };
    pair('sc', client, 'c0', 'sn', node, 'n0');
    pair('sb', backend, 'b0', 'so', node, 'n1');
    pair('sd', backend2, 'b0', 'se', node, 'n2');
    pair('sp', pod, 'eth0', 'sq', node, 'cali1');
    ip(client, 'addr', 'add', '10.78.1.2/24', 'dev', 'c0');
    ip(client, 'link', 'set', 'c0', 'up');
    ip(client, 'route', 'add', 'default', 'via', NODE_IP);
    ip(node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'n0');
    ip(node, 'addr', 'add', `${SNAT_IPS[0]}/24`, 'dev', 'n1');
    ip(node, 'addr', 'add', `${SNAT_IPS[1]}/24`, 'dev', 'n2');
    ip(node, 'addr', 'add', '10.78.3.1/24', 'dev', 'cali1');
    for (const d of ['n0', 'n1', 'n2', 'cali1']) ip(node, 'link', 'set', d, 'up');
    sysctl(node, 'net.ipv4.ip_forward', '1');
    [backend, backend2].forEach((ns, i) => {
      ip(ns, 'addr', 'add', `${BACKENDS[i]}/24`, 'dev', 'b0');
      ip(ns, 'link', 'set', 'b0', 'up');
      ip(ns, 'route', 'add', 'default', 'via', SNAT_IPS[i]!);
    });
    ip(pod, 'addr', 'add', `${POD_IP}/24`, 'dev', 'eth0');
    ip(pod, 'link', 'set', 'eth0', 'up');
    ip(pod, 'route', 'add', 'default', 'via', '10.78.3.1');
    // IPv6 beside it (no DAD: the addresses are usable at once)
    const addr6 = (ns: string, a: string, dev: string) => ip(ns, 'addr', 'add', `${a}/64`, 'dev', dev, 'nodad');
    sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
    addr6(node, NODE6, 'n0');
    addr6(node, SNAT6[0]!, 'n1');
    addr6(node, SNAT6[1]!, 'n2');
    addr6(node, 'fd00:10:244:3::1', 'cali1');
    addr6(client, CLIENT6, 'c0');
    ip(client, '-6', 'route', 'add', 'default', 'via', NODE6);
    [backend, backend2].forEach((ns, i) => {
      addr6(ns, BACKENDS6[i]!, 'b0');
      ip(ns, '-6', 'route', 'add', 'default', 'via', SNAT6[i]!);
    });
    addr6(pod, POD6, 'eth0');
    ip(pod, '-6', 'route', 'add', 'default', 'via', 'fd00:10:244:3::1');
    startEcho(backend, 'backend');
    startEcho(backend2, 'backend2');
    // the echo server is dual-stack: startEcho() saw one listener; wait for both families
    for (const ns of [backend, backend2]) {
      const until = Date.now() + 10_000;
      const listening = (fam: '-4' | '-6') =>
        spawnSync('ip', ['netns', 'exec', ns, 'ss', fam, '-H', '-ltun', '( sport = :8080 or sport = :5353 )'], { encoding: 'utf8' })
          .stdout.trim()
          .split('\n')
          .filter(Boolean).length >= 2;
      while (!(listening('-4') && listening('-6')) && Date.now() < until) await sleep(50);
      t.ok(listening('-4') && listening('-6'), `echo server in ${ns}: TCP and UDP listeners on IPv4 and IPv6`);
    }

    const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-engine-svc-'));
    const state = mkdtempSync(join(tmpdir(), 'bpfproxy-engine-svc-state-'));
    t.teardown(() => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(state, { recursive: true, force: true });
    });
    writeFileSync(join(dir, 'web.yaml'), service);
    writeFileSync(join(dir, 'web-slice.yaml'), slice([BACKENDS[0]!]));
    writeFileSync(join(dir, 'pod.yaml'), POD);
    writeFileSync(join(dir, 'web6.yaml'), service6);
    const pinDir = tmpPinDir(t);
    const where = ['--pin-dir', pinDir, '--state-dir', state];
    const agent = await startAgentIn(t, node, [
      '--manifests',
      dir,
      '--node',
      'engine-node',
      ...where,
      '--data-ifaces',
      '^n[012]$',
      '--pod-ifaces',
      '^cali',
      '--dataplane',
      'afxdp',
      '--afxdp-ifaces',
      '^(n[012]|cali1)$',
      '--afxdp-batch',
      '64',
      '--map-size-conntrack',
      String(CT_ENTRIES),
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
      '--health-bind-address',
      '',
    ]);
    t.ok(
      agent.logs.some((l) => l.includes('AF_XDP engine serving') && l.includes('cali1')),
      'the engine serves on the data and the pod interface',
    );

    const stats = () => JSON.parse(cli(['engine', 'stats', '-o', 'json', ...where])) as EngineStatus;
    const node1 = (s: EngineStatus, n: string) => s.engine.nodes.find((x) => x.name === n)!.packets;
    // LB IP, external IP and NodePort (x2 protocols) and the cluster IP (x2), in both families
    const WANT = 16;
    const deadline = Date.now() + 15_000;
    while (stats().steering.frontends < WANT && Date.now() < deadline) await sleep(250);
    t.equal(stats().steering.frontends, WANT, 'every frontend is steered to the engine once the backend is resolved');

    for (const [what, addr] of [
      ['LoadBalancer IP', LB_IP],
      ['external IP', EXT_IP],
    ] as const) {
      const u = probe(client, 'udp', addr, 53, 5, 1000);
      t.ok(
        u.every((a) => viaEngine(a) && a.pod === 'backend'),
        `${what}, UDP: answered through the engine (${show(u)})`,
      );
      const c = probe(client, 'tcp', addr, 80, 3, 2000);
      t.ok(
        c.every((a) => viaEngine(a) && a.pod === 'backend'),
        `${what}, TCP: answered through the engine (${show(c)})`,
      );
    }

    // IPv6: the same through the engine's IPv6 nodes
    const lb6Before = node1(stats(), 'lb6');
    for (const [what, addr] of [
      ['IPv6 LoadBalancer IP', LB6],
      ['IPv6 external IP', EXT6],
    ] as const) {
      const u = probe(client, 'udp', addr, 53, 5, 1000);
      t.ok(
        u.every((a) => viaEngine6(a) && a.pod === 'backend'),
        `${what}, UDP: answered through the engine, SNAT to the node's IPv6 address (${show(u)})`,
      );
      const c = probe(client, 'tcp', addr, 80, 3, 2000);
      t.ok(
        c.every((a) => viaEngine6(a) && a.pod === 'backend'),
        `${what}, TCP: answered through the engine (${show(c)})`,
      );
    }
    const p6 = [...probe(pod, 'udp', CLUSTER6, 53, 5, 1000), ...probe(pod, 'tcp', CLUSTER6, 80, 3, 2000)];
    t.ok(
      p6.every((a) => a.ok && a.pod === 'backend' && peerIp(a.peer!) === POD6),
      `IPv6 cluster IP from the pod: answered, the pod's IPv6 address kept (${show(p6)})`,
    );
    t.ok(node1(stats(), 'lb6') - lb6Before >= 8 + 8, `the IPv6 flows were balanced by lb6 (${node1(stats(), 'lb6') - lb6Before})`);
    t.equal(stats().engine.reasons['no-neighbour'] ?? 0, 0, 'every IPv6 backend had its next hop (neighbour discovery)');

    const lbBefore = node1(stats(), 'lb');
    const pu = probe(pod, 'udp', CLUSTER_IP, 53, 5, 1000);
    const pc = probe(pod, 'tcp', CLUSTER_IP, 80, 3, 2000);
    t.ok(
      [...pu, ...pc].every((a) => a.ok && a.pod === 'backend' && a.peer!.startsWith(`${POD_IP}:`)),
      `cluster IP from the pod: answered, the pod's address kept (${show([...pu, ...pc])})`,
    );
    t.ok(node1(stats(), 'lb') - lbBefore >= 8, "the pod's new flows were balanced by the engine");

    // Live reconfiguration: the endpoints change while requests run.
    const sets = [[...BACKENDS], [BACKENDS[1]!], [BACKENDS[0]!], [...BACKENDS], [BACKENDS[1]!], [BACKENDS[0]!]];
    const gen0 = stats().engine.table!.generation;
    const during: ProbeAttempt[] = [];
    for (const [i, s] of sets.entries()) {
      writeFileSync(join(dir, 'web-slice.yaml'), slice(s));
      for (let k = 0; k < 4; k++) during.push(...probe(client, 'udp', LB_IP, 53, 5, 1000));
      const until = Date.now() + 5000;
      while (stats().engine.table!.generation < gen0 + i + 1 && Date.now() < until) await sleep(100);
    }
    const after = stats();
    t.ok(
      after.engine.table!.generation >= gen0 + sets.length,
      `${after.engine.table!.generation - gen0} tables swapped in while traffic ran`,
    );
    const lost = during
      .map((a, i) => (a.ok ? '' : `#${i} ${a.error}`))
      .filter(Boolean)
      .join(', ');
    t.equal(
      during.filter((a) => !a.ok).length,
      0,
      `all ${during.length} requests answered across the swaps${lost.length ? ` (lost: ${lost}; engine drops: ${JSON.stringify(after.engine.reasons)}, ports: ${JSON.stringify(after.ports.map((p) => p.stats))})` : ''}`,
    );
    t.same(new Set(during.filter((a) => a.ok).map((a) => a.pod)), new Set(['backend', 'backend2']), 'both backends served in turn');
    // backend2 is new with the first set: its requests go the BPF path until
    // the kernel has resolved its next hop (looked at again 50, 200 and 500 ms
    // later, then at each refresh). From then on every backend the sets name has a known next
    // hop, and each table brings its neighbour entries with it: the frontend
    // never leaves the engine (before that fix, 42-96 % went through the
    // engine, depending on when the runtime's refresh fell).
    const viaBpf = (from: number) =>
      during
        .map((a, i) => (i < from || viaEngine(a) ? '' : `#${i} ${a.peer ?? a.error}`))
        .filter(Boolean)
        .join(', ');
    t.equal(
      viaBpf(20),
      '',
      `after the first set, every request went through the engine (${during.filter(viaEngine).length} of ${during.length}; BPF path: ${viaBpf(0)})`,
    );
    t.equal(after.engine.reasons['no-neighbour'] ?? 0, 0, 'no packet met a backend without a next hop');

    // NetworkPolicy: the pod may not send anywhere; the engine denies what the BPF path would.
    const isolated = async (n: number) => {
      const until = Date.now() + 10_000;
      while ((stats().engine.policy?.isolated ?? -1) !== n && Date.now() < until) await sleep(100);
      return stats().engine.policy?.isolated;
    };
    t.equal(await isolated(0), 0, 'the engine holds the policy state, nobody isolated');
    writeFileSync(join(dir, 'no-egress.yaml'), NO_EGRESS);
    t.equal(await isolated(1), 1, "the engine took the policy that isolates the pod's egress");
    const deniedBefore = stats().engine.reasons['policy-denied'] ?? 0;
    const pd = probe(pod, 'udp', CLUSTER_IP, 53, 3, 1000);
    t.ok(
      pd.every((a) => !a.ok),
      `egress-isolated pod: no request answered (${show(pd)})`,
    );
    const denied = (stats().engine.reasons['policy-denied'] ?? 0) - deniedBefore;
    t.ok(denied >= 3, `the engine's policy node denied them (${denied} counted under policy-denied)`);
    const pd6 = probe(pod, 'udp', CLUSTER6, 53, 3, 1000);
    t.ok(
      pd6.every((a) => !a.ok),
      `egress-isolated pod, IPv6: no request answered (${show(pd6)})`,
    );
    t.ok(
      (stats().engine.reasons['policy-denied'] ?? 0) - deniedBefore >= denied + 3,
      'denied by policy6 (its IPv6 address is the isolated endpoint too)',
    );
    t.ok(
      probe(client, 'udp', LB_IP, 53, 3, 1000).every((a) => a.ok),
      'the client (nobody isolated on its way) is still served',
    );
    t.match(
      cli(['engine', 'stats', ...where]),
      /network policy: generation \d+ \(the BPF path's\), 1 isolated endpoint/,
      'engine stats show it',
    );
    rmSync(join(dir, 'no-egress.yaml'));
    t.equal(await isolated(0), 0, 'policy removed');
    const pa = probe(pod, 'udp', CLUSTER_IP, 53, 3, 1000);
    t.ok(
      pa.every((a) => a.ok),
      `the pod is served again (${show(pa)})`,
    );

    // bpfproxy status: the engine's memory, sized from configuration
    const st = JSON.parse(cli(['status', '-o', 'json', ...where])) as { engine: { running: boolean; memory: EngineStatus['memory'] } };
    t.equal(st.engine.running, true, 'status sees the engine');
    const m = st.engine.memory;
    t.equal(m.umemBytes, m.workers * m.framesPerWorker * m.frameBytes, 'UMEM = workers × frames × frame size');
    t.equal(m.workers, 1, 'one worker (one queue)');
    t.equal(m.sessionEntries, CT_ENTRIES, 'session table sized from the conntrack size');
    t.ok(m.sessionsBytes >= CT_ENTRIES * 64, `session table ${m.sessionsBytes} bytes`);
    t.ok(m.tableBytes > 0, `table ${m.tableBytes} bytes`);
    t.ok(m.sessions6Bytes >= 4096 * 2 * 128, `IPv6 session table ${m.sessions6Bytes} bytes`);
    t.equal(m.totalBytes, m.umemBytes + m.sessionsBytes + m.sessions6Bytes + m.tableBytes, 'total adds up');
    const human = cli(['status', ...where]);
    t.match(
      human,
      /AF_XDP engine\n {2}memory [\d.]+ MiB: UMEM [\d.]+ MiB \(1 worker\(s\) × 4096 frames × 2 KiB\), sessions/,
      'human output',
    );
    agent.child.kill('SIGTERM');
    await agent.exited;
  },
);
