/**
 * `bpfproxy bench local`: every variant in the same run, on the same
 * topology, fresh namespaces for each, several repetitions; every figure
 * also as a ratio to the direct baseline measured at the same N.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { environment, type Environment } from './environment.js';
import { crr, iperf, type CrrResult, type IperfResult } from './measure.js';
import { percentile, summarize, type Summary } from './stats.js';
import { createTopology, destroyTopology, CRR_PORT, IPERF_PORT } from './topology.js';
import { benchServices, MEASURED_VIP, program, VARIANTS, type Variant } from './variants.js';
import type { KubeProxyIptablesFigures } from './kube-proxy-iptables.js';
import { addNetns, delNetns, nsPath, uniqueTag } from '../testkit/netns.js';
import { spawn } from 'node:child_process';
import { AGENT_CLI } from '../lab/lab.js';
import { AGENT_NODE_FLAGS } from '../src/paths.js';
import { stringify } from 'yaml';
import { native } from '../src/native/index.js';
import { FakeApiServer, writeKubeconfig } from '../testkit/fake-apiserver.js';

export interface LocalOptions {
  services: number[];
  endpoints: number;
  reps: number;
  seconds: number;
  endpointChanges: number;
  packetServices: number[];
  rssServices: number;
  rssEndpoints: number;
  programTarget: { services: number; endpoints: number };
  threads: number;
  variants: Variant[];
  smoke: boolean;
  /**
   * Seconds any one iptables command of the kube-proxy iptables variant may
   * run before it is killed and recorded as "did not finish" (iptables-nft
   * 1.8.9's --noflush restore grows with the square of the chains: its first
   * full sync takes about 20 s at 10K services on a quiet machine and several
   * minutes at 30K). Absent in results saved before it existed (no limit then).
   */
  iptablesTimeoutS?: number;
}

export const FULL: LocalOptions = {
  services: [1, 1000, 10000, 30000],
  endpoints: 1,
  reps: 3,
  seconds: 3,
  endpointChanges: 20,
  packetServices: [1, 1000, 10000, 30000, 100000],
  rssServices: 10000,
  rssEndpoints: 10,
  programTarget: { services: 10000, endpoints: 10 },
  threads: 2,
  variants: [...VARIANTS],
  smoke: false,
  iptablesTimeoutS: 600,
};

export const SMOKE: LocalOptions = {
  services: [1, 10],
  endpoints: 1,
  reps: 1,
  seconds: 1,
  endpointChanges: 3,
  packetServices: [1, 10],
  rssServices: 10,
  rssEndpoints: 2,
  programTarget: { services: 10, endpoints: 2 },
  threads: 2,
  variants: [...VARIANTS],
  smoke: true,
  iptablesTimeoutS: 60,
};

export interface VariantRun {
  variant: Variant;
  services: number;
  programMs: number;
  endpointChangeMs: { p50: number; p99: number; samples: number[] } | null;
  tcpGbps: Summary;
  tcpRetransmits: number[];
  tcpCpuSecPerGbit: Summary;
  udpGbps: Summary;
  udpLostPercent: number[];
  udpCpuSecPerGbit: Summary;
  crrRate: Summary;
  crrP50us: Summary;
  crrP99us: Summary;
  crrErrors: number[];
  generatorCpu: number[];
  generatorSaturated: boolean;
  errors: string[];
  /** steps that ran past their time limit and were killed (the kube-proxy iptables variant), one sentence each */
  didNotFinish?: string[];
  /** kube-proxy iptables: its syncs, its hourly sync and idle CPU (already added into the CPU per Gbit figures) */
  kubeProxy?: KubeProxyIptablesFigures;
}

export interface LocalResults {
  kind: 'bpfproxy-bench-local';
  environment: Environment;
  options: LocalOptions;
  runs: VariantRun[];
  packetNs: Array<{ services: number; newFlowNs: number; establishedNs: number }>;
  programming: { services: number; endpoints: number; ms: number } | null;
  agentRss: AgentRss[];
}

const okNum = (x: number) => (Number.isFinite(x) ? x : 0);

