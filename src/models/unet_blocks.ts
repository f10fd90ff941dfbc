/**
 * The U-Net's non-attention modules as ONNX graph builders, named after diffusers (models/embeddings.py:
 * Timesteps, TimestepEmbedding; models/resnet.py: ResnetBlock2D; models/downsampling.py / upsampling.py:
 * Downsample2D, Upsample2D). Each takes the walk's record (src/models/unet_structure.ts) and its weights.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import { activation, conv2d, groupNorm, linear } from "./layers.js";
import type { UNetConfig, UNetModule } from "./unet_structure.js";
import type { Params } from "./weights.js";

/** Sinusoidal timestep embedding frequencies, computed as torch does in float32. */
export function timestepFrequencies(dim: number, freqShift: number): Float32Array {
  const half = Math.floor(dim / 2);
  const f = new Float32Array(half);
  const lnMax = Math.fround(-Math.log(10000));
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(lnMax * i) / Math.fround(half - freqShift));
    f[i] = Math.exp(exponent);
  }
  return f;
}

/**
 * diffusers Timesteps: t (B) -> [cos | sin] (flip_sin_to_cos) or [sin | cos], (B, dim).
 * The argument t*freq is rounded to float32 before sin/cos, as torch computes it.
 */
export function timesteps(g: GraphBuilder, cfg: UNetConfig, t: Value, dim: number): Value {
  const freqs = g.constant(Array.from(timestepFrequencies(dim, cfg.freq_shift)), "float32", [1, Math.floor(dim / 2)]);
  const arg = g.op("Mul", [g.op("Unsqueeze", [t, g.ints([1])]), freqs]);
  const sin = g.op("Sin", [arg]);
  const cos = g.op("Cos", [arg]);
  return g.op("Concat", cfg.flip_sin_to_cos ? [cos, sin] : [sin, cos], { axis: 1 });
}

/** diffusers TimestepEmbedding: linear_1, activation, linear_2. */
export function timestepEmbedding(g: GraphBuilder, p: Params, cfg: UNetConfig, x: Value): Value {
  return linear(g, p.at("linear_2"), activation(g, cfg.act_fn, linear(g, p.at("linear_1"), x)));
}

/**
 * SD-XL's text_time add_embedding: each of the six size/crop ids gets its own Timesteps embedding,
 * (B * 6, dim) -> (B, 6 * dim), concatenated after the pooled text embedding, then a TimestepEmbedding.
 * `tap` records the ids' embedding (`inter.add_time_proj` in the fixtures).
 */
export function addEmbedding(
  g: GraphBuilder,
  p: Params,
  cfg: UNetConfig,
  m: Extract<UNetModule, { kind: "AddEmbedding" }>,
  textEmbeds: Value,
  timeIds: Value,
  tap: (name: string, v: Value) => void,
): Value {
  const flat = g.op("Reshape", [timeIds, g.ints([-1])]);
  const idsEmb = timesteps(g, cfg, flat, m.timeEmbedDim);
  tap("inter.add_time_proj", idsEmb);
  const idsB = g.op("Reshape", [idsEmb, g.ints([-1, 6 * m.timeEmbedDim])]);
  return timestepEmbedding(g, p, cfg, g.op("Concat", [textEmbeds, idsB], { axis: 1 }));
}

/**
 * diffusers ResnetBlock2D: norm1, act, conv1, + time_emb_proj(act(emb)), norm2, act, conv2, + shortcut (a 1x1
 * conv_shortcut when the channel count changes). `embAct` is act(emb), shared by every resnet.
 */
export function resnetBlock2D(
  g: GraphBuilder,
  p: Params,
  cfg: UNetConfig,
  m: Extract<UNetModule, { kind: "ResnetBlock2D" }>,
  x: Value,
  embAct: Value,
): Value {
  return g.scope(p.prefix, () => {
    const act = (v: Value) => activation(g, cfg.act_fn, v);
    let h = act(groupNorm(g, p.at("norm1"), x, cfg.norm_num_groups, cfg.norm_eps));
    h = conv2d(g, p.at("conv1"), h);
    const t = linear(g, p.at("time_emb_proj"), embAct);
    h = g.op("Add", [h, g.op("Unsqueeze", [t, g.ints([2, 3])])]);
    h = act(groupNorm(g, p.at("norm2"), h, cfg.norm_num_groups, cfg.norm_eps));
    h = conv2d(g, p.at("conv2"), h);
    const shortcut = m.inChannels !== m.outChannels ? conv2d(g, p.at("conv_shortcut"), x) : x;
    return g.op("Add", [shortcut, h]);
  });
}

/** diffusers Downsample2D (use_conv): a 3x3 convolution with stride 2 and padding 1. */
export function downsample2D(g: GraphBuilder, p: Params, x: Value): Value {
  return conv2d(g, p.at("conv"), x, 2, 1);
}

/**
 * diffusers Upsample2D (use_conv): nearest upsampling to the size of `like` (the next skip: x2, or the odd size
 * the down path produced), then a 3x3 convolution.
 */
export function upsample2D(g: GraphBuilder, p: Params, x: Value, like: Value): Value {
  const size = g.op("Shape", [like], { start: 2, end: 4 });
  const full = g.op("Concat", [g.op("Shape", [x], { start: 0, end: 2 }), size], { axis: 0 });
  const up = g.op("Resize", [x, null, null, full], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
  return conv2d(g, p.at("conv"), up);
}
