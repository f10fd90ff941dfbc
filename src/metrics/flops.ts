/**
 * Analytic FLOPs of one U-Net call, from its config and latent size (SPEC "FLOPs accounting"): 2 FLOPs per
 * multiply-add of every convolution, linear layer and attention matmul (QK^T and PV); norms, softmax and
 * element-wise ops are not counted. Batch 1 and a 77-token text by default.
 *
 *   const r = unetFlops(cfg, { height: 1024, width: 1024 });                              // SD-XL: 6.761e12
 *   const p = methodFlops(cfg, new AtEdm({ ratio: 0.63, schedule: "none" }), [128, 128], { step: 0, steps: 1 });
 *   p.total / r.total;  p.overhead.total;                                                 // pruned, G-WPR + recovery
 *
 * The count iterates the U-Net's module walk (`unetModules`, src/models/unet_structure.ts). An attention block's
 * count follows from its `AttentionBlockCost` (src/models/pruning_hook.ts): the tokens its runner sends through
 * each sub-layer, which the installed pruning method declares beside its graph code (`PruningMethod.cost`:
 * `atedmBlockCost` in src/pruning/atedm.ts, `tomeBlockCost` in src/pruning/tome.ts); this file knows no method.
 * The pruning overhead (G-WPR, recovery, ToMe's matching) is a separate line, not in `total`.
 *
 * Every count is kept per module, under the names the test helper `graphFlops` gives the nodes of a built graph:
 * a weight's module path (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`) for convolutions and
 * linears, and the attention module (`...transformer_blocks.0.attn1`) for its QK^T and PV matmuls, so the two
 * counts can be compared module by module.
 *
 * `matchTomeRatio` (`matchTomeRatioDetails`) finds the ToMe ratio whose FLOPs are closest to a target (ToMe vs
 * AT-EDM at equal FLOPs).
 */
import { AtedmError } from "../errors.js";
import { denseBlockCost, type AttentionBlockCost, type AttentionBlockInfo, type PruningMethod, type StepInfo } from "../models/pruning_hook.js";
import { blockTokens, featureMapSize, unetModules, type LatentSize, type UNetConfig } from "../models/unet_structure.js";
import { atedmBlockCost, type AtEdmGraphOptions } from "../pruning/atedm.js";
import { keepCount } from "../pruning/atedm_math.js";
import { tomeBlockCost, type TomeMerges } from "../pruning/tome.js";
import { Tome, type TomeMethodOptions } from "../pruning/tome_method.js";

/** Where the FLOPs go. Attention-core matmuls of attn2 are in `attn2` with its projections. */
export type FlopsCategory = "resnet" | "attn1_proj" | "attn1_matmul" | "attn2" | "ff" | "proj_io" | "other";
export const FLOPS_CATEGORIES: readonly FlopsCategory[] = ["resnet", "attn1_proj", "attn1_matmul", "attn2", "ff", "proj_io", "other"];

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

/** ToMe (token merging) by merged-token counts, for analyses without a method object; see `tomeBlockCost`. */
export interface TomeFlopsOptions extends Partial<TomeMerges> {
  /**
   * Tokens merged per layer (tomesd's r, after its cap at the src count) per attention block path. A block not
   * listed (or null) runs dense without a ToMe path; r = 0 runs the ToMe path with the trivial partition.
   */
  r: Record<string, number | null | undefined>;
  /** Strides of the dst grid (one dst per sx x sy cell: floor(h / sy) * floor(w / sx) dst tokens). Default 2. */
  sx?: number;
  sy?: number;
}

/**
 * Options of `unetFlops`. Pruning is given either by kept-token counts with AT-EDM's variants (`keep` and the
 * `AtEdmGraphOptions` fields; defaults are the SPEC's) or by ToMe merge counts (`tome`); `methodFlops` takes an
 * installed method instead.
 */
export interface UNetFlopsOptions extends Partial<Omit<AtEdmGraphOptions, "maskSharing" | "damping">> {
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
  /** AT-EDM: kept tokens per attention block path (`down_blocks.1.attentions.0`); missing or null = not pruned. */
  keep?: Record<string, number | null | undefined>;
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
  pruningPoint: string | null;
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
   * the after-attn1 point: its attn2 to_q and QK^T), per module path. A graph count attributes these to the
   * modules (`graphFlops` byModule), the rest of `total` to its `overhead` category.
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

function latentOf(options: UNetFlopsOptions, cfg: UNetConfig): [number, number] {
  if (options.latent) return options.latent;
  const scale = options.vaeScale ?? 8;
  const height = options.height ?? cfg.sample_size * scale;
  const width = options.width ?? height;
  if (height % scale || width % scale) throw new AtedmError(`unetFlops: ${height}x${width} is not a multiple of ${scale}`);
  return [height / scale, width / scale];
}

