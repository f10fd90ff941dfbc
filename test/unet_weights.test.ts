/**
 * The U-Net state dict from a config (names and shapes, against the real diffusers checkpoints of the
 * fixtures), and the synthetic weights that stand in for SD-1.5 / SD-XL checkpoints in FLOPs counts and
 * benchmarks.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { componentConfig } from "../src/io/diffusers.js";
import { WeightStore } from "../src/io/safetensors.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { Weights } from "../src/models/weights.js";
import { SyntheticWeightStore, unetStateDictShapes, writeSyntheticSafetensors } from "../src/models/unet_weights.js";
import { Runtime, f32 } from "../src/runtime/session.js";

for (const model of [TINY_SD, TINY_SDXL]) {
  const name = model.split("/").pop()!;
  test(`unetStateDictShapes gives exactly the keys and shapes of the ${name} checkpoint`, () => {
    const cfg = resolveUNetConfig(componentConfig(model, "unet"));
    const ours = unetStateDictShapes(cfg);
    const store = WeightStore.open(join(model, "unet", "diffusion_pytorch_model.safetensors"));
    try {
      const theirs = new Map(store.keys().map((k) => [k, store.info(k).shape]));
      const missing = [...theirs.keys()].filter((k) => !ours.has(k));
      const extra = [...ours.keys()].filter((k) => !theirs.has(k));
      assert.deepEqual(missing, [], `in the checkpoint but not generated: ${missing.join(", ")}`);
      assert.deepEqual(extra, [], `generated but not in the checkpoint: ${extra.join(", ")}`);
      for (const [k, shape] of theirs) assert.deepEqual(ours.get(k), shape, `shape of ${k}`);
    } finally {
      store.close();
    }
  });
}

test("SyntheticWeightStore: deterministic per (seed, name), norm scales near 1", () => {
  const shapes = new Map<string, number[]>([
    ["a.weight", [64, 33]],
    ["b.norm1.weight", [513]],
    ["b.norm1.bias", [513]],
  ]);
  const s = new SyntheticWeightStore(shapes, { seed: 7 });
  const only = new SyntheticWeightStore(new Map([["a.weight", [64, 33]]]), { seed: 7 });
  assert.deepEqual(s.readF32("a.weight"), s.readF32("a.weight"));
  assert.deepEqual(s.readF32("a.weight"), only.readF32("a.weight"), "values depend on the name, not on the other tensors");
  assert.notDeepEqual(s.readF32("a.weight"), new SyntheticWeightStore(shapes, { seed: 8 }).readF32("a.weight"));
  const mean = (x: Float32Array) => x.reduce((a, b) => a + b, 0) / x.length;
  const std = (x: Float32Array) => Math.sqrt(mean(x.map((v) => (v - mean(x)) ** 2)));
  const w = s.readF32("a.weight");
  assert.ok(Math.abs(mean(w)) < 0.003 && Math.abs(std(w) - 0.02) < 0.003, `a.weight mean ${mean(w)} std ${std(w)}`);
  assert.ok(Math.abs(mean(s.readF32("b.norm1.weight")) - 1) < 0.005, "norm scales start at 1");
  assert.ok(Math.abs(mean(s.readF32("b.norm1.bias"))) < 0.005, "norm biases start at 0");
  assert.equal(s.info("b.norm1.bias").byteLength, 513 * 4);
  assert.ok(s.has("a.weight") && !s.has("c"));
  assert.throws(() => s.info("c"), /missing tensor 'c'/);
});

test("writeSyntheticSafetensors writes the file SyntheticWeightStore describes (same offsets, same values)", () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-synth-"));
  try {
    const cfg = resolveUNetConfig(componentConfig(TINY_SDXL, "unet"));
    const shapes = unetStateDictShapes(cfg);
    // A tensor larger than one write chunk (1 Mi elements) and of odd size, to cross chunk boundaries.
    shapes.set("big.weight", [1025, 1025]);
    const path = join(dir, "unet.safetensors");
    writeSyntheticSafetensors(path, shapes, 3);
    const synth = new SyntheticWeightStore(shapes, { seed: 3, file: path });
    const real = WeightStore.open(path);
    try {
      assert.deepEqual(real.keys(), [...shapes.keys()]);
      let bytes = 0;
      for (const k of real.keys()) {
        const a = real.info(k);
        const b = synth.info(k);
        assert.deepEqual([a.file, a.offset, a.byteLength, a.shape], [b.file, b.offset, b.byteLength, b.shape], k);
        assert.deepEqual(real.readF32(k), synth.readF32(k), `values of ${k}`);
        bytes += a.byteLength;
      }
      assert.ok(statSync(path).size > bytes);
    } finally {
      real.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("Weights accepts a SyntheticWeightStore: external graph over the written file = inline graph", async () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-synth-"));
  const rt = new Runtime({ threads: 2 });
  try {
    const cfg = resolveUNetConfig(componentConfig(TINY_SD, "unet"));
    const shapes = unetStateDictShapes(cfg);
    const path = join(dir, "unet.safetensors");
    writeSyntheticSafetensors(path, shapes, 11);
    const external = new Weights(new SyntheticWeightStore(shapes, { seed: 11, file: path }), { externalThreshold: 0 });
    assert.equal(external.external, true);
    const gExt = buildUNetGraph(cfg, external);
    assert.ok(gExt.hasExternalData());
    for (const spec of gExt.initializers.values()) assert.ok(!spec.external || spec.data === undefined);
    const gIn = buildUNetGraph(cfg, new Weights(new SyntheticWeightStore(shapes, { seed: 11 })));
    assert.ok(!gIn.hasExternalData());

    const h = 8,
      w = 16,
      L = 5;
    const sample = Float32Array.from({ length: 4 * h * w }, (_, i) => Math.sin(i));
    const ctx = Float32Array.from({ length: L * cfg.cross_attention_dim }, (_, i) => Math.cos(i));
    const feeds = () => ({
      sample: f32(sample, [1, 4, h, w]),
      timestep: f32(Float32Array.of(500), [1]),
      encoder_hidden_states: f32(ctx, [1, L, cfg.cross_attention_dim]),
    });
    const run = async (g: typeof gIn) => {
      const session = await rt.session(g);
      try {
        return (await session.run(feeds())).out_sample!.data as Float32Array;
      } finally {
        await session.release();
      }
    };
    const a = await run(gExt);
    const b = await run(gIn);
    assert.equal(a.length, 4 * h * w);
    assert.ok(a.every(Number.isFinite));
    assert.deepEqual(a, b);
  } finally {
    rt.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
