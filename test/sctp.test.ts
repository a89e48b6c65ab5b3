/**
 * SCTP services. The test kernel is built without SCTP (CONFIG_IP_SCTP
 * unset: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails with
 * EPROTONOSUPPORT, so no association can be opened in a namespace), so the
 * datapath is tested through BPF_PROG_RUN with frames built here, each one
 * checked with an independent CRC32c: translation (ClusterIP, NodePort, LoadBalancer IP,
 * SNAT), reverse translation of replies, conntrack states from chunk types,
 * rejects, malformed headers, ICMP errors quoting an SCTP flow. The CRC32c
 * itself is checked against RFC 3720's known answers first.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  crc32c,
  frame,
  icmpErrorFrame,
  parseFrame,
  PROTO,
  SCTP_CHUNK,
  TCP,
  sctpChecksum,
  sctpInitValue,
  type FrameSpec,
  type L4,
} from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { nsPerPacket } from './helpers/progrun-timing.js';
import { CtState, IPPROTO_SCTP } from '../src/dataplane/bpf/codecs.js';
import { toEndpointSlice, toService } from '../src/sources/convert.js';
import { frontendsFor } from '../src/model/desired.js';
import { EngineDataplane } from '../src/dataplane/afxdp/dataplane.js';
import type { EngineTable } from '../src/dataplane/afxdp/table.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';

const REPO = join(import.meta.dirname, '..', '..');

t.test('CRC32c: RFC 3720 B.4 known answers and the check value', async (t) => {
  const seq = (n: number, f: (i: number) => number) => Buffer.from(Array.from({ length: n }, (_, i) => f(i)));
  t.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa, '32 bytes of zeros (stored aa 36 91 8a)');
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 bytes of 0xff (stored 43 ab a8 62)');
  t.equal(crc32c(seq(32, (i) => i)), 0x46dd794e, '32 incrementing bytes (stored 4e 79 dd 46)');
  t.equal(crc32c(seq(32, (i) => 31 - i)), 0x113fdb5c, '32 decrementing bytes (stored 5c db 3f 11)');
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'the CRC-32C check value of "123456789"');
});

t.test("the datapath's shift table is x^(8 * 2^k) mod P, derived again", async (t) => {
  const P = 0x82f63b78;
  const mul = (a: number, b: number): number => {
    let p = 0;
    for (let i = 0; i < 32; i++) {
      if ((a >>> (31 - i)) & 1) p = (p ^ b) >>> 0;
      b = b & 1 ? ((b >>> 1) ^ P) >>> 0 : b >>> 1;
    }
    return p >>> 0;
  };
  const want: number[] = [];
  let x = 0x00800000; // x^8: x^0 is bit 31
  for (let k = 0; k < 16; k++, x = mul(x, x)) want.push(x);
  const src = readFileSync(join(REPO, 'bpf/lib/sctp.h'), 'utf8');
  const body = /crc32c_zeros\[16\] = \{([^}]*)\}/.exec(src)?.[1] ?? '';
  t.same(
    [...body.matchAll(/0x[0-9a-f]{8}/g)].map((m) => Number(m[0])),
    want,
  );
  // And the identity the datapath relies on: changing the first 4 bytes of
  // a packet of length L changes its CRC by w * x^(8L) mod P.
  const pkt = Buffer.from(Array.from({ length: 301 }, (_, i) => (i * 7 + 3) & 0xff));
  const changed = Buffer.from(pkt);
  changed.writeUInt32BE(0xdeadbeef, 0);
  let d = (pkt.readUInt32LE(0) ^ changed.readUInt32LE(0)) >>> 0;
  for (let k = 0; k < 16; k++) if (pkt.length & (1 << k)) d = mul(want[k]!, d);
  t.equal((crc32c(pkt) ^ d) >>> 0, crc32c(changed), 'incremental change = recomputation');
});

t.test('SCTP ports of Services and EndpointSlices reach the frontends', async (t) => {
  const svc = toService({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'diameter', namespace: 'core' },
    spec: {
      type: 'NodePort',
      clusterIP: '10.96.0.70',
      ports: [
        { name: 'diam', port: 3868, targetPort: 'diam', protocol: 'SCTP', nodePort: 30868 },
        { name: 'diam-tcp', port: 3868, targetPort: 3868, protocol: 'TCP' },
      ],
    },
  });
  t.same(svc.problems, [], 'no port skipped');
  const slice = toEndpointSlice({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'diameter-1', namespace: 'core', labels: { 'kubernetes.io/service-name': 'diameter' } },
    addressType: 'IPv4',
    ports: [
      { name: 'diam', port: 13868, protocol: 'SCTP' },
      { name: 'diam-tcp', port: 3868, protocol: 'TCP' },
    ],
    endpoints: [{ addresses: ['10.244.1.31'], conditions: { ready: true }, nodeName: 'n1' }],
  });
  t.same(slice.problems, []);
  t.same(slice.value?.ports, [
    { name: 'diam', port: 13868, protocol: 'SCTP' },
    { name: 'diam-tcp', port: 3868, protocol: 'TCP' },
  ]);
  const fes = frontendsFor(svc.value!, [slice.value!], 'n1');
  const sctp = fes.filter((f) => f.protocol === 'SCTP');
  t.same(
    sctp.map((f) => `${f.kind} ${f.ip}:${f.port} -> ${f.clusterBackends.map((b) => `${b.ip}:${b.port}`).join(',')}`),
    ['ClusterIP 10.96.0.70:3868 -> 10.244.1.31:13868', 'NodePort 0.0.0.0:30868 -> 10.244.1.31:13868'],
    'the named targetPort resolves through the SCTP slice port, not the TCP one',
  );
});

t.test('SCTP through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { dp, rec } = node;
  const run = (role: 'fromPod' | 'fromData', f: FrameSpec, l4: Omit<L4, 'proto'>) => node.run(role, f, { proto: 'sctp', ...l4 });
  const local = [be('10.244.1.31', 13868)];
  const same = [be('10.244.1.32', 3868)];
  const remote = [be('10.244.2.31', 13868, false)];
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], `${svc} programmed`);
  sync('core/diameter', [
    fe('ClusterIP', '10.96.0.70', 3868, 'SCTP', local, { servicePort: 'core/diameter:diam/SCTP' }),
    fe('NodePort', '0.0.0.0', 30868, 'SCTP', local, { servicePort: 'core/diameter:diam/SCTP' }),
    fe('LoadBalancer', '198.51.100.70', 3868, 'SCTP', local, { servicePort: 'core/diameter:diam/SCTP' }),
    fe('ExternalIP', '203.0.113.70', 3868, 'SCTP', local, { servicePort: 'core/diameter:diam/SCTP' }),
  ]);
  sync('core/same-port', [fe('ClusterIP', '10.96.0.71', 3868, 'SCTP', same)]);
  sync('core/remote', [fe('NodePort', '0.0.0.0', 30869, 'SCTP', remote)]);
  sync('core/empty', [fe('ClusterIP', '10.96.0.72', 3868, 'SCTP', [])]);
  // the same address and port over TCP goes elsewhere: the protocol is in the key
  sync('core/tcp-twin', [fe('ClusterIP', '10.96.0.70', 3868, 'TCP', [be('10.244.1.99', 3868)])]);
  rec.setNodeAddresses([NODE_IP]);

  const key = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: IPPROTO_SCTP });

  const cases: Array<{
    name: string;
    role: 'fromPod' | 'fromData';
    f: FrameSpec;
    sport: number;
    dport: number;
    dst: string;
    toPort: number;
    src?: string;
  }> = [
    {
      name: 'ClusterIP from a pod',
      role: 'fromPod',
      f: { src: POD, dst: '10.96.0.70' },
      sport: 40000,
      dport: 3868,
      dst: '10.244.1.31',
      toPort: 13868,
    },
    {
      name: 'NodePort from outside, local endpoint: client kept',
      role: 'fromData',
      f: { src: CLIENT, dst: NODE_IP },
      sport: 40001,
      dport: 30868,
      dst: '10.244.1.31',
      toPort: 13868,
    },
    {
      name: 'LoadBalancer IP',
      role: 'fromData',
      f: { src: CLIENT, dst: '198.51.100.70' },
      sport: 40002,
      dport: 3868,
      dst: '10.244.1.31',
      toPort: 13868,
    },
    {
      name: 'external IP',
      role: 'fromData',
      f: { src: CLIENT, dst: '203.0.113.70' },
      sport: 40003,
      dport: 3868,
      dst: '10.244.1.31',
      toPort: 13868,
    },
    {
      name: 'port unchanged: address only',
      role: 'fromPod',
      f: { src: POD, dst: '10.96.0.71' },
      sport: 40004,
      dport: 3868,
      dst: '10.244.1.32',
      toPort: 3868,
    },
  ];
  for (const c of cases) {
    t.test(`${c.name}: INIT translated, CRC32c right`, async (t) => {
      const inFrame = frame(c.f, { proto: 'sctp', sport: c.sport, dport: c.dport });
      const r = run(c.role, c.f, { sport: c.sport, dport: c.dport });
      t.equal(r.verdict, 'redirect');
      t.equal(r.out.proto, PROTO.SCTP);
      t.equal(r.out.dst, c.dst);
      t.equal(r.out.dport, c.toPort);
      t.equal(r.out.src, c.f.src, 'client address kept');
      t.equal(r.out.sport, c.sport);
      t.ok(r.out.ipCsumOk, 'IPv4 checksum');
      t.ok(r.out.l4CsumOk, 'CRC32c matches a recomputation over the whole SCTP packet');
      t.equal(r.out.vtag, 0, 'verification tag untouched');
      t.same(r.raw.subarray(14 + 20 + 12), inFrame.subarray(14 + 20 + 12), 'chunks untouched');
      if (c.toPort === c.dport)
        t.same(
          r.raw.subarray(14 + 20 + 8, 14 + 20 + 12),
          inFrame.subarray(14 + 20 + 8, 14 + 20 + 12),
          'no port change: CRC bytes not rewritten',
        );
      const ct = dp.maps.ct.get(key(c.f.src, c.f.dst, c.sport, c.dport));
      t.ok(ct, 'conntrack entry for the association');
      t.equal(ct!.state, 0, 'INIT sent: nothing seen back yet');
    });
  }

  t.test('the protocol is in the frontend key: TCP to the same address and port goes to its own backend', async (t) => {
    const r = node.run('fromPod', { src: POD, dst: '10.96.0.70' }, { proto: 'tcp', sport: 40100, dport: 3868 });
    t.equal(r.out.dst, '10.244.1.99');
  });

  t.test('association life: INIT ACK reverse-translated, COOKIE ECHO establishes, ABORT resets', async (t) => {
    const init = run('fromPod', { src: POD, dst: '10.96.0.70' }, { sport: 41000, dport: 3868 });
    t.equal(init.verdict, 'redirect');
    const ack = run(
      'fromPod',
      { src: '10.244.1.31', dst: POD },
      { sport: 13868, dport: 41000, vtag: 0x01020304, chunk: SCTP_CHUNK.INIT_ACK, payload: sctpInitValue(0x0a0b0c0d) },
    );
    t.equal(ack.verdict, 'redirect', 'reply forwarded');
    t.equal(ack.out.src, '10.96.0.70', 'reply comes from the service address');
    t.equal(ack.out.sport, 3868, 'and the service port');
    t.equal(ack.out.dst, POD);
    t.equal(ack.out.vtag, 0x01020304);
    t.ok(ack.out.ipCsumOk && ack.out.l4CsumOk, 'CRC32c right after the reverse translation');
    const fwd = key(POD, '10.96.0.70', 41000, 3868);
    t.equal(dp.maps.ct.get(fwd)!.state & CtState.REPLY_SEEN, CtState.REPLY_SEEN, 'INIT ACK: reply seen');
    t.equal(dp.maps.ct.get(fwd)!.state & CtState.ESTABLISHED, 0, 'not established before the client answers');
    const cookie = run(
      'fromPod',
      { src: POD, dst: '10.96.0.70' },
      { sport: 41000, dport: 3868, vtag: 0x0a0b0c0d, chunk: SCTP_CHUNK.COOKIE_ECHO, payload: Buffer.alloc(40, 7) },
    );
    t.equal(cookie.out.dst, '10.244.1.31');
    t.ok(cookie.out.l4CsumOk);
    t.equal(dp.maps.ct.get(fwd)!.state & CtState.ESTABLISHED, CtState.ESTABLISHED, 'COOKIE ECHO after the reply: established');
    const data = run(
      'fromPod',
      { src: POD, dst: '10.96.0.70' },
      { sport: 41000, dport: 3868, vtag: 0x0a0b0c0d, chunk: SCTP_CHUNK.DATA, payload: Buffer.alloc(1200, 0x5a) },
    );
    t.equal(data.out.dst, '10.244.1.31');
    t.equal(data.out.dport, 13868);
    t.ok(data.out.l4CsumOk, 'CRC32c right on a 1200-byte DATA chunk');
    const abort = run(
      'fromPod',
      { src: '10.244.1.31', dst: POD },
      { sport: 13868, dport: 41000, vtag: 0x01020304, chunk: SCTP_CHUNK.ABORT },
    );
    t.equal(abort.out.src, '10.96.0.70');
    t.ok(abort.out.l4CsumOk);
    t.equal(dp.maps.ct.get(fwd)!.state & CtState.RST, CtState.RST, 'ABORT: the reset timeout applies');
    const again = run('fromPod', { src: POD, dst: '10.96.0.70' }, { sport: 41000, dport: 3868 });
    t.equal(again.out.dst, '10.244.1.31');
    t.equal(dp.maps.ct.get(fwd)!.state, 0, 'a new INIT on the closed association starts it over');
  });

  t.test('SHUTDOWN both ways: fins seen', async (t) => {
    run('fromPod', { src: POD, dst: '10.96.0.70' }, { sport: 41100, dport: 3868 });
    run(
      'fromPod',
      { src: '10.244.1.31', dst: POD },
      { sport: 13868, dport: 41100, vtag: 1, chunk: SCTP_CHUNK.INIT_ACK, payload: sctpInitValue(2) },
    );
    run(
      'fromPod',
      { src: POD, dst: '10.96.0.70' },
      { sport: 41100, dport: 3868, vtag: 2, chunk: SCTP_CHUNK.SHUTDOWN, payload: Buffer.alloc(4) },
    );
    run('fromPod', { src: '10.244.1.31', dst: POD }, { sport: 13868, dport: 41100, vtag: 1, chunk: SCTP_CHUNK.SHUTDOWN_ACK });
    const st = dp.maps.ct.get(key(POD, '10.96.0.70', 41100, 3868))!.state;
    t.equal(st & (CtState.FIN_FWD | CtState.FIN_REPLY), CtState.FIN_FWD | CtState.FIN_REPLY);
  });

  t.test('NodePort to an endpoint on another node: SNAT of address and port, CRC32c right both ways', async (t) => {
    const r = run('fromData', { src: CLIENT, dst: NODE_IP }, { sport: 42000, dport: 30869 });
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.dst, '10.244.2.31');
    t.equal(r.out.dport, 13868);
    t.equal(r.out.src, NODE_IP, 'SNAT to the node');
    t.ok(r.out.sport! >= 20000 && r.out.sport! <= 29999, `SNAT port ${r.out.sport} from the SNAT range`);
    t.ok(r.out.ipCsumOk && r.out.l4CsumOk, 'both source and destination ports changed: CRC32c right');
    const back = run(
      'fromData',
      { src: '10.244.2.31', dst: NODE_IP },
      { sport: 13868, dport: r.out.sport!, vtag: 9, chunk: SCTP_CHUNK.INIT_ACK, payload: sctpInitValue(3) },
    );
    t.equal(back.out.src, NODE_IP);
    t.equal(back.out.sport, 30869);
    t.equal(back.out.dst, CLIENT);
    t.equal(back.out.dport, 42000);
    t.ok(back.out.ipCsumOk && back.out.l4CsumOk);
  });

  t.test('a packet that came with a wrong CRC32c leaves with a wrong one: never laundered', async (t) => {
    const f = { src: POD, dst: '10.96.0.70' };
    const bad = frame(f, { proto: 'sctp', sport: 43000, dport: 3868 });
    const wrong = bad.readUInt32LE(14 + 20 + 8) ^ 0x00ff0000;
    bad.writeUInt32LE(wrong >>> 0, 14 + 20 + 8);
    const r = node.runRaw('fromPod', bad);
    t.equal(r.verdict, 'redirect', 'forwarded: the receiver decides');
    t.equal(r.out.dport, 13868);
    t.notOk(r.out.l4CsumOk, 'still wrong');
    const sctp = r.raw.subarray(14 + 20);
    t.equal((sctp.readUInt32LE(8) ^ sctpChecksum(sctp)) >>> 0, 0x00ff0000, 'wrong by exactly what it was wrong by');
  });

  t.test('packets of associations we do not know are left to the kernel; only INIT opens', async (t) => {
    const notOpening = reasonCount(dp, 'ct-not-opening');
    const f = { src: POD, dst: '10.96.0.70' };
    for (const [chunk, name] of [
      [SCTP_CHUNK.DATA, 'DATA'],
      [SCTP_CHUNK.COOKIE_ECHO, 'COOKIE ECHO'],
      [SCTP_CHUNK.HEARTBEAT, 'HEARTBEAT'],
      [SCTP_CHUNK.ABORT, 'ABORT'],
    ] as const) {
      const raw = frame(f, { proto: 'sctp', sport: 44000, dport: 3868, vtag: 5, chunk, payload: Buffer.alloc(8) });
      const r = node.runRaw('fromPod', raw);
      t.equal(r.verdict, 'pass', `${name}: passed`);
      t.same(r.raw, raw, `${name}: untouched`);
    }
    const badInit = frame(f, { proto: 'sctp', sport: 44001, dport: 3868, vtag: 7 });
    t.equal(node.runRaw('fromPod', badInit).verdict, 'pass', 'INIT with a non-zero verification tag (invalid) opens nothing');
    t.equal(reasonCount(dp, 'ct-not-opening'), notOpening + 5);
    t.notOk(dp.maps.ct.get(key(POD, '10.96.0.70', 44000, 3868)), 'no state for them');
  });

  t.test('no endpoints: ICMP port unreachable, as kube-proxy rejects', async (t) => {
    const rejected = reasonCount(dp, 'no-endpoints');
    const r = run('fromPod', { src: POD, dst: '10.96.0.72' }, { sport: 45000, dport: 3868 });
    t.equal(r.verdict, 'redirect', 'sent back');
    t.equal(r.out.proto, PROTO.ICMP);
    t.equal(r.out.src, '10.96.0.72');
    t.equal(r.out.dst, POD);
    t.equal(r.out.icmp?.type, 3);
    t.equal(r.out.icmp?.code, 3, 'port unreachable');
    t.ok(r.out.icmp?.csumOk);
    t.equal(r.out.icmp?.inner?.proto, PROTO.SCTP);
    t.equal(r.out.icmp?.inner?.sport, 45000);
    t.equal(r.out.icmp?.inner?.dport, 3868);
    t.equal(r.raw.length, 14 + 20 + 8 + 20 + 12, 'quotes the IPv4 header and the whole SCTP common header');
    t.equal(reasonCount(dp, 'no-endpoints'), rejected + 1);
  });

  t.test('ICMP fragmentation needed from the endpoint about an SCTP flow is reverse-translated, inner header included', async (t) => {
    const c = run('fromPod', { src: POD, dst: '10.96.0.70' }, { sport: 46000, dport: 3868 });
    t.equal(c.out.dst, '10.244.1.31');
    const quoted = c.raw.subarray(14, 14 + 20 + 16);
    const icmp = icmpErrorFrame({ src: '10.244.1.31', dst: POD }, 3, 4, quoted, 1200);
    const r = node.runRaw('fromPod', icmp);
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.src, '10.96.0.70', 'from the service address');
    t.ok(r.out.icmp?.csumOk, 'ICMP checksum right');
    const inner = r.out.icmp?.inner;
    t.equal(inner?.dst, '10.96.0.70', 'quoted destination: the service');
    t.equal(inner?.dport, 3868, 'quoted port: the service port');
    t.equal(inner?.sport, 46000);
    t.ok(inner?.ipCsumOk, 'quoted IPv4 checksum right');
  });

  t.test('truncated and malformed SCTP headers are dropped and counted', async (t) => {
    const before = reasonCount(dp, 'malformed');
    const good = frame({ src: POD, dst: '10.96.0.70' }, { proto: 'sctp', sport: 47000, dport: 3868 });
    const cut = (n: number) => good.subarray(0, 14 + 20 + n);
    const withTotLen = (b: Buffer, len: number) => {
      const x = Buffer.from(b);
      x.writeUInt16BE(len, 14 + 2);
      x.writeUInt16BE(0, 14 + 10);
      let s = 0;
      for (let i = 0; i < 20; i += 2) s += x.readUInt16BE(14 + i);
      while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
      x.writeUInt16BE(~s & 0xffff, 14 + 10);
      return x;
    };
    const bad: Array<[string, Buffer]> = [
      ['4 bytes: half the ports', cut(4)],
      ['8 bytes: no checksum', cut(8)],
      ['12 bytes: common header, no chunk', cut(12)],
      ['14 bytes: half a chunk header', cut(14)],
      ['IPv4 total length short of a chunk header (padding after it)', withTotLen(good, 20 + 12)],
    ];
    for (const [name, raw] of bad) t.equal(node.runRaw('fromPod', raw).verdict, 'drop', name);
    t.equal(reasonCount(dp, 'malformed'), before + bad.length, 'each counted as malformed');
    t.notOk(dp.maps.ct.get(key(POD, '10.96.0.70', 47000, 3868)), 'no state');
    const frag = frame({ src: POD, dst: '10.96.0.70', fragOffset: 10 }, { proto: 'sctp', sport: 47001, dport: 3868 });
    t.equal(node.runRaw('fromPod', frag).verdict, 'pass', 'a later fragment is left to the stack');
  });

  t.test('CRC32c stays right for every packet length, up to 3 KB', async (t) => {
    const bad: string[] = [];
    let n = 0;
    for (let len = 0; len <= 3000; len += len < 64 ? 1 : 61) {
      const payload = Buffer.from(Array.from({ length: len }, (_, i) => (i * 31 + len) & 0xff));
      const sport = 48000 + (n++ % 1000);
      const r = run(
        'fromPod',
        { src: POD, dst: '10.96.0.70' },
        { sport, dport: 3868, chunk: SCTP_CHUNK.INIT, payload: Buffer.concat([sctpInitValue(), payload]) },
      );
      // past the uplink's MTU (1500) without DF: translated, then left to the stack to fragment
      const verdict = r.out.totalLen <= 1500 ? 'redirect' : 'pass';
      if (r.verdict !== verdict || r.out.dport !== 13868 || !r.out.l4CsumOk)
        bad.push(`${len}: ${r.verdict} ${r.out.dport} ${r.out.l4CsumOk}`);
    }
    t.same(bad, [], `${n} lengths, CRC32c right after DNAT on each`);
  });

  t.test('parseFrame reads SCTP', async (t) => {
    const p = parseFrame(
      frame(
        { src: '1.2.3.4', dst: '5.6.7.8' },
        { proto: 'sctp', sport: 1, dport: 2, vtag: 3, chunk: SCTP_CHUNK.SACK, payload: Buffer.alloc(12) },
      ),
    );
    t.match(p, { proto: PROTO.SCTP, sport: 1, dport: 2, vtag: 3, chunk: SCTP_CHUNK.SACK, l4CsumOk: true });
  });
});

t.test(
  'removing an endpoint clears its SCTP associations from conntrack (peers keep fixed ports: a new INIT must not follow the old entry)',
  async (t) => {
    const node = await progrunNode(t);
    const { rec, dp } = node;
    const run = (...a: Parameters<typeof node.run>) => node.run(...a);
    const eps = [be('10.244.1.41', 3868), be('10.244.1.42', 3868)];
    const sync = (bs: ReturnType<typeof be>[]) =>
      rec.syncService('core/hss', [fe('ClusterIP', '10.96.0.90', 3868, 'SCTP', bs, { servicePort: 'core/hss:diam/SCTP' })]);
    t.same(sync(eps).problems, []);
    const chosen = new Map<string, number>();
    for (let sport = 50000; sport < 50040; sport++) {
      const r = run('fromPod', { src: POD, dst: '10.96.0.90' }, { proto: 'sctp', sport, dport: 3868 });
      chosen.set(r.out.dst, (chosen.get(r.out.dst) ?? 0) + 1);
    }
    t.same([...chosen.keys()].sort(), ['10.244.1.41', '10.244.1.42'], 'both endpoints chose');
    t.same(sync([eps[0]!]).problems, []);
    await rec.flushed();
    const ct = dp.maps.ct.entries().filter(([k]) => k.proto === IPPROTO_SCTP);
    t.ok(
      ct.every(([k, v]) => k.saddr !== '10.244.1.42' && v.natDaddr !== '10.244.1.42'),
      'associations with the removed endpoint are gone, both halves',
    );
    t.equal(ct.length, 2 * chosen.get('10.244.1.41')!, 'those with the remaining one stay, both halves');
    const again = [...Array(40).keys()].map(
      (i) => run('fromPod', { src: POD, dst: '10.96.0.90' }, { proto: 'sctp', sport: 50000 + i, dport: 3868 }).out.dst,
    );
    t.same([...new Set(again)], ['10.244.1.41'], 'a new INIT from any of the same ports reaches the remaining endpoint');
  },
);

t.test('cost: an established 1200-byte SCTP DATA packet with a port change vs the same TCP packet', async (t) => {
  const node = await progrunNode(t);
  const { rec, dp, ns, ifindex } = node;
  const eps = [be('10.244.1.51', 13868)];
  t.same(
    rec.syncService('core/cost', [fe('ClusterIP', '10.96.0.95', 3868, 'SCTP', eps), fe('ClusterIP', '10.96.0.95', 3868, 'TCP', eps)])
      .problems,
    [],
  );
  const f = { src: POD, dst: '10.96.0.95' };
  const payload = Buffer.alloc(1200, 0x33);
  node.run('fromPod', f, { proto: 'sctp', sport: 51000, dport: 3868 }); // INIT: the association
  node.run('fromPod', f, { proto: 'tcp', sport: 51000, dport: 3868, flags: TCP.SYN });
  const sctp = frame(f, { proto: 'sctp', sport: 51000, dport: 3868, vtag: 1, chunk: SCTP_CHUNK.DATA, payload });
  const tcp = frame(f, { proto: 'tcp', sport: 51000, dport: 3868, flags: TCP.ACK, payload });
  const sNs = nsPerPacket(ns, dp, 'fromPod', sctp, ifindex);
  const tNs = nsPerPacket(ns, dp, 'fromPod', tcp, ifindex);
  t.comment(
    `per packet: SCTP ${sNs.toFixed(0)} ns, TCP ${tNs.toFixed(0)} ns (${(sNs / tNs).toFixed(2)}x; the difference is the CRC32c fold)`,
  );
  t.ok(sNs < 4 * tNs, 'within 4x of TCP (a sanity bound on a shared machine, not a goal)');
});

t.test('the AF_XDP engine leaves SCTP frontends out of its table, saying so, and the BPF path serves them', async (t) => {
  const tables: EngineTable[] = [];
  const dp = new EngineDataplane((_blob, table) => tables.push(table), {
    snatPorts: [15000, 19999] as const,
    hairpinIp: '169.254.42.1',
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
  });
  const r = dp.syncService('core/diameter', [
    fe('NodePort', '0.0.0.0', 30868, 'SCTP', [be('10.0.2.2', 3868, false)]),
    fe('NodePort', '0.0.0.0', 30053, 'UDP', [be('10.0.2.2', 53, false)]),
  ]);
  t.equal(r.problems.length, 1);
  t.match(r.problems[0]!.message, /0\.0\.0\.0:30868\/SCTP \(NodePort\): the vector engine does not parse SCTP; .* the BPF path serves it/);
  dp.flush();
  t.same(
    tables.at(-1)!.frontends.map((f) => `${f.port}/${f.protocol}`),
    ['30053/UDP'],
    'only the UDP frontend in the table',
  );
});

t.test('a host-network endpoint on this node: its SCTP replies are reverse-translated on egress, CRC32c right', async (t) => {
  const node = await progrunNode(t);
  const { rec, dp } = node;
  t.same(rec.syncService('core/host', [fe('ClusterIP', '10.96.0.96', 3868, 'SCTP', [be(NODE_IP, 13868)])]).problems, []);
  rec.setNodeAddresses([NODE_IP]);
  const init = node.run('fromPod', { src: POD, dst: '10.96.0.96' }, { proto: 'sctp', sport: 52000, dport: 3868 });
  t.same([init.out.dst, init.out.dport], [NODE_IP, 13868], 'INIT to the node itself');
  t.ok(init.out.l4CsumOk);
  const rk = { saddr: NODE_IP, daddr: POD, sport: 13868, dport: 52000, proto: IPPROTO_SCTP };
  t.ok(dp.maps.ct.get(rk), 'reply half in conntrack');
  const ack = node.run(
    'hostReply',
    { src: NODE_IP, dst: POD },
    { proto: 'sctp', sport: 13868, dport: 52000, vtag: 0x01020304, chunk: SCTP_CHUNK.INIT_ACK, payload: sctpInitValue(5) },
  );
  t.equal(ack.verdict, 'pass', 'continues on its way');
  t.same([ack.out.src, ack.out.sport, ack.out.dst, ack.out.dport], ['10.96.0.96', 3868, POD, 52000], 'from the service');
  t.ok(ack.out.ipCsumOk && ack.out.l4CsumOk, 'CRC32c right');
});
