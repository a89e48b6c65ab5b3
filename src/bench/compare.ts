/** `bpfproxy bench compare A.json B.json`: two cluster runs side by side (e.g. kube-proxy vs bpfproxy). */
import { basename } from 'node:path';
import type { ClusterResults, NodeFigures, TestFigures } from './cluster.js';
import { ratio } from './stats.js';
import { chart } from './svg.js';

const TESTS = [['pod2pod', 'tcp'], ['pod2pod', 'udp'], ['pod2svc', 'tcp'], ['pod2svc', 'udp']] as const;

function get(r: ClusterResults, k: 'pod2pod' | 'pod2svc', p: 'tcp' | 'udp'): TestFigures | undefined {
  return r.data[k]?.[p];
}

export function compareClusters(a: ClusterResults, b: ClusterResults, names: [string, string]): Record<string, string> {
  const labels = TESTS.map(([k, p]) => `${k} ${p.toUpperCase()}`);
  const val = (r: ClusterResults, f: (t: TestFigures) => number) => TESTS.map(([k, p]) => { const t = get(r, k, p); return t ? f(t) : null; });
  const files: Record<string, string> = {
    'bandwidth.svg': chart({ title: 'Bandwidth', yLabel: 'Mbit/s', xLabels: labels, kind: 'bar',
      series: [{ name: names[0], values: val(a, (t) => t.bandwidth) }, { name: names[1], values: val(b, (t) => t.bandwidth) }] }),
    'client-cpu.svg': chart({ title: 'Client node CPU during each test', yLabel: '% of all CPUs', xLabels: labels, kind: 'bar',
      series: [{ name: names[0], values: val(a, (t) => t.client.cpu.total) }, { name: names[1], values: val(b, (t) => t.client.cpu.total) }] }),
    'server-cpu.svg': chart({ title: 'Server node CPU during each test', yLabel: '% of all CPUs', xLabels: labels, kind: 'bar',
      series: [{ name: names[0], values: val(a, (t) => t.server.cpu.total) }, { name: names[1], values: val(b, (t) => t.server.cpu.total) }] }),
  };
  const row = (label: string, x?: { bw?: number; c?: NodeFigures; s?: NodeFigures }, y?: { bw?: number; c?: NodeFigures; s?: NodeFigures }) =>
    `| ${label} | ${x?.bw ?? '–'} | ${y?.bw ?? '–'} | ${ratio(y?.bw, x?.bw) ?? '–'} | ${x?.c?.cpu.total ?? '–'} | ${y?.c?.cpu.total ?? '–'} | ${x?.s?.cpu.total ?? '–'} | ${y?.s?.cpu.total ?? '–'} |`;
  const md = [
    `# ${names[0]} vs ${names[1]}`, '',
    `${names[0]}: ${a.metadata.date}, nodes ${a.metadata['client-node']} → ${a.metadata['server-node']}. ${names[1]}: ${b.metadata.date}, nodes ${b.metadata['client-node']} → ${b.metadata['server-node']}.`, '',
    `| test | ${names[0]} Mbit/s | ${names[1]} Mbit/s | ${names[1]} / ${names[0]} | client CPU % ${names[0]} | client CPU % ${names[1]} | server CPU % ${names[0]} | server CPU % ${names[1]} |`,
    '|---|---|---|---|---|---|---|---|',
  ];
  if (a.data.idle || b.data.idle) md.push(row('idle', a.data.idle && { c: a.data.idle.client, s: a.data.idle.server }, b.data.idle && { c: b.data.idle.client, s: b.data.idle.server }));
  for (const [k, p] of TESTS) {
    const x = get(a, k, p);
    const y = get(b, k, p);
    md.push(row(`${k} ${p.toUpperCase()}`, x && { bw: x.bandwidth, c: x.client, s: x.server }, y && { bw: y.bandwidth, c: y.client, s: y.server }));
  }
  md.push('', '![bandwidth](bandwidth.svg)', '![client cpu](client-cpu.svg)', '![server cpu](server-cpu.svg)', '');
  files['compare.md'] = `${md.join('\n')}\n`;
  return files;
}

export const runName = (file: string): string => basename(file).replace(/\.json$/, '');
