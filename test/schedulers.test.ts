/**
 * Schedulers against diffusers' own outputs (golden `schedulers.safetensors` of tiny-sd and tiny-sdxl), plus
 * property tests that need no fixtures: spacings, the v_prediction formulas in float64, Karras schedules, config
 * defaults and errors, and the DPM-Solver multistep state.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { AtedmError } from "../src/errors.js";
import type { HostTensor } from "../src/io/safetensors.js";
import {
  createScheduler,
  DDIMScheduler,
  DPMSolverMultistepScheduler,
  EulerDiscreteScheduler,
  loadSchedulerConfig,
  npArange,
  parseSchedulerConfig,
  roundHalfEven,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerName,
} from "../src/schedulers/index.js";
import { assertClose, fixturesPresent, golden, tensorOf, TINY_SD, TINY_SDXL, TOL } from "./helpers/golden.js";

/** Golden prefix -> our scheduler name. */
const KINDS: Array<[prefix: string, name: SchedulerName]> = [
  ["euler", "euler"],
  ["ddim", "ddim"],
  ["dpmpp2m", "dpm++2m"],
];
const MODELS: Array<[label: string, dir: string]> = [
  ["tiny-sd", TINY_SD],
  ["tiny-sdxl", TINY_SDXL],
];

/** SD-1.5 / SD-XL scheduler config, for the tests that need no fixtures. */
const SD_CONFIG: RawSchedulerConfig = {
  _class_name: "EulerDiscreteScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 1,
  clip_sample: false,
  set_alpha_to_one: false,
};

function skipWithoutFixtures(t: TestContext): boolean {
  if (fixturesPresent()) return false;
  t.skip("fixtures folder missing");
  return true;
}

function f32(t: HostTensor): Float32Array {
  assert.ok(t.data instanceof Float32Array, "expected a float32 tensor");
  return t.data;
}

function fromModel(dir: string, name: SchedulerName): Scheduler {
  return createScheduler(name, loadSchedulerConfig(join(dir, "scheduler", "scheduler_config.json")));
}

// -------------------------------------------------------------------------------------------------------------
// Golden comparisons
// -------------------------------------------------------------------------------------------------------------

