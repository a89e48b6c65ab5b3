/** Make sure a BPF filesystem is mounted where pins go. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';

export function isBpffs(dir: string): boolean {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  return mounts.some((l) => {
    const [, mnt, type] = l.split(' ');
    return type === 'bpf' && mnt === dir;
  });
}

/** Mount bpffs at `root` (e.g. /sys/fs/bpf) when nothing is mounted there. */
export function ensureBpffs(root: string): void {
  if (isBpffs(root)) return;
  mkdirSync(root, { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', root]);
}

/** The bpffs mount a pin dir lives on: the longest bpf mount point above it. */
export function bpffsRootOf(pinDir: string): string | undefined {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'bpf')
    .map((f) => f[1] ?? '')
    .filter((m) => pinDir === m || pinDir.startsWith(m.endsWith('/') ? m : `${m}/`))
    .sort((a, b) => b.length - a.length);
  return mounts[0];
}
