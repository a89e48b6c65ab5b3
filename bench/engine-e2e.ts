/**
 * `bpfproxy-bench engine-e2e`: the AF_XDP engine against the TC path end to
 * end, in namespaces this run creates and removes:
 *
 *   client (livegen or flood) --veth-- n0 [node: agent] n1 --veth-- backend
 *
 * 0. The generator's ceiling: the same flood into an XDP program that drops
 *    every frame on the node's first interface (nothing else runs): what
 *    the generator can send at all on this machine.
 * 1. Packets per second: the same flood (bench/livegen.c, BPF_PROG_RUN live
 *    frames, by default; bench/flood.c, AF_PACKET, with --generator flood:
 *    64-byte UDP frames from 128 clients to a NodePort whose endpoint is the backend, i.e. a
 *    remote endpoint: DNAT + SNAT) for the same time, first through the TC
 *    path (`--dataplane bpf`), then (full run) TC with XDP acceleration
 *    (`--xdp-acceleration native`), then through the engine (`--dataplane
 *    afxdp`, copy mode on veth). Delivered = frames the backend's interface
 *    received in the window. The ratio engine / TC is of one run. When both
 *    deliver nearly all the generator sent, the figure is the generator's,
 *    not the dataplanes' (reported as such).
 *    --queues 2: the veths get two RX/TX queues, the engine two workers
 *    (`--afxdp-queues 2`), and two generators run, pinned to CPU 0 and 1
 *    (the sending CPU picks the TX queue, so the peer's RX queue): the engine's per-queue RX counters show both workers
 *    fed. The engine's own clocks (ns per packet per node, share of the
 *    window its workers spent in the graph) and its worker threads' CPU
 *    time say where its time goes.
 * 2. Fallback under load: TCP streams through the engine while a UDP flood
 *    runs; the agent is killed (SIGKILL); the streams go on through the
 *    kernel path (the XDP program goes with the process; the engine mirrored
 *    its flows into the BPF conntrack). Broken streams are counted.
 * Every loop is bounded in count and time.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_CLI, REPO_ROOT, startAgent, startEcho, startStream, type AgentProcess, type StreamOutcome } from '../lab/lab.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import type { EngineStatus } from '../src/dataplane/afxdp/runtime.js';
import { environment, type Environment } from './environment.js';
import type { PpsGenerator } from './xdp.js';

export interface EngineE2eOptions {
  /** flood seconds per dataplane */
  seconds: number;
  /** TCP streams killed under load */
  streams: number;
  /** RX/TX queues of the veths, engine workers and generators (1 or 2) */
  queues: number;
  /** measure TC with --xdp-acceleration native too */
  xdp: boolean;
  /** packets/s generator: livegen (BPF_PROG_RUN live frames, default) or flood (AF_PACKET) */
  generator?: PpsGenerator;
}
export const ENGINE_E2E_FULL: EngineE2eOptions = { seconds: 10, streams: 8, queues: 1, xdp: true };
export const ENGINE_E2E_SMOKE: EngineE2eOptions = { seconds: 2, streams: 2, queues: 1, xdp: false };

export interface PpsFigure {
  dataplane: 'tc' | 'xdp' | 'afxdp';
  sent: number;
  seconds: number;
  generatorPps: number;
  delivered: number;
  deliveredPps: number;
  lossPercent: number;
  /** afxdp: frames per second each queue's worker received in the window */
  perQueuePps?: number[];
}

/** Where the engine's time went in its window (afxdp run). */
export interface EngineTime {
  /** ns per packet in each graph node (input: RX ring reads, output: TX ring writes and kicks) */
  nodeNsPerPacket: Record<string, number>;
  /** share of the window the workers spent in the graph (summed over workers) */
  busyPercent: number;
  /** CPU time of each worker thread in the window (user + system, s): includes the kernel's copy of each sent frame */
  workerCpuSeconds: number[];
  /** packets per vector (input node) */
  packetsPerVector: number;
}

