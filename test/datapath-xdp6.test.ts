/**
 * XDP acceleration for IPv6 (bpf/lib/xdp6.h) through BPF_PROG_RUN, on the
 * IPv6 progrun node (test/helpers/progrun6.ts) plus a pod interface. New
 * flows are opened by the TC program (XDP passes them); then, table-driven,
 * each established frame goes through TC and through XDP and must leave
 * both byte for byte the same: the client's direction (SNAT + DNAT to a
 * remote backend, DNAT to a host-network backend), the remote backend's
 * replies, TCP and UDP, payload lengths odd and even, a UDP checksum of 0,
 * a padded frame, the route served from the conntrack entry's cache. A
 * local pod backend: translated and passed up, the bytes TC would send but
 * for the hop limit and MACs the stack's forwarding writes. Everything XDP
 * leaves to TC passes untouched (new flows, ICMPv6, extension headers,
 * fragments, SCTP, FIN/RST, hop limit 1, frames over the cached route's
 * length, unresolved neighbours, non-service traffic); drops are counted
 * as TC counts them (NetworkPolicy on an established flow included); the
 * route cache's lifetime and the deadline written at most once a second as
 * for IPv4; truncated and byte-mutated frames of established flows never
 * make XDP abort, pass anything altered without its mark, or break a
 * checksum that held.
 */
