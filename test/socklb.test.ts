/**
 * Socket-level load balancing (bpf/sock.c) with real sockets: the cgroup
 * hooks attached to a cgroup this test creates under /sys/fs/cgroup/unified
 * (never the machine's root cgroup), the clients moved into it and run in a
 * network namespace the test creates.
 *
 * One "node" namespace with the node address on lo and three pods behind
 * veths (a, b: echo servers; c: a pod client), our TC programs on the pod
 * veths as the agent attaches them. A client in the node namespace is a
 * host-network process; one in pod c a pod. Every client call has a
 * timeout and a count; the cgroup, namespaces and pins go with the test,
 * also on failure.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import {
  SockDestroyer,
  attachSockLinks,
  detachSockLinks,
  netnsPaths,
  readSockLinks,
  readSockStats,
  SOCK_HOOKS,
  cgroupId,
} from '../src/dataplane/bpf/sock.js';
import { loadDatapath, type Datapath } from '../src/dataplane/bpf/loader.js';
import { ip, nsPath, sysctl } from '../testkit/netns.js';
import { startEcho } from '../lab/lab.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { client, clientAsync, tmpCgroup, type CudpResult, type TcpResult, type UdpResult } from './helpers/sock.js';
import { DEFAULT_DATAPATH, sockProtos, type DatapathConfig } from '../src/config/datapath.js';

const NODE_IP = '192.0.2.11';
const A = '10.244.1.2';
const B = '10.244.1.3';
const C = '10.244.1.4';
const VIP = '10.96.0.10';
const EMPTY_VIP = '10.96.0.11';
const LOCAL_VIP = '10.96.0.12';
const AFF_VIP = '10.96.0.13';
const NODE_PORT = 30080;
const ECONNREFUSED = 111;
const ECONNABORTED = 103;
const EDESTADDRREQ = 89;

/** A namespace behind a veth of the node: /32 address, the node side as its gateway. */
function attachNs(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpxs');
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'lo', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', NODE_IP);
  return ns;
}

/** Translated conntrack entries that involve addr (the TC path's NAT state). */
function ctWith(dp: Datapath, addr: string): number {
  return dp.maps.ct.entries().filter(([k, v]) => k.daddr === addr || k.saddr === addr || v.natDaddr === addr || v.natSaddr === addr).length;
}

interface Setup {
  node: string;
  pods: { a: string; b: string; c: string };
  dp: Datapath;
  rec: BpfReconciler;
  cg: string;
  pinDir: string;
}

