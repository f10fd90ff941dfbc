/**
 * The API both entries share (src/index.ts for Node, src/browser.ts for the browser): the pipeline, the models'
 * sources, the samplers, the pruning methods, their FLOPs and mask pictures.
 */
export { loadPipeline, TextToImagePipeline, type GenerateOptions, type GenerateResult, type PipelineOptions } from "./pipeline/text_to_image.js";
export { DiffusersFolder, type ModelSource, type OpenModelOptions, openModel, SingleFileCheckpoint } from "./io/model_source.js";
export {
  createScheduler,
  SCHEDULER_CLASSES,
  SCHEDULER_NAMES,
  type Scheduler,
  type SchedulerName,
  schedulerForConfig,
} from "./schedulers/index.js";
export {
  applyAtEdm,
  applyTome,
  applyPruning,
  removePruning,
  ATEDM_PRESETS,
  AtEdm,
  Tome,
  dsap,
  noSchedule,
  ramp,
  scheduleByName,
} from "./pruning/index.js";
export type {
  AtEdmOptions,
  AtEdmPreset,
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
export { blockMask, dimPruned, heatColor, heatImage, type BlockMask } from "./pruning/masks.js";
export { toRGB8 } from "./io/png.js";
export { UNet2DConditionModel } from "./models/unet_model.js";
export { generationFlops, methodFlops, unetFlops } from "./metrics/flops.js";
export { estimateGenerationMemory, type GenerationMemoryEstimate } from "./metrics/memory.js";
export { Runtime } from "./runtime/session.js";
export { AtedmError } from "./errors.js";
