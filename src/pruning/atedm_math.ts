/**
 * AT-EDM's math as graph functions, apart from its wiring into the U-Net (atedm.ts), the way tomesd keeps
 * merge.py apart from patch.py. `../../shared/SPEC-atedm.md` pins every step; the step numbers below are the
 * SPEC's. Where to find each part:
 *
 *   G-WPR (step 2) ............ `gwprScore`, and every score variant in the `SCORES` table
 *   keep set (step 3) ......... `keepCount` (k from the ratio), `keepIndices` (top k, ties to the lower index)
 *   pruning point (steps 4, 6)  `resolvePruningPoint` (the rule), applied by `atedmRunner` in atedm.ts
 *   recovery (step 5) ......... every recovery variant in the `RECOVERIES` table, `recoverySources` (the argmax),
 *                               `keptColumns` / `keptRows` (A[i, kept] / A[kept, i] for the attention-based copies)
 *   DSAP ...................... schedules.ts
 *
 * Each variant in a table declares what it reads and the multiply-adds it adds (the pruning overhead line of the
 * SPEC's FLOPs convention), so its graph code and its cost sit side by side. atedm_reference.ts is the float64
 * oracle of the same math, for tests.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";

export type ScoreVariant = "gwpr" | "gwpr-rms" | "column-mean" | "cross-gwpr" | "random" | "feature-norm";
export type RecoveryVariant = "copy" | "copy-delta" | "cosine" | "nearest" | "zero" | "copy-col" | "copy-sym";
export type PruningPoint = "auto" | "after-layer1" | "after-attn1";
export type MaskSharing = "per-element" | "conditional";

/** SPEC step 3: k = max(1, floor((1 - rho) N + 0.5)) tokens kept (round half up). */
export function keepCount(N: number, ratio: number): number {
  return Math.max(1, Math.floor((1 - ratio) * N + 0.5));
}

/**
 * SPEC steps 4 and 6: where tokens are dropped. `auto` drops them after layer 1 (after its feed-forward
 * residual) in blocks of depth >= 2, and after layer 1's self-attention in blocks of depth 1 (where dropping
 * after the whole layer would save nothing).
 */
export function resolvePruningPoint(point: PruningPoint, depth: number): "after-layer1" | "after-attn1" {
  return point === "auto" ? (depth >= 2 ? "after-layer1" : "after-attn1") : point;
}

/** A row vector of `rank` dims (1, ..., 1, n), every entry 1/n; `n` is an int64 [1] shape value. */
function uniformRow(g: GraphBuilder, n: Value, rank: number): Value {
  const inv = g.op("Reciprocal", [g.op("Cast", [g.op("Reshape", [n, g.ints(new Array(rank).fill(1))])], { to: 1 })]);
  return g.op("Expand", [inv, g.op("Concat", [g.ints(new Array(rank - 1).fill(1)), n], { axis: 0 })]);
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
    const shape = g.op("Concat", [g.op("Shape", [probs], { start: 0, end: 1 }), g.ints([1]), g.op("Shape", [probs], { start: 2, end: 4 })], {
      axis: 0,
    });
    return g.op("Reshape", [g.op("MatMul", [w, flat]), shape]);
  });
}

/**
 * SPEC step 2, G-WPR: scores (B, N) from attention probabilities P (B, h, N, N): s0 = 1/N, s <- (1 - d) A^T s + d/N,
 * K times. `perHead` iterates every head's map and aggregates sqrt(mean_h s_h^2) (gwpr-rms); otherwise A is the
 * head mean, `mean` when the caller already has it.
 */
