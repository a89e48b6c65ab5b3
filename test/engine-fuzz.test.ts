/**
 * Fuzzing the vector engine's graph: structured, mutated and random frames
 * (test/helpers/fuzz/generate.ts, the BPF fuzzer's generator) aimed at the
 * engine's frontends, backends and the flows it opened, in vectors of 256
 * through the test entry. Per packet: it ends in output or drop, a drop has
 * a reason the engine is expected to give for such input, what it sends is
 * well formed (IPv4 checksum right; a translated packet's L4 checksum as
 * right as it came in; rejects fully right). A third of the frames are
 * IPv6 (test/helpers/fuzz/engine6.ts: the engine's IPv6 frontends, node
 * addresses, backends and the replies of its IPv6 flows, with extension
 * headers, fragments, ICMPv6, forged lengths, then truncated, mutated and
 * random copies), checked alike (L4 checksum as right as it came in, hop
 * limit one less, rejects right). Over the run: the process
 * survives, and the counters add up (every packet counted once, no counter
 * that cannot move without I/O moved).
 *
 * Environment: ENGINE_FUZZ_PACKETS (default 1,000,000), ENGINE_FUZZ_SECONDS
 * (hard bound, default 240), FUZZ_SEED (replay).
 */
import t from 'tap';
import { native } from '../src/native/index.js';
import {
  testEngine,
  table,
  FRONTENDS,
  FRONTENDS6,
  NODE,
  NODE6,
  REMOTE_BE,
  REMOTE_BE6,
  LOCAL_BE,
  LOCAL_BE6,
  CLIENT,
  CLIENT6,
} from './helpers/engine.js';
import { checkOutput6, Engine6Generator } from './helpers/fuzz/engine6.js';
import { fold16, inspect, ipString, sum16 } from './helpers/fuzz/inspect.js';
import { PacketGenerator, type Topology } from './helpers/fuzz/generate.js';
import { Prng, seedFromEnv } from './helpers/fuzz/prng.js';

const envInt = (name: string, dflt: number): number => {
  const v = Number(process.env[name] ?? '');
  return Number.isInteger(v) && v > 0 ? v : dflt;
};
const PACKETS = envInt('ENGINE_FUZZ_PACKETS', 1_000_000);
const SECONDS = envInt('ENGINE_FUZZ_SECONDS', 240);
t.setTimeout((SECONDS + 120) * 1000);

/**
 * Whether the L4 checksum field holds what a sender with checksum offload
 * leaves there (the folded pseudo-header sum): the engine completes those,
 * so a checksum that was wrong comes out right (1 in 65536 wrong ones).
 */
function looksPartial(f: Buffer): boolean {
  const ihl = (f[14]! & 0x0f) * 4;
  const l4len = f.readUInt16BE(16) - ihl;
  const proto = f[23]!;
  const at = 14 + ihl + (proto === 6 ? 16 : 6);
  if (at + 2 > f.length) return false;
  const ph = Buffer.concat([f.subarray(26, 34), Buffer.from([0, proto, l4len >> 8, l4len & 0xff])]);
  return f.readUInt16BE(at) === fold16(sum16(ph, 0, ph.length));
}

/** What the engine may drop a packet for when fed anything at all without I/O. */
const EXPECTED_DROPS = new Set([
  'short-frame',
  'not-ipv4',
  'ip-version',
  'ip-header-length',
  'ip-total-length',
  'ip-checksum',
  'fragment',
  'l4-protocol',
  'l4-truncated',
  'tcp-header-length',
  'udp-length',
  'no-frontend',
  'not-opening',
  'no-local-endpoints',
  'no-neighbour',
  'ttl',
  'rst-not-answered',
  'icmp-unrelated',
  'ip6-payload-length',
  'ip6-extension-header',
  'udp6-no-checksum',
]);
/** Counters that must not move: they need I/O, a full table or a missing setting. */
const STILL = ['tx-full', 'no-tx-port', 'session-full', 'nat-ports', 'no-snat-source'];

