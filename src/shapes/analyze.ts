/**
 * Text-image alignment metric for the shapes data set: does an image show what its caption says?
 *
 * Every step is a plain image-processing rule (no learned model), so a verdict can be checked by hand:
 *  1. Background: each border pixel is classified to the nearest of the 9 palette colors; the most frequent wins.
 *  2. Pixel labels: with background color b, a pixel p is explained by object color c as the mix
 *     b + a (c - b) with a = clamp(<p - b, c - b> / |c - b|^2, 0, 1) and residual |p - (b + a (c - b))|.
 *     The pixel's explaining color is the one of least residual (<= 80); the pixel is labelled with it when its
 *     a >= 0.5, otherwise it is background / an edge. This reads anti-aliased edges and blurred shapes correctly
 *     (a red-on-white edge pixel is pink, nearer to gray than to red, but lies on the white->red line).
 *  3. Blobs: 8-connected components of each label; blobs under 8 pixels (at 32x32) are specks and ignored.
 *  4. Matching: each caption object takes the largest blob of its color; a caption object with no such blob
 *     takes the largest blob left (so its shape, size and position are still judged, and its color fails).
 *  5. Measuring a blob: its soft mask is the mix coefficient a over the blob plus a 2-pixel ring of edge pixels
 *     explained by the blob's color. For each of the 4 shapes, the template of equal area is placed on the mask's
 *     centroid, rasterised with the renderer's own rasteriser, and compared by soft IoU (sum min / sum max),
 *     sharp and Gaussian-blurred (sigma 0.7 and 1.2 px, since generated images are soft); the shape is the
 *     template of highest IoU. That template gives the extent (size: small < sqrt(7 * 12) <= large) and the bbox
 *     centre (position: nearest anchor on each axis, anchors at 6.5 / 16 / 25.5).
 *  6. Relation "A left of B": B's centre is right of A's by more than max(2 px, |dy|); likewise for the others.
 *  7. Count: the number of significant blobs equals the number of caption objects.
 */
import { AtedmError } from "../errors.js";
import {
  BACKGROUNDS,
  CAPTION_SIZES,
  COLORS,
  PALETTE,
  POSITIONS,
  SHAPES,
  parseCaption,
  type CaptionSize,
  type ObjectColor,
  type PaletteColor,
  type Position,
  type Relation,
  type Shape,
} from "./grammar.js";
import { ANCHORS, AREA_FACTOR, BASE_SIZE, CENTROID_DY, EXTENT, coverage } from "./render.js";

/** Max distance (RGB units) between a pixel and the background->color line for the pixel to count as that color. */
export const RESIDUAL_MAX = 80;
/** A ring pixel explained best by another color still counts towards a blob when this close to its line. */
export const RING_RESIDUAL = 20;
/** Width in pixels (at 32x32) of the ring of partly covered pixels added to a blob's soft mask. */
const RING = 2;
/** Blur levels (Gaussian sigma, pixels at 32x32) the shape templates are tried at: generated images are soft. */
export const BLUR_SIGMAS = [0, 0.7, 1.2];
/** Minimum blob area in pixels at 32x32 (scaled by (size/32)^2); smaller blobs are specks. */
export const MIN_BLOB_AREA = 8;
/** Extent threshold between small and large (geometric mean of the two extents), in 32-pixel units. */
export const SIZE_THRESHOLD = Math.sqrt(EXTENT.small * EXTENT.large);
/** Minimum centre offset (32-pixel units) along the relation's axis. */
export const RELATION_MIN_OFFSET = 2;

const ALL_PALETTE: PaletteColor[] = [...new Set<PaletteColor>([...COLORS, ...BACKGROUNDS])];

export interface DetectedObject {
  color: ObjectColor;
  shape: Shape;
  /** Soft IoU of the best template of each shape. */
  shapeScores: Record<Shape, number>;
  /** Bounding-box centre of the fitted template, in 32-pixel units. */
  cx: number;
  cy: number;
  /** Extent of the fitted template, in 32-pixel units. */
  extent: number;
  size: CaptionSize;
  position: Position;
  /** Pixels in the blob. */
  area: number;
}

