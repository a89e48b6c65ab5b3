/**
 * bpfExternalServiceMode end to end in the two-node lab: an external client
 * (192.0.2.100) reaches a service whose only endpoint is on node2 through
 * node1 (NodePort at node1's address; LoadBalancer and external IPs routed
 * to node1). Tunnel and DSR keep the client's address for TCP and UDP
 * (what the endpoint saw, as the echo server reports it), SNAT shows
 * node1's; a long transfer is byte-exact (it crosses the 50 bytes of
 * tunnel overhead on full-size segments); DSR replies leave node2 straight
 * to the client, an opted-out client stays on Tunnel; the mode switches live
 * under a running transfer; a forged VXLAN packet from the client is
 * dropped and counted on node2. Modes change through the FelixConfiguration
 * the agents read from the manifest directory. A node whose Node object
 * lacks the bpfproxy.io/decap annotation (an older bpfproxy) is reached with
 * SNAT.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_CLI, probe, startAgent, startStream, type ProbeAttempt } from '../lab/lab.js';
import { ip, nsPath } from '../testkit/netns.js';
import { frame, TCP } from '../testkit/packet.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { tunnelCounters, tunnelMode } from '../src/dataplane/bpf/tunnel.js';
import { REASONS } from '../src/dataplane/bpf/reasons.js';
import { labWithAgents } from './helpers/lab-agents.js';
import { sleep } from './helpers/wait.js';

const FAR = `apiVersion: v1
kind: Node
metadata: { name: node1, annotations: { bpfproxy.io/decap: vxlan-v1 } }
status: { addresses: [{ type: InternalIP, address: 192.0.2.11 }] }
---
apiVersion: v1
kind: Node
metadata: { name: node2, annotations: { bpfproxy.io/decap: vxlan-v1 } }
status: { addresses: [{ type: InternalIP, address: 192.0.2.12 }] }
---
apiVersion: v1
kind: Service
metadata: { name: far, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.70
  selector: { app: far }
  externalIPs: [203.0.113.70]
  ports:
    - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30170 }
    - { name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30171 }
status: { loadBalancer: { ingress: [{ ip: 198.51.100.70 }] } }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: far-1, namespace: default, labels: { kubernetes.io/service-name: far } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }, { name: dns, port: 5353, protocol: UDP }]
endpoints: [{ addresses: [10.244.2.11], nodeName: node2 }]
`;

const felix = (spec: Record<string, unknown>) => `apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: { name: default }
spec: ${JSON.stringify(spec)}
`;

/** Send `bytes` random bytes through the echo server and compare what comes back (sha256). */
const TRANSFER = `
const net = require('net'), crypto = require('crypto');
const [host, port, bytes] = process.argv.slice(2);
const data = crypto.randomBytes(+bytes);
const want = crypto.createHash('sha256').update(data).digest('hex');
const h = crypto.createHash('sha256');
let got = 0, greet = null, acc = Buffer.alloc(0);
const s = net.connect(+port, host);
const out = (r) => { clearTimeout(timer); console.log(JSON.stringify(r)); s.destroy(); };
const timer = setTimeout(() => out({ ok: false, error: 'timeout', got }), 30000);
s.on('connect', () => s.write(data));
s.on('data', (d) => {
  if (greet === null) {
    acc = Buffer.concat([acc, d]);
    const i = acc.indexOf(10);
    if (i < 0) return;
    greet = JSON.parse(acc.subarray(0, i).toString());
    d = acc.subarray(i + 1);
  }
  h.update(d);
  got += d.length;
  if (got >= +bytes) out({ ok: got === +bytes && h.digest('hex') === want, got, peer: greet.peer });
});
s.on('error', (e) => out({ ok: false, error: e.code, got }));
`;

/** Send one UDP datagram (hex payload) from a namespace. */
const SEND_UDP = `
const s = require('dgram').createSocket('udp4');
const [host, port, hex] = process.argv.slice(2);
s.send(Buffer.from(hex, 'hex'), +port, host, () => s.close());
`;

const peers = (a: ProbeAttempt[]) => [...new Set(a.map((x) => (x.ok ? x.peer!.split(':')[0] : `!${x.error}`)))];

