/**
 * Peak memory of a text-to-image generation, estimated from the configs and the requested size before anything
 * big is allocated, so that `TextToImagePipeline.generate` can refuse a size that cannot fit in one line instead of
 * being killed by the kernel minutes later (`checkGenerationMemory`).
 *
 *   total = other weights + host buffers
 *         + max(S * W + build,  S * (W + U-Net activations) + VAE decoder activations)
 *
 * - S: the U-Net sessions the generation builds, one per distinct set of blocks pruned at a step (two with DSAP's
 *   early and late sets). Each holds its own copy of the weights and keeps its own ONNX Runtime arena (measured:
 *   SD-XL's U-Net, 9.6 GiB of float32 weights, with DSAP: 9,997 MiB resident after the first step's session,
 *   19,804 MiB after the second's).
 * - W, build: what one U-Net session holds, and what building it adds for a while (the caller passes them; the U-Net
 *   session is built during the first generation). Weights embedded in the ONNX model (checkpoints under 1 GiB):
 *   W = 6x their float32 bytes (measured on a VAE decoder with 198 MB of float32 weights: +1,266 MiB resident after
 *   its session was built: our Float32Arrays, the protobuf, ONNX Runtime's parsed, initialised and pre-packed
 *   copies). External weights (ONNX external data): W = their float32 bytes (measured: SD-XL's 9,794 MiB file,
 *   resident 1:1), and build = the file bytes of F16 / BF16 tensors, read before the cast to float32 is folded.
 * - other weights: the text encoders' and the VAE decoder's float32 bytes (their sessions exist before generate).
 * - U-Net activations (batch B, float32, one session's arena): a walk over `unetModules(cfg)`; at each module, the
 *   skip tensors the up path will concatenate plus the module's own working set: a ResnetBlock2D 3 x (in + out)
 *   channels of its map (input, GroupNorm output, conv outputs, shortcut), a Transformer2DModel 20 C per token (q,
 *   k, v, attention output, GEGLU's 8 C projection, its split halves and product), its cross-attention
 *   probabilities B x heads x N x L x 4 bytes and, in a block that is pruned at some step, AT-EDM's explicit
 *   self-attention map of layer 1: scores and probabilities 2 x B x heads x N x N x 4 bytes, their head mean and
 *   the recovery's similarity, B x N x N x 4 bytes each (ToMe's matching scores, B x 3N/4 x N/4, fit in the same
 *   term). Unpruned self-attention runs in ONNX Runtime's fused MultiHeadAttention, which on the CPU tiles over the
 *   keys (flash attention): its workspace does not grow with N^2 (measured: tiny-sd at 512x512, N = 4096, batch 2,
 *   4 heads: +119 MiB for the whole generation, where one materialised map would be 512 MiB), so only q, k, v and
 *   the output count.
 * - VAE decoder activations (batch 1): the same walk over the decoder (mid block at the latent size, each up block's
 *   resnets at its resolution, the x2 upsamplers), 3 x (in + out) channels per module; the mid-block attention is
 *   fused (q, k, v, output).
 * - host buffers: latents, their CFG copy, the scheduler's and the U-Net output's copies (12 B C h w floats), the
 *   decoded image as ONNX Runtime's output, our NHWC copy and the PNG (4 x 3 H W floats).
 *
 * Text-encoder activations (77 tokens) are negligible. The working sets are the planner's peak plus the arena's
 * slack (it grows in power-of-two regions and keeps them), as measured; no further factor is applied. Measured peak
 * resident growth of whole generations (`process.resourceUsage().maxRSS`, CFG, 1 step, 2 threads) against the
 * estimate: SD-XL (random weights, sdxl-unet.json and the SD-XL text encoders and VAE) at 1024x1024: 18,029 MiB
 * peak vs 18,364 estimated unpruned, 20,758 vs 21,154 with AT-EDM 0.5 (schedule none); tiny-sd from 256x256 to
 * 768x768, unpruned and AT-EDM: estimate / measured growth 0.74 to 1.20 (test/resources.test.ts checks 0.5 to 2).
 */
import { freemem, totalmem } from "node:os";
import { AtedmError } from "../errors.js";
import { featureMapSize, unetModules, type UNetConfig } from "../models/unet_structure.js";
import type { VAEConfig } from "../models/vae.js";

const F32 = 4;
/** Text tokens cross-attention reads (CLIP's 77). */
const DEFAULT_TEXT_LENGTH = 77;

