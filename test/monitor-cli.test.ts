/**
 * `bpfproxy monitor` as an operator runs it: JSON lines and a table for the
 * events that pass its filters, a pcap file tcpdump reads, and a clean exit
 * on SIGINT that lets go of its slot (the datapath's check fails again).
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nsPath } from '../testkit/netns.js';
import { TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { CLI, tmpDir } from './helpers/agent-proc.js';
import { POD, progrunNode, type ProgrunNode } from './helpers/progrun-node.js';
import { until } from './helpers/wait.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { FULL_READ_MS, PodAddresses } from '../src/cli/monitor-pods.js';
import { tmpDatapath } from './helpers/env.js';
import { FIRST_DYNAMIC_IDENTITY, type CompiledPolicy, type EndpointPolicy } from '../src/model/policy/compiled.js';

const SVC = '10.96.0.10';

interface Monitor {
  child: ChildProcess;
  out: string[];
  err: string[];
  exited: Promise<number | null>;
}

function startMonitor(t: Parameters<typeof progrunNode>[0], node: ProgrunNode, pinDir: string, args: string[]): Monitor {
  const child = spawn('nsenter', [`--net=${nsPath(node.ns)}`, '--', process.execPath, CLI, 'monitor', '--pin-dir', pinDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const m: Monitor = { child, out: [], err: [], exited: new Promise((res) => child.on('exit', (code) => res(code))) };
  let o = '';
  child.stdout.on('data', (d: Buffer) => {
    o += d.toString();
    const lines = o.split('\n');
    o = lines.pop()!;
    m.out.push(...lines);
  });
  child.stderr.on('data', (d: Buffer) => m.err.push(...d.toString().split('\n').filter(Boolean)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await m.exited;
    }
  });
  return m;
}

const pinDirOf = (node: ProgrunNode) =>
  node.dp.objects[0]!.maps()
    .find((m) => m.name === 'bpfproxy_monitor_ctl')!
    .pinPath!.replace(/\/bpfproxy_monitor_ctl$/, '');

t.test('JSON lines through the filters, pcap for tcpdump, and the slot let go on SIGINT', async (t) => {
  const node = await progrunNode(t);
  t.same(
    node.rec.syncService('test/web', [fe('ClusterIP', SVC, 80, 'TCP', [be('10.244.1.11', 8080)], { servicePort: 'test/web:http/TCP' })])
      .problems,
    [],
  );
  t.same(node.rec.syncService('test/empty', [fe('ClusterIP', '10.96.0.30', 80, 'TCP', [])]).problems, []);
  const pin = pinDirOf(node);
  const pcap = join(tmpDir(t, 'bpfproxy-monitor-'), 'out.pcap');
  // only flows of test/web, and rejects: the UDP flow and the malformed packet are filtered out
  const json = startMonitor(t, node, pin, ['-o', 'json', '--proto', 'tcp', '--pcap', pcap, '--count', '3']);
  const table = startMonitor(t, node, pin, ['--type', 'drop', '--verdict', 'reject']);
  await until('both monitors listening', () => [json, table].every((m) => m.err.some((l) => /listening \(slot \d/.test(l))), 15_000);

  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: POD, dst: '10.96.0.99' }, { proto: 'udp', sport: 5000, dport: 53 });
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.RST | TCP.ACK });
  node.run('fromPod', { src: POD, dst: '10.96.0.30' }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN });

  t.equal(await json.exited, 0, `--count 3: exits 0 after three events (${json.err.join(' | ')})`);
  const events = json.out.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(events, [
    {
      type: 'flow-new',
      iface: 'd0',
      hook: 'pod',
      proto: 'TCP',
      src: POD,
      sport: 40000,
      dst: SVC,
      dport: 80,
      nat: { dst: '10.244.1.11', dport: 8080 },
      service: 'test/web:http/TCP',
    },
    { type: 'flow-close', closedBy: 'rst', service: 'test/web:http/TCP' },
    {
      type: 'drop',
      reason: 'no-endpoints',
      verdict: 'reject',
      dropped: false,
      answered: true,
      src: POD,
      sport: 40001,
      dst: '10.96.0.30',
      dport: 80,
    },
  ]);
  t.match(json.err.join('\n'), /3 events shown, \d+ received, 0 lost .*; 3 packets written to/);

  const dump = spawnSync('tcpdump', ['-n', '-r', pcap], { encoding: 'utf8' });
  t.equal(dump.status, 0, `tcpdump reads the file: ${dump.stderr}`);
  t.match(dump.stderr, /link-type EN10MB \(Ethernet\), snapshot length 128/);
  const pkts = dump.stdout.trim().split('\n');
  t.equal(pkts.length, 3, dump.stdout);
  t.match(pkts[0], new RegExp(`IP ${POD}\\.40000 > ${SVC}\\.80: Flags \\[S\\]`));
  t.match(pkts[1], new RegExp(`IP ${POD}\\.40000 > ${SVC}\\.80: Flags \\[R\\.\\]`));
  t.match(pkts[2], new RegExp(`IP 10\\.96\\.0\\.30\\.80 > ${POD}\\.40001: Flags \\[R\\.\\]`), 'the reject as sent back');

  await until('the table shows the reject', () => table.out.some((l) => /no-endpoints: rejected/.test(l)), 10_000);
  t.match(table.out[0], /^TIME\s+EVENT\s+IFACE\(HOOK\)\s+PACKET\s+WHAT$/);
  t.equal(table.out.length, 2, 'header and the one reject: flows are filtered out');
  t.match(table.out[1], new RegExp(`drop\\s+d0\\s+TCP ${POD}:40001 -> 10\\.96\\.0\\.30:80\\s+no-endpoints: rejected`));
  table.child.kill('SIGINT');
  t.equal(await table.exited, 0, 'SIGINT: exit 0');
  t.match(table.err.join('\n'), /1 events shown/);
  const ctl = node.dp.maps.monitorCtl.get({ v: 0 })!;
  t.equal(ctl.untilNs, 0n, 'the last monitor gone: the datapath check fails again');
  t.ok(
    ctl.slot.every((s) => s.owner === 0n),
    'every slot free',
  );
});

/** The names the agent pins with --network-policy=on: pods of this node, none isolated. */
function podsPolicy(generation: number, pods: Array<[number, string, string]>): CompiledPolicy {
  const endpoints: EndpointPolicy[] = pods.map(([id, pod, addr]) => ({
    id,
    pod,
    addresses: [addr],
    ingressIsolated: false,
    egressIsolated: false,
    entries: [],
  }));
  return {
    generation,
    identities: pods.map(([id, , addr]) => ({ prefix: `${addr}/32`, identity: FIRST_DYNAMIC_IDENTITY + id, endpoint: id })),
    endpoints,
    rules: [],
  };
}

