/**
 * Service and EndpointSlice fields that would take over the host, names the
 * API server would refuse, and fan-out without bound: each refused field is
 * a problem naming object and field, and the rest of the object applies.
 */
import t from 'tap';
import { toEndpointSlice, toService } from '../src/sources/convert.js';
import { DEFAULT_SERVICE_POLICY, parseCidrList, parsePortRange, type ServicePolicy } from '../src/config/services.js';
import { frontendsFor } from '../src/model/desired.js';
import { servicePortKey, SERVICE_PORT_KEY_MAX } from '../src/model/types.js';

const svc = (spec: Record<string, unknown>, meta: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'shop', ...meta },
  spec,
  ...extra,
});
const port80 = [{ name: 'http', port: 80, targetPort: 8080 }];
const policy = (p: Partial<ServicePolicy>): ServicePolicy => ({ ...DEFAULT_SERVICE_POLICY, ...p });
const fields = (r: { problems: Array<{ field: string }> }) => r.problems.map((p) => p.field);

t.test('cluster IPs must be unicast: 0.0.0.0 would become the NodePort wildcard', async (t) => {
  for (const ip of ['0.0.0.0', '0.1.2.3', '127.0.0.1', '169.254.169.254', '224.0.0.1', '239.1.1.1', '255.255.255.255']) {
    const r = toService(svc({ type: 'NodePort', clusterIP: ip, ports: [{ name: 'http', port: 80, nodePort: 30080 }] }));
    t.ok(r.value, `${ip}: the service still converts`);
    t.same(r.value!.clusterIPs, [], `${ip}: not a cluster IP`);
    t.same(fields(r), ['spec.clusterIP'], `${ip}: named`);
    t.notOk(r.problems[0]!.fatal);
    t.same(
      r.value!.ports.map((p) => p.nodePort),
      [30080],
      `${ip}: the rest of the object applies`,
    );
    t.same(
      frontendsFor(r.value!, [], 'n').map((f) => `${f.kind} ${f.ip}:${f.port}`),
      ['NodePort 0.0.0.0:30080'],
      `${ip}: only the NodePort frontend`,
    );
  }
  const two = toService(svc({ clusterIPs: ['10.96.0.10', '10.96.0.11'], ports: port80 }));
  t.same(two.value!.clusterIPs, ['10.96.0.10'], 'one IPv4 cluster IP per service');
  t.same(fields(two), ['spec.clusterIPs[1]']);
  t.same(toService(svc({ clusterIPs: ['10.96.0.10', 'fd00::10'], ports: port80 })).problems, [], 'dual-stack is fine');
});

t.test('node ports outside --service-node-port-range are refused, the port stays', async (t) => {
  const spec = {
    type: 'NodePort',
    clusterIP: '10.96.0.10',
    ports: [
      { name: 'ssh', port: 22, nodePort: 2222 },
      { name: 'http', port: 80, nodePort: 30080 },
    ],
  };
  const r = toService(svc(spec));
  t.same(
    r.value!.ports.map((p) => [p.name, p.nodePort]),
    [
      ['ssh', undefined],
      ['http', 30080],
    ],
  );
  t.same(fields(r), ['spec.ports[0].nodePort']);
  t.match(r.problems[0]!.message, /2222 is outside the node-port range 30000-32767 \(--service-node-port-range\)/);
  const wide = toService(svc(spec), policy({ nodePortRange: parsePortRange('2000-32767') }));
  t.same(
    wide.value!.ports.map((p) => p.nodePort),
    [2222, 30080],
    'a wider range allows it',
  );
  t.same(wide.problems, []);

  const dup = toService(
    svc({
      type: 'NodePort',
      ports: [
        { name: 'a', port: 80, nodePort: 30080 },
        { name: 'b', port: 81, nodePort: 30080 },
      ],
    }),
  );
  t.same(
    dup.value!.ports.map((p) => p.nodePort),
    [30080, undefined],
    'one nodePort per protocol',
  );
  t.same(fields(dup), ['spec.ports[1].nodePort']);

  const lb = (hc: number) =>
    svc({
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: hc,
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    });
  t.equal(toService(lb(32000)).value!.healthCheckNodePort, 32000);
  const bad = toService(lb(10250));
  t.equal(bad.value!.healthCheckNodePort, undefined, "a health check on the kubelet's port is not served");
  t.same(fields(bad), ['spec.healthCheckNodePort']);
});

