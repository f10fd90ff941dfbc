/**
 * PNDM / PLMS sampler: mirrors diffusers' `PNDMScheduler` (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion
 * Models"), SD-1.5's own scheduler (its Hub config has `skip_prk_steps: true`, i.e. pure PLMS).
 *
 * Every step applies the "transfer" of formula (9) of the paper from timestep t to t' with a combined noise
 * estimate e (a = alphas_cumprod, b = 1 - a):
 *
 *   x' = sqrt(a_t' / a_t) x - (a_t' - a_t) e / (a_t sqrt(b_t') + sqrt(a_t b_t a_t'))
 *
 * where a_t' for t' < 0 is `final_alpha_cumprod` (1 with `set_alpha_to_one`, else alphas_cumprod[0]; SD configs say
 * false) and e is a linear multistep (Adams-Bashforth) combination of the last model outputs:
 * e_i, (3 e_i - e_{i-1}) / 2, (23 e_i - 16 e_{i-1} + 5 e_{i-2}) / 12, then the 4th-order
 * (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24.
 *
 * PLMS timesteps (skip_prk_steps true) are the base spacing with the second one duplicated: n = 4, leading,
 * steps_offset 1 gives [751, 501, 501, 251, 1] (n + 1 entries for n >= 2). The pipeline calls `step` once per entry
 * (index i = 0, 1, 2, ...): step 0 goes from 751 to 501 with e_0 (Euler-like, and remembers x); step 1 (the duplicate)
 * re-runs the SAME transition 751 -> 501 from the remembered x with e = (e_0 + e_1) / 2 (a Heun-like correction,
 * e_1 not stored in the history); from step 2 on, each step moves one stride with the multistep e.
 *
 * With `skip_prk_steps: false` (diffusers' class default) the first 3 strides are pseudo Runge-Kutta steps instead: 12
 * extra `step` calls at half strides (n = 4: [751, 626, 626, 501, 501, ..., 126, 126, 1] then PLMS [1]), which needs
 * n >= 4 (diffusers itself fails below that). Implemented too (it is a few lines).
 *
 * The UNet input is not scaled and the initial noise has sigma 1. `predOriginalSample` is not part of diffusers'
 * PNDM output; ours is the x0 that the step's combined noise estimate implies at its start timestep.
 *
 * Supported config: beta schedules, `trained_betas`, prediction types epsilon / v_prediction, all three spacings,
 * `steps_offset`, `set_alpha_to_one`, `skip_prk_steps`. Rejected: prediction_type "sample" (diffusers raises in
 * step()). PNDM has no `rescale_betas_zero_snr` key; it is ignored, as diffusers does.
 */
import { AtedmError } from "../errors.js";
import {
  NOISE_SCHEDULE_DEFAULTS,
  alphaCumprodAt,
  checkConsecutive,
  checkNumSteps,
  checkStepArgs,
  makeAlphasCumprod,
  resolveConfig,
  unsupported,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
  integerTimesteps,
} from "./common.js";

const f32 = Math.fround;

/** `PNDMScheduler.__init__` defaults: the values used for keys a config does not have. */
export const PNDM_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
} satisfies Partial<SchedulerConfig>;

export type PNDMConfig = Pick<SchedulerConfig, keyof typeof PNDM_DEFAULTS>;

/** `pndm_order`: the number of Runge-Kutta strides before PLMS takes over (and the PLMS history length). */
const PNDM_ORDER = 4;

export class PNDMScheduler implements Scheduler {
  readonly className = "PNDMScheduler";
  readonly config: PNDMConfig;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  timesteps: number[] = [];
  /** PNDM has no sigma schedule. */
  readonly sigmas = null;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  /** The requested step count (diffusers' num_inference_steps): sets the stride N // n. */
  private numInferenceSteps = 0;
  /** Number of leading Runge-Kutta entries of `timesteps` (0 with skip_prk_steps). */
  private prkCount = 0;
  // Multistep state, as in diffusers: `counter` = number of step() calls so far.
  private counter = 0;
  private ets: Float32Array[] = [];
  private curModelOutput: Float32Array | null = null;
  private curSample: Float32Array | null = null;

  constructor(config: RawSchedulerConfig) {
    this.config = resolveConfig(config, PNDM_DEFAULTS, this.className);
    const p = this.config.prediction_type;
    if (p !== "epsilon" && p !== "v_prediction") unsupported(this.className, "prediction_type", p);
    this.alphasCumprod = makeAlphasCumprod({ ...this.config, rescale_betas_zero_snr: false });
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
  }

