/** The pruning flags shared by `generate`, `flops` and `eval-alignment`: one flag per option of the library API. */
import { AtedmError } from "../errors.js";
import { ATEDM_GRAPH_DEFAULTS, ATEDM_PRESET_NAMES, ATEDM_PRESETS, AtEdm } from "../pruning/atedm.js";
import { MASK_SHARING, PRUNING_POINTS, RECOVERY_VARIANTS, SCORE_VARIANTS } from "../pruning/atedm_math.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import { Tome } from "../pruning/tome_method.js";
import { int, LIMITS, MAX_SEED, num, oneOf, type Flags, type Values } from "./args.js";

export const METHODS = ["none", "atedm", "tome"] as const;
export const SCHEDULES = ["dsap", "none", "ramp"] as const;
const TOME_MAX_STRIDE = 64;

export const pruningFlags: Flags = {
  method: { type: "string" },
  ratio: { type: "string" },
  preset: { type: "string" },
  schedule: { type: "string" },
  score: { type: "string" },
  iterations: { type: "string" },
  damping: { type: "string" },
  recovery: { type: "string" },
  "pruning-point": { type: "string" },
  "mask-sharing": { type: "string" },
  "pruning-seed": { type: "string" },
  "tome-max-downsample": { type: "string" },
  "tome-sx": { type: "string" },
  "tome-sy": { type: "string" },
  "tome-no-rand": { type: "boolean" },
  "tome-merge": { type: "string" },
};

export const PRUNING_HELP = `Token pruning
  --method none|atedm|tome  pruning method (default none).
  --ratio R                pruning ratio rho in [0, 1): the fraction of an attention block's tokens dropped
                           (atedm) or merged (tome). Default 0.5.
  --schedule NAME          dsap | none | ramp: per-step policy. dsap: the first 10 % of the steps leave the first
                           attention block of each down stage and the last of each up stage unpruned. Default: for
                           atedm the preset's (${ATEDM_PRESETS.default.schedule}; paper: ${ATEDM_PRESETS.paper.schedule}), for tome none.
  AT-EDM variants (unset ones come from the preset):
  --preset NAME            default | paper. paper = the SPEC's configuration, unchanged: score ${ATEDM_PRESETS.paper.score} (K ${ATEDM_PRESETS.paper.iterations}),
                           recovery ${ATEDM_PRESETS.paper.recovery}, schedule ${ATEDM_PRESETS.paper.schedule}. default = atedm's, from measurements
                           (docs/results.md): score ${ATEDM_PRESETS.default.score}, recovery ${ATEDM_PRESETS.default.recovery}, schedule ${ATEDM_PRESETS.default.schedule}.
  --score NAME             ${SCORE_VARIANTS.join(" | ")} (default ${ATEDM_PRESETS.default.score}).
  --iterations K           G-WPR iterations, 1..${LIMITS.iterations} (default ${ATEDM_PRESETS.default.iterations}).
  --damping D              G-WPR damping in [0, 1) (default ${ATEDM_PRESETS.default.damping}).
  --recovery NAME          ${RECOVERY_VARIANTS.join(" | ")} (default ${ATEDM_PRESETS.default.recovery}).
  --pruning-point P        auto | after-layer1 | after-attn1 (default auto: after layer 1, or after its
                           self-attention in blocks of depth 1).
  --mask-sharing M         per-element | conditional (default per-element: each CFG half ranks its own tokens).
  --pruning-seed S         seed of the 'random' score, an integer in [0, 2^32) (default 0).
  ToMe options (tomesd semantics):
  --tome-max-downsample D  merge only in blocks with downsample <= D: 1, 2, 4 or 8 (default 1).
  --tome-sx X --tome-sy Y  destination cell size, 1..${TOME_MAX_STRIDE} each (default 2 x 2).
  --tome-no-rand           fixed (top-left) destination in each cell instead of a seeded random one.
  --tome-merge LIST        sub-layers to merge, comma-separated from attn,crossattn,mlp (default attn).`;

/** Build the pruning method the flags ask for, or null for none. */
export function makeMethod(v: Values): PruningMethod | null {
  const s = (k: string) => v[k] as string | undefined;
  const method = oneOf(s("method"), "method", METHODS) ?? "none";
  const ratio = num(s("ratio"), "ratio") ?? 0.5;
  const schedule = oneOf(s("schedule"), "schedule", SCHEDULES);
  if (method === "none") {
    for (const f of ["ratio", "schedule", "score", "recovery", "preset"])
      if (v[f] !== undefined) throw new AtedmError(`--${f} needs --method atedm or tome`);
    return null;
  }
  if (!(ratio >= 0 && ratio < 1)) throw new AtedmError(`--ratio must be in [0, 1), got ${ratio}`);
  if (method === "atedm") {
    return new AtEdm({
      ratio,
      preset: oneOf(s("preset"), "preset", ATEDM_PRESET_NAMES),
      schedule,
      score: oneOf(s("score"), "score", SCORE_VARIANTS),
      iterations: int(s("iterations"), "iterations", 1, LIMITS.iterations),
      damping: num(s("damping"), "damping", 0, 1, true),
      recovery: oneOf(s("recovery"), "recovery", RECOVERY_VARIANTS),
      pruningPoint: oneOf(s("pruning-point"), "pruning-point", PRUNING_POINTS),
      maskSharing: oneOf(s("mask-sharing"), "mask-sharing", MASK_SHARING),
      seed: int(s("pruning-seed"), "pruning-seed", 0, MAX_SEED),
    });
  }
  const merge = (s("tome-merge") ?? "attn").split(",").map((x) => x.trim());
  for (const m of merge)
    if (!["attn", "crossattn", "mlp"].includes(m)) throw new AtedmError(`--tome-merge: unknown sub-layer '${m}' (attn, crossattn, mlp)`);
  const maxDownsample = int(s("tome-max-downsample"), "tome-max-downsample", 1, 8);
  if (maxDownsample !== undefined && ![1, 2, 4, 8].includes(maxDownsample)) {
    throw new AtedmError(`--tome-max-downsample must be 1, 2, 4 or 8, got '${s("tome-max-downsample")}'`);
  }
  return new Tome({
    ratio,
    schedule,
    maxDownsample,
    sx: int(s("tome-sx"), "tome-sx", 1, TOME_MAX_STRIDE),
    sy: int(s("tome-sy"), "tome-sy", 1, TOME_MAX_STRIDE),
    useRand: v["tome-no-rand"] ? false : undefined,
    seed: int(s("pruning-seed"), "pruning-seed", 0, MAX_SEED),
    mergeAttn: merge.includes("attn"),
    mergeCrossattn: merge.includes("crossattn"),
    mergeMlp: merge.includes("mlp"),
  });
}

/** The method and every option it runs with (defaults filled in), for --json reports. */
export function methodReport(method: PruningMethod | null): { method: string; ratio: number; method_options: Record<string, unknown> } {
  if (!method) return { method: "none", ratio: 0, method_options: {} };
  const schedule = method instanceof AtEdm || method instanceof Tome ? method.scheduleName : "custom";
  let options: Record<string, unknown> = {};
  if (method instanceof AtEdm) {
    const g = method.graphOptions as unknown as Record<string, unknown>;
    options = { preset: method.preset, ...Object.fromEntries(Object.keys(ATEDM_GRAPH_DEFAULTS).map((k) => [k, g[k]])), seed: method.seed };
  } else if (method instanceof Tome) {
    const { ratio: _ratio, ...rest } = method.options;
    options = rest;
  }
  return { method: method.name, ratio: method.nominalRatio, method_options: { schedule, ...options } };
}
