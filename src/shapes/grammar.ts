/**
 * The caption grammar of the synthetic shapes data set.
 *
 * One-object captions:  "a {size} {color} {shape} at the {position} on a {background} background"
 * Two-object captions:  "a {color} {shape} {relation} a {color} {shape} on a {background} background"
 *
 * Rules beyond the templates (they keep every caption unambiguous to render and to judge):
 *  - no object has the color of the background;
 *  - the two objects of a two-object scene have different colors (so each can be found by its color);
 *  - two-object scenes are laid out on the 3x3 grid with the relation along one axis: "A left of B" / "A right of B"
 *    puts both in the same row, "A above B" / "A below B" in the same column. Their size is "medium", which no
 *    caption names.
 *
 * The article is always "a" (also before "orange"): the templates are fixed strings, not English.
 *
 * Textured backgrounds (grammar extension for the 64x64 scene set; the sampler draws them only when asked, see
 * `SampleOptions.textureFraction`, so plain data sets are unchanged). The background phrase "on a {background}
 * background" may instead be one of
 *    "on a striped {tcolor} background"   stripes of the color and its partner (horizontal or vertical)
 *    "on a {tcolor} gradient background"  a linear ramp from the color to its partner (one of 4 directions)
 *    "on a noisy {tcolor} background"     a random per-cell mix of the color and its partner
 * with {tcolor} in TEXTURE_COLORS (red, green, blue). The partner is a fixed tint of the color, 60 % of the way to
 * white (`TEXTURE_PARTNER`); stripe orientation and phase, ramp direction and the noise are drawn from the seed.
 * Extra rules: on a textured background no object is white (white is collinear with the color and its tint) and no
 * object has the texture's color; the two objects still differ in color.
 */
import { AtedmError } from "../errors.js";
import { randInt, stableHash32, type Rng } from "../util/numerics.js";
import { pick } from "./rng.js";

/** Bump when captions, palette, geometry or the held-out rule change: a data set records it in meta.json. */
export const GRAMMAR_VERSION = 2;

export const COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"] as const;
export const BACKGROUNDS = ["white", "black", "gray"] as const;
export const SHAPES = ["circle", "square", "triangle", "cross"] as const;
/** Sizes a caption can name (one-object scenes). */
export const CAPTION_SIZES = ["small", "large"] as const;
/** Row-major 3x3 grid: index = 3 * row + col. */
export const POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"] as const;
export const RELATIONS = ["left of", "right of", "above", "below"] as const;
/** Background textures a caption can name (plain backgrounds name none). */
export const TEXTURES = ["striped", "gradient", "noisy"] as const;
/** Colors a textured background can have. */
export const TEXTURE_COLORS = ["red", "green", "blue"] as const;
/** Bump when the textured part of the grammar (wording, partner tints, texture geometry) changes; recorded by exports with textures. */
export const TEXTURE_GRAMMAR_VERSION = 1;

export type ObjectColor = (typeof COLORS)[number];
export type Background = (typeof BACKGROUNDS)[number];
export type Shape = (typeof SHAPES)[number];
export type CaptionSize = (typeof CAPTION_SIZES)[number];
/** "medium" is the fixed size of both objects in a two-object scene; captions never name it. */
export type Size = CaptionSize | "medium";
export type Position = (typeof POSITIONS)[number];
export type Relation = (typeof RELATIONS)[number];
export type PaletteColor = ObjectColor | Background;
export type Texture = (typeof TEXTURES)[number];
export type TextureColor = (typeof TEXTURE_COLORS)[number];
/** The color a caption gives the background: a plain background color, or a texture color with `texture` set. */
export type BackgroundColor = Background | TextureColor;
/**
 * sRGB values of every color word. Chosen far apart: the closest pair (yellow/orange) is ~99 apart in RGB
 * Euclidean distance, every other pair >= 114, so nearest-color classification survives blur and noise.
 */
export const PALETTE: Readonly<Record<PaletteColor, readonly [number, number, number]>> = {
  red: [220, 20, 20],
  green: [30, 170, 50],
  blue: [30, 70, 230],
  yellow: [245, 230, 40],
  purple: [140, 40, 200],
  orange: [255, 140, 0],
  white: [255, 255, 255],
  black: [0, 0, 0],
  gray: [128, 128, 128],
};
/** How far (0..1) a texture's partner is from its color towards white. */
export const TEXTURE_TINT = 0.6;
/** The fixed contrast partner of each texture color: the color tinted TEXTURE_TINT of the way to white (unrounded). */
export const TEXTURE_PARTNER: Readonly<Record<TextureColor, readonly [number, number, number]>> = Object.fromEntries(
  TEXTURE_COLORS.map((c) => {
    const p = PALETTE[c];
    return [c, [0, 1, 2].map((k) => p[k]! + TEXTURE_TINT * (255 - p[k]!)) as unknown as readonly [number, number, number]];
  }),
) as Record<TextureColor, readonly [number, number, number]>;

