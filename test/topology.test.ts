/**
 * Topology-aware routing against kube-proxy's own table:
 * pkg/proxy/topology_test.go TestCategorizeEndpoints, re-expressed case by
 * case (same names, endpoints, zones and expected sets), plus PreferSameNode
 * cases written from topology.go's topologyModeFromHints (node hints,
 * KEP-3015), which the upstream table does not cover yet.
 *
 * kube-proxy returns nil for a set the service never uses; we compute both
 * sets for every frontend (the datapath picks by each frontend's policy),
 * so `view()` applies kube-proxy's UsesClusterEndpoints/UsesLocalEndpoints
 * to ours before comparing.
 */
import t from 'tap';
import { categorize, describeTopology, topologyMode, type TopologyEndpoint } from '../src/model/topology.js';

const NODE = 'this-node';

interface Ep {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  local?: boolean;
  zones?: string[];
  nodes?: string[];
}

interface Svc {
  internalLocal?: boolean;
  externalLocal?: boolean;
  /** has a NodePort (kube-proxy's test sets nodePort: 8080), so eTP applies */
  external?: boolean;
}

interface Case {
  name: string;
  /** the node's topology.kubernetes.io/zone label (undefined: no label) */
  zone?: string;
  svc?: Svc;
  eps: Array<[string, Ep]>;
  /** null: the service never uses this kind of endpoint */
  cluster: string[] | null;
  local: string[] | null;
  /** when both are used: their union */
  all?: string[];
  onlyRemote?: boolean;
}

type E = TopologyEndpoint & { addr: string };

const endpoint = ([addr, e]: [string, Ep]): E => ({
  addr,
  ready: e.ready ?? false,
  serving: e.serving ?? false,
  terminating: e.terminating ?? false,
  nodeName: e.local ? NODE : 'other-node',
  ...(e.zones ? { zoneHints: e.zones } : {}),
  ...(e.nodes ? { nodeHints: e.nodes } : {}),
});

/** kube-proxy's view of our categorization: its nil sets, allReachableEndpoints, hasAnyEndpoints. */
function view(c: Case) {
  const eps = c.eps.map(endpoint);
  const r = categorize(eps, { nodeName: NODE, zone: c.zone ?? '' });
  const s = c.svc ?? {};
  // ServicePort.ExternalPolicyLocal is false unless the service is externally accessible
  const extLocal = !!s.external && !!s.externalLocal;
  // Cluster endpoints too when externally accessible, even with eTP=Local:
  // kube-proxy short-circuits in-cluster traffic to external addresses
  const usesCluster = !s.internalLocal || !!s.external;
  const usesLocal = !!s.internalLocal || extLocal;
  const addrs = (l: E[]) => l.map((e) => e.addr).sort();
  const cluster = usesCluster ? addrs(r.cluster) : null;
  const local = usesLocal ? addrs(r.local) : null;
  const all = [...new Set([...(cluster ?? []), ...(local ?? [])])].sort();
  return { cluster, local, all, hasAny: r.anyUsable, topology: r.topology };
}

const ready = (zones?: string[], extra: Ep = {}): Ep => ({ ready: true, ...(zones ? { zones } : {}), ...extra });

