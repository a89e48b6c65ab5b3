/**
 * `bpfproxy cleanup` removes exactly what bpfproxy put there — our filters,
 * the clsact qdiscs we created (when nothing else moved in), the pins — and
 * never runs from under a live agent: it refuses naming the agent, or with
 * --force stops it first. A SIGKILLed agent leaves no stale lock.
 * Everything runs in a namespace of the test's own.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent } from '../src/agent/agent.js';
import { LockBusyError, PinDirLock, statePaths } from '../src/agent/lock.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { TC_HANDLE, TC_PRIORITY, attachedHere } from '../src/dataplane/bpf/attach.js';
import { MAP_NAMES } from '../src/dataplane/bpf/loader.js';
import { tcxPinDir } from '../src/dataplane/bpf/tcx.js';
import { native } from '../src/native/index.js';
import { ip, nsPath } from '../testkit/netns.js';
import { silentLogger } from '../src/log.js';
import { BPF_DIR, inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, cliInAsync, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { foreignProgram } from './helpers/foreign-prog.js';

function tc(ns: string, ...args: string[]): string {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'tc', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tc ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const hasClsact = (ns: string, dev: string) => /clsact/.test(tc(ns, 'qdisc', 'show', 'dev', dev));
/** Program id of our filter on dev, 0 when none. */
const ours = (ns: string, dev: string) =>
  inNetns(ns, () => {
    const i = native()
      .interfaces()
      .find((x) => x.name === dev)!;
    return native().tcQuery(i.index, 'ingress', TC_HANDLE, TC_PRIORITY);
  });

/**
 * eth0, calitest, eth6: no clsact before (we create it; on eth6 someone adds
 * a filter of theirs afterwards). eth7: a clsact with a foreign filter.
 * eth8: an empty clsact someone made (not ours, so it stays).
 */
