/**
 * `atedm eval`: what pruning costs in quality and what it buys in FLOPs and seconds, for every listed method on
 * the same prompts and seeds, with bootstrap intervals; resumable; `atedm report` turns its folder into HTML.
 */
import { cpus } from "node:os";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { writeJsonAtomic } from "../io/files.js";
import { planRuns } from "../eval/plan.js";
import { parseRedisUrl } from "../eval/queue.js";
import { queueGenerator } from "../eval/queue_coordinator.js";
import { FD_BOOTSTRAP_SAMPLES, isShapesPromptSet, runEval } from "../eval/run.js";
import type { EvalResult } from "../eval/types.js";
import { ClipScorer } from "../metrics/clip_score.js";
import { FeatureExtractor, SHAPES_FEATURES } from "../metrics/features.js";
import { loadPipeline } from "../pipeline/text_to_image.js";
import { SCHEDULER_NAMES } from "../schedulers/index.js";
import { type Flags, int, LIMITS, MAX_SEED, num, oneOf, parse } from "./args.js";
import { DEFAULT_MODEL } from "./generate.js";
import { METHOD_OPTION_KEYS, parseMethodSpecs } from "./method_specs.js";
import { checkOutputDir } from "./outputs.js";
import { readPromptFile } from "./prompt_file.js";
import { Progress, progressMode, status } from "./progress.js";
import { PRUNING_HELP, pruningFlags } from "./pruning_flags.js";
import { atedmVersion } from "./version.js";

const flags: Flags = {
  model: { type: "string" },
  prompts: { type: "string" },
  seeds: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  scheduler: { type: "string" },
  threads: { type: "string" },
  methods: { type: "string" },
  budgets: { type: "string" },
  out: { type: "string" },
  features: { type: "string" },
  "fid-features": { type: "string" },
  "clip-image": { type: "string" },
  "clip-text": { type: "string" },
  "clip-tokenizer": { type: "string" },
  bootstrap: { type: "string" },
  "fd-bootstrap": { type: "string" },
  "bootstrap-seed": { type: "string" },
  "no-overlays": { type: "boolean" },
  queue: { type: "string" },
  chunk: { type: "string" },
  json: { type: "boolean" },
  progress: { type: "boolean" },
  verbose: { type: "boolean" },
  ...Object.fromEntries(Object.entries(pruningFlags).filter(([k]) => METHOD_OPTION_KEYS.includes(k))),
};

export const DEFAULT_METHODS = "none,atedm:0.5,tome:0.5";
const MAX_BOOTSTRAP = 100_000;
const DEFAULT_CHUNK = 8;
const MAX_CHUNK = 1000;

