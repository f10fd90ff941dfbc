/**
 * Text-to-image with classifier-free guidance, composing the components the way diffusers'
 * StableDiffusionPipeline / StableDiffusionXLPipeline do. Pixel-space models (no `vae` in model_index.json,
 * U-Net with 3 input channels) are supported too: the final sample is the image.
 *
 *   const pipe = await loadPipeline("models/shapes");
 *   const { image } = await pipe.generate({ prompt: "a red circle at the top left on a white background", seed: 1 });
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { readJson, type ModelIndex } from "../io/diffusers.js";
import { type ModelSource, type OpenModelOptions, openModel, type TokenizerFiles } from "../io/model_source.js";
import { CLIPTextEncoder, clipTextStateDictShapes, resolveCLIPTextConfig, type CLIPTextConfig } from "../models/clip_text.js";
import { CLIPTokenizer } from "../models/clip_tokenizer.js";
import { UNet2DConditionModel, type UNetOutput } from "../models/unet_model.js";
import { unetStateDictShapes } from "../models/unet_weights.js";
import { resolveVAEConfig, toImageNHWC, VAEDecoder, vaeDecoderStateDictShapes } from "../models/vae.js";
import { checkStateDict, float32Bytes } from "../models/weights.js";
import { Runtime, type RuntimeOptions } from "../runtime/session.js";
import { parseSchedulerConfig, type Scheduler, type SchedulerName, schedulerForConfig } from "../schedulers/index.js";
import { NormalStream } from "../util/numerics.js";
import { methodFlops, unetFlops } from "../metrics/flops.js";
import { checkGenerationMemory, estimateGenerationMemory, type GenerationMemoryEstimate } from "../metrics/memory.js";
import { appendCoordChannels, COORD_CHANNELS } from "./coord_channels.js";
import { checkSeed } from "./random.js";

export interface GenerateOptions {
  prompt: string;
  /** Negative prompt. Default: none (SD encodes ""; SD-XL uses zeros when force_zeros_for_empty_prompt). */
  negativePrompt?: string | null;
  /** Denoising steps. Default 20. */
  steps?: number;
  /** Classifier-free guidance scale; <= 1 disables guidance. Default: the model folder's `atedm.json` "guidance",
   * else 7.5 (SD) / 5.0 (SD-XL). */
  guidance?: number;
  /** Seed of the initial noise (ignored when `latents` is given). Default 0. */
  seed?: number;
  /** Image size in pixels. Default: the U-Net's sample_size times the VAE scale factor. */
  height?: number;
  width?: number;
  /**
   * Sampler (`SCHEDULER_NAMES`). Default: the class the model's scheduler config names, with its settings, as
   * diffusers' `from_pretrained`; a name here keeps the config's betas, prediction type and spacing (`from_config`).
   */
  scheduler?: SchedulerName;
  /** Initial latents [1, C, h, w] instead of seeded noise (the pipeline multiplies them by init_noise_sigma). */
  latents?: Float32Array;
  /** SD-XL micro-conditioning. Defaults: (height, width), (0, 0), (height, width). */
  originalSize?: [number, number];
  cropsCoordsTopLeft?: [number, number];
  targetSize?: [number, number];
  /** Called after each step. */
  onStep?: (info: StepReport) => void;
  /** Ask the pruning method for its masks/scores at each step (passed to onStep). */
  withMasks?: boolean;
  /**
   * Refuse, before anything big is allocated, a generation whose estimated peak memory (src/metrics/memory.ts)
   * exceeds this process's resident memory plus the system's available memory. Default true.
   */
  checkMemory?: boolean;
}

export interface StepReport {
  step: number;
  steps: number;
  seconds: number;
  unet: UNetOutput;
}

