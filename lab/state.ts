/**
 * Where a lab with an API server keeps its state: /run/bpfproxy-lab/<prefix>/
 * holds the control plane's pid and log, the kubeconfigs (root only: they
 * carry the lab's token), `ready.json` once it serves, and each Pod's log.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LAB_STATE_ROOT = '/run/bpfproxy-lab';
/** the API server's port in the lab's api namespace */
export const API_PORT = 6443;

export const labStateDir = (prefix: string): string => join(LAB_STATE_ROOT, prefix);

export function statePaths(dir: string) {
  return {
    dir,
    pid: join(dir, 'control-plane.pid'),
    log: join(dir, 'control-plane.log'),
    /** for kubectl on this machine */
    kubeconfig: join(dir, 'kubeconfig'),
    /** for the processes on the lab nodes (the API server's address on the lab LAN) */
    nodesKubeconfig: join(dir, 'kubeconfig-nodes'),
    ready: join(dir, 'ready.json'),
    failed: join(dir, 'failed'),
    logs: join(dir, 'logs'),
  };
}

/** A kubeconfig for the lab's API server (plain HTTP, its bearer token), readable by root only. */
export function writeLabKubeconfig(path: string, server: string, token: string): void {
  writeFileSync(
    path,
    `apiVersion: v1
kind: Config
clusters:
- name: bpfproxy-lab
  cluster:
    server: ${server}
    # plain HTTP: client-node refuses it unless TLS verification is off
    insecure-skip-tls-verify: true
users:
- name: lab-admin
  user:
    token: ${token}
contexts:
- name: bpfproxy-lab
  context:
    cluster: bpfproxy-lab
    user: lab-admin
current-context: bpfproxy-lab
`,
    { mode: 0o600 },
  );
  chmodSync(path, 0o600);
}