import t from 'tap';
import { frame6, ICMP6, parseFrame6, TCP, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { ip } from '../testkit/netns.js';
import { native } from '../src/native/index.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns } from './helpers/env.js';
import { reasonCount } from './helpers/progrun.js';
import { CLIENT6, NODE6, progrun6Node } from './helpers/progrun6.js';
import { runXdp, type XdpRunResult } from './helpers/xdp.js';
import type { Run6 } from './helpers/progrun.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { IDENTITY_WORLD, type CompiledPolicy } from '../src/model/policy/compiled.js';
import { Prng, seedFromEnv } from './helpers/fuzz/prng.js';

const GW6 = '2001:db8:1::12';
const GW_MAC = '02:00:00:00:00:12';
const NEW_MAC = '02:00:00:00:00:13';
const CLIENT_MAC = '02:00:00:00:00:64';
const REMOTE_BE6 = 'fd00:10:244:2::11';
const LOCAL_BE6 = 'fd00:10:244:3::11';
const LB6 = '2001:db8:ff::10';
const XDP_META_TRANSLATED = 0x62707864;

const macOf = (raw: Buffer, at: number) => [...raw.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('XDP acceleration, IPv6, through BPF_PROG_RUN', async (t) => {
  const node = await progrun6Node(t);
  const { ns, ifindex, dp, rec } = node;
  ip(ns, '-6', 'neigh', 'add', GW6, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
  ip(ns, '-6', 'neigh', 'add', CLIENT6, 'lladdr', CLIENT_MAC, 'dev', 'd0', 'nud', 'permanent');
  ip(ns, 'link', 'add', 'pv0', 'type', 'veth', 'peer', 'name', 'pv1');
  ip(ns, 'link', 'set', 'pv0', 'up');
  ip(ns, 'link', 'set', 'pv1', 'up');
  ip(ns, '-6', 'route', 'add', 'fd00:10:244:3::/64', 'dev', 'pv0');
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
  sync('x6/remote', [
    fe('NodePort', '::', 30091, 'TCP', [be(REMOTE_BE6, 8080, false)]),
    fe('NodePort', '::', 30091, 'UDP', [be(REMOTE_BE6, 5353, false)]),
    fe('LoadBalancer', LB6, 80, 'TCP', [be(REMOTE_BE6, 8080, false)]),
  ]);
  sync('x6/local', [fe('NodePort', '::', 30090, 'TCP', [be(LOCAL_BE6, 8080)])]);
  sync('x6/host', [fe('NodePort', '::', 30094, 'TCP', [be(NODE6, 8443)])]);
  sync('x6/sctp', [fe('NodePort', '::', 30095, 'SCTP', [be(REMOTE_BE6, 9000, false)])]);
  rec.setNodeAddresses(['192.0.2.11', NODE6]);

  const xdpRaw = (raw: Buffer): XdpRunResult => inNetns(ns, () => runXdp(dp, raw, ifindex));
  const tcRaw = (raw: Buffer): Run6 => node.runRaw('fromData', raw);
  const fromClient = (dst = NODE6): Frame6Spec => ({ src: CLIENT6, dst, srcMac: CLIENT_MAC, dstMac: d0Mac });
  const fromBackend: Frame6Spec = { src: REMOTE_BE6, dst: NODE6, srcMac: GW_MAC, dstMac: d0Mac };

  /** Open a flow through TC (XDP leaves new flows to it); the SNAT port the backend sees, its reply through TC too. */
  const open = (proto: 'tcp' | 'udp', sport: number, dport: number, dst = NODE6): { snat: number; backend: string } => {
    const syn = tcRaw(frame6(fromClient(dst), { proto, sport, dport, ...(proto === 'tcp' ? { flags: TCP.SYN } : {}) }));
    t.ok(syn.verdict === 'redirect' || syn.verdict === 'pass', `flow ${sport}->${dport} opened by TC (${syn.verdict})`);
    const snat = syn.out.sport!;
    if (syn.out.dst === REMOTE_BE6) {
      const back = proto === 'tcp' ? { flags: TCP.SYN | TCP.ACK } : {};
      tcRaw(frame6(fromBackend, { proto, sport: syn.out.dport!, dport: snat, ...back }));
    }
    return { snat, backend: syn.out.dst };
  };

  t.test('established frames: XDP writes the bytes TC writes', async (t) => {
    interface Row {
      name: string;
      proto: 'tcp' | 'udp';
      sport: number;
      dport: number;
      dst?: string;
      /** the client's frame, or the remote backend's reply */
      dir: 'client' | 'reply';
      payload: number;
      verdict: 'tx' | 'pass';
      /** bytes appended past the IPv6 payload length (a NIC's padding) */
      pad?: number;
      /** the UDP checksum written as 0 (none sent) */
      zeroCsum?: boolean;
    }
    const rows: Row[] = [
      {
        name: 'TCP to a remote backend (SNAT + DNAT), 5 bytes',
        proto: 'tcp',
        sport: 43000,
        dport: 30091,
        dir: 'client',
        payload: 5,
        verdict: 'tx',
      },
      {
        name: 'TCP to a remote backend, 1000 bytes',
        proto: 'tcp',
        sport: 43000,
        dport: 30091,
        dir: 'client',
        payload: 1000,
        verdict: 'tx',
      },
      {
        name: 'TCP to a remote backend, 333 bytes (odd)',
        proto: 'tcp',
        sport: 43000,
        dport: 30091,
        dir: 'client',
        payload: 333,
        verdict: 'tx',
      },
      {
        name: "TCP: the remote backend's reply, reverse-translated",
        proto: 'tcp',
        sport: 43000,
        dport: 30091,
        dir: 'reply',
        payload: 77,
        verdict: 'tx',
      },
      {
        name: 'TCP to a LoadBalancer IP, remote backend',
        proto: 'tcp',
        sport: 43001,
        dport: 80,
        dst: LB6,
        dir: 'client',
        payload: 20,
        verdict: 'tx',
      },
      { name: 'TCP, LoadBalancer IP: the reply', proto: 'tcp', sport: 43001, dport: 80, dst: LB6, dir: 'reply', payload: 1, verdict: 'tx' },
      { name: 'UDP to a remote backend', proto: 'udp', sport: 43002, dport: 30091, dir: 'client', payload: 1, verdict: 'tx' },
      { name: 'UDP: the reply', proto: 'udp', sport: 43002, dport: 30091, dir: 'reply', payload: 512, verdict: 'tx' },
      {
        name: 'UDP with checksum 0 (left 0, as TC leaves it)',
        proto: 'udp',
        sport: 43002,
        dport: 30091,
        dir: 'client',
        payload: 9,
        verdict: 'tx',
        zeroCsum: true,
      },
      {
        name: 'a padded frame (6 bytes past the payload length)',
        proto: 'tcp',
        sport: 43000,
        dport: 30091,
        dir: 'client',
        payload: 3,
        verdict: 'tx',
        pad: 6,
      },
      {
        name: 'TCP to a host-network backend (DNAT, passed up)',
        proto: 'tcp',
        sport: 43003,
        dport: 30094,
        dir: 'client',
        payload: 40,
        verdict: 'pass',
      },
    ];
    const flows = new Map<string, { snat: number; backend: string }>();
    for (const r of rows) {
      const id = `${r.proto}/${r.sport}/${r.dport}`;
      let flow = flows.get(id);
      if (!flow) {
        flow = open(r.proto, r.sport, r.dport, r.dst);
        flows.set(id, flow);
      }
      const payload = Buffer.alloc(r.payload, r.payload & 0xff);
      const flags = r.proto === 'tcp' ? { flags: TCP.ACK | TCP.PSH } : {};
      let f =
        r.dir === 'client'
          ? frame6(fromClient(r.dst), { proto: r.proto, sport: r.sport, dport: r.dport, payload, ...flags })
          : frame6(fromBackend, {
              proto: r.proto,
              sport: r.proto === 'tcp' ? 8080 : 5353,
              dport: flow.snat,
              payload,
              ...flags,
            });
      if (r.zeroCsum) f.writeUInt16BE(0, 14 + 40 + 6);
      if (r.pad) f = Buffer.concat([f, Buffer.alloc(r.pad, 0xee)]);
      const tc = tcRaw(Buffer.from(f));
      const x = xdpRaw(Buffer.from(f));
      t.equal(x.verdict, r.verdict, `${r.name}: ${r.verdict}`);
      t.same(x.raw, tc.raw, `${r.name}: byte for byte TC's`);
      const again = xdpRaw(Buffer.from(f));
      t.same(again.raw, tc.raw, `${r.name}: and again from the route cached in the entry`);
      const out = parseFrame6(x.raw);
      t.ok(r.zeroCsum ? x.raw.readUInt16BE(14 + 40 + 6) === 0 : out.l4CsumOk, `${r.name}: checksum ${r.zeroCsum ? 'still 0' : 'valid'}`);
      if (r.verdict === 'tx') {
        t.equal(out.hopLimit, 63, `${r.name}: hop limit decremented (forwarded)`);
        t.equal(macOf(x.raw, 0), r.dir === 'client' ? GW_MAC : CLIENT_MAC, `${r.name}: to the next hop's MAC`);
        t.equal(x.meta.length, 0, `${r.name}: no mark`);
      } else {
        t.equal(x.meta.length, 4, `${r.name}: marked for the TC hook`);
        t.equal(x.meta.readUInt32LE(0), XDP_META_TRANSLATED, `${r.name}: XDP_META_TRANSLATED`);
      }
      if (r.dir === 'client') t.equal(out.dst, flow.backend, `${r.name}: to the backend`);
      else t.same([out.src, out.dst], [r.dst ?? NODE6, CLIENT6], `${r.name}: from the address the client addressed`);
    }
  });

  t.test('a pod backend on this node: translated and passed up (the stack forwards it into the veth)', async (t) => {
    open('tcp', 43010, 30090);
    const f = frame6(fromClient(), { proto: 'tcp', sport: 43010, dport: 30090, flags: TCP.ACK, payload: Buffer.from('GET /') });
    const tc = tcRaw(Buffer.from(f));
    const x = xdpRaw(Buffer.from(f));
    t.equal(x.verdict, 'pass');
    t.equal(x.meta.readUInt32LE(0), XDP_META_TRANSLATED, 'marked: the TC hook leaves it');
    const out = parseFrame6(x.raw);
    t.same([out.src, out.sport, out.dst, out.dport], [CLIENT6, 43010, LOCAL_BE6, 8080], 'DNAT, client address kept');
    t.equal(out.hopLimit, 64, 'hop limit left to the stack that forwards it');
    // TC sends it itself: hop limit and MACs are its forwarding's; the IPv6 packet is otherwise the same.
    const mine = Buffer.from(x.raw.subarray(14));
    mine[7] = tc.raw[14 + 7]!;
    t.same(mine, tc.raw.subarray(14), 'the IPv6 packet TC writes, but for the hop limit');
  });

  t.test('left to TC untouched', async (t) => {
    const est = open('tcp', 43020, 30091);
    t.ok(est.snat);
    const ack = (over: Partial<Frame6Spec> = {}, l4: Partial<L4v6> = {}) =>
      frame6({ ...fromClient(), ...over }, { proto: 'tcp', sport: 43020, dport: 30091, flags: TCP.ACK, ...l4 } as L4v6);
    const rows: Array<[string, Buffer]> = [
      ['a new flow (TC chooses the backend)', frame6(fromClient(), { proto: 'tcp', sport: 43021, dport: 30091, flags: TCP.SYN })],
      ['not a service', frame6(fromClient('2001:db8:1::77'), { proto: 'tcp', sport: 43022, dport: 30091 })],
      ['neighbour solicitation', frame6(fromClient(), { proto: 'icmp6', type: ICMP6.NS, code: 0, body: Buffer.alloc(20) })],
      ['echo request', frame6(fromClient(), { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0 })],
      ['an established flow behind a hop-by-hop header', ack({ ext: [{ type: 'hop' }] })],
      ['an established flow behind a destination options header', ack({ ext: [{ type: 'dst', body: Buffer.alloc(6) }] })],
      ['a first fragment of an established flow', ack({ ext: [{ type: 'frag', offset: 0, more: true }] })],
      ['a later fragment', ack({ ext: [{ type: 'frag', offset: 100, more: false }] })],
      ['SCTP (TC adjusts its CRC32c)', frame6(fromClient(), { proto: 'sctp', sport: 43023, dport: 30095 })],
      ['a FIN of an established flow (TC closes it)', ack({}, { flags: TCP.FIN | TCP.ACK })],
      ['an RST of an established flow', ack({}, { flags: TCP.RST })],
      ['a SYN on an established flow (a reused client port, or a reopening one while draining: TC decides)', ack({}, { flags: TCP.SYN })],
      [
        "a SYN-ACK on the flow's reply entry (a new connection on a closed flow's port: TC forgets the flow and passes it untranslated)",
        frame6(fromBackend, { proto: 'tcp', sport: 8080, dport: est.snat, flags: TCP.SYN | TCP.ACK }),
      ],
      ['hop limit 1 (TC counts it, the stack answers time exceeded)', ack({ hopLimit: 1 })],
      ['longer than the route MTU (1280): TC answers packet too big', ack({}, { payload: Buffer.alloc(1300) })],
    ];
    for (const [name, f] of rows) {
      const r = xdpRaw(Buffer.from(f));
      t.equal(r.verdict, 'pass', name);
      t.same(r.raw, f, `${name}: byte for byte`);
      t.equal(r.meta.length, 0, `${name}: no mark`);
    }
    t.notOk(dp.maps.ct6.get({ saddr: CLIENT6, daddr: NODE6, sport: 43021, dport: 30091, proto: 6 }), 'XDP created no conntrack');
  });

  t.test('an unresolved neighbour: left to TC (bpf_redirect_neigh)', async (t) => {
    open('tcp', 43030, 30091);
    ip(ns, '-6', 'neigh', 'del', GW6, 'dev', 'd0');
    t.teardown(() => ip(ns, '-6', 'neigh', 'replace', GW6, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent'));
    const f = frame6(fromClient(), { proto: 'tcp', sport: 43030, dport: 30091, flags: TCP.ACK });
    const r = xdpRaw(Buffer.from(f));
    t.equal(r.verdict, 'pass');
    t.same(r.raw, f, 'untouched');
  });

  t.test('drops counted in the reason counters as TC counts them', async (t) => {
    const good = frame6(fromClient(), { proto: 'tcp', sport: 43040, dport: 30091, flags: TCP.SYN });
    const longer = Buffer.from(good);
    longer.writeUInt16BE(1400, 14 + 4);
    const v4 = Buffer.from(good);
    v4[14] = 0x40;
    const doff = Buffer.from(good);
    doff[14 + 40 + 12] = 0x40;
    const udpShort = frame6(fromClient(), { proto: 'udp', sport: 43041, dport: 30091 });
    udpShort.writeUInt16BE(4, 14 + 4);
    // A frame cut inside the IPv6 header is refused by BPF_PROG_RUN for skbs (EINVAL): XDP's count alone.
    const cut = reasonCount(dp, 'malformed');
    t.equal(xdpRaw(good.subarray(0, 14 + 30)).verdict, 'drop', 'IPv6 header cut short: XDP drops it');
    t.equal(reasonCount(dp, 'malformed'), cut + 1, 'IPv6 header cut short: counted as malformed');
    const rows: Array<[string, Buffer, string]> = [
      ['TCP header cut short', good.subarray(0, 14 + 40 + 10), 'malformed'],
      ['payload length past the frame', longer, 'malformed'],
      ['version 4 in an IPv6 frame', v4, 'malformed'],
      ['TCP data offset below 5', doff, 'malformed'],
      ['UDP header past the payload length', udpShort, 'malformed'],
      ['one of our addresses as source', frame6({ ...fromClient(), src: NODE6 }, { proto: 'tcp', sport: 43042, dport: 30091 }), 'spoofed'],
    ];
    for (const [name, f, reason] of rows) {
      const before = reasonCount(dp, reason);
      t.equal(tcRaw(Buffer.from(f)).verdict, 'drop', `${name}: TC drops it`);
      t.equal(reasonCount(dp, reason), before + 1, `${name}: TC counts it as ${reason}`);
      const r = xdpRaw(Buffer.from(f));
      t.equal(r.verdict, 'drop', `${name}: XDP drops it`);
      t.equal(reasonCount(dp, reason), before + 2, `${name}: XDP counts it as ${reason}`);
    }
  });

  t.test('the cached route: about a second, then looked up again; a longer frame looked up at once', async (t) => {
    t.teardown(() => ip(ns, '-6', 'neigh', 'replace', GW6, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent'));
    open('tcp', 43050, 30091);
    const ack = (n: number) => frame6(fromClient(), { proto: 'tcp', sport: 43050, dport: 30091, flags: TCP.ACK, payload: Buffer.alloc(n) });
    const first = xdpRaw(ack(10));
    t.equal(first.verdict, 'tx');
    const key = { saddr: CLIENT6, daddr: NODE6, sport: 43050, dport: 30091, proto: 6 };
    const cached = xdpRaw(ack(10));
    // The same frame from the entry without a cached route (the agent writes zeros): a FIB lookup, the same bytes.
    dp.maps.ct6.set(key, dp.maps.ct6.get(key)!);
    t.same(xdpRaw(ack(10)).raw, cached.raw, 'a cached route gives the frame a FIB lookup gives');
    ip(ns, '-6', 'neigh', 'replace', GW6, 'lladdr', NEW_MAC, 'dev', 'd0', 'nud', 'permanent');
    t.equal(macOf(xdpRaw(ack(10)).raw, 0), GW_MAC, 'within the second: the cached MAC, no FIB lookup');
    const big = xdpRaw(ack(1100));
    t.equal(big.verdict, 'tx', 'a longer frame the route takes: looked up');
    t.equal(macOf(big.raw, 0), NEW_MAC, 'and the lookup sees the new neighbour');
    ip(ns, '-6', 'neigh', 'replace', GW6, 'lladdr', GW_MAC, 'dev', 'd0', 'nud', 'permanent');
    t.equal(macOf(xdpRaw(ack(10)).raw, 0), NEW_MAC, 'which it cached');
    await wait(1100);
    t.equal(macOf(xdpRaw(ack(10)).raw, 0), GW_MAC, 'after the second: looked up again');
  });

  t.test('an established flow writes its conntrack deadline when it moves by more than a second', async (t) => {
    const key = { saddr: CLIENT6, daddr: NODE6, sport: 43060, dport: 30091, proto: 6 };
    open('tcp', 43060, 30091);
    const ack = frame6(fromClient(), { proto: 'tcp', sport: 43060, dport: 30091, flags: TCP.ACK });
    t.equal(xdpRaw(Buffer.from(ack)).verdict, 'tx', 'the handshake ACK through XDP');
    const first = dp.maps.ct6.get(key)!;
    t.ok(first.state & 16, 'established (the ACK went through ct6_update)');
    t.equal(xdpRaw(Buffer.from(ack)).verdict, 'tx');
    t.equal(dp.maps.ct6.get(key)!.expiresNs, first.expiresNs, 'the next frame a moment later leaves the deadline');
    await wait(1100);
    t.equal(xdpRaw(Buffer.from(ack)).verdict, 'tx');
    t.ok(dp.maps.ct6.get(key)!.expiresNs > first.expiresNs + 1_000_000_000n, 'a second later it moves');
  });

  t.test('standby and drain: every IPv6 frame is TC’s', async (t) => {
    open('tcp', 43070, 30091);
    const f = frame6(fromClient(), { proto: 'tcp', sport: 43070, dport: 30091, flags: TCP.ACK });
    t.equal(xdpRaw(Buffer.from(f)).verdict, 'tx', 'served in XDP');
    const mode = dp.maps.mode.get({ v: 0 })!;
    t.teardown(() => dp.maps.mode.set({ v: 0 }, mode));
    dp.maps.mode.set({ v: 0 }, { ...mode, flags: mode.flags | 1 });
    const r = xdpRaw(Buffer.from(f));
    t.equal(r.verdict, 'pass', 'draining: passed');
    t.same(r.raw, f, 'untouched');
  });
  t.test(
    'mutated and truncated frames of established flows: no abort; passed untouched or translated with the checksum they had',
    async (t) => {
      const seed = seedFromEnv();
      const rng = new Prng(seed);
      const flows = [open('tcp', 43100, 30091), open('udp', 43101, 30091), open('tcp', 43102, 30094)];
      const sources: Buffer[] = [
        frame6(fromClient(), { proto: 'tcp', sport: 43100, dport: 30091, flags: TCP.ACK, payload: Buffer.alloc(64, 1) }),
        frame6(fromBackend, { proto: 'tcp', sport: 8080, dport: flows[0]!.snat, flags: TCP.ACK, payload: Buffer.alloc(33, 2) }),
        frame6(fromClient(), { proto: 'udp', sport: 43101, dport: 30091, payload: Buffer.alloc(17, 3) }),
        frame6(fromBackend, { proto: 'udp', sport: 5353, dport: flows[1]!.snat, payload: Buffer.alloc(100, 4) }),
        frame6(fromClient(), { proto: 'tcp', sport: 43102, dport: 30094, flags: TCP.ACK, payload: Buffer.alloc(9, 5) }),
      ];
      const csumOk = (raw: Buffer) => {
        try {
          return parseFrame6(raw).l4CsumOk === true;
        } catch {
          return false;
        }
      };
      const N = 3000;
      const tally: Record<string, number> = {};
      const bad: string[] = [];
      for (let i = 0; i < N && bad.length < 5; i++) {
        const src = sources[rng.int(sources.length)]!;
        let f = Buffer.from(src);
        const kind = rng.int(3);
        if (kind === 0)
          f = f.subarray(0, 14 + rng.int(f.length - 14)); // BPF_PROG_RUN takes no less than an Ethernet header
        else {
          for (let n = 1 + rng.int(4); n > 0; n--) {
            // headers more often than payload: the fields XDP reads and writes
            const at = rng.chance(0.8) ? 12 + rng.int(Math.min(f.length - 12, 62)) : rng.int(f.length);
            f[at] = rng.int(256);
          }
          if (kind === 2) f = f.subarray(0, Math.max(14, f.length - rng.int(40)));
        }
        const input = Buffer.from(f);
        const r = xdpRaw(Buffer.from(f));
        tally[r.verdict] = (tally[r.verdict] ?? 0) + 1;
        const why =
          r.verdict === 'aborted'
            ? 'aborted'
            : r.verdict === 'pass' && r.meta.length === 0 && !r.raw.equals(input)
              ? 'passed altered without the mark'
              : (r.verdict === 'tx' || r.verdict === 'redirect' || r.meta.length > 0) && csumOk(input) && !csumOk(r.raw)
                ? 'translated with a checksum that no longer holds'
                : undefined;
        if (why) bad.push(`#${i}: ${why}: ${input.toString('hex')}`);
      }
      t.same(bad, [], `${N} frames (seed ${seed}, FUZZ_SEED replays): ${JSON.stringify(tally)}`);
      t.ok((tally.tx ?? 0) > 0 && (tally.drop ?? 0) > 0 && (tally.pass ?? 0) > 0, 'the mutations reach forwarding, drops and passing');
    },
  );

  t.test('NetworkPolicy on an established flow: dropped in XDP under the reason TC counts', async (t) => {
    const w = new PolicyMapWriter(dp.maps);
    open('tcp', 43110, 30090);
    const f = frame6(fromClient(), { proto: 'tcp', sport: 43110, dport: 30090, flags: TCP.ACK });
    t.equal(xdpRaw(Buffer.from(f)).verdict, 'pass', 'served (to the local pod) before any policy');
    const isolated: CompiledPolicy = {
      generation: 1,
      identities: [
        { prefix: '::/0', identity: IDENTITY_WORLD },
        { prefix: `${LOCAL_BE6}/128`, identity: 100, endpoint: 1 },
      ],
      endpoints: [{ id: 1, pod: 'x6/local', addresses: [LOCAL_BE6], ingressIsolated: true, egressIsolated: false, entries: [] }],
      rules: [],
    };
    t.same(w.apply(isolated).problems, [], 'the backend pod isolated for ingress, nothing allowed');
    t.teardown(() => w.apply({ generation: 2, identities: [], endpoints: [], rules: [] }));
    const reasons = ['policy-denied', 'policy-ipv6', 'policy-no-table', 'policy-unknown-flow'];
    const counts = () => reasons.map((r) => reasonCount(dp, r));
    const before = counts();
    const x = xdpRaw(Buffer.from(f));
    t.equal(x.verdict, 'drop', 'XDP drops the next frame');
    const afterXdp = counts();
    const tc = tcRaw(Buffer.from(f));
    t.equal(tc.verdict, 'drop', 'TC drops the same frame');
    const afterTc = counts();
    const moved = (a: number[], b: number[]) => reasons.filter((_, i) => b[i]! - a[i]! === 1);
    t.same(moved(before, afterXdp), ['policy-denied'], 'XDP counts it as policy-denied');
    t.same(moved(afterXdp, afterTc), moved(before, afterXdp), 'as TC does');
  });
});
