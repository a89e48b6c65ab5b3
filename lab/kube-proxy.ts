#!/usr/bin/env node
/**
 * The lab's kube-proxy: iptables mode, in the network namespace it is started
 * in (the lab's kubelet runs it in a node's, for each Pod of the kube-proxy
 * DaemonSet there). It watches Services and EndpointSlices and writes
 * kube-proxy's rules (testkit/kube-proxy). Like kube-proxy, it leaves its
 * rules in place when it stops — what keeps Services working between turning
 * kube-proxy off and bpfproxy taking over — unless --cleanup-on-stop; and
 * like `kube-proxy --cleanup`, --cleanup removes them and exits. Conntrack is
 * never flushed.
 *
 *   node dist/lab/kube-proxy.js --kubeconfig F --hostname-override node1 --cluster-cidr 10.244.0.0/16
 */
import { Command } from '@commander-js/extra-typings';
import pino from 'pino';
import { Informer } from '../src/k8s/informer.js';
import { realClock } from '../src/clock.js';
import { KubeProxyTables } from '../testkit/kube-proxy/iptables.js';
import { KubeProxyStandIn } from '../testkit/kube-proxy/proxier.js';
import { sh } from '../testkit/netns.js';
import { fetchResource, readKubeconfig } from './api-client.js';

const log = pino({
  base: { component: 'kube-proxy' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
});

const cmd = new Command('kube-proxy')
  .description("the bpfproxy lab's kube-proxy (iptables mode)")
  .option('--kubeconfig <path>', 'the API server to watch')
  .option('--hostname-override <name>', 'this node (EndpointSlice nodeName of local endpoints)')
  .option('--cluster-cidr <cidr>', "the pods' range: traffic from outside it to a cluster IP is masqueraded", '10.244.0.0/16')
  .option('--node-ip <ip>', "this node's address")
  .option('--cleanup', "remove kube-proxy's rules and exit (kube-proxy --cleanup)")
  .option('--cleanup-on-stop', 'remove the rules on SIGTERM too (kube-proxy does not)')
  .showHelpAfterError();
cmd.parse();
const o = cmd.opts();
const tables = new KubeProxyTables(undefined, `kube-proxy on ${o.hostnameOverride ?? 'this node'}`);

if (o.cleanup) {
  const r = tables.cleanup();
  log.info(r, `removed ${r.removed.length} chain(s) and ${r.jumps} jump rule(s); conntrack untouched`);
  process.exit(0);
}
if (!o.kubeconfig || !o.hostnameOverride) {
  process.stderr.write('kube-proxy: --kubeconfig and --hostname-override are required (or --cleanup)\n');
  process.exit(2);
}

// localhostNodePorts (the default): node ports answer on 127.0.0.1 too
sh('sysctl', ['-qw', 'net.ipv4.conf.all.route_localnet=1'], { allowFail: true });

const proxier = new KubeProxyStandIn(
  tables,
  { nodeName: o.hostnameOverride, clusterCidr: o.clusterCidr, ...(o.nodeIp ? { nodeIP: o.nodeIp } : {}) },
  log,
  () => log.info({ node: o.hostnameOverride }, 'kube-proxy ready'),
);
const api = readKubeconfig(o.kubeconfig);
log.info({ server: api.server, node: o.hostnameOverride }, `watching Services and EndpointSlices at ${api.server}`);
const services = new Informer(
  fetchResource(api, 'services', '/api/v1/services'),
  { upsert: (k, obj) => proxier.upsertService(k, obj), remove: (k) => proxier.removeService(k) },
  log,
  realClock,
);
const slices = new Informer(
  fetchResource(api, 'endpointslices', '/apis/discovery.k8s.io/v1/endpointslices'),
  { upsert: (k, obj) => proxier.upsertSlice(k, obj), remove: (k) => proxier.removeSlice(k) },
  log,
  realClock,
);
proxier.start();
services.start();
slices.start();
void services.waitSynced().then(() => proxier.setSynced('services'));
void slices.waitSynced().then(() => proxier.setSynced('slices'));
// the informers' timers do not hold the process: this does, until a signal
const alive = setInterval(() => undefined, 1 << 30);

const stop = (signal: string): void => {
  services.stop();
  slices.stop();
  proxier.stop();
  clearInterval(alive);
  if (o.cleanupOnStop) {
    const r = tables.cleanup();
    log.info({ signal, ...r }, `${signal}: removed kube-proxy's rules (--cleanup-on-stop); conntrack untouched`);
  } else log.info({ signal }, `${signal}: stopping; kube-proxy's rules stay in place (as kube-proxy leaves them)`);
  process.exit(0);
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
