/**
 * The schedulers added after Euler/DDIM/DPM++ 2M (PNDM, Euler ancestral, UniPC, LMS, and the Karras variants) against
 * the real diffusers classes (test/golden/schedulers/, made by make_scheduler_goldens.py from the fixtures' scheduler
 * configs), plus `schedulerForConfig` / `createScheduler` name and class selection, the stochastic-step contract, the
 * LMS quadrature against scipy, and config errors.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test, type TestContext } from "node:test";
import { AtedmError } from "../src/errors.js";
import { readSafetensors, type HostTensor } from "../src/io/safetensors.js";
import {
  createScheduler,
  integrate,
  lmsCoefficient,
  loadSchedulerConfig,
  parseSchedulerConfig,
  PNDMScheduler,
  SCHEDULER_CLASSES,
  SCHEDULER_NAMES,
  schedulerForConfig,
  solveF32,
  UniPCMultistepScheduler,
  type RawSchedulerConfig,
  type Scheduler,
  type SchedulerName,
} from "../src/schedulers/index.js";
import { assertClose, errors, fixturesPresent, TINY_SD, TINY_SDXL, TOL } from "./helpers/golden.js";

const here = dirname(fileURLToPath(import.meta.url));
const GOLDEN_DIR = join(here, "golden", "schedulers");

/** Golden prefix -> our scheduler name and the from_config overrides the golden script used. */
const CASES: Array<[prefix: string, name: SchedulerName, overrides: RawSchedulerConfig]> = [
  ["pndm", "pndm", {}],
  ["pndm_prk", "pndm", { skip_prk_steps: false }],
  ["euler_a", "euler-a", {}],
  ["unipc", "unipc", {}],
  ["unipc_karras", "unipc-karras", {}],
  ["unipc_o3", "unipc", { solver_order: 3 }],
  ["lms", "lms", {}],
  ["lms_karras", "lms-karras", {}],
  ["euler_karras", "euler-karras", {}],
  ["dpmpp2m_karras", "dpm++2m-karras", {}],
];
const PREDICTIONS: Array<[tag: string, type: string]> = [
  ["eps", "epsilon"],
  ["v", "v_prediction"],
];
const MODELS: Array<[label: string, dir: string]> = [
  ["tiny-sd", TINY_SD],
  ["tiny-sdxl", TINY_SDXL],
];

/** SD-1.5's scheduler config (as the fixtures and the Hub have it), for tests that need no fixtures. */
const SD_CONFIG: RawSchedulerConfig = {
  _class_name: "PNDMScheduler",
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 1,
  clip_sample: false,
  set_alpha_to_one: false,
  skip_prk_steps: true,
};

function skipWithoutFixtures(t: TestContext): boolean {
  if (fixturesPresent()) return false;
  t.skip("fixtures folder missing");
  return true;
}

const goldenCache = new Map<string, Map<string, HostTensor>>();
function goldenFile(file: string): Map<string, HostTensor> {
  let g = goldenCache.get(file);
  if (!g) {
    g = readSafetensors(join(GOLDEN_DIR, file));
    goldenCache.set(file, g);
  }
  return g;
}

/**
 * The golden file for a model's scheduler config: its own when the script wrote one (configs differ), else the
 * tiny-sd file, after checking that the config is the same as tiny-sd's.
 */
function goldenFor(label: string, dir: string): Map<string, HostTensor> {
  if (label !== "tiny-sd" && existsSync(join(GOLDEN_DIR, `schedulers_more_${label}.safetensors`))) {
    return goldenFile(`schedulers_more_${label}.safetensors`);
  }
  if (label !== "tiny-sd") {
    const read = (d: string): unknown => JSON.parse(readFileSync(join(d, "scheduler", "scheduler_config.json"), "utf8"));
    assert.deepEqual(read(dir), read(TINY_SD), `${label}'s scheduler config differs from tiny-sd's: rerun make_scheduler_goldens.py`);
  }
  return goldenFile("schedulers_more.safetensors");
}

function get(g: Map<string, HostTensor>, name: string): HostTensor {
  const t = g.get(name);
  if (!t) throw new Error(`golden tensor '${name}' not found`);
  return t;
}

