/**
 * XDP acceleration for IPv6 with real packets, on veths in namespaces the
 * test creates (the lab's dual-stack addressing: nodes in
 * fd00:192:0:2::/64, pods in fd00:10:244:N::/64): a LAN (bridge) with an
 * external client, this node (data interface d0, a local backend pod
 * behind calia) and a second node with a remote backend pod.
 *
 *  - NodePort over IPv6 to the local backend (client address kept) and to
 *    the remote one (SNAT to this node, forwarded back out of d0), TCP and
 *    UDP: the same answers with XDP off, native and generic;
 *  - XDP serves established IPv6 flows by itself: TCP streams opened
 *    through TC keep flowing, every byte echoed, after the TC program is
 *    detached from d0 mid-stream (to the remote backend both directions
 *    cross d0: the client's frames DNAT'd and SNAT'd, the backend's
 *    replies reverse-translated, each sent by XDP_TX); while a new flow,
 *    which XDP leaves to TC, then finds nothing to serve it.
 *
 * As in test/xdp-e2e.test.ts: the LAN side of d0 runs the object's XDP
 * pass-through program so that native XDP_TX frames are delivered, and the
 * senders whose frames XDP rewrites send complete checksums (as a NIC's
 * frames are). The echo servers listen in both families: readiness is
 * checked on the IPv6 sockets (ss -6). Every probe and stream is bounded.
 */
import t, { type Test } from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { XdpAccel, xdpDataProgram, type XdpMode } from '../src/dataplane/bpf/xdp.js';
import { ip, sh, sysctl } from '../testkit/netns.js';
import { probe, startEcho, startStream } from '../lab/lab.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const NODE6 = 'fd00:192:0:2::11';
const NODE2_6 = 'fd00:192:0:2::12';
const CLIENT6 = 'fd00:192:0:2::100';
const LOCAL_POD6 = 'fd00:10:244:1::11';
const REMOTE_POD6 = 'fd00:10:244:2::11';
const POD_GW6 = 'fe80::1';

const ifindexIn = (ns: string, name: string): number =>
  inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === name)!.index,
  );

const noDad = (ns: string) => {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
};

/** A veth between ns and the LAN bridge, the ns side named nsIf with addr/64. */
function onLan(t: Test, lan: string, lanIf: string, ns: string, addr: string, nsIf = 'eth0'): void {
  ip(lan, 'link', 'add', lanIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns);
  ip(lan, 'link', 'set', lanIf, 'master', 'br0');
  ip(lan, 'link', 'set', lanIf, 'up');
  ip(ns, '-6', 'addr', 'add', `${addr}/64`, 'dev', nsIf, 'nodad');
  ip(ns, 'link', 'set', nsIf, 'up');
  t.comment(`${ns}/${nsIf} ${addr} on the LAN`);
}

