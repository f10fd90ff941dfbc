/**
 * AT-EDM: the ONNX ranking/keep/recovery against the float64 reference on random attention maps, every variant;
 * and the pruned U-Net on the diffusers fixtures (ratio ~0 equals the unpruned model, shapes never change,
 * the keep set of the first block equals the reference computed from diffusers' own attention probabilities).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { GraphBuilder, type Value } from "../src/graph/builder.js";
import { Runtime, f32, i64 } from "../src/runtime/session.js";
import { Mulberry32 } from "../src/util/numerics.js";
import * as ref from "../src/pruning/atedm_reference.js";
import { AtEdm, keepOutput, scoreOutput } from "../src/pruning/atedm.js";
import { crossGwprScore, gwprScore, keepIndices, keptColumns, keptRows, recoverySources } from "../src/pruning/atedm_math.js";
import { UNet2DConditionModel } from "../src/models/unet_model.js";
import { dsap, noSchedule } from "../src/pruning/schedules.js";
import { assertClose, errors, golden, tensorOf, TINY_SD, TINY_SDXL, TOL } from "./helpers/golden.js";

const rt = new Runtime({ threads: 2 });

/** Random row-stochastic maps (B, h, N, L) = softmax of random logits with a few peaked columns. */
function randomProbs(rng: Mulberry32, B: number, h: number, N: number, L = N): Float32Array {
  const p = new Float32Array(B * h * N * L);
  for (let r = 0; r < B * h * N; r++) {
    let sum = 0;
    for (let j = 0; j < L; j++) {
      const v = Math.exp(3 * rng.next() + (j % 7 === 0 ? 2 : 0));
      p[r * L + j] = v;
      sum += v;
    }
    for (let j = 0; j < L; j++) p[r * L + j]! /= sum;
  }
  return p;
}

/** Split (B, h, N, L) into per-element lists of per-head float64 maps. */
function heads(p: Float32Array, B: number, h: number, N: number, L = N): Float64Array[][] {
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: h }, (_, hh) => Float64Array.from(p.subarray((b * h + hh) * N * L, (b * h + hh + 1) * N * L))),
  );
}

async function runGraph(
  build: (g: GraphBuilder) => Value,
  feeds: Record<string, ReturnType<typeof f32>>,
  inputs: Array<[string, "float32" | "int64", Array<number | string>]>,
) {
  const g = new GraphBuilder("t");
  for (const [n, d, s] of inputs) g.input(n, d, s);
  g.output(build(g), "y", "float32");
  const s = await rt.session(g);
  return (await s.run(feeds)).y!;
}

test("G-WPR scores (gwpr, column-mean, gwpr-rms, damping) match the float64 reference", async () => {
  const rng = new Mulberry32(1);
  const [B, h, N] = [2, 3, 37];
  const P = randomProbs(rng, B, h, N);
  const ph = heads(P, B, h, N);
  for (const [iters, damping, perHead] of [
    [10, 0, false],
    [1, 0, false],
    [10, 0, true],
    [5, 0.15, false],
    [3, 0.1, true],
  ] as const) {
    const out = await runGraph((g) => gwprScore(g, { name: "p" }, iters, damping, perHead), { p: f32(P, [B, h, N, N]) }, [
      ["p", "float32", [B, h, N, N]],
    ]);
    const want = ph.flatMap((e) => Array.from((perHead ? ref.gwprRms : ref.gwpr)(e, N, { iterations: iters, damping })));
    const e = errors(out.data as Float32Array, want);
    assert.ok(e.relL2 < 1e-5 && e.maxAbs < 1e-6, `K=${iters} d=${damping} perHead=${perHead}: ${JSON.stringify(e)}`);
  }
});

test("cross-attention G-WPR matches the float64 reference", async () => {
  const rng = new Mulberry32(2);
  const [B, h, N, L] = [2, 2, 20, 7];
  const C = randomProbs(rng, B, h, N, L);
  const out = await runGraph((g) => crossGwprScore(g, { name: "c" }), { c: f32(C, [B, h, N, L]) }, [["c", "float32", [B, h, N, L]]]);
  const want = heads(C, B, h, N, L).flatMap((e) => Array.from(ref.crossGwpr(e, N, L)));
  const e = errors(out.data as Float32Array, want);
  assert.ok(e.relL2 < 1e-5, JSON.stringify(e));
});

