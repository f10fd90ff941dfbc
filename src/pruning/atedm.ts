/**
 * AT-EDM (Wang et al., CVPR 2024) inside the U-Net graph: rank the image tokens of an attention block with a
 * Generalized Weighted PageRank over layer 1's self-attention map, keep the top k, run the rest of the block
 * on the kept tokens, and refill the pruned positions by a similarity-based copy after proj_out.
 * `../../shared/SPEC-atedm.md` pins every step; the step numbers below are the SPEC's.
 *
 * Everything runs inside ONNX Runtime: the number of kept tokens k is a graph input (`atedm.<block>.k`), so one
 * session serves every ratio and schedule. atedm_reference.ts is the float64 oracle of the same math.
 */
import { AtedmError } from "../errors.js";
import type { GraphBuilder, Value } from "../graph/builder.js";
import { layerForward, type AttentionBlockInfo, type TransformerContext, type TransformerRunner } from "../models/unet.js";
import { f32, i64, type Tensor } from "../runtime/session.js";
import { Mulberry32, stableHash32 } from "../shapes/rng.js";
import { keepCount } from "./atedm_reference.js";
import { blockTokens, type GraphInput, type LatentSize, type PruningMethod, type StepInfo } from "./method.js";
import { scheduleByName, type Schedule, type ScheduleName } from "./schedules.js";

export type ScoreVariant = "gwpr" | "gwpr-rms" | "column-mean" | "cross-gwpr" | "random" | "feature-norm";
export type RecoveryVariant = "copy" | "copy-delta" | "cosine" | "nearest" | "zero";
export type PruningPoint = "auto" | "after-layer1" | "after-attn1";
export type MaskSharing = "per-element" | "conditional";

/** How AT-EDM ranks and refills tokens (the SPEC's variants; defaults are the SPEC's defaults). */
export interface AtEdmGraphOptions {
  /** Token score. Default `gwpr` (head-mean G-WPR). */
  score: ScoreVariant;
  /** G-WPR iterations K. Default 10 (`column-mean` is K = 1). */
  iterations: number;
  /** G-WPR damping d: s <- (1 - d) A^T s + d / N. Default 0. */
  damping: number;
  /** How pruned positions are refilled. Default `copy`. */
  recovery: RecoveryVariant;
  /** Where tokens are dropped. `auto` (default): after layer 1 when depth >= 2, after its self-attention when depth = 1. */
  pruningPoint: PruningPoint;
  /** Under classifier-free guidance: each batch element ranks its own tokens (default), or the conditional half's
   * ranking is used for both halves. */
  maskSharing: MaskSharing;
}

export const ATEDM_GRAPH_DEFAULTS: AtEdmGraphOptions = {
  score: "gwpr",
  iterations: 10,
  damping: 0,
  recovery: "copy",
  pruningPoint: "auto",
  maskSharing: "per-element",
};

/** Graph input names of a block: the kept-token count k ([1], int64) and, for `random`, the scores (B, N). */
export const keepInput = (block: AttentionBlockInfo) => `atedm.${block.path}.k`;
export const randomScoreInput = (block: AttentionBlockInfo) => `atedm.${block.path}.random`;
/** Graph outputs exposed for masks/heat maps: kept indices (B, k) and scores (B, N). */
export const keepOutput = (block: AttentionBlockInfo) => `atedm.${block.path}.keep`;
export const scoreOutput = (block: AttentionBlockInfo) => `atedm.${block.path}.score`;

export function resolvePruningPoint(point: PruningPoint, depth: number): "after-layer1" | "after-attn1" {
  return point === "auto" ? (depth >= 2 ? "after-layer1" : "after-attn1") : point;
}

/**
 * A = mean over heads of P (B, h, N, N) -> (B, 1, N, N): one pass over the whole explicit map (670 MB for an SD-XL
 * 64x64 block), the largest part of the pruning overhead, so a block computes it once and shares it between the
 * score and the recovery. It runs as a MatMul (1/h ... 1/h) x P viewed as (B, h, N*N), which ONNX Runtime 1.30
 * streams faster than a ReduceMean over axis 1 (profile in docs/benchmarks.md); h multiply-adds per entry, counted
 * as overhead.
 */
