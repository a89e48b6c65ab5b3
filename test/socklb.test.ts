/**
 * Socket-level load balancing (bpf/sock.c) of IPv4 sockets, with real
 * sockets: the cases both families share (test/helpers/socklb.ts, its
 * header says the topology, the cgroup and the bounds) and those of IPv4:
 * --socket-lb=host, adopting pinned hooks, kernels without socket destroy
 * or bpf_set_retval, TCP-only, source-port reuse after a TC-path flow,
 * netnsPaths(). IPv6: test/socklb6.test.ts.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { native } from '../src/native/index.js';
import { attachSockLinks, detachSockLinks, netnsPaths, readSockLinks, readSockStats, SOCK_HOOKS } from '../src/dataplane/bpf/sock.js';
import { nsPath } from '../testkit/netns.js';
import { sockProtos } from '../src/config/datapath.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns, tmpNetns } from './helpers/env.js';
import { client, clientAsync, type CudpResult, type TcpResult, type UdpResult } from './helpers/sock.js';
import { sockLbAddrs, sockLbCases, sockLbSetup, untilUdpSentTo, type SockLbSetup } from './helpers/socklb.js';

const { a: A, b: B, c: C, vip: VIP, emptyVip: EMPTY_VIP } = sockLbAddrs('ipv4');

sockLbCases('ipv4');

t.test('socket LB --socket-lb=host: only sockets of the given namespace', async (t) => {
  // The cookie of a namespace that is not the node's: nothing is translated.
  const other = tmpNetns(t, 'bpxs');
  const cookie = inNetns(other, () => native().netnsCookie());
  const s = await sockLbSetup(t, 'ipv4', { sockNetnsCookie: cookie });
  t.same(rec0(s).problems, []);
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  const r = client<TcpResult[]>(s.cg, s.node, 'tcp', VIP, 80, 1);
  t.ok(r[0]!.errno !== undefined, `a socket of another namespace is not translated (errno ${r[0]!.errno})`);
  t.equal(readSockStats(s.dp.maps).connect, 0n, 'no translation counted');
});

const rec0 = (s: SockLbSetup) => s.rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)])]);

t.test('socket LB: a restarted agent adopts the pinned hooks; cleanup detaches them', async (t) => {
  const s = await sockLbSetup(t, 'ipv4');
  t.same(rec0(s).problems, []);
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  const ids = readSockLinks(s.pinDir).links.map((l) => l.linkId);
  const again = attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  t.same(
    again.map((d) => d.action),
    SOCK_HOOKS.map(() => 'updated'),
    'the second attach updates the pinned links in place',
  );
  t.same(
    readSockLinks(s.pinDir).links.map((l) => l.linkId),
    ids,
    'same links',
  );
  t.ok(client<TcpResult[]>(s.cg, s.node, 'tcp', VIP, 80, 1)[0]!.reply, 'still translating');
  t.same(detachSockLinks(s.pinDir).sort(), [...SOCK_HOOKS].sort(), 'cleanup detaches every hook');
  t.equal(readSockLinks(s.pinDir).links.length, 0, 'no pins left');
  t.ok(client<TcpResult[]>(s.cg, s.node, 'tcp', VIP, 80, 1)[0]!.errno !== undefined, 'no translation once detached');
});

t.test('socket LB without socket destroy (kernels before 6.5): a connected UDP socket stays on a removed backend', async (t) => {
  const s = await sockLbSetup(t, 'ipv4');
  const { rec, dp, cg, node } = s;
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  // 30 datagrams, one every 100 ms; backend a goes away after ~1 s
  const run = clientAsync<CudpResult>(cg, node, 'cudp', VIP, 53, 30, 100);
  await untilUdpSentTo(s, A);
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)])]).problems, []);
  const res = await run;
  const seen = res.replies.map((r) => r.pod ?? 'x').join('');
  t.match(seen, /^a+/, `served by a first (${seen})`);
  t.notMatch(seen, /b/, 'without socket destroy the connected socket stays on its backend: b never answers it');
});

t.test('socket LB on a kernel without bpf_set_retval: a refusal reads EPERM', async (t) => {
  const s = await sockLbSetup(t, 'ipv4', { sockSetRetval: false });
  t.same(s.rec.syncService('test/empty', [fe('ClusterIP', EMPTY_VIP, 80, 'TCP', [])]).problems, []);
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  t.equal(
    client<TcpResult[]>(s.cg, s.node, 'tcp', EMPTY_VIP, 80, 1)[0]!.errno,
    1,
    'EPERM (cfg_sock_set_retval = 0: the call is not in the program)',
  );
});

t.test("bpfConnectTimeLoadBalancing TCP (Calico's default): UDP sockets are left to the TC path", async (t) => {
  const s = await sockLbSetup(t, 'ipv4', { sockProtos: sockProtos('TCP') });
  t.same(
    s.rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080)]), fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353)])])
      .problems,
    [],
  );
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  t.ok(client<TcpResult[]>(s.cg, s.node, 'tcp', VIP, 80, 1)[0]!.reply, 'TCP translated');
  const u = client<UdpResult[]>(s.cg, s.node, 'udp', VIP, 53, 1)[0]!;
  t.ok(u.errno !== undefined, `UDP from the host is not translated (no TC path for host-network clients: errno ${u.errno})`);
  t.equal(readSockStats(s.dp.maps).sendmsg, 0n, 'no sendmsg translation');
});

t.test('socket LB right after a TC-path connection from the same source port: the new connection is not translated back', async (t) => {
  // The TC path's closed flow (reset) keeps its entries for the RST timeout;
  // the socket-LB connection from the same port goes to the same backend,
  // so its SYN-ACK matches the old reply entry. Before the fix the TC
  // program on a's veth rewrote its source to the VIP and connect() timed out.
  const s = await sockLbSetup(t, 'ipv4');
  const { rec, dp, cg, pods } = s;
  const ONE_VIP = '10.96.0.14';
  t.same(rec.syncService('test/one', [fe('ClusterIP', ONE_VIP, 80, 'TCP', [be(A, 8080)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  const sport = 45123;
  const viaTc = client<TcpResult>(undefined, pods.c, 'tcpsport', ONE_VIP, 80, sport);
  t.same([viaTc.peer, viaTc.reply?.pod, viaTc.reply?.peer], [`${ONE_VIP}:80`, 'a', `${C}:${sport}`], 'TC path: a answers');
  t.ok(
    dp.maps.ct.get({ saddr: A, daddr: C, sport: 8080, dport: sport, proto: 6 }),
    "the TC flow's reply entry is still there (closed, RST timeout)",
  );
  const viaSock = client<TcpResult>(cg, pods.c, 'tcpsport', ONE_VIP, 80, sport);
  t.same(
    [viaSock.errno, viaSock.peer, viaSock.reply?.pod, viaSock.reply?.peer],
    [undefined, `${ONE_VIP}:80`, 'a', `${C}:${sport}`],
    `socket LB from the same port at once: connected and answered (${JSON.stringify(viaSock)})`,
  );
  t.notOk(dp.maps.ct.get({ saddr: A, daddr: C, sport: 8080, dport: sport, proto: 6 }), 'the stale entries are gone');
  const again = client<TcpResult>(undefined, pods.c, 'tcpsport', ONE_VIP, 80, sport);
  t.same([again.peer, again.reply?.pod], [`${ONE_VIP}:80`, 'a'], 'and the TC path serves that port again afterwards');
});

t.test('socket LB and direct UDP right after a TC-path UDP flow from the same source port: replies come from the backend', async (t) => {
  // UDP has no close: the TC-path flow's reply entry stays for the UDP
  // timeout. A socket-LB datagram (or a direct one) from the same port
  // goes to the same backend, so the backend's reply matched the old entry:
  // before the fix the TC program on a's veth rewrote its source to the VIP,
  // a connected socket dropped it and an unconnected one read the VIP.
  const s = await sockLbSetup(t, 'ipv4');
  const { rec, dp, cg, pods } = s;
  const DNS_VIP = '10.96.0.15';
  t.same(rec.syncService('test/dns', [fe('ClusterIP', DNS_VIP, 53, 'UDP', [be(A, 5353)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  const reply = (sport: number) => dp.maps.ct.get({ saddr: A, daddr: C, sport: 5353, dport: sport, proto: 17 });

  const sport = 45200;
  const viaTc = client<UdpResult>(undefined, pods.c, 'udpsport', DNS_VIP, 53, sport);
  t.same([viaTc.from, viaTc.reply?.pod], [`${DNS_VIP}:53`, 'a'], `TC path: a answers from the VIP (${JSON.stringify(viaTc)})`);
  t.ok(reply(sport), "the TC flow's reply entry is there (UDP timeout)");
  const viaSock = client<TcpResult>(cg, pods.c, 'cudpsport', DNS_VIP, 53, sport);
  t.same(
    [viaSock.errno, viaSock.peer, viaSock.reply?.pod, viaSock.reply?.peer],
    [undefined, `${DNS_VIP}:53`, 'a', `${C}:${sport}`],
    `connected socket-LB UDP from the same port at once: answered (${JSON.stringify(viaSock)})`,
  );
  t.notOk(reply(sport), 'the old entries are gone');

  const sport2 = 45201;
  client<UdpResult>(undefined, pods.c, 'udpsport', DNS_VIP, 53, sport2);
  t.ok(reply(sport2), 'another TC flow');
  const direct = client<UdpResult>(undefined, pods.c, 'udpsport', A, 5353, sport2);
  t.same(
    [direct.from, direct.reply?.pod],
    [`${A}:5353`, 'a'],
    `a direct datagram from that port: the answer comes from the backend, not the VIP (${JSON.stringify(direct)})`,
  );
  const again = client<UdpResult>(undefined, pods.c, 'udpsport', DNS_VIP, 53, sport2);
  t.same([again.from, again.reply?.pod], [`${DNS_VIP}:53`, 'a'], 'and the TC path serves that port again afterwards');
});

t.test('netnsPaths: one path per network namespace', async (t) => {
  const ns = tmpNetns(t, 'bpxs');
  const c = spawn('nsenter', [`--net=${nsPath(ns)}`, 'sleep', '5'], { stdio: 'ignore' });
  t.teardown(() => c.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 300));
  const paths = netnsPaths();
  const inos = paths.map((p) => statSync(p).ino);
  t.equal(new Set(inos).size, inos.length, 'no namespace twice');
  t.ok(inos.includes(statSync(nsPath(ns)).ino), "a namespace with a process in it is listed (the socket LB's 'all' reaches pods)");
  t.ok(inos.includes(statSync('/proc/self/ns/net').ino), "and the agent's own");
});