/** A float64 tensor stored as its bit patterns in an I64 tensor (see the golden README). */
function f64bits(t: HostTensor): Float64Array {
  assert.ok(t.data instanceof BigInt64Array, "expected an int64 tensor of float64 bit patterns");
  return new Float64Array(t.data.buffer, t.data.byteOffset, t.data.length);
}

/**
 * Timesteps: exact when diffusers' are integers. Fractional ones (Euler/LMS with Karras sigmas) go through numpy's
 * float32 `np.log` of the training sigmas, a SIMD implementation that is not correctly rounded (here 189 of the 1000
 * values are 1 ulp off the rounded exact log; machine-dependent), so we allow 4 float32 ulps (5e-7 relative).
 */
function assertTimesteps(name: string, ours: number[], gold: Float32Array): void {
  assert.equal(ours.length, gold.length, `${name}: ${ours.length} timesteps, golden ${gold.length}`);
  if (gold.every((v) => Number.isInteger(v))) {
    assert.deepEqual(ours, Array.from(gold), name);
    return;
  }
  for (let i = 0; i < gold.length; i++) {
    assert.ok(Math.abs(ours[i]! - gold[i]!) <= 4 * 2 ** -23 * Math.abs(gold[i]!), `${name}[${i}]: ${ours[i]} vs ${gold[i]}`);
  }
}

function data(t: HostTensor): Float32Array {
  assert.ok(t.data instanceof Float32Array, "expected a float32 tensor");
  return t.data;
}

function build(dir: string, name: SchedulerName, overrides: RawSchedulerConfig, prediction: string): Scheduler {
  const config = loadSchedulerConfig(join(dir, "scheduler", "scheduler_config.json"));
  return createScheduler(name, { ...config, ...overrides, prediction_type: prediction });
}

/** Worst errors per case over all compared tensors (printed with ATEDM_PRINT_ERRORS=1). */
const worst = new Map<string, { maxAbs: number; relL2: number }>();
function track(prefix: string, e: { maxAbs: number; relL2: number }): void {
  const w = worst.get(prefix) ?? { maxAbs: 0, relL2: 0 };
  worst.set(prefix, { maxAbs: Math.max(w.maxAbs, e.maxAbs), relL2: Math.max(w.relL2, e.relL2) });
}
after(() => {
  if (process.env.ATEDM_PRINT_ERRORS) {
    for (const [k, e] of worst) console.log(`${k}: max_abs ${e.maxAbs.toExponential(2)} rel_l2 ${e.relL2.toExponential(2)}`);
  }
});

// -------------------------------------------------------------------------------------------------------------
// Golden comparisons
// -------------------------------------------------------------------------------------------------------------

