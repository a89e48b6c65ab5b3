/**
 * Real kubectl against the in-process API server; the runner and the
 * version check live in lab/kubectl.ts (the demo drives the lab with it).
 */
export { Kubectl, kubectlMissing, type Run } from '../../lab/kubectl.js';
