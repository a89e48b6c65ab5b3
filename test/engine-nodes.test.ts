/**
 * The vector engine's graph, node by node, through its test entry
 * (runVector: built frames in, the frames as the graph left them and the
 * node each went to out). Each case runs a whole vector that mixes flows,
 * protocols and bad frames, and checks every packet of it.
 */
import t, { type Test } from 'tap';
import { csumPartial, frame, icmpErrorFrame, parseFrame, quotedL4CsumOk, TCP, type FrameSpec, type L4 } from '../testkit/packet.js';
import { BpfError, native } from '../src/native/index.js';
import { encodeTable } from '../src/dataplane/afxdp/table.js';
import { fixIpCsum } from './helpers/fuzz/inspect.js';
import {
  BE_MAC,
  CLIENT,
  CLIENT_MAC,
  HAIRPIN,
  LOCAL_BE,
  LOCAL_BE_MAC,
  NODE,
  NODE_MAC,
  POD_PORT_MAC,
  REMOTE_BE,
  SNAT_PORTS,
  table,
  testEngine,
} from './helpers/engine.js';

const IN: Partial<FrameSpec> = { srcMac: CLIENT_MAC, dstMac: NODE_MAC };
const from = (src: string, dst: string, l4: L4, more: Partial<FrameSpec> = {}): Buffer => frame({ src, dst, ...IN, ...more }, l4);
const udp = (sport: number, dport: number, payload = Buffer.from('ping')): L4 => ({ proto: 'udp', sport, dport, payload });
const tcp = (sport: number, dport: number, flags: number, seq = 1000, ack = 0): L4 => ({ proto: 'tcp', sport, dport, flags, seq, ack });

/** Change bytes of a frame (offsets in the frame), optionally fixing the IPv4 checksum. */
function patch(f: Buffer, at: Record<number, number>, fixCsum = false): Buffer {
  const b = Buffer.from(f);
  for (const [o, v] of Object.entries(at)) b[Number(o)] = v;
  if (fixCsum) fixIpCsum(b);
  return b;
}