t.test('Tunnel, DSR and SNAT across the two-node lab', async (t) => {
  const { lab, dir, agents } = await labWithAgents(t, {
    tag: 'bpxtun',
    manifests: { 'far.yaml': FAR, 'felix.yaml': felix({ bpfExternalServiceMode: 'Tunnel' }) },
  });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const client = lab.client;
  const inClient = (script: string, args: string[], timeout = 40_000) => {
    const f = join(dir, `script-${Math.random().toString(36).slice(2)}.cjs`);
    writeFileSync(f, script);
    const r = spawnSync('nsenter', [`--net=${nsPath(client.ns)}`, '--', process.execPath, f, ...args], { encoding: 'utf8', timeout });
    return r.stdout.trim();
  };
  const counters = (n: typeof n1) => {
    const m = openPinnedMaps(n.pinDir);
    try {
      const reasons = Object.fromEntries(
        REASONS.map((r, i) => [r.name, m.maps.reasons.getPerCpu({ v: i }).reduce((a, c) => a + Number(c.packets), 0)]),
      );
      return { tun: tunnelCounters(m.maps), mode: tunnelMode(m.maps), reasons };
    } finally {
      m.close();
    }
  };
  const setMode = async (spec: Record<string, unknown>, want: string) => {
    writeFileSync(join(dir, 'felix.yaml'), felix(spec));
    const until = Date.now() + 15_000;
    while (Date.now() < until) {
      if (counters(n1).mode.mode === want && counters(n2).mode.mode === want) return true;
      await sleep(200);
    }
    return false;
  };
  const targets: Array<[string, string, number, number]> = [
    ['NodePort', n1.ip, 30170, 30171],
    ['LoadBalancer IP', '198.51.100.70', 80, 53],
    ['external IP', '203.0.113.70', 80, 53],
  ];
  // both agents have seen the Nodes and written the tunnel maps
  const until = Date.now() + 10_000;
  while (Date.now() < until && !(counters(n1).mode.local === n1.ip && counters(n2).mode.local === n2.ip)) await sleep(200);
  t.same(
    [counters(n1).mode, counters(n2).mode],
    [
      { mode: 'Tunnel', local: n1.ip },
      { mode: 'Tunnel', local: n2.ip },
    ],
    "Tunnel, from the Nodes' InternalIPs",
  );

  await t.test('Tunnel: the endpoint on node2 sees the client, TCP and UDP, NodePort / LB IP / external IP', async (t) => {
    const before = counters(n2).tun;
    for (const [name, addr, tcpPort, udpPort] of targets) {
      t.same(peers(probe(client.ns, 'tcp', addr, tcpPort, 3, 2000)), [client.ip], `${name} TCP: client address kept`);
      t.same(peers(probe(client.ns, 'udp', addr, udpPort, 3, 2000)), [client.ip], `${name} UDP: client address kept`);
    }
    const after = counters(n2).tun;
    t.ok(after.NEW_REMOTE.packets - before.NEW_REMOTE.packets >= 18, 'node2 took every flow from the tunnel');
    t.ok(after.ENCAP.packets > before.ENCAP.packets, 'node2 sent the replies back through the tunnel');
    t.equal(after.DSR_REPLY.packets, before.DSR_REPLY.packets, 'and none direct');
  });

  await t.test('bpfproxy conntrack and status show the tunnelled flows and the mode', async (t) => {
    const stream = startStream(client.ns, n1.ip, 30170, 3000, { interval: 50, chunk: 1024 });
    await sleep(1000);
    const cli = (n: typeof n1, args: string[]) => {
      const r = spawnSync(process.execPath, [AGENT_CLI, ...args, '--pin-dir', n.pinDir, '-o', 'json'], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      return JSON.parse(r.stdout) as unknown;
    };
    type Flow = {
      dir: string;
      from: string;
      to: string;
      tunnel?: { mode: string; role: string; ingressNode: string; backendNode: string; backend: string };
    };
    const at1 = (cli(n1, ['conntrack', '--tunnel']) as Flow[]).filter(
      (f) => f.dir === 'fwd' && f.to === `${n1.ip}:30170` && f.tunnel?.role === 'ingress',
    );
    const at2 = (cli(n2, ['conntrack', '--tunnel']) as Flow[]).filter(
      (f) => f.dir === 'fwd' && f.to === `${n1.ip}:30170` && f.tunnel?.role === 'backend',
    );
    t.ok(at1.length >= 1, `node1 lists tunnelled flows (${at1.length})`);
    t.match(
      at1[0]?.tunnel,
      { mode: 'Tunnel', ingressNode: n1.ip, backendNode: n2.ip, backend: '10.244.2.11:8080' },
      'node1: ingress -> backend node, endpoint',
    );
    t.match(at2[0]?.tunnel, { mode: 'Tunnel', ingressNode: n1.ip, backendNode: n2.ip }, 'node2: the ingress node recorded');
    const st = cli(n1, ['status']) as {
      externalService: { mode: string; local: string; newFlows: { Tunnel: number }; packets: { encap: number } };
    };
    t.match(st.externalService, { mode: 'Tunnel', local: n1.ip }, 'status: the mode and tunnel address');
    t.ok(st.externalService.newFlows.Tunnel > 0 && st.externalService.packets.encap > 0, 'status: tunnel counters');
    t.ok((await stream).ok, 'the stream meanwhile');
  });

  await t.test('Tunnel: a 16 MiB transfer comes back byte-exact', async (t) => {
    const r = JSON.parse(inClient(TRANSFER, [n1.ip, '30170', String(16 << 20)])) as { ok: boolean; got: number; peer: string };
    t.ok(r.ok, `sha256 equal (${r.got} bytes)`);
    t.match(r.peer, new RegExp(`^${client.ip.replace(/\./g, '\\.')}:`), 'seen from the client address');
  });

  await t.test('Tunnel across a narrower hop (route MTU 1400 to node2): PMTU discovery, byte-exact', async (t) => {
    ip(n1.ns, 'route', 'replace', `${n2.ip}/32`, 'dev', 'eth0', 'mtu', 'lock', '1400');
    // full-size packets one by one, as from a NIC without GRO (GSO packets
    // are resegmented by the encapsulation instead)
    ip(client.ns, 'link', 'set', 'dev', 'eth0', 'gso_max_segs', '1');
    t.teardown(() => {
      ip(n1.ns, 'route', 'del', `${n2.ip}/32`);
      ip(client.ns, 'link', 'set', 'dev', 'eth0', 'gso_max_segs', '65535');
    });
    const before = counters(n1).reasons['frag-needed']!;
    const r = JSON.parse(inClient(TRANSFER, [n1.ip, '30170', String(4 << 20)])) as { ok: boolean; got: number };
    t.ok(r.ok, `sha256 equal (${r.got} bytes)`);
    t.ok(counters(n1).reasons['frag-needed']! > before, 'node1 answered fragmentation-needed (1400 - 50)');
  });

  await t.test('agents restarted on both nodes mid-transfer: the tunnelled transfer goes on', async (t) => {
    const stream = startStream(client.ns, '203.0.113.70', 80, 7000, { interval: 20, chunk: 4096 });
    await sleep(1000);
    for (const n of [n1, n2]) {
      await agents.get(n.name)!.stop();
      const a = startAgent(n, { manifests: dir });
      agents.set(n.name, a);
      await a.ready;
    }
    const s = await stream;
    t.ok(s.ok, `stream through both restarts (${s.sent} bytes sent, ${s.received} back${s.error ? `, ${s.error}` : ''})`);
    t.same(peers(probe(client.ns, 'tcp', n1.ip, 30170, 2, 2000)), [client.ip], 'new flows tunnelled after the restarts');
  });

  await t.test('switched to DSR live: a running transfer survives; new flows reply straight from node2', async (t) => {
    const stream = startStream(client.ns, '198.51.100.70', 80, 6000, { interval: 20, chunk: 4096 });
    await sleep(1500);
    t.ok(await setMode({ bpfExternalServiceMode: 'DSR' }, 'DSR'), 'both agents in DSR');
    const before = counters(n2).tun;
    for (const [name, addr, tcpPort, udpPort] of targets) {
      t.same(peers(probe(client.ns, 'tcp', addr, tcpPort, 2, 2000)), [client.ip], `${name} TCP: client address kept`);
      t.same(peers(probe(client.ns, 'udp', addr, udpPort, 2, 2000)), [client.ip], `${name} UDP: client address kept`);
    }
    const after = counters(n2).tun;
    t.ok(
      after.DSR_REPLY.packets - before.DSR_REPLY.packets >= 12,
      `node2 replied direct (${after.DSR_REPLY.packets - before.DSR_REPLY.packets} packets)`,
    );
    const r = JSON.parse(inClient(TRANSFER, ['203.0.113.70', '80', String(8 << 20)])) as { ok: boolean; got: number };
    t.ok(r.ok, `DSR: 8 MiB byte-exact (${r.got} bytes)`);
    const s = await stream;
    t.ok(s.ok, `the transfer opened in Tunnel mode kept going (${s.sent} bytes sent, ${s.received} back${s.error ? `, ${s.error}` : ''})`);
  });

  await t.test('DSR with the client in bpfDSROptoutCIDRs: Tunnel for it', async (t) => {
    t.ok(await setMode({ bpfExternalServiceMode: 'DSR', bpfDSROptoutCIDRs: ['192.0.2.96/28'] }, 'DSR'));
    await sleep(1500); // the opt-out list is written with the mode, each second at the latest
    const before = counters(n2).tun;
    t.same(peers(probe(client.ns, 'tcp', n1.ip, 30170, 3, 2000)), [client.ip], 'client address kept');
    const after = counters(n2).tun;
    t.equal(after.DSR_REPLY.packets, before.DSR_REPLY.packets, 'no direct replies');
    t.ok(after.ENCAP.packets > before.ENCAP.packets, 'replies back through node1');
  });

  await t.test('SNAT (kube-proxy): the endpoint sees node1', async (t) => {
    t.ok(await setMode({ bpfExternalServiceMode: 'SNAT' }, 'SNAT'));
    for (const [name, addr, tcpPort, udpPort] of targets) {
      t.same(peers(probe(client.ns, 'tcp', addr, tcpPort, 2, 2000)), [n1.ip], `${name} TCP: node1's address`);
      t.same(peers(probe(client.ns, 'udp', addr, udpPort, 2, 2000)), [n1.ip], `${name} UDP: node1's address`);
    }
  });

  await t.test('mixed versions: node2 without the bpfproxy.io/decap annotation is reached with SNAT', async (t) => {
    t.ok(await setMode({ bpfExternalServiceMode: 'Tunnel' }, 'Tunnel'));
    const old = FAR.replace('name: node2, annotations: { bpfproxy.io/decap: vxlan-v1 }', 'name: node2');
    t.not(old, FAR, 'node2 as an older bpfproxy (or kube-proxy) node would be');
    writeFileSync(join(dir, 'far.yaml'), old);
    t.teardown(() => writeFileSync(join(dir, 'far.yaml'), FAR));
    await sleep(2500); // the endpoint/node table is rebuilt each second
    t.same(peers(probe(client.ns, 'tcp', n1.ip, 30170, 2, 2000)), [n1.ip], "TCP: SNAT, node1's address");
    t.same(peers(probe(client.ns, 'udp', n1.ip, 30171, 2, 2000)), [n1.ip], "UDP: SNAT, node1's address");
    writeFileSync(join(dir, 'far.yaml'), FAR);
    await sleep(2500);
    t.same(peers(probe(client.ns, 'tcp', n1.ip, 30170, 2, 2000)), [client.ip], 'annotated again: tunnelled, client address kept');
  });

  await t.test('a forged VXLAN packet from the client is dropped and counted on node2', async (t) => {
    const inner = frame({ src: client.ip, dst: n1.ip }, { proto: 'tcp', sport: 40404, dport: 30170, flags: TCP.SYN });
    const vx = Buffer.alloc(8);
    vx.writeUInt32BE(0x08000000, 0);
    vx.writeUInt32BE(0x627078 << 8, 4);
    const before = counters(n2).reasons['tun-forged']!;
    inClient(SEND_UDP, [n2.ip, '4789', Buffer.concat([vx, inner]).toString('hex')]);
    await sleep(300);
    t.equal(counters(n2).reasons['tun-forged'], before + 1, 'tun-forged + 1');
  });
});
