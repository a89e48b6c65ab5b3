/**
 * NetworkPolicy with real packets, for what BPF_PROG_RUN cannot show:
 * traffic the kernel routes into a pod reaches the pod veth's egress
 * program (bpfproxy_to_pod), and a flow checked on its way in (tc_pod,
 * bpf_redirect_peer) is not denied again there.
 *
 * One node namespace with three pods (veths cali*, our programs on both
 * hooks) and a "remote" namespace behind tun0, an interface with no program
 * (as a tunnel device of the CNI would be): what comes from it meets
 * policy only at the pod veth's egress. Every probe has a count and a
 * timeout; the namespaces (and the echo servers in them) go with the test.
 */
import t, { type Test } from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import type { CompiledPolicy, EndpointPolicy } from '../src/model/policy/compiled.js';
import { ip, sh, sysctl } from '../testkit/netns.js';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { nsPath } from '../testkit/netns.js';
import { probe, REPO_ROOT, startEcho, type StreamOutcome } from '../lab/lab.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { reasonCount } from './helpers/progrun.js';

const NODE_IP = '192.0.2.11';
const A = '10.244.1.2';
const B = '10.244.1.3';
const C = '10.244.1.4';
const REMOTE = '10.244.2.5';
const VIP = '10.96.0.10';

