/**
 * Quality metrics of `atedm eval`: PSNR and SSIM against scikit-image 0.26, the Frechet distance against
 * pytorch-fid's formula (scipy.linalg.sqrtm), both on the fixture test/golden/quality/quality.json (made by
 * make_quality_golden.py beside it); property tests for the Frechet distance (0 for a set with itself, a shift by
 * delta adds exactly |delta|^2), its fast trace against the slower eigen path, its pivoted Cholesky and its
 * eigen-solver; and the seeded percentile bootstrap (reproducible by seed, numpy's percentile, zero width for a
 * constant statistic, normal-approximation width for a mean, non-finite statistics as documented).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { psnr, ssim } from "../src/metrics/quality.js";
import {
  featureStats,
  frechetDistance,
  frechetFromStats,
  pivotedCholesky,
  symmetricEigen,
  traceSqrtProduct,
  traceSqrtProductEigen,
} from "../src/metrics/frechet.js";
import { bootstrap, percentileSorted } from "../src/metrics/bootstrap.js";
import { Mulberry32, NormalStream, randInt } from "../src/util/numerics.js";

const here = dirname(fileURLToPath(import.meta.url));

interface ImageCase {
  name: string;
  kind: "uint8" | "float";
  height: number;
  width: number;
  channels: number;
  data_range: number;
  a: number[];
  b: number[];
  psnr: number;
  ssim: number;
}
interface FrechetCase {
  name: string;
  dim: number;
  n_a: number;
  n_b: number;
  a: number[];
  b: number[];
  mean_sq: number;
  trace_a: number;
  fd: number;
  fd_eigh: number;
}
const fixture = JSON.parse(readFileSync(join(here, "golden", "quality", "quality.json"), "utf8")) as { images: ImageCase[]; frechet: FrechetCase[] };

/** Tolerances: PSNR/SSIM are the same float64 sums as skimage's up to order; FD is held to the rel 1e-6. */
const TOL = { psnrAbs: 1e-10, ssimAbs: 1e-12, fdRel: 1e-6, selfFdRel: 1e-9 };

function assertNear(ours: number, want: number, tol: number, what: string): void {
  const err = Math.abs(ours - want);
  assert.ok(err <= tol, `${what}: ours ${ours}, reference ${want}, |diff| ${err.toExponential(2)} > tolerance ${tol}`);
}

function imagesOf(c: ImageCase): Array<[string, Uint8Array | Float32Array | Float64Array, Uint8Array | Float32Array | Float64Array]> {
  if (c.kind === "uint8") return [["Uint8Array", Uint8Array.from(c.a), Uint8Array.from(c.b)]];
  // The float pair lies on a 1/256 grid, so float32 holds it exactly and both array types must agree with skimage's float64.
  return [
    ["Float64Array", Float64Array.from(c.a), Float64Array.from(c.b)],
    ["Float32Array", Float32Array.from(c.a), Float32Array.from(c.b)],
  ];
}

test("psnr and ssim match skimage.metrics on every fixture pair (uint8 32x32x3, float 12x20x3 range 1, gray 7x9)", () => {
  assert.equal(fixture.images.length, 5);
  for (const c of fixture.images) {
    for (const [type, a, b] of imagesOf(c)) {
      assertNear(psnr(a, b, c.data_range), c.psnr, TOL.psnrAbs, `psnr ${c.name} (${type})`);
      assertNear(ssim(a, b, c.width, c.height, c.channels, { dataRange: c.data_range }), c.ssim, TOL.ssimAbs, `ssim ${c.name} (${type})`);
    }
  }
});

test("psnr and ssim: uint8 data range defaults to 255; float images must name theirs", () => {
  const c = fixture.images[0]!;
  const a = Uint8Array.from(c.a);
  const b = Uint8Array.from(c.b);
  assert.equal(psnr(a, b), psnr(a, b, 255));
  assert.equal(ssim(a, b, c.width, c.height, c.channels), ssim(a, b, c.width, c.height, c.channels, { dataRange: 255 }));
  const f = Float64Array.from(c.a);
  assert.throws(() => psnr(f, f), /explicit dataRange/);
  assert.throws(() => ssim(f, f, c.width, c.height, c.channels), /explicit dataRange/);
});

