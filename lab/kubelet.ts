/**
 * The lab's DaemonSet controller and the kubelets of its nodes, in one:
 * every DaemonSet whose nodeSelector matches a lab Node's labels gets a Pod
 * on that node (created through the API, so `kubectl get pods` and
 * `kubectl logs ds/...` see it), and the Pod's container runs as a process
 * in the node's network namespace:
 * - an image named kube-proxy runs the lab's kube-proxy (lab/kube-proxy.ts);
 * - an image named bpfproxy runs `bpfproxy` from this checkout with the
 *   container's args, its pin dir set to the lab node's (the nodes share this
 *   machine's bpffs) and the lab's kubeconfig in place of the in-cluster one.
 * Other images are not run (their Pods stay Pending, saying why); init
 * containers are skipped (the lab has mounted bpffs already). A template
 * change replaces the Pods; a node the selector no longer matches loses its
 * Pod: the process gets SIGTERM, SIGKILL after terminationGracePeriodSeconds,
 * then the Pod is deleted. A container that exits is restarted with back-off.
 * Readiness is the process's own "ready" log line, not an HTTP probe.
 */
import { AGENT_NODE_FLAGS } from '../src/paths.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../src/log.js';
import type { FakeApiServer } from '../testkit/fake-apiserver.js';
import { nsPath } from '../testkit/netns.js';
import { AGENT_CLI, LAB_DIR, POD_CIDR, type Lab, type LabNode } from './lab.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const get = (o: unknown, ...path: string[]): unknown => path.reduce<unknown>((x, k) => (isObj(x) ? x[k] : undefined), o);
const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The annotation that ties a Pod to the DaemonSet and node the lab runs it for. */
export const RUN_ANNOTATION = 'lab.bpfproxy.io/run';
const LOG_CAP = 1 << 20;

export type Runner = 'kube-proxy' | 'bpfproxy';

/** Which of our programs an image stands for: the repository's last path element, without tag or digest. */
export function runnerFor(image: unknown): Runner | undefined {
  if (typeof image !== 'string') return undefined;
  const repo = image.split('@')[0]!.split('/').pop()!.split(':')[0];
  return repo === 'kube-proxy' || repo === 'bpfproxy' ? repo : undefined;
}

/** Whether a DaemonSet places a Pod on a node: every nodeSelector label matches (taints and affinity: not modelled). */
export function schedules(ds: unknown, node: unknown): boolean {
  const sel = get(ds, 'spec', 'template', 'spec', 'nodeSelector');
  const labels = get(node, 'metadata', 'labels');
  if (!isObj(sel)) return true;
  return Object.entries(sel).every(([k, v]) => isObj(labels) && labels[k] === v);
}

const templateHash = (ds: unknown): string =>
  createHash('sha256')
    .update(JSON.stringify(get(ds, 'spec', 'template') ?? {}))
    .digest('hex')
    .slice(0, 10);

/** `$(VAR)` in a container's command and args, expanded from its env as the kubelet does ($$ escapes). */
function expand(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string | undefined) => (m === '$$' ? '$' : v && v in env ? env[v]! : m));
}

/** The options bpfproxy takes a path for, which the lab sets per node. */
const LAB_OWNED = ['--pin-dir', '--kubeconfig'];

/**
 * `bpfproxy` args as the lab runs them for a node: the container's own, with
 * the pin dir replaced by the node's and the lab's kubeconfig (the
 * in-cluster config of a real pod). Subcommands that read maps get the
 * node's pin dir too.
 */
export function bpfproxyArgs(args: readonly string[], node: LabNode, kubeconfig: string | undefined): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const owned = LAB_OWNED.find((o) => a === o || a.startsWith(`${o}=`));
    if (owned) {
      if (a === owned) i++;
      continue;
    }
    out.push(a);
  }
  const sub = out.find((a) => !a.startsWith('-'));
  if (sub && ['agent', 'services', 'conntrack', 'status', 'cleanup'].includes(sub)) out.push('--pin-dir', node.pinDir);
  if (sub === 'agent' && kubeconfig) out.push('--kubeconfig', kubeconfig);
  return out;
}

