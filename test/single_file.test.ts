/**
 * Single-file checkpoints (src/io/single_file*.ts), tested both ways against diffusers' own conversion on the
 * fixtures (test/golden/single-file/manifest.json, made by make_single_file_goldens.py):
 *   (i)   folder -> single: our `toSingleFile` = diffusers' convert_diffusers_to_original_*.py (keys, shapes, bytes);
 *   (ii)  single -> diffusers: our views = `from_single_file` (every key, float32 bytes), as byte ranges of the file;
 *   (iii) family detection; (iv) config inference on the standard architectures' shapes; (v) errors;
 *   and the shipped CLIP tokenizer against transformers' ids.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { GraphBuilder } from "../src/graph/builder.js";
import { SafetensorsFile, WeightStore } from "../src/io/safetensors.js";
import {
  CLIP_TOKENIZER_DIR,
  componentTables,
  detectFamily,
  type Family,
  inferConfigs,
  OPENCLIP_PAD_TOKEN,
  openSingleFile,
  singleFileComponents,
  type StandardConfigs,
} from "../src/io/single_file.js";
import { SD15, SD21, SDXL_BASE } from "../src/io/single_file_configs.js";
import { originalShape } from "../src/io/single_file_keys.js";
import { CLIPTokenizer } from "../src/models/clip_tokenizer.js";
import { Weights } from "../src/models/weights.js";
import { assertClose, fixturesPresent, golden, TINY_SD, TINY_SDXL, TOL, tensorOf } from "./helpers/golden.js";
import { buildCLIPTextGraph, resolveCLIPTextConfig } from "../src/models/clip_text.js";
import { i64, Runtime } from "../src/runtime/session.js";
import { FIXTURE_SINGLE, fixtureConfigs, fixtureSingleFile } from "./helpers/single_file.js";

const here = dirname(fileURLToPath(import.meta.url));
const GOLDEN = join(here, "golden", "single-file");

interface Manifest {
  fixtures: Record<
    string,
    {
      single: Record<string, [number[], string, string]>;
      components: Record<string, Record<string, [number[], string]>>;
    }
  >;
}
const manifest = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")) as Manifest;
const HASH = 24;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex").slice(0, HASH);
const f32Bytes = (f: Float32Array) => new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
const skip = { skip: !fixturesPresent() && "fixtures missing" };

function readRange(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, "r");
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

for (const which of ["sd", "sdxl"] as const) {
  const name = `tiny-${which}`;
  const gold = manifest.fixtures[name]!;
  const { family, components } = FIXTURE_SINGLE[which];

  describe(`${name} as a single file`, skip, () => {
    test("(i) toSingleFile gives exactly the keys, shapes, dtypes and bytes of diffusers' conversion script", async () => {
      const f = SafetensorsFile.open(await fixtureSingleFile(which));
      try {
        const ours = f.keys().sort();
        const theirs = Object.keys(gold.single).sort();
        assert.deepEqual(
          ours.filter((k) => !gold.single[k]),
          [],
          "keys diffusers' script does not write",
        );
        assert.deepEqual(
          theirs.filter((k) => !f.has(k)),
          [],
          "keys diffusers' script writes that we do not",
        );
        let n = 0;
        for (const k of theirs) {
          const [shape, dtype, hash] = gold.single[k]!;
          const info = f.info(k);
          assert.deepEqual(info.shape, shape, `${k}: shape`);
          assert.equal(info.dtype, dtype, `${k}: dtype`);
          assert.equal(sha(f.readBytes(k)), hash, `${k}: bytes differ from diffusers' script`);
          n++;
        }
        assert.equal(n, Object.keys(gold.single).length);
      } finally {
        f.close();
      }
    });

    test("(ii) the views give exactly from_single_file's tensors, as byte ranges of the file", async () => {
      const path = await fixtureSingleFile(which);
      const store = WeightStore.open(path);
      const views = singleFileComponents(store, fixtureConfigs(which));
      assert.deepEqual(Object.keys(views).sort(), [...components].sort());
      try {
        for (const c of components) {
          const view = views[c]!;
          const want = gold.components[c]!;
          assert.deepEqual(view.keys().sort(), Object.keys(want).sort(), `${c}: keys differ from from_single_file's`);
          for (const [k, [shape, hash]] of Object.entries(want)) {
            const info = view.info(k);
            assert.deepEqual(info.shape, shape, `${c}.${k}: shape`);
            const data = view.readF32(k);
            assert.equal(sha(f32Bytes(data)), hash, `${c}.${k}: values differ from from_single_file's`);
            if (info.inline) {
              assert.equal(k, "text_projection.weight", `${c}.${k}: only the transposed projection is inline`);
            } else {
              // A byte range of the one file holding exactly these (F32) values: usable as ONNX external data.
              assert.equal(info.file, path);
              assert.equal(info.byteLength, data.byteLength, `${c}.${k}: byteLength`);
              assert.equal(sha(readRange(info.file, info.offset, info.byteLength)), hash, `${c}.${k}: file bytes at info().offset`);
            }
          }
        }
      } finally {
        for (const v of Object.values(views)) v.close();
      }
      // The last view closed the file.
      assert.throws(() => store.readF32(store.keys()[0]!), /closed/);
    });

    test("(iii) family detection", async () => {
      const f = SafetensorsFile.open(await fixtureSingleFile(which));
      try {
        assert.equal(
          detectFamily(f.keys(), (k) => f.info(k).shape),
          family,
        );
      } finally {
        f.close();
      }
    });
  });
}

describe("views and external data", skip, () => {
  test("Weights binds row slices as external byte ranges and the transposed projection inline", async () => {
    const store = WeightStore.open(await fixtureSingleFile("sdxl"));
    const views = singleFileComponents(store, fixtureConfigs("sdxl"));
    try {
      const w = new Weights(views.text_encoder_2!, { externalThreshold: 0 });
      assert.equal(w.external, true);
      const g = new GraphBuilder("t");
      w.param(g, "text_model.encoder.layers.0.self_attn.k_proj.weight", [40, 40]);
      w.param(g, "text_projection.weight", [32, 40]);
      const k = g.initializers.get("w:text_model.encoder.layers.0.self_attn.k_proj.weight")!;
      const info = views.text_encoder_2!.info("text_model.encoder.layers.0.self_attn.k_proj.weight");
      assert.deepEqual(k.external, { file: info.file, offset: info.offset, length: 40 * 40 * 4 });
      const p = g.initializers.get("w:text_projection.weight")!;
      assert.equal(p.external, undefined, "a transposed tensor is not a byte range of the file");
      assert.deepEqual(p.data, views.text_encoder_2!.readF32("text_projection.weight"));
    } finally {
      for (const v of Object.values(views)) v.close();
    }
  });
});

describe("ONNX Runtime reads the views", skip, () => {
  test("tiny-sdxl text_encoder_2 from the single file, all weights external (q/k/v byte ranges, projection inline), matches transformers", async () => {
    const m = openSingleFile(await fixtureSingleFile("sdxl"), { configDir: TINY_SDXL });
    const view = m.weights("text_encoder_2");
    const rt = new Runtime({ threads: 1 });
    try {
      const weights = new Weights(view, { externalThreshold: 0 });
      const cfg = resolveCLIPTextConfig(m.configs.text_encoder_2!);
      const session = await rt.session(buildCLIPTextGraph(cfg, weights, { withProjection: true }));
      const gold = golden(TINY_SDXL, "text_encoders.safetensors");
      const ids = tensorOf(gold, "text_encoder_2.input_ids");
      const out = await session.run({ input_ids: i64(ids.data as BigInt64Array, ids.dims) });
      for (const name of ["penultimate", "text_embeds"]) {
        const o = out[name]!;
        assertClose(`text_encoder_2.${name}`, o.data as Float32Array, tensorOf(gold, `text_encoder_2.${name}`), TOL.text_encoder, [...o.dims]);
      }
      await session.release();
    } finally {
      view.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// (iii, iv) The standard architectures, from shapes alone

/** The original keys and shapes a standard architecture's single file has (from our own shape functions). */
function standardShapes(family: Family, std: StandardConfigs): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const tables = componentTables(family, std);
  for (const rows of Object.values(tables)) {
    for (const r of rows) {
      out.set(r.original, originalShape(r.transform, r.shape));
    }
  }
  if (family === "sd2") {
    // OpenCLIP ViT-H's 24th layer and projection, which diffusers drops.
    out.set("cond_stage_model.model.transformer.resblocks.23.ln_1.weight", [1024]);
    out.set("cond_stage_model.model.text_projection", [1024, 1024]);
  }
  return out;
}

