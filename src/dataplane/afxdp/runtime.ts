/**
 * The AF_XDP vector engine while it serves (`bpfproxy agent --dataplane
 * afxdp`), beside the BPF path, which stays fully programmed as the
 * fallback:
 *
 *   start: interfaces by pattern -> engine (session table sized from the
 *          conntrack map size, mirroring its flows into the BPF conntrack)
 *          -> table from the same Frontends -> AF_XDP sockets, one worker per
 *          queue -> XDP program on each interface -> steering: which
 *          frontends the engine takes (only once its table has them);
 *   every second: node addresses, neighbours (backend next hops), steering;
 *   stop:  steering off (frames go to the kernel path), sockets closed,
 *          XDP detached, memory freed: the interfaces are as they were.
 *
 * Which frontends the engine takes (steerable()): every endpoint of it is
 * reached through an engine interface with a resolved next hop. Replies
 * find their way through the conntrack the engine mirrors its flows into:
 * the XDP program sends the replies of SNAT'd flows (to the engine's SNAT
 * ports) to the engine, and the BPF path translates the others (replies of
 * local endpoints, client address kept) and carries every flow on when the
 * engine stops. ClusterIP traffic comes from pods: steered only when a pod
 * interface is one of the engine's. LoadBalancer frontends with
 * loadBalancerSourceRanges stay on the BPF path, which enforces them.
 *
 * NetworkPolicy: the engine's policy node takes the BPF path's decisions
 * from what the BPF policy maps hold (options.policy, the map writer's
 * mirror), loaded before the first frame and again after every policy sync
 * (setPolicy()). The engine requires it: while it has none (or refused the
 * last one), no frontend is steered to it, and a frame that still comes is
 * dropped (policy-not-loaded), never forwarded unchecked.
 *
 * IPv6 (issue 13): the engine serves IPv6 frontends too, with its IPv6
 * flows mirrored into bpfproxy_ct6 and the IPv6 identities of the policy
 * maps (bpfproxy_ipcache6) in its policy; without the IPv6 conntrack map
 * (options.conntrack6) IPv6 frontends stay on the BPF path.
 */
import type { Clock, Timer } from '../../clock.js';
import type { Logger } from '../../log.js';
import type { Frontend } from '../../model/types.js';
import { native, type EngineHandle, type EngineStats, type EngineTraceRecord, type MapHandle } from '../../native/index.js';
import type { Config } from '../../config/config.js';
import { datapathConfig } from '../../config/datapath.js';
import { engineRuntimeConfig, type EngineSettings } from '../../config/engine.js';
import type { LoadBalancing } from '../bpf/reconciler.js';
import type { WrittenPolicy } from '../bpf/policy-maps.js';
import { encodePolicy } from './policy.js';
import { EngineDataplane } from './dataplane.js';
import { createEngine } from './native.js';
import { kernelNeighbours, Neighbours, type NeighbourSource, type NeighbourView } from './neighbours.js';
import type { EngineNeighbour, EnginePort, EngineTable } from './table.js';
import { XdpSteering, XSK_SLOTS_PER_PORT, type SteeredFrontend } from './xdp.js';

export interface AfxdpOptions {
  bpfDir: string;
  pinDir: string;
  settings: EngineSettings;
  /** the uplinks, when settings.ifaces is null */
  uplinks: RegExp;
  /** pod-facing interfaces: traffic from them is internal */
  podIfaces: RegExp;
  config: Config;
  /** the BPF path's conntrack map: the engine mirrors its flows there */
  conntrack: MapHandle;
  /** the IPv6 one (bpfproxy_ct6): the engine's IPv6 flows; left out: IPv6 frontends are not steered */
  conntrack6?: MapHandle;
  /** the BPF path's service ids */
  svcIdOf?: (servicePort: string) => number | undefined;
  /** the BPF path's backend choice settings (Maglev: same tables, same picks) */
  loadBalancing?: () => LoadBalancing;
  nodeAddresses: () => string[];
  /**
   * What the BPF policy maps hold (the map writer's mirror; the agent always
   * gives it). Returning undefined: not known, nothing is steered. Left out
   * (tests, a setup without NetworkPolicy): the engine enforces none.
   */
  policy?: () => WrittenPolicy | undefined;
  /** bpfproxy_pod_addrs (pod interface ifindex -> its pod's IPv4 address): the engine judges a pod's unknown IPv6 address by it, as the BPF path */
  podAddrs?: () => ReadonlyMap<number, string>;
  log: Logger;
  clock: Clock;
  neighbours?: NeighbourSource;
}

