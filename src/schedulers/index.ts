/**
 * Schedulers (samplers), pure TypeScript ports of diffusers' scheduler classes:
 *
 * | name             | diffusers class                  | notes                                              |
 * |------------------|----------------------------------|----------------------------------------------------|
 * | euler            | EulerDiscreteScheduler           |                                                    |
 * | euler-karras     | EulerDiscreteScheduler           | use_karras_sigmas: true                            |
 * | euler-a          | EulerAncestralDiscreteScheduler  | stochastic: step() needs N(0,1) noise every step   |
 * | ddim             | DDIMScheduler                    | eta 0                                              |
 * | pndm             | PNDMScheduler                    | PLMS (skip_prk_steps true; PRK warm-up if false)   |
 * | lms              | LMSDiscreteScheduler             | order 4                                            |
 * | lms-karras       | LMSDiscreteScheduler             | use_karras_sigmas: true                            |
 * | unipc            | UniPCMultistepScheduler          | bh2, order 2 (from the config)                     |
 * | unipc-karras     | UniPCMultistepScheduler          | use_karras_sigmas: true                            |
 * | dpm++2m          | DPMSolverMultistepScheduler      | algorithm_type dpmsolver++, solver_order 2         |
 * | dpm++2m-karras   | DPMSolverMultistepScheduler      | use_karras_sigmas: true                            |
 *
 * Two ways to build one from a model folder's `scheduler/scheduler_config.json`:
 *
 * - `schedulerForConfig(config)`: the class the config names (`_class_name`) with the config's own settings, exactly
 *   as diffusers' `from_pretrained` builds the pipeline's scheduler (SD-1.5's folder gives "pndm", a folder saved with
 *   Karras Euler gives "euler-karras"). A class atedm does not implement, a missing `_class_name` (diffusers itself
 *   cannot load such a folder) and a DPM-Solver variant other than DPM-Solver++ 2M are one-line AtedmErrors that
 *   suggest `--scheduler NAME`.
 * - `createScheduler(name, config)` (or `schedulerForConfig(config, name)`): the sampler the user picked, built from
 *   the folder's config whatever class it names, as diffusers' `XScheduler.from_config(pipe.scheduler.config)`: the
 *   folder's betas, prediction type, spacing, steps_offset... are kept, the class's own defaults fill missing keys, and
 *   the name decides the sigma schedule: "-karras" names set `use_karras_sigmas: true`, the plain names of classes that
 *   have the option set it false (so the name always says what runs).
 *
 *     const { name, scheduler } = schedulerForConfig(loadSchedulerConfig(join(modelDir, "scheduler/scheduler_config.json")));
 *     scheduler.setTimesteps(20);
 *
 * Note: diffusers' `from_pretrained` takes the class from model_index.json's "scheduler" entry, which in Hub folders
 * names the same class as `_class_name`; a caller that wants that entry to win passes `{ ...config, _class_name }`.
 */
import { AtedmError } from "../errors.js";
import { configSource, withOverrides, type RawSchedulerConfig, type Scheduler } from "./common.js";
import { DDIMScheduler } from "./ddim.js";
import { DPM_DEFAULTS, DPMSolverMultistepScheduler } from "./dpmpp2m.js";
import { EulerDiscreteScheduler } from "./euler.js";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.js";
import { LMSDiscreteScheduler } from "./lms.js";
import { PNDMScheduler } from "./pndm.js";
import { UniPCMultistepScheduler } from "./unipc.js";

export * from "./common.js";
export { EulerDiscreteScheduler, EULER_DEFAULTS, type EulerConfig } from "./euler.js";
export { EulerAncestralDiscreteScheduler, EULER_ANCESTRAL_DEFAULTS, type EulerAncestralConfig } from "./euler_ancestral.js";
export { DDIMScheduler, DDIM_DEFAULTS, type DDIMConfig } from "./ddim.js";
export { PNDMScheduler, PNDM_DEFAULTS, type PNDMConfig } from "./pndm.js";
export { LMSDiscreteScheduler, LMS_DEFAULTS, LMS_ORDER, lmsCoefficient, integrate, type LMSConfig } from "./lms.js";
export { UniPCMultistepScheduler, UNIPC_DEFAULTS, solveF32, type UniPCConfig } from "./unipc.js";
export { DPMSolverMultistepScheduler, DPM_DEFAULTS, type DPMConfig } from "./dpmpp2m.js";

