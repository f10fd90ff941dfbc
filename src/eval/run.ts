/**
 * `atedm eval`'s engine: generate every (prompt, seed) with every run of the plan, cache each image and what was
 * measured on it, then score every run against the reference (`none`) and, for shapes models, against the
 * captions and real renders of them.
 *
 * - Same inputs: every run sees the same prompts, seeds, steps, guidance and scheduler.
 * - Timing: runs take turns image by image (the order rotates from image to image), so machine noise hits all
 *   alike; `seconds_per_step` is the median step time (U-Net and scheduler) over all of a run's steps, and
 *   `speedup` divides the reference's by it, within one worker only (`speedupWithinWorkers`: every record names
 *   the worker that timed it; a local eval is the one worker "local"; a queue eval takes the median of the
 *   per-worker ratios). The U-Net keeps every run's sessions built (`keepSessionsOf`).
 * - Where: locally one image after another (`generateImage`, `storeImage`), or by queue workers (`generate`,
 *   see queue_coordinator.ts), which run the same `generateImage` and hand back the bytes for `storeImage`.
 * - Resume: each image is written as `images/<run key>/<prompt>_<seed>.png` with a `.json` record of its timing
 *   and judgement, both atomically, the record last. A restarted eval skips what has a record, so a run killed
 *   half way and restarted gives the same `eval.json` as an uninterrupted one (timings come from the records).
 * - Quality: per-image metrics are averaged per prompt, then over prompts; every interval is a percentile
 *   bootstrap over prompts (`bootstrap`, seeded). Frechet distance compares a run's features with those of real
 *   renders of the same captions (one per prompt and seed), in the feature space of the given extractor.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { makeDirectory, writeFileAtomic, writeJsonAtomic } from "../io/files.js";
import { encodePng, readPng, toRGB8, writePng } from "../io/png.js";
import { median } from "../metrics/timing.js";
import { bootstrap } from "../metrics/bootstrap.js";
import type { ClipScorer } from "../metrics/clip_score.js";
import type { FeatureExtractor } from "../metrics/features.js";
import { featureStats, frechetFromStats } from "../metrics/frechet.js";
import { psnr, ssim } from "../metrics/quality.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import type { TextToImagePipeline } from "../pipeline/text_to_image.js";
import { blockMask } from "../pruning/masks.js";
import type { Tensor } from "../runtime/session.js";
import type { SchedulerName } from "../schedulers/index.js";
import { analyzeImage } from "../shapes/analyze.js";
import { parseCaption } from "../shapes/grammar.js";
import { renderScene } from "../shapes/render.js";
import { Mulberry32, stableHash32 } from "../util/numerics.js";
import type { EvalRun } from "./plan.js";
import type { EvalResult, ImageRecord, MethodResult, MetricValue, UnreachableBudget } from "./types.js";

export interface EvalOptions {
  pipe: TextToImagePipeline;
  runs: EvalRun[];
  unreachable: UnreachableBudget[];
  budgets: number[] | null;
  prompts: string[];
  promptsFile: string;
  seeds: number;
  steps: number;
  guidance?: number;
  scheduler?: SchedulerName;
  outDir: string;
  /** Features for `fd` against real renders (shapes models only). */
  features?: FeatureExtractor | null;
  /** A user's Inception-style extractor for `fid` against real renders (shapes models only) — plumbing. */
  fidFeatures?: FeatureExtractor | null;
  clip?: ClipScorer | null;
  bootstrapSamples?: number;
  /** Resamples for the Frechet distances (default min(200, bootstrapSamples)): each costs two covariances and an
   * eigen-decomposition (~10 ms at 128 features), and eval's overhead should stay a few % of generation. */
  fdBootstrapSamples?: number;
  bootstrapSeed?: number;
  /** Kept-token overlays (first prompt, seed 0, middle step) for every AT-EDM run. Default true. */
  overlays?: boolean;
  command: string;
  version: string;
  machine: EvalResult["machine"];
  threads: number;
  /** Image size (default: the model's). */
  height?: number;
  width?: number;
  /** Called after each image with (done, total). */
  onImage?: (done: number, total: number) => void;
  /** Where the missing images are generated; default: here, one by one (`generateImage`). */
  generate?: RemoteGenerator;
}

