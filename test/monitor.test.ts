/**
 * The monitor: events the datapath sends while someone listens (flows
 * created and closed, reasons, policy verdicts), nothing while nobody does,
 * every event either delivered or counted lost, each listener with all of
 * them, and the slot protocol (claim, lease, release).
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/index.js';
import { MONITOR_SLOTS, monitorCtl } from '../src/dataplane/bpf/codecs.js';
import { MonitorSession, decodeBatch, matches, type MonitorEvent } from '../src/dataplane/bpf/monitor.js';
import { frame, TCP } from '../testkit/packet.js';
import { be, fe } from './helpers/fixtures.js';
import { REPO } from './helpers/env.js';
import { POD, progrunNode, type ProgrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';
import { sleep, until } from './helpers/wait.js';

const SVC = '10.96.0.10';
const BACKEND = '10.244.1.11';

async function setup(t: Parameters<typeof progrunNode>[0]): Promise<ProgrunNode> {
  const node = await progrunNode(t);
  t.same(
    node.rec.syncService('test/web', [fe('ClusterIP', SVC, 80, 'TCP', [be(BACKEND, 8080)], { servicePort: 'test/web:http/TCP' })]).problems,
    [],
  );
  t.same(
    node.rec.syncService('test/empty', [fe('ClusterIP', '10.96.0.30', 80, 'TCP', []), fe('ClusterIP', '10.96.0.30', 53, 'UDP', [])])
      .problems,
    [],
  );
  return node;
}

/** A listening session collecting what it receives; closed when the test ends. */
function listen(t: Parameters<typeof progrunNode>[0], node: ProgrunNode, opts: Parameters<typeof MonitorSession.open>[2] = {}) {
  const got: MonitorEvent[] = [];
  const s = MonitorSession.open(node.dp.maps, (evs) => got.push(...evs), opts);
  t.teardown(() => s.close());
  return { s, got };
}

const ctlWords = (node: ProgrunNode) => node.dp.maps.monitorCtl.get({ v: 0 })!;

