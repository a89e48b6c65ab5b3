/**
 * bpfExternalServiceMode for an IPv6 service in the two-node lab: the
 * external client (fd00:192:0:2::100) reaches an IPv6 service whose only
 * endpoint is on node2 through node1's IPv6 NodePort; node1 carries the
 * IPv6 packet in the IPv4 VXLAN to node2 (192.0.2.11 -> 192.0.2.12). Tunnel
 * and DSR keep the client's IPv6 address for TCP and UDP (as the echo
 * server saw it), a transfer comes back byte-exact, DSR replies leave node2
 * straight to the client, and a node that does not say vxlan-v1-ipv6 is
 * reached with SNAT. The Node objects list their IPv6 InternalIP first (the
 * tunnel still runs between the IPv4 ones).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { probe, type ProbeAttempt } from '../lab/lab.js';
import { nsPath } from '../testkit/netns.js';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { tunnelCounters, tunnelMode } from '../src/dataplane/bpf/tunnel.js';
import { labWithAgents } from './helpers/lab-agents.js';
import { sleep } from './helpers/wait.js';

const node = (name: string, n: number, decap: string) => `apiVersion: v1
kind: Node
metadata: { name: ${name}, annotations: { bpfproxy.io/decap: '${decap}' } }
status: { addresses: [{ type: InternalIP, address: 'fd00:192:0:2::1${n}' }, { type: InternalIP, address: 192.0.2.1${n} }] }
`;
const BOTH = 'vxlan-v1,vxlan-v1-ipv6';

const FAR6 = (node2Decap = BOTH) => `${node('node1', 1, BOTH)}---
${node('node2', 2, node2Decap)}---
apiVersion: v1
kind: Service
metadata: { name: far6, namespace: default }
spec:
  type: NodePort
  clusterIP: 'fd00:10:96::70'
  clusterIPs: ['fd00:10:96::70']
  ipFamilies: [IPv6]
  ipFamilyPolicy: SingleStack
  selector: { app: far6 }
  ports:
    - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30172 }
    - { name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30173 }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: far6-1, namespace: default, labels: { kubernetes.io/service-name: far6 } }
addressType: IPv6
ports: [{ name: http, port: 8080, protocol: TCP }, { name: dns, port: 5353, protocol: UDP }]
endpoints: [{ addresses: ['fd00:10:244:2::11'], nodeName: node2 }]
`;

const felix = (mode: string) => `apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: { name: default }
spec: { bpfExternalServiceMode: ${mode} }
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

/** The address the echo server saw: "[ip]:port" (IPv6) or "ip:port". */
const peerIp = (peer: string): string => (peer.startsWith('[') ? peer.slice(1, peer.indexOf(']')) : peer.slice(0, peer.lastIndexOf(':')));
const peers = (a: ProbeAttempt[]) => [...new Set(a.map((x) => (x.ok ? peerIp(x.peer!) : `!${x.error}`)))];

t.test('Tunnel and DSR for an IPv6 service across the two-node lab', async (t) => {
  const { lab, dir } = await labWithAgents(t, { tag: 'bpxtun6', manifests: { 'far6.yaml': FAR6(), 'felix.yaml': felix('Tunnel') } });
  const [n1, n2] = lab.nodes as [(typeof lab.nodes)[0], (typeof lab.nodes)[0]];
  const client = lab.client;
  const state = (n: typeof n1) => {
    const m = openPinnedMaps(n.pinDir);
    try {
      return { tun: tunnelCounters(m.maps), mode: tunnelMode(m.maps), eps6: m.maps.tun6Eps.entries().map(([k, v]) => [k.addr, v.node]) };
    } finally {
      m.close();
    }
  };
  const waitFor = async (ok: () => boolean, ms = 15_000) => {
    const until = Date.now() + ms;
    while (Date.now() < until && !ok()) await sleep(200);
    return ok();
  };
  const has = () => state(n1).eps6.some(([a]) => a === 'fd00:10:244:2::11');
  t.ok(
    await waitFor(() => state(n1).mode.local === n1.ip && has()),
    'node1: Tunnel from its IPv4 InternalIP (listed second), the IPv6 endpoint mapped',
  );
  t.same(
    [...new Set(state(n1).eps6.map(([, at]) => at))],
    [n2.ip],
    "node2's IPv6 endpoints (this one and the examples') map to node2's IPv4 address",
  );

  await t.test('Tunnel: the endpoint on node2 sees the IPv6 client, TCP and UDP; a transfer is byte-exact', async (t) => {
    const before = state(n2).tun;
    t.same(peers(probe(client.ns, 'tcp', n1.ip6!, 30172, 3, 2000)), [client.ip6], 'TCP: client address kept');
    t.same(peers(probe(client.ns, 'udp', n1.ip6!, 30173, 3, 2000)), [client.ip6], 'UDP: client address kept');
    const f = join(dir, 'transfer6.cjs');
    writeFileSync(f, TRANSFER);
    const r = spawnSync('nsenter', [`--net=${nsPath(client.ns)}`, '--', process.execPath, f, n1.ip6!, '30172', String(4 << 20)], {
      encoding: 'utf8',
      timeout: 40_000,
    });
    const x = JSON.parse(r.stdout.trim() || '{}') as { ok?: boolean; got?: number; peer?: string };
    t.ok(x.ok, `4 MiB byte-exact (${x.got} bytes)`);
    t.equal(peerIp(x.peer ?? ''), client.ip6, 'seen from the client address');
    const after = state(n2).tun;
    t.ok(after.NEW_REMOTE.packets - before.NEW_REMOTE.packets >= 7, 'node2 took the flows from the tunnel');
    t.ok(after.ENCAP.packets > before.ENCAP.packets, 'and sent the replies back through it');
    t.equal(after.DSR_REPLY.packets, before.DSR_REPLY.packets, 'none direct');
  });

  await t.test('DSR: replies straight from node2, client address kept', async (t) => {
    writeFileSync(join(dir, 'felix.yaml'), felix('DSR'));
    t.ok(await waitFor(() => state(n1).mode.mode === 'DSR' && state(n2).mode.mode === 'DSR'), 'both agents in DSR');
    const before = state(n2).tun;
    t.same(peers(probe(client.ns, 'tcp', n1.ip6!, 30172, 3, 2000)), [client.ip6], 'TCP: client address kept');
    t.same(peers(probe(client.ns, 'udp', n1.ip6!, 30173, 3, 2000)), [client.ip6], 'UDP: client address kept');
    const after = state(n2).tun;
    t.ok(
      after.DSR_REPLY.packets - before.DSR_REPLY.packets >= 6,
      `node2 replied direct (${after.DSR_REPLY.packets - before.DSR_REPLY.packets} packets)`,
    );
  });

  await t.test('node2 not saying vxlan-v1-ipv6 (an older bpfproxy): its IPv6 endpoints are reached with SNAT', async (t) => {
    writeFileSync(join(dir, 'far6.yaml'), FAR6('vxlan-v1'));
    t.ok(await waitFor(() => state(n1).eps6.length === 0), 'the IPv6 endpoint left bpfproxy_tun6_eps');
    t.same(peers(probe(client.ns, 'tcp', n1.ip6!, 30172, 2, 2000)), [n1.ip6], "TCP: node1's IPv6 address (SNAT)");
  });
});
