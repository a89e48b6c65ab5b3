/**
 * The engine as a Dataplane, without I/O: Frontends in, tables out (and
 * what the engine does with them, through its test entry); the ownership
 * rule it shares with the BPF reconciler; one table per sync pass; a table
 * the engine refuses leaves the one in force; the tee with the BPF path;
 * which frontends are steered to the engine; the neighbour table from the
 * kernel's routes and neighbours.
 */
import t, { type Test } from 'tap';
import type { Frontend } from '../src/model/types.js';
import { EngineDataplane, TeeDataplane } from '../src/dataplane/afxdp/dataplane.js';
import type { Dataplane, SyncReport } from '../src/dataplane/dataplane.js';
import { emptyReport } from '../src/dataplane/dataplane.js';
import { steerable } from '../src/dataplane/afxdp/runtime.js';
import { Neighbours, type NeighbourSource } from '../src/dataplane/afxdp/neighbours.js';
import type { EngineNeighbour, EngineTable } from '../src/dataplane/afxdp/table.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { frame, parseFrame } from '../testkit/packet.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { BE_MAC, CLIENT, CLIENT_MAC, NODE, NODE_MAC, PORTS } from './helpers/engine.js';

const SETTINGS = { snatPorts: [15000, 19999] as const, hairpinIp: '169.254.42.1', ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack) };

function fe(over: Partial<Frontend> = {}): Frontend {
  return {
    kind: 'NodePort',
    ip: '0.0.0.0',
    port: 30080,
    protocol: 'UDP',
    servicePort: 'default/echo:dns/UDP',
    externalLocal: false,
    internalLocal: false,
    affinityTimeout: 0,
    clusterBackends: [{ ip: '10.0.2.2', port: 5353, local: false }],
    localBackends: [],
    ...over,
  };
}

/** A dataplane whose tables go into a real engine (and are kept for inspection). */
function engineDataplane(t: Test, svcIdOf?: (s: string) => number | undefined) {
  const e = createEngine({ vector: 64, sessions: 1024 });
  t.teardown(() => e.close());
  const tables: EngineTable[] = [];
  const dp = new EngineDataplane(
    (blob, table) => {
      e.setTable(blob);
      tables.push(table);
    },
    SETTINGS,
    svcIdOf ? { svcIdOf } : {},
  );
  dp.setPorts(PORTS);
  dp.setNodeAddresses([NODE]);
  dp.setNeighbours([{ ip: '10.0.2.2', port: 0, mac: BE_MAC, snat: NODE }]);
  return { e, dp, tables };
}

const req = (dport: number, sport = 40000) =>
  frame({ src: CLIENT, dst: NODE, srcMac: CLIENT_MAC, dstMac: NODE_MAC }, { proto: 'udp', sport, dport, payload: Buffer.from('x') });

t.test('Frontends become the engine table: the engine serves them as the sync said', async (t) => {
  const { e, dp, tables } = engineDataplane(t, (spk) => (spk === 'default/echo:dns/UDP' ? 42 : undefined));
  const r = dp.syncAll(new Map([['default/echo', [fe()]]]));
  t.same([r.frontendsChanged, r.problems], [1, []], 'one frontend written, no problem');
  t.equal(tables.at(-1)!.frontends[0]!.svcId, 42, "the BPF path's service id");
  const [out] = e.runVector([req(30080)]);
  const o = parseFrame(out!.frame);
  t.same([out!.next, o.dst, o.dport, o.src], ['output', '10.0.2.2', 5353, NODE], 'served: DNAT to the endpoint, SNAT to the node');
  t.ok(o.sport! >= 15000 && o.sport! <= 19999, "the engine's SNAT range");

  dp.syncService('default/echo', []);
  t.equal(dp.flush(), undefined, 'the removal is built at once on flush');
  t.same(
    e.runVector([req(30080, 40001), req(30080)]).map((x) => x.reason),
    ['no-frontend', 'none'],
    'removed: a new flow is not served; the flow opened before goes on (as conntrack does on the BPF path)',
  );
});