/** A pod namespace behind hostIf of node (/128, fe80::1 as its gateway: the host side's MAC). */
function pod(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpxx');
  noDad(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, '-6', 'addr', 'add', `${addr}/128`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, '-6', 'neigh', 'replace', POD_GW6, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  ip(ns, '-6', 'route', 'add', 'default', 'via', POD_GW6, 'dev', 'eth0');
  ip(node, '-6', 'route', 'add', `${addr}/128`, 'dev', hostIf);
  return ns;
}

/** Checksum offload off on a veth (ETHTOOL_STXCSUM; test/xdp-e2e.test.ts says why). */
function txChecksumOff(ns: string, dev: string): void {
  const py = [
    'import ctypes, fcntl, socket, struct, sys',
    "ev = ctypes.create_string_buffer(struct.pack('II', 0x17, 0), 8)",
    's = socket.socket()',
    "fcntl.ioctl(s.fileno(), 0x8946, struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(ev)))",
  ].join('\n');
  sh('python3', ['-c', py, dev], { ns });
}

/** The lab's echo server, and its IPv6 sockets listening (it opens IPv4's too, maybe first). */
async function echo6(ns: string, name: string): Promise<void> {
  startEcho(ns, name, Date.now() + 10_000);
  for (const until = Date.now() + 5000; Date.now() < until;) {
    const tcp = sh('ss', ['-6', '-H', '-ltn', 'sport = :8080'], { ns, allowFail: true }).trim();
    const udp = sh('ss', ['-6', '-H', '-lun', 'sport = :5353'], { ns, allowFail: true }).trim();
    if (tcp && udp) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`echo server in ${ns}: no IPv6 listener on 8080/tcp and 5353/udp within 5 s`);
}

/** "[addr]:port" -> addr */
const peerAddr = (peer: string | undefined) => peer?.replace(/^\[(.*)\]:\d+$/, '$1');

t.test('IPv6 NodePort with XDP acceleration: the same answers; established flows served by XDP alone', async (t) => {
  const lan = tmpNetns(t, 'bpxx');
  ip(lan, 'link', 'add', 'br0', 'type', 'bridge');
  ip(lan, 'link', 'set', 'br0', 'up');
  const node = tmpNetns(t, 'bpxx');
  const node2 = tmpNetns(t, 'bpxx');
  const client = tmpNetns(t, 'bpxx');
  for (const ns of [lan, node, node2, client]) noDad(ns);
  for (const ns of [node, node2]) sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
  onLan(t, lan, 'ln', node, NODE6, 'd0');
  onLan(t, lan, 'l2', node2, NODE2_6);
  onLan(t, lan, 'lc', client, CLIENT6);
  const localPod = pod(t, node, 'calia', LOCAL_POD6);
  const remotePod = pod(t, node2, 'calib', REMOTE_POD6);
  ip(node, '-6', 'route', 'add', 'fd00:10:244:2::/64', 'via', NODE2_6);
  txChecksumOff(client, 'eth0');
  txChecksumOff(remotePod, 'eth0');

  const dp = await tmpDatapath(t);
  const d0 = ifindexIn(node, 'd0');
  const calia = ifindexIn(node, 'calia');
  const links = inNetns(node, () => ({
    d0: native().tcxAttach(d0, 'ingress', dp.programs.fromData.fd),
    calia: native().tcxAttach(calia, 'ingress', dp.programs.fromPod.fd),
  }));
  let d0Attached = true;
  t.teardown(() => {
    links.calia.close();
    if (d0Attached) links.d0.close();
  });
  dp.maps.podIfs.set({ ifindex: calia }, { v: 1 });
  const rec = new BpfReconciler(dp.maps);
  t.same(
    rec.syncService('x6/web', [
      fe('NodePort', '::', 30080, 'TCP', [be(LOCAL_POD6, 8080)]),
      fe('NodePort', '::', 30080, 'UDP', [be(LOCAL_POD6, 5353)]),
      fe('NodePort', '::', 30081, 'TCP', [be(REMOTE_POD6, 8080, false)]),
      fe('NodePort', '::', 30081, 'UDP', [be(REMOTE_POD6, 5353, false)]),
    ]).problems,
    [],
  );
  rec.setNodeAddresses([NODE6]);

  const passProg = dp.objects[0]!.programs().find((p) => p.name === 'bpfproxy_xdp_afxdp')!;
  const lnLink = inNetns(lan, () => native().xdpLinkAttach(ifindexIn(lan, 'ln'), passProg.fd, 'native'));
  t.teardown(() => lnLink.close());

  await echo6(localPod, 'local');
  await echo6(remotePod, 'remote');

  const see = (mode: 'tcp' | 'udp', port: number) =>
    probe(client, mode, NODE6, port, 3, 1500).map((a) => ({ ok: a.ok, pod: a.pod, peerIp: peerAddr(a.peer) }));
  const round = () => ({
    localTcp: see('tcp', 30080),
    localUdp: see('udp', 30080),
    remoteTcp: see('tcp', 30081),
    remoteUdp: see('udp', 30081),
  });
  const want = {
    localTcp: Array(3).fill({ ok: true, pod: 'local', peerIp: CLIENT6 }),
    localUdp: Array(3).fill({ ok: true, pod: 'local', peerIp: CLIENT6 }),
    remoteTcp: Array(3).fill({ ok: true, pod: 'remote', peerIp: NODE6 }),
    remoteUdp: Array(3).fill({ ok: true, pod: 'remote', peerIp: NODE6 }),
  };
  t.same(round(), want, 'XDP off (TC alone): the local backend sees the client, the remote one the node');

  const { log } = captureLogger();
  const xdp = new XdpAccel(undefined, log);
  t.teardown(() => inNetns(node, () => xdp.sync(null, [], 0)));
  const prog = xdpDataProgram(dp.objects[0]!, BPF_DIR);
  const on = (mode: XdpMode) => inNetns(node, () => xdp.sync(mode, [{ index: d0, name: 'd0' }], prog));
  for (const mode of ['native', 'generic'] as const) {
    on(mode);
    t.same(xdp.list(), [{ ifindex: d0, name: 'd0', mode }], `XDP ${mode} on d0`);
    t.same(round(), want, `XDP ${mode} + TC: the same answers`);
  }

  on('native');
  // Streams opened through TC (XDP leaves new flows to it), then TC detached from d0 while they flow.
  const flowKey = (k: { sport: number; dport: number }) => `${k.sport}>${k.dport}`;
  const clientFlows = () => dp.maps.ct6.entries().flatMap(([k]) => (k.saddr === CLIENT6 && k.proto === 6 ? [k] : []));
  const before = new Set(clientFlows().map(flowKey));
  const pace = { interval: 20, chunk: 1000 };
  const remote = startStream(client, NODE6, 30081, 2500, pace);
  const local = startStream(client, NODE6, 30080, 2500, pace);
  // detached once both flows are in conntrack (TC opened them), whenever the clients got there
  for (const until = Date.now() + 5000; ;) {
    const ports = clientFlows().flatMap((k) => (before.has(flowKey(k)) ? [] : [k.dport]));
    if (ports.includes(30080) && ports.includes(30081)) break;
    if (Date.now() > until) throw new Error('the streams did not open within 5 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  native().linkDetach(links.d0);
  d0Attached = false;
  t.same(
    inNetns(node, () => native().tcxList(d0, 'ingress')),
    [],
    'TC detached from d0 ingress mid-stream',
  );
  const [r, l] = await Promise.all([remote, local]);
  t.ok(
    r.ok && r.received >= r.sent && r.sent > 50_000,
    `to the remote backend: ${r.sent} bytes sent, ${r.received} echoed, ${r.error ?? 'ok'}`,
  );
  t.equal(r.pod, 'remote');
  t.ok(
    l.ok && l.received >= l.sent && l.sent > 50_000,
    `to the local backend: ${l.sent} bytes sent, ${l.received} echoed, ${l.error ?? 'ok'}`,
  );
  t.equal(l.pod, 'local');
  const fresh = probe(client, 'tcp', NODE6, 30081, 1, 1000)[0]!;
  t.notOk(fresh.ok, `a new flow with TC gone is not served (${fresh.error ?? 'answered'}): XDP opens no IPv6 flow`);
});
