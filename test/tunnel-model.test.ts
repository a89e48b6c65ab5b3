/** What the tunnel is fed (src/model/tunnel.ts): peers' addresses, and each remote endpoint's node address. */
import t from 'tap';
import { Endpoints } from '../src/model/endpoints.js';
import { endpointNodes, peerAddresses, tunnelAddressOf } from '../src/model/tunnel.js';
import type { EndpointSlice, Node, SliceEndpoint } from '../src/model/types.js';

const node = (name: string, internalIPs: string[], externalIPs: string[] = []): Node => ({ name, internalIPs, externalIPs });
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