test("keep set: top-k, ties to the lower index, ascending; k = max(1, floor((1 - rho) N + 0.5))", async () => {
  assert.equal(ref.keepCount(9, 0.5), 5);
  assert.equal(ref.keepCount(10, 0.99), 1);
  assert.equal(ref.keepCount(4096, 0.63), 1516); // 0.37 * 4096 = 1515.52 -> 1516
  const score = Float32Array.from([0.1, 0.5, 0.5, 0.2, 0.5, 0.9, 0.0, 0.2]);
  for (const k of [1, 2, 3, 4, 5, 8]) {
    const out = await runGraph(
      (g) => g.op("Cast", [keepIndices(g, { name: "s" }, { name: "k" })], { to: 1 }),
      { s: f32(score, [1, 8]), k: i64([k]) },
      [
        ["s", "float32", [1, 8]],
        ["k", "int64", [1]],
      ],
    );
    assert.deepEqual(Array.from(out.data as Float32Array), ref.keepSet(score, k), `k=${k}`);
  }
  // Random scores, two batch elements with different sets.
  const rng = new Mulberry32(3);
  const s2 = Float32Array.from({ length: 2 * 50 }, () => rng.next());
  const out = await runGraph((g) => g.op("Cast", [keepIndices(g, { name: "s" }, { name: "k" })], { to: 1 }), { s: f32(s2, [2, 50]), k: i64([17]) }, [
    ["s", "float32", [2, 50]],
    ["k", "int64", [1]],
  ]);
  const got = Array.from(out.data as Float32Array);
  assert.deepEqual(got.slice(0, 17), ref.keepSet(s2.subarray(0, 50), 17));
  assert.deepEqual(got.slice(17), ref.keepSet(s2.subarray(50), 17));
});

test("recovery sources (copy, copy-col, copy-sym, cosine, nearest) match the reference; kept tokens map to themselves", async () => {
  const rng = new Mulberry32(4);
  const [H, W, C] = [5, 6, 8];
  const N = H * W;
  const A = randomProbs(rng, 1, 1, N);
  const x1 = Float32Array.from({ length: N * C }, () => rng.next() - 0.5);
  const keep = ref.keepSet(
    Float64Array.from({ length: N }, () => rng.next()),
    11,
  );
  // Rows and columns of a non-symmetric map differ, so copy, copy-col and copy-sym pick different sources (asserted).
  const sources: Record<string, number[]> = {};
  for (const kind of ["copy", "copy-col", "copy-sym", "cosine", "nearest"] as const) {
    const out = await runGraph(
      (g) => {
        const k = { name: "keep" };
        let sim: Value;
        if (kind === "copy") {
          sim = g.op("GatherElements", [{ name: "a" }, g.op("Expand", [g.op("Unsqueeze", [k, g.ints([1])]), g.ints([1, N, keep.length])])], {
            axis: 2,
          });
        } else if (kind === "copy-col" || kind === "copy-sym") {
          // The library's own gathers on the (B, 1, N, N) head-mean layout: A[kept, i] (and A[i, kept]).
          const a4 = g.op("Unsqueeze", [{ name: "a" }, g.ints([1])]);
          sim = keptRows(g, a4, k);
          if (kind === "copy-sym") sim = g.op("Add", [keptColumns(g, a4, k), sim]);
        } else if (kind === "cosine") {
          const unit = g.op("Div", [{ name: "x" }, g.op("ReduceL2", [{ name: "x" }], { axes: [-1], keepdims: 1 })]);
          const ku = g.op("GatherND", [unit, g.op("Unsqueeze", [k, g.ints([2])])], { batch_dims: 1 });
          sim = g.op("MatMul", [unit, g.op("Transpose", [ku], { perm: [0, 2, 1] })]);
        } else {
          const d = new Float32Array(N * keep.length);
          for (let i = 0; i < N; i++)
            keep.forEach((j, p) => (d[i * keep.length + p] = (Math.floor(i / W) - Math.floor(j / W)) ** 2 + ((i % W) - (j % W)) ** 2));
          sim = g.constant(Array.from(d), "float32", [1, N, keep.length]);
        }
        return g.op("Cast", [recoverySources(g, sim, k, kind !== "nearest")], { to: 1 });
      },
      { a: f32(A, [1, N, N]), x: f32(x1, [1, N, C]), keep: i64(keep, [1, keep.length]) },
      [
        ["a", "float32", [1, N, N]],
        ["x", "float32", [1, N, C]],
        ["keep", "int64", [1, keep.length]],
      ],
    );
    const want = ref.recoverySources(kind, keep, N, { A: Float64Array.from(A), x1: Float64Array.from(x1), C, W });
    assert.deepEqual(Array.from(out.data as Float32Array), want, kind);
    sources[kind] = want;
  }
  const differ = (a: string, b: string) => sources[a]!.some((s, i) => s !== sources[b]![i]);
  assert.ok(differ("copy", "copy-col") && differ("copy", "copy-sym") && differ("copy-col", "copy-sym"), "the three attention copies differ here");
});

