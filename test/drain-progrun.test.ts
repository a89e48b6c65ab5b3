/**
 * Drain mode (rollback to kube-proxy, bpf/lib/mode.h) through BPF_PROG_RUN:
 * a packet that would open a new service flow passes to the stack
 * untouched and creates no conntrack entry; packets of flows already in our
 * conntrack are served exactly as before; a SYN reopening a closed flow of
 * ours is a new flow (kube-proxy's) and removes the old entries; switching
 * back serves new flows again. On standby (attached while taking over)
 * every packet passes untouched, even of flows we track. Runs in a
 * namespace of its own.
 */
import t from 'tap';
import { frame, PROTO, TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { isDraining, setDraining, setMode } from '../src/dataplane/bpf/drain.js';
import { frame6 } from '../testkit/packet6.js';
import { POD6, progrun6Node } from './helpers/progrun6.js';

const VIP = '10.96.0.10';
const DNS = '10.96.0.53';
const EMPTY = '10.96.0.30';
const WEB = ['10.244.1.11', '10.244.1.12'];

t.test('drain mode through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { dp, rec } = node;
  const web = WEB.map((a) => be(a, 8080));
  rec.syncService('test/web', [
    fe('ClusterIP', VIP, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('NodePort', '0.0.0.0', 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
  ]);
  rec.syncService('test/dns', [fe('ClusterIP', DNS, 53, 'UDP', [be('10.244.1.13', 5353)])]);
  rec.syncService('test/empty', [fe('ClusterIP', EMPTY, 80, 'TCP', [])]);
  rec.setNodeAddresses([NODE_IP]);
  const ctKey = (saddr: string, daddr: string, sport: number, dport: number, proto: number) => ({ saddr, daddr, sport, dport, proto });
  const ctSize = () => dp.maps.ct.count();

  // Flows opened while serving: a TCP connection (handshake done), a UDP flow, a NodePort connection.
  const tcp = node.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40000, dport: 80 });
  t.equal(tcp.verdict, 'redirect', 'serving: a SYN to the ClusterIP is DNATed');
  const tcpBackend = tcp.out.dst;
  node.run('fromPod', { src: tcpBackend, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40000, flags: TCP.SYN | TCP.ACK });
  node.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.ACK });
  const udp = node.run('fromPod', { src: POD, dst: DNS }, { proto: 'udp', sport: 5000, dport: 53, payload: Buffer.from('q1') });
  t.equal(udp.verdict, 'redirect', 'serving: a UDP datagram is DNATed');
  const np = node.run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41000, dport: 30080 });
  t.equal(np.verdict, 'redirect', 'serving: a NodePort SYN is DNATed');
  const npBackend = np.out.dst;
  t.equal(ctSize(), 6, 'three flows, two entries each');

  setDraining(dp.maps, true);
  t.ok(isDraining(dp.maps), 'drain mode set in bpfproxy_mode');

  t.test('a new TCP flow to a service passes untouched, creating nothing', async (t) => {
    const before = reasonCount(dp, 'drain-new');
    const f = frame({ src: POD, dst: VIP }, { proto: 'tcp', sport: 40001, dport: 80 });
    const r = node.runRaw('fromPod', f);
    t.equal(r.verdict, 'pass', 'left to the stack (kube-proxy)');
    t.same(r.raw, f, 'byte for byte as sent');
    t.notOk(dp.maps.ct.get(ctKey(POD, VIP, 40001, 80, PROTO.TCP)), 'no conntrack entry');
    t.equal(ctSize(), 6, 'conntrack unchanged');
    t.equal(reasonCount(dp, 'drain-new') - before, 1, 'counted as drain-new');
  });

  t.test('a new UDP flow and a new NodePort connection pass untouched too', async (t) => {
    const u = frame({ src: POD, dst: DNS }, { proto: 'udp', sport: 5001, dport: 53, payload: Buffer.from('q') });
    const ur = node.runRaw('fromPod', u);
    t.equal(ur.verdict, 'pass');
    t.same(ur.raw, u, 'UDP datagram untouched');
    const n = frame({ src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41001, dport: 30080 });
    const nr = node.runRaw('fromData', n);
    t.equal(nr.verdict, 'pass');
    t.same(nr.raw, n, 'NodePort SYN untouched');
    t.equal(ctSize(), 6, 'no entry created');
  });

  t.test('a service without endpoints is not answered by us while draining: kube-proxy decides', async (t) => {
    const s = frame({ src: POD, dst: EMPTY }, { proto: 'tcp', sport: 40002, dport: 80 });
    const r = node.runRaw('fromPod', s);
    t.equal(r.verdict, 'pass', 'no reject from us');
    t.same(r.raw, s, 'untouched');
  });

  t.test('established flows keep being served, to the same backend', async (t) => {
    const d = node.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.ACK | TCP.PSH });
    t.equal(d.verdict, 'redirect', 'data of the TCP connection is forwarded');
    t.equal(d.out.dst, tcpBackend, 'to its backend');
    t.equal(d.out.dport, 8080);
    t.ok(d.out.ipCsumOk && d.out.l4CsumOk, 'checksums valid');
    const back = node.run('fromPod', { src: tcpBackend, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40000, flags: TCP.ACK });
    t.equal(back.verdict, 'redirect', 'its reply is reverse-NATed');
    t.equal(back.out.src, VIP);
    t.equal(back.out.sport, 80);
    const u = node.run('fromPod', { src: POD, dst: DNS }, { proto: 'udp', sport: 5000, dport: 53, payload: Buffer.from('q2') });
    t.equal(u.verdict, 'redirect', 'the UDP flow is still translated');
    t.equal(u.out.dst, '10.244.1.13');
    const n = node.run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41000, dport: 30080, flags: TCP.ACK });
    t.equal(n.verdict, 'redirect', 'the NodePort connection too');
    t.equal(n.out.dst, npBackend);
    t.equal(ctSize(), 6, 'still the same six entries');
  });

  t.test('a SYN reusing the port of a closed flow of ours is a new flow: entries removed, passed', async (t) => {
    node.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.RST });
    t.ok(dp.maps.ct.get(ctKey(POD, VIP, 40000, 80, PROTO.TCP)), 'the reset flow is still tracked (RST timeout)');
    const s = frame({ src: POD, dst: VIP }, { proto: 'tcp', sport: 40000, dport: 80 });
    const r = node.runRaw('fromPod', s);
    t.equal(r.verdict, 'pass', 'the new SYN goes to the stack');
    t.same(r.raw, s, 'untouched');
    t.notOk(dp.maps.ct.get(ctKey(POD, VIP, 40000, 80, PROTO.TCP)), 'forward entry removed');
    t.notOk(dp.maps.ct.get(ctKey(tcpBackend, POD, 8080, 40000, PROTO.TCP)), 'reply entry removed');
    t.equal(ctSize(), 4, 'the other flows stay');
    const reply = frame({ src: tcpBackend, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40000, flags: TCP.SYN | TCP.ACK });
    const rr = node.runRaw('fromPod', reply);
    t.equal(rr.verdict, 'pass', "kube-proxy's backend's SYN-ACK is left to the kernel's reverse NAT");
    t.same(rr.raw, reply, 'untouched');
  });

  t.test('standby (taking over): every packet passes untouched, tracked flows too, nothing created', async (t) => {
    setMode(dp.maps, 'standby');
    t.notOk(isDraining(dp.maps), 'standby is not draining');
    const size = ctSize();
    const frames: Array<['fromPod' | 'fromData', Buffer, string]> = [
      ['fromPod', frame({ src: POD, dst: VIP }, { proto: 'tcp', sport: 40010, dport: 80 }), 'a new SYN'],
      [
        'fromPod',
        frame({ src: POD, dst: DNS }, { proto: 'udp', sport: 5000, dport: 53, payload: Buffer.from('q3') }),
        'a tracked UDP flow',
      ],
      [
        'fromData',
        frame({ src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41000, dport: 30080, flags: TCP.ACK }),
        'a tracked NodePort flow',
      ],
      ['fromPod', frame({ src: POD, dst: EMPTY }, { proto: 'tcp', sport: 40011, dport: 80 }), 'a service without endpoints'],
    ];
    for (const [role, f, what] of frames) {
      const r = node.runRaw(role, f);
      t.equal(r.verdict, 'pass', `${what}: passed`);
      t.same(r.raw, f, `${what}: untouched`);
    }
    const host = frame({ src: NODE_IP, dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: 41000, flags: TCP.ACK });
    const hr = node.runRaw('hostReply', host);
    t.equal(hr.verdict, 'pass');
    t.same(hr.raw, host, 'the egress program passes too');
    t.equal(ctSize(), size, 'no entry created or removed');
    setMode(dp.maps, 'drain');
  });

  t.test('drain off: new flows are ours again', async (t) => {
    setDraining(dp.maps, false);
    t.notOk(isDraining(dp.maps));
    const r = node.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40003, dport: 80 });
    t.equal(r.verdict, 'redirect', 'DNATed');
    t.ok(WEB.includes(r.out.dst), 'to a backend');
    t.ok(dp.maps.ct.get(ctKey(POD, VIP, 40003, 80, PROTO.TCP)), 'tracked');
    const e = node.run('fromPod', { src: POD, dst: EMPTY }, { proto: 'tcp', sport: 40004, dport: 80 });
    t.equal(e.verdict, 'redirect', 'a service without endpoints is rejected again (RST sent back)');
  });
});

