/** atedm's public API. */
export { loadPipeline, TextToImagePipeline, type GenerateOptions, type GenerateResult, type PipelineOptions } from "./pipeline/text_to_image.js";
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
export { UNet2DConditionModel } from "./models/unet_model.js";
export { generationFlops, methodFlops, unetFlops } from "./metrics/flops.js";
export { bootstrap, type BootstrapOptions } from "./metrics/bootstrap.js";
export { frechetDistance, featureStats, frechetFromStats } from "./metrics/frechet.js";
export { psnr, ssim, type SsimOptions } from "./metrics/quality.js";
export { FeatureExtractor, SHAPES_FEATURES } from "./metrics/features.js";
export { ClipScorer } from "./metrics/clip_score.js";
export { planRuns, type EvalMethodSpec, type EvalRun } from "./eval/plan.js";
export { runEval, type EvalOptions, type EvalRunOutput } from "./eval/run.js";
export type { EvalResult, MethodResult, MetricValue } from "./eval/types.js";
export { recoveryErrors } from "./eval/recovery_error.js";
export { estimateGenerationMemory, type GenerationMemoryEstimate } from "./metrics/memory.js";
export { Runtime } from "./runtime/session.js";
export { AtedmError } from "./errors.js";
