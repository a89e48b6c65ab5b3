/**
 * End to end in the namespace lab, as an attacker and an unlucky operator
 * would try it: host-network endpoints (the node's own address, this node
 * and the other), a pod forging its source through a service, and a SYN/ACK
 * flood against a small conntrack map while long connections run. Every
 * traffic loop is bounded in count and time; everything is removed at the
 * end, pass or fail.
 */
import t from 'tap';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { probe, startEcho, startStream, type ProbeAttempt } from '../lab/lab.js';
import { ip, nsPath } from '../testkit/netns.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { reasonViews } from '../src/dataplane/bpf/inspect.js';
import { CtDir, CtState } from '../src/dataplane/bpf/codecs.js';
import { REPO } from './helpers/env.js';
import { labWithAgents } from './helpers/lab-agents.js';
import { sleep } from './helpers/wait.js';

const FLOOD = join(REPO, 'bench', '.output', 'flood');
const CT_SIZE = 4096;

/** The bounded flood generator (bench/flood.c) inside a namespace. */
function flood(ns: string, args: string[]): { sent: number; pps: number } {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', FLOOD, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`flood in ${ns} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { sent: number; pps: number };
}

const macOf = (ns: string, dev: string): string =>
  (JSON.parse(ip(ns, '-j', 'link', 'show', dev)) as Array<{ address: string }>)[0]!.address;

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
  // A small conntrack map, so that a flood fills it; echo servers on the nodes for host-network endpoints.
  const { lab } = await labWithAgents(t, {
    tag: 'bpxh',
    manifests: { 'host.yaml': HOST },
    agentArgs: ['--map-size-conntrack', String(CT_SIZE)],
    beforeAgents: (l) => {
      for (const n of l.nodes) startEcho(n.ns, `${n.name}-host`);
    },
  });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const client = lab.client;
  const podC = n1.pods[2]!; // 10.244.1.13
  const pod2 = n2.pods[1]!; // 10.244.2.12

  t.test('host-network endpoints answer through every path, TCP and UDP', async (t) => {
    const cases: Array<[string, string, string, number, string]> = [
      // what, from namespace, to, port, expected "<endpoint> saw <source>"
      ["ClusterIP to this node's host endpoint", podC.ns, '10.96.0.70', 80, `node1-host saw ${podC.ip}`],
      ["NodePort to this node's host endpoint", client.ns, n1.ip, 30095, `node1-host saw ${client.ip}`],
      ["ClusterIP to the other node's host endpoint", podC.ns, '10.96.0.71', 80, `node2-host saw ${podC.ip}`],
      ["NodePort to the other node's host endpoint (SNAT, eTP=Cluster)", client.ns, n1.ip, 30096, `node2-host saw ${n1.ip}`],
      ['ClusterIP from the other node to a host endpoint', pod2.ns, '10.96.0.70', 80, `node1-host saw ${pod2.ip}`],
    ];
    for (const [what, ns, host, port, want] of cases) {
      const udpPort = port === 80 ? 53 : port;
      t.same(who(probe(ns, 'tcp', host, port, 3, 2000)), [want, want, want], `${what}: TCP`);
      t.same(who(probe(ns, 'udp', host, udpPort, 3, 2000)), [want, want, want], `${what}: UDP`);
    }
  });

  const counters = (n: typeof n1) => {
    const m = openPinnedMaps(n.pinDir);
    try {
      return { reasons: new Map(reasonViews(m.maps).map((r) => [r.reason, r.packets])), ct: m.maps.ct.entries() };
    } finally {
      m.close();
    }
  };

  t.test('a pod forging its source is dropped, through a service and straight to a pod', async (t) => {
    const podIf = n1.pods.find((p) => p.ip === podC.ip)!.hostIf;
    const gw = macOf(n1.ns, podIf);
    const before = counters(n1).reasons.get('spoofed') ?? 0;
    const base = [
      '--iface',
      'eth0',
      '--dst-mac',
      gw,
      '--kind',
      'syn',
      '--count',
      '50',
      '--seconds',
      '5',
      '--spoof-cidr',
      '203.0.113.77/32',
    ];
    t.equal(flood(podC.ns, [...base, '--dst', '10.96.0.10', '--dport', '80']).sent, 50, '50 forged SYNs to the web ClusterIP');
    t.equal(flood(podC.ns, [...base, '--dst', n1.pods[0]!.ip, '--dport', '8080']).sent, 50, '50 forged SYNs straight to a pod');
    await sleep(200);
    const after = counters(n1);
    t.equal((after.reasons.get('spoofed') ?? 0) - before, 100, 'all 100 dropped and counted as spoofed');
    t.equal(after.ct.filter(([k]) => k.saddr === '203.0.113.77').length, 0, 'not one conntrack entry from the forged address');
    t.same(
      who(probe(podC.ns, 'tcp', '10.96.0.10', 80, 3, 2000)).filter((x) => !x.endsWith(podC.ip)),
      [],
      "the pod's own traffic still flows, source kept",
    );
  });

  t.test(`a SYN and ACK flood against a ${CT_SIZE}-entry conntrack map breaks no established connection`, async (t) => {
    // 6 idle connections (one write at 3 s and one at 6 s) and 6 busy ones,
    // through ClusterIP from pods and NodePort from the client.
    const idle = (ns: string, host: string, port: number) => startStream(ns, host, port, 6500, { interval: 3000, chunk: 512 });
    const busy = (ns: string, host: string, port: number) => startStream(ns, host, port, 6500);
    const runs = [
      ...[0, 1, 2].map(() => idle(podC.ns, '10.96.0.10', 80)),
      ...[0, 1, 2].map(() => idle(client.ns, n1.ip, 30080)),
      ...[0, 1, 2].map(() => busy(podC.ns, '10.96.0.10', 80)),
      ...[0, 1, 2].map(() => busy(client.ns, n1.ip, 30080)),
    ];
    // All twelve must be connections before the flood starts.
    const open = CtState.ESTABLISHED;
    const closed = CtState.FIN_FWD | CtState.FIN_REPLY | CtState.RST;
    const ours = () =>
      counters(n1).ct.filter(
        ([k, v]) =>
          v.dir === CtDir.FWD &&
          v.state & open &&
          !(v.state & closed) &&
          ((k.saddr === podC.ip && k.daddr === '10.96.0.10') || (k.saddr === client.ip && k.dport === 30080)),
      ).length;
    const t0 = Date.now();
    while (ours() < 12 && Date.now() - t0 < 15_000) await sleep(100);
    t.equal(ours(), 12, 'twelve connections established before the flood');
    const dstMac = macOf(n1.ns, 'eth0');
    const base = [
      '--iface',
      'eth0',
      '--dst-mac',
      dstMac,
      '--dst',
      n1.ip,
      '--dport',
      '30080',
      '--seconds',
      '8',
      '--spoof-cidr',
      '198.18.0.0/15',
    ];
    const syn = flood(client.ns, [...base, '--kind', 'syn', '--count', '60000']);
    const ack = flood(client.ns, [...base, '--kind', 'ack', '--count', '30000']);
    t.comment(`flood: ${syn.sent} SYNs at ${Math.round(syn.pps)}/s, ${ack.sent} ACKs at ${Math.round(ack.pps)}/s from 198.18.0.0/15`);
    t.equal(syn.sent + ack.sent, 90_000, 'the whole flood was sent');
    const mid = counters(n1);
    t.ok(mid.ct.length <= CT_SIZE, `conntrack holds ${mid.ct.length}/${CT_SIZE} entries`);
    t.ok(
      (mid.reasons.get('ct-full') ?? 0) > 0,
      `new flows beyond the map were refused and counted (ct-full: ${mid.reasons.get('ct-full')})`,
    );
    t.ok(
      (mid.reasons.get('ct-not-opening') ?? 0) >= 30_000,
      `the ACKs created nothing (ct-not-opening: ${mid.reasons.get('ct-not-opening')})`,
    );
    const results = await Promise.all(runs);
    results.forEach((r, i) => {
      const what = `${i < 6 ? 'idle' : 'busy'} connection ${i % 6} (${i % 6 < 3 ? 'ClusterIP from a pod' : 'NodePort from the client'})`;
      t.ok(r.ok, `${what}: survived (${r.error ?? 'ok'})`);
      t.equal(r.received, r.sent, `${what}: ${r.sent} bytes sent, all echoed`);
    });
  });
});
