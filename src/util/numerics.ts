/**
 * The few numeric primitives that several parts of atedm must compute identically on every platform: a seeded
 * uniform generator, a stream of standard normals drawn from it, a stable string hash, and torch's float32
 * linspace. The shapes data set, the initial latents, synthetic weights, ToMe's cell positions, AT-EDM's
 * `random` score and the schedulers all use these, never a copy of them.
 *
 * Nothing here touches Node APIs, so the same code runs in the browser.
 */

/** A source of uniform floats in [0, 1). */
export interface Rng {
  next(): number;
}

/**
 * Tommy Ettinger's mulberry32: a 32-bit state advanced by the Weyl increment 0x6D2B79F5 and scrambled by two
 * xorshift-multiply rounds. Period 2^32; every platform gives the same sequence for the same seed, so a data set,
 * a latent or a random score is reproducible byte for byte.
 */
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

/**
 * Standard normals by the Box-Muller transform over a Mulberry32 stream: two uniforms u1, u2 give
 * r = sqrt(-2 ln(1 - u1)), a = 2 pi u2 and the pair r cos(a), r sin(a). Successive `fill` calls continue the
 * same sequence (an odd-length fill keeps the unused sine for the next call).
 */
export class NormalStream {
  private readonly uniforms: Mulberry32;
  private spare: number | null = null;

  constructor(seed: number) {
    this.uniforms = new Mulberry32(seed);
  }

  /** Fill `out` with the next out.length values of offset + scale * N(0, 1). */
  fill(out: Float32Array, offset = 0, scale = 1): Float32Array {
    let i = 0;
    if (this.spare !== null && out.length > 0) {
      out[i++] = offset + scale * this.spare;
      this.spare = null;
    }
    for (; i < out.length; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - this.uniforms.next()));
      const a = 2 * Math.PI * this.uniforms.next();
      out[i] = offset + scale * r * Math.cos(a);
      if (i + 1 < out.length) out[i + 1] = offset + scale * r * Math.sin(a);
      else this.spare = r * Math.sin(a);
    }
    return out;
  }
}

const utf8 = new TextEncoder();

/**
 * FNV-1a (32-bit) over the UTF-8 bytes of `text`, then murmur3's fmix32 finaliser (every output bit depends on
 * every input bit). `seed` perturbs the FNV offset basis (0 gives plain FNV-1a). Stable across platforms and
 * versions: it defines the shapes data set's held-out split and the seeds of synthetic weights, so it must
 * never change.
 */
export function stableHash32(text: string, seed = 0): number {
  let h = 0x811c9dc5 ^ Math.imul(seed >>> 0, 0x9e3779b1);
  for (const byte of utf8.encode(text)) h = Math.imul(h ^ byte, 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU, bit-exact. */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const f32 = Math.fround;
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    // torch fills the first half from `start` and the second half from `end`; `step * k` is exact in float64,
    // so one rounding to float32 reproduces its fused multiply-add.
    out[i] = i < halfway ? f32(s + step * i) : f32(e - step * (steps - i - 1));
  }
  return out;
}
