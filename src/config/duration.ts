/**
 * Durations as an operator writes them, in a FelixConfiguration field
 * ("20s", "1h", "1m30s", "250ms") or on the command line: one parser for
 * both. Values inside bpfproxy are milliseconds.
 */

/** 1.1 * 1000 is 1100.0000000000002: keep whole nanoseconds. */
const nsPrecision = (ms: number): number => Math.round(ms * 1e6) / 1e6;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * "20s", "1h", "1m30s", "250ms", or a bare number of seconds, to ms.
 * Throws an Error saying what is wrong with the text (the caller names the
 * field or flag).
 */
export function parseDuration(s: string): number {
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return nsPrecision(Number(t) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let used = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    used = re.lastIndex;
  }
  if (used !== t.length || t.length === 0) throw new Error(`"${s}" is not a duration (examples: 20s, 1h, 1m30s)`);
  return nsPrecision(total);
}

/** ms as an operator writes it: 1s, 30s, 5m, 1h, 250ms. */
export const formatDuration = (ms: number): string =>
  ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
