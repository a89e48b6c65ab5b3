/**
 * Bulk map work off the event loop (addon/bulk.cc): the native conntrack GC
 * against the TypeScript reference rule, the filtered UDP flush, map
 * counting, and the agent pieces built on them (one snapshot per scrape,
 * service ids held until their flush is done).
 */
import t from 'tap';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { ConntrackFlusher, ConntrackGc, expiredConnections } from '../src/dataplane/bpf/conntrack-gc.js';
import { countMapFills, mapFills } from '../src/dataplane/bpf/inspect.js';
import { CtDir, CtState, IPPROTO_TCP, IPPROTO_UDP, type CtKey, type CtValue } from '../src/dataplane/bpf/codecs.js';
import { BpfError, native } from '../src/native/index.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { Metrics, type DatapathSnapshot } from '../src/metrics.js';
import { captureLogger } from './helpers/log.js';
import { tmpDatapath } from './helpers/env.js';
import { be, fe } from './helpers/fixtures.js';

const SIZES = { natFrontend: 64, natBackend: 64, natAffinity: 64 };

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const ks = (k: CtKey): string => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}`;

/**
 * Connections of every shape the pair rule distinguishes: both halves
 * alive, one quiet half, both expired, orphans, a deadline exactly at now,
 * reply entries whose peer does not point back.
 */
function randomConntrack(seed: number, conns: number, now: bigint): Array<[CtKey, CtValue]> {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const exp = (): bigint | undefined => {
    const x = r();
    if (x < 0.1) return undefined; // absent
    if (x < 0.15) return now; // exactly now: still alive
    if (x < 0.55) return now - 1n - BigInt(Math.floor(r() * 1e9));
    return now + BigInt(Math.floor(r() * 1e9));
  };
  const out: Array<[CtKey, CtValue]> = [];
  for (let i = 0; i < conns; i++) {
    const proto = pick([IPPROTO_TCP, IPPROTO_UDP]);
    const client = `10.1.${(i >> 8) & 255}.${i & 255}`;
    const sport = 1024 + (i % 50000);
    const backend = `10.244.${i % 7}.${1 + (i % 5)}`;
    const fwdExp = exp();
    const repExp = exp();
    const base = { createdNs: 0n, state: 0, flags: 0, svcId: 1 + (i % 9) };
    if (fwdExp !== undefined) {
      out.push([
        { saddr: client, daddr: '10.96.0.10', sport, dport: 80, proto },
        { ...base, expiresNs: fwdExp, natSaddr: client, natSport: sport, natDaddr: backend, natDport: 8080, dir: CtDir.FWD },
      ]);
    }
    if (repExp !== undefined) {
      // one reply in ten points at another client's tuple (not back at its own)
      const other = r() < 0.1 ? `10.1.${((i + 1) >> 8) & 255}.${(i + 1) & 255}` : client;
      out.push([
        { saddr: backend, daddr: client, sport: 8080, dport: sport, proto },
        { ...base, expiresNs: repExp, natSaddr: '10.96.0.10', natSport: 80, natDaddr: other, natDport: sport, dir: CtDir.REPLY },
      ]);
    }
  }
  return out;
}

t.test('the native GC removes exactly what the reference pair rule removes', async (t) => {
  const now = 1_000_000_000_000n;
  for (const [seed, batch] of [
    [1, 4096],
    [2, 1],
    [3, 7],
  ] as const) {
    const dp = await tmpDatapath(t, { mapSizes: { conntrack: 4096, ...SIZES } });
    const entries = randomConntrack(seed, 1500, now);
    dp.maps.ct.setMany(entries);
    const want = new Set(expiredConnections(entries, now).map(ks));
    const r = await native().ctGc(dp.maps.ct.fd, { nowNs: now, batch });
    const left = dp.maps.ct
      .entries()
      .map(([k]) => ks(k))
      .sort();
    const expect = entries
      .map(([k]) => ks(k))
      .filter((k) => !want.has(k))
      .sort();
    t.same(left, expect, `seed ${seed}, batch ${batch}: the same entries are left (${entries.length} in, ${want.size} dead)`);
    t.equal(r.scanned, entries.length, 'every entry read, none twice');
    t.equal(r.expired, want.size);
    t.equal(r.live, expect.length);
    t.equal(r.refreshed, 0);
    const udp = dp.maps.ct.entries().filter(([k]) => k.proto === IPPROTO_UDP).length;
    t.same(r.liveByProto, { tcp: expect.length - udp, udp, other: 0 }, 'entries left, by protocol');
    t.equal(r.nowNs, now);
    t.ok(r.batchedLookup && r.batchedDelete, 'hash maps take batch ops');
  }
});

t.test('a GC pass counts the open connections left: what a rollback drain waits for', async (t) => {
  const now = native().monotonicNs();
  const M = 60_000_000_000n; // a minute either side: the real clock agrees
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, ...SIZES } });
  const S = CtState;
  const conns: Array<{ state: number; proto: number; fwd: bigint; rep: bigint }> = [
    { state: S.REPLY_SEEN | S.ESTABLISHED, proto: IPPROTO_TCP, fwd: now + M, rep: now + M }, // open
    { state: S.REPLY_SEEN | S.ESTABLISHED | S.FIN_FWD, proto: IPPROTO_TCP, fwd: now + M, rep: now + M }, // half closed: open
    { state: 0, proto: IPPROTO_TCP, fwd: now + M, rep: now + M }, // SYN sent: open
    { state: S.REPLY_SEEN | S.ESTABLISHED, proto: IPPROTO_UDP, fwd: now - M, rep: now + M }, // quiet forward half: open
    { state: S.REPLY_SEEN | S.FIN_FWD | S.FIN_REPLY, proto: IPPROTO_TCP, fwd: now + M, rep: now + M }, // closed
    { state: S.REPLY_SEEN | S.RST, proto: IPPROTO_TCP, fwd: now + M, rep: now + M }, // reset
    { state: S.REPLY_SEEN | S.ESTABLISHED, proto: IPPROTO_UDP, fwd: now - M, rep: now - M }, // expired: removed
  ];
  conns.forEach((c, i) => {
    const client = `10.1.0.${i + 1}`;
    const base = { createdNs: 0n, state: c.state, flags: 0, svcId: 1 };
    dp.maps.ct.set(
      { saddr: client, daddr: '10.96.0.10', sport: 40000, dport: 80, proto: c.proto },
      { ...base, expiresNs: c.fwd, natSaddr: client, natSport: 40000, natDaddr: '10.244.1.11', natDport: 8080, dir: CtDir.FWD },
    );
    dp.maps.ct.set(
      { saddr: '10.244.1.11', daddr: client, sport: 8080, dport: 40000, proto: c.proto },
      { ...base, expiresNs: c.rep, natSaddr: '10.96.0.10', natSport: 80, natDaddr: client, natDport: 40000, dir: CtDir.REPLY },
    );
  });
  const r = await native().ctGc(dp.maps.ct.fd, { nowNs: now });
  t.equal(r.expired, 2, 'the expired connection went');
  t.equal(r.open, 4, 'open: established, half closed, SYN sent, a UDP flow with a quiet half; not: closed, reset, expired');
  const gc = new ConntrackGc(dp.maps, captureLogger().log, new FakeClock());
  t.equal((await gc.run()).lastOpen, 4, 'the GC keeps the count');
});

t.test('a GC pass does not hold the event loop', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 65536, ...SIZES } });
  const now = native().monotonicNs();
  dp.maps.ct.setMany(randomConntrack(4, 20000, now));
  const { log } = captureLogger();
  const gc = new ConntrackGc(dp.maps, log, new FakeClock());
  let done = false;
  const p = gc.run().then((s) => {
    done = true;
    return s;
  });
  t.equal(gc.run(), gc.run(), 'a pass asked for while one runs is that pass');
  let turns = 0;
  while (!done) {
    await new Promise((r) => setImmediate(r));
    turns++;
  }
  const s = await p;
  t.ok(turns > 0, `the event loop turned ${turns} time(s) while the pass ran`);
  t.equal(s.runs, 1);
  t.equal(s.removedTotal, s.lastExpired);
  t.equal(s.lastLive, dp.maps.ct.count());
  t.ok(s.lastRunAt > 0);
});

t.test('the GC timer: a first pass at start, then one per interval; failures are logged and retried', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, ...SIZES } });
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const gc = new ConntrackGc(dp.maps, log, clock, 1000);
  gc.start();
  await clock.advance(0);
  await gc.run();
  await new Promise((r) => setImmediate(r)); // the timer re-arms once the pass has ended
  t.equal(gc.stats.runs, 1, 'first pass right at start');
  const wait = async () => {
    for (let i = 0; i < 200 && gc.stats.runs + gc.stats.failures < 2; i++) await new Promise((r) => setTimeout(r, 5));
  };
  await clock.advance(1000);
  await wait();
  t.equal(gc.stats.runs, 2, 'next pass one interval later');
  gc.stop();
  await clock.advance(5000);
  t.equal(gc.stats.runs, 2, 'stopped: no more passes');

  // A map fd that is not a conntrack map: the pass fails, says why, is retried.
  const bad = new ConntrackGc({ ...dp.maps, ct: dp.maps.fe } as unknown as typeof dp.maps, log, clock, 1000);
  bad.start();
  await clock.advance(0);
  for (let i = 0; i < 200 && !lines.some((l) => l.level === 'error'); i++) await new Promise((r) => setTimeout(r, 5));
  bad.stop();
  const err = lines.find((l) => l.level === 'error');
  t.match(
    err?.msg,
    /conntrack GC pass over bpfproxy_fe failed: .*key size 8 and value size 20.*retried in 1 s/,
    'the operator is told what failed and what happens next',
  );
  t.equal(bad.stats.failures, 1);
});

t.test('native calls name what failed', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, ...SIZES } });
  await t.rejects(native().ctGc(dp.maps.fe.fd), {
    name: 'BpfError',
    errno: 22,
    message: /conntrack GC: map bpfproxy_fe has key size 8 and value size 20, not the 16\/64 of struct ct_key\/ct_value/,
  });
  const e = await native()
    .ctGc(-1)
    .catch((x: unknown) => x);
  t.ok(e instanceof BpfError && e.errno === 9 && /conntrack GC: map fd -1/.test(e.op), 'a bad fd is EBADF, named');
  t.throws(() => native().ctFlush(dp.maps.ct.fd, IPPROTO_UDP, Buffer.alloc(5)), /12-byte records/);
});

t.test('the UDP flush deletes the entries of removed backends only; requests made meanwhile share the next pass', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 256, ...SIZES } });
  const pair = (svcId: number, proto: number, client: string, backend: string, bport = 53) => {
    dp.maps.ct.set(
      { saddr: client, daddr: '10.96.0.53', sport: 999, dport: 53, proto },
      {
        expiresNs: 1n << 62n,
        createdNs: 0n,
        natSaddr: client,
        natSport: 999,
        natDaddr: backend,
        natDport: bport,
        dir: CtDir.FWD,
        state: 0,
        flags: 0,
        svcId,
      },
    );
    dp.maps.ct.set(
      { saddr: backend, daddr: client, sport: bport, dport: 999, proto },
      {
        expiresNs: 1n << 62n,
        createdNs: 0n,
        natSaddr: '10.96.0.53',
        natSport: 53,
        natDaddr: client,
        natDport: 999,
        dir: CtDir.REPLY,
        state: 0,
        flags: 0,
        svcId,
      },
    );
  };
  pair(1, IPPROTO_UDP, '10.1.0.1', '10.0.0.1'); // svc 1, kept backend
  pair(1, IPPROTO_UDP, '10.1.0.2', '10.0.0.2'); // svc 1, removed backend
  pair(1, IPPROTO_UDP, '10.1.0.3', '10.0.0.2', 54); // same address, another port: kept
  pair(1, IPPROTO_TCP, '10.1.0.4', '10.0.0.2'); // TCP: left to end on its own
  pair(2, IPPROTO_UDP, '10.1.0.5', '10.0.0.2'); // same backend, another service: kept
  pair(3, IPPROTO_UDP, '10.1.0.6', '10.0.0.9'); // svc 3 removed whole
  const f = new ConntrackFlusher(dp.maps, IPPROTO_UDP);
  const a = f.flush([{ svcId: 1, backend: { addr: '10.0.0.2', port: 53 } }]);
  const b = f.flush([{ svcId: 3 }]);
  const c = f.flush([]);
  const [ra, rb, rc] = await Promise.all([a, b, c]);
  t.equal(ra.deleted, 2, 'the first pass: both halves of the flow to the removed backend');
  t.equal(rb, rc, 'the requests made while it ran share one pass');
  t.equal(rb.deleted, 2, 'the second pass: the removed service');
  await f.idle();
  const left = dp.maps.ct
    .entries()
    .filter(([, v]) => v.dir === CtDir.FWD)
    .map(([k, v]) => `${v.svcId} ${k.saddr} ${k.proto}`)
    .sort();
  t.same(left, ['1 10.1.0.1 17', '1 10.1.0.3 17', '1 10.1.0.4 6', '2 10.1.0.5 17']);
  t.equal(dp.maps.ct.count(), 8, 'their reply halves too');
});

t.test('a removed UDP service keeps its id until its conntrack is cleared: another service cannot inherit the flush', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 256, ...SIZES } });
  const rec = new BpfReconciler(dp.maps);
  const dns = (name: string, vip: string, b: string) => [
    fe('ClusterIP', vip, 53, 'UDP', [be(b, 53)], { servicePort: `k/${name}:dns/UDP` }),
  ];
  const flow = (svcId: number, vip: string, client: string, backend: string) => {
    dp.maps.ct.set(
      { saddr: client, daddr: vip, sport: 999, dport: 53, proto: IPPROTO_UDP },
      {
        expiresNs: 1n << 62n,
        createdNs: 0n,
        natSaddr: client,
        natSport: 999,
        natDaddr: backend,
        natDport: 53,
        dir: CtDir.FWD,
        state: 0,
        flags: 0,
        svcId,
      },
    );
  };
  rec.syncService('k/a', dns('a', '10.96.0.53', '10.0.0.1'));
  const idA = dp.maps.fe.get({ addr: '10.96.0.53', port: 53, proto: IPPROTO_UDP })!.svcId;
  flow(idA, '10.96.0.53', '10.1.1.1', '10.0.0.1');
  rec.syncService('k/a', []); // queues the flush of svc idA
  rec.syncService('k/b', dns('b', '10.96.0.54', '10.0.0.2'));
  const idB = dp.maps.fe.get({ addr: '10.96.0.54', port: 53, proto: IPPROTO_UDP })!.svcId;
  t.not(idB, idA, 'the new service gets another id while the flush is pending');
  flow(idB, '10.96.0.54', '10.1.1.2', '10.0.0.2');
  await rec.flushed();
  t.same(
    dp.maps.ct.entries().map(([, v]) => v.svcId),
    [idB],
    "the removed service's flows went, the new one's stayed",
  );
  rec.syncService('k/c', dns('c', '10.96.0.55', '10.0.0.3'));
  t.equal(dp.maps.fe.get({ addr: '10.96.0.55', port: 53, proto: IPPROTO_UDP })!.svcId, idA, 'and the id is free again once it is done');
});

t.test('maps are counted on a worker thread, as the dump counts them', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 256, ...SIZES } });
  const rec = new BpfReconciler(dp.maps);
  rec.syncService('k/web', [
    fe('ClusterIP', '10.96.0.10', 80, 'TCP', [be('10.0.0.1', 80), be('10.0.0.2', 80)], { servicePort: 'k/web:http/TCP' }),
  ]);
  dp.maps.podSrcs.set({ prefixlen: 64, ifindex: 5, addr: '10.0.0.1' }, { v: 1 }); // an LPM trie: walked key by key
  dp.maps.ct.setMany(randomConntrack(5, 50, native().monotonicNs()));
  const list = [dp.maps.fe, dp.maps.slots, dp.maps.svcNames, dp.maps.podSrcs, dp.maps.ct, dp.maps.affinity];
  const { counts } = await native().mapCount(list.map((m) => m.fd));
  t.same(
    counts,
    list.map((m) => m.count()),
  );
  t.same((await native().mapCount([dp.maps.reasons.fd])).counts, [dp.maps.reasons.maxEntries], 'an array: every index');
  t.same(await countMapFills(dp.maps), mapFills(dp.maps), 'the same fill as the CLI reads');
  const known = await countMapFills(dp.maps, { [dp.maps.ct.name]: 7 });
  t.equal(known.find((m) => m.map === dp.maps.ct.name)?.entries, 7, "a count already known (the GC's) is not read again");
});

t.test('a scrape takes one datapath snapshot, however many gauges read it', async (t) => {
  const m = new Metrics();
  let calls = 0;
  const snap: DatapathSnapshot = {
    maps: [
      { map: 'bpfproxy_ct', entries: 10, maxEntries: 100 },
      { map: 'bpfproxy_fe', entries: 3, maxEntries: 64 },
    ],
    reasons: [{ reason: 'no-endpoints', verdict: 'reject', packets: 4, bytes: 400 }],
    conntrackEntries: 10,
    conntrack: { byProto: { tcp: 6, udp: 4, other: 0 }, gcRuns: 2, gcLastMs: 250, gcRemovedTotal: 12, gcLastRunAt: 1_700_000_000_000 },
  };
  m.setSnapshot(async () => {
    calls++;
    await new Promise((r) => setTimeout(r, 10));
    return snap;
  });
  const body = await m.scrape();
  t.equal(calls, 1, 'one snapshot for the scrape');
  for (const line of [
    'bpfproxy_map_entries{map="bpfproxy_ct"} 10',
    'bpfproxy_map_max_entries{map="bpfproxy_fe"} 64',
    'bpfproxy_datapath_packets_total{reason="no-endpoints",verdict="reject"} 4',
    'bpfproxy_conntrack_entries 10',
    'bpfproxy_conntrack_entries_by_protocol{protocol="UDP"} 4',
    'bpfproxy_conntrack_gc_duration_seconds 0.25',
    'bpfproxy_conntrack_gc_removed_total 12',
    'bpfproxy_conntrack_gc_last_run_timestamp_seconds 1700000000',
  ]) {
    t.ok(body.includes(line), line);
  }
  await Promise.all([m.scrape(), m.scrape()]);
  t.equal(calls, 2, 'scrapes that overlap share one snapshot');

  m.setSnapshot(() => Promise.reject(new Error('count entries of bpfproxy_fe: Bad file descriptor')));
  const after = await m.scrape();
  t.ok(after.includes('kubeproxy_sync_proxy_rules_duration_seconds'), 'a failed snapshot still answers the rest');
  t.notOk(after.includes('bpfproxy_map_entries{'), 'and leaves the map gauges out');
});
