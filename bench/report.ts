/** Markdown + SVG report of a local benchmark run, with the targets stated plainly. */
import type { LocalResults, VariantRun } from './local.js';
import { ratio } from './stats.js';
import { chart } from './svg.js';
import { KUBE_PROXY_CHANGE_INTERVAL_MS } from './kube-proxy-rules.js';
import type { Variant } from './variants.js';

export interface Target {
  target: string;
  goal: string;
  value: string;
  met: boolean | null;
  note: string;
}

const find = (r: LocalResults, v: Variant, n: number): VariantRun | undefined => r.runs.find((x) => x.variant === v && x.services === n);
/** The service count the targets speak of (10K), or the largest measured. */
const targetN = (r: LocalResults, want = 10000): number => (r.options.services.includes(want) ? want : Math.max(...r.options.services));

export function targets(r: LocalResults): Target[] {
  const out: Target[] = [];
  const n = targetN(r);
  const at = `${n} services`;
  const b = find(r, 'bpfproxy', n);
  const d = find(r, 'direct', n);
  const ipt = find(r, 'iptables', n);
  const add = (
    target: string,
    goal: string,
    x: number | null,
    limit: number,
    higher: boolean,
    note: string,
    show = (v: number) => `${v}`,
  ) => out.push({ target, goal, value: x === null ? 'n/a' : show(x), met: x === null ? null : higher ? x >= limit : x <= limit, note });
  add(
    `connection rate vs direct, at ${at}`,
    '≥ 0.9 × direct',
    ratio(b?.crrRate.median, d?.crrRate.median),
    0.9,
    true,
    'crr: connect, 1-byte request, 1-byte response, close (RST)',
  );
  add(`connection rate vs kube-proxy iptables, at ${at}`, '≥ 2.5 × iptables', ratio(b?.crrRate.median, ipt?.crrRate.median), 2.5, true, '');
  const p1 = r.packetNs.find((x) => x.services === Math.min(...r.packetNs.map((p) => p.services)));
  const pMax = r.packetNs.find((x) => x.services === Math.max(...r.packetNs.map((p) => p.services)));
  const pn = (x?: number) => (x === undefined ? 'not measured' : `${x}`);
  add(
    `per-packet ns (established) at ${pn(pMax?.services)} vs ${pn(p1?.services)} services`,
    '≤ 1.15 ×',
    ratio(pMax?.establishedNs, p1?.establishedNs),
    1.15,
    false,
    `${pn(p1?.establishedNs)} → ${pn(pMax?.establishedNs)} ns (BPF_PROG_RUN, 4000 distinct flows)`,
  );
  add(
    `per-packet ns (new flow) at ${pn(pMax?.services)} vs ${pn(p1?.services)} services`,
    '≤ 1.15 ×',
    ratio(pMax?.newFlowNs, p1?.newFlowNs),
    1.15,
    false,
    `${pn(p1?.newFlowNs)} → ${pn(pMax?.newFlowNs)} ns`,
  );
  const nMax = Math.max(...r.options.services);
  const bMax = find(r, 'bpfproxy', nMax);
  add(
    `one endpoint change in effect, p99, at ${nMax} services`,
    '≤ 10 ms',
    bMax?.endpointChangeMs?.p99 ?? null,
    10,
    false,
    'from the change reaching the reconciler to the maps updated',
    (v) => `${v} ms`,
  );
  add(
    r.programming
      ? `${r.programming.services} services × ${r.programming.endpoints} endpoints fully programmed`
      : 'full programming of 10K services × 10 endpoints',
    '≤ 1000 ms',
    r.programming?.ms ?? null,
    1000,
    false,
    'reconciler full sync into empty maps',
    (v) => `${v} ms`,
  );
  add(
    `TCP throughput vs direct, at ${at}`,
    '≥ 0.97 × direct',
    ratio(b?.tcpGbps.median, d?.tcpGbps.median),
    0.97,
    true,
    `${b?.tcpGbps.median} vs ${d?.tcpGbps.median} Gbit/s`,
  );
  add(
    `CPU per Gbit vs kube-proxy iptables, at ${at}`,
    '≤ 0.8 × iptables',
    ratio(b?.tcpCpuSecPerGbit.median, ipt?.tcpCpuSecPerGbit.median),
    0.8,
    false,
    'TCP, CPU-seconds of all cores per Gbit (/proc/stat)',
  );
  for (const a of r.agentRss) {
    add(
      `agent RSS at ${a.services} services / ${a.services * a.endpoints} endpoints, fed by ${a.source === 'kubernetes' ? 'the Kubernetes API' : 'manifests'}`,
      '≤ 150 MiB',
      a.rssMiB,
      150,
      false,
      `ready after ${a.readyMs} ms`,
      (v) => `${v} MiB`,
    );
  }
  if (!r.agentRss.length)
    out.push({ target: 'agent RSS', goal: '≤ 150 MiB', value: 'n/a', met: null, note: 'the agent did not become ready' });
  return out;
}

