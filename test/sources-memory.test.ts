/**
 * What the sources keep, measured: a manifest's text is not kept alive by
 * the objects read from it, endpoints cost bytes rather than objects, and
 * the agent's start-up collection gives garbage back. (bpfproxy-bench
 * memory measures the same at 10,000 services.)
 */
import t from 'tap';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FakeClock } from '../testkit/fake-clock.js';
import { collectStartupGarbage } from '../src/agent/heap.js';
import { ServiceStore } from '../src/proxy/store.js';
import { ManifestSource } from '../src/sources/manifests.js';
import { serviceSink } from '../src/sources/sink.js';
import { captureLogger } from './helpers/log.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

/** Read the files into a store; the heap it grew by, once the code involved has run (and is compiled) already. */
function load(files: Record<string, string>) {
  warmUp(files);
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-mem-'));
  let bytes = 0;
  for (const [f, body] of Object.entries(files)) {
    writeFileSync(join(dir, f), body);
    bytes += statSync(join(dir, f)).size;
  }
  const store = new ServiceStore(() => undefined);
  const before = heap();
  const src = new ManifestSource(dir, serviceSink(store), captureLogger().log, new FakeClock());
  src.scan();
  const grew = heap() - before;
  rmSync(dir, { recursive: true, force: true });
  return { store, src, grew, bytes };
}

function warmUp(files: Record<string, string>): void {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-mem-warm-'));
  for (const [f, body] of Object.entries(files)) writeFileSync(join(dir, f), body.replaceAll('10.', '11.'));
  const src = new ManifestSource(dir, serviceSink(new ServiceStore(() => undefined)), captureLogger().log, new FakeClock());
  src.scan();
  src.stop();
  rmSync(dir, { recursive: true, force: true });
}

t.test("a manifest's objects do not keep its text alive", async (t) => {
  // 400 Services with long names (YAML values are slices of the text) and
  // 4 KB of annotations each, which no domain object keeps.
  const doc = (i: number) => `apiVersion: v1
kind: Service
metadata:
  name: a-service-with-a-long-name-${i}
  namespace: a-long-namespace-name
  annotations: { note: "${'x'.repeat(4096)}" }
spec:
  clusterIP: 10.96.${i >> 8}.${i & 255}
  ports: [{ name: http-port-name, port: 80 }]
`;
  const { store, src, grew, bytes } = load({ 'big.yaml': Array.from({ length: 400 }, (_, i) => doc(i)).join('---\n') });
  t.equal(store.size.services, 400);
  t.ok(bytes > 1_600_000, `the file is ${bytes} bytes`);
  t.ok(grew < bytes / 2, `holding its 400 Services costs ${grew} bytes of heap, under half the file's ${bytes}`);
  src.stop();
});

t.test('endpoints cost bytes, not objects', async (t) => {
  const slices = 200;
  const perSlice = 50;
  const doc = (i: number) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: s${i}-1, namespace: ns, labels: { kubernetes.io/service-name: s${i} } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
${Array.from({ length: perSlice }, (_, k) => `  - { addresses: [10.${100 + (i >> 8)}.${i & 255}.${k + 1}], nodeName: node-${k % 5} }`).join('\n')}
`;
  const { store, src, grew } = load({ 'slices.yaml': Array.from({ length: slices }, (_, i) => doc(i)).join('---\n') });
  t.equal(store.size.slices, slices);
  const perEndpoint = grew / (slices * perSlice);
  // As objects (an object, an address array and an address string each) they took ~150 bytes apiece.
  t.ok(perEndpoint < 60, `${perEndpoint.toFixed(1)} bytes of heap an endpoint, the slices' and the source's own bookkeeping included`);
  src.stop();
});

t.test('the start-up collection gives garbage back, and says so', async (t) => {
  const { log, lines } = captureLogger();
  const held = ((): number => {
    const junk = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `garbage-${i}` }));
    return process.memoryUsage().heapUsed + junk.length * 0;
  })();
  collectStartupGarbage(log);
  const after = process.memoryUsage().heapUsed;
  t.ok(after < held - 10 * 2 ** 20, `heap ${Math.round(held / 2 ** 20)} MiB -> ${Math.round(after / 2 ** 20)} MiB`);
  t.match(lines, [{ level: 'debug', msg: 'collected the start-up garbage' }]);
});
