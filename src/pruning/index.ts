/**
 * Installing a pruning method on a U-Net or a pipeline, in the spirit of tomesd's apply_patch/remove_patch:
 *
 *   applyAtEdm(pipe, { ratio: 0.5 });                    // atedm's defaults (docs/results.md): random ranking, cosine recovery, no schedule
 *   applyAtEdm(pipe, { ratio: 0.5, preset: "paper" });   // the SPEC's configuration: G-WPR K = 10, copy recovery, DSAP
 *   removePruning(pipe);                  // back to the unpruned model; weights stay loaded
 *
 * Re-applying with other options replaces the method; graphs are rebuilt lazily, weights are never reloaded.
 */
import type { UNet2DConditionModel } from "../models/unet_model.js";
import { AtEdm, type AtEdmOptions } from "./atedm.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import { Tome, type TomeMethodOptions } from "./tome_method.js";

export type PruningTarget = UNet2DConditionModel | { unet: UNet2DConditionModel };

function unetOf(target: PruningTarget): UNet2DConditionModel {
  return "unet" in target ? target.unet : target;
}

/** Install any PruningMethod (AT-EDM, ToMe, or your own). */
export function applyPruning<M extends PruningMethod>(target: PruningTarget, method: M): M {
  unetOf(target).pruning = method;
  return method;
}

/** AT-EDM with the given options (defaults: ratio 0.5 and the `default` preset, see ATEDM_PRESETS). */
export function applyAtEdm(target: PruningTarget, options: AtEdmOptions = {}): AtEdm {
  return applyPruning(target, new AtEdm(options));
}

/** ToMe with tomesd's options (ratio, maxDownsample, sx, sy, useRand, mergeAttn/Crossattn/Mlp); default schedule none. */
export function applyTome(target: PruningTarget, options: TomeMethodOptions = {}): Tome {
  return applyPruning(target, new Tome(options));
}

/** Remove whatever pruning method is installed. */
export function removePruning(target: PruningTarget): void {
  unetOf(target).pruning = null;
}

export { ATEDM_PRESETS, AtEdm, type AtEdmOptions, type AtEdmPreset } from "./atedm.js";
export { Tome, type TomeMethodOptions } from "./tome_method.js";
export type { MaskSharing, PruningPoint, RecoveryVariant, ScoreVariant } from "./atedm_math.js";
export type { AttentionBlockCost, AttentionBlockInfo, GraphInput, LatentSize, PruningMethod, StepInfo } from "../models/pruning_hook.js";
export { dsap, noSchedule, ramp, scheduleByName, type Schedule, type ScheduleName } from "./schedules.js";
