/**
 * ToMe for Stable Diffusion (Bolya & Hoffman 2023) with the semantics of dbolya/tomesd (`apply_patch`,
 * commit 27a14a3), as a `TransformerRunner` for the U-Net graph.
 *
 * What tomesd does, and where it lives here:
 * - Every BasicTransformerBlock computes its own matching from its INPUT hidden states x (before norm1):
 *   `downsample = ceil(sqrt(latent_tokens // N))`; when `downsample <= max_downsample`, the grid is
 *   h = ceil(latent_h / downsample), w = ceil(latent_w / downsample), r = int(N * ratio), and
 *   bipartite_soft_matching_random2d(x, w, h, sx, sy, r) gives merge / unmerge (see tome_reference.ts for the
 *   exact matching rules). With merge_attn, attn1 runs on merge(norm1(x)) and its output is unmerged before
 *   the residual; merge_crossattn does the same around attn2 (on norm2), merge_mlp around ff (on norm3).
 *   Each sub-layer's merge reuses the matching computed from the block input.
 * - The dst/src partition depends only on (h, w, sx, sy) and the random cell offsets, so it is computed in
 *   TypeScript (`tomePlan`) and handed to the graph as int64 tensors, together with r. Everything that depends
 *   on token values (cosine similarity, best dst, ranking, mean merge, unmerge copy) is in the graph:
 *   ReduceL2/Div, Gather, MatMul, ReduceMax/ArgMax, TopK, Slice, GatherElements, ScatterElements(add).
 *
 * Two ways to supply the plan:
 * - Graph inputs (default, `tomeRunner(options)`): per ToMe'd block `tome.<block path>.r` (int64 [1]),
 *   `tome.<block path>.src` / `.dst` (int64 [depth, n_src] / [depth, n_dst], one partition per layer). Declare
 *   them with `tomeInputs(blocks, options)` (UNetGraphOptions.extraInputs) and feed `tomeFeeds(...)` each call:
 *   one session serves every latent size, batch and ratio, so a schedule may change the ratio per block and per
 *   step without rebuilding.
 * - Constants (`tomeRunner(options, { height, width, batch })`): the plan for one latent size, batch and
 *   `options.ratio` is baked into the graph; no extra inputs.
 *
 * Gating. The graph contains the ToMe path for blocks whose nominal `block.downsample <= maxDownsample`; the
 * others run dense. `tomePlan` applies tomesd's own formula at run time and feeds r = 0 to a block tomesd would
 * not merge; it throws if tomesd would merge a block the graph runs dense (tomesd's formula can give a smaller
 * factor than the nominal one only for tiny latents of a few tokens). r = 0 is fed with a trivial partition
 * (dst = the last token) and the unmerged tokens are kept in position order, so with r = 0 the merge and
 * unmerge are exact identities: ratio 0 reproduces the dense U-Net bit for bit.
 *
 * Differences from tomesd, none of which changes the result beyond float rounding for use_rand = false:
 * - The unmerged src tokens are emitted in position order rather than in similarity-rank order, and dst/src
 *   are in raster order (tomesd argsorts a -1/0 buffer with torch's unstable sort, whose order for equal keys is
 *   an implementation detail of torch's CPU sort). Attention is equivariant to the order of its tokens and the
 *   other sub-layers act per token, so the order only changes float summation order. Exact ties between
 *   similarities are broken towards the lower src position (ranking) and the first dst (best match).
 * - use_rand: the cell offsets come from a seeded mulberry32 stream (`TomeRng`), not from torch's generator,
 *   so use_rand = true results are not bit-comparable with tomesd (only use_rand = false is). As in tomesd, an
 *   odd batch forces use_rand off, and one offset per cell is drawn for each layer call with r > 0.
 * - Grids with no complete sx x sy cell (h < sy or w < sx) make tomesd fail (max over 0 dst tokens); here the
 *   block is left unmerged.
 */
import { AtedmError } from "../errors.js";
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { AttentionBlockCost, AttentionBlockInfo, GraphInput, LatentSize, TransformerRunner } from "../models/pruning_hook.js";
import { denseRunner } from "../models/transformer_2d.js";
import { blockTokens } from "../models/unet_structure.js";
import { i64, type Tensor } from "../runtime/session.js";
import { Mulberry32 } from "../util/numerics.js";