export interface EnginePortInfo extends EnginePort {
  queues: number;
  xdp: 'native' | 'generic';
}

/** What `bpfproxy engine stats` shows. */
export interface EngineStatus {
  running: true;
  ports: Array<EnginePortInfo & { stats?: EngineStats['ports'][number] }>;
  engine: EngineStats;
  steering: { frontends: number; tableFrontends: number; conntrackMirror: boolean };
  neighbours: { resolved: number; unresolved: string[]; elsewhere: string[] };
  memory: EngineMemory;
  settings: { queues: number; batch: number; pattern: string };
  lastTableError?: string;
  /** why the engine has no policy in force (nothing is steered to it meanwhile) */
  policyError?: string;
}

/** What the engine holds, and the configuration each part is sized from. */
export interface EngineMemory {
  /** UMEM: workers × frames per worker × frame bytes (committed at start) */
  umemBytes: number;
  workers: number;
  framesPerWorker: number;
  frameBytes: number;
  /** the session table: sessionEntries (bpfMapSizeConntrack) live entries at most, committed at start */
  sessionsBytes: number;
  sessionEntries: number;
  /** the IPv6 session table: a quarter of sessionEntries (at least 4096), 128 bytes a slot, committed at start */
  sessions6Bytes: number;
  /** the table in force (frontends, backends, Maglev tables, neighbours); grows with the services */
  tableBytes: number;
  totalBytes: number;
}

/**
 * The largest MTU the engine takes: a frame is 2048 bytes of UMEM, of which
 * the kernel keeps 256 of headroom, less the Ethernet header. A larger
 * frame would not fit and be dropped after the redirect, not passed.
 */
export const ENGINE_MAX_MTU = 2048 - 256 - 14;
/** A UMEM frame (addon/engine/api.h ENG_FRAME_SIZE). */
export const ENGINE_FRAME_BYTES = 2048;

/** The interfaces matching the pattern, in ifindex order (the engine's port order). */
export function enginePorts(pattern: RegExp, pods: RegExp, queues: number): Array<EnginePort & { queues: number; mtu: number }> {
  return native()
    .links()
    .filter((l) => l.name !== 'lo' && pattern.test(l.name))
    .sort((a, b) => a.index - b.index)
    .map((l) => {
      // netlink, not /sys/class/net: that shows the mount namespace's view
      const li = native().engineLinkInfo(l.index);
      return {
        ifindex: l.index,
        name: l.name,
        mac: li.mac,
        pod: pods.test(l.name),
        queues: Math.max(1, Math.min(queues, li.rxQueues)),
        mtu: li.mtu,
      };
    });
}

/**
 * When new backends' next hops the kernel was asked to resolve are looked at
 * again, before the once-a-second refresh (a next hop that never resolves
 * costs these few lookups, then one a second as any other).
 */
const RESOLVE_RECHECKS_MS = [50, 150, 300];

const protoNum = (p: string): number => (p === 'UDP' ? 17 : 6);

/** Whether the engine takes this frontend's frames (see the file's comment). */
export function steerable(f: Frontend, reach: ReadonlyMap<string, EngineNeighbour>, o: { podPorts: boolean }): boolean {
  if (f.kind === 'ClusterIP' && !o.podPorts) return false;
  // loadBalancerSourceRanges are enforced by the BPF path only: such a frontend stays there
  if (f.sourceRanges !== undefined) return false;
  return [...f.clusterBackends, ...f.localBackends].every((b) => reach.has(b.ip));
}

/** The steering map as the runtime drives it (XdpSteering; tests give a double). */
export type SteeringMap = Pick<XdpSteering, 'setFrontends' | 'frontends' | 'close'>;

/** What start() builds before the runtime runs (tests give an engine without I/O, a steering double, neighbours of their own). */
export interface AfxdpParts {
  dataplane: EngineDataplane;
  engine: EngineHandle;
  steering: SteeringMap;
  ports: EnginePortInfo[];
  neighbours: Neighbours;
  /** whether a pod-facing interface is the engine's (ClusterIP frontends are steered only then) */
  steer: { podPorts: boolean };
}

export class AfxdpRuntime {
  private timer: Timer | undefined;
  /** an early refresh for next hops the kernel is resolving now */
  private soon: Timer | undefined;
  private view: NeighbourView = { entries: [], unresolved: [], elsewhere: [] };
  private reach = new Map<string, EngineNeighbour>();
  /** the backend addresses this.view was computed for */
  private covered = new Set<string>();
  private stopped = false;
  /** the policy the engine holds is the BPF maps' last one; else why not */
  private policyError: string | undefined;
  /** IPv6 (issue 13): the pod addresses the policy in force was built with */
  private podAddrsSent = '';

