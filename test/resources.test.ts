/**
 * Hostile and careless input, caught before the work starts: a size whose generation cannot fit in memory (the
 * estimate of src/metrics/memory.ts, checked against measurements), checkpoints that disagree with their configs
 * (names, shapes, dtypes, checked at load), a bad atedm.json, ONNX Runtime's own log lines kept off stderr, and
 * external weights reached through a symlink.
 *
 * How close the estimate comes to measured peak memory is a benchmark (`npm run bench:memory`, bench/memory.ts), not a
 * test. ONNX Runtime's log behaviour is checked in child processes (this file, with ATEDM_RESOURCES_CHILD set).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { AtedmError } from "../src/errors.js";
import { GraphBuilder } from "../src/graph/builder.js";
import { readSafetensors, WeightStore, writeSafetensors, type HostTensor } from "../src/io/safetensors.js";
import { checkGenerationMemory, estimateGenerationMemory, formatBytes, type MemoryBudget } from "../src/metrics/memory.js";
import { clipTextStateDictShapes, resolveCLIPTextConfig } from "../src/models/clip_text.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { unetStateDictShapes } from "../src/models/unet_weights.js";
import { resolveVAEConfig, vaeDecoderStateDictShapes } from "../src/models/vae.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { float32Bytes, Weights } from "../src/models/weights.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm } from "../src/pruning/index.js";
import { f32, ortMessage, Runtime } from "../src/runtime/session.js";

const SELF = fileURLToPath(import.meta.url);
const ROOT = join(SELF, "..", "..");
const MiB = 2 ** 20;
const GiB = 2 ** 30;

// ---------------------------------------------------------------------------------------------------------------
// Child processes: one ONNX Runtime error each (its log goes to the process's own stderr).

type Child = { mode: "ort-error"; verbose: boolean };

async function child(job: Child): Promise<void> {
  const g = new GraphBuilder("broken_add");
  g.output(g.op("Add", [g.input("a", "float32", ["n"]), g.input("b", "float32", ["m"])]), "y");
  const rt = new Runtime({ threads: 1, verbose: job.verbose });
  const s = await rt.session(g);
  try {
    await s.run({ a: f32(new Float32Array(3), [3]), b: f32(new Float32Array(4), [4]) });
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: (e as Error).message, atedm: e instanceof AtedmError }));
  }
}

const CHILD = process.env.ATEDM_RESOURCES_CHILD;
if (CHILD) {
  await child(JSON.parse(CHILD) as Child);
  process.exit(0);
}

function runChild(job: Child): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", SELF], {
    cwd: ROOT,
    env: { ...process.env, ATEDM_RESOURCES_CHILD: JSON.stringify(job), ORT_DISABLE_TELEMETRY: "1" },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `child ${JSON.stringify(job)} failed: ${r.stderr}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------------------------------------------
// A copy of a fixture with one thing changed, removed afterwards.

/** Copy `model` (without its golden tensors) to a temp folder, let `edit` change it, run `fn`, remove the folder. */
async function withCopy<T>(model: string, edit: (dir: string) => void, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "atedm-resources-"));
  try {
    cpSync(model, dir, { recursive: true, filter: (p) => !p.includes(`${model}/golden`) });
    edit(dir);
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rewrite a component's safetensors file with `change` applied to its tensors. */
function rewrite(file: string, change: (t: Map<string, HostTensor>) => void): void {
  const t = readSafetensors(file);
  change(t);
  writeSafetensors(file, Object.fromEntries(t));
}

const unetFile = (dir: string) => join(dir, "unet", "diffusion_pytorch_model.safetensors");

/** The AtedmError `loadPipeline(dir)` throws (asserting it throws one, of one line). */
async function loadError(dir: string): Promise<AtedmError> {
  try {
    const pipe = await loadPipeline(dir, { threads: 1 });
    await pipe.release();
  } catch (e) {
    assert.ok(e instanceof AtedmError, `expected an AtedmError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
    return e;
  }
  assert.fail(`${dir} loaded`);
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Memory

test("a size that cannot fit is refused in one line, fast, before anything big is allocated", async () => {
  const pipe = await loadPipeline(TINY_SD, { threads: 1 });
  try {
    for (const [size, method] of [
      [100000, "none"],
      [4096, "atedm"],
    ] as const) {
      if (method === "atedm") applyAtEdm(pipe, { ratio: 0.5, preset: "paper" }); // DSAP: two sessions
      const rss = process.memoryUsage.rss();
      const t = performance.now();
      await assert.rejects(pipe.generate({ prompt: "a red circle", steps: 20, height: size, width: size }), (e: Error) => {
        assert.ok(e instanceof AtedmError, String(e));
        assert.match(
          e.message,
          new RegExp(
            `^--height ${size} --width ${size}: this generation needs about [\\d.]+ [TPE]iB of memory \\(weights .*\\), ` +
              "this machine has [\\d.]+ [GT]iB \\([\\d.]+ [MGT]iB available, [\\d.]+ [MG]iB in use by this process\\)$",
          ),
        );
        if (method === "atedm") assert.match(e.message, /U-Net activations [\d.]+ TiB \(at down_blocks\.0\.attentions\.1, 2 sessions\)/);
        return true;
      });
      const seconds = (performance.now() - t) / 1000;
      const grown = process.memoryUsage.rss() - rss;
      assert.ok(seconds < 5, `refused after ${seconds.toFixed(2)} s`);
      assert.ok(grown < 64 * MiB, `resident memory grew by ${formatBytes(grown)}`);
    }
  } finally {
    await pipe.release();
  }
});

test("checkGenerationMemory: needed vs usable, with a budget given", () => {
  const cfg = resolveUNetConfig(JSON.parse(readFileSync(join(TINY_SD, "unet", "config.json"), "utf8")));
  const e = estimateGenerationMemory({ unet: cfg, vae: null, height: 64, width: 64, batch: 2 });
  const budget = (usable: number): MemoryBudget => ({ total: usable, free: usable, rss: 0, usable });
  assert.doesNotThrow(() => checkGenerationMemory(e, "x", budget(e.total)));
  assert.throws(
    () => checkGenerationMemory(e, "--height 64 --width 64", budget(e.total - 1)),
    /^AtedmError: --height 64 --width 64: this generation needs/,
  );
  // Sizes scale: 4x the pixels, about 4x the activations (no pruning: nothing quadratic in the tokens but cross-attention).
  const big = estimateGenerationMemory({ unet: cfg, vae: null, height: 128, width: 128, batch: 2 });
  assert.ok(big.unet > 3.5 * e.unet && big.unet < 4.5 * e.unet, `${e.unet} -> ${big.unet}`);
  // Pruned blocks compute B x heads x N x N maps: 4x the pixels, about 16x.
  const p1 = estimateGenerationMemory({ unet: cfg, vae: null, height: 512, width: 512, batch: 2, pruning: true });
  const p2 = estimateGenerationMemory({ unet: cfg, vae: null, height: 1024, width: 1024, batch: 2, pruning: true });
  assert.ok(p2.unet > 14 * p1.unet && p2.unet < 16.5 * p1.unet, `${p1.unet} -> ${p2.unet}`);
});

/** SD-XL's standard components (CLIP ViT-L and OpenCLIP bigG text encoders, the SD-XL VAE). */
function sdxlParts() {
  const unet = resolveUNetConfig(JSON.parse(readFileSync(join(ROOT, "test", "configs", "sdxl-unet.json"), "utf8")));
  const vae = resolveVAEConfig({ block_out_channels: [128, 256, 512, 512], layers_per_block: 2, scaling_factor: 0.13025 });
  const clip = (hidden: number, layers: number, act: string) =>
    resolveCLIPTextConfig({
      hidden_size: hidden,
      intermediate_size: 4 * hidden,
      num_attention_heads: hidden / 64,
      num_hidden_layers: layers,
      hidden_act: act,
    });
  const other =
    float32Bytes(clipTextStateDictShapes(clip(768, 12, "quick_gelu"))) +
    float32Bytes(clipTextStateDictShapes(clip(1280, 32, "gelu"), { withProjection: true, projectionDim: 1280 })) +
    float32Bytes(vaeDecoderStateDictShapes(vae));
  return { unet, vae, other, unetWeights: float32Bytes(unetStateDictShapes(unet)) };
}

test("what runs today is not refused: SD-XL at 1024x1024 and SD-1.5 at 512x512 with AT-EDM fit a 24 GiB machine", () => {
  // An idle 24 GiB machine: os.totalmem() 23.5 GiB, ~22.5 GiB available to a process that holds the text encoders.
  const budget: MemoryBudget = { total: 23.5 * GiB, free: 19.5 * GiB, rss: 3 * GiB, usable: 22.5 * GiB };
  const xl = sdxlParts();
  assert.ok(Math.abs(xl.unetWeights / 1e9 - 10.27) < 0.01, `SD-XL U-Net ${xl.unetWeights / 1e9} GB`);
  for (const pruning of [false, true]) {
    const e = estimateGenerationMemory({ ...xl, height: 1024, width: 1024, batch: 2, pruning, weights: { unet: xl.unetWeights, other: xl.other } });
    checkGenerationMemory(e, `SD-XL 1024 pruning ${pruning}`, budget);
  }
  // With DSAP (two U-Net sessions, each with its own copy of the weights) SD-XL does not fit: measured 19.8 GiB for
  // the two U-Net sessions alone.
  const dsap = estimateGenerationMemory({
    ...xl,
    height: 1024,
    width: 1024,
    batch: 2,
    pruning: true,
    unetSessions: 2,
    weights: { unet: xl.unetWeights, other: xl.other },
  });
  assert.throws(() => checkGenerationMemory(dsap, "--height 1024 --width 1024", budget), /needs about 3\d\.\d GiB .*2 sessions/);
  const sd15 = resolveUNetConfig(JSON.parse(readFileSync(join(ROOT, "test", "configs", "sd15-unet.json"), "utf8")));
  const vae15 = resolveVAEConfig({ block_out_channels: [128, 256, 512, 512], layers_per_block: 2 });
  const clipL = resolveCLIPTextConfig({ hidden_size: 768, intermediate_size: 3072, num_attention_heads: 12, num_hidden_layers: 12 });
  const other = float32Bytes(clipTextStateDictShapes(clipL)) + float32Bytes(vaeDecoderStateDictShapes(vae15));
  // README: --steps 25 --method atedm --ratio 0.5 (DSAP: two U-Net sessions, the early and the late pruned set).
  const e = estimateGenerationMemory({
    unet: sd15,
    vae: vae15,
    height: 512,
    width: 512,
    batch: 2,
    pruning: true,
    unetSessions: 2,
    weights: { unet: float32Bytes(unetStateDictShapes(sd15)), other },
  });
  checkGenerationMemory(e, "SD-1.5 512 AT-EDM", budget);
});

// ---------------------------------------------------------------------------------------------------------------
// 2. Checkpoints against their configs, at load

test("a transposed conv_in.weight is refused at load, naming the file, the tensor, found and expected", async () => {
  await withCopy(
    TINY_SD,
    (dir) =>
      rewrite(unetFile(dir), (t) => {
        const w = t.get("conv_in.weight")!;
        t.set("conv_in.weight", { dims: [w.dims[1]!, w.dims[0]!, 3, 3], data: w.data });
      }),
    async (dir) => {
      const t = performance.now();
      const e = await loadError(dir);
      assert.equal(e.message, `${unetFile(dir)}: conv_in.weight has shape [4, 16, 3, 3], expected [16, 4, 3, 3]`);
      assert.ok(performance.now() - t < 2000, "refused before any session is built");
    },
  );
});

test("a wrong cross_attention_dim is refused at load, not as an ONNX Runtime shape error", async () => {
  await withCopy(
    TINY_SD,
    (dir) => {
      const f = join(dir, "unet", "config.json");
      writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, "utf8")), cross_attention_dim: 64 }));
    },
    async (dir) => {
      const e = await loadError(dir);
      assert.equal(
        e.message,
        `${unetFile(dir)}: down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight has shape [16, 32], expected [16, 64] ` +
          `(${dir}/unet/config.json has cross_attention_dim 64, the checkpoint 32) (and 31 more mismatched tensors)`,
      );
    },
  );
});

test("a missing tensor is named; a non-float dtype is refused; extra tensors are ignored", async () => {
  const gone = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight";
  await withCopy(
    TINY_SD,
    (dir) => rewrite(unetFile(dir), (t) => t.delete(gone)),
    async (dir) => assert.equal((await loadError(dir)).message, `${unetFile(dir)}: missing tensor ${gone} (expected shape [24, 32])`),
  );
  await withCopy(
    TINY_SD,
    (dir) =>
      rewrite(unetFile(dir), (t) => {
        t.set("conv_in.bias", { dims: [16], data: new Int32Array(16) });
      }),
    async (dir) => assert.equal((await loadError(dir)).message, `${unetFile(dir)}: conv_in.bias has dtype I32, expected F32, F16, BF16 or F64`),
  );
  await withCopy(
    TINY_SD,
    (dir) =>
      rewrite(unetFile(dir), (t) => {
        t.set("not_in_diffusers.weight", { dims: [3], data: new Float32Array(3) });
      }),
    async (dir) => {
      const pipe = await loadPipeline(dir, { threads: 1 });
      await pipe.release();
    },
  );
});

test("the VAE decoder and the text encoders are checked against their configs too", async () => {
  const vaeFile = (dir: string) => join(dir, "vae", "diffusion_pytorch_model.safetensors");
  await withCopy(
    TINY_SD,
    (dir) =>
      rewrite(vaeFile(dir), (t) => {
        const w = t.get("decoder.conv_in.weight")!;
        t.set("decoder.conv_in.weight", { dims: [w.dims[1]!, w.dims[0]!, 3, 3], data: w.data });
      }),
    async (dir) =>
      assert.equal((await loadError(dir)).message, `${vaeFile(dir)}: decoder.conv_in.weight has shape [4, 16, 3, 3], expected [16, 4, 3, 3]`),
  );
  const teFile = (dir: string) => join(dir, "text_encoder_2", "model.safetensors");
  await withCopy(
    TINY_SDXL,
    (dir) => rewrite(teFile(dir), (t) => t.delete("text_projection.weight")),
    async (dir) => assert.match((await loadError(dir)).message, /text_encoder_2\/model\.safetensors: missing tensor text_projection\.weight/),
  );
  await withCopy(
    TINY_SD,
    (dir) => {
      const f = join(dir, "text_encoder", "config.json");
      writeFileSync(f, JSON.stringify({ ...JSON.parse(readFileSync(f, "utf8")), intermediate_size: 64 }));
    },
    async (dir) =>
      assert.equal(
        (await loadError(dir)).message,
        `${join(dir, "text_encoder", "model.safetensors")}: text_model.encoder.layers.0.mlp.fc1.weight has shape [128, 32], expected [64, 32] (and 8 more mismatched tensors)`,
      ),
  );
});

test("the fixtures and the shipped model match their configs", async () => {
  for (const model of [TINY_SD, TINY_SDXL, join(ROOT, "models", "shapes")]) {
    const pipe = await loadPipeline(model, { threads: 1 });
    await pipe.release();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// 3. atedm.json

/** A tiny-sd folder (components linked, not copied) with its own atedm.json. */
async function withDefaults<T>(defaults: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "atedm-defaults-"));
  try {
    for (const f of ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"]) symlinkSync(join(TINY_SD, f), join(dir, f));
    writeFileSync(join(dir, "atedm.json"), defaults);
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("atedm.json: each bad value is one line naming the file and the key", async () => {
  const cases: Array<[string, RegExp]> = [
    ["[]", /atedm\.json: expected a JSON object/],
    ['{"guidance": -1}', /atedm\.json: "guidance" must be a finite number >= 0, got -1$/],
    ['{"guidance": "4"}', /atedm\.json: "guidance" must be a finite number >= 0, got "4"$/],
    ['{"steps": 0}', /atedm\.json: "steps" must be an integer in 1\.\.1000, got 0$/],
    ['{"steps": 2.5}', /atedm\.json: "steps" must be an integer in 1\.\.1000, got 2\.5$/],
    ['{"steps": 100000}', /atedm\.json: "steps" must be an integer in 1\.\.1000, got 100000$/],
    ['{"coord_channels": 3}', /atedm\.json: "coord_channels" must be 0 or 2, got 3$/],
    ['{"gudance": 4}', /atedm\.json: unknown key "gudance" \(known: guidance, steps, coord_channels; keys starting with _ are comments\)$/],
  ];
  for (const [text, re] of cases) {
    await withDefaults(text, async (dir) => assert.match((await loadError(dir)).message, re, text));
  }
  // Valid: comments, a guidance of 0, a default step count that generate uses.
  await withDefaults('{"guidance": 0, "steps": 3, "_comment": "x"}', async (dir) => {
    const pipe = await loadPipeline(dir, { threads: 1 });
    try {
      const r = await pipe.generate({ prompt: "a red circle", height: 64, width: 64 });
      assert.equal(r.timesteps.length, 3);
    } finally {
      await pipe.release();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// 4. ONNX Runtime's own log output

test("ONNX Runtime's log lines stay off stderr unless verbose; its errors are one line without native locations", () => {
  const quiet = runChild({ mode: "ort-error", verbose: false });
  const error = JSON.parse(quiet.stdout) as { error: string; atedm: boolean };
  assert.ok(error.atedm);
  assert.equal(
    error.error,
    "ONNX session 'broken_add' failed: Non-zero status code returned while running Add node. Name:'Add_0' Status Message: " +
      "axis == 1 || axis == largest was false. Attempting to broadcast an axis by a dimension other than 1. 3 by 4",
  );
  assert.doesNotMatch(quiet.stderr, /onnxruntime/);
  const loud = runChild({ mode: "ort-error", verbose: true });
  assert.match(loud.stderr, /\[E:onnxruntime:/);
  assert.equal(new Runtime({ threads: 1 }).sessionOptions().logSeverityLevel, 4);
  assert.equal(new Runtime({ threads: 1, verbose: true }).sessionOptions().logSeverityLevel, 2);
});

test("external weights behind a symlink (Hugging Face's cache layout) build a session", async () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-symlink-"));
  const rt = new Runtime({ threads: 1 });
  try {
    const link = join(dir, "diffusion_pytorch_model.safetensors");
    symlinkSync(unetFile(TINY_SD), link);
    const cfg = resolveUNetConfig(JSON.parse(readFileSync(join(TINY_SD, "unet", "config.json"), "utf8")));
    const weights = new Weights(WeightStore.open(link), { externalThreshold: 0 });
    assert.ok(weights.external);
    const session = await rt.session(buildUNetGraph(cfg, weights));
    await session.release();
  } finally {
    rt.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ortMessage: one line, native source locations and signatures removed, the reason kept", () => {
  assert.equal(
    ortMessage(
      new Error("Load model failed:\n/onnxruntime_src/onnxruntime/core/graph/graph.cc:1234 void onnxruntime::Graph::Resolve() const bad graph\n"),
    ),
    "Load model failed: bad graph",
  );
  assert.equal(ortMessage(new Error("Invalid rank(3) for input: x")), "Invalid rank(3) for input: x");
  assert.equal(ortMessage(new Error("x".repeat(1000))).length, 403);
});