t.test('ip4-parse: every length checked, each malformed frame dropped under its reason', async (t) => {
  const e = testEngine(t);
  const good = from(CLIENT, NODE, udp(40000, 30080));
  const goodTcp = from(CLIENT, NODE, tcp(40001, 30081, TCP.SYN));
  const cases: Array<[string, Buffer, string, string]> = [
    ['udp', good, 'session', 'none'],
    ['tcp', goodTcp, 'session', 'none'],
    ['arp', patch(good, { 12: 0x08, 13: 0x06 }), 'drop', 'not-ipv4'],
    ['10 bytes', good.subarray(0, 10), 'drop', 'short-frame'],
    ['ethernet + 6', good.subarray(0, 20), 'drop', 'short-frame'],
    ['version 6', patch(good, { 14: 0x65 }), 'drop', 'ip-version'],
    ['ihl 4', patch(good, { 14: 0x44 }), 'drop', 'ip-header-length'],
    ['ihl 15 past the frame', patch(good.subarray(0, 50), { 14: 0x4f }), 'drop', 'ip-header-length'],
    ['total length past the frame', patch(good, { 16: 0x07, 17: 0xd0 }, true), 'drop', 'ip-total-length'],
    ['total length below the header', patch(good, { 16: 0, 17: 10 }, true), 'drop', 'ip-total-length'],
    ['header checksum', patch(good, { 24: good[24]! ^ 0xff }), 'drop', 'ip-checksum'],
    ['more fragments', from(CLIENT, NODE, udp(40002, 30080), { moreFragments: true }), 'drop', 'fragment'],
    ['fragment offset', from(CLIENT, NODE, udp(40003, 30080), { fragOffset: 8 }), 'drop', 'fragment'],
    ['icmp error quoting udp', icmpErrorFrame({ src: CLIENT, dst: NODE, ...IN }, 3, 3, good.subarray(14, 42)), 'icmp-error', 'none'],
    ['icmp error quote cut short', icmpErrorFrame({ src: CLIENT, dst: NODE, ...IN }, 3, 3, good.subarray(14, 41)), 'drop', 'l4-protocol'],
    ['icmp echo', icmpErrorFrame({ src: CLIENT, dst: NODE, ...IN }, 8, 0, good.subarray(14, 42)), 'drop', 'l4-protocol'],
    [
      'icmp error quoting icmp',
      icmpErrorFrame(
        { src: CLIENT, dst: NODE, ...IN },
        11,
        0,
        icmpErrorFrame({ src: NODE, dst: CLIENT }, 8, 0, Buffer.alloc(0)).subarray(14),
      ),
      'drop',
      'l4-protocol',
    ],
    ['tcp doff 4', patch(goodTcp, { 46: 0x40 }), 'drop', 'tcp-header-length'],
    ['tcp doff 15', patch(goodTcp, { 46: 0xf0 }), 'drop', 'tcp-header-length'],
    ['tcp cut short', patch(goodTcp.subarray(0, 14 + 30), { 16: 0, 17: 30 }, true), 'drop', 'l4-truncated'],
    ['udp length 4', patch(good, { 38: 0, 39: 4 }), 'drop', 'udp-length'],
    ['udp length past the packet', patch(good, { 38: 0x05, 39: 0xdc }), 'drop', 'udp-length'],
  ];
  const out = e.runVector(
    cases.map((c) => c[1]),
    { until: 'ip4-parse' },
  );
  cases.forEach(([name, , next, reason], i) => {
    t.equal(out[i]!.next, next, `${name}: next ${next}`);
    t.equal(out[i]!.reason, reason, `${name}: reason ${reason}`);
  });
  t.equal(e.stats().nodes.find((n) => n.name === 'ip4-parse')!.packets, cases.length, 'ip4-parse saw the whole vector');
  t.equal(e.stats().reasons['ip-checksum'], 0, 'stopped after ip4-parse: the drop node did not run, nothing counted');
  e.runVector(cases.map((c) => c[1]));
  const st = e.stats();
  t.same(
    [st.reasons['ip-checksum'], st.reasons['udp-length'], st.reasons.fragment, st.reasons['short-frame']],
    [1, 2, 2, 2],
    'the whole graph: each drop counted under its reason',
  );
});

t.test('session: established flows (both directions) go to nat, unknown ones to lb, in one vector', async (t) => {
  const e = testEngine(t);
  const fwd = from(CLIENT, NODE, udp(40000, 30080));
  const [opened] = e.runVector([fwd]);
  t.equal(opened!.next, 'output', 'the first packet opens the flow');
  const o = parseFrame(opened!.frame);
  const reply = frame({ src: o.dst, dst: o.src, srcMac: BE_MAC, dstMac: NODE_MAC }, udp(o.dport!, o.sport!));
  const out = e.runVector([fwd, from(CLIENT, NODE, udp(40001, 30080)), reply, fwd], { until: 'session' });
  t.same(
    out.map((r) => r.next),
    ['nat', 'lb', 'nat', 'nat'],
    'forward and reply packets of the flow hit; a new flow misses',
  );
});

t.test('lb: frontends, endpoints, traffic policy and neighbours decide per packet', async (t) => {
  const e = testEngine(t);
  const cases: Array<[string, Buffer, string, string]> = [
    ['NodePort on a node address', from(CLIENT, NODE, udp(40000, 30080)), 'nat', 'none'],
    ['NodePort on another address', from(CLIENT, '10.9.9.9', udp(40000, 30080)), 'drop', 'no-frontend'],
    ['nothing there', from(CLIENT, '8.8.8.8', udp(40000, 53)), 'drop', 'no-frontend'],
    ['TCP ACK of no flow', from(CLIENT, NODE, tcp(40001, 30081, TCP.ACK)), 'drop', 'not-opening'],
    ['SYN, no endpoints', from(CLIENT, '198.51.100.10', tcp(40002, 80, TCP.SYN)), 'reject', 'none'],
    ['ACK, no endpoints', from(CLIENT, '198.51.100.10', tcp(40003, 80, TCP.ACK)), 'reject', 'none'],
    ['UDP, no endpoints', from(CLIENT, '198.51.100.10', udp(40004, 53)), 'reject', 'none'],
    ['eTP=Local, none here', from(CLIENT, '198.51.100.11', tcp(40005, 80, TCP.SYN)), 'drop', 'no-local-endpoints'],
    ['eTP=Local, one here', from(CLIENT, '198.51.100.12', tcp(40006, 80, TCP.SYN)), 'nat', 'none'],
    ['backend not resolved', from(CLIENT, '198.51.100.14', udp(40007, 80)), 'drop', 'no-neighbour'],
  ];
  const out = e.runVector(
    cases.map((c) => c[1]),
    { until: 'lb' },
  );
  cases.forEach(([name, , next, reason], i) => {
    t.equal(out[i]!.next, next, `${name}: next ${next}`);
    t.equal(out[i]!.reason, reason, `${name}: reason ${reason}`);
  });
  t.equal(e.stats().sessions.live, 4, 'two flows opened (two entries each); nothing else left state');
});

