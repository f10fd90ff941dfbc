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

export * from "./core.js";
export { ort } from "./runtime/session.js";
export { mountFiles, mountedFiles, unmountFiles } from "./platform/browser/fs.js";
