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

  interfaces(): Array<{ index: number; name: string }>;
  /** Unicast IPv4 routes of the main table that name an output interface. */
  routes4(): Array<{ dst: string; prefixLen: number; oif: number }>;
  possibleCpus(): number;
  monotonicNs(): bigint;
  enterNetns(path: string): number;
  restoreNetns(fd: number): void;
  /** flock(2) without blocking: true when done, false when another open file holds it. */
  flockNb(fd: number, op: 'exclusive' | 'shared' | 'unlock'): boolean;

  // Bulk map work on a worker thread (addon/bulk.cc); each dups the fd first.
  /** A conntrack GC pass: a connection goes when both halves expired (orphans when expired). */
  ctGc(fd: number, opts?: { batch?: number; nowNs?: bigint }): Promise<CtGcResult>;
  /** Delete conntrack entries of `proto` whose backend matches a rule (12-byte records). */
  ctFlush(fd: number, proto: number, rules: Buffer): Promise<{ scanned: number; deleted: number; ms: number; cpuMs: number }>;
  /** Entries in each map (arrays: max_entries). */
  mapCount(fds: number[]): Promise<{ counts: number[]; ms: number }>;
}