t.test('nat + l2-rewrite: DNAT and SNAT out, reverse NAT back, checksums right, TTL down, MACs from the neighbour table', async (t) => {
  const e = testEngine(t);
  const req = from(CLIENT, NODE, udp(40000, 30080, Buffer.from('hello, service')), { ttl: 64 });
  const [out] = e.runVector([req]);
  t.equal(out!.next, 'output');
  t.equal(out!.port, 0, 'out of the uplink (port 0), where the backend is');
  const o = parseFrame(out!.frame);
  t.ok(REMOTE_BE.includes(o.dst), `DNAT to a backend (${o.dst})`);
  t.equal(o.dport, 8080, 'to its port');
  t.equal(o.src, NODE, 'SNAT to the node (eTP=Cluster, remote backend)');
  t.ok(o.sport! >= SNAT_PORTS[0] && o.sport! <= SNAT_PORTS[1], `SNAT port ${o.sport} from the engine's range`);
  t.equal(o.ttl, 63, 'TTL decremented');
  t.ok(o.ipCsumOk, 'IPv4 checksum right');
  t.ok(o.l4CsumOk, 'UDP checksum right');
  t.equal(o.dstMac, BE_MAC, "destination MAC: the backend's neighbour entry");
  t.equal(o.srcMac, NODE_MAC, "source MAC: the output port's");
  t.equal(o.payload.toString(), 'hello, service', 'payload untouched');

  const reply = frame({ src: o.dst, dst: NODE, srcMac: BE_MAC, dstMac: NODE_MAC }, udp(8080, o.sport!, Buffer.from('hello, client')));
  const [back] = e.runVector([reply]);
  const r = parseFrame(back!.frame);
  t.same([r.src, r.sport, r.dst, r.dport], [NODE, 30080, CLIENT, 40000], 'reverse NAT: from the NodePort to the client');
  t.ok(r.ipCsumOk && r.l4CsumOk, 'checksums right');
  t.same([r.dstMac, r.srcMac, back!.port], [CLIENT_MAC, NODE_MAC, 0], 'back the way the flow came in');

  const tcpReq = from(CLIENT, '198.51.100.12', tcp(40100, 80, TCP.SYN), { ttl: 9 });
  const [lt] = e.runVector([tcpReq]);
  const l = parseFrame(lt!.frame);
  t.same([l.src, l.sport, l.dst, l.dport], [CLIENT, 40100, LOCAL_BE, 8080], 'eTP=Local: the local endpoint, client address kept');
  t.ok(l.ipCsumOk && l.l4CsumOk, 'TCP checksum right');
  t.same([l.dstMac, l.srcMac, lt!.port, l.ttl], [LOCAL_BE_MAC, POD_PORT_MAC, 1, 8], 'out of the pod port');

  const ttl1 = e.runVector([from(CLIENT, NODE, udp(40200, 30080), { ttl: 1 }), from(CLIENT, NODE, udp(40201, 30080), { ttl: 0 })]);
  t.same(
    ttl1.map((x) => [x.next, x.reason]),
    [
      ['drop', 'ttl'],
      ['drop', 'ttl'],
    ],
    'TTL 0 and 1 are not forwarded',
  );
});

