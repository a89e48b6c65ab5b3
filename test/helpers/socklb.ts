/**
 * The socket-LB tests (bpf/sock.c) for either family, with real sockets:
 * the hooks attached to a cgroup the test creates under
 * /sys/fs/cgroup/unified (never the machine's root cgroup), the clients
 * moved into it and run in network namespaces the test creates.
 *
 * One "node" namespace with the node address on lo and three pods behind
 * veths (a, b: echo servers; c: a pod client), our TC programs on the pod
 * veths as the agent attaches them. A client in the node namespace is a
 * host-network process; one in pod c a pod. IPv6 addresses are the IPv4
 * ones mapped by test/helpers/family.ts. Every client call has a timeout
 * and a count; the cgroup, namespaces and pins go with the test, also on
 * failure.
 *
 * sockLbCases() registers the cases both families share;
 * test/socklb.test.ts (IPv4) and test/socklb6.test.ts (IPv6) run them and
 * their own.
 */
import t, { type Test } from 'tap';
import { BpfReconciler } from '../../src/dataplane/bpf/reconciler.js';
import {
  SockDestroyer,
  attachSockLinks,
  cgroupId,
  detachSockLinks,
  readSockLinks,
  readSockStats,
  SOCK_HOOKS,
} from '../../src/dataplane/bpf/sock.js';
import { setMode } from '../../src/dataplane/bpf/drain.js';
import { loadDatapath, type Datapath } from '../../src/dataplane/bpf/loader.js';
import { DEFAULT_DATAPATH, type DatapathConfig } from '../../src/config/datapath.js';
import { ip, nsPath, sysctl } from '../../testkit/netns.js';
import { startEcho } from '../../lab/lab.js';
import { be, fe } from './fixtures.js';
import { BPF_DIR, tmpNetns, tmpPinDir } from './env.js';
import { startEcho6 } from './echo6.js';
import { addrIn, type Family } from './family.js';
import { attachTc, noDad, podNs4, podNs6 } from './node-netns.js';
import { client, clientAsync, tmpCgroup, type CudpResult, type TcpResult, type UdpResult } from './sock.js';

export const ECONNREFUSED = 111;
const ECONNABORTED = 103;
const EDESTADDRREQ = 89;
export const NODE_PORT = 30080;

/** The test's addresses in a family. */
export function sockLbAddrs(family: Family) {
  const a = (v4: string) => addrIn(family, v4);
  return {
    node: a('192.0.2.11'),
    a: a('10.244.1.2'),
    b: a('10.244.1.3'),
    c: a('10.244.1.4'),
    vip: a('10.96.0.10'),
    emptyVip: a('10.96.0.11'),
    localVip: a('10.96.0.12'),
    affVip: a('10.96.0.13'),
    /** the NodePort frontends' wildcard */
    any: family === 'ipv4' ? '0.0.0.0' : '::',
  };
}

/** The node namespace: forwarding on, the node address on lo. */
function nodeNs(t: Test, family: Family, nodeIp: string): string {
  if (family === 'ipv4') {
    const node = tmpNetns(t, 'bpxs');
    sysctl(node, 'net.ipv4.ip_forward', '1');
    sysctl(node, 'net.ipv4.conf.all.rp_filter', '0');
    sysctl(node, 'net.ipv4.conf.default.rp_filter', '0');
    ip(node, 'link', 'set', 'lo', 'up');
    ip(node, 'addr', 'add', `${nodeIp}/32`, 'dev', 'lo');
    return node;
  }
  const node = tmpNetns(t, 'bpx6s');
  noDad(node);
  sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
  ip(node, 'link', 'set', 'lo', 'up');
  ip(node, 'addr', 'add', `${nodeIp}/128`, 'dev', 'lo', 'nodad');
  return node;
}

export interface SockLbSetup {
  family: Family;
  addrs: ReturnType<typeof sockLbAddrs>;
  node: string;
  pods: { a: string; b: string; c: string };
  dp: Datapath;
  rec: BpfReconciler;
  cg: string;
  pinDir: string;
}

