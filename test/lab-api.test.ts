/**
 * The pieces of the lab's control plane: the websocket framing exec uses,
 * which DaemonSet Pods the lab places and how it runs them, what exec
 * agrees to run, and the front door (root only on 127.0.0.1, the token
 * elsewhere, exec over websockets, everything else to the API server).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { PassThrough } from 'node:stream';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { FakeApiServer } from '../testkit/fake-apiserver.js';
import { execArgv } from '../lab/exec.js';
import { loopbackPeerUid, startFront } from '../lab/front.js';
import { bpfproxyArgs, runnerFor, schedules } from '../lab/kubelet.js';
import { labDown, labSpec } from '../lab/lab.js';
import { DEFAULT_STATE_DIR, statePaths } from '../src/agent/lock.js';
import { acceptKey, frame, WsConnection } from '../lab/websocket.js';
import { tmpNetns } from './helpers/env.js';

/** A masked client frame. */
function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = Buffer.from([1, 2, 3, 4]);
  const head = payload.length < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]) : Buffer.alloc(0);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]!));
  return Buffer.concat([head, mask, body]);
}

t.test('websocket: the handshake key, frames, reassembly, ping, close', async (t) => {
  t.equal(acceptKey('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', "RFC 6455's example");
  t.same([...frame(2, Buffer.from('hi'))], [0x82, 2, 0x68, 0x69]);
  t.same([...frame(2, Buffer.alloc(300)).subarray(0, 4)], [0x82, 126, 1, 44], '16-bit length');
  t.same([...frame(2, Buffer.alloc(70000)).subarray(0, 10)], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70], '64-bit length');

  const sock = new PassThrough();
  const written: Buffer[] = [];
  const wire = { write: (d: Buffer) => written.push(d), end: (d?: Buffer) => d && written.push(d) };
  const duplex = Object.assign(sock, { write: wire.write, end: wire.end }) as unknown as PassThrough;
  const ws = new WsConnection(duplex);
  const got: string[] = [];
  ws.onMessage((m) => got.push(m.toString()));
  let closed = false;
  ws.onClose(() => (closed = true));
  const whole = Buffer.concat([clientFrame(2, Buffer.from('\x00ab'), false), clientFrame(0, Buffer.from('cd'))]);
  sock.emit('data', whole.subarray(0, 5));
  sock.emit('data', whole.subarray(5));
  t.same(got, ['\x00abcd'], 'a fragmented message, split across reads, arrives whole');
  sock.emit('data', clientFrame(9, Buffer.from('p')));
  t.same([...written.at(-1)!], [0x8a, 1, 0x70], 'ping answered with pong');
  ws.send(Buffer.from([1, 0x41]));
  t.same([...written.at(-1)!], [0x82, 2, 1, 0x41]);
  sock.emit('data', clientFrame(8, Buffer.from([3, 0xe8])));
  t.ok(closed && ws.isClosed, 'a close frame closes');
  t.same([...written.at(-1)!].slice(0, 2), [0x88, 2], 'and is answered');

  const bad = new WsConnection(Object.assign(new PassThrough(), { write: () => true, end: () => undefined }));
  const unmasked = Buffer.from([0x82, 1, 0x41]);
  (bad as unknown as { feed: (d: Buffer) => void }).feed(unmasked);
  t.ok(bad.isClosed, 'an unmasked client frame closes the connection');
});

t.test('the lab kubelet: images it runs, placement by nodeSelector, bpfproxy args per node', async (t) => {
  t.equal(runnerFor('registry.k8s.io/kube-proxy:v1.32.0'), 'kube-proxy');
  t.equal(runnerFor('myregistry.azurecr.io/team/bpfproxy:0.1.0'), 'bpfproxy');
  t.equal(runnerFor('bpfproxy@sha256:abc'), 'bpfproxy');
  t.equal(runnerFor('nginx:1.27'), undefined);
  const ds = (nodeSelector?: Record<string, string>) => ({ spec: { template: { spec: { ...(nodeSelector ? { nodeSelector } : {}) } } } });
  const node = { metadata: { labels: { 'kubernetes.io/os': 'linux', 'kubernetes.io/hostname': 'node1' } } };
  t.ok(schedules(ds(), node), 'no selector: every node');
  t.ok(schedules(ds({ 'kubernetes.io/os': 'linux' }), node));
  t.notOk(schedules(ds({ 'kubernetes.io/os': 'linux', 'non-calico': 'true' }), node), "README's patch: no node has non-calico=true");

  const n1 = labSpec('bpxu').nodes[0]!;
  t.same(
    bpfproxyArgs(['agent', '--node=node1', '--pin-dir=/sys/fs/bpf/bpfproxy', '--state-dir=/run/bpfproxy'], n1, '/k'),
    ['agent', '--node=node1', '--state-dir=/run/bpfproxy', '--pin-dir', n1.pinDir, '--kubeconfig', '/k'],
    "the DaemonSet's args, with the lab node's pin dir and the lab's kubeconfig",
  );
  t.same(bpfproxyArgs(['services', '--pin-dir', '/x', '-o', 'json'], n1, undefined), ['services', '-o', 'json', '--pin-dir', n1.pinDir]);
  t.same(bpfproxyArgs(['--help'], n1, undefined), ['--help']);
});

