/**
 * The native addon's surface (addon/*.cc), exactly as it is exported.
 * Every function throws an Error with `errno`, `code` and `op` on failure
 * (src/native/index.ts turns those into BpfError); a wrong argument or
 * option type is a TypeError naming it.
 *
 * Fds: a MapHandle / ProgHandle / LinkHandle owns its fd (close() it; one never closed
 * is closed when it is garbage collected). A NativeBpfObject owns the fds
 * of its programs and maps: the numbers its programs() and maps() report
 * are valid until it is closed. Functions that take an fd accept either a
 * number or a handle.
 */

/** A BPF map fd with the sizes every map operation is checked against. */
export interface MapHandle {
  readonly kind: 'map';
  /** The fd, or -1 once closed. */
  readonly fd: number;
  readonly closed: boolean;
  /** What errors call the map: a pinned map's file name (the kernel's name is cut at 15 characters). */
  readonly name: string;
  readonly id: number;
  /** BPF_MAP_TYPE_* */
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  /**
   * Bytes of one value in a lookup/update buffer: valueSize, or for per-CPU
   * maps round_up(valueSize, 8) × possible CPUs.
   */
  readonly valueLen: number;
  readonly maxEntries: number;
  readonly flags: number;
  /** Close the fd now (again: nothing). */
  close(): void;
}

/** A BPF program fd. */
export interface ProgHandle {
  readonly kind: 'prog';
  /** The fd, or -1 once closed. */
  readonly fd: number;
  readonly closed: boolean;
  /** The kernel's name (at most 15 characters). */
  readonly name: string;
  readonly id: number;
  /** BPF_PROG_TYPE_* */
  readonly type: number;
  readonly tag: string;
  close(): void;
}

/** The cgroup hooks of socket-level load balancing (bpf/sock.c). */
export type SockHook = 'connect4' | 'connect6' | 'sendmsg4' | 'sendmsg6' | 'recvmsg4' | 'recvmsg6' | 'getpeername4' | 'getpeername6';

export interface CgroupLinkInfo {
  id: number;
  progId: number;
  /** The cgroup's id (its inode number on cgroup2); 0n once the cgroup is gone. */
  cgroupId: bigint;
  /** undefined: an attach type that is not one of SockHook */
  hook?: SockHook;
}

/** A BPF link fd (tcx links): detaching is explicit (linkDetach); closing only drops our reference. */
export interface LinkHandle {
  readonly kind: 'link';
  /** The fd, or -1 once closed. */
  readonly fd: number;
  readonly closed: boolean;
  readonly id: number;
  close(): void;
}

/** A map op's target: a handle (sizes known), or a plain map fd (sizes read on each call). */
export type MapRef = MapHandle | number;
/** Any BPF fd, as a number or a handle. */
export type FdRef = MapHandle | ProgHandle | LinkHandle | number;

export interface NativeProgram {
  name: string;
  section: string;
  /** Owned by the object: valid until its close(). */
  fd: number;
}

export interface NativeMap {
  name: string;
  /** Owned by the object: valid until its close(). */
  fd: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  pinPath: string | null;
}

export interface NativeBpfObject {
  programs(): NativeProgram[];
  maps(): NativeMap[];
  /** Close the libbpf object with every fd it holds (also done when collected). */
  close(): void;
}

export interface LoadOptions {
  /** Maps marked LIBBPF_PIN_BY_NAME are pinned (or reused) below this dir. */
  pinRoot?: string;
  /** Values for `const volatile` globals, by name, raw bytes. */
  rodata?: Record<string, Buffer>;
  /**
   * The whole .rodata of a running copy of the same object (its settings),
   * written before `rodata`; a size other than the object's is EINVAL.
   */
  rodataImage?: Buffer;
  /** max_entries overrides, by map name. */
  maxEntries?: Record<string, number>;
}