for (const [label, dir] of MODELS) {
  describe(`schedulers vs diffusers (${label})`, () => {
    for (const [prefix, name] of KINDS) {
      test(`${prefix}: alphas_cumprod`, (t) => {
        if (skipWithoutFixtures(t)) return;
        const g = golden(dir, "schedulers.safetensors");
        const s = fromModel(dir, name);
        assertClose(`${label} ${prefix} alphas_cumprod`, s.alphasCumprod, tensorOf(g, "alphas_cumprod"), TOL.scheduler, [s.alphasCumprod.length]);
      });

      for (const n of [4, 10, 30]) {
        test(`${prefix}: set_timesteps(${n}) timesteps, sigmas, init_noise_sigma`, (t) => {
          if (skipWithoutFixtures(t)) return;
          const g = golden(dir, "schedulers.safetensors");
          const s = fromModel(dir, name);
          s.setTimesteps(n);
          const key = `${prefix}.n${n}`;
          // timesteps: exact (stored as float32; all our values are float32-representable).
          assert.deepEqual(s.timesteps, Array.from(f32(tensorOf(g, `${key}.timesteps`))), `${key}.timesteps`);
          const gs = g.get(`${key}.sigmas`);
          if (gs) {
            assert.ok(s.sigmas, `${key}: golden has sigmas, ours is null`);
            assertClose(`${label} ${key}.sigmas`, s.sigmas, gs, TOL.scheduler, [s.sigmas.length]);
          } else {
            assert.equal(s.sigmas, null, `${key}: no golden sigmas (DDIM has none)`);
          }
          assertClose(`${label} ${key}.init_noise_sigma`, [s.initNoiseSigma], tensorOf(g, `${key}.init_noise_sigma`), TOL.scheduler, [1]);
        });
      }

      for (const n of [4, 10]) {
        test(`${prefix}: rollout n=${n} (scaled_inputs, prev_samples, pred_original_samples)`, (t) => {
          if (skipWithoutFixtures(t)) return;
          const g = golden(dir, "schedulers.safetensors");
          const key = `${prefix}.rollout_n${n}`;
          const s = fromModel(dir, name);
          s.setTimesteps(n);
          assert.equal(s.timesteps.length, n);

          const noise = f32(tensorOf(g, `${key}.noise`));
          const size = noise.length;
          const x0 = noise.map((v) => v * s.initNoiseSigma);
          assertClose(`${label} ${key}.initial_sample`, x0, tensorOf(g, `${key}.initial_sample`), TOL.scheduler);

          const modelOutputs = f32(tensorOf(g, `${key}.model_outputs`));
          const scaled = new Float32Array(n * size);
          const prev = new Float32Array(n * size);
          const pred = new Float32Array(n * size);
          let x: Float32Array = x0;
          for (let i = 0; i < n; i++) {
            scaled.set(s.scaleModelInput(x, i), i * size);
            const out = s.step(modelOutputs.subarray(i * size, (i + 1) * size), i, x);
            prev.set(out.prevSample, i * size);
            pred.set(out.predOriginalSample, i * size);
            x = out.prevSample;
          }
          const dims = tensorOf(g, `${key}.model_outputs`).dims;
          assertClose(`${label} ${key}.scaled_inputs`, scaled, tensorOf(g, `${key}.scaled_inputs`), TOL.scheduler, dims);
          assertClose(`${label} ${key}.prev_samples`, prev, tensorOf(g, `${key}.prev_samples`), TOL.scheduler, dims);
          const gp = g.get(`${key}.pred_original_samples`);
          if (gp) assertClose(`${label} ${key}.pred_original_samples`, pred, gp, TOL.scheduler, dims);
        });
      }
    }
  });
}

// -------------------------------------------------------------------------------------------------------------
// Properties (no fixtures needed)
// -------------------------------------------------------------------------------------------------------------

function withTimesteps(name: SchedulerName, overrides: RawSchedulerConfig, n: number): Scheduler {
  const s = createScheduler(name, { ...SD_CONFIG, ...overrides });
  s.setTimesteps(n);
  return s;
}

describe("scheduler timestep spacings", () => {
  test("leading: Euler/DDIM stride N // n, DPM-Solver stride N // (n + 1)", () => {
    assert.deepEqual(withTimesteps("euler", {}, 4).timesteps, [751, 501, 251, 1]);
    assert.deepEqual(withTimesteps("ddim", {}, 4).timesteps, [751, 501, 251, 1]);
    assert.deepEqual(withTimesteps("dpm++2m", {}, 4).timesteps, [801, 601, 401, 201]);
  });

  test("trailing: numpy rounding (half to even), ends at N // n - 1", () => {
    // np.round(np.arange(1000, 0, -62.5)) - 1: 937.5 -> 938, 812.5 -> 812 (half to even).
    const expected16 = [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61];
    assert.deepEqual(withTimesteps("ddim", { timestep_spacing: "trailing" }, 16).timesteps, expected16);
    assert.deepEqual(withTimesteps("dpm++2m", { timestep_spacing: "trailing" }, 16).timesteps, expected16);
    const euler = withTimesteps("euler", { timestep_spacing: "trailing" }, 7);
    assert.deepEqual(euler.timesteps, [999, 856, 713, 570, 428, 285, 142]);
    // linspace/trailing: init_noise_sigma is the max sigma itself (leading: sqrt(max^2 + 1)).
    assert.equal(euler.initNoiseSigma, euler.sigmas![0]);
    const leading = withTimesteps("euler", {}, 7);
    assert.ok(Math.abs(leading.initNoiseSigma - Math.sqrt(leading.sigmas![0]! ** 2 + 1)) < 1e-6);
  });

  test("linspace: Euler keeps fractional float32 timesteps, DDIM/DPM round half to even", () => {
    assert.deepEqual(withTimesteps("euler", { timestep_spacing: "linspace" }, 7).timesteps, [999, 832.5, 666, 499.5, 333, 166.5, 0]);
    assert.deepEqual(withTimesteps("ddim", { timestep_spacing: "linspace" }, 7).timesteps, [999, 832, 666, 500, 333, 166, 0]);
    // linspace(0, 999, 5) = [0, 249.75, 499.5, 749.25, 999] -> round -> reversed, last dropped.
    assert.deepEqual(withTimesteps("dpm++2m", { timestep_spacing: "linspace" }, 4).timesteps, [999, 749, 500, 250]);
    const e30 = withTimesteps("euler", { timestep_spacing: "linspace" }, 30);
    assert.equal(e30.timesteps[1], Math.fround(964.5516967773438));
    assert.equal(e30.sigmas![0], Math.fround(14.614646911621094));
  });

  test("numpy helpers: round half to even, float arange length quirk", () => {
    assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 937.5, 812.5, 3.2].map(roundHalfEven), [0, 2, 2, -0, -2, 938, 812, 3]);
    assert.equal(npArange(1000, 0, -1000 / 16).length, 16);
    // numpy gives 62 elements here (ceil(61.000000000000014)); diffusers' trailing spacing inherits it.
    assert.equal(npArange(1000, 0, -1000 / 61).length, 62);
    assert.equal(withTimesteps("euler", { timestep_spacing: "trailing" }, 61).timesteps.length, 62);
  });
});

