/**
 * Per-program packet cases through BPF_PROG_RUN, table-driven like
 * kube-proxy's packet-flow tests: the service table both families share
 * (test/helpers/service-table.ts; test/datapath-ipv6.test.ts runs it in
 * IPv6), then IPv4's own cases. Runs in a namespace of its own with a
 * dummy "uplink" (192.0.2.11/24), so FIB lookups are deterministic.
 */
import t from 'tap';
import { native } from '../src/native/index.js';
import { frame, icmpErrorFrame, parseFrame, PROTO, TCP, quotedL4CsumOk, type FrameSpec, type L4 } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { programServices, runServiceTable } from './helpers/service-table.js';
import { inNetns } from './helpers/env.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { reasonCount, runProg, TC_ACT_OK, TC_ACT_SHOT } from './helpers/progrun.js';
import { CtDir, CtState, CtFlags } from '../src/dataplane/bpf/codecs.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';

t.test('service datapath through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t, {
    ctTimeoutsNs: ctTimeoutsNs({ ...DEFAULT_CONFIG.conntrack, tcpSynSent: 7_000 }),
  });
  const { ns, ifindex, dp, rec } = node;
  const run = (...a: Parameters<typeof node.run>) => node.run(...a);
  programServices(t, rec, 'ipv4');
  rec.setNodeAddresses([NODE_IP]);
  runServiceTable(t, node, 'ipv4');

  t.test('reply from the backend is reverse-NATed to the service address', async (t) => {
    const fwd = run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 42000, dport: 80 });
    const back = run('fromPod', { src: fwd.out.dst, dst: POD }, { proto: 'tcp', sport: 8080, dport: 42000, flags: TCP.SYN | TCP.ACK });
    t.equal(back.verdict, 'redirect');
    t.equal(back.out.src, '10.96.0.10');
    t.equal(back.out.sport, 80);
    t.equal(back.out.dst, POD);
    t.equal(back.out.dport, 42000);
    t.ok(back.out.ipCsumOk && back.out.l4CsumOk, 'checksums valid');
    const fwdCt = dp.maps.ct.get({ saddr: POD, daddr: '10.96.0.10', sport: 42000, dport: 80, proto: PROTO.TCP });
    t.ok(fwdCt, 'forward conntrack entry');
    t.equal(fwdCt!.dir, CtDir.FWD);
    t.equal(fwdCt!.state & CtState.REPLY_SEEN, CtState.REPLY_SEEN, 'first reply marks the forward entry established');
    const synRcvd = Number(fwdCt!.expiresNs - native().monotonicNs()) / 1e9;
    t.ok(synRcvd <= 7, `a SYN answered is not yet a connection: SYN-sent timeout still (${synRcvd.toFixed(0)}s left)`);
    // the client's ACK completes the handshake
    run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.ACK });
    const est = dp.maps.ct.get({ saddr: POD, daddr: '10.96.0.10', sport: 42000, dport: 80, proto: PROTO.TCP })!;
    t.equal(est.state & CtState.ESTABLISHED, CtState.ESTABLISHED, "the client's ACK after the reply completes the handshake");
    const left = Number(est.expiresNs - native().monotonicNs()) / 1e9;
    t.ok(left > 3000 && left <= 3600, `established timeout applies (${left.toFixed(0)}s left)`);
  });

  t.test('conntrack timeouts follow the configured SYN-sent value and RST', async (t) => {
    run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 42100, dport: 80 });
    const k = { saddr: POD, daddr: '10.96.0.10', sport: 42100, dport: 80, proto: PROTO.TCP };
    const v = dp.maps.ct.get(k)!;
    t.equal(Number(v.expiresNs - v.createdNs) / 1e9, 7, 'SYN-sent lifetime is the configured 7 s');
    run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 42100, dport: 80, flags: TCP.RST });
    const v2 = dp.maps.ct.get(k)!;
    t.equal(v2.state & CtState.RST, CtState.RST, 'RST recorded');
    const left = Number(v2.expiresNs - native().monotonicNs()) / 1e9;
    t.ok(left > 35 && left <= 40, `RST-seen lifetime (${left.toFixed(1)}s)`);
  });

  t.test('eTP=Cluster NodePort to a remote endpoint SNATs to the node, and the reply comes back', async (t) => {
    const r = run('fromData', { src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 43000, dport: 30081 });
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.dst, '10.244.2.11');
    t.equal(r.out.src, NODE_IP, 'source is the node address the FIB picks');
    t.ok(r.out.ipCsumOk && r.out.l4CsumOk);
    const natPort = r.out.sport!;
    const fwd = dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 43000, dport: 30081, proto: PROTO.TCP })!;
    t.equal(fwd.flags & CtFlags.SNAT, CtFlags.SNAT, 'flow marked SNAT');
    const back = run(
      'fromData',
      { src: '10.244.2.11', dst: NODE_IP },
      { proto: 'tcp', sport: 8080, dport: natPort, flags: TCP.SYN | TCP.ACK },
    );
    t.equal(back.verdict, 'redirect');
    t.equal(back.out.src, NODE_IP);
    t.equal(back.out.sport, 30081);
    t.equal(back.out.dst, CLIENT);
    t.equal(back.out.dport, 43000);
    t.ok(back.out.ipCsumOk && back.out.l4CsumOk);

    t.test('ICMP fragmentation-needed from a router about the SNATed flow reaches the client translated', async (t) => {
      const quoted = frame(
        { src: NODE_IP, dst: '10.244.2.11' },
        { proto: 'tcp', sport: natPort, dport: 8080, flags: TCP.ACK, payload: Buffer.alloc(64, 1) },
      ).subarray(14);
      const icmp = icmpErrorFrame({ src: '192.0.2.1', dst: NODE_IP }, 3, 4, quoted, 1400);
      const e = inNetns(ns, () => runProg(dp, 'fromData', icmp, ifindex));
      t.equal(e.verdict, 'redirect');
      t.equal(e.out.src, '192.0.2.1', 'router address kept');
      t.equal(e.out.dst, CLIENT);
      t.equal(e.out.icmp?.mtu, 1400, 'MTU kept');
      t.ok(e.out.icmp?.csumOk, 'ICMP checksum valid');
      const inner = e.out.icmp!.inner!;
      t.equal(inner.src, CLIENT);
      t.equal(inner.sport, 43000);
      t.equal(inner.dst, NODE_IP);
      t.equal(inner.dport, 30081);
      t.ok(inner.ipCsumOk, 'quoted IP checksum valid');
      t.ok(quotedL4CsumOk(e.raw.subarray(14 + 20 + 8)), 'quoted TCP checksum valid');
    });
  });

  t.test('ICMP port unreachable from a UDP backend is reverse-translated, inner header too', async (t) => {
    const q = frame({ src: POD, dst: '10.96.0.53' }, { proto: 'udp', sport: 5454, dport: 53, payload: Buffer.from('hello') });
    const r = inNetns(ns, () => runProg(dp, 'fromPod', q, ifindex));
    t.equal(r.out.dst, '10.244.1.13');
    const quoted = r.raw.subarray(14);
    const icmp = icmpErrorFrame({ src: '10.244.1.13', dst: POD }, 3, 3, quoted);
    const e = inNetns(ns, () => runProg(dp, 'fromPod', icmp, ifindex));
    t.equal(e.verdict, 'redirect');
    t.equal(e.out.src, '10.96.0.53', 'error appears to come from the service');
    t.equal(e.out.dst, POD);
    t.ok(e.out.ipCsumOk && e.out.icmp?.csumOk, 'outer checksums valid');
    const inner = e.out.icmp!.inner!;
    t.equal(inner.dst, '10.96.0.53');
    t.equal(inner.dport, 53);
    t.equal(inner.src, POD);
    t.ok(inner.ipCsumOk, 'quoted IP checksum valid');
    t.ok(quotedL4CsumOk(e.raw.subarray(14 + 20 + 8)), 'quoted UDP checksum valid');
  });

  t.test('too big for the next hop with DF: fragmentation-needed quoting the packet as sent', async (t) => {
    // the flow is opened by its SYN (only opening packets create state)
    const syn = run(
      'fromPod',
      { src: POD, dst: '10.96.0.20', dontFragment: true },
      { proto: 'tcp', sport: 49000, dport: 80, flags: TCP.SYN },
    );
    t.equal(syn.out.dst, '10.244.2.11', 'the SYN opens the flow');
    const big = run(
      'fromPod',
      { src: POD, dst: '10.96.0.20', dontFragment: true },
      { proto: 'tcp', sport: 49000, dport: 80, flags: TCP.ACK, payload: Buffer.alloc(1400, 7) },
    );
    t.equal(big.verdict, 'redirect', 'answered back out');
    t.equal(big.out.proto, PROTO.ICMP);
    t.same([big.out.icmp?.type, big.out.icmp?.code, big.out.icmp?.mtu], [3, 4, 1280], 'frag needed, route MTU');
    t.equal(big.out.src, '10.96.0.20', 'from the service address');
    t.equal(big.out.dst, POD);
    t.ok(big.out.ipCsumOk && big.out.icmp?.csumOk, 'checksums valid');
    t.equal(big.out.icmp?.inner?.dst, '10.96.0.20', 'quotes the packet before translation');
    t.equal(big.out.icmp?.inner?.dport, 80);
    t.equal(big.out.totalLen, 20 + 8 + 40, 'quotes the IP and whole TCP header');
    t.ok(reasonCount(dp, 'frag-needed') >= 1, 'counted');
    const small = run(
      'fromPod',
      { src: POD, dst: '10.96.0.20', dontFragment: true },
      { proto: 'tcp', sport: 49000, dport: 80, flags: TCP.ACK, payload: Buffer.alloc(1000, 7) },
    );
    t.equal(small.out.dst, '10.244.2.11', 'a packet that fits goes through on the same flow');
    const noDf = run(
      'fromPod',
      { src: POD, dst: '10.96.0.20' },
      { proto: 'tcp', sport: 49000, dport: 80, flags: TCP.ACK, payload: Buffer.alloc(1400, 7) },
    );
    t.equal(noDf.verdict, 'pass', 'without DF the stack may fragment it');
    t.equal(noDf.out.dst, '10.244.2.11', 'translated');
  });

  t.test('a service without endpoints rejects: TCP RST', async (t) => {
    const before = reasonCount(dp, 'no-endpoints');
    const r = run(
      'fromPod',
      { src: POD, dst: '10.96.0.30', srcMac: '02:00:00:00:00:aa', dstMac: '02:00:00:00:00:bb' },
      { proto: 'tcp', sport: 44000, dport: 80, seq: 5000, flags: TCP.SYN },
    );
    t.equal(r.verdict, 'redirect', 'sent back out');
    t.equal(r.out.srcMac, '02:00:00:00:00:bb');
    t.equal(r.out.dstMac, '02:00:00:00:00:aa');
    t.equal(r.out.src, '10.96.0.30');
    t.equal(r.out.dst, POD);
    t.equal(r.out.sport, 80);
    t.equal(r.out.dport, 44000);
    t.equal(r.out.tcpFlags, TCP.RST | TCP.ACK);
    t.equal(r.out.ack, 5001, 'acknowledges the SYN');
    t.ok(r.out.ipCsumOk && r.out.l4CsumOk, 'checksums valid');
    t.equal(r.raw.length, 54, 'bare RST');
    t.equal(reasonCount(dp, 'no-endpoints'), before + 1, 'counted');
  });

  t.test('a service without endpoints rejects: UDP ICMP port unreachable', async (t) => {
    const r = run(
      'fromPod',
      { src: POD, dst: '10.96.0.30' },
      { proto: 'udp', sport: 44001, dport: 53, payload: Buffer.from('x'.repeat(40)) },
    );
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.proto, PROTO.ICMP);
    t.equal(r.out.src, '10.96.0.30');
    t.equal(r.out.dst, POD);
    t.same([r.out.icmp?.type, r.out.icmp?.code], [3, 3]);
    t.ok(r.out.ipCsumOk && r.out.icmp?.csumOk, 'checksums valid');
    t.equal(r.out.icmp?.inner?.dst, '10.96.0.30');
    t.equal(r.out.icmp?.inner?.dport, 53);
    t.equal(r.out.totalLen, 20 + 8 + 28);
  });

  t.test('ClientIP affinity keeps a client on one backend', async (t) => {
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = run('fromPod', { src: POD, dst: '10.96.0.50' }, { proto: 'tcp', sport: 45000 + i, dport: 80 });
      seen.add(r.out.dst);
    }
    t.equal(seen.size, 1, `one backend for one client (${[...seen].join(',')})`);
    const aff = dp.maps.affinity.entries();
    t.equal(aff.length, 1);
    t.equal(aff[0]![0].client, POD);
  });

  t.test('uniform choice spreads new connections', async (t) => {
    const seen = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const r = run('fromPod', { src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 46000 + i, dport: 80 });
      seen.set(r.out.dst, (seen.get(r.out.dst) ?? 0) + 1);
    }
    t.equal(seen.size, 2, 'both backends chosen');
    for (const [b, n] of seen) t.ok(n >= 10, `${b} chosen ${n}/60 times (p(<10) < 1e-9)`);
  });

  t.test('hairpin: a pod reaching itself through a service is SNATed', async (t) => {
    const r = run('fromPod', { src: POD, dst: '10.96.0.60' }, { proto: 'tcp', sport: 47000, dport: 80 });
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.dst, POD);
    t.equal(r.out.dport, 8080);
    t.equal(r.out.src, '169.254.42.1');
    const back = run(
      'fromPod',
      { src: POD, dst: '169.254.42.1' },
      { proto: 'tcp', sport: 8080, dport: r.out.sport!, flags: TCP.SYN | TCP.ACK },
    );
    t.equal(back.out.src, '10.96.0.60');
    t.equal(back.out.sport, 80);
    t.equal(back.out.dst, POD);
    t.equal(back.out.dport, 47000);
    t.ok(back.out.ipCsumOk && back.out.l4CsumOk);
  });

  t.test('TTL: 2 is forwarded with 1, as a router would; 1 is left to the stack untouched', async (t) => {
    const spent = reasonCount(dp, 'ttl');
    const two = run('fromPod', { src: POD, dst: '10.96.0.10', ttl: 2 }, { proto: 'tcp', sport: 47100, dport: 80 });
    t.equal(two.verdict, 'redirect', 'TTL 2: forwarded');
    t.equal(two.out.ttl, 1, 'with TTL 1');
    t.ok(two.out.ipCsumOk, 'IP checksum follows the TTL');
    const one = run('fromPod', { src: POD, dst: '10.96.0.10', ttl: 1 }, { proto: 'tcp', sport: 47101, dport: 80 });
    t.equal(one.verdict, 'pass', 'TTL 1: to the stack (it answers time exceeded)');
    t.equal(one.out.ttl, 1, 'TTL not decremented by us');
    t.ok(one.out.ipCsumOk && one.out.l4CsumOk, 'checksums valid');
    t.equal(reasonCount(dp, 'ttl'), spent + 1, 'only the spent one counted as ttl');
  });

  t.test('malformed and foreign frames are handled safely', async (t) => {
    const good = frame({ src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: 48000, dport: 80 });
    const before = reasonCount(dp, 'malformed');
    const truncTcp = good.subarray(0, 14 + 20 + 10);
    t.equal(inNetns(ns, () => runProg(dp, 'fromPod', truncTcp, ifindex)).verdict, 'drop', 'truncated TCP header dropped');
    const badIhl = Buffer.from(good);
    badIhl[14] = 0x44;
    t.equal(inNetns(ns, () => runProg(dp, 'fromPod', badIhl, ifindex)).verdict, 'drop', 'IHL < 5 dropped');
    const longIhl = Buffer.from(good);
    longIhl[14] = 0x4f; // 60-byte header in a 54-byte frame
    t.equal(inNetns(ns, () => runProg(dp, 'fromPod', longIhl, ifindex)).verdict, 'drop', 'IP header running past the frame dropped');
    t.equal(reasonCount(dp, 'malformed'), before + 3, 'all counted as malformed');
    const arp = Buffer.from(good);
    arp.writeUInt16BE(0x0806, 12);
    const a = inNetns(ns, () => runProg(dp, 'fromPod', arp, ifindex));
    t.equal(a.verdict, 'pass', 'non-IP passes');
    t.same(a.raw, arp, 'untouched');
    const frag = frame({ src: POD, dst: '10.96.0.10', fragOffset: 100 }, { proto: 'udp', sport: 1, dport: 80 });
    t.equal(inNetns(ns, () => runProg(dp, 'fromPod', frag, ifindex)).verdict, 'pass', 'non-first fragment left to the stack');
    const withOpts = frame({ src: POD, dst: '10.96.0.10', options: Buffer.from([1, 1, 1, 0]) }, { proto: 'tcp', sport: 48001, dport: 80 });
    const o = inNetns(ns, () => runProg(dp, 'fromPod', withOpts, ifindex));
    t.equal(o.verdict, 'redirect', 'IP options parsed past');
    t.ok(['10.244.1.11', '10.244.1.12'].includes(o.out.dst) && o.out.ipCsumOk && o.out.l4CsumOk, 'DNAT with options valid');
  });
});

