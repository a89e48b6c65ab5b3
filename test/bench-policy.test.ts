/**
 * `bpfproxy-bench policy --smoke`: tiny sizes, so the benchmark never rots.
 * Figures are not asserted (they live in bench/results/policy); only that
 * every figure was measured with the measured flow allowed in every state,
 * the policies compiled, and the report renders with every target.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POLICY_SMOKE, policyTargets, runPolicyBench, writePolicyResults } from '../bench/policy.js';

t.setTimeout(60_000);

t.test('bench policy --smoke', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-policy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const t0 = Date.now();
  const r = await runPolicyBench(POLICY_SMOKE);
  t.comment(`${Date.now() - t0} ms`);
  for (const [f, x] of Object.entries(r.nsPerPacket)) t.ok(x.none > 0 && x.one > 0 && x.many > 0, `${f}: measured in every state`);
  t.ok(r.sizes.endpoints > 0 && r.sizes.rules >= POLICY_SMOKE.policies, `compiled (${JSON.stringify(r.sizes)})`);
  t.equal(r.change.count, POLICY_SMOKE.changes, 'every change timed');
  t.ok(r.fullSync.medianMs > 0, 'full sync timed');
  t.same(writePolicyResults(dir, r).sort(), ['report.md', 'results.json']);
  t.match(readFileSync(join(dir, 'report.md'), 'utf8'), /## Targets/);
  t.equal(policyTargets(r).length, 8, 'two ratios per packet figure, the change p99 and the full sync');
});
