/**
 * The upstream NetworkPolicy e2e model in the namespace lab: namespaces x, y
 * and z with pods a, b and c each (9 pods over the two nodes), every pod
 * serving TCP and UDP on ports 80 and 81; the Pods and Namespaces as
 * manifests with their labels; a prober that measures the whole reachability
 * matrix at once; truth tables for a failure.
 *
 *   node1: x/a x/b x/c y/a y/b   10.244.1.11-15
 *   node2: y/c z/a z/b z/c       10.244.2.11-14
 *
 * SCTP is left out: this kernel has no SCTP sockets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nsPath, sh } from '../testkit/netns.js';
import { labSpec, LAB_DIR, type Lab, type LabNode } from './lab.js';
import type { FlowResult } from './matrix-probe.js';

export type { FlowResult };

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const POD_NAMES = ['a', 'b', 'c'] as const;
export const PORTS = [80, 81] as const;
export const PROTOCOLS = ['tcp', 'udp'] as const;
export type Proto = (typeof PROTOCOLS)[number];

/** A pod of the model: `x/a`. */
export interface ModelPod {
  key: string;
  namespace: string;
  name: string;
  node: string;
  ip: string;
  /** the lab's network namespace */
  netns: string;
}

const PLACEMENT: Array<[node: number, key: string]> = [
  [1, 'x/a'],
  [1, 'x/b'],
  [1, 'x/c'],
  [1, 'y/a'],
  [1, 'y/b'],
  [2, 'y/c'],
  [2, 'z/a'],
  [2, 'z/b'],
  [2, 'z/c'],
];

/** The two-node lab with the model's nine pods instead of the usual five. */
export function policyLabSpec(prefix: string): { lab: Lab; pods: ModelPod[] } {
  const lab = labSpec(prefix);
  const pods: ModelPod[] = [];
  for (const n of lab.nodes) n.pods = [];
  const count = new Map<number, number>();
  for (const [nodeNo, key] of PLACEMENT) {
    const node = lab.nodes[nodeNo - 1]!;
    const i = count.get(nodeNo) ?? 0;
    count.set(nodeNo, i + 1);
    const [namespace, name] = key.split('/') as [string, string];
    const ip = `10.244.${nodeNo}.${11 + i}`;
    const netns = `${prefix}-n${nodeNo}${namespace}${name}`;
    node.pods.push({ name: `${namespace}-${name}`, ns: netns, ip, hostIf: `cali${namespace}${name}${nodeNo}` });
    pods.push({ key, namespace, name, node: node.name, ip, netns });
  }
  return { lab, pods };
}

/** Echo servers on TCP and UDP 80 and 81 in every model pod; returns once all listen. */
export async function startModelServers(pods: ModelPod[], deadline = Date.now() + 15_000): Promise<void> {
  for (const p of pods) {
    const args = [join(LAB_DIR, 'echo-server.js'), '--name', p.key];
    for (const port of PORTS) args.push('--tcp', String(port), '--udp', String(port));
    spawn('nsenter', [`--net=${nsPath(p.netns)}`, '--', process.execPath, ...args], { detached: true, stdio: 'ignore' }).unref();
  }
  for (const p of pods) {
    for (;;) {
      // IPv4 listeners: the echo server also listens on IPv6 (the lab is dual-stack)
      const tcp = sh('ss', ['-H', '-4', '-ltn', 'sport = :80 or sport = :81'], { ns: p.netns, allowFail: true }).trim().split('\n');
      const udp = sh('ss', ['-H', '-4', '-lun', 'sport = :80 or sport = :81'], { ns: p.netns, allowFail: true }).trim().split('\n');
      if (tcp.filter(Boolean).length === 2 && udp.filter(Boolean).length === 2) break;
      if (Date.now() > deadline) throw new Error(`echo servers in pod ${p.key} (netns ${p.netns}) did not listen on 80/81 in time`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

export type Labels = Record<string, string>;

/** Labels as upstream sets them: pods `pod: a`, namespaces `ns: x` and the
 * automatic `kubernetes.io/metadata.name`. */
export function defaultLabels(pods: ModelPod[]): { pods: Map<string, Labels>; namespaces: Map<string, Labels> } {
  return {
    pods: new Map(pods.map((p) => [p.key, { pod: p.name }])),
    namespaces: new Map(NAMESPACES.map((n) => [n, { ns: n, 'kubernetes.io/metadata.name': n }])),
  };
}

/** Namespaces and Pods (with named container ports serve-80-tcp etc.) as
 * JSON documents, which YAML reads as they are. */
export function modelManifests(pods: ModelPod[], labels: { pods: Map<string, Labels>; namespaces: Map<string, Labels> }): string {
  const docs: unknown[] = [];
  for (const n of NAMESPACES) {
    docs.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n, labels: labels.namespaces.get(n) ?? {} } });
  }
  for (const p of pods) {
    docs.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, labels: labels.pods.get(p.key) ?? {} },
      spec: {
        nodeName: p.node,
        containers: [
          {
            name: 'c',
            image: 'agnhost',
            ports: PORTS.flatMap((port) =>
              PROTOCOLS.map((proto) => ({ name: `serve-${port}-${proto}`, containerPort: port, protocol: proto.toUpperCase() })),
            ),
          },
        ],
      },
      status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] },
    });
  }
  return docs.map((d) => JSON.stringify(d)).join('\n---\n') + '\n';
}

/** `x/a>y/b 80/tcp` → reachable */
export type Matrix = Map<string, boolean>;
export const cell = (from: string, to: string, port: number, proto: Proto): string => `${from}>${to} ${port}/${proto}`;

/** One prober process per model pod, started once and kept (a process
 * start per round costs seconds on a loaded machine); requests to a pod's
 * prober are answered in order. */