export function headMean(g: GraphBuilder, probs: Value): Value {
  return g.scope("head_mean", () => {
    const w = uniformRow(g, g.op("Shape", [probs], { start: 1, end: 2 }), 2); // (1, h), every entry 1/h
    const flat = g.op("Reshape", [probs, g.ints([0, 0, -1])]); // (B, h, N*N)
    const shape = g.op("Concat", [g.op("Shape", [probs], { start: 0, end: 1 }), g.ints([1]), g.op("Shape", [probs], { start: 2, end: 4 })], { axis: 0 });
    return g.op("Reshape", [g.op("MatMul", [w, flat]), shape]);
  });
}

/** A row vector of `rank` dims (1, ..., 1, n), every entry 1/n; `n` is an int64 [1] shape value. */
function uniformRow(g: GraphBuilder, n: Value, rank: number): Value {
  const inv = g.op("Reciprocal", [g.op("Cast", [g.op("Reshape", [n, g.ints(new Array(rank).fill(1))])], { to: 1 })]);
  return g.op("Expand", [inv, g.op("Concat", [g.ints(new Array(rank - 1).fill(1)), n], { axis: 0 })]);
}

/**
 * Step 2: scores (B, N) from attention probabilities P (B, h, N, N). `mean` is headMean(P) when the caller already
 * has it (the head-mean variants then never read P again).
 */
export function gwprScore(g: GraphBuilder, probs: Value, iterations: number, damping: number, perHead: boolean, mean?: Value): Value {
  // Work on (B, 1, N, N) (head mean) or (B, h, N, N); s is a row vector (B, *, 1, N) so that s A = A^T s.
  const A = perHead ? probs : mean ?? headMean(g, probs);
  const nInt = g.op("Shape", [A], { start: 3, end: 4 });
  const n = g.op("Cast", [nInt], { to: 1 });
  const damp = (s: Value): Value =>
    damping === 0 ? s : g.op("Add", [g.op("Mul", [s, g.constant(1 - damping)]), g.op("Div", [g.constant(damping), n])]);
  // s0 = (1/N) ones, (1, 1, 1, N); every iteration is a vector-map MatMul (also the first: a column mean as
  // ReduceMean over axis 2 is several times slower in ONNX Runtime than the same product).
  let s = uniformRow(g, nInt, 4);
  for (let k = 0; k < iterations; k++) s = damp(g.op("MatMul", [s, A]));
  if (perHead) {
    // sqrt(mean_h s_h^2)
    s = g.op("Sqrt", [g.op("ReduceMean", [g.op("Mul", [s, s])], { axes: [1], keepdims: 1 })]);
  }
  return g.op("Reshape", [s, g.ints([0, -1])]);
}

/** Cross-attention G-WPR: u_j = mean_i C[i, j], s_i = sum_j C[i, j] u_j over the head-mean map C (B, N, L). */
export function crossGwprScore(g: GraphBuilder, crossProbs: Value): Value {
  const C = g.op("ReduceMean", [crossProbs], { axes: [1], keepdims: 0 });
  const u = g.op("ReduceMean", [C], { axes: [1], keepdims: 1 }); // (B, 1, L)
  return g.op("ReduceSum", [g.op("Mul", [C, u]), g.ints([2])], { keepdims: 0 });
}

/**
 * Step 3: indices (B, k) of the k highest scores, ties to the lower index, sorted ascending.
 * TopK is specified to prefer the lower index among equal values; a second TopK on the negated indices sorts them.
 */
export function keepIndices(g: GraphBuilder, score: Value, k: Value): Value {
  const [, top] = g.opN("TopK", [score, k], 2, { axis: -1, largest: 1, sorted: 1 });
  const neg = g.op("Neg", [g.op("Cast", [top!], { to: 1 })]);
  const [sortedNeg] = g.opN("TopK", [neg, k], 2, { axis: -1, largest: 1, sorted: 1 });
  return g.op("Cast", [g.op("Neg", [sortedNeg!])], { to: 7 });
}