export function gwprScore(g: GraphBuilder, probs: Value, iterations: number, damping: number, perHead: boolean, mean?: Value): Value {
  // Work on (B, 1, N, N) (head mean) or (B, h, N, N); s is a row vector (B, *, 1, N) so that s A = A^T s.
  const A = perHead ? probs : (mean ?? headMean(g, probs));
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

/** What a score variant may read. */
export interface ScoreInputs {
  g: GraphBuilder;
  /** Layer 1's self-attention probabilities (B, h, N, N); built only for variants with `readsSelfMap`. */
  probs(): Value;
  /** Their head mean (B, 1, N, N), built once per block on first use. */
  headMean(): Value;
  /** Layer 1's cross-attention probabilities (B, h, N, L); present for variants with `needsCrossMap`. */
  crossProbs?: Value;
  /** The tokens at the pruning point (B, N, C). */
  x1: Value;
  /** Scores drawn outside the graph (B, N), a graph input (the `random` variant). */
  random: Value;
  iterations: number;
  damping: number;
}

export interface ScoreVariantDef {
  /**
   * Reads layer 1's self-attention map (per head or its head mean). Only then is that attention built with explicit
   * probabilities; otherwise it stays ONNX Runtime's fused attention (the same FLOPs, less time and memory).
   */
  readsSelfMap: boolean;
  /** Reads the head-mean map (its h N^2 multiply-adds are then counted under the score). */
  readsHeadMean: boolean;
  /** Needs layer 1's cross-attention probabilities. */
  needsCrossMap: boolean;
  /** Needs scores drawn outside the graph. */
  needsRandomInput: boolean;
  /** MatMul multiply-adds per batch element, the head mean and any cross-attention map excluded. */
  macs(N: number, heads: number, iterations: number): number;
  score(i: ScoreInputs): Value;
}

/** SPEC step 2 and its variants: (B, N) token scores, higher = more important. */
export const SCORES: Readonly<Record<ScoreVariant, ScoreVariantDef>> = {
  /** G-WPR on the head-mean map (default): K vector-map products. */
  gwpr: {
    readsSelfMap: true,
    readsHeadMean: true,
    needsCrossMap: false,
    needsRandomInput: false,
    macs: (N, _heads, K) => K * N * N,
    score: (i) => gwprScore(i.g, i.probs(), i.iterations, i.damping, false, i.headMean()),
  },
  /** G-WPR iterated per head, aggregated sqrt(mean_h s_h^2). */
  "gwpr-rms": {
    readsSelfMap: true,
    readsHeadMean: false,
    needsCrossMap: false,
    needsRandomInput: false,
    macs: (N, heads, K) => heads * K * N * N,
    score: (i) => gwprScore(i.g, i.probs(), i.iterations, i.damping, true),
  },
  /** K = 1: the column mean of the head-mean map, as one product. */
  "column-mean": {
    readsSelfMap: true,
    readsHeadMean: true,
    needsCrossMap: false,
    needsRandomInput: false,
    macs: (N) => N * N,
    score: (i) => gwprScore(i.g, i.probs(), 1, i.damping, false, i.headMean()),
  },
  /** Cross-attention G-WPR: element-wise products and sums (not counted, like norms); the map is the caller's. */
  "cross-gwpr": {
    readsSelfMap: false,
    readsHeadMean: false,
    needsCrossMap: true,
    needsRandomInput: false,
    macs: () => 0,
    score: (i) => crossGwprScore(i.g, i.crossProbs!),
  },
  /** Seeded random scores, drawn outside the graph. */
  random: {
    readsSelfMap: false,
    readsHeadMean: false,
    needsCrossMap: false,
    needsRandomInput: true,
    macs: () => 0,
    score: (i) => i.random,
  },
  /** L2 norm of each token at the pruning point. */
  "feature-norm": {
    readsSelfMap: false,
    readsHeadMean: false,
    needsCrossMap: false,
    needsRandomInput: false,
    macs: () => 0,
    score: (i) => i.g.op("ReduceL2", [i.x1], { axes: [-1], keepdims: 0 }),
  },
};

/**
 * SPEC step 3: indices (B, k) of the k highest scores, ties to the lower index, sorted ascending.
 * TopK is specified to prefer the lower index among equal values; a second TopK on the negated indices sorts them.
 */
export function keepIndices(g: GraphBuilder, score: Value, k: Value): Value {
  const [, top] = g.opN("TopK", [score, k], 2, { axis: -1, largest: 1, sorted: 1 });
  const neg = g.op("Neg", [g.op("Cast", [top!], { to: 1 })]);
  const [sortedNeg] = g.opN("TopK", [neg, k], 2, { axis: -1, largest: 1, sorted: 1 });
  return g.op("Cast", [g.op("Neg", [sortedNeg!])], { to: 7 });
}

/** Mask sharing "conditional": replace the unconditional half's scores with the conditional half's. */
export function shareConditional(g: GraphBuilder, score: Value): Value {
  const b = g.op("Shape", [score], { start: 0, end: 1 });
  const half = g.op("Div", [b, g.constant([2], "int64")]);
  const cond = g.op("Slice", [score, half, b, g.ints([0])]);
  return g.op("Concat", [cond, cond], { axis: 0 });
}

/** x (B, N, C), idx (B, k) -> x[b, idx[b, j], :] (B, k, C). */
export function gatherTokens(g: GraphBuilder, x: Value, idx: Value): Value {
  return g.op("GatherND", [x, g.op("Unsqueeze", [idx, g.ints([2])])], { batch_dims: 1 });
}

/**
 * SPEC step 5: for every token i, the position in the kept list of the token it copies from (B, N) int64.
 * `sim` (B, N, k) is the similarity of every token to every kept token; argmax (argmin when `largest` is false)
 * picks the first (lowest kept index) extremum. Kept tokens are then pointed at themselves.
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

/** Columns of the head-mean map A (B, 1, N, N) at the kept tokens: (B, N, k), A[b][i, keep[j]]. */
export function keptColumns(g: GraphBuilder, A: Value, keep: Value): Value {
  const idx = g.op("Expand", [
    g.op("Unsqueeze", [keep, g.ints([1, 2])]),
    g.op("Concat", [g.op("Shape", [A], { start: 0, end: 3 }), g.op("Shape", [keep], { start: 1, end: 2 })], { axis: 0 }),
  ]);
  return g.op("Squeeze", [g.op("GatherElements", [A, idx], { axis: 3 }), g.ints([1])]);
}

/**
 * Rows of the head-mean map A (B, 1, N, N) at the kept tokens, as (B, N, k): A[b][keep[j], i], how much kept token j
 * attends to token i. A gather of k rows and a transpose of the (B, k, N) result; no multiply-adds.
 */
export function keptRows(g: GraphBuilder, A: Value, keep: Value): Value {
  const rows = gatherTokens(g, g.op("Squeeze", [A, g.ints([1])]), keep); // (B, k, N)
  return g.op("Transpose", [rows], { perm: [0, 2, 1] });
}

/** Cosine similarity of every token of x (B, N, C) to every kept token: (B, N, k). */
export function cosineToKept(g: GraphBuilder, x: Value, keep: Value): Value {
  const unit = g.op("Div", [x, g.op("ReduceL2", [x], { axes: [-1], keepdims: 1 })]);
  return g.op("MatMul", [unit, g.op("Transpose", [gatherTokens(g, unit, keep)], { perm: [0, 2, 1] })]);
}

/** Squared distance on the (height, width) grid between every token and every kept token, (B, N, k). */
export function squaredGridDistance(g: GraphBuilder, height: Value, width: Value, keep: Value): Value {
  const N = g.op("Mul", [height, width]);
  const tokens = g.op("Range", [g.constant(0, "int64"), N, g.constant(1, "int64")]); // (N)
  const coords = (t: Value) => [g.op("Cast", [g.op("Div", [t, width])], { to: 1 }), g.op("Cast", [g.op("Mod", [t, width])], { to: 1 })];
  const [yi, xi] = coords(g.op("Unsqueeze", [tokens, g.ints([0, 2])])); // (1, N, 1)
  const [yj, xj] = coords(g.op("Unsqueeze", [keep, g.ints([1])])); // (B, 1, k)
  const dy = g.op("Sub", [yi!, yj!]);
  const dx = g.op("Sub", [xi!, xj!]);
  return g.op("Add", [g.op("Mul", [dy, dy]), g.op("Mul", [dx, dx])]);
}

/** What a recovery variant may read. */
export interface RecoveryInputs {
  g: GraphBuilder;
  /** The tokens at the pruning point, all N of them (B, N, C). */
  x1: Value;
  /** The kept tokens after the rest of the block, before proj_out (B, k, C). */
  kept: Value;
  /** Kept token indices (B, k), ascending. */
  keep: Value;
  /** The head-mean map of layer 1's self-attention (B, 1, N, N), built once per block on first use. */
  headMean(): Value;
  /** int64 scalars: the block's feature-map height and width. */
  height: Value;
  width: Value;
  /** The block's proj_out on any token set. */
  projOut(x: Value): Value;
  /** Runs `fn` under the pruning-overhead name scope (so profiles attribute its time to the overhead). */
  overhead<T>(fn: () => T): T;
}

export interface RecoveryVariantDef {
  /** Reads the head-mean map (counted under the recovery when the score does not read it too). */
  readsHeadMean: boolean;
  /** Refills before proj_out, which then runs on all N tokens (else on the k kept ones). */
  projOutOnAll: boolean;
  /** MatMul multiply-adds per batch element of finding the sources (head mean excluded). */
  macs(N: number, k: number, channels: number): number;
  /** The dense (B, N, C) output of proj_out with every pruned position refilled. */
  recover(i: RecoveryInputs): Value;
}

/** proj_out on the kept tokens, then every token takes the output of its source (kept tokens their own). */
function copyFromSources(i: RecoveryInputs, similarity: () => Value, largest: boolean): Value {
  const src = i.overhead(() => recoverySources(i.g, similarity(), i.keep, largest));
  const out = i.projOut(i.kept);
  return i.overhead(() => gatherTokens(i.g, out, src));
}

/** SPEC step 5 and its variants. */
export const RECOVERIES: Readonly<Record<RecoveryVariant, RecoveryVariantDef>> = {
  /** Copy (default): src(i) = argmax over kept j of A[i, j]. */
  copy: {
    readsHeadMean: true,
    projOutOnAll: false,
    macs: () => 0,
    recover: (i) => copyFromSources(i, () => keptColumns(i.g, i.headMean(), i.keep), true),
  },
  /**
   * Copy-delta: pruned token i keeps its own pruning-point features plus its copy source's change over the rest
   * of the block; proj_out then runs on all N tokens.
   */
  "copy-delta": {
    readsHeadMean: true,
    projOutOnAll: true,
    macs: () => 0,
    recover: (i) => {
      const { g } = i;
      const refilled = i.overhead(() => {
        const delta = g.op("Sub", [i.kept, gatherTokens(g, i.x1, i.keep)]);
        const src = recoverySources(g, keptColumns(g, i.headMean(), i.keep), i.keep, true);
        return g.op("Add", [i.x1, gatherTokens(g, delta, src)]);
      });
      return i.projOut(refilled);
    },
  },
  /** Copy by cosine similarity of the pruning-point tokens: an (N x C) x (C x k) product. */
  cosine: {
    readsHeadMean: false,
    projOutOnAll: false,
    macs: (N, k, C) => N * k * C,
    recover: (i) => copyFromSources(i, () => cosineToKept(i.g, i.x1, i.keep), true),
  },
  /** Copy from the spatially nearest kept token (first in index order among equals). */
  nearest: {
    readsHeadMean: false,
    projOutOnAll: false,
    macs: () => 0,
    recover: (i) => copyFromSources(i, () => squaredGridDistance(i.g, i.height, i.width, i.keep), false),
  },
  /** Zero: pruned tokens get no transformer update (their branch output is zero). */
  zero: {
    readsHeadMean: false,
    projOutOnAll: false,
    macs: () => 0,
    recover: (i) => {
      const { g } = i;
      const out = i.projOut(i.kept);
      return i.overhead(() => {
        const idx = g.op("Expand", [g.op("Unsqueeze", [i.keep, g.ints([2])]), g.op("Shape", [out])]);
        const zeros = g.op("Mul", [i.x1, g.constant(0)]);
        return g.op("ScatterElements", [zeros, idx, out], { axis: 1 });
      });
    },
  },
  /**
   * Copy by column: src(i) = argmax over kept j of A[j, i], the kept token that attends most to i (a row argmax of
   * A often lands on an attention sink). Reads the same map as copy; no multiply-adds beyond the argmax.
   */
  "copy-col": {
    readsHeadMean: true,
    projOutOnAll: false,
    macs: () => 0,
    recover: (i) => copyFromSources(i, () => keptRows(i.g, i.headMean(), i.keep), true),
  },
  /** Copy by symmetric attention: src(i) = argmax over kept j of A[i, j] + A[j, i] (an element-wise add, not counted). */
  "copy-sym": {
    readsHeadMean: true,
    projOutOnAll: false,
    macs: () => 0,
    recover: (i) =>
      copyFromSources(
        i,
        () => {
          const A = i.headMean();
          return i.g.op("Add", [keptColumns(i.g, A, i.keep), keptRows(i.g, A, i.keep)]);
        },
        true,
      ),
  },
};

export const SCORE_VARIANTS = Object.keys(SCORES) as ScoreVariant[];
export const RECOVERY_VARIANTS = Object.keys(RECOVERIES) as RecoveryVariant[];
export const PRUNING_POINTS: readonly PruningPoint[] = ["auto", "after-layer1", "after-attn1"];
export const MASK_SHARING: readonly MaskSharing[] = ["per-element", "conditional"];
