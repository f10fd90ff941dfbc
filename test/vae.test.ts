/**
 * The VAE decoder against diffusers' golden tensors (graph on `input.z`, with intermediates; VAEDecoder on the
 * UNet-space `input.latents`), the legacy attention weight names of old SD-1.x checkpoints, and the `np`
 * postprocess.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { golden, tensorOf, assertClose, errors, TOL, TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { writeSafetensors, type HostTensor } from "../src/io/safetensors.js";
import { buildVAEDecoderGraph, resolveVAEConfig, toImageNHWC, VAEDecoder } from "../src/models/vae.js";
import { Weights } from "../src/models/weights.js";
import { Runtime, f32 } from "../src/runtime/session.js";
import { AtedmError } from "../src/errors.js";

const rt = new Runtime({ threads: 2 });
const temps: string[] = [];
after(() => {
  rt.dispose();
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

const report = (label: string, e: { maxAbs: number; relL2: number }) =>
  console.log(`${label}: max_abs ${e.maxAbs.toExponential(2)}, rel_l2 ${e.relL2.toExponential(2)}`);

for (const model of [TINY_SD, TINY_SDXL]) {
  const name = model.split("/").pop()!;
  test(`VAE decoder matches diffusers on ${name}: graph on z with intermediates, VAEDecoder on latents`, async () => {
    const gold = golden(model, "vae_decoder.safetensors");
    const cfg = resolveVAEConfig(componentConfig(model, "vae"));
    const taps = ["inter.post_quant_conv", "inter.decoder.mid_block"];
    const graph = buildVAEDecoderGraph(cfg, new Weights(componentWeights(model, "vae")), { taps });
    const session = await rt.session(graph);
    const z = tensorOf(gold, "input.z");
    const out = await session.run({ latent_sample: f32(z.data as Float32Array, z.dims) });
    for (const k of taps) {
      report(`${name} ${k}`, assertClose(k, out[k]!.data as Float32Array, tensorOf(gold, k), TOL.vae, [...out[k]!.dims]));
    }
    const s = out.sample!;
    report(
      `${name} graph output.sample`,
      assertClose("output.sample", s.data as Float32Array, tensorOf(gold, "output.sample"), TOL.vae, [...s.dims]),
    );
    await session.release();

    // The high-level decoder divides by scaling_factor itself.
    const vae = await VAEDecoder.load(model, rt);
    assert.equal(vae.scalingFactor, cfg.scaling_factor);
    assert.equal(vae.shiftFactor, 0);
    const lat = tensorOf(gold, "input.latents");
    const dec = await vae.decode(lat.data as Float32Array, lat.dims);
    report(`${name} VAEDecoder output.sample`, assertClose("VAEDecoder.decode", dec.data, tensorOf(gold, "output.sample"), TOL.vae, dec.dims));

    // With the np postprocess, the pipeline's final image from its final latents.
    for (const file of ["pipeline_s4.safetensors", "pipeline_s8.safetensors"]) {
      const p = golden(model, file);
      const fin = tensorOf(p, "output.latents");
      const img = toImageNHWC(await vae.decode(fin.data as Float32Array, fin.dims));
      report(`${name} ${file} output.image`, assertClose(`${file} output.image`, img.data, tensorOf(p, "output.image"), TOL.pipeline, img.dims));
    }
    await vae.release();
  });
}

test("VAE config: scaling/shift/force_upcast read, unsupported values rejected", () => {
  const sd = resolveVAEConfig(componentConfig(TINY_SD, "vae"));
  assert.equal(sd.scaling_factor, 0.18215);
  assert.equal(sd.shift_factor, 0);
  assert.equal(sd.force_upcast, true);
  assert.deepEqual(sd.block_out_channels, [8, 16, 16, 16]);
  const xl = resolveVAEConfig(componentConfig(TINY_SDXL, "vae"));
  assert.equal(xl.scaling_factor, 0.13025);
  assert.equal(xl.force_upcast, false);
  const raw = componentConfig(TINY_SD, "vae");
  assert.equal(resolveVAEConfig({ ...raw, shift_factor: 0.0609 }).shift_factor, 0.0609);
  assert.throws(() => resolveVAEConfig({ ...raw, up_block_types: ["UpDecoderBlock2D"] }), AtedmError);
  assert.throws(() => resolveVAEConfig({ ...raw, norm_type: "spatial" }), /norm_type/);
  assert.throws(() => resolveVAEConfig({ ...raw, act_fn: "relu" }), /act_fn/);
  assert.throws(() => resolveVAEConfig({ ...raw, norm_num_groups: 3 }), /divisible/);
});

test("VAE decoder loads legacy attention names (query/key/value/proj_attn) and 1x1-conv attention weights", async () => {
  const store = componentWeights(TINY_SD, "vae");
  const prefix = "decoder.mid_block.attentions.0.";
  const rename: Record<string, string> = { to_q: "query", to_k: "key", to_v: "value", "to_out.0": "proj_attn" };
  const tensors: Record<string, HostTensor> = {};
  let renamed = 0;
  for (const key of store.keys()) {
    const t = store.tensor(key);
    let k = key;
    if (key.startsWith(prefix)) {
      const rest = key.slice(prefix.length);
      const mod = Object.keys(rename).find((m) => rest.startsWith(`${m}.`));
      if (mod) {
        k = `${prefix}${rename[mod]}${rest.slice(mod.length)}`;
        renamed++;
        // query/key weights as the old 1x1 conv attention stored them; value/proj_attn stay 2-D.
        if ((mod === "to_q" || mod === "to_k") && rest.endsWith(".weight")) t.dims = [...t.dims, 1, 1];
      }
    }
    tensors[k] = t;
  }
  assert.equal(renamed, 8);
  const dir = mkdtempSync(join(tmpdir(), "atedm-vae-legacy-"));
  temps.push(dir);
  mkdirSync(join(dir, "vae"));
  copyFileSync(join(TINY_SD, "vae", "config.json"), join(dir, "vae", "config.json"));
  writeSafetensors(join(dir, "vae", "diffusion_pytorch_model.safetensors"), tensors);

  const gold = golden(TINY_SD, "vae_decoder.safetensors");
  const lat = tensorOf(gold, "input.latents");
  const legacy = await VAEDecoder.load(dir, rt);
  const dec = await legacy.decode(lat.data as Float32Array, lat.dims);
  report("legacy output.sample", assertClose("legacy VAEDecoder.decode", dec.data, tensorOf(gold, "output.sample"), TOL.vae, dec.dims));
  const modern = await VAEDecoder.load(TINY_SD, rt);
  const ref = await modern.decode(lat.data as Float32Array, lat.dims);
  const e = errors(dec.data, ref.data);
  report("legacy vs modern names", e);
  assert.ok(e.maxAbs <= 1e-6, `legacy and modern loading differ by ${e.maxAbs}`);
  await legacy.release();
  await modern.release();

  // A 1x1 weight of the wrong size is reported by name.
  const badTensors = { ...tensors, [`${prefix}query.weight`]: { dims: [16, 8, 1, 1], data: new Float32Array(128) } };
  const bad = mkdtempSync(join(tmpdir(), "atedm-vae-bad-"));
  temps.push(bad);
  mkdirSync(join(bad, "vae"));
  copyFileSync(join(TINY_SD, "vae", "config.json"), join(bad, "vae", "config.json"));
  writeSafetensors(join(bad, "vae", "diffusion_pytorch_model.safetensors"), badTensors);
  await assert.rejects(VAEDecoder.load(bad, rt), /query\.weight' has shape \[16,8,1,1\], expected \[16,16,1,1\]/);
});

test("VAE decoder: batch, latent height and width are symbolic (non-square, batch 2)", async () => {
  const vae = await VAEDecoder.load(TINY_SD, rt);
  const lat = tensorOf(golden(TINY_SD, "vae_decoder.safetensors"), "input.latents");
  // Two copies of the golden latent's top-left 5x3 window, H != W.
  const [h, w] = [5, 3];
  const crop = new Float32Array(2 * 4 * h * w);
  for (let b = 0; b < 2; b++)
    for (let c = 0; c < 4; c++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) crop[((b * 4 + c) * h + y) * w + x] = (lat.data as Float32Array)[(c * 32 + y) * 32 + x]!;
  const out = await vae.decode(crop, [2, 4, h, w]);
  assert.deepEqual(out.dims, [2, 3, 8 * h, 8 * w]);
  const n = 3 * 8 * h * 8 * w;
  assert.deepEqual(out.data.subarray(0, n), out.data.subarray(n));
  assert.ok(out.data.every(Number.isFinite));
  await assert.rejects(vae.decode(crop, [2, 3, h, w]), /latents must have shape \[B, 4, h, w\]/);
  await vae.release();
});

test("toImageNHWC: clamp(x / 2 + 0.5, 0, 1), NCHW -> NHWC", () => {
  // B=1, C=3, H=2, W=2; channel c, pixel p holds a distinct value.
  const data = Float32Array.from([
    -3,
    -1,
    0,
    1, // c0
    0.5,
    -0.5,
    2,
    0.25, // c1
    0.1,
    0.9,
    -0.2,
    1.5, // c2
  ]);
  const img = toImageNHWC({ data, dims: [1, 3, 2, 2] });
  assert.deepEqual(img.dims, [1, 2, 2, 3]);
  const f = Math.fround;
  const expected = [0, f(0.75), f(f(0.1) / 2 + 0.5), 0, f(0.25), f(f(0.9) / 2 + 0.5), 0.5, 1, f(f(-0.2) / 2 + 0.5), 1, f(0.625), 1];
  assert.deepEqual([...img.data], expected);
  assert.ok(img.data instanceof Float32Array);
  // Batch 2, one channel: batches stay in order.
  const two = toImageNHWC({ data: Float32Array.from([0, 1, -1, 0.5]), dims: [2, 1, 1, 2] });
  assert.deepEqual(two.dims, [2, 1, 2, 1]);
  assert.deepEqual([...two.data], [0.5, 1, 0, 0.75]);
  assert.throws(() => toImageNHWC({ data: new Float32Array(3), dims: [1, 3, 2] }), AtedmError);
});