/**
 * Drain mode on the IPv6 path (bpf/lib/service6.h): as above, a SYN that
 * reopens a closed flow of ours is kube-proxy's and removes both entries,
 * so the kernel's backend's SYN-ACK is not rewritten by the old reply
 * entry; an established IPv6 flow keeps being served. Before, the IPv6
 * path left the entries to age out and translated that SYN-ACK.
 */
t.test('drain mode, IPv6: a reopening SYN removes the closed flow', async (t) => {
  const n = await progrun6Node(t);
  const VIP6 = 'fd00:10:96::10';
  const WEB6 = 'fd00:10:244:1::11';
  t.same(n.rec.syncService('test/web', [fe('ClusterIP', VIP6, 80, 'TCP', [be(WEB6, 8080)])]).problems, []);
  const run = (src: string, dst: string, sport: number, dport: number, flags: number = TCP.SYN) =>
    n.runRaw('fromPod', frame6({ src, dst }, { proto: 'tcp', sport, dport, flags }));
  const key6 = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: PROTO.TCP });
  for (const sport of [44000, 44001]) {
    t.equal(run(POD6, VIP6, sport, 80).verdict, 'redirect', `port ${sport}: serving, the SYN is DNATed`);
    run(WEB6, POD6, 8080, sport, TCP.SYN | TCP.ACK);
    run(POD6, VIP6, sport, 80, TCP.ACK);
  }
  setDraining(n.dp.maps, true);
  run(POD6, VIP6, 44000, 80, TCP.RST);
  t.ok(n.dp.maps.ct6.get(key6(POD6, VIP6, 44000, 80)), 'the reset flow is still tracked');
  const before = reasonCount(n.dp, 'drain-new');
  const syn = frame6({ src: POD6, dst: VIP6 }, { proto: 'tcp', sport: 44000, dport: 80 });
  const r = n.runRaw('fromPod', syn);
  t.same([r.verdict, r.raw], ['pass', syn], 'the reopening SYN goes to the stack untouched');
  t.equal(reasonCount(n.dp, 'drain-new') - before, 1, 'counted as drain-new');
  t.notOk(n.dp.maps.ct6.get(key6(POD6, VIP6, 44000, 80)), 'forward entry removed');
  t.notOk(n.dp.maps.ct6.get(key6(WEB6, POD6, 8080, 44000)), 'reply entry removed');
  const reply = frame6({ src: WEB6, dst: POD6 }, { proto: 'tcp', sport: 8080, dport: 44000, flags: TCP.SYN | TCP.ACK });
  t.same(n.runRaw('fromPod', reply).raw, reply, "kube-proxy's backend's SYN-ACK is left to the kernel's reverse NAT, untouched");
  const d = run(POD6, VIP6, 44001, 80, TCP.ACK | TCP.PSH);
  t.same([d.verdict, d.out.dst], ['redirect', WEB6], 'the open flow is still served');
  t.ok(n.dp.maps.ct6.get(key6(POD6, VIP6, 44001, 80)), 'and still tracked');
});
