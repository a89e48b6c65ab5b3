/**
 * Hostile and unlucky packets through BPF_PROG_RUN: lengths that lie,
 * floods of packets that open nothing, a full conntrack map, forged pod
 * sources, host-network endpoints on this node, and a connection whose
 * quiet direction expired.
 */
import t from 'tap';
import { CtDir, CtFlags } from '../src/dataplane/bpf/codecs.js';
import { native } from '../src/native/index.js';
import { csumFold, csumPartial, frame, icmpErrorFrame, PROTO, TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';

const WEB = [be('10.244.1.11', 8080), be('10.244.1.12', 8080)];

t.test('lengths that lie, and answers that quote IP options', async (t) => {
  const n = await progrunNode(t);
  t.same(n.rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', WEB)]).problems, []);
  t.same(n.rec.syncService('test/empty', [fe('ClusterIP', '10.96.0.30', 53, 'UDP', [])]).problems, []);
  t.same(n.rec.syncService('test/remote', [fe('NodePort', '0.0.0.0', 30081, 'TCP', [be('10.244.2.11', 8080, false)])]).problems, []);
  n.rec.setNodeAddresses([NODE_IP]);

  // A 54-byte SYN claiming 65535 bytes: malformed, no state, no ICMP.
  const liar = frame({ src: POD, dst: '10.96.0.10', dontFragment: true }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.SYN });
  liar.writeUInt16BE(65535, 14 + 2);
  const mal = reasonCount(n.dp, 'malformed');
  t.equal(n.runRaw('fromPod', liar).verdict, 'drop', 'total length past the frame: dropped');
  t.equal(reasonCount(n.dp, 'malformed'), mal + 1, 'counted as malformed');
  t.equal(reasonCount(n.dp, 'frag-needed'), 0, 'no fragmentation-needed answer');
  t.equal(n.dp.maps.ct.count(), 0, 'no conntrack entry');

  // Total length shorter than the headers it claims.
  const short = frame({ src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN });
  short.writeUInt16BE(30, 14 + 2);
  t.equal(n.runRaw('fromPod', short).verdict, 'drop', 'total length shorter than IP + TCP headers: dropped');
  // Ethernet padding after a short packet is fine.
  const padded = Buffer.concat([
    frame({ src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 40002, dport: 80, flags: TCP.SYN }),
    Buffer.alloc(6),
  ]);
  t.equal(n.runRaw('fromPod', padded).verdict, 'redirect', 'trailing Ethernet padding is not a lie');

  // UDP with IP options to a service without endpoints: answered, options quoted.
  const opts = Buffer.from([0x94, 0x04, 0, 0]); // router alert
  const r = n.run(
    'fromPod',
    { src: POD, dst: '10.96.0.30', options: opts },
    { proto: 'udp', sport: 44001, dport: 53, payload: Buffer.alloc(16, 1) },
  );
  t.equal(r.verdict, 'redirect', 'port unreachable sent back');
  t.equal(r.out.icmp?.type, 3);
  t.equal(r.out.icmp?.code, 3);
  t.ok(r.out.ipCsumOk && r.out.icmp?.csumOk, 'checksums valid');
  t.equal(r.out.totalLen, 20 + 8 + 24 + 8, 'quotes the 24-byte header with its options and 8 bytes of UDP');
  t.equal(r.out.icmp?.inner?.dport, 53, 'quoted flow readable');

  // A large first packet NodePort -> remote endpoint (SNAT) over a narrow
  // route: fragmentation-needed, not a SNAT failure.
  const before = reasonCount(n.dp, 'frag-needed');
  const big = n.run(
    'fromData',
    { src: CLIENT, dst: NODE_IP, dontFragment: true },
    { proto: 'tcp', sport: 41000, dport: 30081, flags: TCP.SYN, payload: Buffer.alloc(1500, 9) },
  );
  t.equal(big.verdict, 'redirect', 'answered');
  t.same([big.out.icmp?.type, big.out.icmp?.code, big.out.icmp?.mtu], [3, 4, 1280], 'fragmentation needed, route MTU');
  t.equal(reasonCount(n.dp, 'frag-needed'), before + 1, 'counted as frag-needed');
  t.equal(reasonCount(n.dp, 'nat-ports') + reasonCount(n.dp, 'no-snat-source'), 0, 'not as a SNAT failure');
});

t.test('packets that open nothing create nothing', async (t) => {
  const n = await progrunNode(t);
  n.rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', WEB), fe('NodePort', '0.0.0.0', 30080, 'TCP', WEB)]);
  n.rec.syncService('test/empty', [fe('ClusterIP', '10.96.0.30', 80, 'TCP', [])]);
  n.rec.setNodeAddresses([NODE_IP]);
  const flags = [
    ['ACK', TCP.ACK],
    ['RST', TCP.RST],
    ['no flags', 0],
    ['FIN|ACK', TCP.FIN | TCP.ACK],
    ['SYN|ACK', TCP.SYN | TCP.ACK],
    ['SYN|RST', TCP.SYN | TCP.RST],
  ] as const;
  for (const [name, f] of flags) {
    const a = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 50000 + f, dport: 80, flags: f });
    t.equal(a.verdict, 'pass', `${name} of an unknown flow to a ClusterIP: left to the kernel`);
    t.equal(a.out.dst, '10.96.0.10', `${name}: untouched`);
    const b = n.run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 51000 + f, dport: 30080, flags: f });
    t.equal(b.verdict, 'pass', `${name} of an unknown flow to a NodePort: left to the kernel`);
  }
  t.equal(n.dp.maps.ct.count(), 0, 'not one conntrack entry');
  t.equal(reasonCount(n.dp, 'ct-not-opening'), flags.length * 2, 'each counted as ct-not-opening');
  const ack = n.run(
    'fromPod',
    { src: POD, dst: '10.96.0.30' },
    { proto: 'tcp', sport: 52000, dport: 80, flags: TCP.ACK, seq: 1, ack: 777 },
  );
  t.equal(ack.verdict, 'redirect', 'a stray ACK to a service without endpoints is rejected as kube-proxy does');
  t.equal(ack.out.tcpFlags, TCP.RST, 'with a bare RST');
  t.equal(ack.out.seq, 777, 'whose sequence number is the ACK it answers');
  const rst = n.run('fromPod', { src: POD, dst: '10.96.0.30' }, { proto: 'tcp', sport: 52001, dport: 80, flags: TCP.RST });
  t.equal(rst.verdict, 'drop', 'a RST is never answered');
  // A SYN opens; the flow's ACKs then follow it.
  const syn = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 53000, dport: 80, flags: TCP.SYN });
  const ack2 = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 53000, dport: 80, flags: TCP.ACK });
  t.equal(ack2.out.dst, syn.out.dst, 'the ACK of an opened flow is translated like its SYN');
  t.equal(n.dp.maps.ct.count(), 2, 'one connection, two halves');
});