describe("scheduler v_prediction (one step against a float64 hand computation)", () => {
  const x = Float32Array.from([0.7, -1.3, 2.1, 0.05]);
  const v = Float32Array.from([-0.4, 0.9, 1.6, -2.2]);
  const near = (ours: Float32Array, want: number[], what: string): void => {
    for (let j = 0; j < want.length; j++) {
      assert.ok(Math.abs(ours[j]! - want[j]!) <= 2e-6 * Math.max(1, Math.abs(want[j]!)), `${what}[${j}]: ${ours[j]} vs ${want[j]}`);
    }
  };

  test("Euler: x0 = v * -sigma / sqrt(sigma^2 + 1) + x / (sigma^2 + 1); x' = x + (x - x0) / sigma * dt", () => {
    const s = withTimesteps("euler", { prediction_type: "v_prediction" }, 4);
    const i = 1;
    const sigma = s.sigmas![i]!;
    const next = s.sigmas![i + 1]!;
    const out = s.step(v, i, x);
    const x0 = [...x].map((xj, j) => (v[j]! * -sigma) / Math.sqrt(sigma * sigma + 1) + xj / (sigma * sigma + 1));
    near(out.predOriginalSample, x0, "x0");
    near(
      out.prevSample,
      [...x].map((xj, j) => xj + ((xj - x0[j]!) / sigma) * (next - sigma)),
      "prev",
    );
  });

  test("DDIM: x0 = sqrt(a) x - sqrt(1 - a) v; eps = sqrt(a) v + sqrt(1 - a) x", () => {
    const s = withTimesteps("ddim", { prediction_type: "v_prediction" }, 4);
    const i = 1;
    const a = s.alphasCumprod[s.timesteps[i]!]!;
    const ap = s.alphasCumprod[s.timesteps[i]! - 250]!;
    const out = s.step(v, i, x);
    const x0 = [...x].map((xj, j) => Math.sqrt(a) * xj - Math.sqrt(1 - a) * v[j]!);
    const eps = [...x].map((xj, j) => Math.sqrt(a) * v[j]! + Math.sqrt(1 - a) * xj);
    near(out.predOriginalSample, x0, "x0");
    near(
      out.prevSample,
      x0.map((x0j, j) => Math.sqrt(ap) * x0j + Math.sqrt(1 - ap) * eps[j]!),
      "prev",
    );
  });

  test("DPM-Solver++: x0 = alpha_t x - sigma_t v; first step is first order", () => {
    const s = withTimesteps("dpm++2m", { prediction_type: "v_prediction" }, 4);
    const sg = s.sigmas![0]!;
    const sn = s.sigmas![1]!;
    const out = s.step(v, 0, x);
    const alpha = 1 / Math.sqrt(sg * sg + 1);
    const x0 = [...x].map((xj, j) => alpha * xj - sg * alpha * v[j]!);
    near(out.predOriginalSample, x0, "x0");
    const alphaN = 1 / Math.sqrt(sn * sn + 1);
    const h = Math.log(1 / sn) - Math.log(1 / sg); // lambda = log(alpha_t / sigma_t) = -log(sigma)
    near(
      out.prevSample,
      [...x].map((xj, j) => ((sn * alphaN) / (sg * alpha)) * xj - alphaN * (Math.exp(-h) - 1) * x0[j]!),
      "prev",
    );
  });
});