export interface Partition {
  /** Token indices of dst tokens (tomesd `b_idx`), ascending. */
  dst: number[];
  /** Token indices of src tokens (tomesd `a_idx`), ascending. */
  src: number[];
}

/**
 * dst / src tokens of an h x w grid (token = y * w + x) for strides sx, sy. `cells` gives the dst offset of
 * each of the hsy * wsx cells in row-major cell order (tomesd's `rand_idx`); omitted = all 0 (no_rand).
 */
export function partition(h: number, w: number, sx: number, sy: number, cells?: ArrayLike<number>): Partition {
  const hsy = Math.floor(h / sy);
  const wsx = Math.floor(w / sx);
  if (cells && cells.length !== hsy * wsx) throw new AtedmError(`ToMe partition: ${cells.length} cells, expected ${hsy * wsx}`);
  const isDst = new Uint8Array(h * w);
  for (let i = 0; i < hsy; i++) {
    for (let j = 0; j < wsx; j++) {
      const c = cells ? cells[i * wsx + j]! : 0;
      if (!(c >= 0 && c < sx * sy)) throw new AtedmError(`ToMe partition: cell offset ${c} out of [0, ${sx * sy})`);
      const y = i * sy + Math.floor(c / sx);
      const x = j * sx + (c % sx);
      isDst[y * w + x] = 1;
    }
  }
  const dst: number[] = [];
  const src: number[] = [];
  for (let t = 0; t < h * w; t++) (isDst[t] ? dst : src).push(t);
  return { dst, src };
}

export interface TomeOptions {
  /** Fraction of each merged block's tokens removed by merging, r = floor(N * ratio); tomesd's max is 1 - 1/(sx*sy). */
  ratio: number;
  /** Merge only in blocks whose feature map is downsampled at most this much (1, 2, 4, 8). Default 1. */
  maxDownsample: number;
  /** Horizontal stride of the dst grid (one dst per sx x sy cell). Default 2. */
  sx: number;
  /** Vertical stride of the dst grid. Default 2. */
  sy: number;
  /** Random dst position inside each cell (else top-left). Default true, as tomesd; forced off for odd batches. */
  useRand: boolean;
  /** Seed of the cell-position stream when the caller passes no `TomeRng`. Default 0. */
  seed: number;
  /** Merge around self-attention (attn1). Default true. */
  mergeAttn: boolean;
  /** Merge around cross-attention (attn2). Default false. */
  mergeCrossattn: boolean;
  /** Merge around the feed-forward (ff). Default false. */
  mergeMlp: boolean;
}

export const TOME_DEFAULTS: Readonly<Omit<TomeOptions, "ratio">> = {
  maxDownsample: 1,
  sx: 2,
  sy: 2,
  useRand: true,
  seed: 0,
  mergeAttn: true,
  mergeCrossattn: false,
  mergeMlp: false,
};

export type TomeOptionsInput = Partial<TomeOptions> & { ratio: number };

export function resolveTomeOptions(o: TomeOptionsInput): TomeOptions {
  const opts: TomeOptions = { ...TOME_DEFAULTS, ...o };
  checkRatio(opts.ratio);
  for (const k of ["sx", "sy", "maxDownsample"] as const) {
    if (!(Number.isInteger(opts[k]) && opts[k] >= 1)) throw new AtedmError(`ToMe: ${k} must be a positive integer, got ${opts[k]}`);
  }
  return opts;
}

function checkRatio(ratio: number): void {
  if (!(ratio >= 0 && ratio < 1)) throw new AtedmError(`ToMe: ratio must be in [0, 1), got ${ratio}`);
}

/** Seeded stream for use_rand cell positions (mulberry32; not torch's generator). */
export class TomeRng {
  private readonly stream: Mulberry32;
  constructor(seed: number) {
    this.stream = new Mulberry32(seed);
  }
  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    return Math.min(n - 1, Math.floor(this.stream.next() * n));
  }
}