/** x (B, N, C), idx (B, k) -> x[b, idx[b, j], :] (B, k, C). */
export function gatherTokens(g: GraphBuilder, x: Value, idx: Value): Value {
  return g.op("GatherND", [x, g.op("Unsqueeze", [idx, g.ints([2])])], { batch_dims: 1 });
}

/**
 * Step 5: for every token i, the position in the kept list of the token it copies from (B, N) int64.
 * `sim` (B, N, k) is the similarity of every token to every kept token; argmax picks the first (lowest kept
 * index) maximum. Kept tokens are then pointed at themselves.
 */
export function recoverySources(g: GraphBuilder, sim: Value, keep: Value, largest: boolean): Value {
  const src = g.op(largest ? "ArgMax" : "ArgMin", [sim], { axis: -1, keepdims: 0, select_last_index: 0 });
  const k = g.op("Shape", [keep], { start: 1, end: 2 });
  const own = g.op("Expand", [
    g.op("Unsqueeze", [g.op("Range", [g.constant(0, "int64"), g.op("Squeeze", [k, g.ints([0])]), g.constant(1, "int64")]), g.ints([0])]),
    g.op("Shape", [keep]),
  ]);
  return g.op("ScatterElements", [src, keep, own], { axis: 1 });
}

/** Columns of the head-mean map A (B, 1, N, N) at the kept tokens: (B, N, k). */
function keptColumns(g: GraphBuilder, A: Value, keep: Value): Value {
  const idx = g.op("Expand", [g.op("Unsqueeze", [keep, g.ints([1, 2])]), g.op("Concat", [
    g.op("Shape", [A], { start: 0, end: 3 }), g.op("Shape", [keep], { start: 1, end: 2 }),
  ], { axis: 0 })]);
  return g.op("Squeeze", [g.op("GatherElements", [A, idx], { axis: 3 }), g.ints([1])]);
}

/** Conditional-half mask sharing: replace the unconditional half's scores with the conditional half's. */
function shareConditional(g: GraphBuilder, score: Value): Value {
  const b = g.op("Shape", [score], { start: 0, end: 1 });
  const half = g.op("Div", [b, g.constant([2], "int64")]);
  const cond = g.op("Slice", [score, half, b, g.ints([0])]);
  return g.op("Concat", [cond, cond], { axis: 0 });
}