test("identical images: psnr is Infinity (as skimage), ssim is exactly 1", () => {
  for (const c of fixture.images) {
    const [, a] = imagesOf(c)[0]!;
    assert.equal(psnr(a, a.slice(), c.data_range), Number.POSITIVE_INFINITY, c.name);
    assert.equal(ssim(a, a.slice(), c.width, c.height, c.channels, { dataRange: c.data_range }), 1, c.name);
  }
});

test("ssim rejects bad shapes with a message naming the problem", () => {
  const a = new Uint8Array(6 * 6 * 3);
  assert.throws(() => ssim(a, a, 6, 6, 3), /smaller than the 7x7 window/);
  const b = new Uint8Array(8 * 8 * 3);
  assert.throws(() => ssim(b, b, 8, 8, 2), /not width 8 x height 8 x channels 2/);
  assert.throws(() => ssim(b, b.subarray(1), 8, 8, 3), /differ in size/);
  assert.throws(() => ssim(b, b, 8, 8, 3, { winSize: 4 }), /odd/);
});

test("frechetDistance matches pytorch-fid's formula (scipy.linalg.sqrtm) to rel 1e-6 (dim 8 and 64)", () => {
  assert.equal(fixture.frechet.length, 2);
  for (const c of fixture.frechet) {
    const a = Float64Array.from(c.a);
    const b = Float64Array.from(c.b);
    const fd = frechetDistance(a, c.n_a, b, c.n_b, c.dim);
    assertNear(fd, c.fd, TOL.fdRel * c.fd, `fd ${c.name}`);
    // The sample covariance (ddof 1) and the mean term separately, so a failure says which part is off.
    const sa = featureStats(a, c.n_a, c.dim);
    const sb = featureStats(b, c.n_b, c.dim);
    let trace = 0;
    for (let j = 0; j < c.dim; j++) trace += sa.cov[j * c.dim + j]!;
    assertNear(trace, c.trace_a, 1e-12 * c.trace_a, `tr(cov a) ${c.name}`);
    let meanSq = 0;
    for (let j = 0; j < c.dim; j++) meanSq += (sa.mean[j]! - sb.mean[j]!) ** 2;
    assertNear(meanSq, c.mean_sq, 1e-12 * c.mean_sq, `||mu_a - mu_b||^2 ${c.name}`);
    // Stats computed once and reused give the same number; Float32 input of the same values too (2 decimals, so
    // float32 rounds them; a loose check that the array type is honoured).
    assert.equal(frechetFromStats(sa, sb), fd);
    assertNear(frechetDistance(Float32Array.from(c.a), c.n_a, Float32Array.from(c.b), c.n_b, c.dim), c.fd, 1e-5 * c.fd, `fd float32 ${c.name}`);
  }
});

/** n x dim correlated Gaussian features from a seeded stream. */
function randomFeatures(seed: number, n: number, dim: number): Float64Array {
  const z = new NormalStream(seed).fill(new Float32Array(n * dim + dim * dim));
  const x = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += z[i * dim + k]! * z[n * dim + k * dim + j]!;
      x[i * dim + j] = s / Math.sqrt(dim) + 3;
    }
  }
  return x;
}

test("frechetDistance of a set with itself is 0, also with a singular covariance (n < dim)", () => {
  for (const [n, dim] of [
    [200, 16],
    [300, 64],
    [10, 32],
  ] as const) {
    const x = randomFeatures(n + dim, n, dim);
    const s = featureStats(x, n, dim);
    let trace = 0;
    for (let j = 0; j < dim; j++) trace += s.cov[j * dim + j]!;
    const fd = frechetDistance(x, n, x, n, dim);
    assert.ok(
      Math.abs(fd) <= TOL.selfFdRel * 2 * trace,
      `FD(x, x) n=${n} dim=${dim}: ${fd}, want 0 within ${TOL.selfFdRel} x 2 tr(S) = ${2 * trace}`,
    );
  }
});

