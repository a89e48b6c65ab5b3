/**
 * Upgrading over pins of an older layout: a conntrack map pinned as an LRU
 * hash (before the flood-safe design) keeps its connections in the new
 * plain hash; drop counters pinned for fewer reasons start again. And the
 * one object: every program loaded from it at once, over one set of maps
 * that a reload (an upgrade) adopts by their pins.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CtDir } from '../src/dataplane/bpf/codecs.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { BPF_OBJECT, loadDatapath, MAP_NAMES, PROGRAMS, type Datapath } from '../src/dataplane/bpf/loader.js';
import type { Codec } from '../src/dataplane/bpf/struct.js';
import type { MapHandle } from '../src/native/addon.js';
import { SOCK_HOOKS, sockProgramName } from '../src/dataplane/bpf/sock.js';
import { XDP_PROGRAM } from '../src/dataplane/afxdp/xdp.js';
import { XDP_DATA_PROGRAM } from '../src/dataplane/bpf/xdp.js';
import { BpfMap } from '../src/dataplane/bpf/map.js';
import * as c from '../src/dataplane/bpf/codecs.js';
import * as c6 from '../src/dataplane/bpf/codecs6.js';
import { REASONS } from '../src/dataplane/bpf/reasons.js';
import { native } from '../src/native/index.js';
import { BPF_DIR, tmpPinDir } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const BPF_MAP_TYPE_HASH = 1;

/** `bpftool map create`: a map pinned at path as an older agent left it. */
function pinOld(path: string, name: string, m: { type: string; key: number; value: number; entries: number; flags?: string }): void {
  const flags = m.flags === undefined ? [] : ['flags', m.flags];
  execFileSync('bpftool', [
    'map',
    'create',
    path,
    'type',
    m.type,
    'key',
    String(m.key),
    'value',
    String(m.value),
    'entries',
    String(m.entries),
    ...flags,
    'name',
    name,
  ]);
}

/** A conntrack map pinned in an older layout, one connection in it, and what the upgrade must say and leave. */
interface OldConntrack<K, V> {
  title: string;
  map: 'ct' | 'ct6';
  /** the old layout as bpftool creates it */
  type: string;
  flags?: string;
  key: Codec<K>;
  oldValue: Codec<V>;
  entry: readonly [K, V];
  /** checks of the layouts, before the upgrade */
  layouts?: (t: Test) => void;
  /** other maps of the old agent, pinned beside it */
  alsoPinned?: (pin: string) => void;
  /** the pinned map after the upgrade (closed) */
  pinned: (t: Test, m: MapHandle) => void;
  told: RegExp;
  /** more checks after the upgrade */
  after?: (t: Test, dp: Datapath, lines: ReadonlyArray<{ msg: string }>) => void;
}

/** One case; generic so that each case's key and value are checked against its codecs. */
const oldConntrack = <K, V>(c: OldConntrack<K, V>) => c as unknown as OldConntrack<unknown, unknown>;

/** A TCP connection's conntrack entry, forward direction, to port 80 DNATed to natDaddr:8080. */
function ctEntry<E extends { expiresNs: bigint; createdNs: bigint }>(
  saddr: string,
  daddr: string,
  natDaddr: string,
  sport: number,
  rest: E,
) {
  const key = { saddr, daddr, sport, dport: 80, proto: 6 };
  const value = { natSaddr: saddr, natDaddr, natSport: sport, natDport: 8080, dir: CtDir.FWD, state: 17, ...rest };
  return [key, value] as const;
}

