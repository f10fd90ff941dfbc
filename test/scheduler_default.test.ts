/**
 * A model folder's own scheduler is the default, as in diffusers' `from_pretrained`: tiny-sd with its scheduler
 * switched to DDIM reproduces diffusers' final latents through `atedm generate` with no `--scheduler` flag
 * (golden: test/golden/schedulers/pipeline_ddim_folder.safetensors, made by the script beside it), `--json` names
 * the scheduler, a `--scheduler` name overrides it, and a class atedm lacks is a one-line error naming it.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../src/io/safetensors.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { atedmInProcess } from "./helpers/cli.js";
import { assertClose, fixturesPresent, TINY_SD, TOL, tensorOf } from "./helpers/golden.js";

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), "golden", "schedulers");
const tmp = mkdtempSync(join(tmpdir(), "atedm-scheduler-default-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** tiny-sd with `scheduler_config.json` and model_index.json's scheduler entry set to `className`. */
function folderWith(name: string, className: string, schedulerConfig: string): string {
  const dir = join(tmp, name);
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  for (const c of ["unet", "vae", "text_encoder", "tokenizer"]) symlinkSync(join(TINY_SD, c), join(dir, c));
  const index = JSON.parse(readFileSync(join(TINY_SD, "model_index.json"), "utf8")) as Record<string, unknown>;
  index.scheduler = ["diffusers", className];
  writeFileSync(join(dir, "model_index.json"), JSON.stringify(index, null, 2));
  copyFileSync(schedulerConfig, join(dir, "scheduler", "scheduler_config.json"));
  return dir;
}

describe("the model folder's scheduler by default", { skip: !fixturesPresent() && "fixtures folder missing" }, () => {
  const golden = readSafetensors(join(GOLDEN, "pipeline_ddim_folder.safetensors"));
  const ddim = () => folderWith("ddim", "DDIMScheduler", join(GOLDEN, "pipeline_ddim_folder.scheduler_config.json"));
  const call = (model: string, out: string, ...extra: string[]) =>
    atedmInProcess([
      "generate",
      "a red circle on a blue background",
      "--model",
      model,
      "--steps",
      "4",
      "--guidance",
      "7.5",
      "--height",
      "256",
      "--width",
      "256",
      "--latents",
      join(GOLDEN, "pipeline_ddim_folder.safetensors"),
      "--out",
      join(tmp, `${out}.png`),
      "--save-latents",
      join(tmp, `${out}.safetensors`),
      "--threads",
      "2",
      "--json",
      ...extra,
    ]);

  test("a DDIM folder reproduces diffusers' final latents with no --scheduler flag", async () => {
    const r = await call(ddim(), "ddim");
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { scheduler: string; scheduler_class: string };
    assert.equal(report.scheduler, "ddim");
    assert.equal(report.scheduler_class, "DDIMScheduler");
    const latents = readSafetensors(join(tmp, "ddim.safetensors")).get("latents")!;
    assertClose("output.latents", latents.data as Float32Array, tensorOf(golden, "output.latents"), TOL.pipeline, latents.dims);
  });

  test("--scheduler overrides the folder's class (and the latents then differ from diffusers' DDIM ones)", async () => {
    const r = await call(join(tmp, "ddim"), "euler", "--scheduler", "euler");
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { scheduler: string }).scheduler, "euler");
    const latents = readSafetensors(join(tmp, "euler.safetensors")).get("latents")!.data as Float32Array;
    const gold = tensorOf(golden, "output.latents").data as Float32Array;
    const diff = latents.reduce((m, v, i) => Math.max(m, Math.abs(v - gold[i]!)), 0);
    assert.ok(diff > 1e-2, `euler should not reproduce DDIM's latents (max diff ${diff})`);
  });

  test("a scheduler class atedm lacks is one line naming it and listing ours; nothing is written", async () => {
    const config = join(tmp, "kdpm2.json");
    const raw = JSON.parse(readFileSync(join(TINY_SD, "scheduler", "scheduler_config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(config, JSON.stringify({ ...raw, _class_name: "KDPM2DiscreteScheduler" }));
    const dir = folderWith("kdpm2", "KDPM2DiscreteScheduler", config);
    const r = await atedmInProcess(["generate", "x", "--model", dir, "--steps", "2", "--out", "x.png"]);
    assert.equal(r.code, 1);
    const lines = r.stderr
      .trim()
      .split("\n")
      .filter((l) => !l.startsWith("loading "));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^atedm: .*KDPM2DiscreteScheduler.*EulerDiscreteScheduler.*DDIMScheduler.*PNDMScheduler.*--scheduler/);
    assert.deepEqual(r.written, []);
  });

  test("euler-a draws each step's noise from the --seed stream: same seed, same latents; given latents, the seed still matters", async () => {
    const pipe = await loadPipeline(TINY_SD, { threads: 2 });
    try {
      const latents = tensorOf(golden, "latents").data as Float32Array;
      const run = (scheduler: "euler-a" | "euler", seed: number) =>
        pipe.generate({ prompt: "a red circle", steps: 3, height: 256, width: 256, seed, latents, scheduler, checkMemory: false });
      const a = await run("euler-a", 1);
      const b = await run("euler-a", 1);
      const c = await run("euler-a", 2);
      assert.equal(a.scheduler.className, "EulerAncestralDiscreteScheduler");
      assert.deepEqual(a.latents, b.latents);
      assert.notDeepEqual(a.latents, c.latents, "with given latents, ancestral noise still comes from the seed");
      // A deterministic sampler ignores the seed when the latents are given.
      assert.deepEqual((await run("euler", 1)).latents, (await run("euler", 2)).latents);
    } finally {
      await pipe.release();
    }
  });
});
