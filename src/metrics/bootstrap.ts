/**
 * Seeded percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13): the
 * uncertainty of a statistic over `units` independent units (in `atedm eval`, the prompts) estimated by
 * recomputing it on resamples of the units drawn with replacement, and reading the interval off the percentiles
 * of those recomputed values.
 *
 * Reproducible: the resamples come from one `Mulberry32(seed)` stream (src/util/numerics.ts), unit i of
 * resample b being the (b * units + i)-th draw of `randInt(rng, units)`, so the same seed, units and statistic
 * give the same interval on every platform.
 */
import { AtedmError } from "../errors.js";
import { Mulberry32, randInt } from "../util/numerics.js";

export interface BootstrapOptions {
  /** Number of resamples. Default 1000. */
  samples?: number;
  /** Seed of the Mulberry32 stream, an integer (taken modulo 2^32). Default 0. */
  seed?: number;
  /** Coverage of the interval, in (0, 1). Default 0.95 (the 2.5 and 97.5 percentiles). */
  level?: number;
}

/** Same shape as `MetricValue` of src/eval/types.ts. */
export interface BootstrapResult {
  /** The statistic on all units in order (indices 0, 1, ..., units - 1). */
  value: number;
  /**
   * [low, high]: the (1 - level) / 2 and (1 + level) / 2 percentiles of the resampled statistic (named for the
   * default level 0.95). null where it is undefined: a single unit (every resample is the same), or a statistic
   * that returned NaN on some resample.
   */
  ci95: [number, number] | null;
}

/**
 * Percentile bootstrap interval of `statistic` over `units` units.
 *
 * `statistic(indices)` gets the units of one sample as an Int32Array of length `units` (each in [0, units),
 * repeats allowed; a fresh array per call, so it may keep it) and returns a number, e.g. the mean of a
 * per-prompt metric over those prompts, or a Frechet distance between the features of those prompts' images
 * and a fixed reference.
 *
 * Percentiles interpolate linearly between order statistics as numpy's default `np.percentile` does
 * (position (samples - 1) q, same lerp).
 *
 * Non-finite statistics:
 * - NaN on any resample makes the interval null: dropping those resamples would bias the interval toward the
 *   resamples where the statistic happens to be defined, so none is reported.
 * - +-Infinity (e.g. the mean PSNR of resamples that contain an identical image pair) are kept as the largest /
 *   smallest values. Where an endpoint would interpolate between a finite value and an infinite one, it takes
 *   the outer of the two (the lower neighbour for the low end, the upper for the high end), so the interval
 *   never shrinks and `Infinity` is reported rather than hidden.
 */
export function bootstrap(units: number, statistic: (indices: Int32Array) => number, options: BootstrapOptions = {}): BootstrapResult {
  const samples = options.samples ?? 1000;
  const seed = options.seed ?? 0;
  const level = options.level ?? 0.95;
  if (!(Number.isInteger(units) && units >= 1)) throw new AtedmError(`bootstrap: units must be a positive integer, got ${units}`);
  if (!(Number.isInteger(samples) && samples >= 1)) throw new AtedmError(`bootstrap: samples must be a positive integer, got ${samples}`);
  if (!Number.isInteger(seed)) throw new AtedmError(`bootstrap: seed must be an integer, got ${seed}`);
  if (!(level > 0 && level < 1)) throw new AtedmError(`bootstrap: level must be in (0, 1), got ${level}`);

  const all = new Int32Array(units);
  for (let i = 0; i < units; i++) all[i] = i;
  const value = statistic(all);
  if (units === 1) return { value, ci95: null };

  const rng = new Mulberry32(seed);
  const stats = new Float64Array(samples);
  for (let s = 0; s < samples; s++) {
    const indices = new Int32Array(units);
    for (let i = 0; i < units; i++) indices[i] = randInt(rng, units);
    stats[s] = statistic(indices);
  }
  if (stats.some(Number.isNaN)) return { value, ci95: null };
  stats.sort();
  const tail = (1 - level) / 2;
  return { value, ci95: [percentileSorted(stats, tail, "low"), percentileSorted(stats, 1 - tail, "high")] };
}

/**
 * The q-quantile (q in [0, 1]) of ascending `sorted` values, numpy's default 'linear' method: position
 * h = (n - 1) q, lerp between sorted[floor(h)] and the next value, written as numpy's `_lerp` writes it.
 * Between a finite and an infinite neighbour it returns the lower neighbour for side "low" and the upper for
 * "high" (see `bootstrap`).
 */
export function percentileSorted(sorted: ArrayLike<number>, q: number, side: "low" | "high"): number {
  const n = sorted.length;
  if (n === 0) throw new AtedmError("percentileSorted: no values");
  const h = (n - 1) * q;
  const k = Math.min(Math.floor(h), n - 1);
  const t = h - k;
  const x0 = sorted[k]!;
  if (t === 0 || k + 1 >= n) return x0;
  const x1 = sorted[k + 1]!;
  if (x0 === x1) return x0;
  if (!(Number.isFinite(x0) && Number.isFinite(x1))) return side === "low" ? x0 : x1;
  const diff = x1 - x0;
  return t >= 0.5 ? x1 - diff * (1 - t) : x0 + diff * t;
}
