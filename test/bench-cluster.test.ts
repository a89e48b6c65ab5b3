/**
 * bench cluster's orchestration against the in-process API server, which
 * plays the kubelet: pods get phases, iperf3 clients print canned JSON, the
 * monitors print /proc/stat samples. What needs a real cluster is the
 * traffic itself (README: "Benchmarks on a real cluster").
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterBench, parseMonitor, parseOnlyTests, renderCluster, windowFigures, type ClusterResults } from '../src/bench/cluster.js';
import { compareClusters } from '../src/bench/compare.js';
import { loadKubeConfig } from '../src/k8s/client.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';

/** /proc/stat lines: each second 50 user, 10 system, 40 idle jiffies; 6 GiB of 8 used. */
function monitorLog(from: number, to: number): string {
  const out: string[] = [];
  for (let s = from, i = 0; s <= to; s++, i++) {
    out.push(`T ${s}`, `cpu  ${1000 + 50 * i} 0 ${500 + 10 * i} ${9000 + 40 * i} 0 0 0 0 0 0`, 'MemTotal:       8388608 kB', 'MemAvailable:   2097152 kB');
  }
  return `${out.join('\n')}\n`;
}

function iperfJson(bps: number, udp: boolean): string {
  return JSON.stringify({ start: {}, end: udp
    ? { sum: { bits_per_second: bps, lost_percent: 1.5 }, sum_received: { bits_per_second: bps } }
    : { sum_sent: { bits_per_second: bps, retransmits: 7 }, sum_received: { bits_per_second: bps } } });
}

t.test('orchestration: pods pinned, knb keys, windows, cleanup', async (t) => {
  const api = new FakeApiServer();
  const url = await api.listen();
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bc-'));
  t.teardown(async () => { await api.close(); rmSync(dir, { recursive: true, force: true }); });
  writeKubeconfig(join(dir, 'kubeconfig'), url);
  const created: Array<{ name: string; node: string; command: string[] }> = [];
  const now = () => Math.floor(Date.now() / 1000);
  api.kubelet = (pod, set) => {
    const spec = pod.spec as { nodeName: string; containers: Array<{ command: string[] }> };
    const command = spec.containers[0]!.command;
    created.push({ name: pod.metadata.name, node: spec.nodeName, command });
    if (pod.metadata.name.startsWith('monitor')) set({ phase: 'Running' }, monitorLog(now() - 2, now() + 120));
    else if (pod.metadata.name === 'server') setTimeout(() => set({ phase: 'Running', podIP: '10.244.2.5' }), 30);
    else {
      const udp = command.includes('-u');
      const target = command[command.indexOf('-c') + 1];
      const bps = (target === '10.244.2.5' ? 9.4e9 : 9.1e9) / (udp ? 4 : 1);
      const start = new Date();
      setTimeout(() => set({
        phase: 'Succeeded',
        containerStatuses: [{ name: 'main', state: { terminated: { exitCode: 0, startedAt: start.toISOString(), finishedAt: new Date(start.getTime() + 3000).toISOString() } } }],
      }, iperfJson(bps, udp)), 50);
    }
  };
  const bench = new ClusterBench(loadKubeConfig(join(dir, 'kubeconfig')), {
    clientNode: 'node-a', serverNode: 'node-b', duration: 1, tests: parseOnlyTests('idle,p2p,p2s'), socketBufferSize: '256K',
    namespace: 'knb', image: 'networkstatic/iperf3', podTimeout: 10, keep: false, pollMs: 20,
  });
  const r = await bench.run();
  t.same(Object.keys(r.data).sort(), ['idle', 'pod2pod', 'pod2svc']);
  t.same(Object.keys(r.data.pod2pod!).sort(), ['tcp', 'udp']);
  t.equal(r.data.pod2pod!.tcp!.bandwidth, 9400, 'Mbit/s from the receiver line');
  t.equal(r.data.pod2svc!.tcp!.bandwidth, 9100, 'pod-to-service went to the service IP');
  t.equal(r.data.pod2pod!.tcp!.retransmits, 7);
  t.equal(r.data.pod2svc!.udp!.lostPercent, 1.5);
  t.match(r.data.pod2pod!.tcp!.client, { cpu: { user: 50, system: 10, iowait: 0, total: 60 }, ram: 6144 }, 'CPU and RAM over the test window');
  t.match(r.data.idle!.server, { cpu: { total: 60 } });
  t.ok(created.filter((c) => c.name.startsWith('client')).every((c) => c.node === 'node-a'), 'clients pinned to the client node');
  t.equal(created.find((c) => c.name === 'server')!.node, 'node-b', 'server pinned to the server node');
  const udp = created.find((c) => c.name === 'client-pod2pod-udp')!.command;
  t.same(udp.slice(udp.indexOf('-u')), ['-u', '-b', '0', '-w', '256K'], 'UDP as knb runs it, with -sbs');
  t.equal(api.pods.size, 0, 'pods deleted');
  t.notOk(api.namespaces.has('knb'), 'namespace deleted');
  t.match(renderCluster(r, 'text'), /pod2svc TCP\s+9100 Mbit\/s/);
  t.match(renderCluster(r, 'yaml'), /pod2pod:\n\s+tcp:\n\s+bandwidth: 9400/);

  t.test('compare two runs side by side', async (t) => {
    const b: ClusterResults = JSON.parse(JSON.stringify(r));
    b.data.pod2svc!.tcp!.bandwidth = 9300;
    const files = compareClusters(r, b, ['kube-proxy', 'bpfproxy']);
    t.same(Object.keys(files).sort(), ['bandwidth.svg', 'client-cpu.svg', 'compare.md', 'server-cpu.svg']);
    t.match(files['compare.md']!, /\| pod2svc TCP \| 9100 \| 9300 \| 1\.022 \|/);
    t.match(files['bandwidth.svg']!, /^<svg/);
  });
});

t.test('knb words for -ot, and window arithmetic', async (t) => {
  t.same(parseOnlyTests('tcp'), ['pod2pod.tcp', 'pod2svc.tcp']);
  t.same(parseOnlyTests('idle,p2s_udp'), ['idle', 'pod2svc.udp']);
  t.throws(() => parseOnlyTests('p3p'), /unknown test "p3p"/);
  const s = parseMonitor(monitorLog(100, 110));
  t.equal(s.length, 11);
  t.match(windowFigures(s, 102, 105), { cpu: { user: 50, system: 10, total: 60 }, ram: 6144 });
  t.match(windowFigures(s, 200, 300), { cpu: { total: 0 } }, 'no samples in the window: zeros, not NaN');
});
