/** The native addon's contract: typed errors, verifier logs, TC filters that coexist, batch ops. */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { BpfError, native } from '../src/native/index.js';
import { TC_HANDLE, TC_PRIORITY, detachAll } from '../src/dataplane/bpf/attach.js';
import { ip } from '../testkit/netns.js';
import { inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { compileTcProgram } from './helpers/foreign-prog.js';

t.test('a program the verifier rejects fails with BpfError carrying the verifier log', async (t) => {
  const bad = compileTcProgram(t, 'bad', 'return *(int *)(long)skb->data; /* no bounds check */');
  const err = await native()
    .loadObject(bad)
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  t.ok(err instanceof BpfError, 'a BpfError');
  const e = err as BpfError;
  t.match(e.op, /^load .*bad\.o$/, 'names the operation and the object');
  t.equal(e.errno, 13, 'EACCES from the verifier');
  t.match(e.log, /invalid access to packet|R\d .*pkt/, 'carries the verifier log');
  t.match(e.message, /EACCES/);
  const missing = await native()
    .loadObject(join(dirname(bad), 'nope.o'))
    .then(
      () => undefined,
      (x: unknown) => x,
    );
  t.ok(missing instanceof BpfError && missing.errno === 2, 'a missing file is ENOENT');
});

t.test('map operations: typed errors, batch update/delete, dump', async (t) => {
  const dp = await tmpDatapath(t);
  const m = dp.maps.slots;
  const n = 5000;
  m.setMany(
    Array.from(
      { length: n },
      (_, i) =>
        [
          { setId: 7, index: i },
          { addr: '10.0.0.1', port: i, flags: 0 },
        ] as const,
    ),
  );
  t.equal(m.count(), n, 'batch update of more than one batch');
  t.same(m.get({ setId: 7, index: 4242 }), { addr: '10.0.0.1', port: 4242, flags: 0 });
  t.equal(
    m.deleteMany([
      { setId: 7, index: 1 },
      { setId: 9, index: 9 },
      { setId: 7, index: 2 },
    ]),
    2,
    'missing keys skipped in a batch delete',
  );
  t.equal(m.delete({ setId: 7, index: 1 }), false, 'delete of a missing key says so');
  const e = (() => {
    try {
      native().mapLookup(m.fd, Buffer.alloc(2), 8);
    } catch (x) {
      return x;
    }
  })();
  t.ok(e instanceof BpfError && e.errno === 22, 'native errors are BpfError (here: a key of the wrong size)');
  const bad = (() => {
    try {
      native().mapUpdate(999999, Buffer.alloc(8), Buffer.alloc(8));
    } catch (x) {
      return x as BpfError;
    }
  })();
  t.ok(bad instanceof BpfError);
  t.equal(bad!.errno, 9, 'EBADF');
  t.equal(bad!.op, 'map update fd 999999', 'names the fd it could not use');
});

t.test('TC attach leaves other filters alone; replace is atomic; detach removes only ours', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
  ip(ns, 'link', 'set', 'eth0', 'up');
  const dp = await tmpDatapath(t);
  inNetns(ns, () => {
    const idx = native()
      .interfaces()
      .find((i) => i.name === 'eth0')!.index;
    const foreign = native().tcAttach(idx, 'ingress', dp.programs.fromData.fd, 0x77, 9);
    const ours = native().tcAttach(idx, 'ingress', dp.programs.fromData.fd, TC_HANDLE, TC_PRIORITY);
    t.ok(foreign > 0 && ours > 0);
    const again = native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
    t.equal(native().tcQuery(idx, 'ingress', TC_HANDLE, TC_PRIORITY), again, 'replaced in place');
    t.equal(native().tcQuery(idx, 'ingress', 0x77, 9), foreign, 'the other filter is untouched');
    t.same(detachAll(), ['eth0']);
    t.equal(native().tcQuery(idx, 'ingress', TC_HANDLE, TC_PRIORITY), 0, 'ours gone');
    t.equal(native().tcQuery(idx, 'ingress', 0x77, 9), foreign, 'theirs still there');
    t.equal(native().tcDetach(idx, 'ingress', TC_HANDLE, TC_PRIORITY), false, 'detaching twice is not an error');
  });
});

t.test('clsact qdisc: create says whether it was there, filters of any kind are listed, destroy removes it', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
  ip(ns, 'link', 'set', 'eth0', 'up');
  const dp = await tmpDatapath(t);
  const tc = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'tc', ...args], { encoding: 'utf8' });
  inNetns(ns, () => {
    const idx = native()
      .interfaces()
      .find((i) => i.name === 'eth0')!.index;
    t.same(native().tcFilters(idx, 'ingress'), [], 'no clsact: no filters');
    t.equal(native().tcHookDestroy(idx), false, 'no clsact to delete');
    t.equal(native().tcHookCreate(idx), true, 'created');
    t.equal(native().tcHookCreate(idx), false, 'already there');
    native().tcAttach(idx, 'ingress', dp.programs.fromData.fd, TC_HANDLE, TC_PRIORITY);
    tc('filter', 'add', 'dev', 'eth0', 'egress', 'pref', '7', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '192.0.2.99/32');
    const ing = native().tcFilters(idx, 'ingress');
    t.ok(
      ing.some((f) => f.kind === 'bpf' && f.handle === TC_HANDLE && f.priority === TC_PRIORITY && f.protocol === 3),
      `ours listed: ${JSON.stringify(ing)}`,
    );
    const eg = native().tcFilters(idx, 'egress');
    t.ok(
      eg.length > 0 && eg.every((f) => f.kind === 'u32' && f.priority === 7 && f.protocol === 0x800),
      `a u32 filter listed: ${JSON.stringify(eg)}`,
    );
    t.same(native().tcFilters(999_999, 'ingress'), [], 'a missing interface has none (the kernel says nothing)');
    t.equal(native().tcHookDestroy(idx), true, 'deleted');
  });
  t.notMatch(tc('qdisc', 'show', 'dev', 'eth0'), /clsact/, 'the qdisc is gone, and its filters with it');
});
