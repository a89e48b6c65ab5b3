/**
 * The upstream NetworkPolicy e2e model (k/k test/e2e/network/netpol):
 * namespaces x, y, z with pods a, b, c each, serving ports 80 and 81 over
 * TCP, UDP and SCTP (container ports named serve-80-tcp and so on), as
 * Kubernetes objects, on two nodes: a and b on node1, c on node2.
 *
 * A probe runs the whole 9×9 matrix through the compiled model: a flow is
 * allowed iff the source's egress on its node and the destination's ingress
 * on its node both allow, each decided by evaluate.ts over that node's
 * CompiledPolicy. Both nodes keep one PolicyCompiler across steps (the
 * incremental path), and every probe also compiles from scratch and must
 * decide the same.
 */
import { PolicyCompiler, compilePolicy, type NodeInfo } from '../../src/model/policy/compile.js';
import type { CompiledPolicy } from '../../src/model/policy/compiled.js';
import { decide, type Decision } from '../../src/model/policy/evaluate.js';
import type { Namespace, NetworkPolicy, Pod } from '../../src/model/policy/types.js';
import { toNamespace, toNetworkPolicy, toPod } from '../../src/sources/policy-convert.js';
import type { PolicyDiff } from '../../src/model/policy/diff.js';
import { oracleAllows, type OraclePod } from './policy-oracle.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- Kubernetes objects, read untyped

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const POD_NAMES = ['a', 'b', 'c'] as const;
export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
export type Proto = (typeof PROTOCOLS)[number];
export const PROTO_NUM: Record<Proto, number> = { TCP: 6, UDP: 17, SCTP: 132 };

export const NODES: NodeInfo[] = [
  { name: 'node1', addresses: ['192.168.0.1'] },
  { name: 'node2', addresses: ['192.168.0.2'] },
];

export const nodeOf = (pod: string): number => (pod === 'c' ? 1 : 0);

/** x/a → 10.244.1.11, y/b → 10.244.1.22, z/c → 10.244.2.33 */
export function podIP(ns: string, pod: string): string {
  return `10.244.${nodeOf(pod) + 1}.${(NAMESPACES.indexOf(ns as 'x') + 1) * 10 + POD_NAMES.indexOf(pod as 'a') + 1}`;
}

export const ALL_PODS: string[] = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => `${ns}/${p}`));

export function namespaceObj(name: string, labels: Record<string, string> = { ns: name }): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export function podObj(ns: string, name: string, opts: { labels?: Record<string, string>; ports?: Obj[] } = {}): Obj {
  const ports =
    opts.ports ??
    [80, 81].flatMap((port) =>
      PROTOCOLS.map((protocol) => ({ name: `serve-${port}-${protocol.toLowerCase()}`, containerPort: port, protocol })),
    );
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: opts.labels ?? { pod: name } },
    spec: {
      nodeName: NODES[nodeOf(name)]!.name,
      containers: ports.map((p, i) => ({ name: `cont-${i}`, image: 'agnhost', ports: [p] })),
    },
    status: { phase: 'Running', podIP: podIP(ns, name), podIPs: [{ ip: podIP(ns, name) }] },
  };
}

export function netpol(ns: string, name: string, spec: Obj): Obj {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec };
}

/** The cluster as Kubernetes objects; tests mutate it between steps. */
export class Cluster {
  namespaces = new Map<string, Obj>(NAMESPACES.map((n) => [n, namespaceObj(n)]));
  pods = new Map<string, Obj>(ALL_PODS.map((k) => [k, podObj(k.split('/')[0]!, k.split('/')[1]!)]));
  policies = new Map<string, Obj>();
  readonly compilers = NODES.map(() => new PolicyCompiler());
  readonly compiled: CompiledPolicy[] = [];
  readonly diffs: PolicyDiff[] = [];

  constructor(policies: Obj[] = []) {
    for (const p of policies) this.addPolicy(p);
  }

  addPolicy(p: Obj): this {
    this.policies.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
    return this;
  }

  deletePolicy(ns: string, name: string): this {
    this.policies.delete(`${ns}/${name}`);
    return this;
  }

