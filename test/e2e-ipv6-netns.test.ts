/**
 * Real IPv6 traffic through the programs, in namespaces this test creates:
 * a node with two pods behind veths (cali*, bpfproxy_pod on ingress,
 * bpfproxy_to_pod on egress) and an external client behind an uplink (d0,
 * bpfproxy_data). DAD is off on every interface; neighbour discovery runs
 * for real through our programs (they leave it untouched). Every probe has
 * a timeout; the namespaces and servers go with the test.
 */
import t, { type Test } from 'tap';
import { native } from '../src/native/index.js';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { TC_HANDLE, TC_PRIORITY } from '../src/dataplane/bpf/attach.js';
import { ip, sysctl } from '../testkit/netns.js';
import { be, fe } from './helpers/fixtures.js';
import { inNetns, tmpDatapath, tmpNetns } from './helpers/env.js';
import { probe6, startEcho6 } from './helpers/echo6.js';

const NODE6 = '2001:db8:1::11';
const EXT6 = '2001:db8:1::100';
const A = 'fd00:10:244:1::2';
const B = 'fd00:10:244:1::3';
const VIP = 'fd00:10:96::10';
const SELF = 'fd00:10:96::11';
const EMPTY = 'fd00:10:96::12';
const GW = 'fe80::1';

const noDad = (ns: string) => {
  sysctl(ns, 'net.ipv6.conf.all.accept_dad', '0');
  sysctl(ns, 'net.ipv6.conf.default.accept_dad', '0');
};

/** A pod namespace behind a veth of the node: /128 address, the node's fe80::1 as gateway. */
function podNs(t: Test, node: string, hostIf: string, addr: string): string {
  const ns = tmpNetns(t, 'bpx6');
  noDad(ns);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', node);
  ip(ns, 'addr', 'add', `${addr}/128`, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
  ip(node, 'addr', 'add', `${GW}/64`, 'dev', hostIf, 'nodad');
  ip(node, 'link', 'set', hostIf, 'up');
  ip(ns, '-6', 'route', 'add', 'default', 'via', GW, 'dev', 'eth0');
  ip(node, '-6', 'route', 'add', `${addr}/128`, 'dev', hostIf);
  return ns;
}

t.test('IPv6 ClusterIP and NodePort with real traffic', async (t) => {
  const node = tmpNetns(t, 'bpx6');
  noDad(node);
  sysctl(node, 'net.ipv6.conf.all.forwarding', '1');
  const a = podNs(t, node, 'calia', A);
  const b = podNs(t, node, 'calib', B);
  const ext = tmpNetns(t, 'bpx6');
  noDad(ext);
  ip(ext, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'd0', 'netns', node);
  ip(ext, 'addr', 'add', `${EXT6}/64`, 'dev', 'eth0', 'nodad');
  ip(ext, 'link', 'set', 'eth0', 'up');
  ip(node, 'addr', 'add', `${NODE6}/64`, 'dev', 'd0', 'nodad');
  ip(node, 'link', 'set', 'd0', 'up');

  const dp = await tmpDatapath(t);
  inNetns(node, () => {
    for (const dev of ['calia', 'calib', 'd0']) {
      const idx = native()
        .interfaces()
        .find((i) => i.name === dev)!.index;
      native().tcHookCreate(idx);
      native().tcAttach(idx, 'ingress', dev === 'd0' ? dp.programs.fromData.fd : dp.programs.fromPod.fd, TC_HANDLE, TC_PRIORITY);
      if (dev !== 'd0') {
        native().tcAttach(idx, 'egress', dp.programs.toPod.fd, TC_HANDLE, TC_PRIORITY);
        dp.maps.podIfs.set({ ifindex: idx }, { v: 1 });
      }
    }
  });
  const rec = new BpfReconciler(dp.maps);
  const sync = (svc: string, fes: ReturnType<typeof fe>[]) => t.same(rec.syncService(svc, fes).problems, [], `${svc} programmed`);
  sync('test/web', [
    fe('ClusterIP', VIP, 80, 'TCP', [be(B, 8080)], { servicePort: 'test/web:http/TCP' }),
    fe('ClusterIP', VIP, 53, 'UDP', [be(B, 5353)], { servicePort: 'test/web:dns/UDP' }),
    fe('NodePort', '::', 30080, 'TCP', [be(B, 8080)], { servicePort: 'test/web:http/TCP' }),
  ]);
  sync('test/self', [fe('ClusterIP', SELF, 80, 'TCP', [be(B, 8080)])]);
  sync('test/empty', [fe('ClusterIP', EMPTY, 80, 'TCP', [])]);
  rec.setNodeAddresses([NODE6]);
  await startEcho6(b, 'b', 30_000);

  const tcp = probe6(a, 'tcp', VIP, 80);
  t.same([tcp.ok, tcp.pod, tcp.peer], [true, 'b', A], `pod a -> [${VIP}]:80 reaches b:8080, which sees a's own address`);
  const udp = probe6(a, 'udp', VIP, 53);
  t.same([udp.ok, udp.pod, udp.peer], [true, 'b', A], `pod a -> [${VIP}]:53/UDP reaches b:5353 and the answer comes back from the service`);
  const np = probe6(ext, 'tcp', NODE6, 30080);
  t.same(
    [np.ok, np.pod, np.peer],
    [true, 'b', EXT6],
    'external client -> NodePort on the node IPv6 address reaches b, client address kept',
  );
  const hp = probe6(b, 'tcp', SELF, 80);
  t.same(
    [hp.ok, hp.pod, hp.peer],
    [true, 'b', 'fd62:7078:2a01::1'],
    'b reaching itself through a service: hairpin, SNATed to the IPv6 hairpin address',
  );
  const rej = probe6(a, 'tcp', EMPTY, 80, 1500);
  t.same([rej.ok, rej.error], [false, 'ECONNREFUSED'], 'a service without endpoints refuses at once (TCP RST), no timeout');
  t.ok(dp.maps.ct6.entries().length >= 8, `connections tracked in bpfproxy_ct6 (${dp.maps.ct6.entries().length} entries)`);
  t.equal(dp.maps.ct.entries().length, 0, 'nothing in the IPv4 conntrack');
});
