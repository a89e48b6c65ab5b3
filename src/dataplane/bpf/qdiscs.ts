/**
 * The clsact qdiscs bpfproxy created, so cleanup removes those and no other.
 *
 * Attaching our filter needs a clsact qdisc; when the interface has none we
 * create it and write that down here (a JSON file in the state dir, next to
 * the agent's lock, one per pin dir; it survives agent restarts like the
 * pins do). On cleanup a recorded qdisc is deleted only when nothing else
 * sits in it, ingress or egress: deleting a qdisc deletes its filters, so a
 * clsact that someone else's filter has moved into since is left, and said
 * so. A clsact we did not create is never deleted, even when empty: it may
 * be someone's (an operator's, a CNI's) who means to use it.
 *
 * Why a record and not "delete it when empty": an empty clsact is no proof
 * it is ours. Why not a pinned BPF map: the record would need a map of its
 * own in the BPF objects; a small file beside the lock says the same, and
 * /run is cleared at boot exactly when the qdiscs are gone anyway.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { native, type TcFilter } from '../../native/index.js';
import type { Logger } from '../../log.js';

export interface QdiscRecord {
  /** inode of the network namespace the interface is in */
  netns: number;
  ifindex: number;
  iface: string;
  createdAt: string;
}

/** This thread's network namespace (the one our netlink calls go to). */
export function currentNetns(): number {
  return statSync('/proc/thread-self/ns/net').ino;
}

/** Filters on both clsact hooks, one entry per filter (a classifier with none shown once). */
export function filtersOn(ifindex: number): Array<TcFilter & { dir: 'ingress' | 'egress' }> {
  const out: Array<TcFilter & { dir: 'ingress' | 'egress' }> = [];
  for (const dir of ['ingress', 'egress'] as const) {
    const all = native().tcFilters(ifindex, dir);
    const withFilters = new Set(all.filter((f) => f.handle !== 0).map((f) => `${f.chain}/${f.priority}/${f.protocol}`));
    for (const f of all) {
      if (f.handle === 0 && withFilters.has(`${f.chain}/${f.priority}/${f.protocol}`)) continue;
      out.push({ ...f, dir });
    }
  }
  return out;
}

export function describeFilter(f: TcFilter & { dir: string }): string {
  return `${f.dir} ${f.kind} pref ${f.priority} handle 0x${f.handle.toString(16)}${f.chain ? ` chain ${f.chain}` : ''}`;
}

export interface QdiscCleanup {
  /** interfaces whose clsact (ours, empty) was deleted */
  removed: string[];
  /** interfaces whose clsact we created but left: someone else's filters are in it */
  kept: Array<{ iface: string; reason: string }>;
  /** records of interfaces in other network namespaces, left for a cleanup there */
  elsewhere: number;
}

export class QdiscLedger {
  constructor(
    readonly path: string,
    private readonly log?: Logger,
  ) {}

  read(): QdiscRecord[] {
    if (!existsSync(this.path)) return [];
    try {
      const x = JSON.parse(readFileSync(this.path, 'utf8')) as { qdiscs?: QdiscRecord[] };
      return Array.isArray(x.qdiscs) ? x.qdiscs.filter((r) => typeof r.ifindex === 'number' && typeof r.iface === 'string') : [];
    } catch (e) {
      this.log?.warn(
        { file: this.path },
        `${this.path} is not readable JSON (${(e as Error).message}); treating it as empty, so qdiscs it listed stay on cleanup`,
      );
      return [];
    }
  }

  private write(records: QdiscRecord[]): void {
    if (!records.length) {
      rmSync(this.path, { force: true });
      return;
    }
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ qdiscs: records }, null, 1)}\n`);
    renameSync(tmp, this.path);
  }

  /**
   * Write down that we created the clsact on this interface. Records of
   * interfaces of this namespace that are gone (their qdisc went with them)
   * are dropped on the way, so pod churn does not grow the file.
   */
  add(ifindex: number, iface: string): void {
    const netns = currentNetns();
    const here = new Map(
      native()
        .interfaces()
        .map((i) => [i.index, i.name]),
    );
    const keep = this.read().filter((r) => r.netns !== netns || (r.ifindex !== ifindex && here.get(r.ifindex) === r.iface));
    keep.push({ netns, ifindex, iface, createdAt: new Date().toISOString() });
    this.write(keep);
  }

  /**
   * Delete the clsact qdiscs we created in this namespace that hold no
   * filter any more (run after our own filters are detached).
   */
  removeEmpty(): QdiscCleanup {
    const netns = currentNetns();
    const here = new Map(
      native()
        .interfaces()
        .map((i) => [i.index, i.name]),
    );
    const res: QdiscCleanup = { removed: [], kept: [], elsewhere: 0 };
    const left: QdiscRecord[] = [];
    for (const r of this.read()) {
      if (r.netns !== netns) {
        res.elsewhere++;
        left.push(r);
        continue;
      }
      if (here.get(r.ifindex) !== r.iface) continue; // interface gone, qdisc with it
      let filters;
      try {
        filters = filtersOn(r.ifindex);
      } catch (e) {
        res.kept.push({ iface: r.iface, reason: `cannot list its filters (${(e as Error).message})` });
        left.push(r);
        continue;
      }
      // Kept ones stay recorded: a later cleanup deletes them once they are empty.
      if (filters.length) {
        res.kept.push({
          iface: r.iface,
          reason: `it holds ${filters.length} filter(s) that are not ours: ${filters.map(describeFilter).join('; ')}`,
        });
        left.push(r);
        continue;
      }
      try {
        if (native().tcHookDestroy(r.ifindex)) res.removed.push(r.iface);
      } catch (e) {
        res.kept.push({ iface: r.iface, reason: `cannot delete it (${(e as Error).message})` });
        left.push(r);
      }
    }
    for (const k of res.kept)
      this.log?.warn({ iface: k.iface }, `${k.iface}: left the clsact qdisc bpfproxy created in place: ${k.reason}`);
    this.write(left);
    return res;
  }
}
