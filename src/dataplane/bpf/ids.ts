/** Small integer ids (service ids, backend set ids), reusable once freed. */
export class IdAllocator {
  private readonly used = new Set<number>();
  private readonly free: number[] = [];
  private next = 1;

  constructor(private readonly max = 0xffffffff) {}

  /** Mark an id found in a pinned map as taken. */
  restore(id: number): void {
    this.used.add(id);
    if (id >= this.next) this.next = id + 1;
  }

  /** After restoring: ids below `next` that nobody holds become free. */
  settle(): void {
    this.free.length = 0;
    for (let i = this.next - 1; i >= 1; i--) if (!this.used.has(i)) this.free.push(i);
  }

  allocate(): number {
    const id = this.free.pop() ?? this.next++;
    if (id > this.max) throw new Error('id space exhausted');
    this.used.add(id);
    return id;
  }

  release(id: number): void {
    if (this.used.delete(id)) this.free.push(id);
  }

  get size(): number {
    return this.used.size;
  }
}
