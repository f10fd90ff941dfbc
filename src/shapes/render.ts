/**
 * Deterministic, anti-aliased renderer of shapes scenes.
 *
 * Geometry (in units of a 32-pixel image; other square sizes scale it):
 *  - a shape of extent e has an e x e bounding box centred on its anchor:
 *    circle = disc of diameter e; square = e x e; triangle = apex up, base e, height e;
 *    cross = plus sign of two e x e/3 bars;
 *  - anchors: the 3x3 grid's columns / rows sit at x, y in ANCHORS = {6.5, 16, 25.5}. The grid cells are 32/3 wide,
 *    but their centres (5.33, 16, 26.67) would push a large shape over the image edge; 6.5 keeps a large shape
 *    (plus jitter) inside the image and the nearest-anchor boundaries (11.25, 20.75) stay close to the cell
 *    boundaries (10.67, 21.33);
 *  - extents: small 7, large 12 (area ratio 2.9), medium 8 (both objects of a two-object scene);
 *  - jitter: the anchor moves by a uniform offset in [-j, j] on each axis, j = 1 (small), 0.5 (large),
 *    0.25 (medium: neighbouring medium shapes, 9.5 apart, keep a gap >= 1 px, so no pixel mixes two objects);
 *  - each pixel averages 4x4 samples; a sample takes the color of the last object covering it, else the
 *    background, so touching objects blend correctly.
 *  - textured backgrounds (see grammar.ts) mix the texture color T and its partner P as T + beta (P - T), rounded per
 *    pixel: "striped" = bands STRIPE_WIDTH wide (32-pixel units, whole pixels), beta 0 / 1 alternating, horizontal or
 *    vertical, random phase; "gradient" = beta ramping linearly 0 -> 1 across the image over pixel centres, one of 4
 *    directions; "noisy" = beta uniform in [0, 1) per square cell NOISE_CELL wide. Those draws come after the jitter
 *    (orientation, then phase; direction; cells row-major), so plain scenes draw exactly what they always drew.
 * Output: HWC RGB u8.
 */
import { AtedmError } from "../errors.js";
import { checkScene, PALETTE, positionCell, TEXTURE_PARTNER, type SceneSpec, type Shape, type Size, type TextureColor } from "./grammar.js";
import { randInt, type Rng } from "../util/numerics.js";
import { uniform } from "./rng.js";

/** Reference image size the geometry constants are given in. */
export const BASE_SIZE = 32;
export const ANCHORS = [6.5, 16, 25.5] as const;
export const EXTENT: Readonly<Record<Size, number>> = { small: 7, medium: 8, large: 12 };
export const JITTER: Readonly<Record<Size, number>> = { small: 1, medium: 0.25, large: 0.5 };
/** Width of one stripe of a striped background (32-pixel units; rounded to whole pixels, at least 1). */
export const STRIPE_WIDTH = 2;
/** Side of one cell of a noisy background (32-pixel units; rounded to whole pixels, at least 1). */
export const NOISE_CELL = 1;
/** Samples per pixel along each axis. */
export const SUPERSAMPLE = 4;

/** Area of a shape of extent e is AREA_FACTOR * e^2. */
export const AREA_FACTOR: Readonly<Record<Shape, number>> = {
  circle: Math.PI / 4,
  square: 1,
  triangle: 0.5,
  cross: 5 / 9,
};

/** Offset (in units of the extent) of the area centroid below the bounding-box centre. */
export const CENTROID_DY: Readonly<Record<Shape, number>> = { circle: 0, square: 0, triangle: 1 / 6, cross: 0 };

type Inside = (dx: number, dy: number, half: number) => boolean;

/** Point-in-shape tests relative to the bbox centre, for a shape of half-extent `half`. */
export const INSIDE: Readonly<Record<Shape, Inside>> = {
  circle: (dx, dy, h) => dx * dx + dy * dy <= h * h,
  square: (dx, dy, h) => dx >= -h && dx <= h && dy >= -h && dy <= h,
  triangle: (dx, dy, h) => dy >= -h && dy <= h && Math.abs(dx) <= (dy + h) * 0.5,
  cross: (dx, dy, h) => {
    const adx = Math.abs(dx);
    const ady = Math.abs(dy);
    const t = h / 3;
    return (adx <= t && ady <= h) || (ady <= t && adx <= h);
  },
};

