/**
 * Single-file Stable Diffusion checkpoints: one `.safetensors` in the original LDM (SD-1.x, SD-2.x) / SGM (SD-XL)
 * key layout holding the U-Net (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoders.
 * This module presents such a file as the diffusers components atedm's loaders read, without copying it:
 *
 *   const m = openSingleFile("sd15.safetensors");            // detect family, infer + check configs
 *   const unet = m.weights("unet");                           // a TensorSource under diffusers names
 *   unet.info("conv_in.weight");                              // a byte range of the one file
 *   m.configs.unet, m.tokenizers.tokenizer                    // diffusers config objects, tokenizer folders
 *
 * Each component is a `TensorSource` view: renamed, reshaped and row-sliced tensors are byte ranges of the file
 * (so big checkpoints stay in it as ONNX external data); a transposed one (`text_projection`) is marked `inline`.
 * The key tables are in single_file_keys.ts, the standard configs in single_file_configs.ts.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../errors.js";
import { resolveCLIPTextConfig } from "../models/clip_text.js";
import { resolveUNetConfig } from "../models/unet_structure.js";
import { resolveVAEConfig } from "../models/vae.js";
import { readJsonObject } from "./config_schema.js";
import { componentConfig } from "./diffusers.js";
import type { HostTensor, TensorInfo, TensorSource } from "./safetensors.js";
import { WeightStore } from "./safetensors.js";
import { SD15, SD21, SDXL_BASE, type StandardConfigs } from "./single_file_configs.js";
import {
  CLIP_PREFIX,
  type Component,
  clipKeyTable,
  diffusersShape,
  type Family,
  type KeyRow,
  OPENCLIP_PREFIX,
  openClipKeyTable,
  originalShape,
  type TableRow,
  UNET_PREFIX,
  unetKeyTable,
  VAE_PREFIX,
  vaeKeyTable,
} from "./single_file_keys.js";

export type { Component, Family, KeyRow, TableRow, Transform } from "./single_file_keys.js";
export type { StandardConfigs } from "./single_file_configs.js";

type Json = Record<string, unknown>;

/** The raw (config.json-style) configs of a single file's components, inferred or from a diffusers folder. */
export interface ComponentConfigs {
  unet: Json;
  vae: Json;
  /** Absent for the SD-XL refiner (one OpenCLIP encoder, as text_encoder_2). */
  text_encoder?: Json;
  text_encoder_2?: Json;
}

/** CLIP ViT-L/14's tokenizer (openai/clip-vit-large-patch14), padding with `<|endoftext|>`: SD-1.x, SD-XL's first. */
export const CLIP_TOKENIZER_DIR = fileURLToPath(new URL("../../models/clip-tokenizer", import.meta.url));
/** SD-2.x's tokenizer and SD-XL's tokenizer_2: the same vocabulary, padding with `!` (id 0). */
export const OPENCLIP_PAD_TOKEN = "!";

/** A tokenizer: the folder of its files, and the pad token that replaces the folder's, if any. */
export interface TokenizerFiles {
  dir: string;
  padToken?: string;
}

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
const startsWithAny = (keys: readonly string[], prefix: string) => keys.some((k) => k.startsWith(prefix));

// ---------------------------------------------------------------------------------------------------------
// Family detection

/** diffusers' CHECKPOINT_KEY_NAMES["v2"]: its last dimension is the cross-attention (context) dimension. */
const V2_CONTEXT_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";

/**
 * Which standard architecture a single file holds, from its keys (and one shape), as diffusers'
 * `infer_diffusers_model_type` decides: SD-2 when input_blocks.2.1's cross-attention reads a 1024-wide context
 * (or the text encoder is OpenCLIP under `cond_stage_model.model.`), SD-XL when it has the second (OpenCLIP)
 * embedder, the refiner when its only embedder is OpenCLIP, else SD-1. diffusers tests fixed deep keys
 * (`resblocks.9`, `output_blocks.11`); this tests the component prefixes, which agree on every real checkpoint and
 * also work on tiny test models. Unknown layouts and missing components are one-line errors naming `file`.
 */
