/**
 * The structure of a diffusers UNet2DConditionModel, described once: `resolveUNetConfig` reads config.json and
 * `unetModules(cfg)` walks the module tree in execution order, one typed record per module (path, kind,
 * channels, level). Everything that depends on the structure iterates this walk and nothing re-derives it:
 *
 *   - the ONNX graph builder (`buildUNetGraph`, src/models/unet.ts),
 *   - the state-dict names and shapes (`unetStateDictShapes`, src/models/unet_weights.ts),
 *   - the analytic FLOPs (`unetFlops`, src/metrics/flops.ts),
 *   - the pruning methods, through `attentionBlocks(cfg)` and `featureMapSize` (src/pruning).
 *
 * A level is a resolution of the U-Net: level 0 is the latent, level i has been through i stride-2
 * downsamplers (each maps h to ceil(h / 2)), so its feature map is `featureMapSize(latent, i)`.
 */
import { AtedmError } from "../errors.js";
import {
  blockOutChannels,
  bool,
  dflt,
  int,
  intOrPerBlock,
  invalid,
  LIMITS,
  num,
  obj,
  orNull,
  parseConfig,
  show,
  stringList,
  v as valibot,
} from "../io/config_schema.js";

export interface UNetConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type: string | null;
  layers_per_block: number;
  /** Heads per down block (diffusers' `attention_head_dim` when `num_attention_heads` is null). */
  heads: number[];
  transformer_layers_per_block: number[];
  reverse_transformer_layers_per_block: number[];
  cross_attention_dim: number;
  norm_num_groups: number;
  norm_eps: number;
  act_fn: string;
  use_linear_projection: boolean;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  addition_embed_type: string | null;
  addition_time_embed_dim: number | null;
  projection_class_embeddings_input_dim: number | null;
  sample_size: number;
  upcast_attention: boolean;
}

const DOWN_TYPES = new Set(["DownBlock2D", "CrossAttnDownBlock2D"]);
const UP_TYPES = new Set(["UpBlock2D", "CrossAttnUpBlock2D"]);

/**
 * The keys of config.json whose type and range are validated before anything else (limits: src/io/config_schema.ts);
 * a missing or null key takes diffusers' default, keys not listed here are either checked below or ignored.
 */
const UNET_SCHEMA = obj({
  in_channels: dflt(int(LIMITS.ioChannels), 4),
  out_channels: dflt(int(LIMITS.ioChannels), 4),
  block_out_channels: dflt(blockOutChannels, [320, 640, 1280, 1280]),
  down_block_types: dflt(stringList(LIMITS.blocks[1]), []),
  up_block_types: dflt(stringList(LIMITS.blocks[1]), []),
  layers_per_block: dflt(int(LIMITS.layersPerBlock), 2),
  num_attention_heads: orNull(intOrPerBlock(LIMITS.heads)),
  attention_head_dim: dflt(intOrPerBlock(LIMITS.heads), 8),
  transformer_layers_per_block: dflt(intOrPerBlock(LIMITS.transformerLayers), 1),
  cross_attention_dim: dflt(
    valibot.union([int(LIMITS.crossAttentionDim), valibot.array(valibot.unknown())], `an integer in 1..${LIMITS.crossAttentionDim[1]}`),
    1280,
  ),
  norm_num_groups: dflt(int(LIMITS.channels), 32),
  norm_eps: dflt(num(LIMITS.normEps, { low: true }), 1e-5),
  act_fn: dflt(valibot.string("a string"), "silu"),
  use_linear_projection: dflt(bool, false),
  flip_sin_to_cos: dflt(bool, true),
  freq_shift: dflt(int(LIMITS.freqShift), 0),
  addition_time_embed_dim: orNull(int(LIMITS.embedDim)),
  projection_class_embeddings_input_dim: orNull(int(LIMITS.projectionInputDim)),
  sample_size: dflt(int(LIMITS.unetSampleSize), 64),
  upcast_attention: dflt(bool, false),
});