export interface SceneObject {
  color: ObjectColor;
  shape: Shape;
  size: Size;
  position: Position;
}

export interface SceneSpec {
  /** Plain: one of BACKGROUNDS. Textured (`texture` set): one of TEXTURE_COLORS. */
  background: BackgroundColor;
  /** A textured background; absent for a plain one. */
  texture?: Texture;
  /** One or two objects; for two, `objects[0]` is the caption's subject ("A" in "A left of B"). */
  objects: SceneObject[];
  /** Only for two-object scenes: how objects[0] stands relative to objects[1]. */
  relation?: Relation;
}

export function positionCell(position: Position): { row: number; col: number } {
  const i = POSITIONS.indexOf(position);
  return { row: Math.floor(i / 3), col: i % 3 };
}

export function cellPosition(row: number, col: number): Position {
  return POSITIONS[3 * row + col]!;
}

/** The colors an object may have on `background` (plain) or on a texture of color `background`. */
export function colorsFor(background: BackgroundColor, textured = false): ObjectColor[] {
  return COLORS.filter((c) => c !== background && !(textured && c === "white"));
}

/** The backgrounds an object (or objects) of these colors may stand on. */
export function backgroundsFor(...colors: ObjectColor[]): Background[] {
  return BACKGROUNDS.filter((b) => !colors.includes(b as ObjectColor));
}

/** The texture colors an object (or objects) of these colors may stand on (none for a white object). */
export function textureColorsFor(...colors: ObjectColor[]): TextureColor[] {
  if (colors.includes("white")) return [];
  return TEXTURE_COLORS.filter((b) => !colors.includes(b as ObjectColor));
}

/** Whether the cells of `a` and `b` satisfy "a {relation} b" with the layout rule of the grammar. */
export function relationHolds(relation: Relation, a: Position, b: Position): boolean {
  const pa = positionCell(a);
  const pb = positionCell(b);
  switch (relation) {
    case "left of":
      return pa.row === pb.row && pa.col < pb.col;
    case "right of":
      return pa.row === pb.row && pa.col > pb.col;
    case "above":
      return pa.col === pb.col && pa.row < pb.row;
    case "below":
      return pa.col === pb.col && pa.row > pb.row;
  }
}

/** Throw an AtedmError naming the problem when `spec` is outside the grammar. */
export function checkScene(spec: SceneSpec): void {
  const where = () => JSON.stringify(spec);
  if (spec.texture === undefined) {
    if (!BACKGROUNDS.includes(spec.background as Background)) throw new AtedmError(`shapes: unknown background in ${where()}`);
  } else {
    if (!TEXTURES.includes(spec.texture)) throw new AtedmError(`shapes: unknown texture in ${where()}`);
    if (!TEXTURE_COLORS.includes(spec.background as TextureColor)) throw new AtedmError(`shapes: unknown texture color in ${where()}`);
  }
  for (const o of spec.objects) {
    if (!COLORS.includes(o.color)) throw new AtedmError(`shapes: unknown color '${o.color}' in ${where()}`);
    if (!SHAPES.includes(o.shape)) throw new AtedmError(`shapes: unknown shape '${o.shape}' in ${where()}`);
    if (!POSITIONS.includes(o.position)) throw new AtedmError(`shapes: unknown position '${o.position}' in ${where()}`);
    if ((o.color as string) === spec.background) {
      throw new AtedmError(`shapes: a ${o.color} object on a ${spec.background} background is outside the grammar`);
    }
    if (spec.texture !== undefined && o.color === "white") {
      throw new AtedmError(`shapes: a white object on a textured background is outside the grammar`);
    }
  }
  if (spec.objects.length === 1) {
    const o = spec.objects[0]!;
    if (!CAPTION_SIZES.includes(o.size as CaptionSize)) {
      throw new AtedmError(`shapes: a one-object scene needs size small or large, got '${o.size}'`);
    }
    if (spec.relation !== undefined) throw new AtedmError(`shapes: a one-object scene has no relation`);
  } else if (spec.objects.length === 2) {
    const [a, b] = spec.objects as [SceneObject, SceneObject];
    if (spec.relation === undefined || !RELATIONS.includes(spec.relation)) {
      throw new AtedmError(`shapes: a two-object scene needs a relation, got ${JSON.stringify(spec.relation)}`);
    }
    if (a.size !== "medium" || b.size !== "medium") {
      throw new AtedmError(`shapes: both objects of a two-object scene are size medium`);
    }
    if (a.color === b.color) throw new AtedmError(`shapes: the two objects must differ in color (both ${a.color})`);
    if (!relationHolds(spec.relation, a.position, b.position)) {
      throw new AtedmError(`shapes: positions ${a.position} / ${b.position} do not satisfy '${spec.relation}'`);
    }
  } else {
    throw new AtedmError(`shapes: a scene has one or two objects, got ${spec.objects.length}`);
  }
}

