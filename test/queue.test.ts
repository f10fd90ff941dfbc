/**
 * `atedm eval --queue` with `atedm worker`s on a real Redis (started here, on loopback): a queued eval writes the
 * same eval.json and the same PNG bytes as a local one, through a worker killed mid-job (SIGKILL: its job runs
 * again elsewhere once its lock expires), a Redis restart that loses every key, and a worker that lacks the
 * model (it names the path and leaves the job); a job that fails three times is reported by name; an unreachable
 * Redis fails in seconds with one line. Every wait has a deadline; every process started here is killed in `after`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { planJobs } from "../src/eval/queue_coordinator.js";
import { jobId, mapPath, parseRedisUrl } from "../src/eval/queue.js";
import { planRuns } from "../src/eval/plan.js";
import { imageId, speedupWithinWorkers, type ImageFileRecord, type ImageTask } from "../src/eval/run.js";
import type { EvalResult } from "../src/eval/types.js";
import { parseMethodSpecs } from "../src/cli/method_specs.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { atedmInProcess } from "./helpers/cli.js";
import { freePort, startRedis, type TestRedis } from "./helpers/redis.js";

const CLI = fileURLToPath(new URL("./helpers/cli.ts", import.meta.url));
const SHAPES = fileURLToPath(new URL("../models/shapes", import.meta.url));
const PROMPTS = [
  "a large red circle at the top left on a white background",
  "a small blue square at the center on a black background",
  "a large green triangle at the bottom right on a white background",
  "a small yellow circle at the right on a black background",
];
const tmp = (name: string) => mkdtempSync(join(tmpdir(), `atedm-queue-${name}-`));
const promptFile = (lines: string[]) => {
  const file = join(tmp("prompts"), "prompts.txt");
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A deadline for Promise.race: its timer does not keep the test process alive once everything else is done. */
const deadline = (ms: number) => new Promise<"timeout">((r) => setTimeout(() => r("timeout"), ms).unref());

/** A process of the atedm CLI (from the sources), in its own process group so a kill takes its children too. */
interface Proc {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}
const procs: Proc[] = [];
function atedm(args: string[], env: Record<string, string> = {}): Proc {
  const e = { ...process.env, ...env };
  delete e.ATEDM_DEBUG;
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], { env: e, stdio: ["ignore", "ignore", "pipe"], detached: true });
  const err: string[] = [];
  child.stderr!.on("data", (b: Buffer) => err.push(b.toString()));
  const exited = new Promise<number | null>((done) => child.on("close", (code) => done(code)));
  const p: Proc = {
    child,
    stderr: () => err.join(""),
    exited,
    kill: (signal = "SIGKILL") => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // already gone
      }
    },
  };
  procs.push(p);
  return p;
}
/** Wait until `ok()` or throw after `ms` (naming `what`). */
async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}
async function exitWithin(p: Proc, ms: number): Promise<number | null> {
  const code = await Promise.race([p.exited, deadline(ms)]);
  if (code === "timeout") {
    p.kill();
    throw new Error(`process did not exit within ${ms} ms; stderr:\n${p.stderr().slice(-3000)}`);
  }
  return code;
}
const records = (out: string) =>
  existsSync(join(out, "images"))
    ? (readdirSync(join(out, "images"), { recursive: true }) as string[]).filter((f) => f.endsWith(".json")).sort()
    : [];
/** eval.json without what differs between two runs (clock readings, the command line). */
const strip = (r: EvalResult) => ({
  ...r,
  created: "",
  command: "",
  timing: null,
  methods: r.methods.map((m) => ({ ...m, seconds_per_step: 0, speedup: 0 })),
});

