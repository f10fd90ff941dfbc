/**
 * Shared pieces of the diffusers schedulers (mirrors `diffusers.schedulers.scheduling_utils` plus the helpers each
 * diffusers scheduler module copies: `betas_for_alpha_bar`, `rescale_zero_terminal_snr`, the beta schedules, the
 * timestep spacings and the Karras sigma conversion).
 *
 * Numerics: diffusers computes the noise schedule with torch float32 tensors and, in `set_timesteps`, numpy float64.
 * We emulate float32 by rounding with `Math.fround` after every operation that torch does in float32 (a double
 * result of `+ - * /` or `sqrt` on float32 operands, rounded to float32, is exactly the float32 result). numpy
 * float64 code is plain JavaScript number arithmetic. Two torch details matter for bit-exactness of
 * `alphas_cumprod`: `torch.linspace` evaluates `start + step * i` with one rounding (a fused multiply-add, measured
 * against the golden tensors), and `torch.cumprod` on CPU accumulates float32 in float64.
 *
 * Config handling mirrors `XScheduler.from_config(config)`: keys the target class knows are taken from the config,
 * missing keys get that class's own defaults (which differ between classes, e.g. `timestep_spacing`), and keys it
 * does not know are ignored.
 */
import { AtedmError } from "../errors.js";
import { int, invalid, isObject, kindOf, LIMITS, num, readTextFile, type Schema, show, v as valibot } from "../io/config_schema.js";
import { torchLinspaceF32 } from "../util/numerics.js";

const f32 = Math.fround;

// ---------------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------------

export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";
/** What the UNet predicts. `original_sample` is diffusers' old spelling of `sample`. */
export type PredictionType = "epsilon" | "v_prediction" | "sample" | "original_sample";
/** Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv 2305.08891). */
export type TimestepSpacing = "leading" | "trailing" | "linspace";
export type FinalSigmasType = "zero" | "sigma_min";

/**
 * The keys of a diffusers `scheduler_config.json` that atedm understands (union over the classes; each class
 * reads only its own keys). Values are as in diffusers; see each scheduler file for which keys it uses.
 */
export type SchedulerConfig = {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  /** Explicit betas (overrides beta_start/beta_end/beta_schedule). */
  trained_betas: number[] | null;
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  // DDIM
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
  /** Dynamic thresholding (pixel-space models); only `false` is supported. */
  thresholding: boolean;
  // Euler and DPM-Solver sigma schedules
  interpolation_type: "linear" | "log_linear";
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  sigma_min: number | null;
  sigma_max: number | null;
  timestep_type: "discrete" | "continuous";
  final_sigmas_type: FinalSigmasType;
  // DPM-Solver and UniPC
  solver_order: number;
  algorithm_type: "dpmsolver++" | "dpmsolver" | "sde-dpmsolver++" | "sde-dpmsolver";
  /**
   * DPM-Solver: midpoint / heun; UniPC: bh1 / bh2. Each class maps the other family's values to its default
   * (DPM-Solver: "midpoint", UniPC: "bh2"), as diffusers does.
   */
  solver_type: "midpoint" | "heun" | "logrho" | "bh1" | "bh2";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_lu_lambdas: boolean;
  use_flow_sigmas: boolean;
  lambda_min_clipped: number;
  variance_type: "learned" | "learned_range" | null;
  // UniPC
  predict_x0: boolean;
  /** Step indexes whose corrector (applied at the next step) is skipped. */
  disable_corrector: number[];
  use_dynamic_shifting: boolean;
  // PNDM
  skip_prk_steps: boolean;
};

/** The noise-schedule defaults every diffusers scheduler class shares (`__init__` keyword defaults). */
export const NOISE_SCHEDULE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
} as const;

/** A config as read from JSON: any subset of the keys, plus keys we ignore (`_class_name`, ...). */
export type RawSchedulerConfig = Readonly<Record<string, unknown>>;

/** Allowed values of the string-valued (enum) keys. */
const ENUMS: { readonly [K in keyof SchedulerConfig]?: readonly (string | null)[] } = {
  beta_schedule: ["linear", "scaled_linear", "squaredcos_cap_v2"],
  prediction_type: ["epsilon", "v_prediction", "sample", "original_sample"],
  timestep_spacing: ["leading", "trailing", "linspace"],
  interpolation_type: ["linear", "log_linear"],
  timestep_type: ["discrete", "continuous"],
  final_sigmas_type: ["zero", "sigma_min"],
  algorithm_type: ["dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"],
  solver_type: ["midpoint", "heun", "logrho", "bh1", "bh2"],
  variance_type: ["learned", "learned_range", null],
};

