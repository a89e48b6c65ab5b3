/**
 * Fuzzing the IPv6 path through BPF_PROG_RUN: structured frames (extension
 * header chains with honest and forged lengths, fragments, TCP/UDP/ICMPv6/
 * SCTP of every kind, ICMPv6 errors quoting flows, to services, the node and
 * pods, from pods and from outside), then truncated and byte-mutated
 * copies. Per packet: the program returns pass, drop or redirect; a packet
 * passed is untouched or a well-formed IPv6 packet; a well-formed input
 * that is redirected comes out well-formed with a valid L4 checksum (the
 * incremental updates, pseudo-header included, and SCTP's CRC32c are
 * exact). Over the run:
 * every conntrack entry in bpfproxy_ct6 has its peer, pointing back.
 *
 * Bounded in the suite (FUZZ6_PACKETS per program, default 6000, and
 * FUZZ_SECONDS); FUZZ_SEED replays a run.
 */
import t from 'tap';
import {
  frame6,
  icmp6ErrorFrame,
  ipv6Packet,
  l4Segment6,
  NH,
  parseFrame6,
  type Ext,
  type Frame6Spec,
  type L4v6,
} from '../testkit/packet6.js';
import { csumFold, csumPartial, SCTP_CHUNK, sctpChecksum } from '../src/net/frames.js';
import { pseudo6 } from '../testkit/packet6.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT6, NODE6, POD6, progrun6Node } from './helpers/progrun6.js';
import { Prng, seedFromEnv } from './helpers/fuzz/prng.js';
import { ctPeerKey } from '../src/dataplane/bpf/conntrack-gc.js';

const PACKETS = Number(process.env.FUZZ6_PACKETS ?? 6000);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 30);
t.setTimeout((SECONDS + 120) * 1000);

/** Whether b (a frame) is a well-formed IPv6 packet whose TCP/UDP/ICMPv6 checksum or SCTP CRC32c holds (fragments: not checked). */
function wellFormed(b: Buffer): { ok: boolean; why?: string } {
  if (b.length < 54 || b.readUInt16BE(12) !== 0x86dd) return { ok: false, why: 'not IPv6' };
  const ip = b.subarray(14);
  if ((ip[0] ?? 0) >> 4 !== 6) return { ok: false, why: 'version' };
  const plen = ip.readUInt16BE(4);
  if (40 + plen > ip.length) return { ok: false, why: 'payload length past the frame' };
  let nh = ip[6] ?? 0;
  let off = 40;
  let frag = false;
  for (let i = 0; i < 8 && [0, 43, 44, 51, 60].includes(nh); i++) {
    if (off + 8 > 40 + plen) return { ok: false, why: 'extension header past the payload' };
    const len = nh === 44 ? 8 : nh === 51 ? ((ip[off + 1] ?? 0) + 2) * 4 : ((ip[off + 1] ?? 0) + 1) * 8;
    if (nh === 44) frag = true;
    nh = ip[off] ?? 0;
    off += len;
  }
  if (off > 40 + plen) return { ok: false, why: 'extension header past the payload' };
  if (frag || ![6, 17, 58, 132].includes(nh)) return { ok: true };
  const l4 = ip.subarray(off, 40 + plen);
  if (nh === 132) {
    if (l4.length < 16) return { ok: false, why: 'SCTP common and chunk header' };
    return sctpChecksum(l4) === l4.readUInt32LE(8) ? { ok: true } : { ok: false, why: 'SCTP CRC32c' };
  }
  if (nh === 6 && (l4.length < 20 || (l4[12] ?? 0) >> 4 < 5)) return { ok: false, why: 'TCP header' };
  if (nh === 17 && l4.length < 8) return { ok: false, why: 'UDP header' };
  if (nh === 58 && l4.length < 4) return { ok: false, why: 'ICMPv6 header' };
  const src = parseFrame6(b).src;
  const dst = parseFrame6(b).dst;
  const sum = csumFold(csumPartial(l4, csumPartial(pseudo6(src, dst, nh, l4.length))));
  return sum === 0 ? { ok: true } : { ok: false, why: `L4 checksum (proto ${nh})` };
}