t.test('port ranges and CIDR lists as operators write them', async (t) => {
  t.same(parsePortRange('30000-32767'), { min: 30000, max: 32767 });
  t.same(parsePortRange('30000+2767'), { min: 30000, max: 32767 }, "the API server's base+size form");
  t.same(parsePortRange('31000'), { min: 31000, max: 31000 });
  for (const bad of ['', '32767-30000', '0-10', '30000-70000', 'a-b']) t.throws(() => parsePortRange(bad), `"${bad}"`);
  t.equal(parseCidrList(''), undefined, 'empty: no allow-list');
  t.same(
    parseCidrList('203.0.113.0/24, 198.51.100.7')!.map((c) => c.text),
    ['203.0.113.0/24', '198.51.100.7/32'],
  );
  t.throws(() => parseCidrList('203.0.113.1/24'), /host bits/);
  t.throws(() => parseCidrList('2001:db8::/32'), /IPv4/);
  t.throws(() => parseCidrList('10.0.0.0/33'));
});

t.test('external and LoadBalancer IPs: unicast, and inside --external-ip-cidrs when given', async (t) => {
  const spec = {
    type: 'LoadBalancer',
    clusterIP: '10.96.0.10',
    ports: port80,
    externalIPs: ['203.0.113.1', '127.0.0.1', '198.51.100.9', '0.0.0.0', '203.0.113.1'],
  };
  const status = { status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { ip: '169.254.0.1' }, { ip: '203.0.113.2' }] } } };
  const any = toService(svc(spec, {}, status));
  t.same(any.value!.externalIPs, ['203.0.113.1', '198.51.100.9']);
  t.same(any.value!.loadBalancerIPs, ['198.51.100.1', '203.0.113.2']);
  t.same(fields(any), ['spec.externalIPs[1]', 'spec.externalIPs[3]', 'spec.externalIPs[4]', 'status.loadBalancer.ingress[1].ip']);
  const only = toService(svc(spec, {}, status), policy({ externalIPCidrs: parseCidrList('203.0.113.0/24') }));
  t.same(only.value!.externalIPs, ['203.0.113.1']);
  t.same(only.value!.loadBalancerIPs, ['203.0.113.2']);
  t.ok(only.problems.some((p) => p.field === 'spec.externalIPs[2]' && /outside .*--external-ip-cidrs 203.0.113.0\/24/.test(p.message)));
  t.ok(only.problems.some((p) => p.field === 'status.loadBalancer.ingress[0].ip'));
  t.ok(only.problems.every((p) => p.object === 'Service shop/web' && !p.fatal));
});

t.test("endpoint addresses follow the API server's ValidateEndpointIP", async (t) => {
  const r = toEndpointSlice({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    addressType: 'IPv4',
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    ports: [{ name: 'http', port: 8080 }],
    endpoints: ['10.244.1.5', '127.0.0.1', '0.0.0.0', '169.254.169.254', '224.0.0.5', '255.255.255.255'].map((a) => ({ addresses: [a] })),
  });
  t.same(
    r.value!.endpoints.toArray().map((e) => e.addresses[0]),
    ['10.244.1.5'],
    'only the unicast endpoint',
  );
  t.same(
    fields(r),
    [1, 2, 3, 4, 5].map((i) => `endpoints[${i}].addresses[0]`),
  );
  t.match(r.problems[0]!.message, /127.0.0.1 is in the loopback range/);
  t.ok(r.problems.every((p) => p.object === 'EndpointSlice shop/web-1' && !p.fatal));
});

