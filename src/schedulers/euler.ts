/**
 * Euler sampler: mirrors diffusers' `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2, with
 * `s_churn = 0`, i.e. the deterministic ODE Euler method; no noise is ever drawn).
 *
 * The noisy sample is x = x0 + sigma * eps (the "variance exploding" form of the DDPM process, with
 * sigma(t) = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])). Per step i:
 *
 *   UNet input  = x / sqrt(sigma_i^2 + 1)                (scaleModelInput; the UNet also gets timesteps[i])
 *   x0          = x - sigma_i * eps                       (epsilon; see `sigmaX0` in common.ts for v / sample)
 *   d           = (x - x0) / sigma_i                      (the ODE derivative dx/dsigma)
 *   x'          = x + d * (sigma_{i+1} - sigma_i)
 *
 * Supported config: beta schedules, `trained_betas`, `rescale_betas_zero_snr`, prediction types epsilon /
 * v_prediction / sample, all three timestep spacings, `use_karras_sigmas`, `final_sigmas_type`, `sigma_min` /
 * `sigma_max` (Karras only). Rejected with an AtedmError: `interpolation_type: "log_linear"`,
 * `use_exponential_sigmas`, `use_beta_sigmas`, and `timestep_type: "continuous"` with v_prediction (EDM-style
 * timesteps).
 */
import {
  NOISE_SCHEDULE_DEFAULTS,
  checkNumSteps,
  checkStepArgs,
  interpAtIndex,
  karrasSigmas,
  logF32,
  makeAlphasCumprod,
  resolveConfig,
  sigmaToT,
  sigmasFromAlphasCumprod,
  unsupported,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
  sigmaSamplerTimesteps,
  sigmaInitNoise,
  sigmaX0,
} from "./common.js";

const f32 = Math.fround;

/** `EulerDiscreteScheduler.__init__` defaults: the values used for keys a config does not have. */
export const EULER_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  prediction_type: "epsilon",
  interpolation_type: "linear",
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: "linspace",
  timestep_type: "discrete",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: "zero",
} satisfies Partial<SchedulerConfig>;

export type EulerConfig = Pick<SchedulerConfig, keyof typeof EULER_DEFAULTS>;

export class EulerDiscreteScheduler implements Scheduler {
  readonly className = "EulerDiscreteScheduler";
  readonly config: EulerConfig;
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  initNoiseSigma = 1;
  readonly stochastic = false;
  /** sigma(t) for every training timestep t (float32). */
  private readonly trainSigmas: Float32Array;

  constructor(config: RawSchedulerConfig) {
    this.config = resolveConfig(config, EULER_DEFAULTS, this.className);
    const c = this.config;
    if (c.interpolation_type !== "linear") unsupported(this.className, "interpolation_type", c.interpolation_type);
    if (c.use_exponential_sigmas) unsupported(this.className, "use_exponential_sigmas", true);
    if (c.use_beta_sigmas) unsupported(this.className, "use_beta_sigmas", true);
    if (c.timestep_type === "continuous" && c.prediction_type === "v_prediction") {
      unsupported(this.className, "timestep_type", "continuous", ' with prediction_type "v_prediction"');
    }
    this.alphasCumprod = makeAlphasCumprod(c, /* zeroSnrFloor */ true);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  /** `set_timesteps(n)`. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    const N = c.num_train_timesteps;
    checkNumSteps(this.className, n, N);

    // 1. Timesteps (float32 values, possibly fractional for linspace).
    let timesteps = sigmaSamplerTimesteps(c.timestep_spacing, N, n, c.steps_offset);

    // 2. Sigmas at those timesteps (numpy float64 interpolation of the float32 training sigmas).
    let sigmas = timesteps.map((t) => interpAtIndex(t, this.trainSigmas));
    if (c.use_karras_sigmas) {
      const sigmaMin = c.sigma_min ?? sigmas[sigmas.length - 1]!;
      const sigmaMax = c.sigma_max ?? sigmas[0]!;
      sigmas = karrasSigmas(sigmaMin, sigmaMax, n);
      const logSigmas = logF32(this.trainSigmas);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, logSigmas)));
    }
    const a0 = this.alphasCumprod[0]!;
    const sigmaLast = c.final_sigmas_type === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.sigmas = [...sigmas, sigmaLast].map(f32);
    this.timesteps = timesteps;

    // 3. init_noise_sigma: max sigma for linspace/trailing, sqrt(max^2 + 1) for leading (float32).
    this.initNoiseSigma = sigmaInitNoise(this.sigmas, c.timestep_spacing);
  }

  /** `scale_model_input`: x / sqrt(sigma^2 + 1), so the UNet sees unit-variance input. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    const sigma = this.sigmas[stepIndex]!;
    const denom = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    const out = new Float32Array(sample.length);
    for (let j = 0; j < sample.length; j++) out[j] = sample[j]! / denom;
    return out;
  }

  /** `step` with s_churn = 0 (see the file comment). */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, modelOutput, sample);
    const sigma = this.sigmas[stepIndex]!;
    const dt = f32(this.sigmas[stepIndex + 1]! - sigma);
    const x0 = sigmaX0(this.config.prediction_type, modelOutput, sample, sigma);
    const prev = new Float32Array(sample.length);
    for (let j = 0; j < sample.length; j++) {
      const derivative = f32(f32(sample[j]! - x0[j]!) / sigma);
      prev[j] = sample[j]! + f32(derivative * dt);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
