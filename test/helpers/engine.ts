/** A vector engine with a small service table, for node-level tests, the fuzz and the bench. */
import type { Test } from 'tap';
import type { EngineHandle } from '../../src/native/index.js';
import { createEngine } from '../../src/dataplane/afxdp/native.js';
import {
  encodeTable,
  EngineFeFlags,
  type EngineFrontend,
  type EngineNeighbour,
  type EngineTable,
} from '../../src/dataplane/afxdp/table.js';
import { ctTimeoutsNs } from '../../src/config/datapath.js';
import { DEFAULT_CONFIG } from '../../src/config/fields.js';
import { DEFAULT_MAGLEV_SEED } from '../../src/model/maglev.js';

export const NODE = '192.168.1.1';
export const NODE_MAC = '02:00:00:00:0a:01';
export const POD_PORT_MAC = '02:00:00:00:0b:01';
export const CLIENT = '203.0.113.7';
export const CLIENT_MAC = '02:00:00:00:00:c1';
export const REMOTE_BE = ['10.0.2.2', '10.0.2.3', '10.0.2.4'];
export const LOCAL_BE = '10.244.1.5';
export const BE_MAC = '02:00:00:00:00:b1';
export const LOCAL_BE_MAC = '02:00:00:00:00:b2';
export const SNAT_PORTS: [number, number] = [10000, 10999];
export const HAIRPIN = '169.254.42.1';

/** Port 0: the uplink ("eth0"); port 1: a pod-facing interface. */
export const PORTS = [
  { ifindex: 2, name: 'eth0', mac: NODE_MAC, pod: false },
  { ifindex: 3, name: 'cali1', mac: POD_PORT_MAC, pod: true },
];

const remote = (ip: string, port = 8080) => ({ ip, port, local: false });
const fe = (
  ip: string,
  port: number,
  protocol: 'TCP' | 'UDP',
  flags: number,
  svcId: number,
  more: Partial<EngineFrontend> = {},
): EngineFrontend => ({
  ip,
  port,
  protocol,
  flags,
  svcId,
  affinityTimeout: 0,
  cluster: [],
  local: [],
  ...more,
});

/** The frontends every node-level test uses. */
export const FRONTENDS: EngineFrontend[] = [
  // NodePort, eTP=Cluster, three remote backends (UDP and TCP)
  fe('0.0.0.0', 30080, 'UDP', EngineFeFlags.EXTERNAL | EngineFeFlags.NODEPORT, 1, { cluster: REMOTE_BE.map((ip) => remote(ip)) }),
  fe('0.0.0.0', 30081, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.NODEPORT, 2, { cluster: REMOTE_BE.map((ip) => remote(ip)) }),
  // LoadBalancer IP, no endpoints: rejects
  fe('198.51.100.10', 80, 'TCP', EngineFeFlags.EXTERNAL, 3),
  fe('198.51.100.10', 53, 'UDP', EngineFeFlags.EXTERNAL, 4),
  // externalIP, eTP=Local, endpoints on other nodes only
  fe('198.51.100.11', 80, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.EXT_LOCAL, 5, { cluster: [remote(REMOTE_BE[0]!)] }),
  // externalIP, eTP=Local with a local endpoint
  fe('198.51.100.12', 80, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.EXT_LOCAL, 6, {
    cluster: [remote(REMOTE_BE[0]!), { ip: LOCAL_BE, port: 8080, local: true }],
    local: [{ ip: LOCAL_BE, port: 8080, local: true }],
  }),
  // ClientIP affinity
  fe('198.51.100.13', 80, 'TCP', EngineFeFlags.EXTERNAL, 7, { affinityTimeout: 60, cluster: REMOTE_BE.map((ip) => remote(ip)) }),
  // a backend without a neighbour entry
  fe('198.51.100.14', 80, 'UDP', EngineFeFlags.EXTERNAL, 8, { cluster: [remote('10.0.9.9')] }),
  // ClusterIP with a local endpoint (from pods: no SNAT; hairpin when the pod is its own backend)
  fe('10.96.0.10', 80, 'TCP', 0, 9, {
    cluster: [{ ip: LOCAL_BE, port: 8080, local: true }],
    local: [{ ip: LOCAL_BE, port: 8080, local: true }],
  }),
];