t.test('IPv6 datapath fuzz through BPF_PROG_RUN', async (t) => {
  const seed = seedFromEnv();
  t.comment(`fuzz seed ${seed} (FUZZ_SEED=${seed} replays it)`);
  const rng = new Prng(seed);
  const node = await progrun6Node(t);
  const { dp, rec } = node;
  const local = [be('fd00:10:244:1::11', 8080), be('fd00:10:244:1::12', 8080)];
  const remote = [be('fd00:10:244:2::11', 8080, false)];
  t.same(
    rec.syncService('f/web', [
      fe('ClusterIP', 'fd00:10:96::10', 80, 'TCP', local, { servicePort: 'f/web:http/TCP' }),
      fe('ClusterIP', 'fd00:10:96::10', 53, 'UDP', local, { servicePort: 'f/web:dns/UDP' }),
      fe('NodePort', '::', 30080, 'TCP', remote, { servicePort: 'f/web:np/TCP' }),
      fe('ClusterIP', 'fd00:10:96::30', 80, 'TCP', [], { servicePort: 'f/web:empty/TCP' }),
      fe('ClusterIP', 'fd00:10:96::40', 80, 'TCP', [be(POD6, 8080)], { servicePort: 'f/web:self/TCP', affinityTimeout: 60 }),
      fe('ClusterIP', 'fd00:10:96::10', 3868, 'SCTP', [be('fd00:10:244:1::11', 13868)], { servicePort: 'f/web:diam/SCTP' }),
      fe('NodePort', '::', 30868, 'SCTP', [be('fd00:10:244:2::11', 13868, false)], { servicePort: 'f/web:diam-np/SCTP' }),
      fe('ClusterIP', 'fd00:10:96::30', 3868, 'SCTP', [], { servicePort: 'f/web:diam-empty/SCTP' }),
    ]).problems,
    [],
  );
  rec.setNodeAddresses([NODE6]);
  const dsts = [
    'fd00:10:96::10',
    'fd00:10:96::30',
    'fd00:10:96::40',
    NODE6,
    'fd00:10:244:1::11',
    'fd00:10:244:2::11',
    '2001:db8:9::1',
    'ff02::1',
  ];
  const srcs = [POD6, CLIENT6, 'fd00:10:244:1::11', 'fd00:10:244:2::11', NODE6, 'fe80::1', '::'];
  const ports = [80, 53, 30080, 8080, 443, 0, 65535, 3868, 13868, 30868];
  const chunks = [
    SCTP_CHUNK.INIT,
    SCTP_CHUNK.INIT_ACK,
    SCTP_CHUNK.DATA,
    SCTP_CHUNK.ABORT,
    SCTP_CHUNK.SHUTDOWN,
    SCTP_CHUNK.SHUTDOWN_ACK,
    SCTP_CHUNK.COOKIE_ECHO,
    SCTP_CHUNK.SHUTDOWN_COMPLETE,
  ];
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)]!;

  const extChain = (): Ext[] => {
    const n = rng.chance(0.5) ? 0 : rng.range(1, 10);
    return Array.from({ length: n }, (): Ext => {
      const k = rng.int(4);
      if (k === 3) return { type: 'frag', offset: rng.chance(0.5) ? 0 : rng.range(1, 8191), more: rng.chance(0.5) };
      const body = rng.bytes(pick([0, 6, 14, 22]));
      return { type: (['hop', 'dst', 'routing'] as const)[k]!, body, ...(rng.chance(0.1) ? { lenByte: rng.int(256) } : {}) };
    });
  };
  const sctp = (sport: number, dport: number): L4v6 => ({
    proto: 'sctp',
    sport,
    dport,
    chunk: rng.chance(0.9) ? pick(chunks) : rng.int(256),
    vtag: rng.chance(0.5) ? 0 : rng.int(0x100000000),
    ...(rng.chance(0.5) ? { payload: rng.bytes(rng.int(48)) } : {}),
  });
  const l4 = (): L4v6 => {
    const k = rng.int(5);
    if (k === 4) return sctp(pick(ports), pick(ports));
    if (k === 0) return { proto: 'udp', sport: pick(ports), dport: pick(ports), payload: rng.bytes(rng.int(64)) };
    if (k === 1)
      return {
        proto: 'icmp6',
        type: pick([1, 2, 3, 4, 128, 129, 133, 134, 135, 136, rng.int(256)]),
        code: rng.int(5),
        body: rng.bytes(4 + rng.int(60)),
      };
    return { proto: 'tcp', sport: pick(ports), dport: pick(ports), flags: rng.int(64), payload: rng.bytes(rng.int(64)) };
  };
  const structured = (): { f: Buffer; clean: boolean } => {
    const spec: Frame6Spec = { src: pick(srcs), dst: pick(dsts), hopLimit: pick([0, 1, 2, 64, 255]), ext: extChain() };
    if (rng.chance(0.15)) {
      // an ICMPv6 error quoting a flow to or from a service
      const inner = rng.chance(0.3) ? sctp(pick(ports), pick(ports)) : { proto: 'tcp' as const, sport: pick(ports), dport: pick(ports) };
      const q = ipv6Packet(
        { src: pick(srcs), dst: pick(dsts) },
        inner.proto === 'sctp' ? NH.SCTP : NH.TCP,
        l4Segment6(POD6, 'fd00:10:96::10', inner).seg,
      );
      return {
        f: icmp6ErrorFrame(
          { src: pick(srcs), dst: pick(srcs) },
          pick([1, 2, 3, 4]),
          rng.int(5),
          rng.chance(0.3) ? q.subarray(0, rng.int(q.length)) : q,
          1280,
        ),
        clean: true,
      };
    }
    if (rng.chance(0.5)) {
      // a packet that opens (or continues) a service flow, so translation is exercised often
      const svc = pick([
        ['fd00:10:96::10', 80, 'tcp'],
        ['fd00:10:96::10', 53, 'udp'],
        [NODE6, 30080, 'tcp'],
        ['fd00:10:96::30', 80, 'tcp'],
        ['fd00:10:96::40', 80, 'tcp'],
        ['fd00:10:96::10', 3868, 'sctp'],
        [NODE6, 30868, 'sctp'],
        ['fd00:10:96::30', 3868, 'sctp'],
      ] as const);
      spec.dst = svc[0];
      spec.src = pick([POD6, CLIENT6]);
      spec.hopLimit = 64;
      if (rng.chance(0.5)) spec.ext = [];
      const sport = rng.range(1024, 1100);
      const seg: L4v6 =
        svc[2] === 'udp'
          ? { proto: 'udp', sport, dport: svc[1], payload: rng.bytes(rng.int(32)) }
          : svc[2] === 'sctp'
            ? sctp(sport, svc[1])
            : { proto: 'tcp', sport, dport: svc[1], flags: pick([0x02, 0x10, 0x12, 0x11, 0x04, 0x18]), payload: rng.bytes(rng.int(32)) };
      return { f: frame6(spec, seg), clean: !spec.ext?.some((e) => e.type !== 'frag' && 'lenByte' in e) };
    }
    return { f: frame6(spec, l4()), clean: !spec.ext?.some((e) => e.type !== 'frag' && 'lenByte' in e) };
  };
  const mutate = (f: Buffer): Buffer => {
    const b = Buffer.from(f);
    const k = rng.int(3);
    // BPF_PROG_RUN refuses an IPv6 frame shorter than its fixed header (EINVAL): cut after it.
    if (k === 0) return b.subarray(0, 54 + rng.int(Math.max(1, b.length - 54)));
    for (let i = rng.range(1, 4); i > 0; i--) b[14 + rng.int(b.length - 14)] = rng.int(256);
    return b;
  };

  const verdicts = new Map<string, number>();
  const failures: string[] = [];
  const until = Date.now() + SECONDS * 1000;
  let n = 0;
  let sctpTranslated = 0;
  for (const role of ['fromPod', 'fromData'] as const) {
    for (let i = 0; i < PACKETS && Date.now() < until; i++, n++) {
      const s = structured();
      const mutated = rng.chance(0.4);
      const input = mutated ? mutate(s.f) : s.f;
      const r = node.runRaw(role, input);
      verdicts.set(`${role} ${r.verdict}`, (verdicts.get(`${role} ${r.verdict}`) ?? 0) + 1);
      const tag = () => `${role} seed ${seed} #${i}: ${input.toString('hex')}`;
      if (!['pass', 'drop', 'redirect'].includes(r.verdict)) failures.push(`${tag()}: verdict ${r.verdict}`);
      const inOk = !mutated && s.clean && wellFormed(input).ok;
      if (r.verdict === 'pass' && !r.raw.equals(input) && inOk) {
        const w = wellFormed(r.raw);
        if (!w.ok) failures.push(`${tag()}: passed changed and broken (${w.why})`);
      }
      if (r.verdict === 'redirect' && inOk) {
        const w = wellFormed(r.raw);
        if (!w.ok) failures.push(`${tag()}: redirected broken (${w.why})`);
        else if (parseFrame6(r.raw).nh === NH.SCTP) sctpTranslated++;
      }
      if (failures.length > 5) break;
    }
  }
  t.comment(`${n} packets: ${[...verdicts].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  t.same(failures, [], 'every verdict sane, every well-formed packet sent on well-formed with exact checksums');
  t.ok((verdicts.get('fromPod redirect') ?? 0) + (verdicts.get('fromData redirect') ?? 0) > 0, 'some packets were translated');
  t.ok(sctpTranslated > 0, `${sctpTranslated} SCTP packets translated, CRC32c exact`);
  t.ok((verdicts.get('fromPod drop') ?? 0) + (verdicts.get('fromData drop') ?? 0) > 0, 'some were dropped');

  const entries = dp.maps.ct6.entries();
  const keyStr = (k: { saddr: string; daddr: string; sport: number; dport: number; proto: number }) =>
    `${k.saddr}|${k.daddr}|${k.sport}|${k.dport}|${k.proto}`;
  const byKey = new Map(entries.map(([k, v]) => [keyStr(k), v]));
  const orphans = entries.filter(([k, v]) => {
    const peer = byKey.get(keyStr(ctPeerKey(k, v)));
    return !peer || keyStr(ctPeerKey(ctPeerKey(k, v), peer)) !== keyStr(k);
  });
  t.same(orphans.map(([k]) => keyStr(k)).slice(0, 5), [], `each of the ${entries.length} bpfproxy_ct6 entries has its peer, pointing back`);
});
