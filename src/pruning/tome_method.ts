/**
 * ToMe (tomesd semantics, see tome.ts) as a PruningMethod, so it runs in the same engine as AT-EDM and follows
 * the same schedules (ratio per block per step). Blocks that ToMe never merges (downsample > max_downsample)
 * report ratio 0 and run dense.
 */
import type {
  AttentionBlockCost,
  AttentionBlockInfo,
  GraphInput,
  LatentSize,
  PruningMethod,
  StepInfo,
  TransformerRunner,
} from "../models/pruning_hook.js";
import type { Tensor } from "../runtime/session.js";
import { stableHash32 } from "../util/numerics.js";
import { scheduleByName, type Schedule, type ScheduleName } from "./schedules.js";
import { resolveTomeOptions, tomeApplies, tomeBlockCost, tomeFeeds, tomeInputs, tomePlan, tomeRunner, TomeRng, type TomeOptions } from "./tome.js";

export interface TomeMethodOptions extends Partial<Omit<TomeOptions, "ratio">> {
  /** Merging ratio: r = floor(N * ratio) tokens merged per layer. Default 0.5. */
  ratio?: number;
  /** Per-step policy. Default "none" (tomesd merges at every step). */
  schedule?: Schedule | ScheduleName;
}

export class Tome implements PruningMethod {
  readonly name = "tome";
  readonly nominalRatio: number;
  readonly options: TomeOptions;
  readonly schedule: Schedule;
  /** The schedule's name, or "custom" for a function. */
  readonly scheduleName: string;
  private stepRng: { step: number; rng: TomeRng } | null = null;

  constructor(options: TomeMethodOptions = {}) {
    const clean = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TomeMethodOptions;
    this.options = resolveTomeOptions({ ...clean, ratio: clean.ratio ?? 0.5 });
    this.nominalRatio = this.options.ratio;
    this.scheduleName = typeof clean.schedule === "function" ? "custom" : (clean.schedule ?? "none");
    this.schedule = typeof clean.schedule === "function" ? clean.schedule : scheduleByName(this.scheduleName);
  }

  ratio(block: AttentionBlockInfo, at: StepInfo): number {
    return tomeApplies(block, this.options) ? this.schedule(at, block, this.nominalRatio) : 0;
  }

  runner(_block: AttentionBlockInfo): TransformerRunner {
    return tomeRunner(this.options);
  }

  inputs(block: AttentionBlockInfo): GraphInput[] {
    return tomeInputs([block], this.options);
  }

  feeds(block: AttentionBlockInfo, ratio: number, latent: LatentSize, batch: number, at: StepInfo): Record<string, Tensor> {
    // One cell-position stream per step, shared by the blocks in execution order (tomesd draws per call too).
    if (this.stepRng?.step !== at.step) this.stepRng = { step: at.step, rng: new TomeRng(stableHash32(`${this.options.seed}|${at.step}`)) };
    return tomeFeeds(block, latent, ratio, this.options, { batch, rng: this.stepRng.rng });
  }

  /** The merge plan's token counts (the partition sizes do not depend on the random cell positions). */
  private plan(block: AttentionBlockInfo, ratio: number, latent: LatentSize) {
    return tomePlan(block, latent, ratio, { ...this.options, useRand: false }, { batch: 2 });
  }

  keptTokens(block: AttentionBlockInfo, ratio: number, latent: LatentSize): number {
    const plan = this.plan(block, ratio, latent);
    return plan.geometry.tokens - plan.r;
  }

  cost(block: AttentionBlockInfo, ratio: number, latent: LatentSize): AttentionBlockCost {
    const plan = this.plan(block, ratio, latent);
    return tomeBlockCost(block, plan.geometry.tokens, plan.layers[0]!.dst.length, plan.r, this.options);
  }

  outputs(): string[] {
    return [];
  }
}
