/**
 * Analytic FLOPs of one U-Net call, from its config and latent size (SPEC "FLOPs accounting"): 2 FLOPs per
 * multiply-add of every convolution, linear layer and attention matmul (QK^T and PV); norms, softmax and
 * element-wise ops are not counted. Batch 1 and a 77-token text by default.
 *
 *   const r = unetFlops(cfg, { height: 1024, width: 1024 });               // SD-XL: 6.761e12
 *   const p = unetFlops(cfg, { height: 1024, width: 1024, keep: uniformKeep(cfg, 128, 128, 0.63) });
 *   p.total / r.total;  p.overhead.total;                                   // pruned model, G-WPR + recovery
 *
 * Every count is kept per module, under the same names `graphFlops` (src/metrics/graph_flops.ts) gives the
 * nodes of a built graph: a weight's module path (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`)
 * for convolutions and linears, and the attention module (`...transformer_blocks.0.attn1`) for its QK^T and PV
 * matmuls, so the two counts can be compared module by module.
 *
 * Token pruning (AT-EDM): an attention block with N tokens that keeps k runs, at the pruning point
 *   "after-layer1" (default for depth >= 2): layer 1 on N tokens, layers 2..d on the k kept ones, proj_out on k;
 *   "after-attn1"  (default for depth 1):    layer 1's self-attention (with to_out) on N, then its
 *                                           cross-attention and feed-forward, later layers and proj_out on k.
 * Cross-attention K/V projections of the text do not depend on the tokens and never shrink. Recovery
 * "copy-delta" runs proj_out on all N tokens (each pruned token's own features plus its source's change).
 * The pruning overhead is a separate line, not in `total`, and counts what src/pruning/atedm.ts executes:
 * - the explicit attention map is attn1's QK^T / PV (model FLOPs, already counted);
 * - the head mean of the explicit map, h N^2 per batch element (a (1 x h) x (h x N^2) MatMul, faster than a
 *   ReduceMean), once per block when the score (gwpr, column-mean) or the recovery (copy, copy-delta) reads it:
 *   under `score` when the score reads it, else under `recovery`;
 * - G-WPR: K (1 x N) x (N x N) products from the uniform vector (the first one is the column mean): K N^2 per
 *   batch element on the head-mean map, heads K N^2 for gwpr-rms (iterated per head); column-mean (K = 1): N^2;
 * - cross-attention G-WPR: the score itself is element-wise products and sums (not counted, like norms); at the
 *   after-attn1 point it needs layer 1's cross-attention map on all N tokens, which the graph computes as the
 *   map only: to_q on N tokens and QK^T (its text K projection is the same nodes' work as the later
 *   cross-attention's, run once after ONNX Runtime's common-subexpression elimination). That work is overhead, attributed to those attn2 modules in
 *   `overhead.byModule`;
 * - feature-norm (an L2 norm), random, and recovery by copy (argmax on the head mean), nearest and zero: no
 *   further multiply-adds;
 * - recovery by cosine similarity: the (N x C) x (C x k) similarity of every token to the kept ones, N k C.
 *
 * ToMe (tomesd semantics, src/pruning/tome.ts; option `tome`): in a merged block every layer computes its own
 * bipartite matching from its input (src x dst x C multiply-adds of cosine similarity per layer: overhead
 * `matching`) and runs the merged sub-layers on N - r tokens: attn1 (q/k/v/out projections, QK^T and PV) with
 * merge_attn, attn2's to_q / to_out and its QK^T / PV with merge_crossattn, ff with merge_mlp. proj_in/proj_out
 * stay on N. With r = 0 the graph still matches on the trivial partition (dst = 1 token, src = N - 1).
 *
 * `methodFlops(cfg, method, latent, at)` counts one step under an installed PruningMethod (AT-EDM or ToMe);
 * `matchTomeRatio` (`matchTomeRatioDetails`) finds the ToMe ratio whose FLOPs are closest to a target (ToMe vs
 * AT-EDM at equal FLOPs).
 */
import { keepCount } from "../pruning/atedm_reference.js";
import { attentionBlocks, type AttentionBlockInfo, type UNetConfig } from "../models/unet.js";
import type { AtEdm } from "../pruning/atedm.js";
import type { PruningMethod, StepInfo } from "../pruning/method.js";
import { Tome, type TomeMethodOptions } from "../pruning/tome_method.js";

