/**
 * A float64 Transformer2DModel (diffusers) and the AT-EDM composition of SPEC-atedm.md on top of it: the oracle
 * for block-level tests of the ONNX graph (buildAttentionBlockGraph + atedmRunner). Plain loops, one batch element
 * at a time, written to mirror diffusers line by line, not for speed (fine for N ~ 30 tokens).
 *
 * Layouts: feature maps (C, N) per element with token n = y * W + x (NCHW flattened); tokens (n, C) row-major.
 * Weights are read from the checkpoint (F32) and widened to float64 exactly.
 */
import type { TensorSource } from "../../src/io/safetensors.js";
import type { AttentionBlockInfo, UNetConfig } from "../../src/models/unet_structure.js";
import * as ref from "../../src/pruning/atedm_reference.js";

/** erf to ~1e-15: Maclaurin series below 3, the erfc continued fraction above. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-18 * Math.abs(sum)) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    // erfc x = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))
    let f = ax;
    for (let n = 80; n >= 1; n--) f = ax + n / 2 / f;
    r = 1 - Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * f);
  }
  return x < 0 ? -r : r;
}

/** torch's default (exact, erf) GELU. */
export const geluExact = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

/** torch.nn.Linear in float64: y (n, out) = x (n, in) W^T + b. */
class Linear {
  constructor(
    readonly W: Float64Array,
    readonly b: Float64Array | null,
    readonly out: number,
    readonly inp: number,
  ) {}
  apply(x: ArrayLike<number>, n: number): Float64Array {
    const { W, b, out, inp } = this;
    if (x.length !== n * inp) throw new Error(`linear: input has ${x.length} values, expected ${n} x ${inp}`);
    const y = new Float64Array(n * out);
    for (let r = 0; r < n; r++) {
      for (let o = 0; o < out; o++) {
        let acc = b ? b[o]! : 0;
        for (let i = 0; i < inp; i++) acc += x[r * inp + i]! * W[o * inp + i]!;
        y[r * out + o] = acc;
      }
    }
    return y;
  }
}

/** torch.nn.LayerNorm over the last axis (biased variance). */
function layerNorm(x: Float64Array, n: number, C: number, gamma: Float64Array, beta: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(n * C);
  for (let r = 0; r < n; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c]!;
    mean /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - mean) ** 2;
    const inv = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c]! - mean) * inv * gamma[c]! + beta[c]!;
  }
  return y;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  const y = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) y[i] = a[i]! + b[i]!;
  return y;
}

interface Attn {
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
}

interface LayerWeights {
  norm1: [Float64Array, Float64Array];
  norm2: [Float64Array, Float64Array];
  norm3: [Float64Array, Float64Array];
  attn1: Attn;
  attn2: Attn;
  ffProj: Linear;
  ffOut: Linear;
}

export interface AttentionOut {
  /** After to_out.0, before the residual: (n, C). */
  out: Float64Array;
  /** softmax(Q K^T / sqrt(head_dim)) per head, each (n, m) row-major. */
  probs: Float64Array[];
}

/** One Transformer2DModel of a UNet2DConditionModel in float64, split into the sub-layers AT-EDM composes. */
export class ReferenceBlock {
  readonly C: number;
  readonly heads: number;
  readonly headDim: number;
  readonly depth: number;
  readonly groups: number;
  readonly D: number;
  private readonly gn: [Float64Array, Float64Array];
  private readonly projIn: Linear;
  private readonly projOutW: Linear;
  private readonly layers: LayerWeights[] = [];

  constructor(
    cfg: UNetConfig,
    private readonly store: TensorSource,
    readonly block: AttentionBlockInfo,
  ) {
    this.C = block.channels;
    this.heads = block.heads;
    this.headDim = this.C / this.heads;
    this.depth = block.depth;
    this.groups = cfg.norm_num_groups;
    this.D = cfg.cross_attention_dim;
    const p = block.path;
    this.gn = [this.w(`${p}.norm.weight`), this.w(`${p}.norm.bias`)];
    this.projIn = this.lin(`${p}.proj_in`, true);
    this.projOutW = this.lin(`${p}.proj_out`, true);
    for (let l = 0; l < this.depth; l++) {
      const lp = `${p}.transformer_blocks.${l}`;
      const norm = (n: string): [Float64Array, Float64Array] => [this.w(`${lp}.${n}.weight`), this.w(`${lp}.${n}.bias`)];
      const attn = (a: string): Attn => ({
        q: this.lin(`${lp}.${a}.to_q`),
        k: this.lin(`${lp}.${a}.to_k`),
        v: this.lin(`${lp}.${a}.to_v`),
        o: this.lin(`${lp}.${a}.to_out.0`),
      });
      this.layers.push({
        norm1: norm("norm1"),
        norm2: norm("norm2"),
        norm3: norm("norm3"),
        attn1: attn("attn1"),
        attn2: attn("attn2"),
        ffProj: this.lin(`${lp}.ff.net.0.proj`),
        ffOut: this.lin(`${lp}.ff.net.2`),
      });
    }
  }

