/**
 * An in-process Kubernetes API server for tests and benchmarks, thin and
 * faithful enough for real kubectl and @kubernetes/client-node:
 * - discovery (legacy and aggregated), /version, OpenAPI v3;
 * - generic storage for every registered resource, built-in or defined by
 *   a CRD, with one global resourceVersion, uid, creationTimestamp,
 *   generation and managedFields;
 * - create/get/list/watch/update/patch (merge, JSON, strategic, apply)/
 *   delete/deletecollection with the real status codes and Status bodies;
 * - label and field selectors, paging (limit/continue), Table output;
 * - watches replay history after the requested resourceVersion, send
 *   bookmarks, and answer 410 Gone (an ERROR event) after compaction.
 *
 * Tests also reach in directly: upsert()/remove() write storage as etcd
 * would (no validation, no defaulting), compact() forgets history,
 * dropWatches() cuts every watch, kubelet plays the node for pods.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import {
  aggregated,
  AGGREGATED_V2,
  apiGroup,
  apiGroupList,
  apiResourceList,
  apiVersions,
  openapiDocument,
  openapiRoot,
  parseOpenapiPath,
  SERVER_VERSION,
} from './discovery.js';
import {
  alreadyExists,
  ApiError,
  badRequest,
  conflict,
  gone,
  invalid,
  methodNotAllowed,
  notFound,
  staleVersion,
  unsupportedMediaType,
  type FieldError,
} from './errors.js';
import { apply, trackUpdate, type Tracking } from './fieldmanager.js';
import { decodeObject, mediaType, negotiate, parseJson, parseYamlBody, readBody, send, sendError, type Output } from './http.js';
import { builtinKinds } from './kinds.js';
import { deepEqual, jsonPatch, mergePatch, strategicMergePatch } from './patch.js';
import { apiVersionOf, builtinSchemas, fromCrd, Registry, type HookContext, type ResourceType } from './registry.js';
import { parseFieldSelector, parseLabelSelector } from './selectors.js';
import { Store, type Obj } from './store.js';
import { table, type IncludeObject } from './table.js';
import { Watches } from './watch.js';
import { isObj, text } from './util.js';
import { check, checkMeta, dropEmptyMaps } from './validate.js';

/** A resource by plural (`services`) or group/plural (`events.k8s.io/events`). */
export type Resource = string;

export interface RequestLog {
  method: string;
  path: string;
  query: Record<string, string>;
  accept?: string;
  contentType?: string;
  userAgent?: string;
}

export interface FakeApiServerOptions {
  /** CRDs installed from the start; default: FelixConfiguration from manifests/crd-felixconfiguration.yaml */
  crds?: Obj[];
}

type Validation = 'Strict' | 'Warn' | 'Ignore';

interface WriteOptions {
  dryRun: boolean;
  manager: string;
  fieldValidation: Validation;
  warnings: string[];
}

const metaOf = (o: Obj): Obj => {
  if (o.metadata === undefined) o.metadata = {};
  if (!isObj(o.metadata)) throw badRequest('metadata must be an object');
  return o.metadata;
};
const nowStamp = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
const suffix = (): string => Array.from({ length: 5 }, () => NAME_CHARS[Math.floor(Math.random() * NAME_CHARS.length)]).join('');
const withoutMetaAndStatus = (o: Obj): Obj => {
  const { metadata: _m, status: _s, ...rest } = o;
  return rest;
};
const forCompare = (o: Obj): Obj => {
  const c = structuredClone(o);
  const m = (c.metadata ?? {}) as Obj;
  delete m.resourceVersion;
  if (Array.isArray(m.managedFields)) for (const e of m.managedFields as Obj[]) delete e.time;
  return c;
};

/** Finds manifests/<file> of the repository this module runs from (src/ or dist/src/). */
function repoFile(...parts: string[]): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const p = join(dir, ...parts);
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new Error(
    `test API server: ${parts.join('/')} not found above ${dirname(fileURLToPath(import.meta.url))}; run from a bpfproxy checkout or pass FakeApiServerOptions.crds`,
  );
}

/** Our FelixConfiguration CRD, as `kubectl apply -f manifests/crd-felixconfiguration.yaml` would send it. */
export function felixCrd(): Obj {
  return parseYaml(readFileSync(repoFile('manifests', 'crd-felixconfiguration.yaml'), 'utf8')) as Obj;
}

export class FakeApiServer {
  readonly registry = new Registry();
  private readonly store = new Store();
  private server: Server | undefined;
  private address = '127.0.0.1';
  private readonly watches: Watches;
  private readonly podLogs = new Map<string, string>();
  readonly requests: RequestLog[] = [];
  /**
   * Plays the kubelet for created pods: called with each new pod and a
   * function to set its status and logs (tests schedule phases with it).
   */
  kubelet: ((pod: Obj & { metadata: { name: string } }, set: (status: Record<string, unknown>, logs?: string) => void) => void) | undefined;
  /**
   * Plays the DaemonSet controller: called with "namespace/name" after each
   * write of a DaemonSet. Unset, each new generation is observed with no
   * node running Pods (every count 0); the lab runs Pods and sets its own.
   */
  daemonSets: ((key: string) => void) | undefined;

