/**
 * npm run bench:unet [-- --runs N --only tiny,sd15,sdxl --threads T --sdxl-runs N]
 *
 * Per-step U-Net latency (median) and achieved GFLOP/s (analytic FLOPs / time) for the fixture models, the
 * embedded shapes models (shapes, shapes-xl), random-weight SD-1.5 at 512x512 (with PyTorch's time in the same run when
 * ATEDM_TORCH_PYTHON and ATEDM_DIFFUSERS_SRC are set) and random-weight SD-XL at 1024x1024 (one step, and one
 * 32x32 attention block of 10 layers on its own). Batch 1, one U-Net call, float32.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { unetFlops } from "../src/metrics/flops.js";
import { buildAttentionBlockGraph, buildUNetGraph } from "../src/models/unet.js";
import { resolveUNetConfig, type UNetConfig } from "../src/models/unet_structure.js";
import { Weights } from "../src/models/weights.js";
import { f32, Runtime } from "../src/runtime/session.js";
import { arg, loadConfig, machine, median, ROOT, syntheticWeights, table, timeRuns, torchTime, unetFeeds } from "./common.js";

const runs = Number(arg("runs", "5"));
const sdxlRuns = Number(arg("sdxl-runs", "3"));
const threads = Number(arg("threads", String(availableParallelism())));
const only = new Set((arg("only", "tiny,sd15,sdxl") ?? "").split(","));
const rt = new Runtime({ threads });
const rows: Array<Record<string, string | number>> = [];
const notes: string[] = [];

async function benchUNet(label: string, cfg: UNetConfig, weights: Weights, h: number, w: number, n: number) {
  const t0 = performance.now();
  const session = await rt.session(buildUNetGraph(cfg, weights));
  const build = (performance.now() - t0) / 1000;
  const times = await timeRuns(session, unetFeeds(cfg, h, w), n);
  await session.release();
  const flops = unetFlops(cfg, { latent: [h, w] }).total;
  const med = median(times);
  rows.push({
    case: label,
    latent: `${h}x${w}`,
    runs: n,
    "median s": med,
    "GFLOP/s": flops / med / 1e9,
    TFLOPs: flops / 1e12,
    "session build s": build,
  });
  process.stderr.write(`${label}: median ${med.toFixed(3)} s over ${n} runs\n`);
  return med;
}

if (only.has("tiny")) {
  for (const [label, dir] of [
    ["tiny-sd (fixture)", join(ROOT, "..", "shared", "fixtures", "tiny-sd")],
    ["tiny-sdxl (fixture)", join(ROOT, "..", "shared", "fixtures", "tiny-sdxl")],
    ["shapes (embedded)", join(ROOT, "models", "shapes")],
    ["shapes-xl (embedded)", join(ROOT, "models", "shapes-xl")],
  ] as const) {
    if (!existsSync(join(dir, "unet", "config.json"))) {
      notes.push(`${label}: not found at ${dir}`);
      continue;
    }
    const cfg = resolveUNetConfig(componentConfig(dir, "unet"));
    await benchUNet(label, cfg, new Weights(componentWeights(dir, "unet")), cfg.sample_size, cfg.sample_size, Math.max(runs, 5));
  }
}

if (only.has("sd15")) {
  const cfg = loadConfig("sd15");
  const ours = await benchUNet("SD-1.5 512x512 (random weights)", cfg, syntheticWeights("sd15", cfg), 64, 64, runs);
  const torch = torchTime("sd15", 512, 512, runs, threads);
  if (typeof torch === "string") notes.push(`SD-1.5: ${torch}`);
  else {
    rows.push({
      case: `SD-1.5 512x512 PyTorch ${torch.torch_version}`,
      latent: "64x64",
      runs,
      "median s": torch.median_s,
      "GFLOP/s": unetFlops(cfg, { latent: [64, 64] }).total / torch.median_s / 1e9,
      TFLOPs: unetFlops(cfg, { latent: [64, 64] }).total / 1e12,
      "session build s": "",
    });
    notes.push(`SD-1.5 512x512: ours / PyTorch = ${(ours / torch.median_s).toFixed(3)} (same run, same shapes, ${threads} threads; target <= 1.2)`);
  }
}

if (only.has("sdxl")) {
  const cfg = loadConfig("sdxl");
  const weights = syntheticWeights("sdxl", cfg);
  // One 32x32 attention block of 10 layers on its own.
  const path = "down_blocks.2.attentions.0";
  const block = await rt.session(buildAttentionBlockGraph(cfg, weights, path));
  const x = f32(
    new Float32Array(1280 * 32 * 32).map((_, i) => Math.sin(i)),
    [1, 1280, 32, 32],
  );
  const ctx = f32(
    new Float32Array(77 * 2048).map((_, i) => Math.cos(i)),
    [1, 77, 2048],
  );
  const bt = await timeRuns(block, { hidden_states: x, encoder_hidden_states: ctx }, runs);
  await block.release();
  const bf = unetFlops(cfg, { latent: [128, 128] }).byBlock.find((b) => b.path === path)!.flops;
  rows.push({
    case: `SD-XL ${path} (32x32, 10 layers)`,
    latent: "128x128",
    runs,
    "median s": median(bt),
    "GFLOP/s": bf / median(bt) / 1e9,
    TFLOPs: bf / 1e12,
    "session build s": "",
  });
  await benchUNet("SD-XL 1024x1024 (random weights)", cfg, weights, 128, 128, sdxlRuns);
}

const command = `npm run bench:unet -- ${process.argv.slice(2).join(" ")}`.trim();
process.stdout.write(`\n${command}\nmachine: ${machine(threads)}\n\n${table(rows)}\n\n${notes.map((n) => `- ${n}`).join("\n")}\n`);
rt.dispose();
