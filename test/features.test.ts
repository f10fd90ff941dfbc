/**
 * Feature extractors (src/metrics/features.ts) and CLIP score (src/metrics/clip_score.ts).
 *
 * The first tests run the embedded shapes extractor (models/shapes-features/features.onnx) on rendered shapes and
 * check that its features tell captions apart. All the others check PLUMBING only, with tiny ONNX graphs built
 * here (GraphBuilder) in place of Inception and CLIP: the resize, the [0, 1] scaling, the output read-out, the
 * cosine and the one-line errors. They say nothing about Inception's or CLIP's numbers; atedm ships neither.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../src/errors.js";
import { GraphBuilder } from "../src/graph/builder.js";
import { ClipScorer } from "../src/metrics/clip_score.js";
import { FeatureExtractor, type RgbImage, SHAPES_FEATURES } from "../src/metrics/features.js";
import { CLIPTokenizer } from "../src/models/clip_tokenizer.js";
import { Runtime } from "../src/runtime/session.js";
import { generateDataset } from "../src/shapes/export.js";
import { captionOf, isHeldOut, type SceneSpec, sampleScene } from "../src/shapes/grammar.js";
import { renderScene } from "../src/shapes/render.js";
import { Mulberry32 } from "../src/util/numerics.js";

const runtime = new Runtime({ threads: 1 });
const dir = mkdtempSync(join(tmpdir(), "atedm-features-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const TOKENIZER_DIR = fileURLToPath(new URL("../models/shapes/tokenizer", import.meta.url));

/** Write `g` to `dir/name.onnx` and return the path. */
function save(g: GraphBuilder, name: string): string {
  const file = join(dir, `${name}.onnx`);
  writeFileSync(file, g.toBytes());
  return file;
}

/** An image whose pixel (x, y), channel c is (37 x + 91 y + 53 c) mod 256 (the Python golden below uses the same). */
function ramp(width: number, height: number): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) rgb[(y * width + x) * 3 + c] = (x * 37 + y * 91 + c * 53) % 256;
  return { rgb, width, height };
}

const solid = (width: number, height: number, color: readonly [number, number, number]): RgbImage => {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) rgb.set(color, i * 3);
  return { rgb, width, height };
};

/** Expect `fn` to reject with a one-line AtedmError that names `file` and matches `re`. */
async function rejectsNaming(fn: () => Promise<unknown>, file: string, re: RegExp): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof AtedmError, `expected an AtedmError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `message has several lines: ${e.message}`);
    assert.ok(e.message.includes(file), `message does not name ${file}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  });
}

// ---- the embedded shapes extractor -------------------------------------------------------------------------------

test("SHAPES_FEATURES: the committed extractor loads, 32x32 in, 128 features out, a small file", async () => {
  assert.ok(existsSync(SHAPES_FEATURES), SHAPES_FEATURES);
  assert.ok(statSync(SHAPES_FEATURES).size < 3e6, `${SHAPES_FEATURES} is ${statSync(SHAPES_FEATURES).size} bytes`);
  const fx = await FeatureExtractor.load(SHAPES_FEATURES, runtime);
  assert.equal(fx.dim, 128);
  assert.deepEqual(fx.inputSize, [32, 32]);
  assert.equal(fx.name, "features.onnx");
  await fx.release();
});

