/**
 * The Frechet distance between two sets of feature vectors, each modelled as a Gaussian (its mean and sample
 * covariance): the formula behind FID (Heusel et al. 2017, "GANs trained by a two time-scale update rule
 * converge to a local Nash equilibrium"; reference code: pytorch-fid's `calculate_frechet_distance`),
 *
 *   FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
 *
 * With Inception features this is FID; `atedm eval` also uses it with its own (smaller) feature extractors, so
 * the function is independent of where the features come from.
 *
 * pytorch-fid takes a general matrix square root of S_a S_b (`scipy.linalg.sqrtm`, a Schur method that goes
 * complex and inaccurate when the product is near singular). Only the trace is needed, and the trace of a
 * square root is the sum of the square roots of the eigenvalues, which similar matrices share. Factor
 * S_a = G G^T (G is dim x r, r = rank S_a); then S_a S_b = G (G^T S_b) is similar (up to extra zero eigenvalues)
 * to the symmetric positive semi-definite r x r matrix M = G^T S_b G (for square invertible G,
 * G^-1 (S_a S_b) G = G^T S_b G), so
 *
 *   tr((S_a S_b)^(1/2)) = sum_i sqrt(lambda_i(G^T S_b G)).
 *
 * G comes from a Cholesky factorisation of S_a with diagonal pivoting (`pivotedCholesky`), which also handles a
 * singular S_a (fewer vectors than dimensions) by stopping at its numerical rank; the eigenvalues of M come from
 * a Householder tridiagonalisation and implicit QL iteration (`symmetricEigen`), all in float64 without complex
 * numbers. Eigenvalues within rounding noise of 0 (including slightly negative ones) count as 0. About 2 dim^3
 * multiply-adds: a few milliseconds at dim 128, so `atedm eval` can bootstrap it a thousand times.
 * `traceSqrtProductEigen` computes the same trace the slower, textbook way (via S_a^(1/2) from an
 * eigen-decomposition) and is kept as the cross-check of the fast path.
 *
 * Matrices are dense row-major Float64Arrays of dim x dim.
 */
import { AtedmError } from "../errors.js";

/** A feature set summarised as a Gaussian. */
export interface FeatureStats {
  /** Feature dimension. */
  dim: number;
  /** Number of vectors the stats came from. */
  n: number;
  /** Mean vector, length dim. */
  mean: Float64Array;
  /**
   * Sample covariance (divided by n - 1, like `np.cov(x, rowvar=False)`), dim x dim row-major. Read-only once
   * used: `frechetFromStats` caches its Cholesky factor by this array.
   */
  cov: Float64Array;
}

/**
 * Mean and sample covariance (ddof 1, as `np.cov(x, rowvar=False)` in pytorch-fid) of n feature vectors of
 * length dim, stored row by row in `x` (x[i * dim + j] is feature j of vector i). Needs n >= 2. Computed in
 * two passes (mean first, then centred products) so large feature offsets do not cancel catastrophically.
 * Compute a reference set's stats once and reuse them with `frechetFromStats`.
 */
