/**
 * The AF_XDP engine's runtime and IPv6 frontends (src/dataplane/afxdp/
 * runtime.ts), without I/O: a real engine, its dataplane, a steering
 * double. IPv6 frontends are steered to the engine only with its IPv6 flows
 * mirrored (conntrack6); the policy the runtime hands the engine carries
 * the IPv6 identities (bpfproxy_ipcache6's prefixes), so the engine's
 * policy6 node takes the BPF path's decisions for IPv6 flows.
 */
import t, { type Test } from 'tap';
import { AfxdpRuntime, type AfxdpOptions, type SteeringMap } from '../src/dataplane/afxdp/runtime.js';
import { EngineDataplane } from '../src/dataplane/afxdp/dataplane.js';
import { Neighbours, type NeighbourSource } from '../src/dataplane/afxdp/neighbours.js';
import { createEngine } from '../src/dataplane/afxdp/native.js';
import type { SteeredFrontend } from '../src/dataplane/afxdp/xdp.js';
import type { WrittenPolicy } from '../src/dataplane/bpf/policy-maps.js';
import { ctTimeoutsNs } from '../src/config/datapath.js';
import { DEFAULT_ENGINE_SETTINGS } from '../src/config/engine.js';
import { DEFAULT_CONFIG } from '../src/config/fields.js';
import type { Frontend } from '../src/model/types.js';
import type { MapHandle } from '../src/native/index.js';
import { FakeClock } from '../testkit/fake-clock.js';
import { frame6 } from '../testkit/packet6.js';
import { frame } from '../testkit/packet.js';
import { BE_MAC, NODE, NODE6, NODE_MAC, PORTS } from './helpers/engine.js';
import { captureLogger } from './helpers/log.js';

const BACKEND = '10.0.2.2';
const BACKEND6 = 'fd00:10:244:2::2';

const nodePort = (ip: string, be: string): Frontend => ({
  kind: 'NodePort',
  ip,
  port: 30080,
  protocol: 'UDP',
  servicePort: 'default/echo:dns/UDP',
  externalLocal: false,
  internalLocal: false,
  affinityTimeout: 0,
  clusterBackends: [{ ip: be, port: 5353, local: false }],
  localBackends: [],
});

class FakeSteering implements SteeringMap {
  readonly steered = new Map<string, SteeredFrontend>();
  setFrontends(want: readonly SteeredFrontend[], o: { removeOnly?: boolean } = {}): { added: number; removed: number } {
    const key = (f: SteeredFrontend) => `${f.addr}:${f.port}/${f.proto}`;
    const next = new Map(want.map((f) => [key(f), f]));
    let added = 0;
    let removed = 0;
    for (const k of [...this.steered.keys()]) if (!next.has(k) && this.steered.delete(k)) removed++;
    for (const [k, f] of next) {
      if (o.removeOnly || this.steered.has(k)) continue;
      this.steered.set(k, f);
      added++;
    }
    return { added, removed };
  }
  get frontends(): number {
    return this.steered.size;
  }
  close(): void {}
}

/** Both backends on eth0's link, their MACs known (the IPv6 one from neighbour discovery). */
const neighbourSource: NeighbourSource = {
  routeGet: (ip) => ({ oif: PORTS[0]!.ifindex, gateway: null, prefsrc: ip.includes(':') ? NODE6 : NODE }),
  neighbours: () => [
    { ip: BACKEND, ifindex: PORTS[0]!.ifindex, state: 0x02, mac: BE_MAC },
    { ip: BACKEND6, ifindex: PORTS[0]!.ifindex, state: 0x02, mac: BE_MAC },
  ],
  resolve: () => undefined,
};

/** The IPv6 backend is an endpoint isolated for ingress with an empty table (deny-all); the IPv4 one is not isolated. */
const written = (generation: number, withIpv6: boolean): WrittenPolicy => ({
  generation,
  isolated: 1,
  ipcache: [
    [
      { prefixlen: 0, addr: '0.0.0.0' },
      { identity: 1, endpoint: 0, flags: 0 },
    ],
  ],
  ...(withIpv6
    ? {
        ipcache6: [
          [
            { prefixlen: 128, addr: BACKEND6 },
            { identity: 100, endpoint: 7, flags: 1 /* INGRESS_ISO */ },
          ],
        ] as const,
      }
    : {}),
  tables: new Map([[7, []]]),
});