/** Kept-token counts for every attention block at one pruning ratio (latent size in latent cells). */
export function uniformKeep(cfg: UNetConfig, latentH: number, latentW: number, rho: number): Record<string, number> {
  const keep: Record<string, number> = {};
  for (const m of unetModules(cfg)) {
    if (m.kind === "Transformer2DModel") keep[m.path] = keepCount(blockTokens({ height: latentH, width: latentW }, m.block), rho);
  }
  return keep;
}

/** The cost of one block under `unetFlops`'s keep / tome options (validated), or null when it runs dense. */
function optionsBlockCost(options: UNetFlopsOptions, block: AttentionBlockInfo, grid: LatentSize, textLength: number): AttentionBlockCost | null {
  const N = grid.height * grid.width;
  const { path } = block;
  const kept = options.keep?.[path] ?? null;
  const tome = options.tome;
  const r = tome?.r[path] ?? null;
  if (kept !== null && !(Number.isInteger(kept) && kept >= 1 && kept <= N)) throw new AtedmError(`unetFlops: ${path} keeps ${kept} of ${N} tokens`);
  if (r !== null && kept !== null) throw new AtedmError(`unetFlops: ${path} is both pruned (keep) and merged (tome)`);
  if (kept !== null) return atedmBlockCost(block, N, kept, options, textLength);
  if (r === null) return null;
  // ToMe partition: one dst per complete sx x sy cell; r = 0 is fed with the trivial one (dst = last token).
  const nDst = r === 0 ? 1 : Math.floor(grid.height / (tome!.sy ?? 2)) * Math.floor(grid.width / (tome!.sx ?? 2));
  if (!(Number.isInteger(r) && r >= 0 && r <= N - nDst && (r === 0 || nDst >= 1))) {
    throw new AtedmError(`unetFlops: ${path} merges ${r} of ${N} tokens (${N - nDst} src tokens)`);
  }
  return tomeBlockCost(block, N, nDst, r, {
    mergeAttn: tome!.mergeAttn ?? true,
    mergeCrossattn: tome!.mergeCrossattn ?? false,
    mergeMlp: tome!.mergeMlp ?? false,
  });
}

/** FLOPs of one U-Net call; see the file comment. */
export function unetFlops(cfg: UNetConfig, options: UNetFlopsOptions = {}): UNetFlops {
  const K = options.iterations ?? 10;
  if (!(Number.isInteger(K) && K >= 1)) throw new AtedmError(`unetFlops: iterations must be a positive integer, got ${K}`);
  const textLength = options.textLength ?? 77;
  return countFlops(cfg, latentOf(options, cfg), options.batch ?? 1, textLength, (block, grid) => optionsBlockCost(options, block, grid, textLength));
}

