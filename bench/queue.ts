/**
 * Images per minute of `atedm eval --queue` with 1, 2, ... local workers (docs/queue.md):
 *
 *   node --import tsx bench/queue.ts [--workers 1,2,3] [--runs 3] [--prompts 24] [--steps 20] [--threads 1]
 *
 * Starts a private redis-server on loopback (as the tests do), then for each worker count and run: N fresh
 * `atedm worker --threads T` processes, one queued eval of the embedded shapes model (method none, one job per
 * prompt) into a fresh folder, and the rate over the generation window: (images - 1) / (time of the last record
 * - time of the first), so start-up and scoring are left out. Prints the machine, the command and the medians.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { median } from "../src/metrics/timing.js";
import { startRedis } from "../test/helpers/redis.js";
import { ROOT } from "./common.js";

const { values } = parseArgs({
  options: {
    workers: { type: "string", default: "1,2,3" },
    runs: { type: "string", default: "3" },
    prompts: { type: "string", default: "24" },
    steps: { type: "string", default: "20" },
    threads: { type: "string", default: "1" },
  },
});
const counts = values.workers.split(",").map(Number);
const runs = Number(values.runs);
const nPrompts = Number(values.prompts);
const CLI = join(ROOT, "test", "helpers", "cli.ts");
const VAL = join(ROOT, "eval", "val-one-object.txt");

const atedm = (args: string[], stdio: "ignore" | "inherit" = "ignore"): ChildProcess =>
  spawn(process.execPath, ["--import", "tsx", CLI, ...args], { stdio: ["ignore", "ignore", stdio], detached: true });
const exited = (c: ChildProcess) => new Promise<number | null>((done) => c.on("close", (code) => done(code)));
const killGroup = (c: ChildProcess, signal: NodeJS.Signals) => {
  try {
    process.kill(-c.pid!, signal);
  } catch {
    // gone
  }
};

const lines = readFileSync(VAL, "utf8")
  .split("\n")
  .filter((l) => l.trim() && !l.startsWith("#"))
  .slice(0, nPrompts);
const work = mkdtempSync(join(tmpdir(), "atedm-bench-queue-"));
const promptFile = join(work, "prompts.txt");
writeFileSync(promptFile, `${lines.join("\n")}\n`);

const redis = await startRedis();
const results = new Map<number, Array<{ perMinute: number; perImage: number; load: number }>>();
const idleLoad = loadavg()[0]!;
try {
  for (const n of counts) {
    for (let r = 0; r < runs; r++) {
      const workers = Array.from({ length: n }, () => atedm(["worker", "--queue", redis.url, "--threads", values.threads]));
      const out = join(work, `out-${n}-${r}`);
      const coord = atedm(
        [
          "eval",
          "--prompts",
          promptFile,
          "--out",
          out,
          "--steps",
          values.steps,
          "--methods",
          "none",
          "--queue",
          redis.url,
          "--chunk",
          "1",
          "--no-overlays",
          "--bootstrap",
          "10",
          "--features",
          "none",
        ],
        "inherit",
      );
      const timer = setTimeout(() => killGroup(coord, "SIGKILL"), 600_000);
      const code = await exited(coord);
      clearTimeout(timer);
      for (const w of workers) killGroup(w, "SIGTERM");
      await Promise.all(workers.map(exited));
      if (code !== 0) throw new Error(`eval with ${n} workers exited ${code}`);
      const dir = join(out, "images");
      const files = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(".json")).map((f) => join(dir, f));
      const times = files.map((f) => statSync(f).mtimeMs).sort((a, b) => a - b);
      // Seconds one image took on its worker: grows once the workers outnumber the cores.
      const perImage = median(files.map((f) => JSON.parse(readFileSync(f, "utf8")).generation_seconds as number));
      const perMinute = ((times.length - 1) / (times.at(-1)! - times[0]!)) * 60_000;
      let list = results.get(n);
      if (!list) {
        list = [];
        results.set(n, list);
      }
      list.push({ perMinute, perImage, load: loadavg()[0]! });
      process.stderr.write(`${n} worker(s), run ${r + 1}: ${perMinute.toFixed(1)} images/min, ${perImage.toFixed(2)} s per image\n`);
      rmSync(out, { recursive: true, force: true });
    }
  }
} finally {
  await redis.stop();
  rmSync(work, { recursive: true, force: true });
}

const c = cpus();
console.log(`machine: ${c[0]?.model.trim() ?? "unknown CPU"}, ${c.length} cores, node ${process.version}`);
console.log(
  `command: node --import tsx bench/queue.ts --workers ${values.workers} --runs ${runs} --prompts ${nPrompts} --steps ${values.steps} --threads ${values.threads}`,
);
console.log(`load average (1 min) before the first run: ${idleLoad.toFixed(2)}`);
console.log("| workers | images/min (median) | runs | speed-up over 1 worker | s per image on a worker (median) | load average after |");
console.log("|---|---|---|---|---|---|");
const base = median((results.get(counts[0]!) ?? []).map((x) => x.perMinute));
for (const n of counts) {
  const xs = results.get(n)!;
  const m = median(xs.map((x) => x.perMinute));
  const runsText = xs.map((x) => x.perMinute.toFixed(1)).join(", ");
  const perImage = median(xs.map((x) => x.perImage)).toFixed(2);
  const load = median(xs.map((x) => x.load)).toFixed(2);
  console.log(`| ${n} | ${m.toFixed(1)} | ${runsText} | ${(m / base).toFixed(2)}x | ${perImage} | ${load} |`);
}
