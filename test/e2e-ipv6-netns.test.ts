/**
 * Real IPv6 traffic through the programs, in namespaces this test creates:
 * a node with two pods behind veths (cali*, bpfproxy_pod on ingress,
 * bpfproxy_to_pod on egress) and an external client behind an uplink (d0,
 * bpfproxy_data). DAD is off on every interface; neighbour discovery runs
 * for real through our programs (they leave it untouched). Every probe has
 * a timeout; the namespaces and servers go with the test.
 */
import t from 'tap';
import { BpfReconciler } from '../src/dataplane/bpf/reconciler.js';
import { be, fe } from './helpers/fixtures.js';
import { probe6, startEcho6 } from './helpers/echo6.js';
import { IPV6_NODE, ipv6Node } from './helpers/node-netns.js';

const { node: NODE6, ext: EXT6, a: A, b: B } = IPV6_NODE;
const VIP = 'fd00:10:96::10';
const SELF = 'fd00:10:96::11';
const EMPTY = 'fd00:10:96::12';

t.test('IPv6 ClusterIP and NodePort with real traffic', async (t) => {
  const { a, b, ext, dp } = await ipv6Node(t, 'bpx6');
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
