/**
 * Network namespaces and links for the lab and the tests, through iproute2.
 * Only ever touches namespaces it is given; never the caller's own links.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';

export const nsPath = (name: string): string => `/run/netns/${name}`;

export function sh(cmd: string, args: readonly string[], opts: { ns?: string; allowFail?: boolean } = {}): string {
  const full = opts.ns ? ['nsenter', `--net=${nsPath(opts.ns)}`, '--', cmd, ...args] : [cmd, ...args];
  const r = spawnSync(full[0]!, full.slice(1), { encoding: 'utf8' });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${full.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout || '').trim()}`);
  }
  return r.stdout ?? '';
}

/** `ip ...` inside a namespace (or in the current one). */
export function ip(ns: string | undefined, ...args: string[]): string {
  return sh('ip', args, ns ? { ns } : {});
}

export function sysctl(ns: string, key: string, value: string): void {
  sh('sysctl', ['-qw', `${key}=${value}`], { ns });
}

/** A short random tag for names that must not collide. */
export function uniqueTag(len = 6): string {
  return randomBytes(8).toString('hex').slice(0, len);
}

export function netnsExists(name: string): boolean {
  return existsSync(nsPath(name));
}

export function addNetns(name: string): void {
  execFileSync('ip', ['netns', 'add', name]);
  ip(name, 'link', 'set', 'lo', 'up');
}

/** Kill what runs in the namespace, then delete it. Never throws. */
export function delNetns(name: string): void {
  if (!netnsExists(name)) return;
  const pids = sh('ip', ['netns', 'pids', name], { allowFail: true }).split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  sh('ip', ['netns', 'del', name], { allowFail: true });
}

export function listNetns(prefix: string): string[] {
  return sh('ip', ['netns', 'list'], { allowFail: true })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}