export const EVAL_HELP = `Usage: atedm eval --prompts FILE --out DIR [--model DIR] [--seeds N] [--steps S] [--methods LIST]
                  [--budgets LIST] [method options] [--json]

Generate one image per prompt, seed and method, then score each method: FLOPs saving, seconds per step and
speed-up (methods take turns image by image, so machine noise hits all alike), and quality with a 95 % bootstrap
interval over prompts: text alignment per attribute, and its change against the unpruned image of the same prompt
and seed (shapes models); Frechet distance to real renders of the captions (shapes models); PSNR and SSIM against
the unpruned image of the same prompt and seed; optionally FID and CLIP score with ONNX files you supply. Every
image is cached in --out, so a killed eval resumes where it stopped; DIR/eval.json (written atomically) is what
'atedm report --in DIR' reads.

  --prompts FILE        one prompt per line (blank lines and # comments skipped).
  --out DIR             output folder (created; an existing eval there with the same settings is resumed).
  --model DIR           model folder (default: the embedded shapes model).
  --seeds N             seeds per prompt (0..N-1), 1..${LIMITS.seeds} (default 1).
  --steps S             denoising steps, 1..${LIMITS.steps} (default 20).
  --guidance G          guidance scale in [0, ${LIMITS.guidance}] (default: the pipeline's).
  --scheduler NAME      ${SCHEDULER_NAMES.join(" | ")} (default: the model's own scheduler class).
  --threads T           ONNX Runtime threads, 1..${LIMITS.threads} (default: all cores).
  --methods LIST        comma-separated name[:ratio][:option=value...] (default ${DEFAULT_METHODS}); options are
                        the method flags below without the dashes, e.g. atedm:0.5:recovery=cosine:schedule=none,
                        tome:0.3:tome-max-downsample=2, tome:0.5:tome-merge=attn+mlp (+ joins a list), or
                        atedm:0.5:preset=paper. 'none' (the reference) is always run, first.
  --budgets LIST        FLOPs savings, e.g. 0.05,0.1,0.15: every method listed without a ratio runs at the ratio
                        that reaches each saving (U-Net FLOPs per step over the whole generation, pruning overhead
                        included); a budget a method cannot reach is reported, one no method reaches is an error.
                        Without --budgets a method without a ratio runs at 0.5.
  --features FILE       feature extractor ONNX for 'fd' (default: the embedded shapes extractor when every prompt
                        is a shapes caption; 'none' to skip): float32 [N, 3, H, W] RGB in [0, 1] -> [N, D].
  --fid-features FILE   an Inception-style extractor ONNX (same contract) for 'fid' against the real renders.
  --clip-image FILE --clip-text FILE --clip-tokenizer DIR
                        CLIP image and text encoders as ONNX (projected embeddings; see src/metrics/clip_score.ts)
                        and a CLIP tokenizer folder, for 'clip_score' (100 x cosine, Hessel et al. 2021).
  --bootstrap N         bootstrap resamples per interval, 1..${MAX_BOOTSTRAP} (default 1000).
  --fd-bootstrap N      resamples of the Frechet distances' intervals, at most --bootstrap (default ${FD_BOOTSTRAP_SAMPLES}: each
                        costs two covariances and an eigen-decomposition).
  --bootstrap-seed S    seed of the resampling (default 0).
  --no-overlays         skip the kept-token overlays (one extra image per AT-EDM method).
  --queue URL           generate on 'atedm worker's instead of here: one job per method, seed and chunk of
                        prompts on Redis at redis://HOST:PORT[/DB], waited for; images land in --out as a
                        local eval's do, and scoring runs here (docs/queue.md).
  --chunk N             prompts per job with --queue, 1..${MAX_CHUNK} (default ${DEFAULT_CHUNK}).
  --json                print eval.json on stdout as well.
  --progress            show progress even when stderr is not a terminal: a plain line now and then.
  --verbose             let ONNX Runtime print its own log lines (warnings and above).

Method options given as flags apply to every listed method they belong to (the method's own :option=value wins).

${PRUNING_HELP.replace(/\n {2}--method [^\n]*\n(?: {27}[^\n]*\n)?/, "\n").replace(/\n {2}--ratio [^\n]*\n {27}[^\n]*\n/, "\n")}
`;

function parseBudgets(text: string | undefined): number[] | null {
  if (text === undefined) return null;
  const parts = text.split(",").map((s) => s.trim());
  const budgets = parts.map((p) => (p === "" ? NaN : Number(p)));
  budgets.forEach((b, i) => {
    if (!(b > 0 && b < 1)) throw new AtedmError(`--budgets: '${parts[i]}' is not a FLOPs saving in (0, 1)`);
  });
  return [...new Set(budgets)].sort((a, b) => a - b);
}

