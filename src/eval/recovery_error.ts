/**
 * The recovery-error oracle (issue 12, point 2): how far each AT-EDM recovery variant's refill lands from what the
 * unpruned block computes at the pruned positions, per attention block and denoising step, with no trained judge.
 *
 *   const r = await recoveryErrors(pipe, { prompts: ["a red circle at the top left on a white background"], ratio: 0.5 });
 *   r.overall.copy.rel_branch; // mean over blocks, steps, prompts and seeds
 *
 * How: the unpruned pipeline runs once per prompt and seed with a probe installed (`BlockInputProbe`, a
 * PruningMethod whose runner is the dense one plus two taps), which hands back every attention block's input and the
 * encoder hidden states at every step. Each captured (block, step) then runs through the single-block graph
 * (buildAttentionBlockGraph) densely and with AT-EDM's runner once per recovery variant, at the same ratio in every
 * block and step (no schedule), taking the kept indices as a tap. The trajectory is always the unpruned one, so
 * each number is the error one block adds at one step, not an accumulated drift. Memory: one generation's block
 * inputs are held at a time (steps x blocks x B C H W floats: 13 MB for the shapes model at 20 steps).
 *
 * Metrics, on the positions P a batch element pruned (both CFG halves pooled), out_v the block output with variant
 * v, out_d the unpruned one, in the block input:
 *   rel_branch = ||out_v[P] - out_d[P]|| / ||out_d[P] - in[P]||  the error against the transformer branch's own
 *                scale (the residual is the same in both, so `zero` recovery is exactly 1: anything above 1 is worse
 *                than giving pruned tokens no update at all);
 *   rel_output = ||out_v[P] - out_d[P]|| / ||out_d[P]||          the same error against the block output's scale;
 *   rel_kept   = the rel_branch formula on the kept positions    (layers 2..d saw only kept tokens; the same for
 *                every variant, since a recovery only refills pruned positions).
 */
import { AtedmError } from "../errors.js";
import {
  type AttentionBlockCost,
  type AttentionBlockInfo,
  denseBlockCost,
  type GraphInput,
  type LatentSize,
  type PruningMethod,
} from "../models/pruning_hook.js";
import { denseRunner } from "../models/transformer_2d.js";
import { buildAttentionBlockGraph } from "../models/unet.js";
import { blockTokens } from "../models/unet_structure.js";
import type { TextToImagePipeline } from "../pipeline/text_to_image.js";
import { ATEDM_GRAPH_DEFAULTS, AtEdm, type AtEdmGraphOptions, keepInput, keepOutput } from "../pruning/atedm.js";
import { keepCount, RECOVERY_VARIANTS, resolvePruningPoint, type RecoveryVariant } from "../pruning/atedm_math.js";
import { noSchedule } from "../pruning/schedules.js";
import type { Session, Tensor } from "../runtime/session.js";

/** The probe's graph outputs: a block's input (B, C, H, W), and the encoder hidden states (B, L, D), tapped once. */
export const probeInputOutput = (block: AttentionBlockInfo) => `probe.${block.path}.input`;
export const PROBE_CONTEXT_OUTPUT = "probe.encoder_hidden_states";

/**
 * A PruningMethod that prunes nothing: every block runs the dense runner (the same graph as the unpruned U-Net) and
 * taps its input, and the first block also the encoder hidden states. The U-Net only runs a method's runner and
 * fetches its outputs in blocks whose ratio is > 0, so the probe reports the smallest positive ratio; its kept
 * tokens (N) and its cost (`denseBlockCost`) say "unpruned".
 */
export class BlockInputProbe implements PruningMethod {
  readonly name = "recovery-error-probe";
  readonly nominalRatio = 0;

  /** `contextBlock`: the path of the block that taps the encoder hidden states (any one block; once is enough). */
  constructor(readonly contextBlock: string) {}

  ratio(): number {
    return Number.MIN_VALUE;
  }

  runner(block: AttentionBlockInfo) {
    return denseWithTaps(block, block.path === this.contextBlock);
  }

  inputs(): GraphInput[] {
    return [];
  }

  feeds(): Record<string, Tensor> {
    return {};
  }

  keptTokens(block: AttentionBlockInfo, _ratio: number, latent: LatentSize): number {
    return blockTokens(latent, block);
  }

  cost(block: AttentionBlockInfo, _ratio: number, latent: LatentSize): AttentionBlockCost {
    return denseBlockCost(block, blockTokens(latent, block));
  }

  outputs(block: AttentionBlockInfo): string[] {
    return block.path === this.contextBlock ? [probeInputOutput(block), PROBE_CONTEXT_OUTPUT] : [probeInputOutput(block)];
  }
}

