/**
 * Socket-LB tests' helpers (test/socklb*.test.ts): a cgroup of the test's
 * own under /sys/fs/cgroup/unified (never the machine's root cgroup) and
 * the socket client (test/fixtures/sock-client.py) run in it, inside a
 * network namespace. Every client call has a timeout.
 */
import type { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { nsPath, uniqueTag } from '../../testkit/netns.js';
import { REPO } from './env.js';

const CLIENT = join(REPO, 'test', 'fixtures', 'sock-client.py');
const CG_PARENT = '/sys/fs/cgroup/unified';

/** A cgroup of this test under the cgroup2 mount; its processes are killed and it is removed when the test ends. */
export function tmpCgroup(t: Test): string {
  if (!existsSync(join(CG_PARENT, 'cgroup.procs'))) throw new Error(`${CG_PARENT} is not a cgroup2 mount`);
  const cg = join(CG_PARENT, `bpxt-sock-${uniqueTag()}`);
  mkdirSync(cg);
  t.teardown(async () => {
    for (let i = 0; i < 50; i++) {
      const pids = readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
      for (const p of pids) {
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      try {
        rmdirSync(cg);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`could not remove the test cgroup ${cg}`);
  });
  return cg;
}

const wrap = (cg: string | undefined, ns: string) =>
  // the shell joins the cgroup, then becomes the client in the namespace
  cg ? `echo $$ > ${cg}/cgroup.procs && exec nsenter --net=${nsPath(ns)} python3 "$@"` : `exec nsenter --net=${nsPath(ns)} python3 "$@"`;

/** Run the client (in cgroup cg, or in none of ours when undefined) in ns; its JSON output. */
export function client<T = unknown>(cg: string | undefined, ns: string, ...args: Array<string | number>): T {
  const r = spawnSync('sh', ['-c', wrap(cg, ns), 'sh', CLIENT, ...args.map(String)], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`client ${args.join(' ')} in ${ns}: exit ${r.status}: ${r.stderr || r.error?.message}`);
  return JSON.parse(r.stdout) as T;
}

export function clientAsync<T = unknown>(cg: string, ns: string, ...args: Array<string | number>): Promise<T> {
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', wrap(cg, ns), 'sh', CLIENT, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as T);
      else reject(new Error(`client ${args.join(' ')}: exit ${code}: ${err}`));
    });
  });
}

export interface TcpResult {
  peer?: string;
  reply?: { pod: string; peer: string };
  errno?: number;
}
export interface UdpResult {
  from?: string;
  reply?: { pod: string; peer: string };
  errno?: number;
}
export interface CudpResult {
  peer: string;
  replies: Array<{ pod?: string; errno?: number }>;
}
