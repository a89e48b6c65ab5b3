/**
 * List and watch over plain fetch, for the lab's kube-proxy: the same
 * ResourceClient our informer drives (src/k8s/informer.ts), without
 * @kubernetes/client-node, whose loading alone takes seconds on a busy
 * machine — kube-proxy restarting in the demo waits for it. Reads the
 * current context's server and bearer token from a kubeconfig.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import type { KubeObject, ListPage, ResourceClient, WatchEvent, WatchHandle } from '../src/k8s/informer.js';

interface Kubeconfig {
  'current-context'?: string;
  contexts?: Array<{ name: string; context: { cluster: string; user: string } }>;
  clusters?: Array<{ name: string; cluster: { server: string } }>;
  users?: Array<{ name: string; user: { token?: string } }>;
}

export interface ApiTarget {
  server: string;
  token: string | undefined;
}

/** The current context's server and token; throws naming the file and what is missing. */
export function readKubeconfig(path: string): ApiTarget {
  const kc = parse(readFileSync(path, 'utf8')) as Kubeconfig;
  const ctx = kc.contexts?.find((c) => c.name === kc['current-context'])?.context;
  const server = kc.clusters?.find((c) => c.name === ctx?.cluster)?.cluster.server;
  if (!ctx || !server) throw new Error(`${path}: no current-context with a cluster server`);
  return { server: server.replace(/\/$/, ''), token: kc.users?.find((u) => u.name === ctx.user)?.user.token };
}

class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    what: string,
    body: string,
  ) {
    super(`${what}: HTTP ${statusCode}: ${body.slice(0, 300)}`);
  }
}

/** A ResourceClient for a cluster-wide collection path (/api/v1/services). */
export function fetchResource(api: ApiTarget, name: string, path: string): ResourceClient {
  const headers: Record<string, string> = { Accept: 'application/json', ...(api.token ? { Authorization: `Bearer ${api.token}` } : {}) };
  return {
    name,
    async list({ limit, continue: cont }): Promise<ListPage> {
      const q = new URLSearchParams({ limit: String(limit), ...(cont ? { continue: cont } : {}) });
      const r = await fetch(`${api.server}${path}?${q}`, { headers, signal: AbortSignal.timeout(30_000) });
      const body = await r.text();
      if (!r.ok) throw new HttpError(r.status, `list ${name}`, body);
      const l = JSON.parse(body) as { items?: KubeObject[]; metadata?: { resourceVersion?: string; continue?: string } };
      return {
        items: l.items ?? [],
        resourceVersion: l.metadata?.resourceVersion ?? '',
        ...(l.metadata?.continue ? { continue: l.metadata.continue } : {}),
      };
    },
    async watch(resourceVersion, onEvent: (e: WatchEvent) => void, onDone: (err: unknown) => void): Promise<WatchHandle> {
      const ctrl = new AbortController();
      const q = new URLSearchParams({ watch: '1', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: '300' });
      const r = await fetch(`${api.server}${path}?${q}`, { headers, signal: ctrl.signal });
      if (!r.ok || !r.body) {
        const err = new HttpError(r.status, `watch ${name}`, await r.text());
        throw err;
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      void (async () => {
        let buf = '';
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            buf += decoder.decode(value, { stream: true });
            let nl;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (line) onEvent(JSON.parse(line) as WatchEvent);
            }
          }
          onDone(undefined);
        } catch (e) {
          onDone(ctrl.signal.aborted ? undefined : e);
        }
      })();
      return { stop: () => ctrl.abort() };
    },
  };
}