interface PodRun {
  owner: string;
  dsKey: string;
  node: LabNode;
  hash: string;
  generation: number;
  runner: Runner | undefined;
  container: Obj;
  grace: number;
  /** namespace/name once created */
  key?: string;
  set?: (status: Record<string, unknown>, logs?: string) => void;
  child?: ChildProcess;
  logs: string;
  logFile?: string;
  ready: boolean;
  restarts: number;
  lastExit?: { exitCode: number | null; signal: string | null; finishedAt: string };
  startedAt?: string;
  restartTimer?: NodeJS.Timeout;
  flushTimer?: NodeJS.Timeout;
  stopping?: Promise<void>;
}

export interface LabKubeletOptions {
  lab: Lab;
  api: FakeApiServer;
  /** where Pods are created and deleted (the front door's; this process runs as root) */
  apiUrl: string;
  /** the kubeconfig processes on the nodes use */
  nodesKubeconfig: string;
  logDir: string;
  log: Logger;
  /** the lab's kube-proxy removes its rules when its Pod stops (kube-proxy itself leaves them) */
  kubeProxyCleanupOnStop?: boolean;
}

export class LabKubelet {
  private readonly runs = new Map<string, PodRun>();
  private readonly pending = new Map<string, PodRun>();
  private lastRv = -1;
  private dirty = true;
  private ticker: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: LabKubeletOptions) {
    mkdirSync(o.logDir, { recursive: true });
    o.api.kubelet = (pod, set) => this.admit(pod, set);
    // The DaemonSet controller answers each write at once, as the API server
    // replies: `kubectl rollout status` never sees a generation observed
    // before its Pods are counted.
    o.api.daemonSets = () => {
      if (this.ticker) this.reconcileOrRetry();
    };
  }

  private reconcileOrRetry(): void {
    try {
      this.reconcile();
    } catch (e) {
      this.o.log.error({ err: e }, `lab kubelet: reconcile failed: ${(e as Error).message}; retrying in 100 ms`);
      this.dirty = true;
    }
  }

  start(): void {
    this.ticker = setInterval(() => {
      if (this.stopped) return;
      const rv = this.o.api.resourceVersion;
      if (rv === this.lastRv && !this.dirty) return;
      this.lastRv = rv;
      this.dirty = false;
      this.reconcileOrRetry();
    }, 100);
  }

  /** Every Pod's process stopped (SIGTERM, then SIGKILL after its grace period), their Pods deleted. */
  async stopAll(): Promise<void> {
    this.stopped = true;
    clearInterval(this.ticker);
    await Promise.all([...this.runs.values()].map((r) => this.stopPod(r, 'the lab is going down')));
  }

  /** The pods the lab runs, by namespace/name: what exec looks up. */
  pod(ns: string, name: string): { node: LabNode; runner: Runner | undefined; container: string } | undefined {
    for (const r of this.runs.values()) {
      if (r.key === `${ns}/${name}`)
        return { node: r.node, runner: r.runner, container: typeof r.container.name === 'string' ? r.container.name : '' };
    }
    return undefined;
  }

  /** Pods of a DaemonSet (namespace/name) that are running and ready, by node name. */
  readyNodes(dsKey: string): string[] {
    return [...this.runs.values()].filter((r) => r.dsKey === dsKey && r.ready && !r.stopping).map((r) => r.node.name);
  }

  private reconcile(): void {
    const { api, lab } = this.o;
    const nodes = lab.nodes.map((n) => ({ n, obj: api.get('nodes', n.name) })).filter((x) => x.obj);
    const want = new Map<string, { ds: Obj; node: LabNode; hash: string }>();
    const dss = api.list('daemonsets');
    for (const ds of dss) {
      const dsKey = `${String(get(ds, 'metadata', 'namespace'))}/${String(get(ds, 'metadata', 'name'))}`;
      const hash = templateHash(ds);
      for (const { n, obj } of nodes) if (schedules(ds, obj)) want.set(`${dsKey}@${n.name}`, { ds, node: n, hash });
    }
    for (const r of this.runs.values()) {
      const w = want.get(r.owner);
      if (r.key && !r.stopping && !api.get('pods', r.key)) void this.stopPod(r, 'its Pod was deleted (the DaemonSet gets a new one)');
      else if (!w) void this.stopPod(r, 'the DaemonSet no longer places a Pod on this node');
      else if (w.hash !== r.hash) void this.stopPod(r, 'the DaemonSet template changed');
    }
    for (const [owner, w] of want) if (!this.runs.has(owner)) this.createPod(owner, w.ds, w.node, w.hash);
    for (const ds of dss) this.writeStatus(ds, want);
  }

  private writeStatus(ds: Obj, want: Map<string, { hash: string }>): void {
    const ns = String(get(ds, 'metadata', 'namespace'));
    const name = String(get(ds, 'metadata', 'name'));
    const dsKey = `${ns}/${name}`;
    const mine = [...this.runs.values()].filter((r) => r.dsKey === dsKey && r.key);
    const wanted = [...want.entries()].filter(([k]) => k.startsWith(`${dsKey}@`));
    const placed = mine.filter((r) => want.has(r.owner) && !r.stopping);
    const updated = placed.filter((r) => r.hash === want.get(r.owner)!.hash);
    const available = updated.filter((r) => r.ready).length;
    const generation = Number(get(ds, 'metadata', 'generation') ?? 1);
    const counts = {
      observedGeneration: generation,
      desiredNumberScheduled: wanted.length,
      currentNumberScheduled: placed.length,
      numberReady: placed.filter((r) => r.ready).length,
      updatedNumberScheduled: updated.length,
      numberAvailable: available,
      numberUnavailable: wanted.length - available,
      numberMisscheduled: mine.filter((r) => !want.has(r.owner)).length,
    };
    const cur = isObj(ds.status) ? ds.status : {};
    const status: Obj = { ...cur, ...counts };
    if (!counts.numberUnavailable) delete status.numberUnavailable;
    const keys = new Set([...Object.keys(cur), ...Object.keys(status)]);
    if ([...keys].every((k) => JSON.stringify(cur[k]) === JSON.stringify(status[k]))) return;
    this.o.api.upsert('daemonsets', { ...structuredClone(ds), status });
  }

  private createPod(owner: string, ds: Obj, node: LabNode, hash: string): void {
    const dsMeta = (ds.metadata ?? {}) as Obj;
    const template = structuredClone((get(ds, 'spec', 'template') ?? {}) as Obj);
    const tmeta = (template.metadata ?? {}) as Obj;
    const spec = (template.spec ?? {}) as Obj;
    const containers = Array.isArray(spec.containers) ? (spec.containers as Obj[]) : [];
    const container = containers.find((c) => runnerFor(c.image)) ?? containers[0] ?? {};
    const run: PodRun = {
      owner,
      dsKey: `${String(dsMeta.namespace)}/${String(dsMeta.name)}`,
      node,
      hash,
      generation: Number(dsMeta.generation ?? 1),
      runner: runnerFor(container.image),
      container,
      grace: Math.min(Number(spec.terminationGracePeriodSeconds ?? 30), 30),
      logs: '',
      ready: false,
      restarts: 0,
    };
    this.runs.set(owner, run);
    this.pending.set(owner, run);
    const body = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        generateName: `${String(dsMeta.name)}-`,
        namespace: dsMeta.namespace,
        labels: { ...((tmeta.labels as Obj) ?? {}), 'controller-revision-hash': hash, 'pod-template-generation': String(run.generation) },
        annotations: { ...((tmeta.annotations as Obj) ?? {}), [RUN_ANNOTATION]: owner },
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'DaemonSet', name: dsMeta.name, uid: dsMeta.uid, controller: true, blockOwnerDeletion: true },
        ],
      },
      spec: { ...spec, nodeName: node.name },
    };
    const path = `/api/v1/namespaces/${String(dsMeta.namespace)}/pods?fieldManager=bpfproxy-lab`;
    fetch(this.o.apiUrl + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
      .then(async (r) => {
        if (r.ok) return;
        throw new Error(`${r.status} ${(await r.text()).slice(0, 300)}`);
      })
      .catch((e: Error) => {
        this.o.log.error(
          { ds: run.dsKey, node: node.name },
          `lab kubelet: creating the Pod of ${run.dsKey} on ${node.name} failed: ${e.message}; retrying`,
        );
        this.pending.delete(owner);
        this.runs.delete(owner);
        this.dirty = true;
      });
  }

  /** The API server's kubelet hook: a Pod was created; run it if it is one of ours. */
  private admit(pod: Obj & { metadata: { name: string } }, set: (status: Record<string, unknown>, logs?: string) => void): void {
    const owner = get(pod, 'metadata', 'annotations', RUN_ANNOTATION);
    const run = typeof owner === 'string' ? this.pending.get(owner) : undefined;
    if (!run) return;
    this.pending.delete(run.owner);
    run.key = `${String(get(pod, 'metadata', 'namespace'))}/${pod.metadata.name}`;
    run.set = set;
    run.logFile = join(this.o.logDir, `${pod.metadata.name}.log`);
    if (!run.runner) {
      set({
        phase: 'Pending',
        hostIP: run.node.ip,
        containerStatuses: [
          {
            name: run.container.name,
            image: run.container.image,
            imageID: '',
            ready: false,
            restartCount: 0,
            started: false,
            state: {
              waiting: {
                reason: 'LabCannotRun',
                message: `the bpfproxy lab runs only kube-proxy and bpfproxy images, not ${String(run.container.image)}`,
              },
            },
          },
        ],
      });
      return;
    }
    this.startProcess(run);
  }

  private argv(run: PodRun): string[] {
    const c = run.container;
    const env: Record<string, string> = {};
    for (const e of Array.isArray(c.env) ? (c.env as Obj[]) : []) {
      if (typeof e.name !== 'string') continue;
      if (typeof e.value === 'string') env[e.name] = e.value;
      else if (get(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'spec.nodeName') env[e.name] = run.node.name;
      else if (get(e, 'valueFrom', 'fieldRef', 'fieldPath') === 'status.hostIP') env[e.name] = run.node.ip;
    }
    const strs = (v: unknown): string[] =>
      Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string').map((x) => expand(x, env)) : [];
    if (run.runner === 'kube-proxy') {
      return [
        join(LAB_DIR, 'kube-proxy.js'),
        '--kubeconfig',
        this.o.nodesKubeconfig,
        '--hostname-override',
        run.node.name,
        '--cluster-cidr',
        POD_CIDR,
        '--node-ip',
        run.node.ip,
        ...(this.o.kubeProxyCleanupOnStop ? ['--cleanup-on-stop'] : []),
      ];
    }
    // bpfproxy: the image's entrypoint is the CLI; a command naming bpfproxy is too
    const command = strs(c.command);
    const at = command.findIndex((x) => /(^|\/)bpfproxy$|main\.js$/.test(x));
    const args = [...(at >= 0 ? command.slice(at + 1) : []), ...strs(c.args)];
    return [...AGENT_NODE_FLAGS, AGENT_CLI, ...bpfproxyArgs(args.length ? args : ['agent'], run.node, this.o.nodesKubeconfig)];
  }

  private startProcess(run: PodRun): void {
    if (run.stopping || this.stopped) return;
    const argv = this.argv(run);
    const child = spawn('nsenter', [`--net=${nsPath(run.node.ns)}`, '--', process.execPath, ...argv], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
    });
    run.child = child;
    run.startedAt = now();
    run.ready = false;
    const readyLine = run.runner === 'kube-proxy' ? /"kube-proxy ready"/ : /"agent ready"/;
    this.o.log.info(
      { pod: run.key, node: run.node.name, pid: child.pid },
      `lab kubelet: started ${run.key} on ${run.node.name}: ${argv.join(' ')}`,
    );
    const onData = (d: Buffer): void => {
      const s = d.toString();
      run.logs = (run.logs + s).slice(-LOG_CAP);
      try {
        appendFileSync(run.logFile!, s);
      } catch {
        /* the state dir went away: the lab is going down */
      }
      if (!run.ready && readyLine.test(run.logs)) {
        run.ready = true;
        this.pushStatus(run);
        this.dirty = true;
      } else this.flushLogsSoon(run);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code, signal) => {
      run.child = undefined;
      run.ready = false;
      run.lastExit = { exitCode: code, signal, finishedAt: now() };
      this.dirty = true;
      if (run.stopping || this.stopped) return;
      run.restarts++;
      const backoff = Math.min(1000 * 2 ** Math.min(run.restarts - 1, 5), 30_000);
      this.o.log.warn(
        { pod: run.key, code, signal },
        `lab kubelet: ${run.key} on ${run.node.name} exited (${signal ?? code}); restarting in ${backoff} ms (see ${run.logFile})`,
      );
      this.pushStatus(run, true);
      run.restartTimer = setTimeout(() => this.startProcess(run), backoff);
    });
    this.pushStatus(run);
  }

  private flushLogsSoon(run: PodRun): void {
    if (run.flushTimer) return;
    run.flushTimer = setTimeout(() => {
      run.flushTimer = undefined;
      if (!run.stopping) run.set?.({}, run.logs);
    }, 500);
  }

  private pushStatus(run: PodRun, backingOff = false): void {
    const c = run.container;
    const state = run.child
      ? { running: { startedAt: run.startedAt } }
      : { waiting: { reason: backingOff ? 'CrashLoopBackOff' : 'ContainerCreating' } };
    const cond = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastTransitionTime: now() });
    run.set?.(
      {
        phase: 'Running',
        hostIP: run.node.ip,
        hostIPs: [{ ip: run.node.ip }],
        podIP: run.node.ip,
        podIPs: [{ ip: run.node.ip }],
        startTime: run.startedAt,
        conditions: [cond('Initialized', true), cond('Ready', run.ready), cond('ContainersReady', run.ready), cond('PodScheduled', true)],
        containerStatuses: [
          {
            name: c.name,
            image: c.image,
            imageID: '',
            containerID: run.child?.pid ? `lab://${run.child.pid}` : undefined,
            ready: run.ready,
            started: !!run.child,
            restartCount: run.restarts,
            state,
            ...(run.lastExit
              ? { lastState: { terminated: { ...run.lastExit, reason: run.lastExit.exitCode === 0 ? 'Completed' : 'Error' } } }
              : {}),
          },
        ],
      },
      run.logs,
    );
  }

  private stopPod(run: PodRun, why: string): Promise<void> {
    if (run.stopping) return run.stopping;
    run.stopping = (async () => {
      clearTimeout(run.restartTimer);
      clearTimeout(run.flushTimer);
      const child = run.child;
      if (child && child.exitCode === null) {
        this.o.log.info({ pod: run.key, node: run.node.name }, `lab kubelet: stopping ${run.key} on ${run.node.name}: ${why}`);
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), run.grace * 1000);
        await exited;
        clearTimeout(t);
      }
      if (run.key) {
        const [ns, name] = run.key.split('/');
        await fetch(`${this.o.apiUrl}/api/v1/namespaces/${ns}/pods/${name}`, { method: 'DELETE' }).catch(() => undefined);
      }
      this.runs.delete(run.owner);
      this.dirty = true;
    })();
    return run.stopping;
  }
}