/** What is cached beside each image. */
export interface ImageFileRecord {
  prompt: string;
  seed: number;
  step_seconds: number[];
  generation_seconds: number;
  other_seconds: number;
  alignment: { all_correct: boolean; attributes: Record<string, boolean> } | null;
  /** Who generated it (timings are compared only within one worker); absent in records of older versions: local. */
  worker?: string;
}

/** The worker id of a local eval (and of records written before workers existed). */
export const LOCAL_WORKER = "local";

/** One image of the plan: a run, a prompt (and its index in the prompt file) and a seed; `id` is its path stem. */
export interface ImageTask {
  run: EvalRun;
  promptIndex: number;
  prompt: string;
  seed: number;
  /** `<run key>/<prompt index>_<seed>`, the stem of its .png and .json under `<out>/images`. */
  id: string;
}

/** Everything about an image but its method, prompt and seed; the same for every image of an eval. */
export interface ImageSettings {
  steps: number;
  guidance: number;
  scheduler: SchedulerName;
  /** Image size; undefined: the model's default (sample_size latent pixels a side). */
  height?: number;
  width?: number;
  /** Judge text alignment (every prompt is a shapes caption). */
  shapes: boolean;
}

/** Generates the images an eval is missing somewhere else (a queue of workers): calls `store` once per image. */
export type RemoteGenerator = (
  missing: ImageTask[],
  settings: ImageSettings,
  store: (id: string, png: Uint8Array, record: ImageFileRecord) => void,
) => Promise<void>;

export const imageId = (runKey: string, promptIndex: number, seed: number) => `${runKey}/${pad(promptIndex)}_${seed}`;

/**
 * Generate one image with `method` installed and judge it: the PNG bytes and the record cached beside it. The one
 * generation path of an eval, local or in a queue worker, so both give the same pixels for the same inputs.
 */
export async function generateImage(
  pipe: TextToImagePipeline,
  method: PruningMethod | null,
  s: ImageSettings & { prompt: string; seed: number },
  worker: string,
): Promise<{ rgb: Uint8Array; png: Uint8Array; height: number; width: number; record: ImageFileRecord }> {
  pipe.unet.pruning = method;
  const t0 = performance.now();
  const r = await pipe.generate({
    prompt: s.prompt,
    seed: s.seed,
    steps: s.steps,
    guidance: s.guidance,
    scheduler: s.scheduler,
    ...(s.height !== undefined ? { height: s.height } : {}),
    ...(s.width !== undefined ? { width: s.width } : {}),
  });
  const t1 = performance.now();
  const [, H, W] = r.imageDims as [number, number, number];
  const rgb = toRGB8(r.image, H, W);
  const png = encodePng(rgb, H, W);
  let alignment: ImageFileRecord["alignment"] = null;
  if (s.shapes) {
    const a = analyzeImage(rgb, W, H, s.prompt);
    alignment = { all_correct: a.allCorrect, attributes: a.attributes };
  }
  const record: ImageFileRecord = {
    prompt: s.prompt,
    seed: s.seed,
    step_seconds: r.stepSeconds,
    generation_seconds: (t1 - t0) / 1000,
    other_seconds: 0,
    alignment,
    worker,
  };
  record.other_seconds = (performance.now() - t1) / 1000;
  return { rgb, png, height: H, width: W, record };
}

/**
 * Cache one image in `outDir`: the PNG, then its record, each atomically, so a record always has its image. The
 * path is the image's key (run key, prompt index, seed), so storing the same image twice (a retried job) leaves
 * one copy with the same bytes.
 */
export function storeImage(outDir: string, id: string, png: Uint8Array, record: ImageFileRecord): void {
  writeFileAtomic(join(outDir, "images", `${id}.png`), [png]);
  writeJsonAtomic(join(outDir, "images", `${id}.json`), record, 1);
}

