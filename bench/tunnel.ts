/**
 * bpfproxy-bench tunnel: cross-node NodePort to an endpoint on the other
 * node, per bpfExternalServiceMode (SNAT as the baseline, Tunnel, DSR), in
 * one run on the two-node lab: new connections per second (crr: connect,
 * 1-byte request, 1-byte response, close) and TCP throughput (iperf3), the
 * modes taken in turn each round so drift hits them alike. The client
 * reaches node1's address; the only endpoint is a pod on node2. --family 6:
 * the same over IPv6 (node1's IPv6 NodePort, the pod's IPv6 address,
 * carried in the IPv4 VXLAN between the nodes: bpf/lib/tunnel6.h).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { labDown, labSpec, labUp, startAgent, type AgentProcess } from '../lab/lab.js';
import { nsPath, sh, uniqueTag } from '../testkit/netns.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { tunnelMode } from '../src/dataplane/bpf/tunnel.js';
import { crr, iperf } from './measure.js';
import { summarize, type Summary } from './stats.js';
import { CRR, CRR_PORT, IPERF_PORT } from './topology.js';

export const MODES = ['SNAT', 'Tunnel', 'DSR'] as const;
export type Mode = (typeof MODES)[number];

export interface TunnelBenchOptions {
  rounds: number;
  seconds: number;
  threads: number;
  /** the service's family (the tunnel between the nodes is IPv4 either way); default 4 */
  family?: 4 | 6;
}

export interface TunnelResults {
  options: TunnelBenchOptions;
  modes: Record<Mode, { crrRate: Summary; crrP99us: Summary; crrErrors: number; tcpGbps: Summary; tcpRetransmits: number }>;
  /** medians over SNAT's */
  ratios: Record<Mode, { crr: number; tcp: number }>;
  /** /proc/loadavg (1 min) at the start and the end, and the CPUs: a loaded machine makes the figures noise */
  load: { start: number; end: number; cpus: number };
}

const load1 = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

const NODE_PORT_CRR = 30180;
const NODE_PORT_IPERF = 30181;