export interface GenerateResult {
  /** [1, H, W, 3] float32 in [0, 1] (diffusers output_type "np"). */
  image: Float32Array;
  imageDims: number[];
  /** Final latents [1, C, h, w] before decoding. */
  latents: Float32Array;
  latentDims: number[];
  /** Seconds per U-Net step (scheduler included), in order. */
  stepSeconds: number[];
  secondsTotal: number;
  timesteps: number[];
  /** The sampler that ran: atedm's name and the diffusers class it mirrors. */
  scheduler: { name: SchedulerName; className: string };
  /** Per step: ratio and kept tokens of every attention block. */
  stepInfo: Array<Pick<UNetOutput, "ratios" | "keptTokens">>;
  /** Whether the prompt (or negative prompt) was longer than the tokenizer's limit and got truncated. */
  truncated: boolean;
}

/**
 * `threads`, and `verbose` (ONNX Runtime's own log lines on stderr; off by default), for the Runtime; `variant`
 * and `config` for opening the model (src/io/model_source.ts).
 */
export interface PipelineOptions extends RuntimeOptions, OpenModelOptions {}

/** A model folder's optional `atedm.json`: generation defaults for atedm (diffusers ignores the file). */
export interface ModelDefaults {
  /** Recommended classifier-free guidance scale (a finite number >= 0; <= 1 disables guidance). */
  guidance?: number;
  /** Default number of denoising steps of `generate` (an integer in 1..1000). */
  steps?: number;
  /** 2: the U-Net reads the sample plus CoordConv column/row maps, which the pipeline appends (coord_channels.ts). */
  coord_channels?: number;
}

/** The keys atedm.json may have besides comments (keys starting with `_`). */
const MODEL_DEFAULT_KEYS = ["guidance", "steps", "coord_channels"];
const MAX_DEFAULT_STEPS = 1000;

/**
 * Read and validate a model folder's optional `atedm.json`: a JSON object whose keys are those of `ModelDefaults`
 * or comments (`_comment`, any key starting with `_`); each bad value is one line naming the file and the key.
 */
export function loadModelDefaults(dir: string): ModelDefaults {
  const file = join(dir, "atedm.json");
  if (!existsSync(file)) return {};
  const d = readJson<Record<string, unknown>>(file) as unknown;
  if (d === null || typeof d !== "object" || Array.isArray(d)) {
    throw new AtedmError(`${file}: expected a JSON object of generation defaults, got ${Array.isArray(d) ? "an array" : JSON.stringify(d)}`);
  }
  const o = d as Record<string, unknown>;
  const got = (key: string) => `got ${JSON.stringify(o[key])?.slice(0, 60)}`;
  for (const key of Object.keys(o)) {
    if (!key.startsWith("_") && !MODEL_DEFAULT_KEYS.includes(key)) {
      throw new AtedmError(`${file}: unknown key "${key.slice(0, 60)}" (known: ${MODEL_DEFAULT_KEYS.join(", ")}; keys starting with _ are comments)`);
    }
  }
  if (o.guidance !== undefined && !(typeof o.guidance === "number" && Number.isFinite(o.guidance) && o.guidance >= 0)) {
    throw new AtedmError(`${file}: "guidance" must be a finite number >= 0, ${got("guidance")}`);
  }
  if (o.steps !== undefined && !(Number.isInteger(o.steps) && (o.steps as number) >= 1 && (o.steps as number) <= MAX_DEFAULT_STEPS)) {
    throw new AtedmError(`${file}: "steps" must be an integer in 1..${MAX_DEFAULT_STEPS}, ${got("steps")}`);
  }
  if (o.coord_channels !== undefined && o.coord_channels !== 0 && o.coord_channels !== COORD_CHANNELS) {
    throw new AtedmError(`${file}: "coord_channels" must be 0 or ${COORD_CHANNELS}, ${got("coord_channels")}`);
  }
  return o as ModelDefaults;
}

/**
 * Check a text encoder's weights against its config.json (names, shapes, dtypes of every tensor the graph reads)
 * before its session is built; returns the config and the float32 bytes of those weights.
 */
