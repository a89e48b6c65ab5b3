/**
 * Adopting the kernel's service flows at takeover (src/dataplane/bpf/
 * adopt.ts): which kernel conntrack entries become ours and with what
 * translation (a table of cases), then for real: entries the kernel holds
 * in a namespace (written with conntrack -I, as kube-proxy's NAT would have
 * left them) are read through ctnetlink, adopted, left untouched in the
 * kernel, and their next packets through our programs keep the kernel's
 * backend and SNAT; the same for an IPv6 flow from the kernel's IPv6 table.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  KERNEL_TIMEOUT_DEFAULTS,
  adoptKernelConntrack,
  frontendIndex,
  kernelTimeouts,
  planAdoption,
  settleClosed,
  type FrontendIndex,
} from '../src/dataplane/bpf/adopt.js';
import { CtDir, CtFlags, CtState, FeFlags, IPPROTO_TCP, IPPROTO_UDP, type FeValue } from '../src/dataplane/bpf/codecs.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import { native, type KernelCtEntry } from '../src/native/index.js';
import { nsPath } from '../testkit/netns.js';
import { TCP } from '../testkit/packet.js';
import { inNetns, tmpDatapath } from './helpers/env.js';
import { be, fe } from './helpers/fixtures.js';
import { captureLogger } from './helpers/log.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { CLIENT6, NODE6 as PROGRUN_NODE6, progrun6Node } from './helpers/progrun6.js';
import { frame6 } from '../testkit/packet6.js';

const S = 1_000_000_000n;
const NOW = 1_000_000n * S;
const ESTABLISHED = 3;
const TIME_WAIT = 7;
const SEEN_REPLY = 0x2;
const ASSURED = 0x4;

const entry = (e: Partial<KernelCtEntry>): KernelCtEntry => ({
  proto: IPPROTO_TCP,
  src: POD,
  dst: '10.96.0.10',
  sport: 40000,
  dport: 80,
  rsrc: '10.244.1.12',
  rdst: POD,
  rsport: 8080,
  rdport: 40000,
  status: SEEN_REPLY | ASSURED,
  timeout: KERNEL_TIMEOUT_DEFAULTS.tcpEstablished,
  tcpState: ESTABLISHED,
  tcpFlags: 0,
  tcpFlagsReply: 0,
  zone: 0,
  ...e,
});

const feVal = (svcId: number, flags = 0): FeValue => ({
  svcId,
  setId: 1,
  clusterCount: 2,
  localCount: 2,
  flags,
  maglevSize: 0,
  maglevSizeLocal: 0,
  affinityTimeout: 0,
});
const index: FrontendIndex = (() => {
  const fes = new Map<string, FeValue>([
    [`10.96.0.10:80/${IPPROTO_TCP}`, feVal(1)],
    [`10.96.0.53:53/${IPPROTO_UDP}`, feVal(2)],
    [`0.0.0.0:30053/${IPPROTO_UDP}`, feVal(3, FeFlags.EXTERNAL | FeFlags.NODEPORT)],
  ]);
  const nodes = new Set([NODE_IP]);
  return {
    isNodeAddress: (a) => nodes.has(a),
    lookup: (a, p, proto) => fes.get(`${a}:${p}/${proto}`) ?? (nodes.has(a) ? fes.get(`0.0.0.0:${p}/${proto}`) : undefined),
  };
})();

t.test('which kernel entries are adopted, and how', async (t) => {
  const plan = planAdoption(
    [
      entry({}), // ClusterIP TCP, established
      entry({
        proto: IPPROTO_UDP,
        src: CLIENT,
        dst: NODE_IP,
        sport: 5000,
        dport: 30053,
        rsrc: '10.244.1.13',
        rdst: NODE_IP,
        rsport: 5353,
        rdport: 61000,
        tcpState: 0,
        timeout: 110,
      }), // NodePort UDP, masqueraded
      entry({ sport: 40001, rdport: 40001, tcpState: TIME_WAIT }), // closing: not ours to carry
      entry({ dst: '10.244.1.12', dport: 8080 }), // straight to a pod: not a service
      entry({ sport: 40002, rdport: 40002, rsrc: '10.96.0.10', rsport: 80 }), // to a service address, not translated
      entry({ sport: 40003, rdport: 40003, rsrc: NODE_IP }), // host-network backend on this node
      entry({ sport: 40004, rdport: 40004, zone: 7 }),
      entry({
        proto: IPPROTO_UDP,
        dst: '10.96.0.53',
        dport: 53,
        rsrc: '10.244.1.13',
        rsport: 5353,
        sport: 5001,
        rdport: 5001,
        tcpState: 0,
        status: SEEN_REPLY | ASSURED,
        timeout: 10,
      }), // quiet 110 s > our 60 s
      entry({ dst: '192.0.2.77', dport: 30053, proto: IPPROTO_UDP }), // NodePort port on an address that is not the node's
      entry({ sport: 40005, rdport: 40005, rsrc: POD, rsport: 8080, rdst: '169.254.7.1', tcpState: 2 }), // hairpin, SYN received
    ],
    index,
    NOW,
    DEFAULT_CONFIG.conntrack,
  );
  t.equal(plan.seen, 10);
  t.same(plan.skipped, { notService: 3, closed: 1, idle: 1, hostBackend: 1, zoned: 1 }, 'the rest left to the kernel, by reason');
  t.equal(plan.pairs.length, 3, 'three flows adopted');
  const [tcp, udp, hairpin] = plan.pairs;

  t.same(tcp!.fwd[0], { saddr: POD, daddr: '10.96.0.10', sport: 40000, dport: 80, proto: IPPROTO_TCP }, 'forward key: the client tuple');
  t.match(
    tcp!.fwd[1],
    { dir: CtDir.FWD, natSaddr: POD, natSport: 40000, natDaddr: '10.244.1.12', natDport: 8080, svcId: 1 },
    "to the kernel's backend",
  );
  t.same(
    tcp!.reply[0],
    { saddr: '10.244.1.12', daddr: POD, sport: 8080, dport: 40000, proto: IPPROTO_TCP },
    "reply key: the kernel's reply tuple",
  );
  t.match(
    tcp!.reply[1],
    { dir: CtDir.REPLY, natSaddr: '10.96.0.10', natSport: 80, natDaddr: POD, natDport: 40000 },
    'back to the service address',
  );
  t.equal(tcp!.fwd[1].flags, CtFlags.ADOPTED, 'adopted, no SNAT');
  t.equal(tcp!.fwd[1].state, CtState.REPLY_SEEN | CtState.ESTABLISHED, 'established');
  t.equal(tcp!.fwd[1].expiresNs, NOW + 3600n * S, 'our established timeout (it just saw a packet)');
  t.same(tcp!.fwd[1].state, tcp!.reply[1].state, 'both halves share state');

  t.match(
    udp!.fwd[1],
    { natSaddr: NODE_IP, natSport: 61000, natDaddr: '10.244.1.13', natDport: 5353, svcId: 3 },
    "the kernel's masquerade kept: source and port",
  );
  t.equal(udp!.fwd[1].flags, CtFlags.ADOPTED | CtFlags.SNAT | CtFlags.EXTERNAL, 'SNAT, external (NodePort)');
  t.same(udp!.reply[0], { saddr: '10.244.1.13', daddr: NODE_IP, sport: 5353, dport: 61000, proto: IPPROTO_UDP });
  t.match(udp!.reply[1], { natSaddr: NODE_IP, natSport: 30053, natDaddr: CLIENT, natDport: 5000 });
  t.equal(udp!.fwd[1].expiresNs, NOW + 50n * S, 'quiet 10 s by the kernel (stream, 120 s timer, 110 s left): 60 - 10 s left with us');

  t.equal(hairpin!.fwd[1].flags, CtFlags.ADOPTED | CtFlags.SNAT | CtFlags.HAIRPIN, 'a pod reaching itself: hairpin');
  t.equal(hairpin!.fwd[1].state, CtState.REPLY_SEEN, 'SYN received: not established yet');
  t.equal(hairpin!.fwd[1].expiresNs, NOW + 20n * S, 'our SYN-sent timeout');
});

t.test("a flow one side has begun to close keeps that FIN, so the other side's closes it for us", async (t) => {
  const FIN_WAIT = 4;
  const CLOSE_WAIT = 5;
  const CLOSE_INIT = 0x04;
  const plan = planAdoption(
    [
      entry({ sport: 1, rdport: 1, tcpState: FIN_WAIT, tcpFlags: CLOSE_INIT }), // the client closed first
      entry({ sport: 2, rdport: 2, tcpState: CLOSE_WAIT, tcpFlagsReply: CLOSE_INIT }), // the backend did
    ],
    index,
    NOW,
    DEFAULT_CONFIG.conntrack,
  );
  const E = CtState.REPLY_SEEN | CtState.ESTABLISHED;
  t.same(
    plan.pairs.map((p) => p.fwd[1].state),
    [E | CtState.FIN_FWD, E | CtState.FIN_REPLY],
  );
});

t.test("an established TCP flow's idle time, as the kernel's timer tells it", async (t) => {
  const k = KERNEL_TIMEOUT_DEFAULTS;
  const plan = planAdoption(
    [
      entry({ sport: 1, rdport: 1, timeout: k.tcpEstablished - 600 }), // quiet 10 min
      entry({ sport: 2, rdport: 2, timeout: k.tcpEstablished - 7200 }), // quiet 2 h: we would have timed it out
      entry({ sport: 3, rdport: 3, timeout: 120 }), // data unacknowledged (5 min timer): active
    ],
    index,
    NOW,
    DEFAULT_CONFIG.conntrack,
  );
  t.same(
    plan.pairs.map((p) => (p.fwd[1].expiresNs - NOW) / S),
    [3000n, 3600n],
    'quiet 10 min: 50 min left; unacknowledged data: the whole hour',
  );
  t.equal(plan.skipped.idle, 1, 'quiet longer than our timeout: left to the kernel');
  t.same(kernelTimeouts('/nonexistent'), KERNEL_TIMEOUT_DEFAULTS, "the kernel's defaults where its sysctls cannot be read");
});

t.test('an adopted flow the kernel has since seen close is closed in ours too', async (t) => {
  const dp = await tmpDatapath(t, { mapSizes: { conntrack: 64, natFrontend: 64, natBackend: 64, natAffinity: 64 } });
  const now = native().monotonicNs();
  const open = CtState.REPLY_SEEN | CtState.ESTABLISHED;
  // adopted while the kernel said ESTABLISHED (sport 1), adopted and then closed through us (2), not adopted (3)
  const write = (sport: number, flags: number, state: number) => {
    const base = { createdNs: now, expiresNs: now + 3600n * S, state, flags, svcId: 1 };
    dp.maps.ct.set(
      { saddr: POD, daddr: '10.96.0.10', sport, dport: 80, proto: IPPROTO_TCP },
      { ...base, dir: CtDir.FWD, natSaddr: POD, natSport: sport, natDaddr: '10.244.1.12', natDport: 8080 },
    );
    dp.maps.ct.set(
      { saddr: '10.244.1.12', daddr: POD, sport: 8080, dport: sport, proto: IPPROTO_TCP },
      { ...base, dir: CtDir.REPLY, natSaddr: '10.96.0.10', natSport: 80, natDaddr: POD, natDport: sport },
    );
  };
  write(1, CtFlags.ADOPTED, open);
  write(2, CtFlags.ADOPTED, open | CtState.FIN_FWD | CtState.FIN_REPLY);
  write(3, 0, open);
  const plan = planAdoption(
    [1, 2, 3].map((p) => entry({ sport: p, rdport: p, tcpState: TIME_WAIT })),
    index,
    now,
    DEFAULT_CONFIG.conntrack,
  );
  t.equal(plan.closedInKernel.length, 3, 'closed in the kernel: noted, not adopted');
  t.equal(settleClosed(dp.maps, plan, DEFAULT_CONFIG.conntrack), 1, 'one connection closed');
  const fwd = dp.maps.ct.get({ saddr: POD, daddr: '10.96.0.10', sport: 1, dport: 80, proto: IPPROTO_TCP })!;
  const rep = dp.maps.ct.get({ saddr: '10.244.1.12', daddr: POD, sport: 8080, dport: 1, proto: IPPROTO_TCP })!;
  t.equal(fwd.state, open | CtState.FIN_FWD | CtState.FIN_REPLY, 'the adopted one: closed');
  t.equal(rep.state, fwd.state, 'both halves');
  t.equal(fwd.expiresNs, now + 30n * S, 'on the FINs-seen timeout');
  t.equal(
    dp.maps.ct.get({ saddr: POD, daddr: '10.96.0.10', sport: 3, dport: 80, proto: IPPROTO_TCP })!.state,
    open,
    'a flow of our own is not touched (the kernel never carried it)',
  );
});

function inNs(ns: string, cmd: string, args: string[]): string {
  const r = spawnSync('nsenter', [`--net=${nsPath(ns)}`, '--', cmd, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const tuples = (listing: string): string[] =>
  listing
    .split('\n')
    .filter((l) => l.includes('src='))
    .map((l) => (l.match(/(src|dst|sport|dport)=\S+/g) ?? []).join(' '))
    .sort();

t.test('IPv6: the frontends of the IPv6 maps, NodePort through the :: wildcard on a node IPv6 address', async (t) => {
  const NODE6 = '2001:db8:1::11';
  const CLIENT6 = '2001:db8:1::100';
  const fes6 = frontendIndex(
    {
      fe: { entries: () => [[{ addr: '::', port: 30053, proto: IPPROTO_UDP }, feVal(3, FeFlags.EXTERNAL | FeFlags.NODEPORT)]] },
      nodeIps: { entries: () => [[{ addr: NODE6 }, { v: 1 }]] },
    },
    '::',
  );
  t.notOk(fes6.lookup('2001:db8:1::99', 30053, IPPROTO_UDP), "not on an address that is not the node's");
  const plan = planAdoption(
    [
      entry({
        proto: IPPROTO_UDP,
        src: CLIENT6,
        dst: NODE6,
        sport: 5000,
        dport: 30053,
        rsrc: 'fd00:10:244:2::13',
        rdst: NODE6,
        rsport: 5353,
        rdport: 61000,
        tcpState: 0,
        timeout: 110,
      }),
      entry({ src: 'fd00:10:244:1::9', dst: 'fd00:10:96::10', rsrc: 'fd00:10:244:1::12', rdst: 'fd00:10:244:1::9' }), // no IPv6 frontend
    ],
    fes6,
    NOW,
    DEFAULT_CONFIG.conntrack,
  );
  t.same(plan.skipped.notService, 1, 'an address of no IPv6 frontend is left to the kernel');
  t.same(
    plan.pairs.map(({ reply, fwd }) => [reply[0], fwd[1].natSaddr, fwd[1].natDaddr, fwd[1].flags]),
    [
      [
        { saddr: 'fd00:10:244:2::13', daddr: NODE6, sport: 5353, dport: 61000, proto: IPPROTO_UDP },
        NODE6,
        'fd00:10:244:2::13',
        CtFlags.ADOPTED | CtFlags.SNAT | CtFlags.EXTERNAL,
      ],
    ],
    "the NodePort flow adopted with the kernel's backend and masquerade",
  );
  t.throws(() => native().kernelConntrack({ family: 5 as 6 }), TypeError, 'a family other than 4 or 6 is refused');
});

t.test('for real: kernel entries read, adopted, left in place, and carried on by our programs', async (t) => {
  const node = await progrunNode(t);
  const { ns, dp, rec } = node;
  rec.syncService('test/web', [fe('ClusterIP', '10.96.0.10', 80, 'TCP', [be('10.244.1.11', 8080), be('10.244.1.12', 8080)])]);
  rec.syncService('test/dns', [fe('NodePort', '0.0.0.0', 30053, 'UDP', [be('10.244.1.13', 5353), be('10.244.1.14', 5353)])]);
  rec.setNodeAddresses([NODE_IP]);
  // What kube-proxy's DNAT (and masquerade) left in the kernel's conntrack.
  inNs(ns, 'conntrack', [
    '-I',
    '-p',
    'tcp',
    '-s',
    POD,
    '-d',
    '10.96.0.10',
    '--sport',
    '40000',
    '--dport',
    '80',
    '--state',
    'ESTABLISHED',
    '-t',
    '432000',
    '-r',
    '10.244.1.12',
    '-q',
    POD,
    '--reply-port-src',
    '8080',
    '--reply-port-dst',
    '40000',
    '-u',
    'SEEN_REPLY,ASSURED',
  ]);
  inNs(ns, 'conntrack', [
    '-I',
    '-p',
    'udp',
    '-s',
    CLIENT,
    '-d',
    NODE_IP,
    '--sport',
    '5000',
    '--dport',
    '30053',
    '-t',
    '120',
    '-r',
    '10.244.1.13',
    '-q',
    NODE_IP,
    '--reply-port-src',
    '5353',
    '--reply-port-dst',
    '61000',
    '-u',
    'SEEN_REPLY,ASSURED',
  ]);
  inNs(ns, 'conntrack', [
    '-I',
    '-p',
    'tcp',
    '-s',
    POD,
    '-d',
    '10.244.1.11',
    '--sport',
    '40001',
    '--dport',
    '8080',
    '--state',
    'ESTABLISHED',
    '-t',
    '432000',
    '-r',
    '10.244.1.11',
    '-q',
    POD,
    '--reply-port-src',
    '8080',
    '--reply-port-dst',
    '40001',
    '-u',
    'SEEN_REPLY,ASSURED',
  ]);
  const kernelBefore = tuples(inNs(ns, 'conntrack', ['-L']));
  t.equal(kernelBefore.length, 3, 'three kernel entries');

  // A dead flow of ours on the UDP client's port (gone quiet, not collected yet): in the way, replaced.
  const dead = { createdNs: 0n, expiresNs: 1n, state: 0, flags: 0, svcId: 9 };
  dp.maps.ct.set(
    { saddr: CLIENT, daddr: NODE_IP, sport: 5000, dport: 30053, proto: IPPROTO_UDP },
    { ...dead, dir: CtDir.FWD, natSaddr: NODE_IP, natSport: 20001, natDaddr: '10.244.1.14', natDport: 5353 },
  );
  dp.maps.ct.set(
    { saddr: '10.244.1.14', daddr: NODE_IP, sport: 5353, dport: 20001, proto: IPPROTO_UDP },
    { ...dead, dir: CtDir.REPLY, natSaddr: NODE_IP, natSport: 30053, natDaddr: CLIENT, natDport: 5000 },
  );
  const { log, lines } = captureLogger();
  const r = inNetns(ns, () => adoptKernelConntrack(dp.maps, DEFAULT_CONFIG.conntrack, log, 'test'));
  t.match(
    r,
    { seen: 2, adopted: 2, present: 0, full: 0, skipped: { notService: 0 } },
    'the two service flows adopted; the pod-to-pod one (not translated) not even read',
  );
  t.equal(inNetns(ns, () => native().kernelConntrack()).length, 3, 'the dump has all three');
  t.same(
    inNetns(ns, () => native().kernelConntrack({ translatedOnly: true }))
      .map((e) => `${e.dst}:${e.dport}`)
      .sort(),
    ['10.96.0.10:80', `${NODE_IP}:30053`],
    'translatedOnly: the two the kernel translated',
  );
  t.throws(() => native().kernelConntrack({ translatedOnly: 'yes' as unknown as boolean }), TypeError, 'a wrong option type is refused');
  t.notOk(
    dp.maps.ct.get({ saddr: '10.244.1.14', daddr: NODE_IP, sport: 5353, dport: 20001, proto: IPPROTO_UDP }),
    'a dead flow of ours in the way is replaced, its reply entry removed with it',
  );
  const again = inNetns(ns, () => adoptKernelConntrack(dp.maps, DEFAULT_CONFIG.conntrack, log, 'test again'));
  t.match(again, { adopted: 0, present: 2 }, 'a second pass finds them ours already');
  t.equal(dp.maps.ct.count(), 4, 'two entries per flow');
  t.same(tuples(inNs(ns, 'conntrack', ['-L'])), kernelBefore, "the kernel's conntrack is read, never changed");
  t.same(
    lines.filter((l) => l.level === 'warn' || l.level === 'error'),
    [],
    'nothing to warn about',
  );
  t.same(
    frontendIndex(dp.maps).lookup(NODE_IP, 30053, IPPROTO_UDP)?.flags,
    FeFlags.EXTERNAL | FeFlags.NODEPORT,
    'NodePort found through the node address',
  );

  // The service has two backends; every packet of the adopted flow goes to the kernel's.
  for (let i = 0; i < 8; i++) {
    const d = node.run(
      'fromPod',
      { src: POD, dst: '10.96.0.10' },
      { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.ACK | TCP.PSH, seq: 5000 + i },
    );
    t.equal(d.verdict, 'redirect');
    t.equal(`${d.out.dst}:${d.out.dport}`, '10.244.1.12:8080', `TCP packet ${i}: the kernel's backend`);
  }
  const back = node.run('fromPod', { src: '10.244.1.12', dst: POD }, { proto: 'tcp', sport: 8080, dport: 40000, flags: TCP.ACK });
  t.equal(`${back.out.src}:${back.out.sport}`, '10.96.0.10:80', 'its replies come from the service address');
  for (let i = 0; i < 8; i++) {
    const u = node.run(
      'fromData',
      { src: CLIENT, dst: NODE_IP },
      { proto: 'udp', sport: 5000, dport: 30053, payload: Buffer.from(`q${i}`) },
    );
    t.equal(u.verdict, 'redirect');
    t.equal(
      `${u.out.dst}:${u.out.dport} from ${u.out.src}:${u.out.sport}`,
      `10.244.1.13:5353 from ${NODE_IP}:61000`,
      `UDP datagram ${i}: same backend, same SNAT`,
    );
  }
  const ureply = node.run(
    'fromPod',
    { src: '10.244.1.13', dst: NODE_IP },
    { proto: 'udp', sport: 5353, dport: 61000, payload: Buffer.from('a') },
  );
  t.equal(
    `${ureply.out.src}:${ureply.out.sport} -> ${ureply.out.dst}:${ureply.out.dport}`,
    `${NODE_IP}:30053 -> ${CLIENT}:5000`,
    'the UDP answer is translated back',
  );
  t.ok(ureply.out.l4CsumOk && ureply.out.ipCsumOk, 'checksums valid');
});

t.test("for real, IPv6: a masqueraded NodePort flow from the kernel's IPv6 table, carried on by the IPv6 programs", async (t) => {
  const node = await progrun6Node(t);
  const { ns, dp, rec } = node;
  const NODE6 = PROGRUN_NODE6;
  const REMOTE6 = 'fd00:10:244:2::13'; // a backend on the other node: behind the narrow route of progrun6Node
  const OTHER6 = 'fd00:10:244:2::14';
  t.same(rec.syncService('test/dns6', [fe('NodePort', '::', 30053, 'UDP', [be(REMOTE6, 5353), be(OTHER6, 5353)])]).problems, []);
  rec.setNodeAddresses([NODE6]);
  // What kube-proxy's ip6tables DNAT and masquerade left in the kernel's IPv6 conntrack.
  inNs(ns, 'conntrack', [
    '-I',
    '-p',
    'udp',
    '-s',
    CLIENT6,
    '-d',
    NODE6,
    '--sport',
    '5000',
    '--dport',
    '30053',
    '-t',
    '120',
    '-r',
    REMOTE6,
    '-q',
    NODE6,
    '--reply-port-src',
    '5353',
    '--reply-port-dst',
    '61000',
    '-u',
    'SEEN_REPLY,ASSURED',
  ]);
  const kernelBefore = tuples(inNs(ns, 'conntrack', ['-L', '-f', 'ipv6']));
  const { log, lines } = captureLogger();
  const r = inNetns(ns, () => adoptKernelConntrack(dp.maps, DEFAULT_CONFIG.conntrack, log, 'test'));
  t.match(r, { seen: 1, adopted: 1, ipv6: { seen: 1, adopted: 1 } }, 'the IPv6 flow adopted, counted as IPv6');
  t.same(
    dp.maps.ct6
      .entries()
      .map(([k, v]) => [k.saddr, k.sport, v.dir, v.flags])
      .sort(),
    [
      [REMOTE6, 5353, CtDir.REPLY, CtFlags.ADOPTED | CtFlags.SNAT | CtFlags.EXTERNAL],
      [CLIENT6, 5000, CtDir.FWD, CtFlags.ADOPTED | CtFlags.SNAT | CtFlags.EXTERNAL],
    ].sort(),
    'both entries in bpfproxy_ct6',
  );
  t.equal(dp.maps.ct.count(), 0, 'nothing in the IPv4 conntrack');
  t.same(tuples(inNs(ns, 'conntrack', ['-L', '-f', 'ipv6'])), kernelBefore, "the kernel's conntrack is read, never changed");
  t.same(
    lines.filter((l) => l.level === 'warn' || l.level === 'error'),
    [],
    'nothing to warn about',
  );
  for (let i = 0; i < 6; i++) {
    const u = node.runRaw(
      'fromData',
      frame6({ src: CLIENT6, dst: NODE6 }, { proto: 'udp', sport: 5000, dport: 30053, payload: Buffer.from(`q${i}`) }),
    );
    t.equal(
      `${u.out.dst}:${u.out.dport} from ${u.out.src}:${u.out.sport}`,
      `${REMOTE6}:5353 from ${NODE6}:61000`,
      `UDP datagram ${i}: the kernel's backend and masquerade`,
    );
  }
  const back = node.runRaw(
    'fromData',
    frame6({ src: REMOTE6, dst: NODE6 }, { proto: 'udp', sport: 5353, dport: 61000, payload: Buffer.from('a') }),
  );
  t.equal(
    `${back.out.src}:${back.out.sport} -> ${back.out.dst}:${back.out.dport}`,
    `${NODE6}:30053 -> ${CLIENT6}:5000`,
    'the answer translated back',
  );
  t.ok(back.out.l4CsumOk, 'checksum valid');
});
