/**
 * `bpfproxy bench cluster`: the k8s-bench-suite (knb) method against a real
 * cluster, with knb's options and JSON keys (knb 1.5.0's `-o json`: metadata
 * name, generator, version, date, server-node, client-node,
 * socket-buffer-size; data cpu, kernel, k8s-version, mtu, idle, pod2pod,
 * pod2svc), so results compare with what AKS/EKS users already run. Server
 * and client pods pinned to two named nodes; tests idle, pod-to-pod and
 * pod-to-service over TCP and UDP with iperf3; CPU and RAM of both nodes
 * averaged over each test window from monitor pods that sample /proc/stat and
 * /proc/meminfo.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, VersionApi, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { REPO_ROOT } from '../lab/lab.js';

/** The knb release whose JSON keys and -ot words these results follow. */
/** The parts of iperf3's JSON output the benchmark reads. */
interface IperfJson {
  end?: {
    sum_received?: { bits_per_second?: number };
    sum_sent?: { retransmits?: number };
    sum?: { bits_per_second?: number; lost_percent?: number };
  };
}

export const KNB_FORMAT = '1.5.0';

export interface ClusterOptions {
  /** knb's --name: the run's name in the results (default bpfproxy-<pid>, as knb's knb-<pid>) */
  name?: string;
  clientNode: string;
  serverNode: string;
  /** seconds per test */
  duration: number;
  tests: Array<'idle' | 'pod2pod.tcp' | 'pod2pod.udp' | 'pod2svc.tcp' | 'pod2svc.udp'>;
  /** iperf3 -w for UDP, knb's -sbs ("auto": leave it) */
  socketBufferSize: string;
  namespace: string;
  image: string;
  /** seconds to wait for a pod */
  podTimeout: number;
  keep: boolean;
  /** poll interval (ms); tests shorten it */
  pollMs?: number;
}

export interface CpuFigures {
  user: number;
  nice: number;
  system: number;
  iowait: number;
  steal: number;
  total: number;
}
export interface NodeFigures {
  cpu: CpuFigures;
  ram: number;
}
export interface TestFigures {
  bandwidth: number;
  client: NodeFigures;
  server: NodeFigures;
  retransmits?: number;
  lostPercent?: number;
}

/**
 * knb's JSON keys, plus ours. Results read from knb itself lack the keys
 * marked "ours" (compare.ts converts them).
 */
export interface ClusterResults {
  metadata: {
    name: string;
    generator: string;
    version: string;
    date: string;
    'server-node': string;
    'client-node': string;
    'socket-buffer-size': string;
    /** ours: the knb release whose format this follows */
    knbCompatible?: string;
    /** ours */
    duration?: number;
    namespace?: string;
    server?: string;
  };
  data: {
    /** CPU model of the server node, kernel, API server version, pod interface MTU (knb: discovered from the server pod) */
    cpu: string;
    kernel: string;
    'k8s-version': string;
    mtu: string;
    idle?: { bandwidth?: number; client: NodeFigures; server: NodeFigures };
    pod2pod?: { tcp?: TestFigures; udp?: TestFigures };
    pod2svc?: { tcp?: TestFigures; udp?: TestFigures };
  };
}

let ourVersion: string | undefined;
/** bpfproxy's version (package.json), the results' metadata.version as knb records its own. */
export function bpfproxyVersion(): string {
  try {
    const v = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version?: unknown }).version;
    ourVersion ??= typeof v === 'string' ? v : 'unknown';
  } catch {
    ourVersion = 'unknown';
  }
  return ourVersion;
}