t.test('--pod and --namespace: the addresses of the pods the pinned maps name, read again while running', async (t) => {
  const node = await progrunNode(t);
  const WEB = '10.244.1.11';
  const LATE = '10.244.1.50';
  t.same(node.rec.syncService('shop/web', [fe('ClusterIP', SVC, 80, 'TCP', [be(WEB, 8080)])]).problems, []);
  t.same(node.rec.syncService('shop/empty', [fe('ClusterIP', '10.96.0.30', 80, 'TCP', [])]).problems, []);
  const pin = pinDirOf(node);
  // started before the agent named any pod (as with --network-policy=off)
  const late = startMonitor(t, node, pin, ['-o', 'json', '--pod', 'shop/late']);
  await until('the early monitor listening', () => late.err.some((l) => /listening \(slot \d/.test(l)), 15_000);
  t.match(late.err.join('\n'), /--pod shop\/late: no pod shop\/late: the pinned maps name no pod at all: .*only with --network-policy=on/);

  const w = new PolicyMapWriter(node.dp.maps);
  const pods: Array<[number, string, string]> = [
    [1, 'shop/client', POD],
    [2, 'shop/web', WEB],
    [3, 'other/db', '10.244.1.60'],
  ];
  t.same(w.apply(podsPolicy(1, pods)).problems, []);
  const client = startMonitor(t, node, pin, ['-o', 'json', '--pod', 'shop/client', '--count', '2']);
  const web = startMonitor(t, node, pin, ['-o', 'json', '--pod', 'shop/web', '--count', '1']);
  const ns = startMonitor(t, node, pin, ['-o', 'json', '--namespace', 'shop']);
  await until('all monitors listening', () => [client, web, ns].every((m) => m.err.some((l) => /listening \(slot \d/.test(l))), 15_000);
  t.match(client.err.join('\n'), `--pod shop/client: ${POD}`);
  t.match(ns.err.join('\n'), `--namespace shop: 2 pod(s) on this node: shop/client (${POD}), shop/web (${WEB})`);

  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: LATE, dst: '10.96.0.30' }, { proto: 'tcp', sport: 40002, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: '10.244.1.60', dst: '10.96.0.30' }, { proto: 'tcp', sport: 40004, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: POD, dst: '10.96.0.30' }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN });

  t.equal(await client.exited, 0, `--pod shop/client --count 2 exits 0 (${client.err.join(' | ')})`);
  t.match(
    client.out.map((l) => JSON.parse(l) as unknown),
    [
      { type: 'flow-new', src: POD, dst: SVC, nat: { dst: WEB } },
      { type: 'drop', src: POD, sport: 40001 },
    ],
    'the client by its address before translation; the other pods’ packets left out',
  );
  t.equal(await web.exited, 0, `--pod shop/web --count 1 exits 0 (${web.err.join(' | ')})`);
  t.match(
    web.out.map((l) => JSON.parse(l) as unknown),
    [{ type: 'flow-new', src: POD, dst: SVC, nat: { dst: WEB, dport: 8080 } }],
    'the backend by its address after translation only',
  );

  // a pod of the namespace starts while the monitors run
  t.same(w.apply(podsPolicy(2, [...pods, [4, 'shop/late', LATE]])).problems, []);
  await until('both monitors read the names again', () => late.err.some((l) => l.includes(`--pod shop/late: now ${LATE}`)), 10_000);
  await until('the namespace monitor too', () => ns.err.some((l) => /--namespace shop: now 3 pod\(s\)/.test(l)), 10_000);
  node.run('fromPod', { src: LATE, dst: '10.96.0.30' }, { proto: 'tcp', sport: 40003, dport: 80, flags: TCP.SYN });
  await until('the late pod seen by both', () => [late, ns].every((m) => m.out.some((l) => l.includes('"sport":40003'))), 10_000);
  for (const m of [late, ns]) {
    m.child.kill('SIGINT');
    t.equal(await m.exited, 0);
  }
  t.match(
    late.out.map((l) => JSON.parse(l) as unknown),
    [{ type: 'drop', src: LATE, sport: 40003 }],
    'the late pod: only once it was named (its packet before is not matched)',
  );
  t.equal(late.out.length, 1);
  t.match(
    ns.out.map((l) => JSON.parse(l) as unknown),
    [
      { type: 'flow-new', src: POD },
      { type: 'drop', src: POD, sport: 40001 },
      { type: 'drop', src: LATE, sport: 40003 },
    ],
    '--namespace: every pod of it, the late one after the refresh; other/db left out',
  );
  t.equal(ns.out.length, 3);

  // a pod nobody named: said on stderr, the monitor keeps running
  const none = startMonitor(t, node, pin, ['--pod', 'shop/nope', '--for', '1s']);
  t.equal(await none.exited, 0, 'an unknown pod is not an error: it may start later');
  t.match(
    none.err.join('\n'),
    /--pod shop\/nope: no pod shop\/nope among the 4 pod\(s\) of this node in the pinned maps \(pods of that namespace here: shop\/client, shop\/late, shop\/web\); pods on other nodes have no name in this node’s maps.*nothing matches it until the agent names it/,
  );
  t.match(none.err.join('\n'), /0 events shown/);
});

