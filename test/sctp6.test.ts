/**
 * SCTP services over IPv6, through BPF_PROG_RUN (the test kernel has no
 * SCTP sockets: test/sctp.test.ts says why). The IPv6 twin of
 * test/sctp.test.ts: INIT translated (ClusterIP, NodePort with SNAT of
 * address and port) with the CRC32c checked against an independent
 * recomputation, replies reverse-translated, conntrack states from chunk
 * types in bpfproxy_ct6, rejects with ICMPv6 port unreachable, ICMPv6
 * errors quoting an SCTP flow translated, truncated and malformed headers,
 * SCTP behind extension headers, and the agent's side: SCTP ports of IPv6
 * Services reach bpfproxy_fe6, and associations of removed IPv6 endpoints
 * are flushed from bpfproxy_ct6.
 */
import t from 'tap';
import { SCTP_CHUNK, sctpChecksum, sctpInitValue } from '../src/net/frames.js';
import { frame6, icmp6ErrorFrame, ICMP6, NH, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { be, fe } from './helpers/fixtures.js';
import { reasonCount } from './helpers/progrun.js';
import { CLIENT6, NODE6, POD6, progrun6Node } from './helpers/progrun6.js';
import { CtState, IPPROTO_SCTP } from '../src/dataplane/bpf/codecs.js';
import { toEndpointSlice, toService } from '../src/sources/convert.js';
import { frontendsFor } from '../src/model/desired.js';

const CIP = 'fd00:10:96::70';
const SAME = 'fd00:10:96::71';
const EMPTY = 'fd00:10:96::72';
const EP = 'fd00:10:244:1::31';
const EP2 = 'fd00:10:244:1::32';
const REMOTE_EP = 'fd00:10:244:2::31';

type Sctp = Omit<Extract<L4v6, { proto: 'sctp' | 'tcp' | 'udp' }>, 'proto'>;

t.test('SCTP ports of IPv6 Services and EndpointSlices reach the frontends', async (t) => {
  const svc = toService({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'diameter', namespace: 'core' },
    spec: {
      type: 'NodePort',
      clusterIP: CIP,
      clusterIPs: [CIP],
      ipFamilies: ['IPv6'],
      ports: [{ name: 'diam', port: 3868, targetPort: 'diam', protocol: 'SCTP', nodePort: 30868 }],
    },
  });
  t.same(svc.problems, [], 'no port skipped');
  const slice = toEndpointSlice({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'diameter-1', namespace: 'core', labels: { 'kubernetes.io/service-name': 'diameter' } },
    addressType: 'IPv6',
    ports: [{ name: 'diam', port: 13868, protocol: 'SCTP' }],
    endpoints: [{ addresses: [EP], conditions: { ready: true }, nodeName: 'n1' }],
  });
  t.same(slice.problems, []);
  const fes = frontendsFor(svc.value!, [slice.value!], 'n1');
  t.same(
    fes.map((f) => `${f.kind} ${f.protocol} ${f.ip}:${f.port} -> ${f.clusterBackends.map((b) => `[${b.ip}]:${b.port}`).join(',')}`),
    [`ClusterIP SCTP ${CIP}:3868 -> [${EP}]:13868`, `NodePort SCTP :::30868 -> [${EP}]:13868`],
    'both SCTP frontends, the named targetPort resolved through the SCTP slice port',
  );
});

