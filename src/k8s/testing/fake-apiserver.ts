/**
 * An in-process Kubernetes API server for tests and benchmarks: just the list/watch and
 * Events surface bpfproxy uses, implemented the way the real one behaves.
 * - one global resourceVersion; every write bumps it;
 * - lists are paged (limit / continue) at a consistent resourceVersion;
 * - watches are chunked HTTP streams of JSON lines replaying history after
 *   the requested resourceVersion, then live events;
 * - allowWatchBookmarks: BOOKMARK events carrying the current version;
 * - compact(): history before now is forgotten; older watches and continue
 *   tokens get 410 Gone (an ERROR event on watches, as the real server does);
 * - dropWatches(): cut every open watch connection.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';

export type Resource = 'services' | 'endpointslices' | 'nodes' | 'felixconfigurations';

const PATHS: Record<Resource, RegExp> = {
  services: /^\/api\/v1\/services$/,
  endpointslices: /^\/apis\/discovery\.k8s\.io\/v1\/endpointslices$/,
  nodes: /^\/api\/v1\/nodes$/,
  felixconfigurations: /^\/apis\/crd\.projectcalico\.org\/v1\/felixconfigurations$/,
};
const LIST_KIND: Record<Resource, string> = {
  services: 'ServiceList', endpointslices: 'EndpointSliceList', nodes: 'NodeList', felixconfigurations: 'FelixConfigurationList',
};

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown }; [k: string]: unknown };

interface Ev { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Obj }

interface Watcher { res: Resource; resp: ServerResponse; bookmarks: boolean }

export interface RequestLog { method: string; path: string; query: Record<string, string> }

export class FakeApiServer {
  private rv = 100;
  private compactedAt = 0;
  private readonly objects = new Map<Resource, Map<string, Obj>>();
  private readonly history = new Map<Resource, Ev[]>();
  private readonly watchers = new Set<Watcher>();
  private server!: Server;
  readonly events: Obj[] = [];
  readonly requests: RequestLog[] = [];
  /** resources that answer 404 (CRD not installed) */
  readonly missing = new Set<Resource>();
  private bookmarkTimer: NodeJS.Timeout | undefined;
  readonly namespaces = new Set<string>(['default', 'kube-system']);
  readonly pods = new Map<string, { pod: Obj; logs: string }>();
  private nextServiceIP = 100;
  /**
   * Plays the kubelet for created pods: called with each new pod and a
   * function to set its status and logs (tests schedule phases with it).
   */
  kubelet: ((pod: Obj, set: (status: Record<string, unknown>, logs?: string) => void) => void) | undefined;

  constructor() {
    for (const r of Object.keys(PATHS) as Resource[]) {
      this.objects.set(r, new Map());
      this.history.set(r, []);
    }
  }

  /**
   * Listen on host:port (0 = any free port). With anyAddress the socket is
   * bound to all addresses synchronously, so it is created in the network
   * namespace the calling thread is in at that moment.
   */
  async listen(host = '127.0.0.1', port = 0, anyAddress = false): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => (anyAddress ? this.server.listen(port, r) : this.server.listen(port, host, r)));
    this.bookmarkTimer = setInterval(() => this.bookmark(), 1000);
    const a = this.server.address() as AddressInfo;
    return `http://${host}:${a.port}`;
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    this.dropWatches();
    this.server.closeAllConnections?.();
    await new Promise((r) => this.server.close(r));
  }

  get resourceVersion(): number {
    return this.rv;
  }

  private key(o: Obj): string {
    return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
  }

  /** Create or replace an object (as kubectl apply would). */
  upsert(res: Resource, obj: Obj): number {
    const m = this.objects.get(res)!;
    const k = this.key(obj);
    const type = m.has(k) ? 'MODIFIED' : 'ADDED';
    const stored = structuredClone(obj);
    stored.metadata.resourceVersion = String(++this.rv);
    m.set(k, stored);
    this.emit(res, { rv: this.rv, type, object: stored });
    return this.rv;
  }

  remove(res: Resource, key: string): boolean {
    const m = this.objects.get(res)!;
    const o = m.get(key);
    if (!o) return false;
    m.delete(key);
    const gone = structuredClone(o);
    gone.metadata.resourceVersion = String(++this.rv);
    this.emit(res, { rv: this.rv, type: 'DELETED', object: gone });
    return true;
  }

  get(res: Resource, key: string): Obj | undefined {
    return this.objects.get(res)!.get(key);
  }

  /** Forget history: watches from before now get 410 Gone. */
  compact(): void {
    this.compactedAt = this.rv;
    for (const h of this.history.values()) h.length = 0;
  }

  /** Cut every watch connection (network blip, API server restart). */
  dropWatches(): void {
    for (const w of this.watchers) w.resp.destroy();
    this.watchers.clear();
  }

  watchCount(res?: Resource): number {
    return [...this.watchers].filter((w) => !res || w.res === res).length;
  }

  private emit(res: Resource, ev: Ev): void {
    this.history.get(res)!.push(ev);
    for (const w of this.watchers) if (w.res === res) this.send(w, ev.type, ev.object);
  }

  private send(w: Watcher, type: string, object: unknown): void {
    w.resp.write(`${JSON.stringify({ type, object })}\n`);
  }

  private bookmark(): void {
    for (const w of this.watchers) {
      if (w.bookmarks) this.send(w, 'BOOKMARK', { kind: 'Bookmark', metadata: { resourceVersion: String(this.rv) } });
    }
  }

  private gone(resp: ServerResponse, asEvent: boolean): void {
    const status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 };
    if (asEvent) {
      resp.writeHead(200, { 'Content-Type': 'application/json' });
      resp.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
    } else {
      resp.writeHead(410, { 'Content-Type': 'application/json' });
      resp.end(JSON.stringify(status));
    }
  }

  private handle(req: IncomingMessage, resp: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query });
    if (this.handleObjects(req, resp, url.pathname)) return;
    const ev = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(url.pathname);
    if (ev && req.method === 'POST') {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const o = JSON.parse(body) as Obj;
        o.metadata = { ...o.metadata, name: `${o.metadata?.generateName ?? 'ev.'}${this.events.length}`, namespace: ev[1], resourceVersion: String(++this.rv) };
        this.events.push(o);
        resp.writeHead(201, { 'Content-Type': 'application/json' });
        resp.end(JSON.stringify(o));
      });
      return;
    }
    const res = (Object.keys(PATHS) as Resource[]).find((r) => PATHS[r].test(url.pathname));
    if (!res || this.missing.has(res)) {
      resp.writeHead(404, { 'Content-Type': 'application/json' });
      resp.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: `the server could not find the requested resource (${url.pathname})` }));
      return;
    }
    if (query.watch === 'true' || query.watch === '1') return this.watch(res, query, resp);
    this.list(res, query, resp);
  }

  private body(req: IncomingMessage): Promise<Obj> {
    return new Promise((resolve) => {
      let b = '';
      req.on('data', (d) => (b += d));
      req.on('end', () => resolve(JSON.parse(b || '{}') as Obj));
    });
  }

  private reply(resp: ServerResponse, code: number, body: unknown, raw = false): void {
    resp.writeHead(code, { 'Content-Type': raw ? 'text/plain' : 'application/json' });
    resp.end(raw ? String(body) : JSON.stringify(body));
  }

  private notFound(resp: ServerResponse, what: string): void {
    this.reply(resp, 404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: `${what} not found` });
  }

  /** Namespaces, pods (with logs) and services by name: what bench cluster uses. */
  private handleObjects(req: IncomingMessage, resp: ServerResponse, path: string): boolean {
    const method = req.method ?? 'GET';
    if (path === '/api/v1/namespaces' && method === 'POST') {
      void this.body(req).then((o) => {
        if (this.namespaces.has(o.metadata.name)) return this.reply(resp, 409, { kind: 'Status', code: 409, reason: 'AlreadyExists', message: `namespaces "${o.metadata.name}" already exists` });
        this.namespaces.add(o.metadata.name);
        this.reply(resp, 201, { ...o, apiVersion: 'v1', kind: 'Namespace' });
      });
      return true;
    }
    let m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(path);
    if (m && method === 'DELETE') {
      const ns = m[1]!;
      if (!this.namespaces.delete(ns)) this.notFound(resp, `namespace ${ns}`);
      else {
        for (const k of [...this.pods.keys()]) if (k.startsWith(`${ns}/`)) this.pods.delete(k);
        this.reply(resp, 200, { kind: 'Namespace', apiVersion: 'v1', metadata: { name: ns }, status: { phase: 'Terminating' } });
      }
      return true;
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/(pods|services)(?:\/([^/]+))?(\/log)?$/.exec(path);
    if (!m) return false;
    const [, ns, kind, name, log] = m as unknown as [string, string, 'pods' | 'services', string | undefined, string | undefined];
    if (!this.namespaces.has(ns)) {
      this.notFound(resp, `namespace ${ns}`);
      return true;
    }
    if (method === 'POST' && !name) {
      void this.body(req).then((o) => {
        o.metadata = { ...o.metadata, namespace: ns, uid: `uid-${++this.rv}` };
        if (kind === 'pods') {
          if (this.pods.has(`${ns}/${o.metadata.name}`)) return this.reply(resp, 409, { kind: 'Status', code: 409, reason: 'AlreadyExists' });
          o.status = { phase: 'Pending' };
          const entry = { pod: o, logs: '' };
          this.pods.set(`${ns}/${o.metadata.name}`, entry);
          this.kubelet?.(o, (status, logs) => {
            entry.pod.status = { ...(entry.pod.status as object), ...status };
            if (logs !== undefined) entry.logs = logs;
          });
          return this.reply(resp, 201, o);
        }
        const spec = (o.spec ?? {}) as { clusterIP?: string };
        spec.clusterIP ??= `10.96.200.${this.nextServiceIP++}`;
        o.spec = spec;
        this.upsert('services', o);
        this.reply(resp, 201, this.get('services', `${ns}/${o.metadata.name}`));
      });
      return true;
    }
    const key = `${ns}/${name}`;
    if (kind === 'pods') {
      const p = this.pods.get(key);
      if (!p) this.notFound(resp, `pod ${key}`);
      else if (method === 'DELETE') {
        this.pods.delete(key);
        this.reply(resp, 200, p.pod);
      } else if (log) this.reply(resp, 200, p.logs, true);
      else this.reply(resp, 200, p.pod);
      return true;
    }
    const svc = this.get('services', key);
    if (!svc) this.notFound(resp, `service ${key}`);
    else if (method === 'DELETE') {
      this.remove('services', key);
      this.reply(resp, 200, svc);
    } else this.reply(resp, 200, svc);
    return true;
  }

  private list(res: Resource, q: Record<string, string>, resp: ServerResponse): void {
    let atRv = this.rv;
    let offset = 0;
    if (q.continue) {
      const c = JSON.parse(Buffer.from(q.continue, 'base64').toString()) as { rv: number; offset: number };
      if (c.rv < this.compactedAt) return this.gone(resp, false);
      atRv = c.rv;
      offset = c.offset;
    }
    // A consistent snapshot at atRv: objects as they were then. We keep only
    // the current state, so a continue across writes sees newer objects: the
    // real server would too once etcd compacts, and clients must cope.
    const all = [...this.objects.get(res)!.values()].sort((a, b) => (this.key(a) < this.key(b) ? -1 : 1));
    const limit = q.limit ? Number(q.limit) : all.length;
    const page = all.slice(offset, offset + limit);
    const more = offset + limit < all.length;
    const body = {
      kind: LIST_KIND[res],
      apiVersion: res === 'endpointslices' ? 'discovery.k8s.io/v1' : res === 'felixconfigurations' ? 'crd.projectcalico.org/v1' : 'v1',
      metadata: { resourceVersion: String(atRv), ...(more ? { continue: Buffer.from(JSON.stringify({ rv: atRv, offset: offset + limit })).toString('base64') } : {}) },
      items: page,
    };
    resp.writeHead(200, { 'Content-Type': 'application/json' });
    resp.end(JSON.stringify(body));
  }

  private watch(res: Resource, q: Record<string, string>, resp: ServerResponse): void {
    const from = q.resourceVersion ? Number(q.resourceVersion) : this.rv;
    if (from < this.compactedAt) return this.gone(resp, true);
    resp.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    resp.flushHeaders();
    const w: Watcher = { res, resp, bookmarks: q.allowWatchBookmarks === 'true' };
    for (const ev of this.history.get(res)!) if (ev.rv > from) this.send(w, ev.type, ev.object);
    this.watchers.add(w);
    resp.on('close', () => this.watchers.delete(w));
  }
}

/** A kubeconfig file for the fake server. */
export function writeKubeconfig(path: string, server: string): void {
  writeFileSync(path, `apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: ${server}
    insecure-skip-tls-verify: true
users:
- name: test
  user:
    token: test-token
contexts:
- name: fake
  context:
    cluster: fake
    user: test
current-context: fake
`);
}