function node(t: Test): string {
  const ns = tmpNetns(t);
  for (const [a, b] of [
    ['eth0', 'p0'],
    ['calitest', 'p1'],
    ['eth6', 'p6'],
    ['eth7', 'p7'],
    ['eth8', 'p8'],
  ] as const) {
    ip(ns, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    ip(ns, 'link', 'set', a, 'up');
  }
  tc(ns, 'qdisc', 'add', 'dev', 'eth7', 'clsact');
  tc(ns, 'filter', 'add', 'dev', 'eth7', 'ingress', 'pref', '5', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '192.0.2.99/32');
  tc(ns, 'qdisc', 'add', 'dev', 'eth8', 'clsact');
  return ns;
}

const IFACES = ['calitest', 'eth0', 'eth6', 'eth7', 'eth8'];

/** The node namespace, a pin dir, a state dir and the agent's arguments (no listeners, one attach mode). */
function agentNode(t: Test, mode: 'cls' | 'tcx'): { ns: string; pinDir: string; state: string; agentArgs: string[] } {
  const ns = node(t);
  const pinDir = tmpPinDir(t);
  const state = tmpDir(t, 'bpfproxy-state-');
  const manifests = tmpDir(t, 'bpfproxy-cleanup-');
  writeFileSync(join(manifests, 'empty.yaml'), '');
  const flags = {
    '--manifests': manifests,
    '--node': 'n1',
    '--bpf-enabled': 'true',
    '--pin-dir': pinDir,
    '--state-dir': state,
    '--data-ifaces': '^eth',
    '--pod-ifaces': '^cali',
    '--metrics-port': '0',
    '--health-port': '0',
    '--healthz-port': '0',
    '--tc-attach': mode,
  };
  return { ns, pinDir, state, agentArgs: Object.entries(flags).flat() };
}

t.test('cls mode: cleanup with an agent running, after it is killed, and with --force', async (t) => {
  const { ns, pinDir, state, agentArgs } = agentNode(t, 'cls');
  const cleanup = ['cleanup', '--pin-dir', pinDir, '--state-dir', state];
  const { qdiscs: ledger } = statePaths(state, pinDir);

  const agent = await startAgentIn(t, ns, agentArgs);
  for (const d of IFACES) t.ok(ours(ns, d) > 0, `attached to ${d}`);
  const st = cliIn(ns, ['status', '--pin-dir', pinDir]);
  t.equal(st.status, 0, st.stderr);
  t.match(st.stdout, /eth0 +\d+ +tc ingress +bpfproxy_data/, 'status: the filters, as tc hooks');
  tc(ns, 'filter', 'add', 'dev', 'eth6', 'egress', 'pref', '7', 'protocol', 'ip', 'u32', 'match', 'ip', 'dst', '192.0.2.98/32');
  const recorded = (JSON.parse(readFileSync(ledger, 'utf8')) as { qdiscs: Array<{ iface: string }> }).qdiscs.map((r) => r.iface).sort();
  t.same(recorded, ['calitest', 'eth0', 'eth6'], 'the qdiscs we created are recorded, the ones that were there are not');

  await t.test('refused while the agent runs; nothing changes', async (t) => {
    const pins = readdirSync(pinDir).sort();
    const r = await cliInAsync(ns, cleanup);
    t.equal(r.status, 1, 'exits 1');
    t.match(r.stderr, new RegExp(`in use by agent pid ${agent.pid}`), "names the agent's pid");
    t.match(r.stderr, /Stop the agent first .*kubectl.*kill \d+.*or pass --force/, 'says what to do');
    t.match(r.stderr, /Nothing was changed/);
    for (const d of IFACES) t.ok(ours(ns, d) > 0, `still attached to ${d}`);
    t.same(readdirSync(pinDir).sort(), pins, 'pins untouched');
    t.ok(hasClsact(ns, 'eth0'), 'qdiscs untouched');
    t.equal(agent.child.exitCode, null, 'the agent keeps running');
  });

  await t.test('after the agent is SIGKILLed, cleanup removes exactly ours', async (t) => {
    agent.child.kill('SIGKILL');
    await agent.exited;
    // the topology display file an agent writes (bpfproxy services)
    writeFileSync(statePaths(state, pinDir).topology, '{}');
    const r = cliIn(ns, cleanup);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /detached from 5 interface\(s\)/);
    t.match(r.stdout, /deleted the clsact qdisc bpfproxy had created on 2 interface\(s\) \((eth0, calitest|calitest, eth0)\)/);
    t.match(r.stdout, /left 1 clsact qdisc\(s\) that hold other filters \(eth6\)/);
    for (const d of IFACES) t.equal(ours(ns, d), 0, `ours gone from ${d}`);
    t.notOk(hasClsact(ns, 'eth0'), 'eth0: the clsact we created is gone');
    t.notOk(hasClsact(ns, 'calitest'), 'calitest: the clsact we created is gone');
    t.match(tc(ns, 'filter', 'show', 'dev', 'eth6', 'egress'), /u32/, "eth6: we created it, but someone's filter moved in: kept, with it");
    t.match(tc(ns, 'filter', 'show', 'dev', 'eth7', 'ingress'), /pref 5 u32/, 'eth7: the foreign filter stays');
    t.ok(hasClsact(ns, 'eth8'), 'eth8: an empty clsact that was not ours stays');
    t.notOk(existsSync(pinDir), 'unpinned');
    t.notOk(existsSync(statePaths(state, pinDir).lock), 'lock file gone');
    t.notOk(existsSync(statePaths(state, pinDir).topology), 'topology file gone');
    const st = cliIn(ns, ['status', '--pin-dir', pinDir]);
    t.equal(st.status, 0, `status after cleanup exits 0: ${st.stderr}`);
    t.match(st.stdout, /none attached in this network namespace/);
    t.match(st.stdout, /no maps are pinned under .*: the bpfproxy dataplane is off here/);
  });

  await t.test('--force stops the agent, then cleans up', async (t) => {
    const again = await startAgentIn(t, ns, agentArgs);
    t.ok(ours(ns, 'eth0') > 0, 'attached again');
    t.ok(hasClsact(ns, 'eth0'), 'clsact created again');
    const r = await cliInAsync(ns, [...cleanup, '--force']);
    t.equal(r.status, 0, r.stderr);
    t.equal(await again.exited, 0, 'the agent stopped on SIGTERM');
    t.match(r.stdout, /detached from 5 interface\(s\)/);
    for (const d of IFACES) t.equal(ours(ns, d), 0, `ours gone from ${d}`);
    t.notOk(hasClsact(ns, 'eth0'), 'the clsact we created is gone');
    t.match(tc(ns, 'filter', 'show', 'dev', 'eth7', 'ingress'), /pref 5 u32/, 'the foreign filter stays');
    t.notOk(existsSync(pinDir), 'unpinned');
    // Only the record of eth6 (someone else's filter in it) remains.
    t.same(
      (JSON.parse(readFileSync(ledger, 'utf8')) as { qdiscs: Array<{ iface: string }> }).qdiscs.map((x) => x.iface),
      ['eth6'],
    );
  });
});