t.test('names are validated as the API server does', async (t) => {
  const l63 = 'a'.repeat(63);
  const ok = toService(
    svc({ clusterIP: '10.96.0.10', ports: [{ name: `p${'x'.repeat(62)}`, port: 80, protocol: 'UDP' }] }, { name: l63, namespace: l63 }),
  );
  t.same(ok.problems, [], 'maximal names are valid');
  const spk = servicePortKey(ok.value!, ok.value!.ports[0]!);
  t.equal(spk.length, 63 + 1 + 63 + 1 + 63 + 1 + 3);
  t.ok(spk.length <= SERVICE_PORT_KEY_MAX);

  const refused = (meta: Record<string, unknown>) => toService(svc({ ports: port80 }, meta));
  for (const [meta, field] of [
    [{ name: 'a'.repeat(64) }, 'metadata.name'],
    [{ name: 'Web' }, 'metadata.name'],
    [{ name: '1web' }, 'metadata.name'], // DNS-1035: starts with a letter
    [{ name: 'x'.repeat(100_000) }, 'metadata.name'],
    [{ namespace: 'a'.repeat(64) }, 'metadata.namespace'],
    [{ namespace: 'shop.eu' }, 'metadata.namespace'],
  ] as const) {
    const r = refused(meta);
    t.notOk(r.value, `${JSON.stringify(meta).slice(0, 40)} refused`);
    t.same(fields(r), [field]);
    t.ok(r.problems[0]!.fatal);
    t.ok(r.problems[0]!.object.length < 200 && r.problems[0]!.message.length < 400, 'a huge name is not copied into logs');
  }
  const ports = toService(
    svc({
      ports: [
        { name: 'Http', port: 80 },
        { name: 'a'.repeat(64), port: 81 },
        { name: 'ok', port: 82, targetPort: 'much-too-long-name' },
        { name: 'fine', port: 83, targetPort: 'web' },
      ],
    }),
  );
  t.same(
    ports.value!.ports.map((p) => p.name),
    ['fine'],
  );
  t.same(fields(ports), ['spec.ports[0].name', 'spec.ports[1].name', 'spec.ports[2].targetPort']);

  const slice = (name: string, label: string, portName = 'http', nodeName = 'node-1') =>
    toEndpointSlice({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      addressType: 'IPv4',
      metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': label } },
      ports: [{ name: portName, port: 8080 }],
      endpoints: [{ addresses: ['10.244.1.5'], nodeName }],
    });
  t.same(slice(`web-${'a'.repeat(249)}`, 'web').problems, [], 'a 253-character slice name is valid');
  t.same(fields(slice(`web-${'a'.repeat(250)}`, 'web')), ['metadata.name']);
  t.same(fields(slice('web-1', 'We b')), ['metadata.labels["kubernetes.io/service-name"]']);
  t.same(fields(slice('web-1', 'a'.repeat(64))), ['metadata.labels["kubernetes.io/service-name"]']);
  t.same(fields(slice('web-1', 'web', 'HTTP')), ['ports[0].name']);
  t.same(fields(slice('web-1', 'web', 'http', 'Node_1')), ['endpoints[0].nodeName']);
});

t.test('metadata.creationTimestamp is carried', async (t) => {
  t.equal(toService(svc({ ports: port80 }, { creationTimestamp: '2020-01-02T03:04:05Z' })).value!.createdAt, Date.UTC(2020, 0, 2, 3, 4, 5));
  t.equal(toService(svc({ ports: port80 })).value!.createdAt, undefined);
  const bad = toService(svc({ ports: port80 }, { creationTimestamp: 'yesterday' }));
  t.equal(bad.value!.createdAt, undefined);
  t.same(fields(bad), ['metadata.creationTimestamp']);
});

t.test('70,000 externalIPs: bounded by --max-frontends-per-service, the first ones served, one problem', async (t) => {
  const ips = Array.from({ length: 70_000 }, (_, i) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
  const r = toService(
    svc({ type: 'NodePort', clusterIP: '10.96.0.10', externalIPs: ips, ports: [{ name: 'http', port: 80, nodePort: 30080 }] }),
  );
  const fes = frontendsFor(r.value!, [], 'n');
  t.equal(fes.length, 1024, 'the default bound');
  t.same(r.value!.externalIPs, ips.slice(0, 1022), 'cluster IP and NodePort first, then the first externalIPs in order');
  t.same(fields(r), ['spec.externalIPs']);
  t.match(
    r.problems[0]!.message,
    /70000 external IPs × 1 port\(s\).*--max-frontends-per-service=1024.*the first 1022 are served, spec.externalIPs\[1022\] and the 68977 after it are not/,
  );

  const two = toService(
    svc(
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        externalIPs: ips.slice(0, 10),
        ports: [
          { name: 'a', port: 80, nodePort: 30080 },
          { name: 'b', port: 81, nodePort: 30081 },
        ],
      },
      {},
      { status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }, { ip: '198.51.100.2' }] } } },
    ),
    policy({ maxFrontendsPerService: 10 }),
  );
  // 2 ports x (cluster IP + NodePort) = 4; 2 LB IPs x 2 ports = 4; 1 external IP x 2 ports = 2
  t.equal(frontendsFor(two.value!, [], 'n').length, 10);
  t.same(two.value!.loadBalancerIPs, ['198.51.100.1', '198.51.100.2']);
  t.same(two.value!.externalIPs, [ips[0]]);
  const many = toService(
    svc({ clusterIP: '10.96.0.10', ports: Array.from({ length: 20 }, (_, i) => ({ name: `p${i}`, port: 1000 + i })) }),
    policy({ maxFrontendsPerService: 10 }),
  );
  t.equal(many.value!.ports.length, 10, 'ports beyond the bound are not served');
  t.same(fields(many), ['spec.ports']);
  t.match(many.problems[0]!.message, /spec.ports\[10\] and the 9 after it/);
});

t.test('thousands of bad entries give a handful of problems, not thousands', async (t) => {
  const r = toService(svc({ clusterIP: '10.96.0.10', ports: port80, externalIPs: Array.from({ length: 5000 }, () => '127.0.0.1') }));
  t.equal(r.problems.length, 11);
  t.match(r.problems[10]!, { field: 'spec.externalIPs', message: /4990 more entries/ });
});
