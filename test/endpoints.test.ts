/** Packed endpoints: what goes in comes out, equal content compares equal, and they stay small. */
import t from 'tap';
import { Endpoints } from '../src/model/endpoints.js';
import { sameData } from '../src/model/equal.js';
import type { SliceEndpoint } from '../src/model/types.js';

const ep = (addresses: string[], c: Partial<SliceEndpoint> = {}): SliceEndpoint => ({
  addresses,
  ready: true,
  serving: true,
  terminating: false,
  ...c,
});

t.test('round trip: addresses, conditions, node names', async (t) => {
  const list = [
    ep(['10.0.0.1'], { nodeName: 'n1' }),
    ep(['255.255.255.254', '0.0.0.1'], { ready: false, serving: true, terminating: true, nodeName: 'n2' }),
    ep(['192.168.7.9'], { ready: false, serving: false }),
    ep(['10.0.0.2'], { nodeName: 'n1' }),
    ep(
      Array.from({ length: 100 }, (_, i) => `10.1.0.${i}`),
      { nodeName: 'a-rather-long-node-name.example.internal' },
    ),
  ];
  const e = Endpoints.of(list);
  t.equal(e.length, 5);
  t.same(e.toArray(), list);
  t.same(JSON.parse(JSON.stringify(e)), list, 'as JSON: the list');
  t.same(Endpoints.of([]).toArray(), []);
  t.equal(Endpoints.of([]), Endpoints.none);
});

t.test('equal content compares equal (store change detection), different does not', async (t) => {
  const a = Endpoints.of([ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.2'], { nodeName: 'n2' })]);
  const b = Endpoints.of([ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.2'], { nodeName: 'n2' })]);
  t.ok(a.equals(b));
  t.ok(sameData({ endpoints: a }, { endpoints: b }));
  for (const [what, other] of [
    ['an address', [ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.3'], { nodeName: 'n2' })]],
    ['a condition', [ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.2'], { nodeName: 'n2', ready: false })]],
    ['a node', [ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.2'], { nodeName: 'n3' })]],
    ['no node', [ep(['10.0.0.1'], { nodeName: 'n1' }), ep(['10.0.0.2'])]],
    ['one fewer', [ep(['10.0.0.1'], { nodeName: 'n1' })]],
  ] as const) {
    const o = Endpoints.of(other);
    t.notOk(a.equals(o), what);
    t.notOk(sameData({ endpoints: a }, { endpoints: o }), `${what} (sameData)`);
  }
});

t.test('what the converter never passes is refused, not packed wrong', async (t) => {
  t.throws(() => Endpoints.of([ep(['10.0.0.1', '2001:db8::1'])]), /not of the family/);
  t.throws(() => Endpoints.of([ep(['10.0.0.256'])]), /is not an IPv4 address/);
  t.throws(() => Endpoints.of([ep([])]), /0 addresses/);
  t.throws(() => Endpoints.of([ep(Array.from({ length: 101 }, () => '10.0.0.1'))]), /101 addresses/);
});

t.test('small: 8 bytes an endpoint with one address, node names once a slice', async (t) => {
  const e = Endpoints.of(Array.from({ length: 1000 }, (_, i) => ep([`10.2.${i >> 8}.${i & 255}`], { nodeName: `node-${i % 7}` })));
  const packed = (e as unknown as { packed: string }).packed;
  t.equal(packed.length, 8000);
  t.equal((e as unknown as { nodes: string[] }).nodes.length, 7);
});

t.test('topology hints: packed once a slice per distinct set, round trip, compared', async (t) => {
  const list = [
    ep(['10.0.0.1'], { nodeName: 'n1', zoneHints: ['zone-a'], nodeHints: ['n1'] }),
    ep(['10.0.0.2'], { nodeName: 'n2', zoneHints: ['zone-a'] }),
    ep(['10.0.0.3'], { nodeName: 'n3', zoneHints: ['zone-a'] }),
    ep(['10.0.0.4'], { nodeName: 'n4' }),
    ep(['10.0.0.5'], { nodeHints: ['n5'] }),
  ];
  const e = Endpoints.of(list);
  t.same(e.toArray(), list, 'what goes in comes out');
  t.ok(e.hinted);
  t.notOk(Endpoints.of([ep(['10.0.0.1'])]).hinted);
  t.same(Endpoints.of([ep(['10.0.0.1'], { zoneHints: [], nodeHints: [] })]).toArray(), [ep(['10.0.0.1'])], 'empty lists are no hints');
  const moved = Endpoints.of(list.map((x, i) => (i === 2 ? { ...x, zoneHints: ['zone-b'] } : x)));
  t.notOk(e.equals(moved), 'a hint moved: not equal');
  t.notOk(sameData(e, moved), 'and the store sees a change');
  t.ok(sameData(e, Endpoints.of(list.map((x) => ({ ...x })))), 'the same hints: no change');
  const plain = Endpoints.of(list.map(({ zoneHints: _z, nodeHints: _n, ...x }) => x));
  t.ok(sameData(Endpoints.of([ep(['10.0.0.1'])]), Endpoints.of([ep(['10.0.0.1'])])));
  // 2 bytes per hinted endpoint; the names once per distinct set
  t.equal(
    (e as unknown as { packed: string }).packed.length - (plain as unknown as { packed: string }).packed.length,
    2 * 4,
    '2 bytes a hinted endpoint',
  );
  t.equal((e as unknown as { hints: unknown[] }).hints.length, 3, 'three distinct hint sets');
});