  private w(name: string): Float64Array {
    return Float64Array.from(this.store.readF32(name));
  }

  /** A Linear, or a 1x1 Conv2d read as one ((o, i, 1, 1) is (o, i) row-major). Bias when the checkpoint has one. */
  private lin(prefix: string, mustHaveBias = false): Linear {
    const shape = this.store.info(`${prefix}.weight`).shape;
    if (shape.length === 4 && (shape[2] !== 1 || shape[3] !== 1)) throw new Error(`${prefix}: not a 1x1 conv`);
    const hasBias = this.store.has(`${prefix}.bias`);
    if (mustHaveBias && !hasBias) throw new Error(`${prefix}: bias expected`);
    return new Linear(this.w(`${prefix}.weight`), hasBias ? this.w(`${prefix}.bias`) : null, shape[0]!, shape[1]!);
  }

  /** GroupNorm (eps 1e-6) on x (C, N), then proj_in: tokens (N, C). */
  tokensIn(x: ArrayLike<number>, N: number): Float64Array {
    const { C, groups } = this;
    const [gamma, beta] = this.gn;
    const cpg = C / groups;
    const normed = new Float64Array(N * C); // already transposed to (N, C)
    for (let g = 0; g < groups; g++) {
      let mean = 0;
      for (let c = g * cpg; c < (g + 1) * cpg; c++) for (let n = 0; n < N; n++) mean += x[c * N + n]!;
      mean /= cpg * N;
      let v = 0;
      for (let c = g * cpg; c < (g + 1) * cpg; c++) for (let n = 0; n < N; n++) v += (x[c * N + n]! - mean) ** 2;
      const inv = 1 / Math.sqrt(v / (cpg * N) + 1e-6);
      for (let c = g * cpg; c < (g + 1) * cpg; c++) {
        for (let n = 0; n < N; n++) normed[n * C + c] = (x[c * N + n]! - mean) * inv * gamma[c]! + beta[c]!;
      }
    }
    return this.projIn.apply(normed, N);
  }

  norm(l: number, which: 1 | 2 | 3, x: Float64Array, n: number): Float64Array {
    const L = this.layers[l]!;
    const [g, b] = which === 1 ? L.norm1 : which === 2 ? L.norm2 : L.norm3;
    return layerNorm(x, n, this.C, g, b, 1e-5);
  }

  /** Multi-head attention of queries h (n, C) over the key/value source kv (m, *). */
  private attention(a: Attn, h: Float64Array, n: number, kv: ArrayLike<number>, m: number): AttentionOut {
    const { heads, headDim: dh, C } = this;
    const q = a.q.apply(h, n);
    const k = a.k.apply(kv, m);
    const v = a.v.apply(kv, m);
    const scale = 1 / Math.sqrt(dh);
    const merged = new Float64Array(n * C);
    const probs: Float64Array[] = [];
    for (let hh = 0; hh < heads; hh++) {
      const P = new Float64Array(n * m);
      for (let i = 0; i < n; i++) {
        let max = -Infinity;
        for (let j = 0; j < m; j++) {
          let dot = 0;
          for (let d = 0; d < dh; d++) dot += q[i * C + hh * dh + d]! * k[j * C + hh * dh + d]!;
          P[i * m + j] = dot * scale;
          max = Math.max(max, P[i * m + j]!);
        }
        let sum = 0;
        for (let j = 0; j < m; j++) sum += P[i * m + j] = Math.exp(P[i * m + j]! - max);
        for (let j = 0; j < m; j++) P[i * m + j]! /= sum;
        for (let d = 0; d < dh; d++) {
          let acc = 0;
          for (let j = 0; j < m; j++) acc += P[i * m + j]! * v[j * C + hh * dh + d]!;
          merged[i * C + hh * dh + d] = acc;
        }
      }
      probs.push(P);
    }
    return { out: a.o.apply(merged, n), probs };
  }

  /** attn1 (self-attention) of layer l on h = norm1(x): (n, C) and its probabilities (n, n) per head. */
  selfAttention(l: number, h: Float64Array, n: number): AttentionOut {
    return this.attention(this.layers[l]!.attn1, h, n, h, n);
  }

