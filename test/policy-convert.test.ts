/**
 * Pods, Namespaces and NetworkPolicies from Kubernetes objects: defaults as
 * the API server applies them, and validation that fails closed. Each bad
 * field gives a Problem naming the policy and the field; the policy still
 * isolates its pods, and only the bad peer or port is left out (checked
 * through compile + evaluate on the x/y/z model).
 */
import t from 'tap';
import { toNamespace, toNetworkPolicy, toPod, labelKeyError } from '../src/sources/policy-convert.js';
import { Cluster, matrixDiff, matrixOf, mismatches, netpol, podIP, Reach } from './helpers/policy-cluster.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- Kubernetes objects, read untyped

t.test('Namespace: labels get kubernetes.io/metadata.name = name, as the API server sets it', async (t) => {
  const r = toNamespace({ metadata: { name: 'shop', labels: { team: 'a', 'kubernetes.io/metadata.name': 'other' } } });
  t.same(r.problems, []);
  t.same(r.value, { name: 'shop', labels: { team: 'a', 'kubernetes.io/metadata.name': 'shop' } });
  t.same(toNamespace({ metadata: { name: 'plain' } }).value?.labels, { 'kubernetes.io/metadata.name': 'plain' });
  const bad = toNamespace({ metadata: { name: 'Bad_NS' } });
  t.equal(bad.value, undefined);
  t.match(bad.problems, [{ object: 'Namespace Bad_NS', field: 'metadata.name', fatal: true, message: /DNS-1123 label/ }]);
});

t.test('Pod: addresses, node, host network, container ports', async (t) => {
  const pod = (extra: Obj) => ({
    metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } },
    spec: {
      nodeName: 'node1',
      containers: [
        {
          name: 'app',
          ports: [
            { name: 'http', containerPort: 8080 },
            { containerPort: 9090, protocol: 'UDP' },
          ],
        },
        { name: 'side', ports: [{ name: 'metrics', containerPort: 9100, protocol: 'TCP' }] },
      ],
      initContainers: [
        { name: 'proxy', restartPolicy: 'Always', ports: [{ name: 'proxy', containerPort: 15001 }] },
        { name: 'setup', ports: [{ name: 'setup', containerPort: 1 }] },
      ],
    },
    status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }, { ip: 'fd00::5' }] },
    ...extra,
  });
  const r = toPod(pod({}));
  t.same(r.problems, []);
  t.same(r.value, {
    namespace: 'shop',
    name: 'web-1',
    labels: { app: 'web' },
    ips: ['10.244.1.5', 'fd00::5'],
    nodeName: 'node1',
    hostNetwork: false,
    containerPorts: [
      { name: 'http', port: 8080, protocol: 'TCP' },
      { name: '', port: 9090, protocol: 'UDP' },
      { name: 'metrics', port: 9100, protocol: 'TCP' },
      { name: 'proxy', port: 15001, protocol: 'TCP' },
    ],
  });
  t.same(toPod({ ...pod({}), status: { podIP: '10.244.1.6' } }).value?.ips, ['10.244.1.6'], 'status.podIP when podIPs is missing');
  t.same(toPod({ ...pod({}), status: { phase: 'Succeeded', podIP: '10.244.1.5' } }).value?.ips, [], 'a finished pod holds no address');
  t.same(toPod({ ...pod({}), status: {} }).value?.ips, [], 'no address yet');
  const hn = toPod({ ...pod({}), spec: { ...pod({}).spec, hostNetwork: true }, status: { podIP: '192.168.0.1' } }).value!;
  t.same([hn.hostNetwork, hn.ips], [true, []], 'a host-network pod has the node address, not its own');

  const bad = toPod({
    ...pod({}),
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'bad key': 'x' } },
    spec: {
      containers: [{ ports: [{ name: 'Not_A_Name', containerPort: 80 }, { containerPort: 0 }, { containerPort: 81, protocol: 'ICMP' }] }],
    },
    status: { podIPs: [{ ip: '10.244.1.300' }, { ip: '127.0.0.1' }, { ip: '10.244.1.7' }] },
  });
  t.same(bad.value?.ips, ['10.244.1.7']);
  t.same(bad.value?.labels, { 'bad key': 'x' }, 'a label the API server would refuse is kept as written (matching compares strings)');
  t.same(bad.value?.containerPorts, [{ name: '', port: 80, protocol: 'TCP' }]);
  t.same(
    bad.problems.map((p) => p.field),
    [
      'metadata.labels["bad key"]',
      'status.podIPs[0].ip',
      'status.podIPs[1].ip',
      'spec.containers[0].ports[0].name',
      'spec.containers[0].ports[1].containerPort',
      'spec.containers[0].ports[2].protocol',
    ],
  );
  t.ok(bad.problems.every((p) => p.object === 'Pod shop/web-1' && !p.fatal));
});