export interface MapDump {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface MapCreateSpec {
  /** BPF_MAP_TYPE_* */
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** BPF_F_* map flags (LPM tries need BPF_F_NO_PREALLOC) */
  flags?: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
  loadTime: number;
  /** The maps the program uses (its .rodata among them). */
  mapIds: number[];
}

export interface TestRunOptions {
  repeat?: number;
  ctx?: Buffer;
  dataOutLen?: number;
}

export interface TestRunResult {
  retval: number;
  data: Buffer;
  durationNs: number;
  ctx?: Buffer;
}

export type TcDirection = 'ingress' | 'egress';

/** One entry of a clsact hook's filter dump (tc filter show). */
export interface TcFilter {
  /** classifier: "bpf", "u32", "flower", ... */
  kind: string;
  chain: number;
  priority: number;
  /** ETH_P_* in host order (3 = all, 0x800 = IPv4) */
  protocol: number;
  /** 0 for the classifier instance itself, then one entry per filter */
  handle: number;
}

/** One interface of an RTM_GETLINK dump. */
export interface LinkEntry {
  index: number;
  name: string;
  /** IFLA_INFO_KIND: "veth", "bridge", "vxlan", ...; "" for a physical device */
  kind: string;
  up: boolean;
}

/** What a netlink watcher delivers, a batch at a time; `at`: CLOCK_MONOTONIC ms when its thread read the event (as monotonicNs). */
export type NetlinkEvent = { at: number } & (
  | ({ event: 'newlink' | 'dellink' } & LinkEntry)
  /** unicast IPv4 and IPv6 routes of the main table naming an output interface (as routes4, routes6) */
  | { event: 'newroute' | 'delroute'; dst: string; prefixLen: number; oif: number }
  /** the kernel dropped events (socket buffer full): everything must be looked at again */
  | { event: 'overflow' }
  /** the socket failed: no more events come from this watcher */
  | { event: 'error'; errno: number }
);

export interface NetlinkWatcher {
  /** Stop the reader thread and close the socket (twice is fine). */
  close(): void;
}

/**
 * What a ring buffer reader delivers, a batch at a time: `count` records in
 * `records`, each a u32 length (host order), 4 bytes of zero, the record,
 * zero padded to 8 bytes; or the error that stopped the reader.
 */
export type RingbufBatch = { records: Buffer; count: number } | { errno: number };

/** A BPF ring buffer the reader created and owns, read on a thread of its own (addon/ringbuf.cc). */
export interface RingbufReader {
  /** The ring buffer map's fd (e.g. for a map-in-map slot), -1 once closed. */
  readonly fd: number;
  /** Bytes of the ring. */
  readonly size: number;
  readonly closed: boolean;
  /** Stop the thread and close the ring; undelivered batches are dropped (twice is fine). */
  close(): void;
}

/** mapWordOp operations on one 64-bit word of an mmapable array map. */
export type MapWordOp = 'load' | 'store' | 'add' | 'cas';

/** A BPF link (BPF_OBJ_GET_INFO_BY_FD); the tcx fields only for tcx links. */
export interface BpfLinkInfo {
  type: 'tcx' | 'xdp' | 'other';
  id: number;
  progId: number;
  /** tcx and xdp: the interface; 0 once it is gone (or the link was detached) */
  ifindex: number;
  direction?: TcDirection | '?';
}

/**
 * One entry of the kernel's conntrack (addon/conntrack.cc): the original
 * tuple (as the client sent it) and the reply tuple (as the answer comes
 * back, after the kernel's NAT); ports in host order.
 */
export interface KernelCtEntry {
  proto: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  rsrc: string;
  rdst: string;
  rsport: number;
  rdport: number;
  /** IPS_* bits (SEEN_REPLY 0x2, ASSURED 0x4, SRC_NAT 0x10, DST_NAT 0x20, DYING 0x200) */
  status: number;
  /** seconds left */
  timeout: number;
  /** TCP_CONNTRACK_* (ESTABLISHED 3); 0 for UDP */
  tcpState: number;
  /** IP_CT_TCP_FLAG_* of the original and the reply direction (CLOSE_INIT 0x04: that side sent the first FIN); 0 for UDP */
  tcpFlags: number;
  tcpFlagsReply: number;
  zone: number;
}

/** One conntrack GC pass (addon/bulk.cc), run off the JS thread. */
export interface CtGcResult {
  /** entries read */
  scanned: number;
  /** entries removed: both halves of dead connections, expired orphans */
  expired: number;
  /** scanned - expired */
  live: number;
  /** expired at the first read, alive at the second (a packet came): kept */
  refreshed: number;
  /** entries left, by L4 protocol */
  liveByProto: { tcp: number; udp: number; other: number };
  /** connections left that are not closed (a forward entry without RST, not FINs both ways): what a rollback drain waits for */
  open: number;
  /** the CLOCK_MONOTONIC instant expiry was judged against */
  nowNs: bigint;
  /** wall time of the pass, and of its parts: the first read, the second read and judging, deleting */
  ms: number;
  /** CPU time the pass took on its thread (user + kernel): the cost, however busy the machine */
  cpuMs: number;
  scanMs: number;
  judgeMs: number;
  deleteMs: number;
  /** false where the kernel has no batch ops for the map (key-by-key walk) */
  batchedLookup: boolean;
  batchedDelete: boolean;
}

/** What the agent uses. */
export interface NativeRuntime {
  loadObject(path: string, opts?: LoadOptions): Promise<NativeBpfObject>;

