/** What the tunnel is fed (src/model/tunnel.ts): peers' addresses, and each remote endpoint's node address. */
import t from 'tap';
import { Endpoints } from '../src/model/endpoints.js';
import { DECAP_ANNOTATION, decapsulates, endpointNodes, peerAddresses, tunnelAddressOf } from '../src/model/tunnel.js';
import { toNode } from '../src/sources/convert.js';
import type { EndpointSlice, Node, SliceEndpoint } from '../src/model/types.js';

const node = (name: string, internalIPs: string[], externalIPs: string[] = [], decap = 'vxlan-v1'): Node => ({
  name,
  internalIPs,
  externalIPs,
  decap,
});
const ep = (addresses: string[], nodeName?: string): SliceEndpoint => ({
  addresses,
  ready: true,
  serving: true,
  terminating: false,
  ...(nodeName ? { nodeName } : {}),
});
const slice = (eps: SliceEndpoint[]): EndpointSlice => ({
  namespace: 'ns',
  name: 's',
  serviceName: 'web',
  ports: [],
  endpoints: Endpoints.of(eps),
});

t.test('peers: every InternalIP of the other nodes, never ExternalIPs, never our own', async (t) => {
  const nodes = [node('a', ['192.0.2.11']), node('b', ['192.0.2.12', '10.0.0.12'], ['203.0.113.12']), node('c', [])];
  t.same(peerAddresses(nodes, 'a'), ['10.0.0.12', '192.0.2.12']);
  t.equal(tunnelAddressOf(nodes[1]!), '192.0.2.12', 'the tunnel goes to the first InternalIP');
  t.equal(tunnelAddressOf(nodes[2]!), undefined, 'a node without one has none (its endpoints are SNATed)');
});

t.test("endpoints on other known nodes map to their node's address; local, unknown and nodeless ones do not", async (t) => {
  const nodes = new Map([
    ['a', node('a', ['192.0.2.11'])],
    ['b', node('b', ['192.0.2.12'])],
    ['c', node('c', [], ['203.0.113.13'])],
  ]);
  const m = endpointNodes(
    [
      slice([
        ep(['10.244.1.1'], 'a'),
        ep(['10.244.2.1', '10.244.2.2'], 'b'),
        ep(['10.244.3.1'], 'c'),
        ep(['10.244.4.1'], 'gone'),
        ep(['10.244.5.1']),
      ]),
    ],
    (n) => nodes.get(n),
    'a',
  );
  t.same([...m].sort(), [
    ['10.244.2.1', '192.0.2.12'],
    ['10.244.2.2', '192.0.2.12'],
  ]);
});

t.test('mixed versions: only nodes that say they decapsulate get tunnelled endpoints; the rest SNAT', async (t) => {
  const nodes = new Map([
    ['new', node('new', ['192.0.2.12'])],
    ['newer', node('newer', ['192.0.2.13'], [], 'vxlan-v2, vxlan-v1')],
    ['old', { name: 'old', internalIPs: ['192.0.2.14'], externalIPs: [] }],
    ['other', node('other', ['192.0.2.15'], [], 'geneve-v9')],
  ]);
  const m = endpointNodes(
    [slice([ep(['10.244.2.1'], 'new'), ep(['10.244.3.1'], 'newer'), ep(['10.244.4.1'], 'old'), ep(['10.244.5.1'], 'other')])],
    (n) => nodes.get(n),
    'self',
  );
  t.same([...m].sort(), [
    ['10.244.2.1', '192.0.2.12'],
    ['10.244.3.1', '192.0.2.13'],
  ]);
  t.same(peerAddresses(nodes.values(), 'self').length, 4, 'VXLAN is still taken from every node (a flow tunnelled before keeps going)');
  const conv = toNode({
    kind: 'Node',
    metadata: { name: 'n1', annotations: { [DECAP_ANNOTATION]: 'vxlan-v1' } },
    status: { addresses: [{ type: 'InternalIP', address: '192.0.2.11' }] },
  });
  t.same(conv.problems, []);
  t.equal(conv.value?.decap, 'vxlan-v1', 'the annotation read from the Node');
  t.ok(decapsulates(conv.value!), 'decapsulates');
  t.notOk(decapsulates(toNode({ kind: 'Node', metadata: { name: 'n2' } }).value!), 'no annotation: does not');
});

t.test('IPv4 only: IPv6 InternalIPs and IPv6 endpoints stay out of the IPv4 tunnel maps (they would read as 0.0.0.0)', async (t) => {
  // an IPv6-first dual-stack node lists its IPv6 InternalIP first
  const nodes = new Map([
    ['a', node('a', ['2001:db8:1::11', '192.0.2.11'])],
    ['b', node('b', ['2001:db8:1::12', '192.0.2.12'])],
    ['v6only', node('v6only', ['2001:db8:1::13'])],
  ]);
  t.equal(tunnelAddressOf(nodes.get('a')!), '192.0.2.11', 'the first IPv4 InternalIP, not the first one');
  t.equal(tunnelAddressOf(nodes.get('v6only')!), undefined, 'an IPv6-only node has no tunnel address (its endpoints are SNATed)');
  t.same(peerAddresses(nodes.values(), 'a'), ['192.0.2.12'], 'VXLAN sources: IPv4 addresses only');
  const m = endpointNodes(
    // an IPv6 EndpointSlice of a dual-stack service beside the IPv4 one
    [slice([ep(['10.244.2.1'], 'b')]), slice([ep(['fd00:10:244:2::1'], 'b'), ep(['fd00:10:244:3::1'], 'v6only')])],
    (n) => nodes.get(n),
    'a',
  );
  t.same([...m], [['10.244.2.1', '192.0.2.12']], 'IPv6 endpoints are SNATed (not tunnelled)');
});

t.test('IPv6 endpoints: tunnelled only to nodes that say vxlan-v1-ipv6 too, to their IPv4 address', async (t) => {
  const nodes = new Map([
    ['six', node('six', ['2001:db8:1::12', '192.0.2.12'], [], 'vxlan-v1,vxlan-v1-ipv6')],
    ['four', node('four', ['192.0.2.13'], [], 'vxlan-v1')],
    ['odd', node('odd', ['192.0.2.14'], [], 'vxlan-v1-ipv6')],
  ]);
  const m = endpointNodes(
    [
      slice([ep(['10.244.2.1'], 'six'), ep(['10.244.3.1'], 'four'), ep(['10.244.4.1'], 'odd')]),
      slice([ep(['fd00:10:244:2::1'], 'six'), ep(['fd00:10:244:3::1'], 'four'), ep(['fd00:10:244:4::1'], 'odd')]),
    ],
    (n) => nodes.get(n),
    'self',
  );
  t.same([...m].sort(), [
    ['10.244.2.1', '192.0.2.12'],
    ['10.244.3.1', '192.0.2.13'],
    ['fd00:10:244:2::1', '192.0.2.12'],
  ]);
});
