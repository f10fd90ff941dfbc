/**
 * The hook through which a token-pruning method (src/pruning: AT-EDM, ToMe, or your own) changes how the U-Net
 * runs its attention blocks, the way diffusers keeps its attention-processor interface beside the models. The
 * U-Net calls these; it never imports a pruning method. "No pruning" is no method.
 *
 * Every Transformer2DModel hands its tokens to a `TransformerRunner`: the default (`denseRunner`) runs the layers
 * in order; a method supplies its own runner for the blocks it prunes at a step, the graph inputs that runner
 * reads, and their values per step (so one ONNX session serves every ratio of a schedule), and says what its
 * runner costs (`cost`, for the FLOPs count).
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { AttentionResult } from "./layers.js";
import type { AttentionBlockInfo, LatentSize } from "./unet_structure.js";
import type { Tensor } from "../runtime/session.js";

export type { AttentionBlockInfo, LatentSize } from "./unet_structure.js";

/** One BasicTransformerBlock, as separately callable sub-layers (pruning methods compose them). */
export interface TransformerLayer {
  path: string;
  heads: number;
  headDim: number;
  norm1(x: Value): Value;
  attn1(h: Value, options?: { explicitProbs?: boolean }): AttentionResult;
  norm2(x: Value): Value;
  attn2(h: Value): Value;
  /** Cross-attention computing its probabilities explicitly, (B, heads, N, L). */
  attn2Explicit(h: Value): AttentionResult;
  /** Only the cross-attention probabilities (B, heads, N, L): no PV, no to_out. */
  attn2Probs(h: Value): Value;
  norm3(x: Value): Value;
  ff(h: Value): Value;
}

/** Everything a TransformerRunner needs to run one Transformer2DModel on its tokens. */
export interface TransformerContext {
  g: GraphBuilder;
  block: AttentionBlockInfo;
  /** Tokens after proj_in, (B, N, C), row-major over (h, w). */
  tokens: Value;
  /** int64 scalars: feature-map height and width of this block. */
  height: Value;
  width: Value;
  layers: TransformerLayer[];
  /** proj_out on any token set (B, *, C). */
  projOut(x: Value): Value;
  /** Record a named intermediate (made a graph output when requested). */
  tap(name: string, v: Value, dtype?: "float32" | "int64"): void;
  /** The block's input (B, C, H, W) before its GroupNorm: what its outer residual adds (for probes, e.g. the
   * recovery-error oracle of src/eval/recovery_error.ts; a runner need not read it). */
  input?: Value;
  /** The encoder hidden states (B, L, D) that cross-attention reads (the same for every block). */
  context?: Value;
}

/** Runs the layers of one attention block and returns the dense (B, N, C) output of proj_out. */
export type TransformerRunner = (ctx: TransformerContext) => Value;

/** An extra graph input a runner reads. */
export interface GraphInput {
  name: string;
  dtype: "int64" | "float32";
  shape: Array<number | string>;
}

export interface StepInfo {
  /** 0-based denoising step index. */
  step: number;
  /** Total number of steps T. */
  steps: number;
}

/**
 * What a runner executes in one attention block, in tokens, for the FLOPs count (SPEC "FLOPs accounting").
 * Multiply-adds follow from it: attn1 on n tokens costs its four projections on n and QK^T / PV on n x n;
 * attn2 on n query tokens costs to_q / to_out on n and QK^T / PV on n x L (its text K / V projections never
 * shrink); ff on n tokens its two linears; proj_in always runs on all N tokens.
 */
export interface AttentionBlockCost {
  /** Per BasicTransformerBlock: tokens through self-attention, cross-attention (queries) and feed-forward. */
  layers: Array<{ attn1: number; attn2: number; ff: number }>;
  /** Tokens through proj_out. */
  projOut: number;
  /** Tokens kept (AT-EDM) or left after merging (ToMe, N - r), for reports; null when the block runs dense. */
  kept: number | null;
  /** ToMe: tokens merged per layer; null otherwise. */
  merged: number | null;
  /** AT-EDM: where tokens are dropped; null otherwise. */
  pruningPoint: string | null;
  /**
   * Pruning overhead in multiply-adds per batch element, not part of the model's FLOPs: token scoring, finding
   * recovery sources, ToMe's matching. `byModule` is the part of `score` that model modules execute (an extra
   * cross-attention map), keyed by module path.
   */
  overhead: { score: number; recovery: number; matching: number; byModule: Record<string, number> };
}

/** The cost of a block that runs dense (N tokens everywhere, no overhead). */
export function denseBlockCost(block: AttentionBlockInfo, tokens: number): AttentionBlockCost {
  return {
    layers: Array.from({ length: block.depth }, () => ({ attn1: tokens, attn2: tokens, ff: tokens })),
    projOut: tokens,
    kept: null,
    merged: null,
    pruningPoint: null,
    overhead: { score: 0, recovery: 0, matching: 0, byModule: {} },
  };
}

export interface PruningMethod {
  readonly name: string;
  /** The nominal pruning ratio the method was configured with (a schedule may lower it per block and step). */
  readonly nominalRatio: number;
  /** The pruning ratio of `block` at this step (0 = the block runs unpruned). */
  ratio(block: AttentionBlockInfo, at: StepInfo): number;
  /** The runner of a block that is pruned at some step. */
  runner(block: AttentionBlockInfo): TransformerRunner;
  /** Graph inputs of a pruned block's runner. */
  inputs(block: AttentionBlockInfo): GraphInput[];
  /** Values of those inputs for a ratio. */
  feeds(block: AttentionBlockInfo, ratio: number, latent: LatentSize, batch: number, at: StepInfo): Record<string, Tensor>;
  /** Tokens that pass through the block's later layers at this ratio (for reports). */
  keptTokens(block: AttentionBlockInfo, ratio: number, latent: LatentSize): number;
  /** What the runner executes at this ratio (tokens per sub-layer and the pruning overhead); `textLength` is
   * the number of text tokens cross-attention sees. */
  cost(block: AttentionBlockInfo, ratio: number, latent: LatentSize, textLength: number): AttentionBlockCost;
  /** Extra graph outputs a pruned block can expose (masks, scores), for --save-masks. */
  outputs(block: AttentionBlockInfo): string[];
}