// TestCategorizeEndpoints (pkg/proxy/topology_test.go), in its order.
const UPSTREAM: Case[] = [
  {
    name: "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'])],
      ['10.1.2.4:80', ready(['zone-b'])],
      ['10.1.2.5:80', ready(['zone-c'])],
      ['10.1.2.6:80', ready(['zone-a'])],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: null,
  },
  {
    name: 'externalTrafficPolicy: Local, topology ignored for Local endpoints',
    zone: 'zone-a',
    svc: { externalLocal: true, external: true },
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { local: true })],
      ['10.1.2.4:80', ready(['zone-b'], { local: true })],
      ['10.1.2.5:80', ready(['zone-c'])],
      ['10.1.2.6:80', ready(['zone-a'])],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
  },
  {
    name: 'internalTrafficPolicy: Local, topology ignored for Local endpoints',
    zone: 'zone-a',
    svc: { internalLocal: true, externalLocal: false, external: true },
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { local: true })],
      ['10.1.2.4:80', ready(['zone-b'], { local: true })],
      ['10.1.2.5:80', ready(['zone-c'])],
      ['10.1.2.6:80', ready(['zone-a'])],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
    all: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
  },
  { name: 'empty node labels', eps: [['10.1.2.3:80', ready(['zone-a'])]], cluster: ['10.1.2.3:80'], local: null },
  { name: 'empty zone label', zone: '', eps: [['10.1.2.3:80', ready(['zone-a'])]], cluster: ['10.1.2.3:80'], local: null },
  {
    name: 'node in different zone, no endpoint filtering',
    zone: 'zone-b',
    eps: [['10.1.2.3:80', ready(['zone-a'])]],
    cluster: ['10.1.2.3:80'],
    local: null,
  },
  {
    name: 'unready endpoint',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'])],
      ['10.1.2.4:80', ready(['zone-b'])],
      ['10.1.2.5:80', ready(['zone-c'])],
      ['10.1.2.6:80', { zones: ['zone-a'] }],
    ],
    cluster: ['10.1.2.3:80'],
    local: null,
  },
  {
    name: 'only unready endpoints in same zone (should not filter)',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', { zones: ['zone-a'] }],
      ['10.1.2.4:80', ready(['zone-b'])],
      ['10.1.2.5:80', ready(['zone-c'])],
      ['10.1.2.6:80', { zones: ['zone-a'] }],
    ],
    cluster: ['10.1.2.4:80', '10.1.2.5:80'],
    local: null,
  },
  {
    name: 'missing hints, no filtering applied',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'])],
      ['10.1.2.4:80', ready(['zone-b'])],
      ['10.1.2.5:80', ready()],
      ['10.1.2.6:80', ready(['zone-a'])],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.5:80', '10.1.2.6:80'],
    local: null,
  },
  {
    name: 'multiple hints per endpoint, filtering includes any endpoint with zone included',
    zone: 'zone-c',
    eps: [
      ['10.1.2.3:80', ready(['zone-a', 'zone-b', 'zone-c'])],
      ['10.1.2.4:80', ready(['zone-b', 'zone-c'])],
      ['10.1.2.5:80', ready(['zone-b', 'zone-d'])],
      ['10.1.2.6:80', ready(['zone-c'])],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
    local: null,
  },
  {
    name: 'conflicting topology and localness require merging allEndpoints',
    zone: 'zone-a',
    svc: { internalLocal: false, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', ready(['zone-a'], { local: true })],
      ['10.0.0.1:80', ready(['zone-b'], { local: true })],
      ['10.0.0.2:80', ready(['zone-a'])],
      ['10.0.0.3:80', ready(['zone-b'])],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.2:80'],
    local: ['10.0.0.0:80', '10.0.0.1:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80', '10.0.0.2:80'],
  },
  { name: 'internalTrafficPolicy: Local, with empty endpoints', svc: { internalLocal: true }, eps: [], cluster: null, local: [] },
  {
    name: 'internalTrafficPolicy: Local, but all endpoints are remote',
    svc: { internalLocal: true },
    eps: [
      ['10.0.0.0:80', ready()],
      ['10.0.0.1:80', ready()],
    ],
    cluster: null,
    local: [],
    onlyRemote: true,
  },
  {
    name: 'internalTrafficPolicy: Local, all endpoints are local',
    svc: { internalLocal: true },
    eps: [
      ['10.0.0.0:80', ready(undefined, { local: true })],
      ['10.0.0.1:80', ready(undefined, { local: true })],
    ],
    cluster: null,
    local: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'internalTrafficPolicy: Local, some endpoints are local',
    svc: { internalLocal: true },
    eps: [
      ['10.0.0.0:80', ready(undefined, { local: true })],
      ['10.0.0.1:80', ready()],
    ],
    cluster: null,
    local: ['10.0.0.0:80'],
  },
  {
    name: 'Cluster traffic policy, endpoints not Ready',
    eps: [
      ['10.0.0.0:80', {}],
      ['10.0.0.1:80', {}],
    ],
    cluster: [],
    local: null,
  },
  {
    name: 'Cluster traffic policy, some endpoints are Ready',
    eps: [
      ['10.0.0.0:80', {}],
      ['10.0.0.1:80', ready()],
    ],
    cluster: ['10.0.0.1:80'],
    local: null,
  },
  {
    name: 'Cluster traffic policy, all endpoints are terminating',
    eps: [
      ['10.0.0.0:80', { serving: true, terminating: true, local: true }],
      ['10.0.0.1:80', { serving: true, terminating: true }],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: null,
  },
  {
    name: 'iTP: Local, eTP: Cluster, some endpoints local',
    svc: { internalLocal: true, externalLocal: false, external: true },
    eps: [
      ['10.0.0.0:80', ready(undefined, { local: true })],
      ['10.0.0.1:80', ready()],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'iTP: Cluster, eTP: Local, some endpoints local',
    svc: { internalLocal: false, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', ready(undefined, { local: true })],
      ['10.0.0.1:80', ready()],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'iTP: Local, eTP: Local, some endpoints local',
    svc: { internalLocal: true, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', ready(undefined, { local: true })],
      ['10.0.0.1:80', ready()],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'iTP: Local, eTP: Local, all endpoints remote',
    svc: { internalLocal: true, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', ready()],
      ['10.0.0.1:80', ready()],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'iTP: Local, eTP: Local, all endpoints remote and terminating',
    svc: { internalLocal: true, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', { serving: true, terminating: true }],
      ['10.0.0.1:80', { serving: true, terminating: true }],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    all: ['10.0.0.0:80', '10.0.0.1:80'],
    onlyRemote: true,
  },
  {
    name: 'iTP: Cluster, eTP: Local, with terminating endpoints',
    svc: { internalLocal: false, externalLocal: true, external: true },
    eps: [
      ['10.0.0.0:80', ready()],
      ['10.0.0.1:80', { local: true }],
      ['10.0.0.2:80', { serving: true, terminating: true, local: true }],
      ['10.0.0.3:80', { serving: true, terminating: true }],
    ],
    cluster: ['10.0.0.0:80'],
    local: ['10.0.0.2:80'],
    all: ['10.0.0.0:80', '10.0.0.2:80'],
  },
  {
    name: 'externalTrafficPolicy ignored if not externally accessible',
    svc: { externalLocal: true },
    eps: [
      ['10.0.0.0:80', ready()],
      ['10.0.0.1:80', ready(undefined, { local: true })],
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: null,
  },
  {
    name: 'no cluster endpoints for iTP:Local internal-only service',
    svc: { internalLocal: true },
    eps: [
      ['10.0.0.0:80', ready()],
      ['10.0.0.1:80', ready(undefined, { local: true })],
    ],
    cluster: null,
    local: ['10.0.0.1:80'],
  },
];

// PreferSameNode (node hints), from topologyModeFromHints: every ready
// endpoint has a node hint and one names this node.
const SAME_NODE: Case[] = [
  {
    name: 'PreferSameNode: every ready endpoint has a node hint, one for this node: only those',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { nodes: [NODE], local: true })],
      ['10.1.2.4:80', ready(['zone-a'], { nodes: ['node-b'] })],
      ['10.1.2.5:80', ready(['zone-b'], { nodes: ['node-c'] })],
    ],
    cluster: ['10.1.2.3:80'],
    local: null,
  },
  {
    name: 'PreferSameNode: no endpoint hinted for this node: zone hints decide',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { nodes: ['node-b'] })],
      ['10.1.2.4:80', ready(['zone-a'], { nodes: ['node-c'] })],
      ['10.1.2.5:80', ready(['zone-b'], { nodes: ['node-d'] })],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80'],
    local: null,
  },
  {
    name: 'PreferSameNode: a ready endpoint without a node hint: zone hints decide',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { nodes: [NODE], local: true })],
      ['10.1.2.4:80', ready(['zone-a'])],
      ['10.1.2.5:80', ready(['zone-b'], { nodes: ['node-c'] })],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80'],
    local: null,
  },
  {
    name: 'PreferSameNode: the endpoint hinted for this node is not ready: zone hints decide',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', { zones: ['zone-a'], nodes: [NODE], local: true }],
      ['10.1.2.4:80', ready(['zone-a'], { nodes: ['node-b'] })],
      ['10.1.2.5:80', ready(['zone-b'], { nodes: ['node-c'] })],
    ],
    cluster: ['10.1.2.4:80'],
    local: null,
  },
  {
    name: 'PreferSameNode: node hints only, none for this node, no zone hints: all endpoints',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', ready(undefined, { nodes: ['node-b'] })],
      ['10.1.2.4:80', ready(undefined, { nodes: ['node-c'] })],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80'],
    local: null,
  },
  {
    name: 'PreferSameNode with eTP=Local: Local set is every local endpoint, cluster set the node-hinted ones',
    zone: 'zone-a',
    svc: { externalLocal: true, external: true },
    eps: [
      ['10.1.2.3:80', ready(['zone-a'], { nodes: [NODE], local: true })],
      ['10.1.2.4:80', ready(['zone-a'], { nodes: ['node-b'], local: true })],
      ['10.1.2.5:80', ready(['zone-b'], { nodes: ['node-c'] })],
    ],
    cluster: ['10.1.2.3:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
    all: ['10.1.2.3:80', '10.1.2.4:80'],
  },
  {
    name: 'no ready endpoint: serving-terminating ones everywhere, hints ignored',
    zone: 'zone-a',
    eps: [
      ['10.1.2.3:80', { serving: true, terminating: true, zones: ['zone-b'], nodes: ['node-b'] }],
      ['10.1.2.4:80', { serving: true, terminating: true, zones: ['zone-c'] }],
      ['10.1.2.5:80', { serving: false, terminating: true, zones: ['zone-a'] }],
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80'],
    local: null,
  },
];

for (const [table, cases] of [
  ['TestCategorizeEndpoints', UPSTREAM],
  ['PreferSameNode', SAME_NODE],
] as const) {
  t.test(table, async (t) => {
    for (const c of cases) {
      const v = view(c);
      t.same(v.cluster, c.cluster === null ? null : [...c.cluster].sort(), `${c.name}: cluster endpoints`);
      t.same(v.local, c.local === null ? null : [...c.local].sort(), `${c.name}: local endpoints`);
      const all = c.all ?? c.cluster ?? c.local ?? [];
      t.same(v.all, [...all].sort(), `${c.name}: all reachable endpoints`);
      t.equal(v.hasAny, all.length > 0 || !!c.onlyRemote, `${c.name}: hasAnyEndpoints`);
    }
  });
}

t.test('the mode and the reason shown by `bpfproxy services`', async (t) => {
  const node = { nodeName: NODE, zone: 'zone-a' };
  const mode = (eps: Array<[string, Ep]>, n = node) => topologyMode(eps.map(endpoint), n);
  t.same(mode([['a', ready(['zone-a'])]]), { mode: 'PreferSameZone', reason: 'same-zone' });
  t.same(mode([['a', ready(['zone-a'], { nodes: [NODE] })]]), { mode: 'PreferSameNode', reason: 'same-node' });
  t.same(mode([['a', ready()]]), { mode: '', reason: 'no-hints' });
  t.same(
    mode([
      ['a', ready(['zone-a'])],
      ['b', ready()],
    ]),
    { mode: '', reason: 'hints-incomplete' },
  );
  t.same(mode([['a', ready(['zone-b'])]]), { mode: '', reason: 'no-hints-for-zone' });
  t.same(mode([['a', ready(['zone-a'])]], { nodeName: NODE, zone: '' }), { mode: '', reason: 'node-has-no-zone' });
  t.same(mode([['a', ready(undefined, { nodes: ['x'] })]]), { mode: '', reason: 'no-hints-for-node' });
  const term = categorize([endpoint(['a', { serving: true, terminating: true, zones: ['zone-a'] }])], node);
  t.same(term.topology, { mode: '', reason: 'terminating-fallback' });
  t.same(categorize([endpoint(['a', {}])], node).topology, { mode: '', reason: 'no-endpoints' });
  t.equal(describeTopology({ mode: 'PreferSameZone', reason: 'same-zone' }, node), 'zone hints for zone-a');
  t.equal(
    describeTopology({ mode: '', reason: 'hints-incomplete' }, node),
    'hints incomplete: all endpoints (a ready endpoint has no zone hint)',
  );
  t.equal(describeTopology({ mode: 'PreferSameNode', reason: 'same-node' }, node), `PreferSameNode: endpoints hinted for node ${NODE}`);
});
