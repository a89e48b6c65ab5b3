/** What machine a result came from, recorded with every result. */
import { spawnSync } from 'node:child_process';
import { cpus, release, totalmem } from 'node:os';

const ver = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').split('\n')[0]?.trim() || 'not found';
};

export interface Environment {
  date: string;
  kernel: string;
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  node: string;
  iperf3: string;
  iptables: string;
  nft: string;
  clang: string;
  virtualized: string;
}

export function environment(): Environment {
  const c = cpus();
  return {
    date: new Date().toISOString(),
    kernel: release(),
    cpuModel: c[0]?.model ?? 'unknown',
    cpus: c.length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    iperf3: ver('iperf3', ['--version']),
    iptables: ver('iptables', ['--version']),
    nft: ver('nft', ['--version']),
    clang: ver('clang', ['--version']),
    virtualized: ver('systemd-detect-virt', []) || 'unknown',
  };
}
