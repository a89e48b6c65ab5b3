/**
 * Small integer ids for endpoints and rules: the lowest free one, freed ids
 * reusable only from the next compilation on, and ids seeded from a
 * previous compilation kept for their owners.
 */

export class MinHeap {
  private readonly a: number[] = [];
  push(v: number): void {
    const a = this.a;
    let i = a.push(v) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }

  pop(): number | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const c = l + 1 < a.length && a[l + 1]! < a[l]! ? l + 1 : l;
      if (a[c]! >= last) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

/** Lowest free small integer ≥ first (endpoint and rule ids), preferring seeded ids for their owners. */
export class IdPool {
  private readonly used = new Set<number>();
  private readonly seeded = new Map<string, number>();
  private readonly reserved = new Set<number>();
  constructor(private readonly first: number) {
    this.next = first;
  }

  /** An id of a previous compilation, for its owner (several owners may name one id: the first to come takes it). */
  seed(owner: string, id: number): void {
    this.seeded.set(owner, id);
    this.reserved.add(id);
    this.next = Math.max(this.next, id + 1);
  }

  /** Seeds not taken by the first compilation go back to the pool, with every id below the highest seed. */
  dropSeeds(): void {
    if (this.seeded.size === 0 && this.reserved.size === 0) return;
    this.seeded.clear();
    this.reserved.clear();
    while (this.free.pop() !== undefined);
    for (let id = this.first; id < this.next; id++) if (!this.used.has(id)) this.free.push(id);
  }

  /** The seeded id of the first owner that has one, else the lowest free id. */
  take(owners: readonly string[]): number {
    for (const owner of owners) {
      const s = this.seeded.get(owner);
      if (s === undefined || this.used.has(s)) continue;
      this.seeded.delete(owner);
      this.reserved.delete(s);
      this.used.add(s);
      return s;
    }
    let id: number | undefined;
    while ((id = this.free.pop()) !== undefined && (this.used.has(id) || this.reserved.has(id)));
    if (id === undefined) {
      while (this.used.has(this.next) || this.reserved.has(this.next)) this.next++;
      id = this.next++;
    }
    this.used.add(id);
    return id;
  }

  private next: number;
  /** Free ids below `next`, lowest first out. */
  private readonly free = new MinHeap();
  /** Freed ids are reused from the next compilation on, never within the one that freed them. */
  private readonly freed: number[] = [];
  release(id: number): void {
    this.freed.push(id);
  }

  flush(): void {
    for (const id of this.freed) {
      this.used.delete(id);
      this.free.push(id);
    }
    this.freed.length = 0;
  }

  get size(): number {
    return this.used.size;
  }
}
