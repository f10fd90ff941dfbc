/**
 * The decoder half of AutoencoderKL (diffusers) as one ONNX graph: latents -> image. Built from the VAE's
 * `config.json` and named after its state dict (`decoder.up_blocks.1.resnets.0.conv1.weight`), in the style of
 * the U-Net (src/models/unet.ts).
 *
 *   post_quant_conv (1x1) -> decoder.conv_in -> decoder.mid_block (resnet, attention, resnet)
 *   -> decoder.up_blocks (layers_per_block + 1 resnets each, x2 nearest upsampler except the last)
 *   -> conv_norm_out -> SiLU -> conv_out
 *
 * Every GroupNorm of the VAE uses eps 1e-6. The resnets have no time embedding. The mid-block attention is
 * single-head over all H*W positions, with q/k/v biases, its own GroupNorm and a residual. Old SD-1.x
 * checkpoints name its projections `query/key/value/proj_attn` (instead of `to_q/to_k/to_v/to_out.0`) and may
 * store them as 1x1 convs ([C, C, 1, 1]); both are accepted, as diffusers' loader does.
 *
 * Graph input: `latent_sample` (B, latent_channels, h, w), already scaled as diffusers' `vae.decode(z)` expects
 * (z = latents / scaling_factor + shift_factor). Output: `sample` (B, out_channels, 8h, 8w) for the usual
 * 4-level VAE, before any postprocessing. Batch, h and w are symbolic.
 */
import { AtedmError } from "../errors.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { blockOutChannels, bool, dflt, int, LIMITS, num, obj, orNull, parseConfig, show, stringList, v as valibot } from "../io/config_schema.js";
import { asModelSource, type ModelSource } from "../io/model_source.js";
import { f32, type Runtime, type Session } from "../runtime/session.js";
import { attention, conv2d, groupNorm, silu } from "./layers.js";
import { Params, Weights } from "./weights.js";

export interface VAEConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  up_block_types: string[];
  layers_per_block: number;
  norm_num_groups: number;
  act_fn: string;
  mid_block_add_attention: boolean;
  use_post_quant_conv: boolean;
  sample_size: number;
  /** The pipeline decodes `latents / scaling_factor + shift_factor`. */
  scaling_factor: number;
  /** null in the config means 0. */
  shift_factor: number;
  /** Per-channel latent statistics (SD-XL-style pipelines decode `latents * std / scaling_factor + mean`). */
  latents_mean: number[] | null;
  latents_std: number[] | null;
  /** The VAE must run in float32 even when the rest runs in float16 (this implementation is float32 anyway). */
  force_upcast: boolean;
}

/** Epsilon of every GroupNorm in AutoencoderKL (hard-coded in diffusers, not in the config). */
export const VAE_NORM_EPS = 1e-6;

/** Latent statistics: null or one finite number per latent channel (length checked against latent_channels). */
const LATENT_STATS = orNull(
  valibot.pipe(
    valibot.array(num(LIMITS.latentStat), "null or a list of numbers"),
    valibot.maxLength(LIMITS.ioChannels[1], "null or a list of numbers"),
  ),
);

/**
 * The keys of config.json whose type and range are validated first (limits: src/io/config_schema.ts); a missing or
 * null key takes diffusers' default, other keys are checked below or ignored.
 */
const VAE_SCHEMA = obj({
  block_out_channels: dflt(blockOutChannels, [64]),
  up_block_types: orNull(stringList(LIMITS.blocks[1])),
  in_channels: dflt(int(LIMITS.ioChannels), 3),
  out_channels: dflt(int(LIMITS.ioChannels), 3),
  latent_channels: dflt(int(LIMITS.ioChannels), 4),
  layers_per_block: dflt(int(LIMITS.layersPerBlock), 1),
  norm_num_groups: dflt(int(LIMITS.channels), 32),
  act_fn: dflt(valibot.string("a string"), "silu"),
  norm_type: dflt(valibot.string("a string"), "group"),
  mid_block_add_attention: dflt(bool, true),
  use_post_quant_conv: dflt(bool, true),
  sample_size: dflt(int(LIMITS.vaeSampleSize), 32),
  scaling_factor: dflt(num(LIMITS.scaleFactor), 0.18215),
  shift_factor: dflt(num(LIMITS.scaleFactor), 0),
  latents_mean: LATENT_STATS,
  latents_std: LATENT_STATS,
  force_upcast: dflt(bool, true),
});