/** The background phrase of a caption: "{color}" (plain), "striped {color}", "{color} gradient", "noisy {color}". */
export function backgroundPhrase(background: BackgroundColor, texture?: Texture): string {
  switch (texture) {
    case undefined:
      return background;
    case "striped":
      return `striped ${background}`;
    case "gradient":
      return `${background} gradient`;
    case "noisy":
      return `noisy ${background}`;
  }
}

/** The caption of a scene (validated). */
export function captionOf(spec: SceneSpec): string {
  checkScene(spec);
  const bg = backgroundPhrase(spec.background, spec.texture);
  if (spec.objects.length === 1) {
    const o = spec.objects[0]!;
    return `a ${o.size} ${o.color} ${o.shape} at the ${o.position} on a ${bg} background`;
  }
  const [a, b] = spec.objects as [SceneObject, SceneObject];
  return `a ${a.color} ${a.shape} ${spec.relation} a ${b.color} ${b.shape} on a ${bg} background`;
}

const alt = (words: readonly string[]) => `(${words.join("|")})`;
const ONE_RE = new RegExp(`^a ${alt(CAPTION_SIZES)} ${alt(COLORS)} ${alt(SHAPES)} at the ${alt(POSITIONS)} on a ${alt(BACKGROUNDS)} background$`);
const TWO_RE = new RegExp(`^a ${alt(COLORS)} ${alt(SHAPES)} ${alt(RELATIONS)} a ${alt(COLORS)} ${alt(SHAPES)} on a ${alt(BACKGROUNDS)} background$`);
/** A textured background phrase: groups (striped|noisy, color) or (color, gradient). */
const TEX_BG = `(?:(striped|noisy) ${alt(TEXTURE_COLORS)}|${alt(TEXTURE_COLORS)} (gradient))`;
const ONE_TEX_RE = new RegExp(`^a ${alt(CAPTION_SIZES)} ${alt(COLORS)} ${alt(SHAPES)} at the ${alt(POSITIONS)} on a ${TEX_BG} background$`);
const TWO_TEX_RE = new RegExp(`^a ${alt(COLORS)} ${alt(SHAPES)} ${alt(RELATIONS)} a ${alt(COLORS)} ${alt(SHAPES)} on a ${TEX_BG} background$`);

/** (background color, texture) from the 4 groups of TEX_BG starting at `m[i]`. */
function texturedBackground(m: RegExpExecArray, i: number): { background: TextureColor; texture: Texture } {
  if (m[i] !== undefined) return { texture: m[i] as Texture, background: m[i + 1] as TextureColor };
  return { texture: m[i + 3] as Texture, background: m[i + 2] as TextureColor };
}

/** Canonical cells for a parsed two-object caption (the caption does not say where on the grid they are). */
const CANONICAL_PAIR: Record<Relation, [Position, Position]> = {
  "left of": ["left", "right"],
  "right of": ["right", "left"],
  above: ["top", "bottom"],
  below: ["bottom", "top"],
};

/** Whether a caption names a textured background (syntactically; it may still be outside the grammar). */
export function isTexturedCaption(text: string): boolean {
  const norm = normalizeCaption(text);
  return ONE_TEX_RE.test(norm) || TWO_TEX_RE.test(norm);
}

/**
 * The scene a caption describes; the inverse of `captionOf`. Case and runs of whitespace are normalised; anything
 * else outside the grammar throws an AtedmError. Two-object captions get canonical cells (middle row / middle
 * column, outer cells) since the caption does not fix them.
 */