  constructor(opts: FakeApiServerOptions = {}) {
    for (const r of builtinKinds()) this.registry.add(r);
    this.watches = new Watches(this.store, (type, stored) => this.served(type, stored));
    const sys: WriteOptions = { dryRun: false, manager: 'kube-apiserver', fieldValidation: 'Strict', warnings: [] };
    const nsType = this.registry.get('', 'v1', 'namespaces')!;
    for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
      this.create(nsType, undefined, { metadata: { name } }, sys);
    const crdType = this.registry.get('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')!;
    for (const crd of opts.crds ?? [felixCrd()])
      this.create(crdType, undefined, structuredClone(crd), { ...sys, manager: 'kubectl-client-side-apply' });
  }

  // -------------------------------------------------------------------------
  // lifecycle

  /**
   * Listen on host:port (0 = any free port). With anyAddress the socket is
   * bound to all addresses synchronously, so it is created in the network
   * namespace the calling thread is in at that moment.
   */
  async listen(host = '127.0.0.1', port = 0, anyAddress = false): Promise<string> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('clientError', (_err, socket) => socket.destroy());
    this.server = server;
    await new Promise<void>((r) => (anyAddress ? server.listen(port, r) : server.listen(port, host, r)));
    this.watches.startBookmarks();
    const a = server.address() as AddressInfo;
    this.address = `${host}:${a.port}`;
    return `http://${host}:${a.port}`;
  }

  /**
   * The request handler, for servers of the caller's own (the lab's front
   * door, which checks who connects); watches get bookmarks as with listen().
   */
  handler(address: string): (req: IncomingMessage, resp: ServerResponse) => void {
    this.address = address;
    this.watches.startBookmarks();
    return (req, resp) => this.handle(req, resp);
  }

  async close(): Promise<void> {
    this.watches.stopBookmarks();
    this.dropWatches();
    const server = this.server;
    if (!server) return;
    server.closeAllConnections?.();
    await new Promise((r) => server.close(r));
  }

  get resourceVersion(): number {
    return this.store.resourceVersion;
  }

  // -------------------------------------------------------------------------
  // direct access for tests (etcd-level: no validation, no defaulting)

  private resource(res: Resource): ResourceType {
    const r = this.registry.byName(res);
    if (!r)
      throw new Error(
        `test API server: no resource "${res}" is served (known: ${this.registry
          .all()
          .map((x) => x.plural)
          .join(', ')}); is its CRD installed?`,
      );
    return r;
  }

  private keyOf(type: ResourceType, ns: string | undefined, name: string): string {
    return type.namespaced ? `${ns ?? ''}/${name}` : name;
  }

  private served(type: ResourceType, stored: Obj): Obj {
    const o = type.fromStorage ? type.fromStorage(stored) : { ...stored, apiVersion: apiVersionOf(type), kind: type.kind };
    return structuredClone(o);
  }

  /**
   * Create or replace an object as stored (what a fixture in etcd would
   * be). Its namespace is created too if missing, so the cluster stays
   * consistent (Events about it can be written). Returns its resourceVersion.
   */
  upsert(res: Resource, obj: Obj): number {
    const type = this.resource(res);
    const stored = structuredClone(type.toStorage ? type.toStorage(obj) : obj);
    const meta = metaOf(stored);
    const ns = meta.namespace;
    if (type.namespaced && typeof ns === 'string' && !this.store.get('/namespaces', ns)) {
      this.store.put('/namespaces', ns, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: ns, uid: randomUUID(), creationTimestamp: nowStamp(), labels: { 'kubernetes.io/metadata.name': ns } },
        spec: { finalizers: ['kubernetes'] },
        status: { phase: 'Active' },
      });
    }
    const key = this.keyOf(type, meta.namespace as string | undefined, String(meta.name));
    const old = this.store.get(type.storageKey, key);
    const oldMeta = (old?.metadata ?? {}) as Obj;
    meta.uid ??= oldMeta.uid ?? randomUUID();
    meta.creationTimestamp ??= oldMeta.creationTimestamp ?? nowStamp();
    this.store.put(type.storageKey, key, stored);
    return this.store.resourceVersion;
  }

  remove(res: Resource, key: string): boolean {
    const type = this.resource(res);
    return this.store.delete(type.storageKey, key) !== undefined;
  }

  get(res: Resource, key: string): Obj | undefined {
    const type = this.resource(res);
    const o = this.store.get(type.storageKey, key);
    return o && this.served(type, o);
  }

  /** every object of a resource, as served */
  list(res: Resource): Obj[] {
    const type = this.resource(res);
    return this.store.list(type.storageKey).map(([, o]) => this.served(type, o));
  }

  /** core/v1 Events in the order they were created */
  get events(): Obj[] {
    return this.store.values('/events');
  }

  get namespaces(): ReadonlySet<string> {
    return new Set(this.store.values('/namespaces').map((n) => String((n.metadata as Obj).name)));
  }

  get pods(): ReadonlyMap<string, { pod: Obj; logs: string }> {
    return new Map(this.store.list('/pods').map(([k, pod]) => [k, { pod, logs: this.podLogs.get(k) ?? '' }]));
  }

  /** Forget history: watches and continue tokens from before now get 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /** Cut every watch connection (network blip, API server restart). */
  dropWatches(): void {
    this.watches.drop();
  }

  watchCount(res?: Resource): number {
    return this.watches.count((type) => !res || type.plural === res || `${type.group}/${type.plural}` === res);
  }

  // -------------------------------------------------------------------------
  // HTTP

  private handle(req: IncomingMessage, resp: ServerResponse): void {
    req.on('error', () => resp.destroy());
    resp.on('error', () => undefined);
    this.dispatch(req, resp).catch((e: unknown) => {
      try {
        sendError(resp, e);
      } catch {
        resp.destroy();
      }
    });
  }

  private async dispatch(req: IncomingMessage, resp: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://x');
    } catch {
      throw badRequest(`the request URL ${JSON.stringify(req.url)} cannot be parsed`);
    }
    const query = Object.fromEntries(url.searchParams);
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const method = req.method ?? 'GET';
    const h = req.headers;
    this.requests.push({
      method,
      path,
      query,
      ...(h.accept ? { accept: h.accept } : {}),
      ...(h['content-type'] ? { contentType: h['content-type'] } : {}),
      ...(h['user-agent'] ? { userAgent: h['user-agent'] } : {}),
    });
    if (this.requests.length > 200_000) this.requests.splice(0, 100_000);
    const accept = req.headers.accept;

    if (method === 'GET') {
      const doc = this.nonResource(path, accept);
      if (doc) {
        if (typeof doc.body === 'string') {
          resp.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
          resp.end(doc.body);
        } else send(resp, 200, doc.body, { kind: 'json' }, doc.contentType ? { 'Content-Type': doc.contentType } : {});
        return;
      }
    }
    const route = this.route(path);
    if (!route) {
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {
        causes: [{ reason: 'UnexpectedServerResponse', message: '404 page not found' }],
      });
    }
    const { type, namespace, name, sub } = route;
    const opts = this.writeOptions(req, query);
    const reply = (code: number, body: unknown, out: Output = { kind: 'json' }): void =>
      send(
        resp,
        code,
        body,
        out,
        opts.warnings.length ? { Warning: opts.warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(', ') } : {},
      );

    if (name === undefined) {
      switch (method) {
        case 'GET': {
          const out = negotiate(accept, true);
          const include = (query.includeObject ?? 'Metadata') as IncludeObject;
          if (query.watch === 'true' || query.watch === '1')
            return this.watches.open(type, this.matcher(type, namespace, query), query, out, include, resp);
          return reply(200, this.listBody(type, namespace, query, out, include), out.kind === 'table' ? { kind: 'json' } : out);
        }
        case 'POST': {
          if (type.namespaced && namespace === undefined)
            throw methodNotAllowed(`POST is not supported on ${type.plural} across namespaces: use /namespaces/<namespace>/${type.plural}`);
          const out = negotiate(accept, false);
          const body = decodeObject(await readBody(req), req.headers['content-type'], `${type.kind} create`);
          return reply(201, this.served(type, this.create(type, namespace, body, opts)), out);
        }
        case 'DELETE':
          return reply(200, this.deleteCollection(type, namespace, query, opts), negotiate(accept, false));
        default:
          throw methodNotAllowed(`the server does not allow this method on the requested resource (${method} ${path})`);
      }
    }
    if (sub === 'log') {
      if (method !== 'GET') throw methodNotAllowed(`${method} is not supported on pods/log`);
      const key = this.keyOf(type, namespace, name);
      if (!this.store.get(type.storageKey, key)) throw notFound(type, name);
      resp.writeHead(200, { 'Content-Type': 'text/plain' });
      resp.end(this.podLogs.get(key) ?? '');
      return;
    }
    const scope = sub === 'status' ? 'status' : 'main';
    switch (method) {
      case 'GET': {
        const out = negotiate(accept, true);
        const stored = this.store.get(type.storageKey, this.keyOf(type, namespace, name));
        if (!stored) throw notFound(type, name);
        if (out.kind === 'table') {
          return reply(
            200,
            table(
              type.printer,
              [{ served: this.served(type, stored), printed: type.printStored ? stored : this.served(type, stored) }],
              { resourceVersion: (stored.metadata as Obj).resourceVersion },
              (query.includeObject ?? 'Metadata') as IncludeObject,
            ),
          );
        }
        return reply(200, this.served(type, stored), out);
      }
      case 'PUT': {
        const out = negotiate(accept, false);
        const body = decodeObject(await readBody(req), req.headers['content-type'], `${type.kind} update`);
        return reply(200, this.served(type, this.update(type, namespace, name, body, opts, scope)), out);
      }
      case 'PATCH': {
        const out = negotiate(accept, false);
        const { code, obj } = this.patch(type, namespace, name, req.headers['content-type'], await readBody(req), query, opts, scope);
        return reply(code, this.served(type, obj), out);
      }
      case 'DELETE': {
        const out = negotiate(accept, false);
        const raw = await readBody(req);
        const options = raw.length ? decodeObject(raw, req.headers['content-type'] ?? 'application/json', 'DeleteOptions') : {};
        return reply(
          200,
          this.served(
            type,
            this.delete(type, namespace, name, options, {
              ...opts,
              dryRun: opts.dryRun || (Array.isArray(options.dryRun) && options.dryRun.includes('All')),
            }),
          ),
          out,
        );
      }
      default:
        throw methodNotAllowed(`the server does not allow this method on the requested resource (${method} ${path})`);
    }
  }

  private writeOptions(req: IncomingMessage, query: Record<string, string>): WriteOptions {
    const fv = query.fieldValidation ?? 'Warn';
    if (fv !== 'Strict' && fv !== 'Warn' && fv !== 'Ignore')
      throw badRequest(`fieldValidation: Unsupported value: ${JSON.stringify(fv)}: supported values: "Ignore", "Strict", "Warn"`);
    if (query.dryRun !== undefined && query.dryRun !== 'All')
      throw badRequest(`dryRun: Unsupported value: ${JSON.stringify(query.dryRun)}: supported values: "All"`);
    const ua = String(req.headers['user-agent'] ?? 'unknown');
    return {
      dryRun: query.dryRun === 'All',
      manager: query.fieldManager ?? ua.split('/')[0]!.slice(0, 128),
      fieldValidation: fv,
      warnings: [],
    };
  }

  /** /version, /healthz, discovery and OpenAPI */
  private nonResource(path: string, accept: string | undefined): { body: unknown; contentType?: string } | undefined {
    const wantsAggregated = (accept ?? '')
      .split(',')
      .some((p) => /as=APIGroupDiscoveryList/.test(p) && /v=v2(\s*;|\s*$)/.test(p) && /g=apidiscovery\.k8s\.io/.test(p));
    if (path === '/version') return { body: SERVER_VERSION };
    if (path === '/healthz' || path === '/livez' || path === '/readyz') return { body: 'ok' };
    if (path === '/api')
      return wantsAggregated ? { body: aggregated(this.registry, true), contentType: AGGREGATED_V2 } : { body: apiVersions(this.address) };
    if (path === '/apis')
      return wantsAggregated
        ? { body: aggregated(this.registry, false), contentType: AGGREGATED_V2 }
        : { body: apiGroupList(this.registry) };
    if (path === '/openapi/v3') return { body: openapiRoot(this.registry, (g, v) => JSON.stringify(openapiDocument(this.registry, g, v))) };
    if (path.startsWith('/openapi/v3/')) {
      const gv = parseOpenapiPath(path.slice('/openapi/v3/'.length));
      const doc = gv && openapiDocument(this.registry, gv.group, gv.version);
      return doc ? { body: doc } : undefined;
    }
    let m = /^\/api\/([^/]+)$/.exec(path);
    if (m) return wrap(apiResourceList(this.registry, '', m[1]!));
    m = /^\/apis\/([^/]+)$/.exec(path);
    if (m) return wrap(apiGroup(this.registry, m[1]!));
    m = /^\/apis\/([^/]+)\/([^/]+)$/.exec(path);
    if (m) return wrap(apiResourceList(this.registry, m[1]!, m[2]!));
    return undefined;
  }

  private route(path: string): { type: ResourceType; namespace?: string; name?: string; sub?: string } | undefined {
    let group: string;
    let version: string;
    let rest: string;
    let m = /^\/api\/([^/]+)\/(.+)$/.exec(path);
    if (m) [group, version, rest] = ['', m[1]!, m[2]!];
    else {
      m = /^\/apis\/([^/]+)\/([^/]+)\/(.+)$/.exec(path);
      if (!m) return undefined;
      [group, version, rest] = [m[1]!, m[2]!, m[3]!];
    }
    let parts: string[];
    try {
      parts = rest.split('/').map(decodeURIComponent);
    } catch {
      throw badRequest(`the request path ${JSON.stringify(path)} is not valid percent-encoding`);
    }
    let namespace: string | undefined;
    if (parts[0] === 'namespaces' && parts.length >= 3 && this.registry.get(group, version, parts[2]!)?.namespaced) {
      namespace = parts[1];
      parts.splice(0, 2);
    }
    if (parts.length > 3) return undefined;
    const [plural, name, sub] = parts as [string, string | undefined, string | undefined];
    const type = this.registry.get(group, version, plural);
    if (!type) return undefined;
    if (!type.namespaced && namespace !== undefined) return undefined;
    if (type.namespaced && namespace === undefined && name !== undefined) return undefined;
    if (sub !== undefined && !type.subresources.includes(sub)) return undefined;
    return {
      type,
      ...(namespace !== undefined ? { namespace } : {}),
      ...(name !== undefined ? { name } : {}),
      ...(sub !== undefined ? { sub } : {}),
    };
  }

  // -------------------------------------------------------------------------
  // writes

  private hookContext(): HookContext {
    return { list: (key) => this.store.values(key), now: nowStamp() };
  }

  private tracking(type: ResourceType, manager: string, scope: 'main' | 'status'): Tracking {
    return {
      schemas: builtinSchemas,
      schema: type.schema,
      manager,
      apiVersion: apiVersionOf(type),
      scope,
      resetsStatus: type.subresources.includes('status'),
      now: nowStamp(),
    };
  }

  /** apiVersion/kind: filled in when absent (the URL says what it is), 400 when they name something else */
  private typeMeta(type: ResourceType, o: Obj): void {
    if (o.apiVersion === undefined && o.kind === undefined) {
      o.apiVersion = apiVersionOf(type);
      o.kind = type.kind;
      return;
    }
    if (o.kind !== type.kind || o.apiVersion !== apiVersionOf(type)) {
      throw badRequest(
        `the object provided is unrecognized (must be of type ${type.kind}): ${String(o.apiVersion)}, Kind=${String(o.kind)} does not match ${apiVersionOf(type)}, Kind=${type.kind}`,
      );
    }
  }

  /** Prunes unknown fields (400 under fieldValidation=Strict, a warning under Warn) and refuses values of the wrong type. */
  private checkFields(type: ResourceType, o: Obj, opts: WriteOptions, name: string): void {
    const out = { unknown: [] as string[], errors: [] as FieldError[] };
    check(builtinSchemas, o, type.schema, '', type.custom, out);
    if (out.unknown.length) {
      const msgs = out.unknown.map((u) => `unknown field "${u}"`);
      if (opts.fieldValidation === 'Strict') throw badRequest(`strict decoding error: ${msgs.join(', ')}`);
      if (opts.fieldValidation === 'Warn') opts.warnings.push(...msgs);
    }
    if (!out.errors.length) return;
    if (type.custom) throw invalid(type, name, out.errors);
    const e = out.errors[0]!;
    const want = /must be of type (\S+):/.exec(e.detail)?.[1] ?? 'the declared type';
    throw badRequest(
      `${type.kind} in version "${type.version}" cannot be handled as a ${type.kind}: json: cannot unmarshal ${String(e.value)} into Go struct field ${type.kind}.${e.field} of type ${want}`,
    );
  }

  private validate(type: ResourceType, stored: Obj, old: Obj | undefined, name: string): void {
    const errs = [...checkMeta(metaOf(stored), type.nameRule, type.namespaced), ...(type.validate?.(stored, old) ?? [])];
    if (errs.length) throw invalid(type, name, errs);
  }

  /** POST: validate, default, store. Returns the stored object (dry run: what would be stored). */
  private create(type: ResourceType, namespace: string | undefined, body: Obj, opts: WriteOptions, applied?: unknown): Obj {
    this.typeMeta(type, body);
    const meta = metaOf(body);
    if (type.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = namespace;
    } else delete meta.namespace;
    if ((meta.name === undefined || meta.name === '') && typeof meta.generateName === 'string' && meta.generateName)
      meta.name = `${meta.generateName}${suffix()}`;
    const name = typeof meta.name === 'string' ? meta.name : '';
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '')
      throw badRequest('resourceVersion should not be set on objects to be created');
    this.checkFields(type, body, opts, name);
    const stored = structuredClone(type.toStorage ? type.toStorage(body) : body);
    const sm = metaOf(stored);
    const given = Array.isArray(sm.managedFields) ? (sm.managedFields as unknown[]) : undefined;
    for (const k of [
      'uid',
      'creationTimestamp',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'generation',
      'selfLink',
      'resourceVersion',
      'managedFields',
    ])
      delete sm[k];
    if (type.subresources.includes('status')) delete stored.status;
    if (type.namespaced && !this.store.get('/namespaces', namespace ?? ''))
      throw notFound(this.registry.get('', 'v1', 'namespaces')!, namespace ?? '');
    const ctx = this.hookContext();
    type.prepareCreate?.(stored, ctx);
    if (!type.custom) dropEmptyMaps(builtinSchemas, stored, type.schema);
    this.validate(type, stored, undefined, name);
    if (type.group === 'apiextensions.k8s.io') this.checkCrdNames(stored);
    const key = this.keyOf(type, namespace, name);
    if (this.store.get(type.storageKey, key)) throw alreadyExists(type, name);
    sm.uid = randomUUID();
    sm.creationTimestamp = ctx.now;
    if (type.generation) sm.generation = 1;
    sm.managedFields = applied ?? trackUpdate(undefined, stored, this.tracking(type, opts.manager, 'main'), given);
    if (!(sm.managedFields as unknown[]).length) delete sm.managedFields;
    if (opts.dryRun) return stored;
    this.store.put(type.storageKey, key, stored);
    this.afterWrite(type, stored, key);
    return stored;
  }

  /** PUT (and the end of every PATCH): preconditions, validation, no-op detection, store. */
  private update(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    body: Obj,
    opts: WriteOptions,
    scope: 'main' | 'status',
    applied?: unknown,
  ): Obj {
    const key = this.keyOf(type, namespace, name);
    const old = this.store.get(type.storageKey, key);
    if (!old) throw notFound(type, name);
    this.typeMeta(type, body);
    const meta = metaOf(body);
    if (meta.name !== undefined && meta.name !== name)
      throw badRequest(`the name of the object (${text(meta.name)}) does not match the name on the URL (${name})`);
    if (type.namespaced && meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    const oldMeta = old.metadata as Obj;
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== oldMeta.resourceVersion)
      throw staleVersion(type, name);
    this.checkFields(type, body, opts, name);
    let next = structuredClone(type.toStorage ? type.toStorage(body) : body);
    if (scope === 'status') next = { ...structuredClone(old), status: next.status };
    else if (type.subresources.includes('status')) {
      if (old.status !== undefined) next.status = structuredClone(old.status);
      else delete next.status;
    }
    const nm = metaOf(next);
    for (const k of ['name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation']) {
      if (oldMeta[k] === undefined) delete nm[k];
      else nm[k] = oldMeta[k];
    }
    delete nm.resourceVersion;
    const sent = nm.managedFields;
    const given = scope === 'main' && Array.isArray(sent) && !deepEqual(sent, oldMeta.managedFields) ? (sent as unknown[]) : undefined;
    if (scope === 'status') nm.managedFields = structuredClone(oldMeta.managedFields);
    const ctx = this.hookContext();
    if (scope === 'main') type.prepareUpdate?.(next, old, ctx);
    if (!type.custom) dropEmptyMaps(builtinSchemas, next, type.schema);
    this.validate(type, next, old, name);
    if (type.group === 'apiextensions.k8s.io') this.checkCrdNames(next);
    if (type.generation && !deepEqual(withoutMetaAndStatus(old), withoutMetaAndStatus(next)))
      nm.generation = Number(oldMeta.generation ?? 0) + 1;
    nm.managedFields = applied ?? trackUpdate(old, next, this.tracking(type, opts.manager, scope), given);
    if (!(nm.managedFields as unknown[]).length) delete nm.managedFields;
    if (deepEqual(forCompare(old), forCompare(next))) return old;
    // a dry run shows the version it was computed from (kubectl diff checks it did not move)
    nm.resourceVersion = oldMeta.resourceVersion;
    if (opts.dryRun) return next;
    delete nm.resourceVersion;
    this.store.put(type.storageKey, key, next);
    this.afterWrite(type, next, key);
    return next;
  }

  private patch(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    contentType: string | undefined,
    raw: Buffer,
    query: Record<string, string>,
    opts: WriteOptions,
    scope: 'main' | 'status',
  ): { code: number; obj: Obj } {
    const ct = mediaType(contentType);
    const key = this.keyOf(type, namespace, name);
    const old = this.store.get(type.storageKey, key);
    const types = [
      'application/json-patch+json',
      'application/merge-patch+json',
      ...(type.custom ? [] : ['application/strategic-merge-patch+json']),
      'application/apply-patch+yaml',
    ];
    if (!types.includes(ct)) throw unsupportedMediaType(contentType ?? '', types);
    if (ct === 'application/apply-patch+yaml') {
      if (!query.fieldManager)
        throw invalid({ group: 'meta.k8s.io', plural: 'patchoptions', kind: 'PatchOptions' }, '', [
          { type: 'FieldValueRequired', field: 'fieldManager', detail: 'is required for apply patch' },
        ]);
      const cfg = parseYamlBody(raw, `${type.kind} apply`);
      if (!isObj(cfg)) throw badRequest(`${type.kind} apply: the applied configuration must be an object`);
      if (cfg.apiVersion === undefined || cfg.kind === undefined)
        throw badRequest(`${type.kind} apply: apiVersion and kind must be set in the applied configuration`);
      this.typeMeta(type, cfg);
      const cmeta = metaOf(cfg);
      if (cmeta.name !== undefined && cmeta.name !== name)
        throw badRequest(`the name of the object (${text(cmeta.name)}) does not match the name on the URL (${name})`);
      cmeta.name = name;
      if (type.namespaced) cmeta.namespace = namespace;
      delete cmeta.managedFields;
      this.checkFields(type, cfg, opts, name);
      const t = { ...this.tracking(type, opts.manager, scope), force: query.force === 'true', kindName: type.plural, name };
      if (!old) {
        if (scope === 'status') throw notFound(type, name);
        const created = apply(undefined, cfg, t);
        const applied = (created.metadata as Obj).managedFields;
        delete (created.metadata as Obj).managedFields;
        return { code: 201, obj: this.create(type, namespace, created, opts, applied) };
      }
      const merged = apply(this.served(type, old), cfg, t);
      const applied = (merged.metadata as Obj).managedFields;
      return { code: 200, obj: this.update(type, namespace, name, merged, opts, scope, applied) };
    }
    if (!old) throw notFound(type, name);
    const patchDoc = parseJson(raw, `${type.kind} patch`);
    const current = this.served(type, old);
    let patched: unknown;
    if (ct === 'application/json-patch+json') patched = jsonPatch(current, patchDoc);
    else if (ct === 'application/merge-patch+json') {
      if (!isObj(patchDoc)) throw badRequest(`${type.kind} patch: a merge patch must be a JSON object`);
      patched = mergePatch(current, patchDoc);
    } else patched = strategicMergePatch(builtinSchemas, current, patchDoc, type.schema);
    if (!isObj(patched)) throw new ApiError(422, 'Invalid', `${type.kind} "${name}": the patched object is not an object`);
    return { code: 200, obj: this.update(type, namespace, name, patched, opts, scope) };
  }

  private delete(type: ResourceType, namespace: string | undefined, name: string, options: Obj, opts: WriteOptions): Obj {
    const key = this.keyOf(type, namespace, name);
    const old = this.store.get(type.storageKey, key);
    if (!old) throw notFound(type, name);
    const pre = isObj(options.preconditions) ? options.preconditions : {};
    const meta = old.metadata as Obj;
    if (pre.uid !== undefined && pre.uid !== meta.uid)
      throw conflict(type, name, `Precondition failed: UID in precondition: ${text(pre.uid)}, UID in object meta: ${text(meta.uid)}`);
    if (pre.resourceVersion !== undefined && pre.resourceVersion !== meta.resourceVersion) {
      throw conflict(
        type,
        name,
        `Precondition failed: ResourceVersion in precondition: ${text(pre.resourceVersion)}, ResourceVersion in object meta: ${text(meta.resourceVersion)}`,
      );
    }
    if (opts.dryRun) return old;
    if (type.storageKey === '/namespaces') this.emptyNamespace(name);
    if (type.group === 'apiextensions.k8s.io') this.unregisterCrd(old);
    const now = nowStamp();
    const change = this.store.delete(type.storageKey, key, (o) => {
      const m = metaOf(o);
      m.deletionTimestamp = now;
      m.deletionGracePeriodSeconds = 0;
      if (type.storageKey === '/namespaces') o.status = { phase: 'Terminating' };
    })!;
    if (type.storageKey === '/pods') this.podLogs.delete(key);
    return change.object;
  }

  private deleteCollection(type: ResourceType, namespace: string | undefined, query: Record<string, string>, opts: WriteOptions): Obj {
    const items = this.select(type, namespace, query).map(([, o]) => o);
    const deleted = items.map((o) => {
      const m = o.metadata as Obj;
      return this.served(type, this.delete(type, m.namespace as string | undefined, String(m.name), {}, opts));
    });
    return {
      kind: type.listKind,
      apiVersion: apiVersionOf(type),
      metadata: { resourceVersion: String(this.store.resourceVersion) },
      items: deleted,
    };
  }

  /** The namespace controller's job, done at once: everything in the namespace goes. */
  private emptyNamespace(ns: string): void {
    for (const type of this.registry.all().filter((r) => r.namespaced && !r.toStorage)) {
      for (const [key] of this.store.list(type.storageKey)) {
        if (key.startsWith(`${ns}/`)) {
          this.store.delete(type.storageKey, key);
          this.podLogs.delete(key);
        }
      }
    }
  }

  private afterWrite(type: ResourceType, stored: Obj, key: string): void {
    if (type.group === 'apiextensions.k8s.io') this.registerCrd(stored);
    if (type.storageKey === 'apps/daemonsets') (this.daemonSets ?? ((k: string) => this.daemonSetController(k)))(key);
    if (type.storageKey === '/pods' && this.kubelet && !this.podLogs.has(key)) {
      this.podLogs.set(key, '');
      this.kubelet(structuredClone(stored) as Obj & { metadata: { name: string } }, (status, logs) => {
        const cur = this.store.get('/pods', key);
        if (!cur) return;
        if (logs !== undefined) this.podLogs.set(key, logs);
        const next = structuredClone(cur);
        next.status = { ...(isObj(cur.status) ? cur.status : {}), ...status };
        this.store.put('/pods', key, next);
      });
    }
  }

  /**
   * The DaemonSet controller's part that clients wait on (`kubectl rollout
   * status`): it observes each new generation. No node runs pods here, so
   * every count stays 0.
   */
  private daemonSetController(key: string): void {
    const cur = this.store.get('apps/daemonsets', key);
    if (!cur) return;
    const generation = (cur.metadata as Obj).generation;
    const status = isObj(cur.status) ? cur.status : {};
    if (status.observedGeneration === generation) return;
    this.store.put('apps/daemonsets', key, {
      ...structuredClone(cur),
      status: { ...status, observedGeneration: generation, updatedNumberScheduled: 0, numberAvailable: 0 },
    });
  }

  // -------------------------------------------------------------------------
  // CRDs

  private checkCrdNames(crd: Obj): void {
    const spec = (crd.spec ?? {}) as Obj;
    const group = text(spec.group);
    const plural = text((spec.names as Obj | undefined)?.plural);
    const errs: FieldError[] = [];
    if (!group.includes('.'))
      errs.push({ type: 'FieldValueInvalid', field: 'spec.group', value: group, detail: 'should be a domain with at least one dot' });
    const taken = this.registry.all().find((r) => r.group === group && r.plural === plural && !r.custom);
    if (taken)
      errs.push({
        type: 'FieldValueInvalid',
        field: 'spec.names.plural',
        value: plural,
        detail: `${plural}.${group} is served by the API server itself`,
      });
    if (errs.length)
      throw invalid(
        this.registry.get('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')!,
        String((crd.metadata as Obj).name),
        errs,
      );
  }

  private registerCrd(crd: Obj): void {
    const spec = (crd.spec ?? {}) as Obj;
    const group = String(spec.group);
    const plural = String((spec.names as Obj).plural);
    this.registry.remove(group, plural);
    for (const r of fromCrd(crd)) this.registry.add(r);
  }

  /** Its custom resources go with a CRD, and their watches end. */
  private unregisterCrd(crd: Obj): void {
    const spec = (crd.spec ?? {}) as Obj;
    const group = String(spec.group);
    const plural = String((spec.names as Obj).plural);
    const storageKey = `${group}/${plural}`;
    for (const [key] of this.store.list(storageKey)) this.store.delete(storageKey, key);
    this.registry.remove(group, plural);
    this.watches.end(storageKey);
  }

  // -------------------------------------------------------------------------
  // reads

  /** objects of the resource in the namespace (all if undefined) matching the request's selectors */
  private select(type: ResourceType, namespace: string | undefined, query: Record<string, string>): Array<[string, Obj]> {
    const match = this.matcher(type, namespace, query);
    return this.store.list(type.storageKey).filter(([, o]) => match(o));
  }

  private matcher(type: ResourceType, namespace: string | undefined, query: Record<string, string>): (stored: Obj) => boolean {
    const labels = query.labelSelector ? parseLabelSelector(query.labelSelector) : undefined;
    const fields = query.fieldSelector ? parseFieldSelector(query.fieldSelector, type.fieldSelectors, type.kind) : undefined;
    return (o) => {
      const m = (o.metadata ?? {}) as Obj;
      if (namespace !== undefined && m.namespace !== namespace) return false;
      if (labels && !labels((m.labels ?? {}) as Record<string, string>)) return false;
      return !fields || fields(o);
    };
  }

  private listBody(
    type: ResourceType,
    namespace: string | undefined,
    query: Record<string, string>,
    out: Output,
    include: IncludeObject,
  ): Obj {
    const rv = this.store.resourceVersion;
    let after: string | undefined;
    let atRv = rv;
    if (query.continue) {
      let c: { rv?: unknown; after?: unknown };
      try {
        c = JSON.parse(Buffer.from(query.continue, 'base64url').toString('utf8')) as typeof c;
      } catch {
        throw badRequest(`continue key is not valid: ${query.continue}`);
      }
      if (typeof c.rv !== 'number' || typeof c.after !== 'string') throw badRequest(`continue key is not valid: ${query.continue}`);
      if (c.rv < this.store.oldest(type.storageKey)) {
        throw gone(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
        );
      }
      after = c.after;
      atRv = c.rv;
    }
    // We keep only the current state, so a continue across writes sees newer
    // objects: the real server would too once etcd compacts, and clients cope.
    let all = this.select(type, namespace, query);
    if (after !== undefined) {
      const from = after;
      all = all.filter(([k]) => k > from);
    }
    const limit = query.limit ? Number(query.limit) : 0;
    if (query.limit && (!Number.isInteger(limit) || limit < 0))
      throw badRequest(`limit: Invalid value: ${JSON.stringify(query.limit)}: must be a non-negative integer`);
    const page = limit > 0 ? all.slice(0, limit) : all;
    const more = limit > 0 && all.length > limit;
    const listMeta: Obj = {
      resourceVersion: String(atRv),
      ...(more
        ? {
            continue: Buffer.from(JSON.stringify({ rv: atRv, after: page.at(-1)![0] })).toString('base64url'),
            remainingItemCount: all.length - limit,
          }
        : {}),
    };
    if (out.kind === 'table') {
      return table(
        type.printer,
        page.map(([, o]) => ({ served: this.served(type, o), printed: type.printStored ? o : this.served(type, o) })),
        listMeta,
        include,
      );
    }
    return { kind: type.listKind, apiVersion: apiVersionOf(type), metadata: listMeta, items: page.map(([, o]) => this.served(type, o)) };
  }
}

const wrap = (body: Obj | undefined): { body: unknown } | undefined => (body ? { body } : undefined);

/** A kubeconfig file for the test server (plain HTTP; the token is not checked). */
export function writeKubeconfig(path: string, server: string): void {
  writeFileSync(
    path,
    `apiVersion: v1
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
`,
  );
}
