/**
 * `bpfproxy-bench monitor --smoke`: tiny sizes, so the benchmark never
 * rots. Figures are not asserted (they live in bench/results/monitor); only
 * that every figure was measured, every event was accounted for, and the
 * report renders.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MONITOR_SMOKE, monitorTargets, runMonitorBench, writeMonitorResults } from '../bench/monitor.js';

t.setTimeout(120_000);

t.test('bench monitor --smoke', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-monitor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runMonitorBench(MONITOR_SMOKE);
  t.same(
    r.packetNs.map((p) => p.variant),
    ['monitor off', 'monitor on'],
    'per-packet figures without and with a listener (no baseline object given)',
  );
  t.ok(
    r.packetNs.every((p) => p.newFlowNs > 0 && p.establishedNs > 0),
    'measured',
  );
  t.equal(r.rates.length, MONITOR_SMOKE.rates.length, 'every rate tried');
  for (const x of r.rates) t.equal(x.received + x.lost, x.sent, `at ${x.target}/s every event delivered or counted lost`);
  t.same(writeMonitorResults(dir, r).sort(), ['report.md', 'results.json']);
  t.match(readFileSync(join(dir, 'report.md'), 'utf8'), /## Targets/);
  t.equal(monitorTargets(r).length, 1, 'the events/s target (the ns targets need a baseline object)');
});
