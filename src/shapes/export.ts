/**
 * Export a shapes training set:
 *   outDir/shapes.safetensors  tensor `images`, U8 [N, S, S, 3] (HWC RGB; S = `size`, 32 by default)
 *   outDir/captions.json       JSON array of N captions, same order
 *   outDir/meta.json           seed, count, grammar version, held-out rule, palette, geometry
 *
 * The set never contains a held-out caption (see `isHeldOut`), and is a pure function of (count, seed,
 * twoObjectFraction, size, textureFraction): one Mulberry32 stream draws each scene and then its jitter (and texture),
 * image by image. With the defaults (size 32, textureFraction 0) the files are byte for byte those of the exporter
 * before sizes and textures existed.
 *
 * CLI: atedm export-shapes --out DIR --count N [--seed S] [--two-object-fraction F] [--size S] [--textures F]
 */
import { join } from "node:path";

import { AtedmError } from "../errors.js";
import { makeDirectory, writeJsonAtomic } from "../io/files.js";
import { writeSafetensors } from "../io/safetensors.js";
import {
  GRAMMAR_VERSION,
  HELD_OUT_RULE,
  HELD_OUT_RULE_TEXTURED,
  PALETTE,
  TEXTURE_GRAMMAR_VERSION,
  TEXTURE_PARTNER,
  captionOf,
  isTexturedCaption,
  sampleScene,
} from "./grammar.js";
import { ANCHORS, BASE_SIZE, EXTENT, JITTER, NOISE_CELL, STRIPE_WIDTH, SUPERSAMPLE, renderSceneInto } from "./render.js";
import { Mulberry32 } from "../util/numerics.js";

export interface ExportOptions {
  count: number;
  seed: number;
  /** Probability of a two-object scene (default 0.25). */
  twoObjectFraction?: number;
  /** Image side in pixels (default 32; the geometry scales with it). */
  size?: number;
  /** Probability of a textured background (default 0: none). */
  textureFraction?: number;
}

/** Smallest and largest image side the exporter accepts. */
export const MIN_EXPORT_SIZE = 16;
export const MAX_EXPORT_SIZE = 128;

export interface GeneratedSet {
  /** N x S x S x 3, HWC RGB u8, image after image. */
  images: Uint8Array;
  captions: string[];
}

/** Render the training set in memory (what `exportDataset` writes). */
export function generateDataset(options: ExportOptions): GeneratedSet {
  const { count, seed } = options;
  if (!Number.isInteger(count) || count < 1) throw new AtedmError(`shapes export: count must be a positive integer, got ${count}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new AtedmError(`shapes export: seed must be an integer in [0, 2^32), got ${seed}`);
  }
  const twoObjectFraction = options.twoObjectFraction ?? 0.25;
  const size = exportSize(options);
  const textureFraction = options.textureFraction ?? 0;
  if (!(textureFraction >= 0 && textureFraction <= 1)) {
    throw new AtedmError(`shapes export: textureFraction must be in [0, 1], got ${textureFraction}`);
  }
  const rng = new Mulberry32(seed);
  const px = size * size * 3;
  const images = new Uint8Array(count * px);
  const captions: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const spec = sampleScene(rng, { twoObjectFraction, excludeHeldOut: true, textureFraction });
    captions[i] = captionOf(spec);
    renderSceneInto(spec, images, i * px, size, rng);
  }
  return { images, captions };
}

function exportSize(options: ExportOptions): number {
  const size = options.size ?? BASE_SIZE;
  if (!Number.isInteger(size) || size < MIN_EXPORT_SIZE || size > MAX_EXPORT_SIZE) {
    throw new AtedmError(`shapes export: size must be an integer in [${MIN_EXPORT_SIZE}, ${MAX_EXPORT_SIZE}], got ${size}`);
  }
  return size;
}

/** Write the training set to `outDir` (created if missing). */
export function exportDataset(outDir: string, options: ExportOptions): { count: number; seconds: number } {
  const t0 = performance.now();
  const { images, captions } = generateDataset(options);
  const count = captions.length;
  makeDirectory(outDir);
  const twoObjectFraction = options.twoObjectFraction ?? 0.25;
  const size = exportSize(options);
  const textureFraction = options.textureFraction ?? 0;
  writeSafetensors(
    join(outDir, "shapes.safetensors"),
    { images: { dims: [count, size, size, 3], data: images } },
    { format: "atedm-shapes", grammar_version: String(GRAMMAR_VERSION), seed: String(options.seed) },
  );
  writeJsonAtomic(join(outDir, "captions.json"), captions);
  const meta: Record<string, unknown> = {
    format: "atedm-shapes",
    grammarVersion: GRAMMAR_VERSION,
    seed: options.seed,
    count,
    twoObjectFraction,
    twoObjectCount: captions.filter((c) => !/ at the /.test(c)).length,
    image: { height: size, width: size, channels: 3, layout: "NHWC", dtype: "U8", supersample: SUPERSAMPLE },
    heldOutRule: textureFraction > 0 ? HELD_OUT_RULE_TEXTURED : HELD_OUT_RULE,
    heldOutExcluded: true,
    rng: "mulberry32(seed): per image, scene attributes then jitter",
    palette: PALETTE,
    geometry: { anchors: ANCHORS, extent: EXTENT, jitter: JITTER },
  };
  // Only sets with textures record them, so a default export's meta.json is unchanged.
  if (textureFraction > 0) {
    meta.textures = {
      grammarVersion: TEXTURE_GRAMMAR_VERSION,
      fraction: textureFraction,
      count: captions.filter(isTexturedCaption).length,
      partner: TEXTURE_PARTNER,
      stripeWidth: STRIPE_WIDTH,
      noiseCell: NOISE_CELL,
      units: "32-pixel units, scaled with the image",
    };
  }
  writeJsonAtomic(join(outDir, "meta.json"), meta, 2);
  return { count, seconds: (performance.now() - t0) / 1000 };
}