async function setup(t: Test, cfg: Partial<DatapathConfig> = {}): Promise<Setup> {
  const node = tmpNetns(t, 'bpxs');
  sysctl(node, 'net.ipv4.ip_forward', '1');
  sysctl(node, 'net.ipv4.conf.all.rp_filter', '0');
  sysctl(node, 'net.ipv4.conf.default.rp_filter', '0');
  ip(node, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
  const pods = { a: attachNs(t, node, 'calia', A), b: attachNs(t, node, 'calib', B), c: attachNs(t, node, 'calic', C) };
  const pinDir = tmpPinDir(t);
  // bpfConnectTimeLoadBalancing Enabled (TCP and UDP) unless cfg says otherwise
  const dp = await loadDatapath(BPF_DIR, pinDir, { ...DEFAULT_DATAPATH, sockProtos: { tcp: true, udp: true }, ...cfg });
  t.teardown(() => dp.close());
  inNetns(node, () => {
    for (const dev of ['calia', 'calib', 'calic']) {
      const idx = native()
        .interfaces()
        .find((i) => i.name === dev)!.index;
      native().tcHookCreate(idx);
      native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
      native().tcAttach(idx, 'egress', dp.programs.toPod.fd, TC_HANDLE, TC_PRIORITY);
      dp.maps.podIfs.set({ ifindex: idx }, { v: 1 });
    }
  });
  const rec = new BpfReconciler(dp.maps);
  rec.setNodeAddresses([NODE_IP]);
  const deadline = Date.now() + 10_000;
  startEcho(pods.a, 'a', deadline);
  startEcho(pods.b, 'b', deadline);
  const cg = tmpCgroup(t);
  t.teardown(() => detachSockLinks(pinDir));
  return { node, pods, dp, rec, cg, pinDir };
}

t.test('socket LB: TCP, UDP, connected UDP, v4-mapped, no endpoints, NodePort; the TC path translates nothing', async (t) => {
  const s = await setup(t);
  const { rec, dp, cg, node, pods } = s;
  t.same(
    rec.syncService('test/web', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)]),
      fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353), be(B, 5353)]),
      fe('NodePort', '0.0.0.0', NODE_PORT, 'TCP', [be(A, 8080), be(B, 8080)]),
    ]).problems,
    [],
  );
  t.same(
    rec.syncService('test/empty', [fe('ClusterIP', EMPTY_VIP, 80, 'TCP', []), fe('ClusterIP', EMPTY_VIP, 53, 'UDP', [])]).problems,
    [],
  );

  const done = attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  t.same(
    done.map((d) => d.action),
    SOCK_HOOKS.map(() => 'attached'),
    'every hook attached',
  );
  const links = readSockLinks(s.pinDir).links;
  t.equal(links.length, SOCK_HOOKS.length, 'pinned, one link per hook');
  t.ok(
    links.every((l) => l.cgroupId === cgroupId(cg)),
    'on the test cgroup',
  );

  // A host-network client (node namespace) in the cgroup.
  const tcp = client<TcpResult[]>(cg, node, 'tcp', VIP, 80, 6);
  t.ok(
    tcp.every((r) => r.reply && ['a', 'b'].includes(r.reply.pod)),
    `host client -> ClusterIP tcp: a backend answers (${tcp.map((r) => r.reply?.pod ?? r.errno).join(',')})`,
  );
  t.ok(
    tcp.every((r) => r.peer === `${VIP}:80`),
    'getpeername() says the service address',
  );
  t.ok(
    tcp.every((r) => r.reply!.peer.startsWith(`${NODE_IP}:`)),
    'the backend sees the node address as source (no SNAT)',
  );

  const udp = client<UdpResult[]>(cg, node, 'udp', VIP, 53, 4);
  t.ok(
    udp.every((r) => r.reply && r.from === `${VIP}:53`),
    `UDP sendto/recvfrom: the reply comes from the service address (${udp.map((r) => r.from ?? r.errno).join(',')})`,
  );

  const cudp = client<CudpResult>(cg, node, 'cudp', VIP, 53, 3);
  t.equal(cudp.peer, `${VIP}:53`, 'connected UDP: getpeername() says the service');
  t.ok(
    cudp.replies.every((r) => r.pod === cudp.replies[0]!.pod && r.pod),
    `connected UDP: every reply from the one backend (${cudp.replies.map((r) => r.pod ?? r.errno).join(',')})`,
  );

  const v6 = client<TcpResult[]>(cg, node, 'tcp6', VIP, 80, 2);
  t.ok(
    v6.every((r) => r.reply && r.peer === `::ffff:${VIP}:80`),
    `IPv6 socket, v4-mapped service address: translated, getpeername the service (${JSON.stringify(v6)})`,
  );
  const u6 = client<UdpResult[]>(cg, node, 'udp6', VIP, 53, 2);
  t.ok(
    u6.every((r) => r.reply && r.from === `::ffff:${VIP}:53`),
    'IPv6 UDP socket, v4-mapped: the reply from the service address',
  );

  const np = client<TcpResult[]>(cg, node, 'tcp', NODE_IP, NODE_PORT, 2);
  t.ok(
    np.every((r) => r.reply && r.peer === `${NODE_IP}:${NODE_PORT}`),
    `NodePort on the node address from the node: a backend, getpeername the node address (${JSON.stringify(np)})`,
  );

  const refused = client<TcpResult[]>(cg, node, 'tcp', EMPTY_VIP, 80, 1);
  t.equal(refused[0]!.errno, ECONNREFUSED, 'a service without endpoints: connect() fails with ECONNREFUSED');
  const refusedUdp = client<UdpResult[]>(cg, node, 'udp', EMPTY_VIP, 53, 1);
  t.equal(refusedUdp[0]!.errno, ECONNREFUSED, 'and sendto() to it too');

  // A pod client in the cgroup: the packets leave it addressed to the
  // backend; the TC program on its veth has nothing to translate.
  const before = ctWith(dp, VIP);
  const pod = client<TcpResult[]>(cg, pods.c, 'tcp', VIP, 80, 4);
  t.ok(
    pod.every((r) => r.reply && r.peer === `${VIP}:80` && r.reply.peer.startsWith(`${C}:`)),
    'pod client in the cgroup: a backend answers, sees the pod address',
  );
  t.equal(ctWith(dp, VIP), before, 'the TC path made no NAT entry for those connections (no second translation)');
  t.equal(before, 0, 'and none before either');

  // The same pod outside the cgroup: the TC path serves it as before.
  const viaTc = client<TcpResult[]>(undefined, pods.c, 'tcp', VIP, 80, 2);
  t.ok(
    viaTc.every((r) => r.reply && r.peer === `${VIP}:80`),
    'a process outside the cgroup reaches the service through the TC path',
  );
  t.ok(ctWith(dp, VIP) > 0, 'which leaves its NAT entries in conntrack');

  const st = readSockStats(dp.maps);
  t.ok(st.connect >= 6n + 2n + 2n + 4n, `connect translations counted (${st.connect})`);
  t.ok(st.sendmsg >= 6n, `sendmsg translations counted (${st.sendmsg})`);
  t.ok(st.recvmsg >= 6n, `recvmsg reverse translations counted (${st.recvmsg})`);
  t.ok(st.getpeername >= 6n, `getpeername reverse translations counted (${st.getpeername})`);
  t.equal(st.refused, 2n, 'two refusals counted');
});