for (const [label, dir] of MODELS) {
  describe(`more schedulers vs diffusers (${label} config)`, () => {
    for (const [prefix, name, overrides] of CASES) {
      for (const [ptag, ptype] of PREDICTIONS) {
        const key0 = `${prefix}.${ptag}`;
        test(`${key0}: set_timesteps(4, 10, 25) timesteps, sigmas, init_noise_sigma`, (t) => {
          if (skipWithoutFixtures(t)) return;
          const g = goldenFor(label, dir);
          for (const n of [4, 10, 25]) {
            const s = build(dir, name, overrides, ptype);
            s.setTimesteps(n);
            const key = `${key0}.n${n}`;
            assertTimesteps(`${key}.timesteps`, s.timesteps, data(get(g, `${key}.timesteps`)));
            const gs = g.get(`${key}.sigmas`);
            if (gs) {
              assert.ok(s.sigmas, `${key}: golden has sigmas, ours is null`);
              track(prefix, assertClose(`${label} ${key}.sigmas`, s.sigmas, gs, TOL.scheduler, [s.sigmas.length]));
            } else {
              assert.equal(s.sigmas, null, `${key}: no golden sigmas`);
            }
            track(prefix, assertClose(`${label} ${key}.init_noise_sigma`, [s.initNoiseSigma], get(g, `${key}.init_noise_sigma`), TOL.scheduler, [1]));
          }
        });

        for (const n of [4, 10]) {
          test(`${key0}: rollout n=${n} (scaled inputs, prev samples${prefix.startsWith("euler_a") ? ", injected noise" : ""})`, (t) => {
            if (skipWithoutFixtures(t)) return;
            const g = goldenFor(label, dir);
            const key = `${key0}.rollout_n${n}`;
            const s = build(dir, name, overrides, ptype);
            s.setTimesteps(n);
            assertTimesteps(`${key}.timesteps`, s.timesteps, data(get(g, `${key}.timesteps`)));
            const steps = s.timesteps.length;
            const noise = data(get(g, `${key}.noise`));
            const size = noise.length;
            const x0 = noise.map((v) => v * s.initNoiseSigma);
            track(prefix, assertClose(`${label} ${key}.initial_sample`, x0, get(g, `${key}.initial_sample`), TOL.scheduler));
            const modelOutputs = data(get(g, `${key}.model_outputs`));
            const stepNoises = s.stochastic ? data(get(g, `${key}.step_noises`)) : null;
            const scaled = new Float32Array(steps * size);
            const prev = new Float32Array(steps * size);
            const pred = new Float32Array(steps * size);
            let x: Float32Array = x0;
            for (let i = 0; i < steps; i++) {
              scaled.set(s.scaleModelInput(x, i), i * size);
              const z = stepNoises?.subarray(i * size, (i + 1) * size);
              const out = s.step(modelOutputs.subarray(i * size, (i + 1) * size), i, x, z);
              prev.set(out.prevSample, i * size);
              pred.set(out.predOriginalSample, i * size);
              x = out.prevSample;
            }
            const dims = get(g, `${key}.model_outputs`).dims;
            track(prefix, assertClose(`${label} ${key}.scaled_inputs`, scaled, get(g, `${key}.scaled_inputs`), TOL.scheduler, dims));
            track(prefix, assertClose(`${label} ${key}.prev_samples`, prev, get(g, `${key}.prev_samples`), TOL.scheduler, dims));
            const gp = g.get(`${key}.pred_original_samples`);
            if (gp) track(prefix, assertClose(`${label} ${key}.pred_original_samples`, pred, gp, TOL.scheduler, dims));
          });
        }
      }
    }
  });
}

/** The spacings the SD configs do not use: schedules only (prefix, name, overrides as in CASES). */
const SPACING_CASES = CASES.filter(([prefix]) => ["pndm", "pndm_prk", "euler_a", "unipc", "lms"].includes(prefix));

describe("more schedulers vs diffusers: linspace and trailing spacings (tiny-sd config)", () => {
  for (const [prefix, name, overrides] of SPACING_CASES) {
    for (const spacing of ["linspace", "trailing"]) {
      test(`${prefix} ${spacing}: set_timesteps(4, 10, 25)`, (t) => {
        if (skipWithoutFixtures(t)) return;
        const g = goldenFor("tiny-sd", TINY_SD);
        for (const n of [4, 10, 25]) {
          const key = `spacing.${prefix}.${spacing}.n${n}`;
          const s = build(TINY_SD, name, { ...overrides, timestep_spacing: spacing }, "epsilon");
          s.setTimesteps(n);
          assertTimesteps(`${key}.timesteps`, s.timesteps, data(get(g, `${key}.timesteps`)));
          const gs = g.get(`${key}.sigmas`);
          if (gs) track(prefix, assertClose(`${key}.sigmas`, s.sigmas!, gs, TOL.scheduler, [s.sigmas!.length]));
          else assert.equal(s.sigmas, null);
          track(prefix, assertClose(`${key}.init_noise_sigma`, [s.initNoiseSigma], get(g, `${key}.init_noise_sigma`), TOL.scheduler, [1]));
        }
      });
    }
  }
});

describe("pipeline_ddim_folder golden (scheduler side)", () => {
  test("the saved DDIM folder config selects ddim, with the golden's timesteps and init_noise_sigma", () => {
    const g = goldenFile("pipeline_ddim_folder.safetensors");
    const { name, scheduler } = schedulerForConfig(loadSchedulerConfig(join(GOLDEN_DIR, "pipeline_ddim_folder.scheduler_config.json")));
    assert.equal(name, "ddim");
    assert.equal(scheduler.className, "DDIMScheduler");
    scheduler.setTimesteps(4);
    assert.deepEqual(scheduler.timesteps, Array.from(data(get(g, "timesteps"))));
    assert.equal(scheduler.initNoiseSigma, data(get(g, "init_noise_sigma"))[0]);
    assert.deepEqual(get(g, "latents").dims, [1, 4, 32, 32]);
    assert.deepEqual(get(g, "output.latents").dims, [1, 4, 32, 32]);
  });
});