export function featureStats(x: Float32Array | Float64Array, n: number, dim: number): FeatureStats {
  if (!(Number.isInteger(n) && n >= 2)) throw new AtedmError(`featureStats: need at least 2 feature vectors for a covariance, got n=${n}`);
  if (!(Number.isInteger(dim) && dim >= 1)) throw new AtedmError(`featureStats: dim must be a positive integer, got ${dim}`);
  if (x.length !== n * dim) throw new AtedmError(`featureStats: ${x.length} values is not n=${n} x dim=${dim}`);
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    const o = i * dim;
    for (let j = 0; j < dim; j++) mean[j]! += x[o + j]!;
  }
  for (let j = 0; j < dim; j++) mean[j]! /= n;

  // The centred data transposed (ct[j * n + i] = feature j of vector i), so that cov[j][k] is a dot product of
  // two contiguous rows; upper triangle only, in 2 x 2 blocks (four dot products share each pass over rows j,
  // j+1, k, k+1), each sum taken over i in order. Mirrored below.
  const ct = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    const o = i * dim;
    for (let j = 0; j < dim; j++) ct[j * n + i] = x[o + j]! - mean[j]!;
  }
  const cov = new Float64Array(dim * dim);
  const even = dim - (dim % 2);
  for (let j = 0; j < even; j += 2) {
    const r0 = j * n;
    const r1 = r0 + n;
    for (let k = j; k < even; k += 2) {
      const q0 = k * n;
      const q1 = q0 + n;
      let s00 = 0;
      let s01 = 0;
      let s10 = 0;
      let s11 = 0;
      for (let i = 0; i < n; i++) {
        const x0 = ct[r0 + i]!;
        const x1 = ct[r1 + i]!;
        const y0 = ct[q0 + i]!;
        const y1 = ct[q1 + i]!;
        s00 += x0 * y0;
        s01 += x0 * y1;
        s10 += x1 * y0;
        s11 += x1 * y1;
      }
      cov[j * dim + k] = s00;
      cov[j * dim + k + 1] = s01;
      cov[(j + 1) * dim + k] = s10; // below the diagonal when k = j; the mirroring overwrites it with the same sum
      cov[(j + 1) * dim + k + 1] = s11;
    }
  }
  if (even < dim) {
    // Odd dim: the last column.
    const q = even * n;
    for (let j = 0; j < dim; j++) {
      const r = j * n;
      let s = 0;
      for (let i = 0; i < n; i++) s += ct[r + i]! * ct[q + i]!;
      cov[j * dim + even] = s;
    }
  }
  for (let j = 0; j < dim; j++) {
    for (let k = j; k < dim; k++) {
      const v = cov[j * dim + k]! / (n - 1);
      cov[j * dim + k] = v;
      cov[k * dim + j] = v;
    }
  }
  return { dim, n, mean, cov };
}

/**
 * The Frechet distance between two Gaussians, ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).
 * Always >= 0 up to rounding; 0 (to ~1e-12 relative) for identical stats. Symmetric in a and b up to rounding;
 * pass a fixed reference set as `a`: the Cholesky factor of its covariance is computed once and cached.
 */
export function frechetFromStats(a: FeatureStats, b: FeatureStats): number {
  if (a.dim !== b.dim) throw new AtedmError(`frechetFromStats: feature dimensions differ (${a.dim} vs ${b.dim})`);
  const dim = a.dim;
  let meanTerm = 0;
  for (let j = 0; j < dim; j++) {
    const d = a.mean[j]! - b.mean[j]!;
    meanTerm += d * d;
  }
  let traces = 0;
  for (let j = 0; j < dim; j++) traces += a.cov[j * dim + j]! + b.cov[j * dim + j]!;
  return meanTerm + traces - 2 * traceSqrtProduct(a.cov, b.cov, dim);
}

/**
 * The Frechet distance between feature sets a (nA x dim) and b (nB x dim), rows stored one after another:
 * `frechetFromStats(featureStats(a, nA, dim), featureStats(b, nB, dim))`.
 */
export function frechetDistance(a: Float32Array | Float64Array, nA: number, b: Float32Array | Float64Array, nB: number, dim: number): number {
  return frechetFromStats(featureStats(a, nA, dim), featureStats(b, nB, dim));
}

/**
 * tr((A B)^(1/2)) for symmetric positive semi-definite A and B, by the similarity identity in the file comment:
 * with A = P L L^T P^T (`pivotedCholesky`: P a permutation, L lower trapezoidal dim x r), the sum of the square
 * roots of the eigenvalues of M = L^T (P^T B P) L, eigenvalues within rounding noise of 0 (see `noiseFloor`)
 * counted as 0. The factor of A is cached per array (pass a fixed reference covariance as `a`).
 */
