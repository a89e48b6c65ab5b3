/**
 * `bpfproxy bench gc --smoke`: the bulk-map benchmark on a tiny map, so it
 * never rots. Figures are not asserted (they live in bench/results/gc);
 * only that every phase ran, both ways did the same work, and the report
 * renders.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GC_SMOKE, gcTargets, runGcBench, writeGcResults } from '../bench/gc.js';

t.setTimeout(120_000);

t.test('bench gc --smoke', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-gc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runGcBench(GC_SMOKE);
  t.equal(r.filled.entries, GC_SMOKE.entries, 'the map was filled');
  for (const work of ['gc', 'scrape', 'udp-flush'] as const) {
    const before = r.phases.find((p) => p.work === work && p.way === 'before');
    const after = r.phases.find((p) => p.work === work && p.way === 'after');
    t.ok(before && after, `${work}: measured both ways`);
    if (!before || !after) continue;
    t.equal(after.count, before.count, `${work}: both ways did the same work (${before.count})`);
    t.ok(after.lag.samples > 0 && before.lag.samples > 0, `${work}: the event loop was sampled`);
  }
  t.equal(r.phases.find((p) => p.work === 'gc')?.count, r.filled.dead, 'the GC removed the dead connections, both halves');
  t.equal(
    r.phases.find((p) => p.work === 'udp-flush')?.count,
    r.filled.udpToRemoved,
    'the flush removed the UDP flows to the removed endpoint',
  );
  t.same(writeGcResults(dir, r).sort(), ['report.md', 'results.json']);
  t.match(readFileSync(join(dir, 'report.md'), 'utf8'), /## Targets/);
  t.equal(gcTargets(r).length, 4, 'every target reported, met or not');
});