/** A namespace behind a veth of the node: /32 address, the node side as its gateway. */
function attachNs(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpxp');
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
  ip(ns, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
  ip(node, 'link', 'set', hostIf, 'up');
  const mac = (JSON.parse(ip(node, '-j', 'link', 'show', hostIf)) as Array<{ address: string }>)[0]!.address;
  ip(ns, 'neigh', 'replace', '169.254.1.1', 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');
  sysctl(node, `net.ipv4.conf.${hostIf}.rp_filter`, '0');
  ip(node, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', NODE_IP);
  return ns;
}

const tcpOk = (ns: string, host: string, port = 8080): boolean => probe(ns, 'tcp', host, port, 1, 1000)[0]?.ok ?? false;

/** Wait (at most 5 s) until ns has an established TCP connection to host:port. */
async function established(ns: string, host: string, port: number): Promise<boolean> {
  for (const until = Date.now() + 5000; Date.now() < until;) {
    if (sh('ss', ['-H', '-tn', 'state', 'established', 'dst', `${host}:${port}`], { ns, allowFail: true }).trim()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/** A paced TCP stream (the lab's probe) that gives up 3 s after its last chunk: bounded when cut. */
function stream(ns: string, host: string, port: number, durationMs: number): Promise<StreamOutcome> {
  return new Promise((resolve, reject) => {
    const args = ['--', process.execPath, join(REPO_ROOT, 'dist', 'lab', 'probe.js'), 'stream', host, String(port)];
    const c = spawn(
      'nsenter',
      [`--net=${nsPath(ns)}`, ...args, '--duration', String(durationMs), '--chunk', '1024', '--interval', '20', '--timeout', '3000'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out) as StreamOutcome) : reject(new Error(`stream probe in ${ns} exited ${code}`)),
    );
  });
}

t.test('kernel-routed traffic into a pod meets its policy at the veth egress', async (t) => {
  const node = tmpNetns(t, 'bpxp');
  sysctl(node, 'net.ipv4.ip_forward', '1');
  sysctl(node, 'net.ipv4.conf.all.rp_filter', '0');
  sysctl(node, 'net.ipv4.conf.default.rp_filter', '0');
  ip(node, 'addr', 'add', `${NODE_IP}/32`, 'dev', 'lo');
  const pods = { a: attachNs(t, node, 'calia', A), b: attachNs(t, node, 'calib', B), c: attachNs(t, node, 'calic', C) };
  const remote = attachNs(t, node, 'tun0', REMOTE); // no program on tun0

  const dp = await tmpDatapath(t);
  inNetns(node, () => {
    for (const dev of ['calia', 'calib', 'calic']) {
      const idx = native()
        .interfaces()
        .find((i) => i.name === dev)!.index;
      native().tcHookCreate(idx);
      native().tcAttach(idx, 'ingress', dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
      native().tcAttach(idx, 'egress', dp.programs.toPod.fd, TC_HANDLE, TC_PRIORITY);
      dp.maps.podIfs.set({ ifindex: idx }, { v: 1 }); // service traffic enters pods with bpf_redirect_peer
    }
  });
  const rec = new BpfReconciler(dp.maps);
  t.same(rec.syncService('test/b', [fe('ClusterIP', VIP, 80, 'TCP', [be(B, 8080)])]).problems, []);
  rec.setNodeAddresses([NODE_IP]);
  const deadline = Date.now() + 10_000;
  for (const [name, ns] of Object.entries(pods)) startEcho(ns, name, deadline);
  startEcho(remote, 'remote', deadline);

  t.ok(tcpOk(remote, B), 'before any policy: remote -> b');

  const ids = [
    { prefix: '0.0.0.0/0', identity: 1 },
    { prefix: `${NODE_IP}/32`, identity: 2 },
    { prefix: `${A}/32`, identity: 100, endpoint: 1 },
    { prefix: `${B}/32`, identity: 101, endpoint: 2 },
    { prefix: `${C}/32`, identity: 102, endpoint: 3 },
    { prefix: `${REMOTE}/32`, identity: 300 },
  ];
  const fromA = { peer: 100, direction: 'ingress', proto: 6, port: 8080, portPrefixLen: 16, verdict: 'allow', ruleId: 0 } as const;
  const fromRemote = { ...fromA, peer: 300, ruleId: 1 };
  const eps = (bEntries: EndpointPolicy['entries']): EndpointPolicy[] => [
    { id: 1, pod: 'x/a', addresses: [A], ingressIsolated: false, egressIsolated: false, entries: [] },
    { id: 2, pod: 'x/b', addresses: [B], ingressIsolated: true, egressIsolated: false, entries: bEntries },
    { id: 3, pod: 'x/c', addresses: [C], ingressIsolated: false, egressIsolated: false, entries: [] },
  ];
  const pol = (bEntries: EndpointPolicy['entries']): CompiledPolicy => ({
    generation: 1,
    identities: ids,
    endpoints: eps(bEntries),
    rules: [
      { id: 0, policy: 'x/b-from-a', direction: 'ingress', index: 0 },
      { id: 1, policy: 'x/b-from-remote', direction: 'ingress', index: 0 },
    ],
  });
  const w = new PolicyMapWriter(dp.maps);
  t.same(w.apply(pol([fromA])).problems, [], 'b isolated for ingress, allowed from a on tcp/8080');

  const denied = reasonCount(dp, 'policy-denied');
  t.notOk(tcpOk(remote, B), 'remote -> b: denied at the veth egress (tun0 runs no program)');
  t.ok(reasonCount(dp, 'policy-denied') > denied, 'counted as policy-denied');
  t.ok(tcpOk(remote, C), 'remote -> c (not isolated) passes');
  t.ok(tcpOk(pods.a, B), 'a -> b: checked as it left a, not denied again at b');
  t.notOk(tcpOk(pods.c, B), 'c -> b: denied');
  t.ok(tcpOk(node, B), 'the node itself -> b passes (probes)');
  t.ok(tcpOk(pods.a, VIP, 80), 'a -> service -> b (bpf_redirect_peer) passes');
  t.notOk(tcpOk(pods.c, VIP, 80), 'c -> service -> b is denied before the redirect');
  t.notOk(probe(pods.a, 'udp', B, 5353, 1, 1000)[0]?.ok ?? false, 'a -> b udp: no rule');
  t.ok(w.hitsOf(0) >= 2, `rule 0 counted its decisions (${w.hitsOf(0)})`);

  t.same(w.apply(pol([fromA, fromRemote])).problems, []);
  t.ok(tcpOk(remote, B), 'remote -> b once a rule allows it');

  // A live connection is checked again when the generation moves: kept while a rule allows it...
  const kept = stream(remote, B, 8080, 2000);
  t.ok(await established(remote, B, 8080), 'stream connected');
  await new Promise((r) => setTimeout(r, 200));
  const cIsolated = { id: 3, pod: 'x/c', addresses: [C], ingressIsolated: true, egressIsolated: false, entries: [] };
  const other = w.applyDiff({ endpoints: { upsert: [cIsolated] } });
  t.ok(other.changed, `an unrelated change (generation ${other.generation})`);
  const k = await kept;
  t.ok(k.ok, `the stream goes on (sent ${k.sent}, got back ${k.received})`);
  // ...and cut when the rule that allowed it goes.
  const cutStream = stream(remote, B, 8080, 2000);
  t.ok(await established(remote, B, 8080), 'stream connected');
  await new Promise((r) => setTimeout(r, 200));
  const cut = w.applyDiff({ endpoints: { upsert: [eps([fromA])[1]!] } });
  t.ok(cut.changed, `rule removed (generation ${cut.generation})`);
  const out = await cutStream;
  t.notOk(out.ok, `the stream that rule allowed is cut (sent ${out.sent}, got back ${out.received}: ${out.error})`);
  t.ok(tcpOk(pods.a, B), 'a -> b still passes');
});