  /** attn2 (cross-attention) of layer l on h = norm2(x) over the text tokens ctx (Lt, D). */
  crossAttention(l: number, h: Float64Array, n: number, ctx: ArrayLike<number>, Lt: number): AttentionOut {
    return this.attention(this.layers[l]!.attn2, h, n, ctx, Lt);
  }

  /** GEGLU feed-forward of layer l on h = norm3(x): proj -> [hidden | gate] -> hidden * gelu(gate) -> Linear. */
  feedForward(l: number, h: Float64Array, n: number): Float64Array {
    const L = this.layers[l]!;
    const proj = L.ffProj.apply(h, n);
    const inner = L.ffProj.out / 2;
    const act = new Float64Array(n * inner);
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < inner; c++) act[r * inner + c] = proj[r * 2 * inner + c]! * geluExact(proj[r * 2 * inner + inner + c]!);
    }
    return L.ffOut.apply(act, n);
  }

  /** x + attn1(norm1(x)), with layer l's self-attention probabilities. */
  selfResidual(l: number, x: Float64Array, n: number): { x: Float64Array; probs: Float64Array[] } {
    const a = this.selfAttention(l, this.norm(l, 1, x, n), n);
    return { x: add(a.out, x), probs: a.probs };
  }

  /** x + attn2(norm2(x), ctx), with layer l's cross-attention probabilities. */
  crossResidual(l: number, x: Float64Array, n: number, ctx: ArrayLike<number>, Lt: number): { x: Float64Array; probs: Float64Array[] } {
    const a = this.crossAttention(l, this.norm(l, 2, x, n), n, ctx, Lt);
    return { x: add(a.out, x), probs: a.probs };
  }

  /** x + ff(norm3(x)). */
  ffResidual(l: number, x: Float64Array, n: number): Float64Array {
    return add(this.feedForward(l, this.norm(l, 3, x, n), n), x);
  }

  /** One whole BasicTransformerBlock. */
  layer(l: number, x: Float64Array, n: number, ctx: ArrayLike<number>, Lt: number): Float64Array {
    x = this.selfResidual(l, x, n).x;
    x = this.crossResidual(l, x, n, ctx, Lt).x;
    return this.ffResidual(l, x, n);
  }

  /** proj_out on any token set (n, C). */
  projOut(x: Float64Array, n: number): Float64Array {
    return this.projOutW.apply(x, n);
  }

  /** Branch output (N, C) back to (C, N), plus the block input x (C, N). */
  residual(branch: Float64Array, x: ArrayLike<number>, N: number): Float64Array {
    const { C } = this;
    const y = new Float64Array(C * N);
    for (let c = 0; c < C; c++) for (let n = 0; n < N; n++) y[c * N + n] = branch[n * C + c]! + x[c * N + n]!;
    return y;
  }
}

/** Block inputs: hidden_states (B, C, H, W) and encoder_hidden_states (B, Lt, D), float32 as fed to the graph. */
export interface BlockInputs {
  x: Float32Array;
  ctx: Float32Array;
  B: number;
  H: number;
  W: number;
  Lt: number;
}

const elem = (a: Float32Array, b: number, size: number) => a.subarray(b * size, (b + 1) * size);

/** The unpruned Transformer2DModel on the whole batch: (B, C, H, W). */
export function denseBlockReference(blk: ReferenceBlock, inp: BlockInputs): Float64Array {
  const { B, H, W, Lt } = inp;
  const N = H * W;
  const out = new Float64Array(B * blk.C * N);
  for (let b = 0; b < B; b++) {
    const x = elem(inp.x, b, blk.C * N);
    const ctx = elem(inp.ctx, b, Lt * blk.D);
    let t = blk.tokensIn(x, N);
    for (let l = 0; l < blk.depth; l++) t = blk.layer(l, t, N, ctx, Lt);
    out.set(blk.residual(blk.projOut(t, N), x, N), b * blk.C * N);
  }
  return out;
}

export interface AtedmReferenceOptions {
  score: "gwpr" | "gwpr-rms" | "column-mean" | "cross-gwpr" | "random" | "feature-norm";
  recovery: "copy" | "copy-delta" | "cosine" | "nearest" | "zero" | "copy-col" | "copy-sym";
  pruningPoint: "after-layer1" | "after-attn1";
  maskSharing: "per-element" | "conditional";
  /** G-WPR iterations K (default 10) and damping (default 0). */
  iterations?: number;
  damping?: number;
}

export interface AtedmReferenceResult {
  /** Block output (B, C, H, W). */
  out: Float64Array;
  /** The score each element ranks by (after mask sharing): what the graph exposes as its score output. */
  scores: Float64Array[];
  /** Keep indices per element, ascending. */
  keep: number[][];
  /** keepBoundaryGap of each element's ranking score. */
  gaps: number[];
  /** recoveryMargin per element (copy, copy-delta, copy-col, copy-sym, cosine); null where the choice is exact (nearest) or absent (zero). */
  margins: Array<number | null>;
}

