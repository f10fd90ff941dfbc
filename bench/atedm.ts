/**
 * npm run bench:atedm [-- --only tiny,sd15,sdxl --runs N --sdxl-runs N --threads T]
 *
 * One U-Net step (batch 1), same run: unpruned vs AT-EDM at ratio 0.5 and 0.63 (schedule none, SPEC defaults = preset paper; 0.63 also with atedm's default preset)
 * vs ToMe at the FLOPs of AT-EDM 0.63. Prints latency medians, speed-up over unpruned, the analytic FLOPs saving,
 * the measured/ideal speed-up, and the pruning overhead (time of the ops under the `atedm` scope, from an
 * ONNX Runtime profile of one extra run) as a share of the pruned step.
 * Models: the fixtures and the embedded shapes models (shapes, shapes-xl; real weights), random-weight SD-1.5 at 512 (depth-1
 * blocks: pruning after layer 1's self-attention) and SD-XL at 1024.
 */
import { existsSync, readdirSync, readFileSync, rmSync, mkdtempSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { methodFlops, matchTomeRatio } from "../src/metrics/flops.js";
import { attentionBlocks, resolveUNetConfig, type UNetConfig } from "../src/models/unet_structure.js";
import { Weights } from "../src/models/weights.js";
import { AtEdm } from "../src/pruning/atedm.js";
import type { PruningMethod } from "../src/models/pruning_hook.js";
import { Tome } from "../src/pruning/tome_method.js";
import { Runtime, type Tensor } from "../src/runtime/session.js";
import { arg, loadConfig, machine, median, methodSession, ROOT, syntheticWeights, table, unetFeeds } from "./common.js";

const runs = Number(arg("runs", "5"));
const sdxlRuns = Number(arg("sdxl-runs", "3"));
const threads = Number(arg("threads", String(availableParallelism())));
const only = new Set((arg("only", "tiny,sd15,sdxl") ?? "").split(","));
const rows: Array<Record<string, string | number>> = [];
const STEP = { step: 0, steps: 1 };

function methodFeeds(cfg: UNetConfig, method: PruningMethod | null, h: number, w: number): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  if (!method) return feeds;
  for (const b of attentionBlocks(cfg)) {
    const r = method.ratio(b, STEP);
    if (r > 0) Object.assign(feeds, method.feeds(b, r, { height: h, width: w }, 1, STEP));
  }
  return feeds;
}

/**
 * Seconds spent in nodes under the `atedm` scope, and the whole run's seconds, in the last run recorded by an ONNX
 * Runtime profile. Profiling costs time per node (a pruned graph has more nodes), so it runs in a session of its own
 * after the timed runs, and the overhead share is taken within that profiled run.
 */
function overheadOfProfile(profileDir: string): { overhead: number; run: number } {
  const file = readdirSync(profileDir).find((f) => f.endsWith(".json"))!;
  const events = JSON.parse(readFileSync(join(profileDir, file), "utf8")) as Array<{ cat: string; name: string; dur: number; ts: number }>;
  const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
  const last = runs[runs.length - 1]!;
  const overhead = events.filter((e) => e.cat === "Node" && e.ts >= last.ts && e.name.includes("/atedm/")).reduce((a, e) => a + e.dur, 0) / 1e6;
  return { overhead, run: last.dur / 1e6 };
}

/** The `atedm` scope's share of one profiled pruned call (NaN for other methods). */
async function overheadShare(cfg: UNetConfig, weights: Weights, method: PruningMethod | null, feeds: Record<string, Tensor>): Promise<number> {
  if (!(method instanceof AtEdm)) return NaN;
  const rt = new Runtime({ threads });
  const profileDir = mkdtempSync(join(tmpdir(), "atedm-prof-"));
  const defaults = rt.sessionOptions.bind(rt);
  rt.sessionOptions = () => ({ ...defaults(), enableProfiling: true, profileFilePrefix: join(profileDir, "p") });
  try {
    const s = await methodSession(rt, cfg, weights, method, STEP);
    await s.run(feeds);
    await s.run(feeds);
    (s.inner as unknown as { endProfiling(): void }).endProfiling();
    await s.release();
    const { overhead, run } = overheadOfProfile(profileDir);
    return overhead / run;
  } finally {
    rt.dispose();
    rmSync(profileDir, { recursive: true, force: true });
  }
}

