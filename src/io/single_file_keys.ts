/**
 * The key tables of single-file Stable Diffusion checkpoints: diffusers state-dict name -> (original LDM/SGM name,
 * transform), as data. Each table is derived from a component's config the way diffusers' own converters derive
 * theirs (src/diffusers/loaders/single_file_utils.py `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
 * `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`, and the inverse scripts
 * scripts/convert_diffusers_to_original_stable_diffusion.py / convert_diffusers_to_original_sdxl.py):
 *
 *   - module prefixes: `PrefixRow`s built from the config (levels, layers_per_block, which levels attend),
 *   - names inside a module: `UNET_RESNET_NAMES`, `VAE_RESNET_NAMES`, `VAE_ATTENTION_NAMES`, `OPENCLIP_*`,
 *   - a `Transform` per tensor: none, `reshape` (VAE mid attention q/k/v/proj_out are [C, C, 1, 1] 1x1 convs in the
 *     original, [C, C] linears in diffusers), `rowSlice` (OpenCLIP's fused `attn.in_proj_weight`/`in_proj_bias`:
 *     q, k, v are rows [0, D), [D, 2D), [2D, 3D)), `transpose` (OpenCLIP `text_projection` [D, P], applied as
 *     x @ P; diffusers' `text_projection.weight` is its transpose [P, D]).
 *
 * The full key table of a component is its expected diffusers state dict (the shape functions of src/models) with
 * every name mapped through these tables; nothing here reads a file.
 */
import { AtedmError } from "../errors.js";
import { type CLIPTextConfig, clipTextStateDictShapes } from "../models/clip_text.js";
import type { UNetConfig } from "../models/unet_structure.js";
import { unetStateDictShapes } from "../models/unet_weights.js";
import { type VAEConfig, vaeDecoderStateDictShapes, vaeShapeWriters } from "../models/vae.js";

/** How a diffusers tensor is made from the original one. */
export type Transform = "none" | "reshape" | "transpose" | { rowSlice: 0 | 1 | 2 };

/** One tensor: its diffusers name, the original name it is read from, and how. */
export interface KeyRow {
  diffusers: string;
  original: string;
  transform: Transform;
}

/** A row of a component's full table: with the diffusers shape the config implies. */
export type TableRow = KeyRow & { shape: number[] };

/** A module: diffusers prefix -> original prefix; `inner` names the table for the names inside it. */
export interface PrefixRow {
  diffusers: string;
  original: string;
  inner?: "unetResnet" | "vaeResnet" | "vaeAttention";
}

export type Family = "sd1" | "sd2" | "sdxl" | "sdxl-refiner";
export type Component = "unet" | "vae" | "text_encoder" | "text_encoder_2";

/** Where each component lives in a single file (original prefixes). */
export const UNET_PREFIX = "model.diffusion_model.";
export const VAE_PREFIX = "first_stage_model.";
/** HF-layout CLIP text encoders: the diffusers key (`text_model.*`) is appended as it is. */
export const CLIP_PREFIX = { sd1: "cond_stage_model.transformer.", sdxl: "conditioner.embedders.0.transformer." } as const;
/** OpenCLIP text encoders (SD-2's ViT-H, SD-XL's ViT-bigG). */
export const OPENCLIP_PREFIX = {
  sd2: "cond_stage_model.model.",
  sdxl: "conditioner.embedders.1.model.",
  "sdxl-refiner": "conditioner.embedders.0.model.",
} as const;

/** Inside a UNet ResnetBlock2D (diffusers' `unet_conversion_map_resnet`). */
export const UNET_RESNET_NAMES: ReadonlyArray<readonly [string, string]> = [
  ["norm1", "in_layers.0"],
  ["conv1", "in_layers.2"],
  ["time_emb_proj", "emb_layers.1"],
  ["norm2", "out_layers.0"],
  ["conv2", "out_layers.3"],
  ["conv_shortcut", "skip_connection"],
];

/** Inside a VAE ResnetBlock2D (diffusers' `vae_conversion_map`): only the shortcut is renamed. */
export const VAE_RESNET_NAMES: ReadonlyArray<readonly [string, string]> = [["conv_shortcut", "nin_shortcut"]];

/** Inside the VAE mid-block attention (`vae_conversion_map_attn`); q/k/v/proj_out weights are 1x1 convs in the original. */
export const VAE_ATTENTION_NAMES: ReadonlyArray<readonly [string, string, "none" | "reshape"]> = [
  ["group_norm", "norm", "none"],
  ["to_q", "q", "reshape"],
  ["to_k", "k", "reshape"],
  ["to_v", "v", "reshape"],
  ["to_out.0", "proj_out", "reshape"],
];

