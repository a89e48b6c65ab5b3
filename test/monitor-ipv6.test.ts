/**
 * The monitor on the IPv6 path: struct monitor_event carries the family and
 * the IPv6 addresses (appended: IPv4 events decode as before), the IPv6
 * programs send a new flow, a drop and a close with the right addresses,
 * the table prints [addr]:port, and --ip / --pod match IPv6 addresses (pods'
 * /128s in bpfproxy_ipcache6).
 */
import t from 'tap';
import { monitorEvent, MonType, ctKey } from '../src/dataplane/bpf/codecs.js';
import { decodeBatch, decodeEvent, matches, type MonitorEvent } from '../src/dataplane/bpf/monitor.js';
import { describe, tableLine, type Names } from '../src/cli/monitor.js';
import { PodAddresses } from '../src/cli/monitor-pods.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { MonitorSession } from '../src/dataplane/bpf/monitor.js';
import { ipv6Bytes } from '../src/net/ip6.js';
import { frame6, TCP } from '../testkit/packet6.js';
import { be, fe } from './helpers/fixtures.js';
import { tmpDatapath } from './helpers/env.js';
import { POD6, progrun6Node } from './helpers/progrun6.js';
import { reasonCount } from './helpers/progrun.js';
import { sleep, until } from './helpers/wait.js';
import { FIRST_DYNAMIC_IDENTITY, type CompiledPolicy } from '../src/model/policy/compiled.js';

const SVC6 = 'fd00:10:96::10';
const BACKEND6 = 'fd00:10:244:1::11';

const off = (name: string): number => monitorEvent.layout.find((f) => f.name === name)!.offset;
const koff = (name: string): number => ctKey.layout.find((f) => f.name === name)!.offset;

/** A flow-new event as the IPv6 path writes it: family 6, addresses in the *6 fields, ports in the tuples. */
function v6FlowNew(): Buffer {
  const b = Buffer.alloc(monitorEvent.size);
  b[off('type')] = MonType.FLOW_NEW;
  b[off('hook')] = 1;
  b[off('family')] = 6;
  for (const [t, sport, dport] of [
    ['tuple', 40000, 80],
    ['nat', 40000, 8080],
  ] as const) {
    b[off(t) + koff('proto')] = 6;
    b.writeUInt16BE(sport, off(t) + koff('sport'));
    b.writeUInt16BE(dport, off(t) + koff('dport'));
  }
  ipv6Bytes(POD6).copy(b, off('saddr6'));
  ipv6Bytes(SVC6).copy(b, off('daddr6'));
  ipv6Bytes(POD6).copy(b, off('natSaddr6'));
  ipv6Bytes(BACKEND6).copy(b, off('natDaddr6'));
  return b;
}

t.test('decoding: IPv6 events from the *6 fields, IPv4 ones as before, the size checked', async (t) => {
  t.equal(monitorEvent.size, 272, 'struct monitor_event: 208 bytes of IPv4 layout + 4 IPv6 addresses appended');
  t.equal(off('data'), 80, 'the IPv4 fields keep their offsets');
  const ev = decodeEvent(v6FlowNew());
  t.match(ev, {
    type: 'flow-new',
    hook: 'pod',
    tuple: { proto: 'TCP', src: POD6, sport: 40000, dst: SVC6, dport: 80 },
    nat: { proto: 'TCP', src: POD6, sport: 40000, dst: BACKEND6, dport: 8080 },
  });

  const v4 = Buffer.alloc(monitorEvent.size);
  v4[off('type')] = MonType.FLOW_NEW;
  v4[off('family')] = 4;
  Buffer.from([10, 244, 1, 99]).copy(v4, off('tuple') + koff('saddr'));
  Buffer.from([10, 96, 0, 10]).copy(v4, off('tuple') + koff('daddr'));
  t.match(decodeEvent(v4), { tuple: { src: '10.244.1.99', dst: '10.96.0.10' } }, 'family 4: the IPv4 addresses');

  // a batch record of the old (208-byte) size is not an event
  const rec = Buffer.alloc(8 + 208);
  rec.writeUInt32LE(208, 0);
  t.same(decodeBatch(rec, 1), { events: [], malformed: 1 }, 'a record of another size is counted, not decoded');

  // the table and the filters
  const names = { service: () => 'test/web6:http/TCP', iface: () => 'd0' } as unknown as Names;
  const line = tableLine(ev!, names, () => 0);
  t.match(line, `TCP [${POD6}]:40000 -> [${SVC6}]:80`, 'the table prints [addr]:port');
  t.match(describe(ev!, names), `=> [${BACKEND6}]:8080`);
  t.ok(matches(ev!, { ip: BACKEND6 }), '--ip matches the translated IPv6 address');
  t.notOk(matches(ev!, { ip: 'fd00:10:244:1::12' }), 'and not another');
  t.ok(matches(ev!, { addresses: new Set([POD6]) }), '--pod matches the pod’s IPv6 address');
});

