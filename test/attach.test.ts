/**
 * The attacher in both modes (tcx links and cls_bpf filters), in a
 * namespace of the test's own: attach, replace atomically when the programs
 * are reloaded, detach when an interface stops matching, put back what
 * someone removed, notice interfaces appear and vanish through netlink
 * events (measured), and leave foreign programs alone. tcx only: pinned
 * links adopted by the next attacher, links first on the hook, switching
 * modes on the same pin dir, the native link calls.
 */
import t, { type Test } from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { realClock } from '../src/clock.js';
import {
  Attacher,
  TC_HANDLE,
  TC_PRIORITY,
  attachedHere,
  teardown,
  type AttachedIface,
  type Attachment,
} from '../src/dataplane/bpf/attach.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { loadDatapath, loadPrograms, type Datapath } from '../src/dataplane/bpf/loader.js';
import { QdiscLedger } from '../src/dataplane/bpf/qdiscs.js';
import { tcxPinDir } from '../src/dataplane/bpf/tcx.js';
import { silentLogger } from '../src/log.js';
import { native } from '../src/native/index.js';
import { ip, nsPath } from '../testkit/netns.js';
import { BPF_DIR, tmpNetns, tmpPinDir } from './helpers/env.js';
import { sleep, until } from './helpers/wait.js';
import { foreignProgram } from './helpers/foreign-prog.js';

const MODES = ['tcx', 'cls'] as const;
/** tap option: skip tcx cases on a kernel without tcx (before 6.6) */
const needsTcx = (mode: 'tcx' | 'cls' = 'tcx') => ({
  skip: mode === 'tcx' && !native().tcxSupported() ? 'kernel without tcx (Linux < 6.6)' : false,
});
type Mode = (typeof MODES)[number];

function tc(ns: string, ...args: string[]): string {
  return execFileSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'tc', ...args], { encoding: 'utf8' });
}

/** This thread in ns until the test ends (the attacher, its netlink socket and every native call follow). */
function enter(t: Test, ns: string): void {
  const prev = native().enterNetns(nsPath(ns));
  t.teardown(() => native().restoreNetns(prev));
}

async function datapath(t: Test): Promise<{ dp: Datapath; pinDir: string }> {
  const pinDir = tmpPinDir(t);
  const dp = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp.close());
  return { dp, pinDir };
}

function attacher(t: Test, dp: Datapath, mode: Mode, pinDir: string, safetyPollMs = 60_000, data = /^eth0$/, pod = /^cali/): Attacher {
  const a = new Attacher(dp, data, pod, silentLogger, realClock, { mode, pinDir, safetyPollMs });
  t.teardown(() => a.stop());
  return a;
}

const indexOf = (name: string): number => {
  const l = native()
    .links()
    .find((x) => x.name === name);
  if (!l) throw new Error(`no interface ${name}`);
  return l.index;
};
/** Ours on dev in this namespace (the current thread's), by hook. */
const oursOn = (dev: string, pinDir: string): Attachment[] => attachedHere(pinDir).filter((a) => a.iface === dev);
const hookOf = (mode: Mode) => (mode === 'tcx' ? 'tcx' : 'cls');

