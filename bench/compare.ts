/**
 * `bpfproxy bench compare A.json B.json`: two cluster runs side by side (e.g.
 * kube-proxy vs bpfproxy). Either side may be `bpfproxy bench cluster -o json`
 * or knb's own `-o json` (k8s-bench-suite, knb 1.5.0), so published knb runs
 * compare with ours.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { z } from 'zod';
import type { ClusterResults, NodeFigures, TestFigures } from './cluster.js';
import { ratio } from './stats.js';
import { chart } from './svg.js';

const TESTS = [
  ['pod2pod', 'tcp'],
  ['pod2pod', 'udp'],
  ['pod2svc', 'tcp'],
  ['pod2svc', 'udp'],
] as const;

const num = z.number().finite();
const cpu = z.object({ total: num, user: num, nice: num, system: num, iowait: num, steal: num });
const node = z.object({ cpu, ram: num });
const test = z.object({ bandwidth: num, client: node, server: node, retransmits: num.optional(), lostPercent: num.optional() });
const pair = z.object({ tcp: test.optional(), udp: test.optional() });
/** knb's keys (all required but the tests run), with ours optional. */
const schema = z.object({
  metadata: z.object({
    name: z.string().optional(),
    generator: z.string(),
    version: z.string().optional(),
    date: z.string(),
    'server-node': z.string(),
    'client-node': z.string(),
    'socket-buffer-size': z.string().optional(),
    knbCompatible: z.union([z.string(), z.literal(true)]).optional(),
    duration: num.optional(),
    namespace: z.string().optional(),
    server: z.string().optional(),
  }),
  data: z.object({
    cpu: z.string().optional(),
    kernel: z.string().optional(),
    'k8s-version': z.string().optional(),
    mtu: z.union([z.string(), num]).optional(),
    idle: z.object({ bandwidth: num.optional(), client: node, server: node }).optional(),
    pod2pod: pair.optional(),
    pod2svc: pair.optional(),
  }),
});

/**
 * Results of `bpfproxy bench cluster -o json` or of knb's `-o json`, as our
 * ClusterResults. `what` names the input in errors (a file name).
 */
export function parseClusterResults(text: string, what: string): ClusterResults {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `${what}: not JSON (${(e as Error).message}); expected the output of "bpfproxy bench cluster -o json" or "knb -o json"` +
        ' (knb writes "bandwidth": , when a test produced no iperf3 result; rerun that test)',
      { cause: e },
    );
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(
      `${what}: ${i.path.join('.') || '(top level)'}: ${i.message}; expected the output of "bpfproxy bench cluster -o json" or "knb -o json"`,
    );
  }
  const m = r.data.metadata;
  const d = r.data.data;
  const knb = m.generator === 'knb';
  return {
    metadata: {
      name: m.name ?? basename(what).replace(/\.json$/, ''),
      generator: m.generator,
      version: m.version ?? 'unknown',
      date: m.date,
      'server-node': m['server-node'],
      'client-node': m['client-node'],
      'socket-buffer-size': m['socket-buffer-size'] ?? 'auto',
      ...(knb
        ? {}
        : {
            knbCompatible: typeof m.knbCompatible === 'string' ? m.knbCompatible : undefined,
            duration: m.duration,
            namespace: m.namespace,
            server: m.server,
          }),
    },
    data: {
      cpu: d.cpu ?? '',
      kernel: d.kernel ?? '',
      'k8s-version': d['k8s-version'] ?? '',
      mtu: d.mtu === undefined ? '' : String(d.mtu),
      ...(d.idle ? { idle: d.idle } : {}),
      ...(d.pod2pod ? { pod2pod: d.pod2pod } : {}),
      ...(d.pod2svc ? { pod2svc: d.pod2svc } : {}),
    },
  };
}

/** Read and convert one results file (ours or knb's). */
export function loadClusterResults(file: string): ClusterResults {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  return parseClusterResults(text, file);
}

function get(r: ClusterResults, k: 'pod2pod' | 'pod2svc', p: 'tcp' | 'udp'): TestFigures | undefined {
  return r.data[k]?.[p];
}