/** Whether the graph built by `tomeRunner` carries a ToMe path for `block` (else the block runs dense). */
export function tomeApplies(block: AttentionBlockInfo, options: Partial<TomeOptions> = {}): boolean {
  const o = { ...TOME_DEFAULTS, ...options };
  return block.downsample <= o.maxDownsample && (o.mergeAttn || o.mergeCrossattn || o.mergeMlp);
}

/** tomesd's compute_merge geometry for one block. */
export interface TomeGeometry {
  /** Tokens of the block's feature map (`blockTokens`). */
  tokens: number;
  /** tomesd's factor ceil(sqrt(latent_tokens // N)). */
  downsample: number;
  /** tomesd's grid, ceil(latent / downsample); equals the real feature map for all but degenerate sizes. */
  h: number;
  w: number;
  /** downsample <= maxDownsample. */
  merges: boolean;
}

export function tomeGeometry(block: AttentionBlockInfo, latent: LatentSize, maxDownsample: number): TomeGeometry {
  const tokens = blockTokens(latent, block);
  const downsample = Math.ceil(Math.sqrt(Math.floor((latent.height * latent.width) / tokens)));
  const h = Math.ceil(latent.height / downsample);
  const w = Math.ceil(latent.width / downsample);
  return { tokens, downsample, h, w, merges: downsample <= maxDownsample };
}

/** The merge plan of one block for one U-Net call: r and one dst/src partition per transformer layer. */
export interface TomeBlockPlan {
  geometry: TomeGeometry;
  /** Tokens merged per layer (0: merge and unmerge are identities). */
  r: number;
  /** One partition per layer (`block.depth`); with r = 0 the trivial one (dst = last token). */
  layers: Partition[];
}

export interface TomeCallContext {
  /** U-Net batch size (an odd batch forces use_rand off, as in tomesd). */
  batch: number;
  /** Cell-position stream, shared across blocks and steps; default: a fresh `TomeRng(options.seed)`. */
  rng?: TomeRng;
}

/** Plan one block: tomesd's gating, r = floor(N * ratio) capped at the src count, and the partitions. */
export function tomePlan(
  block: AttentionBlockInfo,
  latent: LatentSize,
  ratio: number,
  options: Partial<TomeOptions> = {},
  call: TomeCallContext = { batch: 2 },
): TomeBlockPlan {
  const o = { ...TOME_DEFAULTS, ...options };
  checkRatio(ratio);
  const geo = tomeGeometry(block, latent, o.maxDownsample);
  const N = geo.tokens;
  const trivial: Partition = { dst: [N - 1], src: Array.from({ length: N - 1 }, (_, i) => i) };
  const identity = (): TomeBlockPlan => ({ geometry: geo, r: 0, layers: new Array(block.depth).fill(trivial) });
  const rWanted = Math.floor(N * ratio);
  if (!geo.merges || rWanted <= 0 || !(o.mergeAttn || o.mergeCrossattn || o.mergeMlp)) return identity();
  if (!tomeApplies(block, o)) {
    throw new AtedmError(
      `ToMe: tomesd would merge ${block.path} (downsample ${geo.downsample} <= ${o.maxDownsample} for a ` +
        `${latent.height}x${latent.width} latent) but its nominal downsample ${block.downsample} keeps it dense in the graph`,
    );
  }
  if (geo.h * geo.w !== N) {
    throw new AtedmError(`ToMe: ${block.path}: tomesd grid ${geo.h}x${geo.w} does not cover the ${N} tokens (tomesd fails too)`);
  }
  const hsy = Math.floor(geo.h / o.sy);
  const wsx = Math.floor(geo.w / o.sx);
  if (hsy * wsx === 0) return identity();
  const r = Math.min(rWanted, N - hsy * wsx);
  const useRand = o.useRand && call.batch % 2 === 0;
  const rng = useRand ? (call.rng ?? new TomeRng(o.seed)) : undefined;
  const layers: Partition[] = [];
  for (let l = 0; l < block.depth; l++) {
    const cells = rng ? Array.from({ length: hsy * wsx }, () => rng.nextInt(o.sx * o.sy)) : undefined;
    layers.push(partition(geo.h, geo.w, o.sx, o.sy, cells));
  }
  return { geometry: geo, r, layers };
}

