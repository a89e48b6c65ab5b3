/**
 * The vector engine's IPv6 nodes (ip6-parse, session6, lb6, nat6,
 * l2-rewrite6, and reject for IPv6) through its test entry, with IPv6
 * frames built by testkit/packet6.ts, mixed with IPv4 ones and bad frames
 * in the same vectors: every packet of each vector checked.
 */
import t from 'tap';
import { frame, parseFrame, TCP, type L4 } from '../testkit/packet.js';
import { csumFold, csumPartial } from '../src/net/frames.js';
import { frame6, parseFrame6, pseudo6, NH, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { BpfError } from '../src/native/index.js';
import { encodeTable, EngineFeFlags } from '../src/dataplane/afxdp/table.js';
import { jhash2, maglevTable, maglevTableSize, DEFAULT_MAGLEV_SEED } from '../src/model/maglev.js';
import { ipv6Bytes } from '../src/net/ip6.js';
import { loadDatapath } from '../src/dataplane/bpf/loader.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { BPF_DIR, tmpPinDir } from './helpers/env.js';
import {
  BE_MAC,
  CLIENT,
  CLIENT6,
  CLIENT_MAC,
  CLUSTER_IP6,
  HAIRPIN6,
  LB6,
  LOCAL_BE6,
  LOCAL_BE_MAC,
  NODE,
  NODE6,
  NODE_MAC,
  POD_PORT_MAC,
  REMOTE_BE6,
  SNAT_PORTS,
  table,
  testEngine,
} from './helpers/engine.js';

const IN: Partial<Frame6Spec> = { srcMac: CLIENT_MAC, dstMac: NODE_MAC };
const from6 = (src: string, dst: string, l4: L4v6, more: Partial<Frame6Spec> = {}): Buffer => frame6({ src, dst, ...IN, ...more }, l4);
const from4 = (src: string, dst: string, l4: L4): Buffer => frame({ src, dst, srcMac: CLIENT_MAC, dstMac: NODE_MAC }, l4);
const udp = (sport: number, dport: number, payload = Buffer.from('ping')): L4 => ({ proto: 'udp', sport, dport, payload });
const tcp = (sport: number, dport: number, flags: number, seq = 1000, ack = 0): L4 => ({ proto: 'tcp', sport, dport, flags, seq, ack });

function patch(f: Buffer, at: Record<number, number>): Buffer {
  const b = Buffer.from(f);
  for (const [o, v] of Object.entries(at)) b[Number(o)] = v;
  return b;
}

/** The BPF path's IPv6 Maglev flow hash (bpf/lib/lb6.h: addresses folded to one word each). */
const fold = (ip: string): number => {
  const b = ipv6Bytes(ip);
  return (b.readUInt32BE(0) ^ b.readUInt32BE(4) ^ b.readUInt32BE(8) ^ b.readUInt32BE(12)) >>> 0;
};
const flowHash6 = (s: string, d: string, sport: number, dport: number, proto: number, seed = DEFAULT_MAGLEV_SEED): number =>
  jhash2([fold(s), fold(d), ((sport << 16) | dport) >>> 0, proto], seed >>> 0);

t.test('ip6-parse: every length checked (no field trusted), IPv4 and IPv6 in one vector', async (t) => {
  const e = testEngine(t);
  const good = from6(CLIENT6, NODE6, udp(40000, 30080));
  const goodTcp = from6(CLIENT6, NODE6, tcp(40001, 30081, TCP.SYN));
  const cases: Array<[string, Buffer, string, string]> = [
    ['udp', good, 'session6', 'none'],
    ['tcp', goodTcp, 'session6', 'none'],
    ['an IPv4 packet beside them (a miss in session)', from4(CLIENT, NODE, udp(40000, 30080)), 'lb', 'none'],
    ['an IPv4 packet cut short', from4(CLIENT, NODE, udp(40000, 30080)).subarray(0, 30), 'drop', 'short-frame'],
    ['padded frame (payload length bounds the packet)', Buffer.concat([good, Buffer.alloc(20)]), 'session6', 'none'],
    ['53 bytes', good.subarray(0, 53), 'drop', 'short-frame'],
    ['version 4 in an IPv6 EtherType', patch(good, { 14: 0x45 }), 'drop', 'ip-version'],
    ['payload length past the frame', patch(good, { 18: 0x05, 19: 0xdc }), 'drop', 'ip6-payload-length'],
    ['payload length 0 (jumbogram)', patch(good, { 18: 0, 19: 0 }), 'drop', 'ip6-payload-length'],
    ['hop-by-hop options', from6(CLIENT6, NODE6, udp(40000, 30080), { ext: [{ type: 'hop' }] }), 'drop', 'ip6-extension-header'],
    ['routing header', from6(CLIENT6, NODE6, udp(40000, 30080), { ext: [{ type: 'routing' }] }), 'drop', 'ip6-extension-header'],
    ['fragment', from6(CLIENT6, NODE6, udp(40000, 30080), { ext: [{ type: 'frag', offset: 0, more: true }] }), 'drop', 'fragment'],
    [
      'neighbour solicitation',
      from6(CLIENT6, NODE6, { proto: 'icmp6', type: 135, code: 0, body: Buffer.alloc(20) }),
      'drop',
      'ip6-extension-header',
    ],
    ['sctp', patch(good, { 20: 132 }), 'drop', 'l4-protocol'],
    ['tcp doff 4', patch(goodTcp, { [54 + 12]: 0x40 }), 'drop', 'tcp-header-length'],
    ['tcp doff 15', patch(goodTcp, { [54 + 12]: 0xf0 }), 'drop', 'tcp-header-length'],
    ['tcp cut short', patch(goodTcp.subarray(0, 54 + 12), { 18: 0, 19: 12 }), 'drop', 'l4-truncated'],
    ['udp length 4', patch(good, { [54 + 4]: 0, [54 + 5]: 4 }), 'drop', 'udp-length'],
    ['udp length past the payload', patch(good, { [54 + 4]: 0x05, [54 + 5]: 0xdc }), 'drop', 'udp-length'],
    ['udp without checksum', patch(good, { [54 + 6]: 0, [54 + 7]: 0 }), 'drop', 'udp6-no-checksum'],
  ];
  const out = e.runVector(
    cases.map((c) => c[1]),
    { until: 'session' },
  );
  cases.forEach(([name, , next, reason], i) => {
    t.equal(out[i]!.next, next, `${name}: next ${next}`);
    t.equal(out[i]!.reason, reason, `${name}: reason ${reason}`);
  });
  const st = e.stats();
  const node = (n: string) => st.nodes.find((x) => x.name === n)!;
  t.equal(node('ip4-parse').packets, cases.length, 'ip4-parse saw the whole vector (it hands IPv6 on)');
  t.equal(node('ip6-parse').packets, cases.length - 2, 'ip6-parse saw every IPv6 frame');
});

t.test('a new IPv6 flow: NodePort, SNAT (eTP Cluster), hop limit, checksums, MACs; its reply back', async (t) => {
  const e = testEngine(t);
  const [u, s] = e.runVector([from6(CLIENT6, NODE6, udp(40000, 30080)), from6(CLIENT6, NODE6, tcp(40001, 30081, TCP.SYN, 5000))]);
  for (const [name, r, proto] of [
    ['udp', u!, NH.UDP],
    ['tcp', s!, NH.TCP],
  ] as const) {
    t.equal(r.next, 'output', `${name}: output`);
    t.equal(r.port, 0, `${name}: out of the uplink`);
    const p = parseFrame6(r.frame);
    t.equal(p.nh, proto, `${name}: still ${name}`);
    t.ok(REMOTE_BE6.includes(p.dst), `${name}: to a backend (${p.dst})`);
    t.equal(p.dport, 8080, `${name}: the backend's port`);
    t.equal(p.src, NODE6, `${name}: SNAT to the node's IPv6 address (eTP Cluster, remote backend)`);
    t.ok(p.sport! >= SNAT_PORTS[0] && p.sport! <= SNAT_PORTS[1], `${name}: a port of the engine's SNAT range (${p.sport})`);
    t.equal(p.hopLimit, 63, `${name}: hop limit 64 -> 63`);
    t.ok(p.l4CsumOk, `${name}: L4 checksum right after the rewrite (incremental, pseudo header)`);
    t.same(
      [r.frame.subarray(0, 6).toString('hex'), r.frame.subarray(6, 12).toString('hex')],
      [BE_MAC.replace(/:/g, ''), NODE_MAC.replace(/:/g, '')],
      `${name}: MACs from the IPv6 neighbour table`,
    );
  }
  const o = parseFrame6(u!.frame);
  const reply = frame6({ src: o.dst, dst: o.src, srcMac: BE_MAC, dstMac: NODE_MAC }, udp(o.dport!, o.sport!, Buffer.from('pong')));
  const [back, again] = e.runVector([reply, from6(CLIENT6, NODE6, udp(40000, 30080))]);
  t.equal(back!.next, 'output', 'the reply goes out');
  const b = parseFrame6(back!.frame);
  t.same([b.src, b.sport, b.dst, b.dport], [NODE6, 30080, CLIENT6, 40000], 'the reply comes from the frontend to the client');
  t.ok(b.l4CsumOk, 'reply checksum right');
  t.same(
    [back!.frame.subarray(0, 6).toString('hex'), back!.port],
    [CLIENT_MAC.replace(/:/g, ''), 0],
    'back to the client, the way it came',
  );
  t.same(
    [parseFrame6(again!.frame).dst, parseFrame6(again!.frame).sport],
    [o.dst, o.sport],
    'the next packet of the flow: same backend, same SNAT port',
  );
  t.equal(e.stats().sessions6.live, 4, 'two flows, two IPv6 entries each');
  t.equal(e.stats().sessions.live, 0, 'nothing in the IPv4 session table');
});

t.test('lb6: traffic policy Local, no frontend, no neighbour, hop limit, not opening, hairpin', async (t) => {
  const e = testEngine(t);
  const cases: Array<[string, Buffer, string, string, number?]> = [
    ['NodePort on another address', from6(CLIENT6, 'fd00:9::9', udp(40000, 30080)), 'drop', 'no-frontend'],
    ['an IPv4 NodePort beside it', from4(CLIENT, NODE, udp(40000, 30080)), 'output', 'none'],
    ['eTP Local, no local endpoint', from6(CLIENT6, LB6(11), tcp(40002, 80, TCP.SYN)), 'drop', 'no-local-endpoints'],
    ['eTP Local, a local endpoint', from6(CLIENT6, LB6(12), tcp(40003, 80, TCP.SYN)), 'output', 'none'],
    ['no neighbour', from6(CLIENT6, LB6(14), udp(40004, 80)), 'drop', 'no-neighbour'],
    ['hop limit 1', from6(CLIENT6, NODE6, udp(40005, 30080), { hopLimit: 1 }), 'drop', 'ttl'],
    ['TCP ACK of no flow', from6(CLIENT6, NODE6, tcp(40006, 30081, TCP.ACK)), 'drop', 'not-opening'],
    [
      'a pod to itself (hairpin)',
      frame6({ src: LOCAL_BE6, dst: CLUSTER_IP6, srcMac: LOCAL_BE_MAC, dstMac: POD_PORT_MAC }, tcp(40007, 80, TCP.SYN)),
      'output',
      'none',
      1,
    ],
    [
      'a pod to a ClusterIP',
      frame6({ src: 'fd00:10:244:1::9', dst: CLUSTER_IP6, srcMac: LOCAL_BE_MAC, dstMac: POD_PORT_MAC }, tcp(40008, 80, TCP.SYN)),
      'output',
      'none',
      1,
    ],
  ];
  const out = e.runVector(
    cases.map((c) => c[1]),
    { rxPort: cases.map((c) => c[4] ?? 0) },
  );
  cases.forEach(([name, , next, reason], i) => {
    t.equal(out[i]!.next, next, `${name}: ${next}`);
    t.equal(out[i]!.reason, reason, `${name}: reason ${reason}`);
  });
  const local = parseFrame6(out[3]!.frame);
  t.same(
    [local.src, local.dst, local.dport, out[3]!.port],
    [CLIENT6, LOCAL_BE6, 8080, 1],
    'eTP Local: the client address kept, to the local endpoint, out of the pod port',
  );
  const hp = parseFrame6(out[7]!.frame);
  t.same([hp.src, hp.dst], [HAIRPIN6, LOCAL_BE6], 'hairpin: the source is the IPv6 hairpin address');
  t.ok(hp.l4CsumOk, 'hairpin checksum right');
  const pod = parseFrame6(out[8]!.frame);
  t.same([pod.src, pod.sport, pod.dst], ['fd00:10:244:1::9', 40008, LOCAL_BE6], 'from a pod: no SNAT');
});

t.test('reject: TCP RST and ICMPv6 port unreachable, built in place; a RST is never answered', async (t) => {
  const e = testEngine(t);
  const syn = from6(CLIENT6, LB6(10), tcp(40000, 80, TCP.SYN, 7000));
  const dgram = from6(CLIENT6, LB6(10), udp(40001, 53, Buffer.from('query')));
  const [rst, unreach, none, v4] = e.runVector([
    syn,
    dgram,
    from6(CLIENT6, LB6(10), tcp(40002, 80, TCP.RST)),
    from4(CLIENT, '198.51.100.10', tcp(43000, 80, TCP.SYN)),
  ]);
  t.same([rst!.next, rst!.reason, rst!.port], ['output', 'rejected', 0], 'SYN: answered back out of the port it came in on');
  const r = parseFrame6(rst!.frame);
  t.same([r.src, r.sport, r.dst, r.dport], [LB6(10), 80, CLIENT6, 40000], 'the RST comes from the frontend to the client');
  t.equal(r.tcpFlags, TCP.RST | TCP.ACK, 'RST|ACK');
  t.equal(r.ack, 7001, 'acknowledging the SYN');
  t.ok(r.l4CsumOk, 'RST checksum right (pseudo header)');
  t.equal(rst!.frame.subarray(0, 6).toString('hex'), CLIENT_MAC.replace(/:/g, ''), 'to the client MAC');
  t.same([unreach!.next, unreach!.reason], ['output', 'rejected'], 'UDP: answered');
  const u = parseFrame6(unreach!.frame);
  t.same(
    [u.src, u.dst, u.nh, u.icmp?.type, u.icmp?.code],
    [LB6(10), CLIENT6, NH.ICMPV6, 1, 4],
    'ICMPv6 destination unreachable, port unreachable',
  );
  t.ok(u.icmp?.csumOk, 'ICMPv6 checksum right (pseudo header)');
  t.same([u.icmp?.inner?.src, u.icmp?.inner?.dst, u.icmp?.inner?.dport], [CLIENT6, LB6(10), 53], 'quoting the datagram');
  t.equal(unreach!.frame.length, 14 + 40 + 8 + (dgram.length - 14), 'the whole datagram quoted (it fits the minimum MTU)');
  t.same([none!.next, none!.reason], ['drop', 'rst-not-answered'], 'a RST is not answered');
  t.same(
    [v4!.next, v4!.reason, parseFrame(v4!.frame).tcpFlags],
    ['output', 'rejected', TCP.RST | TCP.ACK],
    'IPv4 rejects in the same vector still right',
  );
});

t.test('ClientIP affinity and Maglev over IPv6: the BPF path choices', async (t) => {
  const backends = REMOTE_BE6.map((ip) => ({ ip, port: 8080, local: false }));
  const m = maglevTableSize(backends.length)!;
  const mg = maglevTable(
    backends.map((b) => `${b.ip}:${b.port}`),
    m,
    DEFAULT_MAGLEV_SEED,
  );
  const base = table();
  const tb = table({
    frontends: [
      ...base.frontends,
      {
        ip: LB6(20),
        port: 80,
        protocol: 'TCP',
        flags: EngineFeFlags.EXTERNAL | EngineFeFlags.MAGLEV,
        svcId: 120,
        affinityTimeout: 0,
        cluster: backends,
        local: [],
        maglev: { cluster: mg },
      },
    ],
  });
  const e = testEngine(t, { table: tb });
  const flows = Array.from({ length: 64 }, (_, i) => from6(`2001:db8:7::${(i + 1).toString(16)}`, LB6(20), tcp(41000 + i, 80, TCP.SYN)));
  const out = e.runVector(flows);
  let same = 0;
  out.forEach((r, i) => {
    const want = backends[mg[flowHash6(`2001:db8:7::${(i + 1).toString(16)}`, LB6(20), 41000 + i, 80, 6) % m]!]!.ip;
    if (r.next === 'output' && parseFrame6(r.frame).dst === want) same++;
  });
  t.equal(same, flows.length, 'Maglev: every flow to the backend the BPF path would pick (its folded-address hash, the same table)');
  const aff = Array.from({ length: 8 }, (_, i) => from6(CLIENT6, LB6(13), tcp(42000 + i, 80, TCP.SYN)));
  const picks = new Set(e.runVector(aff).map((r) => parseFrame6(r.frame).dst));
  t.equal(picks.size, 1, 'ClientIP affinity: eight flows of one client, one backend');
});

t.test('a sender with checksum offload: the partial L4 checksum is completed', async (t) => {
  const e = testEngine(t);
  const f = from6(CLIENT6, NODE6, udp(40000, 30080, Buffer.from('offloaded')));
  const seg = f.subarray(54);
  // CHECKSUM_PARTIAL: only the folded, not inverted, pseudo-header sum
  const partial = (~csumFold(csumPartial(pseudo6(CLIENT6, NODE6, NH.UDP, seg.length))) & 0xffff) >>> 0;
  f.writeUInt16BE(partial, 54 + 6);
  const [r] = e.runVector([f]);
  t.equal(r!.next, 'output', 'served');
  t.ok(parseFrame6(r!.frame).l4CsumOk, 'the checksum is whole and right after the rewrite');
});

t.test('policy required, none loaded: IPv6 goes through policy6 and is dropped, never forwarded unchecked', async (t) => {
  const e = testEngine(t);
  e.requirePolicy(true);
  e.trace(2);
  const [v6, v4] = e.runVector([from6(CLIENT6, NODE6, udp(40000, 30080)), from4(CLIENT, NODE, udp(40000, 30080))]);
  t.same([v6!.next, v6!.reason], ['drop', 'policy-not-loaded'], 'IPv6: policy6 (none loaded yet)');
  t.same([v4!.next, v4!.reason], ['drop', 'policy-not-loaded'], 'IPv4: the policy node');
  t.same(e.traceTake()[0]!.path, ['input', 'ip4-parse', 'ip6-parse', 'session6', 'lb6', 'policy6', 'drop'], 'the IPv6 path');
});

t.test('IPv6 table sections: a bad one is refused whole', async (t) => {
  const e = testEngine(t);
  const base = table();
  const fe6 = base.frontends.find((f) => f.ip.includes(':'))!;
  const bad: Array<[string, () => Buffer]> = [
    ['an IPv6 frontend twice', () => encodeTable(table({ frontends: [...base.frontends, fe6] }))],
    [
      'an IPv6 neighbour on a port that is not there',
      () => encodeTable(table({ neighbours: [...base.neighbours, { ip: 'fd00:10:244:3::1', port: 9, mac: BE_MAC }] })),
    ],
    [
      'an IPv6 backend count past the list',
      () => {
        const b = encodeTable(table());
        // the first IPv6 frontend record: the IPv6 sections end the blob
        const nfe6 = b.readUInt32LE(100);
        const nbe6 = b.readUInt32LE(104);
        const nneigh6 = b.readUInt32LE(108);
        const fe6Start = b.length - nneigh6 * 40 - nbe6 * 20 - nfe6 * 48;
        b.writeUInt16LE(60000, fe6Start + 16 + 20);
        return b;
      },
    ],
    [
      'IPv6 counts past the blob',
      () => {
        const b = encodeTable(table());
        b.writeUInt32LE(b.readUInt32LE(104) + 1, 104);
        return b;
      },
    ],
  ];
  for (const [name, mk] of bad) {
    try {
      e.setTable(mk());
      t.fail(`${name}: accepted`);
    } catch (err) {
      t.ok(err instanceof BpfError && err.code === 'EINVAL', `${name}: refused (${(err as Error).message.split('\n')[0]})`);
    }
  }
  t.equal(e.stats().table?.generation, 1, 'the table in force is still generation 1');
});

t.test('trace: an IPv6 packet path', async (t) => {
  const e = testEngine(t);
  e.trace(2);
  e.runVector([from6(CLIENT6, NODE6, udp(40000, 30080)), from6(CLIENT6, LB6(10), tcp(40000, 80, TCP.SYN))]);
  const recs = e.traceTake();
  t.same(recs[0]!.path, ['input', 'ip4-parse', 'ip6-parse', 'session6', 'lb6', 'nat6', 'l2-rewrite6', 'output'], 'a new IPv6 flow');
  t.same(recs[1]!.path, ['input', 'ip4-parse', 'ip6-parse', 'session6', 'lb6', 'reject', 'output'], 'an IPv6 reject');
  t.equal(recs[0]!.in, `[${CLIENT6}]:40000 > [${NODE6}]:30080`, 'the IPv6 tuple in');
  t.match(recs[0]!.out, new RegExp(`^\\[${NODE6}\\]:\\d+ > \\[fd00:10:244:2::[234]\\]:8080$`), 'the IPv6 tuple out (SNAT, DNAT)');
});

void NODE;

t.test('a whole 256-frame vector mixing IPv4, IPv6 and bad frames of both', async (t) => {
  const e = testEngine(t, { sessions: 8192 });
  const r = (n: number): number => Math.floor(Math.random() * n);
  const kinds = [
    () => [from6(CLIENT6, NODE6, udp(40000 + r(1000), 30080)), 'output', 'none'] as const,
    () => [from4(CLIENT, NODE, udp(40000 + r(1000), 30080)), 'output', 'none'] as const,
    () => [from6(CLIENT6, NODE6, tcp(42000 + r(1000), 30081, TCP.SYN)), 'output', 'none'] as const,
    () => [from6(CLIENT6, LB6(10), tcp(43000, 80, TCP.SYN)), 'output', 'rejected'] as const,
    () => [from6(CLIENT6, NODE6, udp(40000, 30080)).subarray(0, 60), 'drop', 'ip6-payload-length'] as const,
    () => [from6(CLIENT6, NODE6, udp(40000, 30080), { ext: [{ type: 'dst' }] }), 'drop', 'ip6-extension-header'] as const,
    () => [from4(CLIENT, '198.51.100.11', tcp(44000, 80, TCP.SYN)), 'drop', 'no-local-endpoints'] as const,
    () => [from6(CLIENT6, NODE6, tcp(45000, 30081, TCP.ACK | TCP.PSH)), 'drop', 'not-opening'] as const,
    () => [patch(from6(CLIENT6, NODE6, udp(40000, 30080)), { 14: 0x40 }), 'drop', 'ip-version'] as const,
  ];
  const pick = Array.from({ length: 256 }, (_, i) => kinds[i % kinds.length]!());
  const out = e.runVector(pick.map((p) => p[0]));
  let ok = 0;
  out.forEach((res, i) => {
    if (res.next === pick[i]![1] && res.reason === pick[i]![2]) ok++;
    else t.fail(`packet ${i}: ${res.next}/${res.reason}, expected ${pick[i]![1]}/${pick[i]![2]}`);
  });
  t.equal(ok, 256, 'every packet of the 256-frame vector went where it should');
  const st = e.stats();
  const node = (n: string) => st.nodes.find((x) => x.name === n)!;
  t.equal(node('ip4-parse').vectors, 1, 'one vector');
  t.equal(node('ip6-parse').vectors, 1, 'ip6-parse took its share in one call');
  t.equal(node('output').packets + node('drop').packets, 256, 'every packet ended in output or drop');
  t.ok(node('nat6').packets > 0 && node('l2-rewrite6').packets > 0, 'nat6 and l2-rewrite6 counted');
});

t.test('conntrack mirror: IPv6 flows written into bpfproxy_ct6 (the kernel path carries them on; XDP sees the replies)', async (t) => {
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp.close());
  const e = createEngine({ vector: 64, sessions: 4096, conntrack: dp.maps.ct.handle, conntrack6: dp.maps.ct6.handle });
  t.teardown(() => e.close());
  e.setTable(encodeTable(table()));
  const [out] = e.runVector([from6(CLIENT6, NODE6, udp(40000, 30080))]);
  const o = parseFrame6(out!.frame);
  const fwd = dp.maps.ct6.get({ saddr: CLIENT6, daddr: NODE6, sport: 40000, dport: 30080, proto: 17 }) as unknown as Record<
    string,
    unknown
  >;
  t.ok(fwd, 'the forward entry is in bpfproxy_ct6');
  t.same(
    [fwd.dir, fwd.natSaddr, fwd.natDaddr, fwd.natSport, fwd.natDport],
    [1, NODE6, o.dst, o.sport, 8080],
    'forward: the rewrite the engine applied',
  );
  const rep = dp.maps.ct6.get({ saddr: o.dst, daddr: NODE6, sport: 8080, dport: o.sport, proto: 17 } as never) as unknown as Record<
    string,
    unknown
  >;
  t.ok(rep, 'the reply entry is there too (what the XDP program looks up for replies to the SNAT port)');
  t.same(
    [rep.dir, rep.natSaddr, rep.natDaddr, rep.natSport, rep.natDport],
    [2, NODE6, CLIENT6, 30080, 40000],
    'reply: back to the client from the frontend',
  );
  t.equal(dp.maps.ct.count(), 0, 'nothing in the IPv4 conntrack');
  t.ok(e.stats().conntrack.exported >= 2, 'counted as exported');
});