/** The TransformerRunner that prunes one attention block. */
export function atedmRunner(options: Partial<AtEdmGraphOptions> = {}): TransformerRunner {
  const o = { ...ATEDM_GRAPH_DEFAULTS, ...options };
  return (ctx: TransformerContext): Value => {
    const { g, layers, block } = ctx;
    const point = resolvePruningPoint(o.pruningPoint, layers.length);
    const L1 = layers[0]!;
    // Step 1: layer 1's self-attention on all N tokens, with explicit probabilities.
    let x = ctx.tokens;
    const a1 = L1.attn1(L1.norm1(x), { explicitProbs: true });
    x = g.op("Add", [a1.out, x]);
    let crossProbs: Value | undefined;
    if (point === "after-layer1") {
      // Rest of layer 1 on all tokens (the cross-attention map is needed by cross-gwpr).
      if (o.score === "cross-gwpr") {
        const a2 = L1.attn2Explicit(L1.norm2(x));
        crossProbs = a2.probs;
        x = g.op("Add", [a2.out, x]);
      } else {
        x = g.op("Add", [L1.attn2(L1.norm2(x)), x]);
      }
      x = g.op("Add", [L1.ff(L1.norm3(x)), x]);
    } else if (o.score === "cross-gwpr") {
      crossProbs = L1.attn2Probs(L1.norm2(x));
    }
    const x1 = x; // the tokens at the pruning point, all N of them
    // Pruning work (ranking, keep set, gathers, recovery) is named under an "atedm" scope, so profiles can
    // attribute its time (the pruning overhead) separately from the model's own layers.
    const overhead = <T>(fn: () => T): T => g.scope("atedm", fn);
    // The head-mean map (B, 1, N, N), built on first use: only the variants that read it pay for it.
    let mean: Value | undefined;
    const headMeanMap = (): Value => (mean ??= overhead(() => headMean(g, a1.probs!)));

    // Step 2: scores.
    const score = overhead(() => {
      let s: Value;
      switch (o.score) {
        case "gwpr":
          s = gwprScore(g, a1.probs!, o.iterations, o.damping, false, headMeanMap());
          break;
        case "column-mean":
          s = gwprScore(g, a1.probs!, 1, o.damping, false, headMeanMap());
          break;
        case "gwpr-rms":
          s = gwprScore(g, a1.probs!, o.iterations, o.damping, true);
          break;
        case "cross-gwpr":
          s = crossGwprScore(g, crossProbs!);
          break;
        case "random":
          s = { name: randomScoreInput(block) };
          break;
        case "feature-norm":
          s = g.op("ReduceL2", [x1], { axes: [-1], keepdims: 0 });
          break;
      }
      return o.maskSharing === "conditional" ? shareConditional(g, s) : s;
    });
    ctx.tap(scoreOutput(block), score);

    // Steps 3-4: keep set, gather, run the rest of the block on kept tokens.
    const keep = overhead(() => keepIndices(g, score, { name: keepInput(block) }));
    ctx.tap(keepOutput(block), keep, "int64");
    let kept = overhead(() => gatherTokens(g, x1, keep));
    if (point === "after-attn1") {
      kept = g.op("Add", [L1.attn2(L1.norm2(kept)), kept]);
      kept = g.op("Add", [L1.ff(L1.norm3(kept)), kept]);
    }
    for (const L of layers.slice(1)) kept = layerForward(L, g, kept);

    // Step 5: proj_out on kept tokens, then refill the pruned positions.
    switch (o.recovery) {
      case "copy":
      case "cosine":
      case "nearest": {
        const src = overhead(() => {
          let sim: Value;
          if (o.recovery === "copy") sim = keptColumns(g, headMeanMap(), keep);
          else if (o.recovery === "cosine") {
            const unit = g.op("Div", [x1, g.op("ReduceL2", [x1], { axes: [-1], keepdims: 1 })]);
            sim = g.op("MatMul", [unit, g.op("Transpose", [gatherTokens(g, unit, keep)], { perm: [0, 2, 1] })]);
          } else sim = squaredGridDistance(g, ctx, keep);
          return recoverySources(g, sim, keep, o.recovery !== "nearest");
        });
        const out = ctx.projOut(kept);
        return overhead(() => gatherTokens(g, out, src));
      }
      case "copy-delta": {
        // Pruned token i: its own pruning-point features plus its source's change over the rest of the block.
        const refilled = overhead(() => {
          const delta = g.op("Sub", [kept, gatherTokens(g, x1, keep)]);
          const src = recoverySources(g, keptColumns(g, headMeanMap(), keep), keep, true);
          return g.op("Add", [x1, gatherTokens(g, delta, src)]);
        });
        return ctx.projOut(refilled);
      }
      case "zero": {
        // Pruned tokens get no transformer update: their branch output is zero.
        const out = ctx.projOut(kept);
        return overhead(() => {
          const idx = g.op("Expand", [g.op("Unsqueeze", [keep, g.ints([2])]), g.op("Shape", [out])]);
          const zeros = g.op("Mul", [x1, g.constant(0)]);
          return g.op("ScatterElements", [zeros, idx, out], { axis: 1 });
        });
      }
    }
  };
}