t.test('decoding: an ICMPv6 reject is told as the packet it answers', async (t) => {
  const quoted = frame6({ src: POD6, dst: SVC6 }, { proto: 'udp', sport: 5353, dport: 53 }).subarray(14);
  const answer = Buffer.concat([
    frame6({ src: SVC6, dst: POD6 }, { proto: 'icmp6', type: 1, code: 4, body: Buffer.alloc(4) }).subarray(0, 14 + 40 + 8),
    quoted,
  ]);
  const b = Buffer.alloc(monitorEvent.size);
  b[off('type')] = MonType.DROP;
  b[off('code')] = 1; // any reason whose verdict is reject: found below
  b[off('family')] = 6;
  b[off('tuple') + koff('proto')] = 58;
  ipv6Bytes(SVC6).copy(b, off('saddr6'));
  ipv6Bytes(POD6).copy(b, off('daddr6'));
  const { REASONS } = await import('../src/dataplane/bpf/reasons.js');
  const reject = REASONS.findIndex((r) => r?.verdict === 'reject');
  t.ok(reject > 0);
  b[off('code')] = reject;
  const n = Math.min(answer.length, 128);
  answer.copy(b, off('data'), 0, n);
  b.writeUInt16LE(n, off('capLen'));
  t.match(decodeEvent(b), { type: 'drop', answered: true, tuple: { proto: 'UDP', src: POD6, sport: 5353, dst: SVC6, dport: 53 } });
});

/** A drop event as the IPv6 programs send it for this frame: family 6, the addresses, the next header after the fixed header as proto, ports only when L4 follows it. */
function v6Drop(frame: Buffer, reason: number): Buffer {
  const b = Buffer.alloc(monitorEvent.size);
  b[off('type')] = MonType.DROP;
  b[off('code')] = reason;
  b[off('flags')] = 1;
  b[off('family')] = 6;
  b[off('tuple') + koff('proto')] = frame[14 + 6]!;
  frame.copy(b, off('saddr6'), 14 + 8, 14 + 40);
  const n = Math.min(frame.length, 128);
  frame.copy(b, off('data'), 0, n);
  b.writeUInt16LE(n, off('capLen'));
  return b;
}