export async function runLocal(
  o: LocalOptions,
  log: (s: string) => void = () => undefined,
  /** called with everything measured so far after each step, so a crash loses nothing */
  onStep: (partial: LocalResults) => void = () => undefined,
): Promise<LocalResults> {
  const env = environment();
  const steps = o.services.length * o.variants.length + o.packetServices.length + 2;
  const bar =
    process.stderr.isTTY && !o.smoke
      ? new cliProgress.SingleBar({ format: 'bench [{bar}] {value}/{total} {step}', hideCursor: true }, cliProgress.Presets.shades_classic)
      : undefined;
  bar?.start(steps, 0, { step: '' });
  const step = (s: string) => {
    if (bar) bar.increment({ step: s });
    else log(s);
  };
  const runs: VariantRun[] = [];
  const packetNs: LocalResults['packetNs'] = [];
  const agentRss: AgentRss[] = [];
  let programming: LocalResults['programming'] = null;
  const snapshot = (): LocalResults => ({
    kind: 'bpfproxy-bench-local',
    environment: env,
    options: o,
    runs,
    packetNs,
    programming,
    agentRss,
  });
  try {
    for (const n of o.services) {
      const svcs = benchServices(n, o.endpoints);
      for (const v of o.variants) {
        step(`${v} at ${n} services`);
        runs.push(await runVariant(v, n, svcs, o));
        onStep(snapshot());
      }
    }
    for (const n of o.packetServices) {
      step(`per-packet ns at ${n} services`);
      const topo = createTopology('bxp', 1);
      try {
        const p = await program('bpfproxy', topo, benchServices(n, 1));
        try {
          const r = p.packetNs!();
          packetNs.push({ services: n, newFlowNs: r.newFlow, establishedNs: r.established });
        } finally {
          p.close();
        }
      } finally {
        destroyTopology(topo);
      }
      onStep(snapshot());
    }
    step(`programming ${o.programTarget.services} services x ${o.programTarget.endpoints} endpoints`);
    programming = await programmingTarget(o);
    onStep(snapshot());
    step(`agent memory at ${o.rssServices} services x ${o.rssEndpoints} endpoints`);
    for (const src of ['manifests', 'kubernetes'] as const) {
      const m = await measureAgentRss(o.rssServices, o.rssEndpoints, src);
      if (m) agentRss.push(m);
      onStep(snapshot());
    }
    return snapshot();
  } finally {
    bar?.stop();
  }
}

