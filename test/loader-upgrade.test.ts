/**
 * Upgrading over pins of an older layout: a conntrack map pinned as an LRU
 * hash (before the flood-safe design) keeps its connections in the new
 * plain hash; drop counters pinned for fewer reasons start again. And the
 * one object: every program loaded from it at once, over one set of maps
 * that a reload (an upgrade) adopts by their pins.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CtDir } from '../src/dataplane/bpf/codecs.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { BPF_OBJECT, loadDatapath, MAP_NAMES, PROGRAMS } from '../src/dataplane/bpf/loader.js';
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

t.test('an LRU conntrack map of the old layout is migrated with its connections', async (t) => {
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const ctPath = join(pin, MAP_NAMES.ct);
  execFileSync('bpftool', [
    'map',
    'create',
    ctPath,
    'type',
    'lru_hash',
    'key',
    String(c.ctKey.size),
    'value',
    String(c.ctValue.size),
    'entries',
    '1024',
    'name',
    MAP_NAMES.ct,
  ]);
  execFileSync('bpftool', [
    'map',
    'create',
    join(pin, MAP_NAMES.reasons),
    'type',
    'percpu_array',
    'key',
    '4',
    'value',
    String(c.reasonCounter.size),
    'entries',
    '12',
    'name',
    MAP_NAMES.reasons,
  ]);
  const old = new BpfMap(MAP_NAMES.ct, native().objGet(ctPath), c.ctKey, c.ctValue);
  const key = { saddr: '10.244.1.13', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: 6 };
  const value = {
    expiresNs: 123n,
    createdNs: 1n,
    natSaddr: '10.244.1.13',
    natDaddr: '10.244.1.11',
    natSport: 40000,
    natDport: 8080,
    dir: CtDir.FWD,
    state: 17,
    flags: 0,
    svcId: 7,
  };
  old.set(key, value);
  old.close();

  const { log, lines } = captureLogger();
  const dp = await loadDatapath(BPF_DIR, pin, { ...DEFAULT_DATAPATH, mapSizes: { ...DEFAULT_DATAPATH.mapSizes, conntrack: 2048 } }, log);
  t.teardown(() => dp.close());
  const now = native().objGet(ctPath);
  now.close();
  t.equal(now.type, BPF_MAP_TYPE_HASH, 'conntrack is a plain hash now');
  t.same(dp.maps.ct.get(key), value, 'the connection came along, byte for byte');
  t.ok(
    lines.some((l) => /conntrack map is pinned in the old layout.*1 entries move/.test(l.msg)),
    'and the operator is told',
  );
  t.equal(dp.maps.reasons.maxEntries, REASONS.length, 'drop counters cover every reason');
  t.ok(
    lines.some((l) => /drop-reason counters .* start again from zero/.test(l.msg)),
    'their restart is said',
  );
});

t.test('a conntrack map pinned with the 40-byte values of before the XDP forwarding cache is migrated with its connections', async (t) => {
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const ctPath = join(pin, MAP_NAMES.ct);
  t.equal(c.ctValueNoFwd.size, 40, 'the old layout');
  execFileSync('bpftool', [
    'map',
    'create',
    ctPath,
    'type',
    'hash',
    'key',
    String(c.ctKey.size),
    'value',
    String(c.ctValueNoFwd.size),
    'entries',
    '1024',
    'flags',
    '0',
    'name',
    MAP_NAMES.ct,
  ]);
  const old = new BpfMap(MAP_NAMES.ct, native().objGet(ctPath), c.ctKey, c.ctValueNoFwd);
  const key = { saddr: '10.244.1.14', daddr: '10.96.0.10', sport: 40002, dport: 80, proto: 6 };
  const value = {
    expiresNs: 456n,
    createdNs: 2n,
    natSaddr: '10.244.1.14',
    natDaddr: '10.244.1.11',
    natSport: 40002,
    natDport: 8080,
    dir: CtDir.FWD,
    state: 17,
    flags: 4,
    svcId: 9,
    polGen: 3,
  };
  old.set(key, value);
  old.close();

  const { log, lines } = captureLogger();
  const dp = await loadDatapath(BPF_DIR, pin, { ...DEFAULT_DATAPATH, mapSizes: { ...DEFAULT_DATAPATH.mapSizes, conntrack: 2048 } }, log);
  t.teardown(() => dp.close());
  const pinned = native().objGet(ctPath);
  pinned.close();
  t.equal(pinned.valueSize, c.ctValue.size, `the pinned conntrack has ${c.ctValue.size}-byte values now`);
  t.same(dp.maps.ct.get(key), value, 'the connection came along (no route cached)');
  t.ok(
    lines.some((l) => /conntrack map is pinned in the old layout \(type 1, 40-byte values\).*1 entries move/.test(l.msg)),
    'and the operator is told',
  );
});

t.test(
  'an IPv6 conntrack map pinned with the 64-byte values of before the TC forwarding cache is migrated with its connections',
  async (t) => {
    const pin = tmpPinDir(t);
    mkdirSync(pin, { recursive: true });
    const ct6Path = join(pin, MAP_NAMES.ct6);
    t.equal(c6.ct6ValueNoFwd.size, 64, 'the old layout');
    t.equal(c6.ct6Value.size, 88, 'the new layout');
    execFileSync('bpftool', [
      'map',
      'create',
      ct6Path,
      'type',
      'hash',
      'key',
      String(c6.ct6Key.size),
      'value',
      String(c6.ct6ValueNoFwd.size),
      'entries',
      '1024',
      'flags',
      '1', // BPF_F_NO_PREALLOC, as bpf/lib/conntrack6.h
      'name',
      MAP_NAMES.ct6,
    ]);
    const old = new BpfMap(MAP_NAMES.ct6, native().objGet(ct6Path), c6.ct6Key, c6.ct6ValueNoFwd);
    const key = { saddr: 'fd00:10:244:1::14', daddr: 'fd00:10:96::10', sport: 40002, dport: 80, proto: 6 };
    const value = {
      expiresNs: 456n,
      createdNs: 2n,
      natSaddr: 'fd00:10:244:1::14',
      natDaddr: 'fd00:10:244:1::11',
      natSport: 40002,
      natDport: 8080,
      dir: CtDir.FWD,
      state: 17,
      flags: 4,
      svcId: 9,
      polGen: 3,
    };
    old.set(key, value);
    old.close();

    const { log, lines } = captureLogger();
    const dp = await loadDatapath(BPF_DIR, pin, { ...DEFAULT_DATAPATH, mapSizes: { ...DEFAULT_DATAPATH.mapSizes, conntrack: 2048 } }, log);
    t.teardown(() => dp.close());
    const pinned = native().objGet(ct6Path);
    pinned.close();
    t.equal(pinned.valueSize, c6.ct6Value.size, `the pinned IPv6 conntrack has ${c6.ct6Value.size}-byte values now`);
    t.same(dp.maps.ct6.get(key), value, 'the connection came along (no route cached)');
    t.ok(
      lines.some((l) => /IPv6 conntrack map is pinned in the old layout \(64-byte values\).*1 entries move/.test(l.msg)),
      'and the operator is told',
    );
  },
);

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
