/**
 * Euler ancestral sampler: mirrors diffusers' `EulerAncestralDiscreteScheduler` (k-diffusion's `sample_euler_ancestral`
 * with eta 1). Stochastic: every step adds fresh Gaussian noise, which the caller passes to `step` (diffusers draws it
 * inside `step` from the pipeline's generator; here the pipeline draws N(0,1) noise of the sample's size from its own
 * seeded generator at every step, the last included, and passes it).
 *
 * Same noise schedule, timesteps, sigmas, `init_noise_sigma` and UNet input scaling as Euler (see euler.ts). Per step
 * i, with sigma = sigma_i and sigma_to = sigma_{i+1}:
 *
 *   x0          = x - sigma * eps                                  (epsilon; v_prediction as in Euler)
 *   sigma_up    = sqrt(sigma_to^2 (sigma^2 - sigma_to^2) / sigma^2)
 *   sigma_down  = sqrt(sigma_to^2 - sigma_up^2)
 *   x'          = x + (x - x0) / sigma * (sigma_down - sigma) + noise * sigma_up
 *
 * The last step goes to sigma 0, so sigma_up = 0 and its noise has no effect (but is still required, as diffusers
 * still draws it).
 *
 * Supported config: beta schedules, `trained_betas`, `rescale_betas_zero_snr`, prediction types epsilon /
 * v_prediction, all three spacings, `steps_offset`. Rejected: prediction_type "sample" (diffusers raises
 * NotImplementedError). The class has no Karras option (`use_karras_sigmas` in a config is ignored, as in diffusers).
 */
import {
  NOISE_SCHEDULE_DEFAULTS,
  checkNoise,
  checkNumSteps,
  checkStepArgs,
  interpAtIndex,
  makeAlphasCumprod,
  resolveConfig,
  sigmaSamplerTimesteps,
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

/** `EulerAncestralDiscreteScheduler.__init__` defaults: the values used for keys a config does not have. */
export const EULER_ANCESTRAL_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} satisfies Partial<SchedulerConfig>;

export type EulerAncestralConfig = Pick<SchedulerConfig, keyof typeof EULER_ANCESTRAL_DEFAULTS>;

export class EulerAncestralDiscreteScheduler implements Scheduler {
  readonly className = "EulerAncestralDiscreteScheduler";
  readonly config: EulerAncestralConfig;
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  initNoiseSigma = 1;
  readonly stochastic = true;
  private readonly trainSigmas: Float32Array;

  constructor(config: RawSchedulerConfig) {
    this.config = resolveConfig(config, EULER_ANCESTRAL_DEFAULTS, this.className);
    const p = this.config.prediction_type;
    if (p !== "epsilon" && p !== "v_prediction") unsupported(this.className, "prediction_type", p);
    this.alphasCumprod = makeAlphasCumprod(this.config, /* zeroSnrFloor */ true);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  /** `set_timesteps(n)`. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkNumSteps(this.className, numInferenceSteps, c.num_train_timesteps);
    this.timesteps = sigmaSamplerTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    this.sigmas = [...this.timesteps.map((t) => interpAtIndex(t, this.trainSigmas)), 0].map(f32);
    this.initNoiseSigma = sigmaInitNoise(this.sigmas, c.timestep_spacing);
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

  /** `step` with the given N(0,1) `noise` (required: see the file comment). */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: Float32Array): StepOutput {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, modelOutput, sample);
    const z = checkNoise(this.className, noise, sample);
    const sigma = this.sigmas[stepIndex]!;
    const sigmaTo = this.sigmas[stepIndex + 1]!;
    const n = sample.length;
    const x0 = sigmaX0(this.config.prediction_type, modelOutput, sample, sigma);
    const sf2 = f32(sigma * sigma);
    const st2 = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(st2 * f32(sf2 - st2)) / sf2)));
    const sigmaDown = f32(Math.sqrt(f32(st2 - f32(sigmaUp * sigmaUp))));
    const dt = f32(sigmaDown - sigma);
    const prev = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const derivative = f32(f32(sample[j]! - x0[j]!) / sigma);
      const ode = f32(sample[j]! + f32(derivative * dt));
      prev[j] = ode + f32(z[j]! * sigmaUp);
    }
    return { prevSample: prev, predOriginalSample: x0 };
  }
}
