/**
 * Loads the native addon and gives it a typed face: every call that fails
 * throws a BpfError naming the operation and errno.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from './addon.js';

export type * from './addon.js';

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 7: 'E2BIG', 9: 'EBADF', 12: 'ENOMEM', 13: 'EACCES', 16: 'EBUSY',
  17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL', 28: 'ENOSPC', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
};

/** A failed kernel or libbpf operation. */
export class BpfError extends Error {
  override readonly name = 'BpfError';
  constructor(
    readonly op: string,
    readonly errno: number,
    /** libbpf / verifier output, when the operation produced any. */
    readonly log: string = '',
    /** Batch operations: how many elements were done before the failure. */
    readonly done: number = 0,
  ) {
    super(`${op}: ${ERRNO_NAMES[errno] ?? `errno ${errno}`}${log ? `\n${log.trimEnd()}` : ''}`);
  }

  get code(): string {
    return ERRNO_NAMES[this.errno] ?? `E${this.errno}`;
  }

  /** The map is full (hash maps say E2BIG, some paths ENOSPC/ENOMEM). */
  get isMapFull(): boolean {
    return this.errno === 7 || this.errno === 28 || this.errno === 12;
  }
}

function toBpfError(e: unknown): unknown {
  if (e instanceof Error && typeof (e as { errno?: unknown }).errno === 'number') {
    const x = e as Error & { errno: number; op?: string; log?: string; done?: number };
    return new BpfError(x.op ?? 'bpf', x.errno, x.log ?? '', x.done ?? 0);
  }
  return e;
}

function findAddon(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/src/native -> repo root
  for (const up of ['../../..', '../..', '..']) {
    const p = join(here, up, 'build', 'Release', 'bpfproxy_native.node');
    if (existsSync(p)) return p;
  }
  throw new Error(
    'native addon build/Release/bpfproxy_native.node not found: run `make build` in the repository',
  );
}

function wrap(raw: NativeAddon): NativeAddon {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'function' || k === 'BpfObject') {
      out[k] = v;
      continue;
    }
    const fn = v as (...a: unknown[]) => unknown;
    out[k] = (...args: unknown[]) => {
      try {
        const r = fn(...args);
        if (r instanceof Promise) return r.catch((e: unknown) => Promise.reject(toBpfError(e)));
        return r;
      } catch (e) {
        throw toBpfError(e);
      }
    };
  }
  return out as unknown as NativeAddon;
}

let cached: NativeAddon | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  if (!cached) {
    const require = createRequire(import.meta.url);
    cached = wrap(require(findAddon()) as NativeAddon);
  }
  return cached;
}
