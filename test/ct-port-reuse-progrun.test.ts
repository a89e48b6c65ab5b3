/**
 * Source-port reuse after a closed TC-path flow, through BPF_PROG_RUN. A pod
 * that connected to a service through the TC path and closed the
 * connection may reuse the source port to reach the same backend directly
 * (socket LB sent its SYN straight to the backend, or plain pod to pod)
 * while the old flow's entries wait out their closing timeout. The new
 * connection's tuple is the old flow's translated tuple, so the backend's
 * SYN-ACK matches the old reply entry: before the fix its source was
 * rewritten to the service address and the connection hung. Now a SYN-ACK
 * on a closed (reset, or both FINs) translated reply entry removes both
 * entries and passes untouched (counted as ct-stale-reply); a SYN-ACK of a
 * flow the TC path opened, or reopened through the service, is still
 * translated. Runs in a namespace of its own.
 */
import t, { type Test } from 'tap';
import { frame, PROTO, TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { NODE_IP, POD, progrunNode, type ProgrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { runXdp } from './helpers/xdp.js';
import { inNetns } from './helpers/env.js';
import { ip } from '../testkit/netns.js';
import { frame6 } from '../testkit/packet6.js';
import { NODE6, POD6, progrun6Node } from './helpers/progrun6.js';

const VIP = '10.96.0.10';
const HOST_VIP = '10.96.0.1';
const WEB = '10.244.1.11';
const REMOTE_VIP = '10.96.0.20';
const REMOTE = '10.244.2.5'; // a backend on another node: its replies come in on the data interface

const key = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: PROTO.TCP });

/** A TC-path connection POD:sport -> VIP:80 (backend WEB:8080), handshake done. */
function openTc(t: Test, n: ProgrunNode, sport: number): void {
  const syn = n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport, dport: 80 });
  t.same([syn.verdict, syn.out.dst, syn.out.dport], ['redirect', WEB, 8080], `port ${sport}: the SYN to the VIP is DNATed to the backend`);
  const sa = n.run('fromPod', { src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: sport, flags: TCP.SYN | TCP.ACK });
  t.same([sa.verdict, sa.out.src, sa.out.sport], ['redirect', VIP, 80], `port ${sport}: its SYN-ACK comes back from the VIP`);
  n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport, dport: 80, flags: TCP.ACK });
}

