/**
 * CLIPTextModel and CLIPTextModelWithProjection (transformers) as one ONNX graph, built from `config.json` and
 * named after the state dict (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
 *
 * Graph input: `input_ids` int64 (B, S), S symbolic and at most `max_position_embeddings`.
 * Outputs: `last_hidden_state` (B, S, H) (after final_layer_norm), `penultimate` (B, S, H) = hidden_states[-2]
 * (no final_layer_norm, what SD-XL feeds the U-Net), `pooler_output` (B, H) = last_hidden_state at the first
 * end-of-text token, and with the projection `text_embeds` (B, P) = text_projection(pooler_output).
 * Optionally every hidden state as `hidden_states.0` (embeddings) .. `hidden_states.<num_hidden_layers>`.
 *
 * Attention is causal only: no padding mask, exactly as the diffusers pipelines call the encoders.
 */
import { AtedmError } from "../errors.js";
import { GraphBuilder, type Value } from "../graph/builder.js";
import { dflt, int, LIMITS, num, obj, orNull, parseConfig, show, v as valibot } from "../io/config_schema.js";
import { asModelSource, type ModelSource } from "../io/model_source.js";
import { i64, type Runtime, type Session } from "../runtime/session.js";
import { activation, attention, layerNorm, linear } from "./layers.js";
import { Params, Weights } from "./weights.js";

export interface CLIPTextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  hidden_act: "quick_gelu" | "gelu";
  layer_norm_eps: number;
  /** The end-of-text id; 2 (old Hub configs) means "take argmax(ids)" as transformers does. */
  eos_token_id: number;
  projection_dim?: number;
  vocab_size: number;
}

const ACTIVATIONS = new Set(["quick_gelu", "gelu"]);

/**
 * The keys of config.json whose type and range are validated first (limits: src/io/config_schema.ts). Defaults are
 * transformers' CLIPTextConfig defaults (CLIP ViT-B/32 text tower); other keys are checked below or ignored.
 */
const CLIP_TEXT_SCHEMA = obj({
  hidden_size: dflt(int(LIMITS.hiddenSize), 512),
  intermediate_size: dflt(int(LIMITS.intermediateSize), 2048),
  num_attention_heads: dflt(int(LIMITS.heads), 8),
  num_hidden_layers: dflt(int(LIMITS.hiddenLayers), 12),
  max_position_embeddings: dflt(int(LIMITS.positions), 77),
  hidden_act: dflt(valibot.string("a string"), "quick_gelu"),
  layer_norm_eps: dflt(num(LIMITS.normEps, { low: true }), 1e-5),
  eos_token_id: dflt(int([0, LIMITS.vocabSize[1] - 1]), 2),
  projection_dim: orNull(int(LIMITS.embedDim)),
  vocab_size: dflt(int(LIMITS.vocabSize), 49408),
  model_type: dflt(valibot.string("a string"), "clip_text_model"),
});

/** Normalise a transformers CLIPTextConfig config.json, rejecting what this implementation does not cover. */
export function resolveCLIPTextConfig(raw: Record<string, unknown>, source = "text_encoder/config.json"): CLIPTextConfig {
  const c = parseConfig(CLIP_TEXT_SCHEMA, raw, source);
  const bad = (key: string, why: string): never => {
    throw new AtedmError(`${source}: ${key} = ${show(raw[key])} is not supported (${why})`);
  };
  const hidden = c.hidden_size;
  const heads = c.num_attention_heads;
  if (hidden % heads !== 0) bad("num_attention_heads", `hidden_size ${hidden} is not divisible by it`);
  const act = c.hidden_act;
  if (!ACTIVATIONS.has(act)) bad("hidden_act", "only quick_gelu and gelu (exact erf)");
  const eos = c.eos_token_id;
  const vocab = c.vocab_size;
  if (eos >= vocab) bad("eos_token_id", `must be below vocab_size ${vocab}`);
  if (c.model_type !== "clip_text_model") bad("model_type", "only clip_text_model");
  return {
    hidden_size: hidden,
    intermediate_size: c.intermediate_size,
    num_attention_heads: heads,
    num_hidden_layers: c.num_hidden_layers,
    max_position_embeddings: c.max_position_embeddings,
    hidden_act: act as "quick_gelu" | "gelu",
    layer_norm_eps: c.layer_norm_eps,
    eos_token_id: eos,
    projection_dim: c.projection_dim ?? undefined,
    vocab_size: vocab,
  };
}

export interface CLIPTextGraphOptions {
  /** Add `text_embeds` = text_projection(pooler_output) (CLIPTextModelWithProjection). */
  withProjection: boolean;
  /** Also output every hidden state as `hidden_states.0` .. `hidden_states.<num_hidden_layers>`. */
  allHiddenStates?: boolean;
}

/** float32's most negative value, the additive mask value transformers uses (torch.finfo(float32).min). */
const F32_MIN = -3.4028234663852886e38;