export function traceSqrtProduct(a: Float64Array, b: Float64Array, dim: number): number {
  const { perm, lt, rank: r } = choleskyOf(a, dim);
  if (r === 0) return 0;
  // bp = P^T B P: bp[j][i] = B[perm[j]][perm[i]].
  const bp = new Float64Array(dim * dim);
  for (let j = 0; j < dim; j++) {
    const src = perm[j]! * dim;
    const dst = j * dim;
    for (let i = 0; i < dim; i++) bp[dst + i] = b[src + perm[i]!]!;
  }
  // Both products below are dot products of contiguous rows, taken in 2 x 2 blocks (four sums share each pass
  // over four rows), odd leftovers one by one. Row k of L^T is lt[k], zero before column k.
  const rEven = r - (r % 2);
  const dEven = dim - (dim % 2);
  const s4 = new Float64Array(4); // dot2x2's four sums
  // W = L^T bp (r x dim): W[k][i] = sum_{j >= k} lt[k][j] bp[i][j] (bp is symmetric).
  const w = new Float64Array(r * dim);
  for (let k = 0; k < rEven; k += 2) {
    const x0 = k * dim;
    const x1 = x0 + dim;
    for (let i = 0; i < dEven; i += 2) {
      const y0 = i * dim;
      const y1 = y0 + dim;
      dot2x2(lt, x0, x1, bp, y0, y1, k, dim, s4);
      w[x0 + i] = s4[0]!;
      w[x0 + i + 1] = s4[1]!;
      w[x1 + i] = s4[2]!;
      w[x1 + i + 1] = s4[3]!;
    }
    if (dEven < dim) {
      w[x0 + dEven] = dot(lt, x0, bp, dEven * dim, k, dim);
      w[x1 + dEven] = dot(lt, x1, bp, dEven * dim, k, dim);
    }
  }
  if (rEven < r) for (let i = 0; i < dim; i++) w[rEven * dim + i] = dot(lt, rEven * dim, bp, i * dim, rEven, dim);
  // M = W L (r x r): M[k][q] = sum_{i >= q} W[k][i] lt[q][i], upper triangle (q >= k), then mirrored so that M
  // is exactly symmetric.
  const m = new Float64Array(r * r);
  for (let k = 0; k < rEven; k += 2) {
    const x0 = k * dim;
    const x1 = x0 + dim;
    for (let q = k; q < rEven; q += 2) {
      const y0 = q * dim;
      const y1 = y0 + dim;
      dot2x2(w, x0, x1, lt, y0, y1, q, dim, s4);
      m[k * r + q] = s4[0]!;
      m[k * r + q + 1] = s4[1]!;
      m[(k + 1) * r + q] = s4[2]!;
      m[(k + 1) * r + q + 1] = s4[3]!;
    }
    if (rEven < r) {
      m[k * r + rEven] = dot(w, x0, lt, rEven * dim, rEven, dim);
      m[(k + 1) * r + rEven] = dot(w, x1, lt, rEven * dim, rEven, dim);
    }
  }
  if (rEven < r) m[rEven * r + rEven] = dot(w, rEven * dim, lt, rEven * dim, rEven, dim);
  for (let k = 0; k < r; k++) for (let q = k + 1; q < r; q++) m[q * r + k] = m[k * r + q]!;
  return sumSqrtAboveNoise(symmetricEigen(m, r, false).values, r);
}

/**
 * The same trace as `traceSqrtProduct` the textbook way, several times slower: A^(1/2) = V diag(sqrt(lambda)) V^T
 * from a full eigen-decomposition of A (noise-level eigenvalues as 0), then the square roots of the eigenvalues
 * of A^(1/2) B A^(1/2). Not cached. Kept as the independent cross-check of the fast path (see the tests).
 */
