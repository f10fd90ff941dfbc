/**
 * UNet2DConditionModel (diffusers) as one ONNX graph, built module by module from `config.json` and named
 * after the state dict (`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight`), so a reader goes
 * from a weight to its code in one step. Covers SD-1.x, SD-2.x (linear projection, per-block head counts) and
 * SD-XL (text_time added embeddings, transformer depth per block) and pixel-space models.
 *
 * Graph inputs: `sample` (B, C, h, w), `timestep` (B) float32, `encoder_hidden_states` (B, L, D), and for
 * SD-XL `text_embeds` (B, P) and `time_ids` (B, 6). Output: `out_sample` (B, C_out, h, w).
 * Batch, latent height/width and text length are symbolic, so one session serves every size.
 *
 * Every Transformer2DModel hands its tokens to a `TransformerRunner`: the default runs the layers in order;
 * token-pruning methods (src/pruning) supply their own runner, the only place where they touch the model.
 */
import { AtedmError } from "../errors.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { attention, conv2d, gelu, groupNorm, layerNorm, linear, silu, type AttentionResult } from "./layers.js";
import { Params, type Weights } from "./weights.js";

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

/** Normalise a diffusers UNet2DConditionModel config.json, rejecting what this implementation does not cover. */
export function resolveUNetConfig(raw: Record<string, unknown>, source = "unet/config.json"): UNetConfig {
  const bad = (key: string, why: string): never => {
    throw new AtedmError(`${source}: ${key} = ${JSON.stringify(raw[key])} is not supported (${why})`);
  };
  const get = <T>(key: string, dflt: T): T => (raw[key] === undefined || raw[key] === null ? dflt : (raw[key] as T));
  const blockOut = get<number[]>("block_out_channels", [320, 640, 1280, 1280]);
  const n = blockOut.length;
  const perBlock = (key: string, value: unknown): number[] => {
    if (typeof value === "number") return new Array(n).fill(value);
    if (Array.isArray(value) && value.length === n && value.every((v) => Number.isInteger(v))) return value as number[];
    return bad(key, `expected a number or a list of ${n} numbers`);
  };
  const downTypes = get<string[]>("down_block_types", []);
  const upTypes = get<string[]>("up_block_types", []);
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
  if (get("only_cross_attention", false) !== false) bad("only_cross_attention", "must be false");
  if (get("dual_cross_attention", false) !== false) bad("dual_cross_attention", "must be false");
  if (get("resnet_time_scale_shift", "default") !== "default") bad("resnet_time_scale_shift", "only 'default'");
  if (get("time_embedding_type", "positional") !== "positional") bad("time_embedding_type", "only 'positional'");
  if (get("attention_type", "default") !== "default") bad("attention_type", "only 'default'");
  if (get("conv_in_kernel", 3) !== 3 || get("conv_out_kernel", 3) !== 3) bad("conv_in_kernel", "only 3");
  if (get("mid_block_scale_factor", 1) !== 1) bad("mid_block_scale_factor", "only 1");
  if (get("resnet_out_scale_factor", 1) !== 1) bad("resnet_out_scale_factor", "only 1");
  if (get("center_input_sample", false) !== false) bad("center_input_sample", "only false");
  const cad = get<number | number[]>("cross_attention_dim", 1280);
  if (typeof cad !== "number") bad("cross_attention_dim", "per-block cross_attention_dim is not supported");
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (a long-standing naming quirk).
  const heads = perBlock("attention_head_dim", get("num_attention_heads", null) ?? get("attention_head_dim", 8));
  const tlpb = perBlock("transformer_layers_per_block", get("transformer_layers_per_block", 1));
  const rev = raw.reverse_transformer_layers_per_block;
  if (rev !== undefined && rev !== null) bad("reverse_transformer_layers_per_block", "not supported");
  return {
    in_channels: get("in_channels", 4),
    out_channels: get("out_channels", 4),
    block_out_channels: blockOut,
    down_block_types: downTypes,
    up_block_types: upTypes,
    mid_block_type: midType,
    layers_per_block: get("layers_per_block", 2),
    heads,
    transformer_layers_per_block: tlpb,
    reverse_transformer_layers_per_block: tlpb.slice().reverse(),
    cross_attention_dim: cad as number,
    norm_num_groups: get("norm_num_groups", 32),
    norm_eps: get("norm_eps", 1e-5),
    act_fn: get("act_fn", "silu"),
    use_linear_projection: get("use_linear_projection", false),
    flip_sin_to_cos: get("flip_sin_to_cos", true),
    freq_shift: get("freq_shift", 0),
    addition_embed_type: addType,
    addition_time_embed_dim: get("addition_time_embed_dim", null),
    projection_class_embeddings_input_dim: get("projection_class_embeddings_input_dim", null),
    sample_size: get("sample_size", 64),
    upcast_attention: get("upcast_attention", false),
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
  depth: number;
  channels: number;
  heads: number;
  /** Down-sampling factor of the block's feature map relative to the latent (1, 2, 4, ...). */
  downsample: number;
}

/** The attention blocks of a U-Net config in execution order. */
export function attentionBlocks(cfg: UNetConfig): AttentionBlockInfo[] {
  const out: AttentionBlockInfo[] = [];
  const n = cfg.block_out_channels.length;
  cfg.down_block_types.forEach((t, i) => {
    if (t !== "CrossAttnDownBlock2D") return;
    for (let j = 0; j < cfg.layers_per_block; j++) {
      out.push({
        path: `down_blocks.${i}.attentions.${j}`, stage: "down", stageIndex: i, index: j, count: cfg.layers_per_block,
        depth: cfg.transformer_layers_per_block[i]!, channels: cfg.block_out_channels[i]!, heads: cfg.heads[i]!, downsample: 2 ** i,
      });
    }
  });
  if (cfg.mid_block_type) {
    out.push({
      path: "mid_block.attentions.0", stage: "mid", stageIndex: 0, index: 0, count: 1,
      depth: cfg.transformer_layers_per_block[n - 1]!, channels: cfg.block_out_channels[n - 1]!, heads: cfg.heads[n - 1]!,
      downsample: 2 ** (n - 1),
    });
  }
  cfg.up_block_types.forEach((t, i) => {
    if (t !== "CrossAttnUpBlock2D") return;
    const r = n - 1 - i;
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      out.push({
        path: `up_blocks.${i}.attentions.${j}`, stage: "up", stageIndex: i, index: j, count: cfg.layers_per_block + 1,
        depth: cfg.reverse_transformer_layers_per_block[i]!, channels: cfg.block_out_channels[r]!, heads: cfg.heads[r]!,
        downsample: 2 ** r,
      });
    }
  });
  return out;
}