  /**
   * Map operations. Every Buffer must have the map's key size / value
   * length (`valueLen` of its handle), batches count × that: otherwise
   * BpfError EINVAL naming the operation, the map and both sizes. The
   * optional length arguments, when given, must be the map's too.
   */
  mapLookup(map: MapRef, key: Buffer, valueLen?: number): Buffer | null;
  mapUpdate(map: MapRef, key: Buffer, value: Buffer, flags?: number): void;
  /** True when deleted, false when the key was not there. */
  mapDelete(map: MapRef, key: Buffer): boolean;
  /** The key after `key` (the first with null); null at the end. */
  mapNextKey(map: MapRef, key: Buffer | null, keyLen?: number): Buffer | null;
  mapDump(map: MapRef, keyLen?: number, valueLen?: number, batch?: number): MapDump;
  mapUpdateBatch(map: MapRef, keys: Buffer, values: Buffer, count: number, flags?: number): number;
  mapDeleteBatch(map: MapRef, keys: Buffer, count: number): number;

  /** Open a pinned map (or, with 'prog', program): a handle that owns the fd. */
  objGet(path: string, kind?: 'map'): MapHandle;
  objGet(path: string, kind: 'prog'): ProgHandle;
  objPin(fd: FdRef, path: string): void;
  mapInfo(fd: FdRef): MapInfo;
  progInfo(fd: FdRef): ProgInfo;
  /** Open a loaded program by id: a handle that owns the fd. */
  progById(id: number): ProgHandle;
  /**
   * Create a map of no object (the inner maps of a map-in-map): a handle
   * that owns the fd; the map lives while an fd or an outer map holds it.
   * `name` is given to the kernel cut at 15 characters, and names the map
   * in errors whole.
   */
  mapCreate(spec: MapCreateSpec): MapHandle;
  /** Open a map by id (an inner map, read back from its outer map): a handle that owns the fd. */
  mapById(id: number, name?: string): MapHandle;

  /** "E2BIG", from the C library (and the kernel-internal codes such as ENOTSUPP). */
  errnoName(errno: number): string;
  /** "Argument list too long" */
  errnoText(errno: number): string;

  tcAttach(ifindex: number, dir: TcDirection, progFd: number, handle: number, priority: number): number;
  tcDetach(ifindex: number, dir: TcDirection, handle: number, priority: number): boolean;
  tcQuery(ifindex: number, dir: TcDirection, handle: number, priority: number): number;
  /** Create the clsact qdisc: true when this call created it, false when it was there. */
  tcHookCreate(ifindex: number): boolean;
  /** Delete the clsact qdisc with every filter in it: false when there was none. */
  tcHookDestroy(ifindex: number): boolean;
  /** Every filter on one clsact hook (empty without a clsact, or without the interface). */
  tcFilters(ifindex: number, dir: TcDirection): TcFilter[];

