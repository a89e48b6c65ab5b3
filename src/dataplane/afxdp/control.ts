/**
 * The engine's operator surface: HTTP on a unix socket in the agent's state
 * directory (root only, mode 0600; nothing listens on the network), read by
 * `bpfproxy engine stats|trace`:
 *   GET /stats               EngineStatus as JSON (or {running:false, reason})
 *   GET /trace?n=N&wait=MS   the next N packets' paths (waits up to MS ms)
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, request, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Logger } from '../../log.js';
import type { EngineTraceRecord } from '../../native/index.js';
import type { EngineStatus } from './runtime.js';

export interface EngineControlTarget {
  status(): EngineStatus;
  trace(n: number, timeoutMs: number): Promise<EngineTraceRecord[]>;
}

export type EngineStatusReply = EngineStatus | { running: false; reason: string };

export const TRACE_MAX = 1024;
export const TRACE_WAIT_MAX_MS = 60_000;

function send(res: ServerResponse, code: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
  res.end(s);
}

/** Serve the engine's figures on a unix socket at path (replacing a stale one). */
export function serveEngineControl(path: string, target: () => EngineControlTarget | undefined, why: () => string, log: Logger): Server {
  mkdirSync(dirname(path), { recursive: true });
  if (existsSync(path)) rmSync(path, { force: true });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://engine');
    const t = target();
    if (req.method !== 'GET') return send(res, 405, { error: 'GET only' });
    if (url.pathname === '/stats') {
      if (!t) return send(res, 200, { running: false, reason: why() });
      try {
        return send(res, 200, t.status());
      } catch (e) {
        return send(res, 500, { error: (e as Error).message });
      }
    }
    if (url.pathname === '/trace') {
      const n = Number(url.searchParams.get('n') ?? '10');
      const wait = Number(url.searchParams.get('wait') ?? '10000');
      if (!Number.isInteger(n) || n < 1 || n > TRACE_MAX) return send(res, 400, { error: `n must be 1-${TRACE_MAX}` });
      if (!Number.isInteger(wait) || wait < 0 || wait > TRACE_WAIT_MAX_MS)
        return send(res, 400, { error: `wait must be 0-${TRACE_WAIT_MAX_MS} ms` });
      if (!t) return send(res, 409, { error: `the AF_XDP engine is not running: ${why()}` });
      t.trace(n, wait).then(
        (records) => send(res, 200, { records }),
        (e: Error) => send(res, 500, { error: e.message }),
      );
      return;
    }
    send(res, 404, { error: 'GET /stats or /trace?n=N' });
  });
  server.on('error', (e) =>
    log.error({ socket: path }, `engine control socket ${path}: ${e.message}; bpfproxy engine stats/trace will not reach this agent`),
  );
  server.listen(path, () => {
    try {
      chmodSync(path, 0o600);
    } catch (e) {
      log.warn(`cannot restrict ${path} to root: ${(e as Error).message}`);
    }
  });
  server.unref();
  return server;
}

/** A GET to the agent's engine socket; the JSON it answers. */
export function engineRequest<T>(socketPath: string, path: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          return reject(new Error(`${socketPath}: not JSON: ${text.slice(0, 200)}`));
        }
        if ((res.statusCode ?? 500) >= 400) return reject(new Error((body as { error?: string }).error ?? `HTTP ${res.statusCode}`));
        resolve(body as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} in ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? new Error(`no agent answers on ${socketPath}: is "bpfproxy agent" running with this --state-dir and --pin-dir?`)
          : e,
      ),
    );
    req.end();
  });
}
