/**
 * CoordConv input channels (src/pipeline/coord_channels.ts) and the atedm.json checks around them. That the shipped
 * shapes model, which uses them, samples exactly like diffusers + training/sample_shapes.py is
 * test/shapes_model.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../src/errors.js";
import { appendCoordChannels } from "../src/pipeline/coord_channels.js";
import { torchLinspaceF32 as linspace } from "../src/util/numerics.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL = join(root, "models", "shapes");

test("linspace: float32 values within one rounding of the exact grid, exact ends, symmetric for even n", () => {
  for (const n of [1, 2, 7, 32, 64]) {
    const v = linspace(-1, 1, n);
    assert.equal(v.length, n);
    assert.equal(v[0], -1);
    if (n === 1) continue;
    assert.equal(v[n - 1], 1);
    for (let i = 0; i < n; i++) {
      const exact = -1 + (2 * i) / (n - 1);
      assert.ok(Math.abs(v[i]! - exact) <= 2 ** -23, `n=${n} i=${i}: ${v[i]} vs ${exact}`);
      if (n % 2 === 0) assert.equal(v[i], -v[n - 1 - i]!, `n=${n} i=${i}: not symmetric`);
      if (i > 0) assert.ok(v[i]! > v[i - 1]!);
    }
  }
});

test("appendCoordChannels: each batch element keeps its channels, then gets the column and row maps", () => {
  const [b, c, h, w] = [2, 3, 4, 5];
  const sample = Float32Array.from({ length: b * c * h * w }, (_, i) => 100 + i);
  const out = appendCoordChannels(sample, [b, c, h, w]);
  assert.deepEqual(out.dims, [b, c + 2, h, w]);
  const plane = h * w;
  const xs = linspace(-1, 1, w);
  const ys = linspace(-1, 1, h);
  for (let i = 0; i < b; i++) {
    const base = i * (c + 2) * plane;
    assert.deepEqual(out.data.subarray(base, base + c * plane), sample.subarray(i * c * plane, (i + 1) * c * plane));
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        assert.equal(out.data[base + c * plane + y * w + x], xs[x], `column map at ${i},${y},${x}`);
        assert.equal(out.data[base + (c + 1) * plane + y * w + x], ys[y], `row map at ${i},${y},${x}`);
      }
    }
  }
  assert.throws(() => appendCoordChannels(sample, [b, c, h]), AtedmError);
  assert.throws(() => appendCoordChannels(sample, [b, c + 1, h, w]), AtedmError);
});

/** A model folder that shares the shipped model's components but has its own atedm.json. */
async function loadWithDefaults(defaults: unknown): Promise<unknown> {
  const dir = mkdtempSync(join(tmpdir(), "atedm-coord-"));
  try {
    for (const f of ["model_index.json", "unet", "text_encoder", "tokenizer", "scheduler"]) symlinkSync(join(MODEL, f), join(dir, f));
    writeFileSync(join(dir, "atedm.json"), JSON.stringify(defaults));
    const pipe = await loadPipeline(dir, { threads: 1 });
    await pipe.release();
    return null;
  } catch (e) {
    return e;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("atedm.json: coord_channels must match the U-Net, and bad values name the file", async () => {
  const unet = JSON.parse(readFileSync(join(MODEL, "unet", "config.json"), "utf8")) as { in_channels: number; out_channels: number };
  const shipped = unet.in_channels - unet.out_channels;
  assert.ok(shipped === 0 || shipped === 2, `shipped U-Net has ${unet.in_channels} -> ${unet.out_channels} channels`);
  assert.equal(await loadWithDefaults({ guidance: 4, coord_channels: shipped }), null);
  const wrong = await loadWithDefaults({ guidance: 4, coord_channels: shipped === 2 ? 0 : 2 });
  assert.ok(wrong instanceof AtedmError, String(wrong));
  assert.match(wrong.message, /input channels|in_channels/);
  for (const bad of [{ coord_channels: 3 }, { coord_channels: "2" }, { guidance: "4" }]) {
    const e = await loadWithDefaults(bad);
    assert.ok(e instanceof AtedmError, `${JSON.stringify(bad)}: ${String(e)}`);
    assert.match(e.message, /atedm\.json/);
  }
});