const inputName = (block: AttentionBlockInfo, what: "r" | "src" | "dst") => `tome.${block.path}.${what}`;

/** Tap name of a transformer layer's output under a ToMe runner (request it in UNetGraphOptions.taps). */
export const tomeTapName = (layerPath: string) => `tome.${layerPath}.output`;

/** Graph input declarations (UNetGraphOptions.extraInputs) for the blocks a tomeRunner(options) merges. */
export function tomeInputs(blocks: readonly AttentionBlockInfo[], options: Partial<TomeOptions> = {}): GraphInput[] {
  return blocks
    .filter((b) => tomeApplies(b, options))
    .flatMap((b) => [
      { name: inputName(b, "r"), dtype: "int64" as const, shape: [1] },
      { name: inputName(b, "src"), dtype: "int64" as const, shape: [b.depth, `${inputName(b, "src")}.n`] },
      { name: inputName(b, "dst"), dtype: "int64" as const, shape: [b.depth, `${inputName(b, "dst")}.n`] },
    ]);
}

function packed(plan: TomeBlockPlan): { r: number[]; src: number[]; dst: number[]; nSrc: number; nDst: number } {
  const nSrc = plan.layers[0]!.src.length;
  const nDst = plan.layers[0]!.dst.length;
  return { r: [plan.r], src: plan.layers.flatMap((p) => p.src), dst: plan.layers.flatMap((p) => p.dst), nSrc, nDst };
}

/** Feeds of one block for one call at `ratio` (empty for blocks the graph runs dense). */
export function tomeFeeds(
  block: AttentionBlockInfo,
  latent: LatentSize,
  ratio: number,
  options: Partial<TomeOptions> = {},
  call: TomeCallContext = { batch: 2 },
): Record<string, Tensor> {
  const plan = tomePlan(block, latent, ratio, options, call); // throws where tomesd would merge a dense block
  if (!tomeApplies(block, options)) return {};
  const p = packed(plan);
  return {
    [inputName(block, "r")]: i64(p.r, [1]),
    [inputName(block, "src")]: i64(p.src, [block.depth, p.nSrc]),
    [inputName(block, "dst")]: i64(p.dst, [block.depth, p.nDst]),
  };
}

/**
 * Feeds of every block for one call; `ratio` may differ per block (DSAP-style schedules). One rng is shared
 * by all blocks (pass the same `call.rng` across steps for a fresh draw each step).
 */
export function tomeFeedsAll(
  blocks: readonly AttentionBlockInfo[],
  latent: LatentSize,
  ratio: number | ((block: AttentionBlockInfo) => number),
  options: Partial<TomeOptions> = {},
  call: TomeCallContext = { batch: 2 },
): Record<string, Tensor> {
  const o = { ...TOME_DEFAULTS, ...options };
  const shared: TomeCallContext = { ...call, rng: call.rng ?? new TomeRng(o.seed) };
  const feeds: Record<string, Tensor> = {};
  for (const b of blocks) Object.assign(feeds, tomeFeeds(b, latent, typeof ratio === "number" ? ratio : ratio(b), o, shared));
  return feeds;
}

/** The sub-layers a ToMe runner merges around. */
export type TomeMerges = Pick<TomeOptions, "mergeAttn" | "mergeCrossattn" | "mergeMlp">;

/**
 * What `tomeRunner` executes in a block of N tokens that merges r per layer with `nDst` dst tokens (1 for the
 * trivial partition of r = 0): every layer runs its merged sub-layers on N - r tokens (attn1 with mergeAttn,
 * attn2's queries with mergeCrossattn, ff with mergeMlp), the others and proj_out on N. Overhead: each layer's
 * bipartite matching, the cosine similarity of its src to its dst tokens, (N - nDst) nDst C multiply-adds.
 */
