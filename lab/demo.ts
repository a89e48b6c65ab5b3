/**
 * `make demo` / `bpfproxy-lab demo`: the Calico eBPF adoption path, on the
 * namespace lab with its API server (lab/api-lab.ts). kube-proxy serves the
 * demo's Services; bpfproxy is installed; kube-proxy's DaemonSet is given a
 * node selector no node has; bpfEnabled is switched on and bpfproxy takes
 * over; then the rollback, in the reverse order. Each step prints the
 * command a user types (README.md "Install on AKS / EKS"), what changed on
 * the nodes, and who answered the demo's traffic. The commands run through
 * kubectl when a usable one is installed, else as the same requests through
 * @kubernetes/client-node. The lab is removed at the end, on failure and on
 * Ctrl-C too.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { table } from '../src/cli/table.js';
import { nsPath } from '../testkit/netns.js';
import { labApiDown, labApiUp, type LabApi } from './api-lab.js';
import { Kubectl, kubectlMissing } from './kubectl.js';
import { AGENT_CLI, REPO_ROOT, probe, type Lab, type ProbeAttempt } from './lab.js';
import { observeLab, type NodeView } from './observe.js';

interface Scenario {
  what: string;
  from: string;
  fromNs: string;
  mode: 'tcp' | 'udp';
  host: string;
  port: number;
  count: number;
  expect: 'answer' | 'refused';
  /** probed only when bpfproxy serves: the lab's kube-proxy stand-in (testkit/kube-proxy) programs IPv4 only */
  ipv6?: true;
}

function scenarios(lab: Lab): Scenario[] {
  const [n1, n2] = lab.nodes as [Lab['nodes'][0], Lab['nodes'][0]];
  const pod = n1.pods[0]!;
  const fromPod = { from: `pod ${pod.name}`, fromNs: pod.ns };
  const fromClient = { from: `client ${lab.client.ip}`, fromNs: lab.client.ns };
  return [
    { what: 'ClusterIP web', ...fromPod, mode: 'tcp', host: '10.96.0.10', port: 80, count: 6, expect: 'answer' },
    { what: 'ClusterIP dns (UDP)', ...fromPod, mode: 'udp', host: '10.96.0.53', port: 53, count: 4, expect: 'answer' },
    { what: 'ClusterIP sticky (ClientIP affinity)', ...fromPod, mode: 'tcp', host: '10.96.0.12', port: 80, count: 4, expect: 'answer' },
    { what: 'NodePort web (eTP=Cluster)', ...fromClient, mode: 'tcp', host: n1.ip, port: 30080, count: 6, expect: 'answer' },
    { what: 'NodePort web-local (eTP=Local)', ...fromClient, mode: 'tcp', host: n1.ip, port: 30081, count: 4, expect: 'answer' },
    { what: 'NodePort web-local on node2', ...fromClient, mode: 'tcp', host: n2.ip, port: 30081, count: 3, expect: 'answer' },
    { what: 'LoadBalancer IP web', ...fromClient, mode: 'tcp', host: '198.51.100.10', port: 80, count: 6, expect: 'answer' },
    { what: 'externalIP web', ...fromClient, mode: 'tcp', host: '203.0.113.10', port: 80, count: 3, expect: 'answer' },
    { what: 'ClusterIP empty (no endpoints)', ...fromPod, mode: 'tcp', host: '10.96.0.99', port: 80, count: 1, expect: 'refused' },
    { what: 'ClusterIP empty (UDP)', ...fromPod, mode: 'udp', host: '10.96.0.99', port: 53, count: 1, expect: 'refused' },
    {
      what: 'ClusterIP web, IPv6 (dual-stack)',
      ...fromPod,
      mode: 'tcp',
      host: 'fd00:10:96::10',
      port: 80,
      count: 4,
      expect: 'answer',
      ipv6: true,
    },
    {
      what: 'ClusterIP dns, IPv6 (UDP)',
      ...fromPod,
      mode: 'udp',
      host: 'fd00:10:96::53',
      port: 53,
      count: 3,
      expect: 'answer',
      ipv6: true,
    },
    ...(n1.ip6
      ? [
          {
            what: 'NodePort web, IPv6',
            ...fromClient,
            from: `client ${lab.client.ip6}`,
            mode: 'tcp',
            host: n1.ip6,
            port: 30080,
            count: 4,
            expect: 'answer',
            ipv6: true,
          } as const,
        ]
      : []),
  ];
}