async function runVariant(v: Variant, n: number, svcs: ReturnType<typeof benchServices>, o: LocalOptions): Promise<VariantRun> {
  const topo = createTopology(`bx${v[0]}`, o.endpoints);
  const errors: string[] = [];
  try {
    const p = await program(v, topo, svcs, { iptablesTimeoutMs: (o.iptablesTimeoutS ?? FULL.iptablesTimeoutS!) * 1000 });
    try {
      if (!p.programmed) return unprogrammedRun(v, n, p.didNotFinish);
      const changes: number[] = [];
      if (v !== 'direct') {
        // a partial iptables-restore --noflush still takes seconds at 10K+ services
        // (iptables-nft loads the whole table): fewer samples there, enough to
        // span two of kube-proxy's 30 s cleanup periods
        const k = v === 'iptables' && n >= 10000 ? Math.min(o.endpointChanges, 8) : o.endpointChanges;
        for (let i = 0; i < k; i++) {
          const ms = p.endpointChange(i);
          if (!Number.isFinite(ms) && p.didNotFinish.length) break; // killed at its time limit (recorded in didNotFinish)
          changes.push(ms);
        }
      }
      // kube-proxy's own periodic work, amortized into the CPU figures below
      const kubeProxy = p.kubeProxy?.();
      const idleCpu = kubeProxy?.idleCpuSecPerSec ?? 0;
      const withIdle = (x: IperfResult) => okNum(x.cpuSecPerGbit) + (x.gbps > 0 ? idleCpu / x.gbps : 0);
      const target = v === 'direct' ? topo.server.ip : MEASURED_VIP;
      const crrPort = v === 'direct' ? CRR_PORT : 80;
      const tcp: IperfResult[] = [];
      const udp: IperfResult[] = [];
      const cr: CrrResult[] = [];
      for (let r = 0; r < o.reps; r++) {
        tcp.push(iperf(topo.client.ns, target, IPERF_PORT, o.seconds, false));
        udp.push(iperf(topo.client.ns, target, IPERF_PORT, o.seconds, true));
        cr.push(crr(topo.client.ns, target, crrPort, o.seconds * 1000, o.threads));
      }
      for (const x of [...tcp, ...udp, ...cr]) if (x.error) errors.push(x.error);
      return {
        variant: v,
        services: n,
        programMs: +p.programMs.toFixed(2),
        endpointChangeMs: changes.length
          ? {
              p50: +percentile(changes, 0.5).toFixed(3),
              p99: +percentile(changes, 0.99).toFixed(3),
              samples: changes.map((x) => +x.toFixed(3)),
            }
          : null,
        tcpGbps: summarize(tcp.map((x) => x.gbps)),
        tcpRetransmits: tcp.map((x) => x.retransmits),
        tcpCpuSecPerGbit: summarize(tcp.map(withIdle)),
        udpGbps: summarize(udp.map((x) => x.gbps)),
        udpLostPercent: udp.map((x) => x.lostPercent),
        udpCpuSecPerGbit: summarize(udp.map(withIdle)),
        crrRate: summarize(cr.map((x) => x.rate)),
        crrP50us: summarize(cr.map((x) => okNum(x.p50us))),
        crrP99us: summarize(cr.map((x) => okNum(x.p99us))),
        crrErrors: cr.map((x) => x.errors),
        generatorCpu: cr.map((x) => x.generatorCpu),
        generatorSaturated: cr.some((x) => x.generatorCpu > 0.9),
        errors,
        ...(p.didNotFinish.length ? { didNotFinish: p.didNotFinish } : {}),
        ...(kubeProxy ? { kubeProxy } : {}),
      };
    } finally {
      p.close();
    }
  } finally {
    destroyTopology(topo);
  }
}

/** A variant whose programming did not finish in its time limit: no traffic went through it, so no figures. */
export function unprogrammedRun(variant: Variant, services: number, didNotFinish: string[]): VariantRun {
  const none = summarize([]);
  return {
    variant,
    services,
    programMs: NaN,
    endpointChangeMs: null,
    tcpGbps: none,
    tcpRetransmits: [],
    tcpCpuSecPerGbit: none,
    udpGbps: none,
    udpLostPercent: [],
    udpCpuSecPerGbit: none,
    crrRate: none,
    crrP50us: none,
    crrP99us: none,
    crrErrors: [],
    generatorCpu: [],
    generatorSaturated: false,
    errors: [],
    didNotFinish,
  };
}

async function programmingTarget(o: LocalOptions): Promise<LocalResults['programming']> {
  const topo = createTopology('bxg', 1);
  try {
    const svcs = benchServices(o.programTarget.services, o.programTarget.endpoints);
    const p = await program('bpfproxy', topo, svcs);
    p.close();
    return { services: o.programTarget.services, endpoints: o.programTarget.endpoints, ms: +p.programMs.toFixed(1) };
  } finally {
    destroyTopology(topo);
  }
}

export interface AgentRss {
  source: 'manifests' | 'kubernetes';
  services: number;
  endpoints: number;
  rssMiB: number;
  readyMs: number;
}

/** The Services and EndpointSlices (E endpoints each) of N bench services, as Kubernetes objects. */
export function agentObjects(n: number, e: number): Array<Record<string, unknown> & { kind: string }> {
  const svcs = benchServices(n, e).filter((x) => x.name !== 'measured');
  return svcs.flatMap((s) => [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: s.name, namespace: s.namespace },
      spec: { clusterIP: s.clusterIP, selector: { app: s.name }, ports: [{ name: s.portName, port: s.port, targetPort: 8080 }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      addressType: 'IPv4',
      metadata: { name: `${s.name}-1`, namespace: s.namespace, labels: { 'kubernetes.io/service-name': s.name } },
      ports: [{ name: s.portName, port: 8080, protocol: 'TCP' }],
      endpoints: s.endpoints.map((x) => ({ addresses: [x.ip], nodeName: 'other' })),
    },
  ]);
}

