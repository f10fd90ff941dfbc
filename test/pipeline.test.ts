/**
 * The whole text-to-image pipeline against diffusers' pipeline goldens (given latents): prompt embeddings,
 * timesteps, per-step U-Net outputs and latents, final latents and image.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { golden, tensorOf, assertClose, TOL, TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureSingleFile } from "./helpers/single_file.js";

interface Case {
  prompt: string;
  negative_prompt: string | null;
  steps: number;
  guidance: number;
  height: number;
  width: number;
  extra?: Record<string, unknown>;
}

/** The exact pipeline calls, from the fixture manifests. */
function callOf(model: string, file: string): Case {
  const text = readFileSync(join(model, "golden", "manifest.json"), "utf8")
    .replace(/-Infinity/g, "null")
    .replace(/NaN/g, "null");
  const m = JSON.parse(text) as { files: Array<{ file: string; meta: Record<string, unknown> }> };
  const f = m.files.find((x) => x.file === file)!;
  const kw = f.meta.call_kwargs as Record<string, unknown>;
  return {
    prompt: kw.prompt as string,
    negative_prompt: (kw.negative_prompt as string | null) ?? null,
    steps: kw.num_inference_steps as number,
    guidance: kw.guidance_scale as number,
    height: f.meta.height as number,
    width: f.meta.width as number,
    extra: kw,
  };
}

/**
 * Each case from the folder, and from the same model as one single-file checkpoint in the original key layout
 * (written by `toSingleFile`, which test/single_file.test.ts checks against diffusers' own conversion scripts)
 * with `config` naming the folder for the tiny models' non-standard configs and tokenizers.
 */
const CASES: Array<[model: string, file: string, single: "sd" | "sdxl" | null]> = [
  [TINY_SD, "pipeline_s4.safetensors", null],
  [TINY_SD, "pipeline_s8.safetensors", null],
  [TINY_SDXL, "pipeline_s4.safetensors", null],
  [TINY_SDXL, "pipeline_s8.safetensors", null],
  [TINY_SD, "pipeline_s4.safetensors", "sd"],
  [TINY_SDXL, "pipeline_s8.safetensors", "sdxl"],
];

for (const [model, file, single] of CASES) {
  test(`${model.split("/").pop()}${single ? " as a single file" : ""} ${file}: generate() matches diffusers`, async () => {
    const gold = golden(model, file);
    const c = callOf(model, file);
    const pipe = single
      ? await loadPipeline(await fixtureSingleFile(single), { threads: 2, config: model })
      : await loadPipeline(model, { threads: 2 });
    const unetOut: Float32Array[] = [];
    const r = await pipe.generate({
      prompt: c.prompt,
      negativePrompt: c.negative_prompt,
      steps: c.steps,
      guidance: c.guidance,
      height: c.height,
      width: c.width,
      latents: tensorOf(gold, "latents").data as Float32Array,
      originalSize: c.extra?.original_size as [number, number] | undefined,
      cropsCoordsTopLeft: c.extra?.crops_coords_top_left as [number, number] | undefined,
      targetSize: c.extra?.target_size as [number, number] | undefined,
      onStep: (s) => unetOut.push(s.unet.sample.slice()),
    });
    assert.deepEqual(r.timesteps, Array.from(tensorOf(gold, "timesteps").data as Float32Array), "timesteps");
    const text = await pipe.encodePrompt(c.prompt, c.negative_prompt, c.guidance > 1);
    assertClose("prompt_embeds", text.hidden.data, tensorOf(gold, "prompt_embeds"), TOL.pipeline, text.hidden.dims);
    if (gold.has("add_text_embeds")) assertClose("add_text_embeds", text.pooled!.data, tensorOf(gold, "add_text_embeds"), TOL.pipeline);
    if (gold.has("unet_outputs")) {
      const u = tensorOf(gold, "unet_outputs");
      const per = u.data.length / c.steps;
      unetOut.forEach((o, i) => assertClose(`unet_outputs[${i}]`, o, (u.data as Float32Array).subarray(i * per, (i + 1) * per), TOL.pipeline));
    }
    assertClose("output.latents", r.latents, tensorOf(gold, "output.latents"), TOL.pipeline, r.latentDims);
    assertClose("output.image", r.image, tensorOf(gold, "output.image"), TOL.pipeline, r.imageDims);
    await pipe.release();
  });
}

test("same seed, same image (and another seed, another image), with AT-EDM and with ToMe installed", async () => {
  const { applyAtEdm, applyTome } = await import("../src/pruning/index.js");
  const pipe = await loadPipeline(TINY_SD, { threads: 2 });
  for (const apply of [() => applyAtEdm(pipe, { ratio: 0.5 }), () => applyTome(pipe, { ratio: 0.5, useRand: true, seed: 3 })]) {
    apply();
    const opts = { prompt: "a red circle", steps: 3, height: 64, width: 64 };
    const a = await pipe.generate({ ...opts, seed: 42 });
    const b = await pipe.generate({ ...opts, seed: 42 });
    const c = await pipe.generate({ ...opts, seed: 43 });
    assert.deepEqual(a.image, b.image);
    assert.notDeepEqual(a.image, c.image);
    assert.deepEqual(a.imageDims, [1, 64, 64, 3]);
  }
  await pipe.release();
});
