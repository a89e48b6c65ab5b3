/**
 * A flow whose packets move to another ingress node, through BPF_PROG_RUN
 * (lib/service.h svc_midflow_adoptable(), lib/tunnel_svc.h
 * tun_follow_ingress()):
 *  - ingress side: a mid-flow TCP packet (ACK, no SYN) of no known flow to
 *    a Maglev frontend from outside is taken as a new flow and goes to the
 *    backend a SYN of the same tuple gets (the one every node's table
 *    gives): DNAT to a local endpoint, or VXLAN to a remote endpoint's node
 *    (Tunnel/DSR); counted as MIDFLOW. Not for random frontends, not for
 *    pods (cluster IP or external frontend), not for RST, not in SNAT mode
 *    for a remote endpoint: those pass as before (ct-not-opening), no state.
 *  - backend side: a tunnelled flow's packets arriving through another
 *    node's tunnel (or straight from the client) move the flow's replies
 *    with them, counted as MOVED; a new tunnelled flow to a Maglev
 *    frontend without a node-local table is served there (it used to be
 *    dropped as backend-missing: lib/lb.h).
 */
import t from 'tap';
import { frame, PROTO, TCP, csumFold, csumPartial, parseFrame } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { BpfReconciler, DEFAULT_LOAD_BALANCING } from '../src/dataplane/bpf/reconciler.js';
import { CtFlags, ExtMode, FeFlags, TunRole } from '../src/dataplane/bpf/codecs.js';
import { TunnelTables, tunnelCounters } from '../src/dataplane/bpf/tunnel.js';
import type { Frontend } from '../src/model/types.js';

const PEER = '192.0.2.12'; // the endpoint's node
const PEER2 = '192.0.2.13'; // another ingress node
const LB = '198.51.100.30';
const RND = '198.51.100.31';
const CIP = '10.96.0.30';
const LOCAL_BE = '10.244.1.11';
const REMOTE_BE = '10.244.2.11';
const VNI_TUNNEL = 0x627078;
const VNI_DSR = 0x627079;

const ip4 = (s: string): number[] => s.split('.').map(Number);

