/**
 * The small interface every token-pruning method implements (AT-EDM, ToMe). "No pruning" is simply no method.
 * A method never touches the model directly: it supplies a TransformerRunner for the attention blocks it
 * prunes at a step, the graph inputs that runner reads, and their values per step (so one ONNX session serves
 * every ratio of a schedule).
 */
import type { Tensor } from "../runtime/session.js";
import type { AttentionBlockInfo, TransformerRunner } from "../models/unet.js";

export interface GraphInput {
  name: string;
  dtype: "int64" | "float32";
  shape: Array<number | string>;
}

export interface LatentSize {
  height: number;
  width: number;
}

export interface StepInfo {
  /** 0-based denoising step index. */
  step: number;
  /** Total number of steps T. */
  steps: number;
}

export interface PruningMethod {
  readonly name: string;
  /** The pruning ratio of `block` at this step (0 = the block runs unpruned). */
  ratio(block: AttentionBlockInfo, at: StepInfo): number;
  /** The runner of a block that is pruned at some step. */
  runner(block: AttentionBlockInfo): TransformerRunner;
  /** Graph inputs of a pruned block's runner. */
  inputs(block: AttentionBlockInfo): GraphInput[];
  /** Values of those inputs for a ratio. */
  feeds(block: AttentionBlockInfo, ratio: number, latent: LatentSize, batch: number, at: StepInfo): Record<string, Tensor>;
  /** Tokens that pass through the block's later layers at this ratio (for FLOPs and reports). */
  keptTokens(block: AttentionBlockInfo, ratio: number, latent: LatentSize): number;
  /** Extra graph outputs a pruned block can expose (masks, scores), for --save-masks. */
  outputs(block: AttentionBlockInfo): string[];
}

/** Feature-map height/width of a block at `downsample` (each stride-2 conv maps h to ceil(h / 2)). */
export function blockSize(latent: LatentSize, downsample: number): LatentSize {
  let { height, width } = latent;
  for (let d = 1; d < downsample; d *= 2) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  return { height, width };
}

export function blockTokens(latent: LatentSize, downsample: number): number {
  const s = blockSize(latent, downsample);
  return s.height * s.width;
}
