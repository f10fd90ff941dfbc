/**
 * Sampling helpers for the shapes data set, over the seeded generator of src/util/numerics.ts (`Mulberry32`):
 * a data set is reproducible byte for byte from `(seed, count)`. The held-out split uses `stableHash32` from
 * the same module; it must never change without bumping `GRAMMAR_VERSION` in grammar.ts.
 */
import { randInt, type Rng } from "../util/numerics.js";

/** A uniformly chosen element of a non-empty array. */
export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[randInt(rng, items.length)]!;
}

/** A uniform float in [lo, hi). */
export function uniform(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng.next();
}