/** Where the FLOPs go. Attention-core matmuls of attn2 are in `attn2` with its projections. */
export type FlopsCategory = "resnet" | "attn1_proj" | "attn1_matmul" | "attn2" | "ff" | "proj_io" | "other";
export const FLOPS_CATEGORIES: readonly FlopsCategory[] = [
  "resnet", "attn1_proj", "attn1_matmul", "attn2", "ff", "proj_io", "other",
];

/**
 * The category of a module path: a weight's module (`...resnets.0.conv1`, `...attn1.to_q`, `...ff.net.2`,
 * `...proj_in`, `conv_in`, `time_embedding.linear_1`, `down_blocks.0.downsamplers.0.conv`) or an attention
 * module (`...attn1`, `...attn2`) for its QK^T / PV matmuls.
 */
export function categoryOf(module: string): FlopsCategory {
  if (/(^|\.)resnets\.\d+\./.test(module)) return "resnet";
  if (/\.attn1\.to_(q|k|v|out\.0)$/.test(module)) return "attn1_proj";
  if (/\.attn1$/.test(module)) return "attn1_matmul";
  if (/\.attn2(\.|$)/.test(module)) return "attn2";
  if (/\.ff\.net\.\d+(\.proj)?$/.test(module)) return "ff";
  if (/\.attentions\.\d+\.(proj_in|proj_out)$/.test(module)) return "proj_io";
  return "other";
}

export type PruningPoint = "after-layer1" | "after-attn1";
/** Token-score variants (`cross-gwpr` is the name src/pruning/atedm.ts uses for `cross-attention`). */
export type ScoreVariant = "gwpr" | "gwpr-rms" | "column-mean" | "cross-attention" | "cross-gwpr" | "random" | "feature-norm";
export type RecoveryVariant = "copy" | "copy-delta" | "cosine" | "nearest" | "zero";

/** ToMe (token merging) in the analytic count; see the file comment. */
export interface TomeFlopsOptions {
  /**
   * Tokens merged per layer (tomesd's r, after its cap at the src count) per attention block path. A block not
   * listed (or null) runs dense without a ToMe path; r = 0 runs the ToMe path with the trivial partition.
   */
  r: Record<string, number | null | undefined>;
  /** Merge around self-attention. Default true. */
  mergeAttn?: boolean;
  /** Merge around cross-attention. Default false. */
  mergeCrossattn?: boolean;
  /** Merge around the feed-forward. Default false. */
  mergeMlp?: boolean;
  /** Strides of the dst grid (one dst per sx x sy cell: floor(h / sy) * floor(w / sx) dst tokens). Default 2. */
  sx?: number;
  sy?: number;
}

export interface UNetFlopsOptions {
  /** Image size in pixels (the latent is `vaeScale` times smaller), or give `latent` instead. */
  height?: number;
  width?: number;
  /** Latent height and width; overrides height/width. */
  latent?: [number, number];
  /** Pixels per latent cell. Default 8. */
  vaeScale?: number;
  /** Default 1. Every count is linear in it (CFG doubles it). */
  batch?: number;
  /** Text tokens seen by cross-attention. Default 77. */
  textLength?: number;
  /** Kept tokens per attention block path (`down_blocks.1.attentions.0`); missing or null = not pruned. */
  keep?: Record<string, number | null | undefined>;
  /** Where pruned blocks start running on kept tokens. Default: after-layer1 for depth >= 2, else after-attn1. */
  pruningPoint?: PruningPoint | ((block: AttentionBlockInfo) => PruningPoint);
  /** Token-score variant for the overhead line. Default gwpr. */
  score?: ScoreVariant;
  /** G-WPR iterations K. Default 10. */
  iterations?: number;
  /** Recovery variant (proj_out of copy-delta, and the overhead line). Default copy. */
  recovery?: RecoveryVariant;
  /** ToMe merging (a block is either pruned by `keep` or merged by `tome`, not both). */
  tome?: TomeFlopsOptions;
}

