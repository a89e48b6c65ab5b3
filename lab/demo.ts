/**
 * `bpfproxy lab demo` / `make demo`: the lab, an agent on each node serving
 * manifests/examples, traffic to every service type, and what each backend
 * saw. Leaves nothing behind.
 */
import { spawnSync } from 'node:child_process';
import { nsPath } from '../testkit/netns.js';
import { AGENT_CLI, labDown, labSpec, labUp, probe, startAgent, type AgentProcess, type ProbeAttempt } from './lab.js';
import { table } from '../src/cli/table.js';

interface Scenario {
  what: string;
  from: string;
  fromNs: string;
  mode: 'tcp' | 'udp';
  host: string;
  port: number;
  count: number;
  expect: 'answer' | 'refused';
}

function summarize(a: ProbeAttempt[]): { answered: string; sources: string; ok: number } {
  const pods = new Map<string, number>();
  const srcs = new Set<string>();
  let ok = 0;
  for (const x of a) {
    if (x.ok) {
      ok++;
      pods.set(x.pod!, (pods.get(x.pod!) ?? 0) + 1);
      srcs.add(x.peer!.split(':')[0]!);
    } else {
      pods.set(x.error ?? 'error', (pods.get(x.error ?? 'error') ?? 0) + 1);
    }
  }
  return {
    answered: [...pods].map(([p, n]) => `${p}×${n}`).join(' '),
    sources: [...srcs].join(' ') || '-',
    ok,
  };
}

export async function runDemo(prefix: string, manifests: string): Promise<boolean> {
  const lab = labSpec(prefix);
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const pod = n1.pods[0]!;
  labDown(prefix);
  console.log(`building the lab (${lab.nodes.length} nodes, ${lab.nodes.reduce((a, n) => a + n.pods.length, 0)} pods, 1 external client)…`);
  labUp(lab);
  const agents: AgentProcess[] = [];
  let allOk = true;
  try {
    for (const n of lab.nodes) agents.push(startAgent(n, { manifests }));
    await Promise.all(agents.map((a) => a.ready));
    console.log(`agents ready on ${lab.nodes.map((n) => n.name).join(' and ')} (manifests: ${manifests})\n`);

    const scenarios: Scenario[] = [
      {
        what: 'ClusterIP web (TCP)',
        from: `pod ${pod.name} ${pod.ip}`,
        fromNs: pod.ns,
        mode: 'tcp',
        host: '10.96.0.10',
        port: 80,
        count: 9,
        expect: 'answer',
      },
      {
        what: 'ClusterIP dns (UDP)',
        from: `pod ${pod.name} ${pod.ip}`,
        fromNs: pod.ns,
        mode: 'udp',
        host: '10.96.0.53',
        port: 53,
        count: 6,
        expect: 'answer',
      },
      {
        what: 'ClusterIP sticky (ClientIP affinity)',
        from: `pod ${pod.name} ${pod.ip}`,
        fromNs: pod.ns,
        mode: 'tcp',
        host: '10.96.0.12',
        port: 80,
        count: 6,
        expect: 'answer',
      },
      {
        what: 'NodePort web :30080 (eTP=Cluster)',
        from: `client ${lab.client.ip}`,
        fromNs: lab.client.ns,
        mode: 'tcp',
        host: n1.ip,
        port: 30080,
        count: 9,
        expect: 'answer',
      },
      {
        what: 'NodePort web-local :30081 (eTP=Local)',
        from: `client ${lab.client.ip}`,
        fromNs: lab.client.ns,
        mode: 'tcp',
        host: n1.ip,
        port: 30081,
        count: 6,
        expect: 'answer',
      },
      {
        what: 'NodePort web-local on node2 (eTP=Local)',
        from: `client ${lab.client.ip}`,
        fromNs: lab.client.ns,
        mode: 'tcp',
        host: n2.ip,
        port: 30081,
        count: 3,
        expect: 'answer',
      },
      {
        what: 'LoadBalancer IP web 198.51.100.10',
        from: `client ${lab.client.ip}`,
        fromNs: lab.client.ns,
        mode: 'tcp',
        host: '198.51.100.10',
        port: 80,
        count: 9,
        expect: 'answer',
      },
      {
        what: 'externalIP web 203.0.113.10',
        from: `client ${lab.client.ip}`,
        fromNs: lab.client.ns,
        mode: 'tcp',
        host: '203.0.113.10',
        port: 80,
        count: 3,
        expect: 'answer',
      },
      {
        what: 'ClusterIP empty (no endpoints, TCP)',
        from: `pod ${pod.name} ${pod.ip}`,
        fromNs: pod.ns,
        mode: 'tcp',
        host: '10.96.0.99',
        port: 80,
        count: 1,
        expect: 'refused',
      },
      {
        what: 'ClusterIP empty (no endpoints, UDP)',
        from: `pod ${pod.name} ${pod.ip}`,
        fromNs: pod.ns,
        mode: 'udp',
        host: '10.96.0.99',
        port: 53,
        count: 1,
        expect: 'refused',
      },
    ];
    const rows: string[][] = [];
    for (const s of scenarios) {
      const r = probe(s.fromNs, s.mode, s.host, s.port, s.count, 1500);
      const sum = summarize(r);
      const good = s.expect === 'answer' ? sum.ok === s.count : r.every((x) => x.error === 'ECONNREFUSED');
      allOk &&= good;
      rows.push([good ? 'ok' : 'FAIL', s.what, s.from, `${s.host}:${s.port}`, sum.answered, sum.sources]);
    }
    console.log(table(['', 'SERVICE', 'FROM', 'TO', 'ANSWERED BY (pod×connections)', 'SOURCE IP THE POD SAW'], rows));
    console.log('\nWhat node1 programmed (bpfproxy services):\n');
    const svc = spawnSync('nsenter', [`--net=${nsPath(n1.ns)}`, '--', process.execPath, AGENT_CLI, 'services', '--pin-dir', n1.pinDir], {
      encoding: 'utf8',
    });
    console.log(svc.stdout || svc.stderr);
    console.log(allOk ? 'demo: every service answered as expected' : 'demo: some checks FAILED (see above)');
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    labDown(prefix);
    console.log('lab removed');
  }
  return allOk;
}