/** Normalise a diffusers UNet2DConditionModel config.json, rejecting what this implementation does not cover. */
export function resolveUNetConfig(raw: Record<string, unknown>, source = "unet/config.json"): UNetConfig {
  const c = parseConfig(UNET_SCHEMA, raw, source);
  const bad = (key: string, why: string): never => {
    throw new AtedmError(`${source}: ${key} = ${show(raw[key])} is not supported (${why})`);
  };
  const get = <T>(key: string, dflt: T): T => (raw[key] === undefined || raw[key] === null ? dflt : (raw[key] as T));
  const blockOut = c.block_out_channels;
  const n = blockOut.length;
  const perBlock = (key: string, value: number | number[]): number[] => {
    if (typeof value === "number") return new Array(n).fill(value);
    if (value.length === n) return value;
    return bad(key, `expected a number or a list of ${n} numbers`);
  };
  const downTypes = c.down_block_types;
  const upTypes = c.up_block_types;
  if (downTypes.length !== n) bad("down_block_types", `expected ${n} entries, one per block_out_channels`);
  if (upTypes.length !== n) bad("up_block_types", `expected ${n} entries`);
  for (const t of downTypes) if (!DOWN_TYPES.has(t)) bad("down_block_types", `unknown block type '${t}'`);
  for (const t of upTypes) if (!UP_TYPES.has(t)) bad("up_block_types", `unknown block type '${t}'`);
  const midType = get<string | null>("mid_block_type", "UNetMidBlock2DCrossAttn");
  if (midType !== "UNetMidBlock2DCrossAttn" && midType !== null) bad("mid_block_type", "only UNetMidBlock2DCrossAttn");
  const addType = get<string | null>("addition_embed_type", null);
  if (addType !== null && addType !== "text_time") bad("addition_embed_type", "only text_time (SD-XL)");
  for (const [key, ok] of [
    ["class_embed_type", null],
    ["time_cond_proj_dim", null],
    ["encoder_hid_dim_type", null],
    ["time_embedding_act_fn", null],
    ["timestep_post_act", null],
  ] as const) {
    if (get(key, null) !== ok) bad(key, "not used by SD-1.x/2.x/XL");
  }
  if (!["silu", "swish", "gelu"].includes(c.act_fn)) bad("act_fn", "only silu, swish or gelu");
  if (get("only_cross_attention", false) !== false) bad("only_cross_attention", "must be false");
  if (get("dual_cross_attention", false) !== false) bad("dual_cross_attention", "must be false");
  if (get("resnet_time_scale_shift", "default") !== "default") bad("resnet_time_scale_shift", "only 'default'");
  if (get("time_embedding_type", "positional") !== "positional") bad("time_embedding_type", "only 'positional'");
  if (get("attention_type", "default") !== "default") bad("attention_type", "only 'default'");
  if (get("conv_in_kernel", 3) !== 3 || get("conv_out_kernel", 3) !== 3) bad("conv_in_kernel", "only 3");
  if (get("mid_block_scale_factor", 1) !== 1) bad("mid_block_scale_factor", "only 1");
  if (get("resnet_out_scale_factor", 1) !== 1) bad("resnet_out_scale_factor", "only 1");
  if (get("center_input_sample", false) !== false) bad("center_input_sample", "only false");
  const cad = c.cross_attention_dim;
  if (typeof cad !== "number") bad("cross_attention_dim", "per-block cross_attention_dim is not supported");
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (a long-standing naming quirk).
  const headsKey = c.num_attention_heads !== null ? "num_attention_heads" : "attention_head_dim";
  const heads = perBlock("attention_head_dim", c.num_attention_heads ?? c.attention_head_dim);
  const tlpb = perBlock("transformer_layers_per_block", c.transformer_layers_per_block);
  const rev = raw.reverse_transformer_layers_per_block;
  if (rev !== undefined && rev !== null) bad("reverse_transformer_layers_per_block", "not supported");

  // Cross-key checks: GroupNorm splits every level's channels into norm_num_groups groups; every attention block
  // splits its channels into heads (down block i and the up block at the same level, and the mid block, use
  // heads[level]); SD-XL's add_embedding needs both of its sizes.
  const groups = c.norm_num_groups;
  blockOut.forEach((ch, i) => {
    if (ch % groups !== 0)
      throw invalid(source, "norm_num_groups", groups, `a divisor of every block_out_channels, not of block_out_channels[${i}] = ${ch}`);
  });
  const attnLevel = (i: number): boolean =>
    downTypes[i] === "CrossAttnDownBlock2D" || upTypes[n - 1 - i] === "CrossAttnUpBlock2D" || (i === n - 1 && midType !== null);
  blockOut.forEach((ch, i) => {
    if (attnLevel(i) && ch % heads[i]! !== 0) {
      throw invalid(
        source,
        headsKey,
        raw[headsKey] ?? 8,
        `heads dividing the channels of every attention block, not ${heads[i]} of level ${i}'s ${ch}`,
      );
    }
  });
  if (addType === "text_time") {
    for (const key of ["addition_time_embed_dim", "projection_class_embeddings_input_dim"] as const) {
      if (c[key] === null) throw invalid(source, key, raw[key] ?? null, "an integer, addition_embed_type text_time needs it");
    }
  }
  return {
    in_channels: c.in_channels,
    out_channels: c.out_channels,
    block_out_channels: blockOut,
    down_block_types: downTypes,
    up_block_types: upTypes,
    mid_block_type: midType,
    layers_per_block: c.layers_per_block,
    heads,
    transformer_layers_per_block: tlpb,
    reverse_transformer_layers_per_block: tlpb.slice().reverse(),
    cross_attention_dim: cad as number,
    norm_num_groups: groups,
    norm_eps: c.norm_eps,
    act_fn: c.act_fn,
    use_linear_projection: c.use_linear_projection,
    flip_sin_to_cos: c.flip_sin_to_cos,
    freq_shift: c.freq_shift,
    addition_embed_type: addType,
    addition_time_embed_dim: c.addition_time_embed_dim,
    projection_class_embeddings_input_dim: c.projection_class_embeddings_input_dim,
    sample_size: c.sample_size,
    upcast_attention: c.upcast_attention,
  };
}

