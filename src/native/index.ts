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

const E2BIG = 7;
const ENOMEM = 12;

/** The symbolic name of an errno ("E2BIG"), from the C library through the addon. */
export function errnoName(errno: number): string {
  return native().errnoName(errno);
}

/** A failed kernel or libbpf operation, or one the addon refused (EINVAL, with `detail`). */
export class BpfError extends Error {
  override readonly name = 'BpfError';
  constructor(
    /** What was done, naming the object: "map update batch bpfproxy_slots". */
    readonly op: string,
    readonly errno: number,
    /** libbpf / verifier output, when the operation produced any. */
    readonly log: string = '',
    /** Batch operations: how many elements were done before the failure. */
    readonly done: number = 0,
    /** Why the addon refused the call itself (e.g. a key of the wrong size). */
    readonly detail: string = '',
  ) {
    const n = native();
    super(`${op}: ${n.errnoName(errno)} (${n.errnoText(errno)})${detail ? `: ${detail}` : ''}${log ? `\n${log.trimEnd()}` : ''}`);
  }

  /** "E2BIG", "ENOENT", ... */
  get code(): string {
    return errnoName(this.errno);
  }

  /**
   * A hash map has no room for another entry (the kernel says E2BIG).
   * Not ENOMEM: that is the kernel failing to allocate (isOutOfMemory),
   * which a bigger map would not fix.
   */
  get isMapFull(): boolean {
    return this.errno === E2BIG;
  }

  /** The kernel could not allocate memory for the operation (ENOMEM). */
  get isOutOfMemory(): boolean {
    return this.errno === ENOMEM;
  }
}

function toBpfError(e: unknown): unknown {
  if (e instanceof Error && typeof (e as { errno?: unknown }).errno === 'number') {
    const x = e as Error & { errno: number; op?: string; log?: string; done?: number; detail?: string };
    return new BpfError(x.op ?? 'bpf', x.errno, x.log ?? '', x.done ?? 0, x.detail ?? '');
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
  throw new Error('native addon build/Release/bpfproxy_native.node not found: run `make build` in the repository');
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
        if (r instanceof Promise)
          return r.catch((e: unknown) => {
            throw toBpfError(e);
          });
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