export interface BlockFlops {
  /** Attention block path, e.g. `down_blocks.1.attentions.0`. */
  path: string;
  depth: number;
  channels: number;
  /** N = tokens of the block's feature map. */
  tokens: number;
  /** Kept tokens k (AT-EDM), or N - r (ToMe: the tokens of the merged sub-layers); null when neither. */
  kept: number | null;
  pruningPoint: PruningPoint | null;
  /** ToMe: tokens merged per layer (r), null when the block has no ToMe path. */
  merged: number | null;
  /** Model FLOPs of the block (norms excluded), with pruning applied. */
  flops: number;
  /** Its pruning overhead (0 when not pruned). */
  overhead: number;
}

export interface OverheadFlops {
  /** Token scoring (G-WPR iterations, or the variant's work, including an extra cross-attention map). */
  score: number;
  /** Finding each pruned token's source (cosine similarity; 0 for copy by attention argmax). */
  recovery: number;
  /** ToMe's bipartite matching (cosine similarity of src to dst tokens, every merged layer). */
  matching: number;
  total: number;
  /**
   * The part of `total` executed by model modules (the extra cross-attention map of cross-attention G-WPR at
   * the after-attn1 point: its attn2 to_q / QK^T / PV / to_out), per module path. A graph count
   * attributes these to the modules (`graphFlops` byModule), the rest of `total` to its `overhead` category.
   */
  byModule: Record<string, number>;
}

export interface UNetFlops {
  /** Model FLOPs of one U-Net call, without the pruning overhead. */
  total: number;
  byCategory: Record<FlopsCategory, number>;
  /** Per module path (see the file comment); sums to `total`. */
  byModule: Record<string, number>;
  byBlock: BlockFlops[];
  /** The pruning overhead line (G-WPR, recovery, ToMe matching), not included in `total`. */
  overhead: OverheadFlops;
  totalWithOverhead: number;
  /** Latent size used. */
  latent: [number, number];
}

export { keepCount };

/** The latent size of every U-Net level: level 0 is the latent, each downsampler gives ceil(h / 2). */
function levelSizes(cfg: UNetConfig, h: number, w: number): Array<[number, number]> {
  const sizes: Array<[number, number]> = [[h, w]];
  for (let i = 1; i < cfg.block_out_channels.length; i++) {
    const [ph, pw] = sizes[i - 1]!;
    sizes.push([Math.ceil(ph / 2), Math.ceil(pw / 2)]);
  }
  return sizes;
}

function latentOf(options: UNetFlopsOptions, cfg: UNetConfig): [number, number] {
  if (options.latent) return options.latent;
  const scale = options.vaeScale ?? 8;
  const height = options.height ?? cfg.sample_size * scale;
  const width = options.width ?? height;
  if (height % scale || width % scale) throw new Error(`unetFlops: ${height}x${width} is not a multiple of ${scale}`);
  return [height / scale, width / scale];
}

/** Kept-token counts for every attention block at one pruning ratio (latent size in latent cells). */
export function uniformKeep(cfg: UNetConfig, latentH: number, latentW: number, rho: number): Record<string, number> {
  const sizes = levelSizes(cfg, latentH, latentW);
  const keep: Record<string, number> = {};
  for (const b of attentionBlocks(cfg)) {
    const [h, w] = sizes[Math.log2(b.downsample)]!;
    keep[b.path] = keepCount(h * w, rho);
  }
  return keep;
}

