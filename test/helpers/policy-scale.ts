/**
 * A large synthetic cluster for compile-time figures: namespaces with team
 * and env labels, pods with app/tier/version labels and named ports spread
 * over many nodes (one of them "this node"), and policies of every kind
 * (pod and namespace selectors, both, matchExpressions, ipBlock with
 * except, numeric, named and ranged ports, ingress and egress), as domain
 * objects (conversion is measured apart).
 */
import type { Namespace, NetworkPolicy, Pod, PolicyPeer, PolicyRule } from '../../src/model/policy/types.js';

export interface ScaleOptions {
  namespaces: number;
  pods: number;
  localPods: number;
  policies: number;
}

export const THIS_NODE = { name: 'node-0', addresses: ['192.168.0.1'] };

const sel = (labels: Record<string, string>) => ({
  requirements: Object.entries(labels).map(([key, v]) => ({ key, operator: 'In' as const, values: [v] })),
});

export function scaleCluster(o: ScaleOptions): { pods: Pod[]; namespaces: Namespace[]; policies: NetworkPolicy[] } {
  const namespaces: Namespace[] = [];
  for (let i = 0; i < o.namespaces; i++) {
    const name = `ns-${i}`;
    namespaces.push({ name, labels: { 'kubernetes.io/metadata.name': name, team: `team-${i % 10}`, env: i % 3 === 0 ? 'prod' : 'dev' } });
  }
  const pods: Pod[] = [];
  // Every namespace has pods on this node: pod j is in namespace j % namespaces,
  // and every `every`-th round of namespaces is local.
  const every = Math.max(1, Math.floor(o.pods / o.localPods));
  let locals = 0;
  for (let j = 0; j < o.pods; j++) {
    const ns = `ns-${j % o.namespaces}`;
    const local = Math.floor(j / o.namespaces) % every === 0 && locals < o.localPods;
    if (local) locals++;
    pods.push({
      namespace: ns,
      name: `pod-${j}`,
      labels: { app: `app-${Math.floor(j / o.namespaces) % 20}`, tier: ['web', 'db', 'cache'][j % 3]!, version: `v${j % 2}` },
      ips: [`10.${64 + Math.floor(j / 65536)}.${Math.floor(j / 256) % 256}.${j % 256}`],
      nodeName: local ? THIS_NODE.name : `node-${1 + (j % 49)}`,
      hostNetwork: false,
      containerPorts: [
        { name: 'http', port: 8080 + (j % 2), protocol: 'TCP' },
        { name: 'metrics', port: 9090, protocol: 'TCP' },
        { name: 'dns', port: 53, protocol: 'UDP' },
      ],
    });
  }
  const policies: NetworkPolicy[] = [];
  for (let k = 0; k < o.policies; k++) {
    const ns = `ns-${k % o.namespaces}`;
    const kind = k % 5;
    const app = `app-${Math.floor(k / o.namespaces) % 20}`;
    let peers: PolicyPeer[];
    switch (kind) {
      case 0:
        peers = [{ kind: 'pods', podSelector: sel({ tier: 'web' }) }];
        break;
      case 1:
        peers = [{ kind: 'pods', namespaceSelector: sel({ team: `team-${k % 10}` }), podSelector: sel({ app }) }];
        break;
      case 2:
        peers = [{ kind: 'ipBlock', cidr: `10.64.${k % 20}.0/24`, except: [`10.64.${k % 20}.${(k % 8) * 16}/28`] }];
        break;
      case 3:
        peers = [
          {
            kind: 'pods',
            namespaceSelector: { requirements: [{ key: 'env', operator: 'In', values: ['prod'] }] },
            podSelector: { requirements: [{ key: 'version', operator: 'NotIn', values: ['v0'] }] },
          },
        ];
        break;
      default:
        peers = [{ kind: 'pods', podSelector: sel({ app: `app-${(k + 1) % 20}` }) }];
    }
    const rule: PolicyRule = {
      index: 0,
      peers,
      ports:
        kind === 4
          ? [{ protocol: 'TCP', port: 'http' }]
          : kind === 3
            ? [{ protocol: 'TCP', port: 5432, endPort: 5440 }]
            : [{ protocol: 'TCP', port: 8080 + (k % 3) }],
    };
    const egress = k % 4 === 0;
    policies.push({
      namespace: ns,
      name: `policy-${k}`,
      podSelector: sel({ app }),
      ingressIsolation: !egress,
      egressIsolation: egress,
      ingress: egress ? [] : [rule],
      egress: egress ? [{ ...rule, ports: k % 8 === 0 ? [{ protocol: 'TCP', port: 'http' }] : rule.ports }] : [],
    });
  }
  return { pods, namespaces, policies };
}