/** The settings an output folder was started with; a restart with other settings is refused. */
interface EvalState {
  created: string;
  model: string;
  steps: number;
  guidance: number;
  scheduler: string;
  seeds: number;
  prompts: string[];
}

/** Default resamples of the Frechet distances' intervals. */
export const FD_BOOTSTRAP_SAMPLES = 200;

/** PSNR of identical images is infinite; it counts as this many dB so that means and intervals stay finite. */
export const PSNR_CAP_DB = 100;

const pad = (n: number) => String(n).padStart(4, "0");

export function isShapesPromptSet(prompts: readonly string[]): boolean {
  return prompts.every((p) => {
    try {
      parseCaption(p);
      return true;
    } catch {
      return false;
    }
  });
}

function readJson<T>(path: string): T | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return null; // a torn or foreign file: regenerate
  }
}

function checkState(outDir: string, want: Omit<EvalState, "created">): EvalState {
  const path = join(outDir, "eval-state.json");
  const have = readJson<EvalState>(path);
  if (have) {
    for (const k of Object.keys(want) as Array<keyof typeof want>) {
      if (JSON.stringify(have[k]) !== JSON.stringify(want[k])) {
        throw new AtedmError(`${outDir}: holds an eval with other ${k} (${JSON.stringify(have[k]).slice(0, 60)}); use another --out or delete it`);
      }
    }
    return have;
  }
  const state = { created: new Date().toISOString(), ...want };
  writeJsonAtomic(path, state, 1);
  return state;
}

export interface EvalRunOutput {
  result: EvalResult;
  /** Images this call generated, and images it found cached. */
  generated: number;
  resumed: number;
  /** Seconds spent scoring (and drawing overlays) after the last image. */
  finalSeconds: number;
}

/** Run an evaluation; the pipeline's pruning method and session cache size are as they were when it returns. */
export async function runEval(o: EvalOptions): Promise<EvalRunOutput> {
  const { pruning, keepSessionsOf } = o.pipe.unet;
  try {
    return await evaluate(o);
  } finally {
    o.pipe.unet.pruning = pruning;
    o.pipe.unet.keepSessionsOf = keepSessionsOf;
  }
}