t.test('SCTP over IPv6 through BPF_PROG_RUN', async (t) => {
  const node = await progrun6Node(t);
  const { dp, rec } = node;
  const run = (role: 'fromPod' | 'fromData', f: Frame6Spec, l4: Sctp) => node.runRaw(role, frame6(f, { proto: 'sctp', ...l4 }));
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], `${svc} programmed`);
  const diam = { servicePort: 'core/diameter:diam/SCTP' };
  sync('core/diameter', [
    fe('ClusterIP', CIP, 3868, 'SCTP', [be(EP, 13868)], diam),
    fe('NodePort', '::', 30868, 'SCTP', [be(EP, 13868)], diam),
  ]);
  sync('core/same-port', [fe('ClusterIP', SAME, 3868, 'SCTP', [be(EP2, 3868)])]);
  sync('core/remote', [fe('NodePort', '::', 30869, 'SCTP', [be(REMOTE_EP, 13868, false)])]);
  sync('core/empty', [fe('ClusterIP', EMPTY, 3868, 'SCTP', [])]);
  sync('core/tcp-twin', [fe('ClusterIP', CIP, 3868, 'TCP', [be('fd00:10:244:1::99', 3868)])]);
  rec.setNodeAddresses([NODE6]);
  const sctpFes = dp.maps.fe6
    .entries()
    .filter(([k]) => k.proto === IPPROTO_SCTP)
    .map(([k]) => `[${k.addr}]:${k.port}`);
  for (const want of [`[${CIP}]:3868`, `[${SAME}]:3868`, `[${EMPTY}]:3868`])
    t.ok(sctpFes.includes(want), `SCTP frontend ${want} in bpfproxy_fe6 (${sctpFes.join(', ')})`);
  t.ok(
    sctpFes.some((f) => f.endsWith(':30868')),
    'and the SCTP NodePort',
  );
  const key = (saddr: string, daddr: string, sport: number, dport: number) => ({ saddr, daddr, sport, dport, proto: IPPROTO_SCTP });

  t.test('INIT DNATed, CRC32c equal to a recomputation; the TCP twin goes to its own backend', async (t) => {
    const inFrame = frame6({ src: POD6, dst: CIP }, { proto: 'sctp', sport: 40000, dport: 3868 });
    const r = node.runRaw('fromPod', inFrame);
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.nh, NH.SCTP);
    t.equal(r.out.dst, EP);
    t.equal(r.out.dport, 13868);
    t.equal(r.out.src, POD6, 'client kept');
    t.equal(r.out.sport, 40000);
    t.equal(r.out.chunk, SCTP_CHUNK.INIT, 'the chunk is untouched');
    const l4 = r.raw.subarray(14 + 40);
    t.equal(l4.readUInt32LE(8), sctpChecksum(l4), 'the incrementally fixed CRC32c equals the recomputed one');
    t.not(l4.readUInt32LE(8), inFrame.subarray(14 + 40).readUInt32LE(8), 'and it did change (the port did)');
    const v = dp.maps.ct6.get(key(POD6, CIP, 40000, 3868));
    t.equal(v?.state, 0, 'an INIT opens a flow in bpfproxy_ct6 (INIT sent)');
    const same = run('fromPod', { src: POD6, dst: SAME }, { sport: 40001, dport: 3868 });
    t.equal(same.out.dst, EP2);
    t.ok(same.out.l4CsumOk, 'address only: the CRC32c is as it was (no pseudo header)');
    t.equal(
      same.raw.subarray(14 + 40).readUInt32LE(8),
      frame6({ src: POD6, dst: SAME }, { proto: 'sctp', sport: 40001, dport: 3868 })
        .subarray(14 + 40)
        .readUInt32LE(8),
    );
    const tcp = node.runRaw('fromPod', frame6({ src: POD6, dst: CIP }, { proto: 'tcp', sport: 40002, dport: 3868 }));
    t.equal(tcp.out.dst, 'fd00:10:244:1::99', 'TCP to the same address and port: its own frontend');
  });

  t.test('association life: INIT ACK reverse-translated, COOKIE ECHO establishes, ABORT resets', async (t) => {
    const init = run('fromPod', { src: POD6, dst: CIP }, { sport: 41000, dport: 3868 });
    t.equal(init.out.dst, EP);
    const ack = run('fromPod', { src: EP, dst: POD6 }, { sport: 13868, dport: 41000, vtag: 0x1234, chunk: SCTP_CHUNK.INIT_ACK });
    t.equal(ack.verdict, 'redirect');
    t.equal(ack.out.src, CIP, 'reply from the service address');
    t.equal(ack.out.sport, 3868, 'and port');
    t.equal(ack.out.dst, POD6);
    t.equal(ack.out.chunk, SCTP_CHUNK.INIT_ACK);
    t.ok(ack.out.l4CsumOk, 'reply CRC32c right');
    const k = key(POD6, CIP, 41000, 3868);
    t.equal(dp.maps.ct6.get(k)!.state & CtState.REPLY_SEEN, CtState.REPLY_SEEN, 'INIT ACK: reply seen');
    t.equal(dp.maps.ct6.get(k)!.state & CtState.ESTABLISHED, 0, 'not established yet');
    const echo = run('fromPod', { src: POD6, dst: CIP }, { sport: 41000, dport: 3868, vtag: 0x1234, chunk: SCTP_CHUNK.COOKIE_ECHO });
    t.equal(echo.out.dst, EP);
    t.ok(echo.out.l4CsumOk);
    t.equal(dp.maps.ct6.get(k)!.state & CtState.ESTABLISHED, CtState.ESTABLISHED, 'COOKIE ECHO after the reply: established');
    run('fromPod', { src: POD6, dst: CIP }, { sport: 41000, dport: 3868, vtag: 0x1234, chunk: SCTP_CHUNK.ABORT });
    t.equal(dp.maps.ct6.get(k)!.state & CtState.RST, CtState.RST, 'ABORT: reset seen (the short timeout)');
  });

  t.test('SHUTDOWN both ways: fins seen', async (t) => {
    run('fromPod', { src: POD6, dst: CIP }, { sport: 41100, dport: 3868 });
    run('fromPod', { src: EP, dst: POD6 }, { sport: 13868, dport: 41100, vtag: 1, chunk: SCTP_CHUNK.INIT_ACK });
    run('fromPod', { src: POD6, dst: CIP }, { sport: 41100, dport: 3868, vtag: 1, chunk: SCTP_CHUNK.SHUTDOWN });
    run('fromPod', { src: EP, dst: POD6 }, { sport: 13868, dport: 41100, vtag: 1, chunk: SCTP_CHUNK.SHUTDOWN_ACK });
    const s = dp.maps.ct6.get(key(POD6, CIP, 41100, 3868))!.state;
    t.equal(s & (CtState.FIN_FWD | CtState.FIN_REPLY), CtState.FIN_FWD | CtState.FIN_REPLY);
  });

  t.test('NodePort to an endpoint on another node: SNAT of address and port, CRC32c right both ways', async (t) => {
    const fwd = run('fromData', { src: CLIENT6, dst: NODE6 }, { sport: 42000, dport: 30869 });
    t.equal(fwd.verdict, 'redirect');
    t.equal(fwd.out.dst, REMOTE_EP);
    t.equal(fwd.out.dport, 13868);
    t.equal(fwd.out.src, NODE6, 'SNATed to the node');
    t.ok(fwd.out.sport! >= 20000 && fwd.out.sport! <= 29999, `SNAT port ${fwd.out.sport} in the SNAT range`);
    t.ok(fwd.out.l4CsumOk, 'CRC32c right after both ports changed');
    const back = run(
      'fromData',
      { src: REMOTE_EP, dst: NODE6 },
      { sport: 13868, dport: fwd.out.sport!, vtag: 9, chunk: SCTP_CHUNK.INIT_ACK },
    );
    t.equal(back.verdict, 'redirect');
    t.same([back.out.src, back.out.sport, back.out.dst, back.out.dport], [NODE6, 30869, CLIENT6, 42000], 'reverse-translated');
    t.ok(back.out.l4CsumOk, 'reply CRC32c right');
  });

  t.test('too big for the next hop: ICMPv6 packet too big back, quoting the SCTP packet as sent', async (t) => {
    const r = run(
      'fromData',
      { src: CLIENT6, dst: NODE6 },
      { sport: 42100, dport: 30869, payload: Buffer.concat([sctpInitValue(), Buffer.alloc(1400)]) },
    );
    t.equal(r.verdict, 'redirect', 'answered on the interface it came in on');
    t.equal(r.out.icmp?.type, ICMP6.PKT_TOOBIG);
    t.equal(r.out.icmp?.info, 1280, "the route's MTU");
    t.ok(r.out.icmp?.csumOk, 'ICMPv6 checksum valid');
    t.same(
      [r.out.icmp?.inner?.nh, r.out.icmp?.inner?.dst, r.out.icmp?.inner?.dport],
      [NH.SCTP, NODE6, 30869],
      'the quote is the packet as the client sent it',
    );
  });

  t.test('a packet that came with a wrong CRC32c leaves with a wrong one: never laundered', async (t) => {
    const f = frame6({ src: POD6, dst: CIP }, { proto: 'sctp', sport: 43000, dport: 3868 });
    f.writeUInt32LE((f.readUInt32LE(14 + 40 + 8) ^ 0x5a5a) >>> 0, 14 + 40 + 8);
    const r = node.runRaw('fromPod', f);
    t.equal(r.out.dport, 13868, 'translated');
    t.notOk(r.out.l4CsumOk, 'still wrong');
  });

  t.test('packets of associations we do not know are left to the kernel; only INIT opens', async (t) => {
    const notOpening = reasonCount(dp, 'ct-not-opening');
    for (const chunk of [SCTP_CHUNK.DATA, SCTP_CHUNK.COOKIE_ECHO, SCTP_CHUNK.SHUTDOWN, SCTP_CHUNK.ABORT]) {
      const r = run('fromPod', { src: POD6, dst: CIP }, { sport: 44000, dport: 3868, vtag: 7, chunk });
      t.equal(r.verdict, 'pass', `chunk ${chunk}: passed untranslated`);
    }
    const bad = run('fromPod', { src: POD6, dst: CIP }, { sport: 44000, dport: 3868, vtag: 7, chunk: SCTP_CHUNK.INIT });
    t.equal(bad.verdict, 'pass', 'INIT with a non-zero verification tag (invalid) opens nothing');
    t.equal(reasonCount(dp, 'ct-not-opening'), notOpening + 5);
    t.notOk(dp.maps.ct6.get(key(POD6, CIP, 44000, 3868)), 'no state for them');
  });

  t.test('no endpoints: ICMPv6 port unreachable, quoting the SCTP header', async (t) => {
    const rejected = reasonCount(dp, 'no-endpoints');
    const r = run('fromPod', { src: POD6, dst: EMPTY }, { sport: 45000, dport: 3868 });
    t.equal(r.verdict, 'redirect', 'sent back');
    t.equal(r.out.nh, NH.ICMPV6);
    t.same([r.out.src, r.out.dst], [EMPTY, POD6]);
    t.same([r.out.icmp?.type, r.out.icmp?.code], [ICMP6.DEST_UNREACH, 4], 'destination unreachable, port unreachable');
    t.ok(r.out.icmp?.csumOk, 'ICMPv6 checksum right');
    t.equal(r.out.icmp?.inner?.nh, NH.SCTP);
    t.same([r.out.icmp?.inner?.sport, r.out.icmp?.inner?.dport], [45000, 3868]);
    t.equal(reasonCount(dp, 'no-endpoints'), rejected + 1);
  });

  t.test('ICMPv6 errors from the endpoint about an SCTP flow are reverse-translated, inner header included', async (t) => {
    const c = run(
      'fromPod',
      { src: POD6, dst: CIP },
      { sport: 46000, dport: 3868, payload: Buffer.concat([sctpInitValue(), Buffer.alloc(200, 7)]) },
    );
    t.equal(c.out.dst, EP);
    const quoted = c.raw.subarray(14, 14 + 40 + 64); // a router quotes what fits
    const r = node.runRaw('fromPod', icmp6ErrorFrame({ src: EP, dst: POD6 }, ICMP6.PKT_TOOBIG, 0, quoted, 1280));
    t.equal(r.verdict, 'redirect');
    t.equal(r.out.src, CIP, 'from the service address');
    t.ok(r.out.icmp?.csumOk, 'ICMPv6 checksum right');
    t.equal(r.out.icmp?.info, 1280, 'MTU kept');
    const inner = r.out.icmp?.inner;
    t.equal(inner?.dst, CIP, 'quoted destination: the service');
    t.equal(inner?.dport, 3868, 'quoted port: the service port');
    t.same([inner?.src, inner?.sport], [POD6, 46000]);
    t.equal(
      r.raw.subarray(14 + 40 + 8 + 40 + 8).readUInt32LE(0),
      quoted.subarray(40 + 8).readUInt32LE(0),
      'the quoted CRC32c is left as sent',
    );
    const unrelated = run('fromPod', { src: POD6, dst: CIP }, { sport: 46001, dport: 3868 }).raw.subarray(14, 14 + 40 + 16);
    unrelated.writeUInt16BE(46999, 40); // a flow we never saw
    const u = node.runRaw('fromPod', icmp6ErrorFrame({ src: EP, dst: POD6 }, ICMP6.DEST_UNREACH, 4, unrelated));
    t.equal(u.verdict, 'pass', 'an error about an unknown SCTP flow is left alone');
  });

  t.test('SCTP behind extension headers is translated too', async (t) => {
    const r = run(
      'fromPod',
      { src: POD6, dst: CIP, ext: [{ type: 'hop' }, { type: 'dst', body: Buffer.alloc(14) }] },
      { sport: 47100, dport: 3868 },
    );
    t.equal(r.verdict, 'redirect');
    t.same([r.out.dst, r.out.dport], [EP, 13868]);
    t.ok(r.out.l4CsumOk, 'CRC32c right');
  });

  t.test('truncated and malformed SCTP headers are dropped and counted', async (t) => {
    const before = reasonCount(dp, 'malformed');
    const good = frame6({ src: POD6, dst: CIP }, { proto: 'sctp', sport: 47000, dport: 3868 });
    const cut = (n: number) => {
      const b = Buffer.from(good.subarray(0, 14 + 40 + n));
      b.writeUInt16BE(n, 14 + 4);
      return b;
    };
    const plen = (n: number) => {
      const b = Buffer.from(good);
      b.writeUInt16BE(n, 14 + 4); // the frame goes on: padding past the payload
      return b;
    };
    const bad: Array<[string, Buffer]> = [
      ['4 bytes: half the ports', cut(4)],
      ['8 bytes: no checksum', cut(8)],
      ['12 bytes: common header, no chunk', cut(12)],
      ['14 bytes: half a chunk header', cut(14)],
      ['payload length short of a chunk header (bytes after it)', plen(12)],
      ['payload length past the frame', plen(good.length)],
    ];
    for (const [name, raw] of bad) t.equal(node.runRaw('fromPod', raw).verdict, 'drop', name);
    t.equal(reasonCount(dp, 'malformed'), before + bad.length, 'each counted as malformed');
    t.notOk(dp.maps.ct6.get(key(POD6, CIP, 47000, 3868)), 'no state');
    const frag = frame6(
      { src: POD6, dst: CIP, ext: [{ type: 'frag', offset: 10, more: false }] },
      { proto: 'sctp', sport: 47001, dport: 3868 },
    );
    t.equal(node.runRaw('fromPod', frag).verdict, 'pass', 'a later fragment is left to the stack');
  });

  t.test('CRC32c stays right for every packet length, up to 1.2 KB', async (t) => {
    const bad: string[] = [];
    let n = 0;
    for (let len = 0; len <= 1200; len += len < 64 ? 1 : 53) {
      const payload = Buffer.from(Array.from({ length: len }, (_, i) => (i * 31 + len) & 0xff));
      const r = run(
        'fromPod',
        { src: POD6, dst: CIP },
        { sport: 48000 + n++, dport: 3868, payload: Buffer.concat([sctpInitValue(), payload]) },
      );
      if (r.verdict !== 'redirect' || r.out.dport !== 13868 || !r.out.l4CsumOk)
        bad.push(`${len}: ${r.verdict} ${r.out.dport} ${r.out.l4CsumOk}`);
    }
    t.same(bad, [], `${n} lengths, CRC32c right after DNAT on each`);
  });

  t.test('an IPv6 endpoint removed: its SCTP associations are flushed from bpfproxy_ct6', async (t) => {
    run('fromPod', { src: POD6, dst: CIP }, { sport: 49000, dport: 3868 });
    t.ok(dp.maps.ct6.get(key(POD6, CIP, 49000, 3868)), 'the association is tracked');
    sync('core/diameter', [
      fe('ClusterIP', CIP, 3868, 'SCTP', [be(EP2, 13868)], diam),
      fe('NodePort', '::', 30868, 'SCTP', [be(EP2, 13868)], diam),
    ]);
    await rec.flushed();
    t.notOk(dp.maps.ct6.get(key(POD6, CIP, 49000, 3868)), 'its forward entry is gone');
    t.notOk(dp.maps.ct6.get(key(EP, POD6, 13868, 49000)), 'and its reply entry');
    const again = run('fromPod', { src: POD6, dst: CIP }, { sport: 49000, dport: 3868 });
    t.equal(again.out.dst, EP2, 'a new INIT from the same port goes to the endpoint that is left');
  });
});
