/**
 * DPM-Solver++ 2M: mirrors diffusers' `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"` and
 * `solver_order=2` (Lu et al. 2022, "DPM-Solver++", Algorithm 2: the multistep second-order data-prediction solver).
 * Those two settings are forced whatever the config says, like
 * `DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)` (what the user
 * asks for with `--scheduler dpm++2m`); `schedulerForConfig` (index.ts) refuses a DPMSolverMultistepScheduler config
 * that names another algorithm or order, instead of silently running this one.
 *
 * With sigma the Euler-style noise level, alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha_t and
 * lambda = log(alpha_t / sigma_t) (half log-SNR). Each step first converts the model output to an x0 prediction m_i
 * (epsilon: m = (x - sigma_t eps) / alpha_t), then, with h = lambda_{i+1} - lambda_i:
 *
 *   first order (= DDIM):  x' = (sigma_t' / sigma_t) x - alpha_t' (e^-h - 1) m_i
 *   second order:          x' = (sigma_t' / sigma_t) x - alpha_t' (e^-h - 1) (m_i + D1 / 2)      ("midpoint")
 *                          with r = h_prev / h, D1 = (m_i - m_{i-1}) / r
 *
 * The first step is first order (no previous output yet); so is the last step when `final_sigmas_type` is "zero"
 * (always), when `euler_at_final`, or when `lower_order_final` and fewer than 15 steps. With a final sigma of 0,
 * lambda is +inf, e^-h = 0, and the last step returns m exactly.
 *
 * Note the timestep spacing differs from Euler/DDIM: "leading" uses a stride of N // (n + 1) (n=4 gives
 * [801, 601, 401, 201]) and "linspace" spreads n + 1 points and drops the last. The default spacing is "linspace".
 * The UNet input is not scaled and the initial noise has sigma 1.
 *
 * Supported config: beta schedules, `trained_betas`, `rescale_betas_zero_snr`, prediction types epsilon /
 * v_prediction / sample, all three spacings, `steps_offset`, `use_karras_sigmas` (with `sigma_min`/`sigma_max`),
 * `solver_type` midpoint / heun (UniPC's bh1 / bh2 and "logrho" mean midpoint, as in diffusers), `lower_order_final`,
 * `euler_at_final`, `final_sigmas_type`, `lambda_min_clipped`.
 * Rejected: `thresholding`, `variance_type` learned*, `use_exponential_sigmas`, `use_beta_sigmas`,
 * `use_lu_lambdas`, `use_flow_sigmas`.
 */
import { AtedmError } from "../errors.js";
import {
  NOISE_SCHEDULE_DEFAULTS,
  checkNumSteps,
  checkStepArgs,
  interpAtIndex,
  karrasSigmas,
  logF32,
  makeAlphasCumprod,
  resolveConfig,
  roundHalfEven,
  sigmaToT,
  sigmasFromAlphasCumprod,
  unsupported,
  alphaSigmaLambda,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
  multistepTimesteps,
  alphaSigmaX0,
} from "./common.js";

const f32 = Math.fround;

/** `DPMSolverMultistepScheduler.__init__` defaults (plus sigma_min/sigma_max, read by its Karras conversion). */
export const DPM_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_flow_sigmas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  sigma_min: null,
  sigma_max: null,
} satisfies Partial<SchedulerConfig>;

