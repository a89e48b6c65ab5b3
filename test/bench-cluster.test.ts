/**
 * bench cluster's orchestration against the in-process API server, which
 * plays the kubelet: pods get phases, iperf3 clients print canned JSON, the
 * monitors print /proc/stat samples. What needs a real cluster is the
 * traffic itself (README: "Benchmarks on a real cluster").
 */
import t from 'tap';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ClusterBench,
  KNB_FORMAT,
  parseFacts,
  parseMonitor,
  parseOnlyTests,
  renderCluster,
  windowFigures,
  type ClusterResults,
} from '../bench/cluster.js';
import { compareClusters, loadClusterResults, parseClusterResults } from '../bench/compare.js';
import { loadKubeConfig } from '../bench/kubeconfig.js';
import { FakeApiServer, writeKubeconfig } from './helpers/fake-apiserver.js';
import { REPO } from './helpers/env.js';

/**
 * knb 1.5.0's `-o json` output, written from its compute-json-result (the
 * keys, nesting, number formats and date format knb prints); the figures are
 * illustrative.
 */
const KNB_FIXTURE = join(REPO, 'test', 'fixtures', 'knb-1.5.0.json');

/** The fake API server behind a proxy that also answers /version (the fake has no /version). */
async function withVersion(target: string, gitVersion: string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    if (req.url === '/version') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          major: '1',
          minor: '33',
          gitVersion,
          gitCommit: '',
          gitTreeState: 'clean',
          buildDate: '',
          goVersion: '',
          compiler: 'gc',
          platform: 'linux/amd64',
        }),
      );
      return;
    }
    const up = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** /proc/stat lines: each second 50 user, 10 system, 40 idle jiffies; 6 GiB of 8 used. */
function monitorLog(from: number, to: number): string {
  const out: string[] = [];
  for (let s = from, i = 0; s <= to; s++, i++) {
    out.push(
      `T ${s}`,
      `cpu  ${1000 + 50 * i} 0 ${500 + 10 * i} ${9000 + 40 * i} 0 0 0 0 0 0`,
      'MemTotal:       8388608 kB',
      'MemAvailable:   2097152 kB',
    );
  }
  return `${out.join('\n')}\n`;
}

function iperfJson(bps: number, udp: boolean): string {
  return JSON.stringify({
    start: {},
    end: udp
      ? { sum: { bits_per_second: bps, lost_percent: 1.5 }, sum_received: { bits_per_second: bps } }
      : { sum_sent: { bits_per_second: bps, retransmits: 7 }, sum_received: { bits_per_second: bps } },
  });
}