export const SCHEDULER_NAMES = [
  "euler",
  "euler-karras",
  "euler-a",
  "ddim",
  "pndm",
  "lms",
  "lms-karras",
  "unipc",
  "unipc-karras",
  "dpm++2m",
  "dpm++2m-karras",
] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** The diffusers classes atedm implements -> the base name (without "-karras") of our scheduler. */
export const SCHEDULER_CLASSES = {
  EulerDiscreteScheduler: "euler",
  EulerAncestralDiscreteScheduler: "euler-a",
  DDIMScheduler: "ddim",
  PNDMScheduler: "pndm",
  LMSDiscreteScheduler: "lms",
  UniPCMultistepScheduler: "unipc",
  DPMSolverMultistepScheduler: "dpm++2m",
} as const satisfies Record<string, SchedulerName>;

/** The base names whose class has `use_karras_sigmas` (their "-karras" names exist). */
const KARRAS_BASES: ReadonlySet<string> = new Set(["euler", "lms", "unipc", "dpm++2m"]);

function isSchedulerName(name: unknown): name is SchedulerName {
  return typeof name === "string" && (SCHEDULER_NAMES as readonly string[]).includes(name);
}

/**
 * Build the scheduler `name` from a diffusers scheduler config (any `_class_name`; see the file comment). Throws an
 * AtedmError for an unknown name or an invalid/unsupported config value.
 */
export function createScheduler(name: SchedulerName, config: RawSchedulerConfig): Scheduler {
  if (!isSchedulerName(name)) {
    throw new AtedmError(`unknown scheduler ${JSON.stringify(name as unknown)} (expected one of ${SCHEDULER_NAMES.join(", ")})`);
  }
  const karras = name.endsWith("-karras");
  const base = karras ? name.slice(0, -"-karras".length) : name;
  // The name decides the sigma schedule (the copy keeps the config's file name for error messages).
  const sourced = KARRAS_BASES.has(base) ? withOverrides(config, { use_karras_sigmas: karras }) : config;
  switch (base) {
    case "euler":
      return new EulerDiscreteScheduler(sourced);
    case "euler-a":
      return new EulerAncestralDiscreteScheduler(config);
    case "ddim":
      return new DDIMScheduler(config);
    case "pndm":
      return new PNDMScheduler(config);
    case "lms":
      return new LMSDiscreteScheduler(sourced);
    case "unipc":
      return new UniPCMultistepScheduler(sourced);
    default:
      return new DPMSolverMultistepScheduler(sourced);
  }
}

/**
 * The scheduler a model folder's config asks for (`override` absent) or the one the user picked (`override`), with its
 * name. Without override: builds the class named by `_class_name` with the config's own settings, as diffusers'
 * `from_pretrained` would; `use_karras_sigmas: true` gives the "-karras" name. One-line AtedmErrors: no `_class_name`,
 * a class atedm does not implement (both suggest `--scheduler NAME`), and a DPMSolverMultistepScheduler config whose
 * `algorithm_type` is not "dpmsolver++" or whose `solver_order` is not 2 (we would silently run another solver).
 */
export function schedulerForConfig(config: RawSchedulerConfig, override?: SchedulerName): { name: SchedulerName; scheduler: Scheduler } {
  if (override !== undefined) return { name: override, scheduler: createScheduler(override, config) };
  const source = configSource(config);
  const names = SCHEDULER_NAMES.join(" | ");
  const className = config._class_name;
  if (className === undefined || className === null) {
    throw new AtedmError(`${source}: no _class_name, so the scheduler is unknown; choose one with --scheduler NAME (${names})`);
  }
  if (typeof className !== "string" || !Object.hasOwn(SCHEDULER_CLASSES, className)) {
    throw new AtedmError(
      `${source}: _class_name ${JSON.stringify(className)} is not implemented by atedm (it has ${Object.keys(SCHEDULER_CLASSES).join(", ")}); ` +
        `choose one with --scheduler NAME (${names})`,
    );
  }
  const base: SchedulerName = SCHEDULER_CLASSES[className as keyof typeof SCHEDULER_CLASSES];
  if (base === "dpm++2m") {
    const algorithm = config.algorithm_type ?? DPM_DEFAULTS.algorithm_type;
    const order = config.solver_order ?? DPM_DEFAULTS.solver_order;
    if (algorithm !== "dpmsolver++" || order !== 2) {
      throw new AtedmError(
        `${source}: DPMSolverMultistepScheduler with algorithm_type ${JSON.stringify(algorithm)}, solver_order ${JSON.stringify(order)} is not implemented ` +
          `by atedm (only "dpmsolver++" with solver_order 2); choose one with --scheduler NAME (${names})`,
      );
    }
  }
  const karras = KARRAS_BASES.has(base) && config.use_karras_sigmas === true;
  const name = (karras ? `${base}-karras` : base) as SchedulerName;
  return { name, scheduler: createScheduler(name, config) };
}