async function benchModel(label: string, cfg: UNetConfig, weights: Weights, h: number, w: number, n: number) {
  const latent: [number, number] = [h, w];
  const base = methodFlops(cfg, null, latent, STEP);
  const a63 = new AtEdm({ ratio: 0.63, schedule: "none", preset: "paper" });
  const target = methodFlops(cfg, a63, latent, STEP).total;
  const tomeOptions = { maxDownsample: 8, mergeAttn: true, mergeCrossattn: true, mergeMlp: true, useRand: false };
  const tomeRatio = matchTomeRatio(cfg, latent, target, tomeOptions);
  const methods: Array<[string, PruningMethod | null]> = [
    ["unpruned", null],
    ["AT-EDM 0.5", new AtEdm({ ratio: 0.5, schedule: "none", preset: "paper" })],
    ["AT-EDM 0.63", a63],
    ["AT-EDM 0.63 default", new AtEdm({ ratio: 0.63, schedule: "none", preset: "default" })],
    [`ToMe ${tomeRatio.toFixed(3)} (matched)`, new Tome({ ratio: tomeRatio, ...tomeOptions })],
  ];
  const feeds = unetFeeds(cfg, h, w);
  let unprunedMedian = 0;
  for (const [name, method] of methods) {
    const rt = new Runtime({ threads });
    const s = await methodSession(rt, cfg, weights, method, STEP);
    const all = { ...feeds, ...methodFeeds(cfg, method, h, w) };
    await s.run(all);
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await s.run(all);
      times.push((performance.now() - t) / 1000);
    }
    await s.release();
    rt.dispose();
    const share = await overheadShare(cfg, weights, method, all);
    const med = median(times);
    if (!method) unprunedMedian = med;
    const flops = methodFlops(cfg, method, latent, STEP);
    const ideal = base.total / flops.total;
    rows.push({
      model: label,
      method: name,
      runs: n,
      "median s": med,
      "speed-up": unprunedMedian / med,
      "FLOPs saving": 1 - flops.total / base.total,
      "measured/ideal": unprunedMedian / med / ideal,
      "overhead share": Number.isNaN(share) ? "-" : `${(100 * share).toFixed(1)} %`,
    });
    process.stderr.write(`${label} ${name}: ${med.toFixed(3)} s\n`);
  }
}

if (only.has("tiny")) {
  for (const [label, dir] of [
    ["tiny-sd", join(ROOT, "..", "shared", "fixtures", "tiny-sd")],
    ["tiny-sdxl", join(ROOT, "..", "shared", "fixtures", "tiny-sdxl")],
    ["shapes", join(ROOT, "models", "shapes")],
    ["shapes-xl", join(ROOT, "models", "shapes-xl")],
  ] as const) {
    if (!existsSync(join(dir, "unet", "config.json"))) continue;
    const cfg = resolveUNetConfig(componentConfig(dir, "unet"));
    await benchModel(label, cfg, new Weights(componentWeights(dir, "unet")), cfg.sample_size, cfg.sample_size, Math.max(runs, 10));
  }
}
if (only.has("sd15")) {
  const cfg = loadConfig("sd15");
  await benchModel("SD-1.5 512", cfg, syntheticWeights("sd15", cfg), 64, 64, runs);
}
if (only.has("sdxl")) {
  const cfg = loadConfig("sdxl");
  await benchModel("SD-XL 1024", cfg, syntheticWeights("sdxl", cfg), 128, 128, sdxlRuns);
}

const command = `npm run bench:atedm -- ${process.argv.slice(2).join(" ")}`.trim();
process.stdout.write(`\n${command}\nmachine: ${machine(threads)} (onnxruntime ${ort.env.versions.node})\n\n${table(rows)}\n`);
