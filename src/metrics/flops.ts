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
 * Cross-attention K/V projections of the text do not depend on the tokens and never shrink. The pruning
 * overhead is a separate line, not in `total`: the explicit attention map is attn1's QK^T (already counted); the
 * G-WPR iterations cost K matrix-vector products of N x N per batch element (the head mean is additions only);
 * recovery by copy is an argmax (no multiply-adds), by cosine similarity (N - k) * k * C multiply-adds.
 */
import { attentionBlocks, type AttentionBlockInfo, type UNetConfig } from "../models/unet.js";

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
export type ScoreVariant = "gwpr" | "gwpr-rms" | "column-mean" | "cross-attention" | "random" | "feature-norm";
export type RecoveryVariant = "copy" | "copy-delta" | "cosine" | "nearest" | "zero";

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
  /** Recovery variant for the overhead line. Default copy. */
  recovery?: RecoveryVariant;
}

export interface BlockFlops {
  /** Attention block path, e.g. `down_blocks.1.attentions.0`. */
  path: string;
  depth: number;
  channels: number;
  /** N = tokens of the block's feature map. */
  tokens: number;
  /** Kept tokens k, null when not pruned. */
  kept: number | null;
  pruningPoint: PruningPoint | null;
  /** Model FLOPs of the block (norms excluded), with pruning applied. */
  flops: number;
  /** Its pruning overhead (0 when not pruned). */
  overhead: number;
}

export interface OverheadFlops {
  /** Token scoring (G-WPR iterations or the variant's work). */
  score: number;
  /** Finding each pruned token's source (cosine similarity; 0 for copy by attention argmax). */
  recovery: number;
  total: number;
}

export interface UNetFlops {
  /** Model FLOPs of one U-Net call, without the pruning overhead. */
  total: number;
  byCategory: Record<FlopsCategory, number>;
  /** Per module path (see the file comment); sums to `total`. */
  byModule: Record<string, number>;
  byBlock: BlockFlops[];
  /** The pruning overhead line (G-WPR, recovery), not included in `total`. */
  overhead: OverheadFlops;
  totalWithOverhead: number;
  /** Latent size used. */
  latent: [number, number];
}

/** SPEC step 3: k = max(1, floor((1 - rho) * N + 0.5)). */
export function keepCount(tokens: number, rho: number): number {
  return Math.max(1, Math.floor((1 - rho) * tokens + 0.5));
}

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
  const sizes = levelSizes(cfg, H, W);
  const boc = cfg.block_out_channels;
  const n = boc.length;
  const c0 = boc[0]!;
  const temb = 4 * c0;

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
  const overhead: OverheadFlops = { score: 0, recovery: 0, total: 0 };
  const transformer = (path: string, hw: [number, number]) => {
    const block = blocks.find((b) => b.path === path)!;
    const C = block.channels;
    const N = hw[0] * hw[1];
    const kept = options.keep?.[path] ?? null;
    if (kept !== null && !(Number.isInteger(kept) && kept >= 1 && kept <= N)) {
      throw new Error(`unetFlops: ${path} keeps ${kept} of ${N} tokens`);
    }
    const point: PruningPoint | null = kept === null
      ? null
      : typeof options.pruningPoint === "function"
        ? options.pruningPoint(block)
        : options.pruningPoint ?? (block.depth >= 2 ? "after-layer1" : "after-attn1");
    const before = Object.values(byModule).reduce((a, b) => a + b, 0);
    const k = kept ?? N;
    add(`${path}.proj_in`, N * C * C);
    for (let l = 0; l < block.depth; l++) {
      const lp = `${path}.transformer_blocks.${l}`;
      // Tokens of this layer's self-attention, and of everything after it in the layer.
      const nAttn = l === 0 || point === null ? N : k;
      const nRest = point === null ? N : l === 0 && point === "after-layer1" ? N : k;
      for (const proj of ["to_q", "to_k", "to_v", "to_out.0"]) add(`${lp}.attn1.${proj}`, nAttn * C * C);
      add(`${lp}.attn1`, 2 * nAttn * nAttn * C); // QK^T and PV
      add(`${lp}.attn2.to_q`, nRest * C * C);
      add(`${lp}.attn2.to_k`, L * D * C);
      add(`${lp}.attn2.to_v`, L * D * C);
      add(`${lp}.attn2`, 2 * nRest * L * C);
      add(`${lp}.attn2.to_out.0`, nRest * C * C);
      add(`${lp}.ff.net.0.proj`, nRest * C * 8 * C);
      add(`${lp}.ff.net.2`, nRest * 4 * C * C);
    }
    add(`${path}.proj_out`, k * C * C);
    const flops = Object.values(byModule).reduce((a, b) => a + b, 0) - before;
    let over = 0;
    if (kept !== null) {
      const s = 2 * B * scoreMacs(score, N, C, L, block.heads, K);
      const r = 2 * B * (recovery === "cosine" ? (N - k) * k * C : 0);
      overhead.score += s;
      overhead.recovery += r;
      over = s + r;
    }
    byBlock.push({ path, depth: block.depth, channels: C, tokens: N, kept, pruningPoint: point, flops, overhead: over });
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
  overhead.total = overhead.score + overhead.recovery;
  return { total, byCategory, byModule, byBlock, overhead, totalWithOverhead: total + overhead.total, latent: [H, W] };
}

/** Multiply-adds per batch element of scoring N tokens (SPEC variants). */
function scoreMacs(score: ScoreVariant, N: number, C: number, L: number, heads: number, K: number): number {
  switch (score) {
    case "gwpr":
      return K * N * N; // K iterations s <- A^T s on the head-mean map (the mean itself: additions)
    case "gwpr-rms":
      return heads * K * N * N; // iterated per head
    case "column-mean":
      return N * N; // one step from the uniform vector
    case "cross-attention":
      return N * L; // s = C u (u, the column mean of C: additions)
    case "feature-norm":
      return N * C; // squared L2 norms
    case "random":
      return 0;
  }
}

/** `x` in TFLOPs with 3 decimals, e.g. "6.761". */
export function tflops(x: number): string {
  return (x / 1e12).toFixed(3);
}