t.test('flows created and closed, reasons, with the packet', async (t) => {
  const node = await setup(t);
  const { got } = listen(t, node);
  const syn = node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.SYN });
  t.equal(syn.verdict, 'redirect');
  await until('the flow-new event', () => got.some((e) => e.type === 'flow-new'));
  const created = got.find((e) => e.type === 'flow-new')!;
  t.match(created, {
    type: 'flow-new',
    hook: 'pod',
    ifindex: node.ifindex,
    tuple: { proto: 'TCP', src: POD, sport: 40000, dst: SVC, dport: 80 },
    nat: { proto: 'TCP', src: POD, sport: 40000, dst: BACKEND, dport: 8080 },
    flags: [],
  });
  if (created.type === 'flow-new')
    t.equal(node.dp.maps.svcNames.get({ v: created.svcId })?.name, 'test/web:http/TCP', 'svc id names the service');
  t.equal(created.captured.length, syn.raw.length, 'the whole (short) frame is captured');
  t.equal(
    created.captured.subarray(26, 34).toString('hex'),
    frame({ src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80 }).subarray(26, 34).toString('hex'),
    'as it came, before translation',
  );

  // FIN from the client, then from the backend: closed once, by fin, seen from the client's side
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.FIN | TCP.ACK });
  node.run('fromPod', { src: BACKEND, dst: POD }, { proto: 'tcp', sport: 8080, dport: 40000, flags: TCP.FIN | TCP.ACK });
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40000, dport: 80, flags: TCP.ACK });
  await until('the flow-close event', () => got.some((e) => e.type === 'flow-close'));
  await sleep(50);
  const closes = got.filter((e) => e.type === 'flow-close');
  t.equal(closes.length, 1, 'one close for the two FINs (the last ACK is no close)');
  t.match(closes[0], {
    closedBy: 'fin',
    tuple: { src: POD, sport: 40000, dst: SVC, dport: 80 },
    nat: { src: POD, sport: 40000, dst: BACKEND, dport: 8080 },
  });
  const dur = (closes[0] as { durationNs?: number }).durationNs ?? -1;
  t.ok(dur >= 0 && dur < 10e9, `duration since created (${dur} ns)`);

  // RST closes at once
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40001, dport: 80, flags: TCP.RST | TCP.ACK });
  await until('the RST close', () => got.some((e) => e.type === 'flow-close' && e.closedBy === 'rst'));

  // reasons: a drop, a reject (told as the packet it answers), a pass with a remark
  const bad = frame({ src: POD, dst: SVC }, { proto: 'tcp', sport: 40002, dport: 80 });
  bad[14 + 20 + 12] = 0x30; // data offset 3: malformed
  t.equal(node.runRaw('fromPod', bad).verdict, 'drop');
  node.run('fromPod', { src: POD, dst: '10.96.0.30' }, { proto: 'tcp', sport: 40003, dport: 80, flags: TCP.SYN });
  node.run('fromPod', { src: POD, dst: '10.96.0.30' }, { proto: 'udp', sport: 5353, dport: 53 });
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 40004, dport: 80, flags: TCP.ACK });
  await until('four reason events', () => got.filter((e) => e.type === 'drop').length >= 4);
  const drops = got.filter((e) => e.type === 'drop');
  t.match(drops, [
    { reason: 'malformed', dropped: true, verdict: 'drop', answered: false, tuple: { src: POD, dst: SVC, sport: 40002, dport: 80 } },
    {
      reason: 'no-endpoints',
      dropped: false,
      verdict: 'reject',
      answered: true,
      tuple: { proto: 'TCP', src: POD, sport: 40003, dst: '10.96.0.30', dport: 80 },
    },
    {
      reason: 'no-endpoints',
      verdict: 'reject',
      answered: true,
      tuple: { proto: 'UDP', src: POD, sport: 5353, dst: '10.96.0.30', dport: 53 },
    },
    { reason: 'ct-not-opening', dropped: false, verdict: 'pass', tuple: { src: POD, sport: 40004 } },
  ]);
  t.equal(drops[1]!.captured[14 + 20 + 13]! & TCP.RST, TCP.RST, 'a reject captures the RST sent back');
  t.equal(drops[2]!.captured[14 + 9], 1, 'and the ICMP error');
  t.equal(reasonCount(node.dp, 'malformed'), 1, 'counters count as before');
});

t.test('every listener gets every event; the last to leave clears the leases, and nothing is sent any more', async (t) => {
  const node = await setup(t);
  t.equal(ctlWords(node).untilNs, 0n, 'the global lease is 0 before anyone listens');
  const a = listen(t, node);
  const b = listen(t, node);
  t.not(a.s.slot, b.s.slot, 'two listeners, two slots');
  const c = ctlWords(node);
  t.ok(c.untilNs > native().monotonicNs(), 'the global lease runs');
  t.ok(c.slot[a.s.slot]!.untilNs > 0n && c.slot[b.s.slot]!.untilNs > 0n, 'and each slot’s');
  for (let i = 0; i < 5; i++) node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 41000 + i, dport: 80, flags: TCP.SYN });
  await until('both listeners see five flows', () => a.got.length === 5 && b.got.length === 5);
  t.same(
    a.got.map((e) => e.tuple.sport),
    b.got.map((e) => e.tuple.sport),
    'the same events, in order',
  );
  a.s.close();
  t.ok(ctlWords(node).untilNs > 0n, 'one leaving keeps the global lease for the other');
  t.equal(ctlWords(node).slot[a.s.slot]!.owner, 0n, 'its slot is free');
  t.equal(node.dp.maps.monitorRings.get({ v: a.s.slot }), undefined, 'and holds no ring');
  b.s.close();
  t.same(
    ctlWords(node),
    { untilNs: 0n, slot: Array.from({ length: MONITOR_SLOTS }, () => ({ owner: 0n, untilNs: 0n })) },
    'the last one clears it all',
  );
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 41100, dport: 80, flags: TCP.SYN });
  await sleep(100);
  t.equal(a.got.length + b.got.length, 10, 'closed listeners get nothing more');
});

