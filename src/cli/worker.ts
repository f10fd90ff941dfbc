/**
 * `atedm worker`: runs the jobs of `atedm eval --queue` from Redis, on any machine that has the models (at the
 * same path or under --path-map). Generation runs in BullMQ sandboxed processors (a child process per slot, each
 * keeping its pipeline loaded between jobs), so the parent renews job locks on time however busy the CPU is.
 */
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../errors.js";
import { checkRedis, type EvalJobData, type EvalJobResult, parsePathMap, parseRedisUrl, QUEUE_NAME, redisConnection } from "../eval/queue.js";
import { type Flags, int, LIMITS, num, parse } from "./args.js";

const flags: Flags = {
  queue: { type: "string" },
  threads: { type: "string" },
  concurrency: { type: "string" },
  "path-map": { type: "string", multiple: true },
  "lock-seconds": { type: "string" },
  "idle-exit": { type: "string" },
};

const MAX_CONCURRENCY = 64;
const MAX_LOCK_SECONDS = 3600;
const CLOSE_WAIT_MS = 10_000;

export const WORKER_HELP = `Usage: atedm worker --queue redis://HOST:PORT[/DB] [--threads N] [--concurrency C] [--path-map FROM=TO]

Run the jobs of 'atedm eval --queue' until stopped (SIGINT / SIGTERM finish the running jobs first). Each job
is one method, one seed and a chunk of prompts; its images go back through Redis to the eval, which stores them
in its --out folder. Start as many workers as you like, on any machine that reaches Redis and has the model
folder at the eval's path (or under --path-map). A worker killed mid-job loses nothing: the job runs again
elsewhere once its lock expires (--lock-seconds), and its images are the same files.

  --queue URL           Redis, redis://HOST:PORT[/DB] (required); checked at start.
  --threads N           ONNX Runtime threads per job slot, 1..${LIMITS.threads} (default: all cores).
  --concurrency C       jobs at a time, each in its own child process, 1..${MAX_CONCURRENCY} (default 1); with C > 1 give each
                        --threads cores / C.
  --path-map FROM=TO    a job's model path under FROM is read under TO on this machine (repeatable).
  --lock-seconds S      how long a job's lock lasts without renewal (renewed at half of it), so how soon the job
                        of a killed worker runs elsewhere; 1..${MAX_LOCK_SECONDS} (default 30).
  --idle-exit S         exit after S seconds without a job (default: never).

A job whose model folder is missing here is put back for another worker, with one line naming the path.
`;

export async function workerCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "worker");
  if (v.help) {
    process.stdout.write(WORKER_HELP);
    return 0;
  }
  const str = (k: string) => v[k] as string | undefined;
  const url = str("queue");
  if (!url) throw new AtedmError("worker: --queue redis://HOST:PORT is required");
  const address = parseRedisUrl(url);
  const threads = int(str("threads"), "threads", 1, LIMITS.threads);
  const concurrency = int(str("concurrency"), "concurrency", 1, MAX_CONCURRENCY) ?? 1;
  const lockSeconds = num(str("lock-seconds"), "lock-seconds", 1, MAX_LOCK_SECONDS) ?? 30;
  const idleExit = num(str("idle-exit"), "idle-exit", 0.1, 1e6);
  const pathMap = parsePathMap(((v as Record<string, unknown>)["path-map"] as string[] | undefined) ?? []);
  await checkRedis(address);

  const id = `${hostname()}:${process.pid}`;
  const say = (line: string) => process.stderr.write(`atedm worker ${id}: ${line}\n`);
  // The processor next to this file: .js in dist/, .ts when run from the sources through tsx (whose loader the
  // child inherits with process.execArgv).
  const processor = [".js", ".ts"].map((ext) => fileURLToPath(new URL(`../eval/queue_processor${ext}`, import.meta.url))).find((p) => existsSync(p));
  if (!processor) throw new AtedmError("worker: the job processor (eval/queue_processor.js) is missing beside the atedm command; rebuild atedm");

  const { Worker } = await import("bullmq");
  const connection = await redisConnection(address, (m) => say(`redis ${url}: ${m} (reconnecting)`));
  const lockDuration = Math.round(lockSeconds * 1000);
  const worker = new Worker<EvalJobData, EvalJobResult>(QUEUE_NAME, processor, {
    connection,
    concurrency,
    useWorkerThreads: false,
    lockDuration,
    stalledInterval: lockDuration,
    maxStalledCount: 2,
    workerForkOptions: {
      env: {
        ...process.env,
        ATEDM_WORKER_ID: id,
        ATEDM_WORKER_THREADS: threads === undefined ? "" : String(threads),
        ATEDM_WORKER_PATH_MAP: JSON.stringify(pathMap),
        ATEDM_WORKER_LOCK_MS: String(lockDuration),
      },
    },
  });
  let lastError = "";
  worker.on("error", (e) => {
    const m = e.message.split("\n")[0] ?? "";
    if (m !== lastError) say(m);
    lastError = m;
  });
  worker.on("failed", (job, e) => {
    if (job) say(`'${job.name}' failed (attempt ${job.attemptsMade}): ${e.message.split("\n")[0]}`);
  });
  // --idle-exit counts from the last job event (a job still running then is finished by close()).
  let lastActive = Date.now();
  const touch = () => {
    lastActive = Date.now();
  };
  worker.on("active", (job) => {
    touch();
    say(`running '${job.name}'`);
  });
  worker.on("failed", touch);
  worker.on("completed", (job) => {
    touch();
    lastError = "";
    say(`done '${job.name}'`);
  });
  say(`waiting for jobs on ${url} (concurrency ${concurrency}${threads ? `, ${threads} threads each` : ""})`);

  await new Promise<void>((done) => {
    const stop = () => done();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    if (idleExit !== undefined) {
      const timer = setInterval(() => {
        if (Date.now() - lastActive > idleExit * 1000) {
          clearInterval(timer);
          done();
        }
      }, 200);
    }
  });
  say("stopping (finishing the running jobs)");
  // close() finishes the running jobs, then needs Redis to let go of its blocking fetch: with Redis gone it would
  // wait for ever, so then (the jobs' results could not be handed in anyway) it gets CLOSE_WAIT_MS.
  let timer: NodeJS.Timeout | undefined;
  const closing = worker.close().then(() => true);
  const closed =
    connection.status === "ready"
      ? await closing
      : await Promise.race([
          closing,
          new Promise<false>((done) => {
            timer = setTimeout(() => done(false), CLOSE_WAIT_MS);
          }),
        ]);
  clearTimeout(timer);
  connection.disconnect();
  if (!closed) {
    say(`Redis ${url} did not answer within ${CLOSE_WAIT_MS / 1000} s while stopping; exiting without it`);
    process.exit(1);
  }
  return 0;
}
