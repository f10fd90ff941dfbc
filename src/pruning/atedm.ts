/**
 * AT-EDM (Wang et al., CVPR 2024) wired into the U-Net: `atedmRunner` runs one attention block with its tokens
 * pruned (the SPEC's steps 1-5 in order, using the math of atedm_math.ts), `atedmBlockCost` says what that runner
 * executes (for the FLOPs count), and `AtEdm` is the PruningMethod that `applyAtEdm` installs.
 *
 * Everything runs inside ONNX Runtime: the number of kept tokens k is a graph input (`atedm.<block>.k`), so one
 * session serves every ratio and schedule.
 */
import { AtedmError } from "../errors.js";
import type { Value } from "../graph/builder.js";
import type {
  AttentionBlockCost,
  AttentionBlockInfo,
  GraphInput,
  LatentSize,
  PruningMethod,
  StepInfo,
  TransformerContext,
  TransformerRunner,
} from "../models/pruning_hook.js";
import { layerForward } from "../models/transformer_2d.js";
import { blockTokens } from "../models/unet_structure.js";
import { f32, i64, type Tensor } from "../runtime/session.js";
import { Mulberry32, stableHash32 } from "../util/numerics.js";
import {
  gatherTokens,
  headMean,
  keepCount,
  keepIndices,
  RECOVERIES,
  resolvePruningPoint,
  SCORES,
  shareConditional,
  type MaskSharing,
  type PruningPoint,
  type RecoveryVariant,
  type ScoreVariant,
} from "./atedm_math.js";
import { scheduleByName, type Schedule, type ScheduleName } from "./schedules.js";

/** How AT-EDM ranks and refills tokens (the SPEC's variants; defaults: `ATEDM_GRAPH_DEFAULTS`). */
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

/** A named set of AT-EDM defaults: the graph options and the schedule. */
export type AtEdmPreset = "paper" | "default";
export const ATEDM_PRESET_NAMES: readonly AtEdmPreset[] = ["default", "paper"];

/**
 * `paper`: the SPEC's default algorithm (shared/SPEC-atedm.md), the paper's configuration as we read it, kept
 * unchanged. `default`: atedm's own defaults, chosen by measurement (docs/results.md); they differ from the paper's
 * only where `atedm eval` showed, with intervals at matched FLOPs, that a variant is better.
 */
export const ATEDM_PRESETS: Readonly<Record<AtEdmPreset, Readonly<AtEdmGraphOptions & { schedule: ScheduleName }>>> = {
  paper: { score: "gwpr", iterations: 10, damping: 0, recovery: "copy", pruningPoint: "auto", maskSharing: "per-element", schedule: "dsap" },
  // Differs from `paper` only where docs/results.md shows, with intervals at matched FLOPs, that a variant is better.
  default: { score: "random", iterations: 10, damping: 0, recovery: "cosine", pruningPoint: "auto", maskSharing: "per-element", schedule: "none" },
};

/** The graph options of the `default` preset. */
export const ATEDM_GRAPH_DEFAULTS: AtEdmGraphOptions = graphPart(ATEDM_PRESETS.default);

function graphPart(p: AtEdmGraphOptions & { schedule?: unknown }): AtEdmGraphOptions {
  const { schedule: _schedule, ...graph } = p;
  return graph;
}

/** Graph input names of a block: the kept-token count k ([1], int64) and, for `random`, the scores (B, N). */
export const keepInput = (block: AttentionBlockInfo) => `atedm.${block.path}.k`;
export const randomScoreInput = (block: AttentionBlockInfo) => `atedm.${block.path}.random`;
/** Graph outputs exposed for masks/heat maps: kept indices (B, k) and scores (B, N). */
export const keepOutput = (block: AttentionBlockInfo) => `atedm.${block.path}.keep`;
export const scoreOutput = (block: AttentionBlockInfo) => `atedm.${block.path}.score`;

