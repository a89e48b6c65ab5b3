/**
 * The addon boundary: buffers are checked against the map's own sizes before
 * the kernel sees them, options and arguments are type-checked, fds are
 * owned by handles and never leak on an error path, errno names come from
 * the system, and only E2BIG means "map full".
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BpfError, native, type MapHandle, type MapRef } from '../src/native/index.js';
import { BPF_OBJECT, loadPrograms, MAP_NAMES, openPinnedMaps, PROGRAMS } from '../src/dataplane/bpf/loader.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { BPF_DIR, REPO, tmpDatapath, tmpPinDir } from './helpers/env.js';
import { be, fe } from './helpers/fixtures.js';
import { compileTcProgram } from './helpers/foreign-prog.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

async function rejected(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

/** A map created with bpftool, pinned under dir. */
function createMap(dir: string, name: string, type: string, key: number, value: number, entries = 16): string {
  const path = join(dir, name);
  execFileSync('bpftool', [
    'map',
    'create',
    path,
    'type',
    type,
    'key',
    String(key),
    'value',
    String(value),
    'entries',
    String(entries),
    'name',
    name,
  ]);
  return path;
}

function einval(t: Test, e: unknown, op: RegExp, detail: RegExp, what: string): void {
  t.ok(e instanceof BpfError, `${what}: a BpfError (got ${String(e)})`);
  if (!(e instanceof BpfError)) return;
  t.equal(e.errno, 22, `${what}: EINVAL`);
  t.equal(e.code, 'EINVAL');
  t.match(e.op, op, `${what}: op names the operation and the map`);
  t.match(e.detail, detail, `${what}: says which sizes`);
  t.match(e.message, detail);
}

t.test('every map operation checks buffer lengths against the map, by handle and by plain fd', async (t) => {
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const path = createMap(pin, 'bx_hash', 'hash', 8, 12);
  const h = native().objGet(path);
  t.teardown(() => h.close());
  t.same([h.kind, h.name, h.keySize, h.valueSize, h.valueLen, h.maxEntries], ['map', 'bx_hash', 8, 12, 12, 16], 'the handle knows the map');

  const k = Buffer.alloc(8, 1);
  const v = Buffer.alloc(12, 2);
  for (const [label, ref] of [
    ['handle', h],
    ['fd', h.fd],
  ] as Array<[string, MapRef]>) {
    const op = (what: string) => new RegExp(`^${what} bx_hash$`);
    einval(
      t,
      thrown(() => native().mapLookup(ref, Buffer.alloc(2))),
      op('map lookup'),
      /key is 2 bytes; the map's keys are 8 bytes/,
      `${label} lookup short key`,
    );
    einval(
      t,
      thrown(() => native().mapLookup(ref, Buffer.alloc(64))),
      op('map lookup'),
      /key is 64 bytes/,
      `${label} lookup long key`,
    );
    einval(
      t,
      thrown(() => native().mapLookup(ref, k, 8)),
      op('map lookup'),
      /valueLen is 8; the map's values are 12 bytes/,
      `${label} lookup short value buffer`,
    );
    einval(
      t,
      thrown(() => native().mapUpdate(ref, k, Buffer.alloc(4))),
      op('map update'),
      /value is 4 bytes; the map's values are 12 bytes/,
      `${label} update short value`,
    );
    einval(
      t,
      thrown(() => native().mapUpdate(ref, Buffer.alloc(4), v)),
      op('map update'),
      /key is 4 bytes/,
      `${label} update short key`,
    );
    einval(
      t,
      thrown(() => native().mapDelete(ref, Buffer.alloc(1))),
      op('map delete'),
      /key is 1 byte;/,
      `${label} delete`,
    );
    einval(
      t,
      thrown(() => native().mapNextKey(ref, Buffer.alloc(3))),
      op('map next key'),
      /key is 3 bytes/,
      `${label} next key`,
    );
    einval(
      t,
      thrown(() => native().mapNextKey(ref, null, 4)),
      op('map next key'),
      /keyLen is 4/,
      `${label} next key length`,
    );
    einval(
      t,
      thrown(() => native().mapDump(ref, 4, 12, 8)),
      op('map dump'),
      /keyLen is 4/,
      `${label} dump key length`,
    );
    einval(
      t,
      thrown(() => native().mapDump(ref, 8, 100, 8)),
      op('map dump'),
      /valueLen is 100/,
      `${label} dump value length`,
    );
    einval(
      t,
      thrown(() => native().mapUpdateBatch(ref, Buffer.alloc(8 * 3), Buffer.alloc(12 * 2), 3)),
      op('map update batch'),
      /values are 24 bytes for 3 entries; the map's values are 12 bytes each, so 36 bytes/,
      `${label} update batch values`,
    );
    einval(
      t,
      thrown(() => native().mapUpdateBatch(ref, Buffer.alloc(8 * 2), Buffer.alloc(12 * 3), 3)),
      op('map update batch'),
      /keys are 16 bytes for 3 entries/,
      `${label} update batch keys`,
    );
    einval(
      t,
      thrown(() => native().mapUpdateBatch(ref, Buffer.alloc(0), Buffer.alloc(0), -1)),
      op('map update batch'),
      /count -1 is out of range/,
      `${label} negative count`,
    );
    einval(
      t,
      thrown(() => native().mapDeleteBatch(ref, Buffer.alloc(8 * 2 + 1), 2)),
      op('map delete batch'),
      /keys are 17 bytes for 2 entries/,
      `${label} delete batch`,
    );
  }
  t.equal(native().mapDump(h).count, 0, 'nothing was written by any refused call');

  native().mapUpdate(h, k, v);
  t.same(native().mapLookup(h, k), v, 'right sizes work; valueLen may be left out');
  t.same(native().mapLookup(h.fd, k, 12), v, 'and given, when it is right');
  t.equal(native().mapUpdateBatch(h, Buffer.alloc(16, 3), Buffer.alloc(24, 4), 2), 2);
  t.equal(native().mapUpdateBatch(h, Buffer.alloc(0), Buffer.alloc(0), 0), 0, 'an empty batch is no call');
  const d = native().mapDump(h);
  t.same([d.count, d.keys.length, d.values.length], [2, 16, 24], 'dump sizes come from the map');
  t.same(native().mapNextKey(h, null)?.length, 8);
  t.equal(native().mapDeleteBatch(h, k, 1), 1);
});

