/**
 * The SD-XL-shaped embedded model (models/shapes-xl, issue 13): 64x64 pixels, no attention at the top level,
 * transformer depth 2 on the 32x32 token grid and depth 10 on the 16x16 one (docs/sdxl-shapes-design.md).
 * diffusers' own sampler (training/sample_shapes.py, same start noise, Euler, 20 steps, guidance 4, a textured
 * prompt) and ours give the same final sample; the FLOPs profile is the one the model exists for. The golden must
 * be remade whenever the model is retrained (test/golden/make-shapes-golden.ts). How well it follows prompts is
 * measured by `atedm eval-alignment` (training/README.md).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readSafetensors } from "../src/io/safetensors.js";
import { attentionBlocks, resolveUNetConfig } from "../src/models/unet_structure.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { atedmInProcess } from "./helpers/cli.js";
import { assertClose, TOL } from "./helpers/golden.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODEL = join(root, "models", "shapes-xl");
const GOLDEN = join(root, "test", "golden", "shapes-xl-diffusers.safetensors");
const PROMPT = "a large red circle at the top left on a striped blue background";

test("shapes-xl: final sample equals diffusers' for the same noise, textured prompt and sampler", async () => {
  const g = readSafetensors(GOLDEN);
  assert.deepEqual(g.get("start")!.dims, [1, 3, 64, 64]);
  const pipe = await loadPipeline(MODEL, { threads: 2 });
  const r = await pipe.generate({ prompt: PROMPT, steps: 20, guidance: 4, latents: g.get("start")!.data as Float32Array });
  assertClose("final sample", r.latents, g.get("latents")!, TOL.pipeline, r.latentDims);
  await pipe.release();
});

test("shapes-xl: SD-XL's layout (depth 2 on 32x32 tokens, depth 10 on 16x16) and >= 35 % saved at ratio 0.63", async () => {
  const configFile = join(MODEL, "unet", "config.json");
  const cfg = resolveUNetConfig(JSON.parse(readFileSync(configFile, "utf8")));
  const depths = new Map<number, Set<number>>();
  for (const b of attentionBlocks(cfg)) {
    const tokens = (64 / b.downsample) ** 2;
    depths.set(tokens, (depths.get(tokens) ?? new Set()).add(b.depth));
  }
  assert.deepEqual(
    [...depths].map(([n, d]) => [n, [...d]]),
    [
      [1024, [2]],
      [256, [10]],
    ],
  );
  const r = await atedmInProcess(["flops", "--unet-config", configFile, "--method", "atedm", "--ratio", "0.63", "--schedule", "none", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(j.flops_saving >= 0.35, `saving ${j.flops_saving}`);
});

test("shapes-xl: the default generate is 64x64, deterministic, with the recommended settings (guidance 4, 20 steps, coord maps)", async () => {
  const pipe = await loadPipeline(MODEL, { threads: 2 });
  const rec = JSON.parse(readFileSync(join(MODEL, "atedm.json"), "utf8"));
  assert.equal(pipe.defaultGuidance, rec.guidance);
  assert.deepEqual([rec.guidance, rec.steps, rec.coord_channels], [4, 20, 2]);
  assert.equal(pipe.recommended.steps, 20);
  const a = await pipe.generate({ prompt: PROMPT, seed: 5, steps: 2 });
  const b = await pipe.generate({ prompt: PROMPT, seed: 5, steps: 2 });
  assert.deepEqual(a.imageDims, [1, 64, 64, 3]);
  assert.deepEqual(a.image, b.image);
  await pipe.release();
});