/** Our tcx links on dev (in ns): the hooks they sit on. */
const tcxHooks = (ns: string, pinDir: string, dev: string) =>
  inNetns(ns, () =>
    attachedHere(pinDir)
      .filter((a) => a.iface === dev && a.hook === 'tcx')
      .map((a) => a.direction)
      .sort(),
  );

t.test(
  'tcx mode: links pinned, left by a killed agent, shown by status (also with the maps gone), removed by cleanup; foreign programs stay',
  { skip: native().tcxSupported() ? false : 'kernel without tcx (Linux < 6.6)' },
  async (t) => {
    const { ns, pinDir, state, agentArgs } = agentNode(t, 'tcx');
    // someone else's tcx program on eth0, held by this process
    const foreign = await foreignProgram(t);
    const theirs = inNetns(ns, () =>
      native().tcxAttach(
        native()
          .links()
          .find((l) => l.name === 'eth0')!.index,
        'ingress',
        foreign,
      ),
    );
    t.teardown(() => theirs.close());
    const theirProg = native().linkInfo(theirs).progId;
    const eth0Tcx = () =>
      inNetns(ns, () =>
        native()
          .tcxList(
            native()
              .links()
              .find((l) => l.name === 'eth0')!.index,
            'ingress',
          )
          .map((p) => p.progId),
      );

    const agent = await startAgentIn(t, ns, agentArgs);
    for (const d of IFACES) t.same(tcxHooks(ns, pinDir, d), ['egress', 'ingress'], `${d}: tcx links on both hooks`);
    for (const d of IFACES) t.equal(ours(ns, d), 0, `${d}: no cls filter`);
    t.equal(readdirSync(tcxPinDir(pinDir)).length, 2 * IFACES.length, 'every link pinned');
    t.notOk(existsSync(statePaths(state, pinDir).qdiscs), 'no clsact qdisc created, none recorded');
    t.notOk(hasClsact(ns, 'eth0'));
    t.equal(eth0Tcx().length, 2, 'ours and theirs on eth0');
    t.equal(eth0Tcx()[1], theirProg, 'theirs runs after ours');

    const st = cliIn(ns, ['status', '--pin-dir', pinDir]);
    t.equal(st.status, 0, st.stderr);
    t.match(st.stdout, /eth0 +\d+ +tcx ingress +bpfproxy_data +\d+ +\d+/, 'status: tcx ingress');
    t.match(st.stdout, /eth0 +\d+ +tcx egress +bpfproxy_host/, 'status: tcx egress');
    t.notMatch(st.stdout, /foreign_next/, 'not theirs');
    const js = JSON.parse(cliIn(ns, ['status', '--pin-dir', pinDir, '-o', 'json']).stdout) as {
      dataplane: string;
      interfaces: Array<{ hook: string; pinned: boolean }>;
      maps: unknown[];
    };
    t.equal(js.dataplane, 'on');
    t.equal(js.interfaces.length, 2 * IFACES.length);
    t.ok(
      js.interfaces.every((i) => i.hook === 'tcx' && i.pinned),
      'all tcx, all pinned here',
    );
    t.ok(Array.isArray(js.maps) && js.maps.length > 0);

    agent.child.kill('SIGKILL');
    await agent.exited;
    for (const d of IFACES) t.same(tcxHooks(ns, pinDir, d), ['egress', 'ingress'], `${d}: the links outlive the killed agent (pinned)`);

    await t.test('maps gone, links left: status says so and exits 0', async (t) => {
      for (const n of Object.values(MAP_NAMES)) rmSync(join(pinDir, n), { force: true });
      const r = cliIn(ns, ['status', '--pin-dir', pinDir]);
      t.equal(r.status, 0, r.stderr);
      t.match(r.stdout, /calitest +\d+ +tcx ingress +bpfproxy_pod/, 'the attachments are listed');
      t.match(r.stdout, /no maps are pinned under .*: the bpfproxy dataplane is off here/);
      t.match(
        r.stdout,
        /Warning: 10 bpfproxy program\(s\) are still attached although the maps are gone: leftovers; "bpfproxy cleanup --pin-dir/,
      );
      const j = JSON.parse(cliIn(ns, ['status', '--pin-dir', pinDir, '-o', 'json']).stdout) as Record<string, unknown>;
      t.match(j, { dataplane: 'off', maps: null, reasons: null, warning: /leftovers/ });
      t.equal((j.interfaces as unknown[]).length, 10);
    });

    await t.test('cleanup detaches and unpins our links only', async (t) => {
      const r = cliIn(ns, ['cleanup', '--pin-dir', pinDir, '--state-dir', state]);
      t.equal(r.status, 0, r.stderr);
      t.match(r.stdout, /detached from 5 interface\(s\)/);
      t.match(r.stdout, /deleted the clsact qdisc bpfproxy had created on 0 interface\(s\)/);
      for (const d of IFACES) t.same(tcxHooks(ns, pinDir, d), [], `${d}: our links gone`);
      t.same(eth0Tcx(), [theirProg], 'their tcx program stays');
      t.match(tc(ns, 'filter', 'show', 'dev', 'eth7', 'ingress'), /pref 5 u32/, 'their cls filter stays');
      t.ok(hasClsact(ns, 'eth8'), 'their empty clsact stays');
      t.notOk(existsSync(pinDir), 'unpinned');
      const j = JSON.parse(cliIn(ns, ['status', '--pin-dir', pinDir, '-o', 'json']).stdout) as Record<string, unknown>;
      t.match(j, { dataplane: 'off', interfaces: [], maps: null });
      t.notOk('warning' in j);
    });
  },
);