export function traceSqrtProductEigen(a: Float64Array, b: Float64Array, dim: number): number {
  const { values, vectors } = symmetricEigen(a, dim, true);
  const floorA = noiseFloor(values, dim);
  const root = new Float64Array(dim * dim);
  for (let k = 0; k < dim; k++) {
    if (values[k]! <= floorA) continue;
    const s = Math.sqrt(values[k]!);
    for (let i = 0; i < dim; i++) {
      const vik = vectors![i * dim + k]! * s;
      for (let j = 0; j < dim; j++) root[i * dim + j]! += vik * vectors![j * dim + k]!;
    }
  }
  const m = matmul(matmul(root, b, dim), root, dim);
  // Symmetrize away rounding so the eigen-solver sees an exactly symmetric matrix.
  for (let i = 0; i < dim; i++) {
    for (let j = i + 1; j < dim; j++) {
      const v = 0.5 * (m[i * dim + j]! + m[j * dim + i]!);
      m[i * dim + j] = v;
      m[j * dim + i] = v;
    }
  }
  return sumSqrtAboveNoise(symmetricEigen(m, dim, false).values, dim);
}

/** sum_{j = from}^{to - 1} x[xo + j] y[yo + j]. */
/**
 * The four dot products of rows x0, x1 of `x` with rows y0, y1 of `y` over columns [from, to), in one pass (a 2 x 2
 * register block: each loaded value is used twice): out = [x0.y0, x0.y1, x1.y0, x1.y1].
 */
function dot2x2(x: Float64Array, x0: number, x1: number, y: Float64Array, y0: number, y1: number, from: number, to: number, out: Float64Array): void {
  let s00 = 0;
  let s01 = 0;
  let s10 = 0;
  let s11 = 0;
  for (let j = from; j < to; j++) {
    const a0 = x[x0 + j]!;
    const a1 = x[x1 + j]!;
    const b0 = y[y0 + j]!;
    const b1 = y[y1 + j]!;
    s00 += a0 * b0;
    s01 += a0 * b1;
    s10 += a1 * b0;
    s11 += a1 * b1;
  }
  out[0] = s00;
  out[1] = s01;
  out[2] = s10;
  out[3] = s11;
}

function dot(x: Float64Array, xo: number, y: Float64Array, yo: number, from: number, to: number): number {
  let s = 0;
  for (let j = from; j < to; j++) s += x[xo + j]! * y[yo + j]!;
  return s;
}

/** sum sqrt(lambda) over the eigenvalues above `noiseFloor`. */
function sumSqrtAboveNoise(values: Float64Array, dim: number): number {
  const floor = noiseFloor(values, dim);
  let sum = 0;
  for (const lambda of values) if (lambda > floor) sum += Math.sqrt(lambda);
  return sum;
}

/**
 * Eigenvalues at or below dim * 2^-52 * max |lambda| are rounding noise (the accuracy of a float64 symmetric
 * eigen-decomposition), so they count as 0: that clamps the tiny negative ones, and keeps the square roots of
 * noise (sqrt amplifies 1e-16 to 1e-8) out of the trace when a covariance is singular (fewer vectors than dim).
 */
function noiseFloor(values: Float64Array, dim: number): number {
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  return dim * Number.EPSILON * max;
}

/** A pivoted Cholesky factor A = P L L^T P^T; see `pivotedCholesky`. */
export interface PivotedCholesky {
  /** Numerical rank r: the number of columns of L. */
  rank: number;
  /** The permutation: row j of L belongs to row perm[j] of A. */
  perm: Int32Array;
  /** L^T, r x dim row-major: lt[k * dim + j] = L[j][k], zero for j < k. */
  lt: Float64Array;
}

/**
 * Factors of covariances already computed, by matrix object: a bootstrap against a fixed reference set calls
 * `frechetFromStats(reference, sample)` a thousand times and factors the reference covariance once. Matrices
 * are never modified here, so the cache stays valid as long as callers do not mutate `cov` in place.
 */
const factors = new WeakMap<Float64Array, PivotedCholesky>();

function choleskyOf(a: Float64Array, dim: number): PivotedCholesky {
  const cached = factors.get(a);
  if (cached && cached.perm.length === dim) return cached;
  const f = pivotedCholesky(a, dim);
  factors.set(a, f);
  return f;
}

