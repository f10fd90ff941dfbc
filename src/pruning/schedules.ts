/**
 * Pruning schedules: a schedule is a function `(at: { step, steps }, block, ratio) => ratio` that gives the ratio of
 * one attention block at one denoising step from the method's nominal ratio, so any policy plugs in the same way.
 * DSAP (Denoising-Steps-Aware Pruning, the SPEC's default) prunes less in the early steps.
 */
import { AtedmError } from "../errors.js";
import type { AttentionBlockInfo, StepInfo } from "../models/pruning_hook.js";

export type Schedule = (at: StepInfo, block: AttentionBlockInfo, ratio: number) => number;

/** Every block uses the ratio at every step. */
export const noSchedule: Schedule = (_at, _block, ratio) => ratio;

export interface DsapOptions {
  /** Early phase = the first ceil(earlyFraction * T) steps. Default 0.1. */
  earlyFraction?: number;
  /** Which blocks are left unpruned in the early phase. Default: the first attention block of every down stage
   * and the last attention block of every up stage (the mid block is always prunable). */
  protect?: (block: AttentionBlockInfo) => boolean;
}

export const dsapDefaultProtected = (b: AttentionBlockInfo): boolean =>
  (b.stage === "down" && b.index === 0) || (b.stage === "up" && b.index === b.count - 1);

/** DSAP: in the early phase the protected blocks are not pruned; afterwards every block uses the ratio. */
export function dsap(options: DsapOptions = {}): Schedule {
  const early = options.earlyFraction ?? 0.1;
  const protect = options.protect ?? dsapDefaultProtected;
  return (at, block, ratio) => (at.step < Math.ceil(early * at.steps) && protect(block) ? 0 : ratio);
}

/** Ratio ramp: the ratio grows linearly from `from` x ratio at step 0 to the full ratio at the last step. */
export function ramp(from = 0): Schedule {
  return (at, _block, ratio) => {
    const t = at.steps <= 1 ? 1 : at.step / (at.steps - 1);
    return ratio * (from + (1 - from) * t);
  };
}

export type ScheduleName = "dsap" | "none" | "ramp";

export function scheduleByName(name: string): Schedule {
  switch (name) {
    case "dsap":
      return dsap();
    case "none":
      return noSchedule;
    case "ramp":
      return ramp();
    default:
      throw new AtedmError(`unknown schedule '${name}' (expected dsap, none or ramp)`);
  }
}
