/**
 * The engine handle from the addon, with the addon's errors turned into
 * BpfError (naming the operation and errno) like every other native call.
 */
import { BpfError, native, type EngineHandle, type MapHandle } from '../../native/index.js';

function typed(e: unknown): unknown {
  if (e instanceof Error && typeof (e as { errno?: unknown }).errno === 'number') {
    const x = e as Error & { errno: number; op?: string; log?: string; detail?: string };
    return new BpfError(x.op ?? 'engine', x.errno, x.log ?? '', 0, x.detail ?? '');
  }
  return e;
}

export interface EngineOptions {
  /** frames per vector, 1-256 */
  vector: number;
  /** session entries (a flow takes two); memory: 128 bytes per entry, committed at start */
  sessions: number;
  /** the BPF conntrack map the engine mirrors its flows into (the kernel path carries them on) */
  conntrack?: MapHandle | number;
  /** the IPv6 one (bpfproxy_ct6): the engine's IPv6 flows mirrored there */
  conntrack6?: MapHandle | number;
}

export function createEngine(o: EngineOptions): EngineHandle {
  let h: EngineHandle;
  try {
    h = native().engineCreate({
      vector: o.vector,
      sessions: o.sessions,
      ...(o.conntrack !== undefined ? { ctFd: o.conntrack } : {}),
      ...(o.conntrack6 !== undefined ? { ct6Fd: o.conntrack6 } : {}),
    });
  } catch (e) {
    throw typed(e);
  }
  const out = {} as Record<string, unknown>;
  for (const k of [
    'setTable',
    'setPolicy',
    'requirePolicy',
    'startIo',
    'stopIo',
    'stats',
    'trace',
    'traceTake',
    'gc',
    'clearSessions',
    'runVector',
    'bench',
    'close',
  ]) {
    const fn = (h as unknown as Record<string, (...a: unknown[]) => unknown>)[k]!.bind(h);
    out[k] = (...a: unknown[]) => {
      try {
        return fn(...a);
      } catch (e) {
        throw typed(e);
      }
    };
  }
  return out as unknown as EngineHandle;
}
