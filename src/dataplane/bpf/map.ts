/**
 * A typed view of one BPF map: codecs on both sides of the native calls.
 * It owns the map's handle (close() closes the fd); the addon checks every
 * buffer the codecs produce against the map's own key and value sizes.
 */
import { BpfError, native, type MapHandle } from '../../native/index.js';
import type { Codec } from './struct.js';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

const BATCH = 4096;

export class BpfMap<K, V> {
  /** Bytes one value takes in the kernel's view (per-CPU maps: all CPUs). */
  readonly valueLen: number;
  readonly maxEntries: number;
  /** Number of possible CPUs for per-CPU maps, 0 otherwise. */
  readonly cpus: number;

  constructor(
    readonly name: string,
    readonly handle: MapHandle,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
    maxEntries = handle.maxEntries,
    cpus?: number,
  ) {
    this.maxEntries = maxEntries;
    this.cpus = cpus ?? (isPerCpu(handle.type) ? native().possibleCpus() : 0);
    this.valueLen = this.cpus ? Math.ceil(value.size / 8) * 8 * this.cpus : value.size;
  }

  /** The map's fd (-1 once closed): for calls that take a plain fd. */
  get fd(): number {
    return this.handle.fd;
  }

  /** Close the map's fd (again: nothing). */
  close(): void {
    this.handle.close();
  }

  /** Run a native call, naming this map in any error that does not already. */
  private call<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof BpfError && !e.op.includes(this.name)) {
        throw new BpfError(`${e.op} (${this.name})`, e.errno, e.log, e.done, e.detail);
      }
      throw e;
    }
  }

  get(k: K): V | undefined {
    const b = this.call(() => native().mapLookup(this.handle, this.key.encode(k), this.valueLen));
    return b ? this.value.decode(b) : undefined;
  }

  /** Per-CPU maps: one value per possible CPU. */
  getPerCpu(k: K): V[] {
    const b = this.call(() => native().mapLookup(this.handle, this.key.encode(k), this.valueLen));
    return b ? this.splitPerCpu(b, 0) : [];
  }

  set(k: K, v: V, flags = BPF_ANY): void {
    this.call(() => native().mapUpdate(this.handle, this.key.encode(k), this.value.encode(v), flags));
  }

  /** True when the key was there. */
  delete(k: K): boolean {
    return this.call(() => native().mapDelete(this.handle, this.key.encode(k)));
  }

  /** Write many entries with BPF_MAP_UPDATE_BATCH (in chunks). */
  setMany(entries: ReadonlyArray<readonly [K, V]>): void {
    for (let i = 0; i < entries.length; i += BATCH) {
      const chunk = entries.slice(i, i + BATCH);
      const keys = Buffer.alloc(chunk.length * this.key.size);
      const vals = Buffer.alloc(chunk.length * this.value.size);
      chunk.forEach(([k, v], j) => {
        this.key.encodeInto(keys, j * this.key.size, k);
        this.value.encodeInto(vals, j * this.value.size, v);
      });
      try {
        this.call(() => native().mapUpdateBatch(this.handle, keys, vals, chunk.length));
      } catch (e) {
        // `done` counts from the first entry given, not from this chunk
        if (e instanceof BpfError && i > 0) throw new BpfError(e.op, e.errno, e.log, i + e.done, e.detail);
        throw e;
      }
    }
  }

  /** Delete many keys; keys already gone are skipped. Returns how many went. */
  deleteMany(keys: readonly K[]): number {
    let deleted = 0;
    let rest = keys;
    while (rest.length > 0) {
      const chunk = rest.slice(0, BATCH);
      const buf = Buffer.alloc(chunk.length * this.key.size);
      chunk.forEach((k, j) => this.key.encodeInto(buf, j * this.key.size, k));
      try {
        deleted += this.call(() => native().mapDeleteBatch(this.handle, buf, chunk.length));
        rest = rest.slice(chunk.length);
      } catch (e) {
        if (!(e instanceof BpfError) || e.errno !== 2) throw e;
        // ENOENT stops the batch at the missing key: count what went, skip it.
        deleted += e.done;
        rest = rest.slice(e.done + 1);
      }
    }
    return deleted;
  }

  entries(): Array<[K, V]> {
    const d = this.call(() => native().mapDump(this.handle, this.key.size, this.valueLen, BATCH));
    const out: Array<[K, V]> = [];
    for (let i = 0; i < d.count; i++) {
      out.push([this.key.decode(d.keys, i * this.key.size), this.value.decode(d.values, i * this.valueLen)]);
    }
    return out;
  }

  /** Keys only, one by one (for maps whose values are too big to dump whole). */
  keys(): K[] {
    const out: K[] = [];
    let k: Buffer | null = null;
    while ((k = this.call(() => native().mapNextKey(this.handle, k, this.key.size))) !== null) out.push(this.key.decode(k));
    return out;
  }

  entriesPerCpu(): Array<[K, V[]]> {
    const d = this.call(() => native().mapDump(this.handle, this.key.size, this.valueLen, BATCH));
    const out: Array<[K, V[]]> = [];
    for (let i = 0; i < d.count; i++) {
      out.push([this.key.decode(d.keys, i * this.key.size), this.splitPerCpu(d.values, i * this.valueLen)]);
    }
    return out;
  }

  count(): number {
    return this.call(() => native().mapDump(this.handle, this.key.size, this.valueLen, BATCH)).count;
  }

  private splitPerCpu(b: Buffer, base: number): V[] {
    const stride = Math.ceil(this.value.size / 8) * 8;
    const out: V[] = [];
    for (let c = 0; c < this.cpus; c++) out.push(this.value.decode(b, base + c * stride));
    return out;
  }
}

/** BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH, _PERCPU_CGROUP_STORAGE */
const PER_CPU_TYPES = new Set([5, 6, 10, 21]);
function isPerCpu(type: number): boolean {
  return PER_CPU_TYPES.has(type);
}