test("SHAPES_FEATURES: the nearest class centroid in feature space reads each attribute of fresh renders", async () => {
  // 400 random one-object scenes (held-out captions included, ~15 % of them; jitter drawn per render): class
  // centroids of each attribute from the first 200, then each of the last 200 takes the class of its nearest
  // centroid. Measured: background 1.0, colour 0.99, shape 1.0, size 0.995, position 0.965. A barely trained
  // extractor (98 steps; held-out shape accuracy 0.32) scores 0.295 on shape and 0.115 on position here, while it
  // still puts two jittered renders of one caption nearest to each other: that easier check would not tell them apart.
  const rng = new Mulberry32(11);
  const specs = Array.from({ length: 400 }, () => sampleScene(rng, { twoObjectFraction: 0, excludeHeldOut: false }));
  assert.ok(specs.some((sp) => isHeldOut(captionOf(sp))));
  const images = specs.map((sp) => ({ rgb: renderScene(sp, { rng }), width: 32, height: 32 }));
  const fx = await FeatureExtractor.load(SHAPES_FEATURES, runtime);
  const f = await fx.features(images, 48); // a batch that does not divide the count
  await fx.release();
  assert.equal(f.length, 400 * 128);
  const D = 128;
  const attributes: Record<string, [(o: SceneSpec) => string, number]> = {
    background: [(o) => o.background, 0.97],
    colour: [(o) => o.objects[0]!.color, 0.95],
    shape: [(o) => o.objects[0]!.shape, 0.95],
    size: [(o) => o.objects[0]!.size, 0.95],
    position: [(o) => o.objects[0]!.position, 0.9],
  };
  for (const [name, [label, min]] of Object.entries(attributes)) {
    const centroids = new Map<string, Float64Array>();
    const counts = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const k = label(specs[i]!);
      const c = centroids.get(k) ?? new Float64Array(D);
      for (let d = 0; d < D; d++) c[d]! += f[i * D + d]!;
      centroids.set(k, c);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    for (const [k, c] of centroids) for (let d = 0; d < D; d++) c[d]! /= counts.get(k)!;
    let correct = 0;
    for (let i = 200; i < 400; i++) {
      let best = "";
      let bestDist = Number.POSITIVE_INFINITY;
      for (const [k, c] of centroids) {
        let s = 0;
        for (let d = 0; d < D; d++) s += (f[i * D + d]! - c[d]!) ** 2;
        if (s < bestDist) [best, bestDist] = [k, s];
      }
      if (best === label(specs[i]!)) correct++;
    }
    assert.ok(correct / 200 >= min, `${name}: nearest-centroid accuracy ${correct / 200} < ${min}`);
  }
  // the features of one image do not depend on the batch it is in
  const fx2 = await FeatureExtractor.load(SHAPES_FEATURES, runtime);
  const alone = await fx2.features([images[50]!]);
  await fx2.release();
  for (let k = 0; k < D; k++)
    assert.ok(Math.abs(alone[k]! - f[50 * D + k]!) < 1e-4, `feature ${k}: ${alone[k]} alone vs ${f[50 * D + k]} in a batch`);
});

test("SHAPES_FEATURES: atedm's preprocessing matches training's (PyTorch golden)", async () => {
  // The first 4 images of `export-shapes --count 60000 --seed 7` (the extractor's training data: generateDataset draws
  // image by image, so the first 4 of a 4-image set are the same), through features.onnx's weights in PyTorch, fed as
  // in training (HWC u8 -> NCHW / 255): `python3 training/train_features.py --data /tmp/featdata --golden 4`.
  // Catches what the nearest-neighbour test above cannot: a wrong channel order, layout or scale.
  const want = [
    [0.0, 2.43566, 2.02385, 1.35001, 0.7995, 1.9558, 2.15441, 1.10974, 0.23748, 0.5459, 0.76036, 1.15961, 0.58152, 1.9714, 1.08306, 1.11209],
    [1.85426, 0.5049, 0.02388, 0.46224, 0.11047, 0.01378, 0.02698, 0.75003, 2.23591, 0.97509, 0.72127, 1.09529, 2.34031, 0.04747, 1.46382, 1.84334],
    [0.01814, 0.00453, 1.33295, 1.7493, 0.04268, 0.69458, 0.03498, 0.14647, 0.7403, 0.09182, 0.29391, 0.23839, 0.0798, 0.19353, 0.17538, 1.2897],
    [1.34613, 2.53513, 0.02283, 0.15416, 1.05903, 2.57035, 1.75502, 0.69725, 0.1817, 2.00355, 0.78645, 0.68139, 2.04545, 0.8284, 0.06239, 0.46926],
  ];
  const wantNorm = [14.95173, 10.01591, 10.9215, 11.22908];
  const set = generateDataset({ count: 4, seed: 7 });
  assert.equal(set.captions[0], "a black circle left of a purple triangle on a gray background");
  const images = set.captions.map((_, i) => ({ rgb: set.images.subarray(i * 3072, (i + 1) * 3072), width: 32, height: 32 }));
  const fx = await FeatureExtractor.load(SHAPES_FEATURES, runtime);
  const f = await fx.features(images);
  await fx.release();
  for (let i = 0; i < 4; i++) {
    const row = f.subarray(i * 128, (i + 1) * 128);
    for (let k = 0; k < 16; k++)
      assert.ok(Math.abs(row[k]! - want[i]![k]!) < 1e-4, `image ${i}, feature ${k}: ${row[k]} vs PyTorch ${want[i]![k]} (tol 1e-4)`);
    const norm = Math.hypot(...row);
    assert.ok(Math.abs(norm - wantNorm[i]!) < 1e-3, `image ${i}: feature norm ${norm} vs PyTorch ${wantNorm[i]} (tol 1e-3)`);
  }
});

