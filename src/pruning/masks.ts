/**
 * Pictures of AT-EDM's masks, for `generate --save-masks` and the eval report's overlays: per step and pruned attention block, the kept tokens over the final image (pruned tokens
 * dimmed and tinted red) and a heat map of the token scores (dark blue = low, yellow = high). The conditional
 * batch element (the last one) is shown.
 */
import { join } from "node:path";
import { featureMapSize, type AttentionBlockInfo } from "../models/unet_structure.js";
import { keepOutput, scoreOutput } from "./atedm.js";
import type { Tensor } from "../runtime/session.js";
import { toRGB8, writePng } from "../io/png.js";

export interface StepMasks {
  step: number;
  extras: Record<string, Tensor>;
}

/** A small perceptual colour ramp (viridis-like) for t in [0, 1]. */
export function heatColor(t: number): [number, number, number] {
  const stops: Array<[number, number, number]> = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [stops[i]!, stops[i + 1]!];
  return [0, 1, 2].map((c) => Math.round(a[c]! + f * (b[c]! - a[c]!))) as [number, number, number];
}

/** The kept-token mask and score heat map of one block (conditional element), as RGB8 images over `base`. */
export interface BlockMask {
  /** 1 where the token was kept, per token of the block's h x w grid. */
  kept: Uint8Array;
  /** The token scores (N). */
  score: Float32Array;
  /** The block's token grid. */
  h: number;
  w: number;
  /** RGB8 H x W: `base` with pruned tokens dimmed and tinted red. */
  mask: Uint8Array;
  /** RGB8 H x W: the scores, min..max of this block, as a heat map. */
  heat: Uint8Array;
}

/** The mask of `block` at one step from the U-Net's extras; undefined when the block was not pruned. */
export function blockMask(
  extras: Record<string, Tensor>,
  block: AttentionBlockInfo,
  base: Uint8Array,
  H: number,
  W: number,
  latent: { height: number; width: number },
): BlockMask | undefined {
  const keepT = extras[keepOutput(block)];
  const scoreT = extras[scoreOutput(block)];
  if (!keepT || !scoreT) return undefined;
  const { height: h, width: w } = featureMapSize(latent, block.level);
  const [B, k] = keepT.dims as [number, number];
  const N = h * w;
  const keepIdx = (keepT.data as BigInt64Array).subarray((B - 1) * k, B * k);
  const score = (scoreT.data as Float32Array).subarray((B - 1) * N, B * N);
  const kept = new Uint8Array(N);
  for (const t of keepIdx) kept[Number(t)] = 1;
  let lo = Infinity,
    hi = -Infinity;
  for (const s of score) {
    lo = Math.min(lo, s);
    hi = Math.max(hi, s);
  }
  const heat = heatImage(
    Array.from(score, (s) => (hi > lo ? (s - lo) / (hi - lo) : 0.5)),
    h,
    w,
    H,
    W,
  );
  return { kept, score, h, w, mask: dimPruned(base, kept, h, w, H, W), heat };
}

/** RGB8 H x W: `base` with the tokens (of an h x w grid) not in `kept` dimmed and tinted red. */
export function dimPruned(base: Uint8Array, kept: Uint8Array, h: number, w: number, H: number, W: number): Uint8Array {
  const out = new Uint8Array(base);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (kept[Math.floor((y * h) / H) * w + Math.floor((x * w) / W)]) continue;
      const p = (y * W + x) * 3;
      out[p] = Math.round(base[p]! * 0.3 + 120);
      out[p + 1] = Math.round(base[p + 1]! * 0.3);
      out[p + 2] = Math.round(base[p + 2]! * 0.3);
    }
  }
  return out;
}

/** RGB8 H x W: per-token values in [0, 1] (an h x w grid) through `heatColor`. */
export function heatImage(t: ArrayLike<number>, h: number, w: number, H: number, W: number): Uint8Array {
  const out = new Uint8Array(H * W * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) out.set(heatColor(t[Math.floor((y * h) / H) * w + Math.floor((x * w) / W)]!), (y * W + x) * 3);
  }
  return out;
}

export function saveMasks(
  dir: string,
  steps: StepMasks[],
  blocks: AttentionBlockInfo[],
  result: { image: Float32Array; imageDims: number[]; latentDims: number[] },
  vaeScale: number,
): string[] {
  const [, H, W] = result.imageDims as [number, number, number];
  const latent = { height: H / vaeScale, width: W / vaeScale };
  const base = toRGB8(result.image, H, W);
  const written: string[] = [];
  for (const { step, extras } of steps) {
    for (const block of blocks) {
      const m = blockMask(extras, block, base, H, W, latent);
      if (!m) continue;
      const stem = `step${String(step).padStart(3, "0")}_${block.path.replace(/\./g, "-")}`;
      writePng(join(dir, `${stem}_kept.png`), m.mask, H, W);
      writePng(join(dir, `${stem}_score.png`), m.heat, H, W);
      written.push(stem);
    }
  }
  return written;
}