export interface EngineE2eResults {
  environment: Environment;
  options: EngineE2eOptions;
  /** absent in results from before livegen: flood */
  generator?: PpsGenerator;
  /** the generator(s) alone into an XDP drop program on the node's first interface */
  generatorCeiling: { sent: number; seconds: number; pps: number };
  pps: PpsFigure[];
  engineTime?: EngineTime;
  /** engine delivered pps / TC delivered pps */
  ratio: number;
  generatorBound: boolean;
  fallback: { streams: number; broken: number; outcomes: StreamOutcome[]; floodDuring: number };
  engineDrops: Record<string, number>;
  /** frames the kernel could not hand to the engine (its RX ring full, or dropped at the socket), per interface */
  kernelDrops: Record<string, number>;
}

const NODE_IP = '10.80.1.1';
const SNAT_IP = '10.80.2.1';
const BACKEND = '10.80.2.2';
const FLOOD = join(REPO_ROOT, 'bench', '.output', 'flood');
const LIVEGEN = join(REPO_ROOT, 'bench', '.output', 'livegen');
const XDP_PASS = join(REPO_ROOT, 'bench', '.output', 'xdp-pass.o');

const MANIFEST = `apiVersion: v1
kind: Service
metadata: { name: sink, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.90
  ports:
  - { name: sink, port: 9, protocol: UDP, targetPort: 9, nodePort: 30100 }
  - { name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30101 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: sink-1, namespace: default, labels: { kubernetes.io/service-name: sink } }
addressType: IPv4
ports: [{ name: sink, port: 9, protocol: UDP }, { name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [${BACKEND}], nodeName: other-node }]
`;

