/**
 * The CLIP text encoders against transformers' golden tensors: every hidden state, the penultimate layer,
 * last_hidden_state, pooler_output and (CLIPTextModelWithProjection) text_embeds, for both fixtures.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { golden, tensorOf, assertClose, TOL, TINY_SD, TINY_SDXL, type Errors } from "./helpers/golden.js";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { AtedmError } from "../src/errors.js";
import { buildCLIPTextGraph, CLIPTextEncoder, hasProjection, resolveCLIPTextConfig } from "../src/models/clip_text.js";
import { Weights } from "../src/models/weights.js";
import { Runtime, i64 } from "../src/runtime/session.js";

const worst: Errors = { maxAbs: 0, relL2: 0 };
const track = (e: Errors) => {
  worst.maxAbs = Math.max(worst.maxAbs, e.maxAbs);
  worst.relL2 = Math.max(worst.relL2, e.relL2);
};

for (const [model, component] of [
  [TINY_SD, "text_encoder"],
  [TINY_SDXL, "text_encoder"],
  [TINY_SDXL, "text_encoder_2"],
] as const) {
  test(`${component} matches transformers on ${model.split("/").pop()}: all hidden states, outputs`, async (t) => {
    const gold = golden(model, "text_encoders.safetensors");
    const raw = componentConfig(model, component);
    const cfg = resolveCLIPTextConfig(raw, `${component}/config.json`);
    const weights = new Weights(componentWeights(model, component));
    const withProjection = hasProjection(raw, weights);
    assert.equal(withProjection, gold.has(`${component}.text_embeds`));
    const graph = buildCLIPTextGraph(cfg, weights, { withProjection, allHiddenStates: true });
    const rt = new Runtime({ threads: 2 });
    const session = await rt.session(graph);
    const ids = tensorOf(gold, `${component}.input_ids`);
    const out = await session.run({ input_ids: i64(ids.data as BigInt64Array, ids.dims) });

    const hs = tensorOf(gold, `${component}.hidden_states`);
    const [n1, ...rest] = hs.dims as [number, ...number[]];
    assert.equal(n1, cfg.num_hidden_layers + 1);
    const size = rest.reduce((a, b) => a * b, 1);
    for (let i = 0; i < n1; i++) {
      const h = out[`hidden_states.${i}`]!;
      const gi = { dims: rest, data: (hs.data as Float32Array).subarray(i * size, (i + 1) * size) };
      track(assertClose(`${component}.hidden_states[${i}]`, h.data as Float32Array, gi, TOL.text_encoder, [...h.dims]));
    }
    const pairs: Array<[string, string]> = [
      ["penultimate", "penultimate"],
      ["last_hidden_state", "last_hidden_state"],
      ["pooler_output", "pooler_output"],
    ];
    if (withProjection) pairs.push(["text_embeds", "text_embeds"]);
    for (const [ours, theirs] of pairs) {
      const o = out[ours]!;
      track(assertClose(`${component}.${theirs}`, o.data as Float32Array, tensorOf(gold, `${component}.${theirs}`), TOL.text_encoder, [...o.dims]));
    }

    // The high-level encoder gives the same tensors, also for a shorter sequence (symbolic S).
    const enc = await CLIPTextEncoder.load(model, component, rt);
    const rows = Array.from({ length: ids.dims[0]! }, (_, r) =>
      Array.from((ids.data as BigInt64Array).subarray(r * ids.dims[1]!, (r + 1) * ids.dims[1]!), Number),
    );
    const full = await enc.encode(rows);
    assert.deepEqual(full.penultimate.data, out.penultimate!.data);
    assert.deepEqual(full.pooled.data, out.pooler_output!.data);
    assert.equal(full.textEmbeds !== undefined, withProjection);
    const short = await enc.encode(rows.map((r) => r.slice(0, 10)));
    assert.deepEqual(short.lastHiddenState.dims, [rows.length, 10, cfg.hidden_size]);
    // Causal: the first 10 positions do not depend on what follows.
    const H = cfg.hidden_size;
    for (let r = 0; r < rows.length; r++) {
      const a = short.penultimate.data.subarray(r * 10 * H, (r + 1) * 10 * H);
      const b = full.penultimate.data.subarray(r * 77 * H, r * 77 * H + 10 * H);
      assertClose(`causal row ${r}`, a, b, TOL.text_encoder);
    }
    await assert.rejects(enc.encode([new Array(78).fill(1)]), AtedmError);
    await assert.rejects(enc.encode([[cfg.vocab_size]]), AtedmError);
    await enc.release();
    await session.release();
    rt.dispose();
    t.diagnostic(
      `${model.split("/").pop()}/${component}: worst so far max_abs ${worst.maxAbs.toExponential(2)}, rel_l2 ${worst.relL2.toExponential(2)}`,
    );
  });
}

test("unsupported hidden_act is rejected, naming the key and the file", () => {
  const raw = { ...componentConfig(TINY_SD, "text_encoder"), hidden_act: "gelu_new" };
  assert.throws(
    () => resolveCLIPTextConfig(raw, "tiny-sd/text_encoder/config.json"),
    (e: unknown) =>
      e instanceof AtedmError && /tiny-sd\/text_encoder\/config\.json/.test(e.message) && /hidden_act/.test(e.message) && /gelu_new/.test(e.message),
  );
});

test("CLIPTextEncoder.load reports the config file of a bad component", async () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-clip-"));
  mkdirSync(join(dir, "text_encoder"));
  const cfg = JSON.parse(readFileSync(join(TINY_SD, "text_encoder", "config.json"), "utf8"));
  writeFileSync(join(dir, "text_encoder", "config.json"), JSON.stringify({ ...cfg, hidden_act: "relu" }));
  copyFileSync(join(TINY_SD, "text_encoder", "model.safetensors"), join(dir, "text_encoder", "model.safetensors"));
  try {
    await assert.rejects(
      CLIPTextEncoder.load(dir, "text_encoder", new Runtime({ threads: 1 })),
      (e: unknown) => e instanceof AtedmError && e.message.includes(join(dir, "text_encoder", "config.json")) && e.message.includes("hidden_act"),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