export function detectFamily(keys: readonly string[], shapeOf: (key: string) => readonly number[], file = "checkpoint"): Family {
  if (!startsWithAny(keys, UNET_PREFIX)) {
    throw new AtedmError(
      `${file}: no ${UNET_PREFIX}* keys: not a Stable Diffusion checkpoint in the original single-file layout (SD-1.x, SD-2.x or SD-XL); for a diffusers folder pass the folder`,
    );
  }
  if (!startsWithAny(keys, VAE_PREFIX)) {
    throw new AtedmError(
      `${file}: no ${VAE_PREFIX}* keys: the VAE is missing from this single file (pass a diffusers folder, or a checkpoint with its VAE baked in)`,
    );
  }
  const ctx = keys.includes(V2_CONTEXT_KEY) ? shapeOf(V2_CONTEXT_KEY) : undefined;
  if (startsWithAny(keys, OPENCLIP_PREFIX.sdxl)) {
    if (!startsWithAny(keys, CLIP_PREFIX.sdxl)) {
      throw new AtedmError(`${file}: no ${CLIP_PREFIX.sdxl}* keys: SD-XL's first text encoder (CLIP ViT-L) is missing from this single file`);
    }
    return "sdxl";
  }
  if (startsWithAny(keys, OPENCLIP_PREFIX["sdxl-refiner"])) return "sdxl-refiner";
  if (startsWithAny(keys, OPENCLIP_PREFIX.sd2) || ctx?.[ctx.length - 1] === 1024) {
    if (!startsWithAny(keys, OPENCLIP_PREFIX.sd2)) {
      throw new AtedmError(
        `${file}: an SD-2.x U-Net (context dim 1024) without ${OPENCLIP_PREFIX.sd2}* keys: the OpenCLIP text encoder is missing from this single file`,
      );
    }
    return "sd2";
  }
  if (startsWithAny(keys, CLIP_PREFIX.sd1)) return "sd1";
  if (startsWithAny(keys, "conditioner.")) {
    throw new AtedmError(
      `${file}: conditioner.* keys without ${OPENCLIP_PREFIX.sdxl}* or ${OPENCLIP_PREFIX["sdxl-refiner"]}*: not a standard SD-XL text-encoder layout`,
    );
  }
  throw new AtedmError(
    `${file}: no cond_stage_model.* or conditioner.embedders.* keys: the text encoder is missing from this single file (expected ${CLIP_PREFIX.sd1}*, ${OPENCLIP_PREFIX.sd2}* or conditioner.embedders.*)`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Key tables per component

/** Where SD-1 files keep CLIP: `cond_stage_model.transformer.text_model.*`, or (older files) without `text_model.`. */
function sd1ClipRows(cfg: Json, has: (k: string) => boolean, file: string): TableRow[] {
  const rows = clipKeyTable(resolveCLIPTextConfig(cfg, `${file} (text_encoder config)`), CLIP_PREFIX.sd1);
  const modern = `${CLIP_PREFIX.sd1}text_model.embeddings.token_embedding.weight`;
  const old = `${CLIP_PREFIX.sd1}embeddings.token_embedding.weight`;
  if (has(modern) || !has(old)) return rows;
  return rows.map((r) => ({ ...r, original: CLIP_PREFIX.sd1 + r.diffusers.replace(/^text_model\./, "") }));
}

/**
 * The key table of every component of a `family` single file with the given configs: diffusers name -> original
 * name and transform. `has` (the file's key test) picks between the two SD-1 CLIP layouts.
 */
export function componentTables(
  family: Family,
  configs: ComponentConfigs,
  has: (key: string) => boolean = () => true,
  file = "checkpoint",
): Partial<Record<Component, TableRow[]>> {
  const need = (c: keyof ComponentConfigs): Json => {
    const cfg = configs[c];
    if (!cfg) throw new AtedmError(`${file}: a ${family} single file needs a ${c} config`);
    return cfg;
  };
  const unetCfg = resolveUNetConfig(configs.unet, `${file} (unet config)`);
  const vaeCfg = resolveVAEConfig(configs.vae, `${file} (vae config)`);
  const vaeRaw = configs.vae as { in_channels?: number; use_quant_conv?: boolean };
  const out: Partial<Record<Component, TableRow[]>> = {
    unet: unetKeyTable(unetCfg),
    vae: vaeKeyTable(vaeCfg, { inChannels: vaeRaw.in_channels ?? 3, useQuantConv: vaeRaw.use_quant_conv ?? true }),
  };
  const clip = (c: "text_encoder" | "text_encoder_2") => resolveCLIPTextConfig(need(c), `${file} (${c} config)`);
  if (family === "sd1") out.text_encoder = sd1ClipRows(need("text_encoder"), has, file);
  else if (family === "sd2") out.text_encoder = openClipKeyTable(clip("text_encoder"), OPENCLIP_PREFIX.sd2, false);
  else if (family === "sdxl") {
    out.text_encoder = clipKeyTable(clip("text_encoder"), CLIP_PREFIX.sdxl);
    out.text_encoder_2 = openClipKeyTable(clip("text_encoder_2"), OPENCLIP_PREFIX.sdxl, true);
  } else out.text_encoder_2 = openClipKeyTable(clip("text_encoder_2"), OPENCLIP_PREFIX["sdxl-refiner"], true);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Views

/**
 * One component of a single file under its diffusers names. `info()` of a renamed, reshaped or row-sliced tensor is
 * the byte range it occupies in the file (offset/byteLength of the slice); a transposed one is `inline` (its
 * values exist only after `readF32`). `close()` closes the file when every view of it is closed.
 */
export class SingleFileView implements TensorSource {
  readonly source: string;
  private readonly rows = new Map<string, KeyRow>();
  private closed = false;

  constructor(
    private readonly store: TensorSource,
    rows: readonly KeyRow[],
    readonly component: Component,
    private readonly shared: { open: number } = { open: 1 },
  ) {
    this.source = store.source;
    for (const r of rows) this.rows.set(r.diffusers, r);
  }

  keys(): string[] {
    return [...this.rows.values()].filter((r) => this.store.has(r.original)).map((r) => r.diffusers);
  }

  has(name: string): boolean {
    const r = this.rows.get(name);
    return r !== undefined && this.store.has(r.original);
  }

  /** The original tensor a diffusers name is read from, and how. */
  row(name: string): KeyRow | undefined {
    return this.rows.get(name);
  }

  info(name: string): TensorInfo {
    const r = this.rows.get(name);
    if (!r) throw new AtedmError(`${this.source}: missing tensor '${name}' (no single-file name for it in the ${this.component})`);
    if (!this.store.has(r.original)) throw new AtedmError(`${this.source}: missing tensor '${r.original}' (the ${this.component}'s '${name}')`);
    const o = this.store.info(r.original);
    const t = r.transform;
    const bad = (why: string) =>
      new AtedmError(`${o.file}: tensor '${r.original}' has shape ${fmt(o.shape)}, ${why} (the ${this.component}'s '${name}')`);
    if (t === "none") return { ...o, name };
    if (t === "reshape") return { ...o, name, shape: diffusersShape(t, o.shape) };
    if (t === "transpose") {
      if (o.shape.length !== 2) throw bad("expected a matrix [D, P]");
      return { ...o, name, shape: diffusersShape(t, o.shape), inline: true };
    }
    if (o.shape.length < 1 || o.shape[0]! % 3 !== 0) throw bad("expected fused q/k/v rows (a multiple of 3)");
    const part = o.byteLength / 3;
    return { ...o, name, shape: diffusersShape(t, o.shape), offset: o.offset + t.rowSlice * part, byteLength: part };
  }

  readF32(name: string): Float32Array {
    const info = this.info(name);
    const r = this.rows.get(name)!;
    const t = r.transform;
    const data = this.store.readF32(r.original);
    if (t === "none" || t === "reshape") return data;
    if (t === "transpose") {
      const [P, D] = info.shape as [number, number]; // original [D, P]
      const out = new Float32Array(P * D);
      for (let d = 0; d < D; d++) for (let p = 0; p < P; p++) out[p * D + d] = data[d * P + p]!;
      return out;
    }
    const n = data.length / 3;
    return data.slice(t.rowSlice * n, (t.rowSlice + 1) * n);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (--this.shared.open === 0) this.store.close();
  }
}

/**
 * Views over one single file that present each component under its diffusers names, for the given configs (the
 * standard ones from `inferConfigs`, or a diffusers folder's for `--config DIR`). Only the components the family
 * has are returned (SD-1/SD-2: no text_encoder_2; refiner: no text_encoder). The store closes with the last view.
 */
export function singleFileComponents(store: TensorSource, configs: ComponentConfigs, family?: Family): Partial<Record<Component, SingleFileView>> {
  const keys = store.keys();
  const fam = family ?? detectFamily(keys, (k) => store.info(k).shape, store.source);
  const tables = componentTables(fam, configs, (k) => store.has(k), store.source);
  const entries = Object.entries(tables) as Array<[Component, KeyRow[]]>;
  const shared = { open: entries.length };
  return Object.fromEntries(entries.map(([c, rows]) => [c, new SingleFileView(store, rows, c, shared)]));
}

/** The `--config DIR` path: configs from a diffusers folder, only the key mapping from here. */
export function convertWithConfig(store: TensorSource, configDir: string, family?: Family): Partial<Record<Component, SingleFileView>> {
  const fam = family ?? detectFamily(store.keys(), (k) => store.info(k).shape, store.source);
  return singleFileComponents(store, readFolderConfigs(configDir, fam), fam);
}

/** The component configs of a diffusers folder for a `family` single file. */
export function readFolderConfigs(dir: string, family: Family): ComponentConfigs {
  const configs: ComponentConfigs = { unet: componentConfig(dir, "unet"), vae: componentConfig(dir, "vae") };
  if (family !== "sdxl-refiner") configs.text_encoder = componentConfig(dir, "text_encoder");
  if (family === "sdxl" || family === "sdxl-refiner") configs.text_encoder_2 = componentConfig(dir, "text_encoder_2");
  return configs;
}

// ---------------------------------------------------------------------------------------------------------
// Config inference and the standard-architecture check

const STANDARD: Record<Exclude<Family, "sdxl-refiner">, { configs: StandardConfigs; name: string }> = {
  sd1: { configs: SD15, name: "SD-1.x (stable-diffusion-v1-5)" },
  sd2: { configs: SD21, name: "SD-2.x (stable-diffusion-2-1)" },
  sdxl: { configs: SDXL_BASE, name: "SD-XL (stable-diffusion-xl-base-1.0)" },
};

/** The standard configs of a family (none for the SD-XL refiner). */
export function standardConfigs(family: Family): StandardConfigs | undefined {
  return family === "sdxl-refiner" ? undefined : STANDARD[family].configs;
}

/** The U-Net's block_out_channels and layers_per_block as the file's tensors say (for messages). */
function fileUNetLayout(keys: readonly string[], shapeOf: (k: string) => readonly number[]): { blockOut: number[]; layers: number } | null {
  const ops = keys
    .map((k) => /^model\.diffusion_model\.input_blocks\.(\d+)\.0\.op\.weight$/.exec(k))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (!ops.length) return null;
  const blockOut = ops.map((i) => shapeOf(`${UNET_PREFIX}input_blocks.${i}.0.op.weight`)[0]!);
  const last = `${UNET_PREFIX}input_blocks.${ops[ops.length - 1]! + 1}.0.out_layers.3.weight`;
  if (keys.includes(last)) blockOut.push(shapeOf(last)[0]!);
  return { blockOut, layers: ops[0]! - 1 };
}

/** The first tensor of `rows` the file lacks or holds with another shape than the rows imply, as a clause. */
function firstMismatch(rows: readonly TableRow[], has: (k: string) => boolean, shapeOf: (k: string) => readonly number[]): string | null {
  for (const r of rows) {
    if (!has(r.original)) return `${r.original} is missing`;
    const found = shapeOf(r.original);
    const want = originalShape(r.transform, r.shape);
    const ok = (s: readonly number[]) => s.length === found.length && s.every((d, i) => d === found[i]);
    if (!ok(want) && !(r.transform === "reshape" && ok(r.shape))) return `${r.original} has shape ${fmt(found)}, expected ${fmt(want)}`;
  }
  return null;
}

/**
 * The diffusers configs (unet, vae, text_encoder(_2), scheduler, model_index) of the standard architecture of a
 * `family` single file, after checking every tensor those configs imply against the file's shapes: a fine-tune of a
 * standard model passes, anything else (other channels, depths, context dims, an inpainting U-Net's 9 input
 * channels) is a one-line error that asks for `--config DIR`.
 */
export function inferConfigs(
  family: Family,
  keys: readonly string[],
  shapeOf: (key: string) => readonly number[],
  file = "checkpoint",
): StandardConfigs {
  if (family === "sdxl-refiner") {
    throw new AtedmError(
      `${file}: an SD-XL refiner single file (only an OpenCLIP text encoder, at conditioner.embedders.0.model.*) has no built-in config here; pass --config DIR with the model's diffusers configs`,
    );
  }
  const std = STANDARD[family];
  const keySet = new Set(keys);
  const has = (k: string) => keySet.has(k);
  const convIn = `${UNET_PREFIX}input_blocks.0.0.weight`;
  if (has(convIn) && shapeOf(convIn)[1] !== 4) {
    const c = shapeOf(convIn)[1];
    throw new AtedmError(
      `${file}: the U-Net takes ${c} input channels${c === 9 ? " (an inpainting model)" : ""}, not the 4 of a text-to-image ${std.name} model; atedm runs text-to-image U-Nets only`,
    );
  }
  const tables = componentTables(family, std.configs, has, file) as Record<Component, TableRow[]>;
  const unetBad = firstMismatch(tables.unet, has, shapeOf);
  if (unetBad) {
    const lay = fileUNetLayout(keys, shapeOf);
    const seen = lay ? `block_out_channels ${fmt(lay.blockOut)}, layers_per_block ${lay.layers}; ` : "";
    throw new AtedmError(
      `${file}: U-Net shapes match no standard SD-1.x/2.x/XL architecture (${seen}as ${std.name}: ${unetBad}); pass --config DIR with the model's diffusers configs`,
    );
  }
  for (const c of ["vae", "text_encoder", "text_encoder_2"] as const) {
    const rows = tables[c];
    if (!rows) continue;
    const bad = firstMismatch(rows, has, shapeOf);
    const what = c === "vae" ? "VAE" : c === "text_encoder" ? "text encoder" : "second text encoder";
    if (bad)
      throw new AtedmError(
        `${file}: ${what} shapes match no standard ${std.name} architecture (${bad}); pass --config DIR with the model's diffusers configs`,
      );
  }
  return structuredClone(std.configs);
}

// ---------------------------------------------------------------------------------------------------------
// The whole thing, from a path

export interface SingleFileModel {
  path: string;
  family: Family;
  /** model_index and scheduler are present when inferred; with `configDir`, when that folder has them. */
  configs: ComponentConfigs & { model_index?: Json; scheduler?: Json };
  /** The components this family has (SD-1/SD-2: no text_encoder_2; the refiner: no text_encoder). */
  components: Component[];
  /** Each component's key table (diffusers name -> original name, transform, expected shape). */
  tables: Partial<Record<Component, TableRow[]>>;
  /** Tokenizers (CLIPTokenizer.fromPretrained): the config folder's when it has them, else the shipped CLIP one. */
  tokenizers: { tokenizer?: TokenizerFiles; tokenizer_2?: TokenizerFiles };
  /** A component's weights under diffusers names: a fresh view over its own handle of the file; the caller closes it. */
  weights(component: Component): SingleFileView;
}

/**
 * Open a single-file checkpoint: detect its family, take the standard configs (checked against its shapes) or the
 * diffusers configs of `configDir`, and build each component's key table. Only the header is read here; every
 * `weights(component)` call opens the file again (so each caller owns, and closes, what it gets).
 */
export function openSingleFile(path: string, options: { configDir?: string } = {}): SingleFileModel {
  const store = WeightStore.open(path);
  let family: Family;
  let configs: SingleFileModel["configs"];
  let tables: Partial<Record<Component, TableRow[]>>;
  const dir = options.configDir;
  try {
    const keys = store.keys();
    const shapeOf = (k: string) => store.info(k).shape;
    family = detectFamily(keys, shapeOf, path);
    if (dir !== undefined) {
      configs = readFolderConfigs(dir, family);
      const sched = join(dir, "scheduler", "scheduler_config.json");
      if (existsSync(sched)) configs.scheduler = readJsonObject(sched);
      if (existsSync(join(dir, "model_index.json"))) configs.model_index = readJsonObject(join(dir, "model_index.json"));
    } else configs = inferConfigs(family, keys, shapeOf, path);
    tables = componentTables(family, configs, (k) => store.has(k), path);
  } finally {
    store.close();
  }
  const shipped = (c: "tokenizer" | "tokenizer_2", padToken?: string): TokenizerFiles =>
    dir !== undefined && existsSync(join(dir, c, "vocab.json")) ? { dir: join(dir, c) } : { dir: CLIP_TOKENIZER_DIR, padToken };
  const tokenizers: SingleFileModel["tokenizers"] = {};
  if (family === "sd1" || family === "sdxl") tokenizers.tokenizer = shipped("tokenizer");
  if (family === "sd2") tokenizers.tokenizer = shipped("tokenizer", OPENCLIP_PAD_TOKEN);
  if (family === "sdxl" || family === "sdxl-refiner") tokenizers.tokenizer_2 = shipped("tokenizer_2", OPENCLIP_PAD_TOKEN);
  const fam = family;
  return {
    path,
    family,
    configs,
    components: Object.keys(tables) as Component[],
    tables,
    tokenizers,
    weights(component: Component): SingleFileView {
      const rows = tables[component];
      if (!rows) throw new AtedmError(`${path}: a ${fam} single file has no ${component}`);
      return new SingleFileView(WeightStore.open(path), rows, component);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// The other way: diffusers folder -> single file

/**
 * The single-file state dict of a diffusers model (what diffusers' scripts/convert_diffusers_to_original_*.py write
 * in full precision): every tensor of each component store renamed to its original name, VAE attention weights as
 * 1x1 convs, OpenCLIP q/k/v fused into `in_proj_*`, `text_projection` transposed. A tensor the tables do not know
 * is an error naming it. Float tensors come out as float32.
 */
export function toSingleFile(
  stores: Partial<Record<Component, TensorSource>>,
  family: Family,
  configs: ComponentConfigs,
): Record<string, HostTensor> {
  const tables = componentTables(family, configs);
  const out: Record<string, HostTensor> = {};
  const fused = new Map<string, { parts: Float32Array[]; dims: number[] }>();
  for (const [c, store] of Object.entries(stores) as Array<[Component, TensorSource]>) {
    const rows = tables[c];
    if (!rows) throw new AtedmError(`${store.source}: a ${family} single file has no ${c}`);
    const byName = new Map(rows.map((r) => [r.diffusers, r]));
    for (const name of store.keys()) {
      const r = byName.get(name);
      if (!r) throw new AtedmError(`${store.source}: tensor '${name}' has no single-file name (not part of a standard ${c})`);
      const shape = store.info(name).shape;
      const data = store.readF32(name);
      const t = r.transform;
      if (t === "none") out[r.original] = { dims: shape.slice(), data };
      else if (t === "reshape") out[r.original] = { dims: shape.length === 2 ? [...shape, 1, 1] : shape.slice(), data };
      else if (t === "transpose") {
        const [P, D] = shape as [number, number];
        const tr = new Float32Array(P * D);
        for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) tr[d * P + p] = data[p * D + d]!;
        out[r.original] = { dims: [D, P], data: tr };
      } else {
        let f = fused.get(r.original);
        if (!f) {
          f = { parts: [], dims: originalShape(t, shape) };
          fused.set(r.original, f);
        }
        f.parts[t.rowSlice] = data;
      }
    }
  }
  for (const [name, f] of fused) {
    if (f.parts.filter(Boolean).length !== 3) throw new AtedmError(`${name}: q, k and v are not all present to fuse`);
    const data = new Float32Array(f.parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of f.parts) {
      data.set(p, at);
      at += p.length;
    }
    out[name] = { dims: f.dims, data };
  }
  return out;
}
