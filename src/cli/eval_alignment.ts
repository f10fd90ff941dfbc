/**
 * `atedm eval-alignment`: text-image alignment of a shapes model (the project's GenEval): generate an image per
 * prompt and seed, judge every attribute of its caption with the shapes analyzer, report the accuracies.
 */
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { makeDirectory } from "../io/files.js";
import { toRGB8, writePng } from "../io/png.js";
import { loadPipeline } from "../pipeline/text_to_image.js";
import { applyPruning } from "../pruning/index.js";
import { SCHEDULER_NAMES } from "../schedulers/index.js";
import { analyzeImage } from "../shapes/analyze.js";
import { parseCaption } from "../shapes/grammar.js";
import { type Flags, int, LIMITS, num, oneOf, parse } from "./args.js";
import { DEFAULT_MODEL } from "./generate.js";
import { checkOutputDir } from "./outputs.js";
import { readPromptLines } from "./prompt_file.js";
import { Progress, progressMode, status } from "./progress.js";
import { makeMethod, methodReport, PRUNING_HELP, pruningFlags } from "./pruning_flags.js";
import { atedmVersion } from "./version.js";

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
  progress: { type: "boolean" },
  verbose: { type: "boolean" },
  ...pruningFlags,
};

export const EVAL_HELP = `Usage: atedm eval-alignment --prompts FILE [--model DIR] [--seeds N] [--steps S] [pruning options] [--json]

Generate one image per prompt and seed (seeds 0..N-1) and judge each with the shapes analyzer: background
colour, and each object's colour, shape, size and position (two-object prompts: the relation). Every flag and the
--save-images folder are checked before the model loads.

  --prompts FILE        one prompt per line, in the shapes caption grammar (blank lines and # comments skipped).
  --model DIR           model folder (default: the embedded shapes model).
  --seeds N             seeds per prompt, 1..${LIMITS.seeds} (default 1).
  --steps S             denoising steps, 1..${LIMITS.steps} (default 20).
  --guidance G          guidance scale in [0, ${LIMITS.guidance}] (default: the pipeline's).
  --scheduler NAME      ${SCHEDULER_NAMES.join(" | ")} (default: the model's own scheduler class).
  --threads T           ONNX Runtime threads, 1..${LIMITS.threads} (default: all cores).
  --save-images DIR     also write every generated image as DIR/<prompt index>_<seed>.png (DIR created if missing).
  --json                print one JSON object: all_correct, per_attribute, per_prompt (each prompt, and per seed
                        the attributes that failed), the settings, seconds_per_step, atedm's version, ...
  --progress            show progress even when stderr is not a terminal: a plain line now and then.
  --verbose             let ONNX Runtime print its own log lines (warnings and above).

${PRUNING_HELP}
`;

export async function evalAlignmentCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "eval-alignment");
  if (v.help) {
    process.stdout.write(EVAL_HELP);
    return 0;
  }
  const str = (k: string) => v[k] as string | undefined;
  // Everything the user typed is checked here, before the model loads.
  const seeds = int(str("seeds"), "seeds", 1, LIMITS.seeds) ?? 1;
  const steps = int(str("steps"), "steps", 1, LIMITS.steps) ?? 20;
  const threads = int(str("threads"), "threads", 1, LIMITS.threads);
  const guidance = num(str("guidance"), "guidance", 0, LIMITS.guidance);
  const scheduler = oneOf(str("scheduler"), "scheduler", SCHEDULER_NAMES);
  const method = makeMethod(v);
  const modelDir = str("model") ?? DEFAULT_MODEL;
  if (!modelDir.trim()) throw new AtedmError("--model: the folder name is empty");
  const saveDir = str("save-images");
  if (saveDir !== undefined) checkOutputDir(saveDir, "save-images");
  const promptFile = str("prompts");
  if (!promptFile) throw new AtedmError("eval-alignment: --prompts FILE is required");
  const lines = readPromptLines(promptFile);
  for (const { prompt, line } of lines) {
    try {
      parseCaption(prompt);
    } catch (e) {
      throw new AtedmError(`${promptFile}:${line}: ${(e as Error).message}`);
    }
  }
  const prompts = lines.map((p) => p.prompt);

  const mode = progressMode({ progress: v.progress === true, json: v.json === true });
  status(mode, `loading ${modelDir} ...`);
  const pipe = await loadPipeline(modelDir, { threads, verbose: v.verbose === true });
  try {
    if (method) applyPruning(pipe, method);
    const total = prompts.length * seeds;
    const progress = new Progress(total, "eval", mode);
    const correct: Record<string, [number, number]> = {};
    let allCorrect = 0;
    const stepSeconds: number[] = [];
    const flops: number[] = [];
    const perPrompt: Array<{ prompt: string; all_correct: number; images: Array<{ seed: number; all_correct: boolean; failed: string[] }> }> = [];
    let done = 0;
    let madeDir = false;
    for (const [pi, prompt] of prompts.entries()) {
      const images: (typeof perPrompt)[number]["images"] = [];
      for (let seed = 0; seed < seeds; seed++) {
        const r = await pipe.generate({ prompt, seed, steps, guidance, scheduler });
        stepSeconds.push(...r.stepSeconds);
        const [, H, W] = r.imageDims as [number, number, number];
        const rgb = toRGB8(r.image, H, W);
        if (saveDir !== undefined) {
          if (!madeDir) {
            makeDirectory(saveDir);
            madeDir = true;
          }
          writePng(join(saveDir, `${String(pi).padStart(4, "0")}_${seed}.png`), rgb, H, W);
        }
        const a = analyzeImage(rgb, W, H, prompt);
        if (a.allCorrect) allCorrect++;
        const failed: string[] = [];
        for (const [attr, ok] of Object.entries(a.attributes)) {
          const kind = attr.replace(/^object\d+\./, "");
          correct[kind] ??= [0, 0];
          const c = correct[kind];
          c[0] += ok ? 1 : 0;
          c[1] += 1;
          if (!ok) failed.push(attr);
        }
        images.push({ seed, all_correct: a.allCorrect, failed });
        if (!flops.length) {
          const [, , h, w] = r.latentDims as [number, number, number, number];
          const f = pipe.unetFlopsPerStep(h, w, r.stepInfo);
          flops.push(f.unpruned, f.pruned);
        }
        progress.update(++done);
      }
      perPrompt.push({ prompt, all_correct: images.filter((x) => x.all_correct).length / images.length, images });
    }
    progress.done();
    const sorted = stepSeconds.slice().sort((a, b) => a - b);
    const report = {
      atedm_version: atedmVersion(),
      model: modelDir,
      prompts: prompts.length,
      seeds,
      images: total,
      steps,
      guidance: guidance ?? pipe.defaultGuidance,
      scheduler: pipe.scheduler(scheduler).name,
      threads: pipe.runtime.threads,
      ...methodReport(method),
      all_correct: allCorrect / total,
      per_attribute: Object.fromEntries(Object.entries(correct).map(([k, [c, n]]) => [k, c / n])),
      per_prompt: perPrompt,
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