t.test('one table per sync pass; none when nothing changed', async (t) => {
  const { dp, tables } = engineDataplane(t);
  dp.flush();
  const before = tables.length;
  dp.syncService('a/one', [fe({ port: 30001, servicePort: 'a/one:p/UDP' })]);
  dp.syncService('a/two', [fe({ port: 30002, servicePort: 'a/two:p/UDP' })]);
  t.equal(tables.length, before, 'nothing built inside the pass');
  await Promise.resolve();
  t.equal(tables.length, before + 1, 'one table when the pass is done');
  t.equal(tables.at(-1)!.frontends.length, 2, 'with both frontends');
  dp.syncService('a/one', [fe({ port: 30001, servicePort: 'a/one:p/UDP' })]);
  await Promise.resolve();
  t.equal(tables.length, before + 1, 'the same desired state again: no new table');
  const ids = tables.at(-1)!.frontends.map((f) => f.svcId);
  t.ok(
    ids.every((id) => id >= 0x40000000),
    'without BPF ids, ids of its own from 2^30',
  );
});

t.test('two services claiming one address: the same rule as the BPF reconciler', async (t) => {
  const { dp } = engineDataplane(t);
  const a = fe({ servicePort: 'ns/a:dns/UDP' });
  const b = fe({ servicePort: 'ns/b:dns/UDP', clusterBackends: [{ ip: '10.0.2.2', port: 9999, local: false }] });
  dp.syncService('ns/a', [a]);
  const r = dp.syncService('ns/b', [b]);
  t.equal(r.problems.length, 1, 'the second claimant is refused between full syncs');
  t.match(r.problems[0]!.message, /already served by ns\/a/);
  const freed = dp.syncService('ns/a', []);
  t.same(freed.retry, ['ns/b'], 'it is retried when the address is freed');
  const full = dp.syncAll(
    new Map([
      ['ns/b', [b]],
      ['ns/a', [a]],
    ]),
  );
  t.equal(full.problems.length, 1, 'in a full sync the first in the order given gets it');
  t.equal(dp.frontends()[0]!.owner, 'ns/b', 'ns/b (given first) owns it');
});

t.test('a table the engine refuses: reported, and the one in force keeps serving', async (t) => {
  const { e, dp } = engineDataplane(t);
  dp.syncAll(new Map([['default/echo', [fe()]]]));
  // a neighbour on a port the table does not have: the engine refuses the table
  dp.setNeighbours([{ ip: '10.0.2.2', port: 7, mac: BE_MAC, snat: NODE }]);
  const err = dp.flush();
  t.match(
    err,
    /refused: .*neighbour 0 \(10\.0\.2\.2, port 7 of 2\) is inconsistent; the engine keeps serving its previous table/,
    'the refusal says what and what happens next',
  );
  t.equal(e.runVector([req(30080)])[0]!.next, 'output', 'the previous table still serves');
});

t.test('a swap the engine refuses as busy (a worker holds older tables) is tried again at the next flush', async (t) => {
  const e = createEngine({ vector: 64, sessions: 1024 });
  t.teardown(() => e.close());
  let busy = 1;
  const dp = new EngineDataplane((blob) => {
    if (busy-- > 0)
      throw Object.assign(new Error('engine table swap: EBUSY (Device or resource busy): older tables are still held'), { code: 'EBUSY' });
    e.setTable(blob);
  }, SETTINGS);
  dp.setPorts(PORTS);
  dp.setNodeAddresses([NODE]);
  dp.setNeighbours([{ ip: '10.0.2.2', port: 0, mac: BE_MAC, snat: NODE }]);
  dp.syncAll(new Map([['default/echo', [fe()]]]));
  t.match(dp.lastError, /EBUSY.*keeps serving its previous table until the retry at the next refresh/, 'the refusal says it is retried');
  t.equal(dp.flush(), undefined, 'the next flush (nothing changed meanwhile) swaps the table in');
  t.equal(dp.lastError, undefined, 'no error left');
  t.equal(e.runVector([req(30080)])[0]!.next, 'output', 'the table is in force');
});

t.test('the tee: the BPF path in charge, the engine beside it', async (t) => {
  const calls: string[] = [];
  const fake = (name: string, problems: SyncReport['problems'] = []): Dataplane => ({
    syncService: (s) => {
      calls.push(`${name}:${s}`);
      return { ...emptyReport(), frontendsChanged: 1, problems };
    },
    syncAll: () => {
      calls.push(`${name}:all`);
      return { ...emptyReport(), problems };
    },
    setNodeAddresses: () => calls.push(`${name}:addresses`),
  });
  const tee = new TeeDataplane(
    fake('bpf', [{ service: 's', frontend: 'f1', message: 'bpf says' }]),
    fake('engine', [
      { service: 's', frontend: 'f1', message: 'engine says the same' },
      { service: 's', frontend: 'f2', message: 'engine only' },
    ]),
  );
  const r = tee.syncService('s', []);
  t.same(calls, ['bpf:s', 'engine:s'], 'the BPF path first (the fallback is always whole)');
  t.same(
    r.problems.map((p) => p.message),
    ['bpf says', 'engine only'],
    "the engine's problems where the BPF path reported none for that frontend",
  );
  t.equal(r.frontendsChanged, 1, "the BPF path's count");
});

