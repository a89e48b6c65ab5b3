/**
 * How the policy map writer talks to the kernel (src/dataplane/bpf/policy-maps.ts),
 * counted through a wrapper around bpfproxy_policy (the outer hash of maps,
 * where every call waits for running programs):
 *  - N endpoint tables are swapped in by one batch update, removed by one
 *    batch delete; endpoints with the same rules share one inner map;
 *  - make-before-break holds with the batch: when the outer map is written,
 *    the endpoints are not isolated yet and the generation has not moved;
 *  - a kernel refusing batch calls on the outer map (EINVAL) gets one call
 *    per table, the same maps, and no further batch attempt;
 *  - a batch that stops part-way (the outer map full) leaves the rest to
 *    calls of their own; the endpoint that cannot be written has no table,
 *    so it denies (never allows).
 */
import t from 'tap';
import type { CompiledPolicy, EndpointPolicy, PolicyRuleEntry } from '../src/model/policy/compiled.js';
import { PolicyMapWriter, readPinned, type PolicyMapSet } from '../src/dataplane/bpf/policy-maps.js';
import { BpfError } from '../src/native/index.js';
import { tmpDatapath } from './helpers/env.js';

const N = 40;
const addr = (i: number) => `10.244.1.${10 + i}`;
const allow = (peer: number, port: number): PolicyRuleEntry => ({
  peer,
  direction: 'ingress',
  proto: 6,
  port,
  portPrefixLen: 16,
  verdict: 'allow',
  ruleId: 1,
});

/** N isolated endpoints; `distinct` tables among them (endpoint i has table i % distinct); port moves every table. */
function policy(n: number, distinct: number, port = 8080, isolated = true): CompiledPolicy {
  const lists = Array.from({ length: distinct }, (_, k) => [allow(100 + k, port)]);
  const endpoints: EndpointPolicy[] = [];
  for (let i = 0; i < n; i++) {
    endpoints.push({
      id: i + 1,
      pod: `x/p${i}`,
      addresses: [addr(i)],
      ingressIsolated: isolated,
      egressIsolated: false,
      entries: lists[i % distinct]!,
    });
  }
  return {
    generation: 1,
    identities: [
      { prefix: '0.0.0.0/0', identity: 1 },
      ...endpoints.map((e, i) => ({ prefix: `${e.addresses[0]}/32`, identity: 100 + (i % distinct), endpoint: e.id })),
    ],
    endpoints,
    rules: [
      { id: 0, policy: '(node)', direction: 'ingress', index: 0 },
      { id: 1, policy: 'x/np', direction: 'ingress', index: 0 },
    ],
  };
}

interface Calls {
  set: number;
  setMany: number;
  delete: number;
  deleteMany: number;
}

/** The maps with bpfproxy_policy counted (and, through `hooks`, made to fail or checked). */
function counted(
  maps: PolicyMapSet,
  hooks: { setMany?: (kv: ReadonlyArray<readonly [{ v: number }, { v: number }]>) => void } = {},
): { maps: PolicyMapSet; calls: Calls } {
  const calls: Calls = { set: 0, setMany: 0, delete: 0, deleteMany: 0 };
  const outer = maps.policy;
  const w = Object.create(outer) as typeof outer;
  w.set = (k, v, f) => (calls.set++, outer.set(k, v, f));
  w.setMany = (kv) => {
    calls.setMany++;
    hooks.setMany?.(kv);
    outer.setMany(kv);
  };
  w.delete = (k) => (calls.delete++, outer.delete(k));
  w.deleteMany = (k) => (calls.deleteMany++, outer.deleteMany(k));
  return { maps: { ...maps, policy: w }, calls };
}

const outerIds = (maps: PolicyMapSet) => maps.policy.entries().map(([k, v]) => [k.v, v.v] as const);

