/**
 * `atedm eval --queue` and `atedm worker`: what travels through Redis, and how both ends reach it.
 *
 * One job is one run (method, ratio and options), one seed and a chunk of consecutive prompts. Its payload holds
 * everything that determines its images (model path, method spec and the eval's method flags, the exact ratio,
 * the run key they must rebuild to, prompts and their indexes, seed, steps, guidance, scheduler, size), and its id
 * is a hash of that payload, so the same eval enqueued twice is the same set of jobs and a job's images are
 * always the same files (`images/<run key>/<prompt index>_<seed>`). Workers hand the PNG bytes and records back
 * as the job's result; the coordinator stores them (atomically, image then record), so a job run twice (a
 * killed worker's job retried elsewhere) writes the same bytes to the same paths once more: no duplicate.
 */
import { createHash } from "node:crypto";
import { AtedmError } from "../errors.js";
import type { ImageFileRecord, ImageSettings } from "./run.js";

/** The BullMQ queue every eval and worker uses. */
export const QUEUE_NAME = "atedm-eval";
/** Bumped when the payload changes meaning: a worker refuses a job of another version. */
export const JOB_VERSION = 1;
/** Attempts per job before it counts as failed (and is reported by name). */
export const JOB_ATTEMPTS = 3;
/** How long the first connection to Redis may take before `--queue` is reported unreachable. */
export const CONNECT_TIMEOUT_MS = 3000;

/** A job: one run, one seed, a chunk of prompts, and the eval's image settings (steps, guidance, scheduler, size). */
export interface EvalJobData extends ImageSettings {
  v: number;
  /** The model folder as the coordinator sees it (workers map it with --path-map). */
  model: string;
  run: {
    /** Unique run label, e.g. "atedm:0.5" or "atedm@0.1" (reports only). */
    name: string;
    /** The method spec as listed in --methods, and the eval's method-option flags that apply to it. */
    spec: string;
    flags: Record<string, string | boolean>;
    ratio: number;
    /** The run key the worker's rebuilt method must have (family, ratio and every option, hashed). */
    key: string;
  };
  seed: number;
  /** Prompts with their index in the prompt file. */
  prompts: Array<{ index: number; text: string }>;
}

/** One image of a finished job: its id (path stem under images/), PNG as base64, and its record. */
export interface EvalJobImage {
  id: string;
  png: string;
  record: ImageFileRecord;
}

export interface EvalJobResult {
  worker: string;
  images: EvalJobImage[];
}

/** A readable name for a job, used in progress and failure lines. */
export function jobName(d: EvalJobData): string {
  const first = d.prompts[0]!.index;
  const last = d.prompts[d.prompts.length - 1]!.index;
  return `${d.run.name} seed ${d.seed} prompt${first === last ? ` ${first}` : `s ${first}-${last}`}`;
}

/** The job id: a hash of the whole payload (BullMQ ids must not be integers or contain ':'). */
export function jobId(d: EvalJobData): string {
  return `eval-${createHash("sha256").update(JSON.stringify(d)).digest("hex").slice(0, 32)}`;
}

export interface RedisAddress {
  url: string;
  host: string;
  port: number;
  db: number;
}

/** `redis://HOST:PORT[/DB]`, checked; errors name the flag and the URL. */
export function parseRedisUrl(text: string, flag = "queue"): RedisAddress {
  const bad = (why: string) => new AtedmError(`--${flag}: '${text}' ${why} (expected redis://HOST:PORT[/DB])`);
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw bad("is not a URL");
  }
  if (u.protocol !== "redis:") throw bad("is not a redis:// URL");
  if (!u.hostname) throw bad("has no host");
  const port = u.port === "" ? 6379 : Number(u.port);
  const path = u.pathname.replace(/^\//, "");
  const db = path === "" ? 0 : Number(path);
  if (!Number.isInteger(db) || db < 0 || db > 15 || !/^\d*$/.test(path)) throw bad("has a database that is not 0..15");
  if (u.search || u.hash || u.username || u.password) throw bad("has parts atedm does not use");
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  return { url: text, host, port, db };
}

type RedisClient = import("ioredis").Redis;

/**
 * A connection for BullMQ: reconnects forever (every 0.2-2 s), so a restarted Redis is picked up again; commands
 * wait while it is down. Errors while reconnecting go to `onError` (once per distinct message).
 */
export async function redisConnection(a: RedisAddress, onError: (message: string) => void): Promise<RedisClient> {
  const { Redis } = await import("ioredis");
  const client = new Redis({
    host: a.host,
    port: a.port,
    db: a.db,
    maxRetriesPerRequest: null,
    connectTimeout: CONNECT_TIMEOUT_MS,
    retryStrategy: (times: number) => Math.min(200 * times, 2000),
    lazyConnect: false,
  });
  let last = "";
  client.on("error", (e: Error) => {
    if (e.message !== last) onError(e.message);
    last = e.message;
  });
  client.on("ready", () => {
    last = "";
  });
  return client;
}

/** Fail fast: one connection attempt with a short timeout; an AtedmError naming the URL when Redis is not there. */
export async function checkRedis(a: RedisAddress, flag = "queue"): Promise<void> {
  const { Redis } = await import("ioredis");
  const probe = new Redis({
    host: a.host,
    port: a.port,
    db: a.db,
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  let cause = "";
  probe.on("error", (e: Error) => {
    cause ||= e.message;
  });
  try {
    await probe.connect();
    const pong = await probe.ping();
    if (pong !== "PONG") throw new Error(`answered '${String(pong).slice(0, 40)}' to PING`);
  } catch (e) {
    const why = (cause || (e as Error).message || String(e)).split("\n")[0];
    throw new AtedmError(`--${flag} ${a.url}: cannot reach Redis (${why})`);
  } finally {
    probe.disconnect();
  }
}

/** `FROM=TO` pairs: a job's model path that starts with FROM is read at TO instead (the first match wins). */
export function parsePathMap(items: readonly string[]): Array<[string, string]> {
  return items.map((item) => {
    const eq = item.indexOf("=");
    if (eq <= 0 || eq === item.length - 1) throw new AtedmError(`--path-map: '${item}' is not FROM=TO`);
    return [item.slice(0, eq), item.slice(eq + 1)];
  });
}

export function mapPath(path: string, map: ReadonlyArray<[string, string]>): string {
  for (const [from, to] of map) {
    if (path === from || path.startsWith(from.endsWith("/") ? from : `${from}/`)) return to + path.slice(from.length);
  }
  return path;
}
