/**
 * What an evaluation runs: the methods the user listed, each at its fixed ratio or at the ratio that reaches each
 * FLOPs budget (`--budgets`), with `none` always first as the reference for fidelity and speed.
 *
 * Matching uses the FLOPs model of every method (`PruningMethod.cost`, the SPEC's convention, pruning overhead
 * included) over the whole generation (`generationFlops`: DSAP prunes fewer blocks in the early steps), so AT-EDM
 * and ToMe are compared at equal U-Net FLOPs per step, as in the paper's tables.
 */
import { AtedmError } from "../errors.js";
import { generationFlops } from "../metrics/flops.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import type { UNetConfig } from "../models/unet_structure.js";
import { stableHash32 } from "../util/numerics.js";
import type { UnreachableBudget } from "./types.js";

/** A method as the user listed it: how to build it at a ratio, and the options it runs with (for reports). */
export interface EvalMethodSpec {
  /** What the user wrote, e.g. "atedm:0.5:recovery=cosine" or "tome". */
  spec: string;
  family: "none" | "atedm" | "tome";
  /** A fixed ratio, or null: matched to each budget (or 0.5 when there are no budgets). */
  ratio: number | null;
  make(ratio: number): { method: PruningMethod | null; options: Record<string, unknown> };
}

/** One concrete configuration that generates images. */
export interface EvalRun {
  /** Unique label: the spec, plus "@budget" for matched runs. */
  name: string;
  spec: string;
  family: EvalMethodSpec["family"];
  ratio: number;
  budget: number | null;
  method: PruningMethod | null;
  options: Record<string, unknown>;
  /** Folder name of its images under <out>/images: the family and a hash of everything that shapes its images. */
  key: string;
  flops: { unpruned: number; perStep: number; saving: number };
}

export interface PlanGeometry {
  cfg: UNetConfig;
  latent: [number, number];
  steps: number;
  textLength: number;
}

/** The largest ratio tried when matching a budget (a ratio must stay below 1). */
export const MAX_MATCH_RATIO = 0.99;
const DEFAULT_RATIO = 0.5;

/** The ratio of `spec` whose generation saves at least `budget` of the FLOPs, the smallest such (bisection), or null. */
export function ratioForBudget(spec: EvalMethodSpec, g: PlanGeometry, budget: number): { ratio: number; saving: number } | null {
  const saving = (r: number) => generationFlops(g.cfg, spec.make(r).method, g.latent, g.steps, g.textLength).saving;
  if (saving(MAX_MATCH_RATIO) < budget) return null;
  let lo = 0;
  let hi = MAX_MATCH_RATIO;
  // Savings move in steps (kept-token counts are integers): 30 halvings pin the smallest ratio to ~1e-9.
  for (let i = 0; i < 30; i++) {
    const mid = (lo + hi) / 2;
    if (saving(mid) >= budget) hi = mid;
    else lo = mid;
  }
  return { ratio: hi, saving: saving(hi) };
}

export function runKey(family: string, ratio: number, options: Record<string, unknown>): string {
  const text = JSON.stringify({ family, ratio, options: Object.fromEntries(Object.entries(options).sort(([a], [b]) => a.localeCompare(b))) });
  return `${family}-${stableHash32(text, 0).toString(16).padStart(8, "0")}`;
}

/**
 * The runs of an evaluation, `none` first. Budgets that a method cannot reach are listed in `unreachable`; a budget
 * that no pruning method reaches is an error, as is a list with two identical runs.
 */
export function planRuns(
  specs: readonly EvalMethodSpec[],
  budgets: readonly number[] | null,
  g: PlanGeometry,
): { runs: EvalRun[]; unreachable: UnreachableBudget[] } {
  const runs: EvalRun[] = [];
  const unreachable: UnreachableBudget[] = [];
  const add = (spec: EvalMethodSpec, ratio: number, budget: number | null) => {
    const { method, options } = spec.make(ratio);
    const flops = generationFlops(g.cfg, method, g.latent, g.steps, g.textLength);
    const name = budget === null ? spec.spec : `${spec.spec}@${budget}`;
    runs.push({ name, spec: spec.spec, family: spec.family, ratio, budget, method, options, key: runKey(spec.family, ratio, options), flops });
  };
  const none = specs.find((s) => s.family === "none");
  if (none) add(none, 0, null);
  else add({ spec: "none", family: "none", ratio: 0, make: () => ({ method: null, options: {} }) }, 0, null);
  const reached = new Set<number>();
  for (const spec of specs) {
    if (spec.family === "none") continue;
    if (spec.ratio !== null || !budgets?.length) {
      add(spec, spec.ratio ?? DEFAULT_RATIO, null);
      continue;
    }
    for (const budget of budgets) {
      const m = ratioForBudget(spec, g, budget);
      if (m) {
        reached.add(budget);
        add(spec, m.ratio, budget);
      } else {
        const max = generationFlops(g.cfg, spec.make(MAX_MATCH_RATIO).method, g.latent, g.steps, g.textLength).saving;
        unreachable.push({ spec: spec.spec, budget, max_saving: max });
      }
    }
  }
  const matched = specs.some((s) => s.family !== "none" && s.ratio === null);
  for (const budget of budgets ?? []) {
    if (matched && !reached.has(budget)) {
      const best = Math.max(...unreachable.filter((u) => u.budget === budget).map((u) => u.max_saving));
      throw new AtedmError(`--budgets: no method reaches a FLOPs saving of ${budget} on this model (the most any reaches is ${best.toFixed(3)})`);
    }
  }
  const seen = new Map<string, string>();
  for (const r of runs) {
    const other = seen.get(r.key);
    if (other !== undefined && r.budget === null) throw new AtedmError(`--methods: '${r.name}' and '${other}' are the same configuration`);
    seen.set(r.key, r.name);
  }
  return { runs, unreachable };
}
