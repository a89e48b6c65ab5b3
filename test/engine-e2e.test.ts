/**
 * The AF_XDP engine end to end, in three namespaces this test creates:
 *
 *   client 10.77.1.2 --veth-- n0 10.77.1.1 [node: agent] n1 10.77.2.1 --veth-- 10.77.2.2 backend
 *
 * The agent runs in the node namespace with --dataplane afxdp on n0 and n1
 * (native XDP on veth, AF_XDP in copy mode) and serves a NodePort whose
 * endpoint is the backend namespace ("another node"). Requests from the
 * client are answered by the backend through the engine (its SNAT ports,
 * 15000-19999, tell it from the BPF path's 20000-29999); `bpfproxy engine
 * stats|trace` show them; the backend's ICMP port unreachable for a UDP
 * port with no listener reaches the client through the engine's icmp-error
 * node; then the agent is killed (SIGKILL) in the middle
 * of a TCP stream: the stream goes on through the kernel path (the engine
 * mirrored its flows into the BPF conntrack), new requests are served by the
 * BPF path, and no XDP program is left on the interfaces.
 * Every traffic loop is bounded in count and time.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probe, startEcho, startStream, type ProbeAttempt } from '../lab/lab.js';
import { ip, sysctl, uniqueTag } from '../testkit/netns.js';
import type { EngineStatus } from '../src/dataplane/afxdp/runtime.js';
import type { EngineTraceRecord } from '../src/native/index.js';
import { CLI, startAgentIn } from './helpers/agent-proc.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { sleep } from './helpers/wait.js';

const NODE_IP = '10.77.1.1';
const SNAT_IP = '10.77.2.1';
const BACKEND = '10.77.2.2';
const ENGINE_PORTS = [15000, 19999];
const BPF_PORTS = [20000, 29999];

const MANIFEST = `apiVersion: v1
kind: Service
metadata: { name: echo, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.77
  ports:
  - { name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30080 }
  - { name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080 }
  - { name: closed, port: 54, protocol: UDP, targetPort: 5999, nodePort: 30082 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: echo-1, namespace: default, labels: { kubernetes.io/service-name: echo } }
addressType: IPv4
ports: [{ name: dns, port: 5353, protocol: UDP }, { name: http, port: 8080, protocol: TCP }, { name: closed, port: 5999, protocol: UDP }]
endpoints: [{ addresses: [${BACKEND}], nodeName: other-node }]
`;

const portOf = (a: ProbeAttempt): number => Number(a.peer!.split(':')[1]);
const within = (p: number, [lo, hi]: number[]) => p >= lo! && p <= hi!;

function cli(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`bpfproxy ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

const xdpOn = (ns: string, dev: string): boolean =>
  !!(JSON.parse(ip(ns, '-j', '-d', 'link', 'show', dev)) as Array<{ xdp?: unknown }>)[0]!.xdp;

t.test('UDP and TCP to a NodePort through the AF_XDP engine; the kernel path takes over when it dies', async (t) => {
  const tag = uniqueTag(4);
  const client = tmpNetns(t, 'bpxec');
  const node = tmpNetns(t, 'bpxen');
  const backend = tmpNetns(t, 'bpxeb');
  ip(undefined, 'link', 'add', `ec${tag}`, 'type', 'veth', 'peer', 'name', `en${tag}`);
  ip(undefined, 'link', 'set', `ec${tag}`, 'netns', client, 'name', 'c0');
  ip(undefined, 'link', 'set', `en${tag}`, 'netns', node, 'name', 'n0');
  ip(undefined, 'link', 'add', `eb${tag}`, 'type', 'veth', 'peer', 'name', `eo${tag}`);
  ip(undefined, 'link', 'set', `eo${tag}`, 'netns', node, 'name', 'n1');
  ip(undefined, 'link', 'set', `eb${tag}`, 'netns', backend, 'name', 'b0');
  ip(client, 'addr', 'add', '10.77.1.2/24', 'dev', 'c0');
  ip(client, 'link', 'set', 'c0', 'up');
  ip(client, 'route', 'add', 'default', 'via', NODE_IP);
  ip(node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'n0');
  ip(node, 'addr', 'add', `${SNAT_IP}/24`, 'dev', 'n1');
  ip(node, 'link', 'set', 'n0', 'up');
  ip(node, 'link', 'set', 'n1', 'up');
  sysctl(node, 'net.ipv4.ip_forward', '1');
  ip(backend, 'addr', 'add', `${BACKEND}/24`, 'dev', 'b0');
  ip(backend, 'link', 'set', 'b0', 'up');
  ip(backend, 'route', 'add', 'default', 'via', SNAT_IP);
  startEcho(backend, 'backend');

  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-engine-e2e-'));
  const state = mkdtempSync(join(tmpdir(), 'bpfproxy-engine-state-'));
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'echo.yaml'), MANIFEST);
  const pinDir = tmpPinDir(t);
  const where = ['--pin-dir', pinDir, '--state-dir', state];
  const agent = await startAgentIn(t, node, [
    '--manifests',
    dir,
    '--node',
    'engine-node',
    ...where,
    '--data-ifaces',
    '^n[01]$',
    '--dataplane',
    'afxdp',
    '--afxdp-ifaces',
    '^n[01]$',
    '--afxdp-batch',
    '64',
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
  ]);
  const serving = agent.logs.find((l) => l.includes('AF_XDP engine serving'));
  t.ok(serving, 'the engine started beside the BPF path');
  t.match(serving, /n0 \(native XDP, 1 queue, copy mode\)/, 'native XDP on the veth, AF_XDP in copy mode');
  t.ok(xdpOn(node, 'n0') && xdpOn(node, 'n1'), 'XDP on both engine interfaces');

  // The backend's next hop is resolved (the engine asks the kernel: NTF_USE)
  // within a second or two of start; only then does the engine take the
  // NodePort (until then the BPF path serves it).
  const stats = () => JSON.parse(cli(['engine', 'stats', '-o', 'json', ...where])) as EngineStatus;
  const deadline = Date.now() + 15_000;
  while (stats().steering.frontends < 3 && Date.now() < deadline) await sleep(250);
  t.equal(stats().steering.frontends, 3, 'the NodePorts (UDP and TCP) are steered to the engine once their backend is resolved');
  const udp = probe(client, 'udp', NODE_IP, 30080, 10, 1000);
  t.ok(
    udp.every((a) => a.ok && a.pod === 'backend'),
    `10 UDP requests answered by the backend: ${JSON.stringify(udp.map((a) => a.error ?? a.pod))}`,
  );
  t.ok(
    udp.every((a) => a.ok && a.peer!.startsWith(`${SNAT_IP}:`) && within(portOf(a), ENGINE_PORTS)),
    `the backend saw the node's address with the engine's SNAT ports (${udp.map((a) => a.peer).join(' ')})`,
  );
  const tcp = probe(client, 'tcp', NODE_IP, 30080, 5, 2000);
  t.ok(
    tcp.every((a) => a.ok && a.pod === 'backend' && within(portOf(a), ENGINE_PORTS)),
    `5 TCP connections through the engine (${tcp.map((a) => a.peer ?? a.error).join(' ')})`,
  );

  // nothing listens on the backend's port 5999: its port unreachable comes
  // back to the node's SNAT address; the XDP program steers it to the engine
  // (it quotes an engine flow), which translates it for the client
  const closed = probe(client, 'udp', NODE_IP, 30082, 3, 1000);
  t.ok(
    closed.every((a) => a.error === 'ECONNREFUSED'),
    `the backend's ICMP port unreachable reached the client, translated (${closed.map((a) => a.error ?? a.pod).join(' ')})`,
  );

  const st = stats();
  const node1 = (n: string) => st.engine.nodes.find((x) => x.name === n)!;
  t.ok(node1('icmp-error').packets >= 3, `the ICMP errors went through the engine's icmp-error node (${node1('icmp-error').packets})`);
  t.ok(st.running, 'bpfproxy engine stats reaches the agent');
  t.ok(node1('output').packets >= 2 * (10 + 5), `requests and replies went out of the engine (${node1('output').packets} packets)`);
  t.ok(node1('lb').packets >= 15, 'every new flow was balanced by the engine');
  t.ok(st.engine.conntrack.exported >= 2 * 15, `flows mirrored into the BPF conntrack (${st.engine.conntrack.exported} entries)`);
  t.equal(st.engine.reasons['tx-full'], 0, 'no TX ring overflow');
  const human = cli(['engine', 'stats', ...where]);
  t.match(human, /NODE\s+CALLS\s+VECTORS\s+PACKETS\s+PACKETS\/VECTOR\s+NS\/PACKET/, 'the human table has VPP-like columns');

  // trace: the next 4 packets while requests run
  const traced = new Promise<EngineTraceRecord[]>((resolve, reject) => {
    const c = spawn(process.execPath, [CLI, 'engine', 'trace', '4', '--wait', '8s', '-o', 'json', ...where], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const kill = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.on('close', (code) => {
      clearTimeout(kill);
      if (code === 0) resolve(JSON.parse(out) as EngineTraceRecord[]);
      else reject(new Error(`exit ${code}: ${err}`));
    });
  });
  // keep sending until the trace has its packets (it arms itself after it
  // connects, later on a loaded machine): bounded in count and time
  let settled = false;
  void traced.finally(() => (settled = true)).catch(() => undefined);
  for (let i = 0; i < 20 && !settled; i++) {
    await sleep(500);
    probe(client, 'udp', NODE_IP, 30080, 1, 1000);
  }
  const recs = await traced.catch((e: Error) => {
    t.fail(`engine trace: ${e.message}`);
    return [];
  });
  t.ok(
    recs.some((r) => r.path.join(' ') === 'input ip4-parse session lb nat l2-rewrite output'),
    `a request traced through lb (${recs.map((r) => r.path.join('>')).join(' | ')})`,
  );
  t.ok(
    recs.some((r) => r.path.join(' ') === 'input ip4-parse session nat l2-rewrite output' && r.session === 'reply'),
    'a reply traced through its session',
  );

  // Kill the agent in the middle of a TCP stream.
  const stream = startStream(client, NODE_IP, 30080, 4000, { interval: 50, chunk: 2048 });
  await sleep(1500);
  agent.child.kill('SIGKILL');
  await agent.exited;
  t.notOk(xdpOn(node, 'n0') || xdpOn(node, 'n1'), 'the XDP links went with the process: no XDP left on the interfaces');
  const outcome = await stream;
  t.ok(
    outcome.ok && outcome.received === outcome.sent,
    `the TCP stream opened through the engine finished on the kernel path (${JSON.stringify(outcome)})`,
  );
  const after = probe(client, 'udp', NODE_IP, 30080, 5, 1000);
  t.ok(
    after.every((a) => a.ok && a.pod === 'backend' && within(portOf(a), BPF_PORTS)),
    `new requests are served by the BPF path (SNAT ports ${after.map((a) => a.peer ?? a.error).join(' ')})`,
  );
});
