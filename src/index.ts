/** atedm's public API in Node: the shared core (src/core.ts), the evaluation and the image-quality metrics. */
export * from "./core.js";
export { toSingleFile } from "./io/single_file.js";
export { bootstrap, type BootstrapOptions } from "./metrics/bootstrap.js";
export { frechetDistance, featureStats, frechetFromStats } from "./metrics/frechet.js";
export { psnr, ssim, type SsimOptions } from "./metrics/quality.js";
export { FeatureExtractor, SHAPES_FEATURES } from "./metrics/features.js";
export { ClipScorer } from "./metrics/clip_score.js";
export { planRuns, type EvalMethodSpec, type EvalRun } from "./eval/plan.js";
export { runEval, type EvalOptions, type EvalRunOutput } from "./eval/run.js";
export type { EvalResult, MethodResult, MetricValue } from "./eval/types.js";
export { recoveryErrors } from "./eval/recovery_error.js";
