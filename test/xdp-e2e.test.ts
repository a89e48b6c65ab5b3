/**
 * XDP acceleration with real packets on veths in namespaces the test
 * creates: a LAN (bridge) with an external client, this node (data
 * interface d0, a local backend pod behind calia) and a second node with a
 * remote backend pod. NodePort to the local backend (client address kept)
 * and to the remote one (SNAT to this node, forwarded back out of d0), TCP
 * and UDP, give the same results with XDP off, on (native and generic),
 * and with XDP alone on d0 (its TC program detached), which shows XDP
 * itself translated and forwarded them.
 *
 * Native XDP_TX on a veth delivers to its peer only when the peer runs an
 * XDP program (or has GRO on; no ethtool here): the LAN side of d0 gets the
 * object's XDP pass-through program (bpfproxy_xdp_afxdp with no engine
 * interface configured passes every frame). Every probe is bounded.
 */
import t, { type Test } from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { XdpAccel, xdpDataProgram, type XdpMode } from '../src/dataplane/bpf/xdp.js';
import { ip, sh, sysctl } from '../testkit/netns.js';
import { probe, startEcho } from '../lab/lab.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const NODE_IP = '192.0.2.11';
const NODE2_IP = '192.0.2.12';
const CLIENT_IP = '192.0.2.100';
const LOCAL_POD = '10.244.1.11';
const REMOTE_POD = '10.244.2.11';

const ifindexIn = (ns: string, name: string): number =>
  inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === name)!.index,
  );

/** A veth between ns and the LAN bridge, the ns side named eth0 with addr/24. */
function onLan(t: Test, lan: string, lanIf: string, ns: string, addr: string, nsIf = 'eth0'): void {
  ip(lan, 'link', 'add', lanIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns);
  ip(lan, 'link', 'set', lanIf, 'master', 'br0');
  ip(lan, 'link', 'set', lanIf, 'up');
  ip(ns, 'addr', 'add', `${addr}/24`, 'dev', nsIf);
  ip(ns, 'link', 'set', nsIf, 'up');
  t.comment(`${ns}/${nsIf} ${addr} on the LAN`);
}

/** A pod namespace behind hostIf of node (/32, 169.254.1.1 as its gateway). */
function pod(t: Test, node: string, hostIf: string, addr: string, src: string): string {
  const ns = tmpNetns(t, 'bpxx');
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', src);
  return ns;
}

/**
 * Checksum offload off on a veth (ETHTOOL_STXCSUM through SIOCETHTOOL; no
 * ethtool binary here): its frames then carry complete checksums, as
 * frames from a NIC do. Frames a local socket sends over a veth otherwise
 * carry a partial one (CHECKSUM_PARTIAL, completed by whoever transmits on
 * hardware); XDP cannot see that state, and a frame it sends with XDP_TX
 * loses it (README, Limits).
 */
function txChecksumOff(ns: string, dev: string): void {
  const py = [
    'import ctypes, fcntl, socket, struct, sys',
    "ev = ctypes.create_string_buffer(struct.pack('II', 0x17, 0), 8)",
    's = socket.socket()',
    "fcntl.ioctl(s.fileno(), 0x8946, struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(ev)))",
  ].join('\n');
  sh('python3', ['-c', py, dev], { ns });
}

interface Seen {
  ok: boolean;
  pod: string | undefined;
  peerIp: string | undefined;
}