/** Normalise a diffusers AutoencoderKL config.json, rejecting what this implementation does not cover. */
export function resolveVAEConfig(raw: Record<string, unknown>, source = "vae/config.json"): VAEConfig {
  const c = parseConfig(VAE_SCHEMA, raw, source);
  const bad = (key: string, why: string): never => {
    throw new AtedmError(`${source}: ${key} = ${show(raw[key])} is not supported (${why})`);
  };

  const cls = raw._class_name;
  if (cls !== undefined && cls !== "AutoencoderKL") bad("_class_name", "only AutoencoderKL");
  const channels = c.block_out_channels;
  const n = channels.length;
  const upTypes = c.up_block_types ?? new Array<string>(n).fill("UpDecoderBlock2D");
  if (upTypes.length !== n) bad("up_block_types", `expected ${n} entries, one per block_out_channels`);
  for (const t of upTypes) if (t !== "UpDecoderBlock2D") bad("up_block_types", `only UpDecoderBlock2D, got '${t}'`);
  const groups = c.norm_num_groups;
  for (const ch of channels) {
    if (ch % groups !== 0) bad("block_out_channels", `${ch} channels are not divisible by norm_num_groups ${groups}`);
  }
  if (c.act_fn !== "silu" && c.act_fn !== "swish") bad("act_fn", "only silu");
  if (c.norm_type !== "group") bad("norm_type", "only 'group'");
  if (c.scaling_factor === 0) bad("scaling_factor", "must be non-zero");
  const latentChannels = c.latent_channels;
  const perChannel = (key: "latents_mean" | "latents_std"): number[] | null => {
    const x = c[key];
    if (x !== null && x.length !== latentChannels) return bad(key, `expected null or a list of ${latentChannels} numbers`);
    return x;
  };
  const latentsMean = perChannel("latents_mean");
  const latentsStd = perChannel("latents_std");
  return {
    in_channels: c.in_channels,
    out_channels: c.out_channels,
    latent_channels: latentChannels,
    block_out_channels: channels.slice(),
    up_block_types: upTypes.slice(),
    layers_per_block: c.layers_per_block,
    norm_num_groups: groups,
    act_fn: c.act_fn,
    mid_block_add_attention: c.mid_block_add_attention,
    use_post_quant_conv: c.use_post_quant_conv,
    sample_size: c.sample_size,
    scaling_factor: c.scaling_factor,
    shift_factor: c.shift_factor,
    // diffusers only applies them when both are given.
    latents_mean: latentsMean && latentsStd ? latentsMean : null,
    latents_std: latentsMean && latentsStd ? latentsStd : null,
    force_upcast: c.force_upcast,
  };
}

export interface VAEGraphOptions {
  /** Intermediates to expose as extra outputs: `inter.post_quant_conv`, `inter.decoder.conv_in`,
   *  `inter.decoder.mid_block`, `inter.decoder.up_blocks.<i>`. */
  taps?: readonly string[];
}

/** Modern and legacy (pre-0.14 diffusers, old SD-1.x checkpoints) names of the mid-block attention projections. */
const ATTN_NAMES = [
  ["to_q", "query"],
  ["to_k", "key"],
  ["to_v", "value"],
  ["to_out.0", "proj_attn"],
] as const;

function checkShape(p: Params, name: string, expected: readonly number[]): void {
  const shape = p.shape(name);
  if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
    throw new AtedmError(`${p.weights.store.source}: tensor '${p.path(name)}' has shape [${shape}], expected [${expected}]`);
  }
}

