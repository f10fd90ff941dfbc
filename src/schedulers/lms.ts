/**
 * LMS sampler: mirrors diffusers' `LMSDiscreteScheduler` (k-diffusion's `sample_lms`: a linear multistep method of
 * order 4 on the probability-flow ODE dx/dsigma = (x - x0) / sigma).
 *
 * Same noise schedule, timesteps (float32), sigmas, `init_noise_sigma` and UNet input scaling as Euler (euler.ts),
 * Karras sigmas included (`use_karras_sigmas`, between the sigmas of the first and last timesteps, fractional
 * timesteps; LMS ignores `sigma_min` / `sigma_max`). Per step i, with the derivatives d_i, d_{i-1}, ... of the last
 * `order` = min(i + 1, 4) steps:
 *
 *   x' = x + sum_k c_k d_{i-k},   c_k = integral from sigma_i to sigma_{i+1} of the Lagrange basis polynomial
 *                                       prod_{m != k} (tau - sigma_{i-m}) / (sigma_{i-k} - sigma_{i-m})
 *
 * diffusers computes c_k with `scipy.integrate.quad(..., epsrel=1e-4)`; we use `integrate` below (adaptive
 * Gauss-Legendre, ~1e-14 relative; exact up to rounding here, as the integrand is a polynomial of degree <= 3). The
 * float32 integrand of diffusers (its sigmas are torch float32 scalars) moves c_k by ~1e-7 relative, far inside the
 * scheduler tolerance.
 *
 * Supported config: beta schedules, `trained_betas`, prediction types epsilon / v_prediction / sample, all three
 * spacings, `steps_offset`, `use_karras_sigmas`. Rejected: `use_exponential_sigmas`, `use_beta_sigmas`. The class has
 * no `rescale_betas_zero_snr` key (ignored, as in diffusers).
 */
import {
  NOISE_SCHEDULE_DEFAULTS,
  checkConsecutive,
  checkNumSteps,
  checkStepArgs,
  interpAtIndex,
  karrasSigmas,
  logF32,
  makeAlphasCumprod,
  resolveConfig,
  sigmaSamplerTimesteps,
  sigmaToT,
  sigmasFromAlphasCumprod,
  unsupported,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
  sigmaInitNoise,
  sigmaX0,
} from "./common.js";

const f32 = Math.fround;

/** `LMSDiscreteScheduler.__init__` defaults: the values used for keys a config does not have. */
export const LMS_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
} satisfies Partial<SchedulerConfig>;

export type LMSConfig = Pick<SchedulerConfig, keyof typeof LMS_DEFAULTS>;

/** The order of `step` (diffusers' `step(..., order=4)` default, which the pipelines use). */
export const LMS_ORDER = 4;

export class LMSDiscreteScheduler implements Scheduler {
  readonly className = "LMSDiscreteScheduler";
  readonly config: LMSConfig;
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  initNoiseSigma = 1;
  readonly stochastic = false;
  private readonly trainSigmas: Float32Array;
  /** The derivatives of the last LMS_ORDER steps, oldest first. */
  private derivatives: Float32Array[] = [];
  private nextStep: number | null = null;

  constructor(config: RawSchedulerConfig) {
    this.config = resolveConfig(config, LMS_DEFAULTS, this.className);
    if (this.config.use_exponential_sigmas) unsupported(this.className, "use_exponential_sigmas", true);
    if (this.config.use_beta_sigmas) unsupported(this.className, "use_beta_sigmas", true);
    this.alphasCumprod = makeAlphasCumprod({ ...this.config, rescale_betas_zero_snr: false });
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  /** `set_timesteps(n)`; also clears the derivative history. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    checkNumSteps(this.className, n, c.num_train_timesteps);
    let timesteps = sigmaSamplerTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
    let sigmas = timesteps.map((t) => interpAtIndex(t, this.trainSigmas));
    if (c.use_karras_sigmas) {
      // diffusers' LMS `_convert_to_karras` uses its num_inference_steps (n) points, even when trailing gave n + 1.
      sigmas = karrasSigmas(sigmas[sigmas.length - 1]!, sigmas[0]!, n);
      const logSigmas = logF32(this.trainSigmas);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    this.sigmas = [...sigmas, 0].map(f32);
    this.timesteps = timesteps;
    this.initNoiseSigma = sigmaInitNoise(this.sigmas, c.timestep_spacing);
    this.derivatives = [];
    this.nextStep = null;
  }

  /** `scale_model_input`: x / sqrt(sigma^2 + 1). */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    const sigma = this.sigmas[stepIndex]!;
    const denom = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    const out = new Float32Array(sample.length);
    for (let j = 0; j < sample.length; j++) out[j] = sample[j]! / denom;
    return out;
  }

