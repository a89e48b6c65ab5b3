/**
 * `bpfproxy-lab up --api` / `down`: the namespace lab with a Kubernetes API
 * server, kube-proxy on every node, and whatever DaemonSets you apply run
 * as processes on the nodes (lab/apiserver.ts runs all of it in the
 * background; its state is in /run/bpfproxy-lab/<prefix>).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAB_DIR, labDown, labSpec, labUp, type Lab } from './lab.js';
import { labStateDir, statePaths } from './state.js';

export interface LabApi {
  prefix: string;
  lab: Lab;
  stateDir: string;
  /** for kubectl on this machine */
  kubeconfig: string;
  url: string;
  /** the control plane process */
  pid: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The last lines of a log, for an error message. */
function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Whether pid runs this lab's control plane (not a pid reused by something else, not a zombie). */
function isControlPlane(pid: number, prefix: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.some((a) => a.endsWith('apiserver.js')) && argv[argv.indexOf('--prefix') + 1] === prefix;
  } catch {
    return false;
  }
}

/** The lab with an API server, if one is up for this prefix. */
export function labApiStatus(prefix = 'bpxlab'): LabApi | undefined {
  const p = statePaths(labStateDir(prefix));
  if (!existsSync(p.ready)) return undefined;
  const r = JSON.parse(readFileSync(p.ready, 'utf8')) as { pid: number; url: string; kubeconfig: string };
  if (!isControlPlane(r.pid, prefix)) return undefined;
  return { prefix, lab: labSpec(prefix), stateDir: p.dir, kubeconfig: r.kubeconfig, url: r.url, pid: r.pid };
}

/**
 * Build the lab (nodes with a default route, as real nodes have, and no ICMP
 * redirects: see labUp) and
 * start its control plane; resolves once kube-proxy serves on every node.
 * Whatever was left of a lab with this prefix goes first. On failure
 * everything is removed and the error carries the control plane's log.
 */
export async function labApiUp(
  prefix = 'bpxlab',
  opts: {
    kubeProxyCleanupOnStop?: boolean;
    /** false: a cluster without Calico (no FelixConfiguration CRD or default) */
    felix?: boolean;
    timeoutMs?: number;
  } = {},
): Promise<LabApi> {
  await labApiDown(prefix);
  const lab = labSpec(prefix);
  const p = statePaths(labStateDir(prefix));
  labUp(lab, { gateway: true, icmpRedirects: false });
  try {
    mkdirSync(p.dir, { recursive: true, mode: 0o700 });
    const out = openSync(p.log, 'a');
    const child = spawn(
      process.execPath,
      [
        join(LAB_DIR, 'apiserver.js'),
        '--prefix',
        prefix,
        '--state-dir',
        p.dir,
        ...(opts.kubeProxyCleanupOnStop ? ['--kube-proxy-cleanup-on-stop'] : []),
        ...(opts.felix === false ? ['--no-felix'] : []),
      ],
      { detached: true, stdio: ['ignore', out, out] },
    );
    closeSync(out);
    writeFileSync(p.pid, `${child.pid}\n`);
    let exited: number | null | undefined;
    child.on('exit', (code) => (exited = code));
    child.unref();
    const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
    while (!existsSync(p.ready)) {
      if (exited !== undefined || existsSync(p.failed))
        throw new Error(`the lab's control plane stopped (exit ${String(exited)}); its log (${p.log}):\n${tail(p.log)}`);
      if (Date.now() > deadline)
        throw new Error(`the lab's control plane was not ready in ${opts.timeoutMs ?? 90_000} ms; its log (${p.log}):\n${tail(p.log)}`);
      await sleep(100);
    }
    const api = labApiStatus(prefix);
    if (!api) throw new Error(`the lab's control plane wrote ${p.ready} but is not running; its log:\n${tail(p.log)}`);
    return api;
  } catch (e) {
    await labApiDown(prefix);
    throw e;
  }
}

/**
 * Stop the control plane (SIGTERM: it stops the Pods' processes — agents
 * leave their dataplane, kube-proxy its rules — then itself; SIGKILL after
 * 45 s), remove the namespaces, pins and the state dir. Never throws.
 */
export async function labApiDown(prefix = 'bpxlab'): Promise<{ namespaces: string[]; controlPlane: boolean }> {
  const p = statePaths(labStateDir(prefix));
  let controlPlane = false;
  let pid: number | undefined;
  try {
    pid = Number.parseInt(readFileSync(p.pid, 'utf8'), 10);
  } catch {
    pid = undefined;
  }
  if (pid && isControlPlane(pid, prefix)) {
    controlPlane = true;
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 45_000;
    while (isControlPlane(pid, prefix) && Date.now() < deadline) await sleep(100);
    if (isControlPlane(pid, prefix)) process.kill(pid, 'SIGKILL');
  }
  const namespaces = labDown(prefix);
  rmSync(p.dir, { recursive: true, force: true });
  return { namespaces, controlPlane };
}