/** Build the VAE decoder graph (post_quant_conv included). */
export function buildVAEDecoderGraph(cfg: VAEConfig, weights: Weights, options: VAEGraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder("vae_decoder");
  const P = new Params(weights);
  const D = P.at("decoder");
  const eps = VAE_NORM_EPS;
  const groups = cfg.norm_num_groups;
  const taps = new Map<string, Value>();
  const tap = (name: string, v: Value) => {
    if (options.taps?.includes(name)) taps.set(name, v);
  };

  const conv = (p: Params, x: Value, out: number, inp: number, k: number): Value => {
    checkShape(p, "weight", [out, inp, k, k]);
    return conv2d(g, p, x);
  };

  const resnet = (p: Params, x: Value, inCh: number, outCh: number): Value =>
    g.scope(p.prefix, () => {
      let h = silu(g, groupNorm(g, p.at("norm1"), x, groups, eps));
      h = conv(p.at("conv1"), h, outCh, inCh, 3);
      h = silu(g, groupNorm(g, p.at("norm2"), h, groups, eps));
      h = conv(p.at("conv2"), h, outCh, outCh, 3);
      let shortcut = x;
      if (p.has("conv_shortcut.weight")) shortcut = conv(p.at("conv_shortcut"), x, outCh, inCh, 1);
      else if (inCh !== outCh) throw new AtedmError(`${weights.store.source}: missing tensor '${p.path("conv_shortcut.weight")}'`);
      return g.op("Add", [shortcut, h]);
    });

  /** One attention projection on tokens (B, N, C): a Linear, stored as [C, C] or as a 1x1 conv [C, C, 1, 1]. */
  const projection = (p: Params, names: readonly [string, string], t: Value, c: number): Value => {
    const name = names.find((nm) => p.has(`${nm}.weight`));
    if (!name)
      throw new AtedmError(`${weights.store.source}: missing tensor '${p.path(`${names[0]}.weight`)}' (or legacy '${p.path(`${names[1]}.weight`)}')`);
    const q = p.at(name);
    const shape = q.shape("weight");
    let w: Value;
    if (shape.length === 4) {
      checkShape(q, "weight", [c, c, 1, 1]);
      w = g.op("Reshape", [q.get(g, "weight"), g.ints([c, c])]);
    } else {
      checkShape(q, "weight", [c, c]);
      w = q.get(g, "weight");
    }
    const y = g.op("MatMul", [t, g.op("Transpose", [w], { perm: [1, 0] })]);
    if (!q.has("bias")) return y;
    checkShape(q, "bias", [c]);
    return g.op("Add", [y, q.get(g, "bias")]);
  };

  const midAttention = (p: Params, x: Value, c: number): Value =>
    g.scope(p.prefix, () => {
      const shape = g.op("Shape", [x]);
      const normed = groupNorm(g, p.at("group_norm"), x, groups, eps);
      // (B, C, H, W) -> (B, H*W, C)
      const tokens = g.op("Transpose", [g.op("Reshape", [normed, g.ints([0, 0, -1])])], { perm: [0, 2, 1] });
      const [q, k, v, o] = ATTN_NAMES;
      // Single head: head_dim = C, scale 1/sqrt(C).
      const r = attention(g, projection(p, q, tokens, c), projection(p, k, tokens, c), projection(p, v, tokens, c), 1, c, {
        explicitProbs: false,
      });
      const out = projection(p, o, r.out, c);
      const spatial = g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1] }), shape]);
      return g.op("Add", [spatial, x]);
    });

  const channels = cfg.block_out_channels;
  const n = channels.length;
  const top = channels[n - 1]!;

  let h: Value = g.input("latent_sample", "float32", ["batch", cfg.latent_channels, "height", "width"]);
  if (cfg.use_post_quant_conv) {
    h = conv(P.at("post_quant_conv"), h, cfg.latent_channels, cfg.latent_channels, 1);
  }
  tap("inter.post_quant_conv", h);
  h = conv(D.at("conv_in"), h, top, cfg.latent_channels, 3);
  tap("inter.decoder.conv_in", h);

  h = resnet(D.at("mid_block.resnets.0"), h, top, top);
  if (cfg.mid_block_add_attention) h = midAttention(D.at("mid_block.attentions.0"), h, top);
  h = resnet(D.at("mid_block.resnets.1"), h, top, top);
  tap("inter.decoder.mid_block", h);

  const reversed = channels.slice().reverse();
  let ch = top;
  reversed.forEach((outCh, i) => {
    const b = D.at(`up_blocks.${i}`);
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      h = resnet(b.at(`resnets.${j}`), h, ch, outCh);
      ch = outCh;
    }
    if (i < n - 1) {
      h = g.scope(b.prefix, () => {
        const up = g.op("Resize", [h, null, g.constant([1, 1, 2, 2])], {
          mode: "nearest",
          coordinate_transformation_mode: "asymmetric",
          nearest_mode: "floor",
        });
        return conv(b.at("upsamplers.0.conv"), up, ch, ch, 3);
      });
    }
    tap(`inter.decoder.up_blocks.${i}`, h);
  });

  h = silu(g, groupNorm(g, D.at("conv_norm_out"), h, groups, eps));
  h = conv(D.at("conv_out"), h, cfg.out_channels, ch, 3);
  g.output(h, "sample");
  for (const name of options.taps ?? []) {
    const v = taps.get(name);
    if (!v) throw new Error(`unknown tap '${name}'`);
    g.output(v, name);
  }
  return g;
}

