/**
 * The sandboxed processor of `atedm worker`: BullMQ forks a child process that imports this file and hands it
 * jobs one at a time, so generation (CPU-bound, synchronous stretches) never stalls the parent's lock renewal.
 * The child keeps its pipeline between jobs (loaded once per model), rebuilds each job's pruning method from its
 * spec and checks that it hashes to the job's run key, then generates with `generateImage`, the function a local
 * eval uses, and returns the PNG bytes and records.
 *
 * Settings come from the parent through the environment: ATEDM_WORKER_ID, ATEDM_WORKER_THREADS,
 * ATEDM_WORKER_PATH_MAP (JSON [[from, to], ...]), ATEDM_WORKER_LOCK_MS. ATEDM_FAULT_FAIL_JOB (a regular expression on the job name)
 * makes matching jobs fail: a fault injection for the tests, nothing else.
 */
import { existsSync } from "node:fs";
import type { Job } from "bullmq";
import { DelayedError, UnrecoverableError } from "bullmq";
import { parseMethodSpecs } from "../cli/method_specs.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import { loadPipeline, type TextToImagePipeline } from "../pipeline/text_to_image.js";
import { runKey } from "./plan.js";
import { type EvalJobData, type EvalJobResult, JOB_VERSION, jobName, mapPath } from "./queue.js";
import { generateImage, imageId } from "./run.js";

/** A job this worker cannot run (its model is missing here) is free again for others after LEAVE_MS; this
 * worker's slot then rests up to REST_MS (less than the next lock renewal of the job it gave back), so that it
 * does not keep taking the jobs back from workers that can run them. */
const LEAVE_MS = 200;
const REST_MS = 2000;
const MAX_KEPT_METHODS = 8;

let loaded: { model: string; pipe: Promise<TextToImagePipeline> } | null = null;
const methods = new Map<string, PruningMethod | null>();

function pipeline(model: string): Promise<TextToImagePipeline> {
  if (loaded?.model !== model) {
    const old = loaded;
    const threads = Number(process.env.ATEDM_WORKER_THREADS) || undefined;
    loaded = {
      model,
      pipe: (async () => {
        if (old) await (await old.pipe).release();
        methods.clear();
        return loadPipeline(model, { threads });
      })(),
    };
    loaded.pipe.catch(() => {
      loaded = null;
    });
  }
  return loaded.pipe;
}

function method(d: EvalJobData): PruningMethod | null {
  const cached = methods.get(d.run.key);
  if (cached !== undefined) return cached;
  const [spec] = parseMethodSpecs(d.run.spec, d.run.flags);
  const built = spec!.make(d.run.ratio);
  const key = runKey(spec!.family, d.run.ratio, built.options);
  if (key !== d.run.key) {
    throw new UnrecoverableError(
      `${jobName(d)}: this worker builds '${d.run.spec}' as run ${key}, the eval as ${d.run.key} (another atedm version?)`,
    );
  }
  methods.set(key, built.method);
  return built.method;
}

export default async function processEvalJob(job: Job<EvalJobData>, token?: string): Promise<EvalJobResult> {
  const d = job.data;
  const worker = process.env.ATEDM_WORKER_ID ?? `pid-${process.pid}`;
  if (d.v !== JOB_VERSION) throw new UnrecoverableError(`${job.name}: job version ${d.v}, this worker reads ${JOB_VERSION}`);
  const fault = process.env.ATEDM_FAULT_FAIL_JOB;
  if (fault && new RegExp(fault).test(jobName(d))) throw new Error(`injected fault (ATEDM_FAULT_FAIL_JOB=${fault})`);
  const map = JSON.parse(process.env.ATEDM_WORKER_PATH_MAP ?? "[]") as Array<[string, string]>;
  const model = mapPath(d.model, map);
  if (!existsSync(model)) {
    // Not this machine's job: say which path is missing and put the job back (no attempt is spent) for another.
    process.stderr.write(`atedm worker ${worker}: model folder ${model} not found here; left '${jobName(d)}' for another worker\n`);
    await job.moveToDelayed(Date.now() + LEAVE_MS, token);
    const lockMs = Number(process.env.ATEDM_WORKER_LOCK_MS) || 30_000;
    await new Promise((r) => setTimeout(r, Math.min(REST_MS, lockMs / 3)));
    throw new DelayedError();
  }
  const pipe = await pipeline(model);
  const m = method(d);
  pipe.unet.keepSessionsOf = Math.min(MAX_KEPT_METHODS, Math.max(pipe.unet.keepSessionsOf, methods.size));
  const images: EvalJobResult["images"] = [];
  for (const p of d.prompts) {
    const g = await generateImage(
      pipe,
      m,
      {
        steps: d.steps,
        guidance: d.guidance,
        scheduler: d.scheduler,
        height: d.height,
        width: d.width,
        shapes: d.shapes,
        prompt: p.text,
        seed: d.seed,
      },
      worker,
    );
    images.push({ id: imageId(d.run.key, p.index, d.seed), png: Buffer.from(g.png).toString("base64"), record: g.record });
  }
  return { worker, images };
}
