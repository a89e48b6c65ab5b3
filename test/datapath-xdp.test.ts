/**
 * The XDP data program (bpf/xdp_data.c, --xdp-acceleration) through
 * BPF_PROG_RUN, on the progrun node (test/helpers/progrun-node.ts) plus a
 * pod interface: NodePort to a local backend (translated, passed up),
 * to a remote backend (SNAT + DNAT, XDP_TX after the FIB lookup) and its
 * reply; the same rewrite as the TC program; everything XDP leaves to TC
 * passed untouched (ARP, IPv6 behind a hop-by-hop header (IPv6 of established
 * flows: test/datapath-xdp6.test.ts), fragments, ICMP, non-service traffic,
 * rejects, FIN/RST, unresolved neighbours); drops counted as TC counts them;
 * the route an established flow caches in its conntrack entry (its lifetime,
 * its length and TTL guards), the deadline written at most once a second;
 * Tunnel/DSR flows encapsulated byte for byte as TC does (padded, oversize
 * and truncated frames included).
 */
import t from 'tap';
import { native } from '../src/native/index.js';
import { frame, parseFrame, TCP, type FrameSpec, type L4 } from '../testkit/packet.js';
import { TunnelTables, tunnelCounters } from '../src/dataplane/bpf/tunnel.js';
import { ip } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns } from './helpers/env.js';
import { CLIENT, NODE_IP, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { runXdp } from './helpers/xdp.js';
import { CtDir } from '../src/dataplane/bpf/codecs.js';

const REMOTE_GW = '192.0.2.12';
const GW_MAC = '02:00:00:00:00:12';
const CLIENT_MAC = '02:00:00:00:00:64';
const LOCAL_BE = '10.244.3.11';
const REMOTE_BE = '10.244.2.11';

t.test('XDP data program through BPF_PROG_RUN', async (t) => {
  const node = await progrunNode(t);
  const { ns, ifindex, dp, rec } = node;
  ip(ns, 'link', 'add', 'pv0', 'type', 'veth', 'peer', 'name', 'pv1');
  ip(ns, 'link', 'set', 'pv0', 'up');
  ip(ns, 'link', 'set', 'pv1', 'up');
  ip(ns, 'route', 'add', '10.244.3.0/24', 'dev', 'pv0');
  ip(ns, 'neigh', 'add', REMOTE_GW, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
  ip(ns, 'neigh', 'add', CLIENT, 'lladdr', CLIENT_MAC, 'dev', 'd0', 'nud', 'permanent');
  const d0Mac = (JSON.parse(ip(ns, '-j', 'link', 'show', 'd0')) as Array<{ address: string }>)[0]!.address;
  const pv0 = inNetns(
    ns,
    () =>
      native()
        .interfaces()
        .find((i) => i.name === 'pv0')!.index,
  );
  dp.maps.podIfs.set({ ifindex: pv0 }, { v: 1 });

  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], `${svc} programmed`);
  sync('x/local', [
    fe('NodePort', '0.0.0.0', 30090, 'TCP', [be(LOCAL_BE, 8080)]),
    fe('NodePort', '0.0.0.0', 30090, 'UDP', [be(LOCAL_BE, 5353)]),
    fe('LoadBalancer', '198.51.100.20', 80, 'TCP', [be(LOCAL_BE, 8080)]),
    fe('ExternalIP', '203.0.113.20', 80, 'TCP', [be(LOCAL_BE, 8080)]),
  ]);
  sync('x/remote', [fe('NodePort', '0.0.0.0', 30091, 'TCP', [be(REMOTE_BE, 8080, false)])]);
  sync('x/empty', [fe('NodePort', '0.0.0.0', 30092, 'TCP', [])]);
  sync('x/nolocal', [fe('NodePort', '0.0.0.0', 30093, 'TCP', [be(REMOTE_BE, 8080, false)], { externalLocal: true })]);
  sync('x/ranged', [{ ...fe('LoadBalancer', '198.51.100.30', 80, 'TCP', [be(LOCAL_BE, 8080)]), sourceRanges: ['203.0.113.0/24'] }]);
  rec.setNodeAddresses([NODE_IP]);

  const xdp = (f: FrameSpec, l4: L4) => inNetns(ns, () => runXdp(dp, frame(f, l4), ifindex));
  const xdpRaw = (raw: Buffer) => inNetns(ns, () => runXdp(dp, raw, ifindex));
  const fromClient: FrameSpec = { src: CLIENT, dst: NODE_IP, srcMac: CLIENT_MAC, dstMac: d0Mac };

  t.test('NodePort to a local backend: translated in XDP, passed up, client address kept', async (t) => {
    const r = xdp(fromClient, { proto: 'tcp', sport: 42000, dport: 30090 });
    t.equal(r.verdict, 'pass');
    t.equal(r.out?.dst, LOCAL_BE);
    t.equal(r.out?.dport, 8080);
    t.equal(r.out?.src, CLIENT);
    t.equal(r.out?.sport, 42000);
    t.equal(r.out?.ttl, 64, 'TTL left to the stack that forwards it');
    t.ok(r.out?.ipCsumOk, 'IPv4 checksum valid');
    t.ok(r.out?.l4CsumOk, 'TCP checksum valid');
    t.equal(r.meta.length, 4, 'marked for TC in its metadata');
    t.equal(r.meta.readUInt32LE(0), 0x62707864, 'XDP_META_TRANSLATED');
    const ct = dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 42000, dport: 30090, proto: 6 });
    t.equal(ct?.dir, CtDir.FWD, 'conntrack entry created, shared with TC');
    // The TC hook on the same interface sees the translated frame: it must not translate it again.
    const tc = node.runRaw('fromData', r.raw);
    t.equal(tc.verdict, 'pass', 'TC passes the translated frame');
    t.same(tc.raw, r.raw, 'and leaves it byte for byte');
    const ack = xdp(fromClient, { proto: 'tcp', sport: 42000, dport: 30090, flags: TCP.ACK, payload: Buffer.from('GET /') });
    t.equal(ack.verdict, 'pass');
    t.equal(ack.out?.dst, LOCAL_BE, 'the established flow is served from conntrack');
    t.ok(ack.out?.l4CsumOk, 'payload checksum valid');
  });

  t.test('UDP, LoadBalancer IP and external IP to a local backend', async (t) => {
    const u = xdp(fromClient, { proto: 'udp', sport: 42001, dport: 30090, payload: Buffer.from('q') });
    t.equal(u.verdict, 'pass');
    t.equal(u.out?.dst, LOCAL_BE);
    t.equal(u.out?.dport, 5353);
    t.ok(u.out?.l4CsumOk, 'UDP checksum valid');
    for (const dst of ['198.51.100.20', '203.0.113.20']) {
      const r = xdp({ ...fromClient, dst }, { proto: 'tcp', sport: 42002, dport: 80 });
      t.equal(r.verdict, 'pass', dst);
      t.equal(r.out?.dst, LOCAL_BE, `${dst} to the backend`);
    }
  });

  t.test('NodePort to a remote backend: SNAT + DNAT, XDP_TX to the gateway; the reply reverse-translated and sent back', async (t) => {
    const r = xdp(fromClient, { proto: 'tcp', sport: 42010, dport: 30091 });
    t.equal(r.verdict, 'tx', 'out the interface it came in on');
    t.equal(r.out?.src, NODE_IP, 'SNAT to the node');
    t.ok(r.out!.sport! >= 20000 && r.out!.sport! <= 29999, `SNAT port ${r.out?.sport} in the SNAT range`);
    t.equal(r.out?.dst, REMOTE_BE);
    t.equal(r.out?.dport, 8080);
    t.equal(r.out?.dstMac, GW_MAC, 'to the route gateway');
    t.equal(r.out?.srcMac, d0Mac, 'from the interface');
    t.equal(r.out?.ttl, 63, 'TTL decremented: we forwarded it');
    t.ok(r.out?.ipCsumOk);
    t.ok(r.out?.l4CsumOk);
    const snatPort = r.out!.sport!;
    const reply = xdp(
      { src: REMOTE_BE, dst: NODE_IP, srcMac: GW_MAC, dstMac: d0Mac },
      { proto: 'tcp', sport: 8080, dport: snatPort, flags: TCP.SYN | TCP.ACK },
    );
    t.equal(reply.verdict, 'tx');
    t.equal(reply.out?.src, NODE_IP);
    t.equal(reply.out?.sport, 30091, 'from the NodePort the client addressed');
    t.equal(reply.out?.dst, CLIENT);
    t.equal(reply.out?.dport, 42010);
    t.equal(reply.out?.dstMac, CLIENT_MAC);
    t.ok(reply.out?.ipCsumOk);
    t.ok(reply.out?.l4CsumOk);
  });

  t.test('the same rewrite as the TC program for the same packet', async (t) => {
    const f = frame(fromClient, { proto: 'tcp', sport: 42020, dport: 30090 });
    const x = xdpRaw(f);
    const f2 = frame(fromClient, { proto: 'tcp', sport: 42021, dport: 30090 });
    const c = node.runRaw('fromData', f2);
    t.equal(c.verdict, 'redirect');
    t.same(
      { dst: x.out?.dst, dport: x.out?.dport, src: x.out?.src },
      { dst: c.out.dst, dport: c.out.dport, src: c.out.src },
      'same backend, same source',
    );
  });

  t.test('left to TC untouched', async (t) => {
    const arp = Buffer.alloc(42);
    arp.writeUInt16BE(0x0806, 12);
    const v6 = Buffer.alloc(74);
    v6.writeUInt16BE(0x86dd, 12);
    v6[14] = 0x60;
    const passes: Array<[string, Buffer]> = [
      ['ARP', arp],
      ['IPv6 behind a hop-by-hop header', v6],
      ['a later fragment', frame({ ...fromClient, fragOffset: 100 }, { proto: 'tcp', sport: 42030, dport: 30090 })],
      ['a first fragment', frame({ ...fromClient, moreFragments: true }, { proto: 'tcp', sport: 42031, dport: 30090 })],
      ['not a service', frame({ ...fromClient, dst: '192.0.2.77' }, { proto: 'tcp', sport: 42032, dport: 30090 })],
      ['a node port nothing listens on', frame(fromClient, { proto: 'tcp', sport: 42033, dport: 30999 })],
      ['a service without endpoints (TC rejects)', frame(fromClient, { proto: 'tcp', sport: 42034, dport: 30092 })],
      ['a stray ACK (TC counts it)', frame(fromClient, { proto: 'tcp', sport: 42035, dport: 30090, flags: TCP.ACK })],
      ['a FIN of a flow (TC closes it)', frame(fromClient, { proto: 'tcp', sport: 42000, dport: 30090, flags: TCP.FIN | TCP.ACK })],
      ['TTL 1 (the stack answers)', frame({ ...fromClient, ttl: 1 }, { proto: 'tcp', sport: 42036, dport: 30091 })],
      ['SCTP (TC adjusts its CRC32c)', frame(fromClient, { proto: 'sctp', sport: 42037, dport: 30090 })],
    ];
    const icmp = frame(fromClient, { proto: 'udp', sport: 1, dport: 2 });
    icmp[23] = 1; // protocol ICMP (checksums do not matter: it is passed before any is read)
    passes.push(['ICMP', icmp]);
    for (const [name, f] of passes) {
      const r = xdpRaw(f);
      t.equal(r.verdict, 'pass', name);
      t.same(r.raw, f, `${name}: byte for byte`);
      t.equal(r.meta.length, 0, `${name}: no mark`);
    }
    t.notOk(dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 42035, dport: 30090, proto: 6 }), 'no conntrack for a stray ACK');
    t.notOk(dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 42036, dport: 30091, proto: 6 }), 'none for the TTL-1 packet');
  });

  t.test('a remote backend whose neighbour is unknown: left to TC (bpf_redirect_neigh), no state', async (t) => {
    ip(ns, 'neigh', 'del', REMOTE_GW, 'dev', 'd0');
    t.teardown(() => ip(ns, 'neigh', 'add', REMOTE_GW, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent'));
    const f = frame(fromClient, { proto: 'tcp', sport: 42040, dport: 30091 });
    const r = xdpRaw(f);
    t.equal(r.verdict, 'pass');
    t.same(r.raw, f, 'untouched');
    t.notOk(dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 42040, dport: 30091, proto: 6 }), 'no conntrack: TC decides');
  });

  t.test('while a monitor listens, new flows go to TC (which emits their events); established ones stay in XDP', async (t) => {
    const est = xdp(fromClient, { proto: 'tcp', sport: 42060, dport: 30090 });
    t.equal(est.verdict, 'pass');
    t.equal(est.out?.dst, LOCAL_BE, 'a flow opened before the monitor');
    const ctl = dp.maps.monitorCtl.get({ v: 0 })!;
    dp.maps.monitorCtl.set({ v: 0 }, { ...ctl, untilNs: 2n ** 62n });
    t.teardown(() => dp.maps.monitorCtl.set({ v: 0 }, ctl));
    const f = frame(fromClient, { proto: 'tcp', sport: 42061, dport: 30090 });
    const r = xdpRaw(f);
    t.equal(r.verdict, 'pass');
    t.same(r.raw, f, 'the new flow is untouched: TC serves it');
    t.notOk(dp.maps.ct.get({ saddr: CLIENT, daddr: NODE_IP, sport: 42061, dport: 30090, proto: 6 }), 'and XDP created nothing');
    const again = xdp(fromClient, { proto: 'tcp', sport: 42060, dport: 30090, flags: TCP.ACK });
    t.equal(again.out?.dst, LOCAL_BE, 'the established flow is still translated in XDP');
  });

  t.test('an established flow reuses the route its flow looked up (about a second), then looks it up again', async (t) => {
    const key = { saddr: CLIENT, daddr: NODE_IP, sport: 42070, dport: 30091, proto: 6 };
    const syn = xdp(fromClient, { proto: 'tcp', sport: 42070, dport: 30091 });
    t.equal(syn.verdict, 'tx');
    t.equal(syn.out?.dstMac, GW_MAC);
    const ack = frame(fromClient, { proto: 'tcp', sport: 42070, dport: 30091, flags: TCP.ACK, payload: Buffer.from('GET /') });
    const cached = xdpRaw(ack);
    // The same frame from a conntrack entry without a cached route (the agent writes zeros): byte for byte the same.
    const entry = dp.maps.ct.get(key)!;
    dp.maps.ct.set(key, entry);
    const looked = xdpRaw(ack);
    t.equal(cached.verdict, 'tx');
    t.same(cached.raw, looked.raw, 'a cached route gives the frame a FIB lookup gives');
    // The gateway's MAC changes: within the cache's second the flow keeps the one it had ...
    const NEW_MAC = '02:00:00:00:00:13';
    ip(ns, 'neigh', 'replace', REMOTE_GW, 'lladdr', NEW_MAC, 'dev', 'd0', 'nud', 'permanent');
    t.teardown(() => ip(ns, 'neigh', 'replace', REMOTE_GW, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent'));
    const stale = xdpRaw(ack);
    t.equal(stale.out?.dstMac, GW_MAC, 'no FIB lookup for an established frame within the second');
    const other = xdp(fromClient, { proto: 'tcp', sport: 42071, dport: 30091 });
    t.equal(other.out?.dstMac, NEW_MAC, 'a new flow looks its route up');
    await new Promise((r) => setTimeout(r, 1100));
    const fresh = xdpRaw(ack);
    t.equal(fresh.verdict, 'tx');
    t.equal(fresh.out?.dstMac, NEW_MAC, 'after it, the route is looked up again');
  });

  t.test('a cached route is not taken by a frame longer than the route took, nor one whose TTL is spent', async (t) => {
    const syn = xdp(fromClient, { proto: 'tcp', sport: 42072, dport: 30091 });
    t.equal(syn.verdict, 'tx', 'route cached with a 60-byte packet');
    const big = frame(
      { ...fromClient, dontFragment: true },
      { proto: 'tcp', sport: 42072, dport: 30091, flags: TCP.ACK, payload: Buffer.alloc(1300) },
    );
    const r = xdpRaw(big);
    t.equal(r.verdict, 'pass', 'over the route MTU (1280): left to TC, which answers fragmentation-needed');
    t.same(r.raw, big, 'untouched');
    const ttl1 = frame({ ...fromClient, ttl: 1 }, { proto: 'tcp', sport: 42072, dport: 30091, flags: TCP.ACK });
    const t1 = xdpRaw(ttl1);
    t.equal(t1.verdict, 'pass', 'TTL 1: the stack answers time exceeded');
    t.same(t1.raw, ttl1, 'untouched');
    const fit = xdp(fromClient, { proto: 'tcp', sport: 42072, dport: 30091, flags: TCP.ACK, payload: Buffer.alloc(1200) });
    t.equal(fit.verdict, 'tx', 'a longer frame the route takes is forwarded (and looked up once)');
    t.equal(fit.out?.dstMac, GW_MAC);
  });

  t.test('an established flow writes its conntrack deadline when it moves by more than a second, not every frame', async (t) => {
    const key = { saddr: CLIENT, daddr: NODE_IP, sport: 42073, dport: 30091, proto: 6 };
    const syn = xdp(fromClient, { proto: 'tcp', sport: 42073, dport: 30091 });
    const snat = syn.out!.sport!;
    xdp(
      { src: REMOTE_BE, dst: NODE_IP, srcMac: GW_MAC, dstMac: d0Mac },
      { proto: 'tcp', sport: 8080, dport: snat, flags: TCP.SYN | TCP.ACK },
    );
    const ack = { proto: 'tcp' as const, sport: 42073, dport: 30091, flags: TCP.ACK };
    t.equal(xdp(fromClient, ack).verdict, 'tx');
    const first = dp.maps.ct.get(key)!;
    t.ok(first.state & 16, 'established (handshake done)');
    t.equal(xdp(fromClient, ack).verdict, 'tx');
    t.equal(dp.maps.ct.get(key)!.expiresNs, first.expiresNs, 'the next frame a moment later leaves the deadline');
    await new Promise((r) => setTimeout(r, 1100));
    t.equal(xdp(fromClient, ack).verdict, 'tx');
    t.ok(dp.maps.ct.get(key)!.expiresNs > first.expiresNs + 1_000_000_000n, 'a second later it moves');
    t.equal(xdp(fromClient, { ...ack, flags: TCP.FIN | TCP.ACK }).verdict, 'pass', "a FIN is still TC's");
  });

  t.test('Tunnel and DSR: an established flow is encapsulated in XDP, byte for byte as TC does it', async (t) => {
    const tun = new TunnelTables(dp.maps);
    const state = (mode: 'Tunnel' | 'DSR' | 'SNAT') =>
      tun.apply({ mode, local: NODE_IP, peers: [REMOTE_GW], endpoints: new Map([[REMOTE_BE, REMOTE_GW]]), dsrOptout: [] });
    t.teardown(() => state('SNAT'));
    const vniAt = (raw: Buffer) => raw.readUInt32BE(14 + 32) >>> 8;
    for (const [mode, sport, vni] of [
      ['Tunnel', 42080, 0x627078],
      ['DSR', 42081, 0x627079],
    ] as const) {
      state(mode);
      const syn = frame(fromClient, { proto: 'tcp', sport, dport: 30091 });
      const x = xdpRaw(syn);
      t.equal(x.verdict, 'pass', `${mode}: a new tunnelled flow is TC's`);
      t.same(x.raw, syn, `${mode}: untouched`);
      t.equal(node.runRaw('fromData', syn).verdict, 'redirect', `${mode}: TC encapsulates the SYN`);
      const ack = frame(fromClient, { proto: 'tcp', sport, dport: 30091, flags: TCP.ACK, payload: Buffer.from('GET / HTTP/1.1') });
      const viaTc = node.runRaw('fromData', ack);
      const before = tunnelCounters(dp.maps).ENCAP;
      const viaXdp = xdpRaw(ack);
      t.equal(viaXdp.verdict, 'tx', `${mode}: the ACK is encapsulated in XDP, out to the peer`);
      t.same(viaXdp.raw, viaTc.raw, `${mode}: the same bytes as TC's`);
      t.equal(vniAt(viaXdp.raw), vni, `${mode}: VNI`);
      t.equal(viaXdp.raw.length, ack.length + 50, `${mode}: 50 bytes of VXLAN`);
      t.ok(parseFrame(viaXdp.raw.subarray(14 + 36)).l4CsumOk, `${mode}: the inner frame as sent`);
      const after = tunnelCounters(dp.maps).ENCAP;
      t.same(after, { packets: before.packets + 1, bytes: before.bytes + ack.length + 50 }, `${mode}: counted as encapsulated`);
      // The route to the peer is cached in the flow's entry: a neighbour change within the second is not seen yet.
      ip(ns, 'neigh', 'replace', REMOTE_GW, 'lladdr', '02:00:00:00:00:13', 'dev', 'd0', 'nud', 'permanent');
      const cachedTun = xdpRaw(ack);
      ip(ns, 'neigh', 'replace', REMOTE_GW, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
      t.equal(cachedTun.out?.dstMac, GW_MAC, `${mode}: the peer's route from the conntrack entry, no FIB lookup`);
      // A frame padded past its IPv4 length (a short frame from a NIC): the padding goes inside as in TC.
      const padded = Buffer.concat([frame(fromClient, { proto: 'tcp', sport, dport: 30091, flags: TCP.ACK }), Buffer.alloc(6)]);
      t.same(xdpRaw(padded).raw, node.runRaw('fromData', padded).raw, `${mode}: a padded frame, the same bytes as TC's`);
      // Too big for the route once encapsulated: TC answers fragmentation-needed.
      const big = frame(
        { ...fromClient, dontFragment: true },
        { proto: 'tcp', sport, dport: 30091, flags: TCP.ACK, payload: Buffer.alloc(1440) },
      );
      const b = xdpRaw(big);
      t.equal(b.verdict, 'pass', `${mode}: ${big.length - 14} + 50 bytes over the 1500-byte link: TC's`);
      t.same(b.raw, big, `${mode}: untouched`);
    }
    // Cut short: dropped as malformed before anything is looked up.
    const cut = frame(fromClient, { proto: 'tcp', sport: 42080, dport: 30091, flags: TCP.ACK }).subarray(0, 14 + 20 + 10);
    const before = reasonCount(dp, 'malformed');
    t.equal(xdpRaw(cut).verdict, 'drop', 'a truncated frame of a tunnelled flow is dropped');
    t.equal(reasonCount(dp, 'malformed'), before + 1, 'counted as malformed');
  });

  t.test('drops counted in the reason counters as TC counts them', async (t) => {
    const cases: Array<[string, Buffer, string]> = [];
    const good = frame(fromClient, { proto: 'tcp', sport: 42050, dport: 30090 });
    cases.push(['IPv4 header cut short', good.subarray(0, 14 + 12), 'malformed']);
    cases.push(['TCP header cut short', good.subarray(0, 14 + 20 + 10), 'malformed']);
    const longer = Buffer.from(good);
    longer.writeUInt16BE(1400, 16);
    cases.push(['total length past the frame', longer, 'malformed']);
    const ihl = Buffer.from(good);
    ihl[14] = 0x44;
    cases.push(['IHL below 5', ihl, 'malformed']);
    cases.push([
      'one of our addresses as source',
      frame({ ...fromClient, src: NODE_IP }, { proto: 'tcp', sport: 42051, dport: 30090 }),
      'spoofed',
    ]);
    cases.push([
      'eTP=Local without a local endpoint',
      frame(fromClient, { proto: 'tcp', sport: 42052, dport: 30093 }),
      'no-local-endpoints',
    ]);
    cases.push([
      'a LoadBalancer IP from outside its loadBalancerSourceRanges',
      frame({ ...fromClient, dst: '198.51.100.30' }, { proto: 'tcp', sport: 42053, dport: 80 }),
      'lb-source-range',
    ]);
    const inRange = xdp({ ...fromClient, src: '203.0.113.5', dst: '198.51.100.30' }, { proto: 'tcp', sport: 42054, dport: 80 });
    t.equal(inRange.verdict, 'pass', 'from inside the source ranges: served');
    t.equal(inRange.out?.dst, LOCAL_BE);
    for (const [name, f, reason] of cases) {
      const before = reasonCount(dp, reason);
      const r = xdpRaw(f);
      t.equal(r.verdict, 'drop', name);
      t.equal(reasonCount(dp, reason), before + 1, `${name}: counted as ${reason}`);
    }
  });
});
