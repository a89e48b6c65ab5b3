/**
 * The reconciler's Maglev tables against real maps: written before the
 * frontend points at them and deleted after it leaves them, adopted by a
 * restarted agent without a write, rebuilt when found incomplete, the
 * choice per Service and per agent, a full table map falling back to
 * random choice (reported), and what 10K services cost in memory.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { BpfReconciler, DEFAULT_LOAD_BALANCING, type LoadBalancing } from '../src/dataplane/bpf/reconciler.js';
import { FeFlags, MAGLEV_CHUNK_BYTES, MaglevTable, feValue, maglevSizeOf } from '../src/dataplane/bpf/codecs.js';
import { maglevTable, maglevTableSize } from '../src/model/maglev.js';
import type { Frontend } from '../src/model/types.js';
import { be, fe } from './helpers/fixtures.js';
import { recordWrites } from './helpers/map-writes.js';
import { countMapFills } from '../src/dataplane/bpf/inspect.js';
import { tmpDatapath } from './helpers/env.js';

const MAGLEV: LoadBalancing = { ...DEFAULT_LOAD_BALANCING, algorithm: 'maglev' };

const lb = (backends = [be('10.0.0.1', 80), be('10.0.0.2', 80)], more: Partial<Frontend> = {}): Frontend[] => [
  { ...fe('LoadBalancer', '198.51.100.10', 80, 'TCP', backends, { servicePort: 'default/web:http/TCP' }), ...more },
  { ...fe('ClusterIP', '10.96.0.10', 80, 'TCP', backends, { servicePort: 'default/web:http/TCP' }), ...more },
];
const LB_KEY = { addr: '198.51.100.10', port: 80, proto: 6 };
const CIP_KEY = { addr: '10.96.0.10', port: 80, proto: 6 };

t.test('struct fe_value keeps its size: pinned frontends of an earlier version are adopted, not replaced', async (t) => {
  // 20 bytes before Maglev; the two table sizes took its padding, whose
  // zeros read as "no table" (random), as the earlier version meant
  t.equal(feValue.size, 20);
});

t.test('tables are written before the switch and deleted after it', async (t) => {
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps, undefined, MAGLEV);
  const ops = recordWrites(dp.maps);
  rec.syncService('default/web', lb());
  t.same(
    ops.splice(0),
    ['set svcNames', 'setMany slots', 'setMany maglev', 'set fe', 'set fe'],
    'new service: slots, table, then frontends',
  );
  const before = dp.maps.fe.get(LB_KEY)!;
  t.ok(before.flags & FeFlags.MAGLEV, 'LoadBalancer IP: Maglev');
  const m = maglevTableSize(2)!;
  t.equal(maglevSizeOf(before.maglevSize), m);
  const chunks = dp.maps.maglev.keys().filter((k) => k.setId === before.setId);
  t.equal(chunks.length, Math.ceil(m / MAGLEV_CHUNK_BYTES), `${chunks.length} chunks of one-byte entries`);
  // the table in the map is the model's, entry by entry
  const want = maglevTable(['10.0.0.1:80', '10.0.0.2:80'], m);
  const got: number[] = [];
  for (let c = 0; c < chunks.length; c++) {
    const v = dp.maps.maglev.get({ setId: before.setId, table: MaglevTable.CLUSTER, chunk: c })!;
    got.push(...v.ord.subarray(0, Math.min(MAGLEV_CHUNK_BYTES, m - c * MAGLEV_CHUNK_BYTES)));
  }
  t.same(got, [...want], 'map entries = maglevTable()');

  rec.syncService('default/web', lb([be('10.0.0.1', 80), be('10.0.0.3', 80)]));
  t.same(
    ops.splice(0),
    ['setMany slots', 'setMany maglev', 'set fe', 'set fe', 'deleteMany slots', 'deleteMany maglev'],
    'changed endpoints: new slots and table, switch, then the old set and table go',
  );
  t.equal(dp.maps.maglev.keys().filter((k) => k.setId === before.setId).length, 0, 'old table gone');

  rec.syncService('default/web', []);
  t.equal(dp.maps.maglev.count(), 0, 'service gone: no table left');
});

t.test('the choice: per Service over the agent, cluster IPs random unless asked', async (t) => {
  const dp = await tmpDatapath(t);
  const flags = (k: typeof LB_KEY) => dp.maps.fe.get(k)!.flags & FeFlags.MAGLEV;
  const agentRandom = new BpfReconciler(dp.maps);
  agentRandom.syncService('default/web', lb());
  t.equal(flags(LB_KEY), 0, '--lb-algorithm random (default): random');
  t.equal(dp.maps.maglev.count(), 0, 'and no table');
  agentRandom.syncService('default/web', lb(undefined, { lbAlgorithm: 'maglev' }));
  t.ok(flags(LB_KEY) && flags(CIP_KEY), 'annotation maglev: every frontend of the Service, cluster IP too');
  t.ok(dp.maps.maglev.count() > 0, 'with a table');
  agentRandom.syncService('default/web', lb());
  t.equal(flags(LB_KEY) | flags(CIP_KEY), 0, 'annotation removed: random again');
  t.equal(dp.maps.maglev.count(), 0, 'the table went with the old set');

  const dp2 = await tmpDatapath(t);
  const agentMaglev = new BpfReconciler(dp2.maps, undefined, MAGLEV);
  agentMaglev.syncService('default/web', lb(undefined, { lbAlgorithm: 'random' }));
  t.equal(dp2.maps.fe.get(LB_KEY)!.flags & FeFlags.MAGLEV, 0, 'annotation random wins over --lb-algorithm maglev');
  t.equal(dp2.maps.maglev.count(), 0);
});

t.test('a restarted agent adopts the tables without a write; an incomplete one is rebuilt', async (t) => {
  const dp = await tmpDatapath(t);
  const all = new Map([
    ['default/web', lb()],
    [
      'default/etp',
      [
        fe('LoadBalancer', '198.51.100.20', 80, 'TCP', [be('10.0.0.5', 80), be('10.0.0.6', 80, false)], {
          externalLocal: true,
          servicePort: 'default/etp:p/TCP',
        }),
      ],
    ],
  ]);
  new BpfReconciler(dp.maps, undefined, MAGLEV).syncAll(all);
  const etp = dp.maps.fe.get({ addr: '198.51.100.20', port: 80, proto: 6 })!;
  t.equal(maglevSizeOf(etp.maglevSizeLocal), maglevTableSize(1), 'Local policy: a node-local table');
  const count = dp.maps.maglev.count();

  const again = new BpfReconciler(dp.maps, undefined, MAGLEV);
  const ops = recordWrites(dp.maps);
  t.equal(again.syncAll(all).frontendsChanged, 0);
  t.same(ops.splice(0), [], 'no write after restart');
  t.equal(dp.maps.maglev.count(), count);

  // an agent killed while writing a table leaves it short
  const web = dp.maps.fe.get(LB_KEY)!;
  dp.maps.maglev.delete({ setId: web.setId, table: MaglevTable.CLUSTER, chunk: 1 });
  const third = new BpfReconciler(dp.maps, undefined, MAGLEV);
  t.equal(third.syncAll(all).frontendsChanged, 2, 'the frontends of the short table move to a whole one');
  const now = dp.maps.fe.get(LB_KEY)!;
  t.not(now.setId, web.setId);
  t.equal(dp.maps.maglev.keys().filter((k) => k.setId === web.setId).length, 0, 'the short table deleted');
  t.equal(dp.maps.maglev.count(), count, 'as many chunks as before');

  // tables of sets no frontend points at (written, then the agent died)
  dp.maps.maglev.set({ setId: 9999, table: MaglevTable.CLUSTER, chunk: 0 }, { ord: Buffer.alloc(MAGLEV_CHUNK_BYTES) });
  new BpfReconciler(dp.maps, undefined, MAGLEV);
  t.notOk(dp.maps.maglev.get({ setId: 9999, table: MaglevTable.CLUSTER, chunk: 0 }), 'leftover table deleted at start');
});

t.test('a full table map: random choice, reported, retried', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 64, natBackend: 64, natAffinity: 64, maglev: 8 } });
  const rec = new BpfReconciler(dp.maps, undefined, MAGLEV);
  // 2 backends: 2039 entries, 5 chunks; the second service does not fit
  const one = (ip: string, svc: string) => [
    fe('LoadBalancer', ip, 80, 'TCP', [be('10.0.0.1', 80), be('10.0.0.2', 80)], { servicePort: `${svc}:p/TCP` }),
  ];
  t.same(rec.syncService('default/a', one('198.51.100.1', 'default/a')).problems, []);
  const r = rec.syncService('default/b', one('198.51.100.2', 'default/b'));
  t.equal(r.problems.length, 1);
  t.ok(r.problems[0]!.mapFull, 'counted as a full map');
  t.match(r.problems[0]!.message, /bpfproxy_maglev is full .* random endpoint choice .* retried/);
  const b = dp.maps.fe.get({ addr: '198.51.100.2', port: 80, proto: 6 })!;
  t.equal(b.flags & FeFlags.MAGLEV, 0, 'served, at random');
  t.equal(b.clusterCount, 2);
  t.equal(dp.maps.maglev.keys().filter((k) => k.setId === b.setId).length, 0, 'no partial table left');
  rec.syncService('default/a', []);
  t.same(rec.syncService('default/b', one('198.51.100.2', 'default/b')).problems, [], 'room freed: Maglev on the next sync');
  t.ok(dp.maps.fe.get({ addr: '198.51.100.2', port: 80, proto: 6 })!.flags & FeFlags.MAGLEV);
});

/** The map's memory as the kernel accounts it (fdinfo "memlock", Linux 6.4+ map_mem_usage). */
function memlock(fd: number): number | undefined {
  const m = /^memlock:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

t.test('memory at 10K services', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 1024, natFrontend: 16384, natBackend: 65536, natAffinity: 64 } });
  const rec = new BpfReconciler(dp.maps, undefined, MAGLEV);
  const empty = memlock(dp.maps.maglev.fd);
  const services = 10_000;
  const all = new Map<string, Frontend[]>();
  for (let s = 0; s < services; s++) {
    const ip = `198.${18 + (s >> 16)}.${(s >> 8) & 255}.${s & 255}`;
    const backends = [1, 2, 3].map((i) => be(`10.${1 + (s >> 8)}.${s & 255}.${i}`, 8080));
    all.set(`ns/s${s}`, [fe('LoadBalancer', ip, 80, 'TCP', backends, { servicePort: `ns/s${s}:p/TCP` })]);
  }
  const t0 = performance.now();
  const r = rec.syncAll(all);
  const ms = performance.now() - t0;
  t.same(r.problems, []);
  const chunks = dp.maps.maglev.count();
  const m = maglevTableSize(3)!;
  t.equal(chunks, services * Math.ceil(m / MAGLEV_CHUNK_BYTES), `${chunks} chunks: ${Math.ceil(m / MAGLEV_CHUNK_BYTES)} per service`);
  const full = memlock(dp.maps.maglev.fd);
  // one element: 48 (struct htab_elem) + 8 (key) + 448 (value) + 8 (the
  // allocator's list node, 6.1+) = 512 bytes, a kmalloc-512 object
  const kmalloc = chunks * 512;
  t.comment(
    `${services} LoadBalancer services of 3 endpoints, M=${m}: full sync ${ms.toFixed(0)} ms; ` +
      `${chunks} chunks = ${(kmalloc / 2 ** 20).toFixed(1)} MiB in kmalloc-512 objects` +
      (full !== undefined && empty !== undefined
        ? `; kernel accounting (fdinfo memlock): ${(empty / 2 ** 20).toFixed(1)} MiB empty, ${(full / 2 ** 20).toFixed(1)} MiB full`
        : ''),
  );
  t.ok(kmalloc < 64 * 2 ** 20, 'under the 64 MiB bound of the default map size');
  const fill = (await countMapFills(dp.maps)).find((f) => f.map === 'bpfproxy_maglev');
  t.match(fill, { entries: chunks, maxEntries: 131072 }, 'metrics and status show how full the table map is');
  const t1 = performance.now();
  const again = new BpfReconciler(dp.maps, undefined, MAGLEV);
  const restoreMs = performance.now() - t1;
  const ops = recordWrites(dp.maps);
  t.equal(again.syncAll(all).frontendsChanged, 0, 'a restarted agent adopts all 10K tables');
  t.same(ops, [], 'without a write');
  t.comment(`restart: the pinned state (${chunks} chunks among it) read back in ${restoreMs.toFixed(0)} ms`);
});
