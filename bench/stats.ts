/** Summaries of repeated measurements: median and spread, never a single run. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
  samples: number[];
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo]! + (s[hi]! - s[lo]!) * (i - lo);
}

export function summarize(xs: readonly number[]): Summary {
  const r = (x: number) => +x.toPrecision(6);
  return {
    median: r(percentile(xs, 0.5)),
    min: r(Math.min(...xs)),
    max: r(Math.max(...xs)),
    n: xs.length,
    samples: xs.map(r),
  };
}

/** "x / baseline" rounded, or null when there is no baseline. */
export function ratio(x: number | undefined, base: number | undefined): number | null {
  if (x === undefined || base === undefined || !Number.isFinite(x) || !Number.isFinite(base) || base === 0) return null;
  return +(x / base).toFixed(3);
}
