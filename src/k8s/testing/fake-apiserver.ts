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