export function parseCaption(text: string): SceneSpec {
  const norm = normalizeCaption(text);
  const one = ONE_RE.exec(norm);
  const two = one ? null : TWO_RE.exec(norm);
  const oneTex = one || two ? null : ONE_TEX_RE.exec(norm);
  const twoTex = one || two || oneTex ? null : TWO_TEX_RE.exec(norm);
  let spec: SceneSpec;
  if (one) {
    spec = {
      background: one[5] as Background,
      objects: [{ size: one[1] as CaptionSize, color: one[2] as ObjectColor, shape: one[3] as Shape, position: one[4] as Position }],
    };
  } else if (two) {
    spec = { background: two[6] as Background, ...twoObjects(two) };
  } else if (oneTex) {
    spec = {
      ...texturedBackground(oneTex, 5),
      objects: [{ size: oneTex[1] as CaptionSize, color: oneTex[2] as ObjectColor, shape: oneTex[3] as Shape, position: oneTex[4] as Position }],
    };
  } else if (twoTex) {
    spec = { ...texturedBackground(twoTex, 6), ...twoObjects(twoTex) };
  } else {
    throw new AtedmError(`shapes: caption outside the grammar: ${JSON.stringify(text)}`);
  }
  try {
    checkScene(spec);
  } catch (e) {
    throw new AtedmError(`shapes: caption outside the grammar: ${JSON.stringify(text)} (${(e as Error).message})`);
  }
  return spec;
}

function twoObjects(m: RegExpExecArray): { relation: Relation; objects: SceneObject[] } {
  const relation = m[3] as Relation;
  const [pa, pb] = CANONICAL_PAIR[relation];
  return {
    relation,
    objects: [
      { color: m[1] as ObjectColor, shape: m[2] as Shape, size: "medium", position: pa },
      { color: m[4] as ObjectColor, shape: m[5] as Shape, size: "medium", position: pb },
    ],
  };
}

/**
 * Held-out split: a one-object caption is held out iff `stableHash32(caption) % 7 === 0` (237 of 1584, ~15 % of the one-object
 * space, every attribute value still present in the rest). Two-object captions are never held out. Training data
 * never contains a held-out caption, so an eval can prompt with combinations the model never saw.
 *
 * Textured captions follow the same rule: a one-object caption on a textured background is held out iff
 * `stableHash32(caption) % 7 === 0` (see `HELD_OUT_RULE_TEXTURED`; 544 of the 3888 textured one-object captions),
 * textured two-object captions are never held out. The plain part of the split is unchanged.
 */
export const HELD_OUT_RULE = "one-object captions with stableHash32(caption) % 7 === 0 (FNV-1a 32 + fmix32 over UTF-8)";
/** The rule as recorded by exports that include textured backgrounds. */
export const HELD_OUT_RULE_TEXTURED =
  "one-object captions (plain or textured background) with stableHash32(caption) % 7 === 0 (FNV-1a 32 + fmix32 over UTF-8)";

export function isHeldOut(caption: string): boolean {
  const norm = normalizeCaption(caption);
  if (!ONE_RE.test(norm) && !ONE_TEX_RE.test(norm)) return false;
  return stableHash32(norm) % 7 === 0;
}

/** Trim, collapse whitespace runs to one space, lowercase. */
export function normalizeCaption(text: string): string {
  return text.trim().replace(/\s+/g, " ").toLowerCase();
}

/** Every one-object caption in the grammar (8*4*2*9*3 minus same-color-as-background = 1584), in a fixed order. */
export function allOneObjectCaptions(): string[] {
  const out: string[] = [];
  for (const background of BACKGROUNDS) {
    for (const color of colorsFor(background)) {
      for (const shape of SHAPES) {
        for (const size of CAPTION_SIZES) {
          for (const position of POSITIONS) {
            out.push(captionOf({ background, objects: [{ color, shape, size, position }] }));
          }
        }
      }
    }
  }
  return out;
}

/** Every one-object caption on a textured background (3 textures * 3 colors * 6 object colors * 4 * 2 * 9 = 3888), in a fixed order. */
export function allTexturedOneObjectCaptions(): string[] {
  const out: string[] = [];
  for (const texture of TEXTURES) {
    for (const background of TEXTURE_COLORS) {
      for (const color of colorsFor(background, true)) {
        for (const shape of SHAPES) {
          for (const size of CAPTION_SIZES) {
            for (const position of POSITIONS) {
              out.push(captionOf({ background, texture, objects: [{ color, shape, size, position }] }));
            }
          }
        }
      }
    }
  }
  return out;
}

export interface SampleOptions {
  /** Probability of a two-object scene (default 0.25). */
  twoObjectFraction?: number;
  /** Resample until the caption is not held out (training data). Default false. */
  excludeHeldOut?: boolean;
  /**
   * Probability of a textured background (default 0: the sampler then draws exactly what it drew before textures
   * existed, number for number).
   */
  textureFraction?: number;
}

