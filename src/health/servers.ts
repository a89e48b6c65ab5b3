/**
 * HTTP endpoints for the outside world, none on the data path:
 * - kube-proxy's healthz (bpfKubeProxyHealthzPort, 10256) while bpfproxy
 *   owns the dataplane (closed when it hands back, so kube-proxy can bind);
 * - spec.healthCheckNodePort of each LoadBalancer service with
 *   externalTrafficPolicy: Local: 200 with the local endpoint count when
 *   this node has local endpoints, 503 when not, so cloud load balancers
 *   send traffic only to nodes that can serve it;
 * - the agent's own /liveness and /readiness for its DaemonSet probes.
 * Each listens on the address it is given (--healthz-bind-address,
 * --health-bind-address); health check node ports on every IPv4 address,
 * as kube-proxy's do without --nodeport-addresses.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { formatBindAddress, type BindAddress } from './bind-address.js';

export interface HealthzState {
  healthy: boolean;
  lastUpdated: Date | undefined;
  warnings: string[];
}

export interface ServiceHealth {
  namespace: string;
  name: string;
  localEndpoints: number;
}

function json(res: ServerResponse, code: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff', 'Content-Length': Buffer.byteLength(s) });
  res.end(s);
}

const HINTS: Record<string, string> = {
  EADDRINUSE: ' (is kube-proxy still running on this node?)',
  EADDRNOTAVAIL: ' (no interface in this network namespace has that address; check the bind address flag)',
};

/** An HTTP server on addr; a failure to listen is logged, naming the address, and the agent goes on. */
export function listenHttp(
  addr: BindAddress,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  log: Logger,
  what: string,
): Server {
  const s = createServer(handler);
  const at = formatBindAddress(addr);
  s.on('error', (e: NodeJS.ErrnoException) => {
    log.error(
      { address: at, code: e.code },
      `${what} cannot listen on ${at}: ${e.message}${HINTS[e.code ?? ''] ?? ''}; it stays off until the agent restarts`,
    );
  });
  s.listen(addr.port, addr.host);
  return s;
}

const sameAddr = (a: BindAddress | undefined, b: BindAddress | undefined) => a?.host === b?.host && a?.port === b?.port;

export class HealthServers {
  private healthz: { addr: BindAddress; server: Server } | undefined;
  private readonly services = new Map<number, { server: Server; state: ServiceHealth }>();
  private probe: Server | undefined;

  constructor(private readonly log: Logger) {}

  /** kube-proxy's healthz; undefined closes it. */
  setHealthz(addr: BindAddress | undefined, state: () => HealthzState): void {
    if (this.healthz && sameAddr(this.healthz.addr, addr)) return;
    this.healthz?.server.close();
    this.healthz = undefined;
    if (!addr) return;
    const server = listenHttp(
      addr,
      (req, res) => {
        const s = state();
        const now = new Date();
        const body = {
          lastUpdated: (s.lastUpdated ?? new Date(0)).toISOString(),
          currentTime: now.toISOString(),
          nodeEligible: true,
          warnings: s.warnings,
        };
        if (req.url?.startsWith('/livez')) return json(res, s.healthy ? 200 : 503, body);
        if (req.url?.startsWith('/healthz') || req.url === '/') return json(res, s.healthy ? 200 : 503, body);
        json(res, 404, { error: 'not found' });
      },
      this.log,
      'healthz',
    );
    this.healthz = { addr, server };
  }

  /** Health check node ports, by port: opened, updated and closed to match. */
  setServiceHealth(desired: ReadonlyMap<number, ServiceHealth>): void {
    for (const [port, cur] of this.services) {
      if (desired.has(port)) continue;
      cur.server.close();
      this.services.delete(port);
    }
    for (const [port, state] of desired) {
      const cur = this.services.get(port);
      if (cur) {
        cur.state = state;
        continue;
      }
      const entry = { server: undefined as unknown as Server, state };
      entry.server = listenHttp(
        { host: '0.0.0.0', port },
        (_req, res) => {
          const s = entry.state;
          json(res, s.localEndpoints > 0 ? 200 : 503, {
            service: { namespace: s.namespace, name: s.name },
            localEndpoints: s.localEndpoints,
            serviceProxyHealthy: true,
          });
        },
        this.log,
        `health check node port of ${state.namespace}/${state.name}`,
      );
      this.services.set(port, entry);
    }
  }

  /** /liveness and /readiness of the agent itself; undefined closes them. */
  setProbes(addr: BindAddress | undefined, ready: () => boolean): void {
    this.probe?.close();
    this.probe = undefined;
    if (!addr) return;
    this.probe = listenHttp(
      addr,
      (req, res) => {
        if (req.url?.startsWith('/liveness')) return json(res, 200, { live: true });
        if (req.url?.startsWith('/readiness')) return json(res, ready() ? 200 : 503, { ready: ready() });
        json(res, 404, { error: 'not found' });
      },
      this.log,
      'agent health',
    );
  }

  get healthCheckPorts(): number[] {
    return [...this.services.keys()];
  }

  close(): void {
    this.setHealthz(undefined, () => ({ healthy: false, lastUpdated: undefined, warnings: [] }));
    this.setServiceHealth(new Map());
    this.setProbes(undefined, () => false);
  }
}