function denseWithTaps(block: AttentionBlockInfo, tapContext: boolean): ReturnType<PruningMethod["runner"]> {
  return (ctx) => {
    if (!ctx.input || !ctx.context) throw new AtedmError(`recovery-error probe: the graph of ${block.path} does not expose the block's input`);
    ctx.tap(probeInputOutput(block), ctx.input);
    if (tapContext) ctx.tap(PROBE_CONTEXT_OUTPUT, ctx.context);
    return denseRunner(ctx);
  };
}

/** What the unpruned pipeline fed every attention block at every step of one generation. */
export interface CapturedStep {
  /** Encoder hidden states (B, L, D). */
  context: Tensor;
  /** Per block path: its input (B, C, H, W). */
  inputs: Record<string, Tensor>;
}

/** Run the unpruned pipeline once with the probe and return every step's block inputs (whatever method was
 * installed is put back afterwards). */
export async function captureBlockInputs(
  pipe: TextToImagePipeline,
  options: { prompt: string; seed: number; steps: number; guidance?: number },
): Promise<{ captured: CapturedStep[]; latent: LatentSize; image: Float32Array }> {
  const unet = pipe.unet;
  const before = unet.pruning;
  const probe = new BlockInputProbe(unet.blocks[0]!.path);
  const captured: CapturedStep[] = [];
  unet.pruning = probe;
  try {
    const r = await pipe.generate({
      prompt: options.prompt,
      seed: options.seed,
      steps: options.steps,
      guidance: options.guidance,
      withMasks: true,
      onStep: ({ unet: out }) => {
        const inputs: Record<string, Tensor> = {};
        for (const b of unet.blocks) inputs[b.path] = out.extras[probeInputOutput(b)]!;
        captured.push({ context: out.extras[PROBE_CONTEXT_OUTPUT]!, inputs });
      },
    });
    const [, , height, width] = r.latentDims as [number, number, number, number];
    return { captured, latent: { height, width }, image: r.image };
  } finally {
    unet.pruning = before;
  }
}

/** The errors of one variant at one (prompt, seed, block, step). */
export interface RecoveryErrorRecord {
  prompt: number;
  seed: number;
  block: string;
  step: number;
  variant: RecoveryVariant;
  /** Tokens pruned per batch element (N - k). */
  pruned: number;
  /** null where nothing was pruned (k = N). */
  rel_branch: number | null;
  rel_output: number | null;
  /** 0 up to float rounding where every later layer saw every token (nothing pruned, or depth 1 pruned after attn1). */
  rel_kept: number | null;
}

/** Means over records (nulls skipped; null when every value was null); `n` records. */
export interface RecoveryErrorStat {
  rel_branch: number | null;
  rel_output: number | null;
  rel_kept: number | null;
  n: number;
}

export interface RecoveryErrorOptions {
  prompts: readonly string[];
  /** Seeds per prompt: 0..seeds-1. Default 1. */
  seeds?: number;
  /** Denoising steps. Default 20. */
  steps?: number;
  /** Pruning ratio in every attention block at every step (no schedule), in [0, 1). Default 0.5. */
  ratio?: number;
  /** Recovery variants to measure. Default: all of RECOVERY_VARIANTS. */
  variants?: readonly RecoveryVariant[];
  /** The ranking the pruned runs use (the SPEC's variants; defaults: gwpr, K = 10, d = 0, auto, per-element). */
  score?: AtEdmGraphOptions["score"];
  iterations?: number;
  damping?: number;
  pruningPoint?: AtEdmGraphOptions["pruningPoint"];
  maskSharing?: AtEdmGraphOptions["maskSharing"];
  /** Guidance scale. Default: the pipeline's. */
  guidance?: number;
  /** Called after each (prompt, seed) is measured. */
  onProgress?: (done: number, total: number) => void;
}