  readonly dataplane: EngineDataplane;
  readonly ports: EnginePortInfo[];
  private readonly engine: EngineHandle;
  private readonly steering: SteeringMap;
  private readonly neighbours: Neighbours;
  private readonly steer: { podPorts: boolean };

  private constructor(
    parts: AfxdpParts,
    private readonly o: AfxdpOptions,
  ) {
    this.dataplane = parts.dataplane;
    this.ports = parts.ports;
    this.engine = parts.engine;
    this.steering = parts.steering;
    this.neighbours = parts.neighbours;
    this.steer = parts.steer;
  }

  /**
   * Run over parts already built (start() builds them; tests give doubles):
   * the policy first (nothing is steered until the engine holds one), then
   * the first refresh, then one every second. built: called with the
   * runtime before anything runs.
   */
  static run(parts: AfxdpParts, o: AfxdpOptions, built?: (rt: AfxdpRuntime) => void): AfxdpRuntime {
    const rt = new AfxdpRuntime(parts, o);
    parts.dataplane.beforeBuild(() => rt.cover());
    built?.(rt);
    if (o.policy) {
      rt.policyError = 'not loaded yet';
      rt.setPolicy();
    }
    rt.refresh();
    rt.arm();
    return rt;
  }

  static async start(o: AfxdpOptions): Promise<AfxdpRuntime> {
    const { log } = o;
    const pattern = o.settings.ifaces ?? o.uplinks;
    const found = enginePorts(pattern, o.podIfaces, o.settings.queues);
    if (!found.length) {
      throw new Error(
        `no interface matches ${o.settings.ifaces ? '--afxdp-ifaces' : 'the uplink pattern (bpfDataIfacePattern)'} /${pattern.source}/: the AF_XDP engine has nothing to serve; the BPF path serves alone`,
      );
    }
    const big = found.filter((p) => p.mtu > ENGINE_MAX_MTU);
    if (big.length) {
      throw new Error(
        `${big.map((p) => `${p.name} (MTU ${p.mtu})`).join(', ')}: the engine's 2 KiB frames hold at most ${ENGINE_MAX_MTU} bytes of IP packet; lower the MTU or leave ${big.length > 1 ? 'them' : 'it'} out of --afxdp-ifaces; the BPF path serves alone`,
      );
    }
    if (found.length * XSK_SLOTS_PER_PORT > 1024)
      throw new Error(`${found.length} interfaces match /${pattern.source}/: the engine takes at most 64`);
    const rc = engineRuntimeConfig(o.config);
    const steering = await XdpSteering.load(o.bpfDir, o.pinDir, datapathConfig(o.config), log);
    let engine: EngineHandle | undefined;
    try {
      engine = createEngine({
        vector: o.settings.batch,
        sessions: rc.sessions,
        conntrack: o.conntrack,
        ...(o.conntrack6 ? { conntrack6: o.conntrack6 } : {}),
      });
      const eng = engine;
      const podPorts = found.some((p) => p.pod);
      const ref: { rt?: AfxdpRuntime } = {};
      const apply = (blob: Buffer, table: EngineTable) => (ref.rt ? ref.rt.swapIn(blob, table) : eng.setTable(blob));
      const dataplane = new EngineDataplane(
        apply,
        { snatPorts: rc.snatPorts, hairpinIp: rc.hairpinIp, hairpinIp6: rc.hairpinIp6, ctTimeoutsNs: rc.ctTimeoutsNs },
        { ...(o.svcIdOf ? { svcIdOf: o.svcIdOf } : {}), ...(o.loadBalancing ? { loadBalancing: o.loadBalancing } : {}), log },
      );
      // Policy before any frame: none loaded means the policy node drops everything it gets.
      if (o.policy) engine.requirePolicy(true);
      dataplane.setPorts(found);
      dataplane.setNodeAddresses(o.nodeAddresses());
      const err = dataplane.flush();
      if (err) throw new Error(err);
      steering.setSnatPorts(rc.snatPorts[0], rc.snatPorts[1]);
      found.forEach((p, i) => steering.setPort(p.ifindex, i * XSK_SLOTS_PER_PORT, p.queues));
      const io = engine.startIo({
        ports: found.map((p, i) => ({ ifindex: p.ifindex, queues: p.queues, xskBase: i * XSK_SLOTS_PER_PORT, name: p.name })),
        queues: Math.max(...found.map((p) => p.queues)),
        frames: rc.frames,
        ring: rc.ring,
        xsksFd: steering.xsksFd,
        zerocopy: 'auto',
      });
      const ports: EnginePortInfo[] = found.map((p) => ({ ...p, xdp: steering.attach(p.ifindex, p.name) }));
      log.info(
        {
          interfaces: ports.map(
            (p) =>
              `${p.name} (${p.xdp} XDP, ${p.queues} queue${p.queues > 1 ? 's' : ''}, ${io.ports.find((x) => x.ifindex === p.ifindex)?.zerocopy ? 'zero-copy' : 'copy mode'})`,
          ),
          vector: o.settings.batch,
          sessions: rc.sessions,
          umemBytes: io.umemBytes,
          sessionBytes: io.sessions.bytes,
          conntrackMirror: true,
        },
        `AF_XDP engine serving on ${ports.map((p) => p.name).join(', ')}; everything it does not take stays on the BPF path`,
      );
      const neighbours = new Neighbours(o.neighbours ?? kernelNeighbours(), o.clock, log);
      return AfxdpRuntime.run({ dataplane, engine, steering, ports, neighbours, steer: { podPorts } }, o, (rt) => (ref.rt = rt));
    } catch (e) {
      engine?.stopIo();
      steering.close();
      engine?.close();
      throw e;
    }
  }

