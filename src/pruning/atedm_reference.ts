/**
 * AT-EDM's ranking and recovery in plain float64 TypeScript, one batch element at a time: the test oracle for
 * the ONNX implementation in atedm.ts. Written for clarity, not speed (O(K N^2) loops).
 *
 * Maps are row-major: P[h][i][j] = probability that query token i attends to key token j.
 */

export interface ScoreOptions {
  /** G-WPR iterations K (default 10). */
  iterations: number;
  /** Damping d: s <- (1 - d) A^T s + d / N (default 0). */
  damping: number;
}

/** Head-mean attention map A = mean_h P[h], (N, N). */
export function headMean(P: Float64Array[], N: number): Float64Array {
  const A = new Float64Array(N * N);
  for (const Ph of P) for (let t = 0; t < N * N; t++) A[t]! += Ph[t]! / P.length;
  return A;
}

/** One G-WPR iteration: s'[j] = (1 - d) sum_i A[i, j] s[i] + d / N. */
function wprStep(A: Float64Array, s: Float64Array, N: number, d: number): Float64Array {
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const si = s[i]!;
    for (let j = 0; j < N; j++) out[j]! += A[i * N + j]! * si;
  }
  for (let j = 0; j < N; j++) out[j] = (1 - d) * out[j]! + d / N;
  return out;
}

/** G-WPR (default): iterate on the head-mean map from s0 = 1/N. */
export function gwpr(P: Float64Array[], N: number, o: ScoreOptions): Float64Array {
  const A = headMean(P, N);
  let s: Float64Array = new Float64Array(N).fill(1 / N);
  for (let k = 0; k < o.iterations; k++) s = wprStep(A, s, N, o.damping);
  return s;
}

/** gwpr-rms: iterate each head separately, aggregate sqrt(mean_h s_h^2). */
export function gwprRms(P: Float64Array[], N: number, o: ScoreOptions): Float64Array {
  const acc = new Float64Array(N);
  for (const Ph of P) {
    let s: Float64Array = new Float64Array(N).fill(1 / N);
    for (let k = 0; k < o.iterations; k++) s = wprStep(Ph, s, N, o.damping);
    for (let j = 0; j < N; j++) acc[j]! += (s[j]! * s[j]!) / P.length;
  }
  return acc.map(Math.sqrt);
}

/**
 * Cross-attention G-WPR: text-token importance u_j = mean_i C[i, j] over the head-mean cross-attention map
 * C (N, L); image-token score s_i = sum_j C[i, j] u_j.
 */
export function crossGwpr(Cheads: Float64Array[], N: number, L: number): Float64Array {
  const C = new Float64Array(N * L);
  for (const Ch of Cheads) for (let t = 0; t < N * L; t++) C[t]! += Ch[t]! / Cheads.length;
  const u = new Float64Array(L);
  for (let i = 0; i < N; i++) for (let j = 0; j < L; j++) u[j]! += C[i * L + j]! / N;
  const s = new Float64Array(N);
  for (let i = 0; i < N; i++) for (let j = 0; j < L; j++) s[i]! += C[i * L + j]! * u[j]!;
  return s;
}

/** L2 norm of each token's features, x (N, C). */
export function featureNorm(x: Float64Array, N: number, C: number): Float64Array {
  const s = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let a = 0;
    for (let c = 0; c < C; c++) a += x[i * C + c]! ** 2;
    s[i] = Math.sqrt(a);
  }
  return s;
}

/** SPEC step 3's k: the same function the graph's callers use (a one-line formula, tested with examples). */
export { keepCount } from "./atedm_math.js";