const OLD_CONNTRACK = [
  oldConntrack({
    title: 'an LRU conntrack map of the old layout is migrated with its connections',
    map: 'ct',
    type: 'lru_hash',
    key: c.ctKey,
    oldValue: c.ctValue,
    entry: ctEntry('10.244.1.13', '10.96.0.10', '10.244.1.11', 40000, { expiresNs: 123n, createdNs: 1n, flags: 0, svcId: 7 }),
    alsoPinned: (pin) =>
      pinOld(join(pin, MAP_NAMES.reasons), MAP_NAMES.reasons, { type: 'percpu_array', key: 4, value: c.reasonCounter.size, entries: 12 }),
    pinned: (t, m) => t.equal(m.type, BPF_MAP_TYPE_HASH, 'conntrack is a plain hash now'),
    told: /conntrack map is pinned in the old layout.*1 entries move/,
    after: (t, dp, lines) => {
      t.equal(dp.maps.reasons.maxEntries, REASONS.length, 'drop counters cover every reason');
      t.ok(
        lines.some((l) => /drop-reason counters .* start again from zero/.test(l.msg)),
        'their restart is said',
      );
    },
  }),
  oldConntrack({
    title: 'a conntrack map pinned with the 40-byte values of before the XDP forwarding cache is migrated with its connections',
    map: 'ct',
    type: 'hash',
    flags: '0',
    key: c.ctKey,
    oldValue: c.ctValueNoFwd,
    entry: ctEntry('10.244.1.14', '10.96.0.10', '10.244.1.11', 40002, { expiresNs: 456n, createdNs: 2n, flags: 4, svcId: 9, polGen: 3 }),
    layouts: (t) => t.equal(c.ctValueNoFwd.size, 40, 'the old layout'),
    pinned: (t, m) => t.equal(m.valueSize, c.ctValue.size, `the pinned conntrack has ${c.ctValue.size}-byte values now`),
    told: /conntrack map is pinned in the old layout \(type 1, 40-byte values\).*1 entries move/,
  }),
  oldConntrack({
    title: 'an IPv6 conntrack map pinned with the 64-byte values of before the TC forwarding cache is migrated with its connections',
    map: 'ct6',
    type: 'hash',
    flags: '1', // BPF_F_NO_PREALLOC, as bpf/lib/conntrack6.h
    key: c6.ct6Key,
    oldValue: c6.ct6ValueNoFwd,
    entry: ctEntry('fd00:10:244:1::14', 'fd00:10:96::10', 'fd00:10:244:1::11', 40002, {
      expiresNs: 456n,
      createdNs: 2n,
      flags: 4,
      svcId: 9,
      polGen: 3,
    }),
    layouts: (t) => {
      t.equal(c6.ct6ValueNoFwd.size, 64, 'the old layout');
      t.equal(c6.ct6Value.size, 88, 'the new layout');
    },
    pinned: (t, m) => t.equal(m.valueSize, c6.ct6Value.size, `the pinned IPv6 conntrack has ${c6.ct6Value.size}-byte values now`),
    told: /IPv6 conntrack map is pinned in the old layout \(64-byte values\).*1 entries move/,
  }),
];

for (const oc of OLD_CONNTRACK) {
  t.test(oc.title, async (t) => {
    const pin = tmpPinDir(t);
    mkdirSync(pin, { recursive: true });
    const path = join(pin, MAP_NAMES[oc.map]);
    oc.layouts?.(t);
    pinOld(path, MAP_NAMES[oc.map], { type: oc.type, key: oc.key.size, value: oc.oldValue.size, entries: 1024, flags: oc.flags });
    oc.alsoPinned?.(pin);
    const old = new BpfMap(MAP_NAMES[oc.map], native().objGet(path), oc.key, oc.oldValue);
    const [key, value] = oc.entry;
    old.set(key, value);
    old.close();

    const { log, lines } = captureLogger();
    const dp = await loadDatapath(BPF_DIR, pin, { ...DEFAULT_DATAPATH, mapSizes: { ...DEFAULT_DATAPATH.mapSizes, conntrack: 2048 } }, log);
    t.teardown(() => dp.close());
    const pinned = native().objGet(path);
    pinned.close();
    oc.pinned(t, pinned);
    t.same((dp.maps[oc.map] as unknown as BpfMap<unknown, unknown>).get(key), value, 'the connection came along, byte for byte');
    t.ok(
      lines.some((l) => oc.told.test(l.msg)),
      'and the operator is told',
    );
    oc.after?.(t, dp, lines);
  });
}

t.test('one object carries every program; a reload adopts its pinned maps', async (t) => {
  const pin = tmpPinDir(t);
  const first = await loadDatapath(BPF_DIR, pin, DEFAULT_DATAPATH);
  t.equal(first.objects.length, 1, `one object (${BPF_OBJECT}) for every program`);
  const obj = first.objects[0]!;
  t.same(
    obj
      .programs()
      .map((p) => p.name)
      .sort(),
    [...Object.values(PROGRAMS).map((p) => p.name), XDP_PROGRAM, XDP_DATA_PROGRAM, ...SOCK_HOOKS.map(sockProgramName)].sort(),
    "it holds each role's program (and the AF_XDP engine's XDP program, which its own load attaches, XDP acceleration's, and the socket hooks, bpf/sock.c)",
  );
  const maps = obj.maps().filter((m) => m.pinPath !== null);
  t.same(maps.map((m) => m.name).sort(), Object.values(MAP_NAMES).sort(), 'one copy of each map, pinned by name');
  const ids = Object.fromEntries(maps.map((m) => [m.name, native().mapInfo(m.fd).id]));
  const key = { saddr: '10.244.1.13', daddr: '10.96.0.10', sport: 40001, dport: 80, proto: 6 };
  const value = {
    expiresNs: 9n,
    createdNs: 1n,
    natSaddr: '10.244.1.13',
    natDaddr: '10.244.1.11',
    natSport: 40001,
    natDport: 8080,
    dir: CtDir.FWD,
    state: 0,
    flags: 0,
    svcId: 3,
  };
  first.maps.ct.set(key, value);
  first.close();

  const again = await loadDatapath(BPF_DIR, pin, DEFAULT_DATAPATH);
  t.teardown(() => again.close());
  const adopted = Object.fromEntries(
    again.objects[0]!.maps()
      .filter((m) => m.pinPath !== null)
      .map((m) => [m.name, native().mapInfo(m.fd).id]),
  );
  t.same(adopted, ids, 'the same maps (same ids), not new ones');
  t.same(again.maps.ct.get(key), value, 'with their entries');
});
