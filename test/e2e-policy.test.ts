/**
 * The upstream NetworkPolicy e2e model in the two-node namespace lab, with
 * real traffic: namespaces x, y, z with pods a, b, c each (five pods on
 * node1, four on node2), every pod serving TCP and UDP on 80 and 81 (SCTP:
 * this kernel has no SCTP sockets). An agent per node reads a manifest
 * directory; each case rewrites the policies (and labels) in place and
 * waits, at most a few seconds, until the full 9x9 matrix per port and
 * protocol is what the case expects; a failure prints the truth tables.
 *
 * Then: a policy update cuts a long-lived flow within a second; an agent
 * restart under policy leaves an allowed flow up, a denied pair denied, and
 * changes no probe result. Every probe is bounded (1 s per attempt).
 */
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { labDown, labUp, startAgent, type AgentProcess } from '../lab/lab.js';
import {
  defaultLabels,
  expectedMatrix,
  mismatches,
  modelManifests,
  policyLabSpec,
  Prober,
  startFlow,
  startModelServers,
  truthTables,
  type Expect,
  type Labels,
  type Matrix,
  type ModelPod,
} from '../lab/policy-lab.js';
import { sh, uniqueTag } from '../testkit/netns.js';
import { sleep } from './helpers/wait.js';

type Obj = Record<string, unknown>;

/** A NetworkPolicy in namespace `ns`. */
const np = (ns: string, name: string, spec: Obj): Obj => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name, namespace: ns },
  spec,
});
const pod = (p: string) => ({ matchLabels: { pod: p } });
const nsSel = (n: string) => ({ matchLabels: { ns: n } });

interface Case {
  name: string;
  policies: Obj[];
  /** label overrides, on top of the defaults: `x/a` or `ns:x` → labels */
  labels?: Record<string, Labels>;
  /** the expected matrix: default allow with exceptions */
  expect: Expect;
  /** extra probes from a pod to an address (a Service), with the expected answer */
  extra?: Array<{ from: string; target: string; want: boolean; what: string }>;
}

const allow: Expect = () => true;
const SVC_C = '10.96.0.50'; // -> z/c:80
const SVC_B = '10.96.0.51'; // -> z/b:80

