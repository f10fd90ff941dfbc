/**
 * Schedulers (samplers), pure TypeScript ports of diffusers' scheduler classes.
 *
 * A model folder's `scheduler/scheduler_config.json` may name any diffusers scheduler class (`_class_name`); it
 * only supplies the noise schedule and options (betas, prediction type, spacing, ...). The user picks the algorithm
 * and `createScheduler` builds it from that config, as diffusers' `XScheduler.from_config(pipe.scheduler.config)`
 * does:
 *
 *     const s = createScheduler("dpm++2m", loadSchedulerConfig(join(modelDir, "scheduler/scheduler_config.json")));
 *     s.setTimesteps(20);
 */
import { AtedmError } from "../errors.js";
import type { RawSchedulerConfig, Scheduler } from "./common.js";
import { DDIMScheduler } from "./ddim.js";
import { DPMSolverMultistepScheduler } from "./dpmpp2m.js";
import { EulerDiscreteScheduler } from "./euler.js";

export * from "./common.js";
export { EulerDiscreteScheduler, EULER_DEFAULTS, type EulerConfig } from "./euler.js";
export { DDIMScheduler, DDIM_DEFAULTS, type DDIMConfig } from "./ddim.js";
export { DPMSolverMultistepScheduler, DPM_DEFAULTS, type DPMConfig } from "./dpmpp2m.js";

export const SCHEDULER_NAMES = ["euler", "ddim", "dpm++2m"] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/**
 * Build the scheduler `name` from a diffusers scheduler config (any `_class_name`):
 * - "euler": EulerDiscreteScheduler
 * - "ddim": DDIMScheduler (eta 0)
 * - "dpm++2m": DPMSolverMultistepScheduler with algorithm_type "dpmsolver++", solver_order 2
 * Throws an AtedmError for an unknown name or an invalid/unsupported config value.
 */
export function createScheduler(name: SchedulerName, config: RawSchedulerConfig): Scheduler {
  switch (name) {
    case "euler":
      return new EulerDiscreteScheduler(config);
    case "ddim":
      return new DDIMScheduler(config);
    case "dpm++2m":
      return new DPMSolverMultistepScheduler(config);
    default:
      throw new AtedmError(`unknown scheduler ${JSON.stringify(name as string)} (expected one of ${SCHEDULER_NAMES.join(", ")})`);
  }
}
