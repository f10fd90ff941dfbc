/**
 * The coordinator of `atedm eval --queue`: a `RemoteGenerator` for `runEval` that puts the missing images on the
 * queue as jobs (one per run, seed and chunk of prompts) and waits for workers to run them, storing each finished
 * job's images as they come back. Scoring then runs as in a local eval, on the same files.
 *
 * Waiting is a poll of each pending job (every `pollMs`): a finished job is stored and removed from Redis; a job
 * that is gone (Redis restarted without persistence) is added again; a job that failed `JOB_ATTEMPTS` times is
 * reported by name with its error once every other job has finished. A job whose images are already cached is
 * never enqueued, and a finished job found in Redis from an earlier coordinator is collected, not rerun.
 */
import { Buffer } from "node:buffer";
import { resolve } from "node:path";
import { AtedmError } from "../errors.js";
import type { EvalRun } from "./plan.js";
import {
  checkRedis,
  type EvalJobData,
  type EvalJobResult,
  JOB_ATTEMPTS,
  JOB_VERSION,
  jobId,
  jobName,
  parseRedisUrl,
  QUEUE_NAME,
  redisConnection,
} from "./queue.js";
import type { ImageTask, RemoteGenerator } from "./run.js";

export interface QueueOptions {
  url: string;
  /** The model folder as jobs name it (made absolute). */
  model: string;
  /** Method-option flags of the eval command (apply to every listed method they belong to). */
  flags: Record<string, string | boolean>;
  /** Prompts per job (default 8). */
  chunk?: number;
  pollMs?: number;
  /** Status lines (connection lost, failed attempts). */
  log?: (line: string) => void;
}

interface Pending {
  data: EvalJobData;
  ids: string[];
}

/** Group the missing images into jobs: same run and seed, consecutive prompt indexes, at most `chunk` prompts. */
export function planJobs(missing: readonly ImageTask[], chunk: number): Array<{ run: EvalRun; seed: number; tasks: ImageTask[] }> {
  const groups = new Map<string, { run: EvalRun; seed: number; tasks: ImageTask[] }>();
  for (const t of missing) {
    const k = `${t.run.key}/${t.seed}`;
    let g = groups.get(k);
    if (!g) {
      g = { run: t.run, seed: t.seed, tasks: [] };
      groups.set(k, g);
    }
    g.tasks.push(t);
  }
  const jobs: Array<{ run: EvalRun; seed: number; tasks: ImageTask[] }> = [];
  for (const g of groups.values()) {
    const sorted = [...g.tasks].sort((a, b) => a.promptIndex - b.promptIndex);
    for (let i = 0; i < sorted.length; i += chunk) jobs.push({ run: g.run, seed: g.seed, tasks: sorted.slice(i, i + chunk) });
  }
  return jobs;
}

/** Checks the URL and that Redis answers (one line naming the URL when not), then returns the generator. */
export async function queueGenerator(o: QueueOptions): Promise<RemoteGenerator> {
  const address = parseRedisUrl(o.url);
  await checkRedis(address);
  const log = o.log ?? (() => {});
  const pollMs = o.pollMs ?? 250;
  const chunk = o.chunk ?? 8;
  return async (missing, settings, store) => {
    const { Job, Queue } = await import("bullmq");
    const connection = await redisConnection(address, (m) => log(`redis ${o.url}: ${m} (reconnecting)`));
    const queue = new Queue<EvalJobData, EvalJobResult>(QUEUE_NAME, { connection });
    queue.on("error", () => {}); // reported once per message by the connection's own handler
    const pending = new Map<string, Pending>();
    for (const j of planJobs(missing, chunk)) {
      const data: EvalJobData = {
        v: JOB_VERSION,
        model: resolve(o.model),
        run: { name: j.run.name, spec: j.run.spec, flags: o.flags, ratio: j.run.ratio, key: j.run.key },
        seed: j.seed,
        prompts: j.tasks.map((t) => ({ index: t.promptIndex, text: t.prompt })),
        ...settings, // steps, guidance, scheduler, height, width, shapes (an unset size is left out of the JSON)
      };
      pending.set(jobId(data), { data, ids: j.tasks.map((t) => t.id) });
    }
    const add = (id: string, p: Pending) =>
      queue.add(jobName(p.data), p.data, {
        jobId: id,
        attempts: JOB_ATTEMPTS,
        backoff: { type: "fixed", delay: 500 },
        removeOnComplete: false,
        removeOnFail: false,
      });
    const failures: string[] = [];
    try {
      for (const [id, p] of pending) {
        let old = await Job.fromId<EvalJobData, EvalJobResult>(queue, id);
        // The same job of an earlier eval: one that failed for good gets fresh attempts; anything else (waiting,
        // running, finished) is the job itself, to be waited for or collected.
        if (old && (await old.isFailed())) {
          await old.remove();
          old = undefined;
        }
        if (!old) await add(id, p);
      }
      while (pending.size) {
        for (const [id, p] of [...pending]) {
          let job: Awaited<ReturnType<typeof Job.fromId<EvalJobData, EvalJobResult>>>;
          try {
            job = await Job.fromId<EvalJobData, EvalJobResult>(queue, id);
            if (!job) {
              // Gone: Redis lost it (restarted without persistence). Enqueue it again.
              await add(id, p);
              continue;
            }
            if (!job.finishedOn) continue;
            const state = await job.getState();
            if (state === "completed" && job.returnvalue) {
              const r = job.returnvalue;
              const want = new Set(p.ids);
              for (const img of r.images) {
                if (!want.delete(img.id))
                  throw new AtedmError(`${job.name}: worker ${r.worker} returned image ${img.id}, which it was not asked for`);
                store(img.id, new Uint8Array(Buffer.from(img.png, "base64")), img.record);
              }
              if (want.size) throw new AtedmError(`${job.name}: worker ${r.worker} returned no image ${[...want][0]}`);
              pending.delete(id);
              await job.remove().catch(() => {});
            } else if (state === "failed") {
              // Only a job out of attempts (or unrecoverable) is in the failed set; retries go back to waiting.
              const attempts = `${job.attemptsMade} attempt${job.attemptsMade === 1 ? "" : "s"}`;
              failures.push(`${job.name} (${attempts}): ${(job.failedReason ?? "no reason given").split("\n")[0]}`);
              pending.delete(id);
            }
          } catch (e) {
            if (e instanceof AtedmError) throw e;
            log(`queue ${o.url}: ${(e as Error).message.split("\n")[0]} (retrying)`);
            break;
          }
        }
        if (pending.size) await new Promise((r) => setTimeout(r, pollMs));
      }
    } finally {
      await queue.close().catch(() => {});
      connection.disconnect();
    }
    if (failures.length) {
      throw new AtedmError(
        `${failures.length} job${failures.length > 1 ? "s" : ""} failed (the other images are cached; rerun to retry): ${failures.join("; ")}`,
      );
    }
  };
}
