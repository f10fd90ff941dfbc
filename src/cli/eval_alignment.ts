/**
 * `atedm eval-alignment`: text-image alignment of a shapes model (the project's GenEval): generate an image per
 * prompt and seed, judge every attribute of its caption with the shapes analyzer, report the accuracies.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { toRGB8, writePng } from "../io/png.js";
import { loadPipeline } from "../pipeline/text_to_image.js";
import { applyPruning } from "../pruning/index.js";
import { analyzeImage } from "../shapes/analyze.js";
import { parseCaption } from "../shapes/grammar.js";
import { SCHEDULER_NAMES } from "../schedulers/index.js";
import { int, num, oneOf, parse, type Flags } from "./args.js";
import { DEFAULT_MODEL } from "./generate.js";
import { Progress } from "./progress.js";
import { makeMethod, pruningFlags, PRUNING_HELP } from "./pruning_flags.js";

const flags: Flags = {
  model: { type: "string" },
  prompts: { type: "string" },
  seeds: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  scheduler: { type: "string" },
  threads: { type: "string" },
  "save-images": { type: "string" },
  json: { type: "boolean" },
  ...pruningFlags,
};

export const EVAL_HELP = `Usage: atedm eval-alignment --prompts FILE [--model DIR] [--seeds N] [--steps S] [pruning options] [--json]

Generate one image per prompt and seed (seeds 0..N-1) and judge each with the shapes analyzer: background
colour, and each object's colour, shape, size and position (two-object prompts: the relation).

  --prompts FILE        one prompt per line, in the shapes caption grammar (blank lines and # comments skipped).
  --model DIR           model folder (default: the embedded shapes model).
  --seeds N             seeds per prompt (default 1).
  --steps S             denoising steps (default 20).
  --guidance G          guidance scale (default: the pipeline's).
  --scheduler NAME      ${SCHEDULER_NAMES.join(" | ")} (default euler).
  --threads T           ONNX Runtime threads (default: all cores).
  --save-images DIR     also write every generated image as DIR/<prompt index>_<seed>.png.
  --json                print one JSON object: all_correct, per_attribute, images, seconds_per_step, ...

${PRUNING_HELP}
`;

export async function evalAlignmentCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "eval-alignment");
  if (v.help) {
    process.stdout.write(EVAL_HELP);
    return 0;
  }
  if (!v.prompts) throw new AtedmError("eval-alignment: --prompts FILE is required");
  let text: string;
  try {
    text = readFileSync(v.prompts as string, "utf8");
  } catch (e) {
    throw new AtedmError(`${v.prompts}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const prompts = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  if (!prompts.length) throw new AtedmError(`${v.prompts}: no prompts`);
  prompts.forEach((p, i) => {
    try {
      parseCaption(p);
    } catch (e) {
      throw new AtedmError(`${v.prompts}:${i + 1}: ${(e as Error).message}`);
    }
  });
  const seeds = int(v.seeds as string | undefined, "seeds", 1) ?? 1;
  const steps = int(v.steps as string | undefined, "steps", 1) ?? 20;
  const threads = int(v.threads as string | undefined, "threads", 1);
  const saveDir = v["save-images"] as string | undefined;
  if (saveDir) mkdirSync(saveDir, { recursive: true });

  const pipe = await loadPipeline((v.model as string | undefined) ?? DEFAULT_MODEL, threads ? { threads } : {});
  try {
    const method = makeMethod(v);
    if (method) applyPruning(pipe, method);
    const total = prompts.length * seeds;
    const progress = new Progress(total, "eval", !v.json && process.stderr.isTTY === true);
    const correct: Record<string, [number, number]> = {};
    let allCorrect = 0;
    const stepSeconds: number[] = [];
    const flops: number[] = [];
    let done = 0;
    for (const [pi, prompt] of prompts.entries()) {
      for (let seed = 0; seed < seeds; seed++) {
        const r = await pipe.generate({
          prompt,
          seed,
          steps,
          guidance: num(v.guidance as string | undefined, "guidance"),
          scheduler: oneOf(v.scheduler as string | undefined, "scheduler", SCHEDULER_NAMES),
        });
        stepSeconds.push(...r.stepSeconds);
        const [, H, W] = r.imageDims as [number, number, number];
        const rgb = toRGB8(r.image, H, W);
        if (saveDir) writePng(join(saveDir, `${String(pi).padStart(4, "0")}_${seed}.png`), rgb, H, W);
        const a = analyzeImage(rgb, W, H, prompt);
        if (a.allCorrect) allCorrect++;
        for (const [attr, ok] of Object.entries(a.attributes)) {
          const kind = attr.replace(/^object\d+\./, "");
          correct[kind] ??= [0, 0];
          const c = correct[kind];
          c[0] += ok ? 1 : 0;
          c[1] += 1;
        }
        if (!flops.length) {
          const [, , h, w] = r.latentDims as [number, number, number, number];
          const f = pipe.unetFlopsPerStep(h, w, r.stepInfo);
          flops.push(f.unpruned, f.pruned);
        }
        progress.update(++done);
      }
    }
    progress.done();
    const sorted = stepSeconds.slice().sort((a, b) => a - b);
    const report = {
      model: (v.model as string | undefined) ?? DEFAULT_MODEL,
      prompts: prompts.length,
      seeds,
      images: total,
      steps,
      method: method?.name ?? "none",
      ratio: method?.nominalRatio ?? 0,
      all_correct: allCorrect / total,
      per_attribute: Object.fromEntries(Object.entries(correct).map(([k, [c, n]]) => [k, c / n])),
      seconds_per_step: sorted[sorted.length >> 1] ?? 0,
      unet_tflops_per_step: (flops[1] ?? 0) / 1e12,
      flops_saving: flops.length ? 1 - flops[1]! / flops[0]! : 0,
    };
    if (v.json) process.stdout.write(JSON.stringify(report, null, 1) + "\n");
    else {
      process.stdout.write(`all correct: ${(100 * report.all_correct).toFixed(1)} % of ${total} images\n`);
      for (const [k, x] of Object.entries(report.per_attribute)) process.stdout.write(`  ${k.padEnd(10)} ${(100 * x).toFixed(1)} %\n`);
    }
    return 0;
  } finally {
    await pipe.release();
  }
}