/** A placed shape in pixel coordinates (pixel (x, y) covers [x, x+1) x [y, y+1)). */
export interface PlacedShape {
  shape: Shape;
  cx: number;
  cy: number;
  extent: number;
}

/**
 * Fraction of each pixel of the window [x0, x0+w) x [y0, y0+h) covered by `s`, by ss x ss supersampling
 * (row-major Float32Array of w*h). The same rasteriser as the renderer: the analyzer matches against it.
 */
export function coverage(s: PlacedShape, x0: number, y0: number, w: number, h: number, ss = SUPERSAMPLE): Float32Array {
  const out = new Float32Array(w * h);
  const inside = INSIDE[s.shape];
  const half = s.extent / 2;
  const inv = 1 / (ss * ss);
  for (let y = 0; y < h; y++) {
    const py = y0 + y;
    if (py + 1 < s.cy - half || py > s.cy + half) continue;
    for (let x = 0; x < w; x++) {
      const px = x0 + x;
      if (px + 1 < s.cx - half || px > s.cx + half) continue;
      let n = 0;
      for (let sy = 0; sy < ss; sy++) {
        const dy = py + (sy + 0.5) / ss - s.cy;
        for (let sx = 0; sx < ss; sx++) {
          if (inside(px + (sx + 0.5) / ss - s.cx, dy, half)) n++;
        }
      }
      out[y * w + x] = n * inv;
    }
  }
  return out;
}

export interface RenderOptions {
  /** Image side in pixels (default 32); the geometry scales with it. */
  size?: number;
  /** Source of the anchor jitter; without one, shapes sit exactly on their anchors. */
  rng?: Rng;
}

/** Where the objects of `spec` land: anchors, plus jitter drawn from `rng` (x then y, object by object). */
export function placeScene(spec: SceneSpec, size = BASE_SIZE, rng?: Rng): PlacedShape[] {
  const scale = size / BASE_SIZE;
  return spec.objects.map((o) => {
    const { row, col } = positionCell(o.position);
    const j = JITTER[o.size];
    const jx = rng ? uniform(rng, -j, j) : 0;
    const jy = rng ? uniform(rng, -j, j) : 0;
    return { shape: o.shape, cx: (ANCHORS[col]! + jx) * scale, cy: (ANCHORS[row]! + jy) * scale, extent: EXTENT[o.size] * scale };
  });
}

/** Render a scene as a size x size HWC RGB u8 image. */
export function renderScene(spec: SceneSpec, options: RenderOptions = {}): Uint8Array {
  const size = options.size ?? BASE_SIZE;
  const out = new Uint8Array(size * size * 3);
  renderSceneInto(spec, out, 0, size, options.rng);
  return out;
}

