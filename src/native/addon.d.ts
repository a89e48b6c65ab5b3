/**
 * The native addon's surface (addon/*.cc), exactly as it is exported.
 * Every function throws an Error with `errno` and `op` on failure;
 * src/native/index.ts turns those into BpfError.
 */

export interface NativeProgram {
  name: string;
  section: string;
  fd: number;
}

export interface NativeMap {
  name: string;
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
  close(): void;
}

export interface LoadOptions {
  /** Maps marked LIBBPF_PIN_BY_NAME are pinned (or reused) below this dir. */
  pinRoot?: string;
  /** Values for `const volatile` globals, by name, raw bytes. */
  rodata?: Record<string, Buffer>;
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

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
  loadTime: number;
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
  /** unicast IPv4 routes of the main table naming an output interface (as routes4) */
  | { event: 'newroute' | 'delroute'; dst: string; prefixLen: number; oif: number }
  /** the kernel dropped events (socket buffer full): everything must be looked at again */
  | { event: 'overflow' }
  /** the socket failed: no more events come from this watcher */
  | { event: 'error'; errno: number });

export interface NetlinkWatcher {
  /** Stop the reader thread and close the socket (twice is fine). */
  close(): void;
}

/** A BPF link (BPF_OBJ_GET_INFO_BY_FD); the tcx fields only for tcx links. */
export interface BpfLinkInfo {
  type: 'tcx' | 'other';
  id: number;
  progId: number;
  /** tcx: the interface; 0 once it is gone (or the link was detached) */
  ifindex: number;
  direction?: TcDirection | '?';
}

export interface NativeAddon {
  loadObject(path: string, opts?: LoadOptions): Promise<NativeBpfObject>;

  mapLookup(fd: number, key: Buffer, valueLen: number): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapNextKey(fd: number, key: Buffer | null, keyLen: number): Buffer | null;
  mapDump(fd: number, keyLen: number, valueLen: number, batch: number): MapDump;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): number;
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;

  objGet(path: string): number;
  objPin(fd: number, path: string): void;
  mapInfo(fd: number): MapInfo;
  progInfo(fd: number): ProgInfo;
  progFdById(id: number): number;
  closeFd(fd: number): void;
  progTestRun(fd: number, data: Buffer, opts?: TestRunOptions): TestRunResult;
  /** Each frame once, in a native loop (per-packet figures for distinct packets). */
  progTestRunEach(fd: number, frames: Buffer[], opts?: { ctx?: Buffer }): { totalNs: number; retvals: Int32Array };

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
  /** A tcx link running progFd first on the hook; returns the link's fd. */
  tcxAttach(ifindex: number, dir: TcDirection, progFd: number): number;
  /** The tcx programs of a hook in run order (linkId 0: attached without a link). */
  tcxList(ifindex: number, dir: TcDirection): Array<{ progId: number; linkId: number }>;
  linkInfo(linkFd: number): BpfLinkInfo;
  linkFdById(linkId: number): number;
  /** BPF_LINK_UPDATE: the link runs progFd from now on (atomically); with expectedProgFd only if it ran that one. */
  linkUpdate(linkFd: number, progFd: number, expectedProgFd?: number): void;
  /** BPF_LINK_DETACH: false when it was detached already. */
  linkDetach(linkFd: number): boolean;

  interfaces(): Array<{ index: number; name: string }>;
  /** Interfaces with their kind, in one rtnetlink dump (this thread's namespace). */
  links(): LinkEntry[];
  /** Link and IPv4 route events of this thread's namespace, delivered in batches; does not keep the process alive. */
  watchNetlink(callback: (events: NetlinkEvent[]) => void): NetlinkWatcher;
  /** Unicast IPv4 routes of the main table that name an output interface. */
  routes4(): Array<{ dst: string; prefixLen: number; oif: number }>;
  possibleCpus(): number;
  monotonicNs(): bigint;
  enterNetns(path: string): number;
  restoreNetns(fd: number): void;
  /** flock(2) without blocking: true when done, false when another open file holds it. */
  flockNb(fd: number, op: 'exclusive' | 'shared' | 'unlock'): boolean;
}
