/**
 * The local report shows what kube-proxy's iptables syncs cost (partial
 * syncs, cleanups, the hourly sync, idle CPU) when the results carry them, and
 * still renders results saved before they did.
 */
import t from 'tap';
import type { LocalResults, VariantRun } from '../bench/local.js';
import { renderLocal, targets } from '../bench/report.js';
import { FULL, unprogrammedRun } from '../bench/local.js';
import { summarize } from '../bench/stats.js';
import type { KubeProxyIptablesFigures, SyncRecord } from '../bench/kube-proxy-iptables.js';

const s = (x: number) => summarize([x]);
function run(variant: VariantRun['variant'], kubeProxy?: KubeProxyIptablesFigures): VariantRun {
  return {
    variant,
    services: 1000,
    programMs: variant === 'direct' ? 0 : 700,
    endpointChangeMs: variant === 'direct' ? null : { p50: 240, p99: 400, samples: [240, 400] },
    tcpGbps: s(17),
    tcpRetransmits: [0],
    tcpCpuSecPerGbit: s(0.08),
    udpGbps: s(2),
    udpLostPercent: [0],
    udpCpuSecPerGbit: s(0.5),
    crrRate: s(10000),
    crrP50us: s(150),
    crrP99us: s(400),
    crrErrors: [0],
    generatorCpu: [0.5],
    generatorSaturated: false,
    errors: [],
    ...(kubeProxy ? { kubeProxy } : {}),
  };
}
const sync = (at: number, kind: SyncRecord['kind'], cleanup: boolean, wallMs: number, cpuMs: number): SyncRecord => ({
  at,
  kind,
  cleanup,
  ensureJumps: kind === 'full',
  largeClusterMode: true,
  changed: 1,
  restoreBytes: 1000,
  deletedChains: 0,
  wallMs,
  cpuMs,
});

function results(kubeProxy?: KubeProxyIptablesFigures): LocalResults {
  return {
    kind: 'bpfproxy-bench-local',
    environment: {
      date: '2026-11-23T00:00:00Z',
      kernel: '6.1',
      cpuModel: 'test',
      cpus: 2,
      memoryGiB: 8,
      node: 'v22',
      iperf3: 'iperf 3',
      iptables: 'iptables v1.8.9 (nf_tables)',
      nft: 'nftables',
      clang: 'clang',
      virtualized: 'none',
    },
    options: { ...FULL, services: [1000], variants: ['direct', 'iptables'] },
    runs: [run('direct'), run('iptables', kubeProxy)],
    packetNs: [],
    programming: null,
    agentRss: [],
  };
}

t.test('kube-proxy iptables sync costs in the report', async (t) => {
  const kp: KubeProxyIptablesFigures = {
    largeClusterMode: true,
    totalEndpoints: 1002,
    syncs: [
      sync(0, 'full', true, 700, 650),
      sync(10_000, 'partial', false, 240, 200),
      sync(20_000, 'partial', false, 250, 220),
      sync(40_000, 'partial', true, 400, 380),
    ],
    periodicSync: sync(3_640_000, 'partial', true, 380, 360),
    canary: { wallMs: 5, cpuMs: 2, everyMs: 30_000 },
    idleCpuSecPerSec: (360 + 120 * 2) / 1000 / 3600,
  };
  const md = renderLocal(results(kp))['report.md']!;
  t.match(md, /## kube-proxy iptables: what its syncs cost/);
  t.match(md, /Endpoint changes arrive every 10 s of virtual time/);
  t.match(
    md,
    /\| 1000 \| 1002 \| yes \| 700\.0 \| 240 \/ 400 \| 267 \| 1 of 3 \| partial \| 380\.0 \(360\) \| 5\.0 \| 600 \|/,
    'one row: first sync, changes, cleanups, hourly sync, idle CPU ms per hour',
  );
  t.match(md, /an endpoint change is a partial sync \(MinimizeIPTablesRestore/);
  t.notMatch(md, /full `iptables-restore` of the ruleset/, 'the old method note is gone');
  t.ok(
    targets(results(kp)).some((x) => /vs kube-proxy iptables/.test(x.target)),
    'targets still compare with kube-proxy iptables',
  );
});

t.test('results saved before kube-proxy figures still render', async (t) => {
  const old = results();
  delete old.options.iptablesTimeoutS;
  const md = renderLocal(old)['report.md']!;
  t.notMatch(md, /## kube-proxy iptables/);
  t.notMatch(md, /is killed after/, 'no limit claimed for results saved before there was one');
  t.match(md, /## 1000 services/);
});

t.test('a variant whose programming did not finish is reported as such, also from saved results', async (t) => {
  const r = results();
  r.runs[1] = unprogrammedRun('iptables', 1000, ['first (full) sync of 1002 service ports (iptables-restore) did not finish in 600 s']);
  // as `bench report results.json` reads it back: NaN and Infinity saved as null
  const saved = JSON.parse(JSON.stringify(r)) as LocalResults;
  for (const x of [r, saved]) {
    const md = renderLocal(x)['report.md']!;
    t.match(md, /\| iptables \| – \|.*\| did not finish in 600 s \| – \| – \|/, 'the row says it did not finish, no figures');
    t.match(
      md,
      /iptables: first \(full\) sync of 1002 service ports \(iptables-restore\) did not finish in 600 s/,
      'the note says which step',
    );
    t.notMatch(md, /NaN|Infinity|null/, 'no NaN, Infinity or null in the report');
    t.match(md, /Any one iptables command is killed after 600 s and reported as not finished/, 'the method notes give the limit');
    t.match(md, /reports before 2026-11-23 timed a flushing restore instead/, 'and say older program ms do not compare');
    t.ok(
      targets(x)
        .filter((y) => /vs kube-proxy iptables/.test(y.target))
        .every((y) => y.met === null && y.value === 'n/a'),
      'targets against iptables are n/a, not met or missed',
    );
  }
});
