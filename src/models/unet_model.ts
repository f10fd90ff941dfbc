/**
 * A loaded U-Net: config, weights and the ONNX sessions that run it, with an optional token-pruning method.
 *
 * Which attention blocks are pruned can change from step to step (DSAP), so the session is built per set of
 * pruned blocks and cached; ratios and kept-token counts are graph inputs, so nothing is rebuilt when only
 * the ratio changes. Re-patching (`unet.pruning = ...`) reuses the loaded weights.
 */
import { AtedmError } from "../errors.js";
import { asModelSource, type ModelSource } from "../io/model_source.js";
import type { PruningMethod, StepInfo } from "./pruning_hook.js";
import { f32, type Runtime, type Session, type Tensor } from "../runtime/session.js";
import { buildUNetGraph } from "./unet.js";
import { attentionBlocks, blockTokens, resolveUNetConfig, type AttentionBlockInfo, type UNetConfig } from "./unet_structure.js";
import { unetStateDictShapes } from "./unet_weights.js";
import { checkStateDict, Weights } from "./weights.js";

export interface UNetInputs {
  /** (B, C, h, w) */
  sample: Float32Array;
  sampleDims: readonly number[];
  /** (B) */
  timestep: Float32Array;
  /** (B, L, D) */
  encoderHiddenStates: Float32Array;
  encoderDims: readonly number[];
  /** SD-XL: (B, P) pooled text embeddings and (B, 6) size/crop ids. */
  textEmbeds?: Float32Array;
  timeIds?: Float32Array;
}

export interface UNetOutput {
  sample: Float32Array;
  dims: number[];
  /** Ratio used per attention block at this step (0 = unpruned). */
  ratios: Record<string, number>;
  /** Tokens through the later layers of each block (N when unpruned). */
  keptTokens: Record<string, number>;
  /** Extra outputs the pruning method exposed when `withMasks` (kept indices, scores per block). */
  extras: Record<string, Tensor>;
}

export class UNet2DConditionModel {
  readonly blocks: AttentionBlockInfo[];
  /** The installed pruning method, or null for the unpruned model. */
  pruning: PruningMethod | null = null;
  /**
   * How many methods' sessions stay built when the installed method changes (least recently used first out).
   * 1 (the default) releases the previous method's sessions at once; `atedm eval` keeps one per method it
   * compares, so that methods can take turns image by image without rebuilding graphs.
   */
  keepSessionsOf = 1;
  /** Sessions per method (null: unpruned), each keyed by its set of pruned blocks; most recently used last. */
  private readonly sessions = new Map<PruningMethod | null, Map<string, Promise<Session>>>();

  /**
   * Checks the weights against the config before anything is built: every parameter `unetStateDictShapes(config)`
   * lists must be present, float (F32, F16, BF16, F64) and of its shape; other tensors are ignored. `source` is the
   * component folder, for messages (its config.json is named when the config explains a mismatch).
   */
  constructor(
    readonly config: UNetConfig,
    readonly weights: Weights,
    readonly runtime: Runtime,
    /** Where the config came from (`DIR/unet/config.json`), for messages. */
    readonly source = "unet/config.json",
  ) {
    this.blocks = attentionBlocks(config);
    const cad = config.cross_attention_dim;
    checkStateDict(weights.store, unetStateDictShapes(config), (m) =>
      m.kind === "shape" && /\.attn2\.to_[kv]\.weight$/.test(m.name) && m.found?.[1] !== cad
        ? `${source} has cross_attention_dim ${cad}, the checkpoint ${m.found?.[1]}`
        : undefined,
    );
  }

  /** Load the `unet` component of a model (a diffusers folder path, or any `ModelSource`). */
  static load(model: string | ModelSource, runtime: Runtime): UNet2DConditionModel {
    const src = asModelSource(model);
    const label = src.configLabel("unet");
    const cfg = resolveUNetConfig(src.config("unet"), label);
    return new UNet2DConditionModel(cfg, new Weights(src.weights("unet")), runtime, label);
  }