  setPodLabels(key: string, labels: Record<string, string>): this {
    const o = structuredClone(this.pods.get(key)!);
    o.metadata.labels = labels;
    this.pods.set(key, o);
    return this;
  }

  setNamespaceLabels(name: string, labels: Record<string, string>): this {
    this.namespaces.set(name, namespaceObj(name, labels));
    return this;
  }

  domain(): { pods: Pod[]; namespaces: Namespace[]; policies: NetworkPolicy[]; problems: string[] } {
    const problems: string[] = [];
    const conv = <T>(r: { value?: T; problems: Array<{ object: string; field: string; message: string }> }): T[] => {
      for (const p of r.problems) problems.push(`${p.object} ${p.field}: ${p.message}`);
      return r.value ? [r.value] : [];
    };
    return {
      pods: [...this.pods.values()].flatMap((o) => conv(toPod(o))),
      namespaces: [...this.namespaces.values()].flatMap((o) => conv(toNamespace(o))),
      policies: [...this.policies.values()].flatMap((o) => conv(toNetworkPolicy(o))),
      problems,
    };
  }

  /** Compile both nodes incrementally (kept compilers); returns the problems of conversion. */
  compile(): string[] {
    const d = this.domain();
    NODES.forEach((node, i) => {
      const r = this.compilers[i]!.compile({ ...d, node });
      this.compiled[i] = r.compiled;
      this.diffs[i] = r.diff;
    });
    return d.problems;
  }

  /** Both nodes compiled from scratch. */
  compileFresh(): CompiledPolicy[] {
    const d = this.domain();
    return NODES.map((node) => compilePolicy({ ...d, node }).compiled);
  }

  oraclePods(): OraclePod[] {
    return [...this.pods.values()].map((o) => ({
      ns: o.metadata.namespace,
      name: o.metadata.name,
      ip: o.status.podIP,
      labels: o.metadata.labels,
      ports: o.spec.containers.flatMap((c: Obj) => c.ports),
    }));
  }
}

export interface FlowResult {
  allowed: boolean;
  egress?: Decision;
  ingress?: Decision;
}

export function flow(compiled: CompiledPolicy[], from: string, to: string, port: number, proto: Proto): FlowResult {
  const [fns, fp] = from.split('/') as [string, string];
  const [tns, tp] = to.split('/') as [string, string];
  const pkt = { src: podIP(fns, fp), dst: podIP(tns, tp), proto: PROTO_NUM[proto], dport: port };
  const egress = decide(compiled[nodeOf(fp)]!, pkt, 'egress');
  const ingress = decide(compiled[nodeOf(tp)]!, pkt, 'ingress');
  if (!egress || !ingress) throw new Error(`${from} or ${to} is not a local endpoint of its node`);
  return { allowed: egress.verdict === 'allow' && ingress.verdict === 'allow', egress, ingress };
}

/** Why a flow is decided so: each end's decision, for failure messages. */
export function explain(compiled: CompiledPolicy[], from: string, to: string, port: number, proto: Proto): string {
  const f = flow(compiled, from, to, port, proto);
  const show = (d: Decision | undefined) =>
    d ? `${d.verdict} (${d.reason}${d.ruleId !== undefined ? ` rule ${d.ruleId}` : ''}, peer identity ${d.peer})` : 'none';
  return `${from} → ${to} ${proto}/${port}: egress ${show(f.egress)}, ingress ${show(f.ingress)}`;
}

export type Matrix = Map<string, boolean>;
const cell = (from: string, to: string) => `${from}>${to}`;

export function matrixOf(compiled: CompiledPolicy[], port: number, proto: Proto): Matrix {
  const m: Matrix = new Map();
  for (const from of ALL_PODS) for (const to of ALL_PODS) m.set(cell(from, to), flow(compiled, from, to, port, proto).allowed);
  return m;
}