/** FLOPs of one U-Net call; see the file comment. */
export function unetFlops(cfg: UNetConfig, options: UNetFlopsOptions = {}): UNetFlops {
  const [H, W] = latentOf(options, cfg);
  const B = options.batch ?? 1;
  const L = options.textLength ?? 77;
  const D = cfg.cross_attention_dim;
  const K = options.iterations ?? 10;
  const score = options.score ?? "gwpr";
  const recovery = options.recovery ?? "copy";
  const tome = options.tome;
  const sizes = levelSizes(cfg, H, W);
  const boc = cfg.block_out_channels;
  const n = boc.length;
  const c0 = boc[0]!;
  const temb = 4 * c0;
  if (!(Number.isInteger(K) && K >= 1)) throw new Error(`unetFlops: iterations must be a positive integer, got ${K}`);

  const byModule: Record<string, number> = {};
  /** Record `macs` multiply-adds (per batch element) of module `path`. */
  const add = (path: string, macs: number) => {
    byModule[path] = (byModule[path] ?? 0) + 2 * B * macs;
  };
  const conv = (path: string, hw: [number, number], cout: number, cin: number, k: number) =>
    add(path, hw[0] * hw[1] * cout * cin * k * k);

  const resnet = (p: string, hw: [number, number], cin: number, cout: number) => {
    conv(`${p}.conv1`, hw, cout, cin, 3);
    add(`${p}.time_emb_proj`, temb * cout);
    conv(`${p}.conv2`, hw, cout, cout, 3);
    if (cin !== cout) conv(`${p}.conv_shortcut`, hw, cout, cin, 1);
  };

  const blocks = attentionBlocks(cfg);
  const byBlock: BlockFlops[] = [];
  const overhead: OverheadFlops = { score: 0, recovery: 0, matching: 0, total: 0, byModule: {} };
  const addOverhead = (path: string, macs: number) => {
    overhead.byModule[path] = (overhead.byModule[path] ?? 0) + 2 * B * macs;
    return 2 * B * macs;
  };
  const transformer = (path: string, hw: [number, number]) => {
    const block = blocks.find((b) => b.path === path)!;
    const C = block.channels;
    const N = hw[0] * hw[1];
    const kept = options.keep?.[path] ?? null;
    if (kept !== null && !(Number.isInteger(kept) && kept >= 1 && kept <= N)) {
      throw new Error(`unetFlops: ${path} keeps ${kept} of ${N} tokens`);
    }
    const r = tome?.r[path] ?? null;
    if (r !== null && kept !== null) throw new Error(`unetFlops: ${path} is both pruned (keep) and merged (tome)`);
    // ToMe partition: one dst per complete sx x sy cell; r = 0 is fed with the trivial one (dst = last token).
    const nDst = r === null ? 0 : r === 0 ? 1 : Math.floor(hw[0] / (tome!.sy ?? 2)) * Math.floor(hw[1] / (tome!.sx ?? 2));
    if (r !== null && !(Number.isInteger(r) && r >= 0 && r <= N - nDst && (r === 0 || nDst >= 1))) {
      throw new Error(`unetFlops: ${path} merges ${r} of ${N} tokens (${N - nDst} src tokens)`);
    }
    const point: PruningPoint | null = kept === null
      ? null
      : typeof options.pruningPoint === "function"
        ? options.pruningPoint(block)
        : options.pruningPoint ?? (block.depth >= 2 ? "after-layer1" : "after-attn1");
    const before = Object.values(byModule).reduce((a, b) => a + b, 0);
    const k = kept ?? N;
    const m = N - (r ?? 0); // tokens of a merged sub-layer
    const mAttn = tome?.mergeAttn ?? true ? m : N;
    const mCross = tome?.mergeCrossattn ?? false ? m : N;
    const mMlp = tome?.mergeMlp ?? false ? m : N;
    add(`${path}.proj_in`, N * C * C);
    for (let l = 0; l < block.depth; l++) {
      const lp = `${path}.transformer_blocks.${l}`;
      // Tokens of this layer's self-attention, cross-attention and feed-forward.
      let [nAttn, nCross, nMlp] = [N, N, N];
      if (point !== null) {
        nAttn = l === 0 ? N : k;
        nCross = nMlp = l === 0 && point === "after-layer1" ? N : k;
      } else if (r !== null) {
        [nAttn, nCross, nMlp] = [mAttn, mCross, mMlp];
      }
      for (const proj of ["to_q", "to_k", "to_v", "to_out.0"]) add(`${lp}.attn1.${proj}`, nAttn * C * C);
      add(`${lp}.attn1`, 2 * nAttn * nAttn * C); // QK^T and PV
      add(`${lp}.attn2.to_q`, nCross * C * C);
      add(`${lp}.attn2.to_k`, L * D * C);
      add(`${lp}.attn2.to_v`, L * D * C);
      add(`${lp}.attn2`, 2 * nCross * L * C);
      add(`${lp}.attn2.to_out.0`, nCross * C * C);
      add(`${lp}.ff.net.0.proj`, nMlp * C * 8 * C);
      add(`${lp}.ff.net.2`, nMlp * 4 * C * C);
    }
    // copy-delta refills before proj_out: proj_out runs on all N tokens.
    add(`${path}.proj_out`, point !== null && recovery !== "copy-delta" ? k * C * C : N * C * C);
    const flops = Object.values(byModule).reduce((a, b) => a + b, 0) - before;
    let over = 0;
    if (kept !== null) {
      let s = 2 * B * scoreMacs(score, N, block.heads, K);
      if ((score === "cross-attention" || score === "cross-gwpr") && point === "after-attn1") {
        // The cross-attention map of layer 1 on all N tokens: to_q on N tokens and QK^T (no PV, no to_out).
        const lp = `${path}.transformer_blocks.0.attn2`;
        // Its text K projection is the one of layer 1's cross-attention on the kept tokens (ONNX Runtime's
        // common-subexpression elimination runs it once).
        s += addOverhead(`${lp}.to_q`, N * C * C) + addOverhead(lp, N * L * C);
      }
      // The head mean of the explicit map (a MatMul, h N^2), computed once when the score or the recovery reads it.
      const mean = 2 * B * block.heads * N * N;
      const scoreReadsMean = score === "gwpr" || score === "column-mean";
      if (scoreReadsMean) s += mean;
      let rec = 2 * B * (recovery === "cosine" ? N * k * C : 0);
      if (!scoreReadsMean && (recovery === "copy" || recovery === "copy-delta")) rec += mean;
      overhead.score += s;
      overhead.recovery += rec;
      over = s + rec;
    }
    if (r !== null) {
      over = 2 * B * block.depth * (N - nDst) * nDst * C; // src x dst cosine similarities, every layer
      overhead.matching += over;
    }
    byBlock.push({
      path, depth: block.depth, channels: C, tokens: N, kept: kept ?? (r !== null ? N - r : null), pruningPoint: point,
      merged: r, flops, overhead: over,
    });
  };

  conv("conv_in", sizes[0]!, c0, cfg.in_channels, 3);
  add("time_embedding.linear_1", c0 * temb);
  add("time_embedding.linear_2", temb * temb);
  if (cfg.addition_embed_type === "text_time") {
    add("add_embedding.linear_1", cfg.projection_class_embeddings_input_dim! * temb);
    add("add_embedding.linear_2", temb * temb);
  }

  let outCh = c0;
  cfg.down_block_types.forEach((type, i) => {
    const inCh = outCh;
    outCh = boc[i]!;
    for (let j = 0; j < cfg.layers_per_block; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, sizes[i]!, j === 0 ? inCh : outCh, outCh);
      if (type === "CrossAttnDownBlock2D") transformer(`down_blocks.${i}.attentions.${j}`, sizes[i]!);
    }
    if (i < n - 1) conv(`down_blocks.${i}.downsamplers.0.conv`, sizes[i + 1]!, outCh, outCh, 3);
  });
  if (cfg.mid_block_type) {
    const c = boc[n - 1]!;
    resnet("mid_block.resnets.0", sizes[n - 1]!, c, c);
    transformer("mid_block.attentions.0", sizes[n - 1]!);
    resnet("mid_block.resnets.1", sizes[n - 1]!, c, c);
  }
  const rev = boc.slice().reverse();
  let prevOut = rev[0]!;
  cfg.up_block_types.forEach((type, i) => {
    const r = n - 1 - i;
    const out = rev[i]!;
    const inCh = rev[Math.min(i + 1, n - 1)]!;
    const layers = cfg.layers_per_block + 1;
    for (let j = 0; j < layers; j++) {
      const skip = j === layers - 1 ? inCh : out;
      resnet(`up_blocks.${i}.resnets.${j}`, sizes[r]!, (j === 0 ? prevOut : out) + skip, out);
      if (type === "CrossAttnUpBlock2D") transformer(`up_blocks.${i}.attentions.${j}`, sizes[r]!);
    }
    // Nearest upsampling to the next skip's size, then a 3x3 conv there.
    if (i < n - 1) conv(`up_blocks.${i}.upsamplers.0.conv`, sizes[r - 1]!, out, out, 3);
    prevOut = out;
  });
  conv("conv_out", sizes[0]!, cfg.out_channels, c0, 3);

  const byCategory = Object.fromEntries(FLOPS_CATEGORIES.map((c) => [c, 0])) as Record<FlopsCategory, number>;
  let total = 0;
  for (const [m, f] of Object.entries(byModule)) {
    byCategory[categoryOf(m)] += f;
    total += f;
  }
  overhead.total = overhead.score + overhead.recovery + overhead.matching;
  return { total, byCategory, byModule, byBlock, overhead, totalWithOverhead: total + overhead.total, latent: [H, W] };
}

