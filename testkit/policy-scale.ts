/**
 * NetworkPolicy at scale, for the policy map writer's figures: a synthetic
 * cluster (pods spread over namespaces, a share on this node, policies
 * selecting apps and allowing other apps, namespaces and ports) and the
 * timings of the writes that matter:
 *  - the first full sync (compile, then PolicyMapWriter.apply into empty maps),
 *  - one pod relabelled (compile, applyDiff),
 *  - one policy changed (compile, applyDiff), repeated for a p50/p99.
 * measurePolicyWrites() takes the six policy maps of a loaded datapath (the
 * test's tmpDatapath, or the bench's) and leaves them holding the last state.
 * Figures, never assertions: callers print or compare them.
 */
import { PolicyCompiler, type PolicyInputs } from '../src/model/policy/compile.js';
import type { Namespace, NetworkPolicy, Pod } from '../src/model/policy/types.js';
import { PolicyMapWriter, readPinned, type PolicyApplyReport, type PolicyMapSet } from '../src/dataplane/bpf/policy-maps.js';
import { writerDiff } from '../src/proxy/policy-sync.js';

export interface PolicyScaleShape {
  /** pods in the cluster */
  pods: number;
  /** of them on this node (endpoints) */
  localPods: number;
  policies: number;
  namespaces?: number;
  /** distinct app labels */
  apps?: number;
}

export const NODE_NAME = 'n1';
export const NODE_ADDRESS = '192.0.2.11';

