/**
 * Upgrading over pins of an older layout: a conntrack map pinned as an LRU
 * hash (before the flood-safe design) keeps its connections in the new
 * plain hash; drop counters pinned for fewer reasons start again.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CtDir } from '../src/dataplane/bpf/codecs.js';
import { DEFAULT_DATAPATH } from '../src/dataplane/bpf/config.js';
import { loadDatapath, MAP_NAMES } from '../src/dataplane/bpf/loader.js';
import { BpfMap } from '../src/dataplane/bpf/map.js';
import * as c from '../src/dataplane/bpf/codecs.js';
import { REASONS } from '../src/dataplane/bpf/reasons.js';
import { native } from '../src/native/index.js';
import { BPF_DIR, tmpPinDir } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

const BPF_MAP_TYPE_HASH = 1;

t.test('an LRU conntrack map of the old layout is migrated with its connections', async (t) => {
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const ctPath = join(pin, MAP_NAMES.ct);
  execFileSync('bpftool', ['map', 'create', ctPath, 'type', 'lru_hash', 'key', String(c.ctKey.size), 'value', String(c.ctValue.size),
    'entries', '1024', 'name', MAP_NAMES.ct]);
  execFileSync('bpftool', ['map', 'create', join(pin, MAP_NAMES.reasons), 'type', 'percpu_array', 'key', '4', 'value', String(c.reasonCounter.size),
    'entries', '12', 'name', MAP_NAMES.reasons]);
  const old = new BpfMap(MAP_NAMES.ct, native().objGet(ctPath), c.ctKey, c.ctValue);
  const key = { saddr: '10.244.1.13', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: 6 };
  const value = { expiresNs: 123n, createdNs: 1n, natSaddr: '10.244.1.13', natDaddr: '10.244.1.11', natSport: 40000, natDport: 8080, dir: CtDir.FWD, state: 17, flags: 0, svcId: 7 };
  old.set(key, value);
  old.close();

  const { log, lines } = captureLogger();
  const dp = await loadDatapath(BPF_DIR, pin, { ...DEFAULT_DATAPATH, mapSizes: { ...DEFAULT_DATAPATH.mapSizes, conntrack: 2048 } }, log);
  t.teardown(() => dp.close());
  const now = native().objGet(ctPath);
  now.close();
  t.equal(now.type, BPF_MAP_TYPE_HASH, 'conntrack is a plain hash now');
  t.same(dp.maps.ct.get(key), value, 'the connection came along, byte for byte');
  t.ok(lines.some((l) => /conntrack map is pinned in the old layout.*1 entries move/.test(l.msg)), 'and the operator is told');
  t.equal(dp.maps.reasons.maxEntries, REASONS.length, 'drop counters cover every reason');
  t.ok(lines.some((l) => /drop-reason counters .* start again from zero/.test(l.msg)), 'their restart is said');
});