/** The node, its pods, the datapath (bpfConnectTimeLoadBalancing TCP and UDP unless cfg says otherwise), the echo servers and the cgroup. */
export async function sockLbSetup(t: Test, family: Family, cfg: Partial<DatapathConfig> = {}): Promise<SockLbSetup> {
  const addrs = sockLbAddrs(family);
  const node = nodeNs(t, family, addrs.node);
  const pod = (hostIf: string, addr: string) =>
    family === 'ipv4' ? podNs4(t, node, hostIf, addr, addrs.node, 'bpxs') : podNs6(t, node, hostIf, addr, 'bpx6s');
  const pods = { a: pod('calia', addrs.a), b: pod('calib', addrs.b), c: pod('calic', addrs.c) };
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, { ...DEFAULT_DATAPATH, sockProtos: { tcp: true, udp: true }, ...cfg });
  t.teardown(() => dp.close());
  attachTc(node, dp, ['calia', 'calib', 'calic']);
  const rec = new BpfReconciler(dp.maps);
  rec.setNodeAddresses([addrs.node]);
  if (family === 'ipv4') {
    const deadline = Date.now() + 10_000;
    startEcho(pods.a, 'a', deadline);
    startEcho(pods.b, 'b', deadline);
  } else {
    await startEcho6(pods.a, 'a', 60_000);
    await startEcho6(pods.b, 'b', 60_000);
  }
  const cg = tmpCgroup(t);
  t.teardown(() => detachSockLinks(pinDir));
  return { family, addrs, node, pods, dp, rec, cg, pinDir };
}

/** The client's modes on a socket of the family (sock-client.py). */
const modes = (family: Family) => (family === 'ipv4' ? { tcp: 'tcp', udp: 'udp' } : { tcp: 'tcp6n', udp: 'udp6n' });

/** The address an echo server saw as the peer ("ip:port" from the lab's IPv4 server, "ip" from echo6's). */
const peerAddr = (family: Family, peer: string) => (family === 'ipv4' ? peer.slice(0, peer.lastIndexOf(':')) : peer);

/** Translated conntrack entries of the family that involve addr (the TC path's NAT state). */
function ctWith(s: SockLbSetup, addr: string): number {
  const ct = s.family === 'ipv4' ? s.dp.maps.ct.entries() : s.dp.maps.ct6.entries();
  return ct.filter(([k, v]) => k.daddr === addr || k.saddr === addr || v.natDaddr === addr || v.natSaddr === addr).length;
}

/** The family's reverse entries (bpfproxy_sock_rev, bpfproxy_sock_rev6) as [backend, proto, service, service port]. */
export function sockRevs(s: SockLbSetup): Array<{ addr: string; proto: number; svc: string; svcPort: number }> {
  const rev = s.family === 'ipv4' ? s.dp.maps.sockRev.entries() : s.dp.maps.sockRev6.entries();
  return rev.map(([k, v]) => ({ addr: k.addr, proto: k.proto, svc: v.addr, svcPort: v.port }));
}

/** Until the socket LB has sent a UDP socket to backend addr (at most 10 s), then 400 ms more. */
export async function untilUdpSentTo(s: SockLbSetup, addr: string): Promise<void> {
  for (const until = Date.now() + 10_000; Date.now() < until;) {
    if (sockRevs(s).some((r) => r.addr === addr && r.proto === 17)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 400));
}

