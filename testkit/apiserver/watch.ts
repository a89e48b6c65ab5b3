/**
 * Watches: chunked streams of JSON lines, one event per change. A watch
 * from resourceVersion N replays the stored history after N, then follows
 * live changes; without one (or "0") it starts with the current objects as
 * ADDED. Selectors decide what each watcher sees: an object that starts
 * matching arrives as ADDED, one that stops matching as DELETED. Bookmarks
 * every second for watchers that allow them; 410 Gone (an ERROR event)
 * for a version older than compaction.
 */
import type { ServerResponse } from 'node:http';
import { badRequest, gone } from './errors.js';
import type { Output } from './http.js';
import { apiVersionOf, type ResourceType } from './registry.js';
import type { Change, Obj, Store } from './store.js';
import { table, type IncludeObject } from './table.js';

interface Watcher {
  type: ResourceType;
  match: (stored: Obj) => boolean;
  resp: ServerResponse;
  bookmarks: boolean;
  out: Output;
  include: IncludeObject;
  headersSent: boolean;
}

export class Watches {
  private readonly watchers = new Set<Watcher>();
  private bookmarkTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    /** an object as the watcher's resource serves it */
    private readonly served: (type: ResourceType, stored: Obj) => Obj,
  ) {
    store.onChange((key, c) => this.fanOut(key, c));
  }

  startBookmarks(): void {
    this.bookmarkTimer = setInterval(() => this.bookmark(), 1000);
    this.bookmarkTimer.unref();
  }

  stopBookmarks(): void {
    clearInterval(this.bookmarkTimer);
  }

  /** Cut every watch connection. */
  drop(): void {
    for (const w of this.watchers) w.resp.destroy();
    this.watchers.clear();
  }

  count(which: (type: ResourceType) => boolean): number {
    return [...this.watchers].filter((w) => which(w.type)).length;
  }

  /** End the watches of a resource that is no longer served (its CRD was deleted). */
  end(storageKey: string): void {
    for (const w of [...this.watchers]) {
      if (w.type.storageKey === storageKey) {
        w.resp.end();
        this.watchers.delete(w);
      }
    }
  }

  /** Serves a watch request: history or current state first, then changes as they happen. */
  open(
    type: ResourceType,
    match: (stored: Obj) => boolean,
    query: Record<string, string>,
    out: Output,
    include: IncludeObject,
    resp: ServerResponse,
  ): void {
    const from = query.resourceVersion;
    // unset or "0": start with the current state as ADDED events; N: replay what happened after N
    const initial = query.sendInitialEvents === 'true' || from === undefined || from === '' || from === '0';
    const since = initial ? this.store.resourceVersion : Number(from);
    if (!Number.isInteger(since)) throw badRequest(`resourceVersion: Invalid value: ${JSON.stringify(from)}: must be an integer`);
    resp.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    resp.flushHeaders();
    const w: Watcher = { type, match, resp, bookmarks: query.allowWatchBookmarks === 'true', out, include, headersSent: false };
    if (!initial && since < this.store.oldest(type.storageKey)) {
      resp.end(`${JSON.stringify({ type: 'ERROR', object: gone().status() })}\n`);
      return;
    }
    if (initial) {
      for (const [, o] of this.store.list(type.storageKey)) if (match(o)) this.send(w, 'ADDED', o);
      if (query.sendInitialEvents === 'true') {
        this.send(w, 'BOOKMARK', {
          metadata: { resourceVersion: String(this.store.resourceVersion), annotations: { 'k8s.io/initial-events-end': 'true' } },
        });
      }
    } else {
      for (const c of this.store.since(type.storageKey, since)) this.deliver(w, c);
    }
    this.watchers.add(w);
    resp.on('close', () => this.watchers.delete(w));
    const timeout = Number(query.timeoutSeconds);
    if (Number.isFinite(timeout) && timeout > 0) {
      const timer = setTimeout(() => {
        this.watchers.delete(w);
        resp.end();
      }, timeout * 1000);
      timer.unref();
      resp.on('close', () => clearTimeout(timer));
    }
  }

  private fanOut(storageKey: string, c: Change): void {
    for (const w of this.watchers) if (w.type.storageKey === storageKey) this.deliver(w, c);
  }

  /** One change to one watcher: selectors decide whether it sees it, and as what. */
  private deliver(w: Watcher, c: Change): void {
    const now = c.type !== 'DELETED' && w.match(c.object);
    const before = c.prev !== undefined && w.match(c.prev);
    let type: string | undefined;
    if (c.type === 'ADDED') type = now ? 'ADDED' : undefined;
    else if (c.type === 'DELETED') type = before || w.match(c.object) ? 'DELETED' : undefined;
    else type = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
    if (type) this.send(w, type, c.object);
  }

  private send(w: Watcher, type: string, stored: Obj): void {
    if (w.resp.destroyed || w.resp.writableEnded) return;
    let object: Obj;
    if (type === 'BOOKMARK') {
      object = {
        kind: w.out.kind === 'table' ? 'Table' : w.type.kind,
        apiVersion: w.out.kind === 'table' ? 'meta.k8s.io/v1' : apiVersionOf(w.type),
        ...stored,
      };
    } else if (w.out.kind === 'table') {
      const served = this.served(w.type, stored);
      object = table(
        w.type.printer,
        [{ served, printed: w.type.printStored ? stored : served }],
        { resourceVersion: (stored.metadata as Obj).resourceVersion },
        w.include,
        w.headersSent,
      );
      w.headersSent = true;
    } else object = this.served(w.type, stored);
    w.resp.write(`${JSON.stringify({ type, object })}\n`);
  }

  private bookmark(): void {
    const rv = String(this.store.resourceVersion);
    for (const w of this.watchers) if (w.bookmarks) this.send(w, 'BOOKMARK', { metadata: { resourceVersion: rv } });
  }
}