t.test('bounded: a listener that falls behind loses events, counted; none is lost silently', async (t) => {
  const node = await setup(t);
  const { s, got } = listen(t, node);
  const bad = frame({ src: POD, dst: SVC }, { proto: 'tcp', sport: 40002, dport: 80 });
  bad[14 + 20 + 12] = 0x30;
  // One run of 150000 packets blocks this thread: the reader fills its few
  // batches, stops, and the ring (4 MiB, ~15000 events of 280 bytes with their headers) overflows.
  const N = 150_000;
  node.runRaw('fromPod', bad); // warm up the netns switch
  const r = native().progTestRun(node.dp.programs.fromData.fd, bad, { repeat: N });
  t.equal(r.retval, 2);
  await until('every event delivered or counted lost', () => got.length + s.lost() >= N + 1, 20_000);
  t.ok(s.lost() > 0, `${s.lost()} lost, counted per CPU`);
  t.equal(got.length + s.lost(), N + 1, `${got.length} delivered + ${s.lost()} lost = every event`);
});

t.test('slots: a dead holder’s slot is taken once its lease and claim grace ran out; a live one never', async (t) => {
  const node = await setup(t);
  const ctl = node.dp.maps.monitorCtl.handle;
  const slotOff = monitorCtl.layout.find((f) => f.name === 'slot')!.offset;
  const n = native();
  const nowS = n.monotonicNs() / 1_000_000_000n;
  // slot 0: claimed long ago, lease over (its monitor was killed); slot 1: live
  n.mapWordOp(ctl, slotOff, 'store', ((nowS - 100n) << 32n) | 7n);
  n.mapWordOp(ctl, slotOff + 8, 'store', n.monotonicNs() - 1_000_000_000n);
  n.mapWordOp(ctl, slotOff + 16, 'store', (nowS << 32n) | 9n);
  n.mapWordOp(ctl, slotOff + 24, 'store', n.monotonicNs() + 60_000_000_000n);
  const a = listen(t, node);
  t.equal(a.s.slot, 0, 'the dead holder’s slot is taken');
  const b = listen(t, node);
  t.equal(b.s.slot, 2, 'the live one is skipped');
  // slot 3: claimed a moment ago, no lease yet (its monitor is starting): not taken
  n.mapWordOp(ctl, slotOff + 48, 'store', (nowS << 32n) | 11n);
  t.throws(() => listen(t, node), /all 4 monitor slots of bpfproxy_monitor_ctl are held by running monitors/, 'all held: a clear error');
  t.equal(n.mapWordOp(ctl, slotOff + 48, 'load'), (nowS << 32n) | 11n, 'the starting claim is left alone');

  // the datapath sends only to slots whose lease runs
  n.mapWordOp(ctl, slotOff + 16 * a.s.slot + 8, 'store', 1n);
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 42000, dport: 80, flags: TCP.SYN });
  await until('the live listener sees it', () => b.got.length === 1);
  await sleep(50);
  t.equal(a.got.length, 0, 'an expired slot gets nothing');
  t.equal(a.s.lost(), 0, 'and loses nothing: nothing was sent');
});