/** Register the cases both families share. */
export function sockLbCases(family: Family): void {
  const v4 = family === 'ipv4';
  const LB = v4 ? 'socket LB' : 'IPv6 socket LB';
  const { tcp: TCP, udp: UDP } = modes(family);
  const { node: NODE, a: A, b: B, c: C, vip: VIP, emptyVip: EMPTY_VIP, localVip: LOCAL_VIP, affVip: AFF_VIP, any } = sockLbAddrs(family);

  t.test(`${LB}: TCP, UDP, connected UDP${v4 ? ', v4-mapped' : ''}, no endpoints, NodePort; the TC path translates nothing`, async (t) => {
    const s = await sockLbSetup(t, family);
    const { rec, dp, cg, node, pods } = s;
    t.same(
      rec.syncService('test/web', [
        fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)]),
        fe('ClusterIP', VIP, 53, 'UDP', [be(A, 5353), be(B, 5353)]),
        fe('NodePort', any, NODE_PORT, 'TCP', [be(A, 8080), be(B, 8080)]),
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

    // A host-network client (node namespace) in the cgroup: no TC hook sees its packets.
    const tcp = client<TcpResult[]>(cg, node, TCP, VIP, 80, 6);
    t.ok(
      tcp.every((r) => r.reply && ['a', 'b'].includes(r.reply.pod)),
      `host client -> ClusterIP tcp: a backend answers (${tcp.map((r) => r.reply?.pod ?? r.errno).join(',')})`,
    );
    t.ok(
      tcp.every((r) => r.peer === `${VIP}:80`),
      'getpeername() says the service address',
    );
    t.ok(
      tcp.every((r) => peerAddr(family, r.reply!.peer) === NODE),
      'the backend sees the node address as source (no SNAT)',
    );
    t.ok(
      sockRevs(s).some((r) => r.addr === A && r.svc === VIP && r.svcPort === 80),
      `reverse entries in ${v4 ? 'bpfproxy_sock_rev' : 'bpfproxy_sock_rev6'}`,
    );

    const udp = client<UdpResult[]>(cg, node, UDP, VIP, 53, 4);
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

    let mapped = 0;
    if (v4) {
      // IPv6 sockets reach IPv4 services by their v4-mapped addresses (the IPv4 maps)
      const m6 = client<TcpResult[]>(cg, node, 'tcp6', VIP, 80, 2);
      t.ok(
        m6.every((r) => r.reply && r.peer === `::ffff:${VIP}:80`),
        `IPv6 socket, v4-mapped service address: translated, getpeername the service (${JSON.stringify(m6)})`,
      );
      const u6 = client<UdpResult[]>(cg, node, 'udp6', VIP, 53, 2);
      t.ok(
        u6.every((r) => r.reply && r.from === `::ffff:${VIP}:53`),
        'IPv6 UDP socket, v4-mapped: the reply from the service address',
      );
      mapped = 2;
    }

    const np = client<TcpResult[]>(cg, node, TCP, NODE, NODE_PORT, 2);
    t.ok(
      np.every((r) => r.reply && r.peer === `${NODE}:${NODE_PORT}`),
      `NodePort on the node address from the node: a backend, getpeername the node address (${JSON.stringify(np)})`,
    );

    const refused = client<TcpResult[]>(cg, node, TCP, EMPTY_VIP, 80, 1);
    t.equal(refused[0]!.errno, ECONNREFUSED, 'a service without endpoints: connect() fails with ECONNREFUSED');
    const refusedUdp = client<UdpResult[]>(cg, node, UDP, EMPTY_VIP, 53, 1);
    t.equal(refusedUdp[0]!.errno, ECONNREFUSED, 'and sendto() to it too');

    // A pod client in the cgroup: the packets leave it addressed to the
    // backend; the TC program on its veth has nothing to translate.
    t.equal(ctWith(s, VIP), 0, 'no NAT entry so far');
    const pod = client<TcpResult[]>(cg, pods.c, TCP, VIP, 80, 4);
    t.ok(
      pod.every((r) => r.reply && r.peer === `${VIP}:80` && peerAddr(family, r.reply.peer) === C),
      `pod client in the cgroup: a backend answers, sees the pod address (${JSON.stringify(pod)})`,
    );
    t.equal(ctWith(s, VIP), 0, 'the TC path made no NAT entry for those connections (no second translation)');

    // The same pod outside the cgroup: the TC path serves it as before.
    const viaTc = client<TcpResult[]>(undefined, pods.c, TCP, VIP, 80, 2);
    t.ok(
      viaTc.every((r) => r.reply && r.peer === `${VIP}:80`),
      'a process outside the cgroup reaches the service through the TC path',
    );
    t.ok(ctWith(s, VIP) > 0, `which leaves its NAT entries in ${v4 ? 'bpfproxy_ct' : 'bpfproxy_ct6'}`);

    const st = readSockStats(dp.maps);
    // connect(): tcp 6, connected UDP 1, v4-mapped tcp 2, NodePort 2, pod 4; sendmsg() and recvmsg(): udp 4, v4-mapped udp 2
    t.ok(st.connect >= BigInt(6 + 1 + mapped + 2 + 4), `connect translations counted (${st.connect})`);
    t.ok(st.sendmsg >= BigInt(4 + mapped), `sendmsg translations counted (${st.sendmsg})`);
    t.ok(st.recvmsg >= BigInt(4 + mapped), `recvmsg reverse translations counted (${st.recvmsg})`);
    t.ok(st.getpeername >= 6n, `getpeername reverse translations counted (${st.getpeername})`);
    t.equal(st.refused, 2n, 'two refusals counted');
  });

  t.test(`${LB}: internalTrafficPolicy Local, ClientIP affinity, externalTrafficPolicy Local from the node`, async (t) => {
    const s = await sockLbSetup(t, family);
    const { rec, dp, cg, node } = s;
    t.same(
      rec.syncService('test/local', [
        fe('ClusterIP', LOCAL_VIP, 80, 'TCP', [be(A, 8080, true), be(B, 8080, false)], { internalLocal: true }),
      ]).problems,
      [],
    );
    t.same(
      rec.syncService('test/aff', [fe('ClusterIP', AFF_VIP, 80, 'TCP', [be(A, 8080), be(B, 8080)], { affinityTimeout: 60 })]).problems,
      [],
    );
    t.same(
      rec.syncService('test/np', [
        fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080, false), be(B, 8080, false)]),
        fe('NodePort', any, NODE_PORT, 'TCP', [be(A, 8080, false), be(B, 8080, false)], { externalLocal: true }),
      ]).problems,
      [],
    );
    attachSockLinks(s.pinDir, cg, dp.objects[0]!);

    const local = client<TcpResult[]>(cg, node, TCP, LOCAL_VIP, 80, 12);
    t.same(
      [...new Set(local.map((r) => r.reply?.pod ?? `errno ${r.errno}`))],
      ['a'],
      'iTP Local: only the node-local endpoint (b is reachable, but on "another node")',
    );

    const aff = client<TcpResult[]>(cg, node, TCP, AFF_VIP, 80, 12);
    const served = new Set(aff.map((r) => r.reply?.pod ?? `errno ${r.errno}`));
    t.equal(served.size, 1, `ClientIP affinity: every connection of the client to one endpoint (${[...served].join(',')})`);
    const clients = (v4 ? dp.maps.affinity.entries() : dp.maps.affinity6.entries()).map(([k]) => k.client);
    t.ok(
      clients.length > 0 && clients.every((c) => c.startsWith(v4 ? '0.' : '100::')),
      `the affinity entry is keyed by the netns cookie (${v4 ? '0.0.0.0/8' : 'in 100::/64'}), not a real address (${clients.join(',')})`,
    );

    const spread = client<TcpResult[]>(cg, node, TCP, VIP, 80, 24);
    t.same(
      [...new Set(spread.map((r) => r.reply?.pod ?? `errno ${r.errno}`))].sort(),
      ['a', 'b'],
      'without affinity both endpoints serve (24 connections)',
    );
    const np = client<TcpResult[]>(cg, node, TCP, NODE, NODE_PORT, 4);
    t.ok(
      np.every((r) => r.reply),
      `eTP Local NodePort reached from the node itself goes to every endpoint (kube-proxy's short-circuit) (${JSON.stringify(np)})`,
    );
  });

  t.test(`${LB}: bpf_sock_destroy moves a connected UDP socket off a removed backend`, async (t) => {
    const s = await sockLbSetup(t, family);
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
    await untilUdpSentTo(s, A);
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

  t.test(`${LB} while draining or on standby: new sockets are left untranslated`, async (t) => {
    const s = await sockLbSetup(t, family);
    const { rec, dp, cg, node } = s;
    t.same(rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(A, 8080)])]).problems, []);
    attachSockLinks(s.pinDir, cg, dp.objects[0]!);
    t.ok(client<TcpResult[]>(cg, node, TCP, VIP, 80, 1)[0]!.reply, 'serving: translated');
    setMode(dp.maps, 'drain');
    const drained = client<TcpResult[]>(cg, node, TCP, VIP, 80, 1)[0]!;
    t.ok(drained.errno !== undefined, `draining: not translated (the node has no route to the VIP: errno ${drained.errno})`);
    t.equal(readSockStats(dp.maps).left_to_tc, 1n, 'counted as left to the TC path');
    setMode(dp.maps, 'standby');
    t.ok(client<TcpResult[]>(cg, node, TCP, VIP, 80, 1)[0]!.errno !== undefined, 'standby: not translated');
    t.equal(readSockStats(dp.maps).connect, 1n, 'one translation in all');
    setMode(dp.maps, 'serve');
    t.ok(client<TcpResult[]>(cg, node, TCP, VIP, 80, 1)[0]!.reply, 'serving again: translated');
  });
}