/** Build the text encoder graph. */
export function buildCLIPTextGraph(cfg: CLIPTextConfig, weights: Weights, options: CLIPTextGraphOptions): GraphBuilder {
  const g = new GraphBuilder(options.withProjection ? "clip_text_with_projection" : "clip_text");
  const H = cfg.hidden_size;
  const heads = cfg.num_attention_heads;
  const headDim = H / heads;
  const T = new Params(weights).at("text_model");
  const ids = g.input("input_ids", "int64", ["B", "S"]);

  // Embeddings: token_embedding(ids) + position_embedding(arange(S)).
  const seq = g.op("Gather", [g.op("Shape", [ids]), g.constant(1, "int64")], { axis: 0 }); // int64 scalar S
  const tok = g.op("Gather", [T.get(g, "embeddings.token_embedding.weight", [cfg.vocab_size, H]), ids], { axis: 0 });
  const posTable = T.get(g, "embeddings.position_embedding.weight", [cfg.max_position_embeddings, H]);
  const pos = g.op("Slice", [posTable, g.ints([0]), g.op("Unsqueeze", [seq, g.ints([0])]), g.ints([0])]);
  let x = g.scope("embeddings", () => g.op("Add", [tok, pos]));

  // Causal mask (1, 1, S, S): 0 where key <= query, float32 min above the diagonal.
  const mask = g.scope("causal_mask", () => {
    const r = g.op("Range", [g.constant(0, "int64"), seq, g.constant(1, "int64")]);
    const future = g.op("Greater", [g.op("Unsqueeze", [r, g.ints([0])]), g.op("Unsqueeze", [r, g.ints([1])])]);
    const m = g.op("Where", [future, g.constant(F32_MIN), g.constant(0)]);
    return g.op("Unsqueeze", [m, g.ints([0, 1])]);
  });

  const hidden: Value[] = [x];
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const L = T.at(`encoder.layers.${i}`);
    x = g.scope(`layers.${i}`, () => {
      const a = L.at("self_attn");
      for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) a.at(n).get(g, "weight", [H, H]); // shape checks
      const h1 = layerNorm(g, L.at("layer_norm1"), x, cfg.layer_norm_eps);
      const q = linear(g, a.at("q_proj"), h1);
      const k = linear(g, a.at("k_proj"), h1);
      const v = linear(g, a.at("v_proj"), h1);
      const att = attention(g, q, k, v, heads, headDim, { mask }).out;
      let y = g.op("Add", [x, linear(g, a.at("out_proj"), att)]);
      const m = L.at("mlp");
      m.at("fc1").get(g, "weight", [cfg.intermediate_size, H]);
      m.at("fc2").get(g, "weight", [H, cfg.intermediate_size]);
      const h2 = layerNorm(g, L.at("layer_norm2"), y, cfg.layer_norm_eps);
      const fc1 = linear(g, m.at("fc1"), h2);
      y = g.op("Add", [y, linear(g, m.at("fc2"), activation(g, cfg.hidden_act, fc1))]);
      return y;
    });
    hidden.push(x);
  }

  const last = layerNorm(g, T.at("final_layer_norm"), x, cfg.layer_norm_eps);

  // Pooled: the first end-of-text position per row (transformers: argmax(ids) when eos_token_id == 2).
  const pooled = g.scope("pooler", () => {
    const hit =
      cfg.eos_token_id === 2
        ? g.op("Cast", [ids], { to: 1 })
        : g.op("Cast", [g.op("Equal", [ids, g.constant(cfg.eos_token_id, "int64")])], { to: 1 });
    const index = g.op("ArgMax", [hit], { axis: 1, keepdims: 1, select_last_index: 0 }); // (B, 1) int64
    return g.op("GatherND", [last, index], { batch_dims: 1 }); // (B, H)
  });

  g.output(last, "last_hidden_state", "float32", ["B", "S", H]);
  g.output(hidden[hidden.length - 2]!, "penultimate", "float32", ["B", "S", H]);
  g.output(pooled, "pooler_output", "float32", ["B", H]);
  if (options.withProjection) {
    const P = cfg.projection_dim ?? weights.shape("text_projection.weight")[0]!;
    new Params(weights).at("text_projection").get(g, "weight", [P, H]);
    g.output(linear(g, new Params(weights).at("text_projection"), pooled, false), "text_embeds", "float32", ["B", P]);
  }
  if (options.allHiddenStates) {
    hidden.forEach((h, i) => g.output(h, `hidden_states.${i}`, "float32", ["B", "S", H]));
  }
  return g;
}

/** Whether a component is CLIPTextModelWithProjection (by its config's class or its weights). */
export function hasProjection(raw: Record<string, unknown>, weights: Weights): boolean {
  const arch = raw.architectures;
  if (Array.isArray(arch) && arch.includes("CLIPTextModelWithProjection")) return true;
  return weights.has("text_projection.weight");
}

