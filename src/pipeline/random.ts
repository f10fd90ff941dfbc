/**
 * The documented deterministic noise of `atedm generate --seed S`: standard normal float32 values from the
 * Box-Muller transform over a Mulberry32 stream seeded with S (`NormalStream` in src/util/numerics.ts: two
 * uniforms u1, u2 in [0, 1) give sqrt(-2 ln(1 - u1)) cos(2 pi u2) and sqrt(-2 ln(1 - u1)) sin(2 pi u2)), written
 * in NCHW order. The same seed gives the same latents on every platform. Ancestral samplers (euler-a) take each
 * step's noise from the same stream, continued after the initial latents. (It is not torch's generator: a seed
 * does not reproduce a PyTorch image.)
 */
import { AtedmError } from "../errors.js";
import { NormalStream } from "../util/numerics.js";

export function randn(seed: number, n: number): Float32Array {
  checkSeed(seed);
  return new NormalStream(seed).fill(new Float32Array(n));
}

/** A seed must be an integer in [0, 2^32). */
export function checkSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new AtedmError(`seed must be an integer in [0, 2^32), got ${seed}`);
}
