/**
 * Traffic for the migration test, run inside a lab namespace (a pod's or
 * the external client's) as a process of its own:
 *
 *   node migration-traffic.js '<DriverConfig as JSON>'
 *
 * Per target (a service address and port, TCP or UDP) it keeps `long`
 * long-lived flows busy — a TCP connection that sends a chunk every
 * intervalMs and wants it echoed back, or a UDP socket that asks every
 * intervalMs and wants an answer — and opens `rate` new short flows a
 * second (connect, greeting, one echo, close; or one datagram on a fresh
 * socket). Every flow remembers which pod answered it and which source
 * address that pod saw; a long flow fails when it errors, closes, or waits
 * longer than timeoutMs for an answer.
 *
 * Commands on stdin, one per line, each answered by one JSON line on stdout:
 *   snap        the long flows as they are now, and the short flows since the last snap
 *   close-long  close the long flows gracefully (TCP: FIN both ways), then answer
 *   stop        stop everything, answer, exit
 * Bounded: no more than maxNew short flows in all, and the process exits
 * after maxMs whatever happens.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

export interface DriverTarget {
  name: string;
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  /** long-lived flows */
  long: number;
  /** new short flows a second */
  rate: number;
}

export interface DriverConfig {
  targets: DriverTarget[];
  intervalMs: number;
  timeoutMs: number;
  maxNew: number;
  maxMs: number;
}

export interface LongFlow {
  target: string;
  proto: 'tcp' | 'udp';
  id: number;
  /** pods that answered (more than one: the flow moved) */
  pods: string[];
  /** the source address and port the pods saw (more than one: the flow moved) */
  peers: string[];
  exchanges: number;
  /** UDP: requests that had no answer within timeoutMs */
  lost: number;
  /** why the flow failed, if it did */
  failed?: string;
  failedAtMs?: number;
  closed: boolean;
}

export interface ShortFlows {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  pods: Record<string, number>;
}

export interface Snapshot {
  atMs: number;
  long: LongFlow[];
  /** per target, since the last snap */
  short: Record<string, ShortFlows>;
}

const t0 = performance.now();
const now = (): number => Math.round(performance.now() - t0);

function parseHello(s: string): { pod: string; peer: string } | undefined {
  try {
    const j = JSON.parse(s) as { pod?: unknown; peer?: unknown };
    return typeof j.pod === 'string' && typeof j.peer === 'string' ? { pod: j.pod, peer: j.peer } : undefined;
  } catch {
    return undefined;
  }
}

const note = (xs: string[], x: string): void => {
  if (!xs.includes(x)) xs.push(x);
};

class LongTcp {
  readonly f: LongFlow;
  private sock: Socket;
  private buf = '';
  private greeted = false;
  private sent = 0;
  private echoed = 0;
  /** when each chunk still unanswered was sent, oldest first */
  private pending: Array<{ at: number; end: number }> = [];
  private timer: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(
    t: DriverTarget,
    id: number,
    private readonly c: DriverConfig,
  ) {
    this.f = { target: t.name, proto: 'tcp', id, pods: [], peers: [], exchanges: 0, lost: 0, closed: false };
    this.sock = connect({ host: t.host, port: t.port });
    this.sock.setNoDelay(true);
    const connectTimer = setTimeout(() => this.fail('no greeting'), c.timeoutMs);
    this.sock.on('data', (d) => {
      if (!this.greeted) {
        this.buf += d.toString('latin1');
        const nl = this.buf.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(connectTimer);
        const h = parseHello(this.buf.slice(0, nl));
        if (!h) return this.fail('bad greeting');
        note(this.f.pods, h.pod);
        note(this.f.peers, h.peer);
        this.greeted = true;
        this.echoed += this.buf.length - nl - 1;
        this.timer = setInterval(() => this.tick(), c.intervalMs);
        return;
      }
      this.echoed += d.length;
      while (this.pending.length && this.pending[0]!.end <= this.echoed) {
        this.pending.shift();
        this.f.exchanges++;
      }
    });
    this.sock.on('error', (e: NodeJS.ErrnoException) => this.fail(e.code ?? e.message));
    this.sock.on('close', () => {
      clearTimeout(connectTimer);
      if (this.timer) clearInterval(this.timer);
      if (this.closing && !this.f.failed) this.f.closed = true;
      else this.fail('closed');
    });
  }

  private tick(): void {
    if (this.f.failed || this.closing) return;
    const oldest = this.pending[0];
    if (oldest && performance.now() - oldest.at > this.c.timeoutMs) return this.fail(`no echo in ${this.c.timeoutMs} ms`);
    const chunk = Buffer.from(`${this.f.id}:${this.sent}:${'x'.repeat(40)}\n`);
    this.sent += chunk.length;
    this.pending.push({ at: performance.now(), end: this.sent });
    this.sock.write(chunk);
  }

  private fail(why: string): void {
    if (this.f.failed || this.f.closed) return;
    this.f.failed = why;
    this.f.failedAtMs = now();
    if (this.timer) clearInterval(this.timer);
    this.sock.destroy();
  }

  /** FIN, and wait for the server's (the echo server ends when we do). */
  close(): Promise<void> {
    if (this.f.failed || this.f.closed) return Promise.resolve();
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.fail('no FIN back');
        resolve();
      }, this.c.timeoutMs);
      this.sock.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.sock.end();
    });
  }

  destroy(): void {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    this.sock.destroy();
  }
}

