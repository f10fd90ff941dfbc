/**
 * Plain TypeScript (float64) reference of tomesd's token merging: the partition of a (h, w) token grid into
 * dst / src tokens, `bipartite_soft_matching_random2d` and its merge / unmerge, on row-major (B, N, C) arrays.
 * It is the test oracle for the ONNX implementation in `tome.ts`, written for clarity, not speed.
 *
 * Semantics follow dbolya/tomesd (merge.py, commit 27a14a3):
 * - The grid is split into sy x sx cells (only the hsy = h // sy by wsx = w // sx cells that fit; the rest of
 *   the grid is src). One token per cell is dst: cell offset `cell` (in [0, sy*sx), row-major inside the cell,
 *   i.e. dy = cell // sx, dx = cell % sx); no_rand uses offset 0, the top-left token.
 * - dst tokens come first in raster order, then src tokens in raster order (tomesd argsorts a -1/0 buffer; which
 *   order torch's unstable CPU sort leaves equal keys in only changes float summation order and which of two
 *   exactly equal similarities wins, see tome.ts).
 * - Metric: cosine similarity of src against dst tokens (metric / ||metric||, no epsilon). Each src token's best
 *   dst is its first maximum (torch max / ONNX ArgMax); src tokens are ranked by that maximum, descending, ties
 *   by lower src position first; the first r are merged.
 * - merge: [unmerged src in rank order | dst], where each dst is the mean of itself and the src merged into it
 *   (scatter_reduce "mean", include_self). unmerge: dst values go back to their tokens, unmerged src to theirs,
 *   merged src tokens get a copy of their dst.
 */

/** A dense row-major (B, N, C) array. */
export interface Tokens {
  data: ArrayLike<number>;
  dims: readonly [number, number, number];
}

import { partition, type Partition } from "./tome.js";

export { partition, type Partition };

export interface Matching {
  /** Merged token count actually used: min(r, number of src tokens); 0 means merge and unmerge are identities. */
  r: number;
  partition: Partition;
  /** Per batch item: positions in `partition.src` of unmerged src tokens, in rank order (tomesd `unm_idx`). */
  unm: number[][];
  /** Per batch item: positions in `partition.src` of merged src tokens, in rank order (tomesd `src_idx`). */
  srcMerged: number[][];
  /** Per batch item: for each merged src token, its dst as a position in `partition.dst` (tomesd `dst_idx`). */
  dstOf: number[][];
  /** (B, N, C) -> (B, N - r, C): [unmerged src | dst averaged with the src merged into it]. */
  merge(x: Tokens): Tokens;
  /** (B, N - r, C) -> (B, N, C). */
  unmerge(x: Tokens): Tokens;
}

const identity = (x: Tokens): Tokens => x;

/**
 * tomesd's bipartite_soft_matching_random2d on `metric` (B, N, C) for an h x w grid (h * w = N), with r tokens
 * to merge and the dst cell offsets `cells` (omitted = top-left, tomesd's no_rand).
 */
export function bipartiteSoftMatching(metric: Tokens, w: number, h: number, sx: number, sy: number, r: number, cells?: ArrayLike<number>): Matching {
  const [B, N, C] = metric.dims;
  if (h * w !== N) throw new Error(`bipartiteSoftMatching: h*w = ${h}*${w} != N = ${N}`);
  const part = partition(h, w, sx, sy, cells);
  const nDst = part.dst.length;
  const nSrc = part.src.length;
  const rr = Math.min(nSrc, r);
  if (rr <= 0 || nDst === 0) {
    return { r: 0, partition: part, unm: [], srcMerged: [], dstOf: [], merge: identity, unmerge: identity };
  }
  // Cosine-normalised metric rows.
  const normed = new Float64Array(B * N * C);
  for (let t = 0; t < B * N; t++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += Number(metric.data[t * C + c]) ** 2;
    const n = Math.sqrt(s);
    for (let c = 0; c < C; c++) normed[t * C + c] = Number(metric.data[t * C + c]) / n;
  }
  const unm: number[][] = [];
  const srcMerged: number[][] = [];
  const dstOf: number[][] = [];
  for (let b = 0; b < B; b++) {
    const nodeMax = new Float64Array(nSrc);
    const nodeIdx = new Int32Array(nSrc);
    for (let i = 0; i < nSrc; i++) {
      const ai = (b * N + part.src[i]!) * C;
      let best = -Infinity;
      let bestJ = 0;
      for (let j = 0; j < nDst; j++) {
        const bj = (b * N + part.dst[j]!) * C;
        let s = 0;
        for (let c = 0; c < C; c++) s += normed[ai + c]! * normed[bj + c]!;
        if (s > best) {
          best = s;
          bestJ = j;
        }
      }
      nodeMax[i] = best;
      nodeIdx[i] = bestJ;
    }
    const order = Array.from({ length: nSrc }, (_, i) => i).sort((p, q) => nodeMax[q]! - nodeMax[p]! || p - q);
    unm.push(order.slice(rr));
    srcMerged.push(order.slice(0, rr));
    dstOf.push(order.slice(0, rr).map((i) => nodeIdx[i]!));
  }

  const merge = (x: Tokens): Tokens => {
    const [xb, xn, c] = x.dims;
    if (xb !== B || xn !== N) throw new Error(`merge: expected (${B}, ${N}, *), got (${x.dims})`);
    const M = N - rr;
    const out = new Float64Array(B * M * c);
    for (let b = 0; b < B; b++) {
      const row = (t: number) => (b * N + t) * c;
      const nu = nSrc - rr;
      unm[b]!.forEach((i, k) => {
        for (let ch = 0; ch < c; ch++) out[(b * M + k) * c + ch] = Number(x.data[row(part.src[i]!) + ch]);
      });
      const sum = new Float64Array(nDst * c);
      const count = new Float64Array(nDst).fill(1);
      for (let j = 0; j < nDst; j++) for (let ch = 0; ch < c; ch++) sum[j * c + ch] = Number(x.data[row(part.dst[j]!) + ch]);
      srcMerged[b]!.forEach((i, k) => {
        const j = dstOf[b]![k]!;
        count[j]! += 1;
        for (let ch = 0; ch < c; ch++) sum[j * c + ch]! += Number(x.data[row(part.src[i]!) + ch]);
      });
      for (let j = 0; j < nDst; j++) {
        for (let ch = 0; ch < c; ch++) out[(b * M + nu + j) * c + ch] = sum[j * c + ch]! / count[j]!;
      }
    }
    return { data: out, dims: [B, M, c] };
  };

  const unmerge = (x: Tokens): Tokens => {
    const [xb, xm, c] = x.dims;
    const M = N - rr;
    if (xb !== B || xm !== M) throw new Error(`unmerge: expected (${B}, ${M}, *), got (${x.dims})`);
    const nu = nSrc - rr;
    const out = new Float64Array(B * N * c);
    for (let b = 0; b < B; b++) {
      const copy = (fromRow: number, toToken: number) => {
        for (let ch = 0; ch < c; ch++) out[(b * N + toToken) * c + ch] = Number(x.data[(b * M + fromRow) * c + ch]);
      };
      for (let j = 0; j < nDst; j++) copy(nu + j, part.dst[j]!);
      unm[b]!.forEach((i, k) => copy(k, part.src[i]!));
      srcMerged[b]!.forEach((i, k) => copy(nu + dstOf[b]![k]!, part.src[i]!));
    }
    return { data: out, dims: [B, N, c] };
  };

  return { r: rr, partition: part, unm, srcMerged, dstOf, merge, unmerge };
}