/**
 * Limits of the numeric keys (the table in src/io/config_schema.ts). They are checked when a config file is parsed
 * (`parseSchedulerConfig` / `loadSchedulerConfig`, naming the file) and again by `resolveConfig`, for configs given
 * as objects.
 */
const NUMERIC: { readonly [K in keyof SchedulerConfig]?: Schema<unknown> } = {
  num_train_timesteps: int(LIMITS.trainTimesteps),
  beta_start: num(LIMITS.beta, { low: true, high: true }),
  beta_end: num(LIMITS.beta, { low: true, high: true }),
  trained_betas: valibot.nullable(
    valibot.pipe(
      valibot.array(num(LIMITS.beta, { low: true, high: true }), `null or a list of ${LIMITS.trainTimesteps.join("..")} numbers in (0, 1)`),
      valibot.minLength(LIMITS.trainTimesteps[0], `null or a list of ${LIMITS.trainTimesteps.join("..")} numbers in (0, 1)`),
      valibot.maxLength(LIMITS.trainTimesteps[1], `null or a list of ${LIMITS.trainTimesteps.join("..")} numbers in (0, 1)`),
    ),
  ),
  steps_offset: int(LIMITS.stepsOffset),
  clip_sample_range: num(LIMITS.clipSampleRange, { low: true }),
  sigma_min: valibot.union([valibot.null(), num(LIMITS.sigma)], "null or a number in [0, 100000]"),
  sigma_max: valibot.union([valibot.null(), num(LIMITS.sigma)], "null or a number in [0, 100000]"),
  solver_order: int(LIMITS.solverOrder),
  lambda_min_clipped: valibot.union([valibot.literal(-Infinity), num(LIMITS.lambdaMinClipped)], "-Infinity or a number in [-1000, 1000]"),
};

/** The file each config object returned by `parseSchedulerConfig` / `loadSchedulerConfig` was read from. */
const SOURCES = new WeakMap<object, string>();

/** The first numeric-limit violation of `raw` (keys in `keys` only), as [key, value, expected]; or cross-key ones. */
function numericIssue(raw: RawSchedulerConfig, keys: readonly string[]): [string, unknown, string] | null {
  for (const key of keys) {
    const schema = NUMERIC[key as keyof SchedulerConfig];
    if (!schema || !Object.hasOwn(raw, key) || raw[key] === undefined) continue;
    const r = valibot.safeParse(schema, raw[key], { abortEarly: true });
    if (!r.success) {
      const issue = r.issues[0];
      const index = issue.path?.find((p) => typeof p.key === "number")?.key;
      return [index === undefined ? key : `${key}[${String(index)}]`, issue.input, issue.message];
    }
  }
  return null;
}

/** Cross-key checks of a (partial) config: trained_betas has one beta per training timestep, steps_offset fits. */
function crossKeyIssue(c: Partial<SchedulerConfig>): [string, unknown, string] | null {
  const n = c.num_train_timesteps;
  if (n === undefined) return null;
  if (c.trained_betas && c.trained_betas.length !== n) {
    return ["trained_betas", c.trained_betas, `one beta per training timestep, ${n} (num_train_timesteps), not ${c.trained_betas.length}`];
  }
  if (c.steps_offset !== undefined && c.steps_offset >= n) return ["steps_offset", c.steps_offset, `an integer below num_train_timesteps = ${n}`];
  return null;
}

/**
 * Resolve a raw config against one class's defaults, as diffusers' `from_config` does: every key of `defaults` is
 * taken from `raw` when present, else from `defaults`; other keys of `raw` are ignored. Values are type-checked,
 * numbers held to the limits of src/io/config_schema.ts and enum values validated; a bad value throws an
 * `AtedmError` naming the file (when `raw` came from `loadSchedulerConfig`), the key and the value.
 */
