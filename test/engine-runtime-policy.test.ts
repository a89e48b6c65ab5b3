/**
 * The AF_XDP engine's runtime and NetworkPolicy (src/dataplane/afxdp/
 * runtime.ts), without I/O: a real engine (no sockets), its dataplane, a
 * steering double and a neighbour source of the test's own, the runtime's
 * timer on a FakeClock. While the BPF policy maps are not known, or the
 * engine refuses what they hold, no frontend is steered to the engine (the
 * BPF path serves them); the runtime tries again every second and steers
 * them as soon as the engine takes a policy. A refusal after a sync takes
 * the frontends off at once, though the engine still holds the previous
 * policy: the engine never forwards on a policy older than the BPF path's.
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
import { BE_MAC, NODE, PORTS } from './helpers/engine.js';
import { captureLogger } from './helpers/log.js';

const BACKEND = '10.0.2.2';
const BACKEND2 = '10.0.2.3';

const nodePort: Frontend = {
  kind: 'NodePort',
  ip: '0.0.0.0',
  port: 30080,
  protocol: 'UDP',
  servicePort: 'default/echo:dns/UDP',
  externalLocal: false,
  internalLocal: false,
  affinityTimeout: 0,
  clusterBackends: [{ ip: BACKEND, port: 5353, local: false }],
  localBackends: [],
};

/** XdpSteering's bookkeeping without the BPF map. */
class FakeSteering implements SteeringMap {
  readonly steered = new Map<string, SteeredFrontend>();
  setFrontends(want: readonly SteeredFrontend[], o: { removeOnly?: boolean } = {}): { added: number; removed: number } {
    const key = (f: SteeredFrontend) => `${f.addr}:${f.port}/${f.proto}`;
    const next = new Map(want.map((f) => [key(f), f]));
    let added = 0;
    let removed = 0;
    for (const k of [...this.steered.keys()]) {
      if (!next.has(k) && this.steered.delete(k)) removed++;
    }
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

/** The backends are on eth0's link, their MACs known. */
const neighbourSource: NeighbourSource = {
  routeGet: () => ({ oif: PORTS[0]!.ifindex, gateway: null, prefsrc: NODE }),
  neighbours: () => [
    { ip: BACKEND, ifindex: PORTS[0]!.ifindex, state: 0x02 /* REACHABLE */, mac: BE_MAC },
    { ip: BACKEND2, ifindex: PORTS[0]!.ifindex, state: 0x04 /* STALE */, mac: BE_MAC },
  ],
  resolve: () => undefined,
};

/** What the BPF policy maps hold: nothing isolated (the engine enforces nothing, but holds a policy). */
const good = (generation: number): WrittenPolicy => ({
  generation,
  isolated: 0,
  ipcache: [
    [
      { prefixlen: 0, addr: '0.0.0.0' },
      { identity: 1, endpoint: 0, flags: 0 },
    ],
  ],
  tables: new Map(),
});
/** A prefix with host bits set: the engine's check refuses the whole blob. */
const refused = (generation: number): WrittenPolicy => ({
  ...good(generation),
  ipcache: [
    [
      { prefixlen: 24, addr: '203.0.113.1' },
      { identity: 200, endpoint: 0, flags: 0 },
    ],
  ],
});

/** The runtime over a real engine without I/O; policy: the BPF maps' state as the agent gives it (left out: no NetworkPolicy). */
function runtime(t: Test, policy: (() => WrittenPolicy | undefined) | undefined, source: NeighbourSource = neighbourSource) {
  const engine = createEngine({ vector: 64, sessions: 1024 });
  const clock = new FakeClock();
  const { log, lines } = captureLogger();
  const steering = new FakeSteering();
  // as start() wires it: once the runtime runs, every table goes through its make-before-break swap
  const ref: { rt?: AfxdpRuntime } = {};
  const dataplane = new EngineDataplane((blob, table) => (ref.rt ? ref.rt.swapIn(blob, table) : engine.setTable(blob)), {
    snatPorts: [15000, 19999],
    hairpinIp: '169.254.42.1',
    ctTimeoutsNs: ctTimeoutsNs(DEFAULT_CONFIG.conntrack),
  });
  dataplane.setPorts(PORTS);
  dataplane.syncAll(new Map([['default/echo', [nodePort]]]));
  let asked = 0;
  const o: AfxdpOptions = {
    bpfDir: '/nonexistent',
    pinDir: '/nonexistent',
    settings: { ...DEFAULT_ENGINE_SETTINGS, dataplane: 'afxdp', ifaces: /^eth0$/ },
    uplinks: /^eth/,
    podIfaces: /^cali/,
    config: DEFAULT_CONFIG,
    conntrack: -1 as unknown as MapHandle,
    nodeAddresses: () => [NODE],
    ...(policy
      ? {
          policy: () => {
            asked++;
            return policy();
          },
        }
      : {}),
    log,
    clock,
  };
  if (policy) engine.requirePolicy(true); // as start() does
  const rt = AfxdpRuntime.run(
    {
      dataplane,
      engine,
      steering,
      ports: [{ ...PORTS[0]!, queues: 1, xdp: 'generic' }],
      neighbours: new Neighbours(source, clock, log),
      steer: { podPorts: false },
    },
    o,
    (r) => (ref.rt = r),
  );
  t.teardown(() => rt.stop());
  return { rt, engine, clock, steering, lines, asked: () => asked, dataplane };
}

const policyErrors = (lines: Array<{ level: string; msg: string }>) =>
  lines.filter((l) => l.level === 'error' && l.msg.includes('cannot load the network policy'));

t.test('no policy known: nothing steered, retried every second, steered once the engine holds one', async (t) => {
  const bpf: { policy?: WrittenPolicy } = {}; // the agent has no policy writer yet
  const { rt, engine, clock, steering, lines, asked } = runtime(t, () => bpf.policy);
  t.equal(steering.frontends, 0, 'the NodePort is not steered to the engine');
  t.match(rt.status().policyError, /the BPF policy maps are not known/, 'bpfproxy engine stats says why');
  t.equal(engine.stats().policy, null, 'the engine holds no policy');
  const errors = policyErrors(lines);
  t.equal(errors.length, 1, 'logged once');
  t.match(errors[0]!.msg, /no frontend is steered to the engine \(the BPF path serves them\) until it is, retried every second/);

  const before = asked();
  await clock.advance(1000);
  t.equal(asked(), before + 1, 'asked again a second later');
  t.equal(steering.frontends, 0, 'still nothing steered');
  t.equal(policyErrors(lines).length, 1, 'the same reason is not logged again');

  bpf.policy = good(1);
  await clock.advance(1000);
  t.match(engine.stats().policy, { generation: 1 }, 'the engine took the policy at the next retry');
  t.same([...steering.steered.values()], [{ addr: '0.0.0.0', port: 30080, proto: 17 }], 'and the NodePort is steered');
  t.equal(rt.status().policyError, undefined, 'no policy error left');
  t.ok(
    lines.some((l) => l.level === 'info' && l.msg === 'AF_XDP engine: network policy loaded'),
    'the recovery is logged',
  );
  const steady = asked();
  await clock.advance(3000);
  t.equal(asked(), steady, 'no retry while the engine holds the BPF maps’ policy');
});

t.test('a policy the engine refuses after a sync: unsteered at once, retried, steered again when fixed', async (t) => {
  let current: WrittenPolicy | undefined = good(1);
  const { rt, engine, clock, steering, lines, asked } = runtime(t, () => current);
  t.equal(steering.frontends, 1, 'steered with the first policy');
  t.equal(policyErrors(lines).length, 0, 'nothing logged as an error');

  current = refused(2);
  rt.setPolicy(); // what the agent does after each policy sync
  t.equal(steering.frontends, 0, 'the NodePort leaves the engine at once');
  t.match(rt.status().policyError, /host bits/, "the engine's reason, in bpfproxy engine stats");
  t.match(engine.stats().policy, { generation: 1 }, 'the engine still holds the older policy, and is not sent traffic on it');
  t.equal(policyErrors(lines).length, 1, 'logged');

  const before = asked();
  await clock.advance(1000);
  t.equal(asked(), before + 1, 'retried a second later');
  t.equal(steering.frontends, 0, 'still refused: still not steered');
  t.equal(policyErrors(lines).length, 1, 'not logged again');

  current = good(3);
  await clock.advance(1000);
  t.match(engine.stats().policy, { generation: 3 }, 'the fixed policy taken at the next retry');
  t.equal(steering.frontends, 1, 'steered again');
  t.equal(rt.status().policyError, undefined);
});

t.test('without a policy source (no NetworkPolicy in the setup) frontends are steered at once', async (t) => {
  const { rt, steering } = runtime(t, undefined);
  t.equal(steering.frontends, 1, 'steered: the engine enforces no policy here');
  t.equal(rt.status().policyError, undefined);
});

t.test('endpoints change to a backend whose next hop the kernel knows: the frontend stays on the engine through the swap', async (t) => {
  const { rt, engine, steering, dataplane } = runtime(t, () => good(1));
  t.equal(steering.frontends, 1, 'steered with its first backend');
  const gen = engine.stats().table!.generation;
  for (const [i, ip] of [BACKEND2, BACKEND, BACKEND2].entries()) {
    dataplane.syncService('default/echo', [{ ...nodePort, clusterBackends: [{ ip, port: 5353, local: false }] }]);
    await new Promise((r) => setImmediate(r)); // the sync pass's table is built in a microtask
    // without resolving the new backend's next hop before the build, the
    // frontend left the steering until the runtime's next refresh (up to a
    // second on the BPF path after every endpoint change)
    t.equal(steering.frontends, 1, `change ${i + 1} (to ${ip}): still steered, no refresh needed`);
    t.equal(engine.stats().table!.generation, gen + i + 1, 'one table per change (the neighbour entry came with it)');
  }
  t.ok(
    rt.status().neighbours.resolved >= 1 && rt.status().neighbours.unresolved.length === 0,
    'the view has the backend in force, nothing unresolved',
  );
});

t.test(
  'a new backend whose next hop the kernel is still resolving: steered within milliseconds of the answer, not at the next refresh',
  async (t) => {
    let answered = false; // the kernel has BACKEND2's MAC once it was asked (NTF_USE) and the ARP reply came
    const asked: string[] = [];
    const source: NeighbourSource = {
      ...neighbourSource,
      neighbours: () => neighbourSource.neighbours().filter((n) => n.ip !== BACKEND2 || answered),
      resolve: (ip) => {
        asked.push(ip);
        answered = true;
      },
    };
    const { rt, steering, clock, dataplane } = runtime(t, () => good(1), source);
    t.equal(steering.frontends, 1, 'steered with its first backend');
    dataplane.syncService('default/echo', [{ ...nodePort, clusterBackends: [{ ip: BACKEND2, port: 5353, local: false }] }]);
    await new Promise((r) => setImmediate(r));
    t.same(asked, [BACKEND2], "the kernel was asked for the new backend's next hop");
    t.equal(steering.frontends, 0, 'not steered while its next hop is unknown: the BPF path serves it');
    t.same(rt.status().neighbours.unresolved, [BACKEND2], 'bpfproxy engine stats says which');
    await clock.advance(50);
    t.equal(steering.frontends, 1, 'steered again 50 ms later, once the kernel has the answer');
    t.equal(rt.status().neighbours.unresolved.length, 0, 'nothing unresolved');
  },
);

t.test('a next hop that never resolves: a few early looks, then once a second; nothing after stop', async (t) => {
  let lookups = 0;
  const source: NeighbourSource = {
    ...neighbourSource,
    neighbours: () => {
      lookups++;
      return neighbourSource.neighbours().filter((n) => n.ip !== BACKEND2);
    },
  };
  const { rt, steering, clock, dataplane } = runtime(t, () => good(1), source);
  dataplane.syncService('default/echo', [{ ...nodePort, clusterBackends: [{ ip: BACKEND2, port: 5353, local: false }] }]);
  await new Promise((r) => setImmediate(r));
  const at = lookups;
  await clock.advance(999);
  t.equal(lookups - at, 3, 'three early looks within the first second (50, 200, 500 ms)');
  await clock.advance(2000);
  t.equal(lookups - at, 5, 'then one per refresh');
  t.equal(steering.frontends, 0, 'never steered: the BPF path serves it');
  rt.stop();
  const stopped = lookups;
  await clock.advance(3000);
  t.equal(lookups, stopped, 'no lookup after stop');
});
