/**
 * FLOPs: the analytic count against the SPEC's reference totals, the graph count (shape propagation over a
 * built U-Net graph) against the analytic count module by module, and the pruned counts against hand-computed
 * cases.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { componentConfig } from "../src/io/diffusers.js";
import { GraphBuilder } from "../src/graph/builder.js";
import {
  attentionBlocks, buildUNetGraph, denseRunner, layerForward, resolveUNetConfig,
  type TransformerRunner, type UNetConfig, type UNetGraphOptions,
} from "../src/models/unet.js";
import { Weights } from "../src/models/weights.js";
import { SyntheticWeightStore, unetStateDictShapes } from "../src/models/unet_weights.js";
import { FLOPS_CATEGORIES, categoryOf, keepCount, uniformKeep, unetFlops } from "../src/metrics/flops.js";
import { compareUNetFlops, flopsUnder, graphFlops } from "../src/metrics/graph_flops.js";

const here = dirname(fileURLToPath(import.meta.url));
const config = (name: string): UNetConfig =>
  resolveUNetConfig(JSON.parse(readFileSync(join(here, "configs", `${name}-unet.json`), "utf8")), `${name}-unet.json`);
const SD15 = config("sd15");
const SD21 = config("sd21");
const SDXL = config("sdxl");
const TINY = { sd: resolveUNetConfig(componentConfig(TINY_SD, "unet")), sdxl: resolveUNetConfig(componentConfig(TINY_SDXL, "unet")) };

/** A U-Net graph over synthetic weights kept external: shapes only, no weight data allocated. */
function shapeOnlyGraph(cfg: UNetConfig, options?: UNetGraphOptions): GraphBuilder {
  const weights = new Weights(new SyntheticWeightStore(unetStateDictShapes(cfg)), { externalThreshold: 0 });
  const g = buildUNetGraph(cfg, weights, options);
  for (const spec of g.initializers.values()) if (spec.external) assert.equal(spec.data, undefined);
  return g;
}

test("analytic totals match the SPEC reference (SD-1.5 @512, SD-2.1 @768, SD-XL @1024) to 0.1 %", () => {
  for (const [name, cfg, size, ref] of [
    ["SD-1.5", SD15, 512, 0.803e12],
    ["SD-2.1", SD21, 768, 2.149e12],
    ["SD-XL", SDXL, 1024, 6.761e12],
  ] as const) {
    const r = unetFlops(cfg, { height: size, width: size });
    assert.ok(Math.abs(r.total / ref - 1) < 1e-3, `${name}: ${r.total} vs ${ref}`);
    const sum = FLOPS_CATEGORIES.reduce((a, c) => a + r.byCategory[c], 0);
    assert.equal(sum, r.total, `${name}: categories sum to the total`);
    assert.equal(r.overhead.total, 0);
    assert.equal(r.byBlock.length, attentionBlocks(cfg).length);
  }
});

test("graph count equals the analytic count module by module (SD-1.5, SD-2.1, SD-XL native sizes; tiny fixtures)", () => {
  const cases: Array<[string, UNetConfig, number, number]> = [
    ["SD-1.5", SD15, 64, 64],
    ["SD-2.1", SD21, 96, 96],
    ["SD-XL", SDXL, 128, 128],
    ["tiny-sd", TINY.sd, 16, 8],
    ["tiny-sd odd", TINY.sd, 13, 9], // ceil at each downsampler, upsampling to the skip's odd size
    ["tiny-sdxl", TINY.sdxl, 32, 32],
    ["tiny-sdxl odd", TINY.sdxl, 11, 6],
  ];
  for (const [name, cfg, h, w] of cases) {
    const g = shapeOnlyGraph(cfg);
    for (const batch of [1, 2]) {
      const c = compareUNetFlops(g, cfg, { latent: [h, w], batch, textLength: 77, tolerance: 0 });
      assert.deepEqual(c.mismatches, [], `${name} batch ${batch}`);
      assert.equal(c.graph.total, c.analytic.total, `${name} batch ${batch}: total`);
      for (const cat of FLOPS_CATEGORIES) assert.equal(c.graph.byCategory[cat], c.analytic.byCategory[cat], `${name}: ${cat}`);
      assert.equal(c.graph.byCategory.overhead, 0);
      for (const b of c.analytic.byBlock) assert.equal(flopsUnder(c.graph.byModule, b.path), b.flops, `${name}: ${b.path}`);
    }
  }
});

