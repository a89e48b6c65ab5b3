/**
 * `bpfproxy-bench engine-e2e --smoke`: the end-to-end benchmark runs both
 * dataplanes with the same flood, delivers through each, reports the ratio
 * of one run, and counts the streams broken when the agent is killed under
 * load (none may break: the kernel path carries them on); with two
 * queues, both workers are fed and TC with XDP acceleration is measured
 * beside. Figures themselves are for the full run (bench/results/engine-e2e).
 */
import t from 'tap';
import { ENGINE_E2E_SMOKE, renderEngineE2e, runEngineE2e } from '../bench/engine-e2e.js';

t.test('engine vs TC end to end, smoke', async (t) => {
  const r = await runEngineE2e(ENGINE_E2E_SMOKE, (s) => t.comment(s));
  t.same(
    r.pps.map((p) => p.dataplane),
    ['tc', 'afxdp'],
    'the TC path, then the engine',
  );
  for (const p of r.pps) {
    t.ok(p.sent > 0 && p.delivered > 0, `${p.dataplane}: ${p.delivered} of ${p.sent} frames delivered`);
    t.ok(p.delivered <= p.sent + 100, `${p.dataplane}: the backend counted no more than was sent (a few port unreachables aside)`);
  }
  t.ok(r.ratio > 0, `ratio ${r.ratio}`);
  // copy mode sends at most a kernel batch (32 frames) per sendto(): the
  // worker kicks until its TX ring drains, else a flood fills the ring
  t.equal(r.engineDrops['tx-full'] ?? 0, 0, `no frame dropped for a full TX ring (engine drops: ${JSON.stringify(r.engineDrops)})`);
  t.equal(r.fallback.outcomes.length, ENGINE_E2E_SMOKE.streams, 'every stream reported');
  t.equal(r.fallback.broken, 0, `no stream broke when the agent was killed (${JSON.stringify(r.fallback.outcomes)})`);
  t.match(renderEngineE2e(r), /Engine \/ TC delivered: \*\*[\d.]+×\*\*/, 'the report names the ratio');
});

t.test('two queues: both engine workers receive (per-queue counters); TC, XDP acceleration and the engine measured', async (t) => {
  const r = await runEngineE2e({ ...ENGINE_E2E_SMOKE, queues: 2, xdp: true }, (s) => t.comment(s));
  t.same(
    r.pps.map((p) => p.dataplane),
    ['tc', 'xdp', 'afxdp'],
    'the TC path, with XDP acceleration, then the engine',
  );
  t.ok(r.generatorCeiling.pps > 0, `the generators alone: ${r.generatorCeiling.pps} pps`);
  for (const p of r.pps) t.ok(p.delivered > 0, `${p.dataplane}: ${p.delivered} of ${p.sent} frames delivered`);
  const af = r.pps.at(-1)!;
  t.equal(af.perQueuePps?.length, 2, 'a figure per queue');
  t.ok(
    af.perQueuePps!.every((x) => x > 0),
    `both workers received frames: ${af.perQueuePps!.join(' + ')} pps`,
  );
  t.equal(r.engineDrops['tx-full'] ?? 0, 0, `no frame dropped for a full TX ring (engine drops: ${JSON.stringify(r.engineDrops)})`);
  t.ok((r.engineTime?.nodeNsPerPacket.output ?? 0) > 0, `the engine's clocks say where its time went: ${JSON.stringify(r.engineTime)}`);
  t.match(renderEngineE2e(r), /engine RX per queue/, 'the report has the per-queue column');
});