const CASES: Case[] = [
  { name: 'no policy: everything reaches everything', policies: [], expect: allow },
  {
    name: 'deny-all ingress in x',
    policies: [np('x', 'deny-in', { podSelector: {}, policyTypes: ['Ingress'] })],
    expect: (_f, to) => to.namespace !== 'x',
  },
  {
    name: 'deny-all egress in x',
    policies: [np('x', 'deny-out', { podSelector: {}, policyTypes: ['Egress'] })],
    expect: (from) => from.namespace !== 'x',
  },
  {
    name: 'allow-all ingress beside deny-all in x (union of rules)',
    policies: [np('x', 'deny-in', { podSelector: {}, policyTypes: ['Ingress'] }), np('x', 'allow-in', { podSelector: {}, ingress: [{}] })],
    expect: allow,
  },
  {
    name: 'pod selector: x/a only from pod=b in x',
    policies: [np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('b') }] }] })],
    expect: (from, to) => to.key !== 'x/a' || from.key === 'x/b',
  },
  {
    name: 'namespace selector: x/a only from namespace ns=y',
    policies: [np('x', 'a-from-y', { podSelector: pod('a'), ingress: [{ from: [{ namespaceSelector: nsSel('y') }] }] })],
    expect: (from, to) => to.key !== 'x/a' || from.namespace === 'y',
  },
  {
    name: 'namespace and pod selector together: x/a only from y/c',
    policies: [
      np('x', 'a-from-yc', { podSelector: pod('a'), ingress: [{ from: [{ namespaceSelector: nsSel('y'), podSelector: pod('c') }] }] }),
    ],
    expect: (from, to) => to.key !== 'x/a' || from.key === 'y/c',
  },
  {
    name: 'namespace selector or pod selector (two peers): x/a from ns=z or x/c',
    policies: [
      np('x', 'a-from-z-or-c', {
        podSelector: pod('a'),
        ingress: [{ from: [{ namespaceSelector: nsSel('z') }, { podSelector: pod('c') }] }],
      }),
    ],
    expect: (from, to) => to.key !== 'x/a' || from.namespace === 'z' || from.key === 'x/c',
  },
  {
    name: 'matchExpressions: x/a from namespaces NotIn [x] and pods In [a, b]; z/c (pod Exists, NotIn [a, b]) egress only to pods without app and pod In [b]',
    policies: [
      np('x', 'a-expr', {
        podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a'] }] },
        ingress: [
          {
            from: [
              {
                namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['x'] }] },
                podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a', 'b'] }] },
              },
            ],
          },
        ],
      }),
      np('z', 'c-egress-expr', {
        podSelector: {
          matchExpressions: [
            { key: 'pod', operator: 'Exists' },
            { key: 'pod', operator: 'NotIn', values: ['a', 'b'] },
          ],
        },
        policyTypes: ['Egress'],
        egress: [
          {
            to: [
              {
                namespaceSelector: {},
                podSelector: {
                  matchExpressions: [
                    { key: 'app', operator: 'DoesNotExist' },
                    { key: 'pod', operator: 'In', values: ['b'] },
                  ],
                },
              },
            ],
          },
        ],
      }),
    ],
    expect: (from, to) =>
      (to.key !== 'x/a' || (from.namespace !== 'x' && ['a', 'b'].includes(from.name))) && (from.key !== 'z/c' || to.name === 'b'),
  },
  {
    name: 'ipBlock with except: x/a from 10.244.0.0/16 except node2 pods (10.244.2.0/24)',
    policies: [
      np('x', 'a-cidr', {
        podSelector: pod('a'),
        ingress: [{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.2.0/24'] } }] }],
      }),
    ],
    expect: (from, to) => to.key !== 'x/a' || from.node === 'node1',
  },
  {
    name: 'egress ipBlock: y/b only to 10.244.2.12/31 (z/a, z/b)',
    policies: [
      np('y', 'b-out-cidr', {
        podSelector: pod('b'),
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.244.2.12/31' } }] }],
      }),
    ],
    expect: (from, to) => from.key !== 'y/b' || ['z/a', 'z/b'].includes(to.key),
  },
  {
    name: 'port number: x/a only on TCP 81 from anyone',
    policies: [np('x', 'a-81', { podSelector: pod('a'), ingress: [{ ports: [{ port: 81, protocol: 'TCP' }] }] })],
    expect: (_f, to, port, proto) => to.key !== 'x/a' || (port === 81 && proto === 'tcp'),
  },
  {
    name: 'named port: x/a only on serve-80-udp',
    policies: [np('x', 'a-named', { podSelector: pod('a'), ingress: [{ ports: [{ port: 'serve-80-udp', protocol: 'UDP' }] }] })],
    expect: (_f, to, port, proto) => to.key !== 'x/a' || (port === 80 && proto === 'udp'),
  },
  {
    name: 'named port on egress: from x/b to serve-81-tcp of any pod',
    policies: [np('x', 'b-out-named', { podSelector: pod('b'), policyTypes: ['Egress'], egress: [{ ports: [{ port: 'serve-81-tcp' }] }] })],
    expect: (from, _to, port, proto) => from.key !== 'x/b' || (port === 81 && proto === 'tcp'),
  },
  {
    name: 'endPort: x/a on TCP and UDP 79-80 (81 left out)',
    policies: [
      np('x', 'a-range', {
        podSelector: pod('a'),
        ingress: [
          {
            ports: [
              { port: 79, endPort: 80, protocol: 'TCP' },
              { port: 79, endPort: 80, protocol: 'UDP' },
            ],
          },
        ],
      }),
    ],
    expect: (_f, to, port) => to.key !== 'x/a' || port === 80,
  },
  {
    name: 'egress to a Service: x/a only to z/c, checked after DNAT',
    policies: [
      np('x', 'a-to-zc', {
        podSelector: pod('a'),
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: nsSel('z'), podSelector: pod('c') }], ports: [{ port: 80 }] }],
      }),
    ],
    expect: (from, to, port, proto) => from.key !== 'x/a' || (to.key === 'z/c' && port === 80 && proto === 'tcp'),
    extra: [
      { from: 'x/a', target: `${SVC_C}:80/tcp`, want: true, what: 'x/a -> Service (backend z/c): allowed' },
      { from: 'x/a', target: `${SVC_B}:80/tcp`, want: false, what: 'x/a -> Service (backend z/b): denied' },
      { from: 'x/b', target: `${SVC_B}:80/tcp`, want: true, what: 'x/b (no policy) -> Service (backend z/b): allowed' },
    ],
  },
  {
    name: 'ingress through a Service: z/b only from x/b, the client address kept',
    policies: [
      np('z', 'b-from-xb', { podSelector: pod('b'), ingress: [{ from: [{ namespaceSelector: nsSel('x'), podSelector: pod('b') }] }] }),
    ],
    expect: (from, to) => to.key !== 'z/b' || from.key === 'x/b',
    extra: [
      { from: 'x/b', target: `${SVC_B}:80/tcp`, want: true, what: 'x/b -> Service (backend z/b): allowed' },
      { from: 'x/a', target: `${SVC_B}:80/tcp`, want: false, what: 'x/a -> Service (backend z/b): denied' },
    ],
  },
  {
    name: 'pod label change: x/c relabelled pod=b now reaches x/a',
    policies: [np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('b') }] }] })],
    labels: { 'x/c': { pod: 'b' } },
    expect: (from, to) => to.key !== 'x/a' || from.key === 'x/b' || from.key === 'x/c',
  },
  {
    name: 'pod label change on the selected side: y/c relabelled pod=a becomes isolated by the policy for pod=a',
    policies: [np('y', 'a-deny', { podSelector: pod('a'), policyTypes: ['Ingress'] })],
    labels: { 'y/c': { pod: 'a' } },
    expect: (_f, to) => to.key !== 'y/a' && to.key !== 'y/c',
  },
  {
    name: 'namespace label change: z relabelled ns=y now reaches x/a',
    policies: [np('x', 'a-from-y', { podSelector: pod('a'), ingress: [{ from: [{ namespaceSelector: nsSel('y') }] }] })],
    labels: { 'ns:z': { ns: 'y', 'kubernetes.io/metadata.name': 'z' } },
    expect: (from, to) => to.key !== 'x/a' || from.namespace === 'y' || from.namespace === 'z',
  },
  {
    name: 'kubernetes.io/metadata.name selects by name even when ns is relabelled',
    policies: [
      np('x', 'a-from-z', {
        podSelector: pod('a'),
        ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'z' } } }] }],
      }),
    ],
    labels: { 'ns:z': { ns: 'y', 'kubernetes.io/metadata.name': 'z' } },
    expect: (from, to) => to.key !== 'x/a' || from.namespace === 'z',
  },
  { name: 'policy deletion: every policy removed, everything reaches everything', policies: [], expect: allow },
];