export function tomeBlockCost(block: AttentionBlockInfo, N: number, nDst: number, r: number, merges: TomeMerges): AttentionBlockCost {
  const m = N - r;
  const layer = { attn1: merges.mergeAttn ? m : N, attn2: merges.mergeCrossattn ? m : N, ff: merges.mergeMlp ? m : N };
  return {
    layers: Array.from({ length: block.depth }, () => ({ ...layer })),
    projOut: N,
    kept: m,
    merged: r,
    pruningPoint: null,
    overhead: { score: 0, recovery: 0, matching: block.depth * (N - nDst) * nDst * block.channels, byModule: {} },
  };
}

/** merge / unmerge built in a graph from one matching. */
export interface MatchingGraph {
  /** (B, N, C') -> (B, N - r, C'). */
  merge(y: Value): Value;
  /** (B, N - r, C') -> (B, N, C'). */
  unmerge(z: Value): Value;
}

/**
 * bipartite_soft_matching in ONNX. `metric` (B, N, C) float; `src` (n_src) and `dst` (n_dst) int64 token
 * indices forming a partition of the N tokens, `src` ascending; `r` int64 [1] with 0 <= r <= n_src.
 */
export function bipartiteMatchingGraph(g: GraphBuilder, metric: Value, src: Value, dst: Value, r: Value): MatchingGraph {
  const dim = (v: Value, i: number) => g.op("Shape", [v], { start: i, end: i + 1 });
  const B = dim(metric, 0);
  const N = dim(metric, 1);
  const nSrc = g.op("Shape", [src]);
  const nDst = g.op("Shape", [dst]);
  const big = g.constant([Number.MAX_SAFE_INTEGER], "int64", [1]);

  // Cosine similarity of every src token to every dst token: (B, n_src, n_dst).
  const m = g.op("Div", [metric, g.op("ReduceL2", [metric], { axes: [-1], keepdims: 1 })]);
  const a = g.op("Gather", [m, src], { axis: 1 });
  const b = g.op("Gather", [m, dst], { axis: 1 });
  const scores = g.op("MatMul", [a, g.op("Transpose", [b], { perm: [0, 2, 1] })]);
  // keepdims 1 + Squeeze: ONNX Runtime keeps the reduced axis of an empty input with keepdims 0 (a 1-token block).
  const last = g.ints([2]);
  const nodeMax = g.op("Squeeze", [g.op("ReduceMax", [scores], { axes: [-1], keepdims: 1 }), last]);
  const nodeIdx = g.op("Squeeze", [g.op("ArgMax", [scores], { axis: -1, keepdims: 1 }), last]);
  // Rank src tokens by their best similarity, descending (ties: lower position first).
  const [, edge] = g.opN("TopK", [nodeMax, nSrc], 2, { axis: -1, largest: 1, sorted: 1 });
  const srcRank = g.op("Slice", [edge!, g.ints([0]), r, g.ints([1])]);
  const unmRank = g.op("Slice", [edge!, r, big, g.ints([1])]);
  const nUnm = g.op("Sub", [nSrc, r]);
  // Unmerged tokens in position order (src is ascending), so r = 0 with a trivial partition is an identity.
  const [unmSorted] = g.opN("TopK", [unmRank, nUnm], 2, { axis: -1, largest: 0, sorted: 1 });
  const dstOf = g.op("GatherElements", [nodeIdx, srcRank], { axis: 1 });
  const unmTok = g.op("Gather", [src, unmSorted!], { axis: 0 });
  const srcTok = g.op("Gather", [src, srcRank], { axis: 0 });

  const expand = (idx: Value, like: Value) =>
    g.op("Expand", [g.op("Unsqueeze", [idx, g.ints([2])]), g.op("Concat", [g.op("Shape", [idx]), dim(like, 2)], { axis: 0 })]);
  // 1 + number of src merged into each dst (scatter_reduce "mean" includes the dst itself).
  const ones = (shape: Value) => g.op("Expand", [g.constant(1, "float32"), shape]);
  const count = g.op("ScatterElements", [ones(g.op("Concat", [B, nDst], { axis: 0 })), dstOf, ones(g.op("Shape", [dstOf]))], {
    axis: 1,
    reduction: "add",
  });
  const count3 = g.op("Unsqueeze", [count, g.ints([2])]);
  // Where each row of [unmerged | merged src | dst] goes back to: (B, N).
  const dstB = g.op("Expand", [g.op("Unsqueeze", [dst, g.ints([0])]), g.op("Concat", [B, nDst], { axis: 0 })]);
  const back = g.op("Concat", [unmTok, srcTok, dstB], { axis: 1 });

  return {
    merge(y) {
      const unm = g.op("GatherElements", [y, expand(unmTok, y)], { axis: 1 });
      const merged = g.op("GatherElements", [y, expand(srcTok, y)], { axis: 1 });
      const d = g.op("Gather", [y, dst], { axis: 1 });
      const sum = g.op("ScatterElements", [d, expand(dstOf, y), merged], { axis: 1, reduction: "add" });
      return g.op("Concat", [unm, g.op("Div", [sum, count3])], { axis: 1 });
    },
    unmerge(z) {
      const unm = g.op("Slice", [z, g.ints([0]), nUnm, g.ints([1])]);
      const d = g.op("Slice", [z, nUnm, big, g.ints([1])]);
      const copies = g.op("GatherElements", [d, expand(dstOf, z)], { axis: 1 });
      const rows = g.op("Concat", [unm, copies, d], { axis: 1 });
      const zeros = g.op("Expand", [g.constant(0, "float32"), g.op("Concat", [B, N, dim(z, 2)], { axis: 0 })]);
      return g.op("ScatterElements", [zeros, expand(back, z), rows], { axis: 1 });
    },
  };
}