/** Render into `out` at byte `offset` (for writing many images into one buffer without copies). */
export function renderSceneInto(spec: SceneSpec, out: Uint8Array, offset: number, size = BASE_SIZE, rng?: Rng): void {
  if (!Number.isInteger(size) || size < 8) throw new AtedmError(`shapes: image size must be an integer >= 8, got ${size}`);
  if (offset < 0 || offset + size * size * 3 > out.length) {
    throw new AtedmError(`shapes: output buffer too small for a ${size}x${size} image at offset ${offset}`);
  }
  checkScene(spec);
  const placed = placeScene(spec, size, rng);
  const bgPixels = spec.texture === undefined ? null : textureBackground(spec, size, rng);
  const bg = PALETTE[spec.background];
  const end = offset + size * size * 3;
  if (bgPixels) {
    out.set(bgPixels, offset);
  } else {
    for (let i = offset; i < end; i += 3) {
      out[i] = bg[0];
      out[i + 1] = bg[1];
      out[i + 2] = bg[2];
    }
  }
  const colors = spec.objects.map((o) => PALETTE[o.color]);
  const boxes = placed.map((p) => {
    const h = p.extent / 2;
    return [
      Math.max(0, Math.floor(p.cx - h)),
      Math.max(0, Math.floor(p.cy - h)),
      Math.min(size - 1, Math.floor(p.cx + h)),
      Math.min(size - 1, Math.floor(p.cy + h)),
    ] as const;
  });
  const insides = placed.map((p) => INSIDE[p.shape]);
  const halves = placed.map((p) => p.extent / 2);
  const ss = SUPERSAMPLE;
  const nSamples = ss * ss;
  const cand: number[] = [];
  const x0 = Math.min(...boxes.map((b) => b[0]));
  const y0 = Math.min(...boxes.map((b) => b[1]));
  const x1 = Math.max(...boxes.map((b) => b[2]));
  const y1 = Math.max(...boxes.map((b) => b[3]));
  for (let py = y0; py <= y1; py++) {
    for (let px = x0; px <= x1; px++) {
      cand.length = 0;
      for (let k = 0; k < boxes.length; k++) {
        const b = boxes[k]!;
        if (px >= b[0] && px <= b[2] && py >= b[1] && py <= b[3]) cand.push(k);
      }
      if (cand.length === 0) continue;
      let r = 0,
        g = 0,
        bl = 0,
        covered = 0;
      for (let sy = 0; sy < ss; sy++) {
        const yy = py + (sy + 0.5) / ss;
        for (let sx = 0; sx < ss; sx++) {
          const xx = px + (sx + 0.5) / ss;
          for (let c = cand.length - 1; c >= 0; c--) {
            const k = cand[c]!;
            const p = placed[k]!;
            if (insides[k]!(xx - p.cx, yy - p.cy, halves[k]!)) {
              const col = colors[k]!;
              r += col[0];
              g += col[1];
              bl += col[2];
              covered++;
              break;
            }
          }
        }
      }
      if (covered === 0) continue;
      const rest = nSamples - covered;
      const i = offset + (py * size + px) * 3;
      if (bgPixels) {
        const j = (py * size + px) * 3;
        out[i] = Math.round((r + rest * bgPixels[j]!) / nSamples);
        out[i + 1] = Math.round((g + rest * bgPixels[j + 1]!) / nSamples);
        out[i + 2] = Math.round((bl + rest * bgPixels[j + 2]!) / nSamples);
        continue;
      }
      out[i] = Math.round((r + rest * bg[0]) / nSamples);
      out[i + 1] = Math.round((g + rest * bg[1]) / nSamples);
      out[i + 2] = Math.round((bl + rest * bg[2]) / nSamples);
    }
  }
}

/**
 * The mix coefficient beta (0: texture color, 1: its partner) of every pixel of a textured background, row-major.
 * Draws from `rng` as documented in the module comment; without an rng: horizontal stripes at phase 0, a left-to-right
 * ramp, and noise from a fixed seed-free pattern (a hash of the cell).
 */
export function textureBeta(texture: NonNullable<SceneSpec["texture"]>, size: number, rng?: Rng): Float32Array {
  const beta = new Float32Array(size * size);
  const scale = size / BASE_SIZE;
  if (texture === "striped") {
    const w = Math.max(1, Math.round(STRIPE_WIDTH * scale));
    const vertical = rng ? randInt(rng, 2) === 1 : false;
    const phase = rng ? randInt(rng, 2 * w) : 0;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        beta[y * size + x] = Math.floor(((vertical ? x : y) + phase) / w) % 2;
      }
    }
  } else if (texture === "gradient") {
    const dir = rng ? randInt(rng, 4) : 0;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const t = ((dir < 2 ? x : y) + 0.5) / size;
        beta[y * size + x] = dir % 2 === 0 ? t : 1 - t;
      }
    }
  } else {
    const c = Math.max(1, Math.round(NOISE_CELL * scale));
    const cells = Math.ceil(size / c);
    const v = new Float32Array(cells * cells);
    for (let i = 0; i < v.length; i++) v[i] = rng ? rng.next() : ((Math.imul(i + 1, 0x9e3779b1) >>> 0) % 1000) / 1000;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) beta[y * size + x] = v[Math.floor(y / c) * cells + Math.floor(x / c)]!;
    }
  }
  return beta;
}

/** The textured background of `spec` as size x size HWC RGB u8 (T + beta (P - T), rounded). */
function textureBackground(spec: SceneSpec, size: number, rng?: Rng): Uint8Array {
  const beta = textureBeta(spec.texture!, size, rng);
  const t = PALETTE[spec.background];
  const p = TEXTURE_PARTNER[spec.background as TextureColor];
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < beta.length; i++) {
    const b = beta[i]!;
    for (let k = 0; k < 3; k++) out[3 * i + k] = Math.round(t[k]! + b * (p[k]! - t[k]!));
  }
  return out;
}