t.test('a full conntrack map refuses new flows and keeps every established one', async (t) => {
  const n = await progrunNode(t, { mapSizes: { conntrack: 64, natFrontend: 64, natBackend: 64, natAffinity: 64 } });
  n.rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', WEB)]);
  n.rec.syncService('test/dns', [fe('ClusterIP', '10.96.0.53', 53, 'UDP', [be('10.244.1.13', 53)])]);
  // Six established connections.
  const conns: Array<{ sport: number; be: string }> = [];
  for (let i = 0; i < 6; i++) {
    const s = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 30000 + i, dport: 80, flags: TCP.SYN });
    n.run('fromPod', { src: s.out.dst, dst: POD }, { proto: 'tcp', sport: 8080, dport: 30000 + i, flags: TCP.SYN | TCP.ACK });
    conns.push({ sport: 30000 + i, be: s.out.dst });
  }
  for (const c of conns) n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: c.sport, dport: 80, flags: TCP.ACK });
  // A flood of SYNs from forged sources (answered by the backends), and one of ACKs.
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const src = `203.0.113.${1 + (i % 250)}`;
    const syn = n.run('fromData', { src, dst: '10.96.0.10' }, { proto: 'tcp', sport: 1024 + i, dport: 80, flags: TCP.SYN });
    if (syn.verdict === 'drop') refused++;
    else n.run('fromPod', { src: syn.out.dst, dst: src }, { proto: 'tcp', sport: 8080, dport: 1024 + i, flags: TCP.SYN | TCP.ACK });
    n.run('fromData', { src, dst: '10.96.0.10' }, { proto: 'tcp', sport: 2048 + i, dport: 80, flags: TCP.ACK });
  }
  t.ok(n.dp.maps.ct.count() <= 64, `the map holds what it can (${n.dp.maps.ct.count()}/64)`);
  t.ok(refused >= 300 - 26, `SYNs beyond the map are refused (${refused})`);
  t.equal(reasonCount(n.dp, 'ct-full'), refused, 'each refusal counted as ct-full');
  t.equal(reasonCount(n.dp, 'ct-insert'), 0, 'not as a generic insert failure');
  for (const c of conns) {
    const f = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: c.sport, dport: 80, flags: TCP.ACK });
    t.equal(f.out.dst, c.be, `connection ${c.sport}: forward still translated to its backend`);
    const r = n.run('fromPod', { src: c.be, dst: POD }, { proto: 'tcp', sport: 8080, dport: c.sport, flags: TCP.ACK });
    t.equal(r.out.src, '10.96.0.10', `connection ${c.sport}: reply still reverse-translated`);
  }
  const udp = n.run('fromPod', { src: POD, dst: '10.96.0.53' }, { proto: 'udp', sport: 5353, dport: 53 });
  t.equal(udp.verdict, 'drop', 'a new UDP flow is refused too while the map is full');
  const now = native().monotonicNs();
  const left = (k: { saddr: string }) => Number(n.dp.maps.ct.entries().find(([e]) => e.saddr === k.saddr)![1].expiresNs - now) / 1e9;
  t.ok(
    left({ saddr: '203.0.113.1' }) <= 20,
    'a forged SYN answered by its backend keeps the SYN-sent timeout: the flood ages out in seconds',
  );
  t.ok(left({ saddr: POD }) > 3000, 'a connection whose client acknowledged keeps the established timeout');
});