t.test('port reuse after a closed TC-path flow', async (t) => {
  const n = await progrunNode(t);
  n.rec.syncService('test/web', [fe('ClusterIP', VIP, 80, 'TCP', [be(WEB, 8080)])]);
  n.rec.syncService('default/kubernetes', [fe('ClusterIP', HOST_VIP, 443, 'TCP', [be(NODE_IP, 6443)])]);
  n.rec.syncService('test/remote', [fe('ClusterIP', REMOTE_VIP, 80, 'TCP', [be(REMOTE, 8080)])]);
  n.rec.setNodeAddresses([NODE_IP]);
  const stale = () => reasonCount(n.dp, 'ct-stale-reply');

  t.test('a TC-path connection SYN-ACK is translated, nothing judged stale', async (t) => {
    const before = stale();
    openTc(t, n, 40000);
    t.equal(stale(), before, 'no ct-stale-reply');
    t.ok(n.dp.maps.ct.get(key(WEB, POD, 8080, 40000)), 'reply entry kept');
  });

  t.test('reset, then a direct connection from the same port: its SYN-ACK passes untranslated', async (t) => {
    const before = stale();
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN });
    n.run('fromPod', { src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40001, flags: TCP.SYN | TCP.ACK });
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.ACK });
    const rst = n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.RST });
    t.equal(rst.verdict, 'redirect', 'the RST is forwarded to the backend');
    t.ok(n.dp.maps.ct.get(key(WEB, POD, 8080, 40001)), 'the reset flow is still tracked (RST timeout)');

    // Socket LB: the pod's SYN leaves addressed to the backend itself.
    const syn = frame({ src: POD, dst: WEB }, { proto: 'tcp', sport: 40001, dport: 8080 });
    const sr = n.runRaw('fromPod', syn);
    t.equal(sr.verdict, 'pass', 'the direct SYN is left to the stack');
    t.same(sr.raw, syn, 'untouched');

    const synack = frame({ src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40001, flags: TCP.SYN | TCP.ACK });
    const r = n.runRaw('fromPod', synack);
    t.equal(r.verdict, 'pass', "the backend's SYN-ACK goes on through the stack");
    t.same(r.raw, synack, 'byte for byte: its source is the backend the client connected to, not the VIP');
    t.equal(stale() - before, 1, 'counted as ct-stale-reply');
    t.notOk(n.dp.maps.ct.get(key(WEB, POD, 8080, 40001)), 'old reply entry removed');
    t.notOk(n.dp.maps.ct.get(key(POD, VIP, 40001, 80)), 'old forward entry removed');

    const ack = frame({ src: POD, dst: WEB }, { proto: 'tcp', sport: 40001, dport: 8080, flags: TCP.ACK });
    const ar = n.runRaw('fromPod', ack);
    t.same([ar.verdict, ar.raw], ['pass', ack], "the client's ACK is untouched too");
    const data = frame({ src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40001, flags: TCP.ACK | TCP.PSH });
    const dr = n.runRaw('fromPod', data);
    t.same([dr.verdict, dr.raw], ['pass', data], "the backend's data is untouched");
  });

  t.test('both FINs seen, then a direct connection: the same', async (t) => {
    openTc(t, n, 40002);
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40002, dport: 80, flags: TCP.FIN | TCP.ACK });
    n.run('fromPod', { src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40002, flags: TCP.FIN | TCP.ACK });
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40002, dport: 80, flags: TCP.ACK });
    const before = stale();
    n.runRaw('fromPod', frame({ src: POD, dst: WEB }, { proto: 'tcp', sport: 40002, dport: 8080 }));
    const synack = frame({ src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40002, flags: TCP.SYN | TCP.ACK });
    const r = n.runRaw('fromPod', synack);
    t.same([r.verdict, r.raw], ['pass', synack], 'SYN-ACK untouched');
    t.equal(stale() - before, 1, 'counted');
    t.notOk(n.dp.maps.ct.get(key(WEB, POD, 8080, 40002)), 'entries removed');
  });

  t.test('reset, then the same port reopened through the service: its SYN-ACK is still translated', async (t) => {
    openTc(t, n, 40003);
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40003, dport: 80, flags: TCP.RST });
    const before = stale();
    openTc(t, n, 40003);
    t.equal(stale(), before, 'nothing judged stale');
    const d = n.run('fromPod', { src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40003, flags: TCP.ACK | TCP.PSH });
    t.same([d.verdict, d.out.src, d.out.sport], ['redirect', VIP, 80], 'data of the reopened flow is translated');
  });

  t.test('only the client FIN seen (half-closed): a SYN-ACK is still translated', async (t) => {
    openTc(t, n, 40004);
    n.run('fromPod', { src: POD, dst: VIP }, { proto: 'tcp', sport: 40004, dport: 80, flags: TCP.FIN | TCP.ACK });
    const before = stale();
    const sa = n.run('fromPod', { src: WEB, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40004, flags: TCP.SYN | TCP.ACK });
    t.same([sa.verdict, sa.out.src], ['redirect', VIP], 'a retransmitted SYN-ACK of a live flow keeps the VIP');
    t.equal(stale(), before, 'not judged stale');
  });

  t.test('a host-network backend: the egress program does the same', async (t) => {
    const sport = 40010;
    const syn = n.run('fromPod', { src: POD, dst: HOST_VIP }, { proto: 'tcp', sport, dport: 443 });
    t.same([syn.out.dst, syn.out.dport], [NODE_IP, 6443], 'DNATed to the node');
    const sa = n.run('hostReply', { src: NODE_IP, dst: POD }, { proto: 'tcp', sport: 6443, dport: sport, flags: TCP.SYN | TCP.ACK });
    t.same([sa.verdict, sa.out.src, sa.out.sport], ['pass', HOST_VIP, 443], "the node's SYN-ACK of the TC flow is translated");
    n.run('fromPod', { src: POD, dst: HOST_VIP }, { proto: 'tcp', sport, dport: 443, flags: TCP.RST });
    const before = stale();
    const again = frame({ src: NODE_IP, dst: POD }, { proto: 'tcp', sport: 6443, dport: sport, flags: TCP.SYN | TCP.ACK });
    const r = n.runRaw('hostReply', again);
    t.same([r.verdict, r.raw], ['pass', again], "the node's SYN-ACK to a direct connection is untouched");
    t.equal(stale() - before, 1, 'counted');
    t.notOk(n.dp.maps.ct.get(key(NODE_IP, POD, 6443, sport)), 'entries removed');
  });

  t.test('a backend on another node, with the XDP program on the data interface: XDP leaves it to TC', async (t) => {
    const xdp = (raw: Buffer) => inNetns(n.ns, () => runXdp(n.dp, raw, n.ifindex));
    const sport = 40020;
    // a known neighbour: XDP forwards the pod's replies itself (else it leaves them to TC anyway)
    ip(n.ns, 'neigh', 'replace', POD, 'lladdr', '02:00:00:00:00:99', 'dev', 'd0', 'nud', 'permanent');
    const syn = n.run('fromPod', { src: POD, dst: REMOTE_VIP }, { proto: 'tcp', sport, dport: 80 });
    t.same([syn.verdict, syn.out.dst], ['redirect', REMOTE], 'DNATed to the remote backend');
    const sa = xdp(frame({ src: REMOTE, dst: POD }, { proto: 'tcp', sport: 8080, dport: sport, flags: TCP.SYN | TCP.ACK }));
    t.same([sa.out?.src, sa.out?.sport], [REMOTE_VIP, 80], 'XDP translates the SYN-ACK of the TC flow');
    n.run('fromPod', { src: POD, dst: REMOTE_VIP }, { proto: 'tcp', sport, dport: 80, flags: TCP.RST });
    const before = stale();
    const again = frame({ src: REMOTE, dst: POD }, { proto: 'tcp', sport: 8080, dport: sport, flags: TCP.SYN | TCP.ACK });
    const x = xdp(again);
    t.same([x.verdict, x.raw], ['pass', again], "XDP passes the direct connection's SYN-ACK untouched");
    t.ok(n.dp.maps.ct.get(key(REMOTE, POD, 8080, sport)), 'XDP removes nothing');
    const r = n.runRaw('fromData', again);
    t.same([r.verdict, r.raw], ['pass', again], 'TC passes it untouched');
    t.equal(stale() - before, 1, 'counted once');
    t.notOk(n.dp.maps.ct.get(key(REMOTE, POD, 8080, sport)), 'entries removed');
  });
});

