/**
 * `bpfproxy-bench ipv6 --smoke`, end to end through the command: the
 * per-packet part (BPF_PROG_RUN) and the traffic part (bench/ipv6-traffic.ts:
 * connections/s and TCP throughput for one dual-stack service over IPv4 and
 * IPv6 in the namespace lab). Figures are not judged against the goal (the
 * machine may be loaded), only that every one was measured (> 0), that the
 * ratios are the medians' and that report.md names them; and that the lab
 * is gone afterwards. Bounded: the command is killed (SIGTERM: it removes
 * its lab) after 110 s; about 25 s on a loaded 2-core machine.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listNetns } from '../testkit/netns.js';
import type { Ipv6BenchResults } from '../bench/ipv6.js';
import { IPV6_TRAFFIC_SMOKE, ipv6TrafficTargets, renderIpv6Traffic, type Ipv6TrafficResults } from '../bench/ipv6-traffic.js';
import { summarize } from '../bench/stats.js';
import { REPO } from './helpers/env.js';

t.setTimeout(150_000);

t.test('bench ipv6 --smoke: per-packet ns, connections/s and throughput in both families, ratios in the report', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-ipv6-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const before = new Set(listNetns('bpxb6t'));
  const r = spawnSync(process.execPath, [join(REPO, 'dist', 'bench', 'cli.js'), 'ipv6', '--smoke', '--out', out], {
    encoding: 'utf8',
    timeout: 110_000,
  });
  t.equal(r.status, 0, `the command succeeded${r.status === 0 ? '' : `: ${r.stderr.slice(-2000)}`}`);
  if (r.status !== 0) return;
  t.same(
    listNetns('bpxb6t').filter((n) => !before.has(n)),
    [],
    "the traffic lab's namespaces are removed",
  );

  const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Ipv6BenchResults;
  t.ok(
    res.figures.length === 2 && res.figures.every((f) => f.ipv4Ns > 0 && f.ipv6Ns > 0 && f.ratio > 0),
    'per-packet ns measured in both families (established, new)',
  );
  const tr = res.traffic;
  t.ok(tr, 'traffic measured');
  if (!tr) return;
  t.same(tr.errors, [], 'no tool errors');
  t.same(
    tr.rows.map((x) => x.path),
    ['pod-clusterip', 'client-nodeport'],
    'pod -> ClusterIP and client -> NodePort',
  );
  for (const x of tr.rows)
    for (const f of ['ipv4', 'ipv6'] as const) {
      const y = x[f];
      t.equal(y.connPerSec.n, IPV6_TRAFFIC_SMOKE.rounds, `${x.path} ${f}: one conn/s figure per round`);
      t.ok(
        y.connPerSec.samples.every((v) => v > 0),
        `${x.path} ${f}: connections made every round (${y.connPerSec.samples.join(', ')} /s)`,
      );
      t.ok(
        y.tcpGbps.samples.length === IPV6_TRAFFIC_SMOKE.rounds && y.tcpGbps.samples.every((v) => v > 0),
        `${x.path} ${f}: TCP moved data every round (${y.tcpGbps.samples.join(', ')} Gbit/s)`,
      );
      t.equal(y.crrErrors, 0, `${x.path} ${f}: no failed connections`);
    }
  for (const x of tr.rows) {
    t.equal(x.ratios.connRate, +(x.ipv6.connPerSec.median / x.ipv4.connPerSec.median).toFixed(3), `${x.path}: conn/s ratio of the medians`);
    t.equal(x.cost.byte, +(x.ipv4.tcpGbps.median / x.ipv6.tcpGbps.median).toFixed(3), `${x.path}: cost per byte of the medians`);
  }
  t.ok(
    tr.conntrack.ipv4 > 0 && tr.conntrack.ipv6 > 0,
    `both families went through the datapath's conntrack (${JSON.stringify(tr.conntrack)})`,
  );
  t.equal(res.targets.length, 2 + 2 * tr.rows.length, 'targets: two per-packet, two per traffic path');

  const md = readFileSync(join(out, 'report.md'), 'utf8');
  t.match(md, /# IPv6 vs IPv4 per packet/, 'the per-packet part is kept');
  t.match(md, /## Traffic: connections\/s and TCP throughput, IPv6 vs IPv4/);
  t.match(md, /RequireDualStack/);
  for (const x of tr.rows) {
    t.ok(
      md.includes(`${x.ratios.connRate}x | ${x.cost.connection}x`),
      `${x.path}: report names the conn/s ratio and the cost per connection`,
    );
    t.ok(md.includes(`${x.ratios.throughput}x | ${x.cost.byte}x`), `${x.path}: report names the throughput ratio and the cost per byte`);
  }
  t.match(md, /IPv6 costs no more than 1\.1x IPv4/, 'the goal is stated');
});

t.test('traffic targets: IPv6 cost per connection / per byte against 1.1x, missed ones marked', async (t) => {
  const fam = (conn: number, gbps: number, host: string) => ({
    host,
    connPerSec: summarize([conn]),
    crrP99us: summarize([100]),
    crrErrors: 0,
    tcpGbps: summarize([gbps]),
    tcpRetransmits: 0,
  });
  const r: Ipv6TrafficResults = {
    options: { ...IPV6_TRAFFIC_SMOKE, rounds: 1 },
    service: {
      clusterIPs: ['10.96.0.60', 'fd00:10:96::60'],
      nodePorts: { crr: 30160, iperf: 30161 },
      endpoint: ['10.244.1.11', 'fd00:10:244:1::11'],
    },
    rows: [
      {
        path: 'pod-clusterip',
        ipv4: fam(10_000, 10, '10.96.0.60'),
        ipv6: fam(9_600, 8, 'fd00:10:96::60'),
        ratios: { connRate: 0.96, throughput: 0.8 },
        cost: { connection: 1.042, byte: 1.25 },
      },
    ],
    errors: [],
    conntrack: { ipv4: 1, ipv6: 1 },
    load: { start: 0.5, end: 0.5, cpus: 2 },
  };
  const tg = ipv6TrafficTargets(r);
  t.same(
    tg.map((x) => x.met),
    [true, false],
    'cost 1.042x per connection met, 1.25x per byte missed',
  );
  t.match(tg[0]!.goal, /<= 1\.1x \(IPv6 rate >= 0\.91x/);
  const md = renderIpv6Traffic(r);
  t.ok(md.includes('| 0.96x | 1.042x (met) | 0.8x | 1.25x (**missed**) |'), 'the ratio row marks met and missed');
  t.notMatch(md, /noisy/, 'a quiet machine is not called busy');
});

t.test('bench ipv6: SIGTERM during the traffic part removes the lab and exits 130', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bpfproxy-bench-ipv6-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const c = spawn(process.execPath, [join(REPO, 'dist', 'bench', 'cli.js'), 'ipv6', '--smoke', '--out', out], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  let prefix = '';
  const killer = setTimeout(() => c.kill('SIGKILL'), 100_000);
  t.teardown(() => clearTimeout(killer));
  c.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    const m = /lab (bpxb6t\w+) up/.exec(err);
    if (m && !prefix) {
      prefix = m[1]!;
      c.kill('SIGTERM');
    }
  });
  const code = await new Promise<number | null>((res) => c.on('exit', (code) => res(code)));
  t.ok(prefix, `the lab came up (${prefix})`);
  t.equal(code, 130, `exit 130 after SIGTERM${code === 130 ? '' : `: ${err.slice(-1500)}`}`);
  t.match(err, new RegExp(`SIGTERM: lab ${prefix} removed`), 'the operator is told the lab was removed');
  if (prefix) {
    t.same(listNetns(`${prefix}-`), [], 'no namespace of the lab left');
    t.notOk(existsSync(`/sys/fs/bpf/${prefix}-node1`), "node1's pin dir removed");
  }
});