test("graph count: explicit attention probabilities (MatMul, Softmax, MatMul) count as attn1's QK^T and PV", () => {
  const explicit: TransformerRunner = (ctx) => {
    let x = ctx.tokens;
    ctx.layers.forEach((L, i) => {
      if (i > 0) return void (x = layerForward(L, ctx.g, x));
      x = ctx.g.op("Add", [L.attn1(L.norm1(x), { explicitProbs: true }).out, x]);
      x = ctx.g.op("Add", [L.attn2(L.norm2(x)), x]);
      x = ctx.g.op("Add", [L.ff(L.norm3(x)), x]);
    });
    return ctx.projOut(x);
  };
  for (const cfg of [TINY.sd, TINY.sdxl]) {
    const g = shapeOnlyGraph(cfg, { runners: () => explicit });
    assert.ok(g.nodes.some((n) => n.op_type === "Softmax"));
    const c = compareUNetFlops(g, cfg, { latent: [12, 10], tolerance: 0 });
    assert.deepEqual(c.mismatches, []);
    assert.equal(c.graph.byCategory.overhead, 0);
  }
});

/**
 * A stand-in for the AT-EDM runner (not the real one, which lives in src/pruning): layer 1 with explicit
 * probabilities, head mean, K = 10 G-WPR MatMuls, TopK with k read from an int64 graph input, layers 2..d and
 * proj_out on the kept tokens, recovery by attention argmax and a scatter of the kept tokens' own outputs.
 * It exercises the ops a pruning graph uses and shows the comparison the real pruned-graph test will make.
 */
function standInRunner(K: number): TransformerRunner {
  return (ctx) => {
    const { g, layers } = ctx;
    const [L1, ...rest] = layers;
    let x = ctx.tokens;
    const a = L1!.attn1(L1!.norm1(x), { explicitProbs: true });
    x = g.op("Add", [a.out, x]);
    x = g.op("Add", [L1!.attn2(L1!.norm2(x)), x]);
    x = g.op("Add", [L1!.ff(L1!.norm3(x)), x]);
    const A = g.op("ReduceMean", [a.probs!], { axes: [1], keepdims: 0 }); // (B, N, N)
    const n = g.op("Cast", [g.op("Gather", [g.op("Shape", [A]), g.constant(2, "int64")])], { to: 1 });
    const row = g.op("Slice", [A, g.ints([0]), g.ints([1]), g.ints([1])]); // (B, 1, N)
    let s = g.op("Add", [g.op("Mul", [row, g.constant(0)]), g.op("Reciprocal", [n])]);
    for (let k = 0; k < K; k++) s = g.op("MatMul", [s, A]); // s <- A^T s
    const kIn = { name: `keep.${ctx.block.path}` };
    const [, idx] = g.opN("TopK", [g.op("Squeeze", [s, g.ints([1])]), kIn], 2, { axis: -1 }); // (B, k)
    const shp = (v: { name: string }) => g.op("Shape", [v]);
    const tokIdx = g.op("Expand", [g.op("Unsqueeze", [idx!, g.ints([2])]), g.op("Concat", [shp(idx!), g.ints([ctx.block.channels])], { axis: 0 })]);
    let kept = g.op("GatherElements", [x, tokIdx], { axis: 1 }); // (B, k, C)
    for (const L of rest) kept = layerForward(L, g, kept);
    const y = ctx.projOut(kept);
    const cols = g.op("Expand", [g.op("Unsqueeze", [idx!, g.ints([1])]), g.op("Concat", [g.op("Shape", [A], { start: 0, end: 2 }), g.op("Shape", [idx!], { start: 1, end: 2 })], { axis: 0 })]);
    const src = g.op("ArgMax", [g.op("GatherElements", [A, cols], { axis: 2 })], { axis: 2, keepdims: 1 }); // (B, N, 1)
    const srcIdx = g.op("Expand", [src, g.op("Shape", [x])]);
    const dense = g.op("GatherElements", [y, srcIdx], { axis: 1 });
    return g.op("ScatterElements", [dense, tokIdx, y], { axis: 1 });
  };
}

