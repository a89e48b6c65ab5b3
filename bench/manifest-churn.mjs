#!/usr/bin/env node
/**
 * Cost of manifest churn: 3,000 Services + 6,000 EndpointSlices in 100
 * files, then one random file rewritten (one EndpointSlice changed) about
 * 400 times over 20 s, with the ManifestSource polling and watching on the
 * real clock and a sink that only counts. Reports the CPU and peak RSS of
 * the process running the source; the writes come from a child process so
 * that their cost is not counted.
 *
 *   node bench/manifest-churn.mjs [dist-dir] [--files 100] [--services 3000] [--writes 400] [--seconds 20]
 *
 * dist-dir (default: this checkout's dist/) lets the same run measure
 * another build, e.g. the main branch's.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const positional = args.filter((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
const dist = resolve(positional[0] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'dist'));
const FILES = opt('files', 100);
const SERVICES = opt('services', 3000);
const WRITES = opt('writes', 400);
const SECONDS = opt('seconds', 20);

const WRITER = args.includes('--writer');
const { ManifestSource } = await import(pathToFileURL(join(dist, 'src/sources/manifests.js')).href);
const { realClock } = await import(pathToFileURL(join(dist, 'src/clock.js')).href);
const { silentLogger } = await import(pathToFileURL(join(dist, 'src/log.js')).href);

const svc = (i) => `apiVersion: v1
kind: Service
metadata: { name: svc-${i}, namespace: bench }
spec:
  clusterIP: 10.96.${(i >> 8) & 255}.${i & 255}
  selector: { app: svc-${i} }
  ports:
    - { name: http, port: 80, targetPort: 8080 }
`;
const slice = (i, k, gen) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: svc-${i}-${k}, namespace: bench, labels: { kubernetes.io/service-name: svc-${i} } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
  - { addresses: [10.${(i >> 8) & 255}.${i & 255}.${k * 2 + 1}], nodeName: node-a, conditions: { ready: true } }
  - { addresses: [10.${(i >> 8) & 255}.${i & 255}.${k * 2 + 2}], nodeName: node-b, conditions: { ready: ${gen % 2 === 0} } }
`;

const dir = WRITER ? args[args.indexOf('--writer') + 1] : mkdtempSync(join(tmpdir(), 'bpfproxy-churn-'));
const perFile = Math.ceil(SERVICES / FILES);
const gens = new Array(SERVICES).fill(0);
const fileText = (f) => {
  const docs = [];
  for (let i = f * perFile; i < Math.min(SERVICES, (f + 1) * perFile); i++) docs.push(svc(i), slice(i, 0, gens[i]), slice(i, 1, 0));
  return docs.join('---\n');
};
const path = (f) => join(dir, `svc-${String(f).padStart(3, '0')}.yaml`);
// Seeded, so every build sees the same sequence of writes.
let seed = 42;
const rand = (n) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;

if (WRITER) {
  const t1 = performance.now();
  const gap = (SECONDS * 1000) / WRITES;
  for (let w = 0; w < WRITES; w++) {
    const f = rand(FILES);
    const i = f * perFile + rand(perFile);
    gens[i]++;
    writeFileSync(path(f), fileText(f));
    const due = t1 + (w + 1) * gap;
    await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
  }
  process.exit(0);
}

for (let f = 0; f < FILES; f++) writeFileSync(path(f), fileText(f));

let applies = 0;
const count = () => {
  applies++;
  return [];
};
// apply: builds before the sources delivered domain objects; the others: since
const sink = {
  apply: count,
  applyService: count,
  applySlice: count,
  applyNode: count,
  applyFelixConfiguration: count,
  applyPod: count,
  applyNamespace: count,
  applyNetworkPolicy: count,
};
let peakRss = 0;
const sample = () => (peakRss = Math.max(peakRss, process.memoryUsage().rss));
const sampler = setInterval(sample, 20);

const c0 = process.cpuUsage();
const t0 = performance.now();
const src = new ManifestSource(dir, sink, silentLogger, realClock);
src.start();
const loadMs = performance.now() - t0;
const loadCpu = process.cpuUsage(c0);
const loaded = applies;
sample();
const rssLoaded = peakRss;

const c1 = process.cpuUsage();
const t1 = performance.now();
const writer = fork(fileURLToPath(import.meta.url), [...args.filter((a) => a !== dist && a !== positional[0]), '--writer', dir]);
await new Promise((r, j) => writer.on('exit', (code) => (code === 0 ? r() : j(new Error(`writer exited with ${code}`)))));
await new Promise((r) => setTimeout(r, 1000)); // the last writes applied
const churnMs = performance.now() - t1;
const churnCpu = process.cpuUsage(c1);
clearInterval(sampler);
sample();
src.stop();
rmSync(dir, { recursive: true, force: true });

const ms = (c) => ((c.user + c.system) / 1000).toFixed(0);
const mb = (b) => (b / 1048576).toFixed(0);
const result = {
  dist,
  objects: SERVICES * 3,
  files: FILES,
  load: { ms: Math.round(loadMs), cpuMs: Number(ms(loadCpu)), applies: loaded },
  churn: {
    writes: WRITES,
    ms: Math.round(churnMs),
    cpuMs: Number(ms(churnCpu)),
    applies: applies - loaded,
    ...(src.stats ? { stats: src.stats } : {}),
  },
  rssMiB: { afterLoad: Number(mb(rssLoaded)), peak: Number(mb(peakRss)), maxRssKernel: Number(mb(process.resourceUsage().maxRSS * 1024)) },
};
console.log(JSON.stringify(result));