export interface GenerationMemoryInput {
  unet: UNetConfig;
  /** null for a pixel-space model (no decoder). */
  vae: VAEConfig | null;
  /** Image size in pixels. */
  height: number;
  width: number;
  /** U-Net batch: 2 with classifier-free guidance, else 1. */
  batch: number;
  /**
   * Attention blocks pruned at some step (their layer 1 computes an explicit B x heads x N x N map): `true` for
   * every block, a list of block paths, or nothing for the unpruned model.
   */
  pruning?: boolean | readonly string[] | null;
  /**
   * Bytes of weights (see the file comment): `unet`, what one U-Net session holds (W); `unetBuild`, what building one
   * adds for a while; `other`, the other components'. Default 0.
   */
  weights?: { unet?: number; unetBuild?: number; other?: number };
  /** U-Net sessions the generation builds (see the file comment). Default 1. */
  unetSessions?: number;
  /** Text tokens cross-attention reads. Default 77. */
  textLength?: number;
}

export interface GenerationMemoryEstimate {
  /** Bytes of weights: the U-Net's times the sessions, plus the other components'. */
  weights: number;
  unetWeights: number;
  otherWeights: number;
  /** U-Net sessions counted. */
  unetSessions: number;
  /** Bytes of U-Net activations at their peak (one session), and where the peak is. */
  unet: number;
  unetPeakAt: string;
  /** Bytes of VAE decoder activations at their peak. */
  vae: number;
  vaePeakAt: string;
  /** Bytes held by JavaScript: latents, image. */
  host: number;
  /** The estimated peak; see the file comment. */
  total: number;
}

/** The U-Net's activation peak in bytes (float32) for a latent of h x w, batch `batch`; see the file comment. */
export function unetActivationBytes(
  cfg: UNetConfig,
  latent: { height: number; width: number },
  batch: number,
  options: { pruned?: (path: string) => boolean; textLength?: number } = {},
): { bytes: number; at: string } {
  const L = options.textLength ?? DEFAULT_TEXT_LENGTH;
  const pruned = options.pruned ?? (() => false);
  const cells = (level: number) => {
    const s = featureMapSize(latent, level);
    return batch * s.height * s.width;
  };
  let skips = 0; // elements of the skip tensors alive
  let peak = 0;
  let at = "";
  for (const m of unetModules(cfg)) {
    let work = 0; // elements
    let out = 0; // elements of the module's output (for the skip stack)
    switch (m.kind) {
      case "Conv2d":
        work = cells(m.level) * (m.inChannels + m.outChannels);
        out = cells(m.level) * m.outChannels;
        break;
      case "TimestepEmbedding":
      case "AddEmbedding":
        break;
      case "ResnetBlock2D":
        work = 3 * cells(m.level) * (m.inChannels + m.outChannels);
        out = cells(m.level) * m.outChannels;
        break;
      case "Transformer2DModel": {
        const b = m.block;
        const s = featureMapSize(latent, b.level);
        const n = s.height * s.width;
        work = batch * n * b.channels * 20 + batch * b.heads * n * L;
        if (pruned(b.path)) work += (2 * b.heads + 2) * batch * n * n;
        out = batch * n * b.channels;
        break;
      }
      case "Downsample2D":
        work = (cells(m.level - 1) + cells(m.level)) * m.channels;
        out = cells(m.level) * m.channels;
        break;
      case "Upsample2D":
        work = 2 * cells(m.level) * m.channels + cells(m.level + 1) * m.channels;
        out = cells(m.level) * m.channels;
        break;
      case "GroupNorm":
        work = 2 * cells(m.level) * m.channels;
        out = cells(m.level) * m.channels;
        break;
    }
    if (skips + work > peak) {
      peak = skips + work;
      at = m.path;
    }
    if (m.kind === "ResnetBlock2D" && m.skipChannels > 0) skips -= cells(m.level) * m.skipChannels;
    if (m.pushSkip) skips += out;
  }
  return { bytes: peak * F32, at };
}