/** knb's -ot words (all, tcp, udp, p2p, p2s, p2ptcp, p2pudp, p2stcp, p2sudp, idle; ours with underscores too) to our test names. */
export function parseOnlyTests(v: string): ClusterOptions['tests'] {
  const all: ClusterOptions['tests'] = ['idle', 'pod2pod.tcp', 'pod2pod.udp', 'pod2svc.tcp', 'pod2svc.udp'];
  const out = new Set<ClusterOptions['tests'][number]>();
  for (const w of v
    .split(',')
    .map((x) => x.trim().toLowerCase())
    .filter(Boolean)) {
    const m: Record<string, ClusterOptions['tests']> = {
      all,
      idle: ['idle'],
      tcp: ['pod2pod.tcp', 'pod2svc.tcp'],
      udp: ['pod2pod.udp', 'pod2svc.udp'],
      p2p: ['pod2pod.tcp', 'pod2pod.udp'],
      pod2pod: ['pod2pod.tcp', 'pod2pod.udp'],
      p2s: ['pod2svc.tcp', 'pod2svc.udp'],
      pod2svc: ['pod2svc.tcp', 'pod2svc.udp'],
      p2ptcp: ['pod2pod.tcp'],
      p2pudp: ['pod2pod.udp'],
      p2stcp: ['pod2svc.tcp'],
      p2sudp: ['pod2svc.udp'],
      p2p_tcp: ['pod2pod.tcp'],
      p2p_udp: ['pod2pod.udp'],
      p2s_tcp: ['pod2svc.tcp'],
      p2s_udp: ['pod2svc.udp'],
    };
    const got = m[w];
    if (!got) throw new Error(`-ot: unknown test "${w}" (known: ${Object.keys(m).join(', ')})`);
    for (const t of got) out.add(t);
  }
  return all.filter((t) => out.has(t));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * What knb discovers from the server node, printed once by the monitor: the
 * CPU model (last "model name" of /proc/cpuinfo), the kernel, and the MTU of
 * the pod's interface (the first non-loopback one that is up).
 */
const FACTS =
  'echo "FACT cpu $(grep "model name" /proc/cpuinfo | tail -n 1 | cut -d: -f2-)"; echo "FACT kernel $(uname -r)"; ' +
  'm=""; for i in /sys/class/net/*; do n=${i##*/}; [ "$n" = lo ] && continue; [ -z "$m" ] && m=$(cat $i/mtu); ' +
  '[ "$(cat $i/operstate 2>/dev/null)" = up ] && { m=$(cat $i/mtu); break; }; done; echo "FACT mtu $m"; ';
const MONITOR = `${FACTS}while true; do echo "T $(date +%s)"; head -1 /proc/stat; grep -E "^(MemTotal|MemAvailable):" /proc/meminfo; sleep 1; done`;

/** The FACT lines of a monitor's log (whitespace collapsed, as knb's echo does). */
export function parseFacts(log: string): { cpu: string; kernel: string; mtu: string } {
  const f: Record<string, string> = {};
  for (const line of log.split('\n')) {
    const m = /^FACT (cpu|kernel|mtu)(?: (.*))?$/.exec(line.trim());
    if (m) f[m[1]!] = (m[2] ?? '').trim().split(/\s+/).filter(Boolean).join(' ');
  }
  return { cpu: f.cpu ?? '', kernel: f.kernel ?? '', mtu: f.mtu ?? '' };
}

interface Sample {
  t: number;
  cpu: number[];
  memTotal: number;
  memAvail: number;
}

/** Parse a monitor pod's log into samples. */
export function parseMonitor(log: string): Sample[] {
  const out: Sample[] = [];
  let cur: Partial<Sample> = {};
  for (const line of log.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] === 'T') {
      if (cur.t !== undefined && cur.cpu && cur.memTotal) out.push(cur as Sample);
      cur = { t: Number(f[1]) };
    } else if (f[0] === 'cpu') cur.cpu = f.slice(1).map(Number);
    else if (f[0] === 'MemTotal:') cur.memTotal = Number(f[1]);
    else if (f[0] === 'MemAvailable:') cur.memAvail = Number(f[1]);
  }
  if (cur.t !== undefined && cur.cpu && cur.memTotal) out.push(cur as Sample);
  return out;
}

/** CPU (percent of all CPUs, by kind, as knb reports) and RAM used (MiB) over [from, to] seconds. */
export function windowFigures(samples: Sample[], from: number, to: number): NodeFigures {
  const zero = { cpu: { user: 0, nice: 0, system: 0, iowait: 0, steal: 0, total: 0 }, ram: 0 };
  // The samples that bracket the window (monitors sample once a second).
  const before = samples.filter((s) => s.t <= from).at(-1) ?? samples.find((s) => s.t >= from && s.t <= to);
  const after = samples.find((s) => s.t >= to) ?? samples.filter((s) => s.t >= from && s.t <= to).at(-1);
  if (!before || !after || after.t <= before.t) return zero;
  const inWin = samples.filter((s) => s.t >= before.t && s.t <= after.t);
  const a = before.cpu;
  const b = after.cpu;
  const d = b.map((x, i) => x - (a[i] ?? 0));
  const total = d.reduce((x, y) => x + y, 0) || 1;
  const pct = (i: number) => +((100 * (d[i] ?? 0)) / total).toFixed(2);
  const cpu = { user: pct(0), nice: pct(1), system: pct(2) + pct(5) + pct(6), iowait: pct(4), steal: pct(7), total: 0 };
  cpu.system = +cpu.system.toFixed(2);
  cpu.total = +(cpu.user + cpu.nice + cpu.system + cpu.iowait + cpu.steal).toFixed(2);
  const ram = inWin.reduce((x, s) => x + (s.memTotal - s.memAvail), 0) / inWin.length / 1024;
  return { cpu, ram: Math.round(ram) };
}

export class ClusterBench {
  private readonly core: CoreV1Api;
  private readonly version: VersionApi;
  private readonly poll: number;

