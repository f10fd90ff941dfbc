/**
 * `atedm recovery-error`: the recovery-error oracle (src/eval/recovery_error.ts) on a prompt file: per attention
 * block and denoising step, how far each AT-EDM recovery variant's output is from the unpruned block's at the
 * pruned positions, relative to the transformer branch's own scale.
 */
import { AtedmError } from "../errors.js";
import { type RecoveryErrorResult, type RecoveryErrorStat, recoveryErrors } from "../eval/recovery_error.js";
import { loadPipeline } from "../pipeline/text_to_image.js";
import { MASK_SHARING, PRUNING_POINTS, RECOVERY_VARIANTS, type RecoveryVariant, SCORE_VARIANTS } from "../pruning/atedm_math.js";
import { type Flags, int, LIMITS, num, oneOf, parse } from "./args.js";
import { readPromptFile } from "./prompt_file.js";
import { DEFAULT_MODEL } from "./generate.js";
import { Progress, progressMode, status } from "./progress.js";
import { atedmVersion } from "./version.js";

const flags: Flags = {
  prompts: { type: "string" },
  model: { type: "string" },
  seeds: { type: "string" },
  steps: { type: "string" },
  ratio: { type: "string" },
  recovery: { type: "string" },
  score: { type: "string" },
  iterations: { type: "string" },
  "pruning-point": { type: "string" },
  "mask-sharing": { type: "string" },
  guidance: { type: "string" },
  threads: { type: "string" },
  json: { type: "boolean" },
  progress: { type: "boolean" },
  verbose: { type: "boolean" },
};

export const RECOVERY_ERROR_HELP = `Usage: atedm recovery-error --prompts FILE [--model DIR] [--seeds N] [--steps S] [--ratio R] [--recovery LIST] [--json]

The recovery-error oracle: generate each prompt and seed with the unpruned model, and at every denoising step run
every attention block again on its unpruned input, densely and pruned with each AT-EDM recovery variant (the same
ratio in every block and step, no schedule). On the positions a block pruned it reports
  rel_branch = ||out - unpruned out|| / ||unpruned out - block input||
the error against the transformer branch's own scale: the 'zero' recovery (no update for pruned tokens) is exactly
1, so above 1 a recovery does worse than leaving pruned tokens alone. Also rel_output (the same error over
||unpruned out||) and rel_kept (rel_branch's formula on the kept positions; the same for every variant), and per variant the worst
block (highest mean rel_branch): a recovery above 1 in one block can cost more than its mean says. The
trajectory is always the unpruned one: each number is the error one block adds at one step.

  --prompts FILE        one prompt per line (blank lines and # comments skipped); any prompts, no judge needed.
  --model DIR           model folder (default: the embedded shapes model).
  --seeds N             seeds per prompt, 1..${LIMITS.seeds} (default 1).
  --steps S             denoising steps, 1..${LIMITS.steps} (default 20).
  --ratio R             pruning ratio in [0, 1) in every attention block (default 0.5).
  --recovery LIST       comma-separated recovery variants from ${RECOVERY_VARIANTS.join(", ")}
                        (default: all of them).
  --score NAME          ranking of the pruned runs: ${SCORE_VARIANTS.join(" | ")} (default gwpr).
  --iterations K        G-WPR iterations, 1..${LIMITS.iterations} (default 10).
  --pruning-point P     ${PRUNING_POINTS.join(" | ")} (default auto).
  --mask-sharing M      ${MASK_SHARING.join(" | ")} (default per-element).
  --guidance G          guidance scale in [0, ${LIMITS.guidance}] (default: the pipeline's).
  --threads T           ONNX Runtime threads, 1..${LIMITS.threads} (default: all cores).
  --json                print one JSON object: per variant the mean overall, per block, per step and per block and
                        step (rel_branch, rel_output, rel_kept, n), the worst block, the blocks (tokens, kept), the
                        settings.
  --progress            show progress even when stderr is not a terminal: a plain line now and then.
  --verbose             let ONNX Runtime print its own log lines (warnings and above).
`;

/** The --recovery list: comma-separated names, each one of RECOVERY_VARIANTS, duplicates dropped. */
function parseRecoveries(text: string | undefined): RecoveryVariant[] {
  if (text === undefined) return [...RECOVERY_VARIANTS];
  const names = text.split(",").map((s) => s.trim());
  if (names.some((n) => n === "")) throw new AtedmError(`--recovery: empty name in '${text}' (comma-separated from ${RECOVERY_VARIANTS.join(", ")})`);
  return [...new Set(names.map((n) => oneOf(n, "recovery", RECOVERY_VARIANTS)!))];
}