t.test('a checksum left partial by a sender with offload (veth) is completed, then translated', async (t) => {
  const e = testEngine(t);
  const withPartial = (f: Buffer): Buffer => {
    // what a CHECKSUM_PARTIAL packet carries: the folded pseudo-header sum, not inverted
    const b = Buffer.from(f);
    const ihl = (b[14]! & 0x0f) * 4;
    const l4 = 14 + ihl;
    const len = b.readUInt16BE(16) - ihl;
    const proto = b[23]!;
    const ph = Buffer.concat([b.subarray(26, 34), Buffer.from([0, proto, len >> 8, len & 0xff])]);
    b.writeUInt16BE(csumPartial(ph), l4 + (proto === 6 ? 16 : 6));
    return b;
  };
  const u = withPartial(from(CLIENT, NODE, udp(40000, 30080, Buffer.from('from a pod with offload'))));
  const c = withPartial(from(CLIENT, NODE, { ...tcp(40001, 30081, TCP.SYN), payload: Buffer.from('syn data') }));
  t.notOk(parseFrame(u).l4CsumOk, 'the UDP checksum as sent is not complete');
  t.notOk(parseFrame(c).l4CsumOk, 'the TCP checksum as sent is not complete');
  const [ou, oc] = e.runVector([u, c]);
  t.ok(parseFrame(ou!.frame).l4CsumOk, 'UDP: complete and right after translation');
  t.ok(parseFrame(oc!.frame).l4CsumOk, 'TCP: complete and right after translation');
  const good = from(CLIENT, NODE, udp(40002, 30080, Buffer.from('complete')));
  const [og] = e.runVector([good]);
  t.ok(parseFrame(og!.frame).l4CsumOk, 'a complete checksum stays right (incremental update)');
});

t.test('reject: RST and ICMP port unreachable built in place, sent back where they came from', async (t) => {
  const e = testEngine(t);
  const syn = from(CLIENT, '198.51.100.10', { ...tcp(40000, 80, TCP.SYN, 5000), payload: Buffer.alloc(0) });
  const ack = from(CLIENT, '198.51.100.10', tcp(40001, 80, TCP.ACK, 7000, 9999));
  const rst = from(CLIENT, '198.51.100.10', tcp(40002, 80, TCP.RST));
  const dgram = from(CLIENT, '198.51.100.10', udp(40003, 53, Buffer.from('query')));
  const out = e.runVector([syn, ack, rst, dgram], { rxPort: 0 });

  const a = parseFrame(out[0]!.frame);
  t.same([a.src, a.sport, a.dst, a.dport], ['198.51.100.10', 80, CLIENT, 40000], 'RST from the service to the client');
  t.equal(a.tcpFlags, TCP.RST | TCP.ACK, 'RST+ACK to a SYN');
  t.equal(a.ack, 5001, 'acknowledging the SYN');
  t.ok(a.ipCsumOk && a.l4CsumOk, 'checksums right');
  t.same([a.dstMac, a.srcMac, out[0]!.port], [CLIENT_MAC, NODE_MAC, 0], 'MACs swapped, out of the port it came in');

  const b = parseFrame(out[1]!.frame);
  t.same([b.tcpFlags, b.seq], [TCP.RST, 9999], 'RST to an ACK takes its acknowledgment number as sequence');
  t.same([out[2]!.next, out[2]!.reason], ['drop', 'rst-not-answered'], 'a RST is never answered');

  const c = parseFrame(out[3]!.frame);
  t.same([c.src, c.dst, c.icmp?.type, c.icmp?.code], ['198.51.100.10', CLIENT, 3, 3], 'ICMP port unreachable from the service address');
  t.ok(c.ipCsumOk && c.icmp?.csumOk, 'IPv4 and ICMP checksums right');
  t.same(
    [c.icmp?.inner?.src, c.icmp?.inner?.dst, c.icmp?.inner?.sport, c.icmp?.inner?.dport],
    [CLIENT, '198.51.100.10', 40003, 53],
    'quoting the datagram',
  );
  t.equal(e.stats().reasons.rejected, 3, 'three answered, counted as rejected');
});

