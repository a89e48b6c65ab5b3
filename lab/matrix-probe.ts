/**
 * Runs inside a lab pod for the NetworkPolicy tests. Bounded: every attempt
 * has a timeout, the number of targets is capped, a flow has a duration.
 *   matrix-probe.js matrix TIMEOUT_MS HOST:PORT/tcp|udp ...
 *     all targets at once; prints a JSON array of booleans (answered or not)
 *   matrix-probe.js serve
 *     the same, over and over without a process start per round: reads a
 *     line {"timeout": MS, "targets": ["HOST:PORT/PROTO", ...]} from stdin,
 *     answers a line with the array; ends when stdin closes
 *   matrix-probe.js flow HOST PORT DURATION_MS STALL_MS
 *     one TCP connection, a byte every 50 ms, echoed back; ends after the
 *     duration or when no echo came for STALL_MS; prints a FlowResult
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

export interface FlowResult {
  connected: boolean;
  /** epoch ms of the first and the last echo */
  firstReply: number;
  lastReply: number;
  /** the longest time between two echoes, ms */
  maxGap: number;
  replies: number;
  /** 'stalled' when no echo came for STALL_MS, else a socket error or undefined */
  error?: string;
}

const MAX_TARGETS = 200;

function tcpOnce(host: string, port: number, timeout: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const sock = connect({ host, port });
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeout);
    // the echo server greets first: an answer means the server accepted
    sock.on('data', () => finish(true));
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
  });
}

function udpOnce(host: string, port: number, timeout: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.close();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeout);
    s.on('message', () => finish(true));
    s.on('error', () => finish(false));
    s.connect(port, host, () => s.send('ping'));
  });
}

function flow(host: string, port: number, duration: number, stall: number): Promise<FlowResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const r: FlowResult = { connected: false, firstReply: 0, lastReply: 0, maxGap: 0, replies: 0 };
    let done = false;
    const sock = connect({ host, port });
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      clearInterval(ticker);
      clearTimeout(hard);
      sock.destroy();
      resolve(error ? { ...r, error } : r);
    };
    const hard = setTimeout(() => finish(), duration);
    const ticker = setInterval(() => {
      const since = r.lastReply || t0;
      if (Date.now() - since > stall) finish('stalled');
      else if (r.connected) sock.write('x');
    }, 50);
    sock.on('connect', () => (r.connected = true));
    sock.on('data', () => {
      const now = Date.now();
      if (r.lastReply) r.maxGap = Math.max(r.maxGap, now - r.lastReply);
      else r.firstReply = now;
      r.lastReply = now;
      r.replies++;
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    sock.on('close', () => finish('closed'));
  });
}

function probeAll(timeoutMs: number, specs: string[]): Promise<boolean[]> {
  const timeout = Math.min(timeoutMs, 5000);
  const targets = specs.slice(0, MAX_TARGETS).map((s) => {
    const m = /^([\d.]+):(\d+)\/(tcp|udp)$/.exec(s);
    if (!m) throw new Error(`matrix-probe: bad target ${s} (want HOST:PORT/tcp|udp)`);
    return { host: m[1]!, port: Number(m[2]), proto: m[3]! };
  });
  return Promise.all(targets.map((x) => (x.proto === 'udp' ? udpOnce : tcpOnce)(x.host, x.port, timeout)));
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'matrix') {
    process.stdout.write(`${JSON.stringify(await probeAll(Number(rest[0]), rest.slice(1)))}\n`);
    return;
  }
  if (mode === 'serve') {
    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) {
      const req = JSON.parse(line) as { timeout: number; targets: string[] };
      process.stdout.write(`${JSON.stringify(await probeAll(req.timeout, req.targets))}\n`);
    }
    return;
  }
  if (mode === 'flow') {
    const [host, port, duration, stall] = rest;
    const r = await flow(host!, Number(port), Math.min(Number(duration), 120_000), Number(stall));
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  throw new Error('usage: matrix-probe.js matrix TIMEOUT HOST:PORT/PROTO... | flow HOST PORT DURATION STALL');
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(2);
});
