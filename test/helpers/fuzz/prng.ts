/**
 * A small seeded PRNG (sfc32, seeded through splitmix32) so that a fuzz run
 * is reproducible from its printed seed. Not for cryptography.
 */
import { randomInt } from 'node:crypto';

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('Prng.pick: empty list');
    return xs[this.int(xs.length)]!;
  }

  /** Pick by weight: [[weight, value], ...]. */
  weighted<T>(xs: ReadonlyArray<readonly [number, T]>): T {
    const total = xs.reduce((a, [w]) => a + w, 0);
    let r = (this.u32() / 0x1_0000_0000) * total;
    for (const [w, v] of xs) {
      if (r < w) return v;
      r -= w;
    }
    return xs[xs.length - 1]![1];
  }

  /** n random bytes (filled a 32-bit word at a time, in the host's byte order). */
  bytes(n: number): Buffer {
    const words = new Uint32Array((n + 3) >>> 2);
    for (let i = 0; i < words.length; i++) words[i] = this.u32();
    return Buffer.from(words.buffer, 0, n);
  }
}

/** FUZZ_SEED when set (decimal or 0x hex), else a fresh random seed. */
export function seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const s = env.FUZZ_SEED?.trim();
  if (!s) return randomInt(0, 0x1_0000_0000 - 1);
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new Error(`FUZZ_SEED="${s}" is not a 32-bit unsigned integer (decimal or 0x hex); unset it for a random seed`);
  }
  return n >>> 0;
}