const podIp = (i: number): string => `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;

/** The synthetic cluster: deterministic for a shape. */
export function policyScaleInputs(shape: PolicyScaleShape): {
  pods: Map<string, Pod>;
  namespaces: Map<string, Namespace>;
  policies: Map<string, NetworkPolicy>;
} {
  const nsCount = shape.namespaces ?? 20;
  const apps = shape.apps ?? 50;
  const namespaces = new Map<string, Namespace>();
  for (let n = 0; n < nsCount; n++) {
    const name = `ns${n}`;
    namespaces.set(name, { name, labels: { 'kubernetes.io/metadata.name': name, team: `t${n % 5}` } });
  }
  const pods = new Map<string, Pod>();
  const localEvery = shape.localPods > 0 ? shape.pods / shape.localPods : Infinity;
  let local = 0;
  for (let i = 0; i < shape.pods; i++) {
    const isLocal = local < shape.localPods && i >= local * localEvery;
    if (isLocal) local++;
    const p: Pod = {
      namespace: `ns${i % nsCount}`,
      name: `p${i}`,
      labels: { app: `app${i % apps}`, tier: i % 3 === 0 ? 'front' : 'back' },
      ips: [podIp(i + 1)],
      nodeName: isLocal ? NODE_NAME : `n${2 + (i % 7)}`,
      hostNetwork: false,
      containerPorts: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    };
    pods.set(`${p.namespace}/${p.name}`, p);
  }
  const policies = new Map<string, NetworkPolicy>();
  for (let j = 0; j < shape.policies; j++) policies.set(`ns${j % nsCount}/np${j}`, scalePolicy(j, nsCount, apps, 8000 + (j % 100)));
  return { pods, namespaces, policies };
}

/** Policy j: app{j%apps} in ns{j%nsCount} takes app{(j+1)%apps} of any namespace on `port`, team t{j%5} on http, and 10.0.0.0/8 but 10.1.0.0/16 on UDP 53. */
export function scalePolicy(j: number, nsCount: number, apps: number, port: number): NetworkPolicy {
  const sel = (k: string, v: string) => ({ requirements: [{ key: k, operator: 'In' as const, values: [v] }] });
  return {
    namespace: `ns${j % nsCount}`,
    name: `np${j}`,
    podSelector: sel('app', `app${j % apps}`),
    ingressIsolation: true,
    egressIsolation: j % 4 === 0,
    ingress: [
      {
        index: 0,
        peers: [{ kind: 'pods', namespaceSelector: { requirements: [] }, podSelector: sel('app', `app${(j + 1) % apps}`) }],
        ports: [{ protocol: 'TCP', port }],
      },
      { index: 1, peers: [{ kind: 'pods', namespaceSelector: sel('team', `t${j % 5}`) }], ports: [{ protocol: 'TCP', port: 'http' }] },
    ],
    egress: [
      { index: 0, peers: [{ kind: 'ipBlock', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }], ports: [{ protocol: 'UDP', port: 53 }] },
    ],
  };
}

export interface PolicyWriteFigure {
  /** ms in the compiler and in the map writer */
  compileMs: number;
  writeMs: number;
  report: PolicyApplyReport;
}

export interface PolicyWriteFigures {
  shape: PolicyScaleShape;
  first: PolicyWriteFigure;
  relabel: PolicyWriteFigure;
  policyChange: PolicyWriteFigure;
  /** one policy changed (a port), `rounds` times: compile+write ms */
  policyChangeMs: { rounds: number; p50: number; p99: number; max: number };
  /** a writer started again over the same maps and the same inputs: what it wrote */
  restart: PolicyWriteFigure;
  /** endpoints, identities, table entries after the first sync */
  endpoints: number;
  identities: number;
  tableEntries: number;
  /** distinct inner tables after the first sync (shared by endpoints with the same rules) */
  innerTables: number;
}

function timed(compiler: PolicyCompiler, writer: PolicyMapWriter, inputs: PolicyInputs, full: boolean): PolicyWriteFigure {
  const t0 = performance.now();
  const r = compiler.compile(inputs);
  const t1 = performance.now();
  const report = full ? writer.apply(r.compiled) : writer.applyDiff(writerDiff(r));
  return { compileMs: t1 - t0, writeMs: performance.now() - t1, report };
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;

/** Run the scenario over these (empty) policy maps. */
export function measurePolicyWrites(maps: PolicyMapSet, shape: PolicyScaleShape, rounds = 50): PolicyWriteFigures {
  const { pods, namespaces, policies } = policyScaleInputs(shape);
  const inputs = (): PolicyInputs => ({
    pods: pods.values(),
    namespaces: namespaces.values(),
    policies: policies.values(),
    node: { name: NODE_NAME, addresses: [NODE_ADDRESS] },
  });
  const writer = new PolicyMapWriter(maps);
  const compiler = new PolicyCompiler();
  compiler.seed(readPinned(maps));
  const first = timed(compiler, writer, inputs(), true);
  const st = writer.stats();
  const innerTables = new Set(maps.policy.entries().map(([, v]) => v.v)).size;

  // one local pod relabelled: it moves to another app
  const local = [...pods.values()].find((p) => p.nodeName === NODE_NAME)!;
  pods.set(`${local.namespace}/${local.name}`, { ...local, labels: { ...local.labels, app: 'app-moved' } });
  const relabel = timed(compiler, writer, inputs(), false);

  // one policy changed (its first port), many times
  const nsCount = shape.namespaces ?? 20;
  const apps = shape.apps ?? 50;
  const samples: number[] = [];
  let policyChange: PolicyWriteFigure | undefined;
  for (let r = 0; r < rounds; r++) {
    const j = (r * 7) % Math.max(1, shape.policies);
    const np = scalePolicy(j, nsCount, apps, 9000 + r);
    policies.set(`${np.namespace}/${np.name}`, np);
    const f = timed(compiler, writer, inputs(), false);
    policyChange ??= f;
    samples.push(f.compileMs + f.writeMs);
  }
  samples.sort((a, b) => a - b);

  const again = new PolicyMapWriter(maps);
  const c2 = new PolicyCompiler();
  c2.seed(readPinned(maps));
  const restart = timed(c2, again, inputs(), true);
  return {
    shape,
    first,
    relabel,
    policyChange: policyChange!,
    policyChangeMs: { rounds, p50: pct(samples, 50), p99: pct(samples, 99), max: samples[samples.length - 1] ?? 0 },
    restart,
    endpoints: st.endpoints,
    identities: st.identities,
    tableEntries: st.tableEntries,
    innerTables,
  };
}

/** One line per figure, for people. */
export function formatPolicyWriteFigures(f: PolicyWriteFigures): string {
  const one = (name: string, x: PolicyWriteFigure) =>
    `${name}: compile ${x.compileMs.toFixed(1)} ms, write ${x.report.ms.toFixed(1)} ms ` +
    `(tables ${x.report.tablesWritten} written/${x.report.tablesDeleted} deleted, ipcache ${x.report.ipcacheWrites}/${x.report.ipcacheDeletes}, generation ${x.report.generation})`;
  const s = f.shape;
  return [
    `policy writes: ${s.pods} pods (${s.localPods} local), ${s.policies} policies -> ${f.endpoints} endpoints, ${f.identities} identities, ${f.tableEntries} table entries in ${f.innerTables} inner tables`,
    `  ${one('first full sync', f.first)}`,
    `  ${one('one pod relabelled', f.relabel)}`,
    `  ${one('one policy changed', f.policyChange)}`,
    `  one policy changed x${f.policyChangeMs.rounds}: p50 ${f.policyChangeMs.p50.toFixed(1)} ms, p99 ${f.policyChangeMs.p99.toFixed(1)} ms, max ${f.policyChangeMs.max.toFixed(1)} ms (compile + write)`,
    `  ${one('restart, same inputs', f.restart)}`,
  ].join('\n');
}
