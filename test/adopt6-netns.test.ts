/**
 * Taking over IPv6 service flows from kube-proxy with live connections, in
 * namespaces this test creates: a node with a client pod (a) and two
 * backend pods (b, c) behind veths. kube-proxy's part is played by
 * ip6tables DNAT rules in the node (the service's cluster IP to c), and a
 * real TCP connection and a connected UDP socket from a go through the
 * kernel's NAT to c. Then the takeover runs as the agent runs it
 * (Handover.takeOver: programs attached on standby, the kernel's conntrack
 * adopted, serving); the DNAT rules are removed and the kernel's conntrack
 * entries for the cluster IP deleted, so from there on only bpfproxy can
 * carry the flows. Both keep going, to c, answers from the cluster IP, and
 * their entries in bpfproxy_ct6 are the adopted ones. Without IPv6
 * adoption the TCP connection's next segment meets neither our conntrack
 * nor the kernel's NAT and is lost; the UDP flow would be a new flow, to b
 * or c. Every exchange has a timeout; namespaces and processes go with the
 * test.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { Handover } from '../src/dataplane/bpf/handover.js';
import type { ConntrackGc } from '../src/dataplane/bpf/conntrack-gc.js';
import { CtDir, CtFlags, IPPROTO_TCP, IPPROTO_UDP } from '../src/dataplane/bpf/codecs.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { realClock } from '../src/clock.js';
import { ip, nsPath, sh, sysctl } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';
import { probe6, startEcho6 } from './helpers/echo6.js';

const A = 'fd00:10:244:1::2';
const B = 'fd00:10:244:1::3';
const C = 'fd00:10:244:1::4';
const VIP = 'fd00:10:96::10';
const GW = 'fe80::1';

/** TCP [::]:8081: every line gets back one JSON line naming the server and the peer it sees. */
const LINE_SERVER = `
const net = require('node:net');
const [name, life] = process.argv.slice(1);
net.createServer((s) => {
  s.on('error', () => {});
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) s.write(JSON.stringify({ pod: name, peer: s.remoteAddress }) + '\\n');
  });
}).listen(8081, '::');
setTimeout(() => process.exit(0), Number(life));
`;

/**
 * One TCP connection to [host]:80 and one connected UDP socket to [host]:53,
 * kept open: a line "tcp" or "udp" on stdin sends one request on it; each
 * answer (or error) is one JSON line on stdout, with the proto.
 */
const LONG_CLIENT = `
const net = require('node:net'), dgram = require('node:dgram'), rl = require('node:readline');
const [host, life] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const s = net.connect({ host, port: 80 });
let buf = '';
s.on('data', (d) => { buf += d; for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) out({ proto: 'tcp', ...JSON.parse(buf.slice(0, i)) }); });
s.on('error', (e) => out({ proto: 'tcp', error: e.code }));
const u = dgram.createSocket({ type: 'udp6' });
u.on('message', (m) => out({ proto: 'udp', ...JSON.parse(String(m)) }));
u.on('error', (e) => out({ proto: 'udp', error: e.code }));
u.connect(53, host);
rl.createInterface({ input: process.stdin }).on('line', (l) => (l === 'tcp' ? s.write('x\\n') : u.send('ping')));
setTimeout(() => process.exit(0), Number(life));
`;

interface Answer {
  proto: string;
  pod?: string;
  peer?: string;
  error?: string;
}

const noDad = (ns: string) => {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
};