t.test('NodePort to a local and a remote backend: the same results with XDP off, native, generic, and XDP alone', async (t) => {
  const lan = tmpNetns(t, 'bpxx');
  ip(lan, 'link', 'add', 'br0', 'type', 'bridge');
  ip(lan, 'link', 'set', 'br0', 'up');
  const node = tmpNetns(t, 'bpxx');
  const node2 = tmpNetns(t, 'bpxx');
  const client = tmpNetns(t, 'bpxx');
  for (const ns of [node, node2]) {
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    sysctl(ns, 'net.ipv4.conf.all.rp_filter', '0');
    sysctl(ns, 'net.ipv4.conf.default.rp_filter', '0');
  }
  onLan(t, lan, 'ln', node, NODE_IP, 'd0');
  onLan(t, lan, 'l2', node2, NODE2_IP);
  onLan(t, lan, 'lc', client, CLIENT_IP);
  const localPod = pod(t, node, 'calia', LOCAL_POD, NODE_IP);
  const remotePod = pod(t, node2, 'calib', REMOTE_POD, NODE2_IP);
  ip(node, 'route', 'add', '10.244.2.0/24', 'via', NODE2_IP);
  // the senders whose frames XDP rewrites: complete checksums, as from a NIC
  txChecksumOff(client, 'eth0');
  txChecksumOff(remotePod, 'eth0');

  const dp = await tmpDatapath(t);
  const d0 = ifindexIn(node, 'd0');
  const calia = ifindexIn(node, 'calia');
  const links = inNetns(node, () => ({
    d0: native().tcxAttach(d0, 'ingress', dp.programs.fromData.fd),
    calia: native().tcxAttach(calia, 'ingress', dp.programs.fromPod.fd),
  }));
  t.teardown(() => {
    links.calia.close();
    links.d0.close();
  });
  dp.maps.podIfs.set({ ifindex: calia }, { v: 1 });
  const rec = new BpfReconciler(dp.maps);
  t.same(
    rec.syncService('x/web', [
      fe('NodePort', '0.0.0.0', 30080, 'TCP', [be(LOCAL_POD, 8080)]),
      fe('NodePort', '0.0.0.0', 30080, 'UDP', [be(LOCAL_POD, 5353)]),
      fe('NodePort', '0.0.0.0', 30081, 'TCP', [be(REMOTE_POD, 8080, false)]),
      fe('NodePort', '0.0.0.0', 30081, 'UDP', [be(REMOTE_POD, 5353, false)]),
    ]).problems,
    [],
  );
  rec.setNodeAddresses([NODE_IP]);

  // the LAN side of d0 runs an XDP program, so native XDP_TX frames are delivered
  const passProg = dp.objects[0]!.programs().find((p) => p.name === 'bpfproxy_xdp_afxdp')!;
  const lnLink = inNetns(lan, () => native().xdpLinkAttach(ifindexIn(lan, 'ln'), passProg.fd, 'native'));
  t.teardown(() => lnLink.close());

  const deadline = Date.now() + 10_000;
  startEcho(localPod, 'local', deadline);
  startEcho(remotePod, 'remote', deadline);

  const see = (mode: 'tcp' | 'udp', port: number): Seen[] =>
    probe(client, mode, NODE_IP, port, 3, 1500).map((a) => ({ ok: a.ok, pod: a.pod, peerIp: a.peer?.split(':')[0] }));
  const round = () => ({
    localTcp: see('tcp', 30080),
    localUdp: see('udp', 30080),
    remoteTcp: see('tcp', 30081),
    remoteUdp: see('udp', 30081),
  });
  const want = {
    localTcp: Array(3).fill({ ok: true, pod: 'local', peerIp: CLIENT_IP }),
    localUdp: Array(3).fill({ ok: true, pod: 'local', peerIp: CLIENT_IP }),
    remoteTcp: Array(3).fill({ ok: true, pod: 'remote', peerIp: NODE_IP }),
    remoteUdp: Array(3).fill({ ok: true, pod: 'remote', peerIp: NODE_IP }),
  };

  t.same(round(), want, 'XDP off (TC alone): local backend sees the client, remote backend sees the node');

  const { log } = captureLogger();
  const xdp = new XdpAccel(undefined, log);
  t.teardown(() => inNetns(node, () => xdp.sync(null, [], 0)));
  const prog = xdpDataProgram(dp.objects[0]!, BPF_DIR);
  const on = (mode: XdpMode) => inNetns(node, () => xdp.sync(mode, [{ index: d0, name: 'd0' }], prog));

  for (const mode of ['native', 'generic'] as const) {
    on(mode);
    t.same(xdp.list(), [{ ifindex: d0, name: 'd0', mode }], `XDP ${mode} on d0`);
    t.same(round(), want, `XDP ${mode} + TC: the same results`);
  }

  // XDP alone on d0: whatever still works was translated and forwarded by XDP
  on('native');
  native().linkDetach(links.d0);
  t.same(
    inNetns(node, () => native().tcxList(d0, 'ingress')),
    [],
    'no TC program on d0 ingress',
  );
  t.same(round(), want, 'XDP alone on d0 (TC detached there): the same results');
});
