/**
 * IPv6 and the two IPv4-only guards, through BPF_PROG_RUN (the IPv6 node of
 * test/helpers/progrun6.ts; the program runs with ctx ifindex = d0, which
 * plays the pod veth here):
 *
 *  - NetworkPolicy is IPv4 only, so IPv6 fails closed: a pod isolated in a
 *    direction (the ipcache entry of its IPv4 address, found through
 *    bpfproxy_pod_addrs by interface) gets no IPv6 in that direction but
 *    neighbour discovery, counted as policy-ipv6 (bpf/lib/policy6.h), on
 *    tc_pod (its egress), tc_to_pod (its ingress) and IPv6 service traffic
 *    handed to it with bpf_redirect_peer (which skips tc_to_pod).
 *  - the pod source check, IPv6 (bpf/lib/pod.h pod6_source_ok()): own
 *    addresses (routes pointing at the veth), link-local and :: pass,
 *    anything else is dropped as spoofed; no entry for the interface: not
 *    checked, as IPv4.
 */
import t, { type Test } from 'tap';
import { IDENTITY_HOST, IDENTITY_WORLD, type CompiledPolicy, type EndpointPolicy } from '../src/model/policy/compiled.js';
import { PolicyMapWriter } from '../src/dataplane/bpf/policy-maps.js';
import { setMode } from '../src/dataplane/bpf/drain.js';
import { frame6, ICMP6, TCP, type Frame6Spec, type L4v6 } from '../testkit/packet6.js';
import { ip } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { reasonCount } from './helpers/progrun.js';
import { NODE6, POD6, progrun6Node, type Progrun6Node } from './helpers/progrun6.js';

const POD4 = '10.244.1.99'; // the IPv4 address of the pod behind d0
const PEER6 = 'fd00:10:244:1::20';
const CIP6 = 'fd00:10:96::10';
const BACKEND6 = 'fd00:10:244:1::11';

const policy = (generation: number, ep: Partial<EndpointPolicy> | undefined): CompiledPolicy => ({
  generation,
  identities: [
    { prefix: '0.0.0.0/0', identity: IDENTITY_WORLD },
    { prefix: '192.0.2.11/32', identity: IDENTITY_HOST },
    { prefix: `${POD4}/32`, identity: 100, endpoint: 1 },
  ],
  endpoints: ep ? [{ id: 1, pod: 'x/pod', addresses: [POD4], ingressIsolated: false, egressIsolated: false, entries: [], ...ep }] : [],
  rules: [],
});

/** reserved word and target address (all of ND's messages but RS are at least this long) */
const NS_BODY = Buffer.alloc(20);
const tcp = (sport: number, flags: number = TCP.SYN): L4v6 => ({ proto: 'tcp', sport, dport: 80, flags });
const nd = (type: number): L4v6 => ({ proto: 'icmp6', type, code: 0, body: type === ICMP6.RS ? Buffer.alloc(4) : NS_BODY });

interface Lab {
  node: Progrun6Node;
  w: PolicyMapWriter;
  run: (role: 'fromPod' | 'toPod' | 'fromData', f: Frame6Spec, l4: L4v6) => string;
  counted: (reason: string, fn: () => void) => number;
}

async function lab(t: Test): Promise<Lab> {
  const node = await progrun6Node(t);
  const w = new PolicyMapWriter(node.dp.maps);
  return {
    node,
    w,
    run: (role, f, l4) => node.runRaw(role, frame6(f, l4)).verdict,
    counted: (reason, fn) => {
      const before = reasonCount(node.dp, reason);
      fn();
      return reasonCount(node.dp, reason) - before;
    },
  };
}