t.test('NetworkPolicy: defaults and empty vs missing, as documented', async (t) => {
  const r = toNetworkPolicy(
    netpol('x', 'p', {
      podSelector: { matchLabels: { app: 'db' }, matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['a', 'b'] }] },
      ingress: [
        {
          from: [{ podSelector: { matchLabels: { app: 'web' } } }],
          ports: [{ port: 5432 }, { protocol: 'UDP', port: 'dns', endPort: null }],
        },
        { from: [], ports: [] },
        {},
        {
          from: [{ namespaceSelector: {} }, { ipBlock: { cidr: '10.0.0.1/8', except: ['10.1.0.0/16'] } }],
          ports: [{ port: 80, endPort: 90 }],
        },
      ],
    }),
  );
  t.same(r.problems, []);
  t.same(r.value, {
    namespace: 'x',
    name: 'p',
    podSelector: {
      requirements: [
        { key: 'app', operator: 'In', values: ['db'] },
        { key: 'tier', operator: 'NotIn', values: ['a', 'b'] },
      ],
    },
    ingressIsolation: true,
    egressIsolation: false,
    ingress: [
      {
        index: 0,
        peers: [{ kind: 'pods', podSelector: { requirements: [{ key: 'app', operator: 'In', values: ['web'] }] } }],
        ports: [
          { protocol: 'TCP', port: 5432 },
          { protocol: 'UDP', port: 'dns' },
        ],
      },
      { index: 1, peers: 'any', ports: 'any' },
      { index: 2, peers: 'any', ports: 'any' },
      {
        index: 3,
        peers: [
          { kind: 'pods', namespaceSelector: { requirements: [] } },
          { kind: 'ipBlock', cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] },
        ],
        ports: [{ protocol: 'TCP', port: 80, endPort: 90 }],
      },
    ],
    egress: [],
  });

  const types = (spec: Obj) => {
    const v = toNetworkPolicy(netpol('x', 'p', spec)).value!;
    return [v.ingressIsolation, v.egressIsolation];
  };
  t.same(types({}), [true, false], 'no policyTypes, no rules: Ingress');
  t.same(types({ egress: [{}] }), [true, true], 'egress rules: Ingress and Egress');
  t.same(types({ egress: [] }), [true, false], 'an empty egress list is no egress rules: Ingress only (len(spec.egress) != 0 upstream)');
  t.same(types({ policyTypes: [], egress: [{}] }), [true, true], 'an empty policyTypes list is defaulted like a missing one');
  t.same(types({ policyTypes: ['Egress'], ingress: [{}] }), [false, true], 'explicit policyTypes win; ingress rules are then ignored');
  t.same(
    toNetworkPolicy(netpol('x', 'p', { policyTypes: ['Egress'], ingress: [{}] })).value!.ingress.length,
    1,
    'kept in the domain object',
  );
  const missing = toNetworkPolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p' } });
  t.same(missing.problems, []);
  t.match(missing.value, {
    namespace: 'default',
    podSelector: { requirements: [] },
    ingressIsolation: true,
    egressIsolation: false,
    ingress: [],
  });
  t.same(
    toNetworkPolicy(netpol('x', 'p', { ingress: [{ from: [{ ipBlock: { cidr: 'FD00:0:0:0::7/64', except: ['fd00::8:0/112'] } }] }] }))
      .value!.ingress[0]!.peers,
    [{ kind: 'ipBlock', cidr: 'fd00::/64', except: ['fd00::8:0/112'] }],
    'an IPv6 block: normalised (host bits cleared, RFC 5952 text), its except kept',
  );
  const mixed = toNetworkPolicy(netpol('x', 'p', { ingress: [{ from: [{ ipBlock: { cidr: 'fd00::/64', except: ['10.0.0.0/8'] } }] }] }));
  t.same(mixed.value!.ingress[0]!.peers, [], 'an except of the other family is no subset: the peer is left out (fail closed)');
  t.match(mixed.problems, [{ message: /must be a strict subset of cidr fd00::\/64/ }]);
  const wide = toNetworkPolicy(netpol('x', 'p', { ingress: [{ from: [{ ipBlock: { cidr: 'fd00::/64', except: ['fd00::/48'] } }] }] }));
  t.same(wide.value!.ingress[0]!.peers, [], 'an except wider than its cidr: left out');
});

