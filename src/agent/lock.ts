/**
 * One agent per pin dir, and no cleanup under a running agent.
 *
 * The agent holds an flock on a lock file named after its pin dir, in a
 * state dir on a regular filesystem (bpffs holds only BPF objects):
 * /run/bpfproxy/<hash of the pin dir>.lock. The kernel drops an flock when
 * its holder dies, however it dies, so a crashed or SIGKILLed agent never
 * leaves a stale lock. The file also says who holds it (pid, PID namespace,
 * process start time) so `bpfproxy cleanup` can name the agent and, with
 * --force, signal exactly that process and no other that reused its pid.
 *
 * In Kubernetes the state dir is a hostPath (manifests/daemonset.yaml), so
 * a cleanup run on the host sees the lock of the agent in its pod.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
  constants,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { native } from '../native/index.js';
import type { Logger } from '../log.js';

export const DEFAULT_STATE_DIR = '/run/bpfproxy';

/** The files kept for one pin dir in the state dir. */
export function statePaths(stateDir: string, pinDir: string): { lock: string; qdiscs: string; engine: string; topology: string } {
  const id = createHash('sha256').update(resolve(pinDir)).digest('hex').slice(0, 16);
  return {
    lock: join(stateDir, `${id}.lock`),
    qdiscs: join(stateDir, `${id}.qdiscs.json`),
    engine: join(stateDir, `${id}.engine.sock`),
    topology: join(stateDir, `${id}.topology.json`),
  };
}

/** Who holds a lock, as written by the holder. */
export interface LockHolder {
  pid: number;
  /** inode of the holder's PID namespace: its pid means something only there */
  pidNs: number;
  /** field 22 of /proc/<pid>/stat: tells the holder from a later process with its pid */
  startTime: string;
  pinDir: string;
  host: string;
  since: string;
  what: string;
}

/** mkdir -p that gives up on the first error it cannot fix (Node's recursive mkdir can spin on /proc). */
function mkdirp(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o755 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw e;
    mkdirp(dirname(dir));
    try {
      mkdirSync(dir, { mode: 0o755 });
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw e2;
    }
  }
}

function pidNsOf(pid: number | 'self'): number | undefined {
  try {
    return statSync(`/proc/${pid}/ns/pid`).ino;
  } catch {
    return undefined;
  }
}

function startTimeOf(pid: number | 'self'): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The holder as its lock file says, when it says anything readable. */
export function readHolder(path: string): LockHolder | undefined {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
    return typeof h.pid === 'number' ? h : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `holder` is a process this one can see and signal: same PID
 * namespace and the same process (start time), not a later one with its pid.
 */
export function holderIsVisible(holder: LockHolder): boolean {
  return holder.pidNs === pidNsOf('self') && startTimeOf(holder.pid) === holder.startTime;
}

export function describeHolder(h: LockHolder | undefined): string {
  if (!h) return 'a process (its lock file names none yet)';
  return `${h.what} pid ${h.pid} on ${h.host}, since ${h.since}`;
}

export class LockBusyError extends Error {
  override readonly name = 'LockBusyError';
  constructor(
    readonly path: string,
    readonly pinDir: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(`pin dir ${pinDir} is in use by ${describeHolder(holder)} (lock ${path})`);
  }
}

/** An flock held on a pin dir's lock file; release() or process death drops it. */
export class PinDirLock {
  private fd: number | undefined;

  private constructor(
    fd: number,
    readonly path: string,
    readonly pinDir: string,
  ) {
    this.fd = fd;
  }

  /** Take the lock now, or say who has it. `what` names the holder for others ("agent", "cleanup"). */
  static tryAcquire(stateDir: string, pinDir: string, what: string): PinDirLock | LockBusyError {
    const path = statePaths(stateDir, pinDir).lock;
    const open = (): number => {
      try {
        mkdirp(stateDir);
        return openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
      } catch (e) {
        throw new Error(
          `cannot open the lock file ${path} for pin dir ${pinDir} in the state dir (--state-dir ${stateDir}): ${(e as Error).message}`,
          { cause: e },
        );
      }
    };
    // The holder unlinks the file on release: a lock taken on a file that is
    // no longer at the path guards nothing, so try again on the new one.
    for (let attempt = 0; attempt < 20; attempt++) {
      const fd = open();
      let ok = false;
      try {
        if (!native().flockNb(fd, 'exclusive')) return new LockBusyError(path, pinDir, readHolder(path));
        let same = false;
        try {
          const a = fstatSync(fd);
          const b = statSync(path);
          same = a.ino === b.ino && a.dev === b.dev;
        } catch {
          same = false;
        }
        if (!same) continue;
        const holder: LockHolder = {
          pid: process.pid,
          pidNs: pidNsOf('self') ?? 0,
          startTime: startTimeOf('self') ?? '',
          pinDir: resolve(pinDir),
          host: hostname(),
          since: new Date().toISOString(),
          what,
        };
        ftruncateSync(fd, 0);
        writeSync(fd, `${JSON.stringify(holder)}\n`, 0);
        ok = true;
        return new PinDirLock(fd, path, pinDir);
      } finally {
        if (!ok) closeSync(fd);
      }
    }
    throw new Error(`cannot take the lock ${path} for pin dir ${pinDir}: the file keeps being replaced`);
  }

  /**
   * Take the lock, waiting up to waitMs for a holder to let go (a previous
   * agent still exiting); then fail naming the holder.
   */
  static async acquire(stateDir: string, pinDir: string, what: string, waitMs: number, log?: Logger): Promise<PinDirLock> {
    const deadline = Date.now() + waitMs;
    let said = false;
    for (;;) {
      const r = PinDirLock.tryAcquire(stateDir, pinDir, what);
      if (r instanceof PinDirLock) return r;
      if (Date.now() >= deadline) throw r;
      if (!said) {
        log?.warn({ lock: r.path, holder: r.holder }, `${r.message}; waiting up to ${Math.round(waitMs / 1000)}s for it to exit`);
        said = true;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  get held(): boolean {
    return this.fd !== undefined;
  }

  release(): void {
    if (this.fd === undefined) return;
    // Unlink while still holding it, so no one can lock the old file after us.
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
    closeSync(this.fd);
    this.fd = undefined;
  }
}