export type DPMConfig = Pick<SchedulerConfig, keyof typeof DPM_DEFAULTS>;

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly className = "DPMSolverMultistepScheduler";
  readonly config: DPMConfig;
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  private readonly trainSigmas: Float32Array;
  /** Multistep state: the x0 prediction of the previous step and that step's index (null before the first step). */
  private prevX0: Float32Array | null = null;
  private lastStepIndex: number | null = null;

  constructor(config: RawSchedulerConfig) {
    const c = resolveConfig(config, DPM_DEFAULTS, this.className);
    // UniPC's solver types (bh1, bh2) and "logrho" become "midpoint", as diffusers' __init__ re-registers them.
    const solverType = c.solver_type === "heun" ? "heun" : "midpoint";
    this.config = { ...c, algorithm_type: "dpmsolver++", solver_order: 2, solver_type: solverType };
    if (c.thresholding) unsupported(this.className, "thresholding", true);
    if (c.variance_type !== null) unsupported(this.className, "variance_type", c.variance_type);
    for (const key of ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"] as const) {
      if (c[key]) unsupported(this.className, key, true);
    }
    this.alphasCumprod = makeAlphasCumprod(c, /* zeroSnrFloor */ true);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
  }

  /** `set_timesteps(n)`; also clears the multistep state. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    const N = c.num_train_timesteps;
    checkNumSteps(this.className, n, N);

    // 1. Integer timesteps, high to low, up to last_timestep (N unless lambda_min_clipped cuts the noisy end).
    const last = N - this.clippedIndex();
    let timesteps = multistepTimesteps(c.timestep_spacing, last, N, n, c.steps_offset);

    // 2. Sigmas (float64 like numpy, stored as float32).
    let sigmas: number[];
    if (c.use_karras_sigmas) {
      // Karras over the whole training range (unlike Euler, which uses the sigmas at the chosen timesteps).
      sigmas = karrasSigmas(c.sigma_min ?? this.trainSigmas[0]!, c.sigma_max ?? this.trainSigmas[N - 1]!, n);
      const logSigmas = logF32(this.trainSigmas);
      const round = c.beta_schedule !== "squaredcos_cap_v2";
      // Fractional timesteps are rounded (except for the cosine schedule), then cast to int64 (truncation).
      timesteps = sigmas.map((s) => Math.trunc(round ? roundHalfEven(sigmaToT(s, logSigmas)) : sigmaToT(s, logSigmas)));
    } else {
      sigmas = timesteps.map((t) => interpAtIndex(t, this.trainSigmas));
    }
    const a0 = this.alphasCumprod[0]!;
    const sigmaLast = c.final_sigmas_type === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    this.sigmas = [...sigmas, sigmaLast].map(f32);
    this.timesteps = timesteps;
    this.prevX0 = null;
    this.lastStepIndex = null;
  }

  /** DPM-Solver does not scale the UNet input: returns a copy. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    return Float32Array.from(sample);
  }

  /**
   * One solver step. Steps must be consecutive after the first (which may start anywhere, e.g. img2img); call
   * setTimesteps to start over.
   */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    const numSteps = this.timesteps.length;
    checkStepArgs(this.className, numSteps, stepIndex, modelOutput, sample);
    if (this.lastStepIndex !== null && stepIndex !== this.lastStepIndex + 1) {
      throw new AtedmError(
        `${this.className}: step(${stepIndex}) after step(${this.lastStepIndex}); multistep solvers need consecutive steps (call setTimesteps to restart)`,
      );
    }
    const c = this.config;
    const x0 = this.convertModelOutput(modelOutput, stepIndex, sample);
    const isLast = stepIndex === numSteps - 1;
    const lowerOrderFinal = isLast && (c.euler_at_final || (c.lower_order_final && numSteps < 15) || c.final_sigmas_type === "zero");
    const prevSample =
      this.prevX0 === null || lowerOrderFinal
        ? this.firstOrderUpdate(x0, stepIndex, sample)
        : this.secondOrderUpdate(x0, this.prevX0, stepIndex, sample);
    this.prevX0 = x0;
    this.lastStepIndex = stepIndex;
    return { prevSample, predOriginalSample: x0 };
  }

  /** `convert_model_output` for dpmsolver++: the x0 (data) prediction. */
  private convertModelOutput(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    const { alpha, sigma } = alphaSigmaLambda(this.sigmas[stepIndex]!);
    return alphaSigmaX0(this.config.prediction_type, modelOutput, sample, alpha, sigma);
  }

  /** `dpm_solver_first_order_update` (dpmsolver++): from sigmas[i] to sigmas[i + 1] with the current x0 only. */
  private firstOrderUpdate(m0: Float32Array, i: number, sample: Float32Array): Float32Array {
    const t = alphaSigmaLambda(this.sigmas[i + 1]!);
    const s = alphaSigmaLambda(this.sigmas[i]!);
    const h = f32(t.lambda - s.lambda);
    const ratio = f32(t.sigma / s.sigma);
    const coef = f32(t.alpha * f32(f32(Math.exp(-h)) - 1));
    const out = new Float32Array(sample.length);
    for (let j = 0; j < out.length; j++) out[j] = f32(ratio * sample[j]!) - f32(coef * m0[j]!);
    return out;
  }

  /** `multistep_dpm_solver_second_order_update` (dpmsolver++): uses the x0 of this step (m0) and the previous (m1). */
  private secondOrderUpdate(m0: Float32Array, m1: Float32Array, i: number, sample: Float32Array): Float32Array {
    const t = alphaSigmaLambda(this.sigmas[i + 1]!);
    const s0 = alphaSigmaLambda(this.sigmas[i]!);
    const s1 = alphaSigmaLambda(this.sigmas[i - 1]!);
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const invR0 = f32(1 / r0);
    const ratio = f32(t.sigma / s0.sigma);
    const expm1 = f32(f32(Math.exp(-h)) - 1); // e^-h - 1, computed as torch does (not expm1)
    const coefD0 = f32(t.alpha * expm1);
    // midpoint: - 0.5 * alpha_t (e^-h - 1) D1;  heun: + alpha_t ((e^-h - 1) / h + 1) D1
    const coefD1 = this.config.solver_type === "midpoint" ? f32(-f32(0.5 * coefD0)) : f32(t.alpha * f32(f32(expm1 / h) + 1));
    const out = new Float32Array(sample.length);
    for (let j = 0; j < out.length; j++) {
      const d1 = f32(invR0 * f32(m0[j]! - m1[j]!));
      out[j] = f32(f32(ratio * sample[j]!) - f32(coefD0 * m0[j]!)) + f32(coefD1 * d1);
    }
    return out;
  }

  /**
   * `lambda_min_clipped`: how many of the noisiest training timesteps to skip, i.e. the count of timesteps whose
   * lambda (ascending from t = N-1 down to 0) is below the clip value (searchsorted, left). 0 for the default -inf.
   */
  private clippedIndex(): number {
    const clip = f32(this.config.lambda_min_clipped);
    const acp = this.alphasCumprod;
    const N = acp.length;
    for (let k = 0; k < N; k++) {
      const a = acp[N - 1 - k]!;
      const lambda = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
      if (lambda >= clip) return k;
    }
    return N;
  }
}