t.test(
  'a kernel that refuses BPF_FIB_LOOKUP_SRC (before 6.7): the SNAT source falls back to the node address the client addressed',
  async (t) => {
    const { ns, ifindex, dp, rec } = await progrunNode(t);
    const remote = [be('10.244.2.11', 8080, false)];
    t.same(
      rec.syncService('test/remote', [
        fe('NodePort', '0.0.0.0', 30081, 'TCP', remote),
        fe('LoadBalancer', '198.51.100.20', 80, 'TCP', remote),
      ]).problems,
      [],
    );
    rec.setNodeAddresses([NODE_IP]);
    // The source lookup fails (< 0) as an old kernel's does for the flag it
    // does not know; here through an ingress device that does not exist.
    const refused = (f: FrameSpec, l4: L4) => {
      const ctx = Buffer.alloc(192);
      ctx.writeUInt32LE(0x7ffffff0, 36); // ingress_ifindex
      ctx.writeUInt32LE(ifindex, 40); // ifindex
      const r = inNetns(ns, () => native().progTestRun(dp.programs.fromData.fd, frame(f, l4), { ctx }));
      return { retval: r.retval, out: parseFrame(r.data) };
    };
    const noSource = reasonCount(dp, 'no-snat-source');

    const np = refused({ src: CLIENT, dst: NODE_IP }, { proto: 'tcp', sport: 43100, dport: 30081 });
    t.equal(np.retval, TC_ACT_OK, 'NodePort: translated, then left to the stack (the FIB gave no route either)');
    t.equal(np.out.dst, '10.244.2.11');
    t.equal(np.out.src, NODE_IP, 'SNAT to the node address the client addressed');
    t.ok(np.out.sport! >= 20000 && np.out.sport! <= 29999, `SNAT port ${np.out.sport} from the SNAT range`);
    t.ok(np.out.ipCsumOk && np.out.l4CsumOk);
    t.equal(reasonCount(dp, 'no-snat-source'), noSource, 'not counted as missing a source');

    const lb = refused({ src: CLIENT, dst: '198.51.100.20' }, { proto: 'tcp', sport: 43101, dport: 80 });
    t.equal(lb.retval, TC_ACT_SHOT, 'LoadBalancer IP: no node address to fall back to, dropped');
    t.equal(reasonCount(dp, 'no-snat-source'), noSource + 1, 'counted as no-snat-source');
  },
);
