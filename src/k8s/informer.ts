/**
 * Our informer: list (paged), then watch from the list's resourceVersion
 * with bookmarks; a watch that ends or fails is resumed from the last
 * resourceVersion seen, with backoff; 410 Gone (as an HTTP status or an
 * ERROR event) means relist. A relist replaces the store by difference:
 * unchanged objects raise no event, so nothing programmed flaps.
 */
import type { Clock, Timer } from '../clock.js';
import type { Logger } from '../log.js';

export interface KubeObject {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  [k: string]: unknown;
}

export interface ListPage {
  items: KubeObject[];
  resourceVersion: string;
  continue?: string;
}

export interface WatchEvent {
  /** ADDED, MODIFIED, DELETED, BOOKMARK or ERROR (kept open: a server may send others) */
  type: string;
  object: KubeObject & { code?: number; message?: string };
}

export interface WatchHandle {
  stop(): void;
}

/** How one resource is listed and watched; see src/k8s/client.ts. */
export interface ResourceClient {
  readonly name: string;
  list(opts: { limit: number; continue?: string }): Promise<ListPage>;
  watch(resourceVersion: string, onEvent: (e: WatchEvent) => void, onDone: (err: unknown) => void): Promise<WatchHandle>;
}

export interface InformerHandler {
  upsert(key: string, obj: KubeObject): void;
  remove(key: string): void;
}

export class GoneError extends Error {
  constructor(what: string) {
    super(`${what}: resourceVersion too old (410 Gone)`);
  }
}

export const keyOf = (o: KubeObject): string =>
  o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : `${o.metadata?.name ?? ''}`;

const statusOf = (err: unknown): number | undefined => {
  const e = err as { statusCode?: number; code?: number; body?: { code?: number } } | undefined;
  return e?.statusCode ?? e?.body?.code ?? (typeof e?.code === 'number' ? e.code : undefined);
};

export interface InformerStats {
  lists: number;
  watches: number;
  relistsAfterGone: number;
  errors: number;
  events: number;
}

export class Informer {
  /** key -> resourceVersion: all a relist needs; the objects live in the sink. */
  private readonly store = new Map<string, string>();
  private rv = '';
  private handle: WatchHandle | undefined;
  private timer: Timer | undefined;
  private backoffMs: number;
  private stopped = false;
  private synced = false;
  private syncWaiters: Array<() => void> = [];
  private generation = 0;
  readonly stats: InformerStats = { lists: 0, watches: 0, relistsAfterGone: 0, errors: 0, events: 0 };

  constructor(
    private readonly client: ResourceClient,
    private readonly handler: InformerHandler,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly opts: { pageSize?: number; minBackoffMs?: number; maxBackoffMs?: number } = {},
  ) {
    this.backoffMs = opts.minBackoffMs ?? 200;
  }

  start(): void {
    void this.relist();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.handle?.stop();
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the first list has been delivered. */
  waitSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  keys(): string[] {
    return [...this.store.keys()];
  }

  private retryLater(what: () => void, why: string, err?: unknown): void {
    if (this.stopped) return;
    this.stats.errors++;
    const wait = this.backoffMs * (0.8 + Math.random() * 0.4);
    this.log.warn(
      { resource: this.client.name, retryInMs: Math.round(wait) },
      `${this.client.name}: ${why}${err ? `: ${(err as Error).message ?? err}` : ''}; retrying in ${Math.round(wait)} ms`,
    );
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.maxBackoffMs ?? 30_000);
    this.timer?.cancel();
    this.timer = this.clock.after(wait, what);
  }

  /**
   * List everything, page by page, delivering each page as it comes: only
   * one page of objects as the API sent them is held at a time. Keys the
   * list did not name are removed once it is complete; a list that fails
   * part way removes nothing and starts over.
   */
  private async relist(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.handle?.stop();
    this.handle = undefined;
    const seen = new Set<string>();
    let rv: string;
    try {
      let cont: string | undefined;
      do {
        const page = await this.client.list({ limit: this.opts.pageSize ?? 500, ...(cont ? { continue: cont } : {}) });
        if (this.stopped || gen !== this.generation) return;
        this.upsertAll(page.items, seen);
        rv = page.resourceVersion;
        cont = page.continue || undefined;
      } while (cont);
    } catch (e) {
      // A continue token can expire too (410): start the list over.
      this.retryLater(() => void this.relist(), statusOf(e) === 410 ? 'list continue token expired' : 'list failed', e);
      return;
    }
    this.stats.lists++;
    this.removeUnseen(seen);
    this.rv = rv;
    this.backoffMs = this.opts.minBackoffMs ?? 200;
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
    void this.watch(gen);
  }

  /** Deliver listed objects, raising events only for what differs from the store. */
  private upsertAll(items: KubeObject[], seen: Set<string>): void {
    for (const o of items) {
      const k = keyOf(o);
      seen.add(k);
      const rv = o.metadata?.resourceVersion ?? '';
      const cur = this.store.get(k);
      if (cur !== undefined && cur === rv && rv !== '') continue;
      this.store.set(k, rv);
      this.handler.upsert(k, o);
    }
  }

  /** After a complete list: what it did not name is gone. */
  private removeUnseen(seen: Set<string>): void {
    for (const k of [...this.store.keys()]) {
      if (seen.has(k)) continue;
      this.store.delete(k);
      this.handler.remove(k);
    }
  }

  private async watch(gen: number): Promise<void> {
    if (this.stopped || gen !== this.generation) return;
    this.stats.watches++;
    let gone = false;
    const onEvent = (e: WatchEvent) => {
      if (gen !== this.generation) return;
      this.stats.events++;
      if (e.type === 'ERROR') {
        if (e.object?.code === 410) gone = true;
        else
          this.log.warn(
            { resource: this.client.name },
            `${this.client.name}: watch error event: ${e.object?.message ?? JSON.stringify(e.object)}`,
          );
        return;
      }
      const rv = e.object?.metadata?.resourceVersion;
      if (rv) this.rv = rv;
      this.backoffMs = this.opts.minBackoffMs ?? 200;
      if (e.type === 'BOOKMARK') return;
      const k = keyOf(e.object);
      if (e.type === 'DELETED') {
        if (this.store.delete(k)) this.handler.remove(k);
      } else if (e.type === 'ADDED' || e.type === 'MODIFIED') {
        this.store.set(k, rv ?? '');
        this.handler.upsert(k, e.object);
      }
    };
    const onDone = (err: unknown) => {
      if (this.stopped || gen !== this.generation) return;
      if (gone || statusOf(err) === 410) {
        this.stats.relistsAfterGone++;
        this.log.info({ resource: this.client.name }, `${this.client.name}: resourceVersion ${this.rv} expired (410 Gone); relisting`);
        void this.relist();
        return;
      }
      if (err) this.retryLater(() => void this.watch(gen), 'watch failed', err);
      else {
        // A normal end (server timeout): resume at once from where we are.
        this.timer = this.clock.after(0, () => void this.watch(gen));
      }
    };
    try {
      this.handle = await this.client.watch(this.rv, onEvent, onDone);
    } catch (e) {
      onDone(e);
    }
  }
}