function podNs(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpa6');
  noDad(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/128`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(node, 'addr', 'add', `${GW}/64`, 'dev', hostIf, 'nodad');
  ip(node, 'link', 'set', hostIf, 'up');
  ip(ns, '-6', 'route', 'add', 'default', 'via', GW, 'dev', 'eth0');
  ip(node, '-6', 'route', 'add', `${addr}/128`, 'dev', hostIf);
  return ns;
}

function spawnIn(t: Test, ns: string, script: string, args: string[]): ChildProcess {
  const c = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, '-e', script, ...args], { stdio: ['pipe', 'pipe', 'ignore'] });
  t.teardown(() => void c.kill('SIGKILL'));
  return c;
}

/** The long client: ask(proto) sends one request and resolves with its answer (or a timeout). */
function longClient(t: Test, ns: string) {
  const c = spawnIn(t, ns, LONG_CLIENT, [VIP, '60000']);
  const waiting: Array<(a: Answer) => void> = [];
  createInterface({ input: c.stdout! }).on('line', (l) => waiting.shift()?.(JSON.parse(l) as Answer));
  return {
    ask(proto: 'tcp' | 'udp'): Promise<Answer> {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(done), 1);
          resolve({ proto, error: 'timeout' });
        }, 2000);
        const done = (a: Answer) => {
          clearTimeout(timer);
          resolve(a);
        };
        waiting.push(done);
        c.stdin!.write(`${proto}\n`);
      });
    },
  };
}

t.test('IPv6 flows NATed by kube-proxy survive the takeover, carried by bpfproxy_ct6', async (t) => {
  const node = tmpNetns(t, 'bpa6');
  noDad(node);
  sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
  const a = podNs(t, node, 'calia', A);
  const b = podNs(t, node, 'calib', B);
  const c = podNs(t, node, 'calic', C);
  for (const [ns, name] of [
    [b, 'b'],
    [c, 'c'],
  ] as const) {
    await startEcho6(ns, name, 60_000);
    spawnIn(t, ns, LINE_SERVER, [name, '60000']);
  }
  for (const ns of [b, c]) {
    for (let i = 0; i < 100 && !sh('ss', ['-H', '-ltn', 'sport = :8081'], { ns, allowFail: true }).trim(); i++)
      await new Promise((r) => setTimeout(r, 50));
  }

  // kube-proxy's part: the cluster IP NATed to c by the kernel.
  const ipt = (...args: string[]) => sh('ip6tables', ['-t', 'nat', ...args], { ns: node });
  ipt('-A', 'PREROUTING', '-d', VIP, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `[${C}]:8081`);
  ipt('-A', 'PREROUTING', '-d', VIP, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `[${C}]:5353`);
  const client = longClient(t, a);
  for (const proto of ['tcp', 'udp'] as const) {
    const r = await client.ask(proto);
    t.same([r.pod, r.peer], ['c', A], `before: ${proto} through the kernel's NAT reaches c`);
  }
  const kernel = inNetns(node, () => native().kernelConntrack({ translatedOnly: true, family: 6 }));
  t.same(
    kernel.map((e) => `${e.proto} [${e.src}] -> [${e.dst}]:${e.dport} = [${e.rsrc}]:${e.rsport}`).sort(),
    [`${IPPROTO_TCP} [${A}] -> [${VIP}]:80 = [${C}]:8081`, `${IPPROTO_UDP} [${A}] -> [${VIP}]:53 = [${C}]:5353`].sort(),
    "the kernel's IPv6 conntrack holds both flows, NATed to c (kernelConntrack family 6)",
  );

  // The takeover, as the agent runs it.
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  t.same(
    rec.syncService('test/web', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(B, 8081), be(C, 8081)], { servicePort: 'test/web:http/TCP' }),
      fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353), be(C, 5353)], { servicePort: 'test/web:dns/UDP' }),
    ]).problems,
    [],
  );
  const { log, lines } = captureLogger();
  const handover = new Handover({
    maps: dp.maps,
    gc: {} as ConntrackGc, // a takeover runs no GC pass
    log,
    clock: realClock,
    disable: () => undefined,
  });
  inNetns(node, () =>
    handover.takeOver({ ctTimeouts: DEFAULT_CONFIG.conntrack, cleanupKubeProxy: false }, true, () => {
      for (const dev of ['calia', 'calib', 'calic']) {
        const idx = native()
          .interfaces()
          .find((i) => i.name === dev)!.index;
        native().tcHookCreate(idx);
        native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
        native().tcAttach(idx, 'egress', dp.programs.toPod.fd, TC_HANDLE, TC_PRIORITY);
        dp.maps.podIfs.set({ ifindex: idx }, { v: 1 });
      }
    }),
  );
  const adoptedLog = lines.find((l) => /adopted \d+ flow/.test(String(l.msg)));
  t.match(String(adoptedLog?.msg), /adopted 2 flow\(s\) .*2 of them IPv6/, `logged: ${adoptedLog?.msg}`);
  t.same(
    lines.filter((l) => l.level === 'warn' || l.level === 'error'),
    [],
    'nothing to warn about',
  );

  // kube-proxy's rules go, and the kernel forgets the flows: only bpfproxy can carry them now.
  ipt('-F', 'PREROUTING');
  sh('conntrack', ['-D', '-f', 'ipv6', '-d', VIP], { ns: node, allowFail: true });
  t.same(
    inNetns(node, () => native().kernelConntrack({ translatedOnly: true, family: 6 })),
    [],
    "the kernel's NAT of the flows is gone",
  );

  const adopted = dp.maps.ct6
    .entries()
    .filter(([k, v]) => v.dir === CtDir.FWD && v.flags & CtFlags.ADOPTED && k.saddr === A && k.daddr === VIP)
    .map(([k, v]) => `${k.proto} -> [${v.natDaddr}]:${v.natDport}`)
    .sort();
  t.same(
    adopted,
    [`${IPPROTO_TCP} -> [${C}]:8081`, `${IPPROTO_UDP} -> [${C}]:5353`].sort(),
    "bpfproxy_ct6 holds both flows with the kernel's backend",
  );

  for (let i = 0; i < 5; i++) {
    for (const proto of ['tcp', 'udp'] as const) {
      const r = await client.ask(proto);
      t.same([r.pod, r.peer, r.error], ['c', A, undefined], `after, ${proto} ${i}: same connection, same backend c`);
    }
  }
  const fresh = probe6(a, 'udp', VIP, 53);
  t.same([fresh.ok, fresh.peer], [true, A], `a new flow is served by bpfproxy (answered by ${fresh.pod})`);
});
