/**
 * `bpfproxy trace` of IPv6 packets over a live datapath (the twin of
 * test/trace.test.ts): the IPv6 path records its decisions (conntrack,
 * frontend with its IPv6 backends, the backend chosen, NAT, route) with
 * their IPv6 addresses, the CLI takes [IPv6]:PORT and tells them as such,
 * and no pinned map changes.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { ip, nsPath } from '../testkit/netns.js';
import { frame6, TCP } from '../testkit/packet6.js';
import type { TraceOutput } from '../src/cli/trace.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns } from './helpers/env.js';
import { CLI } from './helpers/agent-proc.js';
import { POD6, progrun6Node } from './helpers/progrun6.js';
import { runProg6 } from './helpers/progrun.js';

const SVC6 = 'fd00:10:96::10';
const EMPTY6 = 'fd00:10:96::30';
const BACKENDS = ['fd00:10:244:1::11', 'fd00:10:244:1::12'];

function dumpMaps(pinDir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(pinDir).sort()) {
    if (name === 'tcx') continue;
    const h = native().objGet(join(pinDir, name));
    try {
      const d = native().mapDump(h);
      out[name] = `${d.count}:${d.keys.toString('hex')}:${d.values.toString('hex')}`;
    } finally {
      h.close();
    }
  }
  return out;
}

t.test('trace of IPv6 packets: new flow, conntrack hit, reject — and no map changes', async (t) => {
  const node = await progrun6Node(t);
  const { ns, dp, rec } = node;
  const pinDir = dp.objects[0]!.maps()
    .find((m) => m.name === 'bpfproxy_ct6')!
    .pinPath!.replace(/\/bpfproxy_ct6$/, '');
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], svc);
  sync('test/web6', [
    fe(
      'ClusterIP',
      SVC6,
      80,
      'TCP',
      BACKENDS.map((b) => be(b, 8080)),
      { servicePort: 'test/web6:http/TCP' },
    ),
  ]);
  sync('test/empty6', [fe('ClusterIP', EMPTY6, 80, 'TCP', [], { servicePort: 'test/empty6:http/TCP' })]);

  // a pod interface p0 (the pod's IPv6 address routed to it and allowed as its source) and the uplink d0
  ip(ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1');
  ip(ns, 'link', 'set', 'p0', 'up');
  ip(ns, 'link', 'set', 'p1', 'up');
  ip(ns, '-6', 'route', 'add', `${POD6}/128`, 'dev', 'p0');
  const p0 = inNetns(ns, () =>
    native()
      .interfaces()
      .find((i) => i.name === 'p0'),
  )!.index;
  dp.maps.podSrcs6.set({ prefixlen: 32 + 128, ifindex: p0, addr: POD6 }, { v: 1 });
  dp.maps.podSrcs6.set({ prefixlen: 32, ifindex: p0, addr: '::' }, { v: 0 });
  inNetns(ns, () => {
    for (const [ifindex, fd] of [
      [node.ifindex, dp.programs.fromData.fd],
      [p0, dp.programs.fromPod.fd],
    ] as const) {
      native().tcHookCreate(ifindex);
      native().tcAttach(ifindex, 'ingress', fd, TC_HANDLE, TC_PRIORITY);
    }
  });

  // a live flow the conntrack-hit trace finds
  const syn = inNetns(ns, () =>
    runProg6(dp, 'fromPod', frame6({ src: POD6, dst: SVC6 }, { proto: 'tcp', sport: 40100, dport: 80, flags: TCP.SYN }), p0),
  );
  t.equal(syn.verdict, 'redirect', 'a real IPv6 flow through the pod program');
  const realBackend = syn.out.dst;

  const before = dumpMaps(pinDir);
  const trace = (...args: string[]) =>
    spawnSync(
      'nsenter',
      [`--net=${nsPath(ns)}`, '--', process.execPath, CLI, 'trace', '--pin-dir', pinDir, '--bpf-dir', BPF_DIR, ...args],
      { encoding: 'utf8', timeout: 60_000 },
    );
  const json = (...args: string[]): TraceOutput => {
    const r = trace('-o', 'json', ...args);
    t.equal(r.status, 0, `trace ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as TraceOutput;
  };
  const steps = (o: TraceOutput) => o.steps.map((s) => s.step);

  t.test('ClusterIP from a pod: frontend with its IPv6 backends, the one chosen, NAT, route', async (t) => {
    const o = json('--from', POD6, '--to', `[${SVC6}]:80`);
    t.equal(o.hook, 'pod', "the pod's IPv6 address picks the pod program");
    t.equal(o.iface, 'p0', 'and its interface (bpfproxy_pod_srcs6)');
    t.same(steps(o), ['conntrack', 'frontend', 'backend', 'nat', 'route']);
    t.match(o.steps[1], {
      data: { service: 'test/web6:http/TCP', kind: 'ClusterIP', backends: BACKENDS.map((b) => `[${b}]:8080 (local)`) },
    });
    const chosen = (o.steps[2]!.data as { chosen: string }).chosen;
    t.ok(
      BACKENDS.some((b) => chosen === `[${b}]:8080`),
      `backend ${chosen}, one of the candidates`,
    );
    const dst = /^\[(.*)\]:8080$/.exec(chosen)![1];
    t.match(o.steps[3], { data: { to: { src: POD6, sport: 40000, dst, dport: 8080 }, flags: [] } });
    t.match(o.steps[3]!.text, `[${POD6}]:40000 -> [${SVC6}]:80 becomes [${POD6}]:40000 -> [${dst}]:8080`);
    t.match(o.steps[4], { data: { iface: 'd0' } });
    t.match(o.action, { action: 'redirect' });
  });

  t.test('an ACK of the live flow: the conntrack hit, rewritten to its backend', async (t) => {
    const o = json('--from', POD6, '--to', `[${SVC6}]:80`, '--sport', '40100', '--tcp-flags', 'ack');
    t.match(o.steps[0], {
      step: 'conntrack',
      data: { hit: true, dir: 'forward', to: { src: POD6, sport: 40100, dst: realBackend, dport: 8080 } },
    });
    t.same(steps(o), ['conntrack', 'route']);
  });

  t.test('a service without endpoints: the reason, rejected', async (t) => {
    const o = json('--from', POD6, '--to', `[${EMPTY6}]:80`);
    t.match(o.steps, [{ step: 'conntrack' }, { step: 'frontend', data: { service: 'test/empty6:http/TCP' } }]);
    t.match(
      o.steps.find((s) => s.step === 'reason'),
      { data: { reason: 'no-endpoints' } },
    );
    t.match(o.action, { action: 'reject' });
  });

  t.test('the table: [addr]:port', async (t) => {
    const r = trace('--from', POD6, '--to', `[${SVC6}]:80`);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, `Packet    TCP [${POD6}]:40000 -> [${SVC6}]:80`);
  });

  t.test('bad arguments: one family, [IPv6]:PORT', async (t) => {
    const mixed = trace('--from', POD6, '--to', '10.96.0.10:80');
    t.equal(mixed.status, 2);
    t.match(mixed.stderr, /are not of one family/);
    const bare = trace('--from', POD6, '--to', `${SVC6}:80`);
    t.not(bare.status, 0);
    t.match(bare.stderr, /is not IPv4:PORT or \[IPv6\]:PORT/);
  });

  t.same(dumpMaps(pinDir), before, 'every pinned map as it was: conntrack, affinity, counters');
});