t.test('policy verdicts: monitor_policy() from a program over the same pinned maps', async (t) => {
  const node = await setup(t);
  const dir = mkdtempSync(join(tmpdir(), 'bpfproxy-policy-probe-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, 'probe.c');
  writeFileSync(
    src,
    `#include "lib/common.h"
#include "lib/monitor.h"
SEC("tc") int policy_probe(struct __sk_buff *skb)
{
	struct ct_key t = {.saddr = bpf_htonl(0x0af40163), .daddr = bpf_htonl(0x0af4010b),
			   .sport = bpf_htons(40000), .dport = bpf_htons(8080), .proto = IPPROTO_TCP};

	monitor_policy(skb, MON_HOOK_POD, &t, MON_VERDICT_DENY, 7, 42, MON_DIR_INGRESS);
	return TC_ACT_SHOT;
}
char LICENSE[] SEC("license") = "Dual BSD/GPL";
`,
  );
  const obj = join(dir, 'probe.o');
  execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-Wall', '-Werror', `-I${join(REPO, 'bpf')}`, '-mcpu=v3', '-c', src, '-o', obj]);
  const loaded = await native().loadObject(obj, { pinRoot: pinRootOf(node) });
  t.teardown(() => loaded.close());
  const { got } = listen(t, node);
  const prog = loaded.programs().find((p) => p.name === 'policy_probe')!;
  t.equal(native().progTestRun(prog.fd, frame({ src: POD, dst: BACKEND }, { proto: 'tcp', sport: 40000, dport: 8080 })).retval, 2);
  await until('the policy event', () => got.length === 1);
  t.match(got[0], {
    type: 'policy',
    hook: 'pod',
    verdict: 'deny',
    direction: 'ingress',
    ruleId: 7,
    endpoint: 42,
    tuple: { proto: 'TCP', src: '10.244.1.99', sport: 40000, dst: '10.244.1.11', dport: 8080 },
  });
  t.ok(matches(got[0]!, { types: ['policy'], verdict: 'deny', ip: '10.244.1.11', port: 8080 }), 'filters: type, verdict, address, port');
  t.notOk(matches(got[0]!, { verdict: 'allow' }));
  t.notOk(matches(got[0]!, { types: ['drop'] }));
  // --pod / --namespace: a set of addresses, either side
  t.ok(matches(got[0]!, { addresses: new Set(['10.0.0.1', '10.244.1.11']) }), 'addresses: the destination is one of them');
  t.ok(matches(got[0]!, { addresses: new Set(['10.244.1.99']) }), 'addresses: the source is one of them');
  t.notOk(matches(got[0]!, { addresses: new Set(['10.0.0.1']) }), 'addresses: neither side');
  t.notOk(matches(got[0]!, { addresses: new Set() }), 'addresses: an empty set (pods not known yet) matches nothing');
});

t.test('a worker thread that used the addon and ended leaves ring buffer readers working on this one', async (t) => {
  const node = await setup(t);
  const addon = new URL('../src/native/index.js', import.meta.url).href;
  const code = `const { parentPort } = require('node:worker_threads');
import(${JSON.stringify(addon)}).then(({ native }) => {
  const r = native().ringbufOpen(4096 * 16, () => {});
  r.close();
  parentPort.postMessage('done');
});`;
  const w = new Worker(code, { eval: true });
  t.equal(await new Promise((res) => w.once('message', res)), 'done');
  await new Promise((res) => w.once('exit', res));
  const { got } = listen(t, node);
  node.run('fromPod', { src: POD, dst: SVC }, { proto: 'tcp', sport: 43000, dport: 80, flags: TCP.SYN });
  await until('an event after the worker ended', () => got.length === 1);
});

t.test('decodeBatch: records that are not events are counted, not returned', async (t) => {
  const b = Buffer.alloc(8 + 16);
  b.writeUInt32LE(13, 0);
  const r = decodeBatch(b, 1);
  t.same(r, { events: [], malformed: 1 });
});

/** The pin dir the node's datapath uses: where its maps are pinned. */
function pinRootOf(node: ProgrunNode): string {
  const info = node.dp.objects[0]!.maps().find((m) => m.name === 'bpfproxy_monitor_ctl')!;
  return info.pinPath!.replace(/\/bpfproxy_monitor_ctl$/, '');
}
