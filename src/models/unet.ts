/**
 * UNet2DConditionModel (diffusers) as one ONNX graph: `buildUNetGraph` iterates the module walk of
 * src/models/unet_structure.ts and calls the builder named after each diffusers module (unet_blocks.ts,
 * transformer_2d.ts), so every node is named after the state dict (`down_blocks.1.attentions.0.
 * transformer_blocks.0.attn1.to_q`) and a reader goes from a weight to its code in one step. Covers SD-1.x,
 * SD-2.x (linear projection, per-block head counts), SD-XL (text_time added embeddings, transformer depth per
 * block) and pixel-space models.
 *
 * Graph inputs: `sample` (B, C, h, w), `timestep` (B) float32, `encoder_hidden_states` (B, L, D), and for
 * SD-XL `text_embeds` (B, P) and `time_ids` (B, 6). Output: `out_sample` (B, C_out, h, w).
 * Batch, latent height/width and text length are symbolic, so one session serves every size.
 *
 * Every Transformer2DModel hands its tokens to a `TransformerRunner` (src/models/pruning_hook.ts): token-pruning
 * methods supply their own runner, the only place where they touch the model.
 */
import { AtedmError } from "../errors.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { activation, conv2d, groupNorm } from "./layers.js";
import type { AttentionBlockInfo, GraphInput, TransformerRunner } from "./pruning_hook.js";
import { denseRunner, transformer2DModel } from "./transformer_2d.js";
import { addEmbedding, downsample2D, resnetBlock2D, timestepEmbedding, timesteps, upsample2D } from "./unet_blocks.js";
import { attentionBlocks, unetModules, type UNetConfig } from "./unet_structure.js";
import { Params, type Weights } from "./weights.js";

export interface UNetGraphOptions {
  /** Runner per attention block; blocks without one use the dense runner. */
  runners?: (block: AttentionBlockInfo) => TransformerRunner | undefined;
  /** Intermediates to expose as extra outputs (names as in the golden fixtures, e.g. `inter.down_blocks.0`). */
  taps?: readonly string[];
  /** Extra graph inputs that runners need, declared before building. */
  extraInputs?: readonly GraphInput[];
}

type Tap = (name: string, v: Value, dtype?: "float32" | "int64") => void;

/** A tap function that records the requested names, and a way to make them graph outputs afterwards. */
function tapper(wanted: readonly string[] = []): { tap: Tap; emit(g: GraphBuilder): void } {
  const taps = new Map<string, { v: Value; dtype: "float32" | "int64" }>();
  return {
    tap: (name, v, dtype = "float32") => {
      if (wanted.includes(name)) taps.set(name, { v, dtype });
    },
    emit(g) {
      for (const name of wanted) {
        const t = taps.get(name);
        if (!t) throw new AtedmError(`no intermediate '${name}' in this graph`);
        g.output(t.v, name, t.dtype);
      }
    },
  };
}

/** Build the U-Net graph. */
export function buildUNetGraph(cfg: UNetConfig, weights: Weights, options: UNetGraphOptions = {}): GraphBuilder {
  const g = new GraphBuilder("unet");
  const P = new Params(weights);
  const { tap, emit } = tapper(options.taps);
  const act = (x: Value) => activation(g, cfg.act_fn, x);

  const sample = g.input("sample", "float32", ["batch", cfg.in_channels, "height", "width"]);
  const timestep = g.input("timestep", "float32", ["batch"]);
  const context = g.input("encoder_hidden_states", "float32", ["batch", "text_len", cfg.cross_attention_dim]);
  for (const e of options.extraInputs ?? []) g.input(e.name, e.dtype, e.shape);

  let h = sample;
  let emb: Value | undefined; // the time embedding every resnet receives (after the add embedding, if any)
  let embAct: Value | undefined;
  const skips: Value[] = [];
  for (const m of unetModules(cfg)) {
    const p = P.at(m.path);
    switch (m.kind) {
      case "Conv2d":
        h = conv2d(g, p, h);
        break;
      case "TimestepEmbedding": {
        const tProj = timesteps(g, cfg, timestep, m.inChannels);
        tap("inter.time_proj", tProj);
        emb = timestepEmbedding(g, p, cfg, tProj);
        tap("inter.time_embedding", emb);
        break;
      }
      case "AddEmbedding": {
        const textEmbeds = g.input("text_embeds", "float32", ["batch", "pooled_dim"]);
        const timeIds = g.input("time_ids", "float32", ["batch", 6]);
        const aug = addEmbedding(g, p, cfg, m, textEmbeds, timeIds, tap);
        tap("inter.add_embedding", aug);
        emb = g.op("Add", [emb!, aug]);
        break;
      }
      case "ResnetBlock2D":
        if (m.skipChannels > 0) h = g.op("Concat", [h, skips.pop()!], { axis: 1 });
        if (!embAct) {
          tap("inter.emb", emb!);
          embAct = act(emb!);
        }
        h = resnetBlock2D(g, p, cfg, m, h, embAct);
        break;
      case "Transformer2DModel":
        h = transformer2DModel(g, P, cfg, m.block, h, context, options.runners?.(m.block) ?? denseRunner, tap);
        break;
      case "Downsample2D":
        h = downsample2D(g, p, h);
        break;
      case "Upsample2D":
        h = upsample2D(g, p, h, skips[skips.length - 1]!);
        break;
      case "GroupNorm":
        h = act(groupNorm(g, p, h, cfg.norm_num_groups, cfg.norm_eps));
        break;
    }
    if (m.pushSkip) skips.push(h);
    if (m.endsBlock) tap(`inter.${m.endsBlock}`, h);
  }
  g.output(h, "out_sample");
  emit(g);
  return g;
}

/**
 * A graph of one attention block alone (for benchmarks and block-level tests): inputs `hidden_states`
 * (B, C, H, W) and `encoder_hidden_states`, output `out` (B, C, H, W), plus the requested `taps` (e.g. a pruning
 * method's kept indices and scores).
 */
export function buildAttentionBlockGraph(
  cfg: UNetConfig,
  weights: Weights,
  path: string,
  runner: TransformerRunner = denseRunner,
  extraInputs: readonly GraphInput[] = [],
  taps: readonly string[] = [],
): GraphBuilder {
  const block = attentionBlocks(cfg).find((b) => b.path === path);
  if (!block) throw new AtedmError(`no attention block '${path}' in this U-Net`);
  const g = new GraphBuilder(path);
  const x = g.input("hidden_states", "float32", ["batch", block.channels, "height", "width"]);
  const context = g.input("encoder_hidden_states", "float32", ["batch", "text_len", cfg.cross_attention_dim]);
  for (const e of extraInputs) g.input(e.name, e.dtype, e.shape);
  const { tap, emit } = tapper(taps);
  g.output(transformer2DModel(g, new Params(weights), cfg, block, x, context, runner, tap), "out");
  emit(g);
  return g;
}