/** OpenCLIP: whole tensors outside the layers (diffusers' `DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"]`). */
export const OPENCLIP_NAMES: ReadonlyArray<readonly [string, string, Transform]> = [
  ["text_model.embeddings.token_embedding.weight", "token_embedding.weight", "none"],
  ["text_model.embeddings.position_embedding.weight", "positional_embedding", "none"],
  ["text_model.final_layer_norm.weight", "ln_final.weight", "none"],
  ["text_model.final_layer_norm.bias", "ln_final.bias", "none"],
  ["text_projection.weight", "text_projection", "transpose"],
];

/** OpenCLIP: inside layer i, `text_model.encoder.layers.i.<a>` -> `transformer.resblocks.i.<b>`. */
export const OPENCLIP_LAYER_NAMES: ReadonlyArray<readonly [string, string, Transform]> = [
  ["layer_norm1.weight", "ln_1.weight", "none"],
  ["layer_norm1.bias", "ln_1.bias", "none"],
  ["self_attn.q_proj.weight", "attn.in_proj_weight", { rowSlice: 0 }],
  ["self_attn.k_proj.weight", "attn.in_proj_weight", { rowSlice: 1 }],
  ["self_attn.v_proj.weight", "attn.in_proj_weight", { rowSlice: 2 }],
  ["self_attn.q_proj.bias", "attn.in_proj_bias", { rowSlice: 0 }],
  ["self_attn.k_proj.bias", "attn.in_proj_bias", { rowSlice: 1 }],
  ["self_attn.v_proj.bias", "attn.in_proj_bias", { rowSlice: 2 }],
  ["self_attn.out_proj.weight", "attn.out_proj.weight", "none"],
  ["self_attn.out_proj.bias", "attn.out_proj.bias", "none"],
  ["layer_norm2.weight", "ln_2.weight", "none"],
  ["layer_norm2.bias", "ln_2.bias", "none"],
  ["mlp.fc1.weight", "mlp.c_fc.weight", "none"],
  ["mlp.fc1.bias", "mlp.c_fc.bias", "none"],
  ["mlp.fc2.weight", "mlp.c_proj.weight", "none"],
  ["mlp.fc2.bias", "mlp.c_proj.bias", "none"],
];

/**
 * The UNet's module prefixes, from the config as in `convert_ldm_unet_checkpoint`: with L = layers_per_block,
 * down level i's resnet/attention j is `input_blocks.{1 + i(L+1) + j}.{0|1}`, its downsampler `input_blocks.{(i+1)(L+1)}.0.op`;
 * up level i's resnet/attention j (j <= L) is `output_blocks.{i(L+1) + j}.{0|1}`, its upsampler
 * `output_blocks.{i(L+1) + L}.{2 if that level attends else 1}.conv`; the mid block is `middle_block.{0,1,2}`.
 */
export function unetPrefixTable(cfg: UNetConfig): PrefixRow[] {
  const L = cfg.layers_per_block;
  const n = cfg.block_out_channels.length;
  const rows: PrefixRow[] = [
    { diffusers: "conv_in", original: "input_blocks.0.0" },
    { diffusers: "time_embedding.linear_1", original: "time_embed.0" },
    { diffusers: "time_embedding.linear_2", original: "time_embed.2" },
    { diffusers: "add_embedding.linear_1", original: "label_emb.0.0" },
    { diffusers: "add_embedding.linear_2", original: "label_emb.0.2" },
  ];
  for (let i = 0; i < n; i++) {
    const attends = cfg.down_block_types[i] === "CrossAttnDownBlock2D";
    for (let j = 0; j < L; j++) {
      const k = 1 + i * (L + 1) + j;
      rows.push({ diffusers: `down_blocks.${i}.resnets.${j}`, original: `input_blocks.${k}.0`, inner: "unetResnet" });
      if (attends) rows.push({ diffusers: `down_blocks.${i}.attentions.${j}`, original: `input_blocks.${k}.1` });
    }
    if (i < n - 1) rows.push({ diffusers: `down_blocks.${i}.downsamplers.0.conv`, original: `input_blocks.${(i + 1) * (L + 1)}.0.op` });
  }
  rows.push({ diffusers: "mid_block.resnets.0", original: "middle_block.0", inner: "unetResnet" });
  rows.push({ diffusers: "mid_block.attentions.0", original: "middle_block.1" });
  rows.push({ diffusers: "mid_block.resnets.1", original: "middle_block.2", inner: "unetResnet" });
  for (let i = 0; i < n; i++) {
    const attends = cfg.up_block_types[i] === "CrossAttnUpBlock2D";
    for (let j = 0; j <= L; j++) {
      const k = i * (L + 1) + j;
      rows.push({ diffusers: `up_blocks.${i}.resnets.${j}`, original: `output_blocks.${k}.0`, inner: "unetResnet" });
      if (attends) rows.push({ diffusers: `up_blocks.${i}.attentions.${j}`, original: `output_blocks.${k}.1` });
    }
    if (i < n - 1) rows.push({ diffusers: `up_blocks.${i}.upsamplers.0.conv`, original: `output_blocks.${i * (L + 1) + L}.${attends ? 2 : 1}.conv` });
  }
  rows.push({ diffusers: "conv_norm_out", original: "out.0" });
  rows.push({ diffusers: "conv_out", original: "out.2" });
  return rows;
}