/** One BasicTransformerBlock, as separately callable sub-layers (pruning and ToMe compose them). */
export interface TransformerLayer {
  path: string;
  heads: number;
  headDim: number;
  norm1(x: Value): Value;
  attn1(h: Value, options?: { explicitProbs?: boolean }): AttentionResult;
  norm2(x: Value): Value;
  attn2(h: Value): Value;
  /** Cross-attention computing its probabilities explicitly, (B, heads, N, L). */
  attn2Explicit(h: Value): AttentionResult;
  /** Only the cross-attention probabilities (B, heads, N, L): no PV, no to_out. */
  attn2Probs(h: Value): Value;
  norm3(x: Value): Value;
  ff(h: Value): Value;
}

/** Everything a TransformerRunner needs to run one Transformer2DModel on its tokens. */
export interface TransformerContext {
  g: GraphBuilder;
  block: AttentionBlockInfo;
  /** Tokens after proj_in, (B, N, C), row-major over (h, w). */
  tokens: Value;
  /** int64 scalars: feature-map height and width of this block. */
  height: Value;
  width: Value;
  layers: TransformerLayer[];
  /** proj_out on any token set (B, *, C). */
  projOut(x: Value): Value;
  /** Record a named intermediate (made a graph output when requested). */
  tap(name: string, v: Value, dtype?: "float32" | "int64"): void;
}

/** Runs the layers of one attention block and returns the dense (B, N, C) output of proj_out. */
export type TransformerRunner = (ctx: TransformerContext) => Value;

/** The standard forward of a BasicTransformerBlock. */
export function layerForward(L: TransformerLayer, g: GraphBuilder, x: Value): Value {
  x = g.op("Add", [L.attn1(L.norm1(x)).out, x]);
  x = g.op("Add", [L.attn2(L.norm2(x)), x]);
  return g.op("Add", [L.ff(L.norm3(x)), x]);
}

export const denseRunner: TransformerRunner = (ctx) => {
  let x = ctx.tokens;
  for (const L of ctx.layers) x = layerForward(L, ctx.g, x);
  return ctx.projOut(x);
};