  get isXL(): boolean {
    return this.config.addition_embed_type === "text_time";
  }

  /** Ratio of every attention block at a step under the installed method. */
  ratios(at: StepInfo): Record<string, number> {
    const r: Record<string, number> = {};
    for (const b of this.blocks) r[b.path] = this.pruning ? this.pruning.ratio(b, at) : 0;
    return r;
  }

  /** The session cache of the installed method, made most recently used; older methods' beyond keepSessionsOf are released. */
  private methodSessions(): Map<string, Promise<Session>> {
    const method = this.pruning;
    const own = this.sessions.get(method) ?? new Map<string, Promise<Session>>();
    this.sessions.delete(method);
    this.sessions.set(method, own);
    for (const [m, set] of this.sessions) {
      if (this.sessions.size <= Math.max(1, this.keepSessionsOf)) break;
      // A method's graphs are no longer needed; release their memory.
      for (const s of set.values()) void s.then((x) => x.release()).catch(() => undefined);
      this.sessions.delete(m);
    }
    return own;
  }

  private session(pruned: AttentionBlockInfo[], withMasks: boolean): Promise<Session> {
    const sessions = this.methodSessions();
    const key = `${pruned.map((b) => b.path).join(",")}|${withMasks}`;
    let s = sessions.get(key);
    if (!s) {
      const method = this.pruning;
      const set = new Set(pruned.map((b) => b.path));
      const graph = buildUNetGraph(this.config, this.weights, {
        runners: (b) => (method && set.has(b.path) ? method.runner(b) : undefined),
        extraInputs: method ? pruned.flatMap((b) => method.inputs(b)) : [],
        taps: method && withMasks ? pruned.flatMap((b) => method.outputs(b)) : [],
      });
      s = this.runtime.session(graph);
      sessions.set(key, s);
    }
    return s;
  }

  /** One U-Net call at step `at` (which decides the pruning ratios). */
  async forward(inputs: UNetInputs, at: StepInfo = { step: 0, steps: 1 }, withMasks = false): Promise<UNetOutput> {
    const [batch, channels, height, width] = inputs.sampleDims as [number, number, number, number];
    if (channels !== this.config.in_channels) {
      throw new AtedmError(`${this.source}: sample has ${channels} channels, the model expects ${this.config.in_channels}`);
    }
    const ratios = this.ratios(at);
    const pruned = this.blocks.filter((b) => ratios[b.path]! > 0);
    const latent = { height, width };
    const feeds: Record<string, Tensor> = {
      sample: f32(inputs.sample, inputs.sampleDims),
      timestep: f32(inputs.timestep, [batch]),
      encoder_hidden_states: f32(inputs.encoderHiddenStates, inputs.encoderDims),
    };
    if (this.isXL) {
      if (!inputs.textEmbeds || !inputs.timeIds) throw new AtedmError(`${this.source}: SD-XL U-Net needs text_embeds and time_ids`);
      feeds.text_embeds = f32(inputs.textEmbeds, [batch, inputs.textEmbeds.length / batch]);
      feeds.time_ids = f32(inputs.timeIds, [batch, 6]);
    }
    const keptTokens: Record<string, number> = {};
    for (const b of this.blocks) {
      const r = ratios[b.path]!;
      const n = blockTokens(latent, b);
      keptTokens[b.path] = r > 0 && this.pruning ? this.pruning.keptTokens(b, r, latent) : n;
      if (r > 0 && this.pruning) Object.assign(feeds, this.pruning.feeds(b, r, latent, batch, at));
    }
    const session = await this.session(pruned, withMasks);
    const out = await session.run(feeds);
    const sample = out.out_sample!;
    const extras: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(out)) if (k !== "out_sample") extras[k] = v;
    return { sample: sample.data as Float32Array, dims: [...sample.dims], ratios, keptTokens, extras };
  }

  async release(): Promise<void> {
    for (const set of this.sessions.values()) for (const s of set.values()) await (await s).release();
    this.sessions.clear();
  }
}