test("frechetDistance: shifting every feature vector by delta adds exactly |delta|^2; rescaling adds the known cov term", () => {
  const n = 150;
  const dim = 12;
  const x = randomFeatures(7, n, dim);
  const shifted = x.slice();
  let deltaSq = 0;
  for (let j = 0; j < dim; j++) {
    const d = 0.1 * (j - 5);
    deltaSq += d * d;
    for (let i = 0; i < n; i++) shifted[i * dim + j]! += d;
  }
  const fd = frechetDistance(x, n, shifted, n, dim);
  assertNear(fd, deltaSq, 1e-9 * deltaSq, "FD(x, x + delta)");
  // Scaling about the mean by c: S_b = c^2 S_a, so FD = tr(S) (1 + c^2 - 2c) = (1 - c)^2 tr(S).
  const c = 1.5;
  const s = featureStats(x, n, dim);
  const scaled = x.map((v, k) => s.mean[k % dim]! + c * (v - s.mean[k % dim]!));
  let trace = 0;
  for (let j = 0; j < dim; j++) trace += s.cov[j * dim + j]!;
  assertNear(frechetDistance(x, n, scaled, n, dim), (1 - c) ** 2 * trace, 1e-9 * trace, "FD(x, mean + 1.5 (x - mean))");
  // Two reference stats objects used alternately (each caches its covariance root): every pairing keeps its value.
  const sScaled = featureStats(scaled, n, dim);
  const sShifted = featureStats(shifted, n, dim);
  const scaleTerm = (1 - c) ** 2 * trace;
  for (let round = 0; round < 2; round++) {
    assertNear(frechetFromStats(s, sShifted), deltaSq, 1e-9 * deltaSq, `round ${round}: FD(stats x, stats x + delta)`);
    assertNear(frechetFromStats(sScaled, s), scaleTerm, 1e-9 * trace, `round ${round}: FD(stats scaled, stats x)`);
    assertNear(frechetFromStats(s, sScaled), scaleTerm, 1e-9 * trace, `round ${round}: FD(stats x, stats scaled)`);
    assertNear(frechetFromStats(sScaled, sScaled), 0, 1e-9 * trace, `round ${round}: FD(stats scaled, itself)`);
  }
});

test("fast trace (pivoted Cholesky + eigenvalues of L^T S_b L) agrees with the S_a^(1/2) eigen path to 1e-9 (n > dim, n < dim)", () => {
  for (const [nA, nB, dim] of [
    [300, 200, 40],
    [150, 400, 64],
    [30, 50, 40],
    [200, 20, 48],
    [12, 9, 33],
  ] as const) {
    const sa = featureStats(randomFeatures(nA * 7 + dim, nA, dim), nA, dim);
    const sb = featureStats(randomFeatures(nB * 11 + dim, nB, dim), nB, dim);
    for (const [x, y, what] of [
      [sa, sb, "a, b"],
      [sb, sa, "b, a"],
      [sb, sb, "b, b"],
    ] as const) {
      const fast = traceSqrtProduct(x.cov, y.cov, dim);
      const exact = traceSqrtProductEigen(x.cov, y.cov, dim);
      const label = `nA=${nA} nB=${nB} dim=${dim} (${what})`;
      assertNear(fast, exact, 1e-9 * exact, `tr sqrt ${label}`);
      let meanTerm = 0;
      let traces = 0;
      for (let j = 0; j < dim; j++) {
        meanTerm += (x.mean[j]! - y.mean[j]!) ** 2;
        traces += x.cov[j * dim + j]! + y.cov[j * dim + j]!;
      }
      const fdExact = meanTerm + traces - 2 * exact;
      // A set against itself: FD 0 within the self test's tolerance, otherwise the distances agree to 1e-9.
      const scale = x === y ? traces : fdExact;
      assertNear(frechetFromStats(x, y), fdExact, 1e-9 * scale, `FD ${label}`);
    }
  }
});

test("pivotedCholesky: P L L^T P^T reconstructs a covariance; its rank is n - 1 when n <= dim", () => {
  for (const [n, dim] of [
    [100, 24],
    [10, 24],
  ] as const) {
    const s = featureStats(randomFeatures(n, n, dim), n, dim);
    const { rank, perm, lt } = pivotedCholesky(s.cov, dim);
    assert.equal(rank, Math.min(n - 1, dim), `n=${n} dim=${dim}`);
    let maxErr = 0;
    let maxAbs = 0;
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        let r = 0;
        for (let k = 0; k < rank; k++) r += lt[k * dim + i]! * lt[k * dim + j]!;
        const want = s.cov[perm[i]! * dim + perm[j]!]!;
        maxErr = Math.max(maxErr, Math.abs(r - want));
        maxAbs = Math.max(maxAbs, Math.abs(want));
      }
    }
    assert.ok(maxErr <= 1e-12 * maxAbs, `n=${n} dim=${dim}: max |P L L^T P^T - S| ${maxErr} (max |S| ${maxAbs})`);
  }
});

