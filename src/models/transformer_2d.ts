/**
 * Transformer2DModel and BasicTransformerBlock (diffusers models/transformers/transformer_2d.py and
 * models/attention.py) as ONNX graph builders. A Transformer2DModel is GroupNorm, proj_in, `depth`
 * BasicTransformerBlocks, proj_out and the block's residual; how its layers run on the tokens is up to a
 * `TransformerRunner` (src/models/pruning_hook.ts): `denseRunner` by default, a pruning method's runner otherwise.
 */
import type { GraphBuilder, Value } from "../graph/builder.js";
import { attention, gelu, groupNorm, layerNorm, linear, type AttentionResult } from "./layers.js";
import type { TransformerContext, TransformerLayer, TransformerRunner } from "./pruning_hook.js";
import type { AttentionBlockInfo, UNetConfig } from "./unet_structure.js";
import type { Params } from "./weights.js";

/**
 * One BasicTransformerBlock at `p` (`...transformer_blocks.l`) as separately callable sub-layers: norm1 + attn1
 * (self-attention), norm2 + attn2 (cross-attention over `context`), norm3 + ff (GEGLU feed-forward).
 */
export function basicTransformerBlock(g: GraphBuilder, p: Params, block: AttentionBlockInfo, context: Value): TransformerLayer {
  const heads = block.heads;
  const headDim = block.channels / heads;
  const crossAttention = (h: Value, explicitProbs: boolean): AttentionResult => {
    const a = p.at("attn2");
    const r = attention(g, linear(g, a.at("to_q"), h), linear(g, a.at("to_k"), context), linear(g, a.at("to_v"), context), heads, headDim, {
      explicitProbs,
    });
    return { ...r, out: linear(g, a.at("to_out.0"), r.out) };
  };
  return {
    path: p.prefix,
    heads,
    headDim,
    norm1: (v) => layerNorm(g, p.at("norm1"), v, 1e-5),
    attn1: (h, o) => {
      const a = p.at("attn1");
      const r = attention(g, linear(g, a.at("to_q"), h), linear(g, a.at("to_k"), h), linear(g, a.at("to_v"), h), heads, headDim, o);
      return { ...r, out: linear(g, a.at("to_out.0"), r.out) };
    },
    norm2: (v) => layerNorm(g, p.at("norm2"), v, 1e-5),
    attn2: (h) => crossAttention(h, false).out,
    attn2Explicit: (h) => crossAttention(h, true),
    attn2Probs: (h) => {
      const a = p.at("attn2");
      const k = linear(g, a.at("to_k"), context);
      return attention(g, linear(g, a.at("to_q"), h), k, k, heads, headDim, { explicitProbs: true, probsOnly: true }).probs!;
    },
    norm3: (v) => layerNorm(g, p.at("norm3"), v, 1e-5),
    ff: (h) => {
      // GEGLU: proj gives [hidden | gate]; hidden * gelu(gate), then Linear.
      const proj = linear(g, p.at("ff.net.0.proj"), h);
      const [hid, gate] = g.opN("Split", [proj], 2, { axis: -1 });
      return linear(g, p.at("ff.net.2"), g.op("Mul", [hid!, gelu(g, gate!)]));
    },
  };
}

/** The standard forward of a BasicTransformerBlock on tokens x (B, n, C). */
export function layerForward(L: TransformerLayer, g: GraphBuilder, x: Value): Value {
  x = g.op("Add", [L.attn1(L.norm1(x)).out, x]);
  x = g.op("Add", [L.attn2(L.norm2(x)), x]);
  return g.op("Add", [L.ff(L.norm3(x)), x]);
}

/** Every layer on every token, then proj_out: the unpruned Transformer2DModel. */
export const denseRunner: TransformerRunner = (ctx) => {
  let x = ctx.tokens;
  for (const L of ctx.layers) x = layerForward(L, ctx.g, x);
  return ctx.projOut(x);
};

/**
 * One Transformer2DModel (GroupNorm, proj_in, BasicTransformerBlocks, proj_out, + residual) on x (B, C, H, W),
 * its layers run by `runner`.
 */
export function transformer2DModel(
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
    const layers = Array.from({ length: block.depth }, (_, l) => basicTransformerBlock(g, p.at(`transformer_blocks.${l}`), block, context));
    const out = runner({ g, block, tokens, height, width, layers, projOut: (t) => tokenLinear(p.at("proj_out"), t), tap, input: x, context });
    // (B, N, C) -> (B, C, H, W), plus the block's residual.
    const spatial = g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1] }), shape]);
    return g.op("Add", [spatial, x]);
  });
}
