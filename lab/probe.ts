/**
 * A bounded client for the lab: every attempt has a timeout and the number
 * of attempts is fixed. Prints one JSON document on stdout.
 *   probe.js tcp HOST PORT [--count N] [--timeout MS]
 *   probe.js udp HOST PORT [--count N] [--timeout MS]
 *   probe.js stream HOST PORT --duration MS [--chunk BYTES] [--interval MS]
 */
import { createSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';

export interface Attempt {
  ok: boolean;
  pod?: string;
  peer?: string;
  ms: number;
  error?: string;
}

export interface StreamResult {
  ok: boolean;
  pod?: string;
  sent: number;
  received: number;
  ms: number;
  error?: string;
}

function tcpOnce(host: string, port: number, timeout: number): Promise<Attempt> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const sock = connect({ host, port });
    const finish = (a: Omit<Attempt, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...a, ms: +(performance.now() - t0).toFixed(2) });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeout);
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const j = JSON.parse(buf.slice(0, nl)) as { pod: string; peer: string };
        finish({ ok: true, pod: j.pod, peer: j.peer });
      } catch {
        finish({ ok: false, error: 'bad greeting' });
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    sock.on('close', () => finish({ ok: false, error: 'closed' }));
  });
}

function udpOnce(host: string, port: number, timeout: number): Promise<Attempt> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    let done = false;
    const finish = (a: Omit<Attempt, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.close();
      resolve({ ...a, ms: +(performance.now() - t0).toFixed(2) });
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeout);
    s.on('message', (m) => {
      try {
        const j = JSON.parse(m.toString()) as { pod: string; peer: string };
        finish({ ok: true, pod: j.pod, peer: j.peer });
      } catch {
        finish({ ok: false, error: 'bad reply' });
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    // connect() so an ICMP port unreachable surfaces as ECONNREFUSED
    s.connect(port, host, () => s.send('ping'));
  });
}

/** Send paced chunks for `duration` ms, then wait for all of it to come back. */
function stream(host: string, port: number, duration: number, chunk: number, interval: number, timeout: number): Promise<StreamResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let sent = 0;
    let received = 0;
    let greeting = '';
    let pod: string | undefined;
    let done = false;
    let sending = true;
    let ticker: NodeJS.Timeout | undefined;
    const sock: Socket = connect({ host, port });
    const payload = Buffer.alloc(chunk, 0x61);
    const finish = (r: Omit<StreamResult, 'ms' | 'sent' | 'received' | 'pod'>) => {
      if (done) return;
      done = true;
      clearTimeout(hard);
      if (ticker) clearInterval(ticker);
      sock.destroy();
      resolve({ ...r, pod, sent, received, ms: +(performance.now() - t0).toFixed(1) });
    };
    const hard = setTimeout(() => finish({ ok: false, error: 'timeout' }), duration + timeout);
    sock.on('connect', () => {
      ticker = setInterval(() => {
        if (performance.now() - t0 >= duration) {
          sending = false;
          clearInterval(ticker);
          ticker = undefined;
          if (received >= sent) finish({ ok: true });
          return;
        }
        sock.write(payload);
        sent += payload.length;
      }, interval);
    });
    sock.on('data', (d) => {
      if (pod === undefined) {
        greeting += d.toString('latin1');
        const nl = greeting.indexOf('\n');
        if (nl < 0) return;
        try {
          pod = (JSON.parse(greeting.slice(0, nl)) as { pod: string }).pod;
        } catch {
          pod = '?';
        }
        received += Buffer.byteLength(greeting.slice(nl + 1), 'latin1');
      } else {
        received += d.length;
      }
      if (!sending && received >= sent) finish({ ok: true });
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    sock.on('close', () => finish({ ok: received >= sent && !sending, error: received >= sent && !sending ? undefined : 'closed early' }));
  });
}

async function main(): Promise<void> {
  const [mode, host, portS, ...rest] = process.argv.slice(2);
  const opt = (k: string, d: number): number => {
    const i = rest.indexOf(`--${k}`);
    return i >= 0 ? Number(rest[i + 1]) : d;
  };
  const port = Number(portS);
  if (!host || !port) throw new Error('usage: probe.js tcp|udp|stream HOST PORT [options]');
  const count = Math.min(opt('count', 1), 1000);
  const timeout = Math.min(opt('timeout', 2000), 30000);
  if (mode === 'stream') {
    const duration = Math.min(opt('duration', 3000), 60000);
    const r = await stream(host, port, duration, opt('chunk', 16384), opt('interval', 10), timeout);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const out: Attempt[] = [];
  for (let i = 0; i < count; i++) out.push(await (mode === 'udp' ? udpOnce : tcpOnce)(host, port, timeout));
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(2);
});
