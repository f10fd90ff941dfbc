/**
 * ToMe (tomesd semantics): the float64 reference on hand-checked cases and properties, the ONNX matching and
 * runner against the reference, and the U-Net under tomesd's apply_patch against the tomesd goldens.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GraphBuilder, type Value } from "../src/graph/builder.js";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { attentionBlocks, resolveUNetConfig, type AttentionBlockInfo } from "../src/models/unet_structure.js";
import type { TransformerLayer, TransformerRunner } from "../src/models/pruning_hook.js";
import { Weights } from "../src/models/weights.js";
import {
  bipartiteMatchingGraph,
  tomeApplies,
  tomeFeeds,
  tomeFeedsAll,
  tomeGeometry,
  tomeInputs,
  tomePlan,
  tomeRunner,
  tomeTapName,
  TomeRng,
  type TomeOptionsInput,
} from "../src/pruning/tome.js";
import { bipartiteSoftMatching, partition, type Matching, type Tokens } from "../src/pruning/tome_reference.js";
import { Runtime, f32, i64, type Tensor } from "../src/runtime/session.js";
import { assertClose, errors, golden, tensorOf, TINY_SD, TOL } from "./helpers/golden.js";

// ---------- helpers ----------

/** Deterministic N(0, 1) samples (mulberry32 + Box-Muller). */
function randn(n: number, seed: number): Float32Array {
  const rng = new TomeRng(seed);
  const u = () => (rng.nextInt(2 ** 31) + 0.5) / 2 ** 31;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

const tokens = (data: ArrayLike<number>, B: number, N: number, C: number): Tokens => ({ data, dims: [B, N, C] });

function row(t: Tokens, b: number, n: number): number[] {
  const [, N, C] = t.dims;
  return Array.from({ length: C }, (_, c) => Number(t.data[(b * N + n) * C + c]));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return m;
}

/**
 * The ONNX merge emits the unmerged src tokens in position order (tomesd: similarity-rank order); permute a
 * reference-layout (B, N - r, C) array into that layout (or back with `inverse`).
 */
function rankToPosition(m: Matching, t: Tokens, inverse = false): Tokens {
  if (m.r === 0) return t;
  const [B, M, C] = t.dims;
  const out = new Float64Array(B * M * C);
  for (let b = 0; b < B; b++) {
    const unm = m.unm[b]!;
    const sorted = unm.map((pos, k) => ({ pos, k })).sort((p, q) => p.pos - q.pos);
    for (let j = 0; j < M; j++) {
      let from = j;
      let to = j;
      if (j < unm.length) {
        // position-order row j holds rank-order row sorted[j].k
        if (inverse) [from, to] = [j, sorted[j]!.k];
        else [from, to] = [sorted[j]!.k, j];
      }
      for (let c = 0; c < C; c++) out[(b * M + to) * C + c] = Number(t.data[(b * M + from) * C + c]);
    }
  }
  return { data: out, dims: [B, M, C] };
}

// ---------- (a) the reference ----------

describe("ToMe reference (tomesd bipartite_soft_matching_random2d)", () => {
  test("partition: top-left dst per 2x2 cell, raster order; non-divisible grids; random cell offsets", () => {
    assert.deepEqual(partition(4, 4, 2, 2).dst, [0, 2, 8, 10]);
    assert.deepEqual(partition(4, 4, 2, 2).src, [1, 3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15]);
    // 5 x 3 grid: only the top-left 4 x 2 is covered by cells; the rest is src.
    assert.deepEqual(partition(5, 3, 2, 2).dst, [0, 6]);
    // offsets (row-major inside the cell): 3 -> (1, 1), 0 -> (0, 0), 1 -> (0, 1), 2 -> (1, 0)
    assert.deepEqual(partition(4, 4, 2, 2, [3, 0, 1, 2]).dst, [2, 5, 9, 14]);
    // sx != sy: 4 x 6 grid, sx = 3, sy = 2: cells of 2 rows x 3 columns.
    assert.deepEqual(partition(4, 6, 3, 2).dst, [0, 3, 12, 15]);
    // offsets with sx = 3: 5 -> (1, 2), 4 -> (1, 1), 1 -> (0, 1), 3 -> (1, 0)
    assert.deepEqual(partition(4, 6, 3, 2, [5, 4, 1, 3]).dst, [8, 10, 13, 21]);
    // h < sy: no cell at all.
    assert.deepEqual(partition(1, 4, 2, 2).dst, []);
  });

  test("hand-checked 2x2 grid: the most similar src merges into the dst by averaging", () => {
    // dst = token 0 = (1, 0); cos with dst: t1 = (1, .1) -> .995, t2 = (0, 1) -> 0, t3 = (1, 1) -> .707
    const x = tokens([1, 0, 1, 0.1, 0, 1, 1, 1], 1, 4, 2);
    const m = bipartiteSoftMatching(x, 2, 2, 2, 2, 1);
    assert.equal(m.r, 1);
    assert.deepEqual(m.partition, { dst: [0], src: [1, 2, 3] });
    assert.deepEqual(m.srcMerged, [[0]]); // src position 0 = token 1
    assert.deepEqual(m.unm, [[2, 1]]); // tokens 3 (.707) then 2 (0): rank order
    assert.deepEqual(m.dstOf, [[0]]);
    const merged = m.merge(x);
    assert.deepEqual(merged.dims, [1, 3, 2]);
    assert.deepEqual(Array.from(merged.data), [1, 1, 0, 1, 1, 0.05]);
    const back = m.unmerge(merged);
    assert.deepEqual(Array.from(back.data), [1, 0.05, 1, 0.05, 0, 1, 1, 1]);
    // r = 2: token 3 joins too; the mean includes the dst itself.
    const m2 = bipartiteSoftMatching(x, 2, 2, 2, 2, 2);
    const merged2 = m2.merge(x);
    assert.deepEqual(merged2.dims, [1, 2, 2]);
    assert.ok(maxDiff(merged2.data, [0, 1, 1, 1.1 / 3]) < 1e-15);
  });

  test("hand-checked 2x4 grid with two dst tokens and per-dst mean counts", () => {
    // dst: tokens 0 (1,0) and 2 (0,1). src 1 ~ dst0, 3 ~ dst1, 4 ~ dst1 (weaker), 5 ~ dst0 (weaker), 6, 7 mixed.
    const vals = [
      [1, 0],
      [1, 0.01],
      [0, 1],
      [0.01, 1],
      [0.3, 1],
      [1, 0.4],
      [1, 0.9],
      [0.9, 1],
    ];
    const x = tokens(vals.flat(), 1, 8, 2);
    const m = bipartiteSoftMatching(x, 4, 2, 2, 2, 4);
    assert.deepEqual(m.partition, { dst: [0, 2], src: [1, 3, 4, 5, 6, 7] });
    // similarity ranking: t1 (.99995), t3 (.99995), t4 (.958), t5 (.928), t6, t7 (.74)
    assert.deepEqual(
      m.srcMerged[0]!.map((i) => m.partition.src[i]),
      [1, 3, 4, 5],
    );
    assert.deepEqual(m.dstOf, [[0, 1, 1, 0]]);
    const merged = m.merge(x);
    const dst0 = [(1 + 1 + 1) / 3, (0 + 0.01 + 0.4) / 3];
    const dst1 = [(0 + 0.01 + 0.3) / 3, (1 + 1 + 1) / 3];
    assert.equal(merged.dims[1], 4);
    const got = Array.from(merged.data);
    assert.ok(maxDiff(got.slice(4), [...dst0, ...dst1]) < 1e-15);
    // unmerge: merged src tokens copy their dst.
    const back = m.unmerge(merged);
    for (const [t, want] of [
      [0, dst0],
      [1, dst0],
      [5, dst0],
      [2, dst1],
      [3, dst1],
      [4, dst1],
      [6, vals[6]!],
      [7, vals[7]!],
    ] as const) {
      assert.ok(maxDiff(row(back, 0, t), want) < 1e-15, `token ${t}`);
    }
  });

  test("properties: r = 0 identity, N - r tokens, r capped at the src count, unmerge(merge(x)) keeps shape", () => {
    for (const [h, w, sx, sy, r] of [
      [4, 4, 2, 2, 0],
      [4, 4, 2, 2, 5],
      [5, 3, 2, 2, 4],
      [6, 9, 3, 2, 20],
      [4, 4, 2, 2, 99],
    ]) {
      const B = 2,
        C = 3,
        N = h! * w!;
      const x = tokens(randn(B * N * C, h! * 100 + w!), B, N, C);
      const m = bipartiteSoftMatching(x, w!, h!, sx!, sy!, r!);
      const nSrc = N - Math.floor(h! / sy!) * Math.floor(w! / sx!);
      assert.equal(m.r, Math.min(r!, nSrc));
      const merged = m.merge(x);
      assert.deepEqual(merged.dims, [B, N - m.r, C]);
      const back = m.unmerge(merged);
      assert.deepEqual(back.dims, [B, N, C]);
      if (m.r === 0) {
        assert.equal(merged, x);
        assert.equal(back, x);
        continue;
      }
      for (let b = 0; b < B; b++) {
        // unmerged src tokens come back unchanged; every merged group shares one value, the mean of the group.
        for (const i of m.unm[b]!) assert.deepEqual(row(back, b, m.partition.src[i]!), row(x, b, m.partition.src[i]!));
        m.partition.dst.forEach((t, j) => {
          const members = [t, ...m.srcMerged[b]!.filter((_, k) => m.dstOf[b]![k] === j).map((i) => m.partition.src[i]!)];
          const mean = Array.from({ length: C }, (_, c) => members.reduce((s, u) => s + row(x, b, u)[c]!, 0) / members.length);
          for (const u of members) assert.ok(maxDiff(row(back, b, u), mean) < 1e-12);
        });
      }
    }
  });

  test("ties: equal similarities rank the lower src position first", () => {
    // all src tokens identical: ranking is by position
    const x = tokens([1, 0, 2, 1, 2, 1, 2, 1], 1, 4, 2);
    const m = bipartiteSoftMatching(x, 2, 2, 2, 2, 2);
    assert.deepEqual(m.srcMerged, [[0, 1]]);
    assert.deepEqual(m.unm, [[2]]);
  });
});

// ---------- (b) the ONNX matching and runner against the reference ----------

const rt = new Runtime({ threads: 2 });

/** The ONNX merge/unmerge of one matching on (B, N, C) inputs. */
async function onnxMatching(metric: Tokens, y: Tokens, z: Tokens, src: number[], dst: number[], r: number) {
  const g = new GraphBuilder("tome_matching");
  const [B, N, C] = metric.dims;
  const mv = g.input("metric", "float32", ["B", "N", C]);
  const yv = g.input("y", "float32", ["B", "N", "Cy"]);
  const zv = g.input("z", "float32", ["B", "M", "Cz"]);
  const sv = g.input("src", "int64", ["n_src"]);
  const dv = g.input("dst", "int64", ["n_dst"]);
  const rv = g.input("r", "int64", [1]);
  const mg = bipartiteMatchingGraph(g, mv, sv, dv, rv);
  g.output(mg.merge(yv), "merged");
  g.output(mg.unmerge(zv), "unmerged");
  const s = await rt.session(g);
  const out = await s.run({
    metric: f32(Float32Array.from(metric.data), [B, N, C]),
    y: f32(Float32Array.from(y.data), [...y.dims]),
    z: f32(Float32Array.from(z.data), [...z.dims]),
    src: i64(src),
    dst: i64(dst),
    r: i64([r], [1]),
  });
  await s.release();
  return { merged: out.merged!, unmerged: out.unmerged! };
}

describe("ToMe ONNX matching vs the reference", () => {
  const cases: Array<{ B: number; h: number; w: number; sx: number; sy: number; r: number; C: number; rand?: boolean }> = [
    { B: 2, h: 4, w: 4, sx: 2, sy: 2, r: 5, C: 8 },
    { B: 1, h: 5, w: 3, sx: 2, sy: 2, r: 4, C: 4 }, // non-divisible
    { B: 2, h: 16, w: 8, sx: 2, sy: 2, r: 64, C: 16 }, // the fixture's first block, ratio 0.5
    { B: 2, h: 8, w: 4, sx: 2, sy: 2, r: 9, C: 24 }, // ratio 0.3 at downsample 2
    { B: 3, h: 7, w: 9, sx: 2, sy: 3, r: 20, C: 5, rand: true }, // non-divisible both ways, sx != sy, random cells
    { B: 2, h: 6, w: 6, sx: 3, sy: 3, r: 32, C: 6, rand: true }, // r = every src token
    { B: 2, h: 4, w: 4, sx: 2, sy: 2, r: 0, C: 3 }, // r = 0
    { B: 2, h: 1, w: 1, sx: 2, sy: 2, r: 0, C: 3 }, // a single token (no src at all)
  ];
  for (const cs of cases) {
    test(`B=${cs.B} ${cs.h}x${cs.w} s=${cs.sx}x${cs.sy} r=${cs.r} C=${cs.C}${cs.rand ? " random cells" : ""}`, async () => {
      const { B, h, w, sx, sy, C } = cs;
      const N = h * w;
      const seed = h * 1000 + w * 10 + cs.r;
      const rng = new TomeRng(seed);
      const cells = cs.rand ? Array.from({ length: Math.floor(h / sy) * Math.floor(w / sx) }, () => rng.nextInt(sx * sy)) : undefined;
      const metric = tokens(randn(B * N * C, seed), B, N, C);
      const m = bipartiteSoftMatching(metric, w, h, sx, sy, cs.r, cells);
      const Cy = C + 3;
      const y = tokens(randn(B * N * Cy, seed + 1), B, N, Cy);
      const z = tokens(randn(B * (N - m.r) * 2, seed + 2), B, N - m.r, 2);
      // r = 0 is fed with the trivial partition (dst = last token), as tomePlan does: an exact identity
      const part = m.r > 0 ? partition(h, w, sx, sy, cells) : { dst: [N - 1], src: Array.from({ length: N - 1 }, (_, i) => i) };
      const out = await onnxMatching(metric, y, z, part.src, part.dst, m.r);
      assert.deepEqual([...out.merged.dims], [B, N - m.r, Cy]);
      assert.deepEqual([...out.unmerged.dims], [B, N, 2]);
      const wantMerged = rankToPosition(m, m.merge(y));
      assert.ok(maxDiff(out.merged.data as Float32Array, wantMerged.data) < 1e-5, "merge");
      // unmerge of z given in the ONNX layout = reference unmerge of z in the reference layout
      const wantUnmerged = m.unmerge(rankToPosition(m, z, true));
      assert.ok(maxDiff(out.unmerged.data as Float32Array, wantUnmerged.data) < 1e-6, "unmerge");
      if (m.r === 0) {
        assert.deepEqual(Array.from(out.merged.data as Float32Array), Array.from(y.data));
      }
    });
  }

  test("ties in similarity: ONNX ranks the lower src position first and picks the first dst, as the reference", async () => {
    // scaled axis vectors: every cosine is exactly 0 or 1 in float32 and float64, so ties are everywhere
    const B = 2,
      h = 6,
      w = 4,
      C = 3,
      N = h * w;
    const data = new Float32Array(B * N * C);
    for (let b = 0; b < B; b++) for (let t = 0; t < N; t++) data[(b * N + t) * C + ((t * (b + 2) + (t >> 2)) % C)] = (t % 3) + 1;
    const metric = tokens(data, B, N, C);
    const part = partition(h, w, 2, 2);
    for (const r of [3, 7, 11, 18]) {
      const m = bipartiteSoftMatching(metric, w, h, 2, 2, r);
      const z = tokens(randn(B * (N - r) * 2, r), B, N - r, 2);
      const out = await onnxMatching(metric, metric, z, part.src, part.dst, r);
      assert.ok(maxDiff(out.merged.data as Float32Array, rankToPosition(m, m.merge(metric)).data) < 1e-6, `merge r=${r}`);
      assert.ok(maxDiff(out.unmerged.data as Float32Array, m.unmerge(rankToPosition(m, z, true)).data) < 1e-6, `unmerge r=${r}`);
    }
  });
});

/** A fake transformer block: token-mixing "attention" so that merging matters, per-token ff. */
function fakeLayer(g: GraphBuilder, path: string, scale: number): TransformerLayer {
  const mix = (h: Value, s: number) => {
    const scores = g.op("Mul", [g.op("MatMul", [h, g.op("Transpose", [h], { perm: [0, 2, 1] })]), g.constant(s)]);
    return g.op("MatMul", [g.op("Softmax", [scores], { axis: -1 }), h]);
  };
  return {
    path,
    heads: 1,
    headDim: 1,
    norm1: (x) => g.op("Add", [g.op("Mul", [x, g.constant(0.5)]), g.constant(0.1)]),
    attn1: (h) => ({ out: mix(h, scale) }),
    norm2: (x) => g.op("Mul", [x, g.constant(1.5)]),
    attn2: (h) => g.op("Tanh", [mix(h, 0.3)]),
    attn2Explicit: () => {
      throw new Error("unused");
    },
    attn2Probs: () => {
      throw new Error("unused");
    },
    norm3: (x) => g.op("Sub", [x, g.constant(0.2)]),
    ff: (h) => g.op("Tanh", [g.op("Mul", [h, g.constant(2)])]),
  };
}

/** The same fake block in float64 with the reference merge. */
function fakeReference(
  x0: Tokens,
  depth: number,
  scales: number[],
  partitions: Array<number[] | undefined>,
  h: number,
  w: number,
  r: number,
  o: { mergeAttn: boolean; mergeCrossattn: boolean; mergeMlp: boolean },
): Tokens {
  const map = (t: Tokens, f: (v: number) => number): Tokens => ({ data: Array.from(t.data, (v) => f(Number(v))), dims: t.dims });
  const add = (a: Tokens, b: Tokens): Tokens => ({ data: Array.from(a.data, (v, i) => Number(v) + Number(b.data[i])), dims: a.dims });
  const mix = (t: Tokens, s: number): Tokens => {
    const [b_, n, c] = t.dims;
    const out = new Float64Array(b_ * n * c);
    for (let b = 0; b < b_; b++) {
      for (let i = 0; i < n; i++) {
        const sc = Array.from({ length: n }, (_, j) => row(t, b, i).reduce((acc, v, k) => acc + v * row(t, b, j)[k]!, 0) * s);
        const mx = Math.max(...sc);
        const e = sc.map((v) => Math.exp(v - mx));
        const z = e.reduce((p, q) => p + q, 0);
        for (let j = 0; j < n; j++) for (let k = 0; k < c; k++) out[(b * n + i) * c + k]! += (e[j]! / z) * row(t, b, j)[k]!;
      }
    }
    return { data: out, dims: t.dims };
  };
  let x = x0;
  for (let l = 0; l < depth; l++) {
    const m = bipartiteSoftMatching(x, w, h, 2, 2, r, partitions[l]);
    const id = (t: Tokens) => t;
    const [ma, ua] = o.mergeAttn ? [m.merge, m.unmerge] : [id, id];
    const [mc, uc] = o.mergeCrossattn ? [m.merge, m.unmerge] : [id, id];
    const [mm, um] = o.mergeMlp ? [m.merge, m.unmerge] : [id, id];
    x = add(ua(mix(ma(map(x, (v) => v * 0.5 + 0.1)), scales[l]!)), x);
    x = add(uc(map(mix(mc(map(x, (v) => v * 1.5)), 0.3), Math.tanh)), x);
    x = add(um(map(mm(map(x, (v) => v - 0.2)), (v) => Math.tanh(2 * v))), x);
  }
  return x;
}

describe("ToMe runner vs the reference on a fake transformer block", () => {
  const block: AttentionBlockInfo = {
    path: "down_blocks.0.attentions.0",
    stage: "down",
    stageIndex: 0,
    index: 0,
    count: 1,
    depth: 2,
    channels: 6,
    heads: 1,
    level: 0,
    downsample: 1,
  };
  const flagSets = [
    { mergeAttn: true, mergeCrossattn: false, mergeMlp: false },
    { mergeAttn: false, mergeCrossattn: true, mergeMlp: true },
    { mergeAttn: true, mergeCrossattn: true, mergeMlp: true },
  ];
  for (const [latent, ratio, useRand, batch] of [
    [{ height: 6, width: 4 }, 0.5, false, 2],
    [{ height: 7, width: 5 }, 0.3, true, 2], // non-divisible grid, random cells
    [{ height: 5, width: 6 }, 0.6, true, 1], // odd batch: use_rand forced off
  ] as const) {
    for (const flags of flagSets) {
      test(`latent ${latent.height}x${latent.width} ratio ${ratio} useRand ${useRand} batch ${batch} ${JSON.stringify(flags)}`, async () => {
        const opts: TomeOptionsInput = { ratio, useRand, seed: 5, ...flags };
        const N = latent.height * latent.width;
        const C = block.channels;
        const g = new GraphBuilder("fake");
        for (const e of tomeInputs([block], opts)) g.input(e.name, e.dtype, e.shape);
        const x = g.input("x", "float32", ["B", "N", C]);
        const layers = [fakeLayer(g, `${block.path}.transformer_blocks.0`, 0.7), fakeLayer(g, `${block.path}.transformer_blocks.1`, 0.4)];
        const runner = tomeRunner(opts);
        const out = runner({
          g,
          block,
          tokens: x,
          height: g.constant(latent.height, "int64"),
          width: g.constant(latent.width, "int64"),
          layers,
          projOut: (t) => t,
          tap: () => {},
        });
        g.output(out, "y");
        const s = await rt.session(g);
        const xs = randn(batch * N * C, N + ratio * 100);
        const rng = new TomeRng(11);
        const plan = tomePlan(block, latent, ratio, opts, { batch, rng: new TomeRng(11) });
        const feeds = { x: f32(xs, [batch, N, C]), ...tomeFeeds(block, latent, ratio, opts, { batch, rng }) };
        const res = (await s.run(feeds)).y!;
        await s.release();
        const r = Math.floor(N * ratio);
        assert.equal(plan.r, r);
        const cellsOf = (dst: number[]) => {
          // recover the cell offsets of a partition (for the reference), row-major cells
          const hsy = Math.floor(latent.height / 2),
            wsx = Math.floor(latent.width / 2);
          const cells = new Array<number>(hsy * wsx).fill(-1);
          for (const t of dst) {
            const y = Math.floor(t / latent.width),
              x = t % latent.width;
            const i = Math.floor(y / 2),
              j = Math.floor(x / 2);
            cells[i * wsx + j] = (y - 2 * i) * 2 + (x - 2 * j);
          }
          assert.ok(cells.every((c) => c >= 0));
          return cells;
        };
        const parts = plan.layers.map((p) => cellsOf(p.dst));
        if (!useRand || batch % 2 === 1) for (const c of parts) assert.ok(c.every((v) => v === 0));
        else assert.ok(parts.flat().some((v) => v !== 0));
        const want = fakeReference(tokens(xs, batch, N, C), 2, [0.7, 0.4], parts, latent.height, latent.width, r, flags);
        const d = maxDiff(res.data as Float32Array, want.data);
        assert.ok(d < 2e-5, `max diff ${d}`);
      });
    }
  }
});

describe("ToMe planning", () => {
  const cfg = resolveUNetConfig(componentConfig(TINY_SD, "unet"));
  const blocks = attentionBlocks(cfg);
  test("tomesd geometry and gating on the 16x8 fixture latent", () => {
    const latent = { height: 16, width: 8 };
    const geo = Object.fromEntries(blocks.map((b) => [b.path, tomeGeometry(b, latent, 2)]));
    assert.deepEqual(geo["down_blocks.0.attentions.0"], { tokens: 128, downsample: 1, h: 16, w: 8, merges: true });
    assert.deepEqual(geo["down_blocks.1.attentions.1"], { tokens: 32, downsample: 2, h: 8, w: 4, merges: true });
    assert.deepEqual(geo["down_blocks.2.attentions.0"], { tokens: 8, downsample: 4, h: 4, w: 2, merges: false });
    assert.deepEqual(geo["mid_block.attentions.0"], { tokens: 2, downsample: 8, h: 2, w: 1, merges: false });
    assert.equal(blocks.filter((b) => tomeApplies(b, { maxDownsample: 1 })).length, 5);
    assert.equal(blocks.filter((b) => tomeApplies(b, { maxDownsample: 2 })).length, 10);
    assert.equal(tomeInputs(blocks, { maxDownsample: 1 }).length, 15);
    const p = tomePlan(blocks[0]!, latent, 0.5, { useRand: false });
    assert.equal(p.r, 64);
    assert.deepEqual(p.layers[0], partition(16, 8, 2, 2));
    assert.equal(tomePlan(blocks[0]!, latent, 0.3, {}).r, 38);
    // r is capped at the number of src tokens (96 of 128 for 2x2 cells)
    assert.equal(tomePlan(blocks[0]!, latent, 0.99, {}).r, 96);
    // odd batch: no random cells even with useRand
    assert.deepEqual(tomePlan(blocks[0]!, latent, 0.5, { useRand: true }, { batch: 1 }).layers[0], partition(16, 8, 2, 2));
    // ratio 0 and blocks tomesd leaves alone get r = 0 with the trivial partition
    const z = tomePlan(blocks[0]!, latent, 0, {});
    assert.equal(z.r, 0);
    assert.deepEqual(z.layers[0]!.dst, [127]);
    // a latent where the last level has 1 token: tomesd's factor is 8 there, the block stays dense (r = 0)
    const tiny = tomePlan(blocks.find((b) => b.path === "mid_block.attentions.0")!, { height: 8, width: 8 }, 0.5, { maxDownsample: 8 });
    assert.equal(tiny.r, 0);
    assert.deepEqual(tiny.layers[0], { dst: [0], src: [] });
  });

  test("use_rand: one seeded stream across blocks and steps; options are validated", () => {
    const latent = { height: 16, width: 8 };
    const dstOf = (f: Record<string, Tensor>) => Array.from(f["tome.down_blocks.0.attentions.0.dst"]!.data as BigInt64Array).join(",");
    const rng = new TomeRng(3);
    const step1 = tomeFeedsAll(blocks, latent, 0.5, { useRand: true }, { batch: 2, rng });
    const step2 = tomeFeedsAll(blocks, latent, 0.5, { useRand: true }, { batch: 2, rng });
    assert.notEqual(dstOf(step1), dstOf(step2));
    assert.equal(dstOf(step1), dstOf(tomeFeedsAll(blocks, latent, 0.5, { useRand: true }, { batch: 2, rng: new TomeRng(3) })));
    // same seed option, no rng passed: reproducible
    assert.equal(dstOf(tomeFeedsAll(blocks, latent, 0.5, { seed: 9 })), dstOf(tomeFeedsAll(blocks, latent, 0.5, { seed: 9 })));
    // each dst is inside its own 2x2 cell, one per cell
    const dst = dstOf(step1).split(",").map(Number);
    assert.equal(dst.length, 32);
    assert.deepEqual(new Set(dst.map((t) => Math.floor(t / 16) * 4 + Math.floor((t % 8) / 2))).size, 32);
    // feeds for a block the graph runs dense are empty
    assert.deepEqual(tomeFeeds(blocks.find((b) => b.downsample === 2)!, latent, 0.5, {}), {});
    // a 1x5 latent: down_blocks.1 has 1x3 tokens and tomesd's factor ceil(sqrt(5 // 3)) = 1 <= maxDownsample 1,
    // but its nominal downsample 2 keeps it dense in the graph: refuse rather than differ silently
    const db1 = blocks.find((b) => b.downsample === 2)!;
    assert.equal(tomeGeometry(db1, { height: 1, width: 5 }, 1).downsample, 1);
    assert.throws(() => tomeFeeds(db1, { height: 1, width: 5 }, 0.5, {}), /would merge/);
    assert.throws(() => tomeFeedsAll(blocks, { height: 1, width: 5 }, 0.5, {}), /would merge/);
    assert.deepEqual(tomeFeeds(db1, { height: 16, width: 8 }, 0.5, {}), {});
    assert.throws(() => tomeRunner({ ratio: 1 }), /ratio/);
    assert.throws(() => tomeRunner({ ratio: 0.5, sx: 0 }), /sx/);
  });
});

// ---------- (c) the U-Net against the tomesd goldens ----------

describe("ToMe U-Net vs tomesd goldens (tiny-sd, 16x8 latent)", () => {
  const gold = golden(TINY_SD, "tomesd.safetensors");
  const cfg = resolveUNetConfig(componentConfig(TINY_SD, "unet"));
  const weights = new Weights(componentWeights(TINY_SD, "unet"));
  const blocks = attentionBlocks(cfg);
  const firstLayer = "down_blocks.0.attentions.0.transformer_blocks.0";
  const latent = { height: 16, width: 8 };
  const baseFeeds = (): Record<string, Tensor> => {
    const feeds: Record<string, Tensor> = {};
    for (const [k, name] of [
      ["input.sample", "sample"],
      ["input.timestep", "timestep"],
      ["input.encoder_hidden_states", "encoder_hidden_states"],
    ]) {
      const t = tensorOf(gold, k!);
      feeds[name!] = f32(t.data as Float32Array, t.dims);
    }
    return feeds;
  };
  const configs: Record<string, TomeOptionsInput> = {
    tome_a: { ratio: 0.5, maxDownsample: 1, sx: 2, sy: 2, useRand: false, mergeAttn: true, mergeCrossattn: false, mergeMlp: false },
    tome_b: { ratio: 0.3, maxDownsample: 2, sx: 2, sy: 2, useRand: false, mergeAttn: true, mergeCrossattn: false, mergeMlp: false },
  };
  const report: string[] = [];

  async function runTome(opts: TomeOptionsInput, mode: "inputs" | "constants", ratio = opts.ratio) {
    const runner: TransformerRunner = mode === "inputs" ? tomeRunner(opts) : tomeRunner(opts, { ...latent, batch: 2 });
    const graph = buildUNetGraph(cfg, weights, {
      runners: () => runner,
      taps: [tomeTapName(firstLayer)],
      extraInputs: mode === "inputs" ? tomeInputs(blocks, opts) : [],
    });
    const s = await rt.session(graph);
    const feeds = { ...baseFeeds(), ...(mode === "inputs" ? tomeFeedsAll(blocks, latent, ratio, opts, { batch: 2 }) : {}) };
    const out = await s.run(feeds);
    await s.release();
    return { sample: out.out_sample!, block: out[tomeTapName(firstLayer)]! };
  }

  for (const [name, opts] of Object.entries(configs)) {
    for (const mode of ["inputs", "constants"] as const) {
      test(`${name} (${JSON.stringify(opts)}), plan as ${mode}: output.sample and block_output at TOL.tome`, async () => {
        const out = await runTome(opts, mode);
        const eb = assertClose(`${name}.block_output`, out.block.data as Float32Array, tensorOf(gold, `${name}.block_output`), TOL.tome, [
          ...out.block.dims,
        ]);
        const es = assertClose(`${name}.output.sample`, out.sample.data as Float32Array, tensorOf(gold, `${name}.output.sample`), TOL.tome, [
          ...out.sample.dims,
        ]);
        report.push(
          `${name} [${mode}] block_output max_abs ${eb.maxAbs.toExponential(2)} rel_l2 ${eb.relL2.toExponential(2)}; ` +
            `output.sample max_abs ${es.maxAbs.toExponential(2)} rel_l2 ${es.relL2.toExponential(2)}`,
        );
        // and far from the unpatched output (the merge really happened)
        assert.ok(errors(out.sample.data as Float32Array, tensorOf(gold, "reference.output.sample").data as Float32Array).maxAbs > 0.1);
      });
    }
  }

  test("ratio 0 reproduces the unpatched U-Net exactly (and the golden reference at TOL.tome)", async () => {
    const dense = buildUNetGraph(cfg, weights, {});
    const s = await rt.session(dense);
    const want = (await s.run(baseFeeds())).out_sample!;
    await s.release();
    for (const opts of Object.values(configs)) {
      const out = await runTome({ ...opts, ratio: 0 }, "inputs");
      assert.deepEqual(Array.from(out.sample.data as Float32Array), Array.from(want.data as Float32Array));
    }
    const e = assertClose("ratio0 output.sample", want.data as Float32Array, tensorOf(gold, "reference.output.sample"), TOL.tome);
    report.push(`ratio 0 (= dense) vs reference.output.sample max_abs ${e.maxAbs.toExponential(2)} rel_l2 ${e.relL2.toExponential(2)}`);
  });

  test("maxDownsample 8 (every block, down to 1 token): ratio 0 is exactly dense, ratio 0.5 runs, on 16x8 and 8x8 latents", async () => {
    const opts: TomeOptionsInput = { ratio: 0.5, maxDownsample: 8, useRand: true, seed: 1 };
    const tome = await rt.session(buildUNetGraph(cfg, weights, { runners: () => tomeRunner(opts), extraInputs: tomeInputs(blocks, opts) }));
    const dense = await rt.session(buildUNetGraph(cfg, weights, {}));
    const ctx = tensorOf(gold, "input.encoder_hidden_states");
    for (const lat of [latent, { height: 8, width: 8 }]) {
      const feeds = {
        sample: f32(randn(2 * 4 * lat.height * lat.width, lat.height), [2, 4, lat.height, lat.width]),
        timestep: f32(Float32Array.from([999, 37.5]), [2]),
        encoder_hidden_states: f32(ctx.data as Float32Array, ctx.dims),
      };
      const want = (await dense.run(feeds)).out_sample!.data as Float32Array;
      const zero = (await tome.run({ ...feeds, ...tomeFeedsAll(blocks, lat, 0, opts, { batch: 2 }) })).out_sample!.data as Float32Array;
      assert.deepEqual(Array.from(zero), Array.from(want));
      const half = (await tome.run({ ...feeds, ...tomeFeedsAll(blocks, lat, 0.5, opts, { batch: 2 }) })).out_sample!.data as Float32Array;
      assert.ok(half.every(Number.isFinite));
      assert.ok(maxDiff(half, want) > 1e-3);
    }
    await tome.release();
    await dense.release();
  });

  test("one session serves several ratios (per-block schedule) via the feeds", async () => {
    const opts = configs.tome_b!;
    const graph = buildUNetGraph(cfg, weights, { runners: () => tomeRunner(opts), extraInputs: tomeInputs(blocks, opts) });
    const s = await rt.session(graph);
    const run = async (ratio: number | ((b: AttentionBlockInfo) => number)) =>
      (await s.run({ ...baseFeeds(), ...tomeFeedsAll(blocks, latent, ratio, opts, { batch: 2 }) })).out_sample!.data as Float32Array;
    const b = await run(0.3);
    assertClose("tome_b via schedule session", b, tensorOf(gold, "tome_b.output.sample"), TOL.tome);
    // ratio 0.5 at downsample 1 and 0 at downsample 2 = tome_a
    const a = await run((blk) => (blk.downsample === 1 ? 0.5 : 0));
    assertClose("tome_a via schedule session", a, tensorOf(gold, "tome_a.output.sample"), TOL.tome);
    await s.release();
    console.log(report.join("\n"));
  });
});