export interface RecoveryErrorResult {
  ratio: number;
  steps: number;
  seeds: number;
  prompts: string[];
  guidance: number;
  /** The AT-EDM options of the pruned runs, defaults filled in (recovery excepted). */
  options: Omit<AtEdmGraphOptions, "recovery">;
  variants: RecoveryVariant[];
  /** Every attention block: tokens N, kept k at the ratio, depth and resolved pruning point. */
  blocks: Array<{ path: string; depth: number; tokens: number; kept: number; pruning_point: string }>;
  /** Per variant, the mean over every block, step, prompt and seed. */
  overall: Record<string, RecoveryErrorStat>;
  /** Per variant and block, the mean over steps, prompts and seeds. */
  per_block: Record<string, Record<string, RecoveryErrorStat>>;
  /** Per variant, the block with the highest per_block rel_branch (null when nothing was pruned anywhere). On the
   * shapes model this ranks the variants as their images do, where the overall mean does not (docs/recovery-error.md). */
  worst_block: Record<string, { block: string; rel_branch: number } | null>;
  /** Per variant, per step index: the mean over blocks, prompts and seeds. */
  per_step: Record<string, RecoveryErrorStat[]>;
  /** Per variant, block and step index: the mean over prompts and seeds. */
  per_block_step: Record<string, Record<string, RecoveryErrorStat[]>>;
  /** One per (prompt, seed, block, step, variant). */
  records: RecoveryErrorRecord[];
}

/**
 * Errors on pruned and kept positions, both CFG halves pooled. inp, dense, out: (B, C, H, W) with N = H W; keep (B, k).
 * Accumulates in float64.
 */
export function blockErrors(
  inp: ArrayLike<number>,
  dense: ArrayLike<number>,
  out: ArrayLike<number>,
  keep: BigInt64Array,
  dims: { B: number; C: number; N: number; k: number },
): Pick<RecoveryErrorRecord, "rel_branch" | "rel_output" | "rel_kept"> {
  const { B, C, N, k } = dims;
  let errP = 0;
  let branchP = 0;
  let outP = 0;
  let errK = 0;
  let branchK = 0;
  const kept = new Uint8Array(N);
  for (let b = 0; b < B; b++) {
    kept.fill(0);
    for (let p = 0; p < k; p++) kept[Number(keep[b * k + p]!)] = 1;
    for (let c = 0; c < C; c++) {
      const base = (b * C + c) * N;
      for (let i = 0; i < N; i++) {
        const d = dense[base + i]!;
        const e = out[base + i]! - d;
        const br = d - inp[base + i]!;
        if (kept[i]) {
          errK += e * e;
          branchK += br * br;
        } else {
          errP += e * e;
          branchP += br * br;
          outP += d * d;
        }
      }
    }
  }
  const ratio = (num: number, den: number) => (den > 0 ? Math.sqrt(num / den) : null);
  return {
    rel_branch: k < N ? ratio(errP, branchP) : null,
    rel_output: k < N ? ratio(errP, outP) : null,
    rel_kept: ratio(errK, branchK),
  };
}

function mean(records: readonly RecoveryErrorRecord[]): RecoveryErrorStat {
  const avg = (key: "rel_branch" | "rel_output" | "rel_kept") => {
    const xs = records.map((r) => r[key]).filter((x): x is number => x !== null);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
  };
  return { rel_branch: avg("rel_branch"), rel_output: avg("rel_output"), rel_kept: avg("rel_kept"), n: records.length };
}