async function evaluate(o: EvalOptions): Promise<EvalRunOutput> {
  const { pipe, runs, prompts, seeds, steps } = o;
  const guidance = o.guidance ?? pipe.defaultGuidance;
  const scheduler = o.scheduler ?? pipe.scheduler().name; // the model's own, as generate
  makeDirectory(o.outDir);
  const state = checkState(o.outDir, { model: pipe.dir, steps, guidance, scheduler, seeds, prompts });
  const shapes = isShapesPromptSet(prompts);
  pipe.unet.keepSessionsOf = runs.length;
  for (const r of runs) makeDirectory(join(o.outDir, "images", r.key));

  const records = new Map<string, ImageFileRecord>(); // `${key}/${p}_${s}`
  const images = new Map<string, Uint8Array>();
  let size: [number, number] = [0, 0];
  const total = prompts.length * seeds * runs.length;
  let done = 0;
  let generated = 0;
  // Every image in the local order: prompt by prompt, seed by seed, the runs taking turns (rotating).
  const tasks: ImageTask[] = [];
  let order = 0;
  for (const [pi, prompt] of prompts.entries()) {
    for (let seed = 0; seed < seeds; seed++) {
      for (let j = 0; j < runs.length; j++) {
        const run = runs[(j + order) % runs.length]!;
        tasks.push({ run, promptIndex: pi, prompt, seed, id: imageId(run.key, pi, seed) });
      }
      order++;
    }
  }
  const settings: ImageSettings = { steps, guidance, scheduler, height: o.height, width: o.width, shapes };
  const store = (id: string, png: Uint8Array, rec: ImageFileRecord) => {
    storeImage(o.outDir, id, png, rec);
    records.set(id, rec);
    generated++;
    o.onImage?.(++done, total);
  };
  const missing: ImageTask[] = [];
  for (const t of tasks) {
    const cached = readJson<ImageFileRecord>(join(o.outDir, "images", `${t.id}.json`));
    if (cached && cached.prompt === t.prompt && cached.seed === t.seed && existsSync(join(o.outDir, "images", `${t.id}.png`))) {
      records.set(t.id, cached);
      if (!o.generate) o.onImage?.(++done, total);
    } else if (o.generate) {
      missing.push(t);
    } else {
      // Local: one image at a time, in order, each stored as soon as it is made.
      const g = await generateImage(pipe, t.run.method, { ...settings, prompt: t.prompt, seed: t.seed }, LOCAL_WORKER);
      size = [g.height, g.width];
      images.set(t.id, g.rgb);
      store(t.id, g.png, g.record);
    }
  }
  if (o.generate) {
    done = total - missing.length;
    o.onImage?.(done, total);
    if (missing.length) await o.generate(missing, settings, store);
  }

  // Everything below is scoring: the "other" time of the run.
  const t0 = performance.now();
  const image = (id: string): Uint8Array => {
    let rgb = images.get(id);
    if (!rgb) {
      const p = readPng(join(o.outDir, "images", `${id}.png`));
      size = [p.height, p.width];
      rgb = p.rgb;
      images.set(id, rgb);
    }
    return rgb;
  };
  const idsOf = (run: EvalRun) => prompts.flatMap((_, pi) => Array.from({ length: seeds }, (_, s) => `${run.key}/${pad(pi)}_${s}`));
  const reference = runs[0]!;
  for (const id of idsOf(reference)) image(id);
  const [H, W] = size;
  const boot = { samples: o.bootstrapSamples ?? 1000, seed: o.bootstrapSeed ?? 0 };
  const fdBoot = { samples: Math.min(boot.samples, o.fdBootstrapSamples ?? FD_BOOTSTRAP_SAMPLES), seed: boot.seed };

  // Per image values of a run, [prompt][seed] -> a metric with an interval over prompts.
  const perPromptMetric = (values: number[][]): MetricValue => {
    const perPrompt = values.map((v) => v.reduce((a, b) => a + b, 0) / v.length);
    return bootstrap(
      perPrompt.length,
      (idx) => {
        let s = 0;
        for (const i of idx) s += perPrompt[i]!;
        return s / idx.length;
      },
      boot,
    );
  };
  const grid = <T>(run: EvalRun, f: (id: string, pi: number, seed: number) => T): T[][] =>
    prompts.map((_, pi) => Array.from({ length: seeds }, (_, s) => f(`${run.key}/${pad(pi)}_${s}`, pi, s)));

  // Real renders of the captions (one per prompt and seed) for the Frechet distances.
  let realFeatures: Float32Array | null = null;
  let realFid: Float32Array | null = null;
  const extractors = [o.features, o.fidFeatures].filter((x): x is FeatureExtractor => !!x);
  if (extractors.length && !shapes) {
    throw new AtedmError("Frechet distance needs real images: only shapes prompt sets have them (captions in the shapes grammar)");
  }
  const real = extractors.length
    ? prompts.flatMap((p, pi) =>
        Array.from({ length: seeds }, (_, s) => ({
          rgb: renderScene(parseCaption(p), { size: H, rng: new Mulberry32(stableHash32(`real/${pi}`, s)) }),
          width: W,
          height: H,
        })),
      )
    : [];
  if (o.features) realFeatures = await o.features.features(real);
  if (o.fidFeatures) realFid = await o.fidFeatures.features(real);

  const fdMetric = (gen: Float32Array, ref: Float32Array, dim: number): MetricValue => {
    const rows = (f: Float32Array, idx: Int32Array) => {
      const out = new Float64Array(idx.length * seeds * dim);
      let k = 0;
      for (const pi of idx) {
        for (let s = 0; s < seeds; s++) out.set(f.subarray((pi * seeds + s) * dim, (pi * seeds + s + 1) * dim), k++ * dim);
      }
      return out;
    };
    return bootstrap(
      prompts.length,
      (idx) => {
        const n = idx.length * seeds;
        return frechetFromStats(featureStats(rows(gen, idx), n, dim), featureStats(rows(ref, idx), n, dim));
      },
      fdBoot,
    );
  };

  const referenceRecords = idsOf(reference).map((id) => records.get(id)!);
  const methods: MethodResult[] = [];
  let generationSeconds = 0;
  let otherSeconds = 0;
  for (const run of runs) {
    const ids = idsOf(run);
    const recs = ids.map((id) => records.get(id)!);
    for (const r of recs) {
      generationSeconds += r.generation_seconds;
      otherSeconds += r.other_seconds;
    }
    const quality: Record<string, MetricValue> = {};
    if (shapes) {
      quality.alignment_all_correct = perPromptMetric(grid(run, (id) => (records.get(id)!.alignment!.all_correct ? 1 : 0)));
      const kinds = new Set(recs.flatMap((r) => Object.keys(r.alignment!.attributes).map((a) => a.replace(/^object\d+\./, ""))));
      for (const kind of [...kinds].sort()) {
        // An attribute's accuracy per image: the fraction of its instances (one per object) judged right.
        quality[`alignment.${kind}`] = perPromptMetric(
          grid(run, (id) => {
            const xs = Object.entries(records.get(id)!.alignment!.attributes).filter(([a]) => a.replace(/^object\d+\./, "") === kind);
            return xs.length ? xs.filter(([, ok]) => ok).length / xs.length : 1;
          }),
        );
      }
    }
    if (run !== reference && shapes) {
      // Paired with the reference image of the same prompt and seed: the interval of the change is much tighter
      // than the two methods' own intervals side by side.
      const correct = (id: string) => (records.get(id)!.alignment!.all_correct ? 1 : 0);
      quality.alignment_all_correct_delta = perPromptMetric(grid(run, (id, pi, s) => correct(id) - correct(`${reference.key}/${pad(pi)}_${s}`)));
    }
    if (run !== reference) {
      const ref = (pi: number, s: number) => image(`${reference.key}/${pad(pi)}_${s}`);
      quality.psnr = perPromptMetric(grid(run, (id, pi, s) => Math.min(PSNR_CAP_DB, psnr(image(id), ref(pi, s), 255))));
      quality.ssim = perPromptMetric(grid(run, (id, pi, s) => ssim(image(id), ref(pi, s), W, H, 3, { dataRange: 255 })));
    }
    const own = ids.map((id) => ({ rgb: image(id), width: W, height: H }));
    if (o.features && realFeatures) quality.fd = fdMetric(await o.features.features(own), realFeatures, o.features.dim);
    if (o.fidFeatures && realFid) quality.fid = fdMetric(await o.fidFeatures.features(own), realFid, o.fidFeatures.dim);
    if (o.clip) {
      const scores = await o.clip.score(
        own,
        ids.map((_, i) => prompts[Math.floor(i / seeds)]!),
      );
      quality.clip_score = perPromptMetric(grid(run, (_id, pi, s) => scores[pi * seeds + s]!));
    }
    const seconds = median(recs.flatMap((r) => r.step_seconds));
    const imageRecords: ImageRecord[] = ids.map((id, i) => ({ prompt: Math.floor(i / seeds), seed: i % seeds, file: `images/${id}.png` }));
    methods.push({
      name: run.name,
      spec: run.spec,
      method: run.family,
      ratio: run.ratio,
      budget: run.budget,
      options: run.options,
      flops_saving: run.flops.saving,
      tflops_per_step: run.flops.perStep / 1e12,
      seconds_per_step: seconds,
      speedup: speedupWithinWorkers(referenceRecords, recs),
      quality,
      images: imageRecords,
      overlays: [],
    });
  }
  if (o.overlays !== false) await writeOverlays(o, runs, methods, steps, guidance, scheduler);
  const finalSeconds = (performance.now() - t0) / 1000;
  const result: EvalResult = {
    atedm_version: o.version,
    created: state.created,
    command: o.command,
    machine: o.machine,
    model: pipe.dir,
    prompts_file: o.promptsFile,
    prompts,
    seeds,
    steps,
    guidance,
    scheduler,
    threads: o.threads,
    budgets: o.budgets,
    unreachable: o.unreachable,
    bootstrap: { samples: boot.samples, fd_samples: fdBoot.samples, seed: boot.seed, unit: "prompt" },
    features: o.features ? { name: o.features.name, dim: o.features.dim, reference_images: real.length } : null,
    methods,
    timing: {
      generation_seconds: generationSeconds,
      other_seconds: otherSeconds,
      overhead: otherSeconds / Math.max(1e-9, generationSeconds + otherSeconds),
    },
  };
  writeJsonAtomic(join(o.outDir, "eval.json"), result, 1);
  return { result, generated, resumed: total - generated, finalSeconds };
}

