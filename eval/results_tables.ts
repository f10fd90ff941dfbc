/**
 * The Markdown tables of docs/results.md, from an eval folder's eval.json:
 *
 *   node --import tsx eval/results_tables.ts DIR [--by-budget]
 *
 * One row per method: ratio, FLOPs saving, speed-up, all-correct, its paired change against unpruned, per-attribute
 * accuracies of shape and position, Frechet distance, PSNR and SSIM, each "value [95 % interval]".
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { EvalResult, MethodResult, MetricValue } from "../src/eval/types.js";

const dir = process.argv[2];
if (!dir) {
  process.stderr.write("usage: node --import tsx eval/results_tables.ts DIR [--by-budget]\n");
  process.exit(2);
}
const byBudget = process.argv.includes("--by-budget");
const r = JSON.parse(readFileSync(join(dir, "eval.json"), "utf8")) as EvalResult;

const f = (x: number, d: number) => x.toFixed(d);
const cell = (q: MetricValue | undefined, d: number, scale = 1) =>
  q ? `${f(q.value * scale, d)}${q.ci95 ? ` [${f(q.ci95[0] * scale, d)}, ${f(q.ci95[1] * scale, d)}]` : ""}` : "-";
const label = (m: MethodResult) => (m.budget === null ? m.name : m.spec);

const head = [
  "method",
  "ratio",
  "FLOPs saving",
  "speed-up",
  "all correct %",
  "change vs unpruned (points)",
  "shape %",
  "position %",
  "FD",
  "PSNR dB",
  "SSIM",
];
const row = (m: MethodResult) => [
  label(m),
  f(m.ratio, 3),
  f(m.flops_saving, 3),
  `${f(m.speedup, 2)}x`,
  cell(m.quality.alignment_all_correct, 1, 100),
  cell(m.quality.alignment_all_correct_delta, 1, 100),
  cell(m.quality["alignment.shape"], 1, 100),
  cell(m.quality["alignment.position"], 1, 100),
  cell(m.quality.fd, 2),
  cell(m.quality.psnr, 1),
  cell(m.quality.ssim, 3),
];
const table = (rows: MethodResult[]) =>
  [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((m) => `| ${row(m).join(" | ")} |`)].join("\n");

const images = r.prompts.length * r.seeds;
process.stdout.write(
  `${images} images per method (${r.prompts.length} prompts x ${r.seeds} seeds), ${r.steps} ${r.scheduler} steps, guidance ${r.guidance}; ` +
    `${r.bootstrap.samples} bootstrap resamples (${r.bootstrap.fd_samples} for FD) over prompts, seed ${r.bootstrap.seed}; ` +
    `${r.machine.cpus} x ${r.machine.cpu}, ${r.threads} thread(s).\n\n`,
);
const none = r.methods.filter((m) => m.method === "none");
if (!byBudget || !r.budgets) process.stdout.write(`${table(r.methods)}\n`);
else {
  for (const b of r.budgets) {
    process.stdout.write(`\nFLOPs budget ${b}:\n\n${table([...none, ...r.methods.filter((m) => m.budget === b)])}\n`);
  }
  const fixed = r.methods.filter((m) => m.method !== "none" && m.budget === null);
  if (fixed.length) process.stdout.write(`\nFixed ratios:\n\n${table([...none, ...fixed])}\n`);
}
for (const u of r.unreachable) process.stdout.write(`\nUnreachable: ${u.spec} at ${u.budget} (at most ${f(u.max_saving, 3)}).\n`);