function checkTextEncoderWeights(
  model: ModelSource,
  component: "text_encoder" | "text_encoder_2",
): { config: CLIPTextConfig; projectionDim?: number; bytes: number } {
  const raw = model.config(component);
  const config = resolveCLIPTextConfig(raw, model.configLabel(component));
  const store = model.weights(component);
  try {
    const arch = raw.architectures;
    const withProjection = (Array.isArray(arch) && arch.includes("CLIPTextModelWithProjection")) || store.has("text_projection.weight");
    const projectionDim = config.projection_dim ?? (store.has("text_projection.weight") ? store.info("text_projection.weight").shape[0] : undefined);
    const expected = clipTextStateDictShapes(config, { withProjection, projectionDim });
    checkStateDict(store, expected);
    return { config, projectionDim: withProjection ? projectionDim : undefined, bytes: float32Bytes(expected) };
  } finally {
    store.close();
  }
}

const loadTokenizer = (t: TokenizerFiles) => CLIPTokenizer.fromPretrained(t.dir, { padToken: t.padToken });

/** The same for the VAE decoder. */
function checkVaeWeights(model: ModelSource): { latentChannels: number; bytes: number } {
  const config = resolveVAEConfig(model.config("vae"), model.configLabel("vae"));
  const store = model.weights("vae");
  try {
    const expected = vaeDecoderStateDictShapes(config, (n) => (store.has(n) ? store.info(n).shape : undefined));
    checkStateDict(store, expected);
    return { latentChannels: config.latent_channels, bytes: float32Bytes(expected) };
  } finally {
    store.close();
  }
}

export class TextToImagePipeline {
  private constructor(
    readonly dir: string,
    readonly index: ModelIndex,
    readonly runtime: Runtime,
    readonly tokenizer: CLIPTokenizer,
    readonly textEncoder: CLIPTextEncoder,
    readonly tokenizer2: CLIPTokenizer | null,
    readonly textEncoder2: CLIPTextEncoder | null,
    readonly unet: UNet2DConditionModel,
    readonly vae: VAEDecoder | null,
    readonly schedulerConfig: Record<string, unknown>,
    /** Generation defaults a model folder may recommend in an optional `atedm.json` (e.g. `{ "guidance": 4 }`). */
    readonly recommended: ModelDefaults = {},
    /** float32 bytes of the text encoders' and the VAE decoder's weights (for the memory estimate). */
    private readonly otherWeightBytes = 0,
  ) {}

  /** Input channels the pipeline appends to the sample (CoordConv maps, `coord_channels` in atedm.json), or 0. */
  get coordChannels(): number {
    return this.recommended.coord_channels ?? 0;
  }

  /** Channels of the denoised sample (latent, or pixels for a pixel-space model). */
  get sampleChannels(): number {
    return this.unet.config.in_channels - this.coordChannels;
  }

