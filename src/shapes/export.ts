/**
 * Export a shapes training set:
 *   outDir/shapes.safetensors  tensor `images`, U8 [N, 32, 32, 3] (HWC RGB)
 *   outDir/captions.json       JSON array of N captions, same order
 *   outDir/meta.json           seed, count, grammar version, held-out rule, palette, geometry
 *
 * The set never contains a held-out caption (see `isHeldOut`), and is a pure function of (count, seed,
 * twoObjectFraction): one Mulberry32 stream draws each scene and then its jitter, image by image.
 *
 * CLI: atedm export-shapes --out DIR --count N [--seed S] [--two-object-fraction F]
 */
import { join } from "node:path";

import { AtedmError } from "../errors.js";
import { makeDirectory, writeJsonAtomic } from "../io/files.js";
import { writeSafetensors } from "../io/safetensors.js";
import { GRAMMAR_VERSION, HELD_OUT_RULE, PALETTE, captionOf, sampleScene } from "./grammar.js";
import { ANCHORS, BASE_SIZE, EXTENT, JITTER, SUPERSAMPLE, renderSceneInto } from "./render.js";
import { Mulberry32 } from "../util/numerics.js";

export interface ExportOptions {
  count: number;
  seed: number;
  /** Probability of a two-object scene (default 0.25). */
  twoObjectFraction?: number;
}

export interface GeneratedSet {
  /** N x 32 x 32 x 3, HWC RGB u8, image after image. */
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
  const rng = new Mulberry32(seed);
  const px = BASE_SIZE * BASE_SIZE * 3;
  const images = new Uint8Array(count * px);
  const captions: string[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const spec = sampleScene(rng, { twoObjectFraction, excludeHeldOut: true });
    captions[i] = captionOf(spec);
    renderSceneInto(spec, images, i * px, BASE_SIZE, rng);
  }
  return { images, captions };
}

/** Write the training set to `outDir` (created if missing). */
export function exportDataset(outDir: string, options: ExportOptions): { count: number; seconds: number } {
  const t0 = performance.now();
  const { images, captions } = generateDataset(options);
  const count = captions.length;
  makeDirectory(outDir);
  const twoObjectFraction = options.twoObjectFraction ?? 0.25;
  writeSafetensors(
    join(outDir, "shapes.safetensors"),
    { images: { dims: [count, BASE_SIZE, BASE_SIZE, 3], data: images } },
    { format: "atedm-shapes", grammar_version: String(GRAMMAR_VERSION), seed: String(options.seed) },
  );
  writeJsonAtomic(join(outDir, "captions.json"), captions);
  const meta = {
    format: "atedm-shapes",
    grammarVersion: GRAMMAR_VERSION,
    seed: options.seed,
    count,
    twoObjectFraction,
    twoObjectCount: captions.filter((c) => !/ at the /.test(c)).length,
    image: { height: BASE_SIZE, width: BASE_SIZE, channels: 3, layout: "NHWC", dtype: "U8", supersample: SUPERSAMPLE },
    heldOutRule: HELD_OUT_RULE,
    heldOutExcluded: true,
    rng: "mulberry32(seed): per image, scene attributes then jitter",
    palette: PALETTE,
    geometry: { anchors: ANCHORS, extent: EXTENT, jitter: JITTER },
  };
  writeJsonAtomic(join(outDir, "meta.json"), meta, 2);
  return { count, seconds: (performance.now() - t0) / 1000 };
}