t.test(`${PACKETS} random and mutated frames through the graph`, async (t) => {
  // a wide SNAT range: a million random flows must not run out of ports
  const e = testEngine(t, { sessions: 1 << 19, table: table({ snatPorts: [10000, 60000] }) });
  const seed = seedFromEnv();
  t.comment(`seed ${seed} (FUZZ_SEED=${seed} replays it)`);
  const rng = new Prng(seed);
  const nodeIps = [NODE];
  const topo: Topology = {
    nodeIps,
    frontends: FRONTENDS.flatMap((f) =>
      (f.ip === '0.0.0.0' ? nodeIps : [f.ip]).map((addr) => ({ addr, port: f.port, proto: f.protocol === 'UDP' ? 17 : 6 })),
    ),
    backends: [...REMOTE_BE, LOCAL_BE].map((addr) => ({ addr, port: 8080, proto: 6 })),
    clients: [CLIENT, '203.0.113.8', '10.244.1.9', LOCAL_BE],
    extra: ['169.254.42.1', '10.0.9.9'],
  };
  const gen = new PacketGenerator(rng, topo);
  const gen6 = new Engine6Generator(rng, {
    nodeIps: [NODE6],
    frontends: FRONTENDS6.map((f) => ({ addr: f.ip === '::' ? NODE6 : f.ip, port: f.port, proto: f.protocol === 'UDP' ? 17 : 6 })),
    backends: [...REMOTE_BE6, LOCAL_BE6],
    clients: [CLIENT6, '2001:db8:7::8', 'fd00:10:244:1::9', LOCAL_BE6],
  });
  let v6frames = 0;
  const deadline = Date.now() + SECONDS * 1000;
  let done = 0;
  let clock = native().monotonicNs();
  const outcomes = new Map<string, number>();
  const bad: string[] = [];
  const note = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);

  while (done < PACKETS && Date.now() < deadline) {
    const n = Math.min(4096, PACKETS - done);
    const frames: Buffer[] = [];
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const g = rng.chance(1 / 3) ? gen6.next() : gen.next().frame;
      frames.push(g.length > 2048 ? g.subarray(0, 2048) : g);
      ports.push(rng.chance(0.2) ? 1 : 0);
    }
    clock += 50_000_000n; // 50 ms per batch: flows expire as the run goes on
    const out = e.runVector(frames, { rxPort: ports, nowNs: clock });
    for (let i = 0; i < n; i++) {
      const r = out[i]!;
      if (r.next === 'drop') {
        note(`drop:${r.reason}`);
        if (!EXPECTED_DROPS.has(r.reason) && bad.length < 20) bad.push(`packet ${done + i}: dropped as ${r.reason}`);
        continue;
      }
      if (r.next !== 'output') {
        if (bad.length < 20) bad.push(`packet ${done + i}: ended in ${r.next}`);
        continue;
      }
      note(r.reason === 'rejected' ? 'rejected' : 'forwarded');
      if (frames[i]!.length >= 14 && frames[i]!.readUInt16BE(12) === 0x86dd) {
        v6frames++;
        note(r.reason === 'rejected' ? 'ipv6 rejected' : 'ipv6 forwarded');
        const why = checkOutput6(r.frame, frames[i]!, r.reason === 'rejected');
        if (r.port !== 0 && r.port !== 1) why.push(`output port ${r.port}`);
        if (why.length && bad.length < 20) bad.push(`packet ${done + i} (IPv6, ${r.reason}): ${why.join(', ')}`);
        if (r.reason !== 'rejected') gen6.remember(r.frame);
        continue;
      }
      const o = inspect(r.frame);
      const why: string[] = [];
      if (r.port !== 0 && r.port !== 1) why.push(`output port ${r.port}`);
      if (!o.ipv4 || o.ipCsum !== 'ok') why.push(`IPv4 ${o.ipv4 ? `checksum ${o.ipCsum}` : 'header broken'}`);
      if (r.reason === 'rejected') {
        if (o.proto === 6 && o.l4Csum !== 'ok') why.push(`RST checksum ${o.l4Csum}`);
        if (o.proto === 1 && o.icmpCsum !== 'ok') why.push(`ICMP checksum ${o.icmpCsum}`);
      } else {
        const i0 = inspect(frames[i]!);
        const want = i0.l4Csum === 'bad' && looksPartial(frames[i]!) ? 'ok' : i0.l4Csum;
        if (o.l4Csum !== want) why.push(`L4 checksum ${i0.l4Csum} in, ${o.l4Csum} out`);
        if (o.ttl !== i0.ttl - 1) why.push(`TTL ${i0.ttl} in, ${o.ttl} out`);
        gen.remember({
          inTuple: { src: ipString(i0.src), dst: ipString(i0.dst), sport: i0.sport, dport: i0.dport, proto: i0.proto },
          outIp: r.frame.subarray(14),
          outTuple: { src: ipString(o.src), dst: ipString(o.dst), sport: o.sport, dport: o.dport, proto: o.proto },
        });
      }
      if (why.length && bad.length < 20) bad.push(`packet ${done + i} (${r.reason}): ${why.join(', ')}`);
    }
    done += n;
    if ((done / 4096) % 32 === 0) e.gc(clock);
  }
  t.ok(done >= Math.min(PACKETS, 1), `${done} frames through the graph in ${SECONDS} s at most`);
  if (done < PACKETS) t.comment(`stopped at the time bound: ${done} of ${PACKETS}`);
  t.same(bad, [], 'every packet ended where it should, well formed');
  const st = e.stats();
  const node = (name: string) => st.nodes.find((x) => x.name === name)!.packets;
  t.equal(node('ip4-parse'), done, 'ip4-parse counted every frame once');
  t.equal(node('output') + node('drop'), done, 'every frame ended in output or drop, once');
  const drops = Object.entries(st.reasons)
    .filter(([k]) => k !== 'rejected')
    .reduce((a, [, v]) => a + v, 0);
  t.equal(drops, node('drop'), 'drops counted per reason add up to the drop node');
  for (const k of STILL) t.equal(st.reasons[k], 0, `${k} did not move`);
  t.ok((outcomes.get('forwarded') ?? 0) > done / 20, `many frames were forwarded (${outcomes.get('forwarded')})`);
  t.ok((outcomes.get('rejected') ?? 0) > 0, 'some were rejected');
  t.ok(node('ip6-parse') > done / 4, `about a third were IPv6 (${node('ip6-parse')} through ip6-parse)`);
  t.ok((outcomes.get('ipv6 forwarded') ?? 0) > done / 50, `many IPv6 frames were forwarded (${outcomes.get('ipv6 forwarded')})`);
  t.ok((outcomes.get('ipv6 rejected') ?? 0) > 0, 'some IPv6 ones were rejected');
  t.ok(v6frames > 0 && st.sessions6.live >= 0, 'IPv6 sessions in their own table');
  t.comment(
    [...outcomes]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', '),
  );
});
