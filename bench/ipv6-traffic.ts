/**
 * IPv6 vs IPv4 traffic for the same dual-stack service (issue 13): new
 * connections per second (bench/crr.c: connect, 1-byte request, 1-byte
 * response, close) and TCP throughput (iperf3 -4 / -6, one stream), over
 * each family, in one run of the namespace lab (lab/lab.ts) with one agent
 * (on node1) serving a NodePort service with `ipFamilyPolicy:
 * RequireDualStack` (an IPv4 and an IPv6 cluster IP) and an EndpointSlice
 * per family naming the same pod (n1-a: 10.244.1.11, fd00:10:244:1::11).
 * Paths: pod n1-b -> ClusterIP through the TC path (the pod program on its
 * veth), and the lab's external client -> node1's address:NodePort. Each
 * round measures every path in both families, the family that goes first
 * alternating between rounds so drift hits both alike; medians of the
 * rounds; ratios of the medians IPv6 / IPv4 from the same run. Goal (issue
 * 13): IPv6 costs no more than 1.1x IPv4, i.e. IPv4 rate / IPv6 rate <= 1.1
 * (IPv6 rate >= 0.91x IPv4's). Everything is made under a fresh prefix and
 * removed at the end, on failure and on SIGINT/SIGTERM too.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { labDown, labSpec, labUp, startAgent, type AgentProcess } from '../lab/lab.js';
import { nsPath, sh, uniqueTag } from '../testkit/netns.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { crr } from './measure.js';
import { summarize, type Summary } from './stats.js';
import { CRR, CRR_PORT, IPERF_PORT } from './topology.js';

export interface Ipv6TrafficOptions {
  /** rounds; each measures every path in both families */
  rounds: number;
  /** crr duration per figure */
  crrMillis: number;
  /** crr client threads */
  threads: number;
  /** iperf3 measured seconds per figure (-t) and seconds omitted before them (-O) */
  iperfSeconds: number;
  iperfOmit: number;
  /** also measure the client -> NodePort path */
  nodePort: boolean;
}
export const IPV6_TRAFFIC_FULL: Ipv6TrafficOptions = {
  rounds: 5,
  crrMillis: 3000,
  threads: 2,
  iperfSeconds: 3,
  iperfOmit: 1,
  nodePort: true,
};
export const IPV6_TRAFFIC_SMOKE: Ipv6TrafficOptions = {
  rounds: 2,
  crrMillis: 500,
  threads: 1,
  iperfSeconds: 1,
  iperfOmit: 0,
  nodePort: true,
};

export const TRAFFIC_PATHS = ['pod-clusterip', 'client-nodeport'] as const;
export type TrafficPath = (typeof TRAFFIC_PATHS)[number];
export type Family = 4 | 6;

export interface FamilyFigures {
  /** target address (ClusterIP or node address) */
  host: string;
  connPerSec: Summary;
  crrP99us: Summary;
  crrErrors: number;
  tcpGbps: Summary;
  tcpRetransmits: number;
}

export interface Ipv6TrafficRow {
  path: TrafficPath;
  ipv4: FamilyFigures;
  ipv6: FamilyFigures;
  /** medians IPv6 / IPv4 (rates: higher is better) */
  ratios: { connRate: number; throughput: number };
  /** IPv6's cost relative to IPv4's: IPv4 median / IPv6 median (time per connection, per byte); the goal is <= 1.1 */
  cost: { connection: number; byte: number };
}

export interface Ipv6TrafficResults {
  options: Ipv6TrafficOptions;
  service: { clusterIPs: [string, string]; nodePorts: { crr: number; iperf: number }; endpoint: [string, string] };
  rows: Ipv6TrafficRow[];
  /** tool failures (crr/iperf3 giving no result), each once with its figure */
  errors: string[];
  /** node1's conntrack entries per family after the rounds: the traffic went through bpfproxy's maps */
  conntrack: { ipv4: number; ipv6: number };
  /** /proc/loadavg (1 min) at the start and the end, and the CPUs: a loaded machine makes the figures noise */
  load: { start: number; end: number; cpus: number };
}

export const TRAFFIC_GOAL = 1.1;
const CLUSTER_IP4 = '10.96.0.60';
const CLUSTER_IP6 = 'fd00:10:96::60';
const NODE_PORT_CRR = 30160;
const NODE_PORT_IPERF = 30161;
const SVC_PORT_CRR = 80;

