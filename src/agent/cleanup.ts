/**
 * `bpfproxy cleanup`: remove what bpfproxy put on this node, and only that
 * (our cls_bpf filters, the tcx links pinned under the pin dir, the clsact
 * qdiscs we created, the pins), never from under a running agent (which would put its filters back within
 * a poll, on maps no longer pinned, and leave the next agent empty maps).
 *
 * It takes the pin dir's lock itself, so no agent can start halfway
 * through; a running agent holds it, and then cleanup refuses, naming the
 * agent, or with --force stops it (SIGTERM, bounded wait) first.
 */
import { rmSync } from 'node:fs';
import type { Logger } from '../log.js';
import { teardown } from '../dataplane/bpf/attach.js';
import { QdiscLedger } from '../dataplane/bpf/qdiscs.js';
import { LockBusyError, PinDirLock, describeHolder, holderIsVisible, statePaths } from './lock.js';

export interface CleanupOptions {
  pinDir: string;
  stateDir: string;
  force: boolean;
  forceTimeoutMs: number;
}

export type CleanupResult = { ok: true; message: string } | { ok: false; message: string };

function refuse(busy: LockBusyError, pinDir: string): CleanupResult {
  const h = busy.holder;
  const kill = h && holderIsVisible(h) ? `kill ${h.pid}` : h ? `kill ${h.pid} where that pid is visible` : 'stop it';
  return {
    ok: false,
    message:
      `${busy.message}. Nothing was changed. Stop the agent first (in Kubernetes: kubectl patch felixconfiguration node.<this node> ` +
      `--type merge -p '{"spec":{"bpfEnabled":false}}' makes the agent hand the node back itself, no cleanup needed; or keep the bpfproxy ` +
      `DaemonSet off this node with a nodeSelector; otherwise: ${kill}), or pass --force to stop it and clean up ${pinDir}`,
  };
}

async function stopHolder(busy: LockBusyError, o: CleanupOptions, log: Logger): Promise<PinDirLock | CleanupResult> {
  const h = busy.holder;
  if (!h) {
    return {
      ok: false,
      message: `${busy.message}, and its lock file does not say which process it is; nothing was changed: find it (fuser ${busy.path}) and stop it`,
    };
  }
  if (!holderIsVisible(h)) {
    return {
      ok: false,
      message:
        `${busy.message}: that process is not visible from here (another PID namespace, e.g. its pod) so --force cannot signal it; ` +
        'nothing was changed. Stop it where it runs (kubectl, or kill there) and run cleanup again',
    };
  }
  log.warn({ pid: h.pid, pinDir: o.pinDir }, `--force: stopping ${describeHolder(h)} with SIGTERM`);
  try {
    process.kill(h.pid, 'SIGTERM');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH')
      return { ok: false, message: `cannot signal agent pid ${h.pid}: ${(e as Error).message}; nothing was changed` };
  }
  try {
    return await PinDirLock.acquire(o.stateDir, o.pinDir, 'cleanup', o.forceTimeoutMs);
  } catch (e) {
    if (!(e instanceof LockBusyError)) throw e;
    return {
      ok: false,
      message: `agent pid ${h.pid} still holds pin dir ${o.pinDir} ${Math.round(o.forceTimeoutMs / 1000)}s after SIGTERM; nothing was changed: kill -9 ${h.pid} and run cleanup again`,
    };
  }
}

export async function runCleanup(o: CleanupOptions, log: Logger): Promise<CleanupResult> {
  const paths = statePaths(o.stateDir, o.pinDir);
  let lock: PinDirLock;
  const first = PinDirLock.tryAcquire(o.stateDir, o.pinDir, 'cleanup');
  if (first instanceof PinDirLock) {
    lock = first;
  } else if (!o.force) {
    return refuse(first, o.pinDir);
  } else {
    const r = await stopHolder(first, o, log);
    if (!(r instanceof PinDirLock)) return r;
    lock = r;
  }
  try {
    const r = teardown(o.pinDir, new QdiscLedger(paths.qdiscs, log), log);
    // how topology chose endpoints, for `bpfproxy services`: nothing left to describe
    rmSync(paths.topology, { force: true });
    const parts = [
      `detached from ${r.detached.length} interface(s)${r.detached.length ? ` (${r.detached.join(', ')})` : ''}`,
      ...(r.xdp.length ? [`detached XDP acceleration from ${r.xdp.length} interface(s) (${r.xdp.join(', ')})`] : []),
      ...(r.sockHooks.length ? [`detached the socket load-balancing hooks from their cgroup (${r.sockHooks.join(', ')})`] : []),
      `deleted the clsact qdisc bpfproxy had created on ${r.qdiscs.removed.length} interface(s)${r.qdiscs.removed.length ? ` (${r.qdiscs.removed.join(', ')})` : ''}`,
      ...(r.qdiscs.kept.length
        ? [`left ${r.qdiscs.kept.length} clsact qdisc(s) that hold other filters (${r.qdiscs.kept.map((k) => k.iface).join(', ')})`]
        : []),
      ...(r.qdiscs.elsewhere
        ? [`${r.qdiscs.elsewhere} qdisc record(s) are for interfaces in another network namespace: run cleanup there too`]
        : []),
      `removed ${r.unpinned} pinned map(s) from ${o.pinDir}`,
    ];
    return { ok: true, message: parts.join('; ') };
  } finally {
    lock.release();
  }
}