t.test('decoding: an IPv6 drop behind extension headers shows the ports after them', async (t) => {
  const ip = { src: POD6, dst: SVC6 };
  const tcp = { proto: 'tcp', sport: 40100, dport: 80 } as const;
  const cases: Array<[string, Buffer, object]> = [
    ['hop-by-hop, then TCP', frame6({ ...ip, ext: [{ type: 'hop' }] }, tcp), { proto: 'TCP', sport: 40100, dport: 80 }],
    [
      'destination options and routing, then UDP',
      frame6({ ...ip, ext: [{ type: 'dst' }, { type: 'routing', body: Buffer.alloc(14) }] }, { proto: 'udp', sport: 5000, dport: 53 }),
      { proto: 'UDP', sport: 5000, dport: 53 },
    ],
    [
      'a first fragment, then TCP',
      frame6({ ...ip, ext: [{ type: 'frag', offset: 0, more: true }] }, tcp),
      { proto: 'TCP', sport: 40100, dport: 80 },
    ],
    [
      'a later fragment: the protocol, no ports',
      frame6({ ...ip, ext: [{ type: 'frag', offset: 100, more: false }] }, tcp),
      { proto: 'TCP', sport: 0, dport: 0 },
    ],
    [
      'ports past the capture (128 bytes): the protocol, no ports',
      frame6({ ...ip, ext: [{ type: 'hop', body: Buffer.alloc(120) }] }, tcp),
      { proto: 'TCP', sport: 0, dport: 0 },
    ],
    [
      'a header past the capture: as the program sent it',
      frame6({ ...ip, ext: [{ type: 'hop', body: Buffer.alloc(70) }, { type: 'dst' }] }, tcp),
      { proto: '0', sport: 0, dport: 0 },
    ],
    ['no extension header: as before', frame6(ip, tcp), { proto: 'TCP', sport: 0, dport: 0 }],
  ];
  for (const [what, frame, want] of cases) {
    t.match(decodeEvent(v6Drop(frame, 1)), { type: 'drop', reason: 'malformed', tuple: { src: POD6, dst: SVC6, ...want } }, what);
  }
});

t.test('IPv6 programs: a new flow, a drop and closes, with their addresses', async (t) => {
  const node = await progrun6Node(t);
  t.same(
    node.rec.syncService('test/web6', [fe('ClusterIP', SVC6, 80, 'TCP', [be(BACKEND6, 8080)], { servicePort: 'test/web6:http/TCP' })])
      .problems,
    [],
  );
  const got: MonitorEvent[] = [];
  const s = MonitorSession.open(node.dp.maps, (evs) => got.push(...evs));
  t.teardown(() => s.close());
  const run = (src: string, dst: string, sport: number, dport: number, flags: number) =>
    node.runRaw('fromPod', frame6({ src, dst }, { proto: 'tcp', sport, dport, flags }));

  t.equal(run(POD6, SVC6, 40000, 80, TCP.SYN).verdict, 'redirect');
  await until('the flow-new event', () => got.some((e) => e.type === 'flow-new'));
  const created = got.find((e) => e.type === 'flow-new')!;
  t.match(created, {
    type: 'flow-new',
    hook: 'pod',
    ifindex: node.ifindex,
    tuple: { proto: 'TCP', src: POD6, sport: 40000, dst: SVC6, dport: 80 },
    nat: { proto: 'TCP', src: POD6, sport: 40000, dst: BACKEND6, dport: 8080 },
    flags: [],
  });
  if (created.type === 'flow-new') t.equal(node.dp.maps.svcNames.get({ v: created.svcId })?.name, 'test/web6:http/TCP', 'svc id');
  t.equal(created.captured.readUInt16BE(12), 0x86dd, 'the IPv6 frame is captured');

  // FIN both ways: one close, from the client's side
  run(POD6, SVC6, 40000, 80, TCP.FIN | TCP.ACK);
  run(BACKEND6, POD6, 8080, 40000, TCP.FIN | TCP.ACK);
  run(POD6, SVC6, 40000, 80, TCP.ACK);
  await until('the flow-close event', () => got.some((e) => e.type === 'flow-close'));
  await sleep(50);
  const closes = got.filter((e) => e.type === 'flow-close');
  t.equal(closes.length, 1, 'one close for the two FINs');
  t.match(closes[0], {
    closedBy: 'fin',
    tuple: { src: POD6, sport: 40000, dst: SVC6, dport: 80 },
    nat: { src: POD6, sport: 40000, dst: BACKEND6, dport: 8080 },
  });

  // a RST, sent by the backend (the reply entry): still told from the client's side
  run(POD6, SVC6, 40001, 80, TCP.SYN);
  run(BACKEND6, POD6, 8080, 40001, TCP.RST | TCP.ACK);
  await until('the RST close', () => got.some((e) => e.type === 'flow-close' && e.closedBy === 'rst'));
  t.match(
    got.find((e) => e.type === 'flow-close' && e.closedBy === 'rst'),
    { tuple: { src: POD6, sport: 40001, dst: SVC6, dport: 80 }, nat: { src: POD6, sport: 40001, dst: BACKEND6, dport: 8080 } },
  );

  // a drop: the tuple read again from the frame
  const bad = frame6({ src: POD6, dst: SVC6 }, { proto: 'tcp', sport: 40002, dport: 80 });
  bad[14 + 40 + 12] = 0x30; // data offset 3: malformed
  t.equal(node.runRaw('fromPod', bad).verdict, 'drop');
  await until('the drop event', () => got.some((e) => e.type === 'drop'));
  t.match(
    got.find((e) => e.type === 'drop'),
    { reason: 'malformed', dropped: true, tuple: { proto: 'TCP', src: POD6, sport: 40002, dst: SVC6, dport: 80 } },
  );
  t.equal(reasonCount(node.dp, 'malformed'), 1, 'counted as before');

  // a drop behind a hop-by-hop header: its ports all the same
  const hop = frame6({ src: POD6, dst: SVC6, ext: [{ type: 'hop' }] }, { proto: 'tcp', sport: 40003, dport: 80 });
  hop[14 + 40 + 8 + 12] = 0x30;
  t.equal(node.runRaw('fromPod', hop).verdict, 'drop');
  await until('the drop event behind the extension header', () => got.some((e) => e.type === 'drop' && e.tuple.sport === 40003));
  t.match(
    got.find((e) => e.type === 'drop' && e.tuple.sport === 40003),
    { reason: 'malformed', dropped: true, tuple: { proto: 'TCP', src: POD6, sport: 40003, dst: SVC6, dport: 80 } },
    'bpfproxy monitor shows the ports after the extension header',
  );
});