/**
 * The VAE's module prefixes (`convert_ldm_vae_checkpoint`): encoder level i is `encoder.down.i`, decoder up block i
 * is `decoder.up.{n-1-i}` (the original numbers decoder levels from the bottom), the mid block `mid.block_1`,
 * `mid.attn_1`, `mid.block_2`, and `conv_norm_out` is `norm_out`.
 */
export function vaePrefixTable(cfg: { block_out_channels: readonly number[]; layers_per_block: number }): PrefixRow[] {
  const n = cfg.block_out_channels.length;
  const L = cfg.layers_per_block;
  const rows: PrefixRow[] = [];
  for (const part of ["encoder", "decoder"] as const) {
    rows.push({ diffusers: `${part}.conv_in`, original: `${part}.conv_in` });
    rows.push({ diffusers: `${part}.mid_block.resnets.0`, original: `${part}.mid.block_1`, inner: "vaeResnet" });
    rows.push({ diffusers: `${part}.mid_block.attentions.0`, original: `${part}.mid.attn_1`, inner: "vaeAttention" });
    rows.push({ diffusers: `${part}.mid_block.resnets.1`, original: `${part}.mid.block_2`, inner: "vaeResnet" });
    rows.push({ diffusers: `${part}.conv_norm_out`, original: `${part}.norm_out` });
    rows.push({ diffusers: `${part}.conv_out`, original: `${part}.conv_out` });
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < L; j++)
      rows.push({ diffusers: `encoder.down_blocks.${i}.resnets.${j}`, original: `encoder.down.${i}.block.${j}`, inner: "vaeResnet" });
    if (i < n - 1) rows.push({ diffusers: `encoder.down_blocks.${i}.downsamplers.0.conv`, original: `encoder.down.${i}.downsample.conv` });
    for (let j = 0; j <= L; j++) {
      rows.push({ diffusers: `decoder.up_blocks.${i}.resnets.${j}`, original: `decoder.up.${n - 1 - i}.block.${j}`, inner: "vaeResnet" });
    }
    if (i < n - 1) rows.push({ diffusers: `decoder.up_blocks.${i}.upsamplers.0.conv`, original: `decoder.up.${n - 1 - i}.upsample.conv` });
  }
  rows.push({ diffusers: "quant_conv", original: "quant_conv" });
  rows.push({ diffusers: "post_quant_conv", original: "post_quant_conv" });
  return rows;
}

/** Map one diffusers name through a prefix table (longest matching module prefix, then the inner names). */
export function mapName(rows: readonly PrefixRow[], name: string, where: string): { original: string; transform: Transform } {
  let best: PrefixRow | undefined;
  for (const r of rows) {
    if ((name === r.diffusers || name.startsWith(`${r.diffusers}.`)) && (!best || r.diffusers.length > best.diffusers.length)) best = r;
  }
  if (!best) throw new AtedmError(`${where}: no single-file name for tensor '${name}' (not part of a standard Stable Diffusion module)`);
  const rest = name.slice(best.diffusers.length); // "" or ".<inner>"
  const inner =
    best.inner === "unetResnet"
      ? UNET_RESNET_NAMES
      : best.inner === "vaeResnet"
        ? VAE_RESNET_NAMES
        : best.inner === "vaeAttention"
          ? VAE_ATTENTION_NAMES
          : [];
  for (const [d, o, t] of inner as ReadonlyArray<readonly [string, string, ("none" | "reshape")?]>) {
    if (rest.startsWith(`.${d}.`)) {
      const tail = rest.slice(d.length + 1);
      return { original: `${best.original}.${o}${tail}`, transform: t === "reshape" && tail === ".weight" ? "reshape" : "none" };
    }
  }
  return { original: best.original + rest, transform: "none" };
}

/** The shape the original tensor has for a diffusers tensor of shape `s` (for `rowSlice`: the whole fused tensor). */
export function originalShape(t: Transform, s: readonly number[]): number[] {
  if (t === "none") return s.slice();
  if (t === "reshape") return [...s, 1, 1];
  if (t === "transpose") return s.slice().reverse();
  return [3 * s[0]!, ...s.slice(1)];
}