export class Prober {
  private procs = new Map<string, { child: ChildProcess; queue: Array<(line: string) => void>; buf: string; err: string }>();
  private tails = new Map<string, Promise<unknown>>();

  constructor(private readonly pods: ModelPod[]) {
    for (const p of pods) {
      const child = spawn('nsenter', [`--net=${nsPath(p.netns)}`, '--', process.execPath, join(LAB_DIR, 'matrix-probe.js'), 'serve'], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const st = { child, queue: [] as Array<(line: string) => void>, buf: '', err: '' };
      child.stdout.on('data', (d: Buffer) => {
        st.buf += d.toString();
        let i;
        while ((i = st.buf.indexOf('\n')) >= 0) {
          const line = st.buf.slice(0, i);
          st.buf = st.buf.slice(i + 1);
          st.queue.shift()?.(line);
        }
      });
      child.stderr.on('data', (d: Buffer) => (st.err += d.toString()));
      this.procs.set(p.key, st);
    }
  }

  /** Probe `targets` (HOST:PORT/tcp|udp) from one pod, all at once, each bounded by `timeout`. */
  probe(from: ModelPod, targets: string[], timeout = 1000): Promise<boolean[]> {
    const st = this.procs.get(from.key);
    if (!st) throw new Error(`no prober for pod ${from.key}`);
    const prev = this.tails.get(from.key) ?? Promise.resolve();
    const next = prev.then(
      () =>
        new Promise<boolean[]>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`prober in pod ${from.key} did not answer in ${timeout + 10_000} ms: ${st.err.trim()}`)),
            timeout + 10_000,
          );
          st.queue.push((line) => {
            clearTimeout(timer);
            resolve(JSON.parse(line) as boolean[]);
          });
          st.child.stdin!.write(`${JSON.stringify({ timeout, targets })}\n`);
        }),
    );
    this.tails.set(
      from.key,
      next.catch(() => undefined),
    );
    return next;
  }

  /** Every pod probes every pod on every port and protocol, all at once. */
  async matrix(timeout = 1000): Promise<Matrix> {
    const m: Matrix = new Map();
    const targets: Array<{ to: ModelPod; port: number; proto: Proto }> = [];
    for (const to of this.pods) for (const port of PORTS) for (const proto of PROTOCOLS) targets.push({ to, port, proto });
    await Promise.all(
      this.pods.map(async (from) => {
        const oks = await this.probe(
          from,
          targets.map((x) => `${x.to.ip}:${x.port}/${x.proto}`),
          timeout,
        );
        targets.forEach((x, i) => m.set(cell(from.key, x.to.key, x.port, x.proto), oks[i] === true));
      }),
    );
    return m;
  }

  /** Close every prober's stdin (they exit) and kill what is left. */
  close(): void {
    for (const st of this.procs.values()) {
      st.child.stdin!.end();
      setTimeout(() => st.child.kill('SIGKILL'), 2000).unref();
    }
  }
}

/** A long-lived TCP flow from a pod (a byte every 50 ms, echoed), started now. */
export function startFlow(from: ModelPod, host: string, port: number, durationMs: number, stallMs: number): Promise<FlowResult> {
  return runIn(from.netns, ['flow', host, String(port), String(durationMs), String(stallMs)], durationMs + 15_000).then(
    (out) => JSON.parse(out) as FlowResult,
  );
}

function runIn(netns: string, args: string[], killAfter: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('nsenter', [`--net=${nsPath(netns)}`, '--', process.execPath, join(LAB_DIR, 'matrix-probe.js'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => c.kill('SIGKILL'), killAfter);
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`matrix-probe in ${netns} exited ${code}: ${err.trim()}`));
    });
  });
}

/** The expected verdict of one cell (loopback always passes: it never leaves the pod). */
export type Expect = (from: ModelPod, to: ModelPod, port: number, proto: Proto) => boolean;

export function expectedMatrix(pods: ModelPod[], expect: Expect): Matrix {
  const m: Matrix = new Map();
  for (const from of pods)
    for (const to of pods)
      for (const port of PORTS)
        for (const proto of PROTOCOLS) m.set(cell(from.key, to.key, port, proto), from === to || expect(from, to, port, proto));
  return m;
}

export function mismatches(want: Matrix, got: Matrix): string[] {
  return [...want].filter(([k, v]) => got.get(k) !== v).map(([k]) => k);
}

/** Truth tables like upstream's: per port/protocol, rows are sources,
 * columns destinations; '.' reachable, 'X' not; in the diff, 'X' marks a
 * cell that differs from the expectation. */
export function truthTables(pods: ModelPod[], want: Matrix, got: Matrix): string {
  const keys = pods.map((p) => p.key);
  const table = (title: string, f: (k: string) => string, port: number, proto: Proto) =>
    [
      `${title} ${port}/${proto}`,
      `      ${keys.join(' ')}`,
      ...keys.map((from) => `${from}   ${keys.map((to) => f(cell(from, to, port, proto)).padEnd(3)).join(' ')}`),
    ].join('\n');
  const out: string[] = [];
  for (const port of PORTS) {
    for (const proto of PROTOCOLS) {
      const ks = keys.flatMap((a) => keys.map((b) => cell(a, b, port, proto)));
      if (ks.every((k) => want.get(k) === got.get(k))) continue;
      out.push(table('expected', (k) => (want.get(k) ? '.' : 'X'), port, proto));
      out.push(table('observed', (k) => (got.get(k) ? '.' : 'X'), port, proto));
      out.push(table('diff    ', (k) => (want.get(k) === got.get(k) ? '.' : 'X'), port, proto));
    }
  }
  return out.join('\n\n');
}

export type { Lab, LabNode };