function summarize(a: ProbeAttempt[]): { answered: string; sources: string; ok: number } {
  const pods = new Map<string, number>();
  const srcs = new Set<string>();
  let ok = 0;
  for (const x of a) {
    const k = x.ok ? x.pod! : (x.error ?? 'error');
    pods.set(k, (pods.get(k) ?? 0) + 1);
    if (x.ok) {
      ok++;
      const peer = x.peer!;
      srcs.add(peer.startsWith('[') ? peer.slice(1, peer.indexOf(']')) : peer.slice(0, peer.lastIndexOf(':')));
    }
  }
  return { answered: [...pods].map(([p, n]) => `${p}×${n}`).join(' '), sources: [...srcs].join(' ') || '-', ok };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until cond holds; false (not an exception) after ms. */
async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return true;
    if (Date.now() - t0 > ms) return false;
    await sleep(250);
  }
}

const sum = (v: NodeView[], f: (n: NodeView) => number): number => v.reduce((a, n) => a + f(n), 0);
const perNode = (v: NodeView[], f: (n: NodeView) => string | number): string => v.map((n) => `${n.node} ${f(n)}`).join(', ');

/** Runs each step's command with kubectl, or sends the same requests with client-node. */
class Driver {
  readonly kubectl: Kubectl | undefined;
  readonly why: string | undefined;
  readonly kc = new KubeConfig();

  constructor(kubeconfig: string) {
    this.why = kubectlMissing();
    this.kubectl = this.why ? undefined : new Kubectl({ kubeconfig });
    this.kc.loadFromFile(kubeconfig);
  }

  /** Print the command, run it (or its fallback), print what it printed; false when it failed. */
  async run(line: string, fallback: () => Promise<string>): Promise<boolean> {
    console.log(`  $ ${line}`);
    let out: string;
    let ok = true;
    if (this.kubectl) {
      const r = await this.kubectl.shell(line, { cwd: REPO_ROOT, timeoutMs: 60_000 });
      out = (r.stdout + r.stderr).trimEnd();
      ok = r.code === 0;
    } else {
      try {
        out = await fallback();
      } catch (e) {
        out = (e as Error).message;
        ok = false;
      }
    }
    if (out) console.log(out.replace(/^/gm, '    '));
    if (!ok) console.log('    FAILED');
    return ok;
  }

  cleanup(): void {
    this.kubectl?.cleanup();
  }

  // ---- the same requests through client-node, for machines without a usable kubectl

  async apply(files: string[]): Promise<string> {
    const objects = KubernetesObjectApi.makeApiClient(this.kc);
    const out: string[] = [];
    for (const f of files) {
      for (const d of parseAllDocuments(readFileSync(join(REPO_ROOT, f), 'utf8'))) {
        const o = d.toJS() as KubernetesObject | null;
        if (!o?.kind) continue;
        await objects.patch(o, undefined, undefined, 'kubectl', true, PatchStrategy.ServerSideApply);
        out.push(`${o.kind.toLowerCase()}/${String(o.metadata?.name)} serverside-applied`);
      }
    }
    return out.join('\n');
  }

  async rolloutStatus(ns: string, name: string): Promise<string> {
    const apps = this.kc.makeApiClient(AppsV1Api);
    const done = await waitFor(async () => {
      const ds = await apps.readNamespacedDaemonSet({ namespace: ns, name });
      const s = ds.status;
      const want = s?.desiredNumberScheduled ?? 0;
      return (
        (s?.observedGeneration ?? 0) >= (ds.metadata?.generation ?? 0) && s?.updatedNumberScheduled === want && s?.numberAvailable === want
      );
    }, 60_000);
    if (!done) throw new Error(`daemon set "${name}" did not roll out in 60 s`);
    return `daemon set "${name}" successfully rolled out`;
  }