t.test('socket LB: internalTrafficPolicy Local, ClientIP affinity', async (t) => {
  const s = await setup(t);
  const { rec, dp, cg, node } = s;
  t.same(
    rec.syncService('test/local', [fe('ClusterIP', LOCAL_VIP, 80, 'TCP', [be(A, 8080, true), be(B, 8080, false)], { internalLocal: true })])
      .problems,
    [],
  );
  t.same(
    rec.syncService('test/aff', [fe('ClusterIP', AFF_VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)], { affinityTimeout: 60 })]).problems,
    [],
  );
  t.same(rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);

  const local = client<TcpResult[]>(cg, node, 'tcp', LOCAL_VIP, 80, 12);
  t.same(
    [...new Set(local.map((r) => r.reply?.pod ?? `errno ${r.errno}`))],
    ['a'],
    'iTP Local: only the node-local endpoint (b is reachable, but on "another node")',
  );

  const spread = client<TcpResult[]>(cg, node, 'tcp', VIP, 80, 24);
  t.same(
    [...new Set(spread.map((r) => r.reply?.pod ?? `errno ${r.errno}`))].sort(),
    ['a', 'b'],
    'without affinity both endpoints serve (24 connections)',
  );
  const aff = client<TcpResult[]>(cg, node, 'tcp', AFF_VIP, 80, 12);
  const pods = new Set(aff.map((r) => r.reply?.pod ?? `errno ${r.errno}`));
  t.equal(pods.size, 1, `ClientIP affinity: every connection of the client to one endpoint (${[...pods].join(',')})`);
  const entries = dp.maps.affinity.entries();
  t.ok(
    entries.some(([k]) => k.client.startsWith('0.')),
    'the affinity entry is keyed by the netns cookie (0.0.0.0/8), not a real address',
  );
});

t.test('socket LB --socket-lb=host: only sockets of the given namespace', async (t) => {
  // The cookie of a namespace that is not the node's: nothing is translated.
  const other = tmpNetns(t, 'bpxs');
  const cookie = inNetns(other, () => native().netnsCookie());
  const s = await setup(t, { sockNetnsCookie: cookie });
  t.same(rec0(s).problems, []);
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  const r = client<TcpResult[]>(s.cg, s.node, 'tcp', VIP, 80, 1);
  t.ok(r[0]!.errno !== undefined, `a socket of another namespace is not translated (errno ${r[0]!.errno})`);
  t.equal(readSockStats(s.dp.maps).connect, 0n, 'no translation counted');
});

const rec0 = (s: Setup) => s.rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)])]);