class LongUdp {
  readonly f: LongFlow;
  private sock: UdpSocket;
  private pending: number[] = [];
  private timer: NodeJS.Timeout;
  private seq = 0;

  constructor(
    t: DriverTarget,
    id: number,
    private readonly c: DriverConfig,
  ) {
    this.f = { target: t.name, proto: 'udp', id, pods: [], peers: [], exchanges: 0, lost: 0, closed: false };
    this.sock = createSocket('udp4');
    this.sock.on('message', (m) => {
      const h = parseHello(m.toString());
      if (!h) return;
      note(this.f.pods, h.pod);
      note(this.f.peers, h.peer);
      if (this.pending.length) this.pending.shift();
      this.f.exchanges++;
    });
    this.sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!this.f.failed) {
        this.f.failed = e.code ?? e.message;
        this.f.failedAtMs = now();
      }
    });
    this.sock.connect(t.port, t.host);
    this.timer = setInterval(() => this.tick(), c.intervalMs);
  }

  private tick(): void {
    if (this.f.closed) return;
    const at = performance.now();
    while (this.pending.length && at - this.pending[0]! > this.c.timeoutMs) {
      this.pending.shift();
      this.f.lost++;
    }
    try {
      this.sock.send(`${this.f.id}:${this.seq++}`);
      this.pending.push(at);
    } catch {
      // not connected yet: the next tick sends
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.f.closed = true;
    this.sock.close();
  }
}

function shortTcp(t: DriverTarget, timeoutMs: number): Promise<{ ok: boolean; pod?: string; error?: string }> {
  return new Promise((resolve) => {
    let buf = '';
    let pod: string | undefined;
    let done = false;
    let ending = false;
    const sock = connect({ host: t.host, port: t.port });
    const finish = (r: { ok: boolean; pod?: string; error?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: pod ? 'no echo' : 'timeout' }), timeoutMs);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (pod === undefined) {
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const h = parseHello(buf.slice(0, nl));
        if (!h) return finish({ ok: false, error: 'bad greeting' });
        pod = h.pod;
        buf = buf.slice(nl + 1);
        sock.write('ping\n');
      }
      if (buf.includes('ping\n') && !ending) {
        // a clean close: FIN, then the server's
        ending = true;
        sock.end();
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    sock.on('close', () => finish(ending ? { ok: true, pod } : { ok: false, error: 'closed' }));
  });
}

function shortUdp(t: DriverTarget, timeoutMs: number): Promise<{ ok: boolean; pod?: string; error?: string }> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    let done = false;
    const finish = (r: { ok: boolean; pod?: string; error?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout' }), timeoutMs);
    s.on('message', (m) => {
      const h = parseHello(m.toString());
      finish(h ? { ok: true, pod: h.pod } : { ok: false, error: 'bad reply' });
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
    s.connect(t.port, t.host, () => s.send('q'));
  });
}

async function main(): Promise<void> {
  const c = JSON.parse(process.argv[2] ?? '') as DriverConfig;
  const longTcp: LongTcp[] = [];
  const longUdp: LongUdp[] = [];
  let id = 0;
  for (const t of c.targets) {
    for (let i = 0; i < t.long; i++) {
      if (t.proto === 'tcp') longTcp.push(new LongTcp(t, id++, c));
      else longUdp.push(new LongUdp(t, id++, c));
    }
  }
  const fresh = (): Record<string, ShortFlows> =>
    Object.fromEntries(c.targets.map((t) => [t.name, { ok: 0, failed: 0, errors: {}, pods: {} }]));
  let short = fresh();
  let started = 0;
  const inflight = new Set<Promise<void>>();
  const tickers = c.targets
    .filter((t) => t.rate > 0)
    .map((t) =>
      setInterval(() => {
        if (started >= c.maxNew) return;
        started++;
        const p = (t.proto === 'tcp' ? shortTcp(t, c.timeoutMs) : shortUdp(t, c.timeoutMs)).then((r) => {
          const s = short[t.name]!;
          if (r.ok) {
            s.ok++;
            s.pods[r.pod!] = (s.pods[r.pod!] ?? 0) + 1;
          } else {
            s.failed++;
            s.errors[r.error!] = (s.errors[r.error!] ?? 0) + 1;
          }
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }, 1000 / t.rate),
    );
  const snap = (): Snapshot => {
    const out: Snapshot = { atMs: now(), long: [...longTcp, ...longUdp].map((x) => ({ ...x.f })), short };
    short = fresh();
    return out;
  };
  const say = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const stop = async () => {
    for (const x of tickers) clearInterval(x);
    await Promise.all(inflight);
    const s = snap();
    for (const x of longTcp) x.destroy();
    for (const x of longUdp) if (!x.f.closed) x.close();
    say(s);
    process.exit(0);
  };
  setTimeout(() => void stop(), c.maxMs).unref();
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = line.trim();
    if (cmd === 'snap') say(snap());
    else if (cmd === 'close-long') {
      await Promise.all(longTcp.map((x) => x.close()));
      for (const x of longUdp) x.close();
      say({ closed: true });
    } else if (cmd === 'stop') await stop();
  }
  await stop();
}

if (process.argv[1]?.endsWith('migration-traffic.js')) {
  main().catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exit(2);
  });
}