t.test('IPv6 of a pod isolated by NetworkPolicy: dropped but for neighbour discovery', async (t) => {
  const { node, w, run, counted } = await lab(t);
  node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
  const out = { src: POD6, dst: PEER6 }; // from the pod (tc_pod: its egress)
  const into = { src: PEER6, dst: POD6 }; // to the pod (tc_to_pod: its ingress)

  t.test('no policy written (as --network-policy=off): everything passes', async (t) => {
    t.equal(run('fromPod', out, tcp(1000)), 'pass');
    t.equal(run('toPod', into, tcp(1001)), 'pass');
    t.equal(reasonCount(node.dp, 'policy-ipv6'), 0, 'nothing counted');
  });

  t.test('isolated for both directions', async (t) => {
    t.same(w.apply(policy(1, { ingressIsolated: true, egressIsolated: true })).problems, []);
    t.equal(
      counted('policy-ipv6', () => t.equal(run('fromPod', out, tcp(1010)), 'drop', 'TCP from the pod: dropped')),
      1,
      'counted as policy-ipv6',
    );
    t.equal(
      counted('policy-ipv6', () => t.equal(run('toPod', into, tcp(1011)), 'drop', 'TCP to the pod: dropped')),
      1,
      'counted as policy-ipv6',
    );
    t.equal(run('toPod', into, tcp(1011, TCP.SYN | TCP.ACK)), 'drop', 'a reply to the pod too (no IPv6 conntrack for policy)');
    t.equal(run('fromPod', out, { proto: 'udp', sport: 1012, dport: 53 }), 'drop', 'UDP from the pod');
    t.equal(
      run('fromPod', out, { proto: 'icmp6', type: ICMP6.ECHO_REQUEST, code: 0, body: Buffer.alloc(8) }),
      'drop',
      'ICMPv6 echo: not neighbour discovery',
    );
    t.equal(run('fromPod', { ...out, ext: [{ type: 'frag', offset: 8, more: false }] }, tcp(1013)), 'drop', 'a later fragment');
    const ndCases: Array<[string, 'fromPod' | 'toPod', Frame6Spec, L4v6]> = [
      ['neighbour solicitation from the pod', 'fromPod', { src: POD6, dst: 'ff02::1:ff00:20', hopLimit: 255 }, nd(ICMP6.NS)],
      ['neighbour advertisement to the pod', 'toPod', { src: 'fe80::1', dst: POD6, hopLimit: 255 }, nd(ICMP6.NA)],
      ['router solicitation from the pod', 'fromPod', { src: 'fe80::99', dst: 'ff02::2', hopLimit: 255 }, nd(ICMP6.RS)],
      ['router advertisement to the pod', 'toPod', { src: 'fe80::1', dst: 'ff02::1', hopLimit: 255 }, nd(ICMP6.RA)],
      ['DAD solicitation from ::', 'fromPod', { src: '::', dst: 'ff02::1:ff00:99', hopLimit: 255 }, nd(ICMP6.NS)],
      ['redirect to the pod', 'toPod', { src: 'fe80::1', dst: POD6, hopLimit: 255 }, nd(137)],
    ];
    for (const [what, role, f, l4] of ndCases) {
      t.equal(
        counted('policy-ipv6', () => t.equal(run(role, f, l4), 'pass', `${what}: passes`)),
        0,
        `${what}: not counted`,
      );
    }
  });

  t.test('isolated for ingress only: the egress side passes', async (t) => {
    t.same(w.apply(policy(2, { ingressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1020)), 'pass', 'from the pod: passes');
    t.equal(run('toPod', into, tcp(1021)), 'drop', 'to the pod: dropped');
  });

  t.test('isolated for egress only: the ingress side passes', async (t) => {
    t.same(w.apply(policy(3, { egressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1030)), 'drop', 'from the pod: dropped');
    t.equal(run('toPod', into, tcp(1031)), 'pass', 'to the pod: passes');
  });

  t.test('not isolated (policy written, this pod selected by none): passes', async (t) => {
    t.same(w.apply(policy(4, {})).problems, []);
    t.equal(run('fromPod', out, tcp(1040)), 'pass');
    t.equal(run('toPod', into, tcp(1041)), 'pass');
  });

  t.test('another pod isolated, this one not: passes', async (t) => {
    const other = policy(5, undefined);
    other.identities.push({ prefix: '10.244.1.50/32', identity: 101, endpoint: 2 });
    other.endpoints.push({ id: 2, pod: 'x/other', addresses: ['10.244.1.50'], ingressIsolated: true, egressIsolated: true, entries: [] });
    t.same(w.apply(other).problems, []);
    t.ok((node.dp.maps.polState.get({ v: 0 })?.isolated ?? 0) > 0, 'something is isolated');
    t.equal(run('fromPod', out, tcp(1050)), 'pass');
    t.equal(run('toPod', into, tcp(1051)), 'pass');
  });

  t.test('isolated, then policy turned off (the maps emptied): passes again', async (t) => {
    t.same(w.apply(policy(6, { ingressIsolated: true, egressIsolated: true })).problems, []);
    t.equal(run('fromPod', out, tcp(1060)), 'drop');
    t.same(w.apply({ generation: 7, identities: [], endpoints: [], rules: [] }).problems, []);
    t.equal(run('fromPod', out, tcp(1061)), 'pass', 'from the pod');
    t.equal(run('toPod', into, tcp(1062)), 'pass', 'to the pod');
  });

  t.test('standby (taking over): the pod veth ingress enforces nothing, as IPv4; its egress does', async (t) => {
    t.same(w.apply(policy(9, { ingressIsolated: true, egressIsolated: true })).problems, []);
    setMode(node.dp.maps, 'standby');
    t.equal(run('fromPod', out, tcp(1080)), 'pass', 'from the pod: passes');
    t.equal(run('toPod', into, tcp(1081)), 'drop', 'to the pod: dropped');
    setMode(node.dp.maps, 'serve');
    t.equal(run('fromPod', out, tcp(1082)), 'drop', 'serving again: dropped');
  });

  t.test('an interface with no pod address recorded (host-network, unknown): passes', async (t) => {
    t.same(w.apply(policy(8, { ingressIsolated: true, egressIsolated: true })).problems, []);
    node.dp.maps.podAddrs.delete({ ifindex: node.ifindex });
    t.equal(run('fromPod', out, tcp(1070)), 'pass');
    t.equal(run('toPod', into, tcp(1071)), 'pass');
    node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
    t.equal(run('toPod', into, tcp(1072)), 'drop', 'recorded again: dropped');
  });
});

t.test('IPv6 service traffic handed to an isolated pod with bpf_redirect_peer is dropped first', async (t) => {
  const { node, w, run, counted } = await lab(t);
  t.same(node.rec.syncService('test/web6', [fe('ClusterIP', CIP6, 80, 'TCP', [be(BACKEND6, 8080)])]).problems, []);
  // A neighbour, so the FIB answers SUCCESS (bpf_redirect_peer) rather than NO_NEIGH (bpf_redirect_neigh, which
  // goes through the veth's egress program).
  ip(node.ns, '-6', 'neigh', 'add', BACKEND6, 'lladdr', '02:00:00:00:00:11', 'dev', 'd0', 'nud', 'permanent');
  node.dp.maps.podIfs.set({ ifindex: node.ifindex }, { v: 1 });
  node.dp.maps.podAddrs.set({ ifindex: node.ifindex }, { addr4: POD4 });
  t.equal(run('fromPod', { src: POD6, dst: CIP6 }, tcp(2000)), 'redirect', 'nothing isolated: redirected into the pod');
  t.same(w.apply(policy(1, { ingressIsolated: true })).problems, []);
  t.equal(
    counted('policy-ipv6', () => t.equal(run('fromPod', { src: POD6, dst: CIP6 }, tcp(2001)), 'drop', 'isolated for ingress: dropped')),
    1,
    'counted as policy-ipv6',
  );
  node.dp.maps.podIfs.delete({ ifindex: node.ifindex });
});

t.test('IPv6 pod source check', async (t) => {
  const { node, run, counted } = await lab(t);
  const key = (addr: string, len: number) => ({ prefixlen: 32 + len, ifindex: node.ifindex, addr });
  const from = (src: string, sport: number) => run('fromPod', { src, dst: PEER6 }, tcp(sport));

  t.equal(from('2001:db8:bad::1', 3000), 'pass', 'no entry for the interface: not checked (as IPv4)');
  node.dp.maps.podSrcs6.set(key(POD6, 128), { v: 1 });
  node.dp.maps.podSrcs6.set(key('fd00:10:244:7::', 64), { v: 1 });
  node.dp.maps.podSrcs6.set(key('::', 0), { v: 0 });
  t.equal(from(POD6, 3001), 'pass', 'its own address passes');
  t.equal(from('fd00:10:244:7::5', 3002), 'pass', 'an address of a prefix routed to it passes');
  t.equal(from('fe80::1234', 3003), 'pass', 'link-local passes');
  t.equal(from('febf::1', 3004), 'pass', 'link-local: the whole fe80::/10');
  t.equal(run('fromPod', { src: '::', dst: 'ff02::1:ff00:99', hopLimit: 255 }, nd(ICMP6.NS)), 'pass', ':: (DAD) passes');
  for (const [src, what] of [
    ['fd00:10:244:1::98', "a neighbour pod's address"],
    [NODE6, "the node's address"],
    ['fec0::1', 'just outside fe80::/10'],
    ['2001:db8:bad::1', 'anything else'],
  ] as const) {
    t.equal(
      counted('spoofed', () => t.equal(from(src, 3010), 'drop', `${what}: dropped`)),
      1,
      `${what}: counted as spoofed`,
    );
  }
  t.equal(
    run('fromPod', { src: 'fd00:10:244:1::98', dst: PEER6, ext: [{ type: 'frag', offset: 8, more: false }] }, tcp(3020)),
    'drop',
    'a later fragment with a forged source: dropped too',
  );
  t.equal(run('fromData', { src: '2001:db8:bad::1', dst: PEER6 }, tcp(3030)), 'pass', 'not checked on data interfaces');
});
