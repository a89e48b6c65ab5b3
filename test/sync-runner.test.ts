import t from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { SyncRunner } from '../src/proxy/sync-runner.js';

t.test('bounded frequency: a burst, then one sync per minInterval, full sync every maxInterval', async (t) => {
  const clock = new FakeClock();
  const runs: Array<{ at: number; full: boolean }> = [];
  const r = new SyncRunner(
    async (full) => void runs.push({ at: clock.now(), full }),
    { minInterval: 1000, maxInterval: 30_000, burst: 2 },
    clock,
  );
  r.start();
  r.run();
  await clock.advance(0);
  r.run();
  await clock.advance(0);
  t.same(
    runs.map((x) => x.at),
    [0, 0],
    'the burst runs at once',
  );
  r.run();
  r.run();
  r.run();
  await clock.advance(999);
  t.equal(runs.length, 2, 'rate-limited');
  await clock.advance(1);
  t.equal(runs.length, 3, 'requests coalesce into one sync after minInterval');
  await clock.advance(30_000);
  t.ok(
    runs.some((x) => x.full),
    'periodic full sync',
  );
  r.stop();
});

t.test('a request during a sync is served after it', async (t) => {
  const clock = new FakeClock();
  let release!: () => void;
  let calls = 0;
  const r = new SyncRunner(
    async () => {
      calls++;
      if (calls === 1) await new Promise<void>((res) => (release = res));
    },
    { minInterval: 10, maxInterval: 1e9 },
    clock,
  );
  r.run();
  await clock.advance(0);
  r.run();
  await clock.advance(100);
  t.equal(calls, 1, 'still in the first sync');
  release();
  await new Promise((res) => setImmediate(res));
  await clock.advance(100);
  t.equal(calls, 2);
  await r.idle();
  r.stop();
});
