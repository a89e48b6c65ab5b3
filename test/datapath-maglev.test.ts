/**
 * Maglev backend choice through BPF_PROG_RUN: the datapath picks exactly
 * the backend src/model/maglev.ts predicts for a flow (so every node, whose
 * tables are the same, picks the same), spreads flows, moves only the
 * expected ones when the backend set changes, lets ClientIP affinity win,
 * uses the node-local table for Local traffic policies, and leaves random
 * frontends random. Also: what a new flow costs with each.
 */
import t from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler, DEFAULT_LOAD_BALANCING } from '../src/dataplane/bpf/reconciler.js';
import { FeFlags, IPPROTO_TCP, MaglevTable, maglevSizeOf } from '../src/dataplane/bpf/codecs.js';
import { maglevFlowHash, maglevTable, maglevTableSize } from '../src/model/maglev.js';
import type { Backend, Frontend } from '../src/model/types.js';
import { frame, PROTO } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns } from './helpers/env.js';
import { CLIENT, NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { reasonCount, skbCtx } from './helpers/progrun.js';

const LB_IP = '198.51.100.10';
const RANDOM_IP = '198.51.100.20';
const name = (b: Backend) => `${b.ip}:${b.port}`;

t.test('Maglev through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { dp } = node;
  const rec = new BpfReconciler(dp.maps, undefined, { ...DEFAULT_LOAD_BALANCING, algorithm: 'maglev' });
  rec.setNodeAddresses([NODE_IP]);
  const clearCt = () => dp.maps.ct.deleteMany(dp.maps.ct.entries().map(([k]) => k));
  const sync = (svc: string, fes: Frontend[]) => {
    const r = rec.syncService(svc, fes);
    t.same(r.problems, [], `${svc} programmed without problems`);
  };
  /** The backend a new TCP flow from the outside gets. */
  const pick = (dst: string, sport: number, src = CLIENT, dport = 80): string => {
    const r = node.run('fromData', { src, dst }, { proto: 'tcp', sport, dport });
    return r.verdict === 'drop' ? 'drop' : `${r.out.dst}:${r.out.dport}`;
  };
  const predict = (backends: Backend[], dst: string, sport: number, src = CLIENT, dport = 80): string => {
    const m = maglevTableSize(backends.length)!;
    const tab = maglevTable(backends.map(name), m);
    return name(backends[tab[maglevFlowHash({ saddr: src, daddr: dst, sport, dport, proto: IPPROTO_TCP }) % m]!]!);
  };

  const web = [be('10.244.1.11', 8080), be('10.244.1.12', 8080), be('10.244.1.13', 8080), be('10.244.1.14', 8080)];
  // --lb-algorithm maglev: the LoadBalancer IP uses Maglev, the cluster IP stays random
  sync('test/web', [
    fe('LoadBalancer', LB_IP, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('ClusterIP', '10.96.0.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
  ]);
  sync('test/rnd', [{ ...fe('LoadBalancer', RANDOM_IP, 80, 'TCP', web), lbAlgorithm: 'random' }]);

  t.test('frontend values', async (t) => {
    const lb = dp.maps.fe.get({ addr: LB_IP, port: 80, proto: PROTO.TCP })!;
    t.ok(lb.flags & FeFlags.MAGLEV, 'LoadBalancer IP: Maglev');
    t.equal(maglevSizeOf(lb.maglevSize), maglevTableSize(4), 'table size for 4 backends');
    t.equal(lb.maglevSizeLocal, 0, 'no Local policy: no node-local table');
    const cip = dp.maps.fe.get({ addr: '10.96.0.10', port: 80, proto: PROTO.TCP })!;
    t.equal(cip.flags & FeFlags.MAGLEV, 0, 'cluster IP: random unless the Service asks');
    t.equal(cip.setId, lb.setId, 'both frontends share the set (and its table)');
    const rnd = dp.maps.fe.get({ addr: RANDOM_IP, port: 80, proto: PROTO.TCP })!;
    t.equal(rnd.flags & FeFlags.MAGLEV, 0, 'annotation random wins over --lb-algorithm maglev');
    t.equal(dp.maps.maglev.keys().filter((k) => k.setId === rnd.setId).length, 0, 'a random-only service port has no table');
  });

  t.test('the same flow gets the same backend every time, the one the agent predicts', async (t) => {
    for (const sport of [40000, 40001, 51234]) {
      const want = predict(web, LB_IP, sport);
      const got = new Set<string>();
      for (let i = 0; i < 5; i++) {
        clearCt();
        got.add(pick(LB_IP, sport));
      }
      t.same([...got], [want], `sport ${sport}: always ${want}`);
    }
  });

  const flows = Array.from({ length: 1200 }, (_, i) => ({ sport: 20000 + i * 7, src: `192.0.2.${100 + (i % 50)}` }));

  t.test('different flows spread over every backend, each as predicted', async (t) => {
    clearCt();
    const count = new Map<string, number>();
    let mismatch = 0;
    for (const f of flows) {
      const b = pick(LB_IP, f.sport, f.src);
      if (b !== predict(web, LB_IP, f.sport, f.src)) mismatch++;
      count.set(b, (count.get(b) ?? 0) + 1);
    }
    t.equal(mismatch, 0, `all ${flows.length} flows on the predicted backend`);
    t.equal(count.size, web.length, 'every backend chosen');
    for (const [b, n] of count) t.ok(n > flows.length / web.length / 2, `${b}: ${n} of ${flows.length}`);
  });

  t.test('a table swap moves only the flows of the removed backend (and few more)', async (t) => {
    const before = new Map<number, string>();
    clearCt();
    for (const f of flows) before.set(f.sport, pick(LB_IP, f.sport, f.src));
    const fewer = web.filter((b) => b.ip !== '10.244.1.13');
    const setBefore = dp.maps.fe.get({ addr: LB_IP, port: 80, proto: PROTO.TCP })!.setId;
    sync('test/web', [
      fe('LoadBalancer', LB_IP, 80, 'TCP', fewer, { servicePort: 'test/web:http/TCP' }),
      fe('ClusterIP', '10.96.0.10', 80, 'TCP', fewer, { servicePort: 'test/web:http/TCP' }),
    ]);
    const setAfter = dp.maps.fe.get({ addr: LB_IP, port: 80, proto: PROTO.TCP })!.setId;
    t.not(setAfter, setBefore, 'a new set with its table');
    t.equal(dp.maps.maglev.keys().filter((k) => k.setId === setBefore).length, 0, 'the old table is gone');
    clearCt();
    let moved = 0;
    let movedFromKept = 0;
    let mismatch = 0;
    for (const f of flows) {
      const b = pick(LB_IP, f.sport, f.src);
      if (b !== predict(fewer, LB_IP, f.sport, f.src)) mismatch++;
      if (b !== before.get(f.sport)) {
        moved++;
        if (before.get(f.sport) !== '10.244.1.13:8080') movedFromKept++;
      }
    }
    t.equal(mismatch, 0, 'every flow on the backend the new table predicts');
    const share = moved / flows.length;
    t.comment(
      `removing 1 of 4 backends moved ${(share * 100).toFixed(1)}% of ${flows.length} flows (${movedFromKept} of them from kept backends)`,
    );
    t.ok(share <= 1 / web.length + 0.01 + 0.04, `moved share ${(share * 100).toFixed(1)}% ≈ 1/4 (sampling error of 1200 flows allowed)`);
    t.ok(movedFromKept / flows.length <= 0.02, `flows of kept backends moved: ${movedFromKept}`);
    // back to four, for the cases below
    sync('test/web', [
      fe('LoadBalancer', LB_IP, 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
      fe('ClusterIP', '10.96.0.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    ]);
  });

  t.test('ClientIP affinity still wins over the table', async (t) => {
    const sticky = '198.51.100.30';
    sync('test/sticky', [fe('LoadBalancer', sticky, 80, 'TCP', web, { affinityTimeout: 600 })]);
    clearCt();
    // two flows of one client that the table sends to different backends
    const a = 30000;
    let b = a + 1;
    while (predict(web, sticky, b) === predict(web, sticky, a)) b++;
    const first = pick(sticky, a);
    t.equal(first, predict(web, sticky, a), 'the first flow by the table');
    t.equal(pick(sticky, b), first, `the second flow (table: ${predict(web, sticky, b)}) follows the client's affinity`);
  });

  t.test('Local traffic policy: the node-local set has its own table', async (t) => {
    const mixed = [be('10.244.1.21', 80), be('10.244.1.22', 80), be('10.244.2.23', 80, false), be('10.244.2.24', 80, false)];
    const local = mixed.filter((b) => b.local);
    sync('test/etp', [fe('LoadBalancer', '198.51.100.40', 80, 'TCP', mixed, { externalLocal: true })]);
    const v = dp.maps.fe.get({ addr: '198.51.100.40', port: 80, proto: PROTO.TCP })!;
    t.equal(maglevSizeOf(v.maglevSizeLocal), maglevTableSize(2), 'node-local table sized for the 2 local endpoints');
    t.ok(
      dp.maps.maglev.keys().some((k) => k.setId === v.setId && k.table === MaglevTable.LOCAL),
      'its chunks are in the map',
    );
    clearCt();
    let mismatch = 0;
    for (let i = 0; i < 200; i++) {
      const b = pick('198.51.100.40', 33000 + i);
      if (b !== predict(local, '198.51.100.40', 33000 + i)) mismatch++;
    }
    t.equal(mismatch, 0, 'external flows: the local table, as predicted');
  });

  t.test('sets of more than 256 endpoints: two-byte entries', async (t) => {
    const many = Array.from({ length: 300 }, (_, i) => be(`10.244.1.${1 + (i % 150)}`, 9000 + Math.floor(i / 150)));
    sync('test/many', [fe('LoadBalancer', '198.51.100.50', 80, 'TCP', many)]);
    clearCt();
    let mismatch = 0;
    for (let i = 0; i < 300; i++) if (pick('198.51.100.50', 34000 + i) !== predict(many, '198.51.100.50', 34000 + i)) mismatch++;
    t.equal(mismatch, 0, '300 flows on the predicted backends');
  });

  t.test('random frontends stay random', async (t) => {
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      clearCt();
      seen.add(pick(RANDOM_IP, 40000));
    }
    t.ok(seen.size > 1, `one flow, taken afresh 40 times: ${seen.size} different backends`);
  });

  t.test('a missing table drops the new flow, counted (the agent never lets this happen)', async (t) => {
    const v = dp.maps.fe.get({ addr: LB_IP, port: 80, proto: PROTO.TCP })!;
    const keys = dp.maps.maglev.keys().filter((k) => k.setId === v.setId);
    const saved = keys.map((k) => [k, dp.maps.maglev.get(k)!] as const);
    dp.maps.maglev.deleteMany(keys);
    clearCt();
    const before = reasonCount(dp, 'backend-missing');
    t.equal(pick(LB_IP, 40000), 'drop');
    t.equal(reasonCount(dp, 'backend-missing'), before + 1, 'counted as backend-missing');
    dp.maps.maglev.setMany(saved);
    t.equal(pick(LB_IP, 40000), predict(web, LB_IP, 40000), 'table back: served');
  });

  t.test('cost of a new flow: random vs Maglev', async (t) => {
    const fd = dp.programs.fromData.fd;
    const ctx = skbCtx(node.ifindex);
    const frames = (dst: string, base: number) =>
      Array.from({ length: 4000 }, (_, i) =>
        frame({ src: `192.0.2.${100 + (i % 100)}`, dst }, { proto: 'tcp', sport: base + Math.floor(i / 100), dport: 80 }),
      );
    const once = (dst: string, base: number): number => {
      clearCt();
      const f = frames(dst, base);
      const res = inNetns(node.ns, () => native().progTestRunEach(fd, f, { ctx }));
      return res.totalNs / f.length;
    };
    // interleaved, best of 7 each: the machine may be shared
    let random = Infinity;
    let maglev = Infinity;
    for (let r = 0; r < 7; r++) {
      random = Math.min(random, once(RANDOM_IP, 10000 + r * 100));
      maglev = Math.min(maglev, once(LB_IP, 10000 + r * 100));
    }
    t.comment(
      `new flow through bpfproxy_data (conntrack created, FIB, rewrite): random ${random.toFixed(0)} ns, Maglev ${maglev.toFixed(0)} ns`,
    );
    t.ok(maglev < random * 2 + 200, 'Maglev adds a hash and one map lookup, not a multiple');
  });
});