// ---- plumbing with stand-in graphs (not Inception's or CLIP's numbers) --------------------------------------------

/** A stand-in "Inception": [N, 3, 8, 8] -> GlobalAveragePool -> [N, 3, 1, 1] (the mean of each channel). */
function fakeInception(batch: number | string = "N"): string {
  const g = new GraphBuilder("fake_inception");
  g.output(g.op("GlobalAveragePool", [g.input("images", "float32", [batch, 3, 8, 8])]), "pool", "float32", [batch, 3, 1, 1]);
  return save(g, `fake_inception_${batch}`);
}

/** Features = the input pixels themselves: [N, 3, 8, 8] -> Flatten -> [N, 192]. */
function pixelsExtractor(): string {
  const g = new GraphBuilder("pixels");
  g.output(g.op("Flatten", [g.input("x", "float32", ["N", 3, 8, 8])], { axis: 1 }), "features", "float32", ["N", 192]);
  return save(g, "pixels");
}

// torch.nn.functional.interpolate(img, size=(8, 8), mode="bilinear", align_corners=False, antialias=False) / 255 of
// ramp(5, 3) (upsampling, 5 wide x 3 high) and ramp(12, 10) (downsampling), channel 0, row-major; per-channel means.
const TORCH_RESIZE = {
  "5x3": {
    red: [
      0.0, 0.06348, 0.154167, 0.244853, 0.335539, 0.426225, 0.516912, 0.580392, 0.022304, 0.085784, 0.176471, 0.267157, 0.357843, 0.448529, 0.539216,
      0.602696, 0.156127, 0.219608, 0.310294, 0.40098, 0.491667, 0.582353, 0.673039, 0.73652, 0.289951, 0.353431, 0.444118, 0.534804, 0.62549,
      0.716176, 0.806863, 0.870343, 0.423775, 0.487255, 0.566176, 0.539216, 0.571078, 0.661765, 0.752451, 0.815931, 0.557598, 0.621078, 0.676471,
      0.414216, 0.328431, 0.419118, 0.509804, 0.573284, 0.691422, 0.754902, 0.786765, 0.289216, 0.085784, 0.176471, 0.267157, 0.330637, 0.713726,
      0.777206, 0.805147, 0.268382, 0.045343, 0.136029, 0.226716, 0.290196,
    ],
    mean: [0.446814, 0.519179, 0.529902],
  },
  "12x10": {
    red: [
      0.080882, 0.298529, 0.516176, 0.639706, 0.606373, 0.165196, 0.382843, 0.60049, 0.526961, 0.462255, 0.585784, 0.332843, 0.393627, 0.611274,
      0.452451, 0.670098, 0.345588, 0.280882, 0.404412, 0.622059, 0.682843, 0.429902, 0.271078, 0.488725, 0.415196, 0.632843, 0.630882, 0.189706,
      0.37598, 0.49951, 0.717157, 0.27598, 0.735784, 0.294608, 0.292647, 0.510294, 0.602451, 0.820098, 0.159314, 0.376961, 0.303431, 0.521078,
      0.644608, 0.579902, 0.170098, 0.387745, 0.605392, 0.540686, 0.74951, 0.496569, 0.463235, 0.398529, 0.616176, 0.363235, 0.42402, 0.359314,
      0.317157, 0.440686, 0.626961, 0.844608, 0.183824, 0.307353, 0.493627, 0.711275,
    ],
    mean: [0.467647, 0.532353, 0.516667],
  },
} as const;

test("plumbing: images are resized like torch's bilinear interpolate (half-pixel, no antialias) and scaled to [0, 1]", async () => {
  const fx = await FeatureExtractor.load(pixelsExtractor(), runtime);
  assert.equal(fx.dim, 192);
  assert.deepEqual(fx.inputSize, [8, 8]);
  const f = await fx.features([ramp(5, 3), ramp(12, 10), ramp(8, 8)]);
  await fx.release();
  for (const [k, key] of (["5x3", "12x10"] as const).entries()) {
    const want = TORCH_RESIZE[key].red;
    for (let p = 0; p < 64; p++) {
      const got = f[k * 192 + p]!;
      assert.ok(Math.abs(got - want[p]!) < 2e-6, `${key} -> 8x8, red pixel (${p % 8}, ${Math.floor(p / 8)}): ${got} vs torch ${want[p]} (tol 2e-6)`);
    }
  }
  // 8x8 in: no resize, exactly the bytes / 255 in CHW order
  const same = ramp(8, 8);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < 64; p++) assert.equal(f[2 * 192 + c * 64 + p], Math.fround(same.rgb[p * 3 + c]! / 255), `8x8 channel ${c} pixel ${p}`);
  }
});

