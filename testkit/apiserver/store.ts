/**
 * Storage with one global resourceVersion, as etcd gives the real server:
 * every write takes the next version; each resource keeps the history of
 * its changes for watches to replay; compaction forgets history, after
 * which older versions are 410 Gone.
 */

export type Obj = Record<string, unknown>;

export interface Change {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
  /** the object before this change (MODIFIED, DELETED) */
  prev?: Obj;
}

/** Per resource history beyond this many changes is compacted away. */
const HISTORY_LIMIT = 50_000;

const metaOf = (o: Obj): Obj => (o.metadata ??= {}) as Obj;

export class Store {
  private rv = 100;
  private compacted = 0;
  private readonly data = new Map<string, Map<string, Obj>>();
  private readonly history = new Map<string, Change[]>();
  /** per-resource compaction (history trimmed past HISTORY_LIMIT) */
  private readonly trimmedAt = new Map<string, number>();
  private readonly listeners = new Set<(storageKey: string, c: Change) => void>();

  get resourceVersion(): number {
    return this.rv;
  }

  /** the oldest version a watch or continue token of this resource may resume from */
  oldest(storageKey: string): number {
    return Math.max(this.compacted, this.trimmedAt.get(storageKey) ?? 0);
  }

  onChange(fn: (storageKey: string, c: Change) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private bucket(storageKey: string): Map<string, Obj> {
    let b = this.data.get(storageKey);
    if (!b) this.data.set(storageKey, (b = new Map<string, Obj>()));
    return b;
  }

  get(storageKey: string, key: string): Obj | undefined {
    return this.data.get(storageKey)?.get(key);
  }

  /** objects in creation order */
  values(storageKey: string): Obj[] {
    return [...(this.data.get(storageKey)?.values() ?? [])];
  }

  /** objects sorted by namespace/name, as lists are */
  list(storageKey: string): Array<[string, Obj]> {
    return [...(this.data.get(storageKey)?.entries() ?? [])].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  keys(): string[] {
    return [...this.data.keys()];
  }

  /** Stores `obj` under the next resourceVersion (set in its metadata) and records the change. */
  put(storageKey: string, key: string, obj: Obj): Change {
    const b = this.bucket(storageKey);
    const prev = b.get(key);
    metaOf(obj).resourceVersion = String(++this.rv);
    b.set(key, obj);
    return this.record(storageKey, { rv: this.rv, type: prev ? 'MODIFIED' : 'ADDED', object: obj, ...(prev ? { prev } : {}) });
  }

  delete(storageKey: string, key: string, finalState?: (o: Obj) => void): Change | undefined {
    const b = this.data.get(storageKey);
    const prev = b?.get(key);
    if (!b || !prev) return undefined;
    b.delete(key);
    const gone = structuredClone(prev);
    finalState?.(gone);
    metaOf(gone).resourceVersion = String(++this.rv);
    return this.record(storageKey, { rv: this.rv, type: 'DELETED', object: gone, prev });
  }

  private record(storageKey: string, c: Change): Change {
    let h = this.history.get(storageKey);
    if (!h) this.history.set(storageKey, (h = []));
    h.push(c);
    if (h.length > HISTORY_LIMIT) {
      const dropped = h.splice(0, h.length - HISTORY_LIMIT);
      this.trimmedAt.set(storageKey, dropped.at(-1)!.rv);
    }
    for (const l of this.listeners) l(storageKey, c);
    return c;
  }

  /** changes after `rv`, oldest first */
  since(storageKey: string, rv: number): Change[] {
    return (this.history.get(storageKey) ?? []).filter((c) => c.rv > rv);
  }

  /** Forget history: versions before now are too old from here on. */
  compact(): void {
    this.compacted = this.rv;
    for (const h of this.history.values()) h.length = 0;
  }
}