// -------------------------------------------------------------------------------------------------------------
// LMS quadrature against scipy.integrate.quad
// -------------------------------------------------------------------------------------------------------------

describe("LMS quadrature (scipy.integrate.quad values in the golden)", () => {
  const relErr = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);

  test("smooth, oscillating and endpoint-singular integrands to 1e-12 relative", () => {
    const g = goldenFile("schedulers_more.safetensors");
    const want = f64bits(get(g, "quad.values_f64bits"));
    const ours = [
      integrate(Math.exp, 0, 1),
      integrate(Math.sqrt, 0, 1),
      integrate((x) => 1 / (1 + x * x), 0, 10),
      integrate(Math.log, 1, 3),
      integrate((x) => Math.sin(20 * x), 0, 1),
    ];
    for (let i = 0; i < ours.length; i++) assert.ok(relErr(ours[i]!, want[i]!) <= 1e-12, `integral ${i}: ${ours[i]} vs scipy ${want[i]}`);
    // Reversed limits and an empty interval.
    assert.ok(relErr(integrate(Math.exp, 1, 0), -want[0]!) <= 1e-12);
    assert.equal(integrate(Math.exp, 2, 2), 0);
  });

  test("LMS coefficients of set_timesteps(10) (order 4) match scipy to 1e-12", (t) => {
    if (skipWithoutFixtures(t)) return;
    const g = goldenFile("schedulers_more.safetensors");
    const want = f64bits(get(g, "quad.lms_n10_coeffs_f64bits"));
    const s = createScheduler("lms", loadSchedulerConfig(join(TINY_SD, "scheduler", "scheduler_config.json")));
    s.setTimesteps(10);
    for (let i = 0; i < 10; i++) {
      const order = Math.min(i + 1, 4);
      for (let k = 0; k < 4; k++) {
        const w = want[i * 4 + k]!;
        if (k >= order) {
          assert.equal(w, 0);
          continue;
        }
        const ours = lmsCoefficient(s.sigmas!, order, i, k);
        assert.ok(Math.abs(ours - w) <= 1e-12 * Math.max(Math.abs(w), 1e-3), `coefficient [${i}, ${k}]: ${ours} vs scipy ${w}`);
      }
    }
  });
});

// -------------------------------------------------------------------------------------------------------------
// Selection by config and by name
// -------------------------------------------------------------------------------------------------------------