/** Identity of one Transformer2DModel in the U-Net, e.g. `down_blocks.1.attentions.0`. */
export interface AttentionBlockInfo {
  path: string;
  /** `down` / `mid` / `up` and the stage index (diffusers' down_blocks[i] / up_blocks[i]). */
  stage: "down" | "mid" | "up";
  stageIndex: number;
  /** Index of the attention block within its stage (`attentions.j`). */
  index: number;
  /** Number of attention blocks in that stage. */
  count: number;
  /** BasicTransformerBlocks in the block. */
  depth: number;
  channels: number;
  heads: number;
  /** The U-Net level of the block's feature map (0 = latent resolution). */
  level: number;
  /** Down-sampling factor of the block's feature map relative to the latent: 2^level. */
  downsample: number;
}

/** One module of the U-Net walk. `level` is the resolution its output lives at. */
export type UNetModule =
  /** `conv_in` / `conv_out`: a 3x3 convolution, stride 1. */
  | { kind: "Conv2d"; path: string; inChannels: number; outChannels: number; level: number }
  /** `time_embedding`: Timesteps (sinusoidal, no weights) then linear_1, act, linear_2. */
  | { kind: "TimestepEmbedding"; path: string; inChannels: number; outChannels: number }
  /** SD-XL `add_embedding` (text_time): pooled text + six size/crop ids embedded, then linear_1, act, linear_2. */
  | { kind: "AddEmbedding"; path: string; inChannels: number; outChannels: number; timeEmbedDim: number }
  /** A ResnetBlock2D; in up blocks it first concatenates the skip popped from the down path (`skipChannels`). */
  | { kind: "ResnetBlock2D"; path: string; inChannels: number; outChannels: number; skipChannels: number; level: number }
  /** A Transformer2DModel (an attention block). */
  | { kind: "Transformer2DModel"; path: string; block: AttentionBlockInfo; level: number }
  /** Downsample2D: a 3x3 convolution with stride 2 from level - 1 to `level`. */
  | { kind: "Downsample2D"; path: string; channels: number; level: number }
  /** Upsample2D: nearest upsampling to the next skip's size (`level`), then a 3x3 convolution. */
  | { kind: "Upsample2D"; path: string; channels: number; level: number }
  /** `conv_norm_out`: GroupNorm then the activation. */
  | { kind: "GroupNorm"; path: string; channels: number; level: number };

/**
 * A module record plus where it sits in diffusers' forward: `endsBlock` names the diffusers block whose output
 * this module's output is (`conv_in`, `down_blocks.1`, `mid_block`, `up_blocks.0`), the points the golden
 * fixtures record as `inter.<name>`; `pushSkip` marks outputs that the up path later concatenates.
 */
export type UNetStep = UNetModule & { endsBlock?: string; pushSkip?: true };