/** Measure every requested recovery variant on every (block, step) of the unpruned generations of `prompts`. */
export async function recoveryErrors(pipe: TextToImagePipeline, options: RecoveryErrorOptions): Promise<RecoveryErrorResult> {
  const ratio = options.ratio ?? 0.5;
  if (!(ratio >= 0 && ratio < 1)) throw new AtedmError(`recovery error: ratio must be in [0, 1), got ${ratio}`);
  const seeds = options.seeds ?? 1;
  if (!(Number.isInteger(seeds) && seeds >= 1)) throw new AtedmError(`recovery error: seeds must be a positive integer, got ${seeds}`);
  const steps = options.steps ?? 20;
  if (!options.prompts.length) throw new AtedmError("recovery error: no prompts");
  const variants = [...(options.variants ?? RECOVERY_VARIANTS)];
  for (const v of variants) {
    if (!RECOVERY_VARIANTS.includes(v)) throw new AtedmError(`recovery error: unknown recovery '${v}' (${RECOVERY_VARIANTS.join(", ")})`);
  }
  if (!variants.length) throw new AtedmError("recovery error: no recovery variants");
  const graphOptions: Omit<AtEdmGraphOptions, "recovery"> = {
    score: options.score ?? ATEDM_GRAPH_DEFAULTS.score,
    iterations: options.iterations ?? ATEDM_GRAPH_DEFAULTS.iterations,
    damping: options.damping ?? ATEDM_GRAPH_DEFAULTS.damping,
    pruningPoint: options.pruningPoint ?? ATEDM_GRAPH_DEFAULTS.pruningPoint,
    maskSharing: options.maskSharing ?? ATEDM_GRAPH_DEFAULTS.maskSharing,
  };
  // One AtEdm per variant (it validates the options); its runner, inputs and feeds are what the U-Net would use.
  const methods = new Map(variants.map((v) => [v, new AtEdm({ ...graphOptions, recovery: v, ratio, schedule: noSchedule })]));
  const { config: cfg, weights, blocks } = pipe.unet;
  const runtime = pipe.runtime;
  const sessions = new Map<string, Promise<Session>>();
  // One session per (block, dense or variant), reused across steps, prompts and seeds (token counts are symbolic).
  const session = (block: AttentionBlockInfo, variant: RecoveryVariant | null): Promise<Session> => {
    const key = `${block.path}|${variant ?? "dense"}`;
    let s = sessions.get(key);
    if (!s) {
      const m = variant && methods.get(variant)!;
      const graph = m
        ? buildAttentionBlockGraph(cfg, weights, block.path, m.runner(block), m.inputs(block), [keepOutput(block)])
        : buildAttentionBlockGraph(cfg, weights, block.path);
      s = runtime.session(graph);
      sessions.set(key, s);
    }
    return s;
  };

  const records: RecoveryErrorRecord[] = [];
  let latent: LatentSize | undefined;
  let T = steps;
  const total = options.prompts.length * seeds;
  let done = 0;
  try {
    for (const [pi, prompt] of options.prompts.entries()) {
      for (let seed = 0; seed < seeds; seed++) {
        const cap = await captureBlockInputs(pipe, { prompt, seed, steps, guidance: options.guidance });
        latent = cap.latent;
        T = cap.captured.length;
        for (const [step, c] of cap.captured.entries()) {
          for (const block of blocks) {
            const x = c.inputs[block.path]!;
            const [B, C] = x.dims as [number, number];
            const N = blockTokens(cap.latent, block);
            const feeds = { hidden_states: x, encoder_hidden_states: c.context };
            const dense = (await (await session(block, null)).run(feeds)).out!.data as Float32Array;
            for (const variant of variants) {
              const m = methods.get(variant)!;
              const at = { step, steps: T };
              const extra = m.feeds(block, ratio, cap.latent, B, at);
              const res = await (await session(block, variant)).run({ ...feeds, ...extra });
              const k = Number((extra[keepInput(block)]!.data as BigInt64Array)[0]);
              const errs = blockErrors(x.data as Float32Array, dense, res.out!.data as Float32Array, res[keepOutput(block)]!.data as BigInt64Array, {
                B,
                C,
                N,
                k,
              });
              records.push({ prompt: pi, seed, block: block.path, step, variant, pruned: N - k, ...errs });
            }
          }
        }
        options.onProgress?.(++done, total);
      }
    }
  } finally {
    // A session that failed to build has already thrown where it was awaited.
    for (const s of sessions.values()) await s.then((x) => x.release()).catch(() => undefined);
  }

  const overall: RecoveryErrorResult["overall"] = {};
  const perBlock: RecoveryErrorResult["per_block"] = {};
  const perStep: RecoveryErrorResult["per_step"] = {};
  const perBlockStep: RecoveryErrorResult["per_block_step"] = {};
  const worst: RecoveryErrorResult["worst_block"] = {};
  for (const v of variants) {
    const rv = records.filter((r) => r.variant === v);
    overall[v] = mean(rv);
    perBlock[v] = Object.fromEntries(blocks.map((b) => [b.path, mean(rv.filter((r) => r.block === b.path))]));
    worst[v] = null;
    for (const [block, st] of Object.entries(perBlock[v]!)) {
      if (st.rel_branch !== null && (worst[v] === null || st.rel_branch > worst[v]!.rel_branch)) worst[v] = { block, rel_branch: st.rel_branch };
    }
    perStep[v] = Array.from({ length: T }, (_, s) => mean(rv.filter((r) => r.step === s)));
    perBlockStep[v] = Object.fromEntries(
      blocks.map((b) => [b.path, Array.from({ length: T }, (_, s) => mean(rv.filter((r) => r.block === b.path && r.step === s)))]),
    );
  }
  return {
    ratio,
    steps: T,
    seeds,
    prompts: [...options.prompts],
    guidance: options.guidance ?? pipe.defaultGuidance,
    options: graphOptions,
    variants,
    blocks: blocks.map((b) => {
      const N = blockTokens(latent!, b);
      return {
        path: b.path,
        depth: b.depth,
        tokens: N,
        kept: keepCount(N, ratio),
        pruning_point: resolvePruningPoint(graphOptions.pruningPoint, b.depth),
      };
    }),
    overall,
    per_block: perBlock,
    worst_block: worst,
    per_step: perStep,
    per_block_step: perBlockStep,
    records,
  };
}