  /**
   * Load a model: a diffusers folder or a single-file checkpoint path (`options.variant`, `options.config` as in
   * `openModel`), or an opened `ModelSource`.
   */
  static async load(model: string | ModelSource, options: PipelineOptions = {}): Promise<TextToImagePipeline> {
    const source = typeof model === "string" ? openModel(model, options) : model;
    const dir = source.path;
    const index = source.index;
    // Everything is validated before the first ONNX session is built: atedm.json, the configs, every weight's
    // name, dtype and shape against its config, and the components against each other.
    const recommended = source.defaultsDir ? loadModelDefaults(source.defaultsDir) : {};
    const runtime = new Runtime(options);
    const unet = UNet2DConditionModel.load(source, runtime);
    const xl = unet.isXL;
    const hasTe2 = source.has("text_encoder_2");
    if (xl && !hasTe2) throw new AtedmError(`${dir}: SD-XL U-Net but no text_encoder_2 in model_index.json`);
    const te1 = checkTextEncoderWeights(source, "text_encoder");
    const te2 = hasTe2 ? checkTextEncoderWeights(source, "text_encoder_2") : null;
    const vaeInfo = source.has("vae") ? checkVaeWeights(source) : null;
    const cad = unet.config.cross_attention_dim;
    const unetConfig = source.configLabel("unet");
    if (xl) {
      const hidden = te1.config.hidden_size + te2!.config.hidden_size;
      if (hidden !== cad) {
        throw new AtedmError(
          `${unetConfig}: cross_attention_dim is ${cad}, but the text encoders give ${te1.config.hidden_size} + ${te2!.config.hidden_size} = ${hidden} features`,
        );
      }
      const ucfg = unet.config;
      const pooled = te2!.projectionDim;
      const expected = ucfg.projection_class_embeddings_input_dim;
      if (pooled !== undefined && ucfg.addition_time_embed_dim && expected !== pooled + 6 * ucfg.addition_time_embed_dim) {
        throw new AtedmError(
          `${unetConfig}: projection_class_embeddings_input_dim is ${expected}, but text_encoder_2's projection (${pooled}) + 6 x addition_time_embed_dim ` +
            `(${ucfg.addition_time_embed_dim}) = ${pooled + 6 * ucfg.addition_time_embed_dim}`,
        );
      }
    } else if (te1.config.hidden_size !== cad) {
      throw new AtedmError(
        `${unetConfig}: cross_attention_dim is ${cad}, but ${source.configLabel("text_encoder")} has hidden_size ${te1.config.hidden_size}`,
      );
    }
    const coord = recommended.coord_channels ?? 0;
    const channels = unet.config.in_channels - coord;
    if (coord && channels !== unet.config.out_channels) {
      throw new AtedmError(
        `${join(dir, "atedm.json")}: coord_channels ${coord} needs a U-Net with in_channels = out_channels + ${coord}, ` +
          `got ${unet.config.in_channels} and ${unet.config.out_channels}`,
      );
    }
    if (!vaeInfo && channels !== 3) {
      throw new AtedmError(`${dir}: no vae, but the U-Net has ${channels} input channels (pixel-space models have 3)`);
    }
    if (vaeInfo && vaeInfo.latentChannels !== unet.config.out_channels) {
      throw new AtedmError(
        `${source.configLabel("vae")}: latent_channels is ${vaeInfo.latentChannels}, but the U-Net (${unetConfig}) has out_channels ${unet.config.out_channels}`,
      );
    }
    const sc = source.schedulerConfig();
    const schedulerConfig = parseSchedulerConfig(sc.text, sc.source);
    const tokenizer = loadTokenizer(source.tokenizer("tokenizer"));
    const tokenizer2 = hasTe2 ? loadTokenizer(source.tokenizer("tokenizer_2")) : null;
    const textEncoder = await CLIPTextEncoder.load(source, "text_encoder", runtime);
    const textEncoder2 = hasTe2 ? await CLIPTextEncoder.load(source, "text_encoder_2", runtime) : null;
    const vae = vaeInfo ? await VAEDecoder.load(source, runtime) : null;
    const otherBytes = te1.bytes + (te2?.bytes ?? 0) + (vaeInfo?.bytes ?? 0);
    return new TextToImagePipeline(
      dir,
      index,
      runtime,
      tokenizer,
      textEncoder,
      tokenizer2,
      textEncoder2,
      unet,
      vae,
      schedulerConfig,
      recommended,
      otherBytes,
    );
  }

  get isXL(): boolean {
    return this.unet.isXL;
  }

  /**
   * The scheduler a generation uses: `name`, or the model's own. diffusers' `from_pretrained` builds the class that
   * model_index.json names for `scheduler`, so that name wins over the config's `_class_name` (they agree on the Hub).
   */
  scheduler(name?: SchedulerName): { name: SchedulerName; scheduler: Scheduler } {
    const entry = this.index.scheduler;
    const className = Array.isArray(entry) && typeof entry[1] === "string" ? entry[1] : undefined;
    return schedulerForConfig(className ? { ...this.schedulerConfig, _class_name: className } : this.schedulerConfig, name);
  }

