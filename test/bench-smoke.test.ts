/**
 * The local benchmark in smoke mode (tiny N, about a second per figure), so
 * the suite never rots. Figures are not asserted — only that every variant
 * was measured and the report renders; speed goals live in bench/results.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLocal, SMOKE, writeResults } from '../bench/local.js';
import { renderLocal, targets } from '../bench/report.js';
import { VARIANTS } from '../bench/variants.js';

t.setTimeout(600_000);

t.test('bench local --smoke', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runLocal(SMOKE);
  for (const n of SMOKE.services) {
    for (const v of VARIANTS) {
      const x = r.runs.find((y) => y.variant === v && y.services === n);
      t.ok(x, `${v} at ${n} measured`);
      if (!x) continue;
      t.same(x.errors, [], `${v} at ${n}: no tool errors`);
      t.ok(x.tcpGbps.median > 0 && x.udpGbps.median > 0, `${v} at ${n}: TCP and UDP moved data`);
      t.ok(x.crrRate.median > 0, `${v} at ${n}: connections made`);
      if (v !== 'direct') t.equal(x.endpointChangeMs?.samples.length, SMOKE.endpointChanges, `${v} at ${n}: endpoint changes timed`);
    }
  }
  t.ok(
    r.packetNs.every((p) => p.newFlowNs > 0 && p.establishedNs > 0),
    'per-packet ns measured',
  );
  t.same(
    r.agentRss.map((a) => a.source),
    ['manifests', 'kubernetes'],
    'agent RSS on both sources',
  );
  const files = writeResults(dir, r, renderLocal);
  t.same(files.sort(), ['connection-rate.svg', 'cpu-per-gbit.svg', 'programming-time.svg', 'report.md', 'results.json', 'throughput.svg']);
  const md = readFileSync(join(dir, 'report.md'), 'utf8');
  t.match(md, /## Targets/);
  t.equal(targets(r).length, 10, 'every target reported, met or not');
});