function unetInputs(model: string) {
  const gold = golden(model, "unet.safetensors");
  const t = (k: string) => tensorOf(gold, k);
  return {
    sample: t("input.sample").data as Float32Array,
    sampleDims: t("input.sample").dims,
    timestep: t("input.timestep").data as Float32Array,
    encoderHiddenStates: t("input.encoder_hidden_states").data as Float32Array,
    encoderDims: t("input.encoder_hidden_states").dims,
    textEmbeds: gold.get("input.text_embeds")?.data as Float32Array | undefined,
    timeIds: gold.get("input.time_ids")?.data as Float32Array | undefined,
  };
}

// Every score and recovery variant, at both pruning points, is compared with a float64 composition at block level
// (test/atedm_block.test.ts); here the whole U-Net runs with the method installed, once per model and setting.
for (const model of [TINY_SD, TINY_SDXL]) {
  const name = model.split("/").pop();
  test(`${name}: the pruned U-Net keeping every token equals the unpruned one; at ratio 0.5 it is deterministic, keeps shapes, and changes the output`, async () => {
    const unet = UNet2DConditionModel.load(model, rt);
    const inputs = unetInputs(model);
    const dense = await unet.forward(inputs);
    assertClose("unpruned vs golden", dense.sample, tensorOf(golden(model, "unet.safetensors"), "output.sample"), TOL.unet);
    // One method, one session: at step 0 the ratio is 1e-3, which keeps all N tokens (k = floor(0.999 N + 0.5) = N
    // for N < 500) but runs the pruning graph; at steps 1 and 2 the ratio is 0.5 (k is a graph input).
    unet.pruning = new AtEdm({ ratio: 0.5, preset: "paper", schedule: (at, _block, ratio) => (at.step === 0 ? 1e-3 : ratio) });
    const all = await unet.forward(inputs, { step: 0, steps: 3 });
    assert.ok(Object.values(all.ratios).every((r) => r > 0));
    assert.deepEqual(all.keptTokens, dense.keptTokens, "k = N in every block");
    assertClose("k=N", all.sample, dense.sample, TOL.unet);

    const a = await unet.forward(inputs, { step: 1, steps: 3 });
    const b = await unet.forward(inputs, { step: 2, steps: 3 });
    assert.ok(Object.values(a.ratios).every((r) => r === 0.5));
    assert.deepEqual(a.dims, dense.dims);
    assert.deepEqual(a.sample, b.sample, "same inputs, same output");
    assert.ok(
      Object.keys(a.keptTokens).every((p) => a.keptTokens[p]! < dense.keptTokens[p]! || dense.keptTokens[p] === 1),
      "tokens dropped",
    );
    assert.ok(errors(a.sample, dense.sample).maxAbs > 1e-4, "pruning must change the output");
    assert.ok(a.sample.every(Number.isFinite));
    await unet.release();
  });

  test(`${name}: graph inputs fed per block by the U-Net (random scores), conditional mask sharing, after-attn1`, async () => {
    const unet = UNet2DConditionModel.load(model, rt);
    const inputs = unetInputs(model);
    unet.pruning = new AtEdm({ ratio: 0.5, schedule: noSchedule, score: "random", maskSharing: "conditional", pruningPoint: "after-attn1" });
    const c = await unet.forward(inputs, { step: 0, steps: 1 }, true);
    const keeps = Object.entries(c.extras).filter(([k]) => k.endsWith(".keep"));
    assert.equal(keeps.length, unet.blocks.length, "one keep set per pruned block");
    for (const [k, keep] of keeps) {
      const [B, kk] = keep.dims as [number, number];
      const ids = keep.data as BigInt64Array;
      assert.deepEqual(ids.subarray(0, kk), ids.subarray((B / 2) * kk, (B / 2 + 1) * kk), `${k}: conditional half's mask for both`);
    }
    assert.ok(c.sample.every(Number.isFinite));
    // The random scores are seeded per (seed, step, block): another step draws other scores and keeps other tokens.
    const d = await unet.forward(inputs, { step: 1, steps: 2 }, true);
    assert.ok(keeps.some(([k, keep]) => !(keep.data as BigInt64Array).every((v, i) => v === (d.extras[k]!.data as BigInt64Array)[i])));
    await unet.release();
  });
}