const rxPackets = (ns: string, dev: string): number =>
  (JSON.parse(ip(ns, '-j', '-s', 'link', 'show', dev)) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
const macOf = (ns: string, dev: string): string =>
  (JSON.parse(ip(ns, '-j', 'link', 'show', dev)) as Array<{ address: string }>)[0]!.address;

interface FloodOut {
  sent: number;
  seconds: number;
  pps: number;
}

function flood(ns: string, args: string[], seconds: number, cpu?: number, tool = FLOOD): Promise<FloodOut> {
  return new Promise((resolve, reject) => {
    const cmd = ['nsenter', `--net=${nsPath(ns)}`, '--', tool, ...args];
    const c = spawn(cpu === undefined ? cmd[0]! : 'taskset', cpu === undefined ? cmd.slice(1) : ['-c', String(cpu), ...cmd], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const kill = setTimeout(() => c.kill('SIGKILL'), (seconds + 10) * 1000);
    c.on('close', (code) => {
      clearTimeout(kill);
      if (code !== 0) return reject(new Error(`${tool} in ${ns} failed (${code}): ${err}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!) as FloodOut);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds (user + system) of a process's threads whose name starts with prefix, by name. */
function threadCpu(pid: number, prefix: string): Map<string, number> {
  const out = new Map<string, number>();
  const tick = 100; // USER_HZ
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      if (!comm.startsWith(prefix)) continue;
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      out.set(comm, (Number(f[11]) + Number(f[12])) / tick);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

export async function runEngineE2e(o: EngineE2eOptions, say: (s: string) => void): Promise<EngineE2eResults> {
  const tag = uniqueTag(4);
  const names = { client: `bpxbe-c-${tag}`, node: `bpxbe-n-${tag}`, backend: `bpxbe-b-${tag}` };
  const pinDir = `/sys/fs/bpf/bpxbe-${tag}`;
  const state = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-engine-'));
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-engine-m-'));
  let agent: AgentProcess | undefined;
  try {
    for (const ns of Object.values(names)) addNetns(ns);
    const { client, node, backend } = names;
    const nq = String(o.queues);
    const q = ['numtxqueues', nq, 'numrxqueues', nq];
    ip(undefined, 'link', 'add', 'name', `bc${tag}`, ...q, 'type', 'veth', 'peer', 'name', `bn${tag}`, ...q);
    ip(undefined, 'link', 'set', `bc${tag}`, 'netns', client, 'name', 'c0');
    ip(undefined, 'link', 'set', `bn${tag}`, 'netns', node, 'name', 'n0');
    ip(undefined, 'link', 'add', 'name', `bb${tag}`, ...q, 'type', 'veth', 'peer', 'name', `bo${tag}`, ...q);
    ip(undefined, 'link', 'set', `bo${tag}`, 'netns', node, 'name', 'n1');
    ip(undefined, 'link', 'set', `bb${tag}`, 'netns', backend, 'name', 'b0');
    ip(client, 'addr', 'add', '10.80.1.2/24', 'dev', 'c0');
    ip(client, 'link', 'set', 'c0', 'up');
    ip(client, 'route', 'add', 'default', 'via', NODE_IP);
    ip(node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'n0');
    ip(node, 'addr', 'add', `${SNAT_IP}/24`, 'dev', 'n1');
    ip(node, 'link', 'set', 'n0', 'up');
    ip(node, 'link', 'set', 'n1', 'up');
    sysctl(node, 'net.ipv4.ip_forward', '1');
    ip(backend, 'addr', 'add', `${BACKEND}/24`, 'dev', 'b0');
    ip(backend, 'link', 'set', 'b0', 'up');
    ip(backend, 'route', 'add', 'default', 'via', SNAT_IP);
    // the sink port has no listener: keep the backend's port unreachables few
    sysctl(backend, 'net.ipv4.icmp_msgs_per_sec', '10');
    // NAPI on the backend's veth: what a peer's XDP redirect needs (XDP acceleration), for every dataplane
    ip(backend, 'link', 'set', 'dev', 'b0', 'xdp', 'obj', XDP_PASS, 'sec', 'xdp');
    startEcho(backend, 'backend');
    writeFileSync(join(dir, 'sink.yaml'), MANIFEST);
    const n0mac = macOf(node, 'n0');
    const where = ['--pin-dir', pinDir, '--state-dir', state];
    const agentFlags = (dataplane: 'bpf' | 'xdp' | 'afxdp') => [
      '--state-dir',
      state,
      '--data-ifaces',
      '^n[01]$',
      '--dataplane',
      dataplane === 'xdp' ? 'bpf' : dataplane,
      ...(dataplane === 'afxdp' ? ['--afxdp-ifaces', '^n[01]$', '--afxdp-queues', nq] : []),
      ...(dataplane === 'xdp' ? ['--xdp-acceleration', 'native'] : []),
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
      '--health-bind-address',
      '',
    ];
    const labNode = { name: 'bench-node', ns: node, ip: NODE_IP, podCidr: '10.244.9.0/24', pods: [], pinDir };
    const engineStats = (): EngineStatus => {
      const r = spawnSync(process.execPath, [AGENT_CLI, 'engine', 'stats', '-o', 'json', ...where], { encoding: 'utf8', timeout: 20_000 });
      if (r.status !== 0) throw new Error(`bpfproxy engine stats: ${r.stderr}`);
      return JSON.parse(r.stdout) as EngineStatus;
    };
    const floodArgs = (seconds: number, rate?: number, clients = '10.80.1.128/25') => [
      '--iface',
      'c0',
      '--dst-mac',
      n0mac,
      '--dst',
      NODE_IP,
      '--dport',
      '30100',
      '--kind',
      'udp',
      '--spoof-cidr',
      clients,
      '--sport',
      '5000',
      '--payload',
      '18',
      '--seconds',
      String(seconds),
      '--count',
      '10000000',
      ...(rate ? ['--rate', String(rate)] : []),
    ];

    const generator = o.generator ?? 'livegen';
    // livegen: the same 128 clients, one after the other (frame n from client n % 128), 64-byte frames
    const livegenArgs = (seconds: number, rate?: number, clients = '10.80.1.128/25') => {
      const [base, len] = clients.split('/');
      return [
        '--iface',
        'c0',
        '--dst-mac',
        n0mac,
        '--dst',
        NODE_IP,
        '--dport',
        '30100',
        '--kind',
        'udp',
        '--src',
        base!,
        '--srcs',
        String(2 ** (32 - Number(len))),
        '--sport',
        '5000',
        '--payload',
        '18',
        '--seconds',
        String(seconds),
        '--count',
        '1000000000',
        ...(rate ? ['--rate', String(rate)] : []),
      ];
    };
    const send = (seconds: number, rate: number | undefined, clients: string | undefined, cpu?: number) =>
      generator === 'livegen'
        ? flood(client, livegenArgs(seconds, rate, clients), seconds, cpu, LIVEGEN)
        : flood(client, floodArgs(seconds, rate, clients), seconds, cpu);

    // one generator per queue, each pinned to its own CPU (which picks its TX queue, so the node's RX queue)
    const floods = async (seconds: number, rate?: number): Promise<FloodOut> => {
      if (o.queues === 1) return send(seconds, rate, undefined);
      const cidrs = ['10.80.1.128/26', '10.80.1.192/26'];
      const all = await Promise.all(cidrs.slice(0, o.queues).map((c, i) => send(seconds, rate ? rate / o.queues : undefined, c, i)));
      const sent = all.reduce((a, f) => a + f.sent, 0);
      const secs = Math.max(...all.map((f) => f.seconds));
      return { sent, seconds: secs, pps: sent / secs };
    };

    // the generator alone: everything dropped at the node's first XDP hook
    ip(node, 'link', 'set', 'dev', 'n0', 'xdp', 'obj', XDP_PASS, 'sec', 'xdp_drop');
    const g = await floods(Math.min(o.seconds, 3));
    ip(node, 'link', 'set', 'dev', 'n0', 'xdp', 'off');
    const generatorCeiling = { sent: g.sent, seconds: +g.seconds.toFixed(3), pps: Math.round(g.sent / g.seconds) };
    say(`generator alone (into an XDP drop): ${generatorCeiling.pps.toLocaleString('en-US')} pps`);

    const pps: PpsFigure[] = [];
    let engineDrops: Record<string, number> = {};
    let kernelDrops: Record<string, number> = {};
    let engineTime: EngineTime | undefined;
    const dataplanes = o.xdp ? (['bpf', 'xdp', 'afxdp'] as const) : (['bpf', 'afxdp'] as const);
    for (const dataplane of dataplanes) {
      // livegen's XDP frames reach n0 only with NAPI on, which a veth has while it runs an XDP program:
      // the TC path gets a pass-through one (xdp and afxdp attach their own)
      const napi = dataplane === 'bpf' && generator === 'livegen';
      if (napi) ip(node, 'link', 'set', 'dev', 'n0', 'xdp', 'obj', XDP_PASS, 'sec', 'xdp');
      agent = startAgent(labNode, { manifests: dir }, agentFlags(dataplane));
      await agent.ready;
      if (dataplane === 'afxdp') {
        const until = Date.now() + 15_000;
        while (engineStats().steering.frontends < 2 && Date.now() < until) await sleep(250);
        if (engineStats().steering.frontends < 2) throw new Error('the engine did not take the NodePort within 15 s');
      }
      if (dataplane === 'xdp') {
        const until = Date.now() + 15_000;
        while (!ip(node, 'link', 'show', 'n0').includes('prog/xdp') && Date.now() < until) await sleep(250);
        if (!ip(node, 'link', 'show', 'n0').includes('prog/xdp'))
          throw new Error('--xdp-acceleration native: no XDP program on n0 within 15 s (see the agent log)');
      }
      // warm-up: the flows (and, on the engine, the neighbour) exist before the window
      await floods(0.5, 20_000);
      await sleep(300);
      const before = rxPackets(backend, 'b0');
      const st0 = dataplane === 'afxdp' ? engineStats() : undefined;
      const cpu0 = dataplane === 'afxdp' ? threadCpu(agent.child.pid!, 'bpfproxy-xsk') : undefined;
      const f = await floods(o.seconds);
      const cpu1 = dataplane === 'afxdp' ? threadCpu(agent.child.pid!, 'bpfproxy-xsk') : undefined;
      await sleep(300);
      const delivered = rxPackets(backend, 'b0') - before;
      const fig: PpsFigure = {
        dataplane: dataplane === 'bpf' ? 'tc' : dataplane,
        sent: f.sent,
        seconds: +f.seconds.toFixed(3),
        generatorPps: Math.round(f.sent / f.seconds),
        delivered,
        deliveredPps: Math.round(delivered / f.seconds),
        lossPercent: +(Math.max(0, 1 - delivered / f.sent) * 100).toFixed(2),
      };
      if (dataplane === 'afxdp') {
        const st = engineStats();
        const rxq = (s: EngineStatus) => s.ports.find((p) => p.name === 'n0')?.stats?.rxQueues ?? [];
        const [q0, q1] = [rxq(st0!), rxq(st)];
        fig.perQueuePps = q1.map((v, i) => Math.round((v - (q0[i] ?? 0)) / f.seconds));
        engineDrops = Object.fromEntries(Object.entries(st.engine.reasons).filter(([, v]) => v > 0));
        kernelDrops = Object.fromEntries(st.ports.map((p) => [p.name, (p.stats?.rxDropped ?? 0) + (p.stats?.rxRingFull ?? 0)]));
        const nodes0 = new Map(st0!.engine.nodes.map((n) => [n.name, n]));
        const nodeNsPerPacket: Record<string, number> = {};
        let busyNs = 0;
        for (const n of st.engine.nodes) {
          const b = nodes0.get(n.name);
          const dp = n.packets - (b?.packets ?? 0);
          const dns = n.ns - (b?.ns ?? 0);
          busyNs += dns;
          if (dp > 0) nodeNsPerPacket[n.name] = +(dns / dp).toFixed(1);
        }
        const input = st.engine.nodes.find((n) => n.name === 'input');
        const input0 = nodes0.get('input');
        const vecs = (input?.vectors ?? 0) - (input0?.vectors ?? 0);
        engineTime = {
          nodeNsPerPacket,
          busyPercent: +((busyNs / (f.seconds * 1e9)) * 100).toFixed(1),
          workerCpuSeconds: [...cpu1!.entries()]
            .sort(([a], [b]) => a.localeCompare(b))
            .map(([k, v]) => +(v - (cpu0!.get(k) ?? 0)).toFixed(2)),
          packetsPerVector: vecs > 0 ? +(((input?.packets ?? 0) - (input0?.packets ?? 0)) / vecs).toFixed(1) : 0,
        };
      }
      say(
        `${fig.dataplane}: ${fig.deliveredPps.toLocaleString('en-US')} pps delivered of ${fig.generatorPps.toLocaleString('en-US')} sent (${fig.lossPercent}% lost)${fig.perQueuePps ? `; per queue received ${fig.perQueuePps.map((x) => x.toLocaleString('en-US')).join(' + ')} pps` : ''}`,
      );
      pps.push(fig);
      if (dataplane !== 'afxdp') {
        await agent.stop();
        agent = undefined;
      }
      if (napi) ip(node, 'link', 'set', 'dev', 'n0', 'xdp', 'off');
    }

    // fallback: streams through the engine, a flood beside them, SIGKILL. Always flood (AF_PACKET): its
    // skbs reach n0 after the kill too, when n0 has no XDP program left (so no NAPI for livegen's frames)
    const streams = Array.from({ length: o.streams }, () => startStream(client, NODE_IP, 30101, 4000, { interval: 50, chunk: 2048 }));
    const bg = flood(client, floodArgs(3.5, 100_000), 4);
    await sleep(1500);
    agent!.child.kill('SIGKILL');
    const outcomes = await Promise.all(streams);
    const floodDuring = (await bg).sent;
    agent = undefined;
    const broken = outcomes.filter((x) => !x.ok || x.received !== x.sent).length;
    say(`fallback: ${broken} of ${o.streams} TCP streams broke when the agent was killed under a UDP flood`);
    const [tc, af] = [pps[0]!, pps.at(-1)!];
    return {
      environment: environment(),
      options: o,
      generator,
      generatorCeiling,
      pps,
      ...(engineTime ? { engineTime } : {}),
      ratio: +(af.deliveredPps / Math.max(1, tc.deliveredPps)).toFixed(2),
      generatorBound: tc.lossPercent < 3 && af.lossPercent < 3,
      fallback: { streams: o.streams, broken, outcomes, floodDuring },
      engineDrops,
      kernelDrops,
    };
  } finally {
    if (agent) {
      agent.child.kill('SIGKILL');
      await sleep(200);
    }
    for (const ns of Object.values(names)) delNetns(ns);
    rmSync(pinDir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

export function renderEngineE2e(r: EngineE2eResults): string {
  return [
    '# AF_XDP engine vs TC path, end to end on veth',
    '',
    `${r.environment.date}, kernel ${r.environment.kernel}, ${r.environment.cpus} × ${r.environment.cpuModel}.`,
    '',
    `64-byte UDP frames (${r.generator === 'livegen' ? 'bench/livegen.c: BPF_PROG_RUN live frames sent by XDP_TX out of the client veth' : 'bench/flood.c, AF_PACKET, one sendto() a frame'}, 128 clients) to a NodePort whose endpoint is on another node (DNAT + SNAT), ${r.options.seconds} s per dataplane, one run; delivered = frames the backend's interface received. ${
      r.options.queues === 1
        ? 'One queue: one generator, one engine worker'
        : `${r.options.queues} queues: veths with ${r.options.queues} RX/TX queues, ${r.options.queues} generators pinned to CPUs 0-${r.options.queues - 1} (the sending CPU picks the queue), ${r.options.queues} engine workers (--afxdp-queues ${r.options.queues})`
    }; AF_XDP copy mode (veth has no zero-copy); xdp = the TC path with --xdp-acceleration native.`,
    '',
    `Generator alone (its frames dropped by an XDP program on the node's first interface): **${r.generatorCeiling.pps.toLocaleString('en-US')} pps** (${r.generatorCeiling.sent.toLocaleString('en-US')} frames in ${r.generatorCeiling.seconds} s): the ceiling of any dataplane below.` +
      (r.generator === 'livegen'
        ? " On a veth the node's receive runs on the generator's CPU, in the softirq each batch of frames raises, so a dataplane's figure is generator + dataplane per packet on that core. livegen's frames reach n0 as XDP frames, which a veth takes only with NAPI on: for the TC path n0 runs a pass-through XDP program (bench/xdp-pass.c), so its figure includes that program and the frame's conversion to an skb."
        : ''),
    '',
    '| dataplane | sent | generator pps | delivered | delivered pps | lost | engine RX per queue (pps) |',
    '|---|---|---|---|---|---|---|',
    ...r.pps.map(
      (p) =>
        `| ${p.dataplane} | ${p.sent.toLocaleString('en-US')} | ${p.generatorPps.toLocaleString('en-US')} | ${p.delivered.toLocaleString('en-US')} | ${p.deliveredPps.toLocaleString('en-US')} | ${p.lossPercent}% | ${p.perQueuePps ? p.perQueuePps.map((x) => x.toLocaleString('en-US')).join(' + ') : '-'} |`,
    ),
    '',
    ...(r.engineTime
      ? [
          `Where the engine's time went in its window: ${Object.entries(r.engineTime.nodeNsPerPacket)
            .map(([k, v]) => `${k} ${v} ns`)
            .join(
              ', ',
            )} per packet; ${r.engineTime.packetsPerVector} packets per vector; the workers spent ${r.engineTime.busyPercent}% of the window in the graph (summed over workers), and used ${r.engineTime.workerCpuSeconds.join(' + ')} s of CPU (user + system: the kernel's copy of every frame they send is theirs).`,
          '',
        ]
      : []),
    `Engine / TC delivered: **${r.ratio}×**${r.generatorBound ? ' (both delivered nearly everything sent: the generator is the limit, not the dataplanes)' : ''}.`,
    '',
    `Engine drops by reason during the run: ${
      Object.entries(r.engineDrops)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }; frames the kernel could not hand to the engine (its socket's RX ring full, or dropped there): ${
      Object.entries(r.kernelDrops)
        .map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`)
        .join(', ') || 'none'
    }.`,
    '',
    `Fallback: ${r.fallback.streams} TCP streams through the engine with a 100 kpps UDP flood beside them (${r.fallback.floodDuring.toLocaleString('en-US')} frames); agent killed (SIGKILL) after 1.5 s: **${r.fallback.broken} broken**.`,
    '',
  ].join('\n');
}

/** results.json and report.md; with more than one queue results-<n>q.json and report-<n>q.md beside them. */
export function writeEngineE2eResults(dir: string, r: EngineE2eResults): string[] {
  mkdirSync(dir, { recursive: true });
  const sfx = r.options.queues > 1 ? `-${r.options.queues}q` : '';
  writeFileSync(join(dir, `results${sfx}.json`), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(dir, `report${sfx}.md`), renderEngineE2e(r));
  return [`results${sfx}.json`, `report${sfx}.md`];
}
