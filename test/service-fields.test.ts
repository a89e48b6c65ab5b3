/**
 * The Service fields kube-proxy honours beyond the basics, end to end:
 * Kubernetes object -> convert -> desired frontends -> reconciler -> BPF
 * maps -> packets through BPF_PROG_RUN.
 *
 * - spec.loadBalancerSourceRanges: only listed clients reach the
 *   LoadBalancer IPs (pods included), checked before the backend choice,
 *   TCP and UDP; NodePorts, cluster IPs and external IPs are not subject;
 *   blocked packets are dropped and counted as lb-source-range.
 * - status.loadBalancer.ingress[].ipMode: Proxy: no frontend for that IP.
 * - spec.allocateLoadBalancerNodePorts: false: no NodePort frontend unless
 *   a nodePort is set anyway.
 * - --nodeport-addresses: NodePort answers only on the selected addresses.
 * - traffic-policy scoping as kube-proxy's: internalTrafficPolicy applies to
 *   cluster IPs only; traffic from outside to a cluster IP whose endpoint is
 *   on another node is SNATed.
 */
import t, { type Test } from 'tap';
import { desiredFor, type NodeContext } from '../src/model/desired.js';
import { MAX_SOURCE_RANGES, toEndpointSlice, toNode, toService } from '../src/sources/convert.js';
import { nodePrimaryIPv4 as primaryOf } from '../src/model/types.js';
import type { EndpointSlice, Frontend } from '../src/model/types.js';
import { nodePortAddressesOf, parseNodePortAddresses, formatNodePortAddresses } from '../src/config/services.js';
import { nodePortChoice } from '../src/agent/runtime.js';
import { defaultRouteIface } from '../src/agent/primary-ip.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { FeFlags, NodeIpFlags } from '../src/dataplane/bpf/codecs.js';
import { ip } from '../testkit/netns.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPinnedMaps } from '../src/dataplane/bpf/loader.js';
import { tmpNetns, tmpPinDir } from './helpers/env.js';
import { cliIn, startAgentIn, tmpDir } from './helpers/agent-proc.js';
import { PROTO, TCP } from '../testkit/packet.js';
import { CLIENT, NODE_IP, POD, progrunNode } from './helpers/progrun-node.js';
import { reasonCount } from './helpers/progrun.js';

const NODE = 'node-a';
const node = (addrs: string[] = [NODE_IP]): NodeContext => ({
  nodeName: NODE,
  nodeAddresses: new Set(addrs),
  allowNodeAddressExternalIPs: false,
});

/** A LoadBalancer Service object (v1 shape) with one TCP and one UDP port. */
function lbService(spec: Record<string, unknown> = {}, ingress: Array<Record<string, unknown>> = [{ ip: '198.51.100.10' }]) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: 'test', name: 'web' },
    spec: {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      ports: [
        { name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 },
        { name: 'dns', port: 53, protocol: 'UDP', nodePort: 30053 },
      ],
      ...spec,
    },
    status: { loadBalancer: { ingress } },
  };
}

function slice(endpoints: Array<{ ip: string; node?: string }>, name = 'web') {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: 'test', name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, ...(e.node ? { nodeName: e.node } : {}) })),
  };
}

function frontendsOf(svcObj: unknown, slices: unknown[] = [], ctx: NodeContext = node()): Frontend[] {
  const s = toService(svcObj);
  if (!s.value) throw new Error(JSON.stringify(s.problems));
  const sl = slices.map((o) => toEndpointSlice(o).value).filter((x): x is EndpointSlice => !!x);
  return desiredFor(s.value, sl, ctx).frontends;
}

