/**
 * `bpfproxy-bench engine-e2e`: the AF_XDP engine against the TC path end to
 * end, in namespaces this run creates and removes:
 *
 *   client (flood) --veth-- n0 [node: agent] n1 --veth-- backend
 *
 * 1. Packets per second: the same flood (bench/flood.c: 64-byte UDP frames
 *    from 128 clients to a NodePort whose endpoint is the backend, i.e. a
 *    remote endpoint: DNAT + SNAT) for the same time, first through the TC
 *    path (`--dataplane bpf`), then through the engine (`--dataplane
 *    afxdp`, one queue, copy mode on veth). Delivered = frames the backend's
 *    interface received in the window. The ratio engine / TC is of one run.
 *    When both deliver nearly all the generator sent, the figure is the
 *    generator's, not the dataplanes' (reported as such).
 * 2. Fallback under load: TCP streams through the engine while a UDP flood
 *    runs; the agent is killed (SIGKILL); the streams go on through the
 *    kernel path (the XDP program goes with the process; the engine mirrored
 *    its flows into the BPF conntrack). Broken streams are counted.
 * Every loop is bounded in count and time.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_CLI, REPO_ROOT, startAgent, startEcho, startStream, type AgentProcess, type StreamOutcome } from '../lab/lab.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import type { EngineStatus } from '../src/dataplane/afxdp/runtime.js';
import { environment, type Environment } from './environment.js';

export interface EngineE2eOptions {
  /** flood seconds per dataplane */
  seconds: number;
  /** TCP streams killed under load */
  streams: number;
}
export const ENGINE_E2E_FULL: EngineE2eOptions = { seconds: 10, streams: 8 };
export const ENGINE_E2E_SMOKE: EngineE2eOptions = { seconds: 2, streams: 2 };

export interface PpsFigure {
  dataplane: 'tc' | 'afxdp';
  sent: number;
  seconds: number;
  generatorPps: number;
  delivered: number;
  deliveredPps: number;
  lossPercent: number;
}

export interface EngineE2eResults {
  environment: Environment;
  options: EngineE2eOptions;
  pps: PpsFigure[];
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

function flood(ns: string, args: string[], seconds: number): Promise<FloodOut> {
  return new Promise((resolve, reject) => {
    const c = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', FLOOD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const kill = setTimeout(() => c.kill('SIGKILL'), (seconds + 10) * 1000);
    c.on('close', (code) => {
      clearTimeout(kill);
      if (code !== 0) return reject(new Error(`flood in ${ns} failed (${code}): ${err}`));
      resolve(JSON.parse(out.trim().split('\n').pop()!) as FloodOut);
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    ip(undefined, 'link', 'add', `bc${tag}`, 'type', 'veth', 'peer', 'name', `bn${tag}`);
    ip(undefined, 'link', 'set', `bc${tag}`, 'netns', client, 'name', 'c0');
    ip(undefined, 'link', 'set', `bn${tag}`, 'netns', node, 'name', 'n0');
    ip(undefined, 'link', 'add', `bb${tag}`, 'type', 'veth', 'peer', 'name', `bo${tag}`);
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
    startEcho(backend, 'backend');
    writeFileSync(join(dir, 'sink.yaml'), MANIFEST);
    const n0mac = macOf(node, 'n0');
    const where = ['--pin-dir', pinDir, '--state-dir', state];
    const agentFlags = (dataplane: string) => [
      '--state-dir',
      state,
      '--data-ifaces',
      '^n[01]$',
      '--dataplane',
      dataplane,
      ...(dataplane === 'afxdp' ? ['--afxdp-ifaces', '^n[01]$'] : []),
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
    const floodArgs = (seconds: number, rate?: number) => [
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
      '10.80.1.128/25',
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

    const pps: PpsFigure[] = [];
    let engineDrops: Record<string, number> = {};
    let kernelDrops: Record<string, number> = {};
    for (const dataplane of ['bpf', 'afxdp'] as const) {
      agent = startAgent(labNode, { manifests: dir }, agentFlags(dataplane));
      await agent.ready;
      if (dataplane === 'afxdp') {
        const until = Date.now() + 15_000;
        while (engineStats().steering.frontends < 2 && Date.now() < until) await sleep(250);
        if (engineStats().steering.frontends < 2) throw new Error('the engine did not take the NodePort within 15 s');
      }
      // warm-up: the flows (and, on the engine, the neighbour) exist before the window
      await flood(client, floodArgs(0.5, 20_000), 1);
      await sleep(300);
      const before = rxPackets(backend, 'b0');
      const f = await flood(client, floodArgs(o.seconds), o.seconds);
      await sleep(300);
      const delivered = rxPackets(backend, 'b0') - before;
      const fig: PpsFigure = {
        dataplane: dataplane === 'bpf' ? 'tc' : 'afxdp',
        sent: f.sent,
        seconds: +f.seconds.toFixed(3),
        generatorPps: Math.round(f.sent / f.seconds),
        delivered,
        deliveredPps: Math.round(delivered / f.seconds),
        lossPercent: +(Math.max(0, 1 - delivered / f.sent) * 100).toFixed(2),
      };
      say(
        `${fig.dataplane}: ${fig.deliveredPps.toLocaleString('en-US')} pps delivered of ${fig.generatorPps.toLocaleString('en-US')} sent (${fig.lossPercent}% lost)`,
      );
      pps.push(fig);
      if (dataplane === 'afxdp') {
        const st = engineStats();
        engineDrops = Object.fromEntries(Object.entries(st.engine.reasons).filter(([, v]) => v > 0));
        kernelDrops = Object.fromEntries(st.ports.map((p) => [p.name, (p.stats?.rxDropped ?? 0) + (p.stats?.rxRingFull ?? 0)]));
      }
      if (dataplane === 'bpf') {
        await agent.stop();
        agent = undefined;
      }
    }

    // fallback: streams through the engine, a flood beside them, SIGKILL
    const streams = Array.from({ length: o.streams }, () => startStream(client, NODE_IP, 30101, 4000, { interval: 50, chunk: 2048 }));
    const bg = flood(client, floodArgs(3.5, 100_000), 4);
    await sleep(1500);
    agent!.child.kill('SIGKILL');
    const outcomes = await Promise.all(streams);
    const floodDuring = (await bg).sent;
    agent = undefined;
    const broken = outcomes.filter((x) => !x.ok || x.received !== x.sent).length;
    say(`fallback: ${broken} of ${o.streams} TCP streams broke when the agent was killed under a UDP flood`);
    const [tc, af] = [pps[0]!, pps[1]!];
    return {
      environment: environment(),
      options: o,
      pps,
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
    `64-byte UDP frames (bench/flood.c, AF_PACKET, 128 clients) to a NodePort whose endpoint is on another node (DNAT + SNAT), ${r.options.seconds} s per dataplane, one run; delivered = frames the backend's interface received. Engine: one queue, AF_XDP copy mode (veth has no zero-copy).`,
    '',
    '| dataplane | sent | generator pps | delivered | delivered pps | lost |',
    '|---|---|---|---|---|---|',
    ...r.pps.map(
      (p) =>
        `| ${p.dataplane} | ${p.sent.toLocaleString('en-US')} | ${p.generatorPps.toLocaleString('en-US')} | ${p.delivered.toLocaleString('en-US')} | ${p.deliveredPps.toLocaleString('en-US')} | ${p.lossPercent}% |`,
    ),
    '',
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

export function writeEngineE2eResults(dir: string, r: EngineE2eResults): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(dir, 'report.md'), renderEngineE2e(r));
  return ['results.json', 'report.md'];
}