export async function recoveryErrorCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "recovery-error");
  if (v.help) {
    process.stdout.write(RECOVERY_ERROR_HELP);
    return 0;
  }
  const str = (k: string) => v[k] as string | undefined;
  // Everything the user typed is checked here, before the model loads.
  const seeds = int(str("seeds"), "seeds", 1, LIMITS.seeds) ?? 1;
  const steps = int(str("steps"), "steps", 1, LIMITS.steps) ?? 20;
  const ratio = num(str("ratio"), "ratio", 0, 1, true) ?? 0.5;
  const variants = parseRecoveries(str("recovery"));
  const score = oneOf(str("score"), "score", SCORE_VARIANTS);
  const iterations = int(str("iterations"), "iterations", 1, LIMITS.iterations);
  const pruningPoint = oneOf(str("pruning-point"), "pruning-point", PRUNING_POINTS);
  const maskSharing = oneOf(str("mask-sharing"), "mask-sharing", MASK_SHARING);
  const guidance = num(str("guidance"), "guidance", 0, LIMITS.guidance);
  const threads = int(str("threads"), "threads", 1, LIMITS.threads);
  const modelDir = str("model") ?? DEFAULT_MODEL;
  if (!modelDir.trim()) throw new AtedmError("--model: the folder name is empty");
  const promptFile = str("prompts");
  if (!promptFile) throw new AtedmError("recovery-error: --prompts FILE is required");
  const prompts = readPromptFile(promptFile);

  const mode = progressMode({ progress: v.progress === true, json: v.json === true });
  status(mode, `loading ${modelDir} ...`);
  const pipe = await loadPipeline(modelDir, { threads, verbose: v.verbose === true });
  try {
    const progress = new Progress(prompts.length * seeds, "recovery-error", mode);
    const result = await recoveryErrors(pipe, {
      prompts,
      seeds,
      steps,
      ratio,
      variants,
      score,
      iterations,
      pruningPoint,
      maskSharing,
      guidance,
      onProgress: (done) => progress.update(done),
    });
    progress.done();
    if (v.json) {
      const { records: _records, ...summary } = result;
      const report = { atedm_version: atedmVersion(), model: modelDir, prompts_file: promptFile, threads: pipe.runtime.threads, ...summary };
      process.stdout.write(`${JSON.stringify(report, null, 1)}\n`);
    } else {
      process.stdout.write(formatTables(result));
    }
    return 0;
  } finally {
    await pipe.release();
  }
}

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? "-" : x.toFixed(3));

/** The human-readable report: variant x mean errors, then rel_branch per block and per step. */
export function formatTables(r: RecoveryErrorResult): string {
  const lines: string[] = [];
  const col = Math.max(10, ...r.variants.map((x) => x.length)) + 2;
  const row = (label: string, width: number, cells: string[]) => label.padEnd(width) + cells.map((c) => c.padStart(col)).join("");
  lines.push(
    `recovery error at ratio ${r.ratio}, ${r.prompts.length} prompts x ${r.seeds} seeds, ${r.steps} steps, score ${r.options.score}`,
    "(pruned positions; rel_branch = ||out - unpruned|| / ||unpruned - input||, zero recovery = 1; means over blocks, steps, prompts)",
    "",
    row("variant", 12, ["rel_branch", "rel_output", "rel_kept", "worst block"]),
  );
  for (const x of r.variants) {
    const s: RecoveryErrorStat = r.overall[x]!;
    const w = r.worst_block[x];
    lines.push(`${row(x, 12, [fmt(s.rel_branch), fmt(s.rel_output), fmt(s.rel_kept), fmt(w?.rel_branch)])}${w ? `  ${w.block}` : ""}`);
  }
  const blockWidth = Math.max(...r.blocks.map((b) => b.path.length)) + 14;
  lines.push("", "rel_branch per block (tokens -> kept)", row("block", blockWidth, r.variants));
  for (const b of r.blocks) {
    lines.push(
      row(
        `${b.path} (${b.tokens}->${b.kept})`,
        blockWidth,
        r.variants.map((x) => fmt(r.per_block[x]![b.path]!.rel_branch)),
      ),
    );
  }
  lines.push("", "rel_branch per step (mean over blocks)", row("step", 6, r.variants));
  for (let s = 0; s < r.steps; s++)
    lines.push(
      row(
        String(s),
        6,
        r.variants.map((x) => fmt(r.per_step[x]![s]!.rel_branch)),
      ),
    );
  return `${lines.join("\n")}\n`;
}