  /** Pixels per latent pixel: 2^(VAE levels - 1), or 1 for pixel-space models. */
  get vaeScaleFactor(): number {
    return this.vae ? 2 ** (this.vae.config.block_out_channels.length - 1) : 1;
  }

  get defaultGuidance(): number {
    return this.recommended.guidance ?? (this.isXL ? 5.0 : 7.5);
  }

  /**
   * Prompt embeddings for [negative, positive] (CFG order) or [positive] without guidance.
   * Returns encoder_hidden_states (B, 77, D) and, for SD-XL, pooled text embeddings (B, P).
   */
  async encodePrompt(prompt: string, negative: string | null | undefined, cfg: boolean) {
    let truncated = false;
    const encode = async (text: string) => {
      const t1 = this.tokenizer.encode(text);
      truncated ||= t1.truncated;
      const o1 = await this.textEncoder.encode([t1.ids]);
      if (!this.isXL) return { hidden: o1.lastHiddenState, pooled: null, ids: [t1.ids] };
      const t2 = this.tokenizer2!.encode(text);
      truncated ||= t2.truncated;
      const o2 = await this.textEncoder2!.encode([t2.ids]);
      return { hidden: concatFeatures(o1.penultimate, o2.penultimate), pooled: o2.textEmbeds!, ids: [t1.ids, t2.ids] };
    };
    const pos = await encode(prompt);
    if (!cfg) return { hidden: pos.hidden, pooled: pos.pooled, truncated, ids: pos.ids };
    let neg: { hidden: { data: Float32Array; dims: number[] }; pooled: { data: Float32Array; dims: number[] } | null };
    const zeros = negative == null && this.isXL && this.index.force_zeros_for_empty_prompt === true;
    if (zeros) {
      neg = {
        hidden: { data: new Float32Array(pos.hidden.data.length), dims: pos.hidden.dims },
        pooled: { data: new Float32Array(pos.pooled!.data.length), dims: pos.pooled!.dims },
      };
    } else {
      neg = await encode(negative ?? "");
    }
    return {
      hidden: concatBatch(neg.hidden, pos.hidden),
      pooled: pos.pooled ? concatBatch(neg.pooled!, pos.pooled) : null,
      truncated,
      ids: pos.ids,
    };
  }