/**
 * The speed-up of a run over the reference, compared only within a worker (machines differ): for every worker
 * that generated images of both, median reference step time / median run step time; then the median of those
 * ratios over the workers. A local eval is one worker, so this is the ratio of the two medians. 0 when no worker
 * ran both.
 */
export function speedupWithinWorkers(reference: readonly ImageFileRecord[], run: readonly ImageFileRecord[]): number {
  const steps = (recs: readonly ImageFileRecord[]) => {
    const by = new Map<string, number[]>();
    for (const r of recs) {
      const w = r.worker ?? LOCAL_WORKER;
      let xs = by.get(w);
      if (!xs) {
        xs = [];
        by.set(w, xs);
      }
      xs.push(...r.step_seconds);
    }
    return by;
  };
  const ref = steps(reference);
  const ratios: number[] = [];
  for (const [w, xs] of steps(run)) {
    const r = ref.get(w);
    if (!r?.length || !xs.length) continue;
    const s = median(xs);
    if (s > 0) ratios.push(median(r) / s);
  }
  return ratios.length ? median(ratios) : 0;
}

/** Kept-token overlays (first prompt, seed 0, middle step) for every AT-EDM run: pruned tokens dimmed red. */
async function writeOverlays(o: EvalOptions, runs: EvalRun[], methods: MethodResult[], steps: number, guidance: number, scheduler: SchedulerName) {
  const step = Math.floor(steps / 2);
  const blocks = o.pipe.unet.blocks;
  for (const [i, run] of runs.entries()) {
    if (run.family !== "atedm" || !run.method) continue;
    const manifest = join(o.outDir, "overlays", run.key, "overlays.json");
    const cached = readJson<MethodResult["overlays"]>(manifest);
    if (cached) {
      methods[i]!.overlays = cached;
      continue;
    }
    makeDirectory(join(o.outDir, "overlays", run.key));
    o.pipe.unet.pruning = run.method;
    let extras: Record<string, Tensor> = {};
    const r = await o.pipe.generate({
      prompt: o.prompts[0]!,
      seed: 0,
      steps,
      guidance,
      scheduler,
      withMasks: true,
      onStep: (s) => {
        if (s.step === step) extras = s.unet.extras;
      },
    });
    const [, H, W] = r.imageDims as [number, number, number];
    const [, , h, w] = r.latentDims as [number, number, number, number];
    const base = toRGB8(r.image, H, W);
    const written: MethodResult["overlays"] = [];
    for (const b of blocks) {
      const m = blockMask(extras, b, base, H, W, { height: h, width: w });
      if (!m) continue;
      const file = `overlays/${run.key}/${b.path}.png`;
      writePng(join(o.outDir, file), m.mask, H, W);
      written.push({ block: b.path, step, file });
    }
    writeJsonAtomic(manifest, written, 1);
    methods[i]!.overlays = written;
  }
}