  /** Whether the kernel has tcx (6.6+). */
  tcxSupported(): boolean;
  /** A tcx link running prog first on the hook. */
  tcxAttach(ifindex: number, dir: TcDirection, prog: FdRef): LinkHandle;
  /** The tcx programs of a hook in run order (linkId 0: attached without a link). */
  tcxList(ifindex: number, dir: TcDirection): Array<{ progId: number; linkId: number }>;
  linkInfo(link: FdRef): BpfLinkInfo;
  linkById(linkId: number): LinkHandle;
  /** The BPF link pinned at path (EINVAL when the pin is not a link). */
  linkOpen(path: string): LinkHandle;
  /** BPF_LINK_UPDATE: the link runs prog from now on (atomically); with expectedProg only if it ran that one. */
  linkUpdate(link: FdRef, prog: FdRef, expectedProg?: FdRef): void;
  /** BPF_LINK_DETACH: false when it was detached already. */
  linkDetach(link: FdRef): boolean;

  /** Attach a cgroup v2 socket hook program (bpf/sock.c) through a BPF link: it runs for every socket of a process in that cgroup or below. */
  cgroupAttach(cgroupPath: string, hook: SockHook, prog: FdRef): LinkHandle;
  /** A cgroup link's target (cgroupId 0n: the cgroup is gone), or null when the link is not a cgroup link. */
  cgroupLinkInfo(link: FdRef): CgroupLinkInfo | null;
  /** Whether cgroup sock_addr programs may call bpf_set_retval() (5.18): probed. */
  sockSetRetvalSupported(): boolean;
  /** Run a BPF iterator program once over this thread's network namespace; the bytes it wrote. */
  iterRun(prog: FdRef): number;
  /** This thread's network namespace cookie (SO_NETNS_COOKIE, 5.14). */
  netnsCookie(): bigint;

  interfaces(): Array<{ index: number; name: string }>;
  /** Interfaces with their kind, in one rtnetlink dump (this thread's namespace). */
  links(): LinkEntry[];
  /** Link and IPv4 route events of this thread's namespace, delivered in batches; does not keep the process alive. */
  watchNetlink(callback: (events: NetlinkEvent[]) => void): NetlinkWatcher;
  /**
   * A new BPF ring buffer of `size` bytes (a power of 2, at least a page),
   * read on a thread of its own; at most a few batches wait for the
   * callback (then the ring fills and the BPF side counts its losses). Does
   * not keep the process alive.
   */
  ringbufOpen(size: number, callback: (batch: RingbufBatch) => void): RingbufReader;
  /**
   * One 64-bit word at `offset` of an array map made with BPF_F_MMAPABLE,
   * changed atomically through a shared mapping: load; store, add (value
   * may be negative) and cas (stores value only if the word is expected)
   * return the word as it was before.
   */
  mapWordOp(map: FdRef, offset: number, op: 'load'): bigint;
  mapWordOp(map: FdRef, offset: number, op: 'store' | 'add', value: bigint): bigint;
  mapWordOp(map: FdRef, offset: number, op: 'cas', value: bigint, expected: bigint): bigint;
  /** Unicast IPv4 routes of the main table that name an output interface. */
  routes4(): Array<{ dst: string; prefixLen: number; oif: number }>;
  /** unicast IPv6 routes of the main table naming an output interface */
  routes6(): Array<{ dst: string; prefixLen: number; oif: number }>;
  possibleCpus(): number;
  monotonicNs(): bigint;
  /**
   * The kernel's TCP and UDP conntrack entries of one family (one ctnetlink dump, this thread's namespace;
   * read only): IPv4 by default, family 6 the IPv6 table (addresses as RFC 5952 text); with
   * translatedOnly, only those whose destination the kernel translated (DNAT).
   */
  kernelConntrack(opts?: { translatedOnly?: boolean; family?: 4 | 6 }): KernelCtEntry[];
  /** flock(2) without blocking: true when done, false when another open file holds it. */
  flockNb(fd: number, op: 'exclusive' | 'shared' | 'unlock'): boolean;