/** The TransformerRunner that prunes one attention block. */
export function atedmRunner(options: Partial<AtEdmGraphOptions> = {}): TransformerRunner {
  const o = { ...ATEDM_GRAPH_DEFAULTS, ...options };
  const scoreDef = SCORES[o.score];
  const recoveryDef = RECOVERIES[o.recovery];
  return (ctx: TransformerContext): Value => {
    const { g, layers, block } = ctx;
    const point = resolvePruningPoint(o.pruningPoint, layers.length);
    const L1 = layers[0]!;
    // Step 1: layer 1's self-attention on all N tokens, with explicit probabilities when the score or the recovery
    // reads that map (else ONNX Runtime's fused attention: same FLOPs, less time).
    let x = ctx.tokens;
    const readsMap = scoreDef.readsSelfMap || recoveryDef.readsHeadMean;
    const a1 = L1.attn1(L1.norm1(x), { explicitProbs: readsMap });
    const selfMap = (): Value => {
      if (!a1.probs) throw new Error(`atedm: ${block.path}: a variant read layer 1's attention map without declaring it`);
      return a1.probs;
    };
    x = g.op("Add", [a1.out, x]);
    let crossProbs: Value | undefined;
    if (point === "after-layer1") {
      // Rest of layer 1 on all tokens (a score that reads the cross-attention map takes it from here).
      if (scoreDef.needsCrossMap) {
        const a2 = L1.attn2Explicit(L1.norm2(x));
        crossProbs = a2.probs;
        x = g.op("Add", [a2.out, x]);
      } else {
        x = g.op("Add", [L1.attn2(L1.norm2(x)), x]);
      }
      x = g.op("Add", [L1.ff(L1.norm3(x)), x]);
    } else if (scoreDef.needsCrossMap) {
      crossProbs = L1.attn2Probs(L1.norm2(x));
    }
    const x1 = x; // the tokens at the pruning point, all N of them
    // Pruning work (ranking, keep set, gathers, recovery) is named under an "atedm" scope, so profiles can
    // attribute its time (the pruning overhead) separately from the model's own layers.
    const overhead = <T>(fn: () => T): T => g.scope("atedm", fn);
    // The head-mean map (B, 1, N, N), built on first use: only the variants that read it pay for it.
    let mean: Value | undefined;
    const headMeanMap = (): Value => (mean ??= overhead(() => headMean(g, selfMap())));

    // Step 2: scores.
    const score = overhead(() => {
      const s = scoreDef.score({
        g,
        probs: selfMap,
        headMean: headMeanMap,
        crossProbs,
        x1,
        random: { name: randomScoreInput(block) },
        iterations: o.iterations,
        damping: o.damping,
      });
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

    // Step 5: proj_out and the refill of the pruned positions.
    return recoveryDef.recover({
      g,
      x1,
      kept,
      keep,
      headMean: headMeanMap,
      height: ctx.height,
      width: ctx.width,
      projOut: ctx.projOut,
      overhead,
    });
  };
}

/**
 * What `atedmRunner` executes in a block of N tokens that keeps k (SPEC "FLOPs accounting"): layer 1's
 * self-attention on N tokens; at the pruning point "after-layer1" the rest of layer 1 on N too; everything after
 * the pruning point on k; proj_out on k (on N for a variant that refills before it). The overhead line: the score's
 * and the recovery's own multiply-adds (tables of atedm_math.ts), the head mean of the explicit map (h N^2, once,
 * under the score when the score reads it, else under the recovery), and for a score that needs layer 1's
 * cross-attention map at the after-attn1 point, that map on all N tokens (to_q and QK^T; its text K projection is
 * the later cross-attention's, run once after ONNX Runtime's common-subexpression elimination).
 */
export function atedmBlockCost(
  block: AttentionBlockInfo,
  N: number,
  k: number,
  options: Partial<AtEdmGraphOptions>,
  textLength: number,
): AttentionBlockCost {
  const o = { ...ATEDM_GRAPH_DEFAULTS, ...options };
  const point = resolvePruningPoint(o.pruningPoint, block.depth);
  const scoreDef = SCORES[o.score];
  const recoveryDef = RECOVERIES[o.recovery];
  const C = block.channels;
  const layers = Array.from({ length: block.depth }, (_, l) => {
    const rest = l === 0 && point === "after-layer1" ? N : k;
    return { attn1: l === 0 ? N : k, attn2: rest, ff: rest };
  });
  const byModule: Record<string, number> = {};
  let score = scoreDef.macs(N, block.heads, o.iterations);
  if (scoreDef.needsCrossMap && point === "after-attn1") {
    const attn2 = `${block.path}.transformer_blocks.0.attn2`;
    byModule[`${attn2}.to_q`] = N * C * C;
    byModule[attn2] = N * textLength * C;
    score += N * C * C + N * textLength * C;
  }
  const mean = block.heads * N * N;
  if (scoreDef.readsHeadMean) score += mean;
  let recovery = recoveryDef.macs(N, k, C);
  if (!scoreDef.readsHeadMean && recoveryDef.readsHeadMean) recovery += mean;
  return {
    layers,
    projOut: recoveryDef.projOutOnAll ? N : k,
    kept: k,
    merged: null,
    pruningPoint: point,
    overhead: { score, recovery, matching: 0, byModule },
  };
}

/** User-facing AT-EDM options: the graph variants plus the ratio and schedule. */
export interface AtEdmOptions extends Partial<AtEdmGraphOptions> {
  /** Where unset options come from: `default` (atedm's measured defaults) or `paper` (the SPEC's). Default `default`. */
  preset?: AtEdmPreset;
  /** Pruning ratio rho: the fraction of tokens dropped in a pruned block. Default 0.5. */
  ratio?: number;
  /** Per-step, per-block ratio policy. Default: the preset's (paper: DSAP; default: none). */
  schedule?: Schedule | ScheduleName;
  /** Seed of the `random` score variant. Default 0. */
  seed?: number;
}

/** AT-EDM as a PruningMethod (src/models/pruning_hook.ts): what `applyAtEdm` installs on a U-Net. */
export class AtEdm implements PruningMethod {
  readonly name = "atedm";
  readonly nominalRatio: number;
  readonly schedule: Schedule;
  /** The schedule's name, or "custom" for a function. */
  readonly scheduleName: string;
  readonly preset: AtEdmPreset;
  readonly graphOptions: AtEdmGraphOptions;
  readonly seed: number;

  constructor(options: AtEdmOptions = {}) {
    const preset = options.preset ?? "default";
    if (!ATEDM_PRESET_NAMES.includes(preset)) throw new AtedmError(`AT-EDM preset must be one of ${ATEDM_PRESET_NAMES.join(", ")}, got '${preset}'`);
    const ratio = options.ratio ?? 0.5;
    if (!(ratio >= 0 && ratio < 1)) throw new AtedmError(`AT-EDM ratio must be in [0, 1), got ${ratio}`);
    if (options.iterations !== undefined && !(Number.isInteger(options.iterations) && options.iterations >= 1)) {
      throw new AtedmError(`AT-EDM iterations must be a positive integer, got ${options.iterations}`);
    }
    if (options.damping !== undefined && !(options.damping >= 0 && options.damping < 1)) {
      throw new AtedmError(`AT-EDM damping must be in [0, 1), got ${options.damping}`);
    }
    for (const [key, table] of [
      ["score", SCORES],
      ["recovery", RECOVERIES],
    ] as const) {
      const v = options[key];
      if (v !== undefined && !(v in table)) {
        throw new AtedmError(`AT-EDM ${key} must be one of ${Object.keys(table).join(", ")}, got '${v}'`);
      }
    }
    this.nominalRatio = ratio;
    const base = ATEDM_PRESETS[preset];
    this.preset = preset;
    this.scheduleName = typeof options.schedule === "function" ? "custom" : (options.schedule ?? base.schedule);
    this.schedule = typeof options.schedule === "function" ? options.schedule : scheduleByName(this.scheduleName);
    const { preset: _p, schedule: _s, ratio: _r, seed: _seed, ...graph } = stripUndefined(options);
    this.graphOptions = { ...graphPart(base), ...graph } as AtEdmGraphOptions;
    this.seed = options.seed ?? 0;
  }

  ratio(block: AttentionBlockInfo, at: StepInfo): number {
    return this.schedule(at, block, this.nominalRatio);
  }

  runner(_block: AttentionBlockInfo): TransformerRunner {
    return atedmRunner(this.graphOptions);
  }

  inputs(block: AttentionBlockInfo): GraphInput[] {
    const inputs: GraphInput[] = [{ name: keepInput(block), dtype: "int64", shape: [1] }];
    if (SCORES[this.graphOptions.score].needsRandomInput) {
      inputs.push({ name: randomScoreInput(block), dtype: "float32", shape: ["batch", `n_${block.path}`] });
    }
    return inputs;
  }

  feeds(block: AttentionBlockInfo, ratio: number, latent: LatentSize, batch: number, at: StepInfo): Record<string, Tensor> {
    const n = blockTokens(latent, block);
    const feeds: Record<string, Tensor> = { [keepInput(block)]: i64([keepCount(n, ratio)]) };
    if (SCORES[this.graphOptions.score].needsRandomInput) {
      // Seeded per (seed, step, block) so that a run is reproducible whatever else happened before it.
      const rng = new Mulberry32(stableHash32(`${this.seed}|${at.step}|${block.path}`));
      const data = new Float32Array(batch * n);
      for (let i = 0; i < data.length; i++) data[i] = rng.next();
      feeds[randomScoreInput(block)] = f32(data, [batch, n]);
    }
    return feeds;
  }

  keptTokens(block: AttentionBlockInfo, ratio: number, latent: LatentSize): number {
    return keepCount(blockTokens(latent, block), ratio);
  }

  cost(block: AttentionBlockInfo, ratio: number, latent: LatentSize, textLength: number): AttentionBlockCost {
    const N = blockTokens(latent, block);
    return atedmBlockCost(block, N, keepCount(N, ratio), this.graphOptions, textLength);
  }

  outputs(block: AttentionBlockInfo): string[] {
    return [keepOutput(block), scoreOutput(block)];
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