/** The dual-stack service: one cluster IP per family, RequireDualStack, an EndpointSlice per family, one pod. */
export const ipv6TrafficManifests = (pod4: string, pod6: string): string => `apiVersion: v1
kind: Service
metadata: { name: bench6, namespace: default }
spec:
  type: NodePort
  clusterIP: ${CLUSTER_IP4}
  clusterIPs: [${CLUSTER_IP4}, '${CLUSTER_IP6}']
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  selector: { app: bench6 }
  ports:
    - { name: crr, protocol: TCP, port: ${SVC_PORT_CRR}, targetPort: ${CRR_PORT}, nodePort: ${NODE_PORT_CRR} }
    - { name: iperf, protocol: TCP, port: ${IPERF_PORT}, targetPort: ${IPERF_PORT}, nodePort: ${NODE_PORT_IPERF} }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: bench6-v4, namespace: default, labels: { kubernetes.io/service-name: bench6 } }
addressType: IPv4
ports: [{ name: crr, port: ${CRR_PORT}, protocol: TCP }, { name: iperf, port: ${IPERF_PORT}, protocol: TCP }]
endpoints: [{ addresses: [${pod4}], conditions: { ready: true }, nodeName: node1 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: bench6-v6, namespace: default, labels: { kubernetes.io/service-name: bench6 } }
addressType: IPv6
ports: [{ name: crr, port: ${CRR_PORT}, protocol: TCP }, { name: iperf, port: ${IPERF_PORT}, protocol: TCP }]
endpoints: [{ addresses: ['${pod6}'], conditions: { ready: true }, nodeName: node1 }]
`;

const load1 = (): number => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Iperf {
  gbps: number;
  retransmits: number;
  error?: string;
}

/** iperf3 -4/-6 from a namespace, one stream, bounded by a timeout. */
function iperfFamily(ns: string, family: Family, host: string, port: number, seconds: number, omit: number): Iperf {
  const args = [`-${family}`, '-c', host, '-p', String(port), '-t', String(seconds), '-O', String(omit), '-J', '--connect-timeout', '3000'];
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', 'iperf3', ...args], {
    encoding: 'utf8',
    timeout: (seconds + omit + 15) * 1000,
  });
  let j: { end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } }; error?: string };
  try {
    j = JSON.parse(r.stdout ?? '') as typeof j;
  } catch {
    return {
      gbps: 0,
      retransmits: 0,
      error: `iperf3 ${args.join(' ')} in ${ns} gave no JSON: ${(r.stderr || r.error?.message || '').trim()}`,
    };
  }
  if (j.error) return { gbps: 0, retransmits: 0, error: `iperf3 ${args.join(' ')} in ${ns}: ${j.error}` };
  return { gbps: +((j.end?.sum_received?.bits_per_second ?? 0) / 1e9).toFixed(3), retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}