t.test('conversion: loadBalancerSourceRanges as kube-proxy reads them', async (t) => {
  const conv = (ranges: unknown) => toService(lbService({ loadBalancerSourceRanges: ranges }));

  const ok = conv([' 203.0.113.0/25', '192.168.0.0/24', '10.1.2.3/8', '203.0.113.0/25']);
  t.same(ok.value?.loadBalancerSourceRanges, ['203.0.113.0/25', '192.168.0.0/24', '10.0.0.0/8'], 'trimmed, host bits masked, once each');
  t.same(ok.problems, [], 'no problem');

  const bad = conv(['203.0.113.0/25', 'not-a-cidr', '203.0.113.7', '203.0.113.000/025']);
  t.same(bad.value?.loadBalancerSourceRanges, ['203.0.113.0/25'], 'bad entries skipped');
  t.same(
    bad.problems.map((p) => [p.field, p.fatal]),
    [
      ['spec.loadBalancerSourceRanges[1]', false],
      ['spec.loadBalancerSourceRanges[2]', false],
      ['spec.loadBalancerSourceRanges[3]', false],
    ],
    'each bad entry is a problem naming the field; the Service is still served',
  );
  t.match(bad.problems[0]!.message, /not a CIDR.*skipped/);

  const none = conv(['garbage']);
  t.same(none.value?.loadBalancerSourceRanges, [], 'every range unusable: no client accepted (fail closed)');
  t.ok(
    none.problems.some((p) => p.field === 'spec.loadBalancerSourceRanges' && /accept no client/.test(p.message)),
    'and said so',
  );
  const v6 = conv(['2001:db8::/64']);
  t.same(
    v6.value?.loadBalancerSourceRanges,
    ['2001:db8::/64'],
    'IPv6 ranges are kept (the IPv4 LoadBalancer IPs, with none of their family, accept no one)',
  );

  t.equal(conv(undefined).value?.loadBalancerSourceRanges, undefined, 'no field: no restriction');
  t.equal(conv([]).value?.loadBalancerSourceRanges, undefined, 'empty list: no restriction');
  t.equal(conv(null).value?.loadBalancerSourceRanges, undefined, 'null: no restriction');

  const many = conv(Array.from({ length: MAX_SOURCE_RANGES + 5 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`));
  t.equal(many.value?.loadBalancerSourceRanges?.length, MAX_SOURCE_RANGES, `bounded at ${MAX_SOURCE_RANGES}`);
  t.ok(
    many.problems.some((p) => /are refused/.test(p.message)),
    'the rest reported as refused',
  );

  const np = toService({ ...lbService({ loadBalancerSourceRanges: ['203.0.113.0/25'] }), spec: { ...lbService().spec, type: 'NodePort' } });
  t.equal(np.value?.loadBalancerSourceRanges, undefined, 'a NodePort Service has no LoadBalancer IP to restrict');
});

t.test('desired frontends: only LoadBalancer IPs carry the ranges', async (t) => {
  const fes = frontendsOf(lbService({ loadBalancerSourceRanges: ['203.0.113.0/25'], externalIPs: ['192.0.2.200'] }), [
    slice([{ ip: '10.244.1.11', node: NODE }]),
  ]);
  const kinds = fes.map((f) => `${f.kind}:${f.sourceRanges ? f.sourceRanges.join(',') : '-'}`).sort();
  t.same(
    [...new Set(kinds)],
    ['ClusterIP:-', 'ExternalIP:-', 'LoadBalancer:203.0.113.0/25', 'NodePort:-'],
    'cluster IP, external IP and NodePort are not subject to them (kube-proxy parity)',
  );
});

t.test('conversion: ipMode Proxy ingress IPs get no frontend', async (t) => {
  const s = toService(
    lbService({}, [
      { ip: '198.51.100.10', ipMode: 'Proxy' },
      { ip: '198.51.100.11', ipMode: 'VIP' },
      { ip: '198.51.100.12' },
      { ip: '198.51.100.13', ipMode: 'Tunnel' },
    ]),
  );
  t.same(s.value?.loadBalancerIPs, ['198.51.100.11', '198.51.100.12'], 'VIP and unset are served; Proxy is not');
  t.same(
    s.problems.map((p) => p.field),
    ['status.loadBalancer.ingress[3].ipMode'],
    'an unknown mode is reported (and, as kube-proxy does, not served)',
  );
});

t.test('conversion: allocateLoadBalancerNodePorts: false', async (t) => {
  const noPorts = lbService({
    allocateLoadBalancerNodePorts: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  });
  const fes = frontendsOf(noPorts, [slice([{ ip: '10.244.1.11', node: NODE }])]);
  t.same(fes.map((f) => f.kind).sort(), ['ClusterIP', 'LoadBalancer'], 'no nodePort allocated: no NodePort frontend');
  const setAnyway = lbService({
    allocateLoadBalancerNodePorts: false,
    ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 }],
  });
  const fes2 = frontendsOf(setAnyway, [slice([{ ip: '10.244.1.11', node: NODE }])]);
  t.ok(
    fes2.some((f) => f.kind === 'NodePort' && f.port === 30080),
    'a nodePort set anyway is served, as kube-proxy serves it',
  );
});

t.test('--nodeport-addresses: parsing and selection', async (t) => {
  t.same(parseNodePortAddresses(''), { kind: 'all' });
  t.same(parseNodePortAddresses('primary'), { kind: 'primary' });
  const c = parseNodePortAddresses('192.168.0.2/24, 10.0.0.0/8,2001:db8::/64');
  t.same(formatNodePortAddresses(c), '192.168.0.0/24,10.0.0.0/8,2001:db8::/64', 'host bits masked, IPv6 kept aside');
  t.throws(() => parseNodePortAddresses('primary,10.0.0.0/8'), /cannot be combined/);
  t.throws(() => parseNodePortAddresses('192.168.0.2'), /not a CIDR/, 'a bare address is not a CIDR (kube-proxy refuses it too)');
  t.throws(() => parseNodePortAddresses('10.0.0.0/33'), /not a CIDR/);

  const addrs = ['192.168.0.2', '192.168.1.2', '192.168.99.11'];
  t.same(nodePortAddressesOf(undefined, addrs), addrs, 'default: every node address');
  t.same(nodePortAddressesOf(parseNodePortAddresses('192.168.0.2/32'), addrs), ['192.168.0.2']);
  t.same(nodePortAddressesOf(parseNodePortAddresses('192.168.0.0/24,192.168.1.0/24,2001:db8::/64'), addrs), ['192.168.0.2', '192.168.1.2']);
  t.same(nodePortAddressesOf(parseNodePortAddresses('2001:db8::/64'), addrs), [], 'IPv6 only: no IPv4 address');
  t.same(nodePortAddressesOf({ kind: 'primary' }, addrs, '192.168.1.2'), ['192.168.1.2']);
  t.same(nodePortAddressesOf({ kind: 'primary' }, addrs, '203.0.113.9'), [], 'a primary address the node does not have: none');

  const dr = () => ({ address: '192.168.99.11', iface: 'eth0' });
  const fromNode = nodePortChoice({ kind: 'primary' }, addrs, '192.168.0.2', dr);
  t.same(fromNode, { addrs: ['192.168.0.2'], primary: { address: '192.168.0.2', from: 'the Node object' } });
  const fromRoute = nodePortChoice({ kind: 'primary' }, addrs, undefined, dr);
  t.same(fromRoute.addrs, ['192.168.99.11'], 'no Node object: the default route interface address');
  t.match(fromRoute.primary?.from, /default route.*eth0.*no Node object/, 'and the log says so');
  t.same(
    nodePortChoice({ kind: 'primary' }, addrs, undefined, () => undefined),
    { addrs: [] },
    'neither: no address',
  );
  t.same(nodePortChoice(undefined, addrs, undefined, () => t.fail('not asked') as never).addrs, addrs);

  const route = [
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
    'eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0',
    'eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
    'eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
  ].join('\n');
  t.equal(defaultRouteIface(route), 'eth0', 'the lowest-metric default route');
  t.equal(defaultRouteIface(route.split('\n').slice(0, 1).join('\n')), undefined, 'no default route');

  // as the sources deliver a Node: converted first
  const nodePrimaryIPv4 = (o: object): string | undefined => primaryOf(toNode({ metadata: { name: 'n1' }, ...o }).value!);
  t.equal(
    nodePrimaryIPv4({
      status: {
        addresses: [
          { type: 'Hostname', address: 'n1' },
          { type: 'ExternalIP', address: '203.0.113.5' },
          { type: 'InternalIP', address: 'fd00::5' },
          { type: 'InternalIP', address: '192.168.0.2' },
        ],
      },
    }),
    '192.168.0.2',
    "the Node's first IPv4 InternalIP",
  );
  t.equal(nodePrimaryIPv4({ status: { addresses: [{ type: 'ExternalIP', address: '203.0.113.5' }] } }), '203.0.113.5', 'else ExternalIP');
  t.equal(nodePrimaryIPv4({ status: {} }), undefined);
});

t.test('through BPF_PROG_RUN', async (t) => {
  const n = await progrunNode(t);
  const { dp, rec } = n;
  const LB = '198.51.100.10';
  const ALLOWED = CLIENT; // 192.0.2.100
  const BLOCKED = '192.0.2.200';
  const local = [{ ip: '10.244.1.11', node: NODE }];
  const sync = (svc: unknown, slices: unknown[] = [slice(local)], ctx = node()) => {
    const r = rec.syncService('test/web', frontendsOf(svc, slices, ctx));
    if (r.problems.length) throw new Error(`not programmed: ${JSON.stringify(r.problems)}`);
  };
  rec.setNodeAddresses([NODE_IP]);
  let port = 40000;
  const syn = (src: string, dst: string, dport: number, role: 'fromData' | 'fromPod' = 'fromData') =>
    n.run(role, { src, dst }, { proto: 'tcp', sport: port++, dport, flags: TCP.SYN });
  const udp = (src: string, dst: string, dport: number) =>
    n.run('fromData', { src, dst }, { proto: 'udp', sport: port++, dport, payload: Buffer.from('q') });
  const srcRanges = () =>
    dp.maps.lbSrcs
      .keys()
      .map((k) => `${k.addr}/${k.prefixlen - 32}`)
      .sort();

  t.test('loadBalancerSourceRanges: listed clients in, others dropped and counted (TCP and UDP)', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    t.same(srcRanges(), ['192.0.2.96/28', '192.0.2.96/28'], 'one prefix per service port (TCP, UDP)');
    const lbFes = dp.maps.fe.entries().filter(([k]) => k.addr === LB);
    t.ok(lbFes.length === 2 && lbFes.every(([, v]) => v.flags & FeFlags.SRC_RANGE), 'the LB frontends check them');
    t.ok(
      dp.maps.fe.entries().every(([k, v]) => k.addr === LB || !(v.flags & FeFlags.SRC_RANGE)),
      'no other frontend does',
    );

    const ok = syn(ALLOWED, LB, 80);
    t.equal(ok.verdict, 'redirect');
    t.equal(ok.out.dst, '10.244.1.11', 'allowed client DNATed');
    t.equal(udp(ALLOWED, LB, 53).out.dst, '10.244.1.11', 'UDP too');

    const before = reasonCount(dp, 'lb-source-range');
    const ctBefore = dp.maps.ct.count();
    t.equal(syn(BLOCKED, LB, 80).verdict, 'drop', 'TCP from outside the ranges dropped');
    t.equal(udp(BLOCKED, LB, 53).verdict, 'drop', 'UDP from outside the ranges dropped');
    t.equal(reasonCount(dp, 'lb-source-range'), before + 2, 'counted as lb-source-range');
    t.equal(dp.maps.ct.count(), ctBefore, 'no conntrack state for them');

    const np = syn(BLOCKED, NODE_IP, 30080);
    t.equal(np.out.dst, '10.244.1.11', 'the NodePort of the same service is not subject to them');
    const cip = syn(BLOCKED, '10.96.0.10', 80);
    t.equal(cip.out.dst, '10.244.1.11', 'nor is its cluster IP');
  });

  t.test('checked before anything else: no reject, no not-opening pass for blocked clients', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }), []);
    const blocked = syn(BLOCKED, LB, 80);
    t.equal(blocked.verdict, 'drop', 'a service without endpoints rejects nobody outside the ranges: dropped');
    const allowed = syn(ALLOWED, LB, 80);
    t.equal(allowed.verdict, 'redirect', 'an allowed client gets the reject');
    t.equal(allowed.out.tcpFlags, TCP.RST | TCP.ACK, 'TCP RST');
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    const before = reasonCount(dp, 'lb-source-range');
    const ack = n.run('fromData', { src: BLOCKED, dst: LB }, { proto: 'tcp', sport: port++, dport: 80, flags: TCP.ACK });
    t.equal(ack.verdict, 'drop', 'a stray ACK from outside the ranges is dropped, not left to the kernel');
    t.equal(reasonCount(dp, 'lb-source-range'), before + 1);
  });

  t.test('pods are subject to the ranges too (kube-proxy parity)', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    t.equal(syn(POD, LB, 80, 'fromPod').verdict, 'drop', 'a pod outside the ranges is dropped');
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28', '10.244.0.0/16'] }));
    const r = syn(POD, LB, 80, 'fromPod');
    t.equal(r.out.dst, '10.244.1.11', 'a pod inside them reaches the endpoint');
  });

  t.test('changes: widen, narrow, remove; established flows keep going', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    const sport = port++;
    const first = n.run('fromData', { src: ALLOWED, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.SYN });
    t.equal(first.out.dst, '10.244.1.11', 'connection opened');
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.192/28'] }));
    t.same(srcRanges(), ['192.0.2.192/28', '192.0.2.192/28'], 'narrowed: the old prefix is gone');
    t.equal(syn(ALLOWED, LB, 80).verdict, 'drop', 'new connections from the old range are dropped');
    t.equal(syn(BLOCKED, LB, 80).out.dst, '10.244.1.11', 'the new range gets in');
    const more = n.run('fromData', { src: ALLOWED, dst: LB }, { proto: 'tcp', sport, dport: 80, flags: TCP.ACK });
    t.equal(more.out.dst, '10.244.1.11', 'the established connection is not cut (as kube-proxy: ct state new only)');

    sync(lbService());
    t.same(srcRanges(), [], 'field removed: the prefixes are gone');
    t.equal(syn(BLOCKED, LB, 80).out.dst, '10.244.1.11', 'and everyone gets in');
    t.ok(
      dp.maps.fe.entries().every(([, v]) => !(v.flags & FeFlags.SRC_RANGE)),
      'no frontend checks any more',
    );

    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    rec.syncService('test/web', []);
    t.same(srcRanges(), [], 'service deleted: the prefixes are gone');
  });

  t.test('every range unusable: the LoadBalancer IP accepts no one', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['not-a-cidr'] }));
    t.same(srcRanges(), [], 'nothing to allow');
    t.equal(syn(ALLOWED, LB, 80).verdict, 'drop', 'dropped');
    t.equal(syn(BLOCKED, NODE_IP, 30080).out.dst, '10.244.1.11', 'the NodePort still serves');
  });

  t.test('a restarted agent adopts the prefixes; leftovers without a frontend are removed', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    // a leftover of an interrupted sync: a prefix under a service port id no frontend has
    dp.maps.lbSrcs.set({ prefixlen: 56, svcId: 9999, addr: '203.0.113.0' }, { v: 1 });
    const again = new BpfReconciler(dp.maps);
    t.same(srcRanges(), ['192.0.2.96/28', '192.0.2.96/28'], 'the leftover is gone at start, the live ones kept');
    const r = again.syncService('test/web', frontendsOf(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }), [slice(local)]));
    t.equal(r.frontendsChanged, 0, 'nothing rewritten');
    t.equal(syn(BLOCKED, LB, 80).verdict, 'drop', 'still enforced');
  });

  t.test('a full prefix map: the change is refused and reported, the old ranges keep working', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }));
    const room = dp.maps.lbSrcs.maxEntries - dp.maps.lbSrcs.count();
    const filler = Array.from(
      { length: room },
      (_, i) => [{ prefixlen: 64, svcId: 77777, addr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }, { v: 1 }] as const,
    );
    dp.maps.lbSrcs.setMany(filler);
    const r = rec.syncService(
      'test/web',
      frontendsOf(lbService({ loadBalancerSourceRanges: ['192.0.2.192/28', '192.0.2.208/28'] }), [slice(local)]),
    );
    t.ok(r.problems.length > 0 && r.problems.every((p) => p.mapFull), 'reported as a full map');
    t.match(r.problems[0]?.message, /loadBalancerSourceRanges map bpfproxy_lb_srcs is full.*keeps its previous state/);
    t.equal(syn(ALLOWED, LB, 80).out.dst, '10.244.1.11', 'the old range still gets in');
    t.equal(syn(BLOCKED, LB, 80).verdict, 'drop', 'the new one not yet');
    t.equal(dp.maps.lbSrcs.keys().filter((k) => k.svcId !== 77777).length, 2, 'nothing half-written');
    dp.maps.lbSrcs.deleteMany(filler.map(([k]) => k));
    const again = rec.syncService(
      'test/web',
      frontendsOf(lbService({ loadBalancerSourceRanges: ['192.0.2.192/28', '192.0.2.208/28'] }), [slice(local)]),
    );
    t.same(again.problems, [], 'with room, the retry applies');
    t.equal(syn(BLOCKED, LB, 80).out.dst, '10.244.1.11', 'the new range gets in');
    t.equal(syn(ALLOWED, LB, 80).verdict, 'drop', 'the old one is out');
  });

  t.test('ipMode Proxy: no frontend for the IP; VIP: served', async (t) => {
    sync(
      lbService({}, [
        { ip: LB, ipMode: 'Proxy' },
        { ip: '198.51.100.11', ipMode: 'VIP' },
      ]),
    );
    const p = syn(POD, LB, 80, 'fromPod');
    t.equal(p.verdict, 'pass', 'a pod reaching the Proxy-mode IP is not short-circuited: the packet goes on to the load balancer');
    t.equal(p.out.dst, LB, 'untranslated');
    t.equal(syn(CLIENT, LB, 80).out.dst, LB, 'nor is traffic from outside translated');
    t.equal(syn(POD, '198.51.100.11', 80, 'fromPod').out.dst, '10.244.1.11', 'the VIP-mode IP is served');
    rec.syncService('test/web', []);
  });

  t.test('allocateLoadBalancerNodePorts: false and no nodePort: no NodePort', async (t) => {
    sync(lbService({ allocateLoadBalancerNodePorts: false, ports: [{ name: 'http', port: 80, protocol: 'TCP' }] }));
    t.equal(syn(CLIENT, NODE_IP, 30080).verdict, 'pass', 'nothing answers on the node port');
    t.equal(syn(CLIENT, LB, 80).out.dst, '10.244.1.11', 'the LoadBalancer IP serves');
    rec.syncService('test/web', []);
  });

  t.test('--nodeport-addresses: NodePort answers on the selected node addresses only', async (t) => {
    const ALT = '192.0.2.21';
    ip(n.ns, 'addr', 'add', `${ALT}/24`, 'dev', 'd0');
    sync(lbService(), [slice(local)], node([NODE_IP, ALT]));
    rec.setNodeAddresses([NODE_IP, ALT], [NODE_IP]);
    t.same(
      dp.maps.nodeIps
        .entries()
        .map(([k, v]) => `${k.addr}=${v.v}`)
        .sort(),
      [`${NODE_IP}=${NodeIpFlags.NODEPORT}`, `${ALT}=0`],
      'both are node addresses; one is flagged for NodePort',
    );
    t.equal(syn(CLIENT, NODE_IP, 30080).out.dst, '10.244.1.11', 'the selected address answers');
    const alt = syn(CLIENT, ALT, 30080);
    t.equal(alt.verdict, 'pass', 'the other one does not (kube-proxy: "secondary nodeIP ignores NodePorts")');
    t.equal(alt.out.dst, ALT, 'untranslated');
    const spoof = n.run('fromData', { src: ALT, dst: '10.96.0.10' }, { proto: 'tcp', sport: port++, dport: 80 });
    t.equal(spoof.verdict, 'drop', 'it is still a node address: from outside it is a forged source');
    rec.setNodeAddresses([NODE_IP, ALT]);
    t.equal(syn(CLIENT, ALT, 30080).out.dst, '10.244.1.11', 'default: every address answers again');
    rec.syncService('test/web', []);
  });

  t.test('traffic policies scoped as kube-proxy scopes them', async (t) => {
    const remote = [{ ip: '10.244.2.11', node: 'node-b' }];
    sync(lbService({ internalTrafficPolicy: 'Local' }), [slice(remote)]);
    t.equal(syn(POD, '10.96.0.10', 80, 'fromPod').verdict, 'drop', 'iTP=Local cluster IP, no local endpoint: dropped');
    const np = syn(POD, NODE_IP, 30080, 'fromPod');
    t.equal(np.out.dst, '10.244.2.11', 'iTP does not apply to a NodePort: the pod reaches the remote endpoint');
    t.equal(syn(POD, LB, 80, 'fromPod').out.dst, '10.244.2.11', 'nor to a LoadBalancer IP');

    sync(lbService(), [slice(remote)]);
    const out = syn(CLIENT, '10.96.0.10', 80);
    t.equal(out.out.dst, '10.244.2.11', 'outside -> cluster IP -> endpoint on another node');
    t.equal(out.out.src, NODE_IP, 'SNATed to the node, so the reply comes back through it');
    sync(lbService(), [slice(local)]);
    const loc = syn(CLIENT, '10.96.0.10', 80);
    t.equal(loc.out.src, CLIENT, 'to an endpoint on this node the client address is kept');
    rec.syncService('test/web', []);
  });

  t.test('UDP reject for an allowed client, ICMP', async (t) => {
    sync(lbService({ loadBalancerSourceRanges: ['192.0.2.96/28'] }), []);
    const r = udp(ALLOWED, LB, 53);
    t.equal(r.out.proto, PROTO.ICMP, 'port unreachable for an allowed client');
    t.equal(udp(BLOCKED, LB, 53).verdict, 'drop', 'nothing for a blocked one');
    rec.syncService('test/web', []);
  });
});

t.test('bpfproxy agent --nodeport-addresses reaches the node address map', async (t) => {
  const ns = tmpNetns(t);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(ns, 'link', 'set', 'peer0', 'up');
  ip(ns, 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0');
  ip(ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'peer0');
  ip(ns, 'route', 'add', 'default', 'via', '192.0.2.254');
  const manifests = tmpDir(t, 'bpfproxy-npa-');
  const state = tmpDir(t, 'bpfproxy-state-');
  const common = [
    '--manifests',
    manifests,
    '--node',
    'n1',
    '--bpf-enabled',
    'true',
    '--data-ifaces',
    '^nothing$',
    '--pod-ifaces',
    '^nothing$',
  ];
  const quiet = ['--state-dir', state, '--healthz-bind-address', '', '--metrics-bind-address', '', '--health-bind-address', ''];
  /** node address -> flags, once it has `want` (the agent re-reads addresses every second) */
  const nodeIps = async (pinDir: string, want: string): Promise<string> => {
    let got = '';
    for (let i = 0; i < 50; i++) {
      const m = openPinnedMaps(pinDir);
      try {
        got = m.maps.nodeIps
          .entries()
          .map(([k, v]) => `${k.addr}=${v.v}`)
          .sort()
          .join(' ');
      } finally {
        m.close();
      }
      if (got === want) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return got;
  };
  const run = async (t: Test, args: string[], want: string, log: RegExp) => {
    const pinDir = tmpPinDir(t);
    const a = await startAgentIn(t, ns, [...common, ...quiet, '--pin-dir', pinDir, ...args]);
    t.equal(await nodeIps(pinDir, want), want);
    t.ok(
      a.logs.some((l) => log.test(l)),
      `logged: ${log}`,
    );
    a.child.kill('SIGTERM');
    t.equal(await a.exited, 0);
  };

  writeFileSync(join(manifests, 'empty.yaml'), 'apiVersion: v1\nkind: List\nitems: []\n');
  await t.test('default: every address', (t) =>
    run(t, [], '192.0.2.1=1 198.51.100.1=1', /NodePort answers on 192\.0\.2\.1, 198\.51\.100\.1/),
  );
  await t.test('CIDRs', (t) =>
    run(t, ['--nodeport-addresses', '198.51.100.0/24'], '192.0.2.1=0 198.51.100.1=1', /NodePort answers on 198\.51\.100\.1/),
  );
  await t.test('primary without a Node object: the default route interface address, and the log says so', (t) =>
    run(t, ['--nodeport-addresses', 'primary'], '192.0.2.1=1 198.51.100.1=0', /default route's interface eth0 \(no Node object/),
  );
  await t.test('primary with a Node object: its InternalIP', async (t) => {
    writeFileSync(
      join(manifests, 'node.yaml'),
      'apiVersion: v1\nkind: Node\nmetadata: { name: n1 }\nstatus: { addresses: [{ type: InternalIP, address: 198.51.100.1 }, { type: Hostname, address: n1 }] }\n',
    );
    await run(
      t,
      ['--nodeport-addresses', 'primary'],
      '192.0.2.1=0 198.51.100.1=1',
      /198\.51\.100\.1 \(the primary address, from the Node object\)/,
    );
  });
  t.test('a bad value is refused, naming the flag', async (t) => {
    const r = cliIn(ns, ['agent', ...common, ...quiet, '--pin-dir', '/sys/fs/bpf/unused', '--nodeport-addresses', '10.0.0.1'], 30_000);
    t.not(r.status, 0);
    t.match(r.stderr + r.stdout, /--nodeport-addresses.*10\.0\.0\.1.*not a CIDR/s);
  });
});
