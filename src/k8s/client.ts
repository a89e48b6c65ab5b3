/**
 * The thin client the agent needs of the Kubernetes API: list (paged) and
 * watch seven resources, and write Events. Plain HTTP(S) with JSON, over a
 * connection from kubeconfig.ts; objects reach the informers exactly as
 * the API server sent them (RFC 3339 timestamps as strings). Everything
 * else (informers, conversion, policy) is ours.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { hostname } from 'node:os';
import type { ApiConnection } from './kubeconfig.js';
import type { KubeObject, ListPage, ResourceClient, WatchEvent, WatchHandle } from './informer.js';

export { apiConnection, type ApiConnection } from './kubeconfig.js';

/** A list or an Event write that takes longer than this has failed (and is retried by its caller). */
const REQUEST_TIMEOUT_MS = 60_000;
/** TCP keep-alive on watches: a dead peer is noticed without any data flowing. */
const WATCH_KEEPALIVE_MS = 30_000;
/** Largest watch line (one object) read; a longer one ends the watch. */
const MAX_WATCH_LINE = 64 * 1024 * 1024;

/** A response other than 2xx: `statusCode`, and the Status object the server sent when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly body: { code?: number; reason?: string; message?: string } | undefined,
    what: string,
  ) {
    super(`${what}: HTTP ${statusCode}${body?.reason ? ` ${body.reason}` : ''}${body?.message ? `: ${body.message}` : ''}`);
  }
}

/**
 * One request. `timeoutMs`: the answer must have begun by then, or the
 * request fails (watches have none: they are kept open on purpose).
 */