function vxlan(src: string, dst: string, vni: number, inner: Buffer): Buffer {
  const udpLen = 16 + inner.length;
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

/** Outer destination and VNI, and the inner packet, of a VXLAN frame (undefined: not VXLAN). */
function outer(raw: Buffer) {
  const o = parseFrame(raw);
  if (o.proto !== PROTO.UDP || raw.readUInt16BE(14 + 22) !== 4789) return undefined;
  return { src: o.src, dst: o.dst, vni: raw.readUInt32BE(14 + 32) >>> 8, inner: parseFrame(raw.subarray(14 + 36)) };
}

const key = (saddr: string, daddr: string, sport: number, dport: number) =>
  ({ saddr, daddr, sport, dport, proto: PROTO.TCP, pad: [0, 0, 0] }) as never;

t.test('Maglev mid-flow packets through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { dp } = node;
  const rec = new BpfReconciler(dp.maps, undefined, { ...DEFAULT_LOAD_BALANCING, algorithm: 'maglev' });
  rec.setNodeAddresses([NODE_IP]);
  const backends = [be(LOCAL_BE, 8080), be(REMOTE_BE, 8080, false)];
  const maglevCip: Frontend = { ...fe('ClusterIP', CIP, 80, 'TCP', backends), lbAlgorithm: 'maglev' };
  t.same(rec.syncService('test/mg', [fe('LoadBalancer', LB, 80, 'TCP', backends), maglevCip]).problems, []);
  t.same(rec.syncService('test/rnd', [{ ...fe('LoadBalancer', RND, 80, 'TCP', backends), lbAlgorithm: 'random' }]).problems, []);
  const tun = new TunnelTables(dp.maps);
  const mode = (m: 'Tunnel' | 'DSR' | 'SNAT') =>
    tun.apply({ mode: m, local: NODE_IP, peers: [PEER, PEER2], endpoints: new Map([[REMOTE_BE, PEER]]), dsrOptout: [] });
  mode('Tunnel');
  t.ok(dp.maps.fe.get({ addr: LB, port: 80, proto: PROTO.TCP })!.flags & FeFlags.MAGLEV, 'LoadBalancer IP: Maglev');
  t.ok(dp.maps.fe.get({ addr: CIP, port: 80, proto: PROTO.TCP })!.flags & FeFlags.MAGLEV, 'cluster IP annotated Maglev');
  t.equal(dp.maps.fe.get({ addr: RND, port: 80, proto: PROTO.TCP })!.flags & FeFlags.MAGLEV, 0, 'random frontend');

  const clearCt = () => {
    dp.maps.ct.deleteMany(dp.maps.ct.entries().map(([k]) => k));
    dp.maps.ctTun.deleteMany(dp.maps.ctTun.entries().map(([k]) => k));
  };
  const ack = (dst: string, sport: number, flags: number = TCP.ACK) =>
    node.run('fromData', { src: CLIENT, dst }, { proto: 'tcp', sport, dport: 80, flags, payload: Buffer.from('mid-flow') });
  /** Where the SYN of this tuple goes: the endpoint, as address (tunnelled ones read from the inner packet's record). */
  const synChoice = (sport: number): string => {
    clearCt();
    const r = node.run('fromData', { src: CLIENT, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.SYN });
    const o = outer(r.raw);
    const choice = o ? dp.maps.ctTun.get(key(CLIENT, LB, sport, 80))!.backend : r.out.dst;
    clearCt();
    return choice;
  };
  // client ports whose flows Maglev sends to each endpoint
  const sportFor = new Map<string, number>();
  for (let sport = 40000; sport < 40100 && sportFor.size < 2; sport++) {
    const c = synChoice(sport);
    if (!sportFor.has(c)) sportFor.set(c, sport);
  }
  t.same([...sportFor.keys()].sort(), [LOCAL_BE, REMOTE_BE], 'flows hash to both endpoints');
  const midflow = () => tunnelCounters(dp.maps).MIDFLOW.packets;

  t.test('ingress: a mid-flow ACK to a remote endpoint goes through the tunnel to its node, as the SYN would', async (t) => {
    const sport = sportFor.get(REMOTE_BE)!;
    const before = midflow();
    const r = ack(LB, sport);
    t.equal(r.verdict, 'redirect');
    const o = outer(r.raw);
    t.same(o && [o.src, o.dst, o.vni], [NODE_IP, PEER, VNI_TUNNEL], "VXLAN to the endpoint's node");
    t.same(o && [o.inner.src, o.inner.dst, o.inner.sport, o.inner.dport], [CLIENT, LB, sport, 80], 'inner packet as sent');
    const ct = dp.maps.ct.get(key(CLIENT, LB, sport, 80));
    t.ok(ct && ct.flags & CtFlags.TUNNEL, 'conntrack entry created, tunnelled');
    const tr = dp.maps.ctTun.get(key(CLIENT, LB, sport, 80));
    t.same(tr && [tr.role, tr.backend, tr.peer], [TunRole.INGRESS, REMOTE_BE, PEER], 'record: the endpoint the SYN got');
    t.equal(midflow(), before + 1, 'counted as MIDFLOW');
    const next = ack(LB, sport);
    t.equal(outer(next.raw)?.dst, PEER, 'the next packet hits the entry');
    t.equal(midflow(), before + 1, 'and is not counted again');
    clearCt();
  });

  t.test('ingress, DSR: the same, with the DSR VNI', async (t) => {
    mode('DSR');
    const r = ack(LB, sportFor.get(REMOTE_BE)!);
    t.same([outer(r.raw)?.dst, outer(r.raw)?.vni], [PEER, VNI_DSR]);
    mode('Tunnel');
    clearCt();
  });

  t.test('ingress: a mid-flow ACK to a local endpoint is DNATed to it, client kept, no SNAT', async (t) => {
    const sport = sportFor.get(LOCAL_BE)!;
    const before = midflow();
    const r = ack(LB, sport);
    t.equal(r.verdict, 'redirect');
    t.same([r.out.src, r.out.sport, r.out.dst, r.out.dport], [CLIENT, sport, LOCAL_BE, 8080], 'DNAT, tuple otherwise kept');
    t.ok(r.out.l4CsumOk, 'TCP checksum valid');
    const ct = dp.maps.ct.get(key(CLIENT, LB, sport, 80));
    t.ok(ct && !(ct.flags & CtFlags.SNAT) && ct.flags & CtFlags.EXTERNAL, 'conntrack: external, not SNATed');
    t.equal(midflow(), before + 1, 'counted as MIDFLOW');
    const reply = node.run('fromPod', { src: LOCAL_BE, dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: sport, flags: TCP.ACK });
    t.same([reply.out.src, reply.out.sport], [LB, 80], 'the reply is reverse-translated');
    clearCt();
  });

  t.test('not taken: random frontends, pods, RST, SNAT mode to a remote endpoint', async (t) => {
    const cases: Array<[string, () => ReturnType<typeof ack>]> = [
      ['random frontend', () => ack(RND, sportFor.get(REMOTE_BE)!)],
      ['random frontend, local choice possible', () => ack(RND, sportFor.get(LOCAL_BE)!)],
      [
        'cluster IP (Maglev) from a pod',
        () => node.run('fromPod', { src: LOCAL_BE, dst: CIP }, { proto: 'tcp', sport: 41000, dport: 80, flags: TCP.ACK }),
      ],
      [
        'LoadBalancer IP (Maglev) from a pod',
        () => node.run('fromPod', { src: LOCAL_BE, dst: LB }, { proto: 'tcp', sport: 41001, dport: 80, flags: TCP.ACK }),
      ],
      ['RST', () => ack(LB, sportFor.get(LOCAL_BE)!, TCP.RST | TCP.ACK)],
      ['SYN-ACK', () => ack(LB, sportFor.get(LOCAL_BE)!, TCP.SYN | TCP.ACK)],
      [
        'SNAT mode, remote endpoint',
        () => {
          mode('SNAT');
          try {
            return ack(LB, sportFor.get(REMOTE_BE)!);
          } finally {
            mode('Tunnel');
          }
        },
      ],
    ];
    for (const [name, send] of cases) {
      const before = reasonCount(dp, 'ct-not-opening');
      const m = midflow();
      const r = send();
      t.equal(r.verdict, 'pass', `${name}: passed to the stack`);
      t.equal(reasonCount(dp, 'ct-not-opening'), before + 1, `${name}: counted ct-not-opening`);
      t.equal(dp.maps.ct.entries().length, 0, `${name}: no conntrack entry`);
      t.equal(midflow(), m, `${name}: not MIDFLOW`);
    }
    const ssyn = node.run('fromData', { src: CLIENT, dst: RND }, { proto: 'tcp', sport: 41002, dport: 80, flags: TCP.SYN });
    t.not(ssyn.verdict, 'pass', 'a SYN to the random frontend is still served');
    clearCt();
  });

  t.test("backend node: the flow's packets come through another node's tunnel; replies follow", async (t) => {
    // this node holds the endpoint; the flow opened through PEER
    const sport = 42000;
    const syn = node.runRaw(
      'fromData',
      vxlan(PEER, NODE_IP, VNI_TUNNEL, frame({ src: CLIENT, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.SYN })),
    );
    t.equal(syn.out.dst, LOCAL_BE, 'the SYN through PEER: DNAT to the local endpoint');
    const back = (flags: number = TCP.ACK) =>
      node.run('fromPod', { src: LOCAL_BE, dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: sport, flags });
    t.same([outer(back(TCP.SYN | TCP.ACK).raw)?.dst], [PEER], 'replies through PEER');
    const moved = () => tunnelCounters(dp.maps).MOVED.packets;
    const m0 = moved();
    const mid = frame({ src: CLIENT, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.ACK, payload: Buffer.from('x') });
    const a = node.runRaw('fromData', vxlan(PEER2, NODE_IP, VNI_TUNNEL, mid));
    t.same([a.verdict, a.out.dst, a.out.sport], ['redirect', LOCAL_BE, sport], 'through PEER2: the same flow, to the endpoint');
    const rk = key(LOCAL_BE, CLIENT, 8080, sport);
    t.same(
      [dp.maps.ctTun.get(rk)?.peer, dp.maps.ctTun.get(rk)?.role, dp.maps.ctTun.get(rk)?.mode],
      [PEER2, TunRole.BACKEND, ExtMode.TUNNEL],
      'record: PEER2 now',
    );
    t.equal(moved(), m0 + 1, 'counted as MOVED');
    const r1 = outer(back().raw);
    t.same([r1?.dst, r1?.vni, r1?.inner.src, r1?.inner.sport], [PEER2, VNI_TUNNEL, LB, 80], 'replies through PEER2, reverse-translated');
    node.runRaw('fromData', vxlan(PEER2, NODE_IP, VNI_TUNNEL, mid));
    t.equal(moved(), m0 + 1, 'the same way again: nothing to change');

    node.runRaw('fromData', vxlan(PEER2, NODE_IP, VNI_DSR, mid));
    const r2 = back();
    t.same([outer(r2.raw), r2.out.src, r2.out.dst], [undefined, LB, CLIENT], "PEER2's DSR VNI: replies straight to the client");

    node.runRaw('fromData', vxlan(PEER, NODE_IP, VNI_TUNNEL, mid));
    t.equal(outer(back().raw)?.dst, PEER, 'back through PEER: replies through PEER again');

    const direct = node.run('fromData', { src: CLIENT, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.ACK });
    t.same([direct.verdict, direct.out.dst], ['redirect', LOCAL_BE], 'the client reaches this node itself: the same flow');
    const r3 = back();
    t.same([outer(r3.raw), r3.out.src, r3.out.dst], [undefined, LB, CLIENT], 'replies straight back to it');
    t.equal(moved(), m0 + 4, 'each move counted');
    clearCt();
  });
});