const STANDARDS: Array<[Family, StandardConfigs]> = [
  ["sd1", SD15],
  ["sd2", SD21],
  ["sdxl", SDXL_BASE],
];

describe("standard architectures", () => {
  for (const [family, std] of STANDARDS) {
    test(`(iv) ${family}: detect the family and infer back the standard configs from the shapes`, () => {
      const shapes = standardShapes(family, std);
      const keys = [...shapes.keys()];
      const shapeOf = (k: string) => shapes.get(k)!;
      assert.equal(detectFamily(keys, shapeOf, "x.safetensors"), family);
      assert.deepEqual(inferConfigs(family, keys, shapeOf, "x.safetensors"), std);
    });
  }

  test("(iv) the SD-XL table maps the SGM layout as diffusers does", () => {
    const t = componentTables("sdxl", SDXL_BASE);
    const m = new Map(t.unet!.map((r) => [r.diffusers, r.original]));
    const o = new Map(t.text_encoder_2!.map((r) => [r.diffusers, r]));
    for (const [d, orig] of [
      ["add_embedding.linear_1.weight", "label_emb.0.0.weight"],
      ["add_embedding.linear_2.bias", "label_emb.0.2.bias"],
      ["time_embedding.linear_1.weight", "time_embed.0.weight"],
      ["down_blocks.1.attentions.1.transformer_blocks.1.attn1.to_q.weight", "input_blocks.5.1.transformer_blocks.1.attn1.to_q.weight"],
      ["down_blocks.2.downsamplers.0.conv.weight", undefined],
      ["down_blocks.1.downsamplers.0.conv.weight", "input_blocks.6.0.op.weight"],
      ["mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"],
      ["up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.2.conv.weight"],
      ["up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"],
      ["up_blocks.2.resnets.2.conv_shortcut.weight", "output_blocks.8.0.skip_connection.weight"],
      ["conv_out.bias", "out.2.bias"],
    ] as const) {
      assert.equal(m.get(d), orig === undefined ? undefined : `model.diffusion_model.${orig}`, d);
    }
    assert.equal(
      o.get("text_model.encoder.layers.31.self_attn.v_proj.bias")!.original,
      "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias",
    );
    assert.deepEqual(o.get("text_model.encoder.layers.31.self_attn.v_proj.bias")!.transform, { rowSlice: 2 });
    assert.equal(o.get("text_projection.weight")!.transform, "transpose");
    // SD-1.x upsamplers: level 0 has no attention in the up path of SD-1 (UpBlock2D) -> .1.conv.
    const sd1 = new Map(componentTables("sd1", SD15).unet!.map((r) => [r.diffusers, r.original]));
    assert.equal(sd1.get("up_blocks.0.upsamplers.0.conv.weight"), "model.diffusion_model.output_blocks.2.1.conv.weight");
    assert.equal(sd1.get("up_blocks.1.upsamplers.0.conv.weight"), "model.diffusion_model.output_blocks.5.2.conv.weight");
  });

  test("(iii) SD-2 by its 1024-wide context, the refiner by its lone OpenCLIP embedder, old SD-1 CLIP keys", () => {
    const sd1 = standardShapes("sd1", SD15);
    const ctx = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
    const keys = [...sd1.keys()].filter((k) => !k.startsWith("cond_stage_model.")).concat(["cond_stage_model.model.token_embedding.weight"]);
    assert.equal(
      detectFamily(keys, (k) => (k === ctx ? [320, 1024] : (sd1.get(k) ?? [1]))),
      "sd2",
    );
    // diffusers' rule: a 1024-wide context is SD-2, whatever the text-encoder keys say (here HF CLIP: so it is missing).
    assert.throws(
      () => detectFamily([...sd1.keys()], (k) => (k === ctx ? [320, 1024] : sd1.get(k)!), "v.safetensors"),
      /^AtedmError: v\.safetensors: an SD-2\.x U-Net \(context dim 1024\) without cond_stage_model\.model\.\* keys/,
    );
    const refiner = [
      "model.diffusion_model.input_blocks.0.0.weight",
      "first_stage_model.decoder.conv_in.weight",
      "conditioner.embedders.0.model.text_projection",
    ];
    assert.equal(
      detectFamily(refiner, () => [1]),
      "sdxl-refiner",
    );
    assert.throws(
      () => inferConfigs("sdxl-refiner", refiner, () => [1], "r.safetensors"),
      /^AtedmError: r\.safetensors: an SD-XL refiner single file .*pass --config DIR/,
    );
    // Older SD-1 files keep CLIP without `text_model.`.
    const old = new Map([...sd1].map(([k, s]) => [k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."), s]));
    assert.deepEqual(
      inferConfigs("sd1", [...old.keys()], (k) => old.get(k)!, "old.safetensors"),
      SD15,
    );
    const te = componentTables("sd1", SD15, (k) => old.has(k)).text_encoder!;
    assert.equal(
      te.find((r) => r.diffusers === "text_model.final_layer_norm.weight")!.original,
      "cond_stage_model.transformer.final_layer_norm.weight",
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// (v) Errors

describe("(v) errors are one line naming the file", () => {
  const sd1 = standardShapes("sd1", SD15);
  const keys = [...sd1.keys()];
  const shapeOf = (k: string) => sd1.get(k)!;
  const oneLine = (re: RegExp) => (e: unknown) => e instanceof Error && e.name === "AtedmError" && !e.message.includes("\n") && re.test(e.message);

  test("unknown layout", () => {
    assert.throws(
      () => detectFamily(["unet.conv_in.weight", "text_model.embeddings.token_embedding.weight"], () => [1], "m.safetensors"),
      oneLine(/^m\.safetensors: no model\.diffusion_model\.\* keys: not a Stable Diffusion checkpoint/),
    );
  });

  test("missing components", () => {
    const noVae = keys.filter((k) => !k.startsWith("first_stage_model."));
    assert.throws(() => detectFamily(noVae, shapeOf, "m.safetensors"), oneLine(/^m\.safetensors: no first_stage_model\.\* keys: the VAE is missing/));
    const noText = keys.filter((k) => !k.startsWith("cond_stage_model."));
    assert.throws(
      () => detectFamily(noText, shapeOf, "m.safetensors"),
      oneLine(/^m\.safetensors: no cond_stage_model\.\* or conditioner\.embedders\.\* keys: the text encoder is missing/),
    );
    const xl = standardShapes("sdxl", SDXL_BASE);
    const noClipL = [...xl.keys()].filter((k) => !k.startsWith("conditioner.embedders.0."));
    assert.throws(
      () => detectFamily(noClipL, (k) => xl.get(k)!, "m.safetensors"),
      oneLine(/^m\.safetensors: no conditioner\.embedders\.0\.transformer\.\* keys: SD-XL's first text encoder/),
    );
  });

  test("non-standard shapes without --config, and an inpainting U-Net", async () => {
    const f = SafetensorsFile.open(await fixtureSingleFile("sd"));
    try {
      assert.throws(
        () => inferConfigs("sd1", f.keys(), (k) => f.info(k).shape, "tiny.safetensors"),
        oneLine(
          /^tiny\.safetensors: U-Net shapes match no standard SD-1\.x\/2\.x\/XL architecture \(block_out_channels \[16, 24, 24, 24\], layers_per_block 2; .*\); pass --config DIR with the model's diffusers configs$/,
        ),
      );
    } finally {
      f.close();
    }
    const inpaint = (k: string) => (k === "model.diffusion_model.input_blocks.0.0.weight" ? [320, 9, 3, 3] : shapeOf(k));
    assert.throws(
      () => inferConfigs("sd1", keys, inpaint, "inp.safetensors"),
      oneLine(/^inp\.safetensors: the U-Net takes 9 input channels \(an inpainting model\)/),
    );
    const badClip = (k: string) => (k === "cond_stage_model.transformer.text_model.final_layer_norm.weight" ? [1024] : shapeOf(k));
    assert.throws(
      () => inferConfigs("sd1", keys, badClip, "c.safetensors"),
      oneLine(/^c\.safetensors: text encoder shapes match no standard SD-1\.x .*final_layer_norm\.weight has shape \[1024\], expected \[768\]/),
    );
  });

  test("a truncated file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "atedm-sf-"));
    try {
      const src = await fixtureSingleFile("sd");
      const bad = join(dir, "cut.safetensors");
      writeFileSync(bad, readFileSync(src).subarray(0, statSync(src).size - 1000));
      assert.throws(() => openSingleFile(bad), oneLine(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*truncated file`)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("openSingleFile", skip, () => {
  test("with --config DIR: the folder's configs and tokenizers, the family's components", async () => {
    const m = openSingleFile(await fixtureSingleFile("sd"), { configDir: TINY_SD });
    assert.equal(m.family, "sd1");
    assert.deepEqual(m.components, ["unet", "vae", "text_encoder"]);
    assert.deepEqual(m.tokenizers.tokenizer, { dir: join(TINY_SD, "tokenizer") });
    assert.equal((m.configs.scheduler as { _class_name: string })._class_name, "EulerDiscreteScheduler");
    assert.throws(() => m.weights("text_encoder_2"), /a sd1 single file has no text_encoder_2/);
    // Each call is its own handle: closing one leaves the others readable.
    const a = m.weights("vae");
    const b = m.weights("vae");
    a.close();
    assert.deepEqual(b.info("decoder.mid_block.attentions.0.to_q.weight").shape, [16, 16]);
    assert.equal(b.readF32("decoder.mid_block.attentions.0.to_q.weight").length, 256);
    b.close();
    assert.throws(() => b.readF32("decoder.mid_block.attentions.0.to_q.weight"), /closed/);
  });

  test("without --config on a non-standard file: the one-line shape error", async () => {
    const path = await fixtureSingleFile("sdxl");
    assert.throws(
      () => openSingleFile(path),
      /U-Net shapes match no standard SD-1\.x\/2\.x\/XL architecture \(block_out_channels \[16, 24, 24\].*pass --config DIR/,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// Tokenizer

describe("the shipped CLIP tokenizer", () => {
  const golden = JSON.parse(readFileSync(join(GOLDEN, "tokenizer_ids.json"), "utf8")) as {
    strings: string[];
  } & Record<string, { input_ids: number[][]; padded: number[][]; pad_token_id: number }>;

  for (const [folder, padToken] of [
    ["clip-tokenizer", undefined],
    ["openclip-tokenizer", OPENCLIP_PAD_TOKEN],
  ] as const) {
    test(`${folder}: transformers' CLIPTokenizer ids for ${golden.strings.length} strings`, () => {
      const tok = CLIPTokenizer.fromPretrained(CLIP_TOKENIZER_DIR, { padToken });
      const g = golden[folder]!;
      assert.equal(tok.padTokenId, g.pad_token_id);
      golden.strings.forEach((s, i) => {
        assert.deepEqual([tok.bosTokenId, ...tok.encodeRaw(s), tok.eosTokenId], g.input_ids[i], `ids of ${JSON.stringify(s)}`);
        assert.deepEqual(tok.encode(s).ids, g.padded[i], `padded ids of ${JSON.stringify(s)}`);
      });
    });
  }

  test("a photo of a cat", () => {
    assert.deepEqual(
      CLIPTokenizer.fromPretrained(CLIP_TOKENIZER_DIR).encode("a photo of a cat").ids.slice(0, 8),
      [49406, 320, 1125, 539, 320, 2368, 49407, 49407],
    );
  });
});