t.test('per-CPU maps take round_up(value_size, 8) x possible CPUs', async (t) => {
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const h = native().objGet(createMap(pin, 'bx_pcpu', 'percpu_hash', 4, 12));
  t.teardown(() => h.close());
  const cpus = native().possibleCpus();
  const len = 16 * cpus;
  t.equal(h.valueLen, len, `valueLen is 16 x ${cpus}`);
  const k = Buffer.alloc(4);
  for (const [label, ref] of [
    ['handle', h],
    ['fd', h.fd],
  ] as Array<[string, MapRef]>) {
    einval(
      t,
      thrown(() => native().mapUpdate(ref, k, Buffer.alloc(12))),
      /^map update bx_pcpu$/,
      new RegExp(
        `value is 12 bytes; the map's values are ${len} bytes \\(a per-CPU map: 12 bytes rounded up to 8, times ${cpus} possible CPUs\\)`,
      ),
      `${label} one CPU's value`,
    );
    einval(
      t,
      thrown(() => native().mapLookup(ref, k, 12)),
      /^map lookup bx_pcpu$/,
      /valueLen is 12/,
      `${label} lookup buffer for one CPU`,
    );
    einval(
      t,
      thrown(() => native().mapUpdateBatch(ref, Buffer.alloc(8), Buffer.alloc(24), 2)),
      /^map update batch bx_pcpu$/,
      /values are 24 bytes for 2 entries/,
      `${label} batch`,
    );
  }
  const v = Buffer.alloc(len, 7);
  native().mapUpdate(h, k, v);
  t.same(native().mapLookup(h, k), v, "every CPU's value round-trips");
  t.equal(native().mapDump(h).values.length, len);
});