/**
 * UDP has no close: a TC-path UDP flow's reply entry lives for the UDP
 * timeout after its last datagram. A pod that then sends from the same
 * port straight to that flow's backend (socket LB, or pod to pod) gets the
 * backend's replies; before the fix they hit the old reply entry and came
 * back from the service address (a connected socket dropped them). Now the
 * pod's direct datagram removes the old flow's entries (ct-stale-reply).
 */
t.test('UDP port reuse: a direct datagram to the backend of a TC-path flow from the same port', async (t) => {
  const n = await progrunNode(t);
  const DNS_VIP = '10.96.0.53';
  const OTHER = '10.244.1.12';
  n.rec.syncService('test/dns', [fe('ClusterIP', DNS_VIP, 53, 'UDP', [be(WEB, 5353)])]);
  n.rec.setNodeAddresses([NODE_IP]);
  const stale = () => reasonCount(n.dp, 'ct-stale-reply');
  const ukey = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: PROTO.UDP });

  /** A TC-path UDP exchange POD:sport -> DNS_VIP:53 (backend WEB:5353). */
  const openUdp = (sport: number) => {
    const q = n.run('fromPod', { src: POD, dst: DNS_VIP }, { proto: 'udp', sport, dport: 53 });
    t.same([q.verdict, q.out.dst, q.out.dport], ['redirect', WEB, 5353], `port ${sport}: the query to the VIP is DNATed to the backend`);
    const a = n.run('fromPod', { src: WEB, dst: POD }, { proto: 'udp', sport: 5353, dport: sport });
    t.same([a.verdict, a.out.src, a.out.sport], ['redirect', DNS_VIP, 53], `port ${sport}: its answer comes back from the VIP`);
  };

  t.test('the direct datagram removes the old flow; the answer passes untranslated', async (t) => {
    openUdp(41000);
    const before = stale();
    const q = frame({ src: POD, dst: WEB }, { proto: 'udp', sport: 41000, dport: 5353 });
    const qr = n.runRaw('fromPod', q);
    t.same([qr.verdict, qr.raw], ['pass', q], 'the direct datagram is left to the stack, untouched');
    t.equal(stale() - before, 1, 'counted as ct-stale-reply');
    t.notOk(n.dp.maps.ct.get(ukey(WEB, POD, 5353, 41000)), 'old reply entry removed');
    t.notOk(n.dp.maps.ct.get(ukey(POD, DNS_VIP, 41000, 53)), 'old forward entry removed');
    const a = frame({ src: WEB, dst: POD }, { proto: 'udp', sport: 5353, dport: 41000 });
    const ar = n.runRaw('fromPod', a);
    t.same([ar.verdict, ar.raw], ['pass', a], "the backend's answer reaches the pod from the backend's address, byte for byte");
    t.equal(stale() - before, 1, 'counted once');
  });

  t.test('the same port to the service again: a new TC-path flow, translated', async (t) => {
    const before = stale();
    openUdp(41000);
    t.equal(stale(), before, 'nothing judged stale');
  });

  t.test('a datagram to another backend, or from another port, leaves the flow alone', async (t) => {
    openUdp(41001);
    const before = stale();
    n.runRaw('fromPod', frame({ src: POD, dst: OTHER }, { proto: 'udp', sport: 41001, dport: 5353 }));
    n.runRaw('fromPod', frame({ src: POD, dst: WEB }, { proto: 'udp', sport: 41002, dport: 5353 }));
    n.runRaw('fromPod', frame({ src: POD, dst: WEB }, { proto: 'udp', sport: 41001, dport: 5354 }));
    t.equal(stale(), before, 'nothing judged stale');
    const a = n.run('fromPod', { src: WEB, dst: POD }, { proto: 'udp', sport: 5353, dport: 41001 });
    t.same([a.verdict, a.out.src, a.out.sport], ['redirect', DNS_VIP, 53], "the TC flow's answers are still translated");
  });
});

