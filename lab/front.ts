/**
 * The lab API server's front door: it serves `kubectl exec` (lab/exec.ts)
 * and hands everything else to the in-process API server
 * (testkit/apiserver), watches included. Two listeners: 127.0.0.1 on this
 * machine, for kubectl, open only to root's connections (kubectl sends no
 * bearer token over plain HTTP, so the peer's uid is the credential, read
 * from /proc/net/tcp); and the lab's `api` namespace, where the nodes'
 * processes reach it over the lab's LAN with the lab's bearer token.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { native } from '../src/native/index.js';
import { nsPath } from '../testkit/netns.js';
import { isExecRequest } from './exec.js';

export interface FrontOptions {
  /** the in-process API server's request handler (FakeApiServer.handler) */
  api: (req: IncomingMessage, res: ServerResponse) => void;
  token: string;
  /** the lab's api namespace, and the port to listen on there */
  apiNs: string;
  apiPort: number;
  exec: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
}

export interface Front {
  /** http://127.0.0.1:PORT, for kubectl on this machine */
  hostUrl: string;
  close(): Promise<void>;
}

/** The uid owning the local end of a TCP connection to 127.0.0.1:serverPort from clientPort (this namespace's /proc/net/tcp). */
export function loopbackPeerUid(serverPort: number, clientPort: number): number | undefined {
  const hex = (port: number): string => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const local = hex(clientPort);
  const remote = hex(serverPort);
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[2] === remote) return Number(f[7]);
  }
  return undefined;
}

const statusBody = (code: number, reason: string, message: string): string =>
  JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

export async function startFront(o: FrontOptions): Promise<Front> {
  const expected = Buffer.from(`Bearer ${o.token}`);
  /** connections to the host listener from root (checked once per connection) */
  const rootPeers = new WeakSet<Socket>();
  const authorized = (req: IncomingMessage): boolean => {
    if (rootPeers.has(req.socket)) return true;
    const got = Buffer.from(String(req.headers.authorization ?? ''));
    return got.length === expected.length && timingSafeEqual(got, expected);
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (!authorized(req)) {
      res.writeHead(401, { 'Content-Type': 'application/json' });
      res.end(
        statusBody(401, 'Unauthorized', 'Unauthorized: the lab API server serves root only (bpfproxy-lab up --api printed its kubeconfig)'),
      );
      return;
    }
    o.api(req, res);
  };
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    if (!authorized(req)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
      return;
    }
    if (isExecRequest(req.url) && String(req.headers.upgrade ?? '').toLowerCase() === 'websocket') return o.exec(req, socket, head);
    socket.end(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nthe lab serves only exec, over websockets (${String(req.headers.upgrade)} ${req.url} is not served)\n`,
    );
  };
  const mk = (): Server => {
    const s = createServer(onRequest);
    s.on('upgrade', onUpgrade);
    s.on('clientError', (_e, sock) => sock.destroy());
    return s;
  };
  const host = mk();
  await new Promise<void>((r) => host.listen(0, '127.0.0.1', r));
  const hostPort = (host.address() as AddressInfo).port;
  host.prependListener('connection', (sock: Socket) => {
    try {
      if (loopbackPeerUid(hostPort, sock.remotePort ?? 0) === 0) rootPeers.add(sock);
    } catch {
      /* not root: the token decides */
    }
  });
  // The nodes' listener is created in the api namespace: listen() with a
  // port only creates and binds its socket at once, in this thread's namespace.
  const nodes = mk();
  const prev = native().enterNetns(nsPath(o.apiNs));
  try {
    nodes.listen(o.apiPort);
  } finally {
    native().restoreNetns(prev);
  }
  await new Promise<void>((resolve, reject) => {
    if (nodes.listening) resolve();
    nodes.once('listening', resolve);
    nodes.once('error', reject);
  });
  return {
    hostUrl: `http://127.0.0.1:${hostPort}`,
    async close() {
      for (const s of [host, nodes]) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
}