t.test(`${N} endpoint tables: one batch update of the outer map, one inner map per distinct table, one batch delete`, async (t) => {
  const dp = await tmpDatapath(t);
  let checked = 0;
  const { maps, calls } = counted(dp.maps, {
    setMany: (kv) => {
      if (checked) return; // later batches replace tables of endpoints isolated already
      // make-before-break: the tables go in before the endpoints are isolated and before the generation moves
      for (const [k] of kv) t.notOk(dp.maps.ipcache.get({ prefixlen: 32, addr: addr(k.v - 1) })?.flags, `endpoint ${k.v} not isolated yet`);
      t.notOk(dp.maps.polState.get({ v: 0 })?.generation, 'generation not moved yet');
      checked++;
    },
  });
  const w = new PolicyMapWriter(maps);
  const r = w.apply(policy(N, 4));
  t.same([r.tablesWritten, r.problems], [N, []], `${N} tables written, no problem`);
  t.same(calls, { set: 0, setMany: 1, delete: 0, deleteMany: 0 }, 'one batch call on the outer map, no single ones');
  t.equal(checked, 1, 'the order was checked at the batch call');
  t.equal(w.counters.tablesCreated, 4, 'one inner map per distinct table');
  const ids = outerIds(dp.maps);
  t.equal(ids.length, N, 'every endpoint has its table');
  t.equal(new Set(ids.map(([, id]) => id)).size, 4, 'endpoints with the same rules share one inner map');
  t.equal(dp.maps.polState.get({ v: 0 })?.generation, 1, 'the generation moved after');

  // read back as written: each endpoint its own rules
  const back = readPinned(dp.maps);
  for (const e of back.endpoints) t.equal(e.entries[0]?.peer, 100 + ((e.id - 1) % 4), `endpoint ${e.id} reads back its own table`);

  // same inputs again: nothing
  const again = w.apply(policy(N, 4));
  t.same([again.tablesWritten, again.changed, calls.setMany], [0, false, 1], 'the same policy again writes nothing');

  // every table changes: one more batch, new inner maps for the 4 contents, none reused by mistake
  const moved = w.apply(policy(N, 4, 9090));
  t.same(
    [moved.tablesWritten, calls.setMany, calls.set, w.counters.tablesCreated],
    [N, 2, 0, 8],
    'a change of every table: one batch, 4 new inner maps',
  );
  t.ok(
    readPinned(dp.maps).endpoints.every((e) => e.entries[0]?.port === 9090),
    'every endpoint reads the new port',
  );

  // one endpoint moves to a table another endpoint has: no new inner map
  const one = policy(N, 4, 9090);
  one.endpoints[0] = { ...one.endpoints[0]!, entries: one.endpoints[1]!.entries };
  const relabel = w.apply(one);
  t.same([relabel.tablesWritten, w.counters.tablesCreated, calls.set], [1, 8, 1], 'one table swapped (one call), the inner map reused');
  const byEp = new Map(outerIds(dp.maps));
  t.equal(byEp.get(1), byEp.get(2), 'endpoint 1 now points to the inner map endpoint 2 uses');

  // nobody isolated: the tables go in one batch delete
  const off = w.apply(policy(N, 4, 9090, false));
  t.same([off.tablesDeleted, calls.deleteMany, calls.delete], [N, 1, 0], 'every table removed by one batch delete');
  t.equal(outerIds(dp.maps).length, 0, 'the outer map is empty');
});

t.test('a kernel without batch calls on hash-of-maps: one call per table, same maps, no further batch', async (t) => {
  const dp = await tmpDatapath(t);
  const { maps, calls } = counted(dp.maps, {
    setMany: () => {
      throw new BpfError('map update batch bpfproxy_policy', 22);
    },
  });
  const w = new PolicyMapWriter(maps);
  const r = w.apply(policy(N, 4));
  t.same([r.tablesWritten, r.problems], [N, []], 'written, no problem');
  t.same([calls.setMany, calls.set], [1, N], 'the batch refused once, then one call per table');
  t.equal(outerIds(dp.maps).length, N, 'every endpoint has its table');
  w.apply(policy(N, 4, 9090));
  t.same([calls.setMany, calls.set], [1, 2 * N], 'no batch tried again');
  w.apply(policy(N, 4, 9090, false));
  t.same([calls.deleteMany, calls.delete], [0, N], 'deletes one by one too');
});

t.test('a batch that stops part-way: the rest one by one; the one that does not fit has no table (denies)', async (t) => {
  const dp = await tmpDatapath(t);
  const FULL = 7; // endpoint 7's entry cannot be written (as a full outer map)
  const outer = dp.maps.policy;
  let stopped = -1;
  const { maps, calls } = counted(dp.maps, {
    setMany: (kv) => {
      const at = kv.findIndex(([k]) => k.v === FULL);
      if (at < 0) return;
      stopped = at;
      outer.setMany(kv.slice(0, at));
      throw new BpfError('map update batch bpfproxy_policy', 7, '', at);
    },
  });
  const single = maps.policy.set.bind(maps.policy);
  maps.policy.set = (k, v, f) => {
    if (k.v === FULL) {
      calls.set++;
      throw new BpfError('map update bpfproxy_policy', 7);
    }
    single(k, v, f);
  };
  const w = new PolicyMapWriter(maps);
  const r = w.apply(policy(N, 4));
  const ids = new Map(outerIds(dp.maps));
  t.equal(ids.size, N - 1, 'every other endpoint has its table');
  t.notOk(ids.has(FULL), `endpoint ${FULL} has no table: the datapath denies it (policy-no-table)`);
  t.equal(calls.setMany, 1, 'one batch');
  t.ok(stopped >= 0, 'the batch stopped');
  t.equal(calls.set, N - stopped, 'the entries from where the batch stopped, one by one');
  t.ok(
    r.problems.some((p) => p.endpoint === FULL && p.denyAll),
    'reported as denied',
  );
  t.equal(dp.maps.ipcache.get({ prefixlen: 32, addr: addr(FULL - 1) })?.flags, 1, `endpoint ${FULL} is isolated (ingress)`);
});