t.test('orchestration: pods pinned, knb keys, windows, cleanup', async (t) => {
  const api = new FakeApiServer();
  const proxy = await withVersion(await api.listen(), 'v1.33.2');
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-bc-'));
  t.teardown(async () => {
    proxy.server.closeAllConnections();
    await new Promise((r) => proxy.server.close(r));
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  writeKubeconfig(join(dir, 'kubeconfig'), proxy.url);
  const created: Array<{ name: string; node: string; command: string[] }> = [];
  const now = () => Math.floor(Date.now() / 1000);
  api.kubelet = (pod, set) => {
    const spec = pod.spec as { nodeName: string; containers: Array<{ command: string[] }> };
    const command = spec.containers[0]!.command;
    created.push({ name: pod.metadata.name, node: spec.nodeName, command });
    if (pod.metadata.name === 'monitor-server')
      set(
        { phase: 'Running' },
        `FACT cpu   AMD EPYC 7B13 64-Core Processor\nFACT kernel 6.8.0-1015-gcp\nFACT mtu 1460\n${monitorLog(now() - 2, now() + 120)}`,
      );
    else if (pod.metadata.name.startsWith('monitor')) set({ phase: 'Running' }, monitorLog(now() - 2, now() + 120));
    else if (pod.metadata.name === 'server') setTimeout(() => set({ phase: 'Running', podIP: '10.244.2.5' }), 30);
    else {
      const udp = command.includes('-u');
      const target = command[command.indexOf('-c') + 1];
      const bps = (target === '10.244.2.5' ? 9.4e9 : 9.1e9) / (udp ? 4 : 1);
      const start = new Date();
      setTimeout(
        () =>
          set(
            {
              phase: 'Succeeded',
              containerStatuses: [
                {
                  name: 'main',
                  state: {
                    terminated: { exitCode: 0, startedAt: start.toISOString(), finishedAt: new Date(start.getTime() + 3000).toISOString() },
                  },
                },
              ],
            },
            iperfJson(bps, udp),
          ),
        50,
      );
    }
  };
  const bench = new ClusterBench(loadKubeConfig(join(dir, 'kubeconfig')), {
    clientNode: 'node-a',
    serverNode: 'node-b',
    duration: 1,
    tests: parseOnlyTests('idle,p2p,p2s'),
    socketBufferSize: '256K',
    namespace: 'knb',
    image: 'networkstatic/iperf3',
    podTimeout: 10,
    keep: false,
    pollMs: 20,
    name: 'kube-proxy-run',
  });
  const r = await bench.run();
  t.match(
    r.metadata,
    {
      name: 'kube-proxy-run',
      generator: 'bpfproxy bench cluster',
      version: /^\d+\.\d+\.\d+/,
      knbCompatible: KNB_FORMAT,
      'server-node': 'node-b',
      'client-node': 'node-a',
      'socket-buffer-size': '256K',
    },
    "knb's metadata keys",
  );
  t.same(
    { cpu: r.data.cpu, kernel: r.data.kernel, k8s: r.data['k8s-version'], mtu: r.data.mtu },
    { cpu: 'AMD EPYC 7B13 64-Core Processor', kernel: '6.8.0-1015-gcp', k8s: 'v1.33.2', mtu: '1460' },
    "knb's data keys: from the server node's monitor and /version",
  );
  t.equal(r.data.idle!.bandwidth, 0, 'idle has bandwidth 0, as knb writes it');
  t.same(Object.keys(r.data).sort(), ['cpu', 'idle', 'k8s-version', 'kernel', 'mtu', 'pod2pod', 'pod2svc']);
  t.same(Object.keys(r.data.pod2pod!).sort(), ['tcp', 'udp']);
  t.equal(r.data.pod2pod!.tcp!.bandwidth, 9400, 'Mbit/s from the receiver line');
  t.equal(r.data.pod2svc!.tcp!.bandwidth, 9100, 'pod-to-service went to the service IP');
  t.equal(r.data.pod2pod!.tcp!.retransmits, 7);
  t.equal(r.data.pod2svc!.udp!.lostPercent, 1.5);
  t.match(
    r.data.pod2pod!.tcp!.client,
    { cpu: { user: 50, system: 10, iowait: 0, total: 60 }, ram: 6144 },
    'CPU and RAM over the test window',
  );
  t.match(r.data.idle!.server, { cpu: { total: 60 } });
  t.ok(
    created.filter((c) => c.name.startsWith('client')).every((c) => c.node === 'node-a'),
    'clients pinned to the client node',
  );
  t.equal(created.find((c) => c.name === 'server')!.node, 'node-b', 'server pinned to the server node');
  const udp = created.find((c) => c.name === 'client-pod2pod-udp')!.command;
  t.same(udp.slice(udp.indexOf('-u')), ['-u', '-b', '0', '-w', '256K'], 'UDP as knb runs it, with -sbs');
  t.equal(api.pods.size, 0, 'pods deleted');
  t.notOk(api.namespaces.has('knb'), 'namespace deleted');
  t.match(renderCluster(r, 'text'), /pod2svc TCP\s+9100 Mbit\/s/);
  t.match(renderCluster(r, 'text'), /Kubernetes v1\.33\.2; MTU 1460/);
  t.match(renderCluster(r, 'yaml'), /pod2pod:\n\s+tcp:\n\s+bandwidth: 9400/);

  t.test('compare two runs side by side', async (t) => {
    const b: ClusterResults = JSON.parse(JSON.stringify(r));
    b.data.pod2svc!.tcp!.bandwidth = 9300;
    const files = compareClusters(r, b, ['kube-proxy', 'bpfproxy']);
    t.same(Object.keys(files).sort(), ['bandwidth.svg', 'client-cpu.svg', 'compare.md', 'server-cpu.svg']);
    t.match(files['compare.md']!, /\| pod2svc TCP \| 9100 \| 9300 \| 1\.022 \|/);
    t.match(files['bandwidth.svg']!, /^<svg/);
  });

  t.test("compare accepts knb's own -o json on either side", async (t) => {
    const knb = loadClusterResults(KNB_FIXTURE);
    t.match(knb.metadata, {
      name: 'knb-31337',
      generator: 'knb',
      version: '1.5.0',
      date: '2021-03-04 10:11:12',
      'client-node': 'aks-nodepool1-00000000',
    });
    t.same([knb.data['k8s-version'], knb.data.mtu, knb.data.kernel], ['v1.19.7', '1500', '5.4.0-1040-azure']);
    t.match(knb.data.pod2svc!.tcp, { bandwidth: 9320, client: { cpu: { total: 25.75, system: 23.87 }, ram: 1035 } });
    const ours = parseClusterResults(JSON.stringify(r), 'ours.json');
    t.same(ours, r, 'our own results read back unchanged');
    let md = compareClusters(knb, ours, ['aks-kube-proxy', 'ours'])['compare.md']!;
    t.match(md, /\| pod2svc TCP \| 9320 \| 9100 \| 0\.976 \| 25\.75 \|/, 'knb on the left');
    t.match(md, /aks-kube-proxy: knb-31337 \(knb 1\.5\.0\).*Kubernetes v1\.19\.7, kernel 5\.4\.0-1040-azure/);
    t.match(md, /differ in Kubernetes version, kernel, CPU or MTU/, 'different clusters are called out');
    md = compareClusters(ours, knb, ['ours', 'aks-kube-proxy'])['compare.md']!;
    t.match(md, /\| pod2pod TCP \| 9400 \| 9410 \| 1\.001 \|/, 'knb on the right');
    t.match(md, /\| idle \| – \| – \| – \| 60 \| 2\.87 \|/);
    md = compareClusters(knb, knb, ['a', 'b'])['compare.md']!;
    t.notMatch(md, /differ in/, 'same cluster facts: no warning');
  });
});

t.test('compare: results it cannot read are named, with what was wrong', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-cmp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // knb prints "bandwidth": , when a test produced no iperf3 receiver line
  const broken = join(dir, 'knb-broken.json');
  writeFileSync(broken, readFileSync(KNB_FIXTURE, 'utf8').replace('"bandwidth": 9320,', '"bandwidth": ,'));
  t.throws(() => loadClusterResults(broken), /knb-broken\.json: not JSON [\s\S]*knb writes "bandwidth": , when/);
  const noCpu = JSON.parse(readFileSync(KNB_FIXTURE, 'utf8')) as { data: { pod2pod: { tcp: { client: { cpu?: unknown } } } } };
  delete noCpu.data.pod2pod.tcp.client.cpu;
  t.throws(() => parseClusterResults(JSON.stringify(noCpu), 'x.json'), /x\.json: data\.pod2pod\.tcp\.client\.cpu: /);
  t.throws(() => loadClusterResults(join(dir, 'missing.json')), /missing\.json: cannot read/);
});

t.test('knb words for -ot, facts, and window arithmetic', async (t) => {
  t.same(parseOnlyTests('tcp'), ['pod2pod.tcp', 'pod2svc.tcp']);
  t.same(parseOnlyTests('all'), ['idle', 'pod2pod.tcp', 'pod2pod.udp', 'pod2svc.tcp', 'pod2svc.udp'], "knb's all");
  t.same(parseOnlyTests('p2ptcp,p2sudp'), ['pod2pod.tcp', 'pod2svc.udp'], "knb's p2ptcp, p2sudp");
  t.same(
    parseFacts('T 1\nFACT cpu  Intel(R)  Xeon(R)\nFACT kernel 6.1.0\nFACT mtu\n'),
    { cpu: 'Intel(R) Xeon(R)', kernel: '6.1.0', mtu: '' },
    "whitespace collapsed as knb's echo; missing values empty",
  );
  t.same(parseOnlyTests('idle,p2s_udp'), ['idle', 'pod2svc.udp']);
  t.throws(() => parseOnlyTests('p3p'), /unknown test "p3p"/);
  const s = parseMonitor(monitorLog(100, 110));
  t.equal(s.length, 11);
  t.match(windowFigures(s, 102, 105), { cpu: { user: 50, system: 10, total: 60 }, ram: 6144 });
  t.match(windowFigures(s, 200, 300), { cpu: { total: 0 } }, 'no samples in the window: zeros, not NaN');
});