  /**
   * The estimated peak memory of a generation at `height` x `width` pixels with `steps` steps under the installed
   * pruning method (src/metrics/memory.ts): the U-Net's weights and activations once per ONNX session it builds (one
   * per distinct set of blocks pruned at some step, e.g. two with DSAP), the blocks pruned at some step with their
   * explicit attention maps, the other components' weights, the VAE decoder.
   */
  estimateMemory(height: number, width: number, options: { steps: number; guidance?: number }): GenerationMemoryEstimate {
    const guidance = options.guidance ?? this.defaultGuidance;
    const blocks = this.unet.blocks;
    const sets = new Set<string>();
    const pruned = new Set<string>();
    for (let step = 0; step < options.steps; step++) {
      const r = this.unet.ratios({ step, steps: options.steps });
      const set = blocks.filter((b) => r[b.path]! > 0).map((b) => b.path);
      sets.add(set.join(","));
      for (const p of set) pruned.add(p);
    }
    const sessions = Math.max(1, sets.size);
    const expected = unetStateDictShapes(this.unet.config);
    const store = this.unet.weights.store;
    // What one session holds, and what building it adds (src/metrics/memory.ts): embedded weights 6x their float32
    // bytes; external ones once, plus the file's F16 / BF16 bytes, read before their cast to float32 is folded.
    let perSession = float32Bytes(expected);
    let build = 0;
    if (this.unet.weights.external) {
      for (const name of expected.keys()) if (store.info(name).dtype !== "F32") build += store.info(name).byteLength;
    } else {
      perSession *= 6;
    }
    return estimateGenerationMemory({
      unet: this.unet.config,
      vae: this.vae?.config ?? null,
      height,
      width,
      batch: guidance > 1 ? 2 : 1,
      pruning: [...pruned],
      weights: { unet: perSession, unetBuild: build, other: this.otherWeightBytes },
      unetSessions: sessions,
      textLength: this.tokenizer.modelMaxLength,
    });
  }

  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const steps = options.steps ?? this.recommended.steps ?? 20;
    if (!Number.isInteger(steps) || steps < 1) throw new AtedmError(`steps must be a positive integer, got ${steps}`);
    const guidance = options.guidance ?? this.defaultGuidance;
    const cfg = guidance > 1;
    const f = this.vaeScaleFactor;
    const height = options.height ?? this.unet.config.sample_size * f;
    const width = options.width ?? this.unet.config.sample_size * f;
    for (const [name, v] of [
      ["height", height],
      ["width", width],
    ] as const) {
      if (!Number.isInteger(v) || v < f || v % f !== 0) throw new AtedmError(`--${name} must be a positive multiple of ${f}, got ${v}`);
    }
    const { name: schedulerName, scheduler } = this.scheduler(options.scheduler);
    scheduler.setTimesteps(steps);
    const T = scheduler.timesteps.length;
    // Before anything big is allocated (latents, sessions): would the whole generation fit in memory?
    if (options.checkMemory ?? true) {
      checkGenerationMemory(this.estimateMemory(height, width, { steps: T, guidance }), `--height ${height} --width ${width}`);
    }

    const channels = this.sampleChannels;
    const latentDims = [1, channels, height / f, width / f];
    const n = latentDims.reduce((a, b) => a * b, 1);
    let x: Float32Array;
    // One seeded stream gives the initial noise and then, for ancestral samplers, each step's noise (as diffusers
    // draws both from one torch generator).
    const seed = options.seed ?? 0;
    checkSeed(seed);
    const noise = new NormalStream(seed);
    if (options.latents) {
      if (options.latents.length !== n) {
        throw new AtedmError(`latents have ${options.latents.length} values, expected shape [${latentDims}] (${n})`);
      }
      x = options.latents.slice();
    } else {
      x = noise.fill(new Float32Array(n));
    }

    const sigma0 = scheduler.initNoiseSigma;
    for (let i = 0; i < n; i++) x[i] = Math.fround(x[i]! * sigma0);

    const text = await this.encodePrompt(options.prompt, options.negativePrompt, cfg);
    const batch = cfg ? 2 : 1;
    let timeIds: Float32Array | undefined;
    if (this.isXL) {
      const ids = [
        ...(options.originalSize ?? [height, width]),
        ...(options.cropsCoordsTopLeft ?? [0, 0]),
        ...(options.targetSize ?? [height, width]),
      ];
      timeIds = Float32Array.from({ length: 6 * batch }, (_, i) => ids[i % 6]!);
    }