t.test('pod names read again cheaply: the whole ipcache only when a selected pod may have changed', async (t) => {
  const dp = await tmpDatapath(t);
  const w = new PolicyMapWriter(dp.maps);
  t.same(
    w.apply(
      podsPolicy(1, [
        [1, 'shop/web', '10.244.1.11'],
        [2, 'other/db', '10.244.1.60'],
      ]),
    ).problems,
    [],
  );
  const said: string[] = [];
  const p = new PodAddresses(dp.maps, { pods: ['shop/web'], namespaces: [] }, (l) => said.push(l));
  t.same([...p.refresh(1000)], ['10.244.1.11']);
  t.same(said, ['--pod shop/web: 10.244.1.11']);
  t.same([...p.refresh(3000)], ['10.244.1.11']);
  t.equal(p.fullReads, 1, 'nothing changed: the names and one lookup per address, no whole read');

  t.same(
    w.apply(
      podsPolicy(2, [
        [1, 'shop/web', '10.244.1.11'],
        [2, 'other/db', '10.244.1.61'],
      ]),
    ).problems,
    [],
  );
  p.refresh(5000);
  t.equal(p.fullReads, 1, 'a pod not selected changed: no whole read');

  // recreated under the same name: the model keeps its endpoint id, the address changes
  t.same(
    w.apply(
      podsPolicy(3, [
        [1, 'shop/web', '10.244.1.12'],
        [2, 'other/db', '10.244.1.61'],
      ]),
    ).problems,
    [],
  );
  t.same([...p.refresh(7000)], ['10.244.1.12'], 'the old address gone from the ipcache: read whole, the new one found');
  t.equal(p.fullReads, 2);
  t.equal(said.at(-1), '--pod shop/web: now 10.244.1.12');

  t.same(w.apply(podsPolicy(4, [[2, 'other/db', '10.244.1.61']])).problems, []);
  t.same([...p.refresh(9000)], [], 'deleted: nothing matches');
  t.match(said.at(-1), /^--pod shop\/web: gone from the pinned maps \(was 10\.244\.1\.12\); nothing matches it until it is back$/);
  const reads = p.fullReads;
  p.refresh(9000 + FULL_READ_MS);
  t.equal(p.fullReads, reads + 1, `a whole read at least every ${FULL_READ_MS / 1000}s whatever else`);
});

t.test('--pod and --namespace reject what is no pod or namespace name', async (t) => {
  for (const args of [
    ['--pod', 'web'],
    ['--pod', 'a/b/c'],
    ['--namespace', 'Shop'],
  ]) {
    const r = spawnSync(process.execPath, [CLI, 'monitor', '--pin-dir', '/sys/fs/bpf/bpxt-none-here', ...args], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    t.equal(r.status, 1, args.join(' '));
    t.match(r.stderr, args[0] === '--pod' ? /--pod: ".*" is not NAMESPACE\/NAME/ : /--namespace: "Shop" is not a namespace name/);
  }
});

t.test('without an agent’s maps: exit 1 naming the pin dir', async (t) => {
  const r = spawnSync(process.execPath, [CLI, 'monitor', '--pin-dir', '/sys/fs/bpf/bpxt-none-here'], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /no pinned map at \/sys\/fs\/bpf\/bpxt-none-here\/bpfproxy_\w+: is the agent running with --pin-dir/);
});