t.test("icmp-error: errors about a NAT'd flow go the flow's way, outer and quoted headers translated, every checksum right", async (t) => {
  const e = testEngine(t);
  // the whole packet by default (a quoted UDP checksum can only be checked over all of it)
  const quote = (f: Buffer, bytes?: number): Buffer => {
    const ihl = (f[14]! & 0x0f) * 4;
    return Buffer.from(f.subarray(14, bytes === undefined ? 14 + f.readUInt16BE(16) : 14 + ihl + bytes));
  };
  const checks = (t: Test, r: { frame: Buffer }, what: string) => {
    const p = parseFrame(r.frame);
    t.ok(p.ipCsumOk, `${what}: outer IPv4 checksum right`);
    t.ok(p.icmp?.csumOk, `${what}: ICMP checksum right`);
    t.ok(p.icmp?.inner?.ipCsumOk, `${what}: quoted IPv4 checksum right`);
    return p;
  };
  // a UDP flow to the NodePort (SNAT'd to a remote backend) and a TCP one
  const req = from(CLIENT, NODE, udp(40000, 30080, Buffer.from('query')));
  const [o1] = e.runVector([req]);
  const fwd = parseFrame(o1!.frame);
  const syn = from(CLIENT, NODE, tcp(40001, 30081, TCP.SYN, 777));
  const [o2] = e.runVector([syn]);
  const fwdTcp = parseFrame(o2!.frame);
  const BE = { srcMac: BE_MAC, dstMac: NODE_MAC };

  // the backend's port unreachable, to the node's SNAT address, quoting what the engine sent it
  const unreach = icmpErrorFrame({ src: fwd.dst, dst: NODE, ttl: 64, ...BE }, 3, 3, quote(o1!.frame));
  // a router on the way to the backend: time exceeded, whole TCP header quoted
  const router = icmpErrorFrame({ src: '10.0.2.254', dst: NODE, ...BE }, 11, 0, quote(o2!.frame, 20));
  // the client's port unreachable about a reply the engine sent it
  const [bk] = e.runVector([frame({ src: fwd.dst, dst: NODE, ...BE }, udp(8080, fwd.sport!, Buffer.from('answer')))]);
  const clientUnreach = icmpErrorFrame({ src: CLIENT, dst: NODE, ...IN }, 3, 3, quote(bk!.frame));
  // a flow the engine does not know
  const stray = icmpErrorFrame({ src: fwd.dst, dst: NODE, ...BE }, 3, 3, quote(from(NODE, fwd.dst, udp(10999, 8080))));
  const out = e.runVector([unreach, router, clientUnreach, stray], { rxPort: 0 });
  t.same(
    out.map((r) => [r.next, r.reason]),
    [
      ['output', 'none'],
      ['output', 'none'],
      ['output', 'none'],
      ['drop', 'icmp-unrelated'],
    ],
    'three errors about engine flows forwarded; one about no flow dropped, counted',
  );

  const a = checks(t, out[0]!, 'backend unreachable');
  t.same(
    [a.src, a.dst, a.ttl],
    [NODE, CLIENT, 63],
    'to the client, from the address it used (the backend speaks for the service), TTL down',
  );
  t.same(
    [a.icmp!.inner!.src, a.icmp!.inner!.sport, a.icmp!.inner!.dst, a.icmp!.inner!.dport],
    [CLIENT, 40000, NODE, 30080],
    'the quote is the packet as the client sent it',
  );
  t.ok(quotedL4CsumOk(out[0]!.frame.subarray(14 + 20 + 8)), 'quoted UDP checksum right');
  t.same([a.dstMac, a.srcMac, out[0]!.port], [CLIENT_MAC, NODE_MAC, 0], 'back the way the flow came in');

  const b = checks(t, out[1]!, 'router time exceeded');
  t.same([b.src, b.dst], ['10.0.2.254', CLIENT], "a router's error keeps the router's address");
  t.same(
    [b.icmp!.inner!.src, b.icmp!.inner!.sport, b.icmp!.inner!.dst, b.icmp!.inner!.dport, b.icmp!.inner!.seq],
    [CLIENT, 40001, NODE, 30081, 777],
    'the quoted SYN as the client sent it',
  );
  t.ok(quotedL4CsumOk(out[1]!.frame.subarray(14 + 20 + 8)), 'quoted TCP checksum (whole header quoted) right');

  const c = checks(t, out[2]!, 'client unreachable');
  t.same([c.src, c.dst], [NODE, fwd.dst], 'to the backend, from the SNAT address (the client speaks through it)');
  t.same(
    [c.icmp!.inner!.src, c.icmp!.inner!.sport, c.icmp!.inner!.dst, c.icmp!.inner!.dport],
    [fwd.dst, 8080, NODE, fwd.sport],
    'the quote is the reply as the backend sent it',
  );
  t.ok(quotedL4CsumOk(out[2]!.frame.subarray(14 + 20 + 8)), 'quoted UDP checksum right');
  t.same([c.dstMac, out[2]!.port], [BE_MAC, 0], "to the backend's neighbour entry");

  t.equal(fwdTcp.sport! >= SNAT_PORTS[0], true, "the TCP flow was SNAT'd too");
  const ttl1 = icmpErrorFrame({ src: fwd.dst, dst: NODE, ttl: 1, ...BE }, 3, 3, quote(o1!.frame));
  t.same(
    e.runVector([ttl1]).map((r) => r.reason),
    ['ttl'],
    'TTL 1: not forwarded',
  );
  const [short] = e.runVector([icmpErrorFrame({ src: '10.0.2.254', dst: NODE, ...BE }, 11, 0, quote(o2!.frame, 8))]);
  const sp = checks(t, short!, 'quote of 8 TCP bytes (no checksum in it)');
  t.same([sp.icmp!.inner!.src, sp.icmp!.inner!.sport], [CLIENT, 40001], 'ports translated; nothing past the quote touched');
  const st = e.stats();
  t.equal(st.nodes.find((n) => n.name === 'icmp-error')!.packets, 6, 'the icmp-error node saw the six errors');
  t.equal(st.reasons['icmp-unrelated'], 1, 'counted under icmp-unrelated');
  t.equal(st.sessions.live, 4, 'errors open no flows');
});