function table(h: string[], rows: Array<Array<string | number>>): string {
  return [`| ${h.join(' | ')} |`, `|${h.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

const m = (s: { median: number; min: number; max: number }, digits = 3) =>
  `${+s.median.toPrecision(digits)} (${+s.min.toPrecision(digits)}–${+s.max.toPrecision(digits)})`;
const rat = (x: number | null) => (x === null ? '–' : `${x}×`);

export function renderLocal(r: LocalResults): Record<string, string> {
  const ns = r.options.services;
  const variants = r.options.variants;
  const series = (f: (x: VariantRun) => number | null, vs = variants) =>
    vs.map((v) => ({
      name: v,
      values: ns.map((n) => {
        const x = find(r, v, n);
        return x ? f(x) : null;
      }),
    }));
  const xl = ns.map((n) => `${n}`);
  const files: Record<string, string> = {
    'throughput.svg': chart({
      title: 'TCP throughput through the service',
      yLabel: 'Gbit/s',
      xLabels: xl,
      series: series((x) => x.tcpGbps.median),
      kind: 'bar',
    }),
    'cpu-per-gbit.svg': chart({
      title: 'CPU per Gbit (TCP)',
      yLabel: 'CPU-seconds per Gbit',
      xLabels: xl,
      series: series((x) => x.tcpCpuSecPerGbit.median),
      kind: 'bar',
    }),
    'connection-rate.svg': chart({
      title: 'New connections per second vs services',
      yLabel: 'connections/s',
      xLabels: xl,
      series: series((x) => x.crrRate.median),
      kind: 'line',
    }),
    'programming-time.svg': chart({
      title: 'Time to program N services',
      yLabel: 'ms (log)',
      xLabels: xl,
      series: series(
        (x) => x.programMs || null,
        variants.filter((v) => v !== 'direct'),
      ),
      kind: 'line',
      log: true,
    }),
  };
  const e = r.environment;
  const md: string[] = [];
  md.push(`# bpfproxy local benchmark${r.options.smoke ? ' (smoke)' : ''}`, '');
  md.push(
    `Measured ${e.date} on ${e.cpus} × ${e.cpuModel}, ${e.memoryGiB} GiB, Linux ${e.kernel} (${e.virtualized}); ${e.iperf3}; ${e.iptables}; ${e.nft}. ` +
      `Every variant ran in fresh namespaces on the same topology (client pod → node → server pod, veths), ${r.options.reps} repetitions of ${r.options.seconds} s; ` +
      `figures are medians with the range in brackets, and ratios are to the direct (pod IP, no service) baseline measured at the same service count. ` +
      `The measured service is the last one programmed; services have ${r.options.endpoints} endpoint(s) each.`,
    '',
  );
  md.push('## Targets', '');
  md.push(
    table(
      ['', 'target', 'goal', 'measured', 'note'],
      targets(r).map((t) => [t.met === null ? '?' : t.met ? '✔ met' : '✘ **missed**', t.target, t.goal, t.value, t.note]),
    ),
    '',
  );
  const missed = targets(r).filter((t) => t.met === false);
  if (missed.length) md.push(`Missed here: ${missed.map((t) => t.target).join('; ')}. See the notes below for why.`, '');
  md.push(
    '![throughput](throughput.svg)',
    '![cpu per gbit](cpu-per-gbit.svg)',
    '![connection rate](connection-rate.svg)',
    '![programming time](programming-time.svg)',
    '',
  );
  for (const n of ns) {
    const d = find(r, 'direct', n);
    md.push(`## ${n} service${n === 1 ? '' : 's'}`, '');
    md.push(
      table(
        [
          'variant',
          'TCP Gbit/s',
          '× direct',
          'retransmits',
          'UDP Gbit/s',
          'UDP loss %',
          'CPU s/Gbit (TCP)',
          'conn/s',
          '× direct',
          'p50 µs',
          'p99 µs',
          'program ms',
          'endpoint change p50/p99 ms',
          'errors',
        ],
        variants.map((v) => {
          const x = find(r, v, n);
          if (!x) return [v, '–', '', '', '', '', '', '', '', '', '', '', '', ''];
          if (!x.programMs && x.didNotFinish?.length) {
            // programming was killed at its time limit: no traffic went through this variant
            const limit = /did not finish in (\S+ s)/.exec(x.didNotFinish[0]!)?.[1] ?? 'its time limit';
            return [v, '–', '', '', '–', '', '–', '–', '', '–', '–', `did not finish in ${limit}`, '–', '–'];
          }
          return [
            v,
            m(x.tcpGbps),
            rat(ratio(x.tcpGbps.median, d?.tcpGbps.median)),
            x.tcpRetransmits.join('/'),
            m(x.udpGbps),
            x.udpLostPercent.join('/'),
            m(x.tcpCpuSecPerGbit),
            m(x.crrRate, 4),
            rat(ratio(x.crrRate.median, d?.crrRate.median)),
            m(x.crrP50us),
            m(x.crrP99us),
            x.programMs ? x.programMs.toFixed(1) : '–',
            x.endpointChangeMs && Number.isFinite(x.endpointChangeMs.p50) ? `${x.endpointChangeMs.p50} / ${x.endpointChangeMs.p99}` : '–',
            `${x.crrErrors.reduce((a, b) => a + b, 0)}${x.errors.length ? ` (${x.errors.length} tool errors)` : ''}${x.generatorSaturated ? ' ⚠ generator saturated a core' : ''}`,
          ];
        }),
      ),
      '',
    );
    for (const v of variants) {
      const x = find(r, v, n);
      if (x?.didNotFinish?.length)
        md.push(
          `${v}: ${x.didNotFinish.join('; ')} (killed there; \`bench local --iptables-timeout\` sets the limit).` +
            (v === 'iptables'
              ? " iptables-nft 1.8.9's `--noflush` restore grows with the square of the number of chains in its input (each chain it names goes into a sorted list, one string compare per entry passed), so kube-proxy's first full sync does too."
              : ''),
          '',
        );
    }
  }
  const kp = ns
    .map((n) => find(r, 'iptables', n))
    .filter((x): x is VariantRun & { kubeProxy: NonNullable<VariantRun['kubeProxy']> } => !!x?.kubeProxy);
  if (kp.length) {
    md.push('## kube-proxy iptables: what its syncs cost', '');
    md.push(
      `As kube-proxy runs at its defaults (syncPeriod 30 s, minSyncPeriod 1 s, full sync at most hourly; large cluster mode above 1000 endpoints). ` +
        `Endpoint changes arrive every ${KUBE_PROXY_CHANGE_INTERVAL_MS / 1000} s of virtual time; each is one partial sync (\`iptables-restore --noflush\` of the filter table, KUBE-SERVICES and the changed service's chains), ` +
        'plus `iptables-save -t nat` when the stale-chain cleanup is due (every sync, or once per 30 s in large cluster mode). ' +
        'With nothing changing, kube-proxy syncs once an hour (a full sync, or in large cluster mode a partial one: no periodic full syncs there since kubernetes#138571) and checks its canary chain every 30 s; that idle cost is added, amortized, into the CPU per Gbit figures above.',
      '',
    );
    md.push(
      table(
        [
          'services',
          'endpoints',
          'large cluster mode',
          'first sync ms',
          'change p50 / p99 ms',
          'CPU ms per change',
          'changes with cleanup',
          'hourly sync',
          'hourly sync ms (CPU ms)',
          'canary check ms',
          'idle CPU ms/h',
        ],
        kp.map((x) => {
          const k = x.kubeProxy;
          const first = k.syncs[0];
          const changes = k.syncs.slice(1);
          const cpu = changes.length ? changes.reduce((a, c) => a + c.cpuMs, 0) / changes.length : NaN;
          const p = k.periodicSync;
          return [
            x.services,
            k.totalEndpoints,
            k.largeClusterMode ? 'yes' : 'no',
            first ? first.wallMs.toFixed(1) : '–',
            x.endpointChangeMs && Number.isFinite(x.endpointChangeMs.p50) ? `${x.endpointChangeMs.p50} / ${x.endpointChangeMs.p99}` : '–',
            Number.isFinite(cpu) ? cpu.toFixed(0) : '–',
            `${changes.filter((c) => c.cleanup).length} of ${changes.length}`,
            p ? p.kind : '–',
            p ? `${p.wallMs.toFixed(1)} (${p.cpuMs})` : '–',
            k.canary.wallMs.toFixed(1),
            (k.idleCpuSecPerSec * 3_600_000).toFixed(0),
          ];
        }),
      ),
      '',
    );
  }
  md.push('## Per-packet cost (BPF_PROG_RUN)', '');
  md.push(
    table(
      ['services', 'new flow ns', 'established ns'],
      r.packetNs.map((p) => [p.services, p.newFlowNs, p.establishedNs]),
    ),
    '',
  );
  md.push(
    'New flow: 4000 SYNs from distinct ports (source check, frontend lookup, backend choice, two conntrack inserts, DNAT, FIB); established: an ACK of each of those 4000 flows. Each frame runs once, in a native loop (a repeated run would see its own rewritten packet after the first, which measures a miss). Both to the measured ClusterIP on the pod program.',
    '',
  );
  if (r.agentRss.length) {
    md.push(
      '## Agent memory',
      '',
      'A real `bpfproxy agent` process serving the services, RSS from /proc one second after "agent ready":',
      '',
    );
    md.push(
      table(
        ['source', 'services', 'endpoints', 'RSS MiB', 'ready after ms'],
        r.agentRss.map((a) => [a.source, a.services, a.services * a.endpoints, a.rssMiB, a.readyMs]),
      ),
      '',
    );
  }
  md.push(
    '## Method notes',
    '',
    "- kube-proxy iptables variant: rules as kube-proxy writes them (KUBE-SERVICES → KUBE-SVC-* with statistic probabilities → KUBE-SEP-* DNAT, masquerade marks, kube-proxy's hashed chain names, no per-endpoint comments in large cluster mode), run as kube-proxy runs them at its defaults: the first sync is a full `iptables-restore --noflush` after ensuring the jump rules; an endpoint change is a partial sync (MinimizeIPTablesRestore, default since 1.27: only the changed service's chains, with the filter table and KUBE-SERVICES); the stale-chain cleanup and the hourly sync fall where kube-proxy's timers put them (see \"kube-proxy iptables: what its syncs cost\"). Times are those of the iptables commands; kube-proxy's own Go time to build the input is not included. Its program ms is that `--noflush --counters` first sync, whose time grows with the square of the number of chains on iptables-nft 1.8.9 (bench/README.md); reports before 2026-11-23 timed a flushing restore instead (about 1.5 s at 10K services against about 20 s), so they do not compare." +
      (r.options.iptablesTimeoutS
        ? ` Any one iptables command is killed after ${r.options.iptablesTimeoutS} s and reported as not finished.`
        : ''),
    "- kube-proxy nftables variant: KEP-3866 layout (service-ips verdict map → service chain with numgen → endpoint chains); an endpoint change is kube-proxy's incremental transaction for that one service.",
    "- bpfproxy: the agent's own reconciler and attacher; programming time is the full sync into empty maps; an endpoint change is one service's make-before-break update.",
    '- The load generator (bench/crr.c) reports its busiest thread\'s CPU share; "generator saturated a core" marks runs where it, not the path, may be the limit. On this 2-core VM client, server, generator and forwarding share the same two cores, so absolute rates are low; compare ratios.',
    "- CPU per Gbit counts all cores from /proc/stat over the iperf3 window (as knb does), so it includes iperf3 itself on both ends; for kube-proxy iptables it also includes kube-proxy's idle cost (hourly sync and canary checks), amortized. The nftables variant's periodic work is not modelled.",
    '',
  );
  files['report.md'] = `${md.join('\n')}\n`;
  return files;
}
