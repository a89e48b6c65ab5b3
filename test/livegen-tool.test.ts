/**
 * bench/livegen.c: BPF_PROG_RUN live frames out of a veth. It sends exactly
 * the frames asked for, keeps to its time bound, varies the flow per frame
 * with valid checksums, and refuses a peer that takes no XDP frames.
 *
 * Two namespaces joined by a veth la (a, the generator's side) -- lb (b).
 * A veth takes XDP frames only when the receiving side has NAPI: lb gets an
 * XDP program (bench/xdp-pass.c: drop for counting, pass for the stack).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ip, sh, sysctl } from '../testkit/netns.js';
import { REPO, tmpNetns } from './helpers/env.js';

const LIVEGEN = join(REPO, 'bench', '.output', 'livegen');
const XDP_PASS = join(REPO, 'bench', '.output', 'xdp-pass.o');

interface LivegenResult {
  sent: number;
  seconds: number;
  pps: number;
  txPackets: number;
  txDropped: number;
  stoppedBy: string;
}

function livegen(ns: string, args: string[]): { code: number | null; out: LivegenResult | undefined; stderr: string; wallMs: number } {
  const t0 = performance.now();
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', LIVEGEN, ...args], { encoding: 'utf8', timeout: 60_000 });
  const wallMs = performance.now() - t0;
  let out: LivegenResult | undefined;
  try {
    out = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '') as LivegenResult;
  } catch {
    out = undefined;
  }
  return { code: r.status, out, stderr: r.stderr ?? '', wallMs };
}

function counters(ns: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = sh('cat', [file], { ns }).trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      const group = names[0]!.replace(/:$/, '');
      for (let j = 1; j < names.length; j++) out[`${group}.${names[j]}`] = Number(values[j]);
    }
  }
  return out;
}

const rxPackets = (ns: string, dev: string): number =>
  (JSON.parse(ip(ns, '-s', '-j', 'link', 'show', 'dev', dev)) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
const macOf = (ns: string, dev: string): string =>
  (JSON.parse(ip(ns, '-j', 'link', 'show', 'dev', dev)) as Array<{ address: string }>)[0]!.address;

/** A UDP socket in ns on port 9 that counts datagrams and their distinct sources (address:port), for up to ms. */
function listen(ns: string, want: number, ms: number): { ready: Promise<void>; done: Promise<{ received: number; distinct: number }> } {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    const seen = new Set(); let n = 0;
    const end = () => { console.log(JSON.stringify({ received: n, distinct: seen.size })); process.exit(0); };
    s.on('message', (_m, r) => { n++; seen.add(r.address + ':' + r.port); if (n >= ${want}) end(); });
    // a frame from XDP becomes an skb of a whole page: room for ${want} of them
    s.bind(9, '10.99.0.2', () => { s.setRecvBufferSize(${want} * 8192); console.log('ready'); });
    setTimeout(end, ${ms});`;
  const c = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let readyFn: () => void = () => undefined;
  const ready = new Promise<void>((r) => (readyFn = r));
  c.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('ready')) readyFn();
  });
  const done = new Promise<{ received: number; distinct: number }>((resolve) =>
    c.on('close', () => resolve(JSON.parse(out.trim().split('\n').pop()!) as { received: number; distinct: number })),
  );
  return { ready, done };
}

t.test('livegen sends bounded live-frame floods out of a veth', async (t) => {
  t.ok(existsSync(LIVEGEN), `${LIVEGEN} is built (make bench-tools)`);
  const a = tmpNetns(t, 'bpxla');
  const b = tmpNetns(t, 'bpxlb');
  for (const ns of [a, b]) {
    sysctl(ns, 'net.ipv6.conf.all.disable_ipv6', '1');
    sysctl(ns, 'net.ipv6.conf.default.disable_ipv6', '1');
  }
  ip(a, 'link', 'add', 'la', 'type', 'veth', 'peer', 'name', 'lb', 'netns', b);
  sysctl(b, 'net.ipv4.conf.all.rp_filter', '0');
  sysctl(b, 'net.ipv4.conf.default.rp_filter', '0');
  ip(b, 'addr', 'add', '10.99.0.2/24', 'dev', 'lb');
  ip(a, 'link', 'set', 'la', 'up');
  ip(b, 'link', 'set', 'lb', 'up');
  const bMac = macOf(b, 'lb');
  const base = ['--iface', 'la', '--dst-mac', bMac, '--dst', '10.99.0.2', '--dport', '9', '--src', '10.99.0.10'];

  t.test('a peer without XDP or GRO takes no XDP frames: refused with a reason', async (t) => {
    const r = livegen(a, [...base, '--count', '100']);
    t.equal(r.code, 1, 'exit status 1');
    t.match(r.stderr, /none of the first 100 frames reached its peer/);
  });

  t.test('exactly the frames asked for, into an XDP drop on the peer', async (t) => {
    ip(b, 'link', 'set', 'dev', 'lb', 'xdp', 'obj', XDP_PASS, 'sec', 'xdp_drop');
    const rx0 = rxPackets(b, 'lb');
    const r = livegen(a, [...base, '--count', '50000', '--seconds', '20']);
    t.equal(r.code, 0, `exit status 0 ${r.stderr}`);
    t.equal(r.out?.sent, 50000, 'reports 50000 sent');
    t.equal(r.out?.stoppedBy, 'count');
    t.equal(r.out?.txPackets, 50000, 'the veth counts 50000 taken by its peer');
    t.equal(r.out?.txDropped, 0, 'none refused');
    t.equal(rxPackets(b, 'lb') - rx0, 50000, 'the peer received exactly 50000');
    t.ok((r.out?.pps ?? 0) > 0, `${r.out?.pps} frames/s`);
  });

  t.test('bounded by time', async (t) => {
    const r = livegen(a, [...base, '--count', '1000000000', '--seconds', '0.5']);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.out?.stoppedBy, 'time', 'stopped by --seconds');
    t.ok(r.out!.sent > 0 && r.out!.sent < 1e9, `${r.out?.sent} frames in ${r.out?.seconds} s`);
    t.ok(r.out!.seconds < 1.5, `its calls end soon after the deadline (${r.out?.seconds} s)`);
    t.ok(r.wallMs < 5000, `done in ${r.wallMs.toFixed(0)} ms`);
  });

  t.test('bounded by rate', async (t) => {
    const r = livegen(a, [...base, '--count', '1000000000', '--seconds', '1', '--rate', '5000']);
    t.equal(r.code, 0, r.stderr);
    t.ok(r.out!.sent >= 3000 && r.out!.sent <= 6000, `about 5000 frames at 5000/s in 1 s (${r.out?.sent})`);
  });

  t.test('frame n is flow n: source address and port vary, checksums stay valid', async (t) => {
    ip(b, 'link', 'set', 'dev', 'lb', 'xdp', 'off');
    ip(b, 'link', 'set', 'dev', 'lb', 'xdp', 'obj', XDP_PASS, 'sec', 'xdp');
    // b answers the sources through a static neighbour: no ARP on the wire
    for (let i = 10; i < 14; i++) ip(b, 'neigh', 'add', `10.99.0.${i}`, 'lladdr', macOf(a, 'la'), 'dev', 'lb', 'nud', 'permanent');
    const l = listen(b, 64, 10_000);
    await l.ready;
    const c0 = counters(b);
    const r = livegen(a, [...base, '--srcs', '4', '--sport', '40000', '--sports', '8', '--count', '64', '--payload', '21']);
    t.equal(r.code, 0, r.stderr);
    const got = await l.done;
    const c1 = counters(b);
    const d = (k: string) => (c1[k] ?? 0) - (c0[k] ?? 0);
    t.equal(d('Ip.InReceives'), 64, 'all 64 reached IPv4');
    t.equal(
      got.received,
      64,
      `the socket received all 64 datagrams, checksums verified by the kernel (receive buffer full: ${d('Udp.RcvbufErrors')})`,
    );
    t.equal(got.distinct, 32, '4 addresses x 8 ports: 32 distinct flows');
    t.equal(d('Udp.InCsumErrors') + d('IpExt.InCsumErrors'), 0, 'no checksum errors');
    ip(b, 'link', 'set', 'dev', 'lb', 'xdp', 'off');
  });

  t.test('refuses what it must', async (t) => {
    const over = livegen(a, [...base, '--count', '1000000001']);
    t.equal(over.code, 2, 'count over 1e9 refused');
    t.match(over.stderr, /over the limit/);
    const wrap = livegen(a, [...base, '--sport', '65530', '--sports', '10']);
    t.equal(wrap.code, 2, 'source ports past 65535 refused');
    const noIf = livegen(a, ['--iface', 'nope0', '--dst-mac', bMac, '--dst', '10.99.0.2', '--dport', '9']);
    t.equal(noIf.code, 1, 'an unknown interface is a runtime error');
    t.match(noIf.stderr, /interface nope0/);
  });
});
