/**
 * DDIM sampler: mirrors diffusers' `DDIMScheduler` with `eta = 0` (deterministic DDIM, Song et al. 2020, eq. 12).
 *
 * Works directly on alphas_cumprod (no sigmas): the noisy sample is x = sqrt(a_t) x0 + sqrt(1 - a_t) eps. Per step
 * at timestep t, with the previous timestep t' = t - num_train_timesteps // n:
 *
 *   x0  = (x - sqrt(1 - a_t) eps) / sqrt(a_t)            (epsilon; v_prediction and sample are converted too)
 *   x'  = sqrt(a_t') x0 + sqrt(1 - a_t') eps
 *
 * where a_t' = alphas_cumprod[t'] or, for t' < 0, `final_alpha_cumprod` (1 if `set_alpha_to_one`, else
 * alphas_cumprod[0]). The UNet input is not scaled and the initial noise has sigma 1.
 *
 * Beware of class defaults when a config lacks a key (diffusers `from_config` semantics): DDIM's own defaults are
 * `clip_sample: true`, `set_alpha_to_one: true`, `timestep_spacing: "leading"`. Keys DDIM does not have (e.g.
 * `use_karras_sigmas`, `final_sigmas_type`) are ignored, as in diffusers.
 *
 * Supported config: beta schedules, `trained_betas`, `rescale_betas_zero_snr`, prediction types epsilon /
 * v_prediction / sample, all three spacings, `steps_offset`, `clip_sample` / `clip_sample_range`,
 * `set_alpha_to_one`. Rejected: `thresholding: true`.
 */
import { AtedmError } from "../errors.js";
import {
  NOISE_SCHEDULE_DEFAULTS,
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
  alphaSigmaX0,
  alphaSigmaEps,
} from "./common.js";

const f32 = Math.fround;

/** `DDIMScheduler.__init__` defaults: the values used for keys a config does not have. */
export const DDIM_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  clip_sample: true,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  clip_sample_range: 1.0,
  timestep_spacing: "leading",
  rescale_betas_zero_snr: false,
} satisfies Partial<SchedulerConfig>;

export type DDIMConfig = Pick<SchedulerConfig, keyof typeof DDIM_DEFAULTS>;

export class DDIMScheduler implements Scheduler {
  readonly className = "DDIMScheduler";
  readonly config: DDIMConfig;
  readonly alphasCumprod: Float32Array;
  /** alphas_cumprod "before" timestep 0, used by the last step. */
  readonly finalAlphaCumprod: number;
  timesteps: number[] = [];
  /** DDIM has no sigma schedule. */
  readonly sigmas = null;
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  /** The requested step count (diffusers' num_inference_steps); sets the stride t - t'. */
  private numInferenceSteps = 0;

  constructor(config: RawSchedulerConfig) {
    this.config = resolveConfig(config, DDIM_DEFAULTS, this.className);
    if (this.config.thresholding) unsupported(this.className, "thresholding", true);
    this.alphasCumprod = makeAlphasCumprod(this.config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0]!;
  }

  /** `set_timesteps(n)`: integer timesteps, high to low. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    const N = c.num_train_timesteps;
    checkNumSteps(this.className, n, N);
    this.numInferenceSteps = n;
    this.timesteps = integerTimesteps(c.timestep_spacing, N, n, c.steps_offset);
  }

  /** DDIM does not scale the UNet input: returns a copy. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    return Float32Array.from(sample);
  }

  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, modelOutput, sample);
    const c = this.config;
    const t = this.timesteps[stepIndex]!;
    const prevT = t - Math.floor(c.num_train_timesteps / this.numInferenceSteps);
    const alphaProdT = this.alphaCumprodAt(t);
    const alphaProdPrev = prevT >= 0 ? this.alphaCumprodAt(prevT) : this.finalAlphaCumprod;
    const sqrtAlpha = f32(Math.sqrt(alphaProdT));
    const sqrtBeta = f32(Math.sqrt(f32(1 - alphaProdT)));

    // 1. x0 and eps from the model output (alpha = sqrt(a_t), sigma = sqrt(1 - a_t)).
    const n = sample.length;
    const x0 = alphaSigmaX0(c.prediction_type, modelOutput, sample, sqrtAlpha, sqrtBeta);
    const eps = alphaSigmaEps(c.prediction_type, modelOutput, sample, sqrtAlpha, sqrtBeta, x0);

    // 2. Optional clipping of x0 (eps is not re-derived: diffusers' use_clipped_model_output defaults to false).
    if (c.clip_sample) {
      const r = f32(c.clip_sample_range);
      for (let j = 0; j < n; j++) x0[j] = Math.min(Math.max(x0[j]!, -r), r);
    }

    // 3. x_{t'} = sqrt(a_t') x0 + sqrt(1 - a_t' - std_dev^2) eps, std_dev = eta * ... = 0.
    const sqrtAlphaPrev = f32(Math.sqrt(alphaProdPrev));
    const dirCoef = f32(Math.sqrt(f32(1 - alphaProdPrev)));
    const prev = new Float32Array(n);
    for (let j = 0; j < n; j++) prev[j] = f32(sqrtAlphaPrev * x0[j]!) + f32(dirCoef * eps[j]!);
    return { prevSample: prev, predOriginalSample: x0 };
  }

  /**
   * alphas_cumprod[t] with Python indexing: t = -1 (the last step of the trailing-spacing quirk, see setTimesteps)
   * reads the last entry, exactly as diffusers does.
   */
  private alphaCumprodAt(t: number): number {
    const N = this.alphasCumprod.length;
    if (!Number.isInteger(t) || t < -N || t >= N) {
      throw new AtedmError(`${this.className}: timestep ${t} outside alphas_cumprod [0, ${N})`);
    }
    return this.alphasCumprod[t < 0 ? N + t : t]!;
  }
}
