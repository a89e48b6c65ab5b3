/**
 * What network policy costs per packet, through BPF_PROG_RUN (the kernel's
 * own timing, median of rounds: test/helpers/progrun-timing.ts), for a
 * service flow and a plain pod-to-pod flow:
 *  - off: no endpoint isolated (policy maps empty): one array lookup added;
 *  - on elsewhere: some endpoint isolated, not these: the ipcache lookups;
 *  - isolated: both ends isolated, the flow allowed (decided once, then a
 *    generation compare per packet);
 *  - off again: every policy removed.
 * Figures are printed, not asserted (a shared machine makes them noisy);
 * what is asserted is that each flow does what it should in each state.
 */
import t from 'tap';
import { frame, TCP } from '../testkit/packet.js';
import type { CompiledPolicy, EndpointPolicy } from '../src/model/policy/compiled.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { be, fe } from './helpers/fixtures.js';
import { POD, progrunNode } from './helpers/progrun-node.js';
import { nsPerNewFlow, nsPerPacket } from './helpers/progrun-timing.js';

const WEB = ['10.244.1.11', '10.244.1.12'];
const PEER = '10.244.1.20';

function policy(isolateThese: boolean): CompiledPolicy {
  const ep = (id: number, addr: string, ingress: boolean, egress: boolean, entries: EndpointPolicy['entries'] = []): EndpointPolicy => ({
    id,
    pod: `x/p${id}`,
    addresses: [addr],
    ingressIsolated: ingress,
    egressIsolated: egress,
    entries,
  });
  const allow = (peer: number, direction: 'ingress' | 'egress', port: number) =>
    ({ peer, direction, proto: 6, port, portPrefixLen: 16, verdict: 'allow', ruleId: 0 }) as const;
  return {
    generation: 1,
    identities: [
      { prefix: '0.0.0.0/0', identity: 1 },
      { prefix: `${POD}/32`, identity: 100, endpoint: 1 },
      { prefix: `${WEB[0]}/32`, identity: 101, endpoint: 2 },
      { prefix: `${WEB[1]}/32`, identity: 101, endpoint: 3 },
      { prefix: `${PEER}/32`, identity: 102, endpoint: 4 },
      { prefix: '10.244.1.30/32', identity: 103, endpoint: 5 },
    ],
    endpoints: [
      ep(1, POD, false, isolateThese, [allow(101, 'egress', 8080), allow(102, 'egress', 8080)]),
      ep(2, WEB[0]!, isolateThese, false, [allow(100, 'ingress', 8080)]),
      ep(3, WEB[1]!, isolateThese, false, [allow(100, 'ingress', 8080)]),
      ep(4, PEER, isolateThese, false, [allow(100, 'ingress', 8080)]),
      ep(5, '10.244.1.30', true, true), // isolated elsewhere: policy is on
    ],
    rules: [{ id: 0, policy: 'x/cost', direction: 'egress', index: 0 }],
  };
}

t.test('per-packet cost of network policy (PROG_RUN ns/packet)', async (t) => {
  const node = await progrunNode(t);
  const { ns, ifindex, dp, rec } = node;
  rec.syncService('test/web', [
    fe(
      'ClusterIP',
      '10.96.0.10',
      80,
      'TCP',
      WEB.map((a) => be(a, 8080)),
    ),
  ]);
  const w = new PolicyMapWriter(dp.maps);
  let base = 10_000;
  const figures: Record<string, Record<string, number>> = {};
  for (const state of ['off', 'on elsewhere', 'isolated', 'off again'] as const) {
    if (state === 'on elsewhere') w.apply(policy(false));
    if (state === 'isolated') w.apply(policy(true));
    if (state === 'off again') w.apply({ generation: 1, identities: [], endpoints: [], rules: [] });
    base += 10_000;
    // each state its own source ports: new flows, and an established one of each kind
    const svcSyn = frame({ src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: base, dport: 80 });
    const svcAck = frame({ src: POD, dst: '10.96.0.10' }, { proto: 'tcp', sport: base, dport: 80, flags: TCP.ACK });
    const podSyn = frame({ src: POD, dst: PEER }, { proto: 'tcp', sport: base + 1, dport: 8080 });
    const podAck = frame({ src: POD, dst: PEER }, { proto: 'tcp', sport: base + 1, dport: 8080, flags: TCP.ACK });
    t.equal(node.runRaw('fromPod', svcSyn).verdict, 'redirect', `${state}: service flow opens`);
    t.equal(node.runRaw('fromPod', podSyn).verdict, 'pass', `${state}: pod-to-pod flow opens`);
    t.equal(node.runRaw('fromPod', podAck).verdict, 'pass', `${state}: pod-to-pod flow goes on`);
    t.equal(node.runRaw('toPod', podAck).verdict, 'pass', `${state}: and enters the peer`);
    const mk = (dst: string, dport: number, off: number) => (r: number, i: number) =>
      frame({ src: POD, dst }, { proto: 'tcp', sport: 1024 + ((base + off + r * 5_000 + i) % 60_000), dport });
    figures[state] = {
      'service, established (tc_pod)': nsPerPacket(ns, dp, 'fromPod', svcAck, ifindex),
      'service, new flow (tc_pod)': nsPerNewFlow(ns, dp, 'fromPod', mk('10.96.0.10', 80, 1000), ifindex, { count: 2000 }),
      'pod to pod, established (tc_pod)': nsPerPacket(ns, dp, 'fromPod', podAck, ifindex),
      'pod to pod, new flow (tc_pod)': nsPerNewFlow(ns, dp, 'fromPod', mk(PEER, 8080, 5000), ifindex, { count: 2000 }),
      'pod to pod, established (veth egress)': nsPerPacket(ns, dp, 'toPod', podAck, ifindex),
    };
  }
  const rows = Object.keys(figures.off!);
  t.comment(['ns/packet'.padEnd(40) + ['off', 'on elsewhere', 'isolated', 'off again'].map((s) => s.padStart(14)).join('')].join(''));
  for (const r of rows) {
    t.comment(
      r.padEnd(40) +
        (['off', 'on elsewhere', 'isolated', 'off again'] as const).map((s) => String(Math.round(figures[s]![r]!)).padStart(14)).join(''),
    );
  }
  t.ok(
    rows.every((r) => figures.isolated![r]! > 0),
    'figures measured',
  );
});