test("plumbing: a fake Inception ([N, 3, 8, 8] -> [N, 3, 1, 1] channel means) gives the hand-computed means", async () => {
  for (const batch of ["N", 1] as const) {
    // batch 1: a file with a fixed batch dimension is fed one image at a time
    const fx = await FeatureExtractor.load(fakeInception(batch), runtime, "fake inception");
    assert.equal(fx.dim, 3);
    assert.equal(fx.name, "fake inception");
    const f = await fx.features([ramp(5, 3), solid(3, 7, [255, 51, 0]), ramp(12, 10)], 2);
    await fx.release();
    const want = [...TORCH_RESIZE["5x3"].mean, 1, 0.2, 0, ...TORCH_RESIZE["12x10"].mean];
    assert.equal(f.length, want.length);
    for (let i = 0; i < want.length; i++)
      assert.ok(Math.abs(f[i]! - want[i]!) < 2e-6, `batch ${batch}: value ${i}: ${f[i]} vs ${want[i]} (tol 2e-6)`);
  }
});

test("plumbing: a feature extractor with the wrong input or output shape gives a one-line error naming the file", async () => {
  const build = (name: string, shape: Array<number | string>, reduce: number[], outShape?: Array<number | string>) => {
    const g = new GraphBuilder(name);
    g.output(g.op("ReduceMean", [g.input("x", "float32", shape)], { axes: reduce, keepdims: 0 }), "y", "float32", outShape);
    return save(g, name);
  };
  const oneChannel = build("one_channel", ["N", 1, 8, 8], [2, 3]);
  await rejectsNaming(
    () => FeatureExtractor.load(oneChannel, runtime),
    oneChannel,
    /input 'x' is float32 \[N, 1, 8, 8\]; a feature extractor takes float32 \[N, 3, H, W\] RGB in \[0, 1\]/,
  );
  const rank3 = build("rank3", ["N", 3, 8], [2]);
  await rejectsNaming(() => FeatureExtractor.load(rank3, runtime), rank3, /input 'x' is float32 \[N, 3, 8\]; a feature extractor takes/);
  const rank5 = build("rank5", ["N", 3, 8, 8, 2], [2, 3, 4]);
  await rejectsNaming(() => FeatureExtractor.load(rank5, runtime), rank5, /input 'x' is float32 \[N, 3, 8, 8, 2\]; a feature extractor takes/);
  const symbolicH = build("symbolic_h", ["N", 3, "H", 8], [2, 3]);
  await rejectsNaming(() => FeatureExtractor.load(symbolicH, runtime), symbolicH, /input 'x' is float32 \[N, 3, H, 8\]/);
  const rank3Out = build("rank3_out", ["N", 3, 8, 8], [3], ["N", 3, 8]);
  await rejectsNaming(
    () => FeatureExtractor.load(rank3Out, runtime),
    rank3Out,
    /output 'y' is float32 \[N, 3, 8\]; a feature extractor .* returns float32 \[N, D\]/,
  );
  const g = new GraphBuilder("two_inputs");
  g.output(g.op("Add", [g.input("a", "float32", ["N", 3, 8, 8]), g.input("b", "float32", ["N", 3, 8, 8])]), "y");
  const twoInputs = save(g, "two_inputs");
  await rejectsNaming(() => FeatureExtractor.load(twoInputs, runtime), twoInputs, /2 inputs \('a', 'b'\)/);
  const missing = join(dir, "no_such.onnx");
  await rejectsNaming(() => FeatureExtractor.load(missing, runtime), missing, /no such file/);
  const garbage = join(dir, "garbage.onnx");
  writeFileSync(garbage, "this is not a protobuf\n");
  await rejectsNaming(() => FeatureExtractor.load(garbage, runtime), garbage, /not a loadable ONNX model/);
});

// A stand-in CLIP pair with embeddings computable by hand (D = 3):
//  image: [N, 3, 4, 4] -> channel means (CLIP's normalization would sit inside a real graph);
//  text:  input_ids [N, L] -> Gather from a table [vocab, 3] -> sum over the L tokens.
const VOCAB = 640; // >= the shapes tokenizer's 615 ids
const tableRow = (id: number): [number, number, number] => [Math.sin(id), Math.cos(0.7 * id), ((id * 13) % 7) - 3];