export async function runIpv6Traffic(o: Ipv6TrafficOptions, say: (s: string) => void): Promise<Ipv6TrafficResults> {
  const prefix = `bpxb6t${uniqueTag(4)}`;
  const lab = labSpec(prefix);
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-ipv6-'));
  const agents: AgentProcess[] = [];
  const loadStart = load1();
  // an interrupted run removes what it made before exiting
  const onSignal = (sig: NodeJS.Signals) => {
    for (const a of agents) a.child.kill('SIGKILL');
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`bench ipv6: ${sig}: lab ${prefix} removed\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const n1 = lab.nodes[0]!;
    const [server, client] = n1.pods as [(typeof n1.pods)[0], (typeof n1.pods)[0]];
    writeFileSync(join(dir, 'bench6.yaml'), ipv6TrafficManifests(server.ip, server.ip6!));
    labUp(lab, { servers: false });
    say(`lab ${prefix} up; starting the agent on node1`);
    spawn('nsenter', [`--net=${nsPath(server.ns)}`, '--', CRR, 'server', String(CRR_PORT)], { detached: true, stdio: 'ignore' }).unref();
    sh('iperf3', ['-s', '-p', String(IPERF_PORT), '-D'], { ns: server.ns });
    const agent = startAgent(n1, { manifests: dir });
    agents.push(agent);
    await agent.ready;

    const targets: Array<{ path: TrafficPath; ns: string; host: Record<Family, string>; crrPort: number; iperfPort: number }> = [
      {
        path: 'pod-clusterip',
        ns: client.ns,
        host: { 4: CLUSTER_IP4, 6: CLUSTER_IP6 },
        crrPort: SVC_PORT_CRR,
        iperfPort: IPERF_PORT,
      },
    ];
    if (o.nodePort)
      targets.push({
        path: 'client-nodeport',
        ns: lab.client.ns,
        host: { 4: n1.ip, 6: n1.ip6! },
        crrPort: NODE_PORT_CRR,
        iperfPort: NODE_PORT_IPERF,
      });

    // the service answers on every path and family before anything is timed (bounded: 15 s each)
    for (const tg of targets)
      for (const fam of [4, 6] as const) {
        for (const until = Date.now() + 15_000; ; await sleep(250)) {
          const c = crr(tg.ns, tg.host[fam], tg.crrPort, 200, 1);
          if (c.rate > 0 && c.errors === 0) break;
          if (Date.now() > until)
            throw new Error(
              `${tg.path} over IPv${fam} (${tg.host[fam]}:${tg.crrPort} from ${tg.ns}) made no connection within 15 s: ${c.error ?? `${c.errors} crr errors`}; the agent's last logs:\n${agent.logs.slice(-10).join('\n')}`,
            );
        }
      }

    type Raw = { conn: number[]; p99: number[]; crrErr: number; tcp: number[]; retr: number };
    const raw = new Map<string, Raw>();
    const rawOf = (p: TrafficPath, f: Family) => {
      const k = `${p}/${f}`;
      if (!raw.has(k)) raw.set(k, { conn: [], p99: [], crrErr: 0, tcp: [], retr: 0 });
      return raw.get(k)!;
    };
    const errors: string[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      const order: Family[] = round % 2 === 1 ? [4, 6] : [6, 4];
      for (const tg of targets)
        for (const fam of order) {
          const c = crr(tg.ns, tg.host[fam], tg.crrPort, o.crrMillis, o.threads);
          const t = iperfFamily(tg.ns, fam, tg.host[fam], tg.iperfPort, o.iperfSeconds, o.iperfOmit);
          const x = rawOf(tg.path, fam);
          x.conn.push(c.rate);
          x.p99.push(c.p99us);
          x.crrErr += c.errors;
          x.tcp.push(t.gbps);
          x.retr += t.retransmits;
          if (c.error) errors.push(`round ${round} ${tg.path} IPv${fam} crr: ${c.error}`);
          if (t.error) errors.push(`round ${round} ${tg.path} IPv${fam}: ${t.error}`);
          say(
            `round ${round}/${o.rounds} ${tg.path} IPv${fam}: ${c.rate.toFixed(0)} conn/s (p99 ${c.p99us} µs), ${t.gbps} Gbit/s${t.error ? ` (${t.error})` : ''}`,
          );
        }
    }
    const pinned = openPinnedMaps(n1.pinDir);
    let conntrack: Ipv6TrafficResults['conntrack'];
    try {
      conntrack = { ipv4: pinned.maps.ct.count(), ipv6: pinned.maps.ct6.count() };
    } finally {
      pinned.close();
    }
    const r3 = (x: number) => (Number.isFinite(x) ? +x.toFixed(3) : 0);
    const fig = (tg: (typeof targets)[0], f: Family): FamilyFigures => {
      const x = rawOf(tg.path, f);
      return {
        host: tg.host[f],
        connPerSec: summarize(x.conn),
        crrP99us: summarize(x.p99),
        crrErrors: x.crrErr,
        tcpGbps: summarize(x.tcp),
        tcpRetransmits: x.retr,
      };
    };
    const rows = targets.map((tg): Ipv6TrafficRow => {
      const ipv4 = fig(tg, 4);
      const ipv6 = fig(tg, 6);
      return {
        path: tg.path,
        ipv4,
        ipv6,
        ratios: {
          connRate: r3(ipv6.connPerSec.median / ipv4.connPerSec.median),
          throughput: r3(ipv6.tcpGbps.median / ipv4.tcpGbps.median),
        },
        cost: {
          connection: r3(ipv4.connPerSec.median / ipv6.connPerSec.median),
          byte: r3(ipv4.tcpGbps.median / ipv6.tcpGbps.median),
        },
      };
    });
    return {
      options: o,
      service: {
        clusterIPs: [CLUSTER_IP4, CLUSTER_IP6],
        nodePorts: { crr: NODE_PORT_CRR, iperf: NODE_PORT_IPERF },
        endpoint: [server.ip, server.ip6!],
      },
      rows,
      errors,
      conntrack,
      load: { start: loadStart, end: load1(), cpus: cpus().length },
    };
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    for (const a of agents) await a.stop();
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  }
}

const PATH_TEXT: Record<TrafficPath, string> = {
  'pod-clusterip': 'pod → ClusterIP (TC path)',
  'client-nodeport': 'external client → NodePort',
};