  // Bulk map work on a worker thread (addon/bulk.cc); each dups the fd first.
  /** A conntrack GC pass over bpfproxy_ct or bpfproxy_ct6: a connection goes when both halves expired (orphans when expired). */
  ctGc(fd: number, opts?: { batch?: number; nowNs?: bigint }): Promise<CtGcResult>;
  /** Delete conntrack entries of `proto` whose backend matches a rule (12-byte records for bpfproxy_ct, 24-byte for bpfproxy_ct6). */
  ctFlush(fd: number, proto: number, rules: Buffer): Promise<{ scanned: number; deleted: number; ms: number; cpuMs: number }>;
  /** Entries in each map (arrays: max_entries). */
  mapCount(fds: number[]): Promise<{ counts: number[]; ms: number }>;
}

/**
 * Test-only: used by the tests, the bench and the lab, never by the agent
 * (the one operator command among them: `bpfproxy trace` runs its one
 * synthetic packet with progTestRun). They act on the calling thread
 * (enterNetns) or run programs on crafted packets (BPF_PROG_TEST_RUN).
 */
export interface NativeTesting {
  /** Move this thread into the network namespace at path; returns the fd of the one left (give it to restoreNetns). */
  enterNetns(path: string): number;
  /** Return to the namespace enterNetns left, closing its fd. */
  restoreNetns(fd: number): void;
  /** Run a program once (or `repeat` times) on one packet. */
  progTestRun(fd: FdRef, data: Buffer, opts?: TestRunOptions): TestRunResult;
  /** Each frame once, in a native loop (per-packet figures for distinct packets). */
  progTestRunEach(fd: FdRef, frames: Buffer[], opts?: { ctx?: Buffer }): { totalNs: number; retvals: Int32Array };
}

/** One graph node's figures since the engine started (summed over workers). */
export interface EngineNodeStats {
  name: string;
  /** dispatches (the input node: every poll of the RX rings) */
  calls: number;
  /** dispatches that carried packets */
  vectors: number;
  packets: number;
  /** time spent in the node */
  ns: number;
}

export interface EngineTableInfo {
  generation: number;
  ports?: number;
  frontends: number;
  backends: number;
  neighbours: number;
  bytes: number;
  swaps?: number;
  /** tables swapped out and still held by a worker */
  retired?: number;
}

/** The engine's NetworkPolicy state (addon/engine/policy.c). */
export interface EnginePolicyInfo {
  /** the BPF path's policy generation it was taken from */
  generation: number;
  /** isolated endpoints (0: nothing enforced) */
  isolated: number;
  prefixes: number;
  endpoints: number;
  tables: number;
  entries: number;
  /** the engine's own count of policies swapped in (sessions record it with their decision) */
  epoch: number;
  bytes: number;
}

export interface EnginePortStats {
  ifindex: number;
  zerocopy: boolean;
  rx: number;
  tx: number;
  /** XDP_STATISTICS: dropped by the kernel (no room, invalid descriptors) */
  rxDropped: number;
  rxRingFull: number;
  fillRingEmpty: number;
  txInvalid: number;
  txKicks: number;
  /** frames received per queue (worker), the first 16 */
  rxQueues: number[];
}

export interface EngineStats {
  nodes: EngineNodeStats[];
  /** packets per drop reason (and 'rejected': answered) */
  reasons: Record<string, number>;
  sessions: { live: number; tombstones: number; limit: number; slots: number; bytes: number; hugePages: boolean };
  /** the IPv6 session table (a quarter of the IPv4 entries, at least 4096; two cache lines each) */
  sessions6: { live: number; limit: number; bytes: number };
  conntrack: { mirrored: boolean; exported: number; exportErrors: number; adopted: number };
  table: EngineTableInfo | null;
  /** the NetworkPolicy state in force (null: none loaded) */
  policy: EnginePolicyInfo | null;
  /** whether, with none loaded, the policy node drops everything it gets */
  policyRequired: boolean;
  ports: EnginePortStats[];
  queues: number;
  umemBytes: number;
  vector: number;
}

export interface EngineTraceRecord {
  seq: number;
  worker: number;
  rxPort: number;
  /** node names in the order the packet went through them */
  path: string[];
  reason: string;
  outPort: number | null;
  proto: number;
  /** "10.0.0.1:1234 > 10.96.0.10:80" */
  in: string;
  out?: string;
  len: number;
  session: 'forward' | 'reply' | 'none';
}

export interface EngineRunResult {
  /** the frame as the graph left it */
  frame: Buffer;
  /** the node the packet went to last: 'output' / 'drop' when the whole graph ran */
  next: string;
  reason: string;
  port: number | null;
}

export interface EngineIoOptions {
  /** in the order of the table's ports */
  ports: Array<{ ifindex: number; queues: number; xskBase: number; name: string }>;
  queues: number;
  frames: number;
  ring: number;
  xsksFd: number;
  zerocopy?: 'auto' | 'on' | 'off';
  busyPollUs?: number;
}

/** The AF_XDP vector engine (addon/engine/): methods throw Errors with errno/op like the rest. */
export interface EngineHandle {
  /** Check and swap in a table (src/dataplane/afxdp/table.ts encodes it). */
  setTable(blob: Buffer): EngineTableInfo;
  /** Check and swap in the NetworkPolicy state (src/dataplane/afxdp/policy.ts encodes it). */
  setPolicy(blob: Buffer): EnginePolicyInfo;
  /** With on and no policy loaded, the policy node drops everything (fails closed). */
  requirePolicy(on: boolean): void;
  startIo(o: EngineIoOptions): EngineStats;
  stopIo(): void;
  stats(): EngineStats;
  /** Record the next n packets' path (0: stop). */
  trace(n: number): void;
  traceTake(): EngineTraceRecord[];
  /** Expire sessions now (a full sweep); the entries removed. */
  gc(nowNs?: bigint): number;
  clearSessions(): void;
  /** Test entry: the graph on this thread, in vectors of the engine's size. */
  runVector(frames: Buffer[], opts?: { rxPort?: number | number[]; nowNs?: bigint; until?: string }): EngineRunResult[];
  /** Benchmark entry: a native loop without I/O. */
  bench(
    frames: Buffer[],
    opts: { vector: number; rounds: number; rxPort?: number; newFlows?: boolean },
  ): { packets: number; ns: number; nsPerPacket: number; wallNs: number; outputs: number; drops: number; roundNs: Float64Array };
  close(): void;
}

export interface NativeEngine {
  engineCreate(opts?: { vector?: number; sessions?: number; ctFd?: number | MapHandle; ct6Fd?: number | MapHandle }): EngineHandle;
  /** RTM_GETROUTE for one IPv4 destination (this thread's namespace). */
  engineRouteGet(ip: string): { oif: number; gateway: string | null; prefsrc: string | null };
  /** IPv4 and IPv6 neighbours (RTM_GETNEIGH dump): state is NUD_* bits. */
  engineNeighbours(): Array<{ ip: string; ifindex: number; state: number; mac: string | null }>;
  /** Ask the kernel to resolve an address on an interface (NTF_USE). */
  engineNeighResolve(ip: string, ifindex: number): void;
  /** An interface's MAC, RX queue count and MTU (RTM_GETLINK, this thread's namespace). */
  engineLinkInfo(ifindex: number): { mac: string; rxQueues: number; mtu: number };
  /** An XDP program on an interface through a BPF link: closing the link detaches it. */
  xdpLinkAttach(ifindex: number, prog: FdRef, mode: 'native' | 'generic'): LinkHandle;
}

export interface NativeAddon extends NativeRuntime, NativeTesting, NativeEngine {}
