/**
 * UniPC: mirrors diffusers' `UniPCMultistepScheduler` (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
 * Framework for Fast Sampling of Diffusion Models"), with its defaults: `solver_type` "bh2", `solver_order` 2,
 * `predict_x0` true, `lower_order_final` true, `disable_corrector` [].
 *
 * Same sigma / alpha_t / sigma_t / lambda conventions and the same timesteps as DPM-Solver (dpmpp2m.ts: "leading"
 * uses the stride N // (n + 1), n = 4 gives [801, 601, 401, 201]; default spacing "linspace"); no input scaling,
 * initial noise sigma 1. Each step i:
 *
 *   1. converts the model output to m_i (x0 prediction with predict_x0, else the noise prediction);
 *   2. corrector UniC (from step 1 on, unless i - 1 is in `disable_corrector`): re-does the previous step's update
 *      from the previous sample with m_i included, giving a corrected current sample;
 *   3. predictor UniP of order p = min(solver_order, steps left (lower_order_final), steps done + 1) from the
 *      corrected sample to sigma_{i+1}, using m_i, m_{i-1}, ..., m_{i-p+1}.
 *
 * With x0 prediction and h = lambda_{i+1} - lambda_i, hh = -h, B(h) = e^hh - 1 (bh2) or hh (bh1):
 *   x' = (sigma_t'/sigma_t) x - alpha_t' (e^hh - 1) m_i - alpha_t' B(h) sum_k rho_k D_k,  D_k = (m_{i-k} - m_i) / r_k
 * where the rho solve a small Vandermonde system (order 2 predictor: rho = 0.5; the corrector always solves,
 * except at order 1 where rho = 0.5). The last step to sigma 0 returns m_i (its predictor is first order).
 *
 * Supported config: beta schedules, `trained_betas`, `rescale_betas_zero_snr`, prediction types epsilon /
 * v_prediction / sample, all three spacings, `steps_offset`, `solver_order` (tested: 2, 3), `solver_type` bh1 / bh2
 * (DPM-Solver's midpoint / heun / logrho mean bh2, as in diffusers), `predict_x0`, `lower_order_final`,
 * `disable_corrector`, `use_karras_sigmas` (with `sigma_min` / `sigma_max`; Karras over the whole training range,
 * rounded integer timesteps), `final_sigmas_type`. Rejected: `thresholding`, `use_exponential_sigmas`,
 * `use_beta_sigmas`, `use_flow_sigmas`, `use_dynamic_shifting` (and prediction_type "flow_prediction", which the
 * config validation does not know). diffusers' `solver_p` (another scheduler object) cannot come from a JSON config.
 */
import { AtedmError } from "../errors.js";
import {
  NOISE_SCHEDULE_DEFAULTS,
  alphaSigmaLambda,
  checkConsecutive,
  checkNumSteps,
  checkStepArgs,
  configSource,
  interpAtIndex,
  karrasSigmas,
  logF32,
  makeAlphasCumprod,
  resolveConfig,
  roundHalfEven,
  sigmaToT,
  sigmasFromAlphasCumprod,
  unsupported,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerConfig,
  type StepOutput,
  multistepTimesteps,
  alphaSigmaX0,
  alphaSigmaEps,
} from "./common.js";

const f32 = Math.fround;

/** `UniPCMultistepScheduler.__init__` defaults (the keys atedm reads). */
export const UNIPC_DEFAULTS = {
  ...NOISE_SCHEDULE_DEFAULTS,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  predict_x0: true,
  solver_type: "bh2",
  lower_order_final: true,
  disable_corrector: [] as number[],
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_flow_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
  final_sigmas_type: "zero",
  rescale_betas_zero_snr: false,
  use_dynamic_shifting: false,
  sigma_min: null,
  sigma_max: null,
} satisfies Partial<SchedulerConfig>;

export type UniPCConfig = Pick<SchedulerConfig, keyof typeof UNIPC_DEFAULTS>;

export class UniPCMultistepScheduler implements Scheduler {
  readonly className = "UniPCMultistepScheduler";
  readonly config: UniPCConfig;
  readonly alphasCumprod: Float32Array;
  timesteps: number[] = [];
  sigmas: number[] = [];
  readonly initNoiseSigma = 1;
  readonly stochastic = false;
  private readonly trainSigmas: Float32Array;
  // Multistep state (diffusers: model_outputs, lower_order_nums, last_sample, this_order).
  private modelOutputs: (Float32Array | null)[] = [];
  private lowerOrderNums = 0;
  private lastSample: Float32Array | null = null;
  private thisOrder = 0;
  private nextStep: number | null = null;

