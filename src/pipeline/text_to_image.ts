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
import { hasComponent, readJson, readModelIndex, type ModelIndex } from "../io/diffusers.js";
import { CLIPTextEncoder } from "../models/clip_text.js";
import { CLIPTokenizer } from "../models/clip_tokenizer.js";
import { UNet2DConditionModel, type UNetOutput } from "../models/unet_model.js";
import { toImageNHWC, VAEDecoder } from "../models/vae.js";
import { Runtime, type RuntimeOptions } from "../runtime/session.js";
import { createScheduler, loadSchedulerConfig, type SchedulerName } from "../schedulers/index.js";
import { methodFlops, unetFlops } from "../metrics/flops.js";
import { appendCoordChannels, COORD_CHANNELS } from "./coord_channels.js";
import { randn } from "./random.js";

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
  /** Scheduler algorithm; its betas etc. come from the model's scheduler config. Default euler. */
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
  /** Per step: ratio and kept tokens of every attention block. */
  stepInfo: Array<Pick<UNetOutput, "ratios" | "keptTokens">>;
  /** Whether the prompt (or negative prompt) was longer than the tokenizer's limit and got truncated. */
  truncated: boolean;
}

export interface PipelineOptions extends RuntimeOptions {}

/** A model folder's optional `atedm.json`: generation defaults for atedm (diffusers ignores the file). */
export interface ModelDefaults {
  /** Recommended classifier-free guidance scale. */
  guidance?: number;
  /** 2: the U-Net reads the sample plus CoordConv column/row maps, which the pipeline appends (coord_channels.ts). */
  coord_channels?: number;
}

function loadModelDefaults(dir: string): ModelDefaults {
  const file = join(dir, "atedm.json");
  if (!existsSync(file)) return {};
  const d = readJson<ModelDefaults>(file);
  if (d.guidance !== undefined && !(typeof d.guidance === "number" && Number.isFinite(d.guidance))) {
    throw new AtedmError(`${file}: "guidance" must be a number, got ${JSON.stringify(d.guidance)}`);
  }
  if (d.coord_channels !== undefined && d.coord_channels !== 0 && d.coord_channels !== COORD_CHANNELS) {
    throw new AtedmError(`${file}: "coord_channels" must be 0 or ${COORD_CHANNELS}, got ${JSON.stringify(d.coord_channels)}`);
  }
  return d;
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
  ) {}

  /** Input channels the pipeline appends to the sample (CoordConv maps, `coord_channels` in atedm.json), or 0. */
  get coordChannels(): number {
    return this.recommended.coord_channels ?? 0;
  }

  /** Channels of the denoised sample (latent, or pixels for a pixel-space model). */
  get sampleChannels(): number {
    return this.unet.config.in_channels - this.coordChannels;
  }

  static async load(dir: string, options: PipelineOptions = {}): Promise<TextToImagePipeline> {
    if (!existsSync(join(dir, "model_index.json"))) {
      throw new AtedmError(`${dir}: not a diffusers model folder (no model_index.json)`);
    }
    const index = readModelIndex(dir);
    const runtime = new Runtime(options);
    const unet = UNet2DConditionModel.load(dir, runtime);
    const xl = unet.isXL;
    const tokenizer = CLIPTokenizer.fromPretrained(join(dir, "tokenizer"));
    const textEncoder = await CLIPTextEncoder.load(dir, "text_encoder", runtime);
    let tokenizer2: CLIPTokenizer | null = null;
    let textEncoder2: CLIPTextEncoder | null = null;
    if (hasComponent(index, "text_encoder_2")) {
      tokenizer2 = CLIPTokenizer.fromPretrained(join(dir, "tokenizer_2"));
      textEncoder2 = await CLIPTextEncoder.load(dir, "text_encoder_2", runtime);
    }
    if (xl && !textEncoder2) throw new AtedmError(`${dir}: SD-XL U-Net but no text_encoder_2 in model_index.json`);
    const vae = hasComponent(index, "vae") ? await VAEDecoder.load(dir, runtime) : null;
    const recommended = loadModelDefaults(dir);
    const coord = recommended.coord_channels ?? 0;
    const channels = unet.config.in_channels - coord;
    if (coord && channels !== unet.config.out_channels) {
      throw new AtedmError(
        `${join(dir, "atedm.json")}: coord_channels ${coord} needs a U-Net with in_channels = out_channels + ${coord}, ` +
          `got ${unet.config.in_channels} and ${unet.config.out_channels}`,
      );
    }
    if (!vae && channels !== 3) {
      throw new AtedmError(`${dir}: no vae, but the U-Net has ${channels} input channels (pixel-space models have 3)`);
    }
    const schedulerConfig = loadSchedulerConfig(join(dir, "scheduler", "scheduler_config.json"));
    return new TextToImagePipeline(dir, index, runtime, tokenizer, textEncoder, tokenizer2, textEncoder2, unet, vae, schedulerConfig, recommended);
  }

  get isXL(): boolean {
    return this.unet.isXL;
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

  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const steps = options.steps ?? 20;
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
    const channels = this.sampleChannels;
    const latentDims = [1, channels, height / f, width / f];
    const n = latentDims.reduce((a, b) => a * b, 1);
    let x: Float32Array;
    if (options.latents) {
      if (options.latents.length !== n) {
        throw new AtedmError(`latents have ${options.latents.length} values, expected shape [${latentDims}] (${n})`);
      }
      x = options.latents.slice();
    } else {
      x = randn(options.seed ?? 0, n);
    }

    const scheduler = createScheduler(options.scheduler ?? "euler", this.schedulerConfig);
    scheduler.setTimesteps(steps);
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
    const T = scheduler.timesteps.length;
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
      x = scheduler.step(eps, i, x).prevSample;
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