/** Issue 13's goals for the traffic figures: IPv6's cost per connection and per byte <= 1.1x IPv4's. */
export function ipv6TrafficTargets(r: Ipv6TrafficResults): Array<{ target: string; value: string; goal: string; met: boolean }> {
  const goal = `<= ${TRAFFIC_GOAL}x (IPv6 rate >= ${+(1 / TRAFFIC_GOAL).toFixed(2)}x IPv4's)`;
  return r.rows.flatMap((x) => [
    {
      target: `IPv6 / IPv4 cost per connection, ${PATH_TEXT[x.path]} (IPv4 conn/s / IPv6 conn/s, crr)`,
      value: `${x.cost.connection}x (${x.ipv6.connPerSec.median.toFixed(0)} vs ${x.ipv4.connPerSec.median.toFixed(0)} conn/s)`,
      goal,
      met: x.cost.connection > 0 && x.cost.connection <= TRAFFIC_GOAL,
    },
    {
      target: `IPv6 / IPv4 cost per byte, ${PATH_TEXT[x.path]} (IPv4 Gbit/s / IPv6 Gbit/s, iperf3 one stream)`,
      value: `${x.cost.byte}x (${x.ipv6.tcpGbps.median.toFixed(3)} vs ${x.ipv4.tcpGbps.median.toFixed(3)} Gbit/s)`,
      goal,
      met: x.cost.byte > 0 && x.cost.byte <= TRAFFIC_GOAL,
    },
  ]);
}

export function renderIpv6Traffic(r: Ipv6TrafficResults): string {
  const o = r.options;
  const span = (s: Summary, d = 0) => `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
  const busy = r.load.start > r.load.cpus || r.load.end > r.load.cpus;
  return [
    '## Traffic: connections/s and TCP throughput, IPv6 vs IPv4',
    '',
    `The namespace lab, one agent (node1), a NodePort service with \`ipFamilyPolicy: RequireDualStack\` (cluster IPs ${r.service.clusterIPs.join(' and ')}, NodePorts ${r.service.nodePorts.crr} and ${r.service.nodePorts.iperf}), one endpoint pod on node1 in both families (${r.service.endpoint.join(', ')}). ` +
      `${o.rounds} rounds, every path in both families each round (the family going first alternating); crr ${o.crrMillis} ms with ${o.threads} thread(s), iperf3 -4/-6 one stream ${o.iperfSeconds} s (${o.iperfOmit} s omitted). Median (min–max).`,
    '',
    '| path | family | conn/s | crr p99 µs | crr errors | TCP Gbit/s | retransmits |',
    '|---|---|---:|---:|---:|---:|---:|',
    ...r.rows.flatMap((x) =>
      (['ipv4', 'ipv6'] as const).map(
        (f) =>
          `| ${PATH_TEXT[x.path]} | ${f === 'ipv4' ? 'IPv4' : 'IPv6'} | ${span(x[f].connPerSec)} | ${x[f].crrP99us.median} | ${x[f].crrErrors} | ${span(x[f].tcpGbps, 3)} | ${x[f].tcpRetransmits} |`,
      ),
    ),
    '',
    `Ratios of the medians, same run. Goal (issue 13): IPv6 costs no more than ${TRAFFIC_GOAL}x IPv4, per connection and per byte (IPv4 rate / IPv6 rate <= ${TRAFFIC_GOAL}, i.e. IPv6's rate >= ${+(1 / TRAFFIC_GOAL).toFixed(2)}x IPv4's).`,
    '',
    '| path | conn/s IPv6 / IPv4 | cost per connection IPv6 / IPv4 | Gbit/s IPv6 / IPv4 | cost per byte IPv6 / IPv4 |',
    '|---|---:|---:|---:|---:|',
    ...r.rows.map(
      (x) =>
        `| ${PATH_TEXT[x.path]} | ${x.ratios.connRate}x | ${x.cost.connection}x ${x.cost.connection > 0 && x.cost.connection <= TRAFFIC_GOAL ? '(met)' : '(**missed**)'} | ${x.ratios.throughput}x | ${x.cost.byte}x ${x.cost.byte > 0 && x.cost.byte <= TRAFFIC_GOAL ? '(met)' : '(**missed**)'} |`,
    ),
    '',
    `Conntrack entries on node1 after the rounds: ${r.conntrack.ipv4} IPv4, ${r.conntrack.ipv6} IPv6.`,
    '',
    `Load average (1 min) ${r.load.start} at the start, ${r.load.end} at the end, on ${r.load.cpus} CPUs${busy ? ': the machine was busy with other work, the figures are noisy' : ''}.`,
    ...(r.errors.length ? ['', 'Tool errors:', '', ...r.errors.map((e) => `- ${e}`)] : []),
    '',
  ].join('\n');
}
