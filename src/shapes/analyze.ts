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
 *
 * Textured backgrounds (grammar.ts): before step 1, each border pixel is projected on the segment from each texture
 * color T to its partner P (plain backgrounds lie >= 75 away from every segment). If >= 60 % of the border lies
 * within TEXTURE_DISTANCE of one segment, the background is that texture color. Step 2 then explains a pixel by object color c
 * as a point of the triangle (T, P, c): p = (1 - a) (T + beta (P - T)) + a c, a and beta in [0, 1], projected by
 * least squares; the residual and the coefficient a play the roles they play on a plain background (white, collinear
 * with T and P, is not an object color there). The texture is read from beta over the pixels near the segment: a
 * plane in (x, y) fitted by least squares explains >= GRADIENT_R2 of its variance: "gradient"; else the row means or
 * the column means explain >= STRIPE_AXIS_SHARE of it: "striped"; else "noisy" (all three survive blur and noise);
 * with a standard deviation of beta under FLAT_BETA_STD, none (a flat background of that color: `texture` null).
 * A textured caption gets the attributes "background" (its color) and "texture"; a plain caption keeps
 * "background", which fails on a textured image.
 */
import { AtedmError } from "../errors.js";
import {
  BACKGROUNDS,
  CAPTION_SIZES,
  COLORS,
  PALETTE,
  POSITIONS,
  SHAPES,
  TEXTURE_COLORS,
  TEXTURE_PARTNER,
  parseCaption,
  type CaptionSize,
  type ObjectColor,
  type PaletteColor,
  type Position,
  type Relation,
  type Shape,
  type Texture,
  type TextureColor,
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

/** Max RGB distance from a texture's color-partner segment for a border pixel to count as that texture. */
export const TEXTURE_DISTANCE = 40;
/** Standard deviation of beta under which a background of a texture color is flat (no texture). */
export const FLAT_BETA_STD = 0.06;
/** Share of the variance of beta a fitted plane must explain for a texture to be a gradient. */
export const GRADIENT_R2 = 0.5;
/** Share of the variance of beta the row means (or the column means) must explain for a texture to be striped. */
export const STRIPE_AXIS_SHARE = 0.5;

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
  /** The texture seen (null: a plain background). */
  texture: Texture | null;
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

  // 1. Background (textured first, else the plain vote).
  const border: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = i % size;
    const y = (i - x) / size;
    if (x === 0 || y === 0 || x === size - 1 || y === size - 1) border.push(i);
  }
  const texColor = detectTextureColor(image, border);
  let background: PaletteColor = "gray";
  if (texColor) {
    background = texColor;
  } else {
    const votes = new Map<PaletteColor, number>();
    for (const i of border) {
      const c = nearestPalette(image[3 * i]!, image[3 * i + 1]!, image[3 * i + 2]!);
      votes.set(c, (votes.get(c) ?? 0) + 1);
    }
    let best = -1;
    for (const c of ALL_PALETTE) {
      const v = votes.get(c) ?? 0;
      if (v > best) [background, best] = [c, v];
    }
  }

  // 2. Pixel labels.
  const alpha = COLORS.map(() => new Float32Array(n));
  const resid = COLORS.map(() => new Float32Array(n));
  const label = new Int8Array(n).fill(-1);
  const colorIdx = COLORS.map((_, k) => k).filter((k) => COLORS[k] !== background && !(texColor && COLORS[k] === "white"));
  if (texColor) {
    for (const k of colorIdx) triangleLabels(image, PALETTE[texColor], TEXTURE_PARTNER[texColor], PALETTE[COLORS[k]!], alpha[k]!, resid[k]!);
  } else {
    const b = PALETTE[background];
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
  const texture = texColor ? classifyTexture(image, size, texColor) : null;

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
  if (spec.texture !== undefined) attributes.texture = texture === spec.texture;
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
    texture,
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

/** Projection of `p` on the segment a -> b: [beta in [0, 1], distance]. */
function segmentProjection(p0: number, p1: number, p2: number, a: readonly number[], b: readonly number[]): [number, number] {
  const d0 = b[0]! - a[0]!,
    d1 = b[1]! - a[1]!,
    d2 = b[2]! - a[2]!;
  const q0 = p0 - a[0]!,
    q1 = p1 - a[1]!,
    q2 = p2 - a[2]!;
  let t = (q0 * d0 + q1 * d1 + q2 * d2) / (d0 * d0 + d1 * d1 + d2 * d2);
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  return [t, Math.hypot(q0 - t * d0, q1 - t * d1, q2 - t * d2)];
}

/** The texture color whose color-partner segment explains the border (see the module comment), or null. */
function detectTextureColor(image: Uint8Array, border: number[]): TextureColor | null {
  let best: TextureColor | null = null;
  let bestNear = 0;
  for (const t of TEXTURE_COLORS) {
    let near = 0;
    for (const i of border) {
      const [, d] = segmentProjection(image[3 * i]!, image[3 * i + 1]!, image[3 * i + 2]!, PALETTE[t], TEXTURE_PARTNER[t]);
      if (d <= TEXTURE_DISTANCE) near++;
    }
    if (near >= 0.6 * border.length && near > bestNear) [best, bestNear] = [t, near];
  }
  return best;
}

/** Striped, gradient or noisy, from the beta of the pixels near the texture's segment (see the module comment). */
function classifyTexture(image: Uint8Array, size: number, t: TextureColor): Texture | null {
  const xs: number[] = [],
    ys: number[] = [],
    bs: number[] = [];
  for (let i = 0; i < size * size; i++) {
    const [b, d] = segmentProjection(image[3 * i]!, image[3 * i + 1]!, image[3 * i + 2]!, PALETTE[t], TEXTURE_PARTNER[t]);
    if (d > TEXTURE_DISTANCE) continue;
    const x = i % size;
    xs.push((x + 0.5) / size - 0.5);
    ys.push((i - x) / size / size + 0.5 / size - 0.5);
    bs.push(b);
  }
  const n = bs.length;
  if (n < 3) return null;
  const mean = bs.reduce((p, q) => p + q, 0) / n;
  let total = 0;
  for (const b of bs) total += (b - mean) ** 2;
  if (Math.sqrt(total / n) < FLAT_BETA_STD) return null;
  // Share of the variance a plane beta ~ c0 + c1 x + c2 y explains (least squares, 3x3 normal equations).
  const m = [0, 0, 0, 0, 0, 0, 0, 0, 0];
  const r = [0, 0, 0];
  for (let k = 0; k < n; k++) {
    const v = [1, xs[k]!, ys[k]!];
    for (let i = 0; i < 3; i++) {
      r[i]! += v[i]! * bs[k]!;
      for (let j = 0; j < 3; j++) m[3 * i + j]! += v[i]! * v[j]!;
    }
  }
  const c = solve3(m, r);
  let resid = 0;
  for (let k = 0; k < n; k++) resid += (bs[k]! - (c[0]! + c[1]! * xs[k]! + c[2]! * ys[k]!)) ** 2;
  if (1 - resid / total >= GRADIENT_R2) return "gradient";
  // Share of the variance explained by row means, and by column means: stripes are constant along one axis.
  const between = (key: number[]) => {
    const sum = new Map<number, [number, number]>();
    for (let k = 0; k < n; k++) {
      const e = sum.get(key[k]!) ?? [0, 0];
      e[0] += bs[k]!;
      e[1]++;
      sum.set(key[k]!, e);
    }
    let v = 0;
    for (const [s, cnt] of sum.values()) v += cnt * (s / cnt - mean) ** 2;
    return v / total;
  };
  return Math.max(between(xs), between(ys)) >= STRIPE_AXIS_SHARE ? "striped" : "noisy";
}

/** Solve the 3x3 system m c = r (Cramer's rule; zeros when singular). */
function solve3(m: number[], r: number[]): number[] {
  const det = (a: number[]) =>
    a[0]! * (a[4]! * a[8]! - a[5]! * a[7]!) - a[1]! * (a[3]! * a[8]! - a[5]! * a[6]!) + a[2]! * (a[3]! * a[7]! - a[4]! * a[6]!);
  const d = det(m);
  if (Math.abs(d) < 1e-12) return [0, 0, 0];
  return [0, 1, 2].map((j) => {
    const a = m.slice();
    for (let i = 0; i < 3; i++) a[3 * i + j] = r[i]!;
    return det(a) / d;
  });
}

/**
 * For every pixel, its least-squares projection on the triangle (t, p, c) = { (1 - a)(t + beta (p - t)) + a c }:
 * writes the coefficient a of c into `alpha` and the distance into `resid`.
 */
function triangleLabels(
  image: Uint8Array,
  t: readonly number[],
  p: readonly number[],
  c: readonly number[],
  alpha: Float32Array,
  resid: Float32Array,
): void {
  const e1 = [p[0]! - t[0]!, p[1]! - t[1]!, p[2]! - t[2]!];
  const e2 = [c[0]! - t[0]!, c[1]! - t[1]!, c[2]! - t[2]!];
  const e3 = [c[0]! - p[0]!, c[1]! - p[1]!, c[2]! - p[2]!];
  const dot = (a: number[], b: number[]) => a[0]! * b[0]! + a[1]! * b[1]! + a[2]! * b[2]!;
  const a11 = dot(e1, e1),
    a12 = dot(e1, e2),
    a22 = dot(e2, e2),
    a33 = dot(e3, e3);
  const det = a11 * a22 - a12 * a12;
  const q = [0, 0, 0];
  const dist = (u: number, v: number) =>
    Math.hypot(q[0]! - u * e1[0]! - v * e2[0]!, q[1]! - u * e1[1]! - v * e2[1]!, q[2]! - u * e1[2]! - v * e2[2]!);
  const clamp = (x: number) => (x < 0 ? 0 : x > 1 ? 1 : x);
  for (let i = 0; i < alpha.length; i++) {
    q[0] = image[3 * i]! - t[0]!;
    q[1] = image[3 * i + 1]! - t[1]!;
    q[2] = image[3 * i + 2]! - t[2]!;
    const b1 = dot(q, e1),
      b2 = dot(q, e2);
    const u = (a22 * b1 - a12 * b2) / det,
      v = (a11 * b2 - a12 * b1) / det;
    if (u >= 0 && v >= 0 && u + v <= 1) {
      alpha[i] = v;
      resid[i] = dist(u, v);
      continue;
    }
    // Closest point on the three edges: t -> p (a = 0), t -> c (beta = 0), p -> c (beta = 1).
    const u1 = clamp(b1 / a11);
    let bestV = 0,
      bestR = dist(u1, 0);
    const v2 = clamp(b2 / a22);
    const r2 = dist(0, v2);
    if (r2 < bestR) [bestV, bestR] = [v2, r2];
    const s3 = clamp((dot(q, e3) - dot(e1, e3)) / a33);
    const r3 = dist(1 - s3, s3);
    if (r3 < bestR) [bestV, bestR] = [s3, r3];
    alpha[i] = bestV;
    resid[i] = bestR;
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