  async patchDaemonSet(ns: string, name: string, patchFile: string): Promise<string> {
    const apps = this.kc.makeApiClient(AppsV1Api);
    await apps.patchNamespacedDaemonSet(
      { namespace: ns, name, body: JSON.parse(readFileSync(join(REPO_ROOT, patchFile), 'utf8')) as object },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
    return `daemonset.apps/${name} patched`;
  }

  async patchFelix(spec: Record<string, unknown>): Promise<string> {
    const custom = this.kc.makeApiClient(CustomObjectsApi);
    await custom.patchClusterCustomObject(
      { group: 'crd.projectcalico.org', version: 'v1', plural: 'felixconfigurations', name: 'default', body: { spec } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    return 'felixconfiguration.crd.projectcalico.org/default patched';
  }

  /** Ready Pods of a DaemonSet's label, by node. */
  async readyPods(selector: string): Promise<string[]> {
    const core = this.kc.makeApiClient(CoreV1Api);
    const pods = await core.listNamespacedPod({ namespace: 'kube-system', labelSelector: selector });
    return pods.items
      .filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      .map((p) => p.spec?.nodeName ?? '?')
      .sort();
  }
}

export async function runDemo(prefix: string): Promise<boolean> {
  let api: LabApi | undefined;
  let driver: Driver | undefined;
  let tearingDown: Promise<void> | undefined;
  const teardown = (): Promise<void> =>
    (tearingDown ??= (async () => {
      driver?.cleanup();
      await labApiDown(prefix);
      console.log('\nlab removed (namespaces, pins, API server and its processes)');
    })());
  const onSignal = (sig: NodeJS.Signals): void => {
    console.log(`\n${sig}: removing the lab…`);
    void teardown().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const failures: string[] = [];
  const expect = (ok: boolean, what: string): void => {
    if (!ok) {
      failures.push(what);
      console.log(`  FAILED: ${what}`);
    }
  };
  const t0 = Date.now();
  try {
    console.log('bpfproxy demo: the Calico eBPF adoption path on a lab of network namespaces (2 nodes, 5 pods, an external client)\n');
    console.log('[0/5] The cluster as it runs today: kube-proxy serves the Services');
    console.log('  $ bpfproxy-lab up --api');
    api = await labApiUp(prefix);
    const lab = api.lab;
    driver = new Driver(api.kubeconfig);
    console.log(
      `    API server ${api.url}; kube-proxy runs on ${lab.nodes.map((n) => n.name).join(' and ')}; export KUBECONFIG=${api.kubeconfig}`,
    );
    console.log(
      driver.kubectl
        ? `    commands below run with ${spawnSync(driver.kubectl.bin, ['version', '--client'], { encoding: 'utf8' }).stdout.split('\n')[0]!.replace('Client Version: ', 'kubectl ')}`
        : `    ${driver.why}: the commands below are shown as you would type them and sent as the same requests with @kubernetes/client-node`,
    );
    const d = driver;
    const sc = scenarios(lab);

    /** Probe every scenario, print the table and who translated; a failed check when an answer or the translator is not as expected. */
    const traffic = (expectBy: 'kube-proxy' | 'bpfproxy'): void => {
      const before = observeLab(lab.nodes);
      const rows: string[][] = [];
      let good = true;
      for (const s of sc) {
        const to = s.host.includes(':') ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
        if (s.ipv6 && expectBy === 'kube-proxy') {
          rows.push(['-', s.what, s.from, to, "not probed: the lab's kube-proxy programs IPv4 only", '-']);
          continue;
        }
        const r = probe(s.fromNs, s.mode, s.host, s.port, s.count, 1500);
        const m = summarize(r);
        const ok = s.expect === 'answer' ? m.ok === s.count : r.every((x) => x.error === 'ECONNREFUSED');
        good &&= ok;
        rows.push([ok ? 'ok' : 'FAIL', s.what, s.from, to, m.answered, m.sources]);
      }
      const after = observeLab(lab.nodes);
      console.log(
        table(['', 'SERVICE', 'FROM', 'TO', 'ANSWERED BY (pod×connections)', 'SOURCE IP THE POD SAW'], rows).replace(/^/gm, '    '),
      );
      const kp = sum(after, (n) => n.kubeProxyPackets) - sum(before, (n) => n.kubeProxyPackets);
      const bpf = sum(after, (n) => n.bpfFlows) - sum(before, (n) => n.bpfFlows);
      const by = [
        kp > 0 ? `kube-proxy's iptables rules (${kp} new connections matched them)` : '',
        bpf > 0 ? `bpfproxy (${bpf} new flows in its conntrack)` : '',
      ]
        .filter(Boolean)
        .join(' and ');
      console.log(`  translated by: ${by || 'nobody'}`);
      expect(good, 'every service answered as expected');
      expect(expectBy === 'kube-proxy' ? kp > 0 && bpf === 0 : bpf > 0 && kp === 0, `the traffic went through ${expectBy}`);
    };
    const state = (v: NodeView[]): string =>
      `kube-proxy rules: ${perNode(v, (n) => `${n.kubeProxyChains} service chains`)}; bpfproxy: ${perNode(v, (n) => (n.bpfOn ? `on, ${n.bpfInterfaces} interfaces` : 'off'))}`;

    console.log(`  nodes: ${state(observeLab(lab.nodes))}`);
    traffic('kube-proxy');

    console.log('\n[1/5] Install bpfproxy (README steps 2-4; the lab preloaded the CRD and FelixConfiguration: bpfEnabled is false)');
    expect(
      await d.run('kubectl apply -f manifests/rbac.yaml -f manifests/daemonset.yaml', () =>
        d.apply(['manifests/rbac.yaml', 'manifests/daemonset.yaml']),
      ),
      'kubectl apply',
    );
    expect(
      await d.run('kubectl -n kube-system rollout status ds/bpfproxy', () => d.rolloutStatus('kube-system', 'bpfproxy')),
      'rollout status',
    );
    const agents = await d.readyPods('app.kubernetes.io/name=bpfproxy');
    console.log(
      `  changed: bpfproxy agents run on ${agents.join(', ') || 'no node'} and wait for bpfEnabled; nodes: ${state(observeLab(lab.nodes))}`,
    );
    expect(agents.length === lab.nodes.length, 'an agent on every node');

    console.log('\n[2/5] Turn kube-proxy off: a node selector no node has (README step 5)');
    expect(
      await d.run('kubectl patch ds -n kube-system kube-proxy -p "$(cat manifests/patches/kube-proxy-disable.json)"', () =>
        d.patchDaemonSet('kube-system', 'kube-proxy', 'manifests/patches/kube-proxy-disable.json'),
      ),
      'patch kube-proxy',
    );
    expect(await waitFor(async () => (await d.readyPods('k8s-app=kube-proxy')).length === 0, 45_000), 'kube-proxy Pods gone');
    let v = observeLab(lab.nodes);
    console.log(
      `  changed: kube-proxy's Pods are gone from every node; kube-proxy leaves its rules behind, so they keep serving until bpfproxy takes over. Nodes: ${state(v)}`,
    );
    traffic('kube-proxy');

    console.log('\n[3/5] Switch bpfproxy on (README step 6)');
    expect(
      await d.run(`kubectl patch felixconfiguration default --type=merge -p '{"spec":{"bpfEnabled":true}}'`, () =>
        d.patchFelix({ bpfEnabled: true }),
      ),
      'patch bpfEnabled=true',
    );
    expect(
      await waitFor(() => {
        v = observeLab(lab.nodes);
        return v.every((n) => n.bpfOn && n.bpfInterfaces > 0 && n.kubeProxyChains === 0);
      }, 45_000),
      'bpfproxy attached on every node and kube-proxy rules removed',
    );
    console.log(`  changed: each agent loaded its programs, filled its maps, attached, and removed kube-proxy's rules. Nodes: ${state(v)}`);
    traffic('bpfproxy');
    const svcLine = 'kubectl -n kube-system exec ds/bpfproxy -- bpfproxy services';
    if (d.kubectl) {
      console.log(`  $ ${svcLine}`);
      const r = await d.kubectl.shell(svcLine, { cwd: REPO_ROOT, timeoutMs: 30_000 });
      const lines = (r.stdout || r.stderr).trimEnd().split('\n');
      console.log(`${lines.slice(0, 14).join('\n').replace(/^/gm, '    ')}${lines.length > 14 ? `\n    … ${lines.length - 14} more` : ''}`);
      expect(r.code === 0 && /10\.96\.0\.10:80/.test(r.stdout), 'bpfproxy services lists the web ClusterIP');
    } else {
      const n1 = lab.nodes[0]!;
      console.log(`  $ ${svcLine}   (run here as: nsenter --net=${nsPath(n1.ns)} bpfproxy services --pin-dir ${n1.pinDir})`);
      const r = spawnSync('nsenter', [`--net=${nsPath(n1.ns)}`, '--', process.execPath, AGENT_CLI, 'services', '--pin-dir', n1.pinDir], {
        encoding: 'utf8',
      });
      console.log((r.stdout || r.stderr).trimEnd().split('\n').slice(0, 14).join('\n').replace(/^/gm, '    '));
    }

    console.log('\n[4/5] Rollback, first kube-proxy back (README "Rollback")');
    expect(
      await d.run('kubectl patch ds -n kube-system kube-proxy -p "$(cat manifests/patches/kube-proxy-enable.json)"', () =>
        d.patchDaemonSet('kube-system', 'kube-proxy', 'manifests/patches/kube-proxy-enable.json'),
      ),
      'patch kube-proxy back',
    );
    expect(
      await waitFor(async () => (await d.readyPods('k8s-app=kube-proxy')).length === lab.nodes.length, 45_000),
      'kube-proxy Pods ready on every node',
    );
    expect(
      await waitFor(() => {
        v = observeLab(lab.nodes);
        return v.every((n) => n.kubeProxyChains > 0);
      }, 45_000),
      "kube-proxy's rules back on every node",
    );
    console.log(
      `  changed: kube-proxy runs again and rewrote its rules; bpfproxy's programs still see every packet first. Nodes: ${state(v)}`,
    );
    traffic('bpfproxy');

    console.log('\n[5/5] Rollback, then bpfproxy off: it drains, then detaches');
    expect(
      await d.run(`kubectl patch felixconfiguration default --type=merge -p '{"spec":{"bpfEnabled":false}}'`, () =>
        d.patchFelix({ bpfEnabled: false }),
      ),
      'patch bpfEnabled=false',
    );
    console.log("  changed: the agents drain: the connections they carry keep their backend, new ones go to kube-proxy's rules");
    console.log('  waiting for the drain to end (no connection left open, or --rollback-drain-timeout, 2m)…');
    expect(
      await waitFor(() => {
        v = observeLab(lab.nodes);
        return v.every((n) => !n.bpfOn && n.bpfInterfaces === 0);
      }, 150_000),
      'bpfproxy drained, detached and unpinned on every node',
    );
    console.log(`  changed: the agents detached and unpinned; kube-proxy serves alone. Nodes: ${state(v)}`);
    traffic('kube-proxy');
  } catch (e) {
    failures.push((e as Error).message);
    console.log(`\nFAILED: ${(e as Error).message}`);
  } finally {
    await teardown();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  const s = ((Date.now() - t0) / 1000).toFixed(0);
  console.log(
    failures.length ? `demo: ${failures.length} check(s) FAILED (${s} s): ${failures.join('; ')}` : `demo: every step as expected (${s} s)`,
  );
  return failures.length === 0;
}
