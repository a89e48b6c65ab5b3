/**
 * What the lab's API server holds when it starts, written through the API as
 * the cluster's own components would have: the FelixConfiguration CRD (the
 * server installs it) and the default FelixConfiguration (bpfEnabled: false,
 * manifests/felixconfiguration-default.yaml) as a cluster with Calico has
 * them (unless the lab is asked for a cluster without), a Node per lab node, the
 * demo's Services and EndpointSlices (manifests/examples, with the
 * LoadBalancer status a cloud controller would write), and kube-proxy's
 * DaemonSet in kube-system as kubeadm installs it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { arch, release } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT, type Lab } from './lab.js';

type Obj = Record<string, unknown>;

/** kube-proxy's DaemonSet, as kubeadm installs it (the lab runs its own kube-proxy for the image). */
export function kubeProxyDaemonSet(): Obj {
  const labels = { 'k8s-app': 'kube-proxy' };
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'kube-proxy', namespace: 'kube-system', labels },
    spec: {
      selector: { matchLabels: labels },
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: { labels },
        spec: {
          containers: [
            {
              name: 'kube-proxy',
              image: 'registry.k8s.io/kube-proxy:v1.32.0',
              command: ['/usr/local/bin/kube-proxy', '--config=/var/lib/kube-proxy/config.conf', '--hostname-override=$(NODE_NAME)'],
              env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } }],
              securityContext: { privileged: true },
            },
          ],
          hostNetwork: true,
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          priorityClassName: 'system-node-critical',
          serviceAccountName: 'kube-proxy',
          terminationGracePeriodSeconds: 30,
          tolerations: [{ operator: 'Exists' }],
        },
      },
    },
  };
}

export function labNodes(lab: Lab): Obj[] {
  const goArch = arch() === 'x64' ? 'amd64' : arch();
  return lab.nodes.map((n) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: {
        'kubernetes.io/hostname': n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': goArch,
        'beta.kubernetes.io/os': 'linux',
        'beta.kubernetes.io/arch': goArch,
      },
    },
    spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
    status: {
      addresses: [
        { type: 'InternalIP', address: n.ip },
        { type: 'Hostname', address: n.name },
      ],
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: `the bpfproxy lab runs this node in network namespace ${n.ns}`,
          lastHeartbeatTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
          lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
        },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.32.0',
        kubeProxyVersion: 'v1.32.0',
        operatingSystem: 'linux',
        architecture: goArch,
        kernelVersion: release(),
        osImage: 'bpfproxy lab (network namespaces)',
        containerRuntimeVersion: 'lab://1',
      },
    },
  }));
}

const docs = (file: string): Obj[] =>
  parseAllDocuments(readFileSync(file, 'utf8'))
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => !!o && typeof o === 'object');

/** Everything the lab starts with, in the order it is written; `felix: false` leaves the FelixConfiguration out (no Calico). */
export function initialObjects(lab: Lab, opts: { felix?: boolean } = {}): Obj[] {
  const ex = join(REPO_ROOT, 'manifests', 'examples');
  return [
    ...(opts.felix === false ? [] : docs(join(REPO_ROOT, 'manifests', 'felixconfiguration-default.yaml'))),
    ...labNodes(lab),
    ...readdirSync(ex)
      .filter((f) => f.endsWith('.yaml'))
      .sort()
      .flatMap((f) => docs(join(ex, f))),
    kubeProxyDaemonSet(),
  ];
}

/** The collection URL path of an object's kind (the kinds initialObjects writes). */
export function collectionPath(o: Obj): string {
  const given = (o.metadata as Obj | undefined)?.namespace;
  const ns = typeof given === 'string' ? given : 'default';
  switch (`${String(o.apiVersion)}/${String(o.kind)}`) {
    case 'v1/Node':
      return '/api/v1/nodes';
    case 'v1/Service':
      return `/api/v1/namespaces/${ns}/services`;
    case 'discovery.k8s.io/v1/EndpointSlice':
      return `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`;
    case 'apps/v1/DaemonSet':
      return `/apis/apps/v1/namespaces/${ns}/daemonsets`;
    case 'crd.projectcalico.org/v1/FelixConfiguration':
      return '/apis/crd.projectcalico.org/v1/felixconfigurations';
    default:
      throw new Error(`lab: no collection for ${String(o.apiVersion)} ${String(o.kind)}`);
  }
}

/** Create each object (POST), then write its status where it has one (Nodes, LoadBalancer Services). */
export async function loadObjects(apiUrl: string, objects: readonly Obj[]): Promise<void> {
  for (const o of objects) {
    const path = collectionPath(o);
    const name = String((o.metadata as Obj).name);
    const r = await fetch(`${apiUrl}${path}?fieldManager=bpfproxy-lab`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(o),
    });
    if (!r.ok) throw new Error(`lab: creating ${String(o.kind)} ${name} failed: ${r.status} ${(await r.text()).slice(0, 400)}`);
    if (o.status && (o.kind === 'Node' || o.kind === 'Service')) {
      const s = await fetch(`${apiUrl}${path}/${name}/status?fieldManager=bpfproxy-lab`, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/merge-patch+json' },
        body: JSON.stringify({ status: o.status }),
      });
      if (!s.ok)
        throw new Error(`lab: writing the status of ${String(o.kind)} ${name} failed: ${s.status} ${(await s.text()).slice(0, 400)}`);
    }
  }
}
