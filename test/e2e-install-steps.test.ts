/**
 * README.md's "Install on AKS / EKS", rollback included, command by command
 * on the lab with an API server (bpfproxy-lab up --api, a cluster without
 * Calico): every kubectl command is read from the README (not copied here)
 * and run as written, through bash in the repository (its $(cat ...) and
 * pipes included), with real kubectl; after each, the nodes are checked:
 * who serves the Services, what is attached and pinned.
 *
 * What the lab maps (a real cluster is not reachable from here):
 * - `docker build` / `docker push` are not run: the lab's kubelet runs this
 *   checkout's dist/ for the bpfproxy image, and the lab's kube-proxy for
 *   kube-proxy's image (lab/kubelet.ts);
 * - the kubernetes-services-endpoint ConfigMap is applied as the README
 *   ships it: the lab's agents reach the API server through the lab's
 *   kubeconfig, where a Pod would use its in-cluster config;
 * - `kubectl exec ds/bpfproxy -- bpfproxy ...` runs this checkout's CLI in
 *   the Pod's node namespace with the node's pin dir (lab/exec.ts).
 * Skipped, with the reason, when no kubectl 1.27+ is installed.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pinnedMode } from '../src/dataplane/bpf/drain.js';
import { labApiDown, labApiUp, type LabApi } from '../lab/api-lab.js';
import { probe } from '../lab/lab.js';
import { observeLab, type NodeView } from '../lab/observe.js';
import { uniqueTag } from '../testkit/netns.js';
import { REPO } from './helpers/env.js';
import { Kubectl, kubectlMissing, type Run } from './helpers/kubectl.js';
import { sleep } from './helpers/wait.js';

export interface ReadmeCommand {
  /** the step it belongs to ("5. Turn kube-proxy off", "Rollback") */
  step: string;
  line: string;
}

/**
 * The shell commands in the fenced `sh` blocks of one `## ` section of a
 * markdown document, continuation lines joined, blank and comment-only lines
 * left out; each with the numbered step (or bold paragraph) it appears under.
 */
export function sectionCommands(markdown: string, heading: string): ReadmeCommand[] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${heading}`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  const out: ReadmeCommand[] = [];
  let step = '';
  let inBlock = false;
  let pending = '';
  for (const raw of lines.slice(start + 1, end < 0 ? undefined : end)) {
    const l = raw.trim();
    if (l.startsWith('```')) {
      inBlock = !inBlock && /^```(sh|bash|shell)?$/.test(l);
      continue;
    }
    if (!inBlock) {
      const m = /^(\d+\.\s+)?\*\*([^*]+)\*\*/.exec(l);
      if (m) step = `${m[1] ?? ''}${m[2]!.replace(/[,:.]$/, '')}`.trim();
      continue;
    }
    if (!l || (l.startsWith('#') && !pending)) continue;
    pending += pending ? ` ${l}` : l;
    if (pending.endsWith('\\')) {
      pending = pending.slice(0, -1).trimEnd();
      continue;
    }
    out.push({ step, line: pending });
    pending = '';
  }
  return out;
}

t.test('README commands are read from the section, with their steps', async (t) => {
  const md = [
    '## Other',
    '```sh',
    'kubectl get pods',
    '```',
    '## Install',
    '1. **Do this**: then',
    '   ```sh',
    '   # a comment',
    '   kubectl apply -f a.yaml \\',
    '     -f b.yaml',
    '   ```',
    '**Rollback**, in reverse:',
    '```sh',
    "kubectl patch x -p '{}'   # note",
    '```',
    '## Next',
    '```sh',
    'kubectl delete all',
    '```',
  ].join('\n');
  t.same(sectionCommands(md, 'Install'), [
    { step: '1. Do this', line: 'kubectl apply -f a.yaml -f b.yaml' },
    { step: 'Rollback', line: "kubectl patch x -p '{}'   # note" },
  ]);
  t.throws(() => sectionCommands(md, 'Missing'), /no "## Missing" section/);
});

const missing = kubectlMissing();