/**
 * Objects as YAML files of 500 services each: one file of them all is
 * past the agent's limit on one manifest file (--manifest-max-file-size, 8 MiB).
 */
export function writeManifestFiles(dir: string, objs: object[]): void {
  for (let i = 0; i < objs.length; i += 1000) {
    const name = `services-${String(i / 1000).padStart(4, '0')}.yaml`;
    writeFileSync(
      join(dir, name),
      objs
        .slice(i, i + 1000)
        .map((o) => stringify(o))
        .join('---\n'),
    );
  }
}

/**
 * RSS of a real agent process serving N services x E endpoints, fed from a
 * manifest directory or from the (in-process) Kubernetes API.
 */
export async function measureAgentRss(n: number, e: number, source: AgentRss['source']): Promise<AgentRss | null> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-rss-'));
  const ns = `bxr${uniqueTag(5)}-n`;
  const pinDir = `/sys/fs/bpf/${ns}`;
  addNetns(ns);
  const api = new FakeApiServer();
  try {
    const objs = agentObjects(n, e);
    const svcs = objs.filter((o) => o.kind === 'Service');
    let src: string[];
    if (source === 'manifests') {
      writeManifestFiles(dir, objs);
      src = ['--manifests', dir];
    } else {
      for (const o of objs) api.upsert(o.kind === 'Service' ? 'services' : 'endpointslices', o);
      api.upsert('felixconfigurations', {
        apiVersion: 'crd.projectcalico.org/v1',
        kind: 'FelixConfiguration',
        metadata: { name: 'default' },
        spec: { bpfEnabled: true },
      });
      const prev = native().enterNetns(nsPath(ns));
      let url: string;
      try {
        url = await api.listen('127.0.0.1', 0, true);
      } finally {
        native().restoreNetns(prev);
      }
      writeKubeconfig(join(dir, 'kubeconfig'), url);
      src = ['--kubeconfig', join(dir, 'kubeconfig')];
    }
    const t0 = performance.now();
    const child = spawn(
      'nsenter',
      [
        `--net=${nsPath(ns)}`,
        '--',
        process.execPath,
        ...AGENT_NODE_FLAGS,
        AGENT_CLI,
        'agent',
        ...src,
        '--pin-dir',
        pinDir,
        // its lock, qdisc ledger and topology file go with the run's temp dir
        '--state-dir',
        dir,
        '--node',
        'bench',
        '--metrics-port',
        '0',
        '--health-port',
        '0',
        '--healthz-port',
        '0',
        `--map-size-nat-frontend=${Math.max(65536, n * 2)}`,
        `--map-size-nat-backend=${Math.max(262144, n * e * 2)}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let served = 0;
    const ready = await new Promise<boolean>((resolve) => {
      let buf = '';
      const timer = setTimeout(() => resolve(false), 300_000);
      child.stdout.on('data', (d) => {
        buf += d;
        const line = buf
          .split('\n')
          .slice(0, -1) // complete lines only
          .find((l) => l.includes('"agent ready"'));
        if (line) {
          served = (JSON.parse(line) as { services?: number }).services ?? 0;
          clearTimeout(timer);
          resolve(true);
        }
      });
      child.on('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    const readyMs = performance.now() - t0;
    let rssMiB = NaN;
    if (ready && child.pid) {
      await new Promise((r) => setTimeout(r, 1000)); // let the first GC settle
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      rssMiB = +(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024).toFixed(1);
    }
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
    // An agent that refused the objects would measure nothing: count what it serves.
    if (ready && served < svcs.length) throw new Error(`agent memory: the agent serves ${served} of ${svcs.length} services`);
    return ready ? { source, services: n, endpoints: e, rssMiB, readyMs: Math.round(readyMs) } : null;
  } finally {
    await api.close().catch(() => undefined);
    delNetns(ns);
    rmSync(pinDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

export function writeResults(dir: string, r: LocalResults, render: (r: LocalResults) => Record<string, string>): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  const files = ['results.json'];
  for (const [name, body] of Object.entries(render(r))) {
    writeFileSync(join(dir, name), body);
    files.push(name);
  }
  return files;
}