export interface UNetGraphOptions {
  /** Runner per attention block path; blocks not listed use the dense runner. */
  runners?: (block: AttentionBlockInfo) => TransformerRunner | undefined;
  /** Intermediates to expose as extra outputs (names as in the golden fixtures, e.g. `inter.down_blocks.0`). */
  taps?: readonly string[];
  /** Extra graph inputs that runners need (name, dtype, shape), declared before building. */
  extraInputs?: ReadonlyArray<{ name: string; dtype: "int64" | "float32"; shape: Array<number | string> }>;
}

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
function timestepEmbedding(g: GraphBuilder, t: Value, dim: number, flip: boolean, shift: number): Value {
  const freqs = g.constant(Array.from(timestepFrequencies(dim, shift)), "float32", [1, Math.floor(dim / 2)]);
  const arg = g.op("Mul", [g.op("Unsqueeze", [t, g.ints([1])]), freqs]);
  const sin = g.op("Sin", [arg]);
  const cos = g.op("Cos", [arg]);
  return g.op("Concat", flip ? [cos, sin] : [sin, cos], { axis: 1 });
}

/**
 * One Transformer2DModel (GroupNorm, proj_in, BasicTransformerBlocks, proj_out, + residual) on x (B, C, H, W),
 * its layers run by `runner`.
 */
export function transformer2D(
  g: GraphBuilder,
  P: Params,
  cfg: UNetConfig,
  block: AttentionBlockInfo,
  x: Value,
  context: Value,
  runner: TransformerRunner,
  tap: TransformerContext["tap"] = () => undefined,
): Value {
  return g.scope(block.path, () => {
    const p = P.at(block.path);
    const channels = block.channels;
    const heads = block.heads;
    const headDim = channels / heads;
    if (!Number.isInteger(headDim)) {
      throw new AtedmError(`unet/config.json: ${block.path} has ${channels} channels, not divisible by ${heads} heads`);
    }
    const shape = g.op("Shape", [x]);
    const height = g.op("Gather", [shape, g.constant(2, "int64")]);
    const width = g.op("Gather", [shape, g.constant(3, "int64")]);
    const normed = groupNorm(g, p.at("norm"), x, cfg.norm_num_groups, 1e-6);
    // (B, C, H, W) -> (B, H*W, C)
    const tokensIn = g.op("Transpose", [g.op("Reshape", [normed, g.ints([0, 0, -1])])], { perm: [0, 2, 1] });
    // A 1x1 conv projection (use_linear_projection false) is the same per-token linear map.
    const tokenLinear = (q: Params, t: Value): Value => {
      if (cfg.use_linear_projection) return linear(g, q, t);
      const [o, i] = q.shape("weight") as [number, number];
      const w2 = g.op("Reshape", [q.get(g, "weight", [o, i, 1, 1]), g.ints([o, i])]);
      return g.op("Add", [g.op("MatMul", [t, g.op("Transpose", [w2], { perm: [1, 0] })]), q.get(g, "bias")]);
    };
    const tokens = tokenLinear(p.at("proj_in"), tokensIn);
    const crossAttention = (a: Params, h: Value, explicitProbs: boolean): AttentionResult => {
      const r = attention(g, linear(g, a.at("to_q"), h), linear(g, a.at("to_k"), context), linear(g, a.at("to_v"), context),
        heads, headDim, { explicitProbs });
      return { ...r, out: linear(g, a.at("to_out.0"), r.out) };
    };
    const layers: TransformerLayer[] = [];
    for (let l = 0; l < block.depth; l++) {
      const lp = p.at(`transformer_blocks.${l}`);
      const path = lp.prefix;
      layers.push({
        path, heads, headDim,
        norm1: (v) => layerNorm(g, lp.at("norm1"), v, 1e-5),
        attn1: (h, o) => {
          const a = lp.at("attn1");
          const r = attention(g, linear(g, a.at("to_q"), h), linear(g, a.at("to_k"), h), linear(g, a.at("to_v"), h),
            heads, headDim, o);
          return { ...r, out: linear(g, a.at("to_out.0"), r.out) };
        },
        norm2: (v) => layerNorm(g, lp.at("norm2"), v, 1e-5),
        attn2: (h) => crossAttention(lp.at("attn2"), h, false).out,
        attn2Explicit: (h) => crossAttention(lp.at("attn2"), h, true),
        attn2Probs: (h) => {
          const a = lp.at("attn2");
          const k = linear(g, a.at("to_k"), context);
          return attention(g, linear(g, a.at("to_q"), h), k, k, heads, headDim, { explicitProbs: true, probsOnly: true }).probs!;
        },
        norm3: (v) => layerNorm(g, lp.at("norm3"), v, 1e-5),
        ff: (h) => {
          // GEGLU: proj gives [hidden | gate]; hidden * gelu(gate), then Linear.
          const proj = linear(g, lp.at("ff.net.0.proj"), h);
          const [hid, gate] = g.opN("Split", [proj], 2, { axis: -1 });
          return linear(g, lp.at("ff.net.2"), g.op("Mul", [hid!, gelu(g, gate!)]));
        },
      });
    }
    const out = runner({ g, block, tokens, height, width, layers, projOut: (t) => tokenLinear(p.at("proj_out"), t), tap });
    // (B, N, C) -> (B, C, H, W), plus the block's residual.
    const spatial = g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1] }), shape]);
    return g.op("Add", [spatial, x]);
  });
}