export interface HostOutput {
  data: Float32Array;
  dims: number[];
}

export interface CLIPTextOutputs {
  lastHiddenState: HostOutput;
  penultimate: HostOutput;
  pooled: HostOutput;
  textEmbeds?: HostOutput;
}

/** A loaded text encoder component (`text_encoder` or `text_encoder_2`) with its ONNX Runtime session. */
export class CLIPTextEncoder {
  private constructor(
    readonly config: CLIPTextConfig,
    readonly withProjection: boolean,
    private readonly session: Session,
  ) {}

  /** Load a text encoder component of a model (a diffusers folder path, or any `ModelSource`). */
  static async load(model: string | ModelSource, component: "text_encoder" | "text_encoder_2", runtime: Runtime): Promise<CLIPTextEncoder> {
    const src = asModelSource(model);
    const raw = src.config(component);
    const cfg = resolveCLIPTextConfig(raw, src.configLabel(component));
    const weights = new Weights(src.weights(component));
    const withProjection = hasProjection(raw, weights);
    if (withProjection && !weights.has("text_projection.weight")) {
      throw new AtedmError(`${weights.store.source}: config says CLIPTextModelWithProjection but text_projection.weight is missing`);
    }
    const graph = buildCLIPTextGraph(cfg, weights, { withProjection });
    return new CLIPTextEncoder(cfg, withProjection, await runtime.session(graph));
  }

  /** Encode token ids: rows of equal length, or a flat (batch, S) row-major array with `batch` rows. */
  async encode(ids: number[][] | BigInt64Array, batch?: number): Promise<CLIPTextOutputs> {
    let flat: BigInt64Array;
    let b: number;
    if (ids instanceof BigInt64Array) {
      b = batch ?? 1;
      if (!Number.isInteger(b) || b < 1 || ids.length % b !== 0) {
        throw new AtedmError(`text encoder: ${ids.length} token ids cannot be split into ${b} rows`);
      }
      flat = ids;
    } else {
      b = ids.length;
      if (b === 0) throw new AtedmError("text encoder: no token id rows given");
      const len = ids[0]!.length;
      if (ids.some((r) => r.length !== len)) throw new AtedmError("text encoder: token id rows differ in length");
      flat = BigInt64Array.from(ids.flat(), (x) => BigInt(x));
    }
    const s = flat.length / b;
    if (s < 1 || s > this.config.max_position_embeddings) {
      throw new AtedmError(`text encoder: ${s} tokens per row, expected 1..${this.config.max_position_embeddings}`);
    }
    for (const id of flat) {
      if (id < 0n || id >= BigInt(this.config.vocab_size)) {
        throw new AtedmError(`text encoder: token id ${id} is outside the vocabulary (0..${this.config.vocab_size - 1})`);
      }
    }
    const out = await this.session.run({ input_ids: i64(flat, [b, s]) });
    const host = (name: string): HostOutput => {
      const t = out[name]!;
      return { data: t.data as Float32Array, dims: [...t.dims] };
    };
    return {
      lastHiddenState: host("last_hidden_state"),
      penultimate: host("penultimate"),
      pooled: host("pooler_output"),
      ...(this.withProjection ? { textEmbeds: host("text_embeds") } : {}),
    };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * The tensors `buildCLIPTextGraph` reads for `cfg`, name -> shape: embeddings, every encoder layer, the final
 * LayerNorm and, with the projection, `text_projection.weight` [P, H] (P = `projectionDim`, default the config's
 * projection_dim; the caller passes the checkpoint's when the config has none, as the graph builder does).
 */
export function clipTextStateDictShapes(
  cfg: CLIPTextConfig,
  options: { withProjection: boolean; projectionDim?: number } = { withProjection: false },
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const H = cfg.hidden_size;
  const I = cfg.intermediate_size;
  const linear = (p: string, o: number, i: number) => {
    out.set(`${p}.weight`, [o, i]);
    out.set(`${p}.bias`, [o]);
  };
  const norm = (p: string) => {
    out.set(`${p}.weight`, [H]);
    out.set(`${p}.bias`, [H]);
  };
  out.set("text_model.embeddings.token_embedding.weight", [cfg.vocab_size, H]);
  out.set("text_model.embeddings.position_embedding.weight", [cfg.max_position_embeddings, H]);
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const L = `text_model.encoder.layers.${i}`;
    norm(`${L}.layer_norm1`);
    for (const p of ["q_proj", "k_proj", "v_proj", "out_proj"]) linear(`${L}.self_attn.${p}`, H, H);
    norm(`${L}.layer_norm2`);
    linear(`${L}.mlp.fc1`, I, H);
    linear(`${L}.mlp.fc2`, H, I);
  }
  norm("text_model.final_layer_norm");
  if (options.withProjection) {
    const P = options.projectionDim ?? cfg.projection_dim;
    if (P !== undefined) out.set("text_projection.weight", [P, H]);
  }
  return out;
}
