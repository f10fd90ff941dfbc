/**
 * The U-Net against diffusers' golden tensors: output, every recorded intermediate, and the first transformer
 * block's internals including the layer-1 self-attention probabilities.
 */
import { test } from "node:test";
import { golden, tensorOf, assertClose, TOL, TINY_SD, TINY_SDXL } from "./helpers/golden.js";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { denseRunner, layerForward } from "../src/models/transformer_2d.js";
import type { TransformerRunner } from "../src/models/pruning_hook.js";
import { Weights } from "../src/models/weights.js";
import { Runtime, f32 } from "../src/runtime/session.js";

/** A runner that taps the first transformer block's sub-layer outputs under the fixtures' `attn.*` names. */
const tapFirstLayer: TransformerRunner = (ctx) => {
  const { g, layers, tap } = ctx;
  let x = ctx.tokens;
  layers.forEach((L, i) => {
    if (i > 0) {
      x = layerForward(L, g, x);
      return;
    }
    tap("attn.block_input", x);
    const n1 = L.norm1(x);
    tap("attn.norm1", n1);
    const a1 = L.attn1(n1, { explicitProbs: true });
    tap("attn.attn1_probs", a1.probs!);
    tap("attn.attn1_output", a1.out);
    x = g.op("Add", [a1.out, x]);
    const a2 = L.attn2(L.norm2(x));
    tap("attn.attn2_output", a2);
    x = g.op("Add", [a2, x]);
    const ff = L.ff(L.norm3(x));
    tap("attn.ff_output", ff);
    x = g.op("Add", [ff, x]);
    tap("attn.block_output", x);
  });
  return ctx.projOut(x);
};

for (const [model, firstBlock] of [
  [TINY_SD, "down_blocks.0.attentions.0"],
  [TINY_SDXL, "down_blocks.1.attentions.0"],
] as const) {
  test(`UNet matches diffusers on ${model.split("/").pop()}: output, intermediates, attention probabilities`, async () => {
    const gold = golden(model, "unet.safetensors");
    const taps = [...gold.keys()].filter((k) => k.startsWith("inter.") || k.startsWith("attn."));
    const cfg = resolveUNetConfig(componentConfig(model, "unet"));
    const weights = new Weights(componentWeights(model, "unet"));
    const graph = buildUNetGraph(cfg, weights, {
      taps,
      runners: (b) => (b.path === firstBlock ? tapFirstLayer : denseRunner),
    });
    const rt = new Runtime({ threads: 2 });
    const session = await rt.session(graph);
    const feeds: Record<string, ReturnType<typeof f32>> = {};
    const inputMap: Record<string, string> = {
      "input.sample": "sample",
      "input.timestep": "timestep",
      "input.encoder_hidden_states": "encoder_hidden_states",
      "input.text_embeds": "text_embeds",
      "input.time_ids": "time_ids",
    };
    for (const [k, name] of Object.entries(inputMap)) {
      const t = gold.get(k);
      if (t) feeds[name] = f32(t.data as Float32Array, t.dims);
    }
    const out = await session.run(feeds);
    assertClose("output.sample", out.out_sample!.data as Float32Array, tensorOf(gold, "output.sample"), TOL.unet, [...out.out_sample!.dims]);
    for (const k of taps) {
      const tol = k === "attn.attn1_probs" ? TOL.attn_probs : TOL.unet;
      assertClose(k, out[k]!.data as Float32Array, tensorOf(gold, k), tol, [...out[k]!.dims]);
    }
  });
}
