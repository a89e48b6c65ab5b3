/**
 * The measured process of `bpfproxy-bench memory` (see memory.ts):
 * `node --expose-gc memory-child.js <manifests|kubernetes> <dir|kubeconfig> <services> [heap snapshot]`.
 * Loads the source into a proxier's store, computes every service's
 * desired frontends, and prints its figures as one JSON line.
 */
import { readFileSync } from 'node:fs';
import { writeHeapSnapshot } from 'node:v8';
import { silentLogger } from '../src/log.js';
import { realClock } from '../src/clock.js';
import { Proxier } from '../src/proxy/proxier.js';
import { serviceSink } from '../src/sources/sink.js';
import type { MemoryFigures, MemorySource } from './memory.js';

const [source, arg, expect, snapshot] = process.argv.slice(2) as [MemorySource, string, string, string | undefined];
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const MiB = (b: number) => +(b / 2 ** 20).toFixed(1);
function settle(): NodeJS.MemoryUsage {
  for (let i = 0; i < 3; i++) gc!();
  return process.memoryUsage();
}
const peak = () => MiB(Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024);

const proxier = new Proxier(undefined, { nodeName: 'bench', minSyncPeriod: 0, syncPeriod: 3_600_000, clock: realClock, log: silentLogger });
const sink = serviceSink(proxier.store);
let load: () => Promise<{ stop(): void }>;
if (source === 'manifests') {
  const { ManifestSource } = await import('../src/sources/manifests.js');
  load = () => {
    const src = new ManifestSource(arg, sink, silentLogger, realClock, { pollMs: 3_600_000 });
    src.start();
    return Promise.resolve(src);
  };
} else {
  const { apiConnection, kubeClients } = await import('../src/k8s/client.js');
  const { KubeSource } = await import('../src/sources/kubernetes.js');
  load = async () => {
    const src = new KubeSource(kubeClients(await apiConnection(arg)), sink, silentLogger, realClock);
    src.start();
    await src.servicesSynced();
    return src;
  };
}
const before = settle();
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const src = await load();
let endpoints = 0;
for (const key of proxier.store.serviceKeys()) {
  for (const f of proxier.store.desiredOf(key, { nodeName: 'bench', nodeAddresses: new Set(), allowNodeAddressExternalIPs: false })
    .frontends)
    endpoints += f.clusterBackends.length;
}
const loadMs = Math.round(performance.now() - t0);
const cpu = process.cpuUsage(cpu0);
const loadCpuMs = Math.round((cpu.user + cpu.system) / 1000);
if (proxier.store.size.services !== Number(expect))
  throw new Error(`${source}: the store holds ${proxier.store.size.services} services, not ${expect}`);
const loaded = settle();
if (snapshot) writeHeapSnapshot(snapshot);
const out: MemoryFigures = {
  source,
  services: proxier.store.size.services,
  endpoints,
  before: { rssMiB: MiB(before.rss), heapMiB: MiB(before.heapUsed) },
  loaded: { rssMiB: MiB(loaded.rss), heapMiB: MiB(loaded.heapUsed), externalMiB: MiB(loaded.external) },
  peakRssMiB: peak(),
  loadMs,
  loadCpuMs,
};
src.stop();
proxier.stop();
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