describe("queue: payload and bookkeeping", () => {
  test("Redis URLs, path maps, job grouping and content-addressed job ids", () => {
    assert.deepEqual(parseRedisUrl("redis://10.0.0.5:6380/2"), { url: "redis://10.0.0.5:6380/2", host: "10.0.0.5", port: 6380, db: 2 });
    assert.equal(parseRedisUrl("redis://h").port, 6379);
    assert.throws(() => parseRedisUrl("http://h:1"), /--queue: 'http:\/\/h:1' is not a redis:\/\/ URL/);
    assert.throws(() => parseRedisUrl("redis://h:1/x"), /database that is not 0\.\.15/);
    assert.equal(mapPath("/a/models/shapes", [["/a/models", "/b/m"]]), "/b/m/shapes");
    assert.equal(mapPath("/a/modelsX", [["/a/models", "/b/m"]]), "/a/modelsX");

    const cfg = resolveUNetConfig(JSON.parse(readFileSync(join(SHAPES, "unet", "config.json"), "utf8")), "shapes unet");
    const { runs } = planRuns(parseMethodSpecs("none,atedm:0.5", {}), null, { cfg, latent: [32, 32], steps: 4, textLength: 16 });
    const tasks: ImageTask[] = [];
    for (const run of runs)
      for (let seed = 0; seed < 2; seed++)
        for (const [i, p] of PROMPTS.entries()) tasks.push({ run, promptIndex: i, prompt: p, seed, id: imageId(run.key, i, seed) });
    const jobs = planJobs(tasks.reverse(), 3);
    // 2 runs x 2 seeds, 4 prompts in chunks of 3: 8 jobs, every image in exactly one, consecutive prompts.
    assert.equal(jobs.length, 8);
    assert.deepEqual(jobs.flatMap((j) => j.tasks.map((t) => t.id)).sort(), tasks.map((t) => t.id).sort());
    for (const j of jobs)
      assert.deepEqual(
        j.tasks.map((t) => t.promptIndex),
        j.tasks[0]!.promptIndex === 0 ? [0, 1, 2] : [3],
      );
    const data = (prompt: string) => ({
      v: 1,
      model: "/m",
      run: { name: "none", spec: "none", flags: {}, ratio: 0, key: runs[0]!.key },
      seed: 0,
      prompts: [{ index: 0, text: prompt }],
      steps: 4,
      guidance: 4,
      scheduler: "euler" as const,
      shapes: true,
    });
    assert.equal(jobId(data(PROMPTS[0]!)), jobId(data(PROMPTS[0]!)));
    assert.notEqual(jobId(data(PROMPTS[0]!)), jobId(data(PROMPTS[1]!)));
    assert.match(jobId(data(PROMPTS[0]!)), /^eval-[0-9a-f]{32}$/);
  });

  test("worker --help documents exactly the flags it parses; bad flags are one line", async () => {
    const r = await atedmInProcess(["worker", "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: atedm worker --queue/);
    const parsed = new Set(r.parsed[0]!.filter((f) => f !== "help"));
    const documented = new Set<string>();
    for (const line of r.stdout.split("\n")) {
      const head = /^ +(--\S.*?)(?: {2,}|$)/.exec(line)?.[1];
      for (const m of head?.matchAll(/--([a-z][\w-]*)/g) ?? []) documented.add(m[1]!);
    }
    assert.deepEqual([...documented].sort(), [...parsed].sort());
    const main = await atedmInProcess(["--help"]);
    assert.match(main.stdout, /^ {2}worker /m);
    for (const [args, pattern] of [
      [["worker"], /^atedm: worker: --queue redis:\/\/HOST:PORT is required$/],
      [["worker", "--queue", "redis://h:1", "--concurrency", "0"], /^atedm: --concurrency must be an integer in \[1, 64\], got '0'$/],
      [["worker", "--queue", "redis://h:1", "--path-map", "/a"], /^atedm: --path-map: '\/a' is not FROM=TO$/],
      [
        ["eval", "--prompts", "p.txt", "--out", "o", "--queue", "redis://h:1/99"],
        /^atedm: --queue: 'redis:\/\/h:1\/99' has a database that is not 0\.\.15/,
      ],
      [
        ["eval", "--prompts", "p.txt", "--out", "o", "--queue", "redis://h:1", "--chunk", "0"],
        /^atedm: --chunk must be an integer in \[1, 1000\], got '0'$/,
      ],
    ] as Array<[string[], RegExp]>) {
      const bad = await atedmInProcess(args);
      assert.equal(bad.code, 1, bad.stderr);
      assert.match(bad.stderr.trim(), pattern);
      assert.equal(bad.stderr.trim().split("\n").length, 1);
    }
  });

  test("speed-up is compared within a worker, then the median over workers", () => {
    const rec = (worker: string | undefined, s: number): ImageFileRecord => ({
      prompt: "p",
      seed: 0,
      step_seconds: [s, s],
      generation_seconds: 1,
      other_seconds: 0,
      alignment: null,
      ...(worker ? { worker } : {}),
    });
    // One slow machine (reference 4 s) and one fast (1 s), both 2x faster pruned; mixing them would give 4/0.5.
    const ref = [rec("slow", 4), rec("fast", 1)];
    assert.equal(speedupWithinWorkers(ref, [rec("slow", 2), rec("fast", 0.5)]), 2);
    // A worker that ran only one of the two is left out; none in common gives 0.
    assert.equal(speedupWithinWorkers(ref, [rec("fast", 0.5), rec("other", 0.1)]), 2);
    assert.equal(speedupWithinWorkers(ref, [rec("other", 0.1)]), 0);
    // Records without a worker (local evals, older versions) are one worker.
    assert.equal(speedupWithinWorkers([rec(undefined, 3)], [rec(undefined, 1)]), 3);
  });
});

describe("queue: eval on workers", () => {
  let redis: TestRedis | null = null;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const p of procs) p.kill();
    await Promise.all(procs.map((p) => Promise.race([p.exited, deadline(5000)])));
    await redis?.stop();
  });

  test("an unreachable Redis fails in seconds with one line naming it, for eval and worker", async () => {
    const port = await freePort(); // nothing listens there
    const url = `redis://127.0.0.1:${port}`;
    for (const args of [
      ["eval", "--prompts", promptFile(PROMPTS.slice(0, 1)), "--out", join(tmp("unreachable"), "out"), "--queue", url],
      ["worker", "--queue", url],
    ]) {
      const t0 = Date.now();
      const r = await atedmInProcess(args);
      assert.equal(r.code, 1, r.stderr);
      assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^atedm: --queue ${url}: cannot reach Redis \\(.*ECONNREFUSED`));
    }
  });

  test("a queued eval through a killed worker and a Redis restart equals a local eval", { timeout: 180_000 }, async () => {
    const file = promptFile(PROMPTS);
    const args = (out: string) => [
      "eval",
      "--prompts",
      file,
      "--out",
      out,
      "--steps",
      "6",
      "--threads",
      "1",
      "--methods",
      "none,atedm:0.5:recovery=cosine",
      "--bootstrap",
      "100",
    ];
    const local = join(tmp("local"), "out");
    const r0 = await atedmInProcess(args(local));
    assert.equal(r0.code, 0, r0.stderr);

    const url = redis!.url;
    const worker = (extra: string[] = [], env: Record<string, string> = {}) =>
      atedm(["worker", "--queue", url, "--threads", "1", "--lock-seconds", "2", ...extra], env);
    const a = worker();
    const b = worker();
    // A worker without the model: names the missing path and leaves its jobs to the others.
    const c = worker(["--path-map", `${SHAPES}=/nonexistent/shapes`]);
    const queued = join(tmp("queued"), "out");
    const queueArgs = [...args(queued), "--queue", url, "--chunk", "1", "--progress"];
    const coord = atedm(queueArgs);

    // Restart Redis (SIGKILL, no persistence: every key is lost) once the first image has landed.
    await until("a first image", () => records(queued).length > 0, 60_000);
    await redis!.restart();
    const restartedAt = Date.now();
    // Then kill b (and its processor child) in the middle of a job: as soon as it starts one after the restart.
    // That job stays in Redis, locked by a dead worker, until its 2 s lock expires and a's stalled-job check
    // puts it back.
    const started = (b.stderr().match(/running '/g) ?? []).length;
    await until("worker b starts a job after the restart", () => (b.stderr().match(/running '/g) ?? []).length > started, 60_000);
    b.kill("SIGKILL");
    const killedJob = [...b.stderr().matchAll(/running '([^']+)'/g)].at(-1)![1]!;
    assert.ok(records(queued).length < 8, "b was killed mid-run");

    assert.equal(await exitWithin(coord, 60_000), 0, coord.stderr());
    assert.ok(Date.now() - restartedAt < 30_000, "the killed job ran again within a few lock periods");
    assert.match(c.stderr(), /model folder \/nonexistent\/shapes not found here; left '[^']+' for another worker/);
    assert.doesNotMatch(c.stderr(), /done '/);

    // Complete, no duplicate, nothing half written; the same pixels and the same eval.json.
    const recs = records(queued);
    assert.equal(recs.length, 8);
    assert.deepEqual(recs, records(local));
    const files = readdirSync(join(queued, "images"), { recursive: true }) as string[];
    assert.equal(files.filter((f) => f.endsWith(".png")).length, 8);
    assert.equal(files.filter((f) => f.includes(".tmp-")).length, 0);
    for (const rec of recs) {
      const png = rec.replace(/\.json$/, ".png");
      assert.ok(readFileSync(join(queued, "images", png)).equals(readFileSync(join(local, "images", png))), `${png}: other bytes`);
      const worker = (JSON.parse(readFileSync(join(queued, "images", rec), "utf8")) as ImageFileRecord).worker!;
      assert.match(worker, new RegExp(`:(${a.child.pid}|${b.child.pid})$`), `${rec}: generated by ${worker}`);
    }
    // The job b was killed in was finished by a (b never reported it done).
    const quoted = killedJob.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.doesNotMatch(b.stderr(), new RegExp(`done '${quoted}'`));
    assert.match(a.stderr(), new RegExp(`done '${quoted}'`));
    const q = JSON.parse(readFileSync(join(queued, "eval.json"), "utf8")) as EvalResult;
    const l = JSON.parse(readFileSync(join(local, "eval.json"), "utf8")) as EvalResult;
    assert.deepEqual(strip(q), strip(l));
    assert.ok(q.methods[1]!.quality.psnr!.value > 10 && q.methods[1]!.speedup > 0, "scored, speed-up within a worker");

    // Run again: everything is cached, so nothing is enqueued and eval.json is the same, byte for byte.
    const before = readFileSync(join(queued, "eval.json"), "utf8");
    const again = atedm(queueArgs);
    assert.equal(await exitWithin(again, 60_000), 0, again.stderr());
    assert.equal(JSON.parse(readFileSync(join(queued, "run.json"), "utf8")).images_generated, 0);
    assert.equal(readFileSync(join(queued, "eval.json"), "utf8"), before);
    for (const p of [a, c]) p.kill("SIGTERM");
    await Promise.all([a, c].map((p) => exitWithin(p, 20_000)));
  });

  test("a job that fails three times is reported by name with its error; the others finish", { timeout: 120_000 }, async () => {
    const file = promptFile(PROMPTS.slice(0, 3));
    const out = join(tmp("failing"), "out");
    const w = atedm(["worker", "--queue", redis!.url, "--threads", "1"], { ATEDM_FAULT_FAIL_JOB: "^none seed 0 prompt 1$" });
    const args = [
      "eval",
      "--prompts",
      file,
      "--out",
      out,
      "--steps",
      "2",
      "--threads",
      "1",
      "--methods",
      "none",
      "--queue",
      redis!.url,
      "--chunk",
      "1",
    ];
    const coord = atedm(args);
    assert.equal(await exitWithin(coord, 60_000), 1, coord.stderr());
    const lines = coord.stderr().trim().split("\n");
    assert.equal(lines.length, 1, coord.stderr());
    assert.match(
      lines[0]!,
      /^atedm: 1 job failed \(the other images are cached; rerun to retry\): none seed 0 prompt 1 \(3 attempts\): injected fault/,
    );
    assert.equal(records(out).length, 2, "the other jobs finished and were stored");
    assert.equal(existsSync(join(out, "eval.json")), false);
    assert.equal((w.stderr().match(/'none seed 0 prompt 1' failed \(attempt \d\)/g) ?? []).length, 3);
    w.kill("SIGTERM");
    await exitWithin(w, 20_000);
  });
});
