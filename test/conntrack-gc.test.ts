import t from 'tap';
import { ConntrackGc } from '../src/dataplane/bpf/conntrack-gc.js';
import { native } from '../src/native/index.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { CtDir } from '../src/dataplane/bpf/codecs.js';
import { captureLogger } from './helpers/log.js';
import { tmpDatapath } from './helpers/env.js';

t.test('GC removes expired entries and warns when the map is nearly full', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 20, natFrontend: 16, natBackend: 16, natAffinity: 16 } });
  const now = native().monotonicNs();
  const v = (expiresNs: bigint) => ({
    expiresNs,
    createdNs: 0n,
    natSaddr: '1.1.1.1',
    natSport: 1,
    natDaddr: '2.2.2.2',
    natDport: 2,
    dir: CtDir.FWD,
    state: 0,
    flags: 0,
    svcId: 1,
  });
  for (let i = 0; i < 19; i++) {
    dp.maps.ct.set(
      { saddr: '10.0.0.1', daddr: '10.96.0.1', sport: 1000 + i, dport: 80, proto: 6 },
      v(i < 1 ? now - 1n : now + 60_000_000_000n),
    );
  }
  const { log, lines } = captureLogger();
  const gc = new ConntrackGc(dp.maps, log, new FakeClock());
  const s = await gc.run();
  t.equal(s.lastExpired, 1, 'the expired entry went');
  t.equal(s.lastLive, 18);
  t.equal(dp.maps.ct.count(), 18);
  t.ok(
    lines.some((l) => l.level === 'warn' && /conntrack map is 90% full.*bpfMapSizeConntrack/.test(l.msg)),
    'operator told to raise the size',
  );
  await gc.run();
  t.equal(lines.filter((l) => l.level === 'warn').length, 1, 'said once, not every run');
});

t.test('GC removes a connection only when both halves expired, and removes both', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, natFrontend: 16, natBackend: 16, natAffinity: 16 } });
  const now = native().monotonicNs();
  const past = now - 1n;
  const future = now + 60_000_000_000n;
  // client 10.0.0.1:port -> 10.96.0.1:80, DNAT to backend 10.244.1.5:8080
  const pair = (port: number, fwdExp: bigint, repExp: bigint | undefined) => {
    dp.maps.ct.set(
      { saddr: '10.0.0.1', daddr: '10.96.0.1', sport: port, dport: 80, proto: 17 },
      {
        expiresNs: fwdExp,
        createdNs: 0n,
        natSaddr: '10.0.0.1',
        natSport: port,
        natDaddr: '10.244.1.5',
        natDport: 8080,
        dir: CtDir.FWD,
        state: 0,
        flags: 0,
        svcId: 1,
      },
    );
    if (repExp !== undefined) {
      dp.maps.ct.set(
        { saddr: '10.244.1.5', daddr: '10.0.0.1', sport: 8080, dport: port, proto: 17 },
        {
          expiresNs: repExp,
          createdNs: 0n,
          natSaddr: '10.96.0.1',
          natSport: 80,
          natDaddr: '10.0.0.1',
          natDport: port,
          dir: CtDir.REPLY,
          state: 0,
          flags: 0,
          svcId: 1,
        },
      );
    }
  };
  pair(1001, future, past); // one-way UDP: the reply half is quiet, not dead
  pair(1002, past, future); // the other way round
  pair(1003, past, past); // both expired: the connection goes, whole
  pair(1004, past, undefined); // an orphan half that expired
  const { log } = captureLogger();
  const s = await new ConntrackGc(dp.maps, log, new FakeClock()).run();
  t.equal(s.lastExpired, 3, 'two halves of 1003 and the orphan of 1004');
  const left = dp.maps.ct
    .entries()
    .map(([k, v]) => `${v.dir === CtDir.FWD ? k.sport : k.dport}/${v.dir}`)
    .sort();
  t.same(left, ['1001/1', '1001/2', '1002/1', '1002/2'], 'live connections keep both halves');
});