t.test('Pod: IPv6 addresses of status.podIPs, canonical; an IPv6-only pod has its addresses', async (t) => {
  const r = toPod({
    metadata: { name: 'v6', namespace: 'shop' },
    spec: { nodeName: 'node1', containers: [] },
    status: { phase: 'Running', podIP: 'FD00:0::6', podIPs: [{ ip: 'FD00:0::6' }, { ip: 'fe80::1' }, { ip: 'ff02::1' }] },
  });
  t.same(r.value?.ips, ['fd00::6'], 'RFC 5952 text; link-local and multicast left out');
  t.equal(r.problems.length, 2, 'the two left out are reported');
});

t.test('label keys as IsQualifiedName', async (t) => {
  for (const ok of ['app', 'app.kubernetes.io/name', 'a-b_c.d', 'x/Y', '9']) t.equal(labelKeyError(ok), undefined, ok);
  for (const bad of ['', 'a/b/c', '/name', 'Bad.Prefix/x', 'sp ace', '-lead', 'trail-', 'x'.repeat(64), 'p/'])
    t.ok(labelKeyError(bad), bad);
});

interface BadCase {
  name: string;
  spec: Obj;
  field: string;
  message: RegExp;
  /** Reachability with the policy applied (on TCP/80). */
  reach: Reach;
  /** A second probe, when the point is made on another port/protocol. */
  probe81?: Reach;
}

const nsIs = (ns: string) => ({ matchLabels: { 'kubernetes.io/metadata.name': ns } });
const fromY = { namespaceSelector: nsIs('y') };
const onlyY = () => new Reach().expectAllIngress('x/a', false).expectPeer({ ns: 'y' }, { ns: 'x', pod: 'a' }, true);
const isolated = () => new Reach().expectAllIngress('x/a', false);
const onA = (ingress: Obj[]) => ({ podSelector: { matchLabels: { pod: 'a' } }, ingress });