export async function evalCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "eval");
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
  const samples = int(str("bootstrap"), "bootstrap", 1, MAX_BOOTSTRAP) ?? 1000;
  const fdSamples = int(str("fd-bootstrap"), "fd-bootstrap", 1, MAX_BOOTSTRAP);
  const bootSeed = int(str("bootstrap-seed"), "bootstrap-seed", 0, MAX_SEED) ?? 0;
  const budgets = parseBudgets(str("budgets"));
  const queueUrl = str("queue");
  const chunk = int(str("chunk"), "chunk", 1, MAX_CHUNK) ?? DEFAULT_CHUNK;
  if (queueUrl !== undefined) parseRedisUrl(queueUrl);
  const specs = parseMethodSpecs(str("methods") ?? DEFAULT_METHODS, v);
  const modelDir = str("model") ?? DEFAULT_MODEL;
  if (!modelDir.trim()) throw new AtedmError("--model: the folder name is empty");
  const outDir = str("out");
  if (!outDir) throw new AtedmError("eval: --out DIR is required (images, their records and eval.json go there)");
  checkOutputDir(outDir, "out");
  const promptFile = str("prompts");
  if (!promptFile) throw new AtedmError("eval: --prompts FILE is required");
  const prompts = readPromptFile(promptFile);
  const shapes = isShapesPromptSet(prompts);
  const featuresFile = str("features") === "none" ? null : (str("features") ?? (shapes ? SHAPES_FEATURES : null));
  const clipFiles = ["clip-image", "clip-text", "clip-tokenizer"].map(str);
  if (clipFiles.some((x) => x !== undefined) && clipFiles.some((x) => x === undefined)) {
    throw new AtedmError("eval: CLIP score needs all of --clip-image, --clip-text and --clip-tokenizer");
  }
  if ((featuresFile || str("fid-features")) && !shapes) {
    const bad = prompts.find((p) => !isShapesPromptSet([p]));
    throw new AtedmError(
      `${promptFile}: Frechet distance needs real images, which exist only for shapes captions ('${bad?.slice(0, 60)}' is not one); pass --features none`,
    );
  }

  const mode = progressMode({ progress: v.progress === true, json: v.json === true });
  // With --queue, Redis must answer before anything loads (one line naming the URL when it does not).
  const generate = queueUrl
    ? await queueGenerator({
        url: queueUrl,
        model: modelDir,
        flags: Object.fromEntries(METHOD_OPTION_KEYS.filter((k) => v[k] !== undefined).map((k) => [k, v[k] as string | boolean])),
        chunk,
        log: (line) => process.stderr.write(`atedm eval: ${line}\n`),
      })
    : undefined;
  const wall0 = performance.now();
  status(mode, `loading ${modelDir} ...`);
  const pipe = await loadPipeline(modelDir, { threads, verbose: v.verbose === true });
  const extractors: FeatureExtractor[] = [];
  let clip: ClipScorer | null = null;
  try {
    const features = featuresFile
      ? await FeatureExtractor.load(featuresFile, pipe.runtime, featuresFile === SHAPES_FEATURES ? "shapes-features" : undefined)
      : null;
    if (features) extractors.push(features);
    const fid = str("fid-features") ? await FeatureExtractor.load(str("fid-features")!, pipe.runtime) : null;
    if (fid) extractors.push(fid);
    if (clipFiles.every((x) => x !== undefined)) clip = await ClipScorer.load(clipFiles[0]!, clipFiles[1]!, clipFiles[2]!, pipe.runtime);
    // The pipeline's default image size is sample_size latent pixels a side.
    const latent: [number, number] = [pipe.unet.config.sample_size, pipe.unet.config.sample_size];
    const { runs, unreachable } = planRuns(specs, budgets, { cfg: pipe.unet.config, latent, steps, textLength: pipe.tokenizer.modelMaxLength });
    for (const u of unreachable) status(mode, `budget ${u.budget}: '${u.spec}' reaches at most ${u.max_saving.toFixed(3)}; left out`);
    const progress = new Progress(prompts.length * seeds * runs.length, "eval", mode);
    const { result, generated, resumed, finalSeconds } = await runEval({
      pipe,
      runs,
      unreachable,
      budgets,
      prompts,
      promptsFile: promptFile,
      seeds,
      steps,
      guidance,
      scheduler,
      outDir,
      features,
      fidFeatures: fid,
      clip,
      bootstrapSamples: samples,
      fdBootstrapSamples: fdSamples,
      bootstrapSeed: bootSeed,
      overlays: v["no-overlays"] !== true,
      command: ["atedm", "eval", ...argv].join(" "),
      version: atedmVersion(),
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model.trim() ?? "unknown", platform: `${process.platform}-${process.arch}` },
      threads: pipe.runtime.threads,
      onImage: (done) => progress.update(done),
      generate,
    });
    progress.done();
    const wall = (performance.now() - wall0) / 1000;
    // This process's own clock (eval.json holds only what the cache determines, so a resumed eval writes the same).
    const run = { images_generated: generated, images_resumed: resumed, wall_seconds: wall, scoring_seconds: finalSeconds };
    writeJsonAtomic(join(outDir, "run.json"), run, 1);
    status(mode, `${generated} images generated, ${resumed} resumed; scoring ${finalSeconds.toFixed(1)} s; ${wall.toFixed(1)} s in all`);
    if (v.json) process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
    else process.stdout.write(summaryTable(result));
    return 0;
  } finally {
    for (const e of extractors) await e.release();
    await clip?.release();
    await pipe.release();
  }
}

/** The methods as a plain-text table: one row per method, each quality metric as value [low, high]. */
export function summaryTable(r: EvalResult): string {
  const metrics = [...new Set(r.methods.flatMap((m) => Object.keys(m.quality)))].filter(
    (k) => !k.startsWith("alignment.") || k === "alignment.shape",
  );
  const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3));
  const rows = [["method", "ratio", "FLOPs saving", "s/step", "speed-up", ...metrics]];
  for (const m of r.methods) {
    rows.push([
      m.name,
      m.ratio.toFixed(3),
      m.flops_saving.toFixed(3),
      m.seconds_per_step.toFixed(4),
      `${m.speedup.toFixed(2)}x`,
      ...metrics.map((k) => {
        const q = m.quality[k];
        return q ? `${fmt(q.value)}${q.ci95 ? ` [${fmt(q.ci95[0])}, ${fmt(q.ci95[1])}]` : ""}` : "-";
      }),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) =>
    row
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd(),
  );
  for (const u of r.unreachable) lines.push(`unreachable: ${u.spec} at a FLOPs saving of ${u.budget} (at most ${u.max_saving.toFixed(3)})`);
  return `${lines.join("\n")}\n`;
}