/** A fixed latent size and batch, to bake the plan into the graph as constants. */
export interface TomeFixedCall extends LatentSize {
  batch: number;
}

/**
 * The ToMe TransformerRunner. Without `fixed`, it reads r and the partitions from graph inputs (declare
 * `tomeInputs(blocks, options)`, feed `tomeFeeds`/`tomeFeedsAll`); with `fixed`, it bakes the plan for that
 * latent size, batch and `options.ratio` as constants. Blocks with `block.downsample > maxDownsample` run dense.
 * Each layer's output can be tapped as `tomeTapName(layer.path)`.
 */
export function tomeRunner(options: TomeOptionsInput, fixed?: TomeFixedCall): TransformerRunner {
  const o = resolveTomeOptions(options);
  const rng = new TomeRng(o.seed);
  return (ctx) => {
    const { g, block, layers } = ctx;
    if (!tomeApplies(block, o)) {
      if (fixed) tomePlan(block, fixed, o.ratio, o, { batch: fixed.batch, rng }); // same consistency check as tomeFeeds
      return denseRunner(ctx);
    }
    let rV: Value;
    let srcAll: Value;
    let dstAll: Value;
    if (fixed) {
      const p = packed(tomePlan(block, fixed, o.ratio, o, { batch: fixed.batch, rng }));
      rV = g.constant(p.r, "int64", [1]);
      srcAll = g.constant(p.src, "int64", [block.depth, p.nSrc]);
      dstAll = g.constant(p.dst, "int64", [block.depth, p.nDst]);
    } else {
      rV = { name: inputName(block, "r") };
      srcAll = { name: inputName(block, "src") };
      dstAll = { name: inputName(block, "dst") };
    }
    const none = (v: Value) => v;
    let x = ctx.tokens;
    layers.forEach((L, l) => {
      const at = g.constant(l, "int64");
      const mg = bipartiteMatchingGraph(g, x, g.op("Gather", [srcAll, at], { axis: 0 }), g.op("Gather", [dstAll, at], { axis: 0 }), rV);
      const [ma, ua] = o.mergeAttn ? [mg.merge, mg.unmerge] : [none, none];
      const [mc, uc] = o.mergeCrossattn ? [mg.merge, mg.unmerge] : [none, none];
      const [mm, um] = o.mergeMlp ? [mg.merge, mg.unmerge] : [none, none];
      x = g.op("Add", [ua(L.attn1(ma(L.norm1(x))).out), x]);
      x = g.op("Add", [uc(L.attn2(mc(L.norm2(x)))), x]);
      x = g.op("Add", [um(L.ff(mm(L.norm3(x)))), x]);
      ctx.tap(tomeTapName(L.path), x);
    });
    return ctx.projOut(x);
  };
}