describe("schedulerForConfig", () => {
  test("builds the class named by _class_name, with its base name", () => {
    for (const [className, base] of Object.entries(SCHEDULER_CLASSES)) {
      const { name, scheduler } = schedulerForConfig({ ...SD_CONFIG, _class_name: className });
      assert.equal(name, base, className);
      assert.equal(scheduler.className, className);
    }
  });

  test("use_karras_sigmas true gives the -karras name where the class has the option", () => {
    const want: Record<string, SchedulerName> = {
      EulerDiscreteScheduler: "euler-karras",
      LMSDiscreteScheduler: "lms-karras",
      UniPCMultistepScheduler: "unipc-karras",
      DPMSolverMultistepScheduler: "dpm++2m-karras",
      // no Karras option in these classes: the key is ignored, as in diffusers
      EulerAncestralDiscreteScheduler: "euler-a",
      DDIMScheduler: "ddim",
      PNDMScheduler: "pndm",
    };
    for (const [className, name] of Object.entries(want)) {
      const r = schedulerForConfig({ ...SD_CONFIG, _class_name: className, use_karras_sigmas: true });
      assert.equal(r.name, name, className);
      const ref = createScheduler(name, { ...SD_CONFIG, use_karras_sigmas: true });
      r.scheduler.setTimesteps(10);
      ref.setTimesteps(10);
      assert.deepEqual(r.scheduler.timesteps, ref.timesteps, className);
      assert.deepEqual(r.scheduler.sigmas, ref.sigmas, className);
    }
  });

  test("keeps the config's own settings (as from_pretrained)", () => {
    const unipc = schedulerForConfig({ ...SD_CONFIG, _class_name: "UniPCMultistepScheduler", solver_order: 3, prediction_type: "v_prediction" });
    assert.ok(unipc.scheduler instanceof UniPCMultistepScheduler);
    assert.equal(unipc.scheduler.config.solver_order, 3);
    assert.equal(unipc.scheduler.config.prediction_type, "v_prediction");
    // SD-1.5's PNDM is PLMS; the class default (no key) runs the Runge-Kutta warm-up first.
    const plms = schedulerForConfig(SD_CONFIG).scheduler;
    plms.setTimesteps(4);
    assert.deepEqual(plms.timesteps, [751, 501, 501, 251, 1]);
    const { skip_prk_steps: _, ...noSkip } = SD_CONFIG;
    const prk = schedulerForConfig(noSkip).scheduler;
    prk.setTimesteps(4);
    assert.deepEqual(prk.timesteps, [751, 626, 626, 501, 501, 376, 376, 251, 251, 126, 126, 1, 1]);
  });

  test("an override builds the named scheduler from any folder config", () => {
    const r = schedulerForConfig({ ...SD_CONFIG, _class_name: "KDPM2DiscreteScheduler" }, "lms");
    assert.equal(r.name, "lms");
    assert.equal(r.scheduler.className, "LMSDiscreteScheduler");
    const d = schedulerForConfig({ ...SD_CONFIG, _class_name: "DPMSolverMultistepScheduler", algorithm_type: "sde-dpmsolver++" }, "dpm++2m");
    assert.equal(d.scheduler.className, "DPMSolverMultistepScheduler");
  });

  test("a class atedm does not implement is a one-line error naming it, listing ours, suggesting --scheduler", () => {
    for (const cls of ["KDPM2DiscreteScheduler", "HeunDiscreteScheduler", "LCMScheduler"]) {
      assert.throws(
        () => schedulerForConfig({ ...SD_CONFIG, _class_name: cls }),
        (e: unknown) =>
          e instanceof AtedmError &&
          e.message.includes(cls) &&
          Object.keys(SCHEDULER_CLASSES).every((c) => e.message.includes(c)) &&
          e.message.includes("--scheduler NAME") &&
          !e.message.includes("\n"),
      );
    }
  });

  test("no _class_name is a one-line error suggesting --scheduler (diffusers cannot load it either)", () => {
    const { _class_name: _, ...noClass } = SD_CONFIG;
    assert.throws(
      () => schedulerForConfig(noClass),
      (e: unknown) => e instanceof AtedmError && /_class_name/.test(e.message) && e.message.includes("--scheduler NAME") && !e.message.includes("\n"),
    );
  });

  test("errors name the config file it was read from", () => {
    const path = join(GOLDEN_DIR, "pipeline_ddim_folder.scheduler_config.json");
    const text = readFileSync(path, "utf8");
    const asClass = (cls: string): RawSchedulerConfig => parseSchedulerConfig(text.replace('"DDIMScheduler"', JSON.stringify(cls)), path);
    assert.throws(
      () => schedulerForConfig(asClass("LCMScheduler")),
      (e: unknown) => e instanceof AtedmError && e.message.startsWith(`${path}: _class_name "LCMScheduler"`),
    );
    // The copy a -karras name makes keeps the file name too.
    assert.throws(
      () => createScheduler("unipc-karras", { ...parseSchedulerConfig(text, path), thresholding: true }),
      (e: unknown) => e instanceof AtedmError && /thresholding/.test(e.message),
    );
    assert.throws(
      () =>
        createScheduler("euler-karras", parseSchedulerConfig(text.replace('"beta_schedule": "scaled_linear"', '"beta_schedule": "cosine"'), path)),
      (e: unknown) => e instanceof AtedmError && e.message.startsWith(`${path}: beta_schedule`),
    );
  });

  test("DPMSolverMultistep variants other than DPM-Solver++ 2M are errors, not silent mismatches", () => {
    for (const extra of [{ algorithm_type: "sde-dpmsolver++" }, { algorithm_type: "dpmsolver" }, { solver_order: 3 }, { solver_order: 1 }]) {
      assert.throws(
        () => schedulerForConfig({ ...SD_CONFIG, _class_name: "DPMSolverMultistepScheduler", ...extra }),
        (e: unknown) => e instanceof AtedmError && /DPMSolverMultistepScheduler/.test(e.message) && e.message.includes("--scheduler NAME"),
      );
    }
    assert.equal(
      schedulerForConfig({ ...SD_CONFIG, _class_name: "DPMSolverMultistepScheduler", algorithm_type: "dpmsolver++", solver_order: 2 }).name,
      "dpm++2m",
    );
  });
});