t.test('UDP port reuse, IPv6: the same', async (t) => {
  const n = await progrun6Node(t);
  const VIP6 = 'fd00:10:96::53';
  const WEB6 = 'fd00:10:244:1::13';
  t.same(n.rec.syncService('test/dns', [fe('ClusterIP', VIP6, 53, 'UDP', [be(WEB6, 5353)])]).problems, []);
  const stale = () => reasonCount(n.dp, 'ct-stale-reply');
  const ukey = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: PROTO.UDP });
  const q = n.runRaw('fromPod', frame6({ src: POD6, dst: VIP6 }, { proto: 'udp', sport: 42000, dport: 53 }));
  t.same([q.verdict, q.out.dst, q.out.dport], ['redirect', WEB6, 5353], 'the query to the VIP is DNATed to the backend');
  const a = n.runRaw('fromPod', frame6({ src: WEB6, dst: POD6 }, { proto: 'udp', sport: 5353, dport: 42000 }));
  t.same([a.out.src, a.out.sport], [VIP6, 53], 'its answer comes back from the VIP');

  const other = frame6({ src: POD6, dst: WEB6 }, { proto: 'udp', sport: 42001, dport: 5353 });
  const before = stale();
  t.same(n.runRaw('fromPod', other).raw, other, 'a direct datagram from another port: untouched');
  t.equal(stale(), before, 'and nothing judged stale');

  const direct = frame6({ src: POD6, dst: WEB6 }, { proto: 'udp', sport: 42000, dport: 5353 });
  const d = n.runRaw('fromPod', direct);
  t.same([d.verdict, d.raw], ['pass', direct], 'the direct datagram from the same port: left to the stack, untouched');
  t.equal(stale() - before, 1, 'counted as ct-stale-reply');
  t.notOk(n.dp.maps.ct6.get(ukey(WEB6, POD6, 5353, 42000)), 'old reply entry removed');
  t.notOk(n.dp.maps.ct6.get(ukey(POD6, VIP6, 42000, 53)), 'old forward entry removed');
  const ans = frame6({ src: WEB6, dst: POD6 }, { proto: 'udp', sport: 5353, dport: 42000 });
  const r = n.runRaw('fromPod', ans);
  t.same([r.verdict, r.raw], ['pass', ans], "the backend's answer reaches the pod from the backend's address");
});

