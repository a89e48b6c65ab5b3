/**
 * IPv6 and dual-stack in the control plane: Services (ipFamilies, IPv6
 * cluster IPs, external and LoadBalancer IPv6 addresses, source ranges),
 * addressType IPv6 EndpointSlices, the frontends each family gets with
 * the endpoints of its own family, NodePort per family, node IPv6
 * addresses under --nodeport-addresses.
 */
import t from 'tap';
import { toEndpointSlice, toService } from '../src/sources/convert.js';
import { frontendsFor, desiredFor } from '../src/model/desired.js';
import { Endpoints } from '../src/model/endpoints.js';
import { nodePortAddressesOf, parseNodePortAddresses } from '../src/config/services.js';
import { canonicalIpv6, ipv6Bytes, readIpv6 } from '../src/net/ip6.js';
import { serviceFamilies, type EndpointSlice } from '../src/model/types.js';

const svc = (spec: Record<string, unknown>, status?: Record<string, unknown>) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'shop' },
  spec,
  ...(status ? { status } : {}),
});
const slice = (name: string, addressType: string, eps: Array<{ addresses: string[]; nodeName?: string }>) =>
  toEndpointSlice({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps,
  });
const fields = (r: { problems: Array<{ field: string }> }) => r.problems.map((p) => p.field);