const badCases: BadCase[] = [
  {
    name: 'an invalid CIDR',
    spec: onA([{ from: [{ ipBlock: { cidr: '10.244.0.0/33' } }, fromY] }]),
    field: 'spec.ingress[0].from[0].ipBlock.cidr',
    message: /"10\.244\.0\.0\/33" is not a CIDR.*this peer is left out.*stay isolated/,
    reach: onlyY(),
  },
  {
    name: 'a CIDR without prefix length',
    spec: onA([{ from: [{ ipBlock: { cidr: podIP('z', 'a') } }] }]),
    field: 'spec.ingress[0].from[0].ipBlock.cidr',
    message: /is not a CIDR/,
    reach: isolated(),
  },
  {
    name: 'an except outside its cidr (the whole peer goes: dropping only the except would allow what it excepted)',
    spec: onA([{ from: [{ ipBlock: { cidr: '10.244.1.0/24', except: ['10.244.2.0/24'] } }, fromY] }]),
    field: 'spec.ingress[0].from[0].ipBlock.except[0]',
    message: /must be a strict subset of cidr 10\.244\.1\.0\/24/,
    reach: onlyY(),
  },
  {
    name: 'an except equal to its cidr',
    spec: onA([{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.0.0/16'] } }] }]),
    field: 'spec.ingress[0].from[0].ipBlock.except[0]',
    message: /strict subset/,
    reach: isolated(),
  },
  {
    name: 'an except that is no CIDR',
    spec: onA([{ from: [{ ipBlock: { cidr: '10.244.0.0/16', except: ['10.244.1.11'] } }] }]),
    field: 'spec.ingress[0].from[0].ipBlock.except[0]',
    message: /is not a CIDR/,
    reach: isolated(),
  },
  {
    name: 'endPort below port',
    spec: onA([
      {
        ports: [
          { port: 81, endPort: 80 },
          { port: 81, protocol: 'UDP' },
        ],
      },
    ]),
    field: 'spec.ingress[0].ports[0].endPort',
    message: /80 must be greater than or equal to port \(81\); this port is left out/,
    reach: isolated(),
    probe81: isolated(),
  },
  {
    name: 'endPort with a named port',
    spec: onA([{ ports: [{ port: 'serve-80-tcp', endPort: 81 }] }]),
    field: 'spec.ingress[0].ports[0].endPort',
    message: /may not be specified when port is a name/,
    reach: isolated(),
  },
  {
    name: 'endPort without port',
    spec: onA([{ ports: [{ endPort: 81 }] }]),
    field: 'spec.ingress[0].ports[0].endPort',
    message: /may not be specified when port is not/,
    reach: isolated(),
  },
  {
    name: 'endPort out of range',
    spec: onA([{ ports: [{ port: 80, endPort: 70000 }] }]),
    field: 'spec.ingress[0].ports[0].endPort',
    message: /70000 is not a port number/,
    reach: isolated(),
  },
  {
    name: 'an unknown protocol',
    spec: onA([{ ports: [{ protocol: 'ICMP', port: 80 }] }]),
    field: 'spec.ingress[0].ports[0].protocol',
    message: /"ICMP" is not TCP, UDP or SCTP/,
    reach: isolated(),
  },
  {
    name: 'a protocol in lower case (the API is case-sensitive)',
    spec: onA([{ ports: [{ protocol: 'tcp' }] }]),
    field: 'spec.ingress[0].ports[0].protocol',
    message: /"tcp" is not TCP/,
    reach: isolated(),
  },
  {
    name: 'port 0',
    spec: onA([{ ports: [{ port: 0 }] }]),
    field: 'spec.ingress[0].ports[0].port',
    message: /0 is not a port number/,
    reach: isolated(),
  },
  {
    name: 'a port number written as a string (an invalid port name)',
    spec: onA([{ ports: [{ port: '80' }] }]),
    field: 'spec.ingress[0].ports[0].port',
    message: /a named port "80" must contain at least one letter/,
    reach: isolated(),
  },
  {
    name: 'a port name too long',
    spec: onA([{ ports: [{ port: 'serve-80-tcp-and-more' }] }]),
    field: 'spec.ingress[0].ports[0].port',
    message: /no more than 15 characters/,
    reach: isolated(),
  },
  {
    name: 'a bad label key in a peer podSelector',
    spec: onA([{ from: [{ podSelector: { matchLabels: { 'bad key': 'b' } } }, fromY] }]),
    field: 'spec.ingress[0].from[0].podSelector.matchLabels["bad key"]',
    message: /is not a label key.*this peer is left out/,
    reach: onlyY(),
  },
  {
    name: 'a bad label value in a peer namespaceSelector',
    spec: onA([{ from: [{ namespaceSelector: { matchLabels: { ns: 'y!' } } }] }]),
    field: 'spec.ingress[0].from[0].namespaceSelector.matchLabels["ns"]',
    message: /is not a valid label value/,
    reach: isolated(),
  },
  {
    name: 'an unknown operator',
    spec: onA([{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'Inn', values: ['b'] }] } }] }]),
    field: 'spec.ingress[0].from[0].podSelector.matchExpressions[0].operator',
    message: /"Inn" is not In, NotIn, Exists or DoesNotExist/,
    reach: isolated(),
  },
  {
    name: 'In without values',
    spec: onA([{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: [] }] } }] }]),
    field: 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values',
    message: /must be non-empty when operator is In/,
    reach: isolated(),
  },
  {
    name: 'NotIn without values (it would match everything if taken as written)',
    spec: onA([{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'NotIn' }] } }] }]),
    field: 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values',
    message: /must be non-empty when operator is NotIn/,
    reach: isolated(),
  },
  {
    name: 'Exists with values',
    spec: onA([{ from: [{ podSelector: { matchExpressions: [{ key: 'pod', operator: 'Exists', values: ['b'] }] } }] }]),
    field: 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values',
    message: /must be empty when operator is Exists/,
    reach: isolated(),
  },
  {
    name: 'a peer with ipBlock and a selector',
    spec: onA([{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }]),
    field: 'spec.ingress[0].from[0]',
    message: /may not specify both ipBlock and another peer/,
    reach: isolated(),
  },
  {
    name: 'a peer with nothing in it (all peers invalid is not "from anywhere")',
    spec: onA([{ from: [{}] }]),
    field: 'spec.ingress[0].from[0]',
    message: /must specify a peer/,
    reach: isolated(),
  },
  {
    name: 'a bad requirement in spec.podSelector: the rest selects (a superset), isolated, nothing allowed',
    spec: { podSelector: { matchLabels: { pod: 'a', 'a/b/c': 'x' } }, ingress: [{}] },
    field: 'spec.podSelector.matchLabels["a/b/c"]',
    message: /selects the pods matching the rest of the selector, isolates them and allows nothing/,
    reach: isolated(),
  },
  {
    name: 'an unknown policyType: isolated in both directions, the valid rules still apply',
    spec: { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Ingres'], ingress: [{ from: [fromY] }] },
    field: 'spec.policyTypes[0]',
    message: /"Ingres" is not Ingress or Egress; the policy isolates in both directions/,
    reach: onlyY().expectAllEgress('x/a', false),
  },
  {
    name: 'from that is not a list',
    spec: onA([{ from: fromY }]),
    field: 'spec.ingress[0].from',
    message: /is not a list of peers; the rule allows nothing/,
    reach: isolated(),
  },
  {
    name: 'ingress that is not a list',
    spec: { podSelector: { matchLabels: { pod: 'a' } }, ingress: { from: [fromY] } },
    field: 'spec.ingress',
    message: /is not a list of rules; no ingress is allowed/,
    reach: isolated(),
  },
];