test("frechetDistance timing at dim 128 (printed, not asserted)", () => {
  const dim = 128;
  for (const n of [100, 500]) {
    const a = randomFeatures(1000 + n, n, dim);
    const b = randomFeatures(2000 + n, n, dim);
    frechetDistance(a, n, b, n, dim); // warm-up
    const reps = 5;
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) frechetDistance(a, n, b, n, dim);
    console.log(`# frechetDistance dim ${dim} n ${n}: ${((performance.now() - t0) / reps).toFixed(1)} ms per FD (stats of both sets included)`);
  }
});

test("symmetricEigen (Householder + implicit QL): V diag(lambda) V^T reconstructs the matrix, V is orthogonal, values ascend", () => {
  const dim = 20;
  const rng = new Mulberry32(3);
  const m = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let j = i; j < dim; j++) {
      const v = rng.next() * 2 - 1;
      m[i * dim + j] = v;
      m[j * dim + i] = v;
    }
  }
  const { values, vectors } = symmetricEigen(m, dim, true);
  const v = vectors!;
  let maxRecon = 0;
  let maxOrtho = 0;
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j < dim; j++) {
      let r = 0;
      let o = 0;
      for (let k = 0; k < dim; k++) {
        r += v[i * dim + k]! * values[k]! * v[j * dim + k]!;
        o += v[k * dim + i]! * v[k * dim + j]!;
      }
      maxRecon = Math.max(maxRecon, Math.abs(r - m[i * dim + j]!));
      maxOrtho = Math.max(maxOrtho, Math.abs(o - (i === j ? 1 : 0)));
    }
  }
  assert.ok(maxRecon < 1e-12, `reconstruction max |V L V^T - A| ${maxRecon}`);
  assert.ok(maxOrtho < 1e-12, `orthogonality max |V^T V - I| ${maxOrtho}`);
  for (let k = 1; k < dim; k++) assert.ok(values[k - 1]! <= values[k]!, `eigenvalues not ascending at ${k}`);
  const eigOnly = symmetricEigen(m, dim, false).values;
  assert.deepEqual(Array.from(eigOnly).sort(), Array.from(values).sort());
});

/** The mean of `data` over the given units. */
function meanOf(data: Float64Array): (idx: Int32Array) => number {
  return (idx) => {
    let s = 0;
    for (const i of idx) s += data[i]!;
    return s / idx.length;
  };
}

const DATA = Float64Array.from(new NormalStream(11).fill(new Float32Array(200), 5, 2));