/** The count itself: every module of the walk, each attention block by its cost (null = dense). */
function countFlops(
  cfg: UNetConfig,
  [H, W]: [number, number],
  B: number,
  L: number,
  blockCost: (block: AttentionBlockInfo, grid: LatentSize) => AttentionBlockCost | null,
): UNetFlops {
  const D = cfg.cross_attention_dim;
  const temb = 4 * cfg.block_out_channels[0]!;
  const latent = { height: H, width: W };
  const byModule: Record<string, number> = {};
  /** Record `macs` multiply-adds (per batch element) of module `path`. */
  const add = (path: string, macs: number) => {
    byModule[path] = (byModule[path] ?? 0) + 2 * B * macs;
  };
  const conv = (path: string, grid: LatentSize, cout: number, cin: number, k: number) => add(path, grid.height * grid.width * cout * cin * k * k);
  const byBlock: BlockFlops[] = [];
  const overhead: OverheadFlops = { score: 0, recovery: 0, matching: 0, total: 0, byModule: {} };

  for (const m of unetModules(cfg)) {
    const p = m.path;
    switch (m.kind) {
      case "Conv2d":
        conv(p, featureMapSize(latent, m.level), m.outChannels, m.inChannels, 3);
        break;
      case "TimestepEmbedding":
      case "AddEmbedding":
        add(`${p}.linear_1`, m.inChannels * m.outChannels);
        add(`${p}.linear_2`, m.outChannels * m.outChannels);
        break;
      case "ResnetBlock2D": {
        const grid = featureMapSize(latent, m.level);
        conv(`${p}.conv1`, grid, m.outChannels, m.inChannels, 3);
        add(`${p}.time_emb_proj`, temb * m.outChannels);
        conv(`${p}.conv2`, grid, m.outChannels, m.outChannels, 3);
        if (m.inChannels !== m.outChannels) conv(`${p}.conv_shortcut`, grid, m.outChannels, m.inChannels, 1);
        break;
      }
      case "Downsample2D":
      case "Upsample2D":
        // The convolution runs at the output level (after the stride-2 conv / after the nearest upsampling).
        conv(`${p}.conv`, featureMapSize(latent, m.level), m.channels, m.channels, 3);
        break;
      case "GroupNorm":
        break;
      case "Transformer2DModel": {
        const block = m.block;
        const grid = featureMapSize(latent, m.level);
        const N = grid.height * grid.width;
        const C = block.channels;
        const cost = blockCost(block, grid) ?? denseBlockCost(block, N);
        const before = Object.values(byModule).reduce((a, b) => a + b, 0);
        add(`${p}.proj_in`, N * C * C);
        cost.layers.forEach((t, l) => {
          const lp = `${p}.transformer_blocks.${l}`;
          for (const proj of ["to_q", "to_k", "to_v", "to_out.0"]) add(`${lp}.attn1.${proj}`, t.attn1 * C * C);
          add(`${lp}.attn1`, 2 * t.attn1 * t.attn1 * C); // QK^T and PV
          add(`${lp}.attn2.to_q`, t.attn2 * C * C);
          add(`${lp}.attn2.to_k`, L * D * C);
          add(`${lp}.attn2.to_v`, L * D * C);
          add(`${lp}.attn2`, 2 * t.attn2 * L * C);
          add(`${lp}.attn2.to_out.0`, t.attn2 * C * C);
          add(`${lp}.ff.net.0.proj`, t.ff * C * 8 * C);
          add(`${lp}.ff.net.2`, t.ff * 4 * C * C);
        });
        add(`${p}.proj_out`, cost.projOut * C * C);
        const flops = Object.values(byModule).reduce((a, b) => a + b, 0) - before;
        const o = cost.overhead;
        overhead.score += 2 * B * o.score;
        overhead.recovery += 2 * B * o.recovery;
        overhead.matching += 2 * B * o.matching;
        for (const [mp, macs] of Object.entries(o.byModule)) overhead.byModule[mp] = (overhead.byModule[mp] ?? 0) + 2 * B * macs;
        byBlock.push({
          path: p,
          depth: block.depth,
          channels: C,
          tokens: N,
          kept: cost.kept,
          pruningPoint: cost.pruningPoint,
          merged: cost.merged,
          flops,
          overhead: 2 * B * (o.score + o.recovery + o.matching),
        });
        break;
      }
    }
  }

  const byCategory = Object.fromEntries(FLOPS_CATEGORIES.map((c) => [c, 0])) as Record<FlopsCategory, number>;
  let total = 0;
  for (const [m, f] of Object.entries(byModule)) {
    byCategory[categoryOf(m)] += f;
    total += f;
  }
  overhead.total = overhead.score + overhead.recovery + overhead.matching;
  return { total, byCategory, byModule, byBlock, overhead, totalWithOverhead: total + overhead.total, latent: [H, W] };
}

export interface MethodFlopsOptions {
  /** Ratios per block path actually used (e.g. those a generation reported); default `method.ratio(block, at)`. */
  ratios?: Record<string, number>;
  batch?: number;
  textLength?: number;
}

/**
 * FLOPs of one U-Net call at step `at` under a pruning method (null: the unpruned model), counting what the
 * method's graph executes (`PruningMethod.cost`). A block whose ratio is 0 at this step runs dense
 * (UNet2DConditionModel builds no pruning path for it).
 */
export function methodFlops(
  cfg: UNetConfig,
  method: PruningMethod | null,
  latent: [number, number],
  at: StepInfo,
  options: MethodFlopsOptions = {},
): UNetFlops {
  if (method && typeof method.cost !== "function") {
    throw new AtedmError(`methodFlops: no FLOPs model for pruning method '${method.name}' (it has no cost())`);
  }
  const textLength = options.textLength ?? 77;
  const lat = { height: latent[0], width: latent[1] };
  return countFlops(cfg, latent, options.batch ?? 1, textLength, (block) => {
    if (!method) return null;
    const ratio = options.ratios?.[block.path] ?? method.ratio(block, at);
    return ratio > 0 ? method.cost(block, ratio, lat, textLength) : null;
  });
}

/**
 * U-Net FLOPs per step of a whole generation of `steps` steps under a method's schedule (null: unpruned): the mean
 * of `methodFlops` over the steps, and the saving against the unpruned model (overhead counted, SPEC convention).
 */
export function generationFlops(
  cfg: UNetConfig,
  method: PruningMethod | null,
  latent: [number, number],
  steps: number,
  textLength = 77,
): { unpruned: number; perStep: number; saving: number } {
  const unpruned = unetFlops(cfg, { latent, textLength }).total;
  let sum = 0;
  for (let step = 0; step < steps; step++) sum += methodFlops(cfg, method, latent, { step, steps }, { textLength }).total;
  const perStep = sum / steps;
  return { unpruned, perStep, saving: 1 - perStep / unpruned };
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
export function matchTomeRatio(cfg: UNetConfig, latent: [number, number], targetFlops: number, tomeOptions: MatchTomeOptions = {}): number {
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
    ratio,
    flops: c.f,
    matched: c.v,
    relativeError: (c.v - targetFlops) / targetFlops,
    range: [most.v, dense.v],
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