t.test('load balancing: uniform over the set, ClientIP affinity sticks, pods are internal', async (t) => {
  const e = testEngine(t, { sessions: 8192 });
  const seen = new Map<string, number>();
  const out = e.runVector(Array.from({ length: 300 }, (_, i) => from(`203.0.113.${1 + (i % 200)}`, NODE, udp(20000 + i, 30080))));
  for (const r of out) {
    const d = parseFrame(r.frame).dst;
    seen.set(d, (seen.get(d) ?? 0) + 1);
  }
  t.same([...seen.keys()].sort(), [...REMOTE_BE].sort(), `300 new flows spread over all three backends (${JSON.stringify([...seen])})`);
  for (const n of seen.values()) t.ok(n > 50, `each backend got a fair share (${n} of 300)`);

  const aff = e.runVector(Array.from({ length: 20 }, (_, i) => from(CLIENT, '198.51.100.13', tcp(30000 + i, 80, TCP.SYN))));
  t.equal(new Set(aff.map((r) => parseFrame(r.frame).dst)).size, 1, 'ClientIP affinity: 20 new connections of one client, one backend');

  // From a pod port: internal traffic, no SNAT; a pod reaching itself is hairpinned.
  const [other] = e.runVector([frame({ src: '10.244.1.9', dst: '10.96.0.10' }, tcp(33000, 80, TCP.SYN))], { rxPort: 1 });
  const p = parseFrame(other!.frame);
  t.same([p.src, p.sport, p.dst, p.dport], ['10.244.1.9', 33000, LOCAL_BE, 8080], 'pod to ClusterIP: DNAT only');
  const [self] = e.runVector([frame({ src: LOCAL_BE, dst: '10.96.0.10' }, tcp(33001, 80, TCP.SYN))], { rxPort: 1 });
  const h = parseFrame(self!.frame);
  t.same([h.src, h.dst], [HAIRPIN, LOCAL_BE], 'hairpin: from the hairpin address');
  t.ok(h.sport! >= SNAT_PORTS[0] && h.sport! <= SNAT_PORTS[1], 'with a port of the SNAT range');
  const [fromPod] = e.runVector([frame({ src: '10.244.1.9', dst: '198.51.100.11' }, tcp(33002, 80, TCP.SYN))], { rxPort: 1 });
  t.equal(fromPod!.next, 'output', 'eTP=Local does not apply to traffic from pods (internalTrafficPolicy does)');
});