/**
 * Cholesky factorisation with diagonal pivoting of a symmetric positive semi-definite matrix (Golub & Van Loan,
 * Matrix Computations, section 4.2.8; LAPACK's dpstrf): A = P L L^T P^T with L lower trapezoidal, dim x r. Each
 * step takes the largest remaining diagonal of the Schur complement as the pivot and stops once it is at or below
 * dim * 2^-52 * max_i A[i][i] (dpstrf's default tolerance), so r is the numerical rank: a covariance of n < dim
 * vectors gives r <= n - 1 and the dropped remainder is rounding noise. The input is not modified.
 */
export function pivotedCholesky(a: Float64Array, dim: number): PivotedCholesky {
  const perm = new Int32Array(dim);
  const d = new Float64Array(dim); // remaining Schur-complement diagonal, in permuted order
  let maxDiag = 0;
  for (let j = 0; j < dim; j++) {
    perm[j] = j;
    d[j] = a[j * dim + j]!;
    maxDiag = Math.max(maxDiag, d[j]!);
  }
  const tol = dim * Number.EPSILON * maxDiag;
  const lt = new Float64Array(dim * dim);
  let r = 0;
  for (let k = 0; k < dim; k++) {
    let piv = k;
    for (let j = k + 1; j < dim; j++) if (d[j]! > d[piv]!) piv = j;
    const dk = d[piv]!;
    if (!(dk > tol)) break; // also stops on NaN
    if (piv !== k) {
      // Swap positions k and piv: in perm, d, and the columns of the rows of L^T computed so far.
      const t = perm[k]!;
      perm[k] = perm[piv]!;
      perm[piv] = t;
      d[piv] = d[k]!;
      d[k] = dk;
      for (let q = 0; q < k; q++) {
        const o = q * dim;
        const u = lt[o + k]!;
        lt[o + k] = lt[o + piv]!;
        lt[o + piv] = u;
      }
    }
    // Row k of L^T: (A[perm k][perm j] - sum_{q<k} L[k][q] L[j][q]) / L[k][k] for j > k.
    const lkk = Math.sqrt(dk);
    const ok = k * dim;
    const ak = perm[k]! * dim;
    lt[ok + k] = lkk;
    for (let j = k + 1; j < dim; j++) lt[ok + j] = a[ak + perm[j]!]!;
    for (let q = 0; q < k; q++) {
      const oq = q * dim;
      const lqk = lt[oq + k]!;
      if (lqk === 0) continue;
      for (let j = k + 1; j < dim; j++) lt[ok + j]! -= lqk * lt[oq + j]!;
    }
    const inv = 1 / lkk;
    for (let j = k + 1; j < dim; j++) {
      const v = lt[ok + j]! * inv;
      lt[ok + j] = v;
      d[j]! -= v * v;
    }
    r = k + 1;
  }
  return { rank: r, perm, lt: r === dim ? lt : lt.slice(0, r * dim) };
}

function matmul(x: Float64Array, y: Float64Array, dim: number): Float64Array {
  const out = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let k = 0; k < dim; k++) {
      const xik = x[i * dim + k]!;
      if (xik === 0) continue;
      for (let j = 0; j < dim; j++) out[i * dim + j]! += xik * y[k * dim + j]!;
    }
  }
  return out;
}

/**
 * Eigenvalues (and, if asked, eigenvectors as the columns of a row-major matrix) of a symmetric dim x dim
 * matrix: Householder reduction to tridiagonal form T = Q^T A Q, then the implicit QL iteration with Wilkinson
 * shifts on T (the classic tred2/tql2 pair of EISPACK, as in JAMA; Golub & Van Loan, Matrix Computations,
 * sections 8.3.1 and 8.3.5). Eigenvalues are accurate to a small multiple of 2^-52 * ||A||. About 4/3 dim^3
 * multiply-adds for the values, 3 dim^3 more for the vectors; the values are bit-for-bit the same whether
 * vectors are asked for or not. Only the lower triangle (with the diagonal) of the input is read; the input is
 * not modified. Eigenvalues come in ascending order.
 */
