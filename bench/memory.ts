/**
 * `bpfproxy-bench memory`: the agent's control plane alone (a source, the
 * service store, the desired state of every service) holding N services x
 * E endpoints, fed by manifests or by the in-process Kubernetes API. Each
 * source runs in a fresh Node process (memory-child.ts) so that one's
 * high-water mark does not count for the other; the API server runs here,
 * outside the measured process. No root, no BPF: quick to run while
 * working on memory. `bench local` measures the whole agent.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeApiServer, writeKubeconfig } from '../testkit/fake-apiserver.js';
import { agentObjects, writeManifestFiles } from './local.js';

export type MemorySource = 'manifests' | 'kubernetes';

/** What memory-child.ts prints, in MiB after a full GC. */
export interface MemoryFigures {
  source: MemorySource;
  services: number;
  endpoints: number;
  /** once the modules are loaded, before any object */
  before: { rssMiB: number; heapMiB: number };
  /** holding everything, desired state computed */
  loaded: { rssMiB: number; heapMiB: number; externalMiB: number };
  /** the high-water mark of the process (VmHWM) */
  peakRssMiB: number;
  loadMs: number;
  /** CPU time of the load (this process; the API server's is not counted) */
  loadCpuMs: number;
}

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'memory-child.js');

export async function measureMemory(
  source: MemorySource,
  n: number,
  e: number,
  opts: { heapSnapshot?: string } = {},
): Promise<MemoryFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-mem-'));
  const api = new FakeApiServer();
  try {
    const objs = agentObjects(n, e);
    let arg: string;
    if (source === 'manifests') {
      writeManifestFiles(dir, objs);
      arg = dir;
    } else {
      for (const o of objs) api.upsert(o.kind === 'Service' ? 'services' : 'endpointslices', o);
      writeKubeconfig(join(dir, 'kubeconfig'), await api.listen('127.0.0.1', 0));
      arg = join(dir, 'kubeconfig');
    }
    const expect = objs.filter((o) => o.kind === 'Service').length;
    const args = ['--expose-gc', CHILD, source, arg, String(expect), ...(opts.heapSnapshot ? [opts.heapSnapshot] : [])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    if (code !== 0) throw new Error(`bench memory: the ${source} process exited with ${code}: ${out.trim()}`);
    return JSON.parse(out) as MemoryFigures;
  } finally {
    await api.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