export const NEIGHBOURS: EngineNeighbour[] = [
  ...REMOTE_BE.map((ip) => ({ ip, port: 0, mac: BE_MAC, snat: NODE })),
  { ip: LOCAL_BE, port: 1, mac: LOCAL_BE_MAC, snat: NODE },
];

/* IPv6: the same services, one for one, at IPv6 addresses. */
export const NODE6 = 'fd00:192:0:2::1';
export const CLIENT6 = '2001:db8:7::7';
export const REMOTE_BE6 = ['fd00:10:244:2::2', 'fd00:10:244:2::3', 'fd00:10:244:2::4'];
export const LOCAL_BE6 = 'fd00:10:244:1::5';
export const HAIRPIN6 = 'fd62:7078:2a01::1';
export const LB6 = (n: number): string => `2001:db8:100::${n}`;
export const CLUSTER_IP6 = 'fd00:10:96::10';

export const FRONTENDS6: EngineFrontend[] = [
  fe('::', 30080, 'UDP', EngineFeFlags.EXTERNAL | EngineFeFlags.NODEPORT, 101, { cluster: REMOTE_BE6.map((ip) => remote(ip)) }),
  fe('::', 30081, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.NODEPORT, 102, { cluster: REMOTE_BE6.map((ip) => remote(ip)) }),
  fe(LB6(10), 80, 'TCP', EngineFeFlags.EXTERNAL, 103),
  fe(LB6(10), 53, 'UDP', EngineFeFlags.EXTERNAL, 104),
  fe(LB6(11), 80, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.EXT_LOCAL, 105, { cluster: [remote(REMOTE_BE6[0]!)] }),
  fe(LB6(12), 80, 'TCP', EngineFeFlags.EXTERNAL | EngineFeFlags.EXT_LOCAL, 106, {
    cluster: [remote(REMOTE_BE6[0]!), { ip: LOCAL_BE6, port: 8080, local: true }],
    local: [{ ip: LOCAL_BE6, port: 8080, local: true }],
  }),
  fe(LB6(13), 80, 'TCP', EngineFeFlags.EXTERNAL, 107, { affinityTimeout: 60, cluster: REMOTE_BE6.map((ip) => remote(ip)) }),
  fe(LB6(14), 80, 'UDP', EngineFeFlags.EXTERNAL, 108, { cluster: [remote('fd00:10:244:9::9')] }),
  fe(CLUSTER_IP6, 80, 'TCP', 0, 109, {
    cluster: [{ ip: LOCAL_BE6, port: 8080, local: true }],
    local: [{ ip: LOCAL_BE6, port: 8080, local: true }],
  }),
];

export const NEIGHBOURS6: EngineNeighbour[] = [
  ...REMOTE_BE6.map((ip) => ({ ip, port: 0, mac: BE_MAC, snat: NODE6 })),
  { ip: LOCAL_BE6, port: 1, mac: LOCAL_BE_MAC, snat: NODE6 },
];

export function table(over: Partial<EngineTable> = {}): EngineTable {
  return {
    generation: 1,
    ports: PORTS,
    nodeAddresses: [NODE, NODE6],
    frontends: [...FRONTENDS, ...FRONTENDS6],
    neighbours: [...NEIGHBOURS, ...NEIGHBOURS6],
    snatPorts: SNAT_PORTS,
    hairpinIp: HAIRPIN,
    hairpinIp6: HAIRPIN6,
    maglevSeed: DEFAULT_MAGLEV_SEED,
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
    ...over,
  };
}

/** An engine with table() (or the given one) in force, closed when the test ends. */
export function testEngine(t: Test, o: { vector?: number; sessions?: number; table?: EngineTable } = {}): EngineHandle {
  const e = createEngine({ vector: o.vector ?? 256, sessions: o.sessions ?? 4096 });
  t.teardown(() => e.close());
  e.setTable(encodeTable(o.table ?? table()));
  return e;
}
