/**
 * bpfExternalServiceMode Tunnel and DSR through BPF_PROG_RUN (bpf/lib/
 * tunnel.h): the ingress node's VXLAN encapsulation (headers byte by byte,
 * flow-hashed source port, the VNI per mode, DSR opt-out, SNAT mode
 * untouched, fragmentation-needed for 50 bytes less), and the backend
 * node's decapsulation (DNAT to a local endpoint with the client kept, the
 * reply re-encapsulated or sent direct), with forged, truncated and
 * malformed outer headers refused and counted.
 */
import t from 'tap';
import { frame, icmpErrorFrame, PROTO, TCP, csumFold, csumPartial, parseFrame, type FrameSpec, type L4 } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { CtDir, CtFlags, ExtMode, TunRole } from '../src/dataplane/bpf/codecs.js';
import { TunnelTables } from '../src/dataplane/bpf/tunnel.js';

const PEER = '192.0.2.12'; // the other node
const VNI_TUNNEL = 0x627078;
const VNI_DSR = 0x627079;
const ip = (s: string): number[] => s.split('.').map(Number);

/** VXLAN as bpfproxy sends it, around an inner Ethernet frame. */
function vxlan(
  src: string,
  dst: string,
  vni: number,
  inner: Buffer,
  o: { sport?: number; mf?: boolean; udpLenDelta?: number } = {},
): Buffer {
  const udpLen = 8 + 8 + inner.length;
  const iph = Buffer.alloc(20);
  iph[0] = 0x45;
  iph.writeUInt16BE(20 + udpLen, 2);
  if (o.mf) iph.writeUInt16BE(0x2000, 6);
  iph[8] = 64;
  iph[9] = PROTO.UDP;
  Buffer.from(ip(src)).copy(iph, 12);
  Buffer.from(ip(dst)).copy(iph, 16);
  iph.writeUInt16BE(csumFold(csumPartial(iph)), 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(o.sport ?? 50000, 0);
  udp.writeUInt16BE(4789, 2);
  udp.writeUInt16BE(udpLen + (o.udpLenDelta ?? 0), 4);
  const vx = Buffer.alloc(8);
  vx.writeUInt32BE(0x08000000, 0);
  vx.writeUInt32BE(vni << 8, 4);
  const eth = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
  return Buffer.concat([eth, iph, udp, vx, inner]);
}

interface Outer {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  vni: number;
  flags: number;
  udpCsum: number;
  totalLen: number;
  udpLen: number;
  ipCsumOk: boolean;
  inner: ReturnType<typeof parseFrame>;
  innerFrameLen: number;
}

function outerOf(raw: Buffer): Outer {
  const o = 14;
  const s = (b: number) => `${raw[b]}.${raw[b + 1]}.${raw[b + 2]}.${raw[b + 3]}`;
  return {
    src: s(o + 12),
    dst: s(o + 16),
    sport: raw.readUInt16BE(o + 20),
    dport: raw.readUInt16BE(o + 22),
    udpLen: raw.readUInt16BE(o + 24),
    udpCsum: raw.readUInt16BE(o + 26),
    flags: raw.readUInt32BE(o + 28),
    vni: raw.readUInt32BE(o + 32) >>> 8,
    totalLen: raw.readUInt16BE(o + 2),
    ipCsumOk: csumFold(csumPartial(raw.subarray(o, o + 20))) === 0,
    inner: parseFrame(raw.subarray(o + 36)),
    innerFrameLen: raw.length - (o + 36),
  };
}

t.test('Tunnel and DSR through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { dp, rec } = node;
  const run = (role: 'fromData' | 'fromPod', f: FrameSpec, l4: L4) => node.run(role, f, l4);
  const remote = [be('10.244.2.11', 8080, false)];
  const local = [be('10.244.1.11', 8080)];
  t.same(
    rec.syncService('test/remote', [fe('NodePort', '0.0.0.0', 30081, 'TCP', remote), fe('NodePort', '0.0.0.0', 30053, 'UDP', remote)])
      .problems,
    [],
  );
  t.same(rec.syncService('test/lb', [fe('LoadBalancer', '198.51.100.10', 80, 'TCP', remote)]).problems, []);
  t.same(
    rec.syncService('test/local', [fe('NodePort', '0.0.0.0', 30083, 'TCP', local), fe('NodePort', '0.0.0.0', 30084, 'UDP', local)])
      .problems,
    [],
  );
  rec.setNodeAddresses([NODE_IP]);
  const tun = new TunnelTables(dp.maps);
  const state = (mode: 'Tunnel' | 'DSR' | 'SNAT', dsrOptout: string[] = []) =>
    tun.apply({ mode, local: NODE_IP, peers: [PEER], endpoints: new Map([['10.244.2.11', PEER]]), dsrOptout });
  state('Tunnel');
  t.same(dp.maps.tunCfg.get({ v: 0 }), { mode: ExtMode.TUNNEL, local: NODE_IP }, 'mode and tunnel address written');

  t.test('ingress, Tunnel: a new NodePort flow to another node goes out in VXLAN, untranslated', async (t) => {
    const syn = run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41000, dport: 30081, flags: TCP.SYN });
    t.equal(syn.verdict, 'redirect');
    const o = outerOf(syn.raw);
    t.same([o.src, o.dst, o.dport, o.flags, o.vni], [NODE_IP, PEER, 4789, 0x08000000, VNI_TUNNEL], 'outer IPv4/UDP/VXLAN');
    t.ok(o.ipCsumOk, 'outer IPv4 checksum valid');
    t.equal(o.udpCsum, 0, 'UDP checksum 0 (RFC 7348 allows it over IPv4)');
    t.ok(o.sport >= 49152 && o.sport <= 65535, `outer source port ${o.sport} in 49152..65535`);
    t.equal(o.totalLen, 20 + 8 + 8 + o.innerFrameLen, 'outer length covers the inner frame');
    t.equal(o.udpLen, o.totalLen - 20);
    t.same([o.inner.src, o.inner.dst, o.inner.sport, o.inner.dport], [CLIENT, NODE_IP, 41000, 30081], 'inner packet as the client sent it');
    t.ok(o.inner.l4CsumOk, 'inner TCP checksum untouched');
    const ct = dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 41000, dport: 30081, proto: PROTO.TCP, pad: [0, 0, 0] } as never);
    t.ok(ct && ct.flags & CtFlags.TUNNEL && ct.dir === CtDir.FWD, 'conntrack: forward half marked tunnelled');
    const rec1 = dp.maps.ctTun.get({
      saddr: CLIENT,
      daddr: NODE_IP,
      sport: 41000,
      dport: 30081,
      proto: PROTO.TCP,
      pad: [0, 0, 0],
    } as never);
    t.same(
      rec1 && [rec1.peer, rec1.role, rec1.mode, rec1.backend, rec1.backendPort],
      [PEER, TunRole.INGRESS, ExtMode.TUNNEL, '10.244.2.11', 8080],
      'tunnel record: backend and its node',
    );
    const ack = run(
      'fromData',
      { src: CLIENT, dst: NODE_IP },
      { proto: 'tcp', sport: 41000, dport: 30081, flags: TCP.ACK, payload: Buffer.from('hello') },
    );
    t.equal(outerOf(ack.raw).sport, o.sport, 'the same flow keeps its outer source port');
    const other = run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 41001, dport: 30081, flags: TCP.SYN });
    t.equal(outerOf(other.raw).dst, PEER);

    // the reply comes back from the backend's node, already reverse-translated
    const reply = vxlan(
      PEER,
      NODE_IP,
      VNI_TUNNEL,
      frame({ src: NODE_IP, dst: CLIENT }, { proto: 'tcp', sport: 30081, dport: 41000, flags: TCP.SYN | TCP.ACK }),
    );
    const back = node.runRaw('fromData', reply);
    t.equal(back.verdict, 'redirect', 'reply decapsulated and forwarded');
    t.same([back.out.src, back.out.dst, back.out.sport, back.out.dport], [NODE_IP, CLIENT, 30081, 41000], 'to the client, no outer header');
  });

  t.test('ingress, LoadBalancer IP, DSR: VNI says reply direct; opt-out CIDR keeps Tunnel', async (t) => {
    state('DSR', ['192.0.2.96/29']);
    const other = run('fromData', { src: '192.0.2.50', dst: '198.51.100.10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.SYN });
    t.equal(outerOf(other.raw).vni, VNI_DSR, 'DSR');
    t.equal(outerOf(other.raw).inner.dst, '198.51.100.10', 'inner destination kept');
    const opted = run('fromData', { src: CLIENT, dst: '198.51.100.10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.SYN });
    t.equal(outerOf(opted.raw).vni, VNI_TUNNEL, `${CLIENT} is in bpfDSROptoutCIDRs: Tunnel`);
    state('SNAT');
    const snat = run('fromData', { src: CLIENT, dst: '198.51.100.10' }, { proto: 'tcp', sport: 42001, dport: 80, flags: TCP.SYN });
    t.equal(snat.out.dst, '10.244.2.11', 'SNAT mode: DNAT + SNAT as kube-proxy');
    t.equal(snat.out.src, NODE_IP);
    const est = run('fromData', { src: '192.0.2.50', dst: '198.51.100.10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.ACK });
    t.equal(outerOf(est.raw).vni, VNI_DSR, 'a flow opened in DSR stays in DSR after the switch');
    state('Tunnel');
  });

  t.test('ingress: too big with DF for the tunnel: fragmentation-needed for MTU - 50', async (t) => {
    const big = run(
      'fromData',
      { src: CLIENT, dst: NODE_IP, dontFragment: true },
      { proto: 'udp', sport: 43000, dport: 30053, payload: Buffer.alloc(1472, 1) },
    );
    t.equal(big.verdict, 'redirect', 'answered');
    t.equal(big.out.proto, PROTO.ICMP);
    t.same([big.out.icmp?.type, big.out.icmp?.code, big.out.icmp?.mtu], [3, 4, 1450], 'frag needed, 1500 - 50');
    t.same([big.out.src, big.out.dst], [NODE_IP, CLIENT], 'from the address the client used');
    t.equal(big.out.icmp?.inner?.dport, 30053, 'quotes the packet as sent');
    const fits = run(
      'fromData',
      { src: CLIENT, dst: NODE_IP, dontFragment: true },
      { proto: 'udp', sport: 43000, dport: 30053, payload: Buffer.alloc(1422, 1) },
    );
    t.equal(outerOf(fits.raw).totalLen, 1500, '1450 + 50 fits');
  });

  t.test('backend node: decapsulates, DNATs to a local endpoint keeping the client, replies per VNI', async (t) => {
    const before = reasonCount(dp, 'tun-forged');
    const inner = frame({ src: CLIENT, dst: PEER }, { proto: 'tcp', sport: 44000, dport: 30083, flags: TCP.SYN });
    const r = node.runRaw('fromData', vxlan(PEER, NODE_IP, VNI_TUNNEL, inner));
    t.equal(r.verdict, 'redirect');
    t.same(
      [r.out.src, r.out.dst, r.out.sport, r.out.dport],
      [CLIENT, '10.244.1.11', 44000, 8080],
      'client address kept, DNAT to the local endpoint',
    );
    t.ok(r.out.ipCsumOk && r.out.l4CsumOk, 'checksums valid');
    t.equal(r.raw.length, inner.length, 'outer headers gone');
    const rk = { saddr: '10.244.1.11', daddr: CLIENT, sport: 8080, dport: 44000, proto: PROTO.TCP, pad: [0, 0, 0] } as never;
    const tr = dp.maps.ctTun.get(rk);
    t.same(
      tr && [tr.peer, tr.local, tr.role, tr.mode],
      [PEER, NODE_IP, TunRole.BACKEND, ExtMode.TUNNEL],
      'conntrack records the ingress node',
    );
    const rep = run('fromPod', { src: '10.244.1.11', dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: 44000, flags: TCP.SYN | TCP.ACK });
    t.equal(rep.verdict, 'redirect');
    const o = outerOf(rep.raw);
    t.same([o.src, o.dst, o.vni], [NODE_IP, PEER, VNI_TUNNEL], 'Tunnel: reply back to the ingress node');
    t.same([o.inner.src, o.inner.sport, o.inner.dst, o.inner.dport], [PEER, 30083, CLIENT, 44000], 'reverse-translated inside');
    t.ok(o.inner.l4CsumOk, 'inner checksum valid');

    const dsrIn = frame({ src: CLIENT, dst: PEER }, { proto: 'udp', sport: 44001, dport: 30084, payload: Buffer.from('q') });
    const d = node.runRaw('fromData', vxlan(PEER, NODE_IP, VNI_DSR, dsrIn));
    t.same([d.out.src, d.out.dst], [CLIENT, '10.244.1.11'], 'DSR: the same DNAT');
    const drep = run(
      'fromPod',
      { src: '10.244.1.11', dst: CLIENT },
      { proto: 'udp', sport: 8080, dport: 44001, payload: Buffer.from('a') },
    );
    t.equal(drep.verdict, 'redirect');
    t.same(
      [drep.out.src, drep.out.sport, drep.out.dst, drep.out.proto],
      [PEER, 30084, CLIENT, PROTO.UDP],
      'DSR: reply straight to the client from the service address',
    );
    t.equal(reasonCount(dp, 'tun-forged'), before, 'nothing counted as forged');
  });

  t.test('backend node, host-network endpoint: its reply is encapsulated on egress (Tunnel)', async (t) => {
    t.same(rec.syncService('test/hostnet', [fe('NodePort', '0.0.0.0', 30085, 'TCP', [be(NODE_IP, 8080)])]).problems, []);
    const inner = frame({ src: CLIENT, dst: PEER }, { proto: 'tcp', sport: 46100, dport: 30085, flags: TCP.SYN });
    const r = node.runRaw('fromData', vxlan(PEER, NODE_IP, VNI_TUNNEL, inner));
    t.equal(r.verdict, 'pass', 'to the node itself: the stack delivers it');
    t.same([r.out.src, r.out.dst, r.out.dport], [CLIENT, NODE_IP, 8080], 'DNAT to the host-network endpoint, client kept');
    const rep = node.run('hostReply', { src: NODE_IP, dst: CLIENT }, { proto: 'tcp', sport: 8080, dport: 46100, flags: TCP.SYN | TCP.ACK });
    t.equal(rep.verdict, 'redirect');
    const o = outerOf(rep.raw);
    t.same([o.src, o.dst, o.vni], [NODE_IP, PEER, VNI_TUNNEL], 'back to the ingress node');
    t.same([o.inner.src, o.inner.sport, o.inner.dst, o.inner.dport], [PEER, 30085, CLIENT, 46100], 'reverse-translated inside');
    t.ok(o.inner.l4CsumOk, 'inner checksum valid');
  });

  t.test('ICMP errors about a tunnelled flow reach the right end, translated there', async (t) => {
    const ROUTER = '192.0.2.1';
    // ingress: an error about the reply direction (service -> client) goes on to the backend's node as it is
    const quotedReply = frame({ src: NODE_IP, dst: CLIENT }, { proto: 'tcp', sport: 30081, dport: 41000, flags: TCP.ACK }).subarray(14);
    const err = icmpErrorFrame({ src: ROUTER, dst: NODE_IP }, 3, 4, quotedReply, 1280);
    const fwd = node.runRaw('fromData', err);
    t.equal(fwd.verdict, 'redirect');
    const o = outerOf(fwd.raw);
    t.same([o.src, o.dst, o.vni], [NODE_IP, PEER, VNI_TUNNEL], 'ingress: into the tunnel to the backend node');
    t.same(
      [o.inner.src, o.inner.dst, o.inner.icmp?.mtu, o.inner.icmp?.inner?.sport],
      [ROUTER, NODE_IP, 1280, 30081],
      'untranslated inside',
    );

    // backend: the same error arriving through the tunnel is translated to the endpoint
    const quoted2 = frame({ src: PEER, dst: CLIENT }, { proto: 'tcp', sport: 30083, dport: 44000, flags: TCP.ACK }).subarray(14);
    const inErr = node.runRaw(
      'fromData',
      vxlan(PEER, NODE_IP, VNI_TUNNEL, icmpErrorFrame({ src: ROUTER, dst: PEER }, 3, 4, quoted2, 1280)),
    );
    t.equal(inErr.verdict, 'redirect');
    t.same([inErr.out.src, inErr.out.dst], [ROUTER, '10.244.1.11'], 'backend: to the endpoint, router address kept');
    t.same(
      [inErr.out.icmp?.inner?.src, inErr.out.icmp?.inner?.sport, inErr.out.icmp?.inner?.dst],
      ['10.244.1.11', 8080, CLIENT],
      'quoted packet as the endpoint sent it',
    );
    t.ok(inErr.out.icmp?.csumOk, 'ICMP checksum valid');

    // backend, Tunnel: the endpoint's own error about the client's datagram goes back through the ingress node
    const q = frame({ src: CLIENT, dst: PEER }, { proto: 'udp', sport: 44002, dport: 30084, payload: Buffer.from('x') });
    t.equal(node.runRaw('fromData', vxlan(PEER, NODE_IP, VNI_TUNNEL, q)).out.dst, '10.244.1.11', 'a UDP flow in Tunnel mode');
    const quoted3 = frame(
      { src: CLIENT, dst: '10.244.1.11' },
      { proto: 'udp', sport: 44002, dport: 8080, payload: Buffer.from('x') },
    ).subarray(14);
    const unreach = node.runRaw('fromPod', icmpErrorFrame({ src: '10.244.1.11', dst: CLIENT }, 3, 3, quoted3));
    t.equal(unreach.verdict, 'redirect');
    const u = outerOf(unreach.raw);
    t.same([u.dst, u.vni], [PEER, VNI_TUNNEL], 'back to the ingress node');
    t.same([u.inner.src, u.inner.dst], [PEER, CLIENT], 'from the service address, to the client');
    t.same([u.inner.icmp?.inner?.dst, u.inner.icmp?.inner?.dport], [PEER, 30084], 'quoting the datagram as the client sent it');
  });

  t.test('mutated and truncated tunnel packets: a verdict for each, checksums kept right', async (t) => {
    let seed = 0x1234567;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const base = vxlan(
      PEER,
      NODE_IP,
      VNI_TUNNEL,
      frame({ src: CLIENT, dst: PEER }, { proto: 'udp', sport: 46000, dport: 30084, payload: Buffer.alloc(64, 9) }),
    );
    const verdicts = new Map<string, number>();
    for (let i = 0; i < 1500; i++) {
      const b = Buffer.from(base);
      // flip 1-3 bytes past the outer Ethernet header and UDP ports (so most stay tunnel packets), or cut the frame
      for (let k = 0, n = 1 + rnd(3); k < n; k++) b[14 + 24 + rnd(b.length - 38)] = rnd(256);
      const raw = rnd(4) === 0 ? b.subarray(0, 14 + 20 + rnd(b.length - 34)) : b;
      const r = node.runRaw('fromData', raw);
      verdicts.set(r.verdict, (verdicts.get(r.verdict) ?? 0) + 1);
      // the datapath checks no IPv4 checksum (as before, for plain packets too): a bad one in stays bad
      const innerOk = raw.length >= 14 + 50 + 20 && csumFold(csumPartial(raw.subarray(14 + 50, 14 + 50 + 20))) === 0;
      if (r.verdict === 'redirect' && innerOk && !r.out.ipCsumOk) {
        t.fail(`mutation ${i}: redirected with a bad IPv4 checksum`);
        break;
      }
      if (!['pass', 'drop', 'redirect'].includes(r.verdict)) {
        t.fail(`mutation ${i}: verdict ${r.verdict}`);
        break;
      }
    }
    t.pass(`1500 mutations: ${[...verdicts].map(([v, n]) => `${v} ${n}`).join(', ')}`);
  });

  t.test('refused: forged source, truncated and malformed outer headers; foreign VNI passes', async (t) => {
    const inner = frame({ src: CLIENT, dst: PEER }, { proto: 'tcp', sport: 45000, dport: 30083, flags: TCP.SYN });
    const cases: Array<{ name: string; raw: Buffer; verdict: string; reason?: string }> = [
      {
        name: 'from an address that is no node',
        raw: vxlan('203.0.113.9', NODE_IP, VNI_TUNNEL, inner),
        verdict: 'drop',
        reason: 'tun-forged',
      },
      { name: 'from the client itself', raw: vxlan(CLIENT, NODE_IP, VNI_DSR, inner), verdict: 'drop', reason: 'tun-forged' },
      {
        name: 'cut inside the inner IPv4 header',
        raw: (() => {
          const b = vxlan(PEER, NODE_IP, VNI_TUNNEL, inner);
          const c = Buffer.from(b.subarray(0, 14 + 50 + 10));
          c.writeUInt16BE(c.length - 14, 16);
          c.writeUInt16BE(0, 24);
          c.writeUInt16BE(csumFold(csumPartial(c.subarray(14, 34))), 24);
          c.writeUInt16BE(c.length - 14 - 20, 38);
          return c;
        })(),
        verdict: 'drop',
        reason: 'tun-malformed',
      },
      {
        name: 'UDP length disagrees with IPv4',
        raw: vxlan(PEER, NODE_IP, VNI_TUNNEL, inner, { udpLenDelta: -4 }),
        verdict: 'drop',
        reason: 'tun-malformed',
      },
      { name: 'a fragment', raw: vxlan(PEER, NODE_IP, VNI_TUNNEL, inner, { mf: true }), verdict: 'drop', reason: 'tun-malformed' },
      {
        name: 'inner neither IPv4 nor IPv6 (ARP)',
        raw: (() => {
          const b = vxlan(PEER, NODE_IP, VNI_TUNNEL, inner);
          b.writeUInt16BE(0x0806, 14 + 36 + 12);
          return b;
        })(),
        verdict: 'drop',
        reason: 'tun-malformed',
      },
      {
        // IPv6 goes to the IPv6 path decapsulated (test/datapath-tunnel6.test.ts), which finds no IPv6 header
        name: 'inner says IPv6 but is IPv4',
        raw: (() => {
          const b = vxlan(PEER, NODE_IP, VNI_TUNNEL, inner);
          b.writeUInt16BE(0x86dd, 14 + 36 + 12);
          return b;
        })(),
        verdict: 'drop',
        reason: 'malformed',
      },
      {
        name: 'inner IPv4 longer than the outer packet',
        raw: (() => {
          const b = vxlan(PEER, NODE_IP, VNI_TUNNEL, inner);
          b.writeUInt16BE(1400, 14 + 50 + 2);
          return b;
        })(),
        verdict: 'drop',
        reason: 'tun-malformed',
      },
      { name: 'another VNI (someone else’s VXLAN)', raw: vxlan('203.0.113.9', NODE_IP, 42, inner), verdict: 'pass' },
      {
        name: 'a packet of no flow that cannot open one',
        raw: vxlan(
          PEER,
          NODE_IP,
          VNI_TUNNEL,
          frame({ src: CLIENT, dst: PEER }, { proto: 'tcp', sport: 45001, dport: 30083, flags: TCP.ACK }),
        ),
        verdict: 'drop',
        reason: 'tun-no-flow',
      },
    ];
    for (const c of cases) {
      const before = c.reason ? reasonCount(dp, c.reason) : 0;
      const r = node.runRaw('fromData', c.raw);
      t.equal(r.verdict, c.verdict, `${c.name}: ${c.verdict}`);
      if (c.reason) t.equal(reasonCount(dp, c.reason), before + 1, `${c.name}: counted as ${c.reason}`);
      if (c.verdict === 'pass') t.same(r.raw, c.raw, `${c.name}: untouched`);
    }
  });
});