export function symmetricEigen(matrix: Float64Array, dim: number, wantVectors: boolean): { values: Float64Array; vectors: Float64Array | null } {
  const d = new Float64Array(dim);
  const e = new Float64Array(dim);
  const z = tridiagonalize(matrix, dim, d, e, wantVectors);
  tql(d, e, z, dim);
  return { values: d, vectors: z };
}

/**
 * Householder tridiagonalisation of the symmetric `matrix`: fills the diagonal d[0..dim-1] and sub-diagonal
 * e[i] = T[i+1][i] (e[dim-1] = 0) of T = Q^T A Q, and returns Q (row-major) when `wantQ`. Step k reflects
 * A[k+1.., k] onto a multiple of the first unit vector with H = I - beta v v^T and applies it on both sides of
 * the trailing block as the rank-2 update A <- A - v w^T - w v^T, w = p - (beta p.v / 2) v, p = beta A v,
 * working on the lower triangle only.
 */
function tridiagonalize(matrix: Float64Array, dim: number, d: Float64Array, e: Float64Array, wantQ: boolean): Float64Array | null {
  const a = Float64Array.from(matrix); // only its lower triangle is read and kept up to date
  const vs = wantQ ? new Float64Array(dim * dim) : null; // Householder vectors, row k = v of step k (0 before k+1)
  const betas = new Float64Array(dim);
  const v = new Float64Array(dim);
  const p = new Float64Array(dim);
  for (let k = 0; k < dim - 2; k++) {
    const s = k + 1;
    // x = A[s.., k]; scale by its largest entry against overflow/underflow in the norm.
    let scale = 0;
    for (let i = s; i < dim; i++) scale = Math.max(scale, Math.abs(a[i * dim + k]!));
    d[k] = a[k * dim + k]!;
    if (scale === 0) {
      e[k] = 0;
      betas[k] = 0;
      continue;
    }
    let norm2 = 0;
    for (let i = s; i < dim; i++) {
      const xi = a[i * dim + k]! / scale;
      v[i] = xi;
      norm2 += xi * xi;
    }
    const x0 = v[s]!;
    const alpha = x0 > 0 ? -Math.sqrt(norm2) : Math.sqrt(norm2); // H x = alpha e_1, sign chosen against cancellation
    v[s] = x0 - alpha;
    const beta = 1 / (norm2 - x0 * alpha); // = 2 / (v.v)
    e[k] = alpha * scale;
    betas[k] = beta;
    // p = beta A v over the trailing block, reading only its lower triangle (row i: a[i][s..i], contiguous;
    // each off-diagonal a[i][j] serves both p[i] and p[j]), then w = p - (beta p.v / 2) v, stored in p.
    p.fill(0, s);
    for (let i = s; i < dim; i++) {
      const oi = i * dim;
      const vi = v[i]!;
      let t = 0;
      for (let j = s; j < i; j++) {
        const aij = a[oi + j]!;
        t += aij * v[j]!;
        p[j]! += aij * vi;
      }
      p[i]! += t + a[oi + i]! * vi;
    }
    let pv = 0;
    for (let i = s; i < dim; i++) {
      const t = beta * p[i]!;
      p[i] = t;
      pv += t * v[i]!;
    }
    const half = 0.5 * beta * pv;
    for (let i = s; i < dim; i++) p[i]! -= half * v[i]!;
    // Lower triangle of A - v w^T - w v^T.
    for (let i = s; i < dim; i++) {
      const oi = i * dim;
      const vi = v[i]!;
      const wi = p[i]!;
      for (let j = s; j <= i; j++) a[oi + j]! -= vi * p[j]! + wi * v[j]!;
    }
    if (vs) for (let i = s; i < dim; i++) vs[k * dim + i] = v[i]!;
  }
  if (dim >= 2) {
    d[dim - 2] = a[(dim - 2) * dim + dim - 2]!;
    e[dim - 2] = a[(dim - 1) * dim + dim - 2]!;
  }
  if (dim >= 1) d[dim - 1] = a[(dim - 1) * dim + dim - 1]!;
  e[dim - 1] = 0;
  if (!vs) return null;
  // Q = H_0 H_1 ... H_(dim-3), accumulated from the right end: Q <- H_k Q.
  const q = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) q[i * dim + i] = 1;
  for (let k = dim - 3; k >= 0; k--) {
    const beta = betas[k]!;
    if (beta === 0) continue;
    const s = k + 1;
    const ok = k * dim;
    // Q[s.., s..] -= beta v (v^T Q[s.., s..]), row by row.
    p.fill(0);
    for (let i = s; i < dim; i++) {
      const vi = vs[ok + i]!;
      const oi = i * dim;
      for (let j = s; j < dim; j++) p[j]! += vi * q[oi + j]!;
    }
    for (let i = s; i < dim; i++) {
      const f = beta * vs[ok + i]!;
      const oi = i * dim;
      for (let j = s; j < dim; j++) q[oi + j]! -= f * p[j]!;
    }
  }
  return q;
}

