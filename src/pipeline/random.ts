/**
 * The documented deterministic noise of `atedm generate --seed S`: standard normal float32 values from the
 * Box-Muller transform over a Mulberry32 stream seeded with S (two uniforms u1, u2 in (0, 1] and [0, 1) give
 * sqrt(-2 ln u1) cos(2 pi u2) and sqrt(-2 ln u1) sin(2 pi u2)), written in NCHW order. The same seed gives the
 * same latents on every platform. (It is not torch's generator: a seed does not reproduce a PyTorch image.)
 */
import { Mulberry32 } from "../shapes/rng.js";

export function randn(seed: number, n: number): Float32Array {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
  const rng = new Mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng.next();
    const u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
