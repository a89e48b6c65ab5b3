/**
 * The informer's list: delivered page by page (only one page of objects
 * as the API sent them is held at a time), deletions only after a
 * complete list, a failed list removing nothing.
 */
import t from 'tap';
import { FakeClock } from '../testkit/fake-clock.js';
import { Informer, type KubeObject, type ListPage, type ResourceClient } from '../src/k8s/informer.js';
import { silentLogger } from '../src/log.js';

/** Let pending promise callbacks run. */
const settle = () => new Promise((r) => setImmediate(r));

const obj = (name: string, rv: string): KubeObject => ({ metadata: { name, namespace: 'ns', resourceVersion: rv } });

/** A resource whose list is given page by page; each call of list() is logged with what was delivered by then. */
function pagedClient(pages: Array<ListPage | Error>, delivered: () => string[]) {
  const calls: Array<{ continue: string | undefined; deliveredBefore: string[] }> = [];
  let i = 0;
  const client: ResourceClient = {
    name: 'things',
    list(opts) {
      calls.push({ continue: opts.continue, deliveredBefore: delivered() });
      const p = pages[i++];
      if (!p) return Promise.reject(new Error('no more pages in this test'));
      return p instanceof Error ? Promise.reject(p) : Promise.resolve(p);
    },
    watch: () => new Promise(() => undefined), // never connects: the list is what is tested
  };
  return { client, calls };
}

t.test('a paged list is delivered page by page', async (t) => {
  const upserts: string[] = [];
  const { client, calls } = pagedClient(
    [
      { items: [obj('a', '1'), obj('b', '2')], resourceVersion: '10', continue: 'p2' },
      { items: [obj('c', '3')], resourceVersion: '10', continue: 'p3' },
      { items: [obj('d', '4')], resourceVersion: '10' },
    ],
    () => [...upserts],
  );
  const inf = new Informer(client, { upsert: (k) => upserts.push(k), remove: () => undefined }, silentLogger, new FakeClock());
  inf.start();
  await inf.waitSynced();
  t.same(
    calls.map((c) => [c.continue ?? null, c.deliveredBefore]),
    [
      [null, []],
      ['p2', ['ns/a', 'ns/b']],
      ['p3', ['ns/a', 'ns/b', 'ns/c']],
    ],
    'each page is delivered before the next is asked for',
  );
  t.same(upserts, ['ns/a', 'ns/b', 'ns/c', 'ns/d']);
  inf.stop();
});

t.test('a list failing part way removes nothing; the next complete list removes what it does not name', async (t) => {
  const upserts: string[] = [];
  const removes: string[] = [];
  const clock = new FakeClock();
  const gone = Object.assign(new Error('continue token expired'), { statusCode: 410 });
  const { client } = pagedClient(
    [
      // the first list: x, y, z
      { items: [obj('x', '1'), obj('y', '2'), obj('z', '3')], resourceVersion: '10' },
      // a relist that fails after its first page (y changed, z gone)
      { items: [obj('x', '1'), obj('y', '5')], resourceVersion: '20', continue: 'p2' },
      gone,
      // its retry, complete
      { items: [obj('x', '1'), obj('y', '5')], resourceVersion: '21' },
    ],
    () => [],
  );
  const inf = new Informer(client, { upsert: (k) => upserts.push(k), remove: (k) => removes.push(k) }, silentLogger, clock, {
    minBackoffMs: 10,
    maxBackoffMs: 10,
  });
  inf.start();
  await inf.waitSynced();
  upserts.length = 0;
  // make the informer relist, as a 410 on its watch would
  void (inf as unknown as { relist(): Promise<void> }).relist();
  await settle();
  t.same(upserts, ['ns/y'], 'the first page applies at once: only what changed');
  t.same(removes, [], 'a list that did not complete removes nothing');
  await clock.advance(50);
  await settle();
  t.same(removes, ['ns/z'], 'the complete list removes what it no longer names');
  t.same(upserts, ['ns/y'], 'and raises nothing for what did not change');
  t.same(inf.keys().sort(), ['ns/x', 'ns/y']);
  inf.stop();
});
