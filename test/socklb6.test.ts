/**
 * Socket-level load balancing of native IPv6 sockets (bpf/sock.c, the *6
 * hooks with lib/lb6.h's maps), with real IPv6 sockets: the hooks attached
 * to a cgroup this test creates under /sys/fs/cgroup/unified (never the
 * machine's root cgroup), the clients moved into it and run in network
 * namespaces the test creates.
 *
 * One "node" namespace (its IPv6 address on lo) and three pods behind
 * veths (a, b: IPv6 echo servers; c: a pod client), our TC programs on the
 * pod veths. DAD is off everywhere. Every client call has a timeout and a
 * count; the cgroup, namespaces and pins go with the test, also on failure.
 */
import t, { type Test } from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { SockDestroyer, attachSockLinks, detachSockLinks, readSockStats } from '../src/dataplane/bpf/sock.js';
import { loadDatapath, type Datapath } from '../src/dataplane/bpf/loader.js';
import { ip, nsPath, sysctl } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { startEcho6 } from './helpers/echo6.js';
import { client, clientAsync, tmpCgroup, type CudpResult, type TcpResult, type UdpResult } from './helpers/sock.js';
import { DEFAULT_DATAPATH, type DatapathConfig } from '../src/config/datapath.js';
import { setMode } from '../src/dataplane/bpf/drain.js';

const NODE6 = '2001:db8:1::11';
const A = 'fd00:10:244:1::2';
const B = 'fd00:10:244:1::3';
const C = 'fd00:10:244:1::4';
const VIP = 'fd00:10:96::10';
const EMPTY_VIP = 'fd00:10:96::11';
const LOCAL_VIP = 'fd00:10:96::12';
const AFF_VIP = 'fd00:10:96::13';
const NODE_PORT = 30080;
const GW = 'fe80::1';
const ECONNREFUSED = 111;
const ECONNABORTED = 103;
const EDESTADDRREQ = 89;

const noDad = (ns: string) => {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
};

/** A pod namespace behind a veth of the node: /128 address, the node's fe80::1 as gateway. */
function podNs(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpx6s');
  noDad(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/128`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${GW}/64`, 'dev', hostIf, 'nodad');
  ip(node, 'link', 'set', hostIf, 'up');
  ip(ns, '-6', 'route', 'add', 'default', 'via', GW, 'dev', 'eth0');
  ip(node, '-6', 'route', 'add', `${addr}/128`, 'dev', hostIf);
  return ns;
}