/** Squared distance on the (h, w) grid between every token and every kept token, (B, N, k). */
function squaredGridDistance(g: GraphBuilder, ctx: TransformerContext, keep: Value): Value {
  const W = ctx.width;
  const N = g.op("Mul", [ctx.height, W]);
  const tokens = g.op("Range", [g.constant(0, "int64"), N, g.constant(1, "int64")]); // (N)
  const coords = (t: Value) => [g.op("Cast", [g.op("Div", [t, W])], { to: 1 }), g.op("Cast", [g.op("Mod", [t, W])], { to: 1 })];
  const [yi, xi] = coords(g.op("Unsqueeze", [tokens, g.ints([0, 2])])); // (1, N, 1)
  const [yj, xj] = coords(g.op("Unsqueeze", [keep, g.ints([1])])); // (B, 1, k)
  const dy = g.op("Sub", [yi!, yj!]);
  const dx = g.op("Sub", [xi!, xj!]);
  return g.op("Add", [g.op("Mul", [dy, dy]), g.op("Mul", [dx, dx])]);
}

/** User-facing AT-EDM options: the graph variants plus the ratio and schedule. */
export interface AtEdmOptions extends Partial<AtEdmGraphOptions> {
  /** Pruning ratio rho: the fraction of tokens dropped in a pruned block. Default 0.5. */
  ratio?: number;
  /** Per-step, per-block ratio policy. Default DSAP. */
  schedule?: Schedule | ScheduleName;
  /** Seed of the `random` score variant. Default 0. */
  seed?: number;
}

/** AT-EDM as a PruningMethod (see method.ts): what `applyAtEdm` installs on a U-Net. */
export class AtEdm implements PruningMethod {
  readonly name = "atedm";
  readonly ratioValue: number;
  readonly schedule: Schedule;
  readonly graphOptions: AtEdmGraphOptions;
  readonly seed: number;

  constructor(options: AtEdmOptions = {}) {
    const ratio = options.ratio ?? 0.5;
    if (!(ratio >= 0 && ratio < 1)) throw new AtedmError(`AT-EDM ratio must be in [0, 1), got ${ratio}`);
    if (options.iterations !== undefined && !(Number.isInteger(options.iterations) && options.iterations >= 1)) {
      throw new AtedmError(`AT-EDM iterations must be a positive integer, got ${options.iterations}`);
    }
    if (options.damping !== undefined && !(options.damping >= 0 && options.damping < 1)) {
      throw new AtedmError(`AT-EDM damping must be in [0, 1), got ${options.damping}`);
    }
    this.ratioValue = ratio;
    this.schedule = typeof options.schedule === "function" ? options.schedule : scheduleByName(options.schedule ?? "dsap");
    this.graphOptions = { ...ATEDM_GRAPH_DEFAULTS, ...stripUndefined(options) } as AtEdmGraphOptions;
    this.seed = options.seed ?? 0;
  }

  ratio(block: AttentionBlockInfo, at: StepInfo): number {
    return this.schedule(at, block, this.ratioValue);
  }

  runner(_block: AttentionBlockInfo): TransformerRunner {
    return atedmRunner(this.graphOptions);
  }

  inputs(block: AttentionBlockInfo): GraphInput[] {
    const inputs: GraphInput[] = [{ name: keepInput(block), dtype: "int64", shape: [1] }];
    if (this.graphOptions.score === "random") inputs.push({ name: randomScoreInput(block), dtype: "float32", shape: ["batch", `n_${block.path}`] });
    return inputs;
  }

  feeds(block: AttentionBlockInfo, ratio: number, latent: LatentSize, batch: number, at: StepInfo): Record<string, Tensor> {
    const n = blockTokens(latent, block.downsample);
    const feeds: Record<string, Tensor> = { [keepInput(block)]: i64([keepCount(n, ratio)]) };
    if (this.graphOptions.score === "random") {
      // Seeded per (seed, step, block) so that a run is reproducible whatever else happened before it.
      const rng = new Mulberry32(stableHash32(`${this.seed}|${at.step}|${block.path}`));
      const data = new Float32Array(batch * n);
      for (let i = 0; i < data.length; i++) data[i] = rng.next();
      feeds[randomScoreInput(block)] = f32(data, [batch, n]);
    }
    return feeds;
  }

  keptTokens(block: AttentionBlockInfo, ratio: number, latent: LatentSize): number {
    return keepCount(blockTokens(latent, block.downsample), ratio);
  }

  outputs(block: AttentionBlockInfo): string[] {
    return [keepOutput(block), scoreOutput(block)];
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
