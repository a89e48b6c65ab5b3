/**
 * The rollback drain as the agent runs it (FelixConfiguration from a
 * manifest directory, agents as child processes in a namespace of the
 * test's own, no traffic: an open connection is an entry written into the
 * pinned conntrack):
 *  - bpfEnabled=false with a connection open: the agent drains, stays
 *    attached, says kube-proxy's rules are missing; bpfEnabled=true resumes;
 *  - SIGTERM during the drain: the agent detaches before it exits;
 *  - a drain (or a takeover on standby) a SIGKILLed agent left is finished
 *    by the next agent that starts with bpfEnabled=false;
 *  - with nothing open, bpfEnabled=false detaches at once.
 */
import t, { type Test } from 'tap';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { attachedHere } from '../src/dataplane/bpf/attach.js';
import { CtDir, CtState, IPPROTO_TCP } from '../src/dataplane/bpf/codecs.js';
import { isDraining, setMode } from '../src/dataplane/bpf/drain.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { native } from '../src/native/index.js';
import { ip } from '../testkit/netns.js';
import { cliInAsync, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { inNetns, tmpNetns, tmpPinDir } from './helpers/env.js';
import { felixManifest } from './helpers/migration.js';
import { until } from './helpers/wait.js';

function setup(t: Test) {
  const ns = tmpNetns(t);
  for (const [a, b] of [
    ['eth0', 'p0'],
    ['calitest', 'p1'],
  ] as const) {
    ip(ns, 'link', 'add', a, 'type', 'veth', 'peer', 'name', b);
    ip(ns, 'link', 'set', a, 'up');
  }
  const pinDir = tmpPinDir(t);
  const dir = tmpDir(t, 'bpfproxy-drain-');
  writeFileSync(join(dir, 'felix.yaml'), felixManifest(true));
  const args = (extra: string[] = []) => [
    ...['--manifests', dir, '--node', 'n1', '--pin-dir', pinDir, '--state-dir', tmpDir(t, 'bpfproxy-state-')],
    ...['--data-ifaces', '^eth', '--pod-ifaces', '^cali', '--metrics-port', '0', '--health-port', '0', '--healthz-port', '0'],
    ...['--tc-attach', 'cls', ...extra],
  ];
  const attached = () => inNetns(ns, () => attachedHere(pinDir)).length;
  const setBpf = (on: boolean) => writeFileSync(join(dir, 'felix.yaml'), felixManifest(on));
  /** One established connection in our conntrack, as the datapath would have written it. */
  const openConnection = () => {
    const m = openPinnedMaps(pinDir);
    try {
      const base = {
        createdNs: 0n,
        expiresNs: native().monotonicNs() + 3600n * 1_000_000_000n,
        state: CtState.REPLY_SEEN | CtState.ESTABLISHED,
        flags: 0,
        svcId: 1,
      };
      m.maps.ct.set(
        { saddr: '10.244.1.13', daddr: '10.96.0.10', sport: 40000, dport: 80, proto: IPPROTO_TCP },
        { ...base, dir: CtDir.FWD, natSaddr: '10.244.1.13', natSport: 40000, natDaddr: '10.244.1.11', natDport: 8080 },
      );
      m.maps.ct.set(
        { saddr: '10.244.1.11', daddr: '10.244.1.13', sport: 8080, dport: 40000, proto: IPPROTO_TCP },
        { ...base, dir: CtDir.REPLY, natSaddr: '10.96.0.10', natSport: 80, natDaddr: '10.244.1.13', natDport: 40000 },
      );
    } finally {
      m.close();
    }
  };
  const draining = () => {
    const m = openPinnedMaps(pinDir);
    try {
      return isDraining(m.maps);
    } finally {
      m.close();
    }
  };
  return { ns, pinDir, args, attached, setBpf, openConnection, draining };
}

const said = (logs: string[], re: RegExp) => logs.some((l) => re.test(l));

t.test('drain with a connection open: resume, then SIGTERM mid-drain detaches', async (t) => {
  const n = setup(t);
  const a = await startAgentIn(t, n.ns, n.args());
  t.equal(n.attached(), 4, 'attached: eth0 and calitest, ingress and egress');
  n.openConnection();

  n.setBpf(false);
  await until('draining', () => said(a.logs, /bpfEnabled is false: draining\. 1 open connection/), 10_000);
  t.ok(
    said(a.logs, /kube-proxy's rules are not on this node .*new connections to Services get no answer until kube-proxy is back/),
    "kube-proxy's rules missing: said loudly",
  );
  t.ok(n.draining(), 'the programs drain');
  const st = await cliInAsync(n.ns, ['status', '--pin-dir', n.pinDir]);
  t.match(st.stdout, /^Mode: draining \(bpfEnabled=false\)/, `bpfproxy status says so: ${st.stderr}`);
  t.match(st.stdout, /drain-new/, 'and counts what it leaves to kube-proxy');
  t.equal(n.attached(), 4, 'still attached: the open connection is served');

  n.setBpf(true);
  await until('drain cancelled', () => said(a.logs, /drain cancelled, bpfproxy takes new connections again/), 10_000);
  await until('serving again', () => !n.draining(), 10_000);
  t.pass('serving again');
  t.equal(n.attached(), 4, 'never detached');

  const from = a.logs.length;
  n.setBpf(false);
  await until('draining again', () => said(a.logs.slice(from), /bpfEnabled is false: draining/), 10_000);
  a.child.kill('SIGTERM');
  await a.exited;
  t.ok(said(a.logs, /agent stopping during the drain: detaching now; the 1 connection\(s\) still open/), 'says what it cuts');
  t.equal(n.attached(), 0, 'detached before exiting');
  t.notOk(existsSync(n.pinDir), 'unpinned');
});

for (const mode of ['drain', 'standby'] as const) {
  t.test(`a ${mode} a killed agent left is finished by the next agent with bpfEnabled=false`, async (t) => {
    const n = setup(t);
    const a = await startAgentIn(t, n.ns, n.args());
    a.child.kill('SIGKILL');
    await a.exited;
    const m = openPinnedMaps(n.pinDir);
    setMode(m.maps, mode); // as if it died handing back, or taking over
    m.close();
    n.setBpf(false);
    const b = await startAgentIn(t, n.ns, n.args());
    t.ok(
      said(b.logs, /a previous agent stopped while (draining|taking over).*detached from 2 interface\(s\) and unpinned/),
      'says what it found and did',
    );
    t.equal(n.attached(), 0, 'detached');
    t.notOk(existsSync(n.pinDir), 'unpinned');
    b.child.kill('SIGTERM');
    await b.exited;
  });
}

t.test('nothing open: bpfEnabled=false detaches at once', async (t) => {
  const n = setup(t);
  const a = await startAgentIn(t, n.ns, n.args());
  n.setBpf(false);
  await until(
    'the drain ends',
    () => said(a.logs, /drain finished after 0s: no open connection through bpfproxy is left; detaching/),
    10_000,
  );
  await until('detached', () => n.attached() === 0, 5000);
  t.pass('detached at once');
  t.notOk(existsSync(n.pinDir), 'unpinned');
  a.child.kill('SIGTERM');
  await a.exited;
});
