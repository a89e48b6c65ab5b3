/**
 * The native conntrack passes over the IPv6 map (addon/bulk.cc with struct
 * ct6_key/ct6_value): the GC removes exactly what the reference pair rule
 * removes, the UDP flush of removed IPv6 endpoints deletes exactly what the
 * reference rule names, and the agent's GC and flusher run them (the IPv6
 * figures in the GC's stats, open IPv6 connections counted for a drain).
 * And the IPv6 maps' fill in bpfproxy_map_entries.
 */
import t from 'tap';
import {
  ConntrackFlusher,
  ConntrackGc,
  encodeFlushRules,
  encodeFlushRules6,
  expiredConnections,
  flushedEntries,
  type FlushRule,
} from '../src/dataplane/bpf/conntrack-gc.js';
import { CtDir, CtState, IPPROTO_TCP, IPPROTO_UDP, type CtKey, type CtValue } from '../src/dataplane/bpf/codecs.js';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { datapathSnapshot, mapFills } from '../src/dataplane/bpf/inspect.js';
import { Metrics } from '../src/metrics.js';
import { be, fe } from './helpers/fixtures.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { captureLogger } from './helpers/log.js';
import { tmpDatapath } from './helpers/env.js';

const SIZES = { natFrontend: 64, natBackend: 64, natAffinity: 64 };
const ks = (k: CtKey): string => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}`;

function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const hex = (n: number): string => n.toString(16);

/** IPv6 connections of every shape the pair rule tells apart (as conntrack-native.test.ts's IPv4 ones). */
function randomConntrack6(seed: number, conns: number, now: bigint): Array<[CtKey, CtValue]> {
  const r = rng(seed);
  const exp = (): bigint | undefined => {
    const x = r();
    if (x < 0.1) return undefined;
    if (x < 0.15) return now;
    if (x < 0.55) return now - 1n - BigInt(Math.floor(r() * 1e9));
    return now + BigInt(Math.floor(r() * 1e9));
  };
  const out: Array<[CtKey, CtValue]> = [];
  for (let i = 0; i < conns; i++) {
    const proto = r() < 0.5 ? IPPROTO_TCP : IPPROTO_UDP;
    const client = `fd00:1:0:${hex(1 + (i >> 12))}::${hex(1 + (i & 0xfff))}`;
    const sport = 1024 + (i % 50000);
    const backend = `fd00:10:244:${hex(1 + (i % 7))}::${hex(1 + (i % 5))}`;
    const fwdExp = exp();
    const repExp = exp();
    const base = { createdNs: 0n, state: 0, flags: 0, svcId: 1 + (i % 9) };
    if (fwdExp !== undefined) {
      out.push([
        { saddr: client, daddr: 'fd00:10:96::10', sport, dport: 80, proto },
        { ...base, expiresNs: fwdExp, natSaddr: client, natSport: sport, natDaddr: backend, natDport: 8080, dir: CtDir.FWD },
      ]);
    }
    if (repExp !== undefined) {
      const other = r() < 0.1 ? `fd00:1:0:${hex(1 + ((i + 1) >> 12))}::${hex(1 + ((i + 1) & 0xfff))}` : client;
      out.push([
        { saddr: backend, daddr: client, sport: 8080, dport: sport, proto },
        { ...base, expiresNs: repExp, natSaddr: 'fd00:10:96::10', natSport: 80, natDaddr: other, natDport: sport, dir: CtDir.REPLY },
      ]);
    }
  }
  return out;
}

t.test('the native GC over bpfproxy_ct6 removes exactly what the reference pair rule removes', async (t) => {
  const now = 1_000_000_000_000n;
  for (const [seed, batch] of [
    [11, 4096],
    [12, 1],
    [13, 7],
  ] as const) {
    // more entries than the pass's table starts with (4096 slots): it grows as it reads
    const dp = await tmpDatapath(t, { mapSizes: { conntrack: 8192, ...SIZES } });
    dp.maps.ct6.setMany(randomConntrack6(seed, 3000, now));
    const stored = dp.maps.ct6.entries(); // as the map spells the addresses
    const want = new Set(expiredConnections(stored, now).map(ks));
    const r = await native().ctGc(dp.maps.ct6.fd, { nowNs: now, batch });
    const left = dp.maps.ct6
      .entries()
      .map(([k]) => ks(k))
      .sort();
    const expect = stored
      .map(([k]) => ks(k))
      .filter((k) => !want.has(k))
      .sort();
    t.ok(want.size > 100 && expect.length > 100, `seed ${seed}: both dead and live connections (${want.size} dead)`);
    t.same(left, expect, `seed ${seed}, batch ${batch}: the same entries are left (${stored.length} in)`);
    t.equal(r.scanned, stored.length, 'every entry read, none twice');
    t.equal(r.expired, want.size);
    t.equal(r.live, expect.length);
    const udp = dp.maps.ct6.entries().filter(([k]) => k.proto === IPPROTO_UDP).length;
    t.same(r.liveByProto, { tcp: expect.length - udp, udp, other: 0 }, 'entries left, by protocol');
    t.ok(r.batchedLookup && r.batchedDelete, 'a preallocated hash takes batch ops');
  }
});

const pair6 = (
  entries: Array<[CtKey, CtValue]>,
  svcId: number,
  proto: number,
  client: string,
  backend: string,
  bport = 53,
  state = 0,
  expiresNs = 1n << 62n,
) => {
  const base = { createdNs: 0n, state, flags: 0, svcId, expiresNs };
  entries.push(
    [
      { saddr: client, daddr: 'fd00:10:96::53', sport: 999, dport: 53, proto },
      { ...base, natSaddr: client, natSport: 999, natDaddr: backend, natDport: bport, dir: CtDir.FWD },
    ],
    [
      { saddr: backend, daddr: client, sport: bport, dport: 999, proto },
      { ...base, natSaddr: 'fd00:10:96::53', natSport: 53, natDaddr: client, natDport: 999, dir: CtDir.REPLY },
    ],
  );
};

t.test('the native flush over bpfproxy_ct6 deletes what the reference rule names, and only that', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 256, ...SIZES } });
  const e: Array<[CtKey, CtValue]> = [];
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::1', 'fd00:10:244:1::1'); // svc 1, kept backend
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::2', 'fd00:10:244:1::2'); // svc 1, removed backend
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::3', 'fd00:10:244:1::2', 54); // same address, another port: kept
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::7', 'fd00:10:244:1:0:1:0:2'); // differs in a middle word only: kept
  pair6(e, 1, IPPROTO_TCP, 'fd00:1::4', 'fd00:10:244:1::2'); // TCP: left to end on its own
  pair6(e, 2, IPPROTO_UDP, 'fd00:1::5', 'fd00:10:244:1::2'); // same backend, another service: kept
  pair6(e, 3, IPPROTO_UDP, 'fd00:1::6', 'fd00:10:244:1::9'); // svc 3 removed whole
  dp.maps.ct6.setMany(e);
  const rules: FlushRule[] = [{ svcId: 1, backend: { addr: 'fd00:10:244:1::2', port: 53 } }, { svcId: 3 }];
  const want = new Set(flushedEntries(dp.maps.ct6.entries(), IPPROTO_UDP, rules).map(ks));
  t.equal(want.size, 4, 'the reference: both halves of two flows');
  const r = await native().ctFlush(dp.maps.ct6.fd, IPPROTO_UDP, encodeFlushRules6(rules));
  t.equal(r.deleted, 4);
  t.equal(r.scanned, e.length);
  t.same(
    dp.maps.ct6
      .entries()
      .map(([k]) => ks(k))
      .sort(),
    e
      .map(([k]) => ks(k))
      .filter((k) => !want.has(k))
      .sort(),
    'what is left is what the reference keeps',
  );
  await t.rejects(native().ctFlush(dp.maps.ct6.fd, IPPROTO_UDP, encodeFlushRules([{ svcId: 3 }])), {
    errno: 22,
    message: /bpfproxy_ct6 takes rules of 24 bytes, got 12 bytes/,
  });
});

t.test('the agent flusher clears removed IPv6 endpoints through the native pass, IPv4 ones beside', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 256, ...SIZES } });
  const e: Array<[CtKey, CtValue]> = [];
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::1', 'fd00:10:244:1::1');
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::2', 'fd00:10:244:1::2');
  dp.maps.ct6.setMany(e);
  dp.maps.ct.set(
    { saddr: '10.1.0.1', daddr: '10.96.0.53', sport: 999, dport: 53, proto: IPPROTO_UDP },
    {
      expiresNs: 1n << 62n,
      createdNs: 0n,
      natSaddr: '10.1.0.1',
      natSport: 999,
      natDaddr: '10.0.0.2',
      natDport: 53,
      dir: CtDir.FWD,
      state: 0,
      flags: 0,
      svcId: 1,
    },
  );
  const f = new ConntrackFlusher(dp.maps, IPPROTO_UDP);
  const r = await f.flush([
    { svcId: 1, backend: { addr: 'fd00:10:244:1::2', port: 53 } },
    { svcId: 1, backend: { addr: '10.0.0.2', port: 53 } },
  ]);
  t.equal(r.deleted, 3, 'both IPv6 halves and the IPv4 entry');
  t.equal(r.scanned, 5, 'one pass over each map');
  t.same(
    dp.maps.ct6
      .entries()
      .map(([k]) => k.saddr)
      .sort(),
    ['fd00:10:244:1::1', 'fd00:1::1'],
    'the flow to the kept IPv6 endpoint stays, both halves',
  );
  t.equal(dp.maps.ct.count(), 0);
});

t.test('the agent GC collects IPv6 natively: its figures in the stats, its open connections counted', async (t) => {
  const now = native().monotonicNs();
  const M = 60_000_000_000n;
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, ...SIZES } });
  const e: Array<[CtKey, CtValue]> = [];
  pair6(e, 1, IPPROTO_TCP, 'fd00:1::1', 'fd00:10:244:1::1', 53, CtState.REPLY_SEEN | CtState.ESTABLISHED, now + M); // open
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::2', 'fd00:10:244:1::1', 53, CtState.REPLY_SEEN, now + M); // open
  pair6(e, 1, IPPROTO_TCP, 'fd00:1::3', 'fd00:10:244:1::1', 53, CtState.REPLY_SEEN | CtState.RST, now + M); // reset
  pair6(e, 1, IPPROTO_UDP, 'fd00:1::4', 'fd00:10:244:1::1', 53, CtState.REPLY_SEEN, now - M); // expired
  dp.maps.ct6.setMany(e);
  const { log } = captureLogger();
  const gc = new ConntrackGc(dp.maps, log, new FakeClock());
  const s = await gc.run();
  t.equal(s.lastExpired, 2, 'the expired IPv6 connection went, both halves');
  t.equal(gc.ipv6Live, 6);
  t.equal(dp.maps.ct6.count(), 6);
  t.equal(s.lastOpen, 2, 'open IPv6 connections count for a drain');
  t.same(s.liveByProto, { tcp: 4, udp: 2, other: 0 });
  t.equal(s.failures, 0);
});

t.test('the IPv6 maps are in bpfproxy_map_entries; IPv6 conntrack in bpfproxy_conntrack_entries', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, ...SIZES } });
  const rec = new BpfReconciler(dp.maps);
  rec.syncService('k/web6', [
    fe('ClusterIP', 'fd00:10:96::10', 80, 'TCP', [be('fd00:10:244:1::11', 8080), be('fd00:10:244:1::12', 8080)], {
      servicePort: 'k/web6:http/TCP',
    }),
  ]);
  rec.setNodeAddresses(['2001:db8:1::11']);
  const e: Array<[CtKey, CtValue]> = [];
  pair6(e, 1, IPPROTO_TCP, 'fd00:1::1', 'fd00:10:244:1::11', 8080, 0, native().monotonicNs() + 60_000_000_000n);
  dp.maps.ct6.setMany(e);
  const gc = new ConntrackGc(dp.maps, captureLogger().log, new FakeClock());
  const snap = await datapathSnapshot(dp.maps, gc);
  const entries = (name: string) => snap.maps.find((m) => m.map === name)?.entries;
  t.equal(entries('bpfproxy_fe6'), dp.maps.fe6.count(), 'IPv6 frontends counted');
  const slots6 = dp.maps.slots6.count();
  t.ok(slots6 >= 2, `IPv6 backend slots (${slots6})`);
  t.equal(entries('bpfproxy_slots6'), slots6, 'IPv6 backend slots counted');
  t.equal(entries('bpfproxy_ct6'), 2, "IPv6 conntrack: the GC's count");
  t.equal(entries('bpfproxy_node_ips6'), dp.maps.nodeIps6.count(), 'node IPv6 addresses counted');
  for (const name of ['bpfproxy_affinity6', 'bpfproxy_lb_srcs6']) t.equal(entries(name), 0, `${name} counted (empty)`);
  t.equal(snap.conntrackEntries, 2, 'bpfproxy_conntrack_entries covers both families');
  t.same(mapFills(dp.maps), snap.maps, 'the CLI reads the same fill');

  const m = new Metrics();
  m.setSnapshot(() => Promise.resolve(snap));
  const body = await m.scrape();
  for (const line of [
    'bpfproxy_map_entries{map="bpfproxy_ct6"} 2',
    `bpfproxy_map_entries{map="bpfproxy_slots6"} ${slots6}`,
    `bpfproxy_map_max_entries{map="bpfproxy_ct6"} ${dp.maps.ct6.maxEntries}`,
    'bpfproxy_conntrack_entries 2',
  ])
    t.ok(body.includes(line), line);
});