/**
 * MatMul multiply-adds per batch element of scoring N tokens, as src/pruning/atedm.ts computes them: every G-WPR
 * iteration, from the uniform vector on, is a vector-map product.
 */
function scoreMacs(score: ScoreVariant, N: number, heads: number, K: number): number {
  switch (score) {
    case "gwpr":
      return K * N * N; // on the head-mean map (the mean itself: see the caller)
    case "gwpr-rms":
      return heads * K * N * N; // iterated per head
    case "column-mean": // K = 1: the column mean only, as one product
      return N * N;
    case "cross-attention": // u = column mean, s = C u: element-wise products and sums (the map: see the caller)
    case "cross-gwpr":
    case "feature-norm": // an L2 norm
    case "random":
      return 0;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pruning methods (src/pruning): FLOPs of one step under an installed method.

function isAtEdm(m: PruningMethod): m is AtEdm {
  return m.name === "atedm" && "graphOptions" in m;
}
function isTome(m: PruningMethod): m is Tome {
  return m.name === "tome" && "options" in m && typeof (m as Tome).options?.mergeAttn === "boolean";
}

export interface MethodFlopsOptions {
  /** Ratios per block path actually used (e.g. those a generation reported); default `method.ratio(block, at)`. */
  ratios?: Record<string, number>;
  batch?: number;
  textLength?: number;
}

/**
 * FLOPs of one U-Net call at step `at` under a pruning method (null: the unpruned model), counting what the
 * method's graph executes: AT-EDM with its kept-token counts and its score / recovery / pruning-point variants,
 * ToMe with its merged-token counts, partitions and merge_attn / merge_crossattn / merge_mlp. A block whose
 * ratio is 0 at this step runs dense (UNet2DConditionModel builds no pruning path for it). Other methods are
 * an error (no FLOPs model).
 */
export function methodFlops(
  cfg: UNetConfig,
  method: PruningMethod | null,
  latent: [number, number],
  at: StepInfo,
  options: MethodFlopsOptions = {},
): UNetFlops {
  const base: UNetFlopsOptions = { latent, batch: options.batch, textLength: options.textLength };
  if (!method) return unetFlops(cfg, base);
  const lat = { height: latent[0], width: latent[1] };
  const per: Record<string, number | null> = {};
  for (const b of attentionBlocks(cfg)) {
    const ratio = options.ratios?.[b.path] ?? method.ratio(b, at);
    per[b.path] = ratio > 0 ? method.keptTokens(b, ratio, lat) : null;
  }
  if (isAtEdm(method)) {
    const o = method.graphOptions;
    return unetFlops(cfg, {
      ...base,
      keep: per,
      score: o.score,
      iterations: o.score === "column-mean" ? 1 : o.iterations,
      recovery: o.recovery,
      ...(o.pruningPoint !== "auto" ? { pruningPoint: o.pruningPoint } : {}),
    });
  }
  if (isTome(method)) {
    const o = method.options;
    const r: Record<string, number | null> = {};
    for (const b of attentionBlocks(cfg)) {
      const kept = per[b.path]!;
      r[b.path] = kept === null ? null : blockTokensOf(lat, b.downsample) - kept;
    }
    return unetFlops(cfg, {
      ...base,
      tome: { r, mergeAttn: o.mergeAttn, mergeCrossattn: o.mergeCrossattn, mergeMlp: o.mergeMlp, sx: o.sx, sy: o.sy },
    });
  }
  throw new Error(`methodFlops: no FLOPs model for pruning method '${method.name}'`);
}

function blockTokensOf(latent: { height: number; width: number }, downsample: number): number {
  let { height, width } = latent;
  for (let d = 1; d < downsample; d *= 2) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  return height * width;
}

export interface TomeRatioMatch {
  /** A ToMe ratio whose FLOPs are closest to the target (FLOPs are constant over small ranges of ratios). */
  ratio: number;
  /** Its count (model FLOPs in `total`, matching in `overhead`). */
  flops: UNetFlops;
  /** The compared FLOPs (`total`, or `totalWithOverhead` with includeOverhead) and its difference to the target. */
  matched: number;
  /** (matched - target) / target. */
  relativeError: number;
  /** The FLOPs range ToMe reaches with these options: [at the largest ratio, at ratio 0 (dense)]. */
  range: [number, number];
}

export interface MatchTomeOptions extends Omit<TomeMethodOptions, "ratio" | "schedule"> {
  /** Upper end of the search. Default tomesd's maximum 1 - 1 / (sx * sy) (r is capped at the src count anyway). */
  maxRatio?: number;
  /** Compare FLOPs with the matching overhead. Default false (model FLOPs, the SPEC's headline numbers). */
  includeOverhead?: boolean;
  batch?: number;
  textLength?: number;
  /** Bisection steps. Default 60 (the FLOPs are a step function of the ratio: r = floor(N * ratio)). */
  steps?: number;
}

/**
 * The ToMe ratio (same ratio for every merged block, no schedule) whose FLOPs at `latent` are closest to
 * `targetFlops`: bisection over [0, maxRatio] for the ratio where ToMe's FLOPs (non-increasing in the ratio)
 * cross the target, then the closer of the two sides. Used to compare ToMe and AT-EDM at matched FLOPs:
 *
 *   const target = methodFlops(cfg, new AtEdm({ ratio: 0.63, schedule: "none" }), latent, at).total;
 *   const ratio = matchTomeRatio(cfg, latent, target, { maxDownsample: 4, mergeCrossattn: true, mergeMlp: true });
 *
 * When ToMe cannot reach the target (e.g. merging attn1 only), the ratio of its closest count is returned
 * (tomesd's maximum ratio, or 0 when the target is above the dense count); `matchTomeRatioDetails` says how
 * close it got and what range ToMe covers.
 */
export function matchTomeRatio(
  cfg: UNetConfig,
  latent: [number, number],
  targetFlops: number,
  tomeOptions: MatchTomeOptions = {},
): number {
  return matchTomeRatioDetails(cfg, latent, targetFlops, tomeOptions).ratio;
}

/** `matchTomeRatio` with the matched count, its relative error and the FLOPs range ToMe reaches. */
export function matchTomeRatioDetails(
  cfg: UNetConfig,
  latent: [number, number],
  targetFlops: number,
  tomeOptions: MatchTomeOptions = {},
): TomeRatioMatch {
  const { maxRatio, includeOverhead = false, batch, textLength, steps = 60, ...opts } = tomeOptions;
  const sx = opts.sx ?? 2;
  const sy = opts.sy ?? 2;
  const hi0 = Math.min(maxRatio ?? 1 - 1 / (sx * sy), 1 - 1e-12);
  const at: StepInfo = { step: 0, steps: 1 };
  const count = (ratio: number) => {
    const f = methodFlops(cfg, new Tome({ ...opts, ratio, schedule: "none" }), latent, at, { batch, textLength });
    return { f, v: includeOverhead ? f.totalWithOverhead : f.total };
  };
  const dense = count(0);
  const most = count(hi0);
  const pick = (ratio: number, c: { f: UNetFlops; v: number }): TomeRatioMatch => ({
    ratio, flops: c.f, matched: c.v, relativeError: (c.v - targetFlops) / targetFlops, range: [most.v, dense.v],
  });
  if (targetFlops >= dense.v || most.v >= dense.v) return pick(0, dense); // no merging reaches below dense
  if (targetFlops <= most.v) {
    // The smallest ratio that reaches ToMe's minimum.
    let [lo, hi] = [0, hi0];
    for (let i = 0; i < steps; i++) {
      const mid = (lo + hi) / 2;
      if (count(mid).v <= most.v) hi = mid;
      else lo = mid;
    }
    return pick(hi, count(hi));
  }
  // Invariant: v(lo) > target >= v(hi).
  let [lo, hi] = [0, hi0];
  let [vlo, vhi] = [dense, most];
  for (let i = 0; i < steps && hi - lo > 1e-15; i++) {
    const mid = (lo + hi) / 2;
    const c = count(mid);
    if (c.v > targetFlops) [lo, vlo] = [mid, c];
    else [hi, vhi] = [mid, c];
  }
  return Math.abs(vlo.v - targetFlops) < Math.abs(vhi.v - targetFlops) ? pick(lo, vlo) : pick(hi, vhi);
}

/** `x` in TFLOPs with 3 decimals, e.g. "6.761". */
export function tflops(x: number): string {
  return (x / 1e12).toFixed(3);
}