function veths(ns: string, ...pairs: Array<[string, string]>): void {
  for (const [a, b] of pairs) {
    ip(ns, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    ip(ns, 'link', 'set', a, 'up');
  }
}

const ipAsync = (ns: string, ...args: string[]): Promise<void> =>
  new Promise((resolve, reject) => execFile('ip', ['-n', ns, ...args], (e) => (e ? reject(new Error(e.message)) : resolve())));

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

t.test('native tcx: a link goes first on its hook, is updated in place, detaches; others stay', needsTcx(), async (t) => {
  const ns = tmpNetns(t);
  veths(ns, ['eth0', 'eth1']);
  const { dp } = await datapath(t);
  const foreign = await foreignProgram(t);
  enter(t, ns);
  const idx = indexOf('eth0');
  const theirs = native().tcxAttach(idx, 'ingress', foreign);
  t.teardown(() => theirs.close());
  const theirProg = native().linkInfo(theirs).progId;
  const link = native().tcxAttach(idx, 'ingress', dp.programs.fromData.fd);
  const info = native().linkInfo(link);
  t.match(info, { type: 'tcx', ifindex: idx, direction: 'ingress' });
  t.same(
    native()
      .tcxList(idx, 'ingress')
      .map((p) => p.progId),
    [info.progId, theirProg],
    'ours runs first, theirs after',
  );
  native().linkUpdate(link, dp.programs.fromPod.fd);
  const after = native().linkInfo(link);
  t.equal(after.id, info.id, 'same link');
  t.not(after.progId, info.progId, 'another program in it');
  t.same(
    native()
      .tcxList(idx, 'ingress')
      .map((p) => p.linkId),
    [info.id, native().linkInfo(theirs).id],
    'position kept',
  );
  const err = (() => {
    try {
      native().linkUpdate(link, dp.programs.fromData.fd, dp.programs.hostReply.fd);
    } catch (e) {
      return e as Error;
    }
  })();
  t.match(err, { errno: 1 }, 'an update expecting another program is refused (EPERM)');
  t.equal(native().linkDetach(link), true);
  t.doesNotThrow(() => native().linkDetach(link), 'detaching twice is not an error');
  t.equal(native().linkInfo(link).ifindex, 0, 'a detached link names no interface');
  link.close();
  t.equal(link.closed, true, 'the handle owns its fd: closed once');
  const closedErr = (() => {
    try {
      native().linkInfo(link);
      return undefined;
    } catch (e) {
      return e as Error;
    }
  })();
  t.match(closedErr, { errno: 9 }, 'a closed handle is EBADF, never another fd');
  t.same(
    native()
      .tcxList(idx, 'ingress')
      .map((p) => p.progId),
    [theirProg],
    'theirs still there',
  );
  t.same(native().tcxList(idx, 'egress'), []);
  const kinds = new Map(
    native()
      .links()
      .map((l) => [l.name, l.kind]),
  );
  t.equal(kinds.get('eth0'), 'veth', 'the link dump says what kind an interface is');
  t.equal(kinds.get('lo'), '', 'and nothing for one without IFLA_INFO_KIND');
});

for (const mode of MODES) {
  t.test(`${mode}: attach, replace atomically on reload, detach, put back what someone removed`, needsTcx(mode), async (t) => {
    const ns = tmpNetns(t);
    veths(ns, ['eth0', 'eth1'], ['calia', 'podside']);
    ip(ns, 'link', 'add', 'other0', 'type', 'bridge');
    const { dp, pinDir } = await datapath(t);
    const foreign = await foreignProgram(t);
    // someone else's: a tcx program and a u32 filter on eth0
    tc(ns, 'qdisc', 'add', 'dev', 'eth0', 'clsact');
    tc(ns, 'filter', 'add', 'dev', 'eth0', 'ingress', 'pref', '5', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '192.0.2.99/32');
    enter(t, ns);
    const theirs = mode === 'tcx' ? native().tcxAttach(indexOf('eth0'), 'ingress', foreign) : undefined;
    if (theirs) t.teardown(() => theirs.close());
    const a = attacher(t, dp, mode, pinDir, 300);
    t.equal(a.hook, mode);
    a.start();
    t.ok(a.watching, 'netlink events subscribed');
    for (const dev of ['eth0', 'calia']) {
      const o = oursOn(dev, pinDir);
      t.same(
        o.map((x) => `${x.hook} ${x.direction} ${x.program}`).sort(),
        [
          `${hookOf(mode)} egress ${dev === 'eth0' ? 'bpfproxy_host' : 'bpfproxy_to_pod'}`,
          `${hookOf(mode)} ingress ${dev === 'eth0' ? 'bpfproxy_data' : 'bpfproxy_pod'}`,
        ],
        `${dev}: ingress and egress programs (pod interfaces: network policy on egress)`,
      );
    }
    t.same(oursOn('other0', pinDir), [], 'a non-matching interface is left alone');
    t.same(
      a
        .list()
        .map((x) => x.name)
        .sort(),
      ['calia', 'eth0'],
    );
    t.ok(dp.maps.podIfs.get({ ifindex: indexOf('calia') }), 'calia recorded as a pod veth (kind from the link dump)');
    if (mode === 'tcx') {
      t.same(
        readdirSync(tcxPinDir(pinDir)).sort(),
        [`${indexOf('calia')}-egress`, `${indexOf('calia')}-ingress`, `${indexOf('eth0')}-egress`, `${indexOf('eth0')}-ingress`].sort(),
        'links pinned',
      );
      t.same(
        native()
          .tcxList(indexOf('eth0'), 'ingress')
          .map((p) => p.linkId)[0],
        oursOn('eth0', pinDir).find((x) => x.direction === 'ingress')!.linkId,
        'ours first',
      );
      t.notOk(/clsact/.test(tc(ns, 'qdisc', 'show', 'dev', 'calia')), 'no clsact qdisc needed');
    }

    await t.test('programs reloaded: swapped in place', async (t) => {
      const before = attachedHere(pinDir);
      const fresh = await loadPrograms(BPF_DIR, pinDir, DEFAULT_DATAPATH);
      const prev = dp.swapPrograms(fresh);
      a.programsChanged();
      prev.close();
      const after = attachedHere(pinDir);
      t.equal(after.length, before.length, 'nothing added or lost');
      for (const b of before) {
        const x = after.find((y) => y.iface === b.iface && y.direction === b.direction && y.hook === b.hook)!;
        t.not(x.progId, b.progId, `${b.iface} ${b.direction}: new program`);
        if (mode === 'tcx') t.equal(x.linkId, b.linkId, `${b.iface} ${b.direction}: same link (BPF_LINK_UPDATE)`);
      }
    });

    await t.test('someone removes ours: the safety poll puts it back', async (t) => {
      const ing = oursOn('eth0', pinDir).find((x) => x.direction === 'ingress')!;
      if (mode === 'tcx') {
        const link = native().linkById(ing.linkId!);
        native().linkDetach(link);
        link.close();
      } else {
        tc(ns, 'filter', 'del', 'dev', 'eth0', 'ingress', 'pref', String(TC_PRIORITY), 'handle', `0x${TC_HANDLE.toString(16)}`, 'bpf');
      }
      t.notOk(
        oursOn('eth0', pinDir).some((x) => x.direction === 'ingress'),
        'gone',
      );
      await until('put back', () => oursOn('eth0', pinDir).some((x) => x.direction === 'ingress'), 3000);
      t.pass('back within a safety poll');
    });

    await t.test('interface no longer matches: detached, theirs stay', async (t) => {
      a.setPatterns(/^nothing$/, /^cali/);
      t.same(oursOn('eth0', pinDir), [], 'eth0 detached');
      t.equal(oursOn('calia', pinDir).length, 2, 'calia kept');
      t.match(tc(ns, 'filter', 'show', 'dev', 'eth0', 'ingress'), /pref 5 u32/, 'their filter stays');
      if (mode === 'tcx') {
        t.equal(native().tcxList(indexOf('eth0'), 'ingress').length, 1, 'their tcx program stays');
        t.notOk(
          readdirSync(tcxPinDir(pinDir)).some((n) => n.startsWith(`${indexOf('eth0')}-`)),
          'eth0 links unpinned',
        );
      }
      a.setPatterns(/^eth0$/, /^cali/);
      t.equal(oursOn('eth0', pinDir).length, 2, 'back');
    });

    await t.test('teardown removes ours only', async (t) => {
      a.stop();
      const ledger = new QdiscLedger(join(mkdtempSync(join(tmpdir(), 'bpfproxy-ledger-')), 'qdiscs.json'));
      const r = teardown(pinDir, ledger);
      t.same(r.detached.sort(), ['calia', 'eth0']);
      t.same(attachedHere(pinDir), [], 'none of ours left');
      t.match(tc(ns, 'filter', 'show', 'dev', 'eth0', 'ingress'), /pref 5 u32/, 'their filter stays');
      if (mode === 'tcx') t.equal(native().tcxList(indexOf('eth0'), 'ingress').length, 1, 'their tcx program stays');
      t.notOk(existsSync(pinDir), 'unpinned');
    });
  });

  t.test(`${mode}: interfaces appear and vanish through netlink events`, needsTcx(mode), async (t) => {
    const ns = tmpNetns(t);
    veths(ns, ['eth0', 'eth1']);
    const { dp, pinDir } = await datapath(t);
    enter(t, ns);
    // A safety poll far away: whatever happens below comes from events.
    const a = attacher(t, dp, mode, pinDir, 60_000);
    const seen = new Map<string, number>();
    const seenMono = new Map<string, number>();
    a.onAttached = (x: AttachedIface) => {
      if (seen.has(x.name)) return;
      seen.set(x.name, performance.now());
      seenMono.set(x.name, Number(native().monotonicNs()) / 1e6);
    };
    a.start();
    t.ok(a.watching);
    // An independent watcher: its reader thread stamps when each newlink event left the kernel (CLOCK_MONOTONIC).
    const eventAt = new Map<string, number>();
    const probe = native().watchNetlink((evs) => {
      for (const e of evs) if (e.event === 'newlink' && !eventAt.has(e.name)) eventAt.set(e.name, e.at);
    });
    t.teardown(() => probe.close());
    const fromEventMs: number[] = [];
    const attachMs: number[] = [];
    const ipMs: number[] = [];
    const goneMs: number[] = [];
    for (let i = 0; i < 8; i++) {
      const name = `calihp${i}`;
      const t0 = performance.now();
      await ipAsync(ns, 'link', 'add', name, 'type', 'veth', 'peer', 'name', `hp${i}`);
      ipMs.push(performance.now() - t0);
      await until(`${name} attached`, () => seen.has(name), 1000);
      attachMs.push(seen.get(name)! - t0);
      // the probe's own watcher may hand its batch to JS after the attacher's did
      await until(`${name} seen by the probe watcher`, () => eventAt.has(name), 1000).catch(() => undefined);
      if (eventAt.has(name)) fromEventMs.push(seenMono.get(name)! - eventAt.get(name)!);
      const idx = indexOf(name);
      t.equal(oursOn(name, pinDir).length, 2, `${name}: ingress and egress`);
      t.ok(dp.maps.podIfs.get({ ifindex: idx }), `${name}: recorded as a pod veth`);
      const t1 = performance.now();
      await ipAsync(ns, 'link', 'del', name);
      await until(`${name} forgotten`, () => !a.list().some((x) => x.name === name), 1000);
      goneMs.push(performance.now() - t1);
      t.notOk(dp.maps.podIfs.get({ ifindex: idx }), `${name}: pod veth record dropped`);
      if (mode === 'tcx')
        t.notOk(
          readdirSync(tcxPinDir(pinDir)).some((n) => n.startsWith(`${idx}-`)),
          `${name}: its links unpinned`,
        );
    }
    t.comment(
      `${mode}: newlink event read from the socket to attached (both programs): median ${median(fromEventMs).toFixed(2)} ms, max ${Math.max(...fromEventMs).toFixed(2)} ms`,
    );
    t.comment(
      `${mode}: veth creation to attached, from before spawning ip: median ${median(attachMs).toFixed(1)} ms, max ${Math.max(...attachMs).toFixed(1)} ms ` +
        `(ip itself: median ${median(ipMs).toFixed(1)} ms); deletion noticed: median ${median(goneMs).toFixed(1)} ms, max ${Math.max(...goneMs).toFixed(1)} ms`,
    );
    t.ok(Math.max(...attachMs) < 1000, `every new veth attached well within the safety poll (max ${Math.max(...attachMs).toFixed(1)} ms)`);
    t.equal(fromEventMs.length, attachMs.length, 'every creation seen as an event');

    await t.test('a non-veth pod interface is attached, not recorded as a veth', async (t) => {
      await ipAsync(ns, 'link', 'add', 'calibr', 'type', 'bridge');
      await until('calibr attached', () => seen.has('calibr'), 1000);
      t.notOk(dp.maps.podIfs.get({ ifindex: indexOf('calibr') }), 'no bpf_redirect_peer into a bridge');
    });

    await t.test('a route to a pod interface updates its source check at once', async (t) => {
      await ipAsync(ns, 'link', 'add', 'calirt', 'type', 'veth', 'peer', 'name', 'rtpeer');
      await ipAsync(ns, 'link', 'set', 'calirt', 'up');
      await until('calirt attached', () => seen.has('calirt'), 1000);
      const idx = indexOf('calirt');
      t.notOk(dp.maps.podSrcs.get({ prefixlen: 64, ifindex: idx, addr: '10.244.7.7' }));
      const t0 = performance.now();
      await ipAsync(ns, 'route', 'add', '10.244.7.7/32', 'dev', 'calirt');
      await until('source written', () => !!dp.maps.podSrcs.get({ prefixlen: 64, ifindex: idx, addr: '10.244.7.7' }), 1000);
      t.comment(`route to source check: ${(performance.now() - t0).toFixed(1)} ms`);
      t.ok(dp.maps.podSrcs.get({ prefixlen: 32, ifindex: idx, addr: '0.0.0.0' }), 'and the catch-all');
      await ipAsync(ns, 'route', 'del', '10.244.7.7/32', 'dev', 'calirt');
      await until('source removed', () => !dp.maps.podSrcs.get({ prefixlen: 64, ifindex: idx, addr: '10.244.7.7' }), 1000);
      t.pass('and removed with the route');
    });

    await t.test('IPv6 routes feed the IPv6 source check; a /32 route the pod address for IPv6 policy', async (t) => {
      await ipAsync(ns, 'link', 'add', 'calisix', 'type', 'veth', 'peer', 'name', 'sixpeer');
      await ipAsync(ns, 'link', 'set', 'sixpeer', 'up');
      await ipAsync(ns, 'link', 'set', 'calisix', 'up');
      await until('calisix attached', () => seen.has('calisix'), 1000);
      const idx = indexOf('calisix');
      const own = { prefixlen: 32 + 128, ifindex: idx, addr: 'fd00:10:244:7::7' };
      await ipAsync(ns, '-6', 'route', 'add', 'fd00:10:244:7::7/128', 'dev', 'calisix');
      await until('IPv6 source written', () => dp.maps.podSrcs6.get(own)?.v === 1, 1000);
      t.same(dp.maps.podSrcs6.get({ prefixlen: 32, ifindex: idx, addr: '::' }), { v: 0 }, 'and the catch-all');
      t.not(dp.maps.podSrcs6.get({ prefixlen: 32 + 64, ifindex: idx, addr: 'fe80::' })?.v, 1, 'the link-local route is not written');
      await ipAsync(ns, 'route', 'add', '10.244.7.9/32', 'dev', 'calisix');
      await ipAsync(ns, 'route', 'add', '10.244.7.8/32', 'dev', 'calisix');
      await until('pod address written', () => dp.maps.podAddrs.get({ ifindex: idx })?.addr4 === '10.244.7.8', 1000);
      t.pass('the lowest /32 route is the pod address');
      await ipAsync(ns, '-6', 'route', 'del', 'fd00:10:244:7::7/128', 'dev', 'calisix');
      await until('IPv6 source removed', () => !dp.maps.podSrcs6.get(own), 1000);
      t.pass('removed with the route, catch-all included');
      await ipAsync(ns, 'link', 'del', 'calisix');
      await until('pod address forgotten', () => !dp.maps.podAddrs.get({ ifindex: idx }), 1000);
      t.pass('the pod address goes with the interface');
    });

    await t.test('a renamed interface that no longer matches is detached', async (t) => {
      await ipAsync(ns, 'link', 'add', 'caliren', 'type', 'veth', 'peer', 'name', 'renpeer');
      await until('caliren attached', () => seen.has('caliren'), 1000);
      await ipAsync(ns, 'link', 'set', 'caliren', 'name', 'plainren');
      await until('detached after the rename', () => oursOn('plainren', pinDir).length === 0, 1000);
      t.notOk(a.list().some((x) => x.index === indexOf('plainren')));
    });
  });
}

t.test('tcx: a restarted attacher adopts the pinned links and swaps programs in place', needsTcx(), async (t) => {
  const ns = tmpNetns(t);
  veths(ns, ['eth0', 'eth1'], ['calia', 'podside']);
  const { dp, pinDir } = await datapath(t);
  enter(t, ns);
  const first = attacher(t, dp, 'tcx', pinDir);
  first.start();
  const before = attachedHere(pinDir);
  t.equal(before.length, 4);
  t.ok(
    before.every((x) => x.pinned),
    'pinned in our pin dir',
  );
  first.stop();
  t.same(attachedHere(pinDir), before, 'the agent stopped, the links stay (pinned)');
  // the next agent: programs loaded again over the same maps
  const dp2 = await loadDatapath(BPF_DIR, pinDir, DEFAULT_DATAPATH);
  t.teardown(() => dp2.close());
  const second = attacher(t, dp2, 'tcx', pinDir);
  second.start();
  const after = attachedHere(pinDir);
  t.equal(after.length, 4, 'no link added');
  for (const b of before) {
    const x = after.find((y) => y.iface === b.iface && y.direction === b.direction)!;
    t.equal(x.linkId, b.linkId, `${b.iface} ${b.direction}: the same link, adopted`);
    t.not(x.progId, b.progId, `${b.iface} ${b.direction}: the new program in it`);
  }
  await t.test('a pin of a link whose interface went away while no agent ran is dropped', async (t) => {
    second.stop();
    const gone = indexOf('calia');
    ip(ns, 'link', 'del', 'calia');
    const third = attacher(t, dp2, 'tcx', pinDir);
    third.start();
    t.notOk(
      readdirSync(tcxPinDir(pinDir)).some((n) => n.startsWith(`${gone}-`)),
      'unpinned',
    );
    t.equal(attachedHere(pinDir).length, 2, 'eth0 still attached');
    third.stop();
  });
  await t.test('a restart with patterns that no longer match an interface detaches its adopted links', async (t) => {
    const fourth = attacher(t, dp2, 'tcx', pinDir, 60_000, /^nothing$/);
    fourth.start();
    t.same(attachedHere(pinDir), [], 'eth0 detached');
    t.same(readdirSync(tcxPinDir(pinDir)), [], 'and unpinned');
  });
});

t.test("switching modes on one pin dir: the other mode's leftovers go once ours is in place", needsTcx(), async (t) => {
  const ns = tmpNetns(t);
  veths(ns, ['eth0', 'eth1'], ['calia', 'podside']);
  const { dp, pinDir } = await datapath(t);
  enter(t, ns);
  const hooks = () =>
    attachedHere(pinDir)
      .map((x) => `${x.iface} ${x.hook} ${x.direction}`)
      .sort();
  const cls = attacher(t, dp, 'cls', pinDir);
  cls.start();
  t.same(hooks(), ['calia cls egress', 'calia cls ingress', 'eth0 cls egress', 'eth0 cls ingress']);
  cls.stop();
  const tcx = attacher(t, dp, 'tcx', pinDir);
  tcx.start();
  t.same(
    hooks(),
    ['calia tcx egress', 'calia tcx ingress', 'eth0 tcx egress', 'eth0 tcx ingress'],
    'cls filters removed after the links are in',
  );
  tcx.stop();
  const back = attacher(t, dp, 'cls', pinDir);
  back.start();
  t.same(
    hooks(),
    ['calia cls egress', 'calia cls ingress', 'eth0 cls egress', 'eth0 cls ingress'],
    'links detached after the filters are in',
  );
  t.same(readdirSync(tcxPinDir(pinDir)), [], 'and unpinned');
  await sleep(10);
});