  constructor(config: RawSchedulerConfig) {
    const c = resolveConfig(config, UNIPC_DEFAULTS, this.className);
    const dc: unknown = c.disable_corrector;
    if (!Array.isArray(dc) || !dc.every((v) => Number.isInteger(v))) {
      throw new AtedmError(
        `${configSource(config)}: disable_corrector = ${JSON.stringify(dc)} is not valid for ${this.className} (expected a list of step indexes)`,
      );
    }
    // DPM-Solver's solver types are re-registered as bh2 by diffusers' __init__.
    const solverType = c.solver_type === "bh1" ? "bh1" : "bh2";
    this.config = { ...c, solver_type: solverType };
    if (c.thresholding) unsupported(this.className, "thresholding", true);
    for (const key of ["use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting"] as const) {
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
    let timesteps = multistepTimesteps(c.timestep_spacing, N, N, n, c.steps_offset);
    let sigmas: number[];
    let sigmaLast: number;
    if (c.use_karras_sigmas) {
      sigmas = karrasSigmas(c.sigma_min ?? this.trainSigmas[0]!, c.sigma_max ?? this.trainSigmas[N - 1]!, n);
      const logSigmas = logF32(this.trainSigmas);
      timesteps = sigmas.map((s) => Math.trunc(roundHalfEven(sigmaToT(s, logSigmas))));
      sigmaLast = c.final_sigmas_type === "zero" ? 0 : sigmas[sigmas.length - 1]!;
    } else {
      sigmas = timesteps.map((t) => interpAtIndex(t, this.trainSigmas));
      const a0 = this.alphasCumprod[0]!;
      sigmaLast = c.final_sigmas_type === "zero" ? 0 : f32(Math.sqrt(f32(f32(1 - a0) / a0)));
    }
    this.sigmas = [...sigmas, sigmaLast].map(f32);
    this.timesteps = timesteps;
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.lastSample = null;
    this.thisOrder = 0;
    this.nextStep = null;
  }

  /** UniPC does not scale the UNet input: returns a copy. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    checkStepArgs(this.className, this.timesteps.length, stepIndex, sample, sample);
    return Float32Array.from(sample);
  }

  /** One predictor-corrector step. Steps must be consecutive after the first; setTimesteps starts over. */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): StepOutput {
    const numSteps = this.timesteps.length;
    checkStepArgs(this.className, numSteps, stepIndex, modelOutput, sample);
    checkConsecutive(this.className, stepIndex, this.nextStep);
    const c = this.config;
    const useCorrector = stepIndex > 0 && !c.disable_corrector.includes(stepIndex - 1) && this.lastSample !== null;
    const converted = this.convertModelOutput(modelOutput, stepIndex, sample);
    let x = sample;
    if (useCorrector) x = this.correctorUpdate(converted, this.lastSample!, sample, this.thisOrder, stepIndex);
    this.modelOutputs.shift();
    this.modelOutputs.push(converted.m);
    const order = c.lower_order_final ? Math.min(c.solver_order, numSteps - stepIndex) : c.solver_order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.lastSample = x;
    const prevSample = this.predictorUpdate(x, this.thisOrder, stepIndex);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.nextStep = stepIndex + 1;
    return { prevSample, predOriginalSample: converted.x0 };
  }

  /** `convert_model_output`: m (x0 with predict_x0, else eps) and the x0 estimate (for predOriginalSample). */
  private convertModelOutput(modelOutput: Float32Array, i: number, sample: Float32Array): { m: Float32Array; x0: Float32Array } {
    const { alpha, sigma } = alphaSigmaLambda(this.sigmas[i]!);
    const p = this.config.prediction_type;
    const x0 = alphaSigmaX0(p, modelOutput, sample, alpha, sigma);
    return { m: this.config.predict_x0 ? x0 : alphaSigmaEps(p, modelOutput, sample, alpha, sigma, x0), x0 };
  }

  /**
   * The coefficients both updates share: h, the step's phi terms, B(h), and the Vandermonde system R, b of
   * `order` rows, from the lambdas of sigmas[iT] (target), sigmas[iS0] (start) and sigmas[iS0 - k] (history).
   */
  private coefficients(iT: number, iS0: number, order: number) {
    const t = alphaSigmaLambda(this.sigmas[iT]!);
    const s0 = alphaSigmaLambda(this.sigmas[iS0]!);
    const h = f32(t.lambda - s0.lambda);
    const rks: number[] = [];
    for (let k = 1; k < order; k++) {
      const si = alphaSigmaLambda(this.sigmas[iS0 - k]!);
      rks.push(f32(f32(si.lambda - s0.lambda) / h));
    }
    rks.push(1);
    const hh = this.config.predict_x0 ? -h : h;
    const hPhi1 = f32(Math.expm1(hh));
    let hPhiK = f32(f32(hPhi1 / hh) - 1);
    let factorial = 1;
    const bH = this.config.solver_type === "bh1" ? hh : f32(Math.expm1(hh));
    const R: number[][] = [];
    const b: number[] = [];
    for (let k = 1; k <= order; k++) {
      R.push(rks.map((r) => f32(r ** (k - 1))));
      b.push(f32(f32(hPhiK * factorial) / bH));
      factorial *= k + 1;
      hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
    }
    return { t, s0, hPhi1, bH, rks, R, b };
  }