function fakeClip(length: number | string, dim = 3): { image: string; text: string } {
  const gi = new GraphBuilder("fake_clip_image");
  gi.output(gi.op("ReduceMean", [gi.input("pixel_values", "float32", ["N", 3, 4, 4])], { axes: [2, 3], keepdims: 0 }), "image_embeds", "float32", [
    "N",
    3,
  ]);
  const gt = new GraphBuilder("fake_clip_text");
  const table = new Float32Array(VOCAB * dim);
  for (let id = 0; id < VOCAB; id++) for (let k = 0; k < dim; k++) table[id * dim + k] = tableRow(id)[k % 3]! + (k >= 3 ? 1 : 0);
  const w = gt.initializer("table", { dtype: "float32", dims: [VOCAB, dim], data: table });
  const tokens = gt.op("Gather", [w, gt.input("input_ids", "int64", ["N", length])], { axis: 0 });
  gt.output(gt.op("ReduceSum", [tokens, gt.ints([1])], { keepdims: 0 }), "text_embeds", "float32", ["N", dim]);
  return { image: save(gi, `clip_image_${length}_${dim}`), text: save(gt, `clip_text_${length}_${dim}`) };
}

test("plumbing: CLIP score = 100 * max(0, cos) of a fake CLIP pair's embeddings, computed by hand", async () => {
  const tok = CLIPTokenizer.fromPretrained(TOKENIZER_DIR);
  const prompts = ["a small red circle at the top left on a white background", "a blue square left of a red circle on a gray background", "red"];
  const colors: Array<[number, number, number]> = [
    [255, 0, 0],
    [10, 20, 255],
    [0, 0, 255],
  ];
  // L = 12 truncates the first prompt (13 tokens with bos and eos); "L" (symbolic) pads to the tokenizer's 16
  for (const length of [12, "L"] as const) {
    const files = fakeClip(length);
    const scorer = await ClipScorer.load(files.image, files.text, TOKENIZER_DIR, runtime);
    const L = length === "L" ? tok.modelMaxLength : length;
    assert.equal(scorer.maxLength, L);
    assert.equal(scorer.dim, 3);
    const scores = await scorer.score(
      colors.map((c) => solid(6, 5, c)),
      prompts,
    );
    await scorer.release();
    let positive = 0;
    let clamped = 0;
    prompts.forEach((p, i) => {
      const raw = tok.encodeRaw(p);
      const ids = [tok.bosTokenId, ...raw.slice(0, L - 2), tok.eosTokenId];
      while (ids.length < L) ids.push(tok.padTokenId);
      const t = [0, 0, 0];
      for (const id of ids) tableRow(id).forEach((v, k) => (t[k]! += Math.fround(v)));
      const im = colors[i]!.map((v) => v / 255);
      const dot = im[0]! * t[0]! + im[1]! * t[1]! + im[2]! * t[2]!;
      const cos = dot / Math.hypot(...im) / Math.hypot(...t);
      const want = 100 * Math.max(0, cos);
      if (cos > 0) positive++;
      else clamped++;
      assert.ok(Math.abs(scores[i]! - want) < 1e-3, `L=${length}, prompt ${i}: score ${scores[i]} vs hand ${want} (tol 1e-3)`);
    });
    // the check covers both sides of the clamp
    assert.ok(positive > 0 && clamped > 0, `L=${length}: ${positive} positive and ${clamped} clamped cosines`);
  }
});

test("plumbing: CLIP encoders with different embedding sizes give a one-line error naming both files", async () => {
  const a = fakeClip(16, 3);
  const b = fakeClip(16, 4);
  await rejectsNaming(
    () => ClipScorer.load(a.image, b.text, TOKENIZER_DIR, runtime),
    b.text,
    /gives 3-d embeddings but the text encoder .* gives 4-d/,
  );
  await rejectsNaming(() => ClipScorer.load(a.image, b.text, TOKENIZER_DIR, runtime), a.image, /CLIP score/);
  // a text encoder that takes floats
  const g = new GraphBuilder("float_text");
  g.output(g.op("Identity", [g.input("input_ids", "float32", ["N", 3])]), "text_embeds");
  const floatText = save(g, "float_text");
  await rejectsNaming(
    () => ClipScorer.load(a.image, floatText, TOKENIZER_DIR, runtime),
    floatText,
    /input 'input_ids' is float32 \[N, 3\]; a CLIP text encoder takes input_ids int64 \[N, L\]/,
  );
});
