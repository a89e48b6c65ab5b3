/**
 * `bpfproxy trace` over a live datapath: the maps a reconciler filled from
 * a few Services, programs attached to a pod interface and an uplink in a
 * namespace of the test's own. Each case runs the CLI as an operator would
 * (in that namespace) and checks the decisions it tells; around all of
 * them, every pinned map stays byte for byte what it was (conntrack,
 * affinity and the counters included).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { ip, nsPath } from '../testkit/netns.js';
import { TCP, frame } from '../testkit/packet.js';
import type { TraceOutput } from '../src/cli/trace.js';
import { be, fe } from './helpers/fixtures.js';
import { BPF_DIR, inNetns } from './helpers/env.js';
import { CLI } from './helpers/agent-proc.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { runProg } from './helpers/progrun.js';

const tcpFrame = (src: string, dst: string, sport: number, dport: number, flags: number): Buffer =>
  frame({ src, dst }, { proto: 'tcp', sport, dport, flags });

/** Every pinned map's keys and values, as the kernel returns them. */
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

t.test('trace: ClusterIP, NodePort, reject, no service, conntrack hit, affinity — and no map changes', async (t) => {
  // a distinct SNAT port range: the trace must take the running program's settings, not the object's defaults
  // a SYN-only flow must outlive every trace below, however loaded the machine (SYN_SENT lasts 20 s by default)
  const node = await progrunNode(t, {
    snatPorts: [31000, 31010],
    // as must the reset flow's reply entry (RST_SEEN: 40 s by default; the traces before it take longer on a loaded machine)
    ctTimeoutsNs: { ...DEFAULT_DATAPATH.ctTimeoutsNs, synSent: 3_600_000_000_000n, rstSeen: 3_600_000_000_000n },
  });
  const { ns, dp, rec } = node;
  const pinDir = dp.objects[0]!.maps()
    .find((m) => m.name === 'bpfproxy_ct')!
    .pinPath!.replace(/\/bpfproxy_ct$/, '');
  const web = [be('10.244.1.11', 8080), be('10.244.1.12', 8080)];
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], svc);
  sync('test/web', [
    fe('ClusterIP', '10.96.0.10', 80, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
    fe('NodePort', '0.0.0.0', 30080, 'TCP', web, { servicePort: 'test/web:http/TCP' }),
  ]);
  sync('test/remote', [fe('NodePort', '0.0.0.0', 30081, 'TCP', [be('10.244.2.11', 8080, false)], { servicePort: 'test/remote:http/TCP' })]);
  sync('test/empty', [fe('ClusterIP', '10.96.0.30', 80, 'TCP', [], { servicePort: 'test/empty:http/TCP' })]);
  sync('test/sticky', [
    fe('ClusterIP', '10.96.0.50', 80, 'TCP', [be('10.244.1.21', 80), be('10.244.1.22', 80), be('10.244.1.23', 80)], {
      servicePort: 'test/sticky:http/TCP',
      affinityTimeout: 600,
    }),
  ]);
  rec.setNodeAddresses([NODE_IP]);

  // a pod interface p0 (its pod's address routed to it, the source check's map entry) and the uplink d0, each running its program
  ip(ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1');
  ip(ns, 'link', 'set', 'p0', 'up');
  ip(ns, 'link', 'set', 'p1', 'up');
  ip(ns, 'route', 'add', `${POD}/32`, 'dev', 'p0');
  const p0 = inNetns(ns, () =>
    native()
      .interfaces()
      .find((i) => i.name === 'p0'),
  )!.index;
  dp.maps.podSrcs.set({ prefixlen: 64, ifindex: p0, addr: POD }, { v: 1 });
  dp.maps.podSrcs.set({ prefixlen: 32, ifindex: p0, addr: '0.0.0.0' }, { v: 0 });
  inNetns(ns, () => {
    for (const [ifindex, fd] of [
      [node.ifindex, dp.programs.fromData.fd],
      [p0, dp.programs.fromPod.fd],
    ] as const) {
      native().tcHookCreate(ifindex);
      native().tcAttach(ifindex, 'ingress', fd, TC_HANDLE, TC_PRIORITY);
    }
  });

  // live state the traces must read and leave alone: a flow, an affinity entry
  const syn = inNetns(ns, () => runProg(dp, 'fromPod', tcpFrame(POD, '10.96.0.10', 40100, 80, TCP.SYN), p0));
  t.equal(syn.verdict, 'redirect', 'a real flow through the pod program');
  const realBackend = `${syn.out.dst}:${syn.out.dport}`;
  inNetns(ns, () => runProg(dp, 'fromPod', tcpFrame(POD, '10.96.0.50', 40200, 80, TCP.SYN), p0));
  const sticky = dp.maps.affinity.entries();
  t.equal(sticky.length, 1, 'an affinity entry');
  // a reset flow whose port the pod reuses to reach the backend directly: its reply entry waits out the RST timeout
  const reset = inNetns(ns, () => runProg(dp, 'fromPod', tcpFrame(POD, '10.96.0.10', 40150, 80, TCP.SYN), p0));
  inNetns(ns, () => runProg(dp, 'fromPod', tcpFrame(POD, '10.96.0.10', 40150, 80, TCP.RST), p0));

  const before = dumpMaps(pinDir);
  t.ok(Object.keys(before).length >= 12, `${Object.keys(before).length} pinned maps dumped`);

  const trace = (...args: string[]): TraceOutput => {
    const r = spawnSync(
      'nsenter',
      [`--net=${nsPath(ns)}`, '--', process.execPath, CLI, 'trace', '--pin-dir', pinDir, '--bpf-dir', BPF_DIR, '-o', 'json', ...args],
      { encoding: 'utf8', timeout: 60_000 },
    );
    t.equal(r.status, 0, `trace ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as TraceOutput;
  };
  const steps = (o: TraceOutput) => o.steps.map((s) => s.step);

  t.test('ClusterIP from a pod: its interface, frontend, candidates, the chosen backend, NAT, route', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.10:80');
    t.equal(o.hook, 'pod', "the pod's address picks the pod program");
    t.equal(o.iface, 'p0', 'and its interface');
    t.match(o.settings, /running on p0/);
    t.same(steps(o), ['conntrack', 'frontend', 'backend', 'nat', 'route']);
    t.match(o.steps[1], {
      data: { service: 'test/web:http/TCP', kind: 'ClusterIP', backends: ['10.244.1.11:8080 (local)', '10.244.1.12:8080 (local)'] },
    });
    const chosen = (o.steps[2]!.data as { chosen: string }).chosen;
    t.ok(['10.244.1.11:8080', '10.244.1.12:8080'].includes(chosen), `backend ${chosen}, one of the candidates`);
    t.match(o.steps[3], { data: { to: { src: POD, sport: 40000, dst: chosen.split(':')[0], dport: 8080 }, flags: [] } });
    t.match(o.steps[4], { data: { iface: 'd0' } });
    t.match(o.action, { action: 'redirect', text: /out of d0/ });
  });

  t.test('NodePort from outside to a remote endpoint: SNAT with the running program’s port range', async (t) => {
    const o = trace('--from', CLIENT, '--to', `${NODE_IP}:30081`, '--iface', 'd0');
    t.equal(o.hook, 'data');
    t.match(o.steps[1], { data: { service: 'test/remote:http/TCP', kind: 'NodePort' } });
    const nat = o.steps.find((s) => s.step === 'nat')!.data as { to: { src: string; sport: number; dst: string }; flags: string[] };
    t.equal(nat.to.src, NODE_IP, 'SNAT to the node');
    t.equal(nat.to.dst, '10.244.2.11');
    t.ok(
      nat.to.sport >= 31000 && nat.to.sport <= 31010,
      `source port ${nat.to.sport} from the agent's range 31000-31010, not the object's default`,
    );
    t.same(nat.flags, ['snat', 'external']);
    t.equal(o.action.action, 'redirect');
  });

  t.test('a service without endpoints: rejected', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.30:80');
    t.match(o.steps[2], { step: 'backend', data: { chosen: null, reason: 'no-endpoints' } });
    t.match(o.steps[3], { step: 'reason', data: { reason: 'no-endpoints', dropped: false, verdict: 'reject' } });
    t.match(o.action, { action: 'reject', text: /TCP RST/ });
  });

  t.test('not a service: passed untouched', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.99:80', '--proto', 'udp');
    t.same(steps(o), ['conntrack', 'frontend']);
    t.match(o.steps[1], { data: { found: false } });
    t.match(o.action, { action: 'pass', text: 'passed to the stack untouched' });
  });

  t.test('SCTP: an INIT to a TCP-only service address finds no frontend (the protocol is in the key)', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.10:80', '--proto', 'sctp');
    t.same(steps(o), ['conntrack', 'frontend']);
    t.match(o.steps[1], { text: /10\.96\.0\.10:80\/SCTP is not a service address here/ });
    t.match(o.action, { action: 'pass' });
  });

  t.test('a packet of a known flow: conntrack hit, the flow’s backend', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.10:80', '--sport', '40100', '--tcp-flags', 'ack');
    t.match(o.steps[0], { step: 'conntrack', data: { hit: true, dir: 'forward', service: 'test/web:http/TCP' } });
    const to = (o.steps[0]!.data as { to: { dst: string; dport: number } }).to;
    t.equal(`${to.dst}:${to.dport}`, realBackend, 'the backend the real flow got');
    t.match(o.action, { action: 'redirect' });
  });

  t.test('a SYN-ACK on a reset flow’s reply entry: told as a stale reply, passed untranslated, nothing removed', async (t) => {
    const o = trace(
      '--from',
      reset.out.dst,
      '--to',
      `${POD}:40150`,
      '--sport',
      String(reset.out.dport),
      '--tcp-flags',
      'syn,ack',
      '--iface',
      'd0',
    );
    // handled as a packet of no known flow, and told as a stale reply once it passes (one reason a packet)
    t.same(steps(o), ['conntrack', 'frontend', 'reason'], 'handled as a packet of no known flow');
    t.match(o.steps[0], { data: { hit: false } });
    t.match(o.steps[2], { step: 'reason', data: { reason: 'ct-stale-reply', dropped: false } });
    t.match(o.action, { action: 'pass' });
    t.ok(
      dp.maps.ct.get({ saddr: reset.out.dst, daddr: POD, sport: Number(reset.out.dport), dport: 40150, proto: 6 }),
      'the entry is still there',
    );
  });

  t.test('ClientIP affinity: the client’s earlier backend, said so', async (t) => {
    const o = trace('--from', POD, '--to', '10.96.0.50:80', '--sport', '40300');
    const b = o.steps.find((s) => s.step === 'backend')!.data as { chosen: string; how: string };
    t.equal(b.chosen, `${sticky[0]![1].backend.addr}:${sticky[0]![1].backend.port}`);
    t.match(b.how, /ClientIP affinity/);
  });

  t.test('the table for people', async (t) => {
    const r = spawnSync(
      'nsenter',
      [
        `--net=${nsPath(ns)}`,
        '--',
        process.execPath,
        CLI,
        'trace',
        '--pin-dir',
        pinDir,
        '--bpf-dir',
        BPF_DIR,
        '--from',
        POD,
        '--to',
        '10.96.0.30:80',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /^Packet {4}TCP 10\.244\.1\.99:40000 -> 10\.96\.0\.30:80 \[SYN\], into p0 \(pod program\)$/m);
    t.match(r.stdout, /^ 2 {2}frontend {2}test\/empty:http\/TCP \(ClusterIP\): no endpoints$/m);
    t.match(r.stdout, /^Action {4}rejected: a TCP RST goes back out of the interface it came in on$/m);
    t.match(r.stdout, /Nothing was sent and no map was written\.$/m);
  });

  t.test('every pinned map is byte for byte what it was', async (t) => {
    const after = dumpMaps(pinDir);
    for (const name of Object.keys(before)) t.equal(after[name], before[name], `${name} unchanged`);
    t.same(Object.keys(after), Object.keys(before), 'no map pinned or unpinned');
  });
});

t.test('without an agent’s maps: exit 1 naming the pin dir, nothing pinned', async (t) => {
  const dir = '/sys/fs/bpf/bpxt-trace-none';
  const r = spawnSync(process.execPath, [CLI, 'trace', '--pin-dir', dir, '--bpf-dir', BPF_DIR, '--from', POD, '--to', '10.96.0.10:80'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.equal(r.status, 1);
  t.match(r.stderr, /no pinned map at \/sys\/fs\/bpf\/bpxt-trace-none\/bpfproxy_\w+: is the agent running with --pin-dir/);
  t.notOk(spawnSync('test', ['-e', dir]).status === 0, 'no pin dir made');
});