test("graph count of a pruned stand-in graph equals the analytic pruned count, G-WPR as overhead", () => {
  for (const cfg of [TINY.sd, TINY.sdxl]) {
    const blocks = attentionBlocks(cfg);
    const latent: [number, number] = [12, 10];
    const keep = uniformKeep(cfg, latent[0], latent[1], 0.4);
    const g = shapeOnlyGraph(cfg, {
      runners: () => standInRunner(10),
      extraInputs: blocks.map((b) => ({ name: `keep.${b.path}`, dtype: "int64" as const, shape: [1] })),
    });
    const values = Object.fromEntries(blocks.map((b) => [`keep.${b.path}`, [keep[b.path]!]]));
    const c = compareUNetFlops(g, cfg, { latent, keep, pruningPoint: "after-layer1", inputs: { values }, tolerance: 0 });
    assert.deepEqual(c.mismatches, []);
    assert.ok(c.overhead.analytic > 0);
    assert.equal(c.overhead.graph, c.overhead.analytic);
    assert.ok(c.analytic.total < unetFlops(cfg, { latent }).total);
  }
});

test("analytic pruned counts: hand-computed blocks", () => {
  // tiny-sdxl at a 8x8 latent: down_blocks.2.attentions.0 runs at 2x2 (N = 4), C = 24, depth 3, text 77 x 72.
  const cfg = TINY.sdxl;
  const path = "down_blocks.2.attentions.0";
  const [C, N, L, D] = [24, 4, 77, 72];
  const layer = (nAttn: number, nRest: number) =>
    4 * nAttn * C * C + 2 * nAttn * nAttn * C + // attn1: to_q/k/v/out, QK^T + PV
    nRest * C * C + 2 * L * D * C + 2 * nRest * L * C + nRest * C * C + // attn2: to_q, to_k/v on text, QK^T + PV, to_out
    12 * nRest * C * C; // ff: C -> 8C (GEGLU), 4C -> C
  const block = (layers: number[][], nOut: number) => 2 * (N * C * C + layers.reduce((a, [p, q]) => a + layer(p!, q!), 0) + nOut * C * C);

  const dense = unetFlops(cfg, { latent: [8, 8] });
  const b0 = dense.byBlock.find((b) => b.path === path)!;
  assert.deepEqual([b0.tokens, b0.kept, b0.depth], [N, null, 3]);
  assert.equal(b0.flops, block([[4, 4], [4, 4], [4, 4]], 4));

  // Keep 1 token after layer 1 (the default for depth >= 2): layers 2, 3 and proj_out on 1 token.
  const p = unetFlops(cfg, { latent: [8, 8], keep: { [path]: 1 } });
  const b1 = p.byBlock.find((b) => b.path === path)!;
  assert.equal(b1.pruningPoint, "after-layer1");
  assert.equal(b1.flops, block([[4, 4], [1, 1], [1, 1]], 1));
  assert.equal(dense.total - p.total, b0.flops - b1.flops, "only the pruned block changes");
  assert.equal(p.overhead.score, 2 * 10 * N * N); // G-WPR: K = 10 products with the 4 x 4 head-mean map
  assert.equal(p.overhead.recovery, 0); // copy: an argmax
  assert.equal(b1.overhead, p.overhead.total);
  assert.equal(p.totalWithOverhead, p.total + 2 * 10 * N * N);

  // After layer 1's self-attention: attn1 (with to_out) on 4, its cross-attention and ff on 3, then 3.
  const q = unetFlops(cfg, { latent: [8, 8], keep: { [path]: 3 }, pruningPoint: "after-attn1", recovery: "cosine", iterations: 4 });
  assert.equal(q.byBlock.find((b) => b.path === path)!.flops, block([[4, 3], [3, 3], [3, 3]], 3));
  assert.equal(q.overhead.score, 2 * 4 * N * N);
  assert.equal(q.overhead.recovery, 2 * (N - 3) * 3 * C); // one pruned token against 3 kept, C channels

  // Depth-1 block (tiny-sd down_blocks.1.attentions.0 at 4x4 of an 8x8 latent: N = 16, C = 24, text 77 x 32):
  // the default point is after attn1.
  const sd = unetFlops(TINY.sd, { latent: [8, 8], keep: { "down_blocks.1.attentions.0": 5 }, batch: 2 });
  const b = sd.byBlock.find((x) => x.path === "down_blocks.1.attentions.0")!;
  const [n1, k1, D1] = [16, 5, 32];
  const expected = 2 * 2 * (n1 * C * C + 4 * n1 * C * C + 2 * n1 * n1 * C + k1 * C * C + 2 * 77 * D1 * C + 2 * k1 * 77 * C + k1 * C * C + 12 * k1 * C * C + k1 * C * C);
  assert.deepEqual([b.pruningPoint, b.tokens, b.kept, b.flops], ["after-attn1", n1, k1, expected]);
  assert.equal(sd.overhead.total, 2 * 2 * 10 * n1 * n1, "per batch element");

  assert.throws(() => unetFlops(cfg, { latent: [8, 8], keep: { [path]: 5 } }), /keeps 5 of 4 tokens/);
});

