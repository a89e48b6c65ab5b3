/**
 * The IPv6 service datapath through BPF_PROG_RUN: the service table both
 * families share (test/helpers/service-table.ts, the one
 * test/datapath-progrun.test.ts runs in IPv4: every service type, TCP and
 * UDP, traffic policies), reverse NAT, SNAT, rejects, affinity, hairpin in
 * IPv6, and what is IPv6's own:
 * extension headers, fragments, neighbour discovery left alone, ICMPv6
 * errors about NAT'd flows (packet too big) translated inner header
 * included, packet too big sent when the next hop is narrower, malformed
 * headers. IPv4 keeps working beside it on the same programs.
 */
import t from 'tap';
import { frame, PROTO } from '../testkit/packet.js';
import {
  frame6,
  icmp6ErrorFrame,
  ICMP6,
  ipv6Packet,
  l4Segment6,
  NH,
  quotedL4CsumOk6,
  TCP,
  type Frame6Spec,
  type L4v6,
} from '../testkit/packet6.js';
import { be, fe } from './helpers/fixtures.js';
import { ADDRS, programServices, runServiceTable } from './helpers/service-table.js';
import { reasonCount, skbCtx } from './helpers/progrun.js';
import { CLIENT6, NODE6, POD6, ROUTER6, progrun6Node } from './helpers/progrun6.js';
import { CtDir, CtFlags, CtState } from '../src/dataplane/bpf/codecs.js';
import { native } from '../src/native/index.js';
import { inNetns } from './helpers/env.js';
import { conntrackViews, flowHasAddress, serviceViews } from '../src/dataplane/bpf/inspect.js';
import { ipv6Bytes } from '../src/net/ip6.js';

const A = ADDRS.ipv6;
const CIP = A.cip;
const L1 = A.l1;
const L2 = A.l2;
const REMOTE = A.remote;
const HAIRPIN6 = A.hairpin;