t.test('handles own their fds; a closed handle is EBADF; fds of the wrong kind are refused', async (t) => {
  const dp = await tmpDatapath(t);
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const path = createMap(pin, 'bx_hash', 'hash', 8, 12);
  const before = openFds();
  const h = native().objGet(path);
  t.equal(openFds(), before + 1, 'one fd per handle');
  t.ok(h.fd >= 0 && !h.closed);
  h.close();
  t.same([h.fd, h.closed, openFds()], [-1, true, before], 'close() closes it');
  h.close();
  const e = thrown(() => native().mapLookup(h, Buffer.alloc(8)));
  t.ok(
    e instanceof BpfError && e.errno === 9 && e.op === 'map lookup bx_hash' && /closed/.test(e.detail),
    `a closed handle is EBADF naming the map: ${String(e)}`,
  );

  // a program pinned, opened as what it is and as what it is not
  const progPin = join(pin, 'bx_prog');
  native().objPin(dp.programs.fromPod.fd, progPin);
  const asMap = thrown(() => native().objGet(progPin));
  t.ok(
    asMap instanceof BpfError && asMap.errno === 22 && /holds a prog, not a map/.test(asMap.detail),
    `a program pin is not a map: ${String(asMap)}`,
  );
  const p = native().objGet(progPin, 'prog');
  t.same([p.kind, p.name, p.id], ['prog', PROGRAMS.fromPod.name.slice(0, 15), native().progInfo(dp.programs.fromPod.fd).id]);
  const notMap = thrown(() => native().mapLookup(p.fd, Buffer.alloc(8)));
  t.ok(
    notMap instanceof BpfError && notMap.errno === 22 && /is a BPF prog, not a BPF map/.test(notMap.detail),
    `a program fd is not a map: ${String(notMap)}`,
  );
  t.ok(thrown(() => native().mapInfo(p)) instanceof BpfError, 'mapInfo of a program is refused too');
  p.close();
  const byId = native().progById(native().progInfo(dp.programs.fromData.fd).id);
  t.same([byId.kind, byId.name], ['prog', PROGRAMS.fromData.name.slice(0, 15)], 'progById gives an owning handle');
  byId.close();
  t.equal(openFds(), before, 'all closed');
  const gone = thrown(() => native().progById(0x7fff_fff0));
  t.ok(gone instanceof BpfError && gone.errno === 2 && /open program id/.test(gone.op), 'a missing id is ENOENT');
});

t.test('no fd leaks on failing calls', async (t) => {
  const dp = await tmpDatapath(t);
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const path = createMap(pin, 'bx_hash', 'hash', 8, 12);
  const junk = mkdtempSync(join(tmpdir(), 'bpfproxy-junk-'));
  t.teardown(() => rmSync(junk, { recursive: true, force: true }));
  writeFileSync(join(junk, 'junk.o'), 'not an ELF object');
  // warm up what Node opens lazily (the thread pool) before counting
  await rejected(native().loadObject(join(junk, 'junk.o')));

  const before = openFds();
  const h = native().objGet(path);
  for (let i = 0; i < 20; i++) {
    thrown(() => native().mapUpdate(h, Buffer.alloc(3), Buffer.alloc(12)));
    thrown(() => native().mapUpdate(h.fd, Buffer.alloc(8), Buffer.alloc(3)));
    thrown(() => native().mapDump(h, 1));
    thrown(() => native().objGet(join(pin, 'nope')));
  }
  h.close();
  t.equal(openFds(), before, 'wrong buffer sizes and missing pins leave no fd behind');

  // links: a pin that is no link, a missing pin, a missing id
  for (let i = 0; i < 10; i++) {
    const notLink = thrown(() => native().linkOpen(path));
    t.ok(
      notLink instanceof BpfError && notLink.errno === 22 && /not a BPF link/.test(notLink.op),
      `a map pin is no link: ${String(notLink)}`,
    );
    thrown(() => native().linkOpen(join(pin, 'nope')));
    thrown(() => native().linkById(0x7fff_fff0));
  }
  t.equal(openFds(), before, 'failing link opens leave no fd behind');

  for (const [what, load] of [
    ['a missing object file', () => native().loadObject(join(junk, 'nope.o'))],
    ['a file that is no ELF object', () => native().loadObject(join(junk, 'junk.o'))],
    ['a map that is not in the object', () => native().loadObject(join(BPF_DIR, BPF_OBJECT), { maxEntries: { bx_nope: 4 } })],
    [
      'a setting that is not in the object',
      () => native().loadObject(join(BPF_DIR, BPF_OBJECT), { rodata: { cfg_nope: Buffer.alloc(4) } }),
    ],
  ] as const) {
    const e = await rejected(load());
    t.ok(e instanceof BpfError, `${what}: ${String(e)}`);
    t.equal(openFds(), before, `${what}: no fd left open`);
  }

  // openPinnedMaps with a pin missing in the middle (six maps open before it)
  const copy = tmpPinDir(t);
  mkdirSync(copy, { recursive: true });
  for (const [role, name] of Object.entries(MAP_NAMES) as Array<[keyof typeof MAP_NAMES, string]>) {
    if (role !== 'svcNames') native().objPin(dp.maps[role].handle, join(copy, name));
  }
  const missing = thrown(() => openPinnedMaps(copy));
  t.match(String(missing), new RegExp(`no pinned map at ${join(copy, MAP_NAMES.svcNames)}`), 'says which pin is missing');
  t.equal(openFds(), before, 'openPinnedMaps closed the maps it had opened');
  native().objPin(dp.maps.svcNames.handle, join(copy, MAP_NAMES.svcNames));
  const all = openPinnedMaps(copy);
  t.equal(openFds(), before + Object.keys(MAP_NAMES).length, 'one fd per map');
  all.close();
  t.equal(openFds(), before, 'close() closes them all');

  // loadPrograms: an object that is not ours fails and is closed again
  const bpfDir = mkdtempSync(join(tmpdir(), 'bpfproxy-objs-'));
  t.teardown(() => rmSync(bpfDir, { recursive: true, force: true }));
  compileTcProgram(t, 'other', 'return 0;', join(bpfDir, BPF_OBJECT));
  const failed = await rejected(loadPrograms(bpfDir, tmpPinDir(t), DEFAULT_DATAPATH));
  t.ok(failed instanceof BpfError && failed.op.includes(BPF_OBJECT), `the object is named: ${String(failed)}`);
  t.equal(openFds(), before, 'loadPrograms closed the object it had loaded');
});

