/**
 * bpfExternalServiceMode Tunnel and DSR for IPv6 services through
 * BPF_PROG_RUN (bpf/lib/tunnel6.h): the inner packet is IPv6 as the client
 * sent it, carried in the IPv4 VXLAN between nodes the IPv4 path uses.
 * The ingress node's encapsulation (outer headers byte by byte, the inner
 * frame untouched, VNI per mode, IPv6 DSR opt-out, packet too big for 50
 * bytes less), the backend node's decapsulation (DNAT to a local endpoint,
 * client kept, conntrack6 and the tunnel record), its replies
 * (re-encapsulated in Tunnel, a host-network endpoint's on egress too;
 * straight to the client in DSR), the ingress
 * node forwarding the reply, and an IPv6 flow to an endpoint whose node is
 * not known staying on SNAT.
 */
import t from 'tap';
import { csumFold, csumPartial, PROTO } from '../testkit/packet.js';
import { frame6, parseIpv6, TCP } from '../testkit/packet6.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT6, NODE6, progrun6Node } from './helpers/progrun6.js';
import { reasonCount } from './helpers/progrun.js';
import { CtDir, CtFlags, ExtMode, TunRole } from '../src/dataplane/bpf/codecs.js';
import { TunnelTables } from '../src/dataplane/bpf/tunnel.js';

const NODE4 = '192.0.2.11'; // this node's IPv4 InternalIP: the tunnel's address (helpers/progrun6.ts)
const PEER = '192.0.2.12'; // the other node
const PEER6 = '2001:db8:1::12'; // its IPv6 address (the NodePort the client used there)
const REMOTE_EP = 'fd00:10:244:2::11';
const LOCAL_EP = 'fd00:10:244:1::11';
const VNI_TUNNEL = 0x627078;
const VNI_DSR = 0x627079;
const ip4 = (s: string): number[] => s.split('.').map(Number);