t.test('the pin dir lock', async (t) => {
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = '/sys/fs/bpf/bpxt-lock-only';
  const a = PinDirLock.tryAcquire(state, pinDir, 'agent');
  if (!(a instanceof PinDirLock)) throw a;
  const b = PinDirLock.tryAcquire(state, pinDir, 'agent');
  t.ok(b instanceof LockBusyError, 'a second holder is refused, in the same process too');
  t.match((b as LockBusyError).holder, { pid: process.pid, what: 'agent' }, 'and told who holds it');
  const other = PinDirLock.tryAcquire(state, '/sys/fs/bpf/bpxt-other', 'agent');
  t.ok(other instanceof PinDirLock, 'another pin dir is another lock');
  (other as PinDirLock).release();
  a.release();
  t.notOk(existsSync(statePaths(state, pinDir).lock), 'release removes the file');
  const c = PinDirLock.tryAcquire(state, pinDir, 'agent');
  t.ok(c instanceof PinDirLock, 'free again');
  (c as PinDirLock).release();
});

t.test('an agent refuses to start on a pin dir another agent holds; cleanup refuses under an in-process agent', async (t) => {
  const ns = tmpNetns(t);
  const state = tmpDir(t, 'bpfproxy-state-');
  const pinDir = tmpPinDir(t);
  const manifests = tmpDir(t, 'bpfproxy-lock-');
  const prev = native().enterNetns(`/run/netns/${ns}`);
  t.teardown(() => native().restoreNetns(prev));
  const opts = {
    source: { kind: 'manifests' as const, dir: manifests },
    nodeName: 'n1',
    pinDir,
    bpfDir: BPF_DIR,
    podIfaces: /^cali/,
    base: { ...DEFAULT_CONFIG, enabled: true, dataIfaces: /^eth/ },
    syncPeriodMs: 30_000,
    stateDir: state,
    healthzHost: null,
  };
  const first = await Agent.start(opts, silentLogger);
  t.teardown(() => first.stop());
  const t0 = Date.now();
  const err = await Agent.start({ ...opts, lockWaitMs: 300 }, silentLogger).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof LockBusyError, 'the second agent fails');
  t.match((err as Error).message, new RegExp(`pin dir ${pinDir} is in use by agent pid ${process.pid}`));
  t.ok(Date.now() - t0 >= 300, 'after waiting for the first to go');
  const r = cliIn(ns, ['cleanup', '--pin-dir', pinDir, '--state-dir', state]);
  t.equal(r.status, 1, 'cleanup refuses');
  t.match(r.stderr, /--force/);
  t.ok(existsSync(pinDir), 'pins untouched');
  first.stop();
  const second = await Agent.start(opts, silentLogger);
  t.pass('once the first stops, the next one starts');
  second.stop();
});