t.test('IPv6 service datapath through BPF_PROG_RUN', async (t) => {
  const node = await progrun6Node(t);
  const { dp, rec } = node;
  const run = (role: 'fromPod' | 'fromData', f: Frame6Spec, l4: L4v6) => node.runRaw(role, frame6(f, l4));
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], `${svc} programmed`);
  programServices(t, rec, 'ipv6');
  sync('test/v4', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', [be('10.244.1.11', 8080)])]);
  rec.setNodeAddresses(['192.0.2.11', NODE6]);
  t.same(
    dp.maps.nodeIps6.entries().map(([k]) => k.addr),
    [NODE6],
    'the node IPv6 address went to bpfproxy_node_ips6, not the IPv4 map',
  );
  t.equal(dp.maps.fe6.entries().length, 13, 'IPv6 frontends in bpfproxy_fe6');
  t.equal(dp.maps.fe.entries().length, 1, 'the IPv4 frontend alone in bpfproxy_fe');

  // The table both families share, then IPv6's own: extension headers and a first fragment.
  runServiceTable(t, node, 'ipv6', [
    {
      name: 'hop-by-hop and destination options before TCP: DNAT past them',
      role: 'fromPod',
      from: POD6,
      to: CIP,
      ext: [{ type: 'hop' }, { type: 'dst', body: Buffer.alloc(14) }],
      l4: { proto: 'tcp', sport: 41008, dport: 80 },
      verdict: 'redirect',
      dst: [L1, L2],
      dport: 8080,
      src: POD6,
    },
    {
      name: 'routing header (type 0, segments left 0) before UDP: DNAT past it',
      role: 'fromPod',
      from: POD6,
      to: 'fd00:10:96::53',
      ext: [{ type: 'routing', body: Buffer.alloc(6) }],
      l4: { proto: 'udp', sport: 41009, dport: 53 },
      verdict: 'redirect',
      dst: ['fd00:10:244:1::13'],
      dport: 53,
    },
    {
      name: 'first fragment (offset 0, more to come) carries the ports: translated',
      role: 'fromPod',
      from: POD6,
      to: CIP,
      ext: [{ type: 'frag', offset: 0, more: true }],
      l4: { proto: 'tcp', sport: 41010, dport: 80 },
      verdict: 'redirect',
      dst: [L1, L2],
      dport: 8080,
    },
  ]);

  t.test('reply from the backend is reverse-NATed; conntrack as for IPv4', async (t) => {
    const fwd = run('fromPod', { src: POD6, dst: CIP }, { proto: 'tcp', sport: 42000, dport: 80 });
    const back = run('fromPod', { src: fwd.out.dst, dst: POD6 }, { proto: 'tcp', sport: 8080, dport: 42000, flags: TCP.SYN | TCP.ACK });
    t.equal(back.verdict, 'redirect');
    t.equal(back.out.src, CIP);
    t.equal(back.out.sport, 80);
    t.equal(back.out.dst, POD6);
    t.equal(back.out.dport, 42000);
    t.ok(back.out.l4CsumOk, 'checksum valid');
    const k = { saddr: POD6, daddr: CIP, sport: 42000, dport: 80, proto: PROTO.TCP };
    const v = dp.maps.ct6.get(k);
    t.equal(v?.dir, CtDir.FWD, 'forward entry in bpfproxy_ct6');
    t.equal((v?.state ?? 0) & CtState.REPLY_SEEN, CtState.REPLY_SEEN, 'first reply seen');
    run('fromPod', { src: POD6, dst: CIP }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.ACK });
    t.equal(dp.maps.ct6.get(k)!.state & CtState.ESTABLISHED, CtState.ESTABLISHED, "the client's ACK establishes it");
    t.equal(dp.maps.ct.entries().filter(([key]) => key.saddr.includes(':')).length, 0, 'nothing IPv6 in the IPv4 conntrack');
    const stray = run('fromPod', { src: POD6, dst: CIP }, { proto: 'tcp', sport: 42999, dport: 80, flags: TCP.ACK });
    t.equal(stray.verdict, 'pass', 'an ACK of no known flow creates no state and is left to the kernel');
  });

  t.test('NodePort to an endpoint on another node: SNAT to the node, reply reversed', async (t) => {
    const fwd = run('fromData', { src: CLIENT6, dst: NODE6 }, { proto: 'tcp', sport: 43000, dport: 30081 });
    t.equal(fwd.verdict, 'redirect');
    t.equal(fwd.out.dst, REMOTE);
    t.equal(fwd.out.src, NODE6, 'SNATed to the node address');
    t.ok(fwd.out.sport! >= 20000 && fwd.out.sport! <= 29999, `SNAT port ${fwd.out.sport} in the SNAT range`);
    t.ok(fwd.out.l4CsumOk, 'checksum valid');
    const back = run(
      'fromData',
      { src: REMOTE, dst: NODE6 },
      { proto: 'tcp', sport: 8080, dport: fwd.out.sport!, flags: TCP.SYN | TCP.ACK },
    );
    t.equal(back.out.src, NODE6);
    t.equal(back.out.sport, 30081);
    t.equal(back.out.dst, CLIENT6);
    t.equal(back.out.dport, 43000);
    t.ok(back.out.l4CsumOk, 'reply checksum valid');
    const e = dp.maps.ct6.get({ saddr: CLIENT6, daddr: NODE6, sport: 43000, dport: 30081, proto: PROTO.TCP });
    t.equal((e?.flags ?? 0) & (CtFlags.SNAT | CtFlags.EXTERNAL), CtFlags.SNAT | CtFlags.EXTERNAL, 'entry flagged SNAT, external');
  });

  t.test('no endpoints: TCP RST and ICMPv6 port unreachable back to the client', async (t) => {
    const rst = run('fromPod', { src: POD6, dst: 'fd00:10:96::30' }, { proto: 'tcp', sport: 44000, dport: 80, seq: 7000 });
    t.equal(rst.verdict, 'redirect', 'sent back');
    t.equal(rst.out.src, 'fd00:10:96::30');
    t.equal(rst.out.dst, POD6);
    t.equal(rst.out.tcpFlags, TCP.RST | TCP.ACK);
    t.equal(rst.out.ack, 7001, 'acknowledges the SYN');
    t.ok(rst.out.l4CsumOk, 'RST checksum valid');
    const un = run('fromPod', { src: POD6, dst: 'fd00:10:96::30' }, { proto: 'udp', sport: 44001, dport: 53, payload: Buffer.from('q') });
    t.equal(un.verdict, 'redirect');
    t.equal(un.out.nh, NH.ICMPV6);
    t.same([un.out.icmp?.type, un.out.icmp?.code], [ICMP6.DEST_UNREACH, 4], 'destination unreachable, port unreachable');
    t.ok(un.out.icmp?.csumOk, 'ICMPv6 checksum valid (pseudo-header included)');
    t.equal(un.out.icmp?.inner?.dst, 'fd00:10:96::30', 'quotes the packet as sent');
    t.equal(un.out.icmp?.inner?.dport, 53);
    t.ok(reasonCount(dp, 'no-endpoints') >= 2, 'counted as no-endpoints');
  });

  t.test('ClientIP affinity: the same client sticks to one endpoint', async (t) => {
    const got = new Set<string>();
    for (let i = 0; i < 6; i++)
      got.add(run('fromPod', { src: POD6, dst: 'fd00:10:96::50' }, { proto: 'tcp', sport: 45000 + i, dport: 80 }).out.dst);
    t.equal(got.size, 1, `one endpoint for 6 connections (${[...got].join(',')})`);
    t.equal(dp.maps.affinity6.entries().length, 1, 'one affinity entry, in bpfproxy_affinity6');
  });

  t.test('hairpin: a pod reaching itself is SNATed to the IPv6 hairpin address', async (t) => {
    const r = run('fromPod', { src: POD6, dst: 'fd00:10:96::60' }, { proto: 'tcp', sport: 46000, dport: 80 });
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.dst, POD6);
    t.equal(r.out.src, HAIRPIN6, 'not link-local (the pod would look for it on its link)');
    t.ok(r.out.l4CsumOk);
    const back = run('fromPod', { src: POD6, dst: HAIRPIN6 }, { proto: 'tcp', sport: 8080, dport: r.out.sport!, flags: TCP.SYN | TCP.ACK });
    t.equal(back.out.src, 'fd00:10:96::60');
    t.equal(back.out.dport, 46000);
  });

  t.test('neighbour discovery and other ICMPv6 control traffic pass untouched', async (t) => {
    const ns6 = Buffer.concat([Buffer.alloc(4), Buffer.from([0xfd, 0, 0, 0x10, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10])]);
    for (const [what, role, f, l4] of [
      [
        'neighbour solicitation for the cluster IP',
        'fromPod',
        { src: POD6, dst: 'ff02::1:ff00:10', hopLimit: 255 },
        { proto: 'icmp6', type: ICMP6.NS, code: 0, body: ns6 },
      ],
      [
        'neighbour advertisement',
        'fromData',
        { src: '2001:db8:1::12', dst: NODE6, hopLimit: 255 },
        { proto: 'icmp6', type: ICMP6.NA, code: 0, body: ns6 },
      ],
      ['router solicitation', 'fromPod', { src: 'fe80::1', dst: 'ff02::2', hopLimit: 255 }, { proto: 'icmp6', type: ICMP6.RS, code: 0 }],
      [
        'router advertisement',
        'fromData',
        { src: 'fe80::2', dst: 'ff02::1', hopLimit: 255 },
        { proto: 'icmp6', type: ICMP6.RA, code: 0, body: Buffer.alloc(12) },
      ],
      [
        'echo request to a cluster IP',
        'fromPod',
        { src: POD6, dst: CIP },
        { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0, body: Buffer.alloc(8) },
      ],
    ] as const) {
      const raw = frame6(f, l4);
      const r = node.runRaw(role, raw);
      t.equal(r.verdict, 'pass', `${what}: passed`);
      t.ok(r.raw.equals(raw), `${what}: not a byte changed`);
    }
  });

  t.test('ICMPv6 errors about a NAT’d flow are translated, inner header included', async (t) => {
    const fwd = run('fromPod', { src: POD6, dst: CIP }, { proto: 'tcp', sport: 47000, dport: 80, payload: Buffer.alloc(100, 1) });
    const be6 = fwd.out.dst;
    // What the client sent, as the backend saw it: quoted by a router on the way.
    const quoted = ipv6Packet(
      { src: POD6, dst: be6 },
      NH.TCP,
      l4Segment6(POD6, be6, { proto: 'tcp', sport: 47000, dport: 8080, payload: Buffer.alloc(100, 1) }).seg,
    );
    const ptb = node.runRaw('fromPod', icmp6ErrorFrame({ src: ROUTER6, dst: POD6 }, ICMP6.PKT_TOOBIG, 0, quoted, 1280));
    t.equal(ptb.verdict, 'redirect', 'forwarded to the client');
    t.equal(ptb.out.src, ROUTER6, "a router's error keeps the router's address");
    t.equal(ptb.out.dst, POD6);
    t.equal(ptb.out.icmp?.type, ICMP6.PKT_TOOBIG);
    t.equal(ptb.out.icmp?.info, 1280, 'the MTU is kept');
    t.ok(ptb.out.icmp?.csumOk, 'ICMPv6 checksum valid');
    t.equal(ptb.out.icmp?.inner?.dst, CIP, 'the quote names the service, as the client sent it');
    t.equal(ptb.out.icmp?.inner?.dport, 80);
    t.equal(ptb.out.icmp?.inner?.src, POD6);
    t.ok(quotedL4CsumOk6(ptb.out.payload), 'the quoted TCP checksum matches the rewritten quote');
    // From the backend itself: it speaks for the service.
    const un = node.runRaw('fromPod', icmp6ErrorFrame({ src: be6, dst: POD6 }, ICMP6.DEST_UNREACH, 4, quoted));
    t.equal(un.out.src, CIP, "the backend's own error comes from the service address");
    t.ok(un.out.icmp?.csumOk, 'checksum valid');
  });

  t.test('too big for the next hop: packet too big back to the client', async (t) => {
    const r = run('fromPod', { src: POD6, dst: 'fd00:10:96::20' }, { proto: 'tcp', sport: 48000, dport: 80, payload: Buffer.alloc(1400) });
    t.equal(r.verdict, 'redirect', 'answered on the interface it came in on');
    t.equal(r.out.icmp?.type, ICMP6.PKT_TOOBIG);
    t.equal(r.out.icmp?.info, 1280, "the route's MTU");
    t.equal(r.out.src, 'fd00:10:96::20');
    t.equal(r.out.dst, POD6);
    t.ok(r.out.icmp?.csumOk, 'ICMPv6 checksum valid');
    t.equal(r.out.icmp?.inner?.dst, 'fd00:10:96::20', 'quotes the packet as the client sent it');
    t.ok(reasonCount(dp, 'frag-needed') >= 1, 'counted as frag-needed');
  });

  t.test('malformed and odd IPv6 headers', async (t) => {
    const ok = frame6({ src: POD6, dst: CIP }, { proto: 'tcp', sport: 49000, dport: 80 });
    const before = reasonCount(dp, 'malformed');
    const longer = frame6({ src: POD6, dst: CIP, payloadLen: 200 }, { proto: 'tcp', sport: 49001, dport: 80 });
    t.equal(node.runRaw('fromPod', longer).verdict, 'drop', 'payload length past the frame: dropped');
    const overrun = frame6({ src: POD6, dst: CIP, ext: [{ type: 'hop', lenByte: 30 }] }, { proto: 'tcp', sport: 49002, dport: 80 });
    t.equal(node.runRaw('fromPod', overrun).verdict, 'drop', 'an extension header longer than the payload: dropped');
    const doff = Buffer.from(ok);
    doff[14 + 40 + 12] = 0x40;
    t.equal(node.runRaw('fromPod', doff).verdict, 'drop', 'TCP data offset below 5: dropped');
    t.equal(node.runRaw('fromPod', ok.subarray(0, 14 + 40 + 10)).verdict, 'drop', 'cut inside the TCP header: dropped');
    const v4 = Buffer.from(ok);
    v4[14] = 0x40;
    t.equal(node.runRaw('fromPod', v4).verdict, 'drop', 'IPv6 ethertype with version 4: dropped');
    t.equal(reasonCount(dp, 'malformed') - before, 5, 'each counted as malformed');
    const nine = frame6(
      { src: POD6, dst: CIP, ext: Array.from({ length: 9 }, () => ({ type: 'dst' as const })) },
      { proto: 'tcp', sport: 49003, dport: 80 },
    );
    t.equal(node.runRaw('fromPod', nine).verdict, 'pass', 'more extension headers than the walk takes (8): left to the stack');
    const frags = reasonCount(dp, 'fragment');
    const later = frame6(
      { src: POD6, dst: CIP, ext: [{ type: 'frag', offset: 185, more: false }] },
      { proto: 'tcp', sport: 49004, dport: 80 },
    );
    const r = node.runRaw('fromPod', later);
    t.equal(r.verdict, 'pass', 'a later fragment has no ports: left to the stack');
    t.ok(r.raw.equals(later), 'untouched');
    t.equal(reasonCount(dp, 'fragment') - frags, 1, 'counted as fragment');
    const spoofed = frame6({ src: NODE6, dst: NODE6 }, { proto: 'tcp', sport: 49005, dport: 30080 });
    t.equal(node.runRaw('fromData', spoofed).verdict, 'drop', "from outside with the node's own IPv6 address: dropped (spoofed)");
  });

  t.test('bpfproxy services and conntrack show the IPv6 frontends and flows', async (t) => {
    const views = serviceViews(dp.maps);
    const web = views.filter((v) => v.servicePort === 'test/web:http/TCP').map((v) => v.frontend);
    t.ok(web.includes('[fd00:10:96::10]:80/TCP'), 'the IPv6 cluster IP, bracketed');
    t.ok(web.includes('[*]:30080/TCP'), 'the IPv6 NodePort wildcard');
    t.same(
      views
        .find((v) => v.frontend === '[fd00:10:96::10]:80/TCP')
        ?.backends.map((b) => b.addr)
        .sort(),
      [`[${L1}]:8080`, `[${L2}]:8080`],
      'its endpoints',
    );
    t.ok(
      conntrackViews(dp.maps).some((c) => c.from === `[${POD6}]:42000` && c.to === `[${CIP}]:80`),
      'an IPv6 flow in the conntrack view',
    );
    // bpfproxy conntrack --ip: an IPv6 address as the operator writes it, spelled out or not
    const expanded = ipv6Bytes(POD6)
      .toString('hex')
      .replace(/(.{4})(?!$)/g, '$1:');
    const mine = conntrackViews(dp.maps).filter((c) => flowHasAddress(c, expanded));
    t.ok(
      mine.length > 0 &&
        mine.some((c) => c.from === `[${POD6}]:42000`) &&
        mine.every((c) => [c.from, c.to, c.natFrom, c.natTo].some((a) => a.startsWith(`[${POD6}]:`))),
      `--ip ${expanded} finds the pod's IPv6 flows`,
    );
    t.notOk(
      conntrackViews(dp.maps).some((c) => flowHasAddress(c, POD6.slice(0, -1))),
      'an address that is a prefix of the text of another is not a match',
    );
  });

  t.test('UDP conntrack of a removed IPv6 endpoint is cleared; expired IPv6 connections are collected', async (t) => {
    const old = 'fd00:10:244:1::13';
    const r = run('fromPod', { src: POD6, dst: 'fd00:10:96::53' }, { proto: 'udp', sport: 5999, dport: 53 });
    t.equal(r.out.dst, old);
    const toOld = () => dp.maps.ct6.entries().filter(([k, v]) => k.proto === PROTO.UDP && (v.natDaddr === old || k.saddr === old)).length;
    t.ok(toOld() >= 2, `the UDP flows to the endpoint, both halves each (${toOld()} entries)`);
    sync('test/dns', [fe('ClusterIP', 'fd00:10:96::53', 53, 'UDP', [be('fd00:10:244:1::14', 53)])]);
    await rec.flushed();
    t.equal(toOld(), 0, 'gone with the endpoint (its datagrams would otherwise keep going to it)');
    const next = run('fromPod', { src: POD6, dst: 'fd00:10:96::53' }, { proto: 'udp', sport: 5999, dport: 53 });
    t.equal(next.out.dst, 'fd00:10:244:1::14', 'the next datagram goes to the new endpoint');

    const before = dp.maps.ct6.entries().length;
    const r1 = await native().ctGc(dp.maps.ct6.fd, { nowNs: native().monotonicNs() });
    t.match(
      r1,
      { scanned: before, live: before, expired: 0 },
      'nothing expired yet: nothing collected (the native pass reads bpfproxy_ct6)',
    );
    const later = native().monotonicNs() + 7200n * 1_000_000_000n;
    const r2 = await native().ctGc(dp.maps.ct6.fd, { nowNs: later });
    t.equal(r2.expired, before, 'two hours on, every IPv6 connection (both halves) is collected');
    t.equal(dp.maps.ct6.entries().length, 0);
  });

  t.test('IPv4 is served beside IPv6 by the same programs', async (t) => {
    const r = inNetns(node.ns, () =>
      native().progTestRun(
        dp.programs.fromPod.fd,
        frame({ src: '10.244.1.99', dst: '10.96.0.10' }, { proto: 'tcp', sport: 40000, dport: 80 }),
        { ctx: skbCtx(node.ifindex) },
      ),
    );
    t.equal(r.retval, 7, `redirected (retval ${r.retval})`);
    t.equal(`${r.data[30]}.${r.data[31]}.${r.data[32]}.${r.data[33]}`, '10.244.1.11', 'DNATed to the IPv4 endpoint');
  });
});