const SERVICES = [
  ['svc-c', SVC_C, 'z/c', '10.244.2.14'],
  ['svc-b', SVC_B, 'z/b', '10.244.2.13'],
]
  .map(
    ([name, ip, , backend]) => `apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: z }
spec:
  clusterIP: ${ip}
  ports: [{ name: http, port: 80, targetPort: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: ${name}-1, namespace: z, labels: { kubernetes.io/service-name: ${name} } }
addressType: IPv4
ports: [{ name: http, port: 80, protocol: TCP }]
endpoints: [{ addresses: [${backend}] }]
`,
  )
  .join('---\n');

interface Model {
  pods: ModelPod[];
  prober: Prober;
  dir: string;
  agents: Map<string, AgentProcess>;
  lab: ReturnType<typeof policyLabSpec>['lab'];
}

function writeState(m: Model, policies: Obj[], overrides: Record<string, Labels> = {}): void {
  const labels = defaultLabels(m.pods);
  for (const [k, v] of Object.entries(overrides)) {
    if (k.startsWith('ns:')) labels.namespaces.set(k.slice(3), v);
    else labels.pods.set(k, v);
  }
  // pods before policies; each file replaced whole by a rename (the agent
  // watches the directory: a file written in place can be read half written)
  put(m, 'model.yaml', modelManifests(m.pods, labels));
  if (policies.length) put(m, 'policies.yaml', `${policies.map((p) => JSON.stringify(p)).join('\n---\n')}\n`);
  else rmSync(join(m.dir, 'policies.yaml'), { force: true });
}

