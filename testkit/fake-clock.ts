import type { Clock, Timer } from '../src/clock.js';

/** A clock for tests: time moves only when told. */
export class FakeClock implements Clock {
  private t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private seq = 0;

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const id = ++this.seq;
    this.timers.push({ at: this.t + Math.max(0, ms), fn, id });
    return {
      cancel: () => {
        this.timers = this.timers.filter((x) => x.id !== id);
      },
    };
  }

  /** Advance time, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
  }
}