  constructor(
    kc: KubeConfig,
    private readonly o: ClusterOptions,
    private readonly say: (s: string) => void = () => undefined,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.version = kc.makeApiClient(VersionApi);
    this.poll = o.pollMs ?? 1000;
  }

  /** The API server's version, as knb records from `kubectl version` (Server). */
  private async serverVersion(): Promise<string> {
    try {
      return (await this.version.getCode()).gitVersion;
    } catch (e) {
      this.say(`could not read the API server version from /version (${(e as Error).message}); k8s-version is recorded as "unknown"`);
      return 'unknown';
    }
  }

  private pod(name: string, node: string, command: string[], restart: 'Always' | 'Never'): V1Pod {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: this.o.namespace, labels: { app: 'bpfproxy-bench', role: name } },
      spec: {
        nodeName: node,
        restartPolicy: restart,
        terminationGracePeriodSeconds: 1,
        tolerations: [{ operator: 'Exists' }],
        containers: [{ name: 'main', image: this.o.image, command }],
      },
    };
  }

  private async waitPod(name: string, phases: string[]): Promise<V1Pod> {
    const deadline = Date.now() + this.o.podTimeout * 1000;
    for (;;) {
      const p = await this.core.readNamespacedPod({ name, namespace: this.o.namespace });
      const phase = p.status?.phase ?? 'Pending';
      if (phases.includes(phase)) return p;
      if (phase === 'Failed' && !phases.includes('Failed')) throw new Error(`pod ${name} failed: ${p.status?.message ?? ''}`);
      if (Date.now() > deadline) throw new Error(`pod ${name} not ${phases.join('/')} after ${this.o.podTimeout} s (phase ${phase})`);
      await sleep(this.poll);
    }
  }

  private async logs(name: string): Promise<string> {
    return this.core.readNamespacedPodLog({ name, namespace: this.o.namespace, container: 'main' });
  }

  private async remove(name: string): Promise<void> {
    await this.core.deleteNamespacedPod({ name, namespace: this.o.namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
  }

  private async iperfClient(name: string, target: string, udp: boolean): Promise<{ json: IperfJson; from: number; to: number }> {
    const args = ['iperf3', '-c', target, '-O', '1', '-f', 'm', '-t', String(this.o.duration), '-J'];
    if (udp) args.push('-u', '-b', '0', ...(this.o.socketBufferSize !== 'auto' ? ['-w', this.o.socketBufferSize] : []));
    await this.core.createNamespacedPod({ namespace: this.o.namespace, body: this.pod(name, this.o.clientNode, args, 'Never') });
    const p = await this.waitPod(name, ['Succeeded', 'Failed']);
    const log = await this.logs(name);
    await this.remove(name);
    if (p.status?.phase === 'Failed') throw new Error(`iperf3 client ${name} failed: ${log.slice(0, 300)}`);
    const term = p.status?.containerStatuses?.[0]?.state?.terminated;
    const to = term?.finishedAt ? new Date(term.finishedAt).getTime() / 1000 : Date.now() / 1000;
    const from = term?.startedAt ? new Date(term.startedAt).getTime() / 1000 + 1 : to - this.o.duration;
    return { json: JSON.parse(log) as IperfJson, from, to };
  }

  async run(): Promise<ClusterResults> {
    const o = this.o;
    const ns = o.namespace;
    const res: ClusterResults = {
      metadata: {
        name: o.name ?? `bpfproxy-${process.pid}`,
        generator: 'bpfproxy bench cluster',
        version: bpfproxyVersion(),
        date: new Date().toISOString(),
        'server-node': o.serverNode,
        'client-node': o.clientNode,
        'socket-buffer-size': o.socketBufferSize,
        knbCompatible: KNB_FORMAT,
        duration: o.duration,
        namespace: ns,
        server: '',
      },
      data: { cpu: '', kernel: '', 'k8s-version': await this.serverVersion(), mtu: '' },
    };
    await this.core.createNamespace({ body: { metadata: { name: ns } } }).catch((e: { code?: number }) => {
      if (e.code !== 409) throw e;
    });
    const pods = ['monitor-client', 'monitor-server', 'server'];
    try {
      this.say(`starting monitors on ${o.clientNode} and ${o.serverNode}, and the iperf3 server`);
      await this.core.createNamespacedPod({
        namespace: ns,
        body: this.pod('monitor-client', o.clientNode, ['sh', '-c', MONITOR], 'Always'),
      });
      await this.core.createNamespacedPod({
        namespace: ns,
        body: this.pod('monitor-server', o.serverNode, ['sh', '-c', MONITOR], 'Always'),
      });
      await this.core.createNamespacedPod({ namespace: ns, body: this.pod('server', o.serverNode, ['iperf3', '-s'], 'Always') });
      await this.core.createNamespacedService({
        namespace: ns,
        body: {
          metadata: { name: 'server', namespace: ns },
          spec: {
            selector: { role: 'server' },
            ports: [
              { name: 'tcp', port: 5201, protocol: 'TCP' },
              { name: 'udp', port: 5201, protocol: 'UDP' },
            ],
          },
        },
      });
      const server = await this.waitPod('server', ['Running']);
      await this.waitPod('monitor-client', ['Running']);
      await this.waitPod('monitor-server', ['Running']);
      const podIP = server.status?.podIP ?? '';
      const svc = await this.core.readNamespacedService({ name: 'server', namespace: ns });
      const svcIP = svc.spec?.clusterIP ?? '';
      res.metadata.server = podIP;
      const windows: Array<{ test: string; from: number; to: number; bw: number; retransmits?: number; lost?: number }> = [];
      if (o.tests.includes('idle')) {
        this.say(`idle for ${o.duration} s`);
        const from = Date.now() / 1000;
        await sleep(o.duration * 1000);
        windows.push({ test: 'idle', from, to: Date.now() / 1000, bw: 0 });
      }
      for (const test of o.tests.filter((x) => x !== 'idle')) {
        const [kind, proto] = test.split('.') as ['pod2pod' | 'pod2svc', 'tcp' | 'udp'];
        this.say(`${kind} ${proto.toUpperCase()} for ${o.duration} s`);
        const r = await this.iperfClient(`client-${kind}-${proto}`, kind === 'pod2pod' ? podIP : svcIP, proto === 'udp');
        const end = r.json.end ?? {};
        const bps = proto === 'tcp' ? end.sum_received?.bits_per_second : (end.sum_received?.bits_per_second ?? end.sum?.bits_per_second);
        windows.push({
          test,
          from: r.from,
          to: r.to,
          bw: Math.round((bps ?? 0) / 1e6),
          ...(proto === 'tcp' ? { retransmits: end.sum_sent?.retransmits ?? 0 } : { lost: end.sum?.lost_percent ?? 0 }),
        });
      }
      const clientSamples = parseMonitor(await this.logs('monitor-client'));
      const serverLog = await this.logs('monitor-server');
      const serverSamples = parseMonitor(serverLog);
      Object.assign(res.data, parseFacts(serverLog));
      for (const w of windows) {
        const client = windowFigures(clientSamples, w.from, w.to);
        const serverF = windowFigures(serverSamples, w.from, w.to);
        if (w.test === 'idle') {
          res.data.idle = { bandwidth: 0, client, server: serverF };
          continue;
        }
        const [kind, proto] = w.test.split('.') as ['pod2pod' | 'pod2svc', 'tcp' | 'udp'];
        (res.data[kind] ??= {})[proto] = {
          bandwidth: w.bw,
          client,
          server: serverF,
          ...(w.retransmits !== undefined ? { retransmits: w.retransmits } : {}),
          ...(w.lost !== undefined ? { lostPercent: w.lost } : {}),
        };
      }
      return res;
    } finally {
      if (!o.keep) {
        for (const p of pods) await this.remove(p);
        await this.core.deleteNamespacedService({ name: 'server', namespace: ns }).catch(() => undefined);
        await this.core.deleteNamespace({ name: ns }).catch(() => undefined);
      }
    }
  }
}

/** knb-style outputs. */
export function renderCluster(r: ClusterResults, format: 'text' | 'json' | 'yaml'): string {
  if (format === 'json') return `${JSON.stringify(r, null, 2)}\n`;
  if (format === 'yaml') return stringify(r);
  const lines = [
    `bpfproxy bench cluster (knb method) — ${r.metadata.name}, ${r.metadata.date}`,
    `server node ${r.metadata['server-node']}, client node ${r.metadata['client-node']}, ${r.metadata.duration ?? '?'} s per test`,
    `CPU ${r.data.cpu || 'unknown'}; kernel ${r.data.kernel || 'unknown'}; Kubernetes ${r.data['k8s-version'] || 'unknown'}; MTU ${r.data.mtu || 'unknown'}`,
    '',
  ];
  const row = (name: string, bw: string, c: NodeFigures, s: NodeFigures) =>
    `${name.padEnd(14)} ${bw.padStart(12)}   client cpu ${c.cpu.total.toFixed(1).padStart(5)}% ram ${String(c.ram).padStart(6)} MiB   server cpu ${s.cpu.total.toFixed(1).padStart(5)}% ram ${String(s.ram).padStart(6)} MiB`;
  if (r.data.idle) lines.push(row('idle', '-', r.data.idle.client, r.data.idle.server));
  for (const k of ['pod2pod', 'pod2svc'] as const) {
    for (const p of ['tcp', 'udp'] as const) {
      const t = r.data[k]?.[p];
      if (t) lines.push(row(`${k} ${p.toUpperCase()}`, `${t.bandwidth} Mbit/s`, t.client, t.server));
    }
  }
  return `${lines.join('\n')}\n`;
}