const written = new Map<string, string>();
function put(m: Model, name: string, text: string): void {
  const path = join(m.dir, name);
  if (written.get(path) === text && existsSync(path)) return;
  const tmp = join(m.dir, '..', `.${basename(m.dir)}-${name}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
  written.set(path, text);
}

/** Wait (at most 5 s) until a TCP connection from a pod to host:port is established. */
async function established(from: ModelPod, host: string, port: number): Promise<boolean> {
  for (const end = Date.now() + 5000; Date.now() < end;) {
    if (sh('ss', ['-H', '-tn', 'state', 'established', 'dst', `${host}:${port}`], { ns: from.netns, allowFail: true }).trim()) return true;
    await sleep(50);
  }
  return false;
}

/** Probe until the matrix is as expected (at most `ms`); the last observation. */
async function settle(m: Model, want: Matrix, ms = 8000): Promise<{ got: Matrix; rounds: number; elapsed: number }> {
  const t0 = Date.now();
  let rounds = 0;
  for (;;) {
    const got = await m.prober.matrix(1000);
    rounds++;
    if (mismatches(want, got).length === 0 || Date.now() - t0 > ms) return { got, rounds, elapsed: Date.now() - t0 };
    await sleep(200);
  }
}

async function checkCase(t: Test, m: Model, c: Case): Promise<void> {
  writeState(m, c.policies, c.labels);
  const want = expectedMatrix(m.pods, c.expect);
  const { got, rounds, elapsed } = await settle(m, want);
  const bad = mismatches(want, got);
  t.same(bad, [], `${c.name}: 9x9 matrix x {80,81} x {tcp,udp} as expected (${rounds} rounds, ${elapsed} ms)`);
  if (bad.length) t.comment(`${c.name}\n${truthTables(m.pods, want, got)}`);
  for (const x of c.extra ?? []) {
    const from = m.pods.find((p) => p.key === x.from)!;
    const [ok] = await m.prober.probe(from, [x.target]);
    t.equal(ok, x.want, x.what);
  }
}

t.test('upstream NetworkPolicy model across two nodes', async (t) => {
  const prefix = `bpxp${uniqueTag(5)}`;
  const { lab, pods } = policyLabSpec(prefix);
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-e2e-policy-'));
  const agents = new Map<string, AgentProcess>();
  const probers: Prober[] = [];
  t.teardown(async () => {
    for (const p of probers) p.close();
    for (const a of agents.values()) await a.stop();
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  labUp(lab, { servers: false });
  await startModelServers(pods);
  const prober = new Prober(pods);
  probers.push(prober);
  const m: Model = { pods, prober, dir, agents, lab };
  writeFileSync(join(dir, 'services.yaml'), SERVICES);
  writeState(m, []);
  const agentArgs = ['--min-sync-period', '100ms'];
  for (const n of lab.nodes) agents.set(n.name, startAgent(n, { manifests: dir }, agentArgs));
  await Promise.all([...agents.values()].map((a) => a.ready));
  const byKey = (k: string) => pods.find((p) => p.key === k)!;

  const t0 = Date.now();
  for (const c of CASES) await checkCase(t, m, c);
  t.comment(`${CASES.length} cases in ${Date.now() - t0} ms`);

  await t.test('label changes while traffic runs: an allowed flow stays up through them', async (t) => {
    const policies = [np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('b') }] }] })];
    writeState(m, policies);
    const want = expectedMatrix(pods, (from, to) => to.key !== 'x/a' || from.key === 'x/b');
    t.same(mismatches(want, (await settle(m, want)).got), [], 'x/a only from x/b');
    const flow = startFlow(byKey('x/b'), byKey('x/a').ip, 80, 6000, 1500);
    await sleep(500);
    // relabel x/c (joins), then z (namespace), then back: the x/b flow is untouched
    writeState(m, policies, { 'x/c': { pod: 'b' } });
    await sleep(1500);
    writeState(m, policies, { 'x/c': { pod: 'b' }, 'ns:z': { ns: 'q', 'kubernetes.io/metadata.name': 'z' } });
    await sleep(1500);
    writeState(m, policies);
    const r = await flow;
    t.equal(r.error, undefined, `the flow ran its course (${r.replies} echoes, longest gap ${r.maxGap} ms)`);
    t.ok(r.maxGap < 1000, 'no gap of a second or more');
  });

  await t.test('a policy update cuts a long-lived flow within a second', async (t) => {
    const allowB = np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('b') }] }] });
    writeState(m, [allowB]);
    const want = expectedMatrix(pods, (from, to) => to.key !== 'x/a' || from.key === 'x/b');
    t.same(mismatches(want, (await settle(m, want)).got), [], 'x/a only from x/b');
    const flow = startFlow(byKey('x/b'), byKey('x/a').ip, 80, 10_000, 3000);
    t.ok(await established(byKey('x/b'), byKey('x/a').ip, 80), 'the flow x/b -> x/a is established');
    await sleep(1000);
    const changed = Date.now();
    // the same policy, now allowing only x/c: the established x/b flow loses its allow
    writeState(m, [np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('c') }] }] })]);
    const r = await flow;
    t.equal(r.error, 'stalled', 'the established flow stopped getting echoes');
    t.ok(r.connected && r.replies > 5, `it was up before the change (${r.replies} echoes)`);
    const cut = r.lastReply - changed;
    t.comment(`last echo ${cut} ms after the manifest was written`);
    t.ok(cut < 1000, `cut within a second of the update (${cut} ms, manifest watch and compile included)`);
  });

  await t.test('agent restart under policy: nothing opens, nothing closes', async (t) => {
    // x/a (node1) only from x/b; z/a (node2) denies everything
    const policies = [
      np('x', 'a-from-b', { podSelector: pod('a'), ingress: [{ from: [{ podSelector: pod('b') }] }] }),
      np('z', 'a-deny', { podSelector: pod('a'), policyTypes: ['Ingress'] }),
    ];
    writeState(m, policies);
    const expect: Expect = (from, to) => (to.key !== 'x/a' || from.key === 'x/b') && to.key !== 'z/a';
    const want = expectedMatrix(pods, expect);
    t.same(mismatches(want, (await settle(m, want)).got), [], 'policies in effect before the restart');
    const allowedFlow = startFlow(byKey('x/b'), byKey('x/a').ip, 80, 9000, 1500);
    const deniedFlow = startFlow(byKey('x/c'), byKey('x/a').ip, 80, 9000, 1500);
    t.ok(await established(byKey('x/b'), byKey('x/a').ip, 80), 'the allowed flow x/b -> x/a is established');
    await sleep(500);
    const n1 = lab.nodes[0]!;
    const restart = (async () => {
      const code = await agents.get(n1.name)!.stop();
      t.equal(code, 0, 'node1 agent stopped cleanly');
      const again = startAgent(n1, { manifests: dir }, agentArgs);
      agents.set(n1.name, again);
      await again.ready;
    })();
    // probe the whole matrix throughout the restart: every round as before
    const rounds: string[][] = [];
    let done = false;
    void restart.finally(() => (done = true));
    for (let i = 0; i < 30 && (!done || rounds.length < 2); i++) rounds.push(mismatches(want, await m.prober.matrix(1000)));
    await restart;
    rounds.push(mismatches(want, await m.prober.matrix(1000)));
    t.same(
      rounds.filter((r) => r.length > 0),
      [],
      `${rounds.length} matrix rounds during and after the restart, none changed`,
    );
    const [a, d] = await Promise.all([allowedFlow, deniedFlow]);
    t.equal(a.error, undefined, `the allowed flow x/b -> x/a survived (${a.replies} echoes, longest gap ${a.maxGap} ms)`);
    t.ok(a.maxGap < 1000, 'without a gap of a second');
    t.equal(d.replies, 0, 'the denied flow x/c -> x/a never got an answer');
  });

  writeState(m, []);
});
