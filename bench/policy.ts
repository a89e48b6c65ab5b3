/**
 * `bpfproxy-bench policy`: what NetworkPolicy costs, in one run.
 *
 * - Per packet (BPF_PROG_RUN, the kernel's own timing, median of rounds, in
 *   a namespace of its own whose routes make the FIB lookups succeed): a
 *   pod-to-pod TCP packet between two local pods, both isolated and the flow
 *   allowed, through tc_pod (leaving the client) and the veth-egress program
 *   (entering the server): with no policy at all, with the one policy that
 *   allows it, and with it among `policies` others over `pods` local pods.
 *   An established packet (conntrack hit, the cached verdict, a generation
 *   compare) and a new flow (SYN: ipcache and policy lookups). States are
 *   interleaved round by round, so the ratios come from one run.
 * - One policy change in effect: at `policies` policies, one policy's port
 *   changes; from the new inputs reaching the compiler to the maps updated
 *   (compile, diff, write), as the agent's PolicySync does it.
 * - Full policy sync: a fresh compiler over all of it and every map
 *   written from empty (the agent's first sync).
 * - Memory: this process's RSS before and with the compiler and writer
 *   holding the `policies` state (the agent's policy part; the agent's
 *   other state is measured by `bpfproxy-bench memory`).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { environment, type Environment } from './environment.js';
import { REPO_ROOT } from '../lab/lab.js';
import { ensureBpffs } from '../src/dataplane/bpf/bpffs.js';
import { DEFAULT_DATAPATH } from '../src/config/datapath.js';
import { loadDatapath, type Datapath, type ProgramRole } from '../src/dataplane/bpf/loader.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { PolicyCompiler } from '../src/model/policy/compile.js';
import type { LabelSelector, Namespace, NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { writerDiff } from '../src/proxy/policy-sync.js';
import { native } from '../src/native/index.js';
import { addNetns, delNetns, ip, nsPath, sysctl, uniqueTag } from '../testkit/netns.js';
import { frame, TCP } from '../testkit/packet.js';

const BPF_OUT = join(REPO_ROOT, 'bpf', '.output');
const NODE = { name: 'bench', addresses: ['192.0.2.11'] };
const NAMESPACES = 50;
const TC_ACT_SHOT = 2;
const APPS = 100;

export interface PolicyBenchOptions {
  /** local pods */
  pods: number;
  /** policies in the large state */
  policies: number;
  /** BPF_PROG_RUN rounds per state (medians) */
  rounds: number;
  /** packets per round */
  packets: number;
  /** single-policy changes timed */
  changes: number;
  /** full syncs timed */
  fullSyncs: number;
  smoke?: boolean;
}

export const POLICY_FULL: PolicyBenchOptions = { pods: 1000, policies: 10_000, rounds: 7, packets: 5000, changes: 100, fullSyncs: 3 };
export const POLICY_SMOKE: PolicyBenchOptions = { pods: 120, policies: 50, rounds: 2, packets: 200, changes: 5, fullSyncs: 1, smoke: true };

type State = 'none' | 'one' | 'many';
const STATES: State[] = ['none', 'one', 'many'];
const FIGURES = [
  'established, leaving the client (tc_pod)',
  'established, entering the server (veth egress)',
  'new flow, leaving the client (tc_pod)',
] as const;

export interface PolicyBenchResults {
  when: string;
  environment: Environment;
  loadAvgStart: number;
  loadAvgEnd: number;
  options: PolicyBenchOptions;
  /** figure → state → ns per packet (median of rounds) */
  nsPerPacket: Record<string, Record<State, number>>;
  change: { p50Ms: number; p99Ms: number; maxMs: number; count: number };
  fullSync: { medianMs: number; runs: number[]; compileMs: number; writeMs: number };
  sizes: { identities: number; endpoints: number; entries: number; rules: number };
  rss: { beforeMiB: number; withPolicyMiB: number };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};
