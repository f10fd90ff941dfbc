/**
 * `atedm eval`: the plan (FLOPs budgets matched per method), resuming a killed eval, and one-line errors for bad
 * input. The metrics themselves are tested in quality.test.ts and features.test.ts; the report in report.test.ts.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { parseMethodSpecs } from "../src/cli/method_specs.js";
import { GraphBuilder } from "../src/graph/builder.js";
import { planRuns, ratioForBudget } from "../src/eval/plan.js";
import { PSNR_CAP_DB, runEval } from "../src/eval/run.js";
import type { EvalResult, MethodResult } from "../src/eval/types.js";
import { writePng } from "../src/io/png.js";
import type { TextToImagePipeline } from "../src/pipeline/text_to_image.js";
import { generationFlops } from "../src/metrics/flops.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { atedmInProcess } from "./helpers/cli.js";

const SHAPES = fileURLToPath(new URL("../models/shapes", import.meta.url));
const CLI = fileURLToPath(new URL("./helpers/cli.ts", import.meta.url));
const cfg = resolveUNetConfig(JSON.parse(readFileSync(join(SHAPES, "unet", "config.json"), "utf8")), "shapes unet");
const geometry = { cfg, latent: [32, 32] as [number, number], steps: 20, textLength: 16 };

const tmp = (name: string) => mkdtempSync(join(tmpdir(), `atedm-eval-${name}-`));
const prompts = (lines: string[]) => {
  const file = join(tmp("prompts"), "prompts.txt");
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
};
const PROMPTS = ["a large red circle at the top left on a white background", "a small blue square at the center on a black background"];

describe("eval plan", () => {
  test("a budget gets the smallest ratio that reaches it, for AT-EDM and ToMe alike", () => {
    const specs = parseMethodSpecs("atedm:recovery=cosine,tome:tome-max-downsample=2", {});
    const { runs, unreachable } = planRuns(specs, [0.05, 0.1], geometry);
    assert.deepEqual(
      runs.map((r) => r.name),
      ["none", "atedm:recovery=cosine@0.05", "atedm:recovery=cosine@0.1", "tome:tome-max-downsample=2@0.05"],
    );
    assert.equal(unreachable.length, 1, "ToMe on 16x16 blocks only cannot save 10 % of this U-Net");
    assert.equal(unreachable[0]!.spec, "tome:tome-max-downsample=2");
    assert.ok(unreachable[0]!.max_saving < 0.1 && unreachable[0]!.max_saving > 0.05);
    for (const r of runs.slice(1)) {
      assert.ok(r.flops.saving >= r.budget!, `${r.name}: saving ${r.flops.saving} below its budget`);
      // Minimal: a slightly smaller ratio no longer reaches the budget.
      const spec = specs.find((s) => s.spec === r.spec)!;
      const less = generationFlops(cfg, spec.make(r.ratio - 1e-3).method, geometry.latent, geometry.steps, geometry.textLength).saving;
      assert.ok(less < r.budget!, `${r.name}: ratio ${r.ratio} is not the smallest (${r.ratio - 1e-3} saves ${less})`);
    }
    assert.equal(runs[0]!.flops.saving, 0);
  });

  test("a budget no method reaches is an error naming it; one some method misses is reported", () => {
    const specs = parseMethodSpecs("atedm", {});
    assert.equal(ratioForBudget(specs[0]!, geometry, 0.9), null);
    assert.throws(
      () => planRuns(specs, [0.9], geometry),
      /--budgets: no method reaches a FLOPs saving of 0\.9 on this model \(the most any reaches is 0\.\d+\)/,
    );
  });

  test("method specs: ratio, own options over global flags, and errors that name the bad part", () => {
    const [a, t] = parseMethodSpecs("atedm:0.3:recovery=nearest,tome:0.2", { recovery: "cosine", schedule: "none", "tome-sx": "4" });
    assert.equal(a!.ratio, 0.3);
    const am = a!.make(0.3).options;
    assert.equal(am.recovery, "nearest");
    assert.equal(am.schedule, "none");
    const tm = t!.make(0.2).options;
    assert.equal(tm.sx, 4);
    assert.equal(tm.schedule, "none");
    assert.equal(tm.recovery, undefined);
    assert.throws(() => parseMethodSpecs("atedm,fast", {}), /--methods: unknown method 'fast' in 'fast' \(none, atedm, tome\)/);
    assert.throws(() => parseMethodSpecs("atedm:0.5:speed=2", {}), /unknown option 'speed' in 'atedm:0\.5:speed=2'/);
    assert.throws(() => parseMethodSpecs("tome:0.5:recovery=copy", {}), /option 'recovery' does not apply to 'tome'/);
    assert.throws(() => parseMethodSpecs("atedm:1.5", {}), /ratio 1\.5 in 'atedm:1\.5' is not in \[0, 1\)/);
    assert.throws(() => parseMethodSpecs("atedm:0.5:recovery=glue", {}), /recovery must be one of .* got 'glue' \(in 'atedm:0\.5:recovery=glue'\)/);
  });
});

describe("eval scoring", () => {
  test("from cached images and records: alignment, its paired change, PSNR (identical images capped) and SSIM", async () => {
    // Every image is already in the cache, so runEval only scores: the pipeline is never asked to generate.
    const out = join(tmp("scored"), "out");
    const { runs } = planRuns(parseMethodSpecs("none,atedm:0.5", {}), null, geometry);
    const correct: Record<string, number[]> = { none: [1, 1, 1, 1], "atedm:0.5": [1, 1, 0, 0] }; // (prompt, seed) in order
    const rgb = (v: number) => new Uint8Array(32 * 32 * 3).fill(v);
    for (const run of runs) {
      mkdirSync(join(out, "images", run.key), { recursive: true });
      for (let i = 0; i < 4; i++) {
        const [p, s] = [i >> 1, i & 1];
        const stem = join(out, "images", run.key, `000${p}_${s}`);
        // atedm's image differs from none's only for prompt 1.
        writePng(`${stem}.png`, rgb(run.family === "none" || p === 0 ? 100 : 110), 32, 32);
        const rec = { prompt: PROMPTS[p], seed: s, step_seconds: [run.family === "none" ? 0.04 : 0.02], generation_seconds: 1, other_seconds: 0.01 };
        writeFileSync(
          `${stem}.json`,
          JSON.stringify({ ...rec, alignment: { all_correct: correct[run.name]![i] === 1, attributes: { background: true } } }),
        );
      }
    }
    // A stand-in pipeline: the cache holds every image, so only what scoring reads is here (the model's scheduler
    // is Euler, as the records' settings say).
    const pipe = {
      dir: "stub",
      defaultGuidance: 4,
      unet: { keepSessionsOf: 1 },
      scheduler: () => ({ name: "euler" }),
    } as unknown as TextToImagePipeline;
    const { result, generated } = await runEval({
      pipe,
      runs,
      unreachable: [],
      budgets: null,
      prompts: PROMPTS,
      promptsFile: "p.txt",
      seeds: 2,
      steps: 20,
      outDir: out,
      overlays: false,
      command: "test",
      version: "0",
      machine: { cpus: 1, cpu: "x", platform: "x" },
      threads: 1,
      bootstrapSamples: 200,
    });
    assert.equal(generated, 0);
    assert.equal(pipe.unet.keepSessionsOf, 1, "the pipeline's session cache size is put back");
    const [none, atedm] = result.methods as [MethodResult, MethodResult];
    assert.equal(none.quality.alignment_all_correct!.value, 1);
    assert.equal(atedm.quality.alignment_all_correct!.value, 0.5);
    assert.equal(atedm.quality.alignment_all_correct_delta!.value, -0.5);
    // Per-prompt changes are 0 and -1, so every resample's mean lies in [-1, 0] and both ends are reached.
    assert.deepEqual(atedm.quality.alignment_all_correct_delta!.ci95, [-1, 0]);
    assert.equal(none.quality.psnr, undefined);
    // Prompt 0: identical (PSNR capped at 100 dB); prompt 1: a uniform offset of 10 -> 20 log10(255 / 10).
    assert.ok(Math.abs(atedm.quality.psnr!.value - (PSNR_CAP_DB + 20 * Math.log10(25.5)) / 2) < 1e-9);
    assert.ok(atedm.quality.ssim!.value < 1 && atedm.quality.ssim!.value > 0.9);
    assert.equal(atedm.speedup, 2);
    assert.deepEqual(result.timing, { generation_seconds: 8, other_seconds: 0.08, overhead: 0.08 / 8.08 });
  });
});

describe("eval command", () => {
  const bad = async (args: string[], pattern: RegExp) => {
    const r = await atedmInProcess(["eval", ...args]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, "");
  };

  test("bad input gets one line naming it", async () => {
    const good = prompts(PROMPTS);
    const out = join(tmp("bad"), "out");
    await bad(["--prompts", good, "--out", out, "--methods", "none,atedm:0.5,magic"], /unknown method 'magic'/);
    await bad(["--prompts", good, "--out", out, "--methods", "atedm:0.5:colour=red"], /unknown option 'colour'/);
    await bad(["--prompts", good, "--out", out, "--budgets", "0.1,1.5"], /--budgets: '1\.5' is not a FLOPs saving in \(0, 1\)/);
    await bad(
      ["--prompts", good, "--out", out, "--methods", "atedm", "--budgets", "0.95", "--features", "none"],
      /no method reaches a FLOPs saving of 0\.95/,
    );
    const empty = prompts(["# only a comment", "   "]);
    await bad(["--prompts", empty, "--out", out], new RegExp(`${empty}: no prompts`));
    const binary = join(tmp("bin"), "prompts.bin");
    writeFileSync(binary, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0xff, 0xfe, 0x00, 0x01]));
    await bad(["--prompts", binary, "--out", out], new RegExp(`${binary}: not a text file`));
    const notShapes = prompts(["a photo of an astronaut riding a horse"]);
    await bad(["--prompts", notShapes, "--out", out, "--features", "x.onnx"], /Frechet distance needs real images.*pass --features none/);
    // A feature extractor whose input is not [N, 3, H, W] is refused at load, before any image is generated.
    const g = new GraphBuilder("one_channel");
    g.output(g.op("ReduceMean", [g.input("x", "float32", ["N", 1, 8, 8])], { axes: [2, 3], keepdims: 0 }), "y", "float32");
    const wrong = join(tmp("onnx"), "one_channel.onnx");
    writeFileSync(wrong, g.toBytes());
    await bad(
      ["--prompts", good, "--out", out, "--features", wrong],
      new RegExp(`${wrong}: input 'x' is float32 \\[N, 1, 8, 8\\]; a feature extractor takes`),
    );
    assert.equal(existsSync(out), false, "nothing is written for bad input");
  });

  test("a killed eval, restarted, writes the same eval.json as an uninterrupted one", { timeout: 600_000 }, async () => {
    const file = prompts(PROMPTS);
    const args = (out: string) => [
      "eval",
      "--prompts",
      file,
      "--out",
      out,
      "--seeds",
      "2",
      "--steps",
      "3",
      "--threads",
      "1",
      "--methods",
      "none,atedm:0.5:recovery=cosine,tome:0.5:tome-max-downsample=2",
      "--bootstrap",
      "100",
    ];
    const whole = join(tmp("whole"), "out");
    const r1 = await atedmInProcess(args(whole));
    assert.equal(r1.code, 0, r1.stderr);

    // Kill a real process once it has cached a few images (SIGKILL: no clean-up of any kind), then restart.
    const killed = join(tmp("killed"), "out");
    const records = () =>
      existsSync(join(killed, "images"))
        ? readdirSync(join(killed, "images"), { recursive: true }).filter((f) => String(f).endsWith(".json")).length
        : 0;
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args(killed)], { stdio: "ignore" });
    const exited = new Promise<number | null>((done) => child.on("close", (code) => done(code)));
    let seen = records();
    while (child.exitCode === null && seen < 5) {
      await new Promise((r) => setTimeout(r, 20));
      seen = records();
    }
    child.kill("SIGKILL");
    await exited;
    assert.ok(seen >= 5 && seen < 12, `killed half way (${seen} of 12 images cached)`);
    assert.equal(existsSync(join(killed, "eval.json")), false);
    const r2 = await atedmInProcess(args(killed));
    assert.equal(r2.code, 0, r2.stderr);
    const run = JSON.parse(readFileSync(join(killed, "run.json"), "utf8"));
    assert.ok(run.images_resumed >= 5 && run.images_generated === 12 - run.images_resumed, JSON.stringify(run));

    // Measured seconds differ between two processes; everything else must be equal.
    const a = JSON.parse(readFileSync(join(whole, "eval.json"), "utf8")) as EvalResult;
    const b = JSON.parse(readFileSync(join(killed, "eval.json"), "utf8")) as EvalResult;
    const strip = (r: EvalResult) => ({
      ...r,
      created: "",
      command: "",
      timing: null,
      methods: r.methods.map((m) => ({ ...m, seconds_per_step: 0, speedup: 0 })),
    });
    assert.deepEqual(strip(b), strip(a));
    assert.ok(a.methods[1]!.quality.psnr!.value > 10 && a.methods[1]!.quality.fd!.value > 0, "metrics were computed");
    // The paired change is the difference of the two means (every prompt has the same seeds), with its own interval.
    for (const m of a.methods.slice(1)) {
      const d = m.quality.alignment_all_correct_delta!;
      assert.ok(Math.abs(d.value - (m.quality.alignment_all_correct!.value - a.methods[0]!.quality.alignment_all_correct!.value)) < 1e-12, m.name);
      assert.ok(d.ci95 && d.ci95[0] <= d.value && d.value <= d.ci95[1], `${m.name}: ${JSON.stringify(d)}`);
    }
    assert.equal(a.methods[0]!.quality.alignment_all_correct_delta, undefined, "none has no change against itself");
    assert.equal(a.methods.length, 3);
    for (const m of a.methods) assert.equal(m.images.length, 4);
    // A local eval is one worker, "local": its speed-up is the plain ratio of the medians, as before workers.
    for (const m of a.methods) {
      const rec = JSON.parse(readFileSync(join(whole, m.images[0]!.file.replace(/\.png$/, ".json")), "utf8"));
      assert.equal(rec.worker, "local", m.name);
    }

    // And a finished eval run again regenerates nothing and writes the same file, byte for byte.
    const before = readFileSync(join(killed, "eval.json"), "utf8");
    const r3 = await atedmInProcess(args(killed));
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(JSON.parse(readFileSync(join(killed, "run.json"), "utf8")).images_generated, 0);
    assert.equal(readFileSync(join(killed, "eval.json"), "utf8"), before);
  });
});