const manifests = (mode: Mode, family: 4 | 6 = 4) => `apiVersion: v1
kind: Node
metadata: { name: node1, annotations: { bpfproxy.io/decap: 'vxlan-v1,vxlan-v1-ipv6' } }
status: { addresses: [{ type: InternalIP, address: 192.0.2.11 }] }
---
apiVersion: v1
kind: Node
metadata: { name: node2, annotations: { bpfproxy.io/decap: 'vxlan-v1,vxlan-v1-ipv6' } }
status: { addresses: [{ type: InternalIP, address: 192.0.2.12 }] }
---
apiVersion: v1
kind: Service
metadata: { name: bench, namespace: default }
spec:
  type: NodePort
  ${family === 6 ? "clusterIP: 'fd00:10:96::80'\n  ipFamilies: [IPv6]" : 'clusterIP: 10.96.0.80'}
  selector: { app: bench }
  ports:
    - { name: crr, protocol: TCP, port: 80, targetPort: ${CRR_PORT}, nodePort: ${NODE_PORT_CRR} }
    - { name: iperf, protocol: TCP, port: ${IPERF_PORT}, targetPort: ${IPERF_PORT}, nodePort: ${NODE_PORT_IPERF} }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: bench-1, namespace: default, labels: { kubernetes.io/service-name: bench } }
addressType: IPv${family}
ports: [{ name: crr, port: ${CRR_PORT}, protocol: TCP }, { name: iperf, port: ${IPERF_PORT}, protocol: TCP }]
endpoints: [{ addresses: ['${family === 6 ? 'fd00:10:244:2::11' : '10.244.2.11'}'], nodeName: node2 }]
---
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: { name: default }
spec: { bpfExternalServiceMode: ${mode} }
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTunnelBench(o: TunnelBenchOptions, say: (s: string) => void): Promise<TunnelResults> {
  const prefix = `bpxtb${uniqueTag(4)}`;
  const lab = labSpec(prefix);
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-tunnel-'));
  const agents: AgentProcess[] = [];
  const loadStart = load1();
  try {
    const family = o.family ?? 4;
    writeFileSync(join(dir, 'bench.yaml'), manifests('SNAT', family));
    labUp(lab, { servers: false });
    const pod = lab.nodes[1]!.pods[0]!;
    spawn('nsenter', [`--net=${nsPath(pod.ns)}`, '--', CRR, 'server', String(CRR_PORT)], { detached: true, stdio: 'ignore' }).unref();
    sh('iperf3', ['-s', '-p', String(IPERF_PORT), '-D'], { ns: pod.ns });
    for (const n of lab.nodes) agents.push(startAgent(n, { manifests: dir }));
    await Promise.all(agents.map((a) => a.ready));
    const modeOn = (n: (typeof lab.nodes)[0]) => {
      const m = openPinnedMaps(n.pinDir);
      try {
        return tunnelMode(m.maps);
      } finally {
        m.close();
      }
    };
    const setMode = async (mode: Mode) => {
      writeFileSync(join(dir, 'bench.yaml'), manifests(mode, family));
      for (const until = Date.now() + 15_000; Date.now() < until; await sleep(200)) {
        if (lab.nodes.every((n) => modeOn(n).mode === mode && modeOn(n).local === n.ip)) return;
      }
      throw new Error(`the agents did not switch to ${mode} within 15 s`);
    };
    const raw = Object.fromEntries(
      MODES.map((m) => [m, { crr: [] as number[], p99: [] as number[], crrErr: 0, tcp: [] as number[], retr: 0 }]),
    ) as Record<Mode, { crr: number[]; p99: number[]; crrErr: number; tcp: number[]; retr: number }>;
    const target = family === 6 ? lab.nodes[0]!.ip6! : lab.nodes[0]!.ip;
    for (let round = 1; round <= o.rounds; round++) {
      for (const mode of MODES) {
        await setMode(mode);
        const c = crr(lab.client.ns, target, NODE_PORT_CRR, o.seconds * 1000, o.threads);
        const t = iperf(lab.client.ns, target, NODE_PORT_IPERF, o.seconds, false);
        raw[mode].crr.push(c.rate);
        raw[mode].p99.push(c.p99us);
        raw[mode].crrErr += c.errors;
        raw[mode].tcp.push(t.gbps);
        raw[mode].retr += t.retransmits;
        say(`round ${round} ${mode}: ${c.rate.toFixed(0)} conn/s (p99 ${c.p99us} µs), ${t.gbps} Gbit/s${t.error ? ` (${t.error})` : ''}`);
      }
    }
    const modes = Object.fromEntries(
      MODES.map((m) => [
        m,
        {
          crrRate: summarize(raw[m].crr),
          crrP99us: summarize(raw[m].p99),
          crrErrors: raw[m].crrErr,
          tcpGbps: summarize(raw[m].tcp),
          tcpRetransmits: raw[m].retr,
        },
      ]),
    ) as TunnelResults['modes'];
    const r2 = (x: number) => +x.toFixed(3);
    const ratios = Object.fromEntries(
      MODES.map((m) => [
        m,
        { crr: r2(modes[m].crrRate.median / modes.SNAT.crrRate.median), tcp: r2(modes[m].tcpGbps.median / modes.SNAT.tcpGbps.median) },
      ]),
    ) as TunnelResults['ratios'];
    return { options: o, modes, ratios, load: { start: loadStart, end: load1(), cpus: cpus().length } };
  } finally {
    for (const a of agents) await a.stop();
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function renderTunnel(r: TunnelResults): string {
  const rows = MODES.map((m) => {
    const x = r.modes[m];
    return `| ${m} | ${x.crrRate.median.toFixed(0)} (${x.crrRate.min.toFixed(0)}–${x.crrRate.max.toFixed(0)}) | ${r.ratios[m].crr} | ${x.crrP99us.median} | ${x.tcpGbps.median} (${x.tcpGbps.min}–${x.tcpGbps.max}) | ${r.ratios[m].tcp} | ${x.tcpRetransmits} |`;
  });
  return [
    `# Cross-node NodePort per bpfExternalServiceMode${r.options.family === 6 ? ' (IPv6 service, IPv4 tunnel)' : ''}`,
    '',
    `Client → node1:NodePort → the only endpoint, a pod on node2. ${r.options.rounds} rounds, modes in turn, ${r.options.seconds} s per figure, crr with ${r.options.threads} threads. Median (min–max); ratios of medians to SNAT measured in the same run.`,
    '',
    '| mode | conn/s | × SNAT | crr p99 µs | TCP Gbit/s | × SNAT | retransmits |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    `Load average (1 min) ${r.load.start} at the start, ${r.load.end} at the end, on ${r.load.cpus} CPUs${r.load.start > r.load.cpus || r.load.end > r.load.cpus ? ': the machine was busy with other work, the figures are noisy' : ''}.`,
    '',
    'Goals (issue 11): Tunnel ≥ 0.9 × SNAT, DSR ≥ 1.0 × SNAT, while keeping the client address.',
    '',
  ].join('\n');
}

export function writeTunnelResults(out: string, r: TunnelResults): string[] {
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'results.json'), JSON.stringify(r, null, 2));
  writeFileSync(join(out, 'report.md'), renderTunnel(r));
  return ['results.json', 'report.md'];
}