export interface DecodedSample {
  data: Float32Array;
  dims: number[];
}

/** A ready-to-run VAE decoder: a session over the decoder graph plus the latent scaling of the config. */
export class VAEDecoder {
  readonly scalingFactor: number;
  readonly shiftFactor: number;

  private constructor(
    readonly config: VAEConfig,
    private readonly session: Session,
  ) {
    this.scalingFactor = config.scaling_factor;
    this.shiftFactor = config.shift_factor;
  }

  /** Load the `vae` component of a model (a diffusers folder path, or any `ModelSource`) and compile the decoder. */
  static async load(model: string | ModelSource, runtime: Runtime): Promise<VAEDecoder> {
    const src = asModelSource(model);
    const cfg = resolveVAEConfig(src.config("vae"), src.configLabel("vae"));
    const weights = new Weights(src.weights("vae"));
    const graph = buildVAEDecoderGraph(cfg, weights);
    return new VAEDecoder(cfg, await runtime.session(graph));
  }

  /**
   * Decode latents in UNet space (B, latent_channels, h, w): z = latents / scaling_factor + shift_factor
   * (or latents * std / scaling_factor + mean with per-channel statistics), then the decoder. Returns the raw
   * decoder sample (B, out_channels, 8h, 8w), range about [-1, 1], not clamped.
   */
  async decode(latents: Float32Array, dims: readonly number[]): Promise<DecodedSample> {
    const c = this.config.latent_channels;
    if (dims.length !== 4 || dims[1] !== c || dims.some((d) => !Number.isInteger(d) || d < 1)) {
      throw new AtedmError(`VAE decode: latents must have shape [B, ${c}, h, w], got [${dims}]`);
    }
    const count = dims.reduce((a, b) => a * b, 1);
    if (latents.length !== count) throw new AtedmError(`VAE decode: ${latents.length} values for shape [${dims}]`);
    const plane = dims[2]! * dims[3]!;
    const z = new Float32Array(count);
    const sf = Math.fround(this.scalingFactor);
    const { latents_mean: mean, latents_std: std } = this.config;
    for (let i = 0; i < count; i++) {
      const ch = Math.floor(i / plane) % c;
      if (mean && std) {
        // torch: latents * std / scaling_factor + mean, each op in float32.
        z[i] = Math.fround(Math.fround(Math.fround(latents[i]! * Math.fround(std[ch]!)) / sf) + Math.fround(mean[ch]!));
      } else {
        const scaled = Math.fround(latents[i]! / sf);
        z[i] = this.shiftFactor === 0 ? scaled : Math.fround(scaled + Math.fround(this.shiftFactor));
      }
    }
    const out = await this.session.run({ latent_sample: f32(z, dims) }, ["sample"]);
    const t = out.sample!;
    return { data: t.data as Float32Array, dims: [...t.dims] };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** diffusers' `output_type="np"` postprocess: clamp(x / 2 + 0.5, 0, 1), NCHW -> NHWC, float32. */
export function toImageNHWC(sample: { data: ArrayLike<number>; dims: readonly number[] }): DecodedSample {
  if (sample.dims.length !== 4) throw new AtedmError(`toImageNHWC: expected an NCHW tensor, got shape [${sample.dims}]`);
  const [b, c, h, w] = sample.dims as [number, number, number, number];
  if (sample.data.length !== b * c * h * w) throw new AtedmError(`toImageNHWC: ${sample.data.length} values for shape [${sample.dims}]`);
  const out = new Float32Array(b * h * w * c);
  const plane = h * w;
  for (let n = 0; n < b; n++) {
    for (let ch = 0; ch < c; ch++) {
      const src = (n * c + ch) * plane;
      for (let p = 0; p < plane; p++) {
        const v = Math.fround(sample.data[src + p]! / 2 + 0.5);
        out[(n * plane + p) * c + ch] = v < 0 ? 0 : v > 1 ? 1 : v; // NaN passes through, as torch.clamp does
      }
    }
  }
  return { data: out, dims: [b, h, w, c] };
}

/**
 * The decoder tensors `buildVAEDecoderGraph` reads for `cfg`, name -> shape (the encoder's are not read, so not
 * listed). `found` (a checkpoint's shape of a name, or undefined) picks what the graph accepts either way: the
 * legacy mid-block attention names (`query`, `key`, `value`, `proj_attn`) when the modern ones are absent, their
 * 1x1-conv shape [C, C, 1, 1], their biases only when present, and a `conv_shortcut` present where the channel
 * count does not change.
 */
/**
 * Writers of an AutoencoderKL state dict's shapes into `out`: a conv (weight [o, i, k, k] and bias), a GroupNorm,
 * and a ResnetBlock2D (`hasShortcut` decides conv_shortcut; default: when the channel count changes).
 */
export function vaeShapeWriters(out: Map<string, number[]>) {
  const conv = (p: string, o: number, i: number, k: number) => {
    out.set(`${p}.weight`, [o, i, k, k]);
    out.set(`${p}.bias`, [o]);
  };
  const norm = (p: string, c: number) => {
    out.set(`${p}.weight`, [c]);
    out.set(`${p}.bias`, [c]);
  };
  const resnet = (p: string, inCh: number, outCh: number, hasShortcut = inCh !== outCh) => {
    norm(`${p}.norm1`, inCh);
    conv(`${p}.conv1`, outCh, inCh, 3);
    norm(`${p}.norm2`, outCh);
    conv(`${p}.conv2`, outCh, outCh, 3);
    if (hasShortcut) conv(`${p}.conv_shortcut`, outCh, inCh, 1);
  };
  return { conv, norm, resnet };
}

export function vaeDecoderStateDictShapes(
  cfg: VAEConfig,
  found: (name: string) => readonly number[] | undefined = () => undefined,
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const w = vaeShapeWriters(out);
  const { conv, norm } = w;
  // A conv_shortcut present where the channel count does not change is read too.
  const resnet = (p: string, inCh: number, outCh: number) => w.resnet(p, inCh, outCh, inCh !== outCh || !!found(`${p}.conv_shortcut.weight`));
  const channels = cfg.block_out_channels;
  const n = channels.length;
  const top = channels[n - 1]!;
  const lc = cfg.latent_channels;
  if (cfg.use_post_quant_conv) conv("post_quant_conv", lc, lc, 1);
  conv("decoder.conv_in", top, lc, 3);
  resnet("decoder.mid_block.resnets.0", top, top);
  if (cfg.mid_block_add_attention) {
    const a = "decoder.mid_block.attentions.0";
    norm(`${a}.group_norm`, top);
    for (const [modern, legacy] of [
      ["to_q", "query"],
      ["to_k", "key"],
      ["to_v", "value"],
      ["to_out.0", "proj_attn"],
    ] as const) {
      const name = !found(`${a}.${modern}.weight`) && found(`${a}.${legacy}.weight`) ? `${a}.${legacy}` : `${a}.${modern}`;
      out.set(`${name}.weight`, found(`${name}.weight`)?.length === 4 ? [top, top, 1, 1] : [top, top]);
      if (found(`${name}.bias`)) out.set(`${name}.bias`, [top]);
    }
  }
  resnet("decoder.mid_block.resnets.1", top, top);
  let ch = top;
  channels
    .slice()
    .reverse()
    .forEach((outCh, i) => {
      for (let j = 0; j <= cfg.layers_per_block; j++) {
        resnet(`decoder.up_blocks.${i}.resnets.${j}`, ch, outCh);
        ch = outCh;
      }
      if (i < n - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, ch, ch, 3);
    });
  norm("decoder.conv_norm_out", ch);
  conv("decoder.conv_out", cfg.out_channels, ch, 3);
  return out;
}