  /** `multistep_uni_p_bh_update`: from the (corrected) sample at sigmas[i] to sigmas[i + 1]. */
  private predictorUpdate(x: Float32Array, order: number, i: number): Float32Array {
    const { t, s0, hPhi1, bH, rks, R, b } = this.coefficients(i + 1, i, order);
    const outs = this.modelOutputs;
    const m0 = outs[outs.length - 1]!;
    const D1s: Float32Array[] = [];
    for (let k = 1; k < order; k++) D1s.push(divDiff(outs[outs.length - 1 - k]!, m0, rks[k - 1]!));
    let rhos: number[] = [];
    if (D1s.length > 0) {
      rhos =
        order === 2
          ? [0.5]
          : solveF32(
              R.slice(0, -1).map((row) => row.slice(0, -1)),
              b.slice(0, -1),
            );
    }
    return this.update(x, m0, t, s0, hPhi1, bH, D1s, rhos, null);
  }

  /** `multistep_uni_c_bh_update`: re-does the step sigmas[i - 1] -> sigmas[i] from `lastSample` with `mT` included. */
  private correctorUpdate(mT: { m: Float32Array }, lastSample: Float32Array, _thisSample: Float32Array, order: number, i: number): Float32Array {
    const { t, s0, hPhi1, bH, rks, R, b } = this.coefficients(i, i - 1, order);
    const outs = this.modelOutputs;
    const m0 = outs[outs.length - 1]!;
    const D1s: Float32Array[] = [];
    for (let k = 1; k < order; k++) D1s.push(divDiff(outs[outs.length - 1 - k]!, m0, rks[k - 1]!));
    const rhos = order === 1 ? [0.5] : solveF32(R, b);
    return this.update(lastSample, m0, t, s0, hPhi1, bH, D1s, rhos.slice(0, -1), { mT: mT.m, rhoT: rhos[rhos.length - 1]! });
  }

  /**
   * x_t = (sigma_t / sigma_s0) x - alpha_t hPhi1 m0 - alpha_t B(h) (sum_k rho_k D_k [+ rhoT (mT - m0)]) with x0
   * prediction; (alpha_t / alpha_s0) x - sigma_t hPhi1 m0 - sigma_t B(h) (...) with noise prediction. Float32 in
   * diffusers' evaluation order.
   */
  private update(
    x: Float32Array,
    m0: Float32Array,
    t: { alpha: number; sigma: number },
    s0: { alpha: number; sigma: number },
    hPhi1: number,
    bH: number,
    D1s: Float32Array[],
    rhos: number[],
    corr: { mT: Float32Array; rhoT: number } | null,
  ): Float32Array {
    const x0Pred = this.config.predict_x0;
    const ratio = x0Pred ? f32(t.sigma / s0.sigma) : f32(t.alpha / s0.alpha);
    const scale = x0Pred ? t.alpha : t.sigma;
    const cM0 = f32(scale * hPhi1);
    const cRes = f32(scale * bH);
    const n = x.length;
    const out = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const base = f32(f32(ratio * x[j]!) - f32(cM0 * m0[j]!));
      let res = 0; // diffusers: 0 when there are no D1s
      if (D1s.length > 0) {
        res = f32(rhos[0]! * D1s[0]![j]!);
        for (let k = 1; k < D1s.length; k++) res = f32(res + f32(rhos[k]! * D1s[k]![j]!));
      }
      if (corr) res = f32(res + f32(corr.rhoT * f32(corr.mT[j]! - m0[j]!)));
      out[j] = f32(base - f32(cRes * res));
    }
    return out;
  }
}

/** (mi - m0) / r in float32. */
function divDiff(mi: Float32Array, m0: Float32Array, r: number): Float32Array {
  const out = new Float32Array(m0.length);
  for (let j = 0; j < out.length; j++) out[j] = f32(mi[j]! - m0[j]!) / r;
  return out;
}

/** Solve A x = b (small, dense) by Gaussian elimination with partial pivoting in float32, like `torch.linalg.solve`. */
export function solveF32(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row.map(f32), f32(b[i]!)]);
  for (let col = 0; col < n; col++) {
    let p = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(M[r]![col]!) > Math.abs(M[p]![col]!)) p = r;
    [M[col], M[p]] = [M[p]!, M[col]!];
    const pivot = M[col]![col]!;
    for (let r = col + 1; r < n; r++) {
      const factor = f32(M[r]![col]! / pivot);
      for (let k = col; k <= n; k++) M[r]![k] = f32(M[r]![k]! - f32(factor * M[col]![k]!));
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r]![n]!;
    for (let k = r + 1; k < n; k++) s = f32(s - f32(M[r]![k]! * x[k]!));
    x[r] = f32(s / M[r]![r]!);
  }
  return x;
}