t.test('TCP state: a SYN-only flow expires on the SYN timeout, an established one lives on', async (t) => {
  const e = testEngine(t);
  const t0 = native().monotonicNs();
  const at = (s: number) => t0 + BigInt(s) * 1_000_000_000n;
  const synA = from(CLIENT, NODE, tcp(41000, 30081, TCP.SYN));
  const synB = from(CLIENT, NODE, tcp(41001, 30081, TCP.SYN));
  const [a, b] = e.runVector([synA, synB], { nowNs: at(0) });
  const ob = parseFrame(b!.frame);
  t.ok(a!.next === 'output' && b!.next === 'output', 'both SYNs forwarded');
  const synack = frame({ src: ob.dst, dst: NODE, srcMac: BE_MAC, dstMac: NODE_MAC }, tcp(8080, ob.sport!, TCP.SYN | TCP.ACK));
  e.runVector([synack], { nowNs: at(1) });
  e.runVector([from(CLIENT, NODE, tcp(41001, 30081, TCP.ACK))], { nowNs: at(2) });
  t.equal(e.stats().sessions.live, 4, 'two flows, four entries');
  const removed = e.gc(at(25));
  t.equal(removed, 2, 'after the SYN-sent timeout (20 s) the unanswered flow is gone, both entries');
  const later = e.runVector([from(CLIENT, NODE, tcp(41000, 30081, TCP.ACK)), from(CLIENT, NODE, tcp(41001, 30081, TCP.ACK))], {
    nowNs: at(26),
  });
  t.same(
    later.map((r) => [r.next, r.reason]),
    [
      ['drop', 'not-opening'],
      ['output', 'none'],
    ],
    'the expired flow is unknown now; the established one still translates',
  );
});

t.test('a whole vector mixing flows, protocols and bad frames', async (t) => {
  const e = testEngine(t, { sessions: 8192 });
  const kinds = [
    () => [from(CLIENT, NODE, udp(40000 + Math.floor(Math.random() * 1000), 30080)), 'output', 'none'] as const,
    () => [from(CLIENT, NODE, tcp(42000 + Math.floor(Math.random() * 1000), 30081, TCP.SYN)), 'output', 'none'] as const,
    () => [from(CLIENT, '198.51.100.10', tcp(43000, 80, TCP.SYN)), 'output', 'rejected'] as const,
    () => [from(CLIENT, NODE, udp(40000, 30080)).subarray(0, 30), 'drop', 'short-frame'] as const,
    () => [from(CLIENT, '198.51.100.11', tcp(44000, 80, TCP.SYN)), 'drop', 'no-local-endpoints'] as const,
    () => [from(CLIENT, NODE, tcp(45000, 30081, TCP.ACK | TCP.PSH)), 'drop', 'not-opening'] as const,
    // an IPv4 datagram under the IPv6 EtherType: shorter than an IPv6 header
    () => [patch(from(CLIENT, NODE, udp(40000, 30080)), { 12: 0x86, 13: 0xdd }), 'drop', 'short-frame'] as const,
  ];
  const pick = Array.from({ length: 256 }, (_, i) => kinds[i % kinds.length]!());
  const out = e.runVector(pick.map((p) => p[0]));
  let ok = 0;
  out.forEach((r, i) => {
    if (r.next === pick[i]![1] && r.reason === pick[i]![2]) ok++;
    else t.fail(`packet ${i}: ${r.next}/${r.reason}, expected ${pick[i]![1]}/${pick[i]![2]}`);
  });
  t.equal(ok, 256, 'every packet of the 256-frame vector went where it should');
  const st = e.stats();
  const node = (n: string) => st.nodes.find((x) => x.name === n)!;
  t.equal(node('ip4-parse').packets, 256, 'ip4-parse took the whole vector in one call');
  t.equal(node('ip4-parse').vectors, 1, 'one vector');
  t.equal(node('output').packets + node('drop').packets, 256, 'every packet ended in output or drop');
});