t.test('socket LB: a restarted agent adopts the pinned hooks; cleanup detaches them', async (t) => {
  const s = await setup(t);
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
  const s = await setup(t);
  const { rec, dp, cg, node } = s;
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  // 30 datagrams, one every 100 ms; backend a goes away after ~1 s
  const run = clientAsync<CudpResult>(cg, node, 'cudp', VIP, 53, 30, 100);
  for (const until = Date.now() + 10_000; Date.now() < until;) {
    if (dp.maps.sockRev.entries().some(([k]) => k.addr === A && k.proto === 17)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 400));
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)])]).problems, []);
  const res = await run;
  const seen = res.replies.map((r) => r.pod ?? 'x').join('');
  t.match(seen, /^a+/, `served by a first (${seen})`);
  t.notMatch(seen, /b/, 'without socket destroy the connected socket stays on its backend: b never answers it');
});

t.test('socket LB on a kernel without bpf_set_retval: a refusal reads EPERM', async (t) => {
  const s = await setup(t, { sockSetRetval: false });
  t.same(s.rec.syncService('test/empty', [fe('ClusterIP', EMPTY_VIP, 80, 'TCP', [])]).problems, []);
  attachSockLinks(s.pinDir, s.cg, s.dp.objects[0]!);
  t.equal(
    client<TcpResult[]>(s.cg, s.node, 'tcp', EMPTY_VIP, 80, 1)[0]!.errno,
    1,
    'EPERM (cfg_sock_set_retval = 0: the call is not in the program)',
  );
});

t.test("bpfConnectTimeLoadBalancing TCP (Calico's default): UDP sockets are left to the TC path", async (t) => {
  const s = await setup(t, { sockProtos: sockProtos('TCP') });
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

t.test('socket LB: bpf_sock_destroy moves a connected UDP socket off a removed backend', async (t) => {
  const s = await setup(t);
  const { rec, dp, cg, node } = s;
  const destroyer = await SockDestroyer.load(BPF_DIR, s.pinDir);
  if (!destroyer) {
    t.fail('sock_destroy.o does not load on this kernel (6.5+ expected here)');
    return;
  }
  t.teardown(() => destroyer.close());
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  // an unrelated connected UDP socket straight to a's address (no service): must survive
  const direct = clientAsync<CudpResult>(cg, node, 'cudp', A, 5353, 30, 100);
  const run = clientAsync<CudpResult>(cg, node, 'cudpr', VIP, 53, 30, 100);
  // until the socket LB has sent the client's socket to a (at most 10 s), then a few datagrams more
  for (const until = Date.now() + 10_000; Date.now() < until;) {
    if (dp.maps.sockRev.entries().some(([k]) => k.addr === A && k.proto === 17)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 400));
  // as the agent wires it (runtime.ts armSockDestroy): the reconciler names the backends that left
  let n = 0;
  const told: Array<{ addr: string; port: number }> = [];
  rec.onBackendsGone = (b) => {
    told.push(...b);
    n += destroyer.destroy(b, [nsPath(node)]);
  };
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)])]).problems, []);
  t.same(told, [{ addr: A, port: 5353 }], 'the sync names the backend that left');
  t.equal(n, 1, 'one socket destroyed (the one the socket LB sent to a)');
  const res = await run;
  // The destroyed socket is disconnected with ECONNABORTED pending: the
  // next call fails with that, or, a send, with EDESTADDRREQ (no peer any more).
  const seen = res.replies.map((r) => r.pod ?? (r.errno === ECONNABORTED || r.errno === EDESTADDRREQ ? 'X' : `e${r.errno}`)).join('');
  t.match(seen, /^a+Xb+$/, `a, then one error, then b after connecting again (${seen})`);
  const d = await direct;
  t.ok(
    d.replies.every((r) => r.pod === 'a'),
    'a socket connected to the backend directly (not through the service) is left alone',
  );
  t.equal(destroyer.destroy([{ addr: A, port: 5353 }], [nsPath(node)]), 0, 'nothing left to destroy');
});

t.test('socket LB right after a TC-path connection from the same source port: the new connection is not translated back', async (t) => {
  // The TC path's closed flow (reset) keeps its entries for the RST timeout;
  // the socket-LB connection from the same port goes to the same backend,
  // so its SYN-ACK matches the old reply entry. Before the fix the TC
  // program on a's veth rewrote its source to the VIP and connect() timed out.
  const s = await setup(t);
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
  const s = await setup(t);
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
