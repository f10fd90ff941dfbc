/** atedm's public API. */
export { loadPipeline, TextToImagePipeline, type GenerateOptions, type GenerateResult, type PipelineOptions } from "./pipeline/text_to_image.js";
export { applyAtEdm, applyTome, applyPruning, removePruning, AtEdm, dsap, noSchedule, ramp, scheduleByName } from "./pruning/index.js";
export type { AtEdmOptions, PruningMethod, Schedule, ScheduleName, StepInfo } from "./pruning/index.js";
export { Tome, createTome, type TomeMethodOptions } from "./pruning/tome_method.js";
export { UNet2DConditionModel } from "./models/unet_model.js";
export { unetFlops } from "./metrics/flops.js";
export { Runtime } from "./runtime/session.js";
export { AtedmError } from "./errors.js";