/** Build the U-Net graph. */
export function buildUNetGraph(cfg: UNetConfig, weights: Weights, options: UNetGraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder("unet");
  const P = new Params(weights);
  const taps = new Map<string, { v: Value; dtype: "float32" | "int64" }>();
  const tap = (name: string, v: Value, dtype: "float32" | "int64" = "float32") => {
    if (options.taps?.includes(name)) taps.set(name, { v, dtype });
  };
  const act = (x: Value) => (cfg.act_fn === "silu" || cfg.act_fn === "swish" ? silu(g, x) : gelu(g, x));
  if (!["silu", "swish", "gelu"].includes(cfg.act_fn)) throw new AtedmError(`unet/config.json: act_fn '${cfg.act_fn}' not supported`);

  const sample = g.input("sample", "float32", ["batch", cfg.in_channels, "height", "width"]);
  const timestep = g.input("timestep", "float32", ["batch"]);
  const context = g.input("encoder_hidden_states", "float32", ["batch", "text_len", cfg.cross_attention_dim]);
  for (const e of options.extraInputs ?? []) g.input(e.name, e.dtype, e.shape);

  // Time embedding.
  const c0 = cfg.block_out_channels[0]!;
  const tProj = timestepEmbedding(g, timestep, c0, cfg.flip_sin_to_cos, cfg.freq_shift);
  tap("inter.time_proj", tProj);
  const temb = linear(g, P.at("time_embedding.linear_2"), act(linear(g, P.at("time_embedding.linear_1"), tProj)));
  tap("inter.time_embedding", temb);
  let emb = temb;
  if (cfg.addition_embed_type === "text_time") {
    const dim = cfg.addition_time_embed_dim;
    if (!dim) throw new AtedmError("unet/config.json: addition_time_embed_dim is required for text_time");
    const textEmbeds = g.input("text_embeds", "float32", ["batch", "pooled_dim"]);
    const timeIds = g.input("time_ids", "float32", ["batch", 6]);
    const flat = g.op("Reshape", [timeIds, g.ints([-1])]);
    // Each of the 6 ids gets its own [cos | sin] embedding: (B*6, dim) -> (B, 6*dim).
    const idsEmb = timestepEmbedding(g, flat, dim, cfg.flip_sin_to_cos, cfg.freq_shift);
    tap("inter.add_time_proj", idsEmb);
    const idsB = g.op("Reshape", [idsEmb, g.ints([-1, 6 * dim])]);
    const addIn = g.op("Concat", [textEmbeds, idsB], { axis: 1 });
    const aug = linear(g, P.at("add_embedding.linear_2"), act(linear(g, P.at("add_embedding.linear_1"), addIn)));
    tap("inter.add_embedding", aug);
    emb = g.op("Add", [emb, aug]);
  }
  tap("inter.emb", emb);
  const embAct = act(emb);

  const resnet = (p: Params, x: Value): Value =>
    g.scope(p.prefix, () => {
      let h = act(groupNorm(g, p.at("norm1"), x, cfg.norm_num_groups, cfg.norm_eps));
      h = conv2d(g, p.at("conv1"), h);
      const t = linear(g, p.at("time_emb_proj"), embAct);
      h = g.op("Add", [h, g.op("Unsqueeze", [t, g.ints([2, 3])])]);
      h = act(groupNorm(g, p.at("norm2"), h, cfg.norm_num_groups, cfg.norm_eps));
      h = conv2d(g, p.at("conv2"), h);
      const shortcut = p.has("conv_shortcut.weight") ? conv2d(g, p.at("conv_shortcut"), x) : x;
      return g.op("Add", [shortcut, h]);
    });

  const transformer = (block: AttentionBlockInfo, x: Value): Value =>
    transformer2D(g, P, cfg, block, x, context, options.runners?.(block) ?? denseRunner, tap);

  const blocks = attentionBlocks(cfg);
  const blockAt = (path: string) => blocks.find((b) => b.path === path)!;

  let h = conv2d(g, P.at("conv_in"), sample);
  tap("inter.conv_in", h);
  const skips: Value[] = [h];
  const n = cfg.block_out_channels.length;
  cfg.down_block_types.forEach((type, i) => {
    for (let j = 0; j < cfg.layers_per_block; j++) {
      h = resnet(P.at(`down_blocks.${i}.resnets.${j}`), h);
      if (type === "CrossAttnDownBlock2D") h = transformer(blockAt(`down_blocks.${i}.attentions.${j}`), h);
      skips.push(h);
    }
    if (i < n - 1) {
      h = conv2d(g, P.at(`down_blocks.${i}.downsamplers.0.conv`), h, 2, 1);
      skips.push(h);
    }
    tap(`inter.down_blocks.${i}`, h);
  });
  if (cfg.mid_block_type) {
    h = resnet(P.at("mid_block.resnets.0"), h);
    h = transformer(blockAt("mid_block.attentions.0"), h);
    h = resnet(P.at("mid_block.resnets.1"), h);
    tap("inter.mid_block", h);
  }
  cfg.up_block_types.forEach((type, i) => {
    for (let j = 0; j <= cfg.layers_per_block; j++) {
      const skip = skips.pop()!;
      h = g.op("Concat", [h, skip], { axis: 1 });
      h = resnet(P.at(`up_blocks.${i}.resnets.${j}`), h);
      if (type === "CrossAttnUpBlock2D") h = transformer(blockAt(`up_blocks.${i}.attentions.${j}`), h);
    }
    if (i < n - 1) {
      // Nearest upsampling to the size of the next skip (x2, or the odd size the down path produced).
      const next = skips[skips.length - 1]!;
      const size = g.op("Shape", [next], { start: 2, end: 4 });
      const full = g.op("Concat", [g.op("Shape", [h], { start: 0, end: 2 }), size], { axis: 0 });
      h = g.op("Resize", [h, null, null, full], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
      h = conv2d(g, P.at(`up_blocks.${i}.upsamplers.0.conv`), h);
    }
    tap(`inter.up_blocks.${i}`, h);
  });
  h = act(groupNorm(g, P.at("conv_norm_out"), h, cfg.norm_num_groups, cfg.norm_eps));
  h = conv2d(g, P.at("conv_out"), h);
  g.output(h, "out_sample");
  for (const name of options.taps ?? []) {
    const t = taps.get(name);
    if (!t) throw new Error(`unknown tap '${name}'`);
    g.output(t.v, name, t.dtype);
  }
  return g;
}

/**
 * A graph of one attention block alone (for benchmarks and block-level tests): inputs `hidden_states`
 * (B, C, H, W) and `encoder_hidden_states`, output `out` (B, C, H, W).
 */
export function buildAttentionBlockGraph(
  cfg: UNetConfig,
  weights: Weights,
  path: string,
  runner: TransformerRunner = denseRunner,
  extraInputs: UNetGraphOptions["extraInputs"] = [],
): GraphBuilder {
  const block = attentionBlocks(cfg).find((b) => b.path === path);
  if (!block) throw new AtedmError(`no attention block '${path}' in this U-Net`);
  const g = new GraphBuilder(path);
  const x = g.input("hidden_states", "float32", ["batch", block.channels, "height", "width"]);
  const context = g.input("encoder_hidden_states", "float32", ["batch", "text_len", cfg.cross_attention_dim]);
  for (const e of extraInputs) g.input(e.name, e.dtype, e.shape);
  g.output(transformer2D(g, new Params(weights), cfg, block, x, context, runner), "out");
  return g;
}