/**
 * A random scene. Each attribute is uniform: color, shape, size and cell uniformly; the background uniformly among
 * those the object color(s) allow; for two objects the relation uniformly, the two colors uniformly among distinct
 * pairs, and the pair of cells uniformly among those satisfying the relation. With `textureFraction` > 0 one extra
 * draw first decides plain or textured; a textured scene draws its texture uniformly, the object color(s) uniformly
 * among non-white colors, then the texture color uniformly among those the object color(s) allow.
 */
export function sampleScene(rng: Rng, options: SampleOptions = {}): SceneSpec {
  const twoObjectFraction = options.twoObjectFraction ?? 0.25;
  if (!(twoObjectFraction >= 0 && twoObjectFraction <= 1)) {
    throw new AtedmError(`shapes: twoObjectFraction must be in [0, 1], got ${twoObjectFraction}`);
  }
  const textureFraction = options.textureFraction ?? 0;
  if (!(textureFraction >= 0 && textureFraction <= 1)) {
    throw new AtedmError(`shapes: textureFraction must be in [0, 1], got ${textureFraction}`);
  }
  for (;;) {
    const textured = textureFraction > 0 && rng.next() < textureFraction;
    if (rng.next() < twoObjectFraction) return textured ? sampleTwoTextured(rng) : sampleTwo(rng);
    // Plain one-object scenes resample only the scene (as before textures); textured ones start over.
    if (!textured) {
      for (;;) {
        const spec = sampleOne(rng);
        if (!(options.excludeHeldOut && isHeldOut(captionOf(spec)))) return spec;
      }
    }
    const spec = sampleOneTextured(rng);
    if (!(options.excludeHeldOut && isHeldOut(captionOf(spec)))) return spec;
  }
}

function sampleOne(rng: Rng): SceneSpec {
  const color = pick(rng, COLORS);
  const background = pick(rng, backgroundsFor(color));
  return {
    background,
    objects: [{ color, shape: pick(rng, SHAPES), size: pick(rng, CAPTION_SIZES), position: pick(rng, POSITIONS) }],
  };
}

const NON_WHITE: ObjectColor[] = COLORS.filter((c) => c !== "white");

function sampleOneTextured(rng: Rng): SceneSpec {
  const texture = pick(rng, TEXTURES);
  const color = pick(rng, NON_WHITE);
  const background = pick(rng, textureColorsFor(color));
  return {
    background,
    texture,
    objects: [{ color, shape: pick(rng, SHAPES), size: pick(rng, CAPTION_SIZES), position: pick(rng, POSITIONS) }],
  };
}

const ORDERED_PAIRS: Array<[number, number]> = [
  [0, 1],
  [0, 2],
  [1, 2],
];

function sampleTwo(rng: Rng): SceneSpec {
  const relation = pick(rng, RELATIONS);
  const ca = pick(rng, COLORS);
  const cb = pick(
    rng,
    COLORS.filter((c) => c !== ca),
  );
  const background = pick(rng, backgroundsFor(ca, cb));
  return { background, ...layoutTwo(rng, relation, ca, cb) };
}

function sampleTwoTextured(rng: Rng): SceneSpec {
  const texture = pick(rng, TEXTURES);
  const relation = pick(rng, RELATIONS);
  const ca = pick(rng, NON_WHITE);
  const cb = pick(
    rng,
    NON_WHITE.filter((c) => c !== ca),
  );
  const background = pick(rng, textureColorsFor(ca, cb));
  return { background, texture, ...layoutTwo(rng, relation, ca, cb) };
}

function layoutTwo(rng: Rng, relation: Relation, ca: ObjectColor, cb: ObjectColor): { relation: Relation; objects: SceneObject[] } {
  const line = randInt(rng, 3);
  const [lo, hi] = pick(rng, ORDERED_PAIRS);
  const first = relation === "left of" || relation === "above" ? lo : hi;
  const second = first === lo ? hi : lo;
  const horizontal = relation === "left of" || relation === "right of";
  const pa = horizontal ? cellPosition(line, first) : cellPosition(first, line);
  const pb = horizontal ? cellPosition(line, second) : cellPosition(second, line);
  return {
    relation,
    objects: [
      { color: ca, shape: pick(rng, SHAPES), size: "medium", position: pa },
      { color: cb, shape: pick(rng, SHAPES), size: "medium", position: pb },
    ],
  };
}