  /**
   * Hand the engine what the BPF policy maps hold now (after each policy
   * sync, and at start). A state the engine refuses, or none at all, takes
   * every frontend off the engine until one is taken: the engine never
   * forwards on a policy older than the BPF path's.
   */
  setPolicy(): void {
    if (this.stopped || !this.o.policy) return;
    const was = this.policyError;
    try {
      const w = this.o.policy();
      if (!w) throw new Error('the BPF policy maps are not known to the agent (no policy writer)');
      const pods = this.o.podAddrs?.() ?? new Map<number, string>();
      const { blob, figures } = encodePolicy(w, pods);
      this.podAddrsSent = JSON.stringify([...pods]);
      this.engine.setPolicy(blob);
      this.policyError = undefined;
      if (was) this.o.log.info({ generation: w.generation, isolated: w.isolated, ...figures }, 'AF_XDP engine: network policy loaded');
    } catch (e) {
      this.policyError = (e as Error).message;
      if (this.policyError !== was) {
        this.o.log.error(
          { err: e },
          `AF_XDP engine: cannot load the network policy (${this.policyError}); no frontend is steered to the engine (the BPF path serves them) until it is, retried every second`,
        );
      }
    }
    if ((was === undefined) !== (this.policyError === undefined)) this.steering.setFrontends(this.wanted());
  }

  /**
   * Swap a table in, make-before-break: frontends leave the steering before
   * a table without them is swapped in, and join it only after the table has
   * them (start() hands every table here once the runtime runs).
   */
  swapIn(blob: Buffer, table: EngineTable): void {
    const inTable = new Set(table.frontends.map((f) => `${f.ip}:${f.port}/${protoNum(f.protocol)}`));
    this.steering.setFrontends(
      this.wanted().filter((s) => inTable.has(`${s.addr}:${s.port}/${s.proto}`)),
      { removeOnly: true },
    );
    this.engine.setTable(blob);
    this.steering.setFrontends(this.wanted());
  }

  /**
   * The next hops of the table's backends, into the table and the steering's
   * view. Before every build (only when the table names a backend the view has
   * not looked up: a new endpoint is reached through the engine from the
   * table that brings it, not a refresh later) and at every refresh.
   */
  private cover(force = false): void {
    if (this.stopped) return;
    const want = this.dataplane.backendAddresses();
    if (!force && [...want].every((ip) => this.covered.has(ip))) return;
    this.view = this.neighbours.compute(want, this.ports);
    this.covered = want;
    this.reach = new Map(this.view.entries.map((n) => [n.ip, n]));
    this.dataplane.setNeighbours(this.view.entries);
    // a new backend's next hop the kernel is resolving now (it answers an
    // ARP/ND request in milliseconds): look again shortly instead of at the
    // next refresh, so the new endpoint joins the engine fast
    if (!force && this.view.unresolved.length) this.recheck(0);
  }

  private recheck(attempt: number): void {
    if (this.soon || attempt >= RESOLVE_RECHECKS_MS.length) return;
    this.soon = this.o.clock.after(RESOLVE_RECHECKS_MS[attempt]!, () => {
      this.soon = undefined;
      if (this.stopped) return;
      try {
        this.cover(true);
        this.dataplane.flush();
        this.steering.setFrontends(this.wanted());
        if (this.view.unresolved.length) this.recheck(attempt + 1);
      } catch (e) {
        this.o.log.error(`AF_XDP engine: cannot look up next hops: ${(e as Error).message}; retried at the next refresh`);
      }
    });
  }

