/**
 * XDP acceleration's links (src/dataplane/bpf/xdp.ts) on veths in a
 * namespace the test creates: attached and pinned per mode, adopted by the
 * next agent (same link, program swapped in place), moved between native
 * and generic, an interface whose XDP hook is taken left alone and named,
 * detached when off, by `bpfproxy cleanup`'s teardown, and shown by status.
 */
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { native } from '../src/native/index.js';
import { ip } from '../testkit/netns.js';
import { teardown } from '../src/dataplane/bpf/attach.js';
import { QdiscLedger } from '../src/dataplane/bpf/qdiscs.js';
import {
  XdpAccel,
  detachPinnedXdpLinks,
  readPinnedXdpLinks,
  xdpAttachedHere,
  xdpDataProgram,
  xdpPinDir,
} from '../src/dataplane/bpf/xdp.js';
import { loadDatapath } from '../src/dataplane/bpf/loader.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { BPF_DIR, inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { captureLogger } from './helpers/log.js';

t.test('XDP links: attach, pin, adopt, mode change, busy hook, detach, cleanup', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'x0', 'type', 'veth', 'peer', 'name', 'x1');
  ip(ns, 'link', 'add', 'y0', 'type', 'veth', 'peer', 'name', 'y1');
  for (const d of ['x0', 'x1', 'y0', 'y1']) ip(ns, 'link', 'set', d, 'up');
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp.close());
  const prog = xdpDataProgram(dp.objects[0]!, BPF_DIR);
  const progId = native().progInfo(prog).id;
  const idx = (n: string) =>
    inNetns(
      ns,
      () =>
        native()
          .interfaces()
          .find((i) => i.name === n)!.index,
    );
  const x0 = { index: idx('x0'), name: 'x0' };
  const y0 = { index: idx('y0'), name: 'y0' };
  const { log, lines } = captureLogger();
  const xdpProgOn = (dev: string): number | undefined => {
    const j = JSON.parse(ip(ns, '-d', '-j', 'link', 'show', dev)) as Array<{ xdp?: { prog?: { id: number }; mode?: number } }>;
    return j[0]?.xdp?.prog?.id;
  };

  const a = new XdpAccel(pinDir, log);
  inNetns(ns, () => a.sync('native', [x0, y0], prog));
  t.same(
    a
      .list()
      .map((l) => `${l.name}/${l.mode}`)
      .sort(),
    ['x0/native', 'y0/native'],
  );
  t.ok(existsSync(join(xdpPinDir(pinDir), `${x0.index}-native`)), 'pinned under <pinDir>/xdp/<ifindex>-native');
  t.equal(xdpProgOn('x0'), progId, 'the kernel shows our program on x0');
  const first = readPinnedXdpLinks(pinDir).links.find((l) => l.ifindex === x0.index)!;
  t.ok(first.live, 'live');
  a.close();
  t.equal(xdpProgOn('x0'), progId, 'still attached after the agent lets go (pinned)');

  // the next agent adopts the same links and keeps them
  const b = new XdpAccel(pinDir, log);
  t.equal(b.adopt(), 2, 'both links adopted');
  inNetns(ns, () => b.sync('native', [x0, y0], prog));
  t.equal(readPinnedXdpLinks(pinDir).links.find((l) => l.ifindex === x0.index)!.linkId, first.linkId, 'the same link, not a new one');
  inNetns(ns, () => b.update(prog));
  t.equal(xdpProgOn('x0'), progId, 'program swapped in place');

  // y0 stops being a data interface
  inNetns(ns, () => b.sync('native', [x0], prog));
  t.equal(xdpProgOn('y0'), undefined, 'detached from an interface that is no longer a data interface');
  t.notOk(existsSync(join(xdpPinDir(pinDir), `${y0.index}-native`)), 'and unpinned');

  // native -> generic: the kernel cannot change a link's mode; detached and attached again
  inNetns(ns, () => b.sync('generic', [x0], prog));
  t.same(b.list(), [{ ifindex: x0.index, name: 'x0', mode: 'generic' }]);
  t.ok(existsSync(join(xdpPinDir(pinDir), `${x0.index}-generic`)), 'pinned as generic');
  t.notOk(existsSync(join(xdpPinDir(pinDir), `${x0.index}-native`)), 'the native pin is gone');
  t.same(
    inNetns(ns, () => xdpAttachedHere(pinDir)).map((x) => `${x.iface} ${x.mode} ${x.progId === progId}`),
    ['x0 generic true'],
    'status shows the interface, mode and program',
  );

  // someone else's XDP program on y0: left in place, y0 named in the error, TC alone serves it
  const foreign = inNetns(ns, () => native().xdpLinkAttach(y0.index, prog, 'native'));
  t.teardown(() => foreign.close());
  inNetns(ns, () => b.sync('native', [x0, y0], prog));
  t.same(
    b.list().map((l) => l.name),
    ['x0'],
    'x0 attached (native again), y0 not',
  );
  t.match(b.failures(), [{ ifindex: y0.index, reason: /y0 has an XDP program already/ }]);
  t.ok(
    lines.some((l) => l.level === 'error' && /y0 has an XDP program already.*served by TC alone/.test(String(l.msg))),
    'logged, naming the interface',
  );
  t.equal(xdpProgOn('y0'), progId, "the other program stays (here: the same object's, through someone else's link)");
  foreign.close();

  // off
  inNetns(ns, () => b.sync(null, [x0, y0], prog));
  t.same(b.list(), [], 'nothing attached when off');
  t.equal(xdpProgOn('x0'), undefined);
  t.same(readPinnedXdpLinks(pinDir).links, [], 'no pins left');

  // cleanup: teardown detaches pinned XDP links too
  inNetns(ns, () => b.sync('generic', [x0], prog));
  b.close();
  const r = inNetns(ns, () => teardown(pinDir, new QdiscLedger(join(tmpdir(), `bpxt-qdiscs-${process.pid}.json`), log), log));
  t.same(r.xdp, ['x0'], 'teardown (bpfproxy cleanup) detached XDP from x0');
  t.equal(xdpProgOn('x0'), undefined, 'nothing left on x0');
  t.same(detachPinnedXdpLinks(pinDir), [], 'nothing left to detach');
});
