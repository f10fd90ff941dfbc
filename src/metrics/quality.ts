/**
 * Full-reference image quality: PSNR and SSIM between two images of the same size, the way scikit-image 0.26
 * computes them (`skimage.metrics.peak_signal_noise_ratio` and `skimage.metrics.structural_similarity` with
 * `channel_axis=-1` and its defaults). `atedm eval` uses them to compare a pruned image with the unpruned image
 * of the same prompt and seed.
 *
 * Images are interleaved HWC (row by row, the channels of a pixel side by side), as PNG decoders give them:
 * a Uint8Array (0..255) or a Float32Array / Float64Array. All arithmetic is float64. scikit-image computes
 * uint8 and float64 input in float64 too, so the results agree to rounding (measured: PSNR exactly, SSIM within
 * 5e-16; test/quality.test.ts); float32 input it keeps in float32, which moves its SSIM by ~1e-8 from ours.
 *
 * The data range R (max - min possible value) defaults to 255 for a Uint8Array and must be given for float
 * images, exactly as scikit-image requires (it cannot be guessed from the values: 1 for [0, 1] images, 2 for
 * [-1, 1] ones).
 */
import { AtedmError } from "../errors.js";

/** An interleaved HWC image (or any flat array of samples, for PSNR). */
export type ImageData = Uint8Array | Float32Array | Float64Array;

function dataRangeOf(a: ImageData, dataRange: number | undefined, what: string): number {
  if (dataRange === undefined) {
    if (a instanceof Uint8Array) return 255;
    throw new AtedmError(`${what}: float images need an explicit dataRange (1 for [0, 1] images, 2 for [-1, 1])`);
  }
  if (!(Number.isFinite(dataRange) && dataRange > 0)) throw new AtedmError(`${what}: dataRange must be a positive number, got ${dataRange}`);
  return dataRange;
}

function checkSameLength(a: ImageData, b: ImageData, what: string): void {
  if (a.length !== b.length) throw new AtedmError(`${what}: the images differ in size (${a.length} vs ${b.length} samples)`);
  if (a.length === 0) throw new AtedmError(`${what}: the images are empty`);
}

/**
 * Peak signal-to-noise ratio in decibels: PSNR = 10 log10(R^2 / MSE), MSE = mean over all samples of (a - b)^2.
 *
 * Identical images (MSE 0) give `Infinity`, as scikit-image does (numpy divides by zero to inf). That is the
 * honest value, not an error: a caller that averages PSNR over prompts gets Infinity whenever one pair is
 * identical, and should report it as such (e.g. pruning ratio 0), not clip it to an arbitrary number.
 *
 * @param dataRange R; defaults to 255 for a Uint8Array and is required for float images.
 */
export function psnr(a: ImageData, b: ImageData, dataRange?: number): number {
  checkSameLength(a, b, "psnr");
  const range = dataRangeOf(a, dataRange, "psnr");
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    sum += d * d;
  }
  return 10 * Math.log10((range * range) / (sum / a.length));
}

/** SSIM's settings; the defaults are scikit-image's. */
export interface SsimOptions {
  /** R, the data range; defaults to 255 for a Uint8Array, required for float images. */
  dataRange?: number;
  /** Side of the square sliding window, odd, at most the smaller image side. Default 7. */
  winSize?: number;
  /** C1 = (k1 R)^2. Default 0.01. */
  k1?: number;
  /** C2 = (k2 R)^2. Default 0.03. */
  k2?: number;
  /** Normalize the window's (co)variances by N - 1 (true, the default) rather than N = winSize^2. */
  useSampleCovariance?: boolean;
}

/**
 * The mean structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error
 * visibility to structural similarity", IEEE TIP 13:600-612) with scikit-image's choices, so the value equals
 * `structural_similarity(a, b, channel_axis=-1, data_range=R)`:
 *
 * - per channel, local means, variances and covariance over a winSize x winSize uniform window
 *   (`scipy.ndimage.uniform_filter`, boundary mode 'reflect': the row ... c b a | a b c ... mirrors about the
 *   edge, repeating the edge pixel), with variances scaled by N / (N - 1), N = winSize^2;
 * - the SSIM map S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)), C1 = (k1 R)^2,
 *   C2 = (k2 R)^2;
 * - the mean of S after cropping (winSize - 1) / 2 pixels from every border (the windows there reach into the
 *   reflected padding), then the mean over channels. The crop removes exactly the pixels whose windows touch
 *   the padding, so the boundary mode never reaches the result; it is kept as scipy's only for the record.
 *
 * Identical images give exactly 1. Images must be at least winSize x winSize (7 x 7 by default).
 */