    const stepSeconds: number[] = [];
    const stepInfo: GenerateResult["stepInfo"] = [];
    for (let i = 0; i < T; i++) {
      const ts = performance.now();
      const scaled = scheduler.scaleModelInput(x, i);
      const input = this.coordChannels ? appendCoordChannels(scaled, latentDims) : { data: scaled, dims: latentDims };
      const sample = cfg ? concat2(input.data, input.data) : input.data;
      const t = scheduler.timesteps[i]!;
      const out = await this.unet.forward(
        {
          sample,
          sampleDims: [batch, ...input.dims.slice(1)],
          timestep: new Float32Array(batch).fill(t),
          encoderHiddenStates: text.hidden.data,
          encoderDims: text.hidden.dims,
          textEmbeds: text.pooled?.data,
          timeIds,
        },
        { step: i, steps: T },
        options.withMasks ?? false,
      );
      let eps = out.sample;
      if (cfg) {
        eps = new Float32Array(n);
        for (let j = 0; j < n; j++) {
          const u = out.sample[j]!;
          eps[j] = u + guidance * (out.sample[n + j]! - u);
        }
      }
      x = scheduler.step(eps, i, x, scheduler.stochastic ? noise.fill(new Float32Array(n)) : undefined).prevSample;
      const bad = x.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new AtedmError(`non-finite value (${x[bad]}) in the latents after step ${i + 1}/${T} (timestep ${t})`);
      const seconds = (performance.now() - ts) / 1000;
      stepSeconds.push(seconds);
      stepInfo.push({ ratios: out.ratios, keptTokens: out.keptTokens });
      options.onStep?.({ step: i, steps: T, seconds, unet: out });
    }

    let image: { data: Float32Array; dims: number[] };
    if (this.vae) {
      image = toImageNHWC(await this.vae.decode(x, latentDims));
    } else {
      image = toImageNHWC({ data: x, dims: latentDims });
    }
    if (image.data.some((v) => !Number.isFinite(v))) throw new AtedmError("non-finite value in the decoded image (VAE)");
    return {
      image: image.data,
      imageDims: image.dims,
      latents: x,
      latentDims,
      stepSeconds,
      secondsTotal: (performance.now() - t0) / 1000,
      timesteps: scheduler.timesteps.slice(),
      scheduler: { name: schedulerName, className: scheduler.className },
      stepInfo,
      truncated: text.truncated,
    };
  }

  /**
   * Analytic U-Net FLOPs (SPEC convention: batch 1, one call) for a latent of h x w: unpruned, and per step of a
   * generation under the installed method (AT-EDM or ToMe, `methodFlops`) with the ratios the steps reported.
   */
  unetFlopsPerStep(h: number, w: number, stepInfo: GenerateResult["stepInfo"]): { unpruned: number; pruned: number; perStep: number[] } {
    const textLength = this.tokenizer.modelMaxLength; // the tokens cross-attention reads (77 for SD)
    const unpruned = unetFlops(this.unet.config, { latent: [h, w], textLength }).total;
    const method = this.unet.pruning;
    const perStep = stepInfo.map((s, step) =>
      method ? methodFlops(this.unet.config, method, [h, w], { step, steps: stepInfo.length }, { ratios: s.ratios, textLength }).total : unpruned,
    );
    const pruned = perStep.length ? perStep.reduce((a, b) => a + b, 0) / perStep.length : unpruned;
    return { unpruned, pruned, perStep };
  }

  async release(): Promise<void> {
    await this.unet.release();
    await this.textEncoder.release();
    await this.textEncoder2?.release();
    await this.vae?.release();
    this.runtime.dispose();
  }
}

export const loadPipeline = TextToImagePipeline.load;

function concat2(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function concatBatch(a: { data: Float32Array; dims: number[] }, b: { data: Float32Array; dims: number[] }) {
  return { data: concat2(a.data, b.data), dims: [a.dims[0]! + b.dims[0]!, ...a.dims.slice(1)] };
}

/** Concatenate (B, S, D1) and (B, S, D2) on the feature axis. */
function concatFeatures(a: { data: Float32Array; dims: number[] }, b: { data: Float32Array; dims: number[] }) {
  const [B, S, D1] = a.dims as [number, number, number];
  const D2 = b.dims[2]!;
  const out = new Float32Array(B * S * (D1 + D2));
  for (let r = 0; r < B * S; r++) {
    out.set(a.data.subarray(r * D1, (r + 1) * D1), r * (D1 + D2));
    out.set(b.data.subarray(r * D2, (r + 1) * D2), r * (D1 + D2) + D1);
  }
  return { data: out, dims: [B, S, D1 + D2] };
}