t.test("README's install and rollback on the lab, the dataplane checked after each command", { skip: missing }, async (t) => {
  const commands = sectionCommands(readFileSync(join(REPO, 'README.md'), 'utf8'), 'Install on AKS / EKS');
  const kubectlCommands = commands.filter((c) => c.line.startsWith('kubectl '));
  const others = commands.filter((c) => !c.line.startsWith('kubectl '));
  t.ok(kubectlCommands.length >= 12, `${kubectlCommands.length} kubectl commands in the README's install section`);
  t.same(
    others.map((c) => c.line.split(' ')[0]),
    others.map(() => 'docker'),
    'the only other commands build and push the image (the lab runs this checkout instead)',
  );

  const prefix = `bpxi${uniqueTag(4)}`;
  t.teardown(() => labApiDown(prefix).then(() => undefined));
  const api: LabApi = await labApiUp(prefix, { felix: false });
  const lab = api.lab;
  const k = new Kubectl({ kubeconfig: api.kubeconfig });
  t.teardown(() => k.cleanup());
  const [n1, n2] = lab.nodes as [LabApi['lab']['nodes'][0], LabApi['lab']['nodes'][0]];
  const pod = n1.pods[2]!;

  const readyPods = async (selector: string): Promise<string[]> => {
    const l = await k.json<{
      items: Array<{ spec: { nodeName: string }; status: { conditions?: Array<{ type: string; status: string }> } }>;
    }>(['-n', 'kube-system', 'get', 'pods', '-l', selector]);
    return l.items
      .filter((p) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      .map((p) => p.spec.nodeName)
      .sort();
  };
  const waitFor = async (what: string, cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<boolean> => {
    const t0 = Date.now();
    while (!(await cond())) {
      if (Date.now() - t0 > ms) {
        t.fail(`timed out after ${ms} ms waiting for ${what}`);
        return false;
      }
      await sleep(500);
    }
    return true;
  };
  const pinned = (): boolean[] =>
    lab.nodes.map((n) => existsSync(n.pinDir) && readdirSync(n.pinDir).some((f) => f.startsWith('bpfproxy_')));
  const nodeNames = lab.nodes.map((n) => n.name).sort();

  /** ClusterIP from a pod and NodePort from the client: who translated them, or that nobody answered. */
  const serve = (t: Test, by: 'kube-proxy' | 'bpfproxy' | 'nobody'): void => {
    const before = observeLab(lab.nodes);
    const cip = probe(pod.ns, 'tcp', '10.96.0.10', 80, 3, by === 'nobody' ? 800 : 2000);
    const np = probe(lab.client.ns, 'tcp', n2.ip, 30080, 3, by === 'nobody' ? 800 : 2000);
    const after = observeLab(lab.nodes);
    const delta = (f: (n: NodeView) => number) => after.reduce((a, n) => a + f(n), 0) - before.reduce((a, n) => a + f(n), 0);
    if (by === 'nobody') {
      t.ok(
        [...cip, ...np].every((x) => !x.ok),
        `nobody serves: ClusterIP ${cip.map((x) => x.error).join(',')}, NodePort ${np.map((x) => x.error).join(',')}`,
      );
      return;
    }
    t.ok(
      [...cip, ...np].every((x) => x.ok),
      `ClusterIP and NodePort answer (${[...cip, ...np].map((x) => x.pod ?? x.error).join(' ')})`,
    );
    if (by === 'kube-proxy') {
      t.equal(
        delta((n) => n.kubeProxyPackets),
        6,
        "all 6 connections through kube-proxy's rules",
      );
      t.equal(
        delta((n) => n.bpfFlows),
        0,
        'none through bpfproxy',
      );
    } else {
      t.equal(
        delta((n) => n.kubeProxyPackets),
        0,
        "none through kube-proxy's rules",
      );
      t.ok(delta((n) => n.bpfFlows) >= 6, `all through bpfproxy (${delta((n) => n.bpfFlows)} new flows in its conntrack)`);
    }
  };

  /** What must hold after each README command, found by what the command does. */
  const checks: Array<{ re: RegExp; check: (t: Test, r: Run) => Promise<void> }> = [
    {
      re: /^kubectl apply -f manifests\/crd-felixconfiguration\.yaml/,
      check: async (t) => {
        t.match(await k.ok(['get', 'crd', 'felixconfigurations.crd.projectcalico.org', '-o', 'name']), /felixconfigurations/);
      },
    },
    {
      re: /^kubectl apply -f manifests\/felixconfiguration-default\.yaml/,
      check: async (t) => {
        const f = await k.json(['get', 'felixconfiguration', 'default']);
        t.equal(f.spec.bpfEnabled, false, 'default FelixConfiguration: bpfEnabled false');
      },
    },
    {
      re: /^kubectl apply -f manifests\/kubernetes-services-endpoint\.yaml/,
      check: async (t) => {
        t.match(await k.ok(['-n', 'kube-system', 'get', 'configmap', 'kubernetes-services-endpoint', '-o', 'name']), /configmap/);
      },
    },
    {
      re: /^kubectl apply -f manifests\/rbac\.yaml -f manifests\/daemonset\.yaml/,
      check: async (t, r) => {
        t.match(r.stdout, /daemonset\.apps\/bpfproxy created/);
      },
    },
    {
      re: /rollout status ds\/bpfproxy/,
      check: async (t, r) => {
        t.match(r.stdout, /successfully rolled out/);
        t.same(await readyPods('app.kubernetes.io/name=bpfproxy'), nodeNames, 'an agent runs on every node');
        t.same(pinned(), [false, false], 'bpfEnabled is false: nothing pinned');
        t.same(
          observeLab(lab.nodes).map((n) => n.bpfInterfaces),
          [0, 0],
          'nothing attached',
        );
        serve(t, 'kube-proxy');
      },
    },
    {
      re: /patch ds -n kube-system kube-proxy .*kube-proxy-disable/,
      check: async (t) => {
        await waitFor('kube-proxy Pods to go', async () => (await readyPods('k8s-app=kube-proxy')).length === 0);
        t.ok(
          observeLab(lab.nodes).every((n) => n.kubeProxyChains > 0),
          'kube-proxy left its rules behind',
        );
        serve(t, 'kube-proxy');
      },
    },
    {
      re: /patch felixconfiguration default .*"bpfEnabled":true/,
      check: async (t) => {
        await waitFor('bpfproxy to take over on every node', () =>
          observeLab(lab.nodes).every((n) => n.bpfOn && n.bpfInterfaces > 0 && n.kubeProxyChains === 0),
        );
        t.same(pinned(), [true, true], 'maps pinned on every node');
        t.same(
          observeLab(lab.nodes).map((n) => n.bpfInterfaces),
          lab.nodes.map((n) => 1 + n.pods.length),
          'programs attached to the uplink and every pod interface',
        );
        serve(t, 'bpfproxy');
      },
    },
    {
      re: /logs ds\/bpfproxy \| grep '"agent ready"'/,
      check: async (t, r) => {
        t.match(r.stdout, /"msg":"agent ready"/);
      },
    },
    {
      re: /exec ds\/bpfproxy -- bpfproxy status/,
      check: async (t, r) => {
        t.match(r.stdout, /eth0\s+\d+\s+tcx? ingress\s+bpfproxy_data/, 'the uplink has our program');
        t.match(r.stdout, /bpfproxy_fe\s+\d+/, 'the maps are read');
      },
    },
    {
      re: /exec ds\/bpfproxy -- bpfproxy services/,
      check: async (t, r) => {
        t.match(r.stdout, /default\/web:http\/TCP\s+10\.96\.0\.10:80/, 'the web ClusterIP, as programmed');
      },
    },
    {
      re: /patch ds -n kube-system kube-proxy .*kube-proxy-enable/,
      check: async (t) => {
        await waitFor('kube-proxy back on every node', async () => (await readyPods('k8s-app=kube-proxy')).length === lab.nodes.length);
        await waitFor('its rules back on every node', () => observeLab(lab.nodes).every((n) => n.kubeProxyChains > 0));
        t.ok(
          observeLab(lab.nodes).every((n) => n.bpfOn),
          'bpfproxy still owns the dataplane (its programs see packets before the rules)',
        );
        serve(t, 'bpfproxy');
      },
    },
    {
      re: /rollout status ds\/kube-proxy/,
      check: async (t, r) => {
        t.match(r.stdout, /successfully rolled out/);
      },
    },
    {
      re: /patch felixconfiguration default .*"bpfEnabled":false/,
      check: async (t) => {
        // the agents drain: what they carry is served until it ends (UDP
        // flows count as open for UDPTimeout, 60 s), new connections go to
        // kube-proxy's rules at once
        // (new connections during the drain, and flows kept through it, are
        // test/e2e-migration.test.ts's; here the drain may end at once)
        await waitFor('every agent draining (or done)', () => lab.nodes.every((n) => pinnedMode(n.pinDir) !== 'serve'));
        await waitFor(
          'bpfproxy to finish draining and hand back on every node',
          () => observeLab(lab.nodes).every((n) => !n.bpfOn && n.bpfInterfaces === 0),
          150_000,
        );
        t.same(pinned(), [false, false], 'unpinned');
        serve(t, 'kube-proxy');
      },
    },
    {
      re: /logs -l app\.kubernetes\.io\/name=bpfproxy .*drain \(finished\|time is up\)/,
      check: async (t, r) => {
        t.equal(r.stdout.trim().split('\n').length, lab.nodes.length, 'one drain-end line per node');
      },
    },
    {
      re: /^kubectl delete -f manifests\/daemonset\.yaml -f manifests\/rbac\.yaml/,
      check: async (t, r) => {
        t.match(r.stdout, /daemonset\.apps "bpfproxy" deleted/);
        await waitFor('the agents to stop', async () => (await readyPods('app.kubernetes.io/name=bpfproxy')).length === 0);
        const left = await k.json<{ items: unknown[] }>(['-n', 'kube-system', 'get', 'pods', '-l', 'app.kubernetes.io/name=bpfproxy']);
        t.equal(left.items.length, 0, 'their Pods are gone');
        serve(t, 'kube-proxy');
      },
    },
  ];

  for (const c of kubectlCommands) {
    await t.test(`${c.step}: ${c.line}`, async (t) => {
      const check = checks.find((x) => x.re.test(c.line));
      const r = await k.shell(c.line, { cwd: REPO, timeoutMs: 60_000 });
      t.equal(r.code, 0, `exit 0 ${r.code === 0 ? '' : r.stderr}`);
      if (!check) {
        t.fail(`the README has a kubectl command this test has no check for: add one to "checks"`);
        return;
      }
      await check.check(t, r);
    });
  }
  t.equal(checks.filter((x) => !kubectlCommands.some((c) => x.re.test(c.line))).length, 0, 'every check matched a README command');
});