describe("scheduler config", () => {
  test("unknown beta_schedule throws an AtedmError naming key and value", () => {
    for (const name of ["euler", "ddim", "dpm++2m"] as const) {
      assert.throws(
        () => createScheduler(name, { ...SD_CONFIG, beta_schedule: "cosine_fancy" }),
        (e: unknown) => e instanceof AtedmError && /beta_schedule/.test(e.message) && /cosine_fancy/.test(e.message),
      );
    }
  });

  test("other bad or unsupported values throw AtedmErrors", () => {
    const bad: Array<[SchedulerName, RawSchedulerConfig, RegExp]> = [
      ["euler", { prediction_type: "flow" }, /prediction_type.*flow/],
      ["ddim", { timestep_spacing: "even" }, /timestep_spacing.*even/],
      ["dpm++2m", { solver_type: "bh2x" }, /solver_type.*bh2x/],
      ["euler", { use_exponential_sigmas: true }, /use_exponential_sigmas/],
      ["euler", { interpolation_type: "log_linear" }, /interpolation_type.*log_linear/],
      ["ddim", { thresholding: true }, /thresholding/],
      ["dpm++2m", { use_lu_lambdas: true }, /use_lu_lambdas/],
      ["euler", { steps_offset: "1" }, /steps_offset/],
    ];
    for (const [name, overrides, re] of bad) {
      assert.throws(
        () => createScheduler(name, { ...SD_CONFIG, ...overrides }),
        (e: unknown) => e instanceof AtedmError && re.test(e.message),
      );
    }
    assert.throws(() => createScheduler("heun" as SchedulerName, SD_CONFIG), AtedmError);
    assert.throws(() => createScheduler("euler", SD_CONFIG).setTimesteps(0), AtedmError);
  });

  test("missing keys take the target class's defaults (from_config)", () => {
    // Euler and DPM default to linspace spacing, DDIM to leading; DDIM defaults clip_sample/set_alpha_to_one to true.
    assert.equal(new EulerDiscreteScheduler({}).config.timestep_spacing, "linspace");
    assert.equal(new DPMSolverMultistepScheduler({}).config.timestep_spacing, "linspace");
    const ddim = new DDIMScheduler({});
    assert.equal(ddim.config.timestep_spacing, "leading");
    assert.equal(ddim.config.clip_sample, true);
    assert.equal(ddim.finalAlphaCumprod, 1);
    // Keys of other classes are ignored; DPM's algorithm is forced to dpmsolver++ order 2.
    const dpm = new DPMSolverMultistepScheduler({ algorithm_type: "sde-dpmsolver++", solver_order: 3 });
    assert.equal(dpm.config.algorithm_type, "dpmsolver++");
    assert.equal(dpm.config.solver_order, 2);
  });

  test("parseSchedulerConfig accepts Python's -Infinity / NaN tokens", () => {
    const c = parseSchedulerConfig('{"lambda_min_clipped": -Infinity, "x": NaN, "s": "-Infinity", "y": Infinity}');
    assert.equal(c.lambda_min_clipped, -Infinity);
    assert.ok(Number.isNaN(c.x));
    assert.equal(c.s, "-Infinity");
    assert.equal(c.y, Infinity);
    assert.throws(() => parseSchedulerConfig("{oops"), AtedmError);
    // The clipped-lambda path then works end to end (lambda_min_clipped -5.1 is the usual cosine-schedule value).
    const s = createScheduler("dpm++2m", { beta_schedule: "squaredcos_cap_v2", lambda_min_clipped: -5.1 });
    s.setTimesteps(10);
    assert.ok(s.timesteps[0]! < 999, `clipped first timestep ${s.timesteps[0]}`);
  });
});