export function ssim(a: ImageData, b: ImageData, width: number, height: number, channels: number, options: SsimOptions = {}): number {
  checkSameLength(a, b, "ssim");
  for (const [name, v] of [
    ["width", width],
    ["height", height],
    ["channels", channels],
  ] as const) {
    if (!(Number.isInteger(v) && v > 0)) throw new AtedmError(`ssim: ${name} must be a positive integer, got ${v}`);
  }
  if (a.length !== width * height * channels) {
    throw new AtedmError(`ssim: ${a.length} samples is not width ${width} x height ${height} x channels ${channels}`);
  }
  const win = options.winSize ?? 7;
  if (!(Number.isInteger(win) && win >= 1 && win % 2 === 1)) throw new AtedmError(`ssim: winSize must be a positive odd integer, got ${win}`);
  if (win > width || win > height) {
    throw new AtedmError(`ssim: the ${width}x${height} image is smaller than the ${win}x${win} window (images must be at least ${win}x${win})`);
  }
  const range = dataRangeOf(a, options.dataRange, "ssim");
  const c1 = ((options.k1 ?? 0.01) * range) ** 2;
  const c2 = ((options.k2 ?? 0.03) * range) ** 2;
  const np = win * win;
  const covNorm = (options.useSampleCovariance ?? true) ? np / (np - 1) : 1;
  const pad = (win - 1) >> 1;

  const n = width * height;
  const x = new Float64Array(n);
  const y = new Float64Array(n);
  const prod = new Float64Array(n);
  const tmp = new Float64Array(n);
  // The five filtered planes: ux, uy, uxx, uyy, uxy.
  const ux = new Float64Array(n);
  const uy = new Float64Array(n);
  const uxx = new Float64Array(n);
  const uyy = new Float64Array(n);
  const uxy = new Float64Array(n);

  let total = 0;
  for (let ch = 0; ch < channels; ch++) {
    for (let p = 0; p < n; p++) {
      x[p] = a[p * channels + ch]!;
      y[p] = b[p * channels + ch]!;
    }
    uniformFilter(x, width, height, win, tmp, ux);
    uniformFilter(y, width, height, win, tmp, uy);
    for (let p = 0; p < n; p++) prod[p] = x[p]! * x[p]!;
    uniformFilter(prod, width, height, win, tmp, uxx);
    for (let p = 0; p < n; p++) prod[p] = y[p]! * y[p]!;
    uniformFilter(prod, width, height, win, tmp, uyy);
    for (let p = 0; p < n; p++) prod[p] = x[p]! * y[p]!;
    uniformFilter(prod, width, height, win, tmp, uxy);

    let sum = 0;
    for (let r = pad; r < height - pad; r++) {
      for (let c = pad; c < width - pad; c++) {
        const p = r * width + c;
        const mx = ux[p]!;
        const my = uy[p]!;
        const vx = covNorm * (uxx[p]! - mx * mx);
        const vy = covNorm * (uyy[p]! - my * my);
        const vxy = covNorm * (uxy[p]! - mx * my);
        sum += ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
      }
    }
    total += sum / ((height - 2 * pad) * (width - 2 * pad));
  }
  return total / channels;
}

/**
 * `scipy.ndimage.uniform_filter(src, size=win, mode='reflect')` of a height x width plane into `out`: the mean
 * over the win x win window centred on each pixel, separably (rows, then columns), with out-of-range indices
 * mirrored about the edge (-1 -> 0, -2 -> 1, width -> width - 1). `tmp` holds the row pass.
 */
function uniformFilter(src: Float64Array, width: number, height: number, win: number, tmp: Float64Array, out: Float64Array): void {
  const r = (win - 1) >> 1;
  for (let row = 0; row < height; row++) {
    const base = row * width;
    for (let c = 0; c < width; c++) {
      let s = 0;
      for (let k = c - r; k <= c + r; k++) s += src[base + reflect(k, width)]!;
      tmp[base + c] = s / win;
    }
  }
  for (let row = 0; row < height; row++) {
    for (let c = 0; c < width; c++) {
      let s = 0;
      for (let k = row - r; k <= row + r; k++) s += tmp[reflect(k, height) * width + c]!;
      out[row * width + c] = s / win;
    }
  }
}

/** scipy.ndimage's 'reflect' (half-sample symmetric) index; one mirror suffices because win <= n. */
function reflect(i: number, n: number): number {
  if (i < 0) return -i - 1;
  if (i >= n) return 2 * n - i - 1;
  return i;
}
