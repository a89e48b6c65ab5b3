/**
 * `bpfproxy-bench engine --smoke`: the engine core benchmark runs, measures
 * every vector size in both modes, forwards every packet, and names its
 * targets (figures themselves are for the full run: bench/results/engine).
 */
import t from 'tap';
import { ENGINE_SMOKE, runEngineBench } from '../bench/engine.js';

t.test('engine core benchmark, smoke', async (t) => {
  const r = runEngineBench(ENGINE_SMOKE, () => undefined);
  t.equal(r.figures.length, 2 * ENGINE_SMOKE.vectors.length, 'a figure per vector size and mode');
  for (const f of r.figures) {
    t.ok(f.best > 0 && f.best <= f.median, `${f.mode} at ${f.vector}: ${f.best} ns/packet (median ${f.median})`);
    t.equal(f.drops, 0, `${f.mode} at ${f.vector}: nothing dropped`);
  }
  t.same(
    r.targets.map((x) => x.goal),
    ['≤ 0.33x', '≤ 0.33x', '≤ 50 ns'],
    'the three goals of issue 12 are checked',
  );
});