t.test('RFC 5952 text: one address, one string', async (t) => {
  for (const [inp, out] of [
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['fd00:0:0:0:0:0:0:0', 'fd00::'],
    ['::', '::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ]) {
    t.equal(canonicalIpv6(inp!), out, `${inp} -> ${out}`);
    t.equal(readIpv6(ipv6Bytes(out!)), out, `${out} round-trips through 16 bytes`);
  }
  t.equal(canonicalIpv6('10.0.0.1'), undefined, 'IPv4 is not IPv6');
  t.equal(canonicalIpv6('2001:db8::1::2'), undefined, 'two "::" is not an address');
});

t.test('dual-stack Service: a cluster IP per family, ipFamilies as listed', async (t) => {
  const r = toService(
    svc({
      type: 'NodePort',
      clusterIPs: ['10.96.0.10', 'FD00:10:96::10'],
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
      externalIPs: ['203.0.113.1', '2001:db8:fe::1'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }],
    }),
  );
  t.same(r.problems, []);
  t.same(r.value!.clusterIPs, ['10.96.0.10', 'fd00:10:96::10'], 'IPv6 cluster IP kept, in RFC 5952 text');
  t.same(serviceFamilies(r.value!), ['IPv4', 'IPv6']);
  t.same(r.value!.externalIPs, ['203.0.113.1', '2001:db8:fe::1']);

  const v4 = slice('web-v4', 'IPv4', [{ addresses: ['10.244.1.5'], nodeName: 'n1' }]).value!;
  const v6 = slice('web-v6', 'IPv6', [{ addresses: ['fd00:10:244:1::5'], nodeName: 'n1' }]).value!;
  const fes = frontendsFor(r.value!, [v4, v6], 'n1');
  const show = fes.map((f) => `${f.kind} ${f.ip} -> ${f.clusterBackends.map((b) => b.ip).join(',')}`);
  t.same(
    show.sort(),
    [
      'ClusterIP 10.96.0.10 -> 10.244.1.5',
      'ClusterIP fd00:10:96::10 -> fd00:10:244:1::5',
      'ExternalIP 2001:db8:fe::1 -> fd00:10:244:1::5',
      'ExternalIP 203.0.113.1 -> 10.244.1.5',
      'NodePort 0.0.0.0 -> 10.244.1.5',
      'NodePort :: -> fd00:10:244:1::5',
    ],
    'each family its own frontends, each served by the endpoints of its family; a NodePort per family',
  );
});

t.test('IPv6 single-stack Service', async (t) => {
  const r = toService(
    svc(
      {
        type: 'LoadBalancer',
        clusterIPs: ['fd00:10:96::20'],
        ipFamilies: ['IPv6'],
        externalIPs: ['203.0.113.9'],
        loadBalancerSourceRanges: ['2001:db8:abcd::1/48', ' 198.51.100.0/24 '],
        ports: [{ name: 'http', port: 80, nodePort: 30081 }],
      },
      { loadBalancer: { ingress: [{ ip: '2001:db8:ff::10' }] } },
    ),
  );
  t.same(serviceFamilies(r.value!), ['IPv6']);
  t.same(
    r.value!.externalIPs,
    [],
    'an IPv4 external IP on an IPv6-only Service is not served (kube-proxy serves a family per Service it has)',
  );
  t.same(fields(r), ['spec.externalIPs[0]']);
  t.same(r.value!.loadBalancerIPs, ['2001:db8:ff::10']);
  t.same(r.value!.loadBalancerSourceRanges, ['2001:db8:abcd::/48', '198.51.100.0/24'], 'IPv6 ranges masked like IPv4 ones');
  const fes = frontendsFor(r.value!, [], 'n1');
  t.same(
    fes.filter((f) => f.kind === 'NodePort').map((f) => f.ip),
    ['::'],
    'NodePort in IPv6 only',
  );
  t.same(fes.find((f) => f.kind === 'LoadBalancer')?.sourceRanges, ['2001:db8:abcd::/48', '198.51.100.0/24']);
});

t.test('IPv6 addresses a Service may not claim', async (t) => {
  for (const ip of ['::', '::1', 'fe80::1', 'ff02::1', '::ffff:10.0.0.1']) {
    const r = toService(svc({ clusterIPs: [ip], ipFamilies: ['IPv6'], ports: [{ port: 80 }] }));
    t.same(r.value!.clusterIPs, [], `${ip}: not a cluster IP`);
    t.same(fields(r), ['spec.clusterIPs[0]'], `${ip}: named`);
  }
  const two = toService(svc({ clusterIPs: ['fd00::1', 'fd00::2'], ports: [{ port: 80 }] }));
  t.same(two.value!.clusterIPs, ['fd00::1'], 'one IPv6 cluster IP');
  t.match(two.problems[0]!.message, /second IPv6 cluster IP/);
  const ext = toService(svc({ clusterIPs: ['fd00::1'], externalIPs: ['2001:db8::9'], ports: [{ port: 80 }] }));
  t.same(ext.value!.externalIPs, ['2001:db8::9'], 'without --external-ip-cidrs, an IPv6 external IP is served');
  const bad = toService(svc({ clusterIPs: ['fd00::1'], ipFamilies: ['IPv7'], ports: [{ port: 80 }] }));
  t.same(fields(bad), ['spec.ipFamilies[0]'], 'an unknown family is named');
  t.same(serviceFamilies(bad.value!), ['IPv6'], 'the cluster IP decides then');
});

t.test('addressType IPv6 EndpointSlices', async (t) => {
  const r = slice('web-v6', 'IPv6', [
    { addresses: ['FD00:10:244::5'] },
    { addresses: ['10.244.1.5'] },
    { addresses: ['fe80::5'] },
    { addresses: ['fd00:10:244::6', 'fd00:10:244::7'], nodeName: 'n2' },
  ]);
  t.same(
    fields(r),
    ['endpoints[1].addresses[0]', 'endpoints[2].addresses[0]'],
    'an IPv4 address and a link-local one are named and skipped',
  );
  t.same(
    r.value!.endpoints.toArray().map((e) => e.addresses),
    [['fd00:10:244::5'], ['fd00:10:244::6', 'fd00:10:244::7']],
  );
  const packed = Endpoints.of([
    { addresses: ['10.0.0.1'], ready: true, serving: true, terminating: false },
    { addresses: ['2001:db8::1', '2001:db8::2'], ready: false, serving: true, terminating: true, nodeName: 'n1' },
  ]);
  t.same(
    packed.toArray(),
    [
      { addresses: ['10.0.0.1'], ready: true, serving: true, terminating: false },
      { addresses: ['2001:db8::1', '2001:db8::2'], ready: false, serving: true, terminating: true, nodeName: 'n1' },
    ],
    'both families pack and unpack',
  );
});

t.test('a node IPv6 address is refused as an external IP (CVE-2020-8554), as IPv4 ones', async (t) => {
  const s = toService(svc({ clusterIPs: ['fd00::1'], externalIPs: ['2001:db8:1::11'], ports: [{ port: 80 }] })).value!;
  const d = desiredFor(s, [] as EndpointSlice[], {
    nodeName: 'n1',
    nodeAddresses: new Set(['2001:db8:1::11']),
    allowNodeAddressExternalIPs: false,
  });
  t.same(
    d.frontends.map((f) => f.ip),
    ['fd00::1'],
  );
  t.match(d.problems[0]!.message, /address of this node/);
});

t.test('--nodeport-addresses with IPv6 CIDRs selects IPv6 node addresses', async (t) => {
  const addrs = ['192.168.0.2', '2001:db8:1::11', '2001:db8:2::11'];
  t.same(nodePortAddressesOf(parseNodePortAddresses('2001:db8:1::/64'), addrs), ['2001:db8:1::11']);
  t.same(nodePortAddressesOf(parseNodePortAddresses('192.168.0.0/24,2001:db8:2::/64'), addrs), ['192.168.0.2', '2001:db8:2::11']);
  t.same(nodePortAddressesOf(undefined, addrs), addrs, 'all by default');
});
