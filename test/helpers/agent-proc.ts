/** `bpfproxy agent` and other CLI commands as child processes inside a test namespace. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { nsPath } from '../../testkit/netns.js';
import { REPO } from './env.js';

export const CLI = join(REPO, 'dist', 'src', 'cli', 'main.js');

export interface AgentChild {
  child: ChildProcess;
  pid: number;
  logs: string[];
  exited: Promise<number | null>;
}

/** A temporary directory, removed when the test ends. */
export function tmpDir(t: Test, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Start the agent in ns and wait (bounded) for "agent ready"; killed when the test ends. */
export async function startAgentIn(t: Test, ns: string, args: string[], readyMs = 90_000): Promise<AgentChild> {
  // nsenter without --pid execs in place: the child's pid is the agent's.
  const child = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, CLI, 'agent', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let buf = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent not ready in ${readyMs} ms:\n${logs.slice(-20).join('\n')}`)), readyMs);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        if (line.includes('"agent ready"')) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => logs.push(d.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited (${code}) before ready:\n${logs.slice(-20).join('\n')}`));
    });
  });
  await ready;
  return { child, pid: child.pid!, logs, exited };
}

/** Run a CLI command in ns, bounded in time. */
export function cliIn(ns: string, args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, CLI, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Run a CLI command in ns without blocking this process (the agent's probes stay answerable meanwhile). */
export function cliInAsync(
  ns: string,
  args: string[],
  timeoutMs = 60_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn('nsenter', [`--net=${nsPath(ns)}`, '--', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
