/**
 * `bpfproxy-bench engine --smoke`: the engine core benchmark runs, measures
 * every vector size in both modes, and IPv6 at 256 in both modes, forwards
 * every packet, and names its targets (figures themselves are for the full
 * run: bench/results/engine).
 */
import t from 'tap';
import { ENGINE_SMOKE, runEngineBench } from '../bench/engine.js';

t.test('engine core benchmark, smoke', async (t) => {
  const r = runEngineBench(ENGINE_SMOKE, () => undefined);
  t.equal(r.figures.length, 2 * ENGINE_SMOKE.vectors.length + 2, 'a figure per vector size and mode, and IPv6 at 256 in both modes');
  for (const f of r.figures) {
    const what = `IPv${f.family ?? 4} ${f.mode} at ${f.vector}`;
    t.ok(f.best > 0 && f.best <= f.median, `${what}: ${f.best} ns/packet (median ${f.median})`);
    t.equal(f.drops, 0, `${what}: nothing dropped`);
  }
  t.equal(r.figures.filter((f) => f.family === 6).length, 2, 'IPv6 established and new at 256');
  t.same(
    r.targets.map((x) => x.goal),
    ['≤ 0.33x', '≤ 0.33x', '≤ 50 ns', '≤ 1.5x'],
    'the three goals of issue 12 are checked, and the IPv6 established cost named',
  );
});