  /** `step` (order 4). Steps must be consecutive after the first; setTimesteps starts over. */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, modelOutput, sample);
    checkConsecutive(this.className, stepIndex, this.nextStep);
    const sigma = this.sigmas[stepIndex]!;
    const n = sample.length;
    const x0 = sigmaX0(this.config.prediction_type, modelOutput, sample, sigma);
    const derivative = new Float32Array(n);
    for (let j = 0; j < n; j++) derivative[j] = f32(sample[j]! - x0[j]!) / sigma;
    this.derivatives.push(derivative);
    if (this.derivatives.length > LMS_ORDER) this.derivatives.shift();
    const order = Math.min(stepIndex + 1, LMS_ORDER);
    // Python's zip(coeffs, reversed(derivatives)): coefficient k goes with the k-th newest derivative.
    const terms = Array.from({ length: Math.min(order, this.derivatives.length) }, (_, k) => ({
      coeff: f32(lmsCoefficient(this.sigmas, order, stepIndex, k)),
      d: this.derivatives[this.derivatives.length - 1 - k]!,
    }));
    const prev = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      let acc = 0; // Python's sum() starts at int 0: 0 + first term is exact
      for (const { coeff, d } of terms) acc = f32(acc + f32(coeff * d[j]!));
      prev[j] = f32(sample[j]! + acc);
    }
    this.nextStep = stepIndex + 1;
    return { prevSample: prev, predOriginalSample: x0 };
  }
}

/**
 * `get_lms_coefficient(order, t, current_order)`: the integral from sigmas[t] to sigmas[t + 1] of the Lagrange basis
 * polynomial through sigmas[t], ..., sigmas[t - order + 1] that is 1 at sigmas[t - currentOrder] (float64).
 */
export function lmsCoefficient(sigmas: ArrayLike<number>, order: number, t: number, currentOrder: number): number {
  const basis = (tau: number): number => {
    let prod = 1;
    for (let k = 0; k < order; k++) {
      if (k === currentOrder) continue;
      prod *= (tau - sigmas[t - k]!) / (sigmas[t - currentOrder]! - sigmas[t - k]!);
    }
    return prod;
  };
  return integrate(basis, sigmas[t]!, sigmas[t + 1]!);
}

// ---------------------------------------------------------------------------------------------------------------
// Quadrature
// ---------------------------------------------------------------------------------------------------------------

/** The Legendre polynomial P_n(z) and its derivative, by the three-term recurrence (float64). */
function legendre(n: number, z: number): { p: number; dp: number } {
  let p0 = 1;
  let p1 = z;
  for (let k = 2; k <= n; k++) {
    const p2 = ((2 * k - 1) * z * p1 - (k - 1) * p0) / k;
    p0 = p1;
    p1 = p2;
  }
  return { p: p1, dp: (n * (z * p1 - p0)) / (z * z - 1) };
}

/** Nodes and weights of n-point Gauss-Legendre on [-1, 1] (Newton on the Legendre recurrence, float64). */
function gaussLegendre(n: number): { x: number[]; w: number[] } {
  const x = new Array<number>(n);
  const w = new Array<number>(n);
  for (let i = 0; i < Math.ceil(n / 2); i++) {
    let z = Math.cos((Math.PI * (i + 0.75)) / (n + 0.5));
    for (let iter = 0; iter < 100; iter++) {
      const { p, dp } = legendre(n, z);
      const dz = p / dp;
      z -= dz;
      if (Math.abs(dz) <= 1e-16) break;
    }
    // The derivative at the converged node, for the weight.
    const { dp } = legendre(n, z);
    x[i] = -z;
    x[n - 1 - i] = z;
    w[i] = 2 / ((1 - z * z) * dp * dp);
    w[n - 1 - i] = w[i]!;
  }
  return { x, w };
}

const GL = gaussLegendre(12);

function glRule(f: (x: number) => number, a: number, b: number): number {
  const half = (b - a) / 2;
  const mid = (a + b) / 2;
  let s = 0;
  for (let i = 0; i < GL.x.length; i++) s += GL.w[i]! * f(mid + half * GL.x[i]!);
  return s * half;
}

/**
 * Definite integral of `f` from a to b (b < a gives the negated integral): adaptive bisection with the 12-point
 * Gauss-Legendre rule (exact for polynomials of degree <= 23), accepting an interval when the rule and the sum over
 * its two halves agree to `relTol` of the whole integral's estimate. Deterministic; ~1e-14 relative on smooth
 * integrands, ~1e-13 on integrable endpoint singularities such as sqrt(x) at 0.
 */
export function integrate(f: (x: number) => number, a: number, b: number, relTol = 1e-14): number {
  if (a === b) return 0;
  const whole = glRule(f, a, b);
  const scale = Math.abs(whole) || 1;
  const rec = (lo: number, hi: number, est: number, tol: number, depth: number): number => {
    const mid = (lo + hi) / 2;
    const left = glRule(f, lo, mid);
    const right = glRule(f, mid, hi);
    const refined = left + right;
    if (Math.abs(refined - est) <= tol || depth >= 60 || mid === lo || mid === hi) return refined;
    return rec(lo, mid, left, tol / 2, depth + 1) + rec(mid, hi, right, tol / 2, depth + 1);
  };
  return rec(a, b, whole, relTol * scale, 0);
}