t.test('exec runs only bpfproxy, in bpfproxy Pods', async (t) => {
  const node = labSpec('bpxu').nodes[1]!;
  const argv = execArgv({ node, runner: 'bpfproxy', container: 'agent' }, ['bpfproxy', 'status']);
  t.ok(Array.isArray(argv) && argv.at(-1) === node.pinDir && argv.includes('status'), 'bpfproxy status with the node pin dir');
  t.match(execArgv({ node, runner: 'bpfproxy', container: 'agent' }, ['sh', '-c', 'id']), /only "bpfproxy \.\.\."/);
  t.match(execArgv({ node, runner: 'kube-proxy', container: 'kube-proxy' }, ['bpfproxy', 'status']), /only in bpfproxy Pods/);
});

t.test('the front door: root on 127.0.0.1, the token on the lab LAN, exec over websockets', async (t) => {
  const api = new FakeApiServer();
  const ns = tmpNetns(t);
  const front = await startFront({
    api: api.handler('127.0.0.1'),
    token: 'sekret',
    apiNs: ns,
    apiPort: 6443,
    exec: (_req, socket) => socket.end('HTTP/1.1 418 exec reached\r\n\r\n'),
  });
  t.teardown(async () => {
    await front.close();
    await api.close();
  });
  const r = await fetch(`${front.hostUrl}/api/v1/namespaces`);
  t.equal(r.status, 200, 'root, no token: served');
  t.match(
    ((await r.json()) as { items: Array<{ metadata: { name: string } }> }).items.map((i) => i.metadata.name),
    ['default'],
  );

  const asNobody = (headers: Record<string, string>) =>
    new Promise<string>((resolve) => {
      const c = spawn(
        process.execPath,
        [
          '-e',
          `fetch(${JSON.stringify(`${front.hostUrl}/api/v1/nodes`)}, { headers: ${JSON.stringify(headers)} }).then((r) => console.log(r.status))`,
        ],
        { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', () => resolve(out.trim()));
    });
  t.equal(await asNobody({}), '401', 'another user, no token: refused');
  t.equal(await asNobody({ Authorization: 'Bearer sekret' }), '200', "another user with the lab's token: served");

  const port = Number(new URL(front.hostUrl).port);
  const peer = await new Promise<number | undefined>((resolve) => {
    const s = createConnection(port, '127.0.0.1', () => {
      resolve(loopbackPeerUid(port, s.localPort!));
      s.destroy();
    });
  });
  t.equal(peer, 0, 'the peer uid of our own connection is root');

  const upgrade = (path: string, proto = 'websocket') =>
    new Promise<string>((resolve) => {
      const s = createConnection(port, '127.0.0.1', () =>
        s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ${proto}\r\nSec-WebSocket-Key: a\r\n\r\n`),
      );
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('close', () => resolve(out));
    });
  t.match(await upgrade('/api/v1/namespaces/kube-system/pods/p/exec?command=bpfproxy'), /418 exec reached/, 'exec upgrades go to exec');
  t.match(
    await upgrade('/api/v1/namespaces/kube-system/pods/p/exec?command=bpfproxy', 'SPDY/3.1'),
    /400 Bad Request[\s\S]*only exec, over websockets/,
  );
  t.match(await upgrade('/api/v1/namespaces/kube-system/pods/p/attach'), /400 Bad Request/, 'attach is not served');
});

t.test('labDown removes the state files its agents leave beside the pins (qdisc ledger, topology display file)', async (t) => {
  const prefix = `bpxld${process.pid % 10000}`;
  const files = labSpec(prefix).nodes.flatMap((n) => [
    statePaths(DEFAULT_STATE_DIR, n.pinDir).qdiscs,
    statePaths(DEFAULT_STATE_DIR, n.pinDir).topology,
  ]);
  t.teardown(() => labDown(prefix));
  for (const f of files) {
    mkdirSync(dirname(f), { recursive: true });
    writeFileSync(f, '{}\n');
  }
  t.same(labDown(prefix), [], 'no namespaces of this prefix existed');
  t.same(
    files.filter((f) => existsSync(f)),
    [],
    "every node's files are gone",
  );
});