  /** The frontends the engine should take now. */
  private wanted(): SteeredFrontend[] {
    const out: SteeredFrontend[] = [];
    if (this.policyError !== undefined) return out;
    for (const { frontend: f } of this.dataplane.frontends()) {
      if (f.ip.includes(':') && this.o.conntrack6 === undefined) continue; // IPv6 (issue 13): only with its flows mirrored
      if (steerable(f, this.reach, this.steer)) out.push({ addr: f.ip, port: f.port, proto: protoNum(f.protocol) });
    }
    return out;
  }

  /** IPv6 (issue 13): whether the pod interfaces' addresses changed since the policy in force was built. */
  private podAddrsMoved(): boolean {
    return this.o.podAddrs !== undefined && JSON.stringify([...this.o.podAddrs()]) !== this.podAddrsSent;
  }

  /** Node addresses, next hops and steering, once a second (and at start). */
  refresh(): void {
    if (this.stopped) return;
    if (this.policyError !== undefined || this.podAddrsMoved()) this.setPolicy();
    this.dataplane.setNodeAddresses(this.o.nodeAddresses());
    this.cover(true);
    this.dataplane.flush();
    const r = this.steering.setFrontends(this.wanted());
    if (r.added || r.removed) this.o.log.debug({ ...r, steered: this.steering.frontends }, 'AF_XDP engine: steering updated');
  }

  private arm(): void {
    this.timer = this.o.clock.after(1000, () => {
      try {
        this.refresh();
      } catch (e) {
        this.o.log.error(`AF_XDP engine: cannot refresh neighbours and steering: ${(e as Error).message}; retried in a second`);
      }
      if (!this.stopped) this.arm();
    });
  }

  status(): EngineStatus {
    this.dataplane.flush();
    const st = this.engine.stats();
    const rc = engineRuntimeConfig(this.o.config);
    return {
      running: true,
      ports: this.ports.map((p) => {
        const s = st.ports.find((x) => x.ifindex === p.ifindex);
        return { ...p, ...(s ? { stats: s } : {}) };
      }),
      engine: st,
      steering: { frontends: this.steering.frontends, tableFrontends: st.table?.frontends ?? 0, conntrackMirror: st.conntrack.mirrored },
      neighbours: { resolved: this.view.entries.length, unresolved: this.view.unresolved, elsewhere: this.view.elsewhere },
      memory: {
        umemBytes: st.umemBytes,
        workers: st.queues,
        framesPerWorker: rc.frames,
        frameBytes: ENGINE_FRAME_BYTES,
        sessionsBytes: st.sessions.bytes,
        sessionEntries: rc.sessions,
        sessions6Bytes: st.sessions6.bytes,
        tableBytes: st.table?.bytes ?? 0,
        totalBytes: st.umemBytes + st.sessions.bytes + st.sessions6.bytes + (st.table?.bytes ?? 0),
      },
      settings: {
        queues: this.o.settings.queues,
        batch: this.o.settings.batch,
        pattern: (this.o.settings.ifaces ?? this.o.uplinks).source,
      },
      ...(this.dataplane.lastError ? { lastTableError: this.dataplane.lastError } : {}),
      ...(this.policyError !== undefined ? { policyError: this.policyError } : {}),
    };
  }

  /** The next n packets' paths, waiting up to timeoutMs for them. */
  async trace(n: number, timeoutMs: number): Promise<EngineTraceRecord[]> {
    this.engine.trace(n);
    const out: EngineTraceRecord[] = [];
    const until = Date.now() + timeoutMs;
    while (out.length < n && Date.now() < until && !this.stopped) {
      await new Promise((r) => setTimeout(r, 50));
      out.push(...this.engine.traceTake());
    }
    if (!this.stopped) {
      this.engine.trace(0);
      out.push(...this.engine.traceTake());
    }
    return out.slice(0, n);
  }

  /** Hand every frame back to the kernel path, stop the workers, detach, free. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    this.soon?.cancel();
    try {
      this.steering.setFrontends([]);
    } catch (e) {
      this.o.log.warn(`AF_XDP engine: cannot clear the steering map: ${(e as Error).message}; detaching anyway`);
    }
    this.engine.stopIo();
    this.steering.close();
    this.engine.close();
    this.o.log.info(
      { interfaces: this.ports.map((p) => p.name) },
      'AF_XDP engine stopped: XDP detached, sockets closed; the BPF path serves every frame (flows the engine opened go on through its conntrack)',
    );
  }
}
