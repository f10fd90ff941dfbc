/**
 * Seeded randomness for the shapes data set.
 *
 * `Mulberry32` is Tommy Ettinger's mulberry32 generator: a 32-bit state advanced by the Weyl increment
 * 0x6D2B79F5 and scrambled by two xorshift-multiply rounds. Period 2^32, passes gjrand/PractRand far enough for
 * sampling scene attributes and sub-pixel jitter, and — the point here — every platform produces the same
 * sequence for the same seed, so a data set is reproducible byte for byte from `(seed, count)`.
 *
 * `stableHash32` is FNV-1a over the UTF-8 bytes followed by murmur3's fmix32 finaliser (so every output bit
 * depends on every input bit); it defines the held-out split and must never change without bumping
 * `GRAMMAR_VERSION` in grammar.ts.
 */

/** A source of uniform floats in [0, 1). */
export interface Rng {
  next(): number;
}

export class Mulberry32 implements Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** The next 32-bit unsigned integer. */
  nextUint32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A uniform float in [0, 1) with 32 bits of randomness. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }
}

/** A uniform integer in [0, n). */
export function randInt(rng: Rng, n: number): number {
  return Math.min(n - 1, Math.floor(rng.next() * n));
}

/** A uniformly chosen element of a non-empty array. */
export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[randInt(rng, items.length)]!;
}

/** A uniform float in [lo, hi). */
export function uniform(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng.next();
}

/** FNV-1a (32-bit) over the UTF-8 bytes of `text`, then murmur3 fmix32. Stable across platforms and versions. */
export function stableHash32(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, "utf8")) {
    h ^= byte;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
