#!/usr/bin/env node
/** bpfproxy-lab: a local namespace "cluster" to try bpfproxy on. */
import { Command } from '@commander-js/extra-typings';
import { basename, join, relative } from 'node:path';
import { labApiDown, labApiUp } from './api-lab.js';
import { runDemo } from './demo.js';
import { LAB_DIR, labSpec, labUp } from './lab.js';

/** How this command was run, for the commands it suggests. */
const self =
  basename(process.argv[1] ?? '') === 'bpfproxy-lab'
    ? 'bpfproxy-lab'
    : `node ${relative(process.cwd(), process.argv[1] ?? 'dist/lab/cli.js')}`;

const lab = new Command('bpfproxy-lab').description('a local namespace "cluster" to try bpfproxy on').showHelpAfterError();
lab
  .command('up')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .option('--api', 'with a Kubernetes API server, kube-proxy on every node, and DaemonSets you apply run on the nodes')
  .option('--kube-proxy-cleanup-on-stop', 'with --api: kube-proxy removes its rules when its Pod stops (real kube-proxy leaves them)')
  .option('--no-felix', 'with --api: a cluster without Calico (apply the FelixConfiguration CRD and default yourself, README step 2)')
  .description('build the lab namespaces and start echo servers in the pods')
  .action(async (o) => {
    const spec = labSpec(o.prefix);
    const where = `nodes ${spec.nodes.map((n) => `${n.name} (${n.ns}, ${n.ip}, ${n.ip6})`).join(', ')}, client ${spec.client.ns} (dual-stack: IPv4 and IPv6 on every node and pod)`;
    if (!o.api) {
      await labApiDown(o.prefix);
      labUp(spec);
      console.log(`lab ${o.prefix} is up: ${where}`);
      return;
    }
    const api = await labApiUp(o.prefix, { kubeProxyCleanupOnStop: !!o.kubeProxyCleanupOnStop, felix: o.felix });
    console.log(`lab ${o.prefix} is up: ${where}
API server ${api.url} (control plane pid ${api.pid}, log ${api.stateDir}/control-plane.log)
kube-proxy serves on every node; ${o.felix ? 'bpfEnabled is false' : 'no FelixConfiguration yet (README step 2 applies it)'}.

  export KUBECONFIG=${api.kubeconfig}
  kubectl get nodes,ds,pods -A

Then follow README.md "Install on AKS / EKS" from step ${o.felix ? '3 (the CRD and default FelixConfiguration are\nthere, as with Calico)' : '2'}; the lab runs the DaemonSet's agent from this checkout:

  kubectl apply -f manifests/rbac.yaml -f manifests/daemonset.yaml
  kubectl -n kube-system rollout status ds/bpfproxy
  kubectl patch ds -n kube-system kube-proxy -p "$(cat manifests/patches/kube-proxy-disable.json)"
  kubectl patch felixconfiguration default --type=merge -p '{"spec":{"bpfEnabled":true}}'
  kubectl -n kube-system exec ds/bpfproxy -- bpfproxy services

Traffic (the pods answer with their name and the address they saw):
  ip netns exec ${spec.client.ns} node ${relative(process.cwd(), join(LAB_DIR, 'probe.js'))} tcp ${spec.nodes[0]!.ip} 30080 --count 3
  ip netns exec ${spec.nodes[0]!.pods[0]!.ns} node ${relative(process.cwd(), join(LAB_DIR, 'probe.js'))} tcp 10.96.0.10 80 --count 3
  ip netns exec ${spec.nodes[0]!.pods[0]!.ns} node ${relative(process.cwd(), join(LAB_DIR, 'probe.js'))} tcp fd00:10:96::10 80 --count 3   (IPv6, once bpfproxy serves)
Remove it all: ${self} down${o.prefix === 'bpxlab' ? '' : ` --prefix ${o.prefix}`}`);
  });
lab
  .command('down')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('stop the lab API server and its processes, remove the lab namespaces and pins')
  .action(async (o) => {
    const r = await labApiDown(o.prefix);
    console.log(`${r.controlPlane ? 'stopped the API server and its processes; ' : ''}removed ${r.namespaces.length} namespace(s)`);
  });
lab
  .command('demo')
  .option('--prefix <p>', 'namespace name prefix', 'bpxlab')
  .description('the Calico adoption path on the lab: kube-proxy, then bpfproxy, then back, traffic at every step; leaves nothing')
  .action(async (o) => {
    const ok = await runDemo(o.prefix);
    process.exit(ok ? 0 : 1);
  });

lab.parseAsync().catch((e: Error) => {
  process.stderr.write(`bpfproxy-lab: ${e.message}\n`);
  process.exit(1);
});
