/**
 * Seeded randomness for tests. Never use Math.random in a test: every random choice
 * must come from a seed so that a failure can be replayed exactly.
 */
import { mulberry32 } from '../../src/testkit/simnet.js';

export class Rng {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }

  /** Uniform float in [0, 1). */
  float(): number {
    return this.next();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A random element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('Rng.pick: empty array');
    return items[this.int(items.length)] as T;
  }

  /** Fills `buf` with pseudo-random bytes (fast: four bytes per draw). */
  fill(buf: Uint8Array): Uint8Array {
    let i = 0;
    for (; i + 4 <= buf.length; i += 4) {
      const v = (this.next() * 4294967296) >>> 0;
      buf[i] = v & 0xff;
      buf[i + 1] = (v >>> 8) & 0xff;
      buf[i + 2] = (v >>> 16) & 0xff;
      buf[i + 3] = v >>> 24;
    }
    for (; i < buf.length; i++) buf[i] = this.int(256);
    return buf;
  }

  /** A new buffer of `n` pseudo-random bytes. */
  bytes(n: number): Buffer {
    return this.fill(Buffer.allocUnsafe(n)) as Buffer;
  }
}
