/**
 * How close the peak-memory estimate (src/metrics/memory.ts, which refuses generations that cannot fit) is to what a
 * generation really uses: each case runs in its own child process, so its peak resident set (`maxRSS`) is its own,
 * and the growth of that peak over the loaded pipeline is compared with the estimate of what `generate` adds
 * (everything but the weights of the components already loaded). A benchmark, not a test: memory numbers depend on
 * the allocator and the machine.
 *
 *   npm run bench:memory [-- --sizes 256,512,640 --atedm-sizes 256,384 --model DIR]
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { formatBytes, type GenerationMemoryEstimate } from "../src/metrics/memory.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm } from "../src/pruning/index.js";
import { arg, machine, ROOT, table } from "./common.js";

interface Job {
  model: string;
  size: number;
  method: "none" | "atedm";
}
interface Measured {
  rss: number;
  peak: number;
  estimate: GenerationMemoryEstimate;
}

const SELF = fileURLToPath(import.meta.url);
const JOB = process.env.ATEDM_MEMORY_JOB;

if (JOB) {
  // Child: load, estimate, generate one step, report.
  const job = JSON.parse(JOB) as Job;
  const pipe = await loadPipeline(job.model, { threads: 2 });
  if (job.method === "atedm") applyAtEdm(pipe, { ratio: 0.5, schedule: "none", preset: "paper" });
  const rss = process.memoryUsage.rss();
  const estimate = pipe.estimateMemory(job.size, job.size, { steps: 1 });
  await pipe.generate({ prompt: "a red circle", steps: 1, height: job.size, width: job.size });
  const peak = process.resourceUsage().maxRSS * 1024;
  process.stdout.write(JSON.stringify({ rss, peak, estimate } satisfies Measured));
  process.exit(0);
}

const model = arg("model", `${ROOT}/../shared/fixtures/tiny-sd`)!;
const sizes = (arg("sizes", "256,512,640") ?? "").split(",").map(Number);
const atedmSizes = (arg("atedm-sizes", "256,384") ?? "").split(",").map(Number);
const jobs: Job[] = [
  ...sizes.map((size): Job => ({ model, size, method: "none" })),
  ...atedmSizes.map((size): Job => ({ model, size, method: "atedm" })),
];
const rows: Array<Record<string, string | number>> = [];
for (const job of jobs) {
  const r = spawnSync(process.execPath, ["--import", "tsx", SELF], {
    cwd: ROOT,
    env: { ...process.env, ATEDM_MEMORY_JOB: JSON.stringify(job) },
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`${JSON.stringify(job)}: ${r.stderr}`);
  const m = JSON.parse(r.stdout) as Measured;
  const measured = m.peak - m.rss;
  const estimated = m.estimate.total - m.estimate.otherWeights;
  rows.push({
    size: `${job.size}x${job.size}`,
    method: job.method === "atedm" ? "AT-EDM 0.5" : "unpruned",
    "measured growth": formatBytes(measured),
    estimate: formatBytes(estimated),
    "estimate / measured": (estimated / measured).toFixed(2),
  });
  process.stderr.write(`${job.size} ${job.method}: done\n`);
}
console.log(`\nnpm run bench:memory -- ${process.argv.slice(2).join(" ")}`.trim());
console.log(`machine: ${machine(2)}; model ${model}; one step with CFG; peak RSS of a child process per row\n`);
console.log(table(rows));