function send(
  conn: ApiConnection,
  method: string,
  path: string,
  body: unknown,
  timeoutMs: number | undefined,
  onResponse: (res: IncomingMessage, req: ClientRequest) => void,
  onError: (e: Error) => void,
): void {
  conn.requestOptions().then(
    (base) => {
      const url = new URL(conn.server + path);
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers: Record<string, string | number> = {
        ...(base.headers as Record<string, string> | undefined),
        accept: 'application/json',
        'user-agent': 'bpfproxy',
        ...(payload !== undefined
          ? {
              // PATCH bodies are JSON merge patches (RFC 7386)
              'content-type': method === 'PATCH' ? 'application/merge-patch+json' : 'application/json',
              'content-length': Buffer.byteLength(payload),
            }
          : {}),
      };
      const opts: RequestOptions = {
        ...base,
        method,
        headers,
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port,
        path: url.pathname + url.search,
      };
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(opts, (res) => {
        if (timeoutMs !== undefined) req.setTimeout(0);
        onResponse(res, req);
      });
      if (timeoutMs !== undefined) {
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${conn.server} in ${timeoutMs / 1000} s`)));
      }
      req.on('error', onError);
      req.end(payload);
    },
    (e: Error) => onError(e),
  );
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

function parseStatus(text: string): ApiError['body'] {
  try {
    const o = JSON.parse(text) as unknown;
    return o && typeof o === 'object' ? o : undefined;
  } catch {
    return undefined;
  }
}

/** One request with a JSON answer; failures name the request. */
export function requestJson(conn: ApiConnection, method: string, path: string, body?: unknown): Promise<unknown> {
  const what = `${method} ${path}`;
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => reject(e instanceof ApiError ? e : new Error(`${what}: ${e.message}`, { cause: e }));
    send(
      conn,
      method,
      path,
      body,
      REQUEST_TIMEOUT_MS,
      (res) => {
        readAll(res).then((text) => {
          const code = res.statusCode ?? 0;
          if (code < 200 || code > 299) return fail(new ApiError(code, parseStatus(text), what));
          try {
            resolve(JSON.parse(text) as unknown);
          } catch (e) {
            fail(new Error(`the answer is not JSON (${(e as Error).message})`));
          }
        }, fail);
      },
      fail,
    );
  });
}

/** A watch: each line of the stream is one event; `onDone` once, when it ends or fails (not after stop()). */
function watchStream(
  conn: ApiConnection,
  path: string,
  onEvent: (e: WatchEvent) => void,
  onDone: (err: unknown) => void,
): Promise<WatchHandle> {
  let done = false;
  let req: ClientRequest | undefined;
  let stopped = false;
  const finish = (err: unknown) => {
    if (done) return;
    done = true;
    req?.destroy();
    if (!stopped) onDone(err);
  };
  return new Promise((resolve) => {
    send(
      conn,
      'GET',
      path,
      undefined,
      undefined,
      (res, r) => {
        req = r;
        if (stopped) return r.destroy();
        if (res.statusCode !== 200) {
          void readAll(res).then((text) => finish(new ApiError(res.statusCode ?? 0, parseStatus(text), `watch ${path}`)), finish);
          return;
        }
        res.socket?.setKeepAlive(true, WATCH_KEEPALIVE_MS);
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl = buf.indexOf('\n');
          while (nl !== -1) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim() !== '') {
              let e: WatchEvent | undefined;
              try {
                e = JSON.parse(line) as WatchEvent;
              } catch {
                // a line that is not JSON: skipped, as client-go's decoder would fail the watch
                return finish(new Error(`watch ${path}: an event is not JSON`));
              }
              if (!stopped) onEvent(e);
            }
            nl = buf.indexOf('\n');
          }
          if (buf.length > MAX_WATCH_LINE) finish(new Error(`watch ${path}: an event longer than ${MAX_WATCH_LINE} bytes`));
        });
        res.on('end', () => finish(null));
        res.on('close', () => finish(null));
        res.on('error', finish);
      },
      finish,
    );
    resolve({
      stop: () => {
        stopped = true;
        done = true;
        req?.destroy();
      },
    });
  });
}

function resource(conn: ApiConnection, name: string, path: string): ResourceClient {
  return {
    name,
    async list({ limit, continue: cont }): Promise<ListPage> {
      const q = new URLSearchParams({ limit: String(limit), ...(cont ? { continue: cont } : {}) });
      const r = (await requestJson(conn, 'GET', `${path}?${q}`)) as {
        items?: KubeObject[] | null;
        metadata?: { resourceVersion?: string; continue?: string };
      };
      return {
        items: r.items ?? [],
        resourceVersion: r.metadata?.resourceVersion ?? '',
        ...(r.metadata?.continue ? { continue: r.metadata.continue } : {}),
      };
    },
    watch(resourceVersion, onEvent, onDone): Promise<WatchHandle> {
      const q = new URLSearchParams({ watch: 'true', resourceVersion, allowWatchBookmarks: 'true' });
      return watchStream(conn, `${path}?${q}`, onEvent, onDone);
    },
  };
}

export const FELIX_GROUP = 'crd.projectcalico.org';
export const FELIX_VERSION = 'v1';
export const FELIX_PLURAL = 'felixconfigurations';

export interface KubeClients {
  services: ResourceClient;
  endpointSlices: ResourceClient;
  nodes: ResourceClient;
  felixConfigurations: ResourceClient;
  pods: ResourceClient;
  namespaces: ResourceClient;
  networkPolicies: ResourceClient;
  events: EventRecorder;
  /** Set (string) or remove (null) annotations of a Node (a JSON merge patch; RBAC: patch nodes). */
  annotateNode?: (name: string, annotations: Record<string, string | null>) => Promise<void>;
  server: string;
}

export function kubeClients(conn: ApiConnection, component = 'bpfproxy'): KubeClients {
  return {
    services: resource(conn, 'services', '/api/v1/services'),
    endpointSlices: resource(conn, 'endpointslices', '/apis/discovery.k8s.io/v1/endpointslices'),
    nodes: resource(conn, 'nodes', '/api/v1/nodes'),
    felixConfigurations: resource(conn, 'felixconfigurations', `/apis/${FELIX_GROUP}/${FELIX_VERSION}/${FELIX_PLURAL}`),
    pods: resource(conn, 'pods', '/api/v1/pods'),
    namespaces: resource(conn, 'namespaces', '/api/v1/namespaces'),
    networkPolicies: resource(conn, 'networkpolicies', '/apis/networking.k8s.io/v1/networkpolicies'),
    events: new EventRecorder(conn, component),
    annotateNode: async (name, annotations) => {
      await requestJson(conn, 'PATCH', `/api/v1/nodes/${encodeURIComponent(name)}`, { metadata: { annotations } });
    },
    server: conn.server,
  };
}

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
}

/** Kubernetes Events, so `kubectl describe` shows what we refused and why. */
export class EventRecorder {
  private readonly host = hostname();

  constructor(
    private readonly conn: ApiConnection,
    private readonly component: string,
  ) {}

  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const namespace = obj.namespace ?? 'default';
    const now = new Date().toISOString();
    await requestJson(this.conn, 'POST', `/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${obj.name}.`, namespace },
      involvedObject: {
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        name: obj.name,
        ...(obj.namespace ? { namespace: obj.namespace } : {}),
      },
      type,
      reason,
      message,
      source: { component: this.component, host: this.host },
      reportingComponent: this.component,
      reportingInstance: this.host,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  }
}
