/**
 * bench/flood.c: frames arrive, as many as were asked for, with checksums
 * the receiving kernel accepts, and the tool keeps to its bounds.
 *
 * Two namespaces joined by a veth: flood sends from "a" (no address needed,
 * AF_PACKET) to "b", whose kernel is the checksum verifier: a valid TCP SYN
 * or ACK to a closed port is answered with a RST (Tcp OutRsts), a bad one is
 * counted in Tcp InCsumErrors; a valid UDP datagram to a closed port counts
 * in Udp NoPorts, a bad one in Udp InCsumErrors; a bad IPv4 header checksum
 * in IpExt InCsumErrors. A --bad-csum run checks that the verifier bites.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ip, sh, sysctl } from '../testkit/netns.js';
import { REPO, tmpNetns } from './helpers/env.js';

const FLOOD = join(REPO, 'bench', '.output', 'flood');

interface FloodResult {
  sent: number;
  errors: number;
  seconds: number;
  pps: number;
  kind: string;
  stoppedBy: string;
}

function flood(ns: string, args: string[]): { code: number | null; out: FloodResult | undefined; stderr: string; wallMs: number } {
  const t0 = performance.now();
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', FLOOD, ...args], { encoding: 'utf8', timeout: 60_000 });
  const wallMs = performance.now() - t0;
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  let out: FloodResult | undefined;
  try {
    out = JSON.parse(line) as FloodResult;
  } catch {
    out = undefined;
  }
  return { code: r.status, out, stderr: r.stderr ?? '', wallMs };
}

/** /proc/net/snmp and /proc/net/netstat of a namespace as { 'Tcp.OutRsts': n, ... }. */
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

function rxPackets(ns: string, dev: string): number {
  const j = JSON.parse(ip(ns, '-s', '-j', 'link', 'show', 'dev', dev)) as Array<{ stats64: { rx: { packets: number } } }>;
  return j[0]!.stats64.rx.packets;
}

function macOf(ns: string, dev: string): string {
  return (JSON.parse(ip(ns, '-j', 'link', 'show', 'dev', dev)) as Array<{ address: string }>)[0]!.address;
}