/**
 * Eigenvalues of the symmetric tridiagonal matrix (diagonal d, sub-diagonal e[i] = T[i+1][i]) by the implicit
 * QL method with Wilkinson shifts (EISPACK tql2 as in JAMA), into d in ascending order; e is destroyed. When z
 * is given (row-major dim x dim, Q of the tridiagonalisation), the plane rotations are applied to its columns,
 * which then hold the eigenvectors, sorted with the values. The rotations on z never feed back into d and e.
 */
function tql(d: Float64Array, e: Float64Array, z: Float64Array | null, dim: number): void {
  let f = 0;
  let tst1 = 0;
  const eps = Number.EPSILON;
  for (let l = 0; l < dim; l++) {
    // Find a negligible sub-diagonal element e[m] (e[dim-1] = 0 ends the search).
    tst1 = Math.max(tst1, Math.abs(d[l]!) + Math.abs(e[l]!));
    let m = l;
    while (m < dim - 1 && Math.abs(e[m]!) > eps * tst1) m++;
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 100) throw new AtedmError(`symmetricEigen: QL iteration did not converge (dim ${dim}; non-finite input?)`);
        // Shift from the leading 2x2 block.
        let g = d[l]!;
        let p = (d[l + 1]! - g) / (2 * e[l]!);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l]! / (p + r);
        d[l + 1] = e[l]! * (p + r);
        const dl1 = d[l + 1]!;
        let h = g - d[l]!;
        for (let i = l + 2; i < dim; i++) d[i]! -= h;
        f += h;
        // Implicit QL sweep from m up to l.
        p = d[m]!;
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1]!;
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i]!;
          h = c * p;
          r = Math.hypot(p, e[i]!);
          e[i + 1] = s * r;
          s = e[i]! / r;
          c = p / r;
          p = c * d[i]! - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]!);
          if (z) {
            for (let k = 0; k < dim; k++) {
              const ok = k * dim;
              const zk1 = z[ok + i + 1]!;
              const zk = z[ok + i]!;
              z[ok + i + 1] = s * zk + c * zk1;
              z[ok + i] = c * zk - s * zk1;
            }
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]!) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]!) > eps * tst1);
    }
    d[l] = d[l]! + f;
    e[l] = 0;
  }
  // Selection sort into ascending order, moving eigenvector columns along.
  for (let i = 0; i < dim - 1; i++) {
    let k = i;
    for (let j = i + 1; j < dim; j++) if (d[j]! < d[k]!) k = j;
    if (k === i) continue;
    const t = d[i]!;
    d[i] = d[k]!;
    d[k] = t;
    if (z) {
      for (let row = 0; row < dim; row++) {
        const o = row * dim;
        const u = z[o + i]!;
        z[o + i] = z[o + k]!;
        z[o + k] = u;
      }
    }
  }
}