describe("createScheduler names", () => {
  test("every name builds; the name decides use_karras_sigmas", () => {
    for (const name of SCHEDULER_NAMES) {
      const s = createScheduler(name, SD_CONFIG);
      s.setTimesteps(5);
      assert.ok(s.timesteps.length >= 5, name);
    }
    const karras = (name: SchedulerName, on: boolean): unknown =>
      (createScheduler(name, { ...SD_CONFIG, use_karras_sigmas: on }) as unknown as { config: { use_karras_sigmas: boolean } }).config
        .use_karras_sigmas;
    for (const base of ["euler", "lms", "unipc", "dpm++2m"] as const) {
      assert.equal(karras(base, true), false, base);
      assert.equal(karras(`${base}-karras`, false), true, `${base}-karras`);
    }
  });
});

// -------------------------------------------------------------------------------------------------------------
// Stochastic steps, multistep state, config errors
// -------------------------------------------------------------------------------------------------------------

describe("stochastic step contract", () => {
  const x = Float32Array.from([0.3, -0.2, 1.1, 0.7]);
  const eps = Float32Array.from([0.1, 0.4, -0.5, 0.2]);

  test("only euler-a is stochastic; without noise (or with the wrong size) it throws", () => {
    for (const name of SCHEDULER_NAMES) assert.equal(createScheduler(name, SD_CONFIG).stochastic, name === "euler-a", name);
    const s = createScheduler("euler-a", SD_CONFIG);
    s.setTimesteps(4);
    assert.throws(
      () => s.step(eps, 0, x),
      (e: unknown) => e instanceof AtedmError && /stochastic/.test(e.message) && /noise/.test(e.message),
    );
    assert.throws(
      () => s.step(eps, 0, x, new Float32Array(3)),
      (e: unknown) => e instanceof AtedmError && /noise has 3 values/.test(e.message),
    );
  });

  test("the noise enters as noise * sigma_up; the last step (to sigma 0) ignores it", () => {
    const s = createScheduler("euler-a", SD_CONFIG);
    s.setTimesteps(4);
    const zero = new Float32Array(4);
    const one = Float32Array.from([1, 1, 1, 1]);
    const a = s.step(eps, 1, x, zero).prevSample;
    const b = s.step(eps, 1, x, one).prevSample;
    const [sf, st] = [s.sigmas![1]!, s.sigmas![2]!];
    const up = Math.sqrt((st * st * (sf * sf - st * st)) / (sf * sf));
    for (let j = 0; j < 4; j++) assert.ok(Math.abs(b[j]! - a[j]! - up) < 1e-5, `${b[j]! - a[j]!} vs ${up}`);
    assert.deepEqual(s.step(eps, 3, x, zero).prevSample, s.step(eps, 3, x, one).prevSample);
    // Deterministic schedulers accept and ignore noise.
    const d = createScheduler("euler", SD_CONFIG);
    d.setTimesteps(4);
    assert.deepEqual(d.step(eps, 0, x, one).prevSample, d.step(eps, 0, x).prevSample);
  });
});

