/**
 * The policy map writer at scale (testkit/policy-scale.ts): figures printed
 * for the first full sync of 4000 pods (1000 local) and 500 policies, of
 * 10K policies, one pod relabelled and one policy changed (p99 of rounds),
 * over real maps. Figures are printed, not asserted (a shared, loaded
 * machine); what is asserted is what the writer must do whatever the load:
 * a restart over the same inputs writes nothing.
 * POLICY_PERF=quick runs the first shape only.
 */
import t from 'tap';
import { loadavg } from 'node:os';
import { formatPolicyWriteFigures, measurePolicyWrites, type PolicyScaleShape } from '../testkit/policy-scale.js';
import { tmpDatapath } from './helpers/env.js';

const shapes: PolicyScaleShape[] = [
  { pods: 4000, localPods: 1000, policies: 500 },
  { pods: 4000, localPods: 1000, policies: 10000 },
];

for (const shape of process.env.POLICY_PERF === 'quick' ? shapes.slice(0, 1) : shapes) {
  t.test(`policy writes: ${shape.pods} pods, ${shape.localPods} local, ${shape.policies} policies`, async (t) => {
    const dp = await tmpDatapath(t);
    const f = measurePolicyWrites(dp.maps, shape, 30);
    t.comment(
      `load average ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
    );
    for (const line of formatPolicyWriteFigures(f).split('\n')) t.comment(line);
    t.ok(f.first.report.tablesWritten > 0, 'the first sync wrote tables');
    t.equal(f.restart.report.tablesWritten, 0, 'a restart writes no table');
    t.equal(f.restart.report.ipcacheWrites + f.restart.report.ipcacheDeletes, 0, 'a restart writes no identity');
    t.equal(f.restart.report.changed, false, 'a restart leaves the generation');
  });
}
