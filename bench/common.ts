/**
 * Shared benchmark plumbing: machine description, medians, synthetic checkpoints on disk, U-Net feeds, tables,
 * and the PyTorch reference (training/bench_torch_unet.py) run in the same process tree for same-run ratios.
 */
import { median } from "../src/metrics/timing.js";
export { median };
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { WeightStore } from "../src/io/safetensors.js";
import type { PruningMethod, StepInfo } from "../src/models/pruning_hook.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { attentionBlocks, resolveUNetConfig, type UNetConfig } from "../src/models/unet_structure.js";

import { unetStateDictShapes, writeSyntheticSafetensors } from "../src/models/unet_weights.js";
import { Weights } from "../src/models/weights.js";
import { f32, type Runtime, type Session, type Tensor } from "../src/runtime/session.js";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

export function machine(threads: number): string {
  const c = cpus();
  return `${c[0]?.model ?? "unknown CPU"}, ${c.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, onnxruntime-node ${ort.env.versions.node}, ${threads} threads`;
}

export function loadConfig(name: "sd15" | "sd21" | "sdxl"): UNetConfig {
  const file = join(ROOT, "test", "configs", `${name}-unet.json`);
  return resolveUNetConfig(JSON.parse(readFileSync(file, "utf8")), file);
}

/** Random weights for a config, written once to a cache folder and read by ONNX Runtime as external data. */
export function syntheticWeights(name: string, cfg: UNetConfig): Weights {
  const dir = process.env.ATEDM_BENCH_CACHE ?? "/tmp/atedm-bench";
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}-unet.safetensors`);
  if (!existsSync(file)) {
    process.stderr.write(`writing random weights for ${name} to ${file} ...\n`);
    writeSyntheticSafetensors(file, unetStateDictShapes(cfg), 0);
  }
  return new Weights(WeightStore.open(file), { externalThreshold: 0 });
}

function randomTensor(dims: number[], seed: number): Tensor {
  let s = seed >>> 0;
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 31 - 1;
  }
  return f32(data, dims);
}

/** Batch-1 U-Net feeds for a latent of h x w. */
export function unetFeeds(cfg: UNetConfig, h: number, w: number, batch = 1): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {
    sample: randomTensor([batch, cfg.in_channels, h, w], 1),
    timestep: f32(new Float32Array(batch).fill(500), [batch]),
    encoder_hidden_states: randomTensor([batch, 77, cfg.cross_attention_dim], 2),
  };
  if (cfg.addition_embed_type === "text_time") {
    const pooled = (cfg.projection_class_embeddings_input_dim ?? 0) - 6 * (cfg.addition_time_embed_dim ?? 0);
    feeds.text_embeds = randomTensor([batch, pooled], 3);
    feeds.time_ids = f32(
      Float32Array.from({ length: 6 * batch }, (_, i) => [1024, 1024, 0, 0, 1024, 1024][i % 6]!),
      [batch, 6],
    );
  }
  return feeds;
}

/** Median seconds of `runs` session runs after `warmup` runs. */
export async function timeRuns(session: Session, feeds: Record<string, Tensor>, runs: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await session.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    times.push((performance.now() - t) / 1000);
  }
  return times;
}

export interface TorchResult {
  median_s: number;
  runs_s: number[];
  torch_version: string;
}

/**
 * PyTorch's time for the same U-Net call (diffusers UNet2DConditionModel, random weights, float32), via
 * training/bench_torch_unet.py. Needs ATEDM_TORCH_PYTHON (a python with torch) and ATEDM_DIFFUSERS_SRC
 * (diffusers' src folder); returns null with a note when they are not set.
 */
export function torchTime(config: string, height: number, width: number, runs: number, threads: number): TorchResult | string {
  const python = process.env.ATEDM_TORCH_PYTHON;
  const src = process.env.ATEDM_DIFFUSERS_SRC;
  if (!python || !src) return "PyTorch not measured (set ATEDM_TORCH_PYTHON and ATEDM_DIFFUSERS_SRC, see training/README.md)";
  const r = spawnSync(
    python,
    [
      join(ROOT, "training", "bench_torch_unet.py"),
      "--config",
      config,
      "--height",
      String(height),
      "--width",
      String(width),
      "--runs",
      String(runs),
      "--threads",
      String(threads),
      "--json",
    ],
    { env: { ...process.env, PYTHONPATH: src }, encoding: "utf8", maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) return `PyTorch run failed: ${(r.stderr || r.stdout).trim().split("\n").at(-1)}`;
  const line = r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .at(-1);
  return line ? (JSON.parse(line) as TorchResult) : "PyTorch run printed no JSON";
}

export function table(rows: Array<Record<string, string | number>>): string {
  const cols = Object.keys(rows[0] ?? {});
  const fmt = (v: string | number) =>
    typeof v !== "number" ? v : Number.isInteger(v) ? String(v) : Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
  const cells = rows.map((r) => cols.map((c) => String(fmt(r[c] ?? ""))));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => "| " + r.map((x, i) => x.padEnd(widths[i]!)).join(" | ") + " |";
  return [line(cols), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...cells.map(line)].join("\n");
}

export function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** A session for the U-Net under `method`: every block it prunes at `at` runs its runner, the rest are dense. */
export async function methodSession(rt: Runtime, cfg: UNetConfig, weights: Weights, method: PruningMethod | null, at: StepInfo): Promise<Session> {
  const blocks = attentionBlocks(cfg).filter((b) => method && method.ratio(b, at) > 0);
  const set = new Set(blocks.map((b) => b.path));
  return rt.session(
    buildUNetGraph(cfg, weights, {
      runners: (b) => (method && set.has(b.path) ? method.runner(b) : undefined),
      extraInputs: method ? blocks.flatMap((b) => method.inputs(b)) : [],
    }),
  );
}