test("keepCount rounds half up and keeps at least one token; uniformKeep covers every attention block", () => {
  assert.equal(keepCount(9, 0.5), 5);
  assert.equal(keepCount(4096, 0.63), 1516);
  assert.equal(keepCount(3, 0.99), 1);
  assert.equal(keepCount(10, 0), 10);
  const keep = uniformKeep(SDXL, 128, 128, 0.5);
  assert.deepEqual(Object.keys(keep), attentionBlocks(SDXL).map((b) => b.path));
  assert.equal(keep["down_blocks.1.attentions.0"], 2048);
  assert.equal(keep["mid_block.attentions.0"], 512);
});

test("categoryOf sorts module paths", () => {
  const t = "up_blocks.0.attentions.1.transformer_blocks.3";
  assert.equal(categoryOf("down_blocks.0.resnets.1.time_emb_proj"), "resnet");
  assert.equal(categoryOf("mid_block.resnets.0.conv_shortcut"), "resnet");
  assert.equal(categoryOf(`${t}.attn1.to_out.0`), "attn1_proj");
  assert.equal(categoryOf(`${t}.attn1`), "attn1_matmul");
  assert.equal(categoryOf(`${t}.attn2.to_k`), "attn2");
  assert.equal(categoryOf(`${t}.attn2`), "attn2");
  assert.equal(categoryOf(`${t}.ff.net.0.proj`), "ff");
  assert.equal(categoryOf("up_blocks.0.attentions.1.proj_out"), "proj_io");
  for (const m of ["conv_in", "conv_out", "time_embedding.linear_2", "add_embedding.linear_1", "down_blocks.1.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv"]) {
    assert.equal(categoryOf(m), "other", m);
  }
});