describe("multistep state of PNDM, LMS, UniPC", () => {
  const size = 8;
  const outputs = Array.from({ length: 14 }, (_, i) => Float32Array.from({ length: size }, (_, j) => Math.sin(i * 7 + j)));
  const rollout = (s: Scheduler): Float32Array => {
    let x: Float32Array = Float32Array.from({ length: size }, (_, j) => Math.cos(j));
    for (let i = 0; i < s.timesteps.length; i++) x = s.step(outputs[i]!, i, x).prevSample;
    return x;
  };

  for (const name of ["pndm", "lms", "unipc"] as const) {
    test(`${name}: setTimesteps resets the history; steps must be consecutive`, () => {
      const s = createScheduler(name, SD_CONFIG);
      s.setTimesteps(6);
      const a = rollout(s);
      s.setTimesteps(6);
      assert.deepEqual(rollout(s), a);
      s.setTimesteps(6);
      const x = new Float32Array(size);
      s.step(outputs[0]!, 0, x);
      assert.throws(
        () => s.step(outputs[2]!, 2, x),
        (e: unknown) => e instanceof AtedmError && /consecutive/.test(e.message),
      );
    });
  }

  test("PNDM's duplicated timestep re-runs the first transition from the first sample with the mean output", () => {
    const s = new PNDMScheduler(SD_CONFIG);
    s.setTimesteps(4);
    const x0 = Float32Array.from({ length: size }, (_, j) => Math.cos(j));
    const first = s.step(outputs[0]!, 0, x0).prevSample;
    // Step 1 ignores its sample argument (diffusers uses the remembered one).
    const second = s.step(outputs[1]!, 1, first).prevSample;
    const t = new PNDMScheduler(SD_CONFIG);
    t.setTimesteps(4);
    const mean = outputs[0]!.map((v, j) => Math.fround(v + outputs[1]![j]!) / 2);
    assert.deepEqual(second, t.step(mean, 0, x0).prevSample);
  });

  test("UniPC disable_corrector skips the corrector (the result changes)", () => {
    const on = createScheduler("unipc", SD_CONFIG);
    const off = createScheduler("unipc", { ...SD_CONFIG, disable_corrector: [0, 1, 2, 3, 4] });
    on.setTimesteps(6);
    off.setTimesteps(6);
    const a = rollout(on);
    const b = rollout(off);
    assert.ok(errors(a, b).maxAbs > 1e-3, "corrector had no effect");
  });

  test("solveF32 solves small systems like torch.linalg.solve", () => {
    const x = solveF32(
      [
        [1, 1, 1],
        [0.5, -0.7, 1],
        [0.25, 0.49, 1],
      ],
      [1, 2, 3],
    );
    const back = [x[0]! + x[1]! + x[2]!, 0.5 * x[0]! - 0.7 * x[1]! + x[2]!, 0.25 * x[0]! + 0.49 * x[1]! + x[2]!];
    assertClose("solve", back, [1, 2, 3], { maxAbs: 1e-5, relL2: 1e-5 });
  });
});

describe("config errors of the new schedulers", () => {
  test("unsupported or invalid values are one-line AtedmErrors naming the key", () => {
    const bad: Array<[SchedulerName, RawSchedulerConfig, RegExp]> = [
      ["pndm", { prediction_type: "sample" }, /prediction_type.*sample/],
      ["euler-a", { prediction_type: "sample" }, /prediction_type.*sample/],
      ["unipc", { thresholding: true }, /thresholding/],
      ["unipc", { use_flow_sigmas: true }, /use_flow_sigmas/],
      ["unipc", { disable_corrector: "none" }, /disable_corrector/],
      ["unipc", { solver_type: "bh3" }, /solver_type.*bh3/],
      ["lms", { use_beta_sigmas: true }, /use_beta_sigmas/],
      ["lms-karras", { use_exponential_sigmas: true }, /use_exponential_sigmas/],
    ];
    for (const [name, overrides, re] of bad) {
      assert.throws(
        () => createScheduler(name, { ...SD_CONFIG, ...overrides }),
        (e: unknown) => e instanceof AtedmError && re.test(e.message) && !e.message.includes("\n"),
        `${name} ${JSON.stringify(overrides)}`,
      );
    }
  });

  test("PNDM with the Runge-Kutta warm-up needs at least 4 steps (diffusers fails too)", () => {
    const s = createScheduler("pndm", { ...SD_CONFIG, skip_prk_steps: false });
    assert.throws(
      () => s.setTimesteps(3),
      (e: unknown) => e instanceof AtedmError && /skip_prk_steps/.test(e.message),
    );
    s.setTimesteps(4);
    assert.equal(s.timesteps.length, 13);
  });

  test("solver_type: DPM-Solver's values mean bh2 in UniPC, UniPC's mean midpoint in DPM-Solver (as diffusers re-registers)", () => {
    const u = createScheduler("unipc", { ...SD_CONFIG, solver_type: "midpoint" }) as UniPCMultistepScheduler;
    assert.equal(u.config.solver_type, "bh2");
    const d = createScheduler("dpm++2m", { ...SD_CONFIG, solver_type: "bh2" }) as unknown as { config: { solver_type: string } };
    assert.equal(d.config.solver_type, "midpoint");
  });
});