t.test('tables: a bad one is refused whole and the one in force keeps serving; a swap keeps established flows', async (t) => {
  const e = testEngine(t);
  const fwd = from(CLIENT, NODE, udp(40000, 30080));
  const [first] = e.runVector([fwd]);
  const backend = parseFrame(first!.frame).dst;
  const good = encodeTable(table());
  const bad: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['bad magic', Buffer.concat([Buffer.from('XXXX'), good.subarray(4)])],
    ['cut short', good.subarray(0, good.length - 3)],
    ['one byte more', Buffer.concat([good, Buffer.alloc(1)])],
  ];
  const dup = encodeTable(table({ frontends: [table().frontends[0]!, table().frontends[0]!] }));
  bad.push(['a frontend twice', dup]);
  const oob = Buffer.from(good);
  // first frontend's backend count (offset: header 128 + 2 ports + 1 IPv4 address; +20 in the record)
  oob.writeUInt16LE(60000, 128 + 2 * 32 + 4 + 20);
  bad.push(['backends past the list', oob]);
  for (const [name, blob] of bad) {
    try {
      e.setTable(blob);
      t.fail(`${name}: accepted`);
    } catch (err) {
      t.ok(err instanceof BpfError && err.code === 'EINVAL', `${name}: refused (${(err as Error).message.split('\n')[0]})`);
    }
  }
  t.equal(e.stats().table?.generation, 1, 'the table in force is still generation 1');
  // A new table with a different backend set: the flow keeps its backend, new flows get the new one.
  const next = table({
    generation: 2,
    frontends: table().frontends.map((f) =>
      f.port === 30080 && !f.ip.includes(':') ? { ...f, cluster: [{ ip: '10.0.2.9', port: 9090, local: false }] } : f,
    ),
    neighbours: [...table().neighbours, { ip: '10.0.2.9', port: 0, mac: BE_MAC, snat: NODE }],
  });
  t.equal(e.setTable(encodeTable(next)).generation, 2, 'generation 2 swapped in');
  const [again, fresh] = e.runVector([fwd, from(CLIENT, NODE, udp(40001, 30080))]);
  t.equal(parseFrame(again!.frame).dst, backend, 'the established flow keeps its backend');
  t.same([parseFrame(fresh!.frame).dst, parseFrame(fresh!.frame).dport], ['10.0.2.9', 9090], 'a new flow gets the new set');
});

t.test('trace: the next N packets, each with its path through the nodes', async (t) => {
  const e = testEngine(t);
  e.trace(3);
  e.runVector([
    from(CLIENT, NODE, udp(40000, 30080)),
    from(CLIENT, NODE, udp(40000, 30080)).subarray(0, 20),
    from(CLIENT, '198.51.100.10', tcp(43000, 80, TCP.SYN)),
    from(CLIENT, NODE, udp(40001, 30080)),
  ]);
  const recs = e.traceTake();
  t.equal(recs.length, 3, 'three packets traced');
  t.same(recs[0]!.path, ['input', 'ip4-parse', 'session', 'lb', 'nat', 'l2-rewrite', 'output'], 'a new flow');
  t.match(recs[0]!.in, `${CLIENT}:40000 > ${NODE}:30080`);
  t.match(recs[0]!.out, new RegExp(`^${NODE}:\\d+ > 10\\.0\\.2\\.\\d:8080$`));
  t.same([recs[1]!.path, recs[1]!.reason], [['input', 'ip4-parse', 'drop'], 'short-frame'], 'a short frame');
  t.same(recs[2]!.path, ['input', 'ip4-parse', 'session', 'lb', 'reject', 'output'], 'a reject');
  t.equal(e.traceTake().length, 0, 'taken once');
});