describe("scheduler Karras sigmas (numbers from numpy running diffusers' formulas on the same alphas_cumprod)", () => {
  test("DPM-Solver++ (Karras over the full sigma range, rounded integer timesteps)", () => {
    const s = withTimesteps("dpm++2m-karras", {}, 10);
    assert.deepEqual(s.timesteps, [999, 916, 815, 687, 523, 327, 146, 41, 7, 0]);
    const want = [
      14.614646911621094, 9.102936744689941, 5.478401184082031, 3.1686110496520996, 1.7494231462478638, 0.9140765070915222, 0.44692090153694153,
      0.20139986276626587, 0.08191104978322983, 0.029167532920837402, 0,
    ];
    assertClose("dpm karras sigmas", s.sigmas!, want, TOL.scheduler);
  });

  test("Euler (Karras between the sigmas of the first and last leading timesteps, fractional timesteps)", () => {
    const s = withTimesteps("euler-karras", {}, 10);
    const wantT = [
      901.0, 815.0175170898438, 710.50048828125, 581.6551513671875, 426.5304260253906, 260.24298095703125, 121.14097595214844, 40.272430419921875,
      9.30146598815918, 1.0000001192092896,
    ];
    assertClose("euler karras timesteps", s.timesteps, wantT, TOL.scheduler);
    const want = [
      8.390686988830566, 5.477698802947998, 3.478407144546509, 2.1403043270111084, 1.2701091766357422, 0.7226703763008118, 0.3913528323173523,
      0.19980022311210632, 0.09496716409921646, 0.04131447896361351, 0,
    ];
    assertClose("euler karras sigmas", s.sigmas!, want, TOL.scheduler);
  });
});

describe("DPM-Solver++ multistep state", () => {
  const size = 8;
  const outputs = Array.from({ length: 6 }, (_, i) => Float32Array.from({ length: size }, (_, j) => Math.sin(i * 7 + j)));
  const rollout = (s: Scheduler): Float32Array => {
    let x: Float32Array = Float32Array.from({ length: size }, (_, j) => Math.cos(j));
    for (let i = 0; i < s.timesteps.length; i++) x = s.step(outputs[i]!, i, x).prevSample;
    return x;
  };

  test("setTimesteps resets the previous model output", () => {
    const s = createScheduler("dpm++2m", SD_CONFIG);
    s.setTimesteps(6);
    const a = rollout(s);
    s.setTimesteps(6);
    assert.deepEqual(rollout(s), a);
  });

  test("the last step returns the x0 prediction (final sigma 0)", () => {
    const s = createScheduler("dpm++2m", SD_CONFIG);
    s.setTimesteps(3);
    let x: Float32Array = Float32Array.from({ length: size }, (_, j) => Math.cos(j));
    x = s.step(outputs[0]!, 0, x).prevSample;
    x = s.step(outputs[1]!, 1, x).prevSample;
    const last = s.step(outputs[2]!, 2, x);
    assert.deepEqual(last.prevSample, last.predOriginalSample);
  });

  test("non-consecutive steps are refused", () => {
    const s = createScheduler("dpm++2m", SD_CONFIG);
    s.setTimesteps(6);
    const x = new Float32Array(size);
    s.step(outputs[0]!, 0, x);
    assert.throws(() => s.step(outputs[2]!, 2, x), /consecutive/);
  });
});