/**
 * The TCP cases above in IPv6 (bpf/lib/service6.h ct6_closed_forget()): a
 * SYN-ACK on a closed translated reply entry removes both entries and
 * passes untouched (ct-stale-reply), on the pod and the host-reply hooks;
 * a flow reopened through the service and a half-closed flow are still
 * translated. Before, the IPv6 path translated such a SYN-ACK to the
 * service address.
 */
t.test('TCP port reuse after a closed TC-path flow, IPv6', async (t) => {
  const n = await progrun6Node(t);
  const VIP6 = 'fd00:10:96::10';
  const HOST_VIP6 = 'fd00:10:96::1';
  const WEB6 = 'fd00:10:244:1::11';
  t.same(n.rec.syncService('test/web', [fe('ClusterIP', VIP6, 80, 'TCP', [be(WEB6, 8080)])]).problems, []);
  t.same(n.rec.syncService('default/kubernetes', [fe('ClusterIP', HOST_VIP6, 443, 'TCP', [be(NODE6, 6443)])]).problems, []);
  n.rec.setNodeAddresses([NODE6]);
  const stale = () => reasonCount(n.dp, 'ct-stale-reply');
  const run = (role: 'fromPod' | 'hostReply', src: string, dst: string, sport: number, dport: number, flags: number = TCP.SYN) =>
    n.runRaw(role, frame6({ src, dst }, { proto: 'tcp', sport, dport, flags }));
  const key6 = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: PROTO.TCP });
  const open6 = (sport: number) => {
    const syn = run('fromPod', POD6, VIP6, sport, 80);
    t.same([syn.verdict, syn.out.dst, syn.out.dport], ['redirect', WEB6, 8080], `port ${sport}: the SYN to the VIP is DNATed`);
    const sa = run('fromPod', WEB6, POD6, 8080, sport, TCP.SYN | TCP.ACK);
    t.same([sa.verdict, sa.out.src, sa.out.sport], ['redirect', VIP6, 80], `port ${sport}: its SYN-ACK comes back from the VIP`);
    run('fromPod', POD6, VIP6, sport, 80, TCP.ACK);
  };

  t.test('reset, then a direct connection from the same port: its SYN-ACK passes untranslated', async (t) => {
    open6(43001);
    run('fromPod', POD6, VIP6, 43001, 80, TCP.RST);
    t.ok(n.dp.maps.ct6.get(key6(WEB6, POD6, 8080, 43001)), 'the reset flow is still tracked (RST timeout)');
    const before = stale();
    const syn = frame6({ src: POD6, dst: WEB6 }, { proto: 'tcp', sport: 43001, dport: 8080 });
    t.same(n.runRaw('fromPod', syn).raw, syn, 'the direct SYN is untouched');
    const synack = frame6({ src: WEB6, dst: POD6 }, { proto: 'tcp', sport: 8080, dport: 43001, flags: TCP.SYN | TCP.ACK });
    const r = n.runRaw('fromPod', synack);
    t.same([r.verdict, r.raw], ['pass', synack], "the backend's SYN-ACK goes on byte for byte: from the backend, not the VIP");
    t.equal(stale() - before, 1, 'counted as ct-stale-reply');
    t.notOk(n.dp.maps.ct6.get(key6(WEB6, POD6, 8080, 43001)), 'old reply entry removed');
    t.notOk(n.dp.maps.ct6.get(key6(POD6, VIP6, 43001, 80)), 'old forward entry removed');
    const data = frame6({ src: WEB6, dst: POD6 }, { proto: 'tcp', sport: 8080, dport: 43001, flags: TCP.ACK | TCP.PSH });
    t.same(n.runRaw('fromPod', data).raw, data, "the backend's data is untouched");
  });

  t.test('both FINs seen, then a direct connection: the same', async (t) => {
    open6(43002);
    run('fromPod', POD6, VIP6, 43002, 80, TCP.FIN | TCP.ACK);
    run('fromPod', WEB6, POD6, 8080, 43002, TCP.FIN | TCP.ACK);
    run('fromPod', POD6, VIP6, 43002, 80, TCP.ACK);
    const before = stale();
    const synack = frame6({ src: WEB6, dst: POD6 }, { proto: 'tcp', sport: 8080, dport: 43002, flags: TCP.SYN | TCP.ACK });
    t.same(n.runRaw('fromPod', synack).raw, synack, 'SYN-ACK untouched');
    t.equal(stale() - before, 1, 'counted');
    t.notOk(n.dp.maps.ct6.get(key6(WEB6, POD6, 8080, 43002)), 'entries removed');
  });

  t.test('reset, then the same port reopened through the service: still translated', async (t) => {
    open6(43003);
    run('fromPod', POD6, VIP6, 43003, 80, TCP.RST);
    const before = stale();
    open6(43003);
    t.equal(stale(), before, 'nothing judged stale');
    const d = run('fromPod', WEB6, POD6, 8080, 43003, TCP.ACK | TCP.PSH);
    t.same([d.verdict, d.out.src, d.out.sport], ['redirect', VIP6, 80], 'data of the reopened flow is translated');
  });

  t.test('only the client FIN seen (half-closed): a SYN-ACK is still translated', async (t) => {
    open6(43004);
    run('fromPod', POD6, VIP6, 43004, 80, TCP.FIN | TCP.ACK);
    const before = stale();
    const sa = run('fromPod', WEB6, POD6, 8080, 43004, TCP.SYN | TCP.ACK);
    t.same([sa.verdict, sa.out.src], ['redirect', VIP6], 'a retransmitted SYN-ACK of a live flow keeps the VIP');
    t.equal(stale(), before, 'not judged stale');
  });

  t.test('a host-network backend: the egress program does the same', async (t) => {
    const sport = 43010;
    const syn = run('fromPod', POD6, HOST_VIP6, sport, 443);
    t.same([syn.out.dst, syn.out.dport], [NODE6, 6443], 'DNATed to the node');
    const sa = run('hostReply', NODE6, POD6, 6443, sport, TCP.SYN | TCP.ACK);
    t.same([sa.verdict, sa.out.src, sa.out.sport], ['pass', HOST_VIP6, 443], "the node's SYN-ACK of the TC flow is translated");
    run('fromPod', POD6, HOST_VIP6, sport, 443, TCP.RST);
    const before = stale();
    const again = frame6({ src: NODE6, dst: POD6 }, { proto: 'tcp', sport: 6443, dport: sport, flags: TCP.SYN | TCP.ACK });
    const r = n.runRaw('hostReply', again);
    t.same([r.verdict, r.raw], ['pass', again], "the node's SYN-ACK to a direct connection is untouched");
    t.equal(stale() - before, 1, 'counted');
    t.notOk(n.dp.maps.ct6.get(key6(NODE6, POD6, 6443, sport)), 'entries removed');
  });
});