t.test('a handle never closed is closed when collected', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const pin = tmpPinDir(t);
  mkdirSync(pin, { recursive: true });
  const path = createMap(pin, 'bx_hash', 'hash', 8, 12);
  gc();
  const before = openFds();
  (() => {
    const hs: MapHandle[] = [];
    for (let i = 0; i < 50; i++) hs.push(native().objGet(path));
    t.equal(openFds(), before + 50);
  })();
  for (let i = 0; i < 20 && openFds() > before; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  t.equal(openFds(), before, 'the finalizers closed all 50');
});

t.test('options and arguments are type-checked, naming the option', async (t) => {
  const dp = await tmpDatapath(t);
  const obj = join(BPF_DIR, BPF_OBJECT);
  const typeError = async (what: string, p: Promise<unknown> | (() => unknown), msg: RegExp) => {
    const e = typeof p === 'function' ? thrown(p) : await rejected(p);
    t.ok(e instanceof TypeError, `${what}: a TypeError (got ${String(e)})`);
    t.match((e as Error).message, msg, what);
  };
  // loadObject rejects synchronously (before any work is queued)
  const load = (opts: unknown) => () => (native().loadObject as (p: string, o: unknown) => unknown)(obj, opts);
  await typeError('pinRoot', load({ pinRoot: 5 }), /loadObject: option pinRoot must be a string, got the number 5/);
  await typeError('rodata', load({ rodata: 'x' }), /option rodata must be an object, got a string/);
  await typeError('a rodata value', load({ rodata: { cfg_ct_udp_ns: 'x' } }), /option rodata\.cfg_ct_udp_ns must be a Buffer/);
  await typeError('maxEntries', load({ maxEntries: { bpfproxy_ct: '1024' } }), /option maxEntries\.bpfproxy_ct must be an integer/);
  await typeError('a negative size', load({ maxEntries: { bpfproxy_ct: -1 } }), /maxEntries\.bpfproxy_ct must be an integer from 0/);
  await typeError(
    'a misspelt option',
    load({ pinroot: '/x' }),
    /unknown option pinroot \(known: pinRoot, rodata, rodataImage, maxEntries\)/,
  );
  await typeError('options of the wrong type', load('x'), /loadObject: options must be an object, got a string/);

  const fd = dp.programs.fromPod.fd;
  const frame = Buffer.alloc(64);
  const run = (opts: unknown) => () => (native().progTestRun as (f: number, d: Buffer, o: unknown) => unknown)(fd, frame, opts);
  await typeError('repeat', run({ repeat: '5' }), /progTestRun: option repeat must be an integer from 0 to 2\^32-1, got a string/);
  await typeError('repeat, fractional', run({ repeat: 1.5 }), /option repeat must be an integer/);
  await typeError('dataOutLen', run({ dataOutLen: -1 }), /option dataOutLen must be an integer/);
  await typeError('ctx', run({ ctx: [1, 2] }), /option ctx must be a Buffer, got an array/);
  await typeError('a misspelt option', run({ repat: 5 }), /unknown option repat/);
  const each = (opts: unknown) => () => (native().progTestRunEach as (f: number, d: Buffer[], o: unknown) => unknown)(fd, [frame], opts);
  await typeError('progTestRunEach ctx', each({ ctx: 'x' }), /progTestRunEach: option ctx must be a Buffer/);
  t.equal(native().progTestRun(fd, frame, { repeat: 2, ctx: undefined }).data.length > 0, true, 'undefined options count as absent');

  const m = dp.maps.slots;
  await typeError(
    'flags',
    () => (native().mapUpdate as (...a: unknown[]) => unknown)(m.handle, Buffer.alloc(8), Buffer.alloc(m.handle.valueLen), 1.5),
    /argument 3 \(flags\) must be an integer, got the number 1.5/,
  );
  await typeError(
    'a key that is no Buffer',
    () => (native().mapLookup as (...a: unknown[]) => unknown)(m.handle, 'k'),
    /argument 1 \(key\) must be a Buffer, got a string/,
  );
  await typeError(
    'a map that is neither',
    () => (native().mapLookup as (...a: unknown[]) => unknown)({ fd: 3 }, Buffer.alloc(8)),
    /argument 0 \(map\) must be an fd \(integer\) or a MapHandle/,
  );
  const fake = Object.create(Object.getPrototypeOf(m.handle) as object) as MapHandle;
  await typeError(
    'an object posing as a handle',
    () => native().mapLookup(fake, Buffer.alloc(8)),
    /argument 0 \(map\) is not a MapHandle made by the addon/,
  );
  await typeError('... given where any fd goes', () => native().mapInfo(fake), /argument 0 \(fd\) must be a handle made by the addon/);
  await typeError('objGet kind', () => (native().objGet as (...a: unknown[]) => unknown)('/x', 'link'), /kind\) must be 'map' or 'prog'/);

  // ring buffer readers and map words (addon/ringbuf.cc)
  const open = (...a: unknown[]) => (native().ringbufOpen as (...x: unknown[]) => unknown)(...a);
  await typeError('ringbuf size', () => open('x', () => undefined), /argument 0 \(size\) must be an integer/);
  await typeError('ringbuf callback', () => open(1 << 16, 'x'), /ringbufOpen\(size, callback\): callback must be a function/);
  const notPow2 = thrown(() => open(100_000, () => undefined));
  t.ok(notPow2 instanceof BpfError && notPow2.code === 'EINVAL' && /must be a power of 2/.test(notPow2.message), String(notPow2));
  const word = (...a: unknown[]) => (native().mapWordOp as (...x: unknown[]) => unknown)(...a);
  const ctl = dp.maps.monitorCtl.handle;
  await typeError('map word op', () => word(ctl, 0, 'xor'), /op must be 'load', 'store', 'add' or 'cas', got 'xor'/);
  await typeError('map word value', () => word(ctl, 0, 'store', 1), /mapWordOp: value must be a bigint/);
  await typeError('map word expected', () => word(ctl, 0, 'cas', 1n), /mapWordOp: expected must be a bigint/);
  const notMmap = thrown(() => word(dp.maps.slots.handle, 0, 'load'));
  t.match(String(notMmap), /not an array map created with BPF_F_MMAPABLE/, 'a map that cannot be mapped: EINVAL, said why');
  t.match(String(thrown(() => word(ctl, 4, 'load'))), /offset 4 is not a multiple of 8 inside the map's 72 bytes/);
  t.match(String(thrown(() => word(ctl, 72, 'load'))), /offset 72 is not a multiple of 8 inside the map's 72 bytes/, 'past the end');
  t.equal(native().mapWordOp(ctl, 8, 'add', -1n), 0n, 'add returns the word before');
  t.equal(native().mapWordOp(ctl, 8, 'load'), 2n ** 64n - 1n, 'and a negative add wraps');
  t.equal(native().mapWordOp(ctl, 8, 'cas', 5n, 1n), 2n ** 64n - 1n, 'a failed cas returns the word');
  t.equal(native().mapWordOp(ctl, 8, 'cas', 0n, 2n ** 64n - 1n), 2n ** 64n - 1n, 'a cas that succeeds too');
  t.equal(native().mapWordOp(ctl, 8, 'load'), 0n);
  const noMap = thrown(() => native().mapById(0));
  t.ok(noMap instanceof BpfError && noMap.code === 'ENOENT', String(noMap));
});

t.test('ring buffer readers own their fd and thread: closed, collected or not', async (t) => {
  const before = openFds();
  const readers = Array.from({ length: 8 }, () => native().ringbufOpen(1 << 16, () => undefined));
  t.ok(openFds() > before, 'each holds its ring (and the thread its epoll and eventfd)');
  t.ok(readers.every((r) => r.fd >= 0 && !r.closed && r.size === 1 << 16));
  for (const r of readers) r.close();
  for (const r of readers) r.close();
  t.ok(
    readers.every((r) => r.closed && r.fd === -1),
    'closed, twice is fine',
  );
  t.equal(openFds(), before, 'every fd let go');
});

t.test('errno names come from the system; only E2BIG is "map full"', async (t) => {
  t.equal(native().errnoName(7), 'E2BIG');
  t.equal(native().errnoName(110), 'ETIMEDOUT', 'names the old hand-written table lacked');
  t.equal(native().errnoName(98), 'EADDRINUSE');
  t.equal(native().errnoName(524), 'ENOTSUPP', 'the kernel-internal code BPF lets through');
  t.equal(native().errnoName(4000), 'errno 4000');
  t.equal(native().errnoText(12), 'Cannot allocate memory');
  const timedOut = new BpfError('map update bpfproxy_fe', 110);
  t.equal(timedOut.message, 'map update bpfproxy_fe: ETIMEDOUT (Connection timed out)');
  t.equal(timedOut.code, 'ETIMEDOUT');
  t.same(
    [new BpfError('x', 7).isMapFull, new BpfError('x', 12).isMapFull, new BpfError('x', 28).isMapFull],
    [true, false, false],
    'E2BIG only',
  );
  t.ok(new BpfError('x', 12).isOutOfMemory);

  // the reconciler: a frontend write that fails with ENOMEM is not "map full"
  const dp = await tmpDatapath(t);
  const rec = new BpfReconciler(dp.maps);
  const set = dp.maps.fe.set.bind(dp.maps.fe);
  dp.maps.fe.set = () => {
    throw new BpfError(`map update ${MAP_NAMES.fe}`, 12);
  };
  const r = rec.syncService('a/oom', [fe('ClusterIP', '10.96.7.1', 80, 'TCP', [be('10.0.7.1', 80)])]);
  t.equal(r.problems.length, 1);
  t.notOk(r.problems[0]!.mapFull, 'not counted as a full map');
  t.match(r.problems[0]!.message, /ENOMEM \(Cannot allocate memory\)/, 'says the kernel ran out of memory');
  t.notMatch(r.problems[0]!.message, /is full|Raise/, 'and does not tell the operator to grow the map');
  dp.maps.fe.set = set;
  t.same(rec.syncService('a/oom', [fe('ClusterIP', '10.96.7.1', 80, 'TCP', [be('10.0.7.1', 80)])]).problems, [], 'retried fine');
});

t.test('the .d.ts: no any; test-only calls grouped as such', async (t) => {
  const dts = readFileSync(join(REPO, 'src', 'native', 'addon.d.ts'), 'utf8');
  const code = dts.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  t.notMatch(code, /\bany\b/, 'no any');
  const testing = /export interface NativeTesting \{([\s\S]*?)\n\}/.exec(code)?.[1] ?? '';
  for (const fn of ['enterNetns', 'restoreNetns', 'progTestRun', 'progTestRunEach']) {
    t.match(testing, new RegExp(`\\b${fn}\\(`), `${fn} is in NativeTesting`);
  }
  const runtime = /export interface NativeRuntime \{([\s\S]*?)\n\}/.exec(code)?.[1] ?? '';
  t.notMatch(runtime, /enterNetns|progTestRun/, 'and not in what the agent uses');
});
