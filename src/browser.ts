/**
 * atedm's browser entry (package.json `exports` condition "browser"; docs/browser.md): the pipeline, the pruning
 * methods, FLOPs and the mask pictures, on onnxruntime-web. The bundler aliases Node's modules to
 * src/platform/browser/ (`browserAliases()` from `atedm/platform/aliases`); models are files mounted in memory:
 *
 *   import { loadPipeline, mountFiles, applyAtEdm } from "atedm";     // resolved to this file by a browser bundler
 *   mountFiles([["/models/shapes/model_index.json", bytes], ...]);
 *   const pipe = await loadPipeline("/models/shapes");
 *
 * Not here: the evaluation, the report and the command line (they write files, spawn workers, talk to Redis).
 */
import "./platform/browser/install.js";

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
export type { AtEdmOptions, AtEdmPreset, PruningMethod, Schedule, ScheduleName, TomeMethodOptions } from "./pruning/index.js";
export { blockMask, dimPruned, heatColor, heatImage, type BlockMask } from "./pruning/masks.js";
export { toRGB8 } from "./io/png.js";
export { UNet2DConditionModel } from "./models/unet_model.js";
export { generationFlops, methodFlops, unetFlops } from "./metrics/flops.js";
export { Runtime, ort } from "./runtime/session.js";
export { AtedmError } from "./errors.js";
export { mountFiles, mountedFiles, unmountFiles } from "./platform/browser/fs.js";