/** Translated IPv6 conntrack entries that involve addr (the TC path's NAT state). */
function ct6With(dp: Datapath, addr: string): number {
  return dp.maps.ct6.entries().filter(([k, v]) => k.daddr === addr || k.saddr === addr || v.natDaddr === addr || v.natSaddr === addr)
    .length;
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
  const node = tmpNetns(t, 'bpx6s');
  noDad(node);
  sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
  ip(node, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${NODE6}/128`, 'dev', 'lo', 'nodad');
  const pods = { a: podNs(t, node, 'calia', A), b: podNs(t, node, 'calib', B), c: podNs(t, node, 'calic', C) };
  const pinDir = tmpPinDir(t);
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
  rec.setNodeAddresses([NODE6]);
  await startEcho6(pods.a, 'a', 60_000);
  await startEcho6(pods.b, 'b', 60_000);
  const cg = tmpCgroup(t);
  t.teardown(() => detachSockLinks(pinDir));
  return { node, pods, dp, rec, cg, pinDir };
}

t.test('IPv6 socket LB: TCP, UDP, connected UDP, no endpoints, NodePort; the TC path translates nothing', async (t) => {
  const s = await setup(t);
  const { rec, dp, cg, node, pods } = s;
  t.same(
    rec.syncService('test/web', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)]),
      fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353), be(B, 5353)]),
      fe('NodePort', '::', NODE_PORT, 'TCP', [be(A, 8080), be(B, 8080)]),
    ]).problems,
    [],
  );
  t.same(
    rec.syncService('test/empty', [fe('ClusterIP', EMPTY_VIP, 80, 'TCP', []), fe('ClusterIP', EMPTY_VIP, 53, 'UDP', [])]).problems,
    [],
  );
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);

  // A host-network client (node namespace) in the cgroup: no TC hook sees its packets.
  const tcp = client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 6);
  t.ok(
    tcp.every((r) => r.reply && ['a', 'b'].includes(r.reply.pod)),
    `host client -> IPv6 ClusterIP tcp: a backend answers (${tcp.map((r) => r.reply?.pod ?? r.errno).join(',')})`,
  );
  t.ok(
    tcp.every((r) => r.peer === `${VIP}:80`),
    'getpeername() says the service address',
  );
  t.ok(
    tcp.every((r) => r.reply!.peer === NODE6),
    'the backend sees the node address as source (no SNAT)',
  );
  t.ok(
    dp.maps.sockRev6.entries().some(([k, v]) => k.addr === A && v.addr === VIP && v.port === 80),
    'reverse entries in bpfproxy_sock_rev6',
  );

  const udp = client<UdpResult[]>(cg, node, 'udp6n', VIP, 53, 4);
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

  const np = client<TcpResult[]>(cg, node, 'tcp6n', NODE6, NODE_PORT, 2);
  t.ok(
    np.every((r) => r.reply && r.peer === `${NODE6}:${NODE_PORT}`),
    `NodePort on the node's IPv6 address from the node: a backend, getpeername the node address (${JSON.stringify(np)})`,
  );

  const refused = client<TcpResult[]>(cg, node, 'tcp6n', EMPTY_VIP, 80, 1);
  t.equal(refused[0]!.errno, ECONNREFUSED, 'a service without endpoints: connect() fails with ECONNREFUSED');
  const refusedUdp = client<UdpResult[]>(cg, node, 'udp6n', EMPTY_VIP, 53, 1);
  t.equal(refusedUdp[0]!.errno, ECONNREFUSED, 'and sendto() to it too');

  // A pod client in the cgroup: its packets leave addressed to the backend.
  t.equal(ct6With(dp, VIP), 0, 'no IPv6 NAT entry so far');
  const pod = client<TcpResult[]>(cg, pods.c, 'tcp6n', VIP, 80, 4);
  t.ok(
    pod.every((r) => r.reply && r.peer === `${VIP}:80` && r.reply.peer === C),
    `pod client in the cgroup: a backend answers, sees the pod address (${JSON.stringify(pod)})`,
  );
  t.equal(ct6With(dp, VIP), 0, 'the TC path made no IPv6 NAT entry for those connections (no second translation)');

  // The same pod outside the cgroup: the TC path serves it as before.
  const viaTc = client<TcpResult[]>(undefined, pods.c, 'tcp6n', VIP, 80, 2);
  t.ok(
    viaTc.every((r) => r.reply && r.peer === `${VIP}:80`),
    'a process outside the cgroup reaches the service through the TC path',
  );
  t.ok(ct6With(dp, VIP) > 0, 'which leaves its NAT entries in bpfproxy_ct6');

  const st = readSockStats(dp.maps);
  t.ok(st.connect >= 6n + 2n + 4n + 1n, `connect translations counted (${st.connect})`);
  t.ok(st.sendmsg >= 4n, `sendmsg translations counted (${st.sendmsg})`);
  t.ok(st.recvmsg >= 4n, `recvmsg reverse translations counted (${st.recvmsg})`);
  t.ok(st.getpeername >= 6n, `getpeername reverse translations counted (${st.getpeername})`);
  t.equal(st.refused, 2n, 'two refusals counted');
});

