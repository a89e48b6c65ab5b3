/**
 * Real kubectl against a test or lab API server: a kubeconfig pointing at
 * it, a private HOME (kubectl's discovery and OpenAPI caches live in
 * ~/.kube/cache), a time limit on every run; and whether the kubectl on
 * this machine can drive our server at all.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeKubeconfig } from '../testkit/fake-apiserver.js';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Oldest kubectl that reads the server's aggregated discovery (v2) and validates with its OpenAPI v3. */
export const KUBECTL_MIN_MINOR = 27;

/** Why kubectl cannot be used here, or undefined when it can. */
export function kubectlMissing(bin = process.env.KUBECTL ?? 'kubectl'): string | undefined {
  let out: string;
  try {
    out = execFileSync(bin, ['version', '--client', '-o', 'json'], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    return `no kubectl on PATH (${bin}): install kubectl 1.${KUBECTL_MIN_MINOR}+ (scripts/install-deps.sh does)`;
  }
  let v: { major?: string; minor?: string; gitVersion?: string } | undefined;
  try {
    v = (JSON.parse(out) as { clientVersion?: typeof v }).clientVersion;
  } catch {
    return `${bin} version --client -o json printed no JSON: is ${bin} kubectl?`;
  }
  const minor = Number.parseInt(v?.minor ?? '0', 10);
  if (v?.major !== '1' || minor < KUBECTL_MIN_MINOR)
    return `kubectl ${v?.gitVersion ?? '?'} is older than 1.${KUBECTL_MIN_MINOR}: it does not read aggregated discovery or OpenAPI v3`;
  return undefined;
}

export class Kubectl {
  readonly home = mkdtempSync(join(tmpdir(), 'bpfproxy-kubectl-'));
  readonly kubeconfig: string;
  readonly bin = process.env.KUBECTL ?? 'kubectl';
  private readonly children = new Set<ChildProcess>();

  /** @param target the server's URL (a kubeconfig is written for it), or an existing kubeconfig */
  constructor(target: string | { kubeconfig: string }) {
    if (typeof target === 'string') {
      this.kubeconfig = join(this.home, 'kubeconfig');
      writeKubeconfig(this.kubeconfig, target);
    } else this.kubeconfig = target.kubeconfig;
  }

  /** The environment kubectl runs in: PATH, a private HOME, the kubeconfig. */
  env(): NodeJS.ProcessEnv {
    return { PATH: process.env.PATH, HOME: this.home, KUBECONFIG: this.kubeconfig, LANG: 'C' };
  }

  private spawnRun(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string }): Promise<Run> {
    return new Promise((resolve) => {
      const child = spawn(cmd, args, { env: this.env(), cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
      this.children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.on('error', (e) => (stderr += `${cmd}: ${e.message}\n`));
      child.on('close', (code) => {
        clearTimeout(timer);
        this.children.delete(child);
        resolve({ code, stdout, stderr });
      });
      child.stdin.end(opts.input ?? '');
    });
  }

  /** Runs kubectl to completion (killed after `timeoutMs`). */
  run(args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<Run> {
    return this.spawnRun(this.bin, args, opts);
  }

  /** Runs a shell command line (a README's, with its pipes and $(...)) with kubectl's environment. */
  shell(line: string, opts: { timeoutMs?: number; cwd?: string } = {}): Promise<Run> {
    return this.spawnRun('bash', ['-o', 'pipefail', '-c', line], opts);
  }

  /** Runs kubectl and fails with its stderr unless it exits 0. */
  async ok(args: string[], opts: { input?: string; timeoutMs?: number; cwd?: string } = {}): Promise<string> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${String(r.code)}: ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async json<T = Record<string, any>>(args: string[]): Promise<T> {
    return JSON.parse(await this.ok([...args, '-o', 'json'])) as T;
  }

  /** A long-running kubectl (get -w): its output so far, and a way to stop it. */
  stream(args: string[]): { output: () => string; stop: () => Promise<Run> } {
    const child = spawn(this.bin, args, { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<Run>((resolve) =>
      child.on('close', (code) => {
        this.children.delete(child);
        resolve({ code, stdout, stderr });
      }),
    );
    return {
      output: () => stdout,
      stop: () => {
        child.kill('SIGTERM');
        return done;
      },
    };
  }

  cleanup(): void {
    for (const c of this.children) c.kill('SIGKILL');
    rmSync(this.home, { recursive: true, force: true });
  }
}