export function oracleMatrix(c: Cluster, port: number, proto: Proto): Matrix {
  const world = {
    namespaces: Object.fromEntries([...c.namespaces.values()].map((n) => [n.metadata.name, n.metadata.labels ?? {}])),
    pods: c.oraclePods(),
    policies: [...c.policies.values()],
  };
  const m: Matrix = new Map();
  const byKey = new Map(world.pods.map((p) => [`${p.ns}/${p.name}`, p]));
  for (const from of ALL_PODS)
    for (const to of ALL_PODS) m.set(cell(from, to), oracleAllows(world, byKey.get(from)!, byKey.get(to)!, port, proto));
  return m;
}

/**
 * Expected reachability, built like upstream's Reachability: everything
 * allowed (or denied), then Expect* calls. A peer is {ns?, pod?}: missing
 * fields match every namespace / pod.
 */
export class Reach {
  readonly m: Matrix = new Map();
  constructor(allowed = true) {
    for (const from of ALL_PODS) for (const to of ALL_PODS) this.m.set(cell(from, to), allowed);
  }

  private static match(p: { ns?: string; pod?: string }, key: string): boolean {
    const [ns, pod] = key.split('/');
    return (p.ns === undefined || p.ns === ns) && (p.pod === undefined || p.pod === pod);
  }

  expectPeer(from: { ns?: string; pod?: string }, to: { ns?: string; pod?: string }, allowed: boolean): this {
    for (const f of ALL_PODS) for (const t of ALL_PODS) if (Reach.match(from, f) && Reach.match(to, t)) this.m.set(cell(f, t), allowed);
    return this;
  }

  expect(from: string, to: string, allowed: boolean): this {
    this.m.set(cell(from, to), allowed);
    return this;
  }

  expectAllIngress(to: string, allowed: boolean): this {
    for (const f of ALL_PODS) this.m.set(cell(f, to), allowed);
    return this;
  }

  expectAllEgress(from: string, allowed: boolean): this {
    for (const t of ALL_PODS) this.m.set(cell(from, t), allowed);
    return this;
  }
}

/** Pairs that differ, loopback ignored (as upstream does: k/k#95879). */
export function mismatches(expected: Matrix, got: Matrix): string[] {
  const out: string[] = [];
  for (const from of ALL_PODS) {
    for (const to of ALL_PODS) {
      if (from === to) continue;
      if (expected.get(cell(from, to)) !== got.get(cell(from, to))) out.push(`${from} → ${to}`);
    }
  }
  return out;
}

/** One grid: rows from, columns to; "." allowed, "X" denied, "-" loopback (ignored); "!" marks a wrong cell in `got`. */
function grid(m: Matrix, other?: Matrix): string[] {
  const lines = [`from\\to ${ALL_PODS.join(' ')}`];
  for (const from of ALL_PODS) {
    const cells = ALL_PODS.map((to) => {
      const v = m.get(cell(from, to));
      const mark = from === to ? '-' : v ? '.' : 'X';
      const wrong = other && from !== to && other.get(cell(from, to)) !== v;
      return ` ${mark}${wrong ? '!' : ' '} `;
    });
    lines.push(`${from.padEnd(7)} ${cells.join('')}`);
  }
  return lines;
}

/** Expected and got side by side, wrong cells marked with "!". */
export function matrixDiff(expected: Matrix, got: Matrix, title: string): string {
  const e = grid(expected);
  const g = grid(got, expected);
  const w = Math.max(...e.map((l) => l.length));
  const lines = [`${title}: expected (left) vs got (right); "." allowed, "X" denied, "!" wrong`];
  for (let i = 0; i < e.length; i++) lines.push(`${e[i]!.padEnd(w)}   |   ${g[i]}`);
  return lines.join('\n');
}

export function sameDecisions(a: CompiledPolicy[], b: CompiledPolicy[], ports: number[], protos: readonly Proto[]): string[] {
  const out: string[] = [];
  for (const port of ports) {
    for (const proto of protos) {
      const ma = matrixOf(a, port, proto);
      const mb = matrixOf(b, port, proto);
      for (const k of ma.keys()) if (ma.get(k) !== mb.get(k)) out.push(`${proto}/${port} ${k}`);
    }
  }
  return out;
}