/** The k highest scores; ties go to the lower token index; returned in ascending index order. */
export function keepSet(score: ArrayLike<number>, k: number): number[] {
  const order = Array.from({ length: score.length }, (_, i) => i);
  order.sort((a, b) => score[b]! - score[a]! || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

export type RecoveryKind = "copy" | "copy-col" | "copy-sym" | "cosine" | "nearest";

/** The attention-based copy similarities of token i to kept token j on the head-mean map A (N, N). */
function attentionSimilarity(kind: "copy" | "copy-col" | "copy-sym", A: Float64Array, N: number, i: number, j: number): number {
  if (kind === "copy") return A[i * N + j]!; // how much i attends to j
  if (kind === "copy-col") return A[j * N + i]!; // how much j attends to i
  return A[i * N + j]! + A[j * N + i]!;
}

/**
 * For every token i, the position (in `keep`) of the kept token whose output it receives. Kept tokens map to
 * themselves; ties go to the lower kept index.
 *  copy:     argmax over kept j of A[i, j]
 *  copy-col: argmax over kept j of A[j, i]
 *  copy-sym: argmax over kept j of A[i, j] + A[j, i]
 *  cosine:   argmax over kept j of cos(x1_i, x1_j)  (x1: layer-1 outputs (N, C))
 *  nearest:  argmin over kept j of the squared grid distance (width W)
 */
export function recoverySources(
  kind: RecoveryKind,
  keep: number[],
  N: number,
  data: { A?: Float64Array; x1?: Float64Array; C?: number; W?: number },
): number[] {
  const pos = new Map(keep.map((t, p) => [t, p]));
  const src: number[] = [];
  for (let i = 0; i < N; i++) {
    const own = pos.get(i);
    if (own !== undefined) {
      src.push(own);
      continue;
    }
    let best = -1;
    let bestVal = -Infinity;
    keep.forEach((j, p) => {
      let v: number;
      if (kind === "copy" || kind === "copy-col" || kind === "copy-sym") v = attentionSimilarity(kind, data.A!, N, i, j);
      else if (kind === "cosine") {
        const C = data.C!;
        let dot = 0,
          ni = 0,
          nj = 0;
        for (let c = 0; c < C; c++) {
          const a = data.x1![i * C + c]!,
            b = data.x1![j * C + c]!;
          dot += a * b;
          ni += a * a;
          nj += b * b;
        }
        v = dot / Math.sqrt(ni * nj);
      } else {
        const W = data.W!;
        v = -((Math.floor(i / W) - Math.floor(j / W)) ** 2 + ((i % W) - (j % W)) ** 2);
      }
      if (v > bestVal) {
        bestVal = v;
        best = p;
      }
    });
    src.push(best);
  }
  return src;
}

/** Rows `idx` of x (N, C): (idx.length, C). */
export function gatherRows(x: ArrayLike<number>, idx: readonly number[], C: number): Float64Array {
  const out = new Float64Array(idx.length * C);
  idx.forEach((t, p) => {
    for (let c = 0; c < C; c++) out[p * C + c] = x[t * C + c]!;
  });
  return out;
}

/**
 * Copy-style recovery (copy, copy-col, copy-sym, cosine, nearest), applied after proj_out: token i gets row src[i] of the kept
 * tokens' output `outKept` (k, C); src from recoverySources (kept tokens point at themselves). -> (N, C).
 */
export function copyRefill(outKept: ArrayLike<number>, src: readonly number[], C: number): Float64Array {
  return gatherRows(outKept, src, C);
}

/**
 * copy-delta recovery, applied BEFORE proj_out: kept token keep[p] gets its own features after the rest of the
 * block, keptAfter[p]; pruned token i gets its own pruning-point features plus its source's change over the rest
 * of the block, x1[i] + (keptAfter[src[i]] - x1[keep[src[i]]]) (src: the copy sources). -> (N, C), then proj_out.
 */
export function copyDeltaRefill(
  x1: ArrayLike<number>,
  keptAfter: ArrayLike<number>,
  keep: readonly number[],
  src: readonly number[],
  N: number,
  C: number,
): Float64Array {
  const out = new Float64Array(N * C);
  const pos = new Map(keep.map((t, p) => [t, p]));
  for (let i = 0; i < N; i++) {
    const own = pos.get(i);
    const s = src[i]!;
    for (let c = 0; c < C; c++) {
      if (own !== undefined) out[i * C + c] = keptAfter[own * C + c]!;
      else out[i * C + c] = x1[i * C + c]! + (keptAfter[s * C + c]! - x1[keep[s]! * C + c]!);
    }
  }
  return out;
}

/** zero recovery, applied after proj_out: kept token keep[p] gets outKept[p]; pruned tokens get 0. -> (N, C). */
export function zeroRefill(outKept: ArrayLike<number>, keep: readonly number[], N: number, C: number): Float64Array {
  const out = new Float64Array(N * C);
  keep.forEach((t, p) => {
    for (let c = 0; c < C; c++) out[t * C + c] = outKept[p * C + c]!;
  });
  return out;
}

/**
 * Mask sharing under classifier-free guidance (batch order [unconditional, conditional]): the score each batch
 * element ranks its tokens by. `conditional`: element b uses the conditional half's element B/2 + (b mod B/2).
 */
export function sharedScores<T>(scores: readonly T[], sharing: "per-element" | "conditional"): T[] {
  if (sharing === "per-element") return scores.slice();
  const B = scores.length;
  if (B % 2 !== 0) throw new Error(`conditional mask sharing needs an even batch, got ${B}`);
  const half = B / 2;
  return scores.map((_, b) => scores[half + (b % half)]!);
}

/**
 * How clear the keep-set boundary is: (s_(k) - s_(k+1)) / |s_(k)| for the k-th and (k+1)-th highest scores
 * (Infinity when every token is kept). Below ~1e-5 a float32 implementation may keep a different set (SPEC).
 */
export function keepBoundaryGap(score: ArrayLike<number>, k: number): number {
  if (k >= score.length) return Infinity;
  const sorted = Array.from(score).sort((a, b) => b - a);
  return (sorted[k - 1]! - sorted[k]!) / Math.abs(sorted[k - 1]!);
}

/**
 * How clear the recovery choice is: over the pruned tokens, the smallest gap between the best and the second-best
 * kept candidate, (best - second) / max(|best|, 1e-30) for the attention-based copies (copy, copy-col, copy-sym)
 * and absolute for cosine (values in [-1, 1]). Infinity when nothing is pruned or only one token is kept. (nearest
 * compares exact integers.)
 */
export function recoveryMargin(
  kind: "copy" | "copy-col" | "copy-sym" | "cosine",
  keep: number[],
  N: number,
  data: { A?: Float64Array; x1?: Float64Array; C?: number },
): number {
  const kept = new Set(keep);
  let margin = Infinity;
  for (let i = 0; i < N; i++) {
    if (kept.has(i) || keep.length < 2) continue;
    const vals = keep.map((j) => (kind === "cosine" ? cosineRows(data.x1!, i, j, data.C!) : attentionSimilarity(kind, data.A!, N, i, j)));
    vals.sort((a, b) => b - a);
    const gap = vals[0]! - vals[1]!;
    margin = Math.min(margin, kind === "cosine" ? gap : gap / Math.max(Math.abs(vals[0]!), 1e-30));
  }
  return margin;
}

/** Cosine similarity of rows i and j of x (N, C). */
function cosineRows(x: ArrayLike<number>, i: number, j: number, C: number): number {
  let dot = 0;
  let ni = 0;
  let nj = 0;
  for (let c = 0; c < C; c++) {
    const a = x[i * C + c]!;
    const b = x[j * C + c]!;
    dot += a * b;
    ni += a * a;
    nj += b * b;
  }
  return dot / Math.sqrt(ni * nj);
}