export function resolveConfig<K extends keyof SchedulerConfig>(
  raw: RawSchedulerConfig,
  defaults: Pick<SchedulerConfig, K>,
  className: string,
): Pick<SchedulerConfig, K> {
  const source = configSource(raw);
  const notValid = (key: string, value: unknown, expected: string): AtedmError =>
    new AtedmError(`${source}: ${key} = ${show(value)} is not valid for ${className} (expected ${expected})`);
  const out = { ...defaults } as Record<string, unknown>;
  const numeric = numericIssue(raw, Object.keys(defaults));
  if (numeric) throw notValid(...numeric);
  for (const key of Object.keys(defaults) as K[]) {
    if (!Object.hasOwn(raw, key) || raw[key] === undefined) continue;
    const value = raw[key];
    const def = defaults[key] as unknown;
    const bad = (expected: string): AtedmError => notValid(key, value, expected);
    const allowed = ENUMS[key];
    if (allowed) {
      if (!allowed.includes(value as string | null)) {
        throw bad(`one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
      }
    } else if (NUMERIC[key]) {
      // Checked above.
    } else if (typeof def === "boolean") {
      // diffusers only tests truthiness (`if self.config.use_karras_sigmas:`), so null means false.
      if (value === null) {
        out[key] = false;
        continue;
      }
      if (typeof value !== "boolean") throw bad("true or false");
    } else if (typeof def === "number") {
      if (typeof value !== "number" || Number.isNaN(value)) throw bad("a number");
    }
    out[key] = value;
  }
  const cross = crossKeyIssue(out as Partial<SchedulerConfig>);
  if (cross) throw notValid(...cross);
  return out as Pick<SchedulerConfig, K>;
}

/** Throw an AtedmError for a config option that is valid in diffusers but not implemented here. */
export function unsupported(className: string, key: string, value: unknown, when = ""): never {
  throw new AtedmError(`scheduler config: ${key} = ${JSON.stringify(value)}${when} is not supported by atedm's ${className}`);
}

/**
 * Parse the text of a `scheduler_config.json`. Python's `json.dumps` writes `Infinity`, `-Infinity` and `NaN`
 * (e.g. DPM-Solver's `"lambda_min_clipped": -Infinity`), which `JSON.parse` rejects; they are accepted here.
 */
export function parseSchedulerConfig(text: string, source = "scheduler config"): Record<string, unknown> {
  // Replace the bare tokens outside string literals with marker strings, then map the markers back.
  const MARK = "\u0000atedm-number:";
  let patched = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      patched += ch;
      if (ch === "\\") patched += text[++i] ?? "";
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      inString = true;
      patched += ch;
      continue;
    }
    const token = ["-Infinity", "Infinity", "NaN"].find((t) => text.startsWith(t, i));
    if (token) {
      patched += JSON.stringify(MARK + token);
      i += token.length - 1;
      continue;
    }
    patched += ch;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(patched, (_key, value: unknown) =>
      typeof value === "string" && value.startsWith(MARK) ? Number(value.slice(MARK.length)) : value,
    );
  } catch (e) {
    throw new AtedmError(`${source}: not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(parsed)) throw new AtedmError(`${source}: expected a JSON object, found ${kindOf(parsed)}`);
  // The numeric keys every scheduler class may read are held to their limits here, naming the file.
  const issue = numericIssue(parsed, Object.keys(NUMERIC)) ?? crossKeyIssue(parsed as Partial<SchedulerConfig>);
  if (issue) throw invalid(source, ...issue);
  SOURCES.set(parsed, source);
  return parsed;
}

/** The file a config object was read from (`parseSchedulerConfig` / `loadSchedulerConfig`), else "scheduler config". */
export function configSource(raw: RawSchedulerConfig): string {
  return SOURCES.get(raw) ?? "scheduler config";
}

/** `{ ...raw, ...overrides }`, remembering the file `raw` was read from (for error messages). */
export function withOverrides(raw: RawSchedulerConfig, overrides: RawSchedulerConfig): RawSchedulerConfig {
  const out = { ...raw, ...overrides };
  const source = SOURCES.get(raw);
  if (source !== undefined) SOURCES.set(out, source);
  return out;
}

/**
 * Read a model folder's `scheduler/scheduler_config.json` (or any scheduler config file): a JSON object whose
 * numeric keys are within the limits of src/io/config_schema.ts. Errors name the file; so do the errors of the
 * schedulers later built from the returned object.
 */
export function loadSchedulerConfig(path: string): Record<string, unknown> {
  return parseSchedulerConfig(readTextFile(path, "scheduler config"), path);
}

// ---------------------------------------------------------------------------------------------------------------
// The Scheduler interface
// ---------------------------------------------------------------------------------------------------------------

export interface StepOutput {
  /** x_{t-1}: the sample to feed the next step (after the last step: the final latents). */
  prevSample: Float32Array;
  /** The model's estimate of the clean sample x_0 at this step. */
  predOriginalSample: Float32Array;
}

/**
 * A sampler over a fixed list of inference steps. Usage, like a diffusers pipeline:
 *
 *     s.setTimesteps(n);
 *     let x = noise * s.initNoiseSigma;
 *     for (let i = 0; i < s.timesteps.length; i++) {
 *       const eps = unet(s.scaleModelInput(x, i), s.timesteps[i]);
 *       const z = s.stochastic ? randn(x.length) : undefined;   // fresh N(0,1) noise every step
 *       x = s.step(eps, i, x, z).prevSample;
 *     }
 *
 * Steps are addressed by index (0..timesteps.length-1), not by timestep value; `timesteps.length` may differ from
 * the requested step count (PNDM: n + 1, or more with its Runge-Kutta warm-up; trailing spacing: sometimes n + 1).
 * Multistep schedulers keep state between consecutive `step` calls; `setTimesteps` resets it.
 */
export interface Scheduler {
  /** The diffusers class this mirrors, e.g. "EulerDiscreteScheduler". */
  readonly className: string;
  /** `alphas_cumprod` (float32) of the training noise schedule, length num_train_timesteps. */
  readonly alphasCumprod: Float32Array;
  /** Timestep value of each inference step, to pass to the UNet (integers except Euler with linspace/Karras). */
  readonly timesteps: number[];
  /** sigma of each step plus the final sigma (length timesteps.length + 1); null for schedulers without sigmas (DDIM). */
  readonly sigmas: number[] | null;
  /** Standard deviation of the initial noise: the pipeline multiplies its N(0,1) latents by it. */
  readonly initNoiseSigma: number;
  /** Compute the inference schedule for `numInferenceSteps` steps and reset any multistep state. */
  setTimesteps(numInferenceSteps: number): void;
  /** The UNet input for step `stepIndex` (a new array; the input is not modified). */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array;
  /**
   * Whether `step` adds fresh noise (ancestral samplers). A stochastic scheduler needs `noise` (N(0,1), as many values
   * as the sample; what diffusers draws from its generator inside `step`) at every step and throws an AtedmError
   * without it; the others ignore it.
   */
  readonly stochastic: boolean;
  /** One denoising step from the model output at step `stepIndex` (new arrays; inputs are not modified). */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array, noise?: Float32Array): StepOutput;
}

/** Check the arguments every `step` implementation receives. */
export function checkStepArgs(className: string, numSteps: number, stepIndex: number, modelOutput: Float32Array, sample: Float32Array): void {
  if (numSteps === 0) throw new AtedmError(`${className}: call setTimesteps() before step()`);
  if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= numSteps) {
    throw new AtedmError(`${className}: step index ${stepIndex} out of range [0, ${numSteps})`);
  }
  if (modelOutput.length !== sample.length) {
    throw new AtedmError(`${className}: model output has ${modelOutput.length} values, sample has ${sample.length}`);
  }
}

/** Check the noise a stochastic scheduler's `step` needs: present and one value per sample element. */
export function checkNoise(className: string, noise: Float32Array | undefined, sample: Float32Array): Float32Array {
  if (noise === undefined) {
    throw new AtedmError(`${className} is stochastic: step() needs noise (N(0,1), ${sample.length} values, one per sample element) at every step`);
  }
  if (noise.length !== sample.length) throw new AtedmError(`${className}: noise has ${noise.length} values, sample has ${sample.length}`);
  return noise;
}

/**
 * Check that a multistep scheduler's steps come in order: `stepIndex` must be `expected` (null: any index, for the
 * first step of the solvers that may start mid-schedule).
 */
export function checkConsecutive(className: string, stepIndex: number, expected: number | null): void {
  if (expected !== null && stepIndex !== expected) {
    throw new AtedmError(
      `${className}: step(${stepIndex}) called but the next step is ${expected}; multistep solvers need consecutive steps (call setTimesteps to restart)`,
    );
  }
}

/** Check the argument of `setTimesteps`. */
export function checkNumSteps(className: string, n: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(n) || n < 1 || n > numTrainTimesteps) {
    throw new AtedmError(`${className}: number of inference steps ${n} must be an integer in [1, ${numTrainTimesteps}] (num_train_timesteps)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Noise schedule (betas, alphas_cumprod)
// ---------------------------------------------------------------------------------------------------------------

/**
 * `betas_for_alpha_bar(n)` with the cosine ("squaredcos_cap_v2", GLIDE) transform: computed in float64 and stored as
 * float32, as diffusers does.
 */
export function betasForAlphaBar(numDiffusionTimesteps: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2;
  const betas = new Float32Array(numDiffusionTimesteps);
  for (let i = 0; i < numDiffusionTimesteps; i++) {
    const t1 = i / numDiffusionTimesteps;
    const t2 = (i + 1) / numDiffusionTimesteps;
    betas[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return betas;
}

/** `torch.cumprod` of a float32 tensor on CPU: the running product is kept in float64, each output rounded. */
export function cumprodF32(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i]!;
    out[i] = acc;
  }
  return out;
}

/**
 * `rescale_zero_terminal_snr(betas)` (arXiv 2305.08891, Algorithm 1): shift and scale sqrt(alphas_cumprod) so the
 * last timestep has zero SNR. float32 like diffusers.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const alphas = betas.map((b) => f32(1 - b));
  const sqrtAcp = cumprodF32(alphas).map((a) => f32(Math.sqrt(a)));
  const first = sqrtAcp[0]!;
  const last = sqrtAcp[n - 1]!;
  const scale = f32(first / f32(first - last));
  const alphasBar = sqrtAcp.map((v) => {
    const shifted = f32(f32(v - last) * scale);
    return f32(shifted * shifted);
  });
  const out = new Float32Array(n);
  out[0] = f32(1 - alphasBar[0]!);
  for (let i = 1; i < n; i++) out[i] = f32(1 - f32(alphasBar[i]! / alphasBar[i - 1]!));
  return out;
}

/** The betas of a config (`trained_betas`, or `beta_schedule` from beta_start to beta_end), float32. */
export function makeBetas(
  c: Pick<SchedulerConfig, "num_train_timesteps" | "beta_start" | "beta_end" | "beta_schedule" | "trained_betas" | "rescale_betas_zero_snr">,
): Float32Array {
  let betas: Float32Array;
  if (c.trained_betas !== null) {
    betas = Float32Array.from(c.trained_betas);
  } else if (c.beta_schedule === "linear") {
    betas = torchLinspaceF32(c.beta_start, c.beta_end, c.num_train_timesteps);
  } else if (c.beta_schedule === "scaled_linear") {
    // "very specific to the latent diffusion model": linear in sqrt(beta), then squared (in float32).
    betas = torchLinspaceF32(c.beta_start ** 0.5, c.beta_end ** 0.5, c.num_train_timesteps).map((b) => f32(b * b));
  } else if (c.beta_schedule === "squaredcos_cap_v2") {
    betas = betasForAlphaBar(c.num_train_timesteps);
  } else {
    // resolveConfig has validated the value; this guards direct callers.
    throw new AtedmError(`scheduler config: unknown beta_schedule ${JSON.stringify(c.beta_schedule)}`);
  }
  return c.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

/**
 * `alphas_cumprod = cumprod(1 - betas)` in float32. With `rescale_betas_zero_snr`, Euler and DPM-Solver (not DDIM)
 * replace the last value (exactly 0) by 2^-24 so the first sigma is finite: pass `zeroSnrFloor` for them.
 */
export function makeAlphasCumprod(c: Parameters<typeof makeBetas>[0], zeroSnrFloor = false): Float32Array {
  const acp = cumprodF32(makeBetas(c).map((b) => f32(1 - b)));
  if (c.rescale_betas_zero_snr && zeroSnrFloor) acp[acp.length - 1] = 2 ** -24;
  return acp;
}

/** sigma(t) = sqrt((1 - alphas_cumprod) / alphas_cumprod) for every training timestep, float32. */
export function sigmasFromAlphasCumprod(acp: Float32Array): Float32Array {
  return acp.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

// ---------------------------------------------------------------------------------------------------------------
// numpy helpers used by set_timesteps (float64)
// ---------------------------------------------------------------------------------------------------------------

/** `np.round` / `Tensor.round`: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // rounds .5 up
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `np.arange(start, stop, step)` with a float step: length ceil((stop - start) / step), element i = start + i*step.
 * Faithful to numpy's rounding: e.g. `arange(1000, 0, -1000/61)` has 62 elements, not 61.
 */
export function npArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  // numpy fills a float range from its first two elements: delta = (start + step) - start.
  const delta = start + step - start;
  return Array.from({ length: len }, (_, i) => (i === 0 ? start : i === 1 ? start + step : start + i * delta));
}

/** `np.linspace(start, stop, num)` (float64, endpoint included). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/**
 * `np.interp(x, arange(len(fp)), fp)`: linear interpolation of `fp` at fractional index `x`, clamped at the ends,
 * in float64 with numpy's formula `slope * (x - j) + fp[j]`.
 */
export function interpAtIndex(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return fp[0]!;
  if (x >= last) return fp[last]!;
  const j = Math.floor(x);
  if (j === x) return fp[j]!;
  const slope = fp[j + 1]! - fp[j]!;
  return slope * (x - j) + fp[j]!;
}

/**
 * `_sigma_to_t(sigma, log_sigmas)`: the fractional training timestep whose sigma is `sigma`, interpolating
 * linearly in log sigma. `logSigmas[t]` = log sigma(t), increasing in t.
 */
export function sigmaToT(sigma: number, logSigmas: ArrayLike<number>): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // low = the last index whose log sigma <= log_sigma (0 if none), at most len - 2.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  // numpy: low - log_sigma is float64 (log_sigma is a float64 scalar), low - high is float32 (two float32 values).
  const w = Math.min(Math.max((lo - logSigma) / f32(lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/**
 * `_convert_to_karras`: n sigmas from sigmaMax down to sigmaMin, evenly spaced in sigma^(1/7) (Karras et al. 2022,
 * rho = 7), float64.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7.0;
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((ramp) => (maxInvRho + ramp * (minInvRho - maxInvRho)) ** rho);
}

/**
 * `_sigma_to_alpha_sigma_t` of the multistep solvers (DPM-Solver, UniPC): alpha_t = 1 / sqrt(sigma^2 + 1),
 * sigma_t = sigma * alpha_t (float32), and lambda = log alpha_t - log sigma_t (+inf for sigma = 0).
 */
export function alphaSigmaLambda(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  const sigmaT = f32(sigma * alpha);
  const lambda = f32(f32(Math.log(alpha)) - f32(Math.log(sigmaT)));
  return { alpha, sigma: sigmaT, lambda };
}

/**
 * The float32 timesteps of the sigma-based single-step samplers (Euler, Euler ancestral, LMS), high to low:
 * linspace (fractional), leading (stride N // n, + steps_offset) or trailing (numpy's float arange, so some n give
 * n + 1 steps).
 */
export function sigmaSamplerTimesteps(spacing: TimestepSpacing, N: number, n: number, stepsOffset: number): number[] {
  if (spacing === "linspace") {
    return npLinspace(0, N - 1, n)
      .map(f32)
      .reverse();
  }
  if (spacing === "leading") {
    const ratio = Math.floor(N / n);
    return Array.from({ length: n }, (_, i) => f32(roundHalfEven(i * ratio) + stepsOffset)).reverse();
  }
  return npArange(N, 0, -(N / n)).map((t) => f32(roundHalfEven(t) - 1));
}

/**
 * The integer timesteps of DDIM and PNDM, high to low: linspace (rounded), leading (stride N // n, + steps_offset)
 * or trailing (numpy's float arange, so some n give n + 1 steps, ending at timestep -1), as in diffusers.
 */
export function integerTimesteps(spacing: TimestepSpacing, N: number, n: number, stepsOffset: number): number[] {
  if (spacing === "linspace")
    return npLinspace(0, N - 1, n)
      .map(roundHalfEven)
      .reverse();
  if (spacing === "leading") {
    const ratio = Math.floor(N / n);
    return Array.from({ length: n }, (_, i) => i * ratio + stepsOffset).reverse();
  }
  return npArange(N, 0, -(N / n)).map((t) => roundHalfEven(t) - 1);
}

/**
 * The integer timesteps of the multistep solvers (DPM-Solver, UniPC), high to low: n + 1 points up to `last`
 * (N, or less where `lambda_min_clipped` cuts the noisy end) with the last dropped for linspace and leading; trailing
 * steps by N / n from `last` (numpy's float arange, so some n give n + 1 steps, ending at timestep -1).
 */
export function multistepTimesteps(spacing: TimestepSpacing, last: number, N: number, n: number, stepsOffset: number): number[] {
  if (spacing === "linspace")
    return npLinspace(0, last - 1, n + 1)
      .map(roundHalfEven)
      .reverse()
      .slice(0, n);
  if (spacing === "leading") {
    const ratio = Math.floor(last / (n + 1));
    return Array.from({ length: n + 1 }, (_, i) => i * ratio)
      .reverse()
      .slice(0, n)
      .map((t) => t + stepsOffset);
  }
  return npArange(last, 0, -(N / n)).map((t) => roundHalfEven(t) - 1);
}

/** `init_noise_sigma` of the sigma samplers: the largest sigma, or sqrt(max^2 + 1) for leading spacing (float32). */
export function sigmaInitNoise(sigmas: readonly number[], spacing: TimestepSpacing): number {
  const maxSigma = sigmas.reduce((m, s) => Math.max(m, s), -Infinity);
  return spacing === "leading" ? f32(Math.sqrt(f32(f32(maxSigma * maxSigma) + 1))) : maxSigma;
}

/**
 * The x0 estimate ("denoised") of the sigma samplers (Euler, Euler ancestral, LMS: x = x0 + sigma eps): epsilon
 * x - sigma eps; v_prediction v c_out + x c_skip with c_out = -sigma / sqrt(sigma^2 + 1), c_skip = 1 / (sigma^2 + 1);
 * sample as given. float32 as torch computes it.
 */
export function sigmaX0(prediction: PredictionType, modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
  const x0 = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      for (let j = 0; j < x0.length; j++) x0[j] = sample[j]! - f32(sigma * modelOutput[j]!);
      break;
    case "v_prediction": {
      const s2p1 = f32(f32(sigma * sigma) + 1);
      const cOut = f32(-sigma / f32(Math.sqrt(s2p1)));
      for (let j = 0; j < x0.length; j++) x0[j] = f32(modelOutput[j]! * cOut) + f32(sample[j]! / s2p1);
      break;
    }
    case "sample":
    case "original_sample":
      x0.set(modelOutput);
      break;
  }
  return x0;
}

/**
 * The x0 estimate of the alpha/sigma parametrization (DDIM, DPM-Solver, UniPC: x = alpha x0 + sigma eps): epsilon
 * (x - sigma eps) / alpha; v_prediction alpha x - sigma v; sample as given. float32 as torch computes it.
 */
export function alphaSigmaX0(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alpha: number,
  sigma: number,
): Float32Array {
  const x0 = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      for (let j = 0; j < x0.length; j++) x0[j] = f32(sample[j]! - f32(sigma * modelOutput[j]!)) / alpha;
      break;
    case "v_prediction":
      for (let j = 0; j < x0.length; j++) x0[j] = f32(alpha * sample[j]!) - f32(sigma * modelOutput[j]!);
      break;
    case "sample":
    case "original_sample":
      x0.set(modelOutput);
      break;
  }
  return x0;
}

/** The noise estimate of the same parametrization: epsilon as given; v_prediction alpha v + sigma x; sample (x - alpha x0) / sigma. */
export function alphaSigmaEps(
  prediction: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alpha: number,
  sigma: number,
  x0: Float32Array,
): Float32Array {
  const eps = new Float32Array(sample.length);
  switch (prediction) {
    case "epsilon":
      eps.set(modelOutput);
      break;
    case "v_prediction":
      for (let j = 0; j < eps.length; j++) eps[j] = f32(alpha * modelOutput[j]!) + f32(sigma * sample[j]!);
      break;
    case "sample":
    case "original_sample":
      for (let j = 0; j < eps.length; j++) eps[j] = f32(sample[j]! - f32(alpha * x0[j]!)) / sigma;
      break;
  }
  return eps;
}

/** `alphas_cumprod[t]` with Python indexing (t = -1 reads the last entry); an AtedmError outside [-N, N). */
export function alphaCumprodAt(className: string, acp: Float32Array, t: number): number {
  const N = acp.length;
  if (!Number.isInteger(t) || t < -N || t >= N) throw new AtedmError(`${className}: timestep ${t} outside alphas_cumprod [0, ${N})`);
  return acp[t < 0 ? N + t : t]!;
}

/** log of each float32 sigma, rounded to float32 (`np.log` of a float32 array). */
export function logF32(values: Float32Array): Float32Array {
  return values.map((v) => f32(Math.log(v)));
}
