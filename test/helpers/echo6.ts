/**
 * IPv6 echo server and probes for namespace tests (the lab's are IPv4):
 * TCP [::]:8080 answers one JSON line naming the server and the peer it
 * saw, UDP [::]:5353 the same per datagram. Servers live in the namespace
 * (killed with it, and after `lifeMs` in any case); probes are bounded by
 * a timeout.
 */
import { spawn, spawnSync } from 'node:child_process';
import { nsPath, sh } from '../../testkit/netns.js';

const SERVER = `
const net = require('node:net'), dgram = require('node:dgram');
const name = process.argv[1];
net.createServer((s) => { s.on('error', () => {}); s.end(JSON.stringify({ pod: name, peer: s.remoteAddress }) + '\\n'); }).listen(8080, '::');
const u = dgram.createSocket({ type: 'udp6' });
u.on('message', (m, r) => u.send(JSON.stringify({ pod: name, peer: r.address }), r.port, r.address));
u.bind(5353, '::');
setTimeout(() => process.exit(0), Number(process.argv[2]));
`;

const CLIENT = `
const net = require('node:net'), dgram = require('node:dgram');
const [mode, host, port, timeout] = process.argv.slice(1);
const done = (o) => { process.stdout.write(JSON.stringify(o)); process.exit(0); };
setTimeout(() => done({ ok: false, error: 'timeout' }), Number(timeout));
if (mode === 'tcp') {
  const s = net.connect({ host, port: Number(port) });
  let buf = '';
  s.on('data', (d) => (buf += d));
  s.on('end', () => { try { done({ ok: true, ...JSON.parse(buf) }); } catch { done({ ok: false, error: 'bad answer ' + buf }); } });
  s.on('error', (e) => done({ ok: false, error: e.code }));
} else {
  const u = dgram.createSocket({ type: 'udp6' });
  u.on('message', (m) => done({ ok: true, ...JSON.parse(String(m)) }));
  u.on('error', (e) => done({ ok: false, error: e.code }));
  u.connect(Number(port), host, () => u.send('ping'));
}
`;

export interface Answer6 {
  ok: boolean;
  pod?: string;
  peer?: string;
  error?: string;
}

/** Start the echo server in ns; resolves once both ports listen (at most 5 s). */
export async function startEcho6(ns: string, name: string, lifeMs = 60_000): Promise<void> {
  const c = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, '-e', SERVER, name, String(lifeMs)], {
    detached: true,
    stdio: 'ignore',
  });
  c.unref();
  for (const until = Date.now() + 5000; Date.now() < until;) {
    const tcp = sh('ss', ['-H', '-ltn', 'sport = :8080'], { ns, allowFail: true }).trim();
    const udp = sh('ss', ['-H', '-lun', 'sport = :5353'], { ns, allowFail: true }).trim();
    if (tcp && udp) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`IPv6 echo server in ${ns} did not start within 5 s`);
}

/** One TCP or UDP exchange from ns with host:port. */
export function probe6(ns: string, mode: 'tcp' | 'udp', host: string, port: number, timeoutMs = 2000): Answer6 {
  const r = spawnSync(
    'nsenter',
    [`--net=${nsPath(ns)}`, '--', process.execPath, '-e', CLIENT, mode, host, String(port), String(timeoutMs)],
    {
      encoding: 'utf8',
      timeout: timeoutMs + 10_000,
    },
  );
  if (r.status !== 0) throw new Error(`IPv6 probe in ${ns} failed: ${r.stderr || r.error?.message}`);
  return JSON.parse(r.stdout) as Answer6;
}