const about = (r: ClusterResults): string =>
  `${r.metadata.name} (${r.metadata.generator} ${r.metadata.version}), ${r.metadata.date}, nodes ${r.metadata['client-node']} → ${r.metadata['server-node']}; ` +
  `Kubernetes ${r.data['k8s-version'] || 'unknown'}, kernel ${r.data.kernel || 'unknown'}, CPU ${r.data.cpu || 'unknown'}, MTU ${r.data.mtu || 'unknown'}`;

export function compareClusters(a: ClusterResults, b: ClusterResults, names: [string, string]): Record<string, string> {
  const labels = TESTS.map(([k, p]) => `${k} ${p.toUpperCase()}`);
  const val = (r: ClusterResults, f: (t: TestFigures) => number) =>
    TESTS.map(([k, p]) => {
      const t = get(r, k, p);
      return t ? f(t) : null;
    });
  const files: Record<string, string> = {
    'bandwidth.svg': chart({
      title: 'Bandwidth',
      yLabel: 'Mbit/s',
      xLabels: labels,
      kind: 'bar',
      series: [
        { name: names[0], values: val(a, (t) => t.bandwidth) },
        { name: names[1], values: val(b, (t) => t.bandwidth) },
      ],
    }),
    'client-cpu.svg': chart({
      title: 'Client node CPU during each test',
      yLabel: '% of all CPUs',
      xLabels: labels,
      kind: 'bar',
      series: [
        { name: names[0], values: val(a, (t) => t.client.cpu.total) },
        { name: names[1], values: val(b, (t) => t.client.cpu.total) },
      ],
    }),
    'server-cpu.svg': chart({
      title: 'Server node CPU during each test',
      yLabel: '% of all CPUs',
      xLabels: labels,
      kind: 'bar',
      series: [
        { name: names[0], values: val(a, (t) => t.server.cpu.total) },
        { name: names[1], values: val(b, (t) => t.server.cpu.total) },
      ],
    }),
  };
  const row = (
    label: string,
    x?: { bw?: number; c?: NodeFigures; s?: NodeFigures },
    y?: { bw?: number; c?: NodeFigures; s?: NodeFigures },
  ) =>
    `| ${label} | ${x?.bw ?? '–'} | ${y?.bw ?? '–'} | ${ratio(y?.bw, x?.bw) ?? '–'} | ${x?.c?.cpu.total ?? '–'} | ${y?.c?.cpu.total ?? '–'} | ${x?.s?.cpu.total ?? '–'} | ${y?.s?.cpu.total ?? '–'} |`;
  const md = [
    `# ${names[0]} vs ${names[1]}`,
    '',
    `- ${names[0]}: ${about(a)}`,
    `- ${names[1]}: ${about(b)}`,
    '',
    `| test | ${names[0]} Mbit/s | ${names[1]} Mbit/s | ${names[1]} / ${names[0]} | client CPU % ${names[0]} | client CPU % ${names[1]} | server CPU % ${names[0]} | server CPU % ${names[1]} |`,
    '|---|---|---|---|---|---|---|---|',
  ];
  if (a.data.idle || b.data.idle)
    md.push(
      row(
        'idle',
        a.data.idle && { c: a.data.idle.client, s: a.data.idle.server },
        b.data.idle && { c: b.data.idle.client, s: b.data.idle.server },
      ),
    );
  for (const [k, p] of TESTS) {
    const x = get(a, k, p);
    const y = get(b, k, p);
    md.push(
      row(
        `${k} ${p.toUpperCase()}`,
        x && { bw: x.bandwidth, c: x.client, s: x.server },
        y && { bw: y.bandwidth, c: y.client, s: y.server },
      ),
    );
  }
  if (
    a.data['k8s-version'] !== b.data['k8s-version'] ||
    a.data.kernel !== b.data.kernel ||
    a.data.cpu !== b.data.cpu ||
    a.data.mtu !== b.data.mtu
  ) {
    md.push(
      '',
      'The two runs differ in Kubernetes version, kernel, CPU or MTU (above): part of any difference may come from that, not from the service proxy.',
    );
  }
  md.push('', '![bandwidth](bandwidth.svg)', '![client cpu](client-cpu.svg)', '![server cpu](server-cpu.svg)', '');
  files['compare.md'] = `${md.join('\n')}\n`;
  return files;
}

export const runName = (file: string): string => basename(file).replace(/\.json$/, '');