/** VXLAN as bpfproxy sends it (outer IPv4), around an inner IPv6 Ethernet frame. */
function vxlan(src: string, dst: string, vni: number, inner: Buffer): Buffer {
  const udpLen = 8 + 8 + inner.length;
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph.writeUInt16BE(20 + udpLen, 2);
  iph[8] = 64;
  iph[9] = PROTO.UDP;
  Buffer.from(ip4(src)).copy(iph, 12);
  Buffer.from(ip4(dst)).copy(iph, 16);
  iph.writeUInt16BE(csumFold(csumPartial(iph)), 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(50000, 0);
  udp.writeUInt16BE(4789, 2);
  udp.writeUInt16BE(udpLen, 4);
  const vx = Buffer.alloc(8);
  vx.writeUInt32BE(0x08000000, 0);
  vx.writeUInt32BE(vni << 8, 4);
  const eth = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  return Buffer.concat([eth, iph, udp, vx, inner]);
}

function outerOf(raw: Buffer) {
  const o = 14;
  const s = (b: number) => `${raw[b]}.${raw[b + 1]}.${raw[b + 2]}.${raw[b + 3]}`;
  return {
    ethType: raw.readUInt16BE(12),
    ipHeader: raw.subarray(o, o + 20),
    src: s(o + 12),
    dst: s(o + 16),
    ttl: raw[o + 8],
    proto: raw[o + 9],
    sport: raw.readUInt16BE(o + 20),
    dport: raw.readUInt16BE(o + 22),
    udpLen: raw.readUInt16BE(o + 24),
    udpCsum: raw.readUInt16BE(o + 26),
    flags: raw.readUInt32BE(o + 28),
    vni: raw.readUInt32BE(o + 32) >>> 8,
    vniLow: raw[o + 35],
    totalLen: raw.readUInt16BE(o + 2),
    ipCsumOk: csumFold(csumPartial(raw.subarray(o, o + 20))) === 0,
    innerEthType: raw.readUInt16BE(o + 36 + 12),
    innerFrame: raw.subarray(o + 36),
    inner: parseIpv6(raw.subarray(o + 36 + 14)),
  };
}

t.test('Tunnel and DSR for IPv6 services through BPF_PROG_RUN', async (t) => {
  const node = await progrun6Node(t);
  const { dp, rec } = node;
  const remote = [be(REMOTE_EP, 8080, false)];
  const local = [be(LOCAL_EP, 8080)];
  t.same(
    rec.syncService('test/remote6', [fe('NodePort', '::', 30081, 'TCP', remote), fe('NodePort', '::', 30053, 'UDP', remote)]).problems,
    [],
  );
  t.same(rec.syncService('test/lb6', [fe('LoadBalancer', '2001:db8:5::10', 80, 'TCP', remote)]).problems, []);
  t.same(
    rec.syncService('test/local6', [fe('NodePort', '::', 30083, 'TCP', local), fe('NodePort', '::', 30084, 'UDP', local)]).problems,
    [],
  );
  rec.setNodeAddresses([NODE4, NODE6]);
  const tun = new TunnelTables(dp.maps);
  const state = (mode: 'Tunnel' | 'DSR' | 'SNAT', dsrOptout: string[] = [], endpoints = new Map([[REMOTE_EP, PEER]])) =>
    tun.apply({ mode, local: NODE4, peers: [PEER], endpoints, dsrOptout });
  state('Tunnel');
  t.same(
    dp.maps.tun6Eps.entries().map(([k, v]) => [k.addr, v.node]),
    [[REMOTE_EP, PEER]],
    'the IPv6 endpoint went to bpfproxy_tun6_eps, its node as IPv4',
  );
  t.same(dp.maps.tunEps.entries(), [], 'nothing IPv6 in the IPv4 map');

  t.test('ingress, Tunnel: a new IPv6 NodePort flow to another node goes out in IPv4 VXLAN, the IPv6 packet as sent', async (t) => {
    const sent = frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'tcp', sport: 41000, dport: 30081, flags: TCP.SYN });
    const syn = node.runRaw('fromData', sent);
    t.equal(syn.verdict, 'redirect');
    const o = outerOf(syn.raw);
    t.equal(o.ethType, 0x0800, 'outer Ethernet type IPv4');
    t.same(
      [o.ipHeader[0], o.ttl, o.proto, o.ipHeader.readUInt16BE(6)],
      [0x45, 64, PROTO.UDP, 0],
      'outer IPv4: no options, TTL 64, UDP, DF clear',
    );
    t.same([o.src, o.dst, o.dport, o.flags, o.vni, o.vniLow], [NODE4, PEER, 4789, 0x08000000, VNI_TUNNEL, 0], 'outer IPv4/UDP/VXLAN');
    t.ok(o.ipCsumOk, 'outer IPv4 checksum valid');
    t.equal(o.udpCsum, 0, 'UDP checksum 0 (allowed over IPv4)');
    t.ok(o.sport >= 49152 && o.sport <= 65535, `outer source port ${o.sport} in 49152..65535`);
    t.equal(o.totalLen, 20 + 8 + 8 + sent.length, 'outer length covers the inner frame');
    t.equal(o.udpLen, o.totalLen - 20);
    t.equal(o.innerEthType, 0x86dd, 'inner Ethernet type IPv6');
    t.same(o.innerFrame.subarray(14), sent.subarray(14), 'inner IPv6 packet byte for byte as the client sent it');
    t.equal(syn.raw.length, sent.length + 50, '50 bytes of overhead');
    const k = { saddr: CLIENT6, daddr: NODE6, sport: 41000, dport: 30081, proto: PROTO.TCP };
    const ct = dp.maps.ct6.get(k);
    t.ok(
      ct && ct.flags & CtFlags.TUNNEL && ct.dir === CtDir.FWD && ct.natDaddr === NODE6,
      'conntrack6: forward half, tunnelled, untranslated',
    );
    const r = dp.maps.ct6Tun.get(k);
    t.same(
      r && [r.peer, r.local, r.role, r.mode, r.backend, r.backendPort],
      [PEER, NODE4, TunRole.INGRESS, ExtMode.TUNNEL, REMOTE_EP, 8080],
      'tunnel record',
    );
    const ack = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'tcp', sport: 41000, dport: 30081, flags: TCP.ACK, payload: Buffer.from('hello') }),
    );
    t.equal(outerOf(ack.raw).sport, o.sport, 'the same flow keeps its outer source port');
    t.equal(outerOf(ack.raw).inner.payloadLen, 20 + 5, 'its payload inside');

    // the reply comes back from the backend's node, reverse-translated there
    const reply = vxlan(
      PEER,
      NODE4,
      VNI_TUNNEL,
      frame6({ src: NODE6, dst: CLIENT6 }, { proto: 'tcp', sport: 30081, dport: 41000, flags: TCP.SYN | TCP.ACK }),
    );
    const back = node.runRaw('fromData', reply);
    t.equal(
      back.verdict,
      'redirect',
      `reply decapsulated and forwarded (${back.verdict}, ${JSON.stringify([back.out.src, back.out.dst, back.out.ethType])})`,
    );
    t.equal(back.out.ethType, 0x86dd, 'an IPv6 frame again');
    t.same([back.out.src, back.out.dst, back.out.sport, back.out.dport], [NODE6, CLIENT6, 30081, 41000], 'to the client, no outer header');
    t.ok(back.out.l4CsumOk, 'checksum valid');
    t.equal(back.raw.length, reply.length - 50);
  });

  t.test('ingress, LoadBalancer IP, DSR: VNI says reply direct; an IPv6 opt-out CIDR keeps Tunnel; SNAT mode as before', async (t) => {
    state('DSR', ['2001:db8:1::100/128']);
    t.same(
      dp.maps.dsr6Optout.keys().map((k) => `${k.addr}/${k.prefixlen}`),
      ['2001:db8:1::100/128'],
      'the IPv6 CIDR in bpfproxy_dsr6_optout',
    );
    const other = node.runRaw(
      'fromData',
      frame6({ src: '2001:db8:9::50', dst: '2001:db8:5::10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.SYN }),
    );
    t.equal(outerOf(other.raw).vni, VNI_DSR, 'DSR');
    t.equal(outerOf(other.raw).inner.dst, '2001:db8:5::10', 'inner destination kept');
    const opted = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: '2001:db8:5::10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.SYN }),
    );
    t.equal(outerOf(opted.raw).vni, VNI_TUNNEL, `${CLIENT6} is in bpfDSROptoutCIDRs: Tunnel`);
    state('SNAT');
    const snat = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: '2001:db8:5::10' }, { proto: 'tcp', sport: 42001, dport: 80, flags: TCP.SYN }),
    );
    t.same([snat.out.ethType, snat.out.dst, snat.out.src], [0x86dd, REMOTE_EP, NODE6], 'SNAT mode: DNAT + SNAT as kube-proxy');
    const est = node.runRaw(
      'fromData',
      frame6({ src: '2001:db8:9::50', dst: '2001:db8:5::10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.ACK }),
    );
    t.equal(outerOf(est.raw).vni, VNI_DSR, 'a flow opened in DSR stays in DSR after the switch');
    state('Tunnel', [], new Map());
    const unknown = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'tcp', sport: 42002, dport: 30081, flags: TCP.SYN }),
    );
    t.same(
      [unknown.out.ethType, unknown.out.dst, unknown.out.src],
      [0x86dd, REMOTE_EP, NODE6],
      "the endpoint's node unknown (or not decapsulating IPv6): SNAT",
    );
    state('Tunnel');
  });

  t.test('ingress: too big for the tunnel: packet too big for MTU - 50', async (t) => {
    const big = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'udp', sport: 43000, dport: 30053, payload: Buffer.alloc(1452, 1) }),
    );
    t.equal(big.verdict, 'redirect', 'answered');
    t.same([big.out.nh, big.out.icmp?.type, big.out.icmp?.code, big.out.icmp?.info], [58, 2, 0, 1450], 'packet too big, 1500 - 50');
    t.same([big.out.src, big.out.dst], [NODE6, CLIENT6], 'from the address the client used');
    t.equal(big.out.icmp?.inner?.dport, 30053, 'quotes the packet as sent');
    t.notOk(
      dp.maps.ct6.get({ saddr: CLIENT6, daddr: NODE6, sport: 43000, dport: 30053, proto: PROTO.UDP }),
      'no state for a packet that did not go',
    );
    const fits = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'udp', sport: 43000, dport: 30053, payload: Buffer.alloc(1402, 1) }),
    );
    t.equal(outerOf(fits.raw).totalLen, 1500, '1450 + 50 fits');
  });

  t.test('backend node: decapsulates, DNATs to a local endpoint keeping the client, replies per VNI', async (t) => {
    const forged = reasonCount(dp, 'tun-forged');
    const inner = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 44000, dport: 30083, flags: TCP.SYN });
    const r = node.runRaw('fromData', vxlan(PEER, NODE4, VNI_TUNNEL, inner));
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.ethType, 0x86dd, 'an IPv6 frame');
    t.same(
      [r.out.src, r.out.dst, r.out.sport, r.out.dport],
      [CLIENT6, LOCAL_EP, 44000, 8080],
      'client address kept, DNAT to the local endpoint',
    );
    t.ok(r.out.l4CsumOk, 'checksum valid');
    t.equal(r.raw.length, inner.length, 'outer headers gone');
    const rk = { saddr: LOCAL_EP, daddr: CLIENT6, sport: 8080, dport: 44000, proto: PROTO.TCP };
    const ct = dp.maps.ct6.get(rk);
    t.ok(
      ct && ct.dir === CtDir.REPLY && ct.flags & CtFlags.TUNNEL && ct.natSaddr === PEER6,
      "conntrack6: the reply half gives back the ingress node's address",
    );
    const tr = dp.maps.ct6Tun.get(rk);
    t.same(
      tr && [tr.peer, tr.local, tr.role, tr.mode, tr.backend],
      [PEER, NODE4, TunRole.BACKEND, ExtMode.TUNNEL, LOCAL_EP],
      'the record names the ingress node',
    );

    const rep = node.runRaw(
      'fromPod',
      frame6({ src: LOCAL_EP, dst: CLIENT6 }, { proto: 'tcp', sport: 8080, dport: 44000, flags: TCP.SYN | TCP.ACK }),
    );
    t.equal(rep.verdict, 'redirect');
    const o = outerOf(rep.raw);
    t.same(
      [o.ethType, o.src, o.dst, o.vni, o.innerEthType],
      [0x0800, NODE4, PEER, VNI_TUNNEL, 0x86dd],
      'Tunnel: the reply back to the ingress node',
    );
    t.same([o.inner.src, o.inner.sport, o.inner.dst, o.inner.dport], [PEER6, 30083, CLIENT6, 44000], 'reverse-translated inside');
    t.ok(o.inner.l4CsumOk, 'inner checksum valid');

    const dsrIn = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'udp', sport: 44001, dport: 30084, payload: Buffer.from('q') });
    const d = node.runRaw('fromData', vxlan(PEER, NODE4, VNI_DSR, dsrIn));
    t.same([d.out.src, d.out.dst, d.out.dport], [CLIENT6, LOCAL_EP, 8080], 'DSR: the same DNAT');
    const drep = node.runRaw(
      'fromPod',
      frame6({ src: LOCAL_EP, dst: CLIENT6 }, { proto: 'udp', sport: 8080, dport: 44001, payload: Buffer.from('a') }),
    );
    t.equal(drep.verdict, 'redirect');
    t.same(
      [drep.out.ethType, drep.out.src, drep.out.sport, drep.out.dst, drep.out.nh],
      [0x86dd, PEER6, 30084, CLIENT6, PROTO.UDP],
      'DSR: reply straight to the client from the service address',
    );
    t.ok(drep.out.l4CsumOk);
    t.equal(reasonCount(dp, 'tun-forged'), forged, 'nothing counted as forged');
  });

  t.test('backend node, host-network endpoint: its reply is encapsulated on egress (Tunnel)', async (t) => {
    t.same(rec.syncService('test/hostnet6', [fe('NodePort', '::', 30085, 'TCP', [be(NODE6, 8080)])]).problems, []);
    const inner = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 46100, dport: 30085, flags: TCP.SYN });
    const r = node.runRaw('fromData', vxlan(PEER, NODE4, VNI_TUNNEL, inner));
    t.same([r.out.src, r.out.dst, r.out.dport], [CLIENT6, NODE6, 8080], 'DNAT to the host-network endpoint, client kept');
    const rep = node.runRaw(
      'hostReply',
      frame6({ src: NODE6, dst: CLIENT6 }, { proto: 'tcp', sport: 8080, dport: 46100, flags: TCP.SYN | TCP.ACK }),
    );
    t.equal(rep.verdict, 'redirect');
    const o = outerOf(rep.raw);
    t.same([o.src, o.dst, o.vni, o.innerEthType], [NODE4, PEER, VNI_TUNNEL, 0x86dd], 'back to the ingress node');
    t.same([o.inner.src, o.inner.sport, o.inner.dst, o.inner.dport], [PEER6, 30085, CLIENT6, 46100], 'reverse-translated inside');
    t.ok(o.inner.l4CsumOk, 'inner checksum valid');
  });

  t.test('backend node: refused and counted like IPv4', async (t) => {
    const inner = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 45000, dport: 30083, flags: TCP.SYN });
    const forged = reasonCount(dp, 'tun-forged');
    t.equal(node.runRaw('fromData', vxlan('192.0.2.99', NODE4, VNI_TUNNEL, inner)).verdict, 'drop', 'from no node: dropped');
    t.equal(reasonCount(dp, 'tun-forged'), forged + 1, 'counted as tun-forged');
    const noFlow = reasonCount(dp, 'tun-no-flow');
    const stray = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 45001, dport: 30083, flags: TCP.ACK });
    t.equal(node.runRaw('fromData', vxlan(PEER, NODE4, VNI_TUNNEL, stray)).verdict, 'drop', 'a packet of no flow that cannot open one');
    const noFe = frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 45002, dport: 31999, flags: TCP.SYN });
    t.equal(node.runRaw('fromData', vxlan(PEER, NODE4, VNI_TUNNEL, noFe)).verdict, 'drop', 'to no frontend');
    t.equal(reasonCount(dp, 'tun-no-flow'), noFlow + 2, 'both counted as tun-no-flow');
    const direct = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: PEER6 }, { proto: 'tcp', sport: 45003, dport: 30083, flags: TCP.SYN }),
    );
    t.not(direct.out.dst, LOCAL_EP, 'the same packet not through the tunnel is no tunnelled flow (the mark is cleared)');
  });
});
