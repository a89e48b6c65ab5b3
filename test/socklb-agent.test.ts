/**
 * The agent with --socket-lb: it attaches the socket hooks to the cgroup
 * --cgroup-root names (one this test creates under /sys/fs/cgroup/unified,
 * never the machine's root cgroup), a client in that cgroup reaches a
 * ClusterIP from the node's namespace (host network), `status` shows the
 * hooks and their counters, a restart adopts them, `cleanup` removes them.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import { startEcho } from '../lab/lab.js';
import { REPO, tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';

const NODE_IP = '192.0.2.11';
const A = '10.244.1.2';
const VIP = '10.96.0.10';
const CLIENT = join(REPO, 'test', 'fixtures', 'sock-client.py');

const manifest = `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: shop }
    spec: { clusterIP: ${VIP}, ports: [{ name: http, port: 80 }], selector: { a: b } }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports: [{ name: http, port: 8080 }]
    endpoints: [{ addresses: [${A}], nodeName: n1 }]
`;

interface Status {
  socketLb: { hooks: Array<{ hook: string; cgroupId: string; linkId: number }>; counters: Record<string, string> };
}

t.test('agent --socket-lb all --cgroup-root: attach, serve, status, adopt, cleanup', async (t) => {
  const node = tmpNetns(t, 'bpxs');
  sysctl(node, 'net.ipv4.ip_forward', '1');
  ip(node, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
  const pod = tmpNetns(t, 'bpxs');
  ip(pod, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'calia', 'netns', node);
  ip(pod, 'addr', 'add', `${A}/32`, 'dev', 'eth0');
  ip(pod, 'link', 'set', 'eth0', 'up');
  ip(pod, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(pod, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', 'calia', 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', 'calia')) as Array<{ address: string }>)[0]!.address;
  ip(pod, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  ip(node, 'route', 'add', `${A}/32`, 'dev', 'calia', 'scope', 'link', 'src', NODE_IP);
  startEcho(pod, 'a');

  const cg = join('/sys/fs/cgroup/unified', `bpxt-sock-${uniqueTag()}`);
  mkdirSync(cg);
  t.teardown(async () => {
    for (let i = 0; i < 50 && existsSync(cg); i++) {
      for (const p of readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          // gone
        }
      }
      try {
        rmdirSync(cg);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });

  const manifests = tmpDir(t, 'bpfproxy-socklb-');
  writeFileSync(join(manifests, 'web.yaml'), manifest);
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = tmpPinDir(t);
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
    '--state-dir',
    state,
    '--pin-dir',
    pinDir,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--health-bind-address',
    '',
    '--socket-lb',
    'all',
    '--cgroup-root',
    cg,
  ];
  const status = (): Status => {
    const r = cliIn(node, ['status', '--pin-dir', pinDir, '-o', 'json']);
    t.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };
  const connect = () => {
    const r = spawnSync(
      'sh',
      ['-c', `echo $$ > ${cg}/cgroup.procs && exec nsenter --net=${nsPath(node)} python3 "$@"`, 'sh', CLIENT, 'tcp', VIP, '80', '2'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    return JSON.parse(r.stdout) as Array<{ peer?: string; reply?: { pod: string }; errno?: number }>;
  };

  const agent = await startAgentIn(t, node, args);
  let s = status();
  t.equal(s.socketLb.hooks.length, 8, 'status: eight socket hooks pinned');
  const ids = s.socketLb.hooks.map((h) => h.linkId);
  const r = connect();
  t.ok(
    r.every((x) => x.reply?.pod === 'a' && x.peer === `${VIP}:80`),
    `a host-network client in the cgroup reaches the ClusterIP (${JSON.stringify(r)})`,
  );
  s = status();
  t.ok(Number(s.socketLb.counters.connect) >= 2, `status counts the translations (${s.socketLb.counters.connect})`);

  agent.child.kill('SIGTERM');
  await agent.exited;
  const again = await startAgentIn(t, node, args);
  t.same(
    status().socketLb.hooks.map((h) => h.linkId),
    ids,
    'a restarted agent adopts the pinned links (same link ids)',
  );
  t.ok(
    connect().every((x) => x.reply?.pod === 'a'),
    'and serves',
  );
  again.child.kill('SIGTERM');
  await again.exited;

  const c = cliIn(node, ['cleanup', '--pin-dir', pinDir, '--state-dir', state]);
  t.equal(c.status, 0, c.stderr);
  t.match(c.stdout + c.stderr, /socket load-balancing hooks/, 'cleanup says it detached the socket hooks');
  const left = spawnSync('bpftool', ['-j', 'cgroup', 'show', cg], { encoding: 'utf8' }).stdout.trim();
  t.same(left ? (JSON.parse(left) as unknown[]) : [], [], 'nothing attached to the cgroup any more');
});