const r2 = (x: number): number => Math.round(x * 100) / 100;
const sel = (labels: Record<string, string>): LabelSelector => ({
  requirements: Object.entries(labels).map(([key, v]) => ({ key, operator: 'In' as const, values: [v] })),
});

/** Pod i: 10.244.{1 + i/250}.{1 + i%250}, namespace ns-(i % 50), app-(i % 100). Pods 0 and 1 are the measured client and server. */
const podIp = (i: number): string => `10.244.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
const CLIENT = podIp(0);
const SERVER = podIp(50); // same namespace as pod 0 (ns-0), app-50

function workload(o: PolicyBenchOptions) {
  const namespaces: Namespace[] = Array.from({ length: NAMESPACES }, (_, n) => ({
    name: `ns-${n}`,
    labels: { 'kubernetes.io/metadata.name': `ns-${n}`, team: `t${n % 5}` },
  }));
  const pods: Pod[] = Array.from({ length: o.pods }, (_, i) => ({
    namespace: `ns-${i % NAMESPACES}`,
    name: `p${i}`,
    labels: { app: `app-${i % APPS}`, tier: i % 2 ? 'web' : 'db' },
    ips: [podIp(i)],
    nodeName: NODE.name,
    hostNetwork: false,
    containerPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }));
  /** the measured one: the server (app-50 in ns-0) from the client (app-0), egress of the client to it */
  const measured: NetworkPolicy[] = [
    {
      namespace: 'ns-0',
      name: 'measured-in',
      podSelector: sel({ app: 'app-50' }),
      ingressIsolation: true,
      egressIsolation: false,
      ingress: [{ index: 0, peers: [{ kind: 'pods', podSelector: sel({ app: 'app-0' }) }], ports: [{ protocol: 'TCP', port: 8080 }] }],
      egress: [],
    },
    {
      namespace: 'ns-0',
      name: 'measured-out',
      podSelector: sel({ app: 'app-0' }),
      ingressIsolation: false,
      egressIsolation: true,
      egress: [{ index: 0, peers: [{ kind: 'pods', podSelector: sel({ app: 'app-50' }) }], ports: [{ protocol: 'TCP', port: 8080 }] }],
      ingress: [],
    },
  ];
  /** the others: each selects one app in one namespace; a mix of pod, namespace and ipBlock peers and port ranges */
  const other = (i: number, port = 1000 + (i % 5000)): NetworkPolicy => {
    const ns = `ns-${i % NAMESPACES}`;
    const kind = i % 4;
    const peer =
      kind === 0
        ? { kind: 'pods' as const, podSelector: sel({ app: `app-${(i * 7) % APPS}` }) }
        : kind === 1
          ? { kind: 'pods' as const, namespaceSelector: sel({ team: `t${i % 5}` }), podSelector: sel({ tier: 'web' }) }
          : kind === 2
            ? { kind: 'ipBlock' as const, cidr: `172.${16 + (i % 16)}.${(i >> 4) % 256}.0/24`, except: [] }
            : { kind: 'pods' as const, namespaceSelector: sel({ 'kubernetes.io/metadata.name': `ns-${(i * 3) % NAMESPACES}` }) };
    return {
      namespace: ns,
      name: `pol-${i}`,
      podSelector: sel({ app: `app-${i % APPS}` }),
      ingressIsolation: true,
      egressIsolation: false,
      ingress: [
        {
          index: 0,
          peers: [peer],
          ports:
            kind === 3
              ? [{ protocol: 'TCP', port, endPort: port + 15 }]
              : [
                  { protocol: 'TCP', port },
                  { protocol: 'UDP', port },
                ],
        },
      ],
      egress: [],
    };
  };
  const others = Array.from({ length: Math.max(0, o.policies - measured.length) }, (_, i) => other(i));
  return { namespaces, pods, measured, others, other };
}

/** A namespace with an uplink whose routes place the pods; the datapath over a pin dir. */
async function setup(pinDir: string): Promise<{ ns: string; ifindex: number; dp: Datapath; close(): void }> {
  const ns = `bpxbp-${uniqueTag()}`;
  addNetns(ns);
  let dp: Datapath | undefined;
  try {
    ip(ns, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
    ip(ns, 'link', 'set', 'd1', 'up');
    sysctl(ns, 'net.ipv4.ip_forward', '1');
    ip(ns, 'addr', 'add', '192.0.2.11/24', 'dev', 'd0');
    ip(ns, 'link', 'set', 'd0', 'up');
    ip(ns, 'route', 'add', '10.244.0.0/16', 'dev', 'd0');
    ip(ns, 'neigh', 'add', SERVER, 'lladdr', '02:00:00:00:01:11', 'dev', 'd0');
    ip(ns, 'neigh', 'add', CLIENT, 'lladdr', '02:00:00:00:01:12', 'dev', 'd0');
    const prev = native().enterNetns(nsPath(ns));
    let ifindex: number;
    try {
      ifindex = native()
        .interfaces()
        .find((i) => i.name === 'd0')!.index;
    } finally {
      native().restoreNetns(prev);
    }
    dp = await loadDatapath(BPF_OUT, pinDir, DEFAULT_DATAPATH);
    const d = dp;
    return {
      ns,
      ifindex,
      dp: d,
      close() {
        d.close();
        delNetns(ns);
      },
    };
  } catch (e) {
    dp?.close();
    delNetns(ns);
    throw e;
  }
}

function runEach(ns: string, ifindex: number, dp: Datapath, role: ProgramRole, frames: Buffer[], what = ''): number {
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(ifindex, 36);
  ctx.writeUInt32LE(ifindex, 40);
  const prev = native().enterNetns(nsPath(ns));
  try {
    const r = native().progTestRunEach(dp.programs[role].fd, frames, { ctx });
    // every measured packet is allowed: a drop (TC_ACT_SHOT) would measure the wrong path
    const shot = r.retvals.findIndex((v) => v === TC_ACT_SHOT);
    if (shot >= 0)
      throw new Error(`bench policy: ${role} dropped measured packet ${shot} ${what}(the flow should be allowed in every state)`);
    return r.totalNs / frames.length;
  } finally {
    native().restoreNetns(prev);
  }
}

export async function runPolicyBench(o: PolicyBenchOptions, log: (s: string) => void = () => undefined): Promise<PolicyBenchResults> {
  ensureBpffs('/sys/fs/bpf');
  const pinDir = `/sys/fs/bpf/bpxb-policy-${uniqueTag()}`;
  const loadAvgStart = loadavg()[0]!;
  if (o.pods <= 50) throw new Error(`bench policy: --pods must be over 50 (the measured server is pod 50), got ${o.pods}`);
  const w = workload(o);
  const node = await setup(pinDir);
  const { ns, ifindex, dp } = node;
  try {
    const rssBefore = process.memoryUsage().rss;
    const writer = new PolicyMapWriter(dp.maps);
    const compiler = new PolicyCompiler();
    const inputs = (policies: NetworkPolicy[]) => ({ pods: w.pods, namespaces: w.namespaces, policies, node: NODE });
    const policiesOf: Record<State, NetworkPolicy[]> = { none: [], one: w.measured, many: [...w.measured, ...w.others] };
    const enter = (s: State) => {
      const r = compiler.compile(inputs(policiesOf[s]));
      const rep = writer.applyDiff(writerDiff(r));
      const bad = rep.problems.filter((p) => p.denyAll);
      if (bad.length) throw new Error(`bench policy: state ${s}: a policy table did not fit: ${bad[0]!.message}`);
    };

    // full sync: a fresh compiler and writer over empty maps, every time
    log(`full sync of ${o.policies} policies over ${o.pods} pods`);
    const runs: number[] = [];
    let compileMs = 0;
    let writeMs = 0;
    for (let i = 0; i < o.fullSyncs; i++) {
      new PolicyMapWriter(dp.maps).apply({ generation: 1, identities: [], endpoints: [], rules: [] });
      const t0 = performance.now();
      const r = new PolicyCompiler().compile(inputs(policiesOf.many));
      const t1 = performance.now();
      new PolicyMapWriter(dp.maps).apply(r.compiled);
      const t2 = performance.now();
      runs.push(t2 - t0);
      compileMs = t1 - t0;
      writeMs = t2 - t1;
    }
    new PolicyMapWriter(dp.maps).apply({ generation: 1, identities: [], endpoints: [], rules: [] });
    writer.apply({ generation: 1, identities: [], endpoints: [], rules: [] });

    // per packet, states interleaved round by round
    const ns_: Record<string, Record<State, number[]>> = {};
    for (const f of FIGURES) ns_[f] = { none: [], one: [], many: [] };
    let sport = 10_000;
    for (let round = 0; round < o.rounds; round++) {
      for (const s of STATES) {
        enter(s);
        sport += 1;
        const ack = frame({ src: CLIENT, dst: SERVER }, { proto: 'tcp', sport, dport: 8080, flags: TCP.ACK });
        const syn = frame({ src: CLIENT, dst: SERVER }, { proto: 'tcp', sport, dport: 8080, flags: TCP.SYN });
        // the SYN opens the flow (conntrack, verdicts), then its packets are established
        runEach(ns, ifindex, dp, 'fromPod', [syn], `(SYN, state ${s}) `);
        runEach(ns, ifindex, dp, 'toPod', [syn], `(SYN, state ${s}) `);
        const acks = Array.from({ length: o.packets }, () => ack);
        ns_[FIGURES[0]]![s].push(runEach(ns, ifindex, dp, 'fromPod', acks));
        ns_[FIGURES[1]]![s].push(runEach(ns, ifindex, dp, 'toPod', acks));
        const syns = Array.from({ length: o.packets }, (_, i) =>
          frame(
            { src: CLIENT, dst: SERVER },
            { proto: 'tcp', sport: 20_000 + (((round * 3 + STATES.indexOf(s)) * o.packets + i) % 40_000), dport: 8080, flags: TCP.SYN },
          ),
        );
        ns_[FIGURES[2]]![s].push(runEach(ns, ifindex, dp, 'fromPod', syns));
      }
      log(`per packet: round ${round + 1}/${o.rounds}`);
    }
    const nsPerPacket: PolicyBenchResults['nsPerPacket'] = {};
    for (const f of FIGURES)
      nsPerPacket[f] = { none: r2(median(ns_[f]!.none)), one: r2(median(ns_[f]!.one)), many: r2(median(ns_[f]!.many)) };

    // one policy change at the large state
    enter('many');
    const sizes = compiler.stats();
    const rssWith = process.memoryUsage().rss;
    log(`one policy change x ${o.changes}`);
    const changes: number[] = [];
    const current = [...policiesOf.many];
    for (let i = 0; i < o.changes; i++) {
      const k = w.measured.length + ((i * 37) % Math.max(1, w.others.length));
      if (k >= current.length) break;
      current[k] = w.other(k - w.measured.length, 6000 + i);
      const t0 = performance.now();
      const r = compiler.compile(inputs(current));
      writer.applyDiff(writerDiff(r));
      changes.push(performance.now() - t0);
    }
    return {
      when: new Date().toISOString(),
      environment: environment(),
      loadAvgStart,
      loadAvgEnd: loadavg()[0]!,
      options: o,
      nsPerPacket,
      change: { p50Ms: r2(pct(changes, 50)), p99Ms: r2(pct(changes, 99)), maxMs: r2(Math.max(...changes)), count: changes.length },
      fullSync: { medianMs: r2(median(runs)), runs: runs.map(r2), compileMs: r2(compileMs), writeMs: r2(writeMs) },
      sizes: { identities: sizes.identities, endpoints: sizes.endpoints, entries: sizes.entries, rules: sizes.rules },
      rss: { beforeMiB: r2(rssBefore / 2 ** 20), withPolicyMiB: r2(rssWith / 2 ** 20) },
    };
  } finally {
    node.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

export interface PolicyTarget {
  target: string;
  value: string;
  goal: string;
  met: boolean;
}

export function policyTargets(r: PolicyBenchResults): PolicyTarget[] {
  const out: PolicyTarget[] = [];
  for (const f of FIGURES) {
    const x = r.nsPerPacket[f]!;
    const many = x.many / x.one;
    const on = x.one / x.none;
    out.push({ target: `${f}: ${r.options.policies} vs 1 policies`, value: `${r2(many)}x`, goal: '<= 1.15x', met: many <= 1.15 });
    out.push({ target: `${f}: with policy vs without`, value: `${r2(on)}x`, goal: '<= 1.2x', met: on <= 1.2 });
  }
  out.push({
    target: `one policy change in effect, p99 at ${r.options.policies} policies`,
    value: `${r.change.p99Ms} ms`,
    goal: '<= 50 ms',
    met: r.change.p99Ms <= 50,
  });
  out.push({
    target: `full policy sync of ${r.options.policies} policies`,
    value: `${r.fullSync.medianMs} ms`,
    goal: '<= 2000 ms',
    met: r.fullSync.medianMs <= 2000,
  });
  return out;
}

export function renderPolicy(r: PolicyBenchResults): string {
  const lines = [
    '# NetworkPolicy benchmark',
    '',
    `${r.when}, ${r.environment.kernel ?? ''} ${r.environment.cpus ?? ''} CPUs; load average ${r2(r.loadAvgStart)} at the start, ${r2(r.loadAvgEnd)} at the end (a shared, loaded machine: absolute figures are noisy, ratios come from interleaved rounds of one run).`,
    '',
    `${r.options.pods} local pods in ${NAMESPACES} namespaces; ${r.options.policies} policies (pod, namespace+pod, namespace-name and ipBlock peers, ports and endPort ranges); compiled: ${r.sizes.identities} identities, ${r.sizes.endpoints} endpoints, ${r.sizes.entries} policy entries, ${r.sizes.rules} rules.`,
    '',
    '## Targets',
    '',
    '| target | value | goal | met |',
    '|---|---|---|---|',
    ...policyTargets(r).map((t) => `| ${t.target} | ${t.value} | ${t.goal} | ${t.met ? 'yes' : 'NO'} |`),
    '',
    `## Per packet (BPF_PROG_RUN, ns, median of ${r.options.rounds} rounds of ${r.options.packets} packets; pod to pod, both ends isolated, the flow allowed)`,
    '',
    '| packet | no policy | 1 policy | ' + `${r.options.policies} policies |`,
    '|---|---|---|---|',
    ...FIGURES.map((f) => `| ${f} | ${r.nsPerPacket[f]!.none} | ${r.nsPerPacket[f]!.one} | ${r.nsPerPacket[f]!.many} |`),
    '',
    '## Control plane',
    '',
    `- one policy change (a port of one policy), compile + diff + map writes: p50 ${r.change.p50Ms} ms, p99 ${r.change.p99Ms} ms, max ${r.change.maxMs} ms over ${r.change.count} changes`,
    `- full sync (fresh compiler, every map written from empty): median ${r.fullSync.medianMs} ms of ${r.fullSync.runs.join(', ')} ms (last: compile ${r.fullSync.compileMs} ms, write ${r.fullSync.writeMs} ms)`,
    `- RSS of the process: ${r.rss.beforeMiB} MiB before, ${r.rss.withPolicyMiB} MiB with the compiler and writer holding the ${r.options.policies}-policy state (the agent's policy part; the rest of the agent: \`bpfproxy-bench memory\`)`,
    '',
  ];
  return lines.join('\n');
}

export function writePolicyResults(dir: string, r: PolicyBenchResults): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(join(dir, 'report.md'), renderPolicy(r));
  return ['results.json', 'report.md'];
}