t.test('each bad field: a Problem naming policy and field; the pods stay isolated; only that peer or port is left out', async (t) => {
  for (const bc of badCases) {
    t.test(bc.name, async (t) => {
      const obj = netpol('x', 'bad', bc.spec);
      const r = toNetworkPolicy(obj);
      t.ok(r.value, 'the policy is still converted');
      t.match(r.problems, [{ object: 'NetworkPolicy x/bad', field: bc.field, message: bc.message, fatal: false }]);
      t.equal(r.problems.length, 1, 'one problem');
      const c = new Cluster([obj]);
      t.equal(c.compile().length, 1);
      for (const [port, reach] of [
        [80, bc.reach],
        [81, bc.probe81],
      ] as const) {
        if (!reach) continue;
        const got = matrixOf(c.compiled, port, 'TCP');
        const bad = mismatches(reach.m, got);
        if (bad.length) {
          t.comment(matrixDiff(reach.m, got, `${bc.name}, TCP/${port}`));
          t.fail(`TCP/${port}: ${bad.length} pairs wrong`);
        } else t.pass(`TCP/${port}: isolated as expected`);
      }
    });
  }
});

t.test('a policy whose name the API server would refuse still isolates', async (t) => {
  const r = toNetworkPolicy(netpol('x', 'Deny_All', { podSelector: {} }));
  t.match(r.problems, [{ field: 'metadata.name', message: /applied anyway/, fatal: false }]);
  t.ok(r.value);
  const bad = toNetworkPolicy({ kind: 'NetworkPolicy', metadata: {} });
  t.match(bad.problems, [{ field: 'metadata.name', fatal: true }]);
});

t.test('thousands of bad ports: ten listed, the rest counted', async (t) => {
  const ports = Array.from({ length: 2000 }, () => ({ port: 0 }));
  const r = toNetworkPolicy(netpol('x', 'many', { podSelector: {}, ingress: [{ ports }] }));
  t.equal(r.problems.length, 11);
  t.match(r.problems[10], { field: 'spec.ingress[0].ports', message: /1990 more entries with problems/ });
  t.same(r.value!.ingress[0]!.ports, [], 'the rule allows nothing');
});
