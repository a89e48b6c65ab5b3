/**
 * The TC hooks' per-flow route cache (bpf/lib/fib.h, struct ct_fwd in the
 * conntrack entry) through BPF_PROG_RUN, IPv4 (service.h translate_ct())
 * and IPv6 (service6.h): an established flow's packets reuse the egress
 * interface and MACs its last resolved FIB lookup gave for about a second
 * (a neighbour change is not seen within it, a new flow sees it at once,
 * the flow sees it after the second), byte for byte what a lookup gives;
 * a packet longer than the route took (too big: fragmentation-needed /
 * packet too big) and a spent TTL / hop limit take the full path; an
 * unresolved neighbour (bpf_redirect_neigh) is never cached.
 */
import t from 'tap';
import { TCP, type FrameSpec, type L4 } from '../testkit/packet.js';
import { frame6, ICMP6, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { ip } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { CLIENT, NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { progrun6Node, POD6 } from './helpers/progrun6.js';
import { reasonCount } from './helpers/progrun.js';

const GW4 = '192.0.2.12';
const GW6 = '2001:db8:1::12';
const GW_MAC = '02:00:00:00:00:12';
const NEW_MAC = '02:00:00:00:00:13';
const CLIENT_MAC = '02:00:00:00:00:64';
const REMOTE_BE = '10.244.2.11';
const REMOTE_BE6 = 'fd00:10:244:2::11';
const CIP6 = 'fd00:10:96::70';

/** The destination MAC of a frame as the program left it. */
const dstMac = (raw: Buffer) => [...raw.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('IPv4: established flows reuse their route for about a second', async (t) => {
  const node = await progrunNode(t);
  const { ns, dp, rec } = node;
  ip(ns, 'neigh', 'add', GW4, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
  ip(ns, 'neigh', 'add', CLIENT, 'lladdr', CLIENT_MAC, 'dev', 'd0', 'nud', 'permanent');
  t.same(rec.syncService('c/remote', [fe('NodePort', '0.0.0.0', 30091, 'TCP', [be(REMOTE_BE, 8080, false)])]).problems, []);
  rec.setNodeAddresses([NODE_IP]);
  const fromClient: FrameSpec = { src: CLIENT, dst: NODE_IP, srcMac: CLIENT_MAC, dstMac: '02:00:00:00:00:11' };
  const run = (f: FrameSpec, l4: L4) => node.run('fromData', f, l4);
  const ack = (sport: number, payload = Buffer.from('GET /')): L4 => ({ proto: 'tcp', sport, dport: 30091, flags: TCP.ACK, payload });
  const neigh = (mac: string) => ip(ns, 'neigh', 'replace', GW4, 'lladdr', mac, 'dev', 'd0', 'nud', 'permanent');

  t.test('cached within the second, byte for byte what a lookup gives; a neighbour change seen after it', async (t) => {
    t.teardown(() => neigh(GW_MAC));
    const key = { saddr: CLIENT, daddr: NODE_IP, sport: 42070, dport: 30091, proto: 6 };
    t.equal(run(fromClient, { proto: 'tcp', sport: 42070, dport: 30091 }).verdict, 'redirect', 'SYN forwarded');
    const first = run(fromClient, ack(42070));
    t.equal(first.verdict, 'redirect');
    t.equal(first.out.dstMac, GW_MAC, 'looked up, and the route cached');
    const cached = run(fromClient, ack(42070));
    // The agent writes the entry with zeros: nothing cached, the next packet looks up.
    dp.maps.ct.set(key, dp.maps.ct.get(key)!);
    const looked = run(fromClient, ack(42070));
    t.equal(cached.verdict, 'redirect');
    t.same(cached.raw, looked.raw, 'a cached route gives the packet a FIB lookup gives');
    t.equal(cached.out.dst, REMOTE_BE);
    t.equal(cached.out.ttl, 63, 'TTL decremented');
    t.ok(cached.out.ipCsumOk, 'IP checksum valid');

    neigh(NEW_MAC);
    t.equal(run(fromClient, ack(42070)).out.dstMac, GW_MAC, 'within the second the flow keeps the MAC it had (no lookup)');
    t.equal(run(fromClient, { proto: 'tcp', sport: 42071, dport: 30091 }).out.dstMac, NEW_MAC, 'a new flow looks its route up');
    await wait(1100);
    const fresh = run(fromClient, ack(42070));
    t.equal(fresh.verdict, 'redirect');
    t.equal(fresh.out.dstMac, NEW_MAC, 'after it, the route is looked up again');
  });

  t.test('a packet longer than the route took, or with its TTL spent, takes the full path', async (t) => {
    run(fromClient, { proto: 'tcp', sport: 42072, dport: 30091 });
    t.equal(run(fromClient, ack(42072)).out.dstMac, GW_MAC, 'route cached with a short packet');
    const big = run({ ...fromClient, dontFragment: true }, ack(42072, Buffer.alloc(1300)));
    t.equal(big.verdict, 'redirect', 'answered');
    t.equal(big.out.proto, 1, 'ICMP fragmentation-needed back to the client (route MTU 1280), not forwarded');
    t.equal(big.out.dst, CLIENT);
    const spent = reasonCount(dp, 'ttl');
    const one = run({ ...fromClient, ttl: 1 }, ack(42072));
    t.equal(one.verdict, 'pass', 'TTL 1: to the stack (it answers time exceeded)');
    t.equal(one.out.ttl, 1, 'not decremented');
    t.equal(reasonCount(dp, 'ttl'), spent + 1, 'counted as ttl');
    const fit = run(fromClient, ack(42072, Buffer.alloc(1200)));
    t.equal(fit.verdict, 'redirect', 'a longer packet the route takes is forwarded (looked up once)');
    t.equal(fit.out.dstMac, GW_MAC);
  });

  t.test('an unresolved neighbour is not cached: bpf_redirect_neigh until it resolves', async (t) => {
    t.teardown(() => neigh(GW_MAC));
    ip(ns, 'neigh', 'del', GW4, 'dev', 'd0');
    run(fromClient, { proto: 'tcp', sport: 42073, dport: 30091 });
    const un = run(fromClient, ack(42073));
    t.equal(un.verdict, 'redirect', 'bpf_redirect_neigh');
    t.equal(un.out.dstMac, '02:00:00:00:00:11', 'MACs left to the neighbour subsystem');
    neigh(NEW_MAC);
    t.equal(run(fromClient, ack(42073)).out.dstMac, NEW_MAC, 'resolved: the next packet is looked up, not served from a cache');
  });
});

t.test('IPv6: established flows reuse their route for about a second', async (t) => {
  const node = await progrun6Node(t);
  const { ns, dp, rec } = node;
  ip(ns, '-6', 'neigh', 'add', GW6, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
  t.same(rec.syncService('c/remote6', [fe('ClusterIP', CIP6, 80, 'TCP', [be(REMOTE_BE6, 8080, false)])]).problems, []);
  const fromPod: Frame6Spec = { src: POD6, dst: CIP6 };
  const run = (f: Frame6Spec, l4: L4v6) => node.runRaw('fromPod', frame6(f, l4));
  const ack = (sport: number, payload = Buffer.from('GET /')): L4v6 => ({ proto: 'tcp', sport, dport: 80, flags: TCP.ACK, payload });
  const neigh = (mac: string) => ip(ns, '-6', 'neigh', 'replace', GW6, 'lladdr', mac, 'dev', 'd0', 'nud', 'permanent');

  t.test('cached within the second, byte for byte what a lookup gives; a neighbour change seen after it', async (t) => {
    t.teardown(() => neigh(GW_MAC));
    const key = { saddr: POD6, daddr: CIP6, sport: 43070, dport: 80, proto: 6 };
    t.equal(run(fromPod, { proto: 'tcp', sport: 43070, dport: 80 }).verdict, 'redirect', 'SYN forwarded');
    const first = run(fromPod, ack(43070));
    t.equal(dstMac(first.raw), GW_MAC, 'looked up, and the route cached');
    const cached = run(fromPod, ack(43070));
    dp.maps.ct6.set(key, dp.maps.ct6.get(key)!);
    const looked = run(fromPod, ack(43070));
    t.equal(cached.verdict, 'redirect');
    t.same(cached.raw, looked.raw, 'a cached route gives the packet a FIB lookup gives');
    t.equal(cached.out.dst, REMOTE_BE6);
    t.equal(cached.out.hopLimit, 63, 'hop limit decremented');

    neigh(NEW_MAC);
    t.equal(dstMac(run(fromPod, ack(43070)).raw), GW_MAC, 'within the second the flow keeps the MAC it had (no lookup)');
    t.equal(dstMac(run(fromPod, { proto: 'tcp', sport: 43071, dport: 80 }).raw), NEW_MAC, 'a new flow looks its route up');
    await wait(1100);
    const fresh = run(fromPod, ack(43070));
    t.equal(fresh.verdict, 'redirect');
    t.equal(dstMac(fresh.raw), NEW_MAC, 'after it, the route is looked up again');
  });

  t.test('a packet longer than the route took, or with its hop limit spent, takes the full path', async (t) => {
    run(fromPod, { proto: 'tcp', sport: 43072, dport: 80 });
    t.equal(dstMac(run(fromPod, ack(43072)).raw), GW_MAC, 'route cached with a short packet');
    const big = run(fromPod, ack(43072, Buffer.alloc(1300)));
    t.equal(big.verdict, 'redirect', 'answered');
    t.equal(big.out.icmp?.type, ICMP6.PKT_TOOBIG, 'packet too big back to the pod (route MTU 1280), not forwarded');
    t.equal(big.out.icmp?.info, 1280);
    t.equal(big.out.dst, POD6);
    const spent = reasonCount(dp, 'ttl');
    const one = run({ ...fromPod, hopLimit: 1 }, ack(43072));
    t.equal(one.verdict, 'pass', 'hop limit 1: to the stack (it answers time exceeded)');
    t.equal(one.out.hopLimit, 1, 'not decremented');
    t.equal(reasonCount(dp, 'ttl'), spent + 1, 'counted as ttl');
    const fit = run(fromPod, ack(43072, Buffer.alloc(1200)));
    t.equal(fit.verdict, 'redirect', 'a longer packet the route takes is forwarded (looked up once)');
    t.equal(dstMac(fit.raw), GW_MAC);
  });

  t.test('an unresolved neighbour is not cached: bpf_redirect_neigh until it resolves', async (t) => {
    t.teardown(() => neigh(GW_MAC));
    ip(ns, '-6', 'neigh', 'del', GW6, 'dev', 'd0');
    run(fromPod, { proto: 'tcp', sport: 43073, dport: 80 });
    const un = run(fromPod, ack(43073));
    t.equal(un.verdict, 'redirect', 'bpf_redirect_neigh');
    t.not(dstMac(un.raw), GW_MAC, 'MACs left to the neighbour subsystem');
    neigh(NEW_MAC);
    t.equal(dstMac(run(fromPod, ack(43073)).raw), NEW_MAC, 'resolved: the next packet is looked up, not served from a cache');
  });
});