t.test('--pod: a pod’s IPv6 address from bpfproxy_ipcache6', async (t) => {
  const dp = await tmpDatapath(t);
  const w = new PolicyMapWriter(dp.maps);
  const policy = (generation: number, v6: string): CompiledPolicy => ({
    generation,
    identities: [
      { prefix: '10.244.1.11/32', identity: FIRST_DYNAMIC_IDENTITY + 1, endpoint: 1 },
      { prefix: `${v6}/128`, identity: FIRST_DYNAMIC_IDENTITY + 1, endpoint: 1 },
    ],
    endpoints: [{ id: 1, pod: 'shop/web', addresses: ['10.244.1.11', v6], ingressIsolated: false, egressIsolated: false, entries: [] }],
    rules: [],
  });
  t.same(w.apply(policy(1, 'fd00:10:244:1::11')).problems, []);
  const said: string[] = [];
  const p = new PodAddresses(dp.maps, { pods: ['shop/web'], namespaces: [] }, (l) => said.push(l));
  t.same([...p.refresh(1000)].sort(), ['10.244.1.11', 'fd00:10:244:1::11'], 'both families');
  t.same([...p.refresh(3000)].sort(), ['10.244.1.11', 'fd00:10:244:1::11']);
  t.equal(p.fullReads, 1, 'the IPv6 address checked by one lookup, no whole read');
  t.same(w.apply(policy(2, 'fd00:10:244:1::12')).problems, []);
  t.same([...p.refresh(5000)].sort(), ['10.244.1.11', 'fd00:10:244:1::12'], 'the IPv6 address moved: read whole, found');
  t.equal(p.fullReads, 2);
});