/**
 * SPEC steps 1-5 on one attention block, in float64: layer 1's self-attention on all N tokens -> score -> keep set of
 * k tokens -> at the pruning point gather the kept tokens -> the remaining sub-layers and layers on kept tokens only
 * (cross-attention still sees every text token) -> proj_out on kept tokens -> recovery -> + the block input.
 * `random` (B, N): the scores of the `random` variant (the same values the graph is fed).
 */
export function atedmBlockReference(
  blk: ReferenceBlock,
  inp: BlockInputs,
  o: AtedmReferenceOptions,
  k: number,
  random?: Float32Array,
): AtedmReferenceResult {
  const { B, H, W, Lt } = inp;
  const { C } = blk;
  const N = H * W;
  const so = { iterations: o.iterations ?? 10, damping: o.damping ?? 0 };
  // Step 1 (+ the rest of layer 1 on all tokens when pruning after layer 1) and step 2, per element.
  const pre = Array.from({ length: B }, (_, b) => {
    const ctx = elem(inp.ctx, b, Lt * blk.D);
    const t0 = blk.tokensIn(elem(inp.x, b, C * N), N);
    const s = blk.selfResidual(0, t0, N);
    const P = s.probs;
    let x1 = s.x;
    let cross: Float64Array[] | undefined;
    if (o.pruningPoint === "after-layer1") {
      const c = blk.crossResidual(0, x1, N, ctx, Lt);
      cross = c.probs;
      x1 = blk.ffResidual(0, c.x, N);
    } else {
      cross = blk.crossAttention(0, blk.norm(0, 2, x1, N), N, ctx, Lt).probs;
    }
    let score: Float64Array;
    switch (o.score) {
      case "gwpr":
        score = ref.gwpr(P, N, so);
        break;
      case "column-mean":
        score = ref.gwpr(P, N, { ...so, iterations: 1 });
        break;
      case "gwpr-rms":
        score = ref.gwprRms(P, N, so);
        break;
      case "cross-gwpr":
        score = ref.crossGwpr(cross, N, Lt);
        break;
      case "random":
        if (!random || random.length !== B * N) throw new Error("random scores (B, N) required");
        score = Float64Array.from(elem(random, b, N));
        break;
      case "feature-norm":
        score = ref.featureNorm(x1, N, C);
        break;
    }
    return { ctx, A: ref.headMean(P, N), x1, score };
  });
  // Step 3: keep sets (mask sharing picks which element's score ranks).
  const scores = ref.sharedScores(
    pre.map((p) => p.score),
    o.maskSharing,
  );
  const keep = scores.map((s) => ref.keepSet(s, k));
  const gaps = scores.map((s) => ref.keepBoundaryGap(s, k));
  const out = new Float64Array(B * C * N);
  const margins: Array<number | null> = [];
  for (let b = 0; b < B; b++) {
    const { ctx, A, x1 } = pre[b]!;
    const kb = keep[b]!;
    // Step 4: gather at the pruning point; the rest of the block on kept tokens.
    let kept = ref.gatherRows(x1, kb, C);
    if (o.pruningPoint === "after-attn1") {
      kept = blk.crossResidual(0, kept, k, ctx, Lt).x;
      kept = blk.ffResidual(0, kept, k);
    }
    for (let l = 1; l < blk.depth; l++) kept = blk.layer(l, kept, k, ctx, Lt);
    // Step 5: proj_out on kept tokens and recovery.
    let branch: Float64Array;
    switch (o.recovery) {
      case "copy":
      case "copy-col":
      case "copy-sym":
      case "cosine":
      case "nearest": {
        const src = ref.recoverySources(o.recovery, kb, N, { A, x1, C, W });
        branch = ref.copyRefill(blk.projOut(kept, k), src, C);
        margins.push(o.recovery === "nearest" ? null : ref.recoveryMargin(o.recovery, kb, N, { A, x1, C }));
        break;
      }
      case "copy-delta": {
        const src = ref.recoverySources("copy", kb, N, { A });
        branch = blk.projOut(ref.copyDeltaRefill(x1, kept, kb, src, N, C), N);
        margins.push(ref.recoveryMargin("copy", kb, N, { A }));
        break;
      }
      case "zero":
        branch = ref.zeroRefill(blk.projOut(kept, k), kb, N, C);
        margins.push(null);
        break;
    }
    out.set(blk.residual(branch, elem(inp.x, b, C * N), N), b * C * N);
  }
  return { out, scores, keep, gaps, margins };
}
