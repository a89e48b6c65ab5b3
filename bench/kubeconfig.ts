/**
 * A @kubernetes/client-node KubeConfig, for the benchmark's own use of the
 * API (pods, versions) and for tests that drive the API server with
 * client-node. The agent does not use client-node: src/k8s/kubeconfig.ts.
 */
import { KubeConfig } from '@kubernetes/client-node';

/** --kubeconfig, else in-cluster (KUBERNETES_SERVICE_HOST), else the usual places. */
export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured (use --kubeconfig or run in a pod)');
  return kc;
}
