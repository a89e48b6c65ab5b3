/** Time, injectable: the sync runner and GC take a Clock so tests can drive them. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** milliseconds, monotonic */
  now(): number;
  after(ms: number, fn: () => void): Timer;
}

export const realClock: Clock = {
  now: () => performance.now(),
  after(ms, fn) {
    const h = setTimeout(fn, Math.max(0, ms));
    h.unref?.();
    return { cancel: () => clearTimeout(h) };
  },
};