export interface Analysis {
  /** Per attribute: "background", "count", "object1.color", "object1.shape", ..., "relation". */
  attributes: Record<string, boolean>;
  allCorrect: boolean;
  background: PaletteColor;
  /** The blob matched to each caption object (null: no blob left to match). */
  objects: Array<DetectedObject | null>;
  /** Number of significant blobs. */
  blobCount: number;
}

interface Blob {
  color: number; // index into COLORS
  pixels: number[];
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** Judge per attribute whether `image` (HWC RGB u8, width x height, square) shows `caption`. */
export function analyzeImage(image: Uint8Array, width: number, height: number, caption: string): Analysis {
  if (!Number.isInteger(width) || width < 8 || width !== height) {
    throw new AtedmError(`shapes: analyzeImage needs a square image of side >= 8, got ${width}x${height}`);
  }
  if (image.length !== width * height * 3) {
    throw new AtedmError(`shapes: analyzeImage got ${image.length} bytes for a ${width}x${height} RGB image`);
  }
  const spec = parseCaption(caption);
  const size = width;
  const scale = size / BASE_SIZE;
  const n = size * size;

  // 1. Background.
  const votes = new Map<PaletteColor, number>();
  for (let i = 0; i < n; i++) {
    const x = i % size;
    const y = (i - x) / size;
    if (x !== 0 && y !== 0 && x !== size - 1 && y !== size - 1) continue;
    const c = nearestPalette(image[3 * i]!, image[3 * i + 1]!, image[3 * i + 2]!);
    votes.set(c, (votes.get(c) ?? 0) + 1);
  }
  let background: PaletteColor = "gray";
  let best = -1;
  for (const c of ALL_PALETTE) {
    const v = votes.get(c) ?? 0;
    if (v > best) [background, best] = [c, v];
  }

  // 2. Pixel labels.
  const b = PALETTE[background];
  const colorIdx = COLORS.map((_, k) => k).filter((k) => COLORS[k] !== background);
  const alpha = COLORS.map(() => new Float32Array(n));
  const resid = COLORS.map(() => new Float32Array(n));
  const label = new Int8Array(n).fill(-1);
  for (const k of colorIdx) {
    const c = PALETTE[COLORS[k]!];
    const d0 = c[0] - b[0],
      d1 = c[1] - b[1],
      d2 = c[2] - b[2];
    const dd = d0 * d0 + d1 * d1 + d2 * d2;
    const al = alpha[k]!,
      re = resid[k]!;
    for (let i = 0; i < n; i++) {
      const p0 = image[3 * i]! - b[0],
        p1 = image[3 * i + 1]! - b[1],
        p2 = image[3 * i + 2]! - b[2];
      let a = (p0 * d0 + p1 * d1 + p2 * d2) / dd;
      a = a < 0 ? 0 : a > 1 ? 1 : a;
      const r0 = p0 - a * d0,
        r1 = p1 - a * d1,
        r2 = p2 - a * d2;
      al[i] = a;
      re[i] = Math.sqrt(r0 * r0 + r1 * r1 + r2 * r2);
    }
  }
  const explainer = new Int8Array(n).fill(-1);
  for (let i = 0; i < n; i++) {
    let bestK = -1;
    let bestR = RESIDUAL_MAX;
    for (const k of colorIdx) {
      if (alpha[k]![i]! > 0 && resid[k]![i]! <= bestR) {
        bestR = resid[k]![i]!;
        bestK = k;
      }
    }
    explainer[i] = bestK;
    label[i] = bestK >= 0 && alpha[bestK]![i]! >= 0.5 ? bestK : -1;
  }

  // 3. Blobs.
  const minArea = MIN_BLOB_AREA * scale * scale;
  const blobs = components(label, size).filter((bl) => bl.pixels.length >= minArea);
  blobs.sort((p, q) => q.pixels.length - p.pixels.length);

  // 4. Matching.
  const used = new Set<Blob>();
  const matched: Array<Blob | null> = spec.objects.map((o) => {
    const k = COLORS.indexOf(o.color);
    const bl = blobs.find((x) => x.color === k && !used.has(x)) ?? null;
    if (bl) used.add(bl);
    return bl;
  });
  for (let j = 0; j < matched.length; j++) {
    if (matched[j]) continue;
    const bl = blobs.find((x) => !used.has(x)) ?? null;
    if (bl) used.add(bl);
    matched[j] = bl;
  }

  // 5. Measuring.
  const objects = matched.map((bl) => (bl ? measure(bl, alpha[bl.color]!, resid[bl.color]!, label, explainer, size) : null));

  // 6-7. Attributes.
  const attributes: Record<string, boolean> = {
    background: background === spec.background,
    count: blobs.length === spec.objects.length,
  };
  spec.objects.forEach((o, j) => {
    const d = objects[j];
    const key = `object${j + 1}`;
    attributes[`${key}.color`] = d?.color === o.color;
    attributes[`${key}.shape`] = d?.shape === o.shape;
    if (spec.objects.length === 1) {
      attributes[`${key}.size`] = d?.size === o.size;
      attributes[`${key}.position`] = d?.position === o.position;
    }
  });
  if (spec.relation) {
    const [a, c] = objects;
    attributes.relation = !!a && !!c && relationSeen(spec.relation, a, c);
  }
  return {
    attributes,
    allCorrect: Object.values(attributes).every(Boolean),
    background,
    objects,
    blobCount: blobs.length,
  };
}

function relationSeen(relation: Relation, a: DetectedObject, b: DetectedObject): boolean {
  const dx = b.cx - a.cx;
  const dy = b.cy - a.cy;
  switch (relation) {
    case "left of":
      return dx > Math.max(RELATION_MIN_OFFSET, Math.abs(dy));
    case "right of":
      return -dx > Math.max(RELATION_MIN_OFFSET, Math.abs(dy));
    case "above":
      return dy > Math.max(RELATION_MIN_OFFSET, Math.abs(dx));
    case "below":
      return -dy > Math.max(RELATION_MIN_OFFSET, Math.abs(dx));
  }
}

function nearestPalette(r: number, g: number, bl: number): PaletteColor {
  let best: PaletteColor = "gray";
  let bestD = Infinity;
  for (const c of ALL_PALETTE) {
    const p = PALETTE[c];
    const d = (r - p[0]) ** 2 + (g - p[1]) ** 2 + (bl - p[2]) ** 2;
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best;
}

/** 8-connected components of each non-negative label. */
function components(label: Int8Array, size: number): Blob[] {
  const seen = new Uint8Array(label.length);
  const out: Blob[] = [];
  const stack: number[] = [];
  for (let start = 0; start < label.length; start++) {
    const k = label[start]!;
    if (k < 0 || seen[start]) continue;
    const blob: Blob = { color: k, pixels: [], x0: size, y0: size, x1: -1, y1: -1 };
    seen[start] = 1;
    stack.push(start);
    while (stack.length) {
      const i = stack.pop()!;
      const x = i % size;
      const y = (i - x) / size;
      blob.pixels.push(i);
      if (x < blob.x0) blob.x0 = x;
      if (x > blob.x1) blob.x1 = x;
      if (y < blob.y0) blob.y0 = y;
      if (y > blob.y1) blob.y1 = y;
      for (let ny = Math.max(0, y - 1); ny <= Math.min(size - 1, y + 1); ny++) {
        for (let nx = Math.max(0, x - 1); nx <= Math.min(size - 1, x + 1); nx++) {
          const j = ny * size + nx;
          if (!seen[j] && label[j] === k) {
            seen[j] = 1;
            stack.push(j);
          }
        }
      }
    }
    out.push(blob);
  }
  return out;
}

/** Fit the four shape templates to a blob's soft mask (see the module comment, step 5). */
function measure(blob: Blob, alpha: Float32Array, resid: Float32Array, label: Int8Array, explainer: Int8Array, size: number): DetectedObject {
  const scale = size / BASE_SIZE;
  // Window: blob bbox + margin, wide enough for any equal-area template placed on the centroid.
  const margin = 3 + Math.ceil(0.3 * Math.max(blob.x1 - blob.x0, blob.y1 - blob.y0));
  const wx0 = Math.max(0, blob.x0 - margin),
    wy0 = Math.max(0, blob.y0 - margin);
  const wx1 = Math.min(size - 1, blob.x1 + margin),
    wy1 = Math.min(size - 1, blob.y1 + margin);
  const w = wx1 - wx0 + 1,
    h = wy1 - wy0 + 1;
  const mask = new Float32Array(w * h);
  const inBlob = new Uint8Array(size * size);
  for (const i of blob.pixels) inBlob[i] = 1;
  const ring = Math.max(1, Math.round(RING * scale));
  let area = 0,
    sx = 0,
    sy = 0;
  for (let y = wy0; y <= wy1; y++) {
    for (let x = wx0; x <= wx1; x++) {
      const i = y * size + x;
      let m = 0;
      if (inBlob[i]) {
        m = alpha[i]!;
      } else if (label[i] === -1 && (explainer[i] === blob.color || resid[i]! <= RING_RESIDUAL) && touches(inBlob, x, y, size, ring)) {
        m = alpha[i]!;
      }
      if (m > 0) {
        mask[(y - wy0) * w + (x - wx0)] = m;
        area += m;
        sx += m * (x + 0.5);
        sy += m * (y + 0.5);
      }
    }
  }
  const mx = sx / area,
    my = sy / area;
  const shapeScores = {} as Record<Shape, number>;
  let bestShape: Shape = "circle";
  let bestScore = -1,
    bestExtent = 0,
    bestCy = my;
  for (const shape of SHAPES) {
    const extent = Math.sqrt(area / AREA_FACTOR[shape]);
    const cy = my - CENTROID_DY[shape] * extent;
    const sharp = coverage({ shape, cx: mx, cy, extent }, wx0, wy0, w, h);
    let score = 0;
    for (const sigma of BLUR_SIGMAS) {
      const tpl = sigma > 0 ? gaussianBlur(sharp, w, h, sigma * scale) : sharp;
      let inter = 0,
        union = 0;
      for (let i = 0; i < tpl.length; i++) {
        const a = mask[i]!,
          t = tpl[i]!;
        inter += Math.min(a, t);
        union += Math.max(a, t);
      }
      if (union > 0) score = Math.max(score, inter / union);
    }
    shapeScores[shape] = score;
    if (score > bestScore) [bestShape, bestScore, bestExtent, bestCy] = [shape, score, extent, cy];
  }
  const cx = mx / scale,
    cy = bestCy / scale,
    extent = bestExtent / scale;
  const col = nearestIndex(ANCHORS, cx);
  const row = nearestIndex(ANCHORS, cy);
  return {
    color: COLORS[blob.color]!,
    shape: bestShape,
    shapeScores,
    cx,
    cy,
    extent,
    size: extent < SIZE_THRESHOLD ? CAPTION_SIZES[0] : CAPTION_SIZES[1],
    position: POSITIONS[3 * row + col]!,
    area: blob.pixels.length,
  };
}

/** Separable Gaussian blur of a w x h map (zero outside). */
function gaussianBlur(src: Float32Array, w: number, h: number, sigma: number): Float32Array {
  const r = Math.max(1, Math.ceil(2.5 * sigma));
  const k = new Float32Array(2 * r + 1);
  let sum = 0;
  for (let i = -r; i <= r; i++) sum += k[i + r] = Math.exp((-i * i) / (2 * sigma * sigma));
  for (let i = 0; i < k.length; i++) k[i]! /= sum;
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let i = -r; i <= r; i++) if (x + i >= 0 && x + i < w) acc += k[i + r]! * src[y * w + x + i]!;
      tmp[y * w + x] = acc;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let i = -r; i <= r; i++) if (y + i >= 0 && y + i < h) acc += k[i + r]! * tmp[(y + i) * w + x]!;
      out[y * w + x] = acc;
    }
  }
  return out;
}

/** Whether (x, y) lies within `ring` pixels (Chebyshev distance) of the blob. */
function touches(inBlob: Uint8Array, x: number, y: number, size: number, ring: number): boolean {
  for (let ny = Math.max(0, y - ring); ny <= Math.min(size - 1, y + ring); ny++) {
    for (let nx = Math.max(0, x - ring); nx <= Math.min(size - 1, x + ring); nx++) {
      if (inBlob[ny * size + nx]) return true;
    }
  }
  return false;
}

function nearestIndex(values: readonly number[], v: number): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (Math.abs(values[i]! - v) < Math.abs(values[best]! - v)) best = i;
  return best;
}