t.test('a quiet direction of a live connection does not expire on its own', async (t) => {
  const n = await progrunNode(t);
  n.rec.syncService('test/dns', [fe('ClusterIP', '10.96.0.53', 53, 'UDP', [be('10.244.1.13', 53)])]);
  n.run('fromPod', { src: POD, dst: '10.96.0.53' }, { proto: 'udp', sport: 6000, dport: 53 });
  const rk = { saddr: '10.244.1.13', daddr: POD, sport: 53, dport: 6000, proto: PROTO.UDP };
  const rv = n.dp.maps.ct.get(rk)!;
  t.equal(rv.dir, CtDir.REPLY);
  n.dp.maps.ct.set(rk, { ...rv, expiresNs: native().monotonicNs() - 1n }); // the reply side went quiet
  const back = n.run('fromPod', { src: '10.244.1.13', dst: POD }, { proto: 'udp', sport: 53, dport: 6000 });
  t.equal(back.out.src, '10.96.0.53', 'the reply is still translated while the forward half lives');
  t.ok(n.dp.maps.ct.get(rk)!.expiresNs > native().monotonicNs(), "and takes its peer's deadline");
});

t.test('a pod cannot send from an address that is not routed to it', async (t) => {
  const n = await progrunNode(t);
  n.rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', WEB)]);
  const key = (addr: string, len: number) => ({ prefixlen: 32 + len, ifindex: n.ifindex, addr });
  const open = (src: string) =>
    n.run('fromPod', { src, dst: '10.96.0.10' }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.SYN }).verdict;
  t.equal(open('203.0.113.77'), 'redirect', 'an interface with no routes is not checked');
  n.dp.maps.podSrcs.set(key(POD, 32), { v: 1 });
  n.dp.maps.podSrcs.set(key('0.0.0.0', 0), { v: 0 });
  n.dp.maps.ct.deleteMany(n.dp.maps.ct.entries().map(([k]) => k));
  t.equal(open(POD), 'redirect', 'its own address passes');
  const before = reasonCount(n.dp, 'spoofed');
  t.equal(open('203.0.113.77'), 'drop', 'a forged source is dropped');
  t.equal(
    n.run('fromPod', { src: '10.244.1.12', dst: '10.244.1.11' }, { proto: 'udp', sport: 1, dport: 2 }).verdict,
    'drop',
    "also when it goes to no service (another pod's address)",
  );
  t.equal(reasonCount(n.dp, 'spoofed'), before + 2, 'counted as spoofed');
  t.equal(n.dp.maps.ct.entries().filter(([k]) => k.saddr === '203.0.113.77').length, 0, 'and leaves no state');
  n.dp.maps.podSrcs.set(key('10.250.0.0', 24), { v: 1 });
  t.equal(
    n.run('fromPod', { src: '10.250.0.9', dst: '10.96.0.10' }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN }).verdict,
    'redirect',
    "a prefix routed to the interface is the pod's too",
  );
  t.equal(
    n.run('fromData', { src: '203.0.113.77', dst: '10.96.0.10' }, { proto: 'tcp', sport: 40002, dport: 80, flags: TCP.SYN }).verdict,
    'redirect',
    'data interfaces are not pod interfaces',
  );
});