test("tiny-sd: the graph's keep set and G-WPR scores equal the reference computed from diffusers' attention probabilities", async () => {
  const gold = golden(TINY_SD, "unet.safetensors");
  const probs = tensorOf(gold, "attn.attn1_probs"); // [2, 4, 128, 128] of down_blocks.0.attentions.0
  const [B, h, N] = probs.dims as [number, number, number];
  const unet = UNet2DConditionModel.load(TINY_SD, rt);
  unet.pruning = new AtEdm({ ratio: 0.5, preset: "paper", schedule: noSchedule });
  const out = await unet.forward(unetInputs(TINY_SD), { step: 0, steps: 1 }, true);
  const block = unet.blocks[0]!;
  const score = out.extras[scoreOutput(block)]!.data as Float32Array;
  const keep = out.extras[keepOutput(block)]!.data as BigInt64Array;
  const k = ref.keepCount(N, 0.5);
  const ph = heads(probs.data as Float32Array, B, h, N);
  let compared = 0;
  for (let b = 0; b < B; b++) {
    const want = ref.gwpr(ph[b]!, N, { iterations: 10, damping: 0 });
    assertClose(`score[${b}]`, score.subarray(b * N, (b + 1) * N), want, { maxAbs: 1e-6, relL2: 1e-4 });
    // Compare the keep set where the score gap at the boundary is clear (SPEC: near-ties may differ).
    const sorted = Array.from(want).sort((x, y) => y - x);
    const gap = (sorted[k - 1]! - sorted[k]!) / sorted[k - 1]!;
    if (gap > 1e-4) {
      assert.deepEqual(Array.from(keep.subarray(b * k, (b + 1) * k), Number), ref.keepSet(want, k), `keep[${b}]`);
      compared++;
    }
  }
  // Both batch elements of this fixture have a clear gap at the boundary (1e-4 relative): both keep sets compared.
  assert.equal(compared, B, "keep sets compared");
  await unet.release();
});

test("DSAP: protected blocks are unpruned in the first ceil(0.1 T) steps, all blocks after", () => {
  const unet = UNet2DConditionModel.load(TINY_SDXL, rt);
  unet.pruning = new AtEdm({ ratio: 0.5, preset: "paper", schedule: dsap() });
  const early = unet.ratios({ step: 0, steps: 20 });
  const step1 = unet.ratios({ step: 1, steps: 20 });
  const late = unet.ratios({ step: 2, steps: 20 });
  assert.deepEqual(
    Object.keys(early).filter((p) => early[p] === 0),
    ["down_blocks.1.attentions.0", "down_blocks.2.attentions.0", "up_blocks.0.attentions.2", "up_blocks.1.attentions.2"],
  );
  assert.equal(early["mid_block.attentions.0"], 0.5);
  assert.deepEqual(step1, early, "ceil(0.1 * 20) = 2 early steps");
  assert.ok(Object.values(late).every((r) => r === 0.5));
});