t.test('IPv6 socket LB: internalTrafficPolicy Local, ClientIP affinity, externalTrafficPolicy Local from the node', async (t) => {
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
  t.same(
    rec.syncService('test/np', [
      fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080, false), be(B, 8080, false)]),
      fe('NodePort', '::', NODE_PORT, 'TCP', [be(A, 8080, false), be(B, 8080, false)], { externalLocal: true }),
    ]).problems,
    [],
  );
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);

  const local = client<TcpResult[]>(cg, node, 'tcp6n', LOCAL_VIP, 80, 12);
  t.same(
    [...new Set(local.map((r) => r.reply?.pod ?? `errno ${r.errno}`))],
    ['a'],
    'iTP Local: only the node-local endpoint (b is reachable, but on "another node")',
  );

  const aff = client<TcpResult[]>(cg, node, 'tcp6n', AFF_VIP, 80, 12);
  const served = new Set(aff.map((r) => r.reply?.pod ?? `errno ${r.errno}`));
  t.equal(served.size, 1, `ClientIP affinity: every connection of the client to one endpoint (${[...served].join(',')})`);
  const entries = dp.maps.affinity6.entries();
  t.ok(
    entries.length > 0 && entries.every(([k]) => k.client.startsWith('100::')),
    `the IPv6 affinity entry is keyed by the netns cookie in 100::/64, not a real address (${entries.map(([k]) => k.client).join(',')})`,
  );

  const spread = client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 24);
  t.same(
    [...new Set(spread.map((r) => r.reply?.pod ?? `errno ${r.errno}`))].sort(),
    ['a', 'b'],
    'without affinity both endpoints serve (24 connections)',
  );
  const np = client<TcpResult[]>(cg, node, 'tcp6n', NODE6, NODE_PORT, 4);
  t.ok(
    np.every((r) => r.reply),
    `eTP Local NodePort reached from the node itself goes to every endpoint, as IPv4 (kube-proxy's short-circuit) (${JSON.stringify(np)})`,
  );
});

t.test('IPv6 socket LB: bpf_sock_destroy moves a connected UDP socket off a removed backend', async (t) => {
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
  for (const until = Date.now() + 10_000; Date.now() < until;) {
    if (dp.maps.sockRev6.entries().some(([k]) => k.addr === A && k.proto === 17)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 400));
  let n = 0;
  const told: Array<{ addr: string; port: number }> = [];
  rec.onBackendsGone = (b) => {
    told.push(...b);
    n += destroyer.destroy(b, [nsPath(node)]);
  };
  t.same(rec.syncService('test/dns', [fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)])]).problems, []);
  t.same(told, [{ addr: A, port: 5353 }], 'the sync names the IPv6 backend that left');
  t.equal(n, 1, 'one socket destroyed (the one the socket LB sent to a)');
  const res = await run;
  const seen = res.replies.map((r) => r.pod ?? (r.errno === ECONNABORTED || r.errno === EDESTADDRREQ ? 'X' : `e${r.errno}`)).join('');
  t.match(seen, /^a+Xb+$/, `a, then one error, then b after connecting again (${seen})`);
  const d = await direct;
  t.ok(
    d.replies.every((r) => r.pod === 'a'),
    'a socket connected to the backend directly (not through the service) is left alone',
  );
  t.equal(destroyer.destroy([{ addr: A, port: 5353 }], [nsPath(node)]), 0, 'nothing left to destroy');
});

t.test('IPv6 socket LB while draining or on standby: new sockets are left untranslated', async (t) => {
  const s = await setup(t);
  const { rec, dp, cg, node } = s;
  t.same(rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080)])]).problems, []);
  attachSockLinks(s.pinDir, cg, dp.objects[0]!);
  t.ok(client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 1)[0]!.reply, 'serving: translated');
  setMode(dp.maps, 'drain');
  const drained = client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 1)[0]!;
  t.ok(drained.errno !== undefined, `draining: not translated (the node has no route to the VIP: errno ${drained.errno})`);
  t.equal(readSockStats(dp.maps).left_to_tc, 1n, 'counted as left to the TC path');
  setMode(dp.maps, 'standby');
  t.ok(client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 1)[0]!.errno !== undefined, 'standby: not translated');
  t.equal(readSockStats(dp.maps).connect, 1n, 'one translation in all');
  setMode(dp.maps, 'serve');
  t.ok(client<TcpResult[]>(cg, node, 'tcp6n', VIP, 80, 1)[0]!.reply, 'serving again: translated');
});