test("graphFlops: shape and small-value propagation, counts of Conv / MatMul / Gemm / MultiHeadAttention", () => {
  const g = new GraphBuilder("t");
  const x = g.input("x", "float32", ["B", 3, "H", "W"]);
  const k = g.input("k", "int64", [1]);
  const w = g.initializer("w:conv.weight", { dtype: "float32", dims: [8, 3, 3, 3], external: { file: "/nonexistent", offset: 0, length: 0 } });
  const y = g.op("Conv", [x, w, null], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }); // (1, 8, 5, 4)
  const t = g.op("Transpose", [g.op("Reshape", [y, g.ints([0, 0, -1])])], { perm: [0, 2, 1] }); // (1, 20, 8)
  // k' = floor(k * 0.5 + 0.5) through float arithmetic, as a pruning ratio would be applied.
  const kf = g.op("Floor", [g.op("Add", [g.op("Mul", [g.op("Cast", [k], { to: 1 }), g.constant(0.5)]), g.constant(0.5)])]);
  const k2 = g.op("Cast", [kf], { to: 7 });
  const [vals] = g.opN("TopK", [g.op("ReduceSum", [t, g.ints([2])], { keepdims: 0 }), k2], 2, { axis: -1 }); // (1, k')
  const r = g.op("Range", [g.constant(0, "int64"), g.op("Squeeze", [k2, g.ints([0])]), g.constant(1, "int64")]);
  const e = g.op("Expand", [g.op("Unsqueeze", [vals!, g.ints([2])]), g.op("Concat", [g.op("Shape", [vals!]), g.ints([8])], { axis: 0 })]); // (1, k', 8)
  const sl = g.op("Slice", [t, g.ints([-6]), g.ints([1000]), g.ints([1])]); // (1, 6, 8)
  const mm = g.op("MatMul", [e, g.op("Transpose", [sl], { perm: [0, 2, 1] })]); // (1, k', 6): k' * 6 * 8
  const ones = g.op("ConstantOfShape", [g.op("Concat", [g.op("Shape", [r]), g.ints([6])], { axis: 0 })]); // (4, 6)
  const gm = g.op("Gemm", [g.op("Flatten", [mm], { axis: 2 }), ones], { transB: 1 }); // (4, 6) x (6, 4)
  const att = g.op("MultiHeadAttention", [t, sl, sl], { num_heads: 2 }, "com.microsoft"); // S 20, L 6, C 8
  g.output(gm, "gm");
  g.output(att, "att");
  const res = graphFlops(g, { dims: { B: 1, H: 9, W: 7 }, values: { k: [7] } });
  const byName = Object.fromEntries(res.nodes.map((n) => [n.op, n]));
  assert.equal(byName.Conv!.flops, 2 * (8 * 5 * 4) * 27);
  assert.equal(byName.Conv!.module, "conv");
  // k' = floor(7 * 0.5 + 0.5) = 4: MatMul (1, 4, 8) x (1, 8, 6); Gemm (4, 6) x (6, 4).
  assert.equal(byName.MatMul!.flops, 2 * 4 * 6 * 8);
  assert.equal(byName.Gemm!.flops, 2 * 4 * 4 * 6);
  assert.equal(byName.MatMul!.category, "overhead");
  assert.equal(byName.MultiHeadAttention!.flops, 2 * 20 * 6 * (8 + 8));
  assert.equal(res.total, res.nodes.reduce((a, n) => a + n.flops, 0));
});

test("graphFlops: an unknown op is an error naming the op and the node; unresolved dims are errors", () => {
  const g = new GraphBuilder("t");
  const x = g.input("x", "float32", ["B", 4]);
  g.output(g.scope("blk", () => g.op("Loop", [x])), "y");
  assert.throws(() => graphFlops(g, { dims: { B: 1 } }), /node 'blk\/Loop_\d+' \(Loop\): unsupported op Loop/);
  assert.throws(() => graphFlops(g), /symbolic dim 'B'/);
});