t.test('host-network endpoints on this node: replies are translated on egress', async (t) => {
  const n = await progrunNode(t);
  const host = [be(NODE_IP, 6443)];
  n.rec.syncService('default/kubernetes', [fe('ClusterIP', '10.96.0.1', 443, 'TCP', host), fe('NodePort', '0.0.0.0', 30443, 'TCP', host)]);
  n.rec.syncService('kube-system/dns', [fe('ClusterIP', '10.96.0.10', 53, 'UDP', [be(NODE_IP, 5353)])]);
  n.rec.setNodeAddresses([NODE_IP]);

  const cases = [
    {
      name: 'ClusterIP TCP from a pod',
      role: 'fromPod' as const,
      client: POD,
      svc: '10.96.0.1',
      port: 443,
      proto: 'tcp' as const,
      target: 6443,
    },
    {
      name: 'NodePort TCP from outside',
      role: 'fromData' as const,
      client: CLIENT,
      svc: NODE_IP,
      port: 30443,
      proto: 'tcp' as const,
      target: 6443,
    },
    {
      name: 'ClusterIP UDP from a pod',
      role: 'fromPod' as const,
      client: POD,
      svc: '10.96.0.10',
      port: 53,
      proto: 'udp' as const,
      target: 5353,
    },
  ];
  for (const [i, c] of cases.entries()) {
    const sport = 42000 + i;
    const fwd = n.run(c.role, { src: c.client, dst: c.svc }, { proto: c.proto, sport, dport: c.port, flags: TCP.SYN });
    t.equal(fwd.verdict, 'pass', `${c.name}: handed to the local stack`);
    t.same(
      [fwd.out.dst, fwd.out.dport, fwd.out.src, fwd.out.sport],
      [NODE_IP, c.target, c.client, sport],
      `${c.name}: DNATed to the node's endpoint, client kept`,
    );
    t.ok(fwd.out.ipCsumOk && fwd.out.l4CsumOk, `${c.name}: checksums valid`);
    const rv = n.dp.maps.ct.get({
      saddr: NODE_IP,
      daddr: c.client,
      sport: c.target,
      dport: sport,
      proto: c.proto === 'tcp' ? PROTO.TCP : PROTO.UDP,
    });
    t.ok(rv && rv.flags & CtFlags.HOST_BE, `${c.name}: the reply half knows the backend is the host`);
    const reply = n.run(
      'hostReply',
      { src: NODE_IP, dst: c.client },
      { proto: c.proto, sport: c.target, dport: sport, flags: TCP.SYN | TCP.ACK },
    );
    t.equal(reply.verdict, 'pass', `${c.name}: the host's reply continues on its way`);
    t.same(
      [reply.out.src, reply.out.sport, reply.out.dst, reply.out.dport],
      [c.svc, c.port, c.client, sport],
      `${c.name}: reverse-translated on egress`,
    );
    t.ok(reply.out.ipCsumOk && reply.out.l4CsumOk, `${c.name}: reply checksums valid`);
  }
  const other = n.run('hostReply', { src: NODE_IP, dst: CLIENT }, { proto: 'tcp', sport: 22, dport: 50000, flags: TCP.ACK });
  t.same([other.verdict, other.out.src, other.out.sport], ['pass', NODE_IP, 22], "the node's own traffic is untouched");
  const fwdPod = n.run('hostReply', { src: POD, dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: 50000, flags: TCP.ACK });
  t.same([fwdPod.verdict, fwdPod.out.src], ['pass', POD], 'forwarded traffic is untouched');
});

t.test('an ICMP error whose quote ends before the quoted ports is left alone', async (t) => {
  const n = await progrunNode(t);
  n.rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', WEB)]);
  const fwd = n.run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 43000, dport: 80, flags: TCP.SYN });
  // The quote holds only 12 bytes of the inner header; the rest of it, and
  // the ports, sit in a trailer after the outer packet.
  const full = icmpErrorFrame({ src: fwd.out.dst, dst: POD }, 3, 3, fwd.raw.subarray(14, 14 + 28));
  const cut = Buffer.from(full);
  cut.writeUInt16BE(20 + 8 + 12, 14 + 2);
  cut.writeUInt16BE(0, 14 + 10);
  cut.writeUInt16BE(csumFold(csumPartial(cut.subarray(14, 34))), 14 + 10);
  const r = n.runRaw('fromPod', cut);
  t.equal(r.verdict, 'pass', 'passed on');
  t.same(r.raw, cut, 'untouched: bytes past the packet are not a quote to translate');
});
