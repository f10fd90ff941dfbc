/**
 * The `atedm` command line as a user runs it: generate with --latents reproduces diffusers' pipeline, --json
 * and --save-latents / --save-masks outputs, flops totals, and one-line errors for bad input.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readSafetensors } from "../src/io/safetensors.js";
import { assertClose, golden, tensorOf, TINY_SD, TINY_SDXL, TOL } from "./helpers/golden.js";

const here = dirname(fileURLToPath(import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "atedm-cli-"));

function atedm(...args: string[]) {
  const r = spawnSync(process.execPath, ["--import", "tsx", join(here, "helpers", "cli.ts"), ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

for (const [model, guidance] of [[TINY_SD, "7.5"], [TINY_SDXL, "5.0"]] as const) {
  test(`generate --latents on ${model.split("/").pop()} reproduces diffusers' pipeline (4 steps)`, () => {
    const out = join(tmp, `${model.split("/").pop()}.png`);
    const lat = join(tmp, `${model.split("/").pop()}-latents.safetensors`);
    const r = atedm("generate", "a photograph of an astronaut riding a horse on the moon", "--model", model,
      "--negative", "blurry, low quality, watermark", "--steps", "4", "--guidance", guidance,
      "--latents", join(model, "golden", "pipeline_s4.safetensors"), "--out", out, "--save-latents", lat, "--json", "--threads", "2");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    for (const k of ["model", "steps", "seconds_total", "seconds_per_step", "unet_tflops_per_step", "output"]) assert.ok(k in j, `--json has ${k}`);
    assert.equal(j.steps, 4);
    assert.equal(j.output.image, out);
    assert.ok(readFileSync(out).subarray(1, 4).toString() === "PNG");
    const ours = readSafetensors(lat).get("latents")!;
    assertClose("output.latents", ours.data as Float32Array, tensorOf(golden(model, "pipeline_s4.safetensors"), "output.latents"), TOL.pipeline, ours.dims);
  });
}

test("generate --method atedm --save-masks writes kept-token and score images per step and block", () => {
  const dir = join(tmp, "masks");
  const r = atedm("generate", "a cabin", "--model", TINY_SDXL, "--steps", "2", "--height", "64", "--width", "64",
    "--method", "atedm", "--ratio", "0.5", "--schedule", "none", "--save-masks", dir, "--out", join(tmp, "m.png"), "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.method, "atedm");
  assert.ok(j.flops_saving > 0 && j.flops_saving < 1);
  const files = readdirSync(dir);
  // tiny-sdxl has 6 attention blocks (2 down, 1 mid, 3... see attentionBlocks); 2 steps, 2 images each.
  assert.ok(files.some((f) => f.startsWith("step000_") && f.endsWith("_kept.png")));
  assert.ok(files.some((f) => f.startsWith("step001_") && f.endsWith("_score.png")));
  assert.equal(files.filter((f) => f.endsWith("_kept.png")).length, files.filter((f) => f.endsWith("_score.png")).length);
});

test("flops reproduces the SPEC reference totals and the SD-XL saving at ratio 0.63", () => {
  for (const [name, h, total] of [["sd15", 512, 0.803], ["sd21", 768, 2.149], ["sdxl", 1024, 6.761]] as const) {
    const r = atedm("flops", "--unet-config", join(here, "configs", `${name}-unet.json`), "--height", String(h), "--width", String(h), "--json");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.ok(Math.abs(j.unet_tflops / total - 1) < 1e-3, `${name}: ${j.unet_tflops} vs ${total}`);
  }
  const r = atedm("flops", "--unet-config", join(here, "configs", "sdxl-unet.json"), "--height", "1024", "--width", "1024",
    "--method", "atedm", "--ratio", "0.63", "--schedule", "none", "--json");
  const j = JSON.parse(r.stdout);
  assert.ok(j.unet_tflops_pruned < j.unet_tflops && j.flops_saving > 0.3 && j.flops_saving < 0.5, JSON.stringify(j.flops_saving));
});

test("bad input ends in one line naming the problem, exit code 1, no stack trace", () => {
  const cases: Array<[string[], RegExp]> = [
    [["generate", "x", "--model", join(tmp, "nope")], /nope: not a diffusers model folder/],
    [["generate", "x", "--model", TINY_SD, "--steps", "zero"], /--steps must be an integer/],
    [["generate", "x", "--model", TINY_SD, "--scheduler", "pndm"], /--scheduler must be one of/],
    [["generate", "x", "--model", TINY_SD, "--bogus"], /Unknown option '--bogus'/],
    [["generate", "x", "--model", TINY_SD, "--height", "100"], /--height must be a positive multiple of 8/],
    [["generate", "x", "--model", TINY_SD, "--method", "atedm", "--ratio", "1.5"], /--ratio must be in \[0, 1\)/],
    [["flops"], /give --model DIR or --unet-config FILE/],
  ];
  const bad = join(tmp, "bad.safetensors");
  writeFileSync(bad, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 123]));
  cases.push([["generate", "x", "--model", TINY_SD, "--latents", bad], /bad\.safetensors: (corrupt|safetensors header)/]);
  for (const [args, pattern] of cases) {
    const r = atedm(...args);
    assert.notEqual(r.code, 0, args.join(" "));
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line for ${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0]!, /^atedm: /);
    assert.match(lines[0]!, pattern);
  }
});

test("--help explains every flag of generate", () => {
  const r = atedm("generate", "--help");
  assert.equal(r.code, 0);
  for (const flag of ["--model", "--negative", "--steps", "--guidance", "--seed", "--height", "--width", "--scheduler", "--latents",
    "--out", "--save-latents", "--threads", "--json", "--method", "--ratio", "--schedule", "--save-masks"]) {
    assert.ok(r.stdout.includes(flag), flag);
  }
  assert.ok(!existsSync(join(tmp, "out.png")));
});
