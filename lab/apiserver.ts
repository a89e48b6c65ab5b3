#!/usr/bin/env node
/**
 * The lab's control plane, one process started by `bpfproxy-lab up --api`
 * (lab/api-lab.ts) after the lab's namespaces: the in-process API server
 * (testkit/apiserver) behind a token-checking front (lab/front.ts) on
 * 127.0.0.1 and in the lab's api namespace, the DaemonSet controller and
 * kubelets of the lab nodes (lab/kubelet.ts), and the cluster's starting
 * objects (lab/cluster.ts). It writes its kubeconfigs into the state dir and
 * `ready.json` once kube-proxy serves on every node; SIGTERM stops the Pods'
 * processes and the servers.
 *
 *   node dist/lab/apiserver.js --prefix bpxlab --state-dir /run/bpfproxy-lab/bpxlab
 */
import { Command } from '@commander-js/extra-typings';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { FakeApiServer } from '../testkit/fake-apiserver.js';
import { initialObjects, loadObjects } from './cluster.js';
import { serveExec } from './exec.js';
import { startFront } from './front.js';
import { LabKubelet } from './kubelet.js';
import { labSpec } from './lab.js';
import { API_PORT, statePaths, writeLabKubeconfig } from './state.js';

const cmd = new Command('bpfproxy-lab-apiserver')
  .requiredOption('--prefix <p>', 'the lab (namespace name prefix)')
  .requiredOption('--state-dir <dir>', 'where kubeconfigs, logs and ready.json go')
  .option('--kube-proxy-cleanup-on-stop', 'kube-proxy removes its rules when its Pod stops (kube-proxy itself leaves them)')
  .option('--no-felix', 'a cluster without Calico: no FelixConfiguration CRD, no default FelixConfiguration')
  .option('--ready-timeout <ms>', 'how long kube-proxy may take to serve on every node', '60000')
  .showHelpAfterError();
cmd.parse();
const o = cmd.opts();
const log = pino({
  base: { component: 'lab-control-plane' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
});
const paths = statePaths(o.stateDir);

async function main(): Promise<void> {
  const lab = labSpec(o.prefix);
  const token = randomBytes(24).toString('hex');
  const api = new FakeApiServer(o.felix ? {} : { crds: [] });
  const nodesUrl = `http://${lab.api.ip}:${API_PORT}`;
  writeLabKubeconfig(paths.nodesKubeconfig, nodesUrl, token);
  const running: { kubelet?: LabKubelet } = {};
  const front = await startFront({
    api: api.handler(`${lab.api.ip}:${API_PORT}`),
    token,
    apiNs: lab.api.ns,
    apiPort: API_PORT,
    exec: (req, socket, head) => serveExec(req, socket, head, (ns, pod) => running.kubelet?.pod(ns, pod)),
  });
  // This process runs as root: its own requests pass the front door as kubectl's do.
  const self = front.hostUrl;
  const kubelet = new LabKubelet({
    lab,
    api,
    apiUrl: self,
    nodesKubeconfig: paths.nodesKubeconfig,
    logDir: paths.logs,
    log,
    kubeProxyCleanupOnStop: !!o.kubeProxyCleanupOnStop,
  });
  running.kubelet = kubelet;
  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}: stopping the lab's Pods and the API server`);
    await running.kubelet?.stopAll();
    await front.close();
    await api.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  await loadObjects(self, initialObjects(lab, { felix: o.felix }));
  kubelet.start();
  const deadline = Date.now() + Number(o.readyTimeout);
  while (kubelet.readyNodes('kube-system/kube-proxy').length < lab.nodes.length) {
    if (Date.now() > deadline) {
      const logs = readdirSync(paths.logs)
        .filter((f) => f.startsWith('kube-proxy-'))
        .map((f) => `${f}:\n${readFileSync(join(paths.logs, f), 'utf8').trimEnd().split('\n').slice(-5).join('\n')}`);
      throw new Error(`kube-proxy did not become ready on every lab node in ${o.readyTimeout} ms; its logs end with:\n${logs.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  writeLabKubeconfig(paths.kubeconfig, front.hostUrl, token);
  writeFileSync(paths.ready, JSON.stringify({ pid: process.pid, url: front.hostUrl, nodesUrl, kubeconfig: paths.kubeconfig }));
  log.info({ url: front.hostUrl, nodesUrl }, `lab ${o.prefix}: API server at ${front.hostUrl} (nodes: ${nodesUrl}), kube-proxy serving`);
}

main().catch((e: Error) => {
  log.error({ err: e }, `lab control plane failed: ${e.message}`);
  writeFileSync(paths.failed, `${e.message}\n`);
  process.exit(1);
});