test("bootstrap: reproducible by seed; another seed gives another interval; value is the statistic on all units in order", () => {
  const a = bootstrap(DATA.length, meanOf(DATA), { seed: 4 });
  const b = bootstrap(DATA.length, meanOf(DATA), { seed: 4 });
  const c = bootstrap(DATA.length, meanOf(DATA), { seed: 5 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.ci95, c.ci95);
  assert.equal(a.value, meanOf(DATA)(Int32Array.from(DATA.keys())));
  let first: Int32Array | undefined;
  let calls = 0;
  const d = bootstrap(
    DATA.length,
    (idx) => {
      calls++;
      if (calls === 1) assert.deepEqual(Array.from(idx), Array.from(DATA.keys()), "first call gets 0..units-1 in order");
      if (calls === 2) first = idx;
      return meanOf(DATA)(idx);
    },
    { seed: 4, samples: 1000 },
  );
  assert.equal(calls, 1001);
  assert.deepEqual(d, a);
  // The documented draw order: resample 0 is the first `units` draws of randInt(Mulberry32(seed), units).
  const rng = new Mulberry32(4);
  assert.deepEqual(
    Array.from(first!),
    Array.from({ length: DATA.length }, () => randInt(rng, DATA.length)),
  );
});

test("bootstrap: a constant statistic gives a zero-width interval", () => {
  assert.deepEqual(
    bootstrap(30, () => 2.5, { samples: 200, seed: 1 }),
    { value: 2.5, ci95: [2.5, 2.5] },
  );
});

test("bootstrap: the interval of a mean covers it and has about the normal-approximation width 2 x 1.96 sd / sqrt(n)", () => {
  const n = DATA.length;
  const mean = meanOf(DATA)(Int32Array.from(DATA.keys()));
  let ss = 0;
  for (const x of DATA) ss += (x - mean) ** 2;
  const se = Math.sqrt(ss / (n - 1) / n);
  for (const seed of [0, 1, 2]) {
    const { ci95 } = bootstrap(n, meanOf(DATA), { seed, samples: 2000 });
    assert.ok(ci95 !== null);
    const [lo, hi] = ci95;
    assert.ok(lo < mean && mean < hi, `seed ${seed}: [${lo}, ${hi}] does not cover the mean ${mean}`);
    const ratio = (hi - lo) / (2 * 1.96 * se);
    assert.ok(ratio > 0.85 && ratio < 1.15, `seed ${seed}: width ${hi - lo} is ${ratio.toFixed(3)} x the normal approximation ${2 * 1.96 * se}`);
    // Roughly centred on the mean (the percentile interval of a mean of symmetric data is nearly symmetric).
    assert.ok(Math.abs((lo + hi) / 2 - mean) < 0.2 * se, `seed ${seed}: centre ${(lo + hi) / 2} vs mean ${mean}`);
  }
  // A 0.5 level gives a narrower interval inside the 0.95 one (about 0.674 / 1.96 of its width).
  const wide = bootstrap(n, meanOf(DATA), { samples: 2000 }).ci95!;
  const narrow = bootstrap(n, meanOf(DATA), { samples: 2000, level: 0.5 }).ci95!;
  assert.ok(wide[0] < narrow[0] && narrow[1] < wide[1], `[${narrow}] not inside [${wide}]`);
  const r = (narrow[1] - narrow[0]) / (wide[1] - wide[0]);
  assert.ok(r > 0.29 && r < 0.4, `50 % / 95 % width ratio ${r}`);
});

test("percentileSorted is numpy's default (linear) percentile", () => {
  // np.percentile([3, -1.5, 10, 2.25, 7, 0.5, 4], [2.5, 97.5, 50, 10, 90]) = [-1.2, 9.55, 3, -0.3, 8.2]
  const sorted = Float64Array.from([3, -1.5, 10, 2.25, 7, 0.5, 4]).sort();
  const want: Array<[number, number]> = [
    [0.025, -1.2],
    [0.975, 9.55],
    [0.5, 3],
    [0.1, -0.3],
    [0.9, 8.2],
    [0, -1.5],
    [1, 10],
  ];
  for (const [q, v] of want) assertNear(percentileSorted(sorted, q, "low"), v, 1e-12, `percentile ${q}`);
});

test("bootstrap: NaN on a resample makes the interval null; Infinity stays an endpoint; one unit has no interval", () => {
  // NaN whenever unit 0 is drawn twice or more (many resamples do).
  const nan = bootstrap(20, (idx) => (idx.filter((i) => i === 0).length > 1 ? Number.NaN : 1), { samples: 200 });
  assert.deepEqual(nan, { value: 1, ci95: null });
  // Mean PSNR where unit 0 is an identical pair: Infinity whenever unit 0 is drawn (~64 % of resamples).
  const values = Float64Array.from({ length: 20 }, (_, i) => (i === 0 ? Number.POSITIVE_INFINITY : 30 + i));
  const inf = bootstrap(20, meanOf(values), { samples: 500 });
  assert.equal(inf.value, Number.POSITIVE_INFINITY);
  assert.ok(inf.ci95 !== null && Number.isFinite(inf.ci95[0]) && inf.ci95[1] === Number.POSITIVE_INFINITY, `ci ${inf.ci95}`);
  assert.deepEqual(
    bootstrap(1, () => 3),
    { value: 3, ci95: null },
  );
  assert.throws(() => bootstrap(0, () => 0), /units must be a positive integer/);
  assert.throws(() => bootstrap(5, () => 0, { level: 95 }), /level must be in/);
});