t.test('steering: only frontends the engine can carry to the end', async (t) => {
  const reach = new Map<string, EngineNeighbour>([
    ['10.0.2.2', { ip: '10.0.2.2', port: 0, mac: BE_MAC, snat: NODE }],
    ['10.244.1.5', { ip: '10.244.1.5', port: 1, mac: BE_MAC, snat: NODE }],
  ]);
  const local = { ip: '10.244.1.5', port: 8080, local: true };
  const data = { podPorts: false };
  t.ok(steerable(fe(), reach, data), 'NodePort to a reachable remote endpoint');
  t.notOk(
    steerable(fe({ clusterBackends: [{ ip: '10.0.9.9', port: 1, local: false }] }), reach, data),
    'an endpoint with no next hop on an engine interface: BPF path',
  );
  t.ok(steerable(fe({ clusterBackends: [] }), reach, data), 'no endpoints: the engine answers the rejects');
  t.ok(
    steerable(fe({ clusterBackends: [local], localBackends: [local], externalLocal: true }), reach, data),
    'eTP=Local to a local endpoint: replies the engine does not see are translated by the BPF path (mirrored conntrack)',
  );
  t.notOk(steerable(fe({ kind: 'ClusterIP', ip: '10.96.0.1', port: 53 }), reach, data), 'ClusterIP when no pod interface is the engine’s');
  t.ok(steerable(fe({ kind: 'ClusterIP', ip: '10.96.0.1', port: 53 }), reach, { podPorts: true }), 'ClusterIP with pod interfaces');
  t.notOk(
    steerable(fe({ kind: 'LoadBalancer', ip: '198.51.100.9', port: 80, sourceRanges: ['203.0.113.0/24'] }), reach, data),
    'loadBalancerSourceRanges: left to the BPF path, which enforces them',
  );
  t.ok(steerable(fe({ kind: 'LoadBalancer', ip: '198.51.100.9', port: 80 }), reach, data), 'a LoadBalancer IP without ranges');
});

t.test('neighbours: from the kernel routes and neighbours, resolution asked for, stale ones refreshed', async (t) => {
  const clock = new FakeClock();
  const asked: string[] = [];
  const neigh = new Map<string, { mac: string | null; state: number }>([
    ['10.0.2.1@2', { mac: '02:00:00:00:00:99', state: 0x04 /* STALE */ }],
  ]);
  const src: NeighbourSource = {
    routeGet: (ip) => {
      if (ip.startsWith('10.0.2.')) return { oif: 2, gateway: null, prefsrc: NODE };
      if (ip.startsWith('10.9.')) return { oif: 2, gateway: '10.0.2.1', prefsrc: NODE };
      if (ip.startsWith('172.')) return { oif: 9, gateway: null, prefsrc: '172.16.0.1' };
      throw new Error('ENETUNREACH');
    },
    neighbours: () => [...neigh].map(([k, v]) => ({ ip: k.split('@')[0]!, ifindex: Number(k.split('@')[1]), ...v })),
    resolve: (ip, ifindex) => asked.push(`${ip}@${ifindex}`),
  };
  const n = new Neighbours(src, clock);
  const v = n.compute(['10.0.2.7', '10.9.9.9', '172.16.5.5', '192.0.2.1'], PORTS);
  t.same(
    v.entries,
    [{ ip: '10.9.9.9', port: 0, mac: '02:00:00:00:00:99', snat: NODE }],
    'a backend behind a gateway takes the gateway’s MAC',
  );
  t.same(v.unresolved, ['10.0.2.7'], 'an on-link backend with no MAC yet is being resolved');
  t.same(v.elsewhere.sort(), ['172.16.5.5', '192.0.2.1'], 'routed out of a non-engine interface, or not routed');
  t.same(asked.sort(), ['10.0.2.1@2', '10.0.2.7@2'], 'the kernel is asked to resolve the missing one and refresh the stale one');
  n.compute(['10.0.2.7', '10.9.9.9'], PORTS);
  t.equal(asked.length, 2, 'not asked again within a second');
  await clock.advance(1500);
  n.compute(['10.0.2.7', '10.9.9.9'], PORTS);
  t.same(asked.slice(2), ['10.0.2.7@2'], 'the missing one again after a second; the stale one only every 30 s');
});