/** The VAE decoder's activation peak in bytes (float32, batch 1) for a latent of h x w; see the file comment. */
export function vaeDecoderActivationBytes(cfg: VAEConfig, latent: { height: number; width: number }): { bytes: number; at: string } {
  const ch = cfg.block_out_channels;
  const top = ch[ch.length - 1]!;
  let peak = 0;
  let at = "";
  const step = (path: string, elements: number) => {
    if (elements > peak) {
      peak = elements;
      at = path;
    }
  };
  let cells = latent.height * latent.width;
  step("decoder.conv_in", cells * (cfg.latent_channels + top));
  step("decoder.mid_block", 3 * cells * 2 * top);
  if (cfg.mid_block_add_attention) step("decoder.mid_block.attentions.0", cells * top * 6);
  let c = top;
  ch.slice()
    .reverse()
    .forEach((outCh, i) => {
      for (let j = 0; j <= cfg.layers_per_block; j++) {
        step(`decoder.up_blocks.${i}.resnets.${j}`, 3 * cells * (c + outCh));
        c = outCh;
      }
      if (i < ch.length - 1) {
        step(`decoder.up_blocks.${i}.upsamplers.0`, cells * c + 2 * 4 * cells * c);
        cells *= 4;
      }
    });
  step("decoder.conv_out", cells * (2 * c + cfg.out_channels));
  return { bytes: peak * F32, at };
}

/** Estimate a generation's peak memory; see the file comment. */
export function estimateGenerationMemory(input: GenerationMemoryInput): GenerationMemoryEstimate {
  const { unet, vae, height, width, batch } = input;
  const scale = vae ? 2 ** (vae.block_out_channels.length - 1) : 1;
  const latent = { height: Math.ceil(height / scale), width: Math.ceil(width / scale) };
  const p = input.pruning;
  const prunedSet = Array.isArray(p) ? new Set(p) : null;
  const pruned = p === true ? () => true : prunedSet ? (path: string) => prunedSet.has(path) : () => false;
  const u = unetActivationBytes(unet, latent, batch, { pruned, textLength: input.textLength });
  const v = vae ? vaeDecoderActivationBytes(vae, latent) : { bytes: 0, at: "" };
  const channels = unet.out_channels;
  const host = F32 * (12 * batch * channels * latent.height * latent.width + 4 * 3 * height * width);
  const sessions = input.unetSessions ?? 1;
  const unetWeights = sessions * (input.weights?.unet ?? 0);
  const otherWeights = input.weights?.other ?? 0;
  const weights = unetWeights + otherWeights;
  const build = unetWeights + (input.weights?.unetBuild ?? 0);
  const run = unetWeights + sessions * u.bytes + v.bytes;
  return {
    weights,
    unetWeights,
    otherWeights,
    unetSessions: sessions,
    unet: u.bytes,
    unetPeakAt: u.at,
    vae: v.bytes,
    vaePeakAt: v.at,
    host,
    total: otherWeights + host + Math.max(build, run),
  };
}

/** Bytes as "12.3 GiB" (binary units, up to PiB / EiB for absurd sizes). */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** What this process may use: its resident memory plus what the system has available (and any cgroup limit). */
export interface MemoryBudget {
  /** os.totalmem(), or the cgroup limit when lower. */
  total: number;
  /** os.freemem() (Linux: MemAvailable). */
  free: number;
  /** This process's resident set now. */
  rss: number;
  /** min(total, rss + free): the most this process can grow to. */
  usable: number;
}

export function memoryBudget(): MemoryBudget {
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;
  const total = constrained > 0 && constrained < totalmem() ? constrained : totalmem();
  const free = freemem();
  const rss = process.memoryUsage.rss();
  return { total, free, rss, usable: Math.min(total, rss + free) };
}

/**
 * Refuse a generation whose estimated peak exceeds what the process can use (`memoryBudget().usable`), in one
 * line: `what` names the request (e.g. `--height 4096 --width 4096`).
 */
export function checkGenerationMemory(estimate: GenerationMemoryEstimate, what: string, budget: MemoryBudget = memoryBudget()): void {
  if (estimate.total <= budget.usable) return;
  const s = estimate.unetSessions;
  const unet = `U-Net activations ${formatBytes(s * estimate.unet)} (at ${estimate.unetPeakAt}${s > 1 ? `, ${s} sessions` : ""})`;
  const parts = [`weights ${formatBytes(estimate.weights)}`, unet];
  if (estimate.vae > 0) parts.push(`VAE decoder ${formatBytes(estimate.vae)} (at ${estimate.vaePeakAt})`);
  throw new AtedmError(
    `${what}: this generation needs about ${formatBytes(estimate.total)} of memory (${parts.join(", ")}), ` +
      `this machine has ${formatBytes(budget.total)} (${formatBytes(budget.free)} available, ${formatBytes(budget.rss)} in use by this process)`,
  );
}