t.test('flood sends bounded floods with valid checksums', async (t) => {
  t.ok(existsSync(FLOOD), `${FLOOD} is built (make bench-tools)`);
  const a = tmpNetns(t, 'bpxfa');
  const b = tmpNetns(t, 'bpxfb');
  for (const ns of [a, b]) {
    // no IPv6 autoconfiguration or ND frames: the receive counters are ours alone
    sysctl(ns, 'net.ipv6.conf.all.disable_ipv6', '1');
    sysctl(ns, 'net.ipv6.conf.default.disable_ipv6', '1');
  }
  ip(a, 'link', 'add', 'fa', 'type', 'veth', 'peer', 'name', 'fb', 'netns', b);
  sysctl(b, 'net.ipv4.conf.all.rp_filter', '0');
  sysctl(b, 'net.ipv4.conf.default.rp_filter', '0');
  ip(b, 'addr', 'add', '10.99.0.2/24', 'dev', 'fb');
  ip(a, 'link', 'set', 'fa', 'up');
  ip(b, 'link', 'set', 'fb', 'up');
  const aMac = macOf(a, 'fa');
  const bMac = macOf(b, 'fb');
  // b answers the spoofed sources through a static next hop: no ARP on the wire
  ip(b, 'neigh', 'add', '10.99.0.1', 'lladdr', aMac, 'dev', 'fb', 'nud', 'permanent');
  ip(b, 'route', 'add', '203.0.113.0/24', 'via', '10.99.0.1', 'dev', 'fb');
  const base = ['--iface', 'fa', '--dst-mac', bMac, '--dst', '10.99.0.2', '--seconds', '10'];

  const settle = () => new Promise((r) => setTimeout(r, 100));
  const measure = async (args: string[]) => {
    const rx0 = rxPackets(b, 'fb');
    const c0 = counters(b);
    const r = flood(a, [...base, ...args]);
    await settle();
    const c1 = counters(b);
    const d = (k: string) => (c1[k] ?? 0) - (c0[k] ?? 0);
    return { r, rx: rxPackets(b, 'fb') - rx0, d };
  };

  t.test('1000 spoofed SYNs arrive, each with valid checksums', async (t) => {
    const { r, rx, d } = await measure([
      '--dport',
      '80',
      '--kind',
      'syn',
      '--count',
      '1000',
      '--spoof-cidr',
      '203.0.113.0/24',
      '--seed',
      '7',
    ]);
    t.equal(r.code, 0, `exit status 0 ${r.stderr}`);
    t.equal(r.out?.sent, 1000, 'reports 1000 sent');
    t.equal(r.out?.stoppedBy, 'count');
    t.ok((r.out?.pps ?? 0) > 0, `${r.out?.pps} frames/s`);
    t.equal(rx, 1000, 'the peer received exactly 1000 frames');
    t.equal(d('Ip.InReceives'), 1000, 'all 1000 reached IPv4');
    t.equal(d('IpExt.InCsumErrors') + d('Ip.InHdrErrors'), 0, 'no IPv4 header checksum or header errors');
    t.equal(d('Tcp.InCsumErrors'), 0, 'no TCP checksum errors');
    t.equal(d('Tcp.OutRsts'), 1000, 'every SYN to the closed port was answered with a RST (checksum verified)');
  });

  t.test('ACKs and UDP datagrams with payload are valid too', async (t) => {
    const ack = await measure(['--dport', '81', '--kind', 'ack', '--count', '200', '--spoof-cidr', '203.0.113.0/24', '--payload', '33']);
    t.equal(ack.r.out?.sent, 200);
    t.equal(ack.rx, 200);
    t.equal(ack.d('Tcp.InCsumErrors'), 0, 'no TCP checksum errors');
    t.equal(ack.d('Tcp.OutRsts'), 200, 'every ACK answered with a RST');
    const udp = await measure(['--dport', '9', '--kind', 'udp', '--count', '300', '--spoof-cidr', '203.0.113.0/24', '--payload', '17']);
    t.equal(udp.r.out?.sent, 300);
    t.equal(udp.rx, 300);
    t.equal(udp.d('Udp.InCsumErrors'), 0, 'no UDP checksum errors');
    t.equal(udp.d('Udp.NoPorts'), 300, 'every datagram counted as to a closed port (checksum verified)');
    const rst = await measure(['--dport', '82', '--kind', 'rst', '--count', '50', '--src', '203.0.113.5', '--sport', '4000']);
    t.equal(rst.rx, 50);
    t.equal(rst.d('Tcp.InSegs'), 50, 'RSTs reach TCP');
    t.equal(rst.d('Tcp.InCsumErrors') + rst.d('Tcp.OutRsts'), 0, 'valid, and never answered');
  });

  t.test('the checks above bite: --bad-csum frames are counted as checksum errors', async (t) => {
    const tcp = await measure(['--dport', '80', '--kind', 'syn', '--count', '100', '--spoof-cidr', '203.0.113.0/24', '--bad-csum']);
    t.equal(tcp.rx, 100);
    t.equal(tcp.d('Tcp.InCsumErrors'), 100, 'all 100 counted as TCP checksum errors');
    t.equal(tcp.d('Tcp.OutRsts'), 0, 'none answered');
    const udp = await measure(['--dport', '9', '--kind', 'udp', '--count', '100', '--spoof-cidr', '203.0.113.0/24', '--bad-csum']);
    t.equal(udp.d('Udp.InCsumErrors'), 100, 'all 100 counted as UDP checksum errors');
  });

  t.test('bounded by time and by rate', async (t) => {
    const { r, rx } = await measure([
      '--dport',
      '80',
      '--kind',
      'syn',
      '--count',
      '1000000',
      '--rate',
      '200',
      '--seconds',
      '1',
      '--spoof-cidr',
      '203.0.113.0/24',
    ]);
    t.equal(r.code, 0);
    t.equal(r.out?.stoppedBy, 'time', 'stopped by --seconds');
    t.ok(r.out!.sent >= 150 && r.out!.sent <= 210, `about 200 frames at 200/s in 1 s (${r.out?.sent})`);
    t.equal(rx, r.out?.sent, 'what it reports is what arrived');
    t.ok(r.wallMs < 3000, `done in ${r.wallMs.toFixed(0)} ms`);
  });

  t.test('refuses what it must', async (t) => {
    const over = flood(a, [...base, '--dport', '80', '--count', '10000001']);
    t.equal(over.code, 2, 'count over 10M refused');
    t.match(over.stderr, /over the limit of 10000000/);
    const noMac = flood(a, ['--iface', 'fa', '--dst', '10.99.0.2', '--dport', '80']);
    t.equal(noMac.code, 2, 'missing --dst-mac refused');
    t.match(noMac.stderr, /--dst-mac is required/);
    // bench/gen-common.h, as livegen: whole numbers, no trailing characters
    const half = flood(a, [...base, '--dport', '80', '--payload', '10.5']);
    t.same([half.code, /bad value for --payload/.test(half.stderr)], [2, true], 'a payload of 10.5 bytes refused');
    const junk = flood(a, ['--iface', 'fa', '--dst-mac', `${bMac}x`, '--dst', '10.99.0.2', '--dport', '80']);
    t.same([junk.code, /bad value for --dst-mac/.test(junk.stderr)], [2, true], 'a MAC with trailing characters refused');
    const both = flood(a, [...base, '--dport', '80', '--src', '10.0.0.1', '--spoof-cidr', '10.0.0.0/8']);
    t.equal(both.code, 2);
    const noIf = flood(a, ['--iface', 'nope0', '--dst-mac', bMac, '--dst', '10.99.0.2', '--dport', '80', '--src', '10.0.0.1']);
    t.equal(noIf.code, 1, 'unknown interface is a runtime error');
    t.match(noIf.stderr, /interface nope0/);
    const noAddr = flood(a, [...base, '--dport', '80']);
    t.equal(noAddr.code, 1, 'no --src and no address on the interface');
    t.match(noAddr.stderr, /no IPv4 address/);
  });
});
