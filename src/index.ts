/** atedm's public API. */
export { loadPipeline, TextToImagePipeline, type GenerateOptions, type GenerateResult, type PipelineOptions } from "./pipeline/text_to_image.js";
export { applyAtEdm, applyTome, applyPruning, removePruning, AtEdm, Tome, dsap, noSchedule, ramp, scheduleByName } from "./pruning/index.js";
export type {
  AtEdmOptions,
  AttentionBlockCost,
  AttentionBlockInfo,
  MaskSharing,
  PruningMethod,
  PruningPoint,
  RecoveryVariant,
  Schedule,
  ScheduleName,
  ScoreVariant,
  StepInfo,
  TomeMethodOptions,
} from "./pruning/index.js";
export { UNet2DConditionModel } from "./models/unet_model.js";
export { methodFlops, unetFlops } from "./metrics/flops.js";
export { estimateGenerationMemory, type GenerationMemoryEstimate } from "./metrics/memory.js";
export { Runtime } from "./runtime/session.js";
export { AtedmError } from "./errors.js";