function runtime(t: Test, o: { policy?: () => WrittenPolicy; conntrack6: boolean; podAddrs?: () => ReadonlyMap<number, string> }) {
  const engine = createEngine({ vector: 64, sessions: 1024 });
  const clock = new FakeClock();
  const { log } = captureLogger();
  const steering = new FakeSteering();
  const dataplane = new EngineDataplane((blob) => engine.setTable(blob), {
    snatPorts: [15000, 19999],
    hairpinIp: '169.254.42.1',
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
  });
  dataplane.setPorts(PORTS);
  dataplane.syncAll(
    new Map([
      ['default/echo', [nodePort('0.0.0.0', BACKEND)]],
      ['default/echo6', [nodePort('::', BACKEND6)]],
    ]),
  );
  const opts: AfxdpOptions = {
    bpfDir: '/nonexistent',
    pinDir: '/nonexistent',
    settings: { ...DEFAULT_ENGINE_SETTINGS, dataplane: 'afxdp', ifaces: /^eth0$/ },
    uplinks: /^eth/,
    podIfaces: /^cali/,
    config: DEFAULT_CONFIG,
    conntrack: -1 as unknown as MapHandle,
    ...(o.conntrack6 ? { conntrack6: -1 as unknown as MapHandle } : {}),
    nodeAddresses: () => [NODE, NODE6],
    ...(o.policy ? { policy: o.policy } : {}),
    ...(o.podAddrs ? { podAddrs: o.podAddrs } : {}),
    log,
    clock,
  };
  if (o.policy) engine.requirePolicy(true);
  const rt = AfxdpRuntime.run(
    {
      dataplane,
      engine,
      steering,
      ports: [{ ...PORTS[0]!, queues: 1, xdp: 'generic' }],
      neighbours: new Neighbours(neighbourSource, clock, log),
      steer: { podPorts: false },
    },
    opts,
  );
  t.teardown(() => rt.stop());
  return { rt, engine, steering, clock };
}

const steeredAddrs = (s: FakeSteering) => [...s.steered.values()].map((f) => f.addr).sort();
const v6Packet = () =>
  frame6(
    { src: '2001:db8:7::7', dst: NODE6, srcMac: '02:00:00:00:00:c1', dstMac: NODE_MAC },
    { proto: 'udp', sport: 40000, dport: 30080, payload: Buffer.from('x') },
  );

t.test("IPv6 frontends are steered with the policy; the engine enforces the IPv6 identities' policy", async (t) => {
  const { engine, steering } = runtime(t, { policy: () => written(1, true), conntrack6: true });
  t.same(steeredAddrs(steering), ['0.0.0.0', '::'], 'the IPv4 and the IPv6 NodePort are steered');
  const v4 = frame(
    { src: '203.0.113.7', dst: NODE, srcMac: '02:00:00:00:00:c1', dstMac: NODE_MAC },
    { proto: 'udp', sport: 40000, dport: 30080, payload: Buffer.from('x') },
  );
  const [r6, r4] = engine.runVector([v6Packet(), v4]);
  t.same([r6!.next, r6!.reason], ['drop', 'policy-denied'], 'IPv6: to an endpoint isolated for ingress with nothing allowed: denied');
  t.same([r4!.next, r4!.reason], ['output', 'none'], 'IPv4: not isolated, served');
});

t.test('a policy without the IPv6 identities: the IPv6 backend is unknown (world, not isolated) and served', async (t) => {
  const { engine } = runtime(t, { policy: () => written(1, false), conntrack6: true });
  const [r6] = engine.runVector([v6Packet()]);
  t.same([r6!.next, r6!.reason], ['output', 'none'], "served: the previous test's denial came from the IPv6 identities");
});

t.test('without the IPv6 conntrack mirror, IPv6 frontends stay on the BPF path', async (t) => {
  const { steering } = runtime(t, { conntrack6: false });
  t.same(steeredAddrs(steering), ['0.0.0.0'], 'only the IPv4 NodePort is steered');
});

t.test('no NetworkPolicy given: IPv6 frontends steered', async (t) => {
  const { steering } = runtime(t, { conntrack6: true });
  t.same(steeredAddrs(steering), ['0.0.0.0', '::'], 'both steered');
});

t.test("a pod interface's address changes: the engine's policy is rebuilt at the next refresh", async (t) => {
  const pods = new Map<number, string>();
  const { engine, clock } = runtime(t, { policy: () => written(1, true), conntrack6: true, podAddrs: () => pods });
  const epoch = engine.stats().policy!.epoch;
  await clock.advance(1000);
  t.equal(engine.stats().policy!.epoch, epoch, 'nothing changed: not rebuilt');
  pods.set(3, '10.244.1.5');
  await clock.advance(1000);
  t.equal(engine.stats().policy!.epoch, epoch + 1, 'rebuilt with the new pod address');
});