/** The shape the diffusers tensor has for an original tensor of shape `s`. */
export function diffusersShape(t: Transform, s: readonly number[]): number[] {
  if (t === "none") return s.slice();
  if (t === "reshape") return s.length === 4 && s[2] === 1 && s[3] === 1 ? s.slice(0, 2) : s.slice();
  if (t === "transpose") return s.slice().reverse();
  return [s[0]! / 3, ...s.slice(1)];
}

// ---------------------------------------------------------------------------------------------------------
// Full tables: every expected diffusers tensor of a component, with its original name and transform.

function rowsOf(expected: ReadonlyMap<string, readonly number[]>, table: readonly PrefixRow[], prefix: string, where: string): TableRow[] {
  return [...expected].map(([name, shape]) => {
    const m = mapName(table, name, where);
    return { diffusers: name, original: prefix + m.original, transform: m.transform, shape: shape.slice() };
  });
}

/** The UNet's table: every tensor of `unetStateDictShapes(cfg)`. */
export function unetKeyTable(cfg: UNetConfig): TableRow[] {
  return rowsOf(unetStateDictShapes(cfg), unetPrefixTable(cfg), UNET_PREFIX, "unet");
}

/**
 * Every tensor of a diffusers AutoencoderKL (encoder, quant_conv, post_quant_conv, decoder), name -> shape, with the
 * modern attention names and their biases. `useQuantConv` is the config's `use_quant_conv` (default true).
 */
export function vaeStateDictShapes(cfg: VAEConfig, options: { inChannels?: number; useQuantConv?: boolean } = {}): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const { conv, norm, resnet } = vaeShapeWriters(out);
  const ch = cfg.block_out_channels;
  const n = ch.length;
  const top = ch[n - 1]!;
  const lc = cfg.latent_channels;
  conv("encoder.conv_in", ch[0]!, options.inChannels ?? 3, 3);
  let c = ch[0]!;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < cfg.layers_per_block; j++) {
      resnet(`encoder.down_blocks.${i}.resnets.${j}`, c, ch[i]!);
      c = ch[i]!;
    }
    if (i < n - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, c, c, 3);
  }
  resnet("encoder.mid_block.resnets.0", top, top);
  if (cfg.mid_block_add_attention) {
    const a = "encoder.mid_block.attentions.0";
    norm(`${a}.group_norm`, top);
    for (const p of ["to_q", "to_k", "to_v", "to_out.0"]) {
      out.set(`${a}.${p}.weight`, [top, top]);
      out.set(`${a}.${p}.bias`, [top]);
    }
  }
  resnet("encoder.mid_block.resnets.1", top, top);
  norm("encoder.conv_norm_out", top);
  conv("encoder.conv_out", 2 * lc, top, 3);
  if (options.useQuantConv ?? true) conv("quant_conv", 2 * lc, 2 * lc, 1);
  // The decoder as the VAE loader reads it; every attention projection has its bias (the `found` callback says so).
  for (const [k, s] of vaeDecoderStateDictShapes(cfg, (name) => (name.endsWith(".bias") ? [top] : undefined))) out.set(k, s);
  return out;
}

/** The VAE's table: every tensor of `vaeStateDictShapes(cfg)`. */
export function vaeKeyTable(cfg: VAEConfig, options: { inChannels?: number; useQuantConv?: boolean } = {}): TableRow[] {
  return rowsOf(vaeStateDictShapes(cfg, options), vaePrefixTable(cfg), VAE_PREFIX, "vae");
}

/** An HF-layout CLIP text encoder under `prefix` (`text_model.*` appended as it is). */
export function clipKeyTable(cfg: CLIPTextConfig, prefix: string, withProjection = false): TableRow[] {
  return [...clipTextStateDictShapes(cfg, { withProjection })].map(([name, shape]) => ({
    diffusers: name,
    original: prefix + name,
    transform: "none",
    shape,
  }));
}

/** An OpenCLIP text encoder under `prefix`, read as diffusers' CLIPTextModel(WithProjection) with `cfg`'s layers. */
export function openClipKeyTable(cfg: CLIPTextConfig, prefix: string, withProjection: boolean): TableRow[] {
  const shapes = clipTextStateDictShapes(cfg, { withProjection });
  const rows: TableRow[] = [];
  for (const [d, o, t] of OPENCLIP_NAMES) {
    const shape = shapes.get(d);
    if (shape) rows.push({ diffusers: d, original: prefix + o, transform: t, shape });
  }
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    for (const [d, o, t] of OPENCLIP_LAYER_NAMES) {
      const name = `text_model.encoder.layers.${i}.${d}`;
      rows.push({ diffusers: name, original: `${prefix}transformer.resblocks.${i}.${o}`, transform: t, shape: shapes.get(name)! });
    }
  }
  return rows;
}
