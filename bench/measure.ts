/** Traffic measurements from the client pod: iperf3 (TCP, UDP) and crr, with CPU from /proc/stat. */
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { nsPath } from '../testkit/netns.js';
import { CRR } from './topology.js';

/** Busy and total jiffies of all CPUs (as knb reads them). */
export function cpuJiffies(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

const HZ = 100; // USER_HZ on Linux

function inNs(ns: string, cmd: string, args: string[], timeoutMs: number): { ok: boolean; out: string; err: string } {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr || r.error?.message || '').trim() };
}

export interface IperfResult {
  gbps: number;
  retransmits: number;
  lostPercent: number;
  /** CPU-seconds (all cores) spent per Gbit moved */
  cpuSecPerGbit: number;
  error?: string;
}

export function iperf(ns: string, host: string, port: number, seconds: number, udp: boolean): IperfResult {
  const c0 = cpuJiffies();
  const t0 = performance.now();
  const args = ['-c', host, '-p', String(port), '-t', String(seconds), '-J', '-O', '1', ...(udp ? ['-u', '-b', '0', '-l', '1400'] : [])];
  const r = inNs(ns, 'iperf3', args, (seconds + 15) * 1000);
  const wall = (performance.now() - t0) / 1000;
  const c1 = cpuJiffies();
  let j: {
    end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number }; sum?: { lost_percent?: number } };
    error?: string;
  };
  try {
    j = JSON.parse(r.out) as typeof j;
  } catch {
    return { gbps: 0, retransmits: 0, lostPercent: 100, cpuSecPerGbit: NaN, error: r.err || 'iperf3 gave no JSON' };
  }
  if (j.error) return { gbps: 0, retransmits: 0, lostPercent: 100, cpuSecPerGbit: NaN, error: j.error };
  const bps = j.end?.sum_received?.bits_per_second ?? 0;
  const gbits = (bps * seconds) / 1e9;
  // CPU over the measured seconds only (iperf3 omits the first one)
  const busySec = ((c1.busy - c0.busy) / HZ) * (seconds / Math.max(wall, seconds));
  return {
    gbps: +(bps / 1e9).toFixed(3),
    retransmits: j.end?.sum_sent?.retransmits ?? 0,
    lostPercent: +(j.end?.sum?.lost_percent ?? 0).toFixed(3),
    cpuSecPerGbit: gbits > 0 ? +(busySec / gbits).toFixed(4) : NaN,
  };
}

export interface CrrResult {
  rate: number;
  p50us: number;
  p99us: number;
  errors: number;
  transactions: number;
  /** the busiest generator thread's CPU share: near 1 means the generator is the bottleneck */
  generatorCpu: number;
  error?: string;
}

export function crr(ns: string, host: string, port: number, millis: number, threads: number): CrrResult {
  const r = inNs(ns, CRR, ['client', host, String(port), String(millis), String(threads)], millis + 15_000);
  try {
    const j = JSON.parse(r.out) as {
      rate: number;
      p50_us: number;
      p99_us: number;
      errors: number;
      transactions: number;
      max_thread_cpu: number;
    };
    return {
      rate: j.rate,
      p50us: j.p50_us,
      p99us: j.p99_us,
      errors: j.errors,
      transactions: j.transactions,
      generatorCpu: j.max_thread_cpu,
    };
  } catch {
    return { rate: 0, p50us: NaN, p99us: NaN, errors: 1, transactions: 0, generatorCpu: 0, error: r.err || 'crr gave no JSON' };
  }
}