  /** `set_timesteps(n)`: the PRK (optional) and PLMS timesteps, high to low; resets the multistep state. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    const N = c.num_train_timesteps;
    checkNumSteps(this.className, n, N);
    // Base timesteps (DDIM's), ascending.
    const base = integerTimesteps(c.timestep_spacing, N, n, c.steps_offset).reverse();

    let prk: number[] = [];
    let plms: number[];
    if (c.skip_prk_steps) {
      // concat(base[:-1], base[-2:-1], base[-1:])[::-1]
      plms = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      if (base.length < PNDM_ORDER) {
        throw new AtedmError(
          `${this.className}: with skip_prk_steps false (Runge-Kutta warm-up) the number of inference steps must be at least ${PNDM_ORDER}, got ${n}`,
        );
      }
      const half = Math.floor(Math.floor(N / n) / 2);
      // base[-4:].repeat(2) + tile([0, half], 4), then [:-1].repeat(2)[1:-1][::-1]
      const rk = base.slice(-PNDM_ORDER).flatMap((t) => [t, t + half]);
      const doubled = rk.slice(0, -1).flatMap((t) => [t, t]);
      prk = doubled.slice(1, -1).reverse();
      plms = base.slice(0, -3).reverse();
    }
    this.timesteps = [...prk, ...plms];
    this.prkCount = prk.length;
    this.numInferenceSteps = n;
    this.counter = 0;
    this.ets = [];
    this.curModelOutput = null;
    this.curSample = null;
  }

  /** PNDM does not scale the UNet input: returns a copy. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    return Float32Array.from(sample);
  }

  /** One `step` call of the pipeline's loop; calls must be consecutive from index 0 (setTimesteps restarts). */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, modelOutput, sample);
    checkConsecutive(this.className, stepIndex, this.counter);
    const t = this.timesteps[stepIndex]!;
    const out =
      this.counter < this.prkCount && !this.config.skip_prk_steps ? this.stepPrk(modelOutput, t, sample) : this.stepPlms(modelOutput, t, sample);
    this.counter++;
    return out;
  }

  /** `step_prk`: one of the 4 stages of a pseudo Runge-Kutta stride. */
  private stepPrk(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const N = this.config.num_train_timesteps;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(N / this.numInferenceSteps) / 2);
    const prevTimestep = timestep - diffToPrev;
    const t = this.timesteps[Math.floor(this.counter / 4) * 4]!;
    let e = modelOutput;
    const stage = this.counter % 4;
    if (stage === 0) {
      this.curModelOutput = axpy(this.curModelOutput, f32(1 / 6), modelOutput);
      this.ets.push(modelOutput);
      this.curSample = sample;
    } else if (stage === 1 || stage === 2) {
      this.curModelOutput = axpy(this.curModelOutput, f32(1 / 3), modelOutput);
    } else {
      e = axpy(this.curModelOutput, f32(1 / 6), modelOutput);
      this.curModelOutput = null;
    }
    return this.prevSample(this.curSample ?? sample, t, prevTimestep, e);
  }

  /** `step_plms`: the linear multistep update (with the duplicated-timestep correction at counter 1). */
  private stepPlms(modelOutput: Float32Array, timestep: number, sample: Float32Array): StepOutput {
    const stride = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    let t = timestep;
    let prevTimestep = timestep - stride;
    let x = sample;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      prevTimestep = timestep;
      t = timestep + stride;
    }
    const ets = this.ets;
    const e1 = ets[ets.length - 1]!;
    const size = sample.length;
    const e = new Float32Array(size);
    if (ets.length === 1 && this.counter === 0) {
      e.set(modelOutput);
      this.curSample = sample;
    } else if (ets.length === 1 && this.counter === 1) {
      for (let j = 0; j < size; j++) e[j] = f32(modelOutput[j]! + e1[j]!) / 2;
      x = this.curSample!;
      this.curSample = null;
    } else if (ets.length === 2) {
      const e2 = ets[0]!;
      for (let j = 0; j < size; j++) e[j] = f32(f32(3 * e1[j]!) - e2[j]!) / 2;
    } else if (ets.length === 3) {
      const [e3, e2] = ets as [Float32Array, Float32Array, Float32Array];
      for (let j = 0; j < size; j++) e[j] = f32(f32(f32(f32(23 * e1[j]!) - f32(16 * e2[j]!)) + f32(5 * e3[j]!)) / 12);
    } else {
      const [e4, e3, e2] = ets as [Float32Array, Float32Array, Float32Array, Float32Array];
      const c = f32(1 / 24);
      for (let j = 0; j < size; j++) {
        const s = f32(f32(f32(f32(55 * e1[j]!) - f32(59 * e2[j]!)) + f32(37 * e3[j]!)) - f32(9 * e4[j]!));
        e[j] = f32(c * s);
      }
    }
    return this.prevSample(x, t, prevTimestep, e);
  }

  /** `_get_prev_sample`: formula (9) from t to prevTimestep with noise estimate e (v_prediction converted first). */
  private prevSample(sample: Float32Array, t: number, prevTimestep: number, e: Float32Array): StepOutput {
    const a = alphaCumprodAt(this.className, this.alphasCumprod, t);
    const ap = prevTimestep >= 0 ? alphaCumprodAt(this.className, this.alphasCumprod, prevTimestep) : this.finalAlphaCumprod;
    const b = f32(1 - a);
    const bp = f32(1 - ap);
    const sqrtA = f32(Math.sqrt(a));
    const sqrtB = f32(Math.sqrt(b));
    const n = sample.length;
    let eps = e;
    if (this.config.prediction_type === "v_prediction") {
      eps = new Float32Array(n);
      for (let j = 0; j < n; j++) eps[j] = f32(sqrtA * e[j]!) + f32(sqrtB * sample[j]!);
    }
    const sampleCoeff = f32(Math.sqrt(f32(ap / a)));
    const denom = f32(f32(a * f32(Math.sqrt(bp))) + f32(Math.sqrt(f32(f32(a * b) * ap))));
    const diff = f32(ap - a);
    const prev = new Float32Array(n);
    const x0 = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      prev[j] = f32(sampleCoeff * sample[j]!) - f32(f32(diff * eps[j]!) / denom);
      x0[j] = f32(sample[j]! - f32(sqrtB * eps[j]!)) / sqrtA;
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}

/** acc + c * x in float32 (acc null = 0, as diffusers' `cur_model_output` starts at 0). */
function axpy(acc: Float32Array | null, c: number, x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let j = 0; j < x.length; j++) {
    const cx = f32(c * x[j]!);
    out[j] = acc === null ? cx : f32(acc[j]! + cx);
  }
  return out;
}
