/**
 * The rollback drain's decisions (src/dataplane/bpf/drain.ts) on a fake
 * clock: when it detaches (no open flow left, time up, agent stopping),
 * that a re-enable cancels it without detaching, and what it tells the
 * operator (kube-proxy missing, how many flows, when it will detach).
 */
import t from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { Drain, type DrainDeps, type KubeProxyRules } from '../src/dataplane/bpf/drain.js';
import { captureLogger } from './helpers/log.js';

function setup(open: Array<number | Error>, kp: KubeProxyRules[] = [{ iptables: true, nftables: false }], timeoutMs = 60_000) {
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const calls = { modes: [] as boolean[], detached: 0, counts: 0 };
  let i = 0;
  let k = 0;
  const deps: DrainDeps = {
    setDraining: (on) => void calls.modes.push(on),
    openFlows: () => {
      calls.counts++;
      const v = open[Math.min(i++, open.length - 1)]!;
      return v instanceof Error ? Promise.reject(v) : Promise.resolve(v);
    },
    detach: () => void calls.detached++,
    kubeProxyRules: () => kp[Math.min(k++, kp.length - 1)]!,
  };
  const d = new Drain(deps, { timeoutMs, pollMs: 2000 }, log, clock);
  return { d, clock, lines, calls };
}

t.test('nothing open: detaches at once', async (t) => {
  const { d, calls, lines } = setup([0]);
  await d.start();
  t.equal(await d.done, 'empty');
  t.same(calls.modes, [true], 'drain mode set first');
  t.equal(calls.detached, 1, 'detached');
  t.ok(
    lines.some((l) => /drain finished after 0s/.test(l.msg)),
    'says why it detached',
  );
});

t.test('open flows: served until the last one ends, with progress for the operator', async (t) => {
  const { d, clock, calls, lines } = setup([5, 5, 3, 3, 3, 3, 3, 1, 0]);
  await d.start();
  const start = lines.find((l) => /draining\. 5 open connection/.test(l.msg));
  t.ok(start, 'the start says how many connections drain');
  t.match(start?.msg, /at the latest at \d{4}-\d\d-\d\dT/, '… and when it will detach at the latest');
  t.equal(start?.detachAt !== undefined, true, 'the time is a field too');
  for (let s = 0; s < 30 && calls.detached === 0; s++) await clock.advance(2000);
  t.equal(await d.done, 'empty');
  t.equal(calls.detached, 1, 'detached once');
  t.equal(clock.now(), 16_000, 'at the first count that found none (8 polls of 2 s)');
  t.ok(
    lines.some((l) => /3 open connection\(s\) through bpfproxy left; detaching when none is, or in \d+s/.test(l.msg)),
    'progress said at most every 10 s',
  );
});

t.test('time up: detaches and says how many connections are cut', async (t) => {
  const { d, clock, calls, lines } = setup([4], undefined, 10_000);
  await d.start();
  await clock.advance(9_999);
  t.equal(calls.detached, 0, 'not before the time is up');
  await clock.advance(1);
  t.equal(await d.done, 'timeout');
  t.equal(calls.detached, 1);
  const w = lines.find((l) => l.level === 'warn');
  t.match(w?.msg, /drain time is up \(10s\): detaching; the 4 connection\(s\) still open/, 'a warning naming the count');
});

t.test('bpfEnabled=true again: cancelled, drain mode off, nothing detached', async (t) => {
  const { d, clock, calls, lines } = setup([2]);
  await d.start();
  await clock.advance(4000);
  d.cancel();
  t.equal(await d.done, 'cancelled');
  t.same(calls.modes, [true, false], 'drain mode off again');
  await clock.advance(120_000);
  t.equal(calls.detached, 0, 'never detached');
  t.ok(lines.some((l) => /drain cancelled/.test(l.msg)));
});

t.test('agent stopping during the drain: detaches now', async (t) => {
  const { d, calls } = setup([2]);
  await d.start();
  d.stop();
  t.equal(await d.done, 'stopped');
  t.equal(calls.detached, 1);
});

t.test("kube-proxy's rules missing: said loudly, and again when they appear", async (t) => {
  const none = { iptables: false, nftables: false };
  const { d, clock, lines } = setup([3], [none, none, { iptables: false, nftables: true }]);
  await d.start();
  const e = lines.find((l) => l.level === 'error');
  t.match(e?.msg, /kube-proxy's rules are not on this node .* new connections to Services get no answer until kube-proxy is back/);
  await clock.advance(2000);
  t.notOk(
    lines.some((l) => /rules are on this node now/.test(l.msg)),
    'not yet',
  );
  await clock.advance(2000);
  t.ok(
    lines.some((l) => /kube-proxy's rules are on this node now; new connections to Services are answered again/.test(l.msg)),
    'said when they appear',
  );
  d.cancel();
});

t.test('a count that fails is retried; the drain still ends', async (t) => {
  const { d, clock, calls } = setup([new Error('map gone'), new Error('map gone'), 0], undefined, 30_000);
  await d.start();
  await clock.advance(2000);
  t.equal(calls.detached, 0, 'a failed count is not "none left"');
  await clock.advance(2000);
  t.equal(await d.done, 'empty');
  t.equal(calls.counts, 3);
});