/** The U-Net's modules in execution order; see the file comment. */
export function unetModules(cfg: UNetConfig): UNetStep[] {
  const out: UNetStep[] = [];
  const boc = cfg.block_out_channels;
  const n = boc.length;
  const c0 = boc[0]!;
  const temb = 4 * c0;
  const attention = (
    path: string,
    stage: AttentionBlockInfo["stage"],
    stageIndex: number,
    index: number,
    count: number,
    level: number,
    depth: number,
  ): UNetStep => {
    const channels = boc[level]!;
    const heads = cfg.heads[level]!;
    if (!Number.isInteger(channels / heads)) {
      throw new AtedmError(`unet/config.json: ${path} has ${channels} channels, not divisible by ${heads} heads`);
    }
    const block: AttentionBlockInfo = { path, stage, stageIndex, index, count, depth, channels, heads, level, downsample: 2 ** level };
    return { kind: "Transformer2DModel", path, block, level };
  };

  out.push({ kind: "Conv2d", path: "conv_in", inChannels: cfg.in_channels, outChannels: c0, level: 0, pushSkip: true, endsBlock: "conv_in" });
  out.push({ kind: "TimestepEmbedding", path: "time_embedding", inChannels: c0, outChannels: temb });
  if (cfg.addition_embed_type === "text_time") {
    const inChannels = cfg.projection_class_embeddings_input_dim;
    const timeEmbedDim = cfg.addition_time_embed_dim;
    if (!inChannels) throw new AtedmError("unet/config.json: projection_class_embeddings_input_dim is required for text_time");
    if (!timeEmbedDim) throw new AtedmError("unet/config.json: addition_time_embed_dim is required for text_time");
    out.push({ kind: "AddEmbedding", path: "add_embedding", inChannels, outChannels: temb, timeEmbedDim });
  }

  // Down blocks: layers_per_block x (resnet [+ attention]), then a downsampler except in the last block.
  let outCh = c0;
  cfg.down_block_types.forEach((type, i) => {
    const inCh = outCh;
    outCh = boc[i]!;
    for (let j = 0; j < cfg.layers_per_block; j++) {
      const resnet: UNetStep = {
        kind: "ResnetBlock2D",
        path: `down_blocks.${i}.resnets.${j}`,
        inChannels: j === 0 ? inCh : outCh,
        outChannels: outCh,
        skipChannels: 0,
        level: i,
      };
      const layer: UNetStep[] = [resnet];
      if (type === "CrossAttnDownBlock2D") {
        layer.push(attention(`down_blocks.${i}.attentions.${j}`, "down", i, j, cfg.layers_per_block, i, cfg.transformer_layers_per_block[i]!));
      }
      layer[layer.length - 1]!.pushSkip = true;
      out.push(...layer);
    }
    if (i < n - 1) out.push({ kind: "Downsample2D", path: `down_blocks.${i}.downsamplers.0`, channels: outCh, level: i + 1, pushSkip: true });
    out[out.length - 1]!.endsBlock = `down_blocks.${i}`;
  });

  if (cfg.mid_block_type) {
    const c = boc[n - 1]!;
    const resnet = (j: number): UNetStep => ({
      kind: "ResnetBlock2D",
      path: `mid_block.resnets.${j}`,
      inChannels: c,
      outChannels: c,
      skipChannels: 0,
      level: n - 1,
    });
    out.push(resnet(0), attention("mid_block.attentions.0", "mid", 0, 0, 1, n - 1, cfg.transformer_layers_per_block[n - 1]!), resnet(1));
    out[out.length - 1]!.endsBlock = "mid_block";
  }

  // Up blocks (diffusers: prev_output_channel, output_channel = reversed[i], input_channel = reversed[min(i + 1,
  // n - 1)]): layers_per_block + 1 x (concat skip, resnet [+ attention]), then an upsampler except in the last.
  const rev = boc.slice().reverse();
  let prevOut = rev[0]!;
  cfg.up_block_types.forEach((type, i) => {
    const level = n - 1 - i;
    const ch = rev[i]!;
    const inCh = rev[Math.min(i + 1, n - 1)]!;
    const layers = cfg.layers_per_block + 1;
    for (let j = 0; j < layers; j++) {
      const skipChannels = j === layers - 1 ? inCh : ch;
      out.push({
        kind: "ResnetBlock2D",
        path: `up_blocks.${i}.resnets.${j}`,
        inChannels: (j === 0 ? prevOut : ch) + skipChannels,
        outChannels: ch,
        skipChannels,
        level,
      });
      if (type === "CrossAttnUpBlock2D") {
        out.push(attention(`up_blocks.${i}.attentions.${j}`, "up", i, j, layers, level, cfg.reverse_transformer_layers_per_block[i]!));
      }
    }
    if (i < n - 1) out.push({ kind: "Upsample2D", path: `up_blocks.${i}.upsamplers.0`, channels: ch, level: level - 1 });
    out[out.length - 1]!.endsBlock = `up_blocks.${i}`;
    prevOut = ch;
  });

  out.push({ kind: "GroupNorm", path: "conv_norm_out", channels: c0, level: 0 });
  out.push({ kind: "Conv2d", path: "conv_out", inChannels: c0, outChannels: cfg.out_channels, level: 0 });
  return out;
}

/** The attention blocks (Transformer2DModels) of a U-Net config in execution order. */
export function attentionBlocks(cfg: UNetConfig): AttentionBlockInfo[] {
  return unetModules(cfg).flatMap((m) => (m.kind === "Transformer2DModel" ? [m.block] : []));
}

/** Height and width of a feature map, in latent cells. */
export interface LatentSize {
  height: number;
  width: number;
}

/** Feature-map size at `level`: each stride-2 convolution maps h to ceil(h / 2) (= ceil(h / 2^level)). */
export function featureMapSize(latent: LatentSize, level: number): LatentSize {
  let { height, width } = latent;
  for (let l = 0; l < level; l++) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  return { height, width };
}

/** Tokens N = H * W of an attention block's feature map. */
export function blockTokens(latent: LatentSize, block: AttentionBlockInfo): number {
  const s = featureMapSize(latent, block.level);
  return s.height * s.width;
}