t.test('an IPv6 flow the kernel path opened (in bpfproxy_ct6) is adopted, not dropped as not-opening', async (t) => {
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp.close());
  const e = createEngine({ vector: 64, sessions: 4096, conntrack: dp.maps.ct.handle, conntrack6: dp.maps.ct6.handle });
  t.teardown(() => e.close());
  e.setTable(encodeTable(table()));
  // the kernel path's entry: client -> NodePort, SNAT to the node with one of its own ports, to REMOTE_BE6[1]
  dp.maps.ct6.set(
    { saddr: CLIENT6, daddr: NODE6, sport: 40100, dport: 30081, proto: 6 },
    {
      expiresNs: 1n << 62n,
      createdNs: 0n,
      natSaddr: NODE6,
      natDaddr: REMOTE_BE6[1]!,
      natSport: 25000,
      natDport: 8080,
      dir: 1,
      state: 0x11,
      flags: 1 | 4,
      svcId: 102,
      polGen: 0,
    },
  );
  const [adopted, stranger] = e.runVector([
    from6(CLIENT6, NODE6, tcp(40100, 30081, TCP.ACK)),
    from6(CLIENT6, NODE6, tcp(40101, 30081, TCP.ACK)),
  ]);
  t.equal(adopted!.next, 'output', 'the adopted flow goes on through the engine');
  const p = parseFrame6(adopted!.frame);
  t.same([p.src, p.sport, p.dst, p.dport], [NODE6, 25000, REMOTE_BE6[1], 8080], 'with the rewrite the kernel path set up');
  t.ok(p.l4CsumOk, 'checksum right');
  t.same([stranger!.next, stranger!.reason], ['drop', 'not-opening'], 'a flow nobody opened: not-opening');
  t.equal(e.stats().conntrack.adopted, 1, 'counted as adopted');
});
