/** `atedm export-shapes`: write the synthetic shapes training set (images + captions) for training/. */
import { AtedmError } from "../errors.js";
import { exportDataset, MAX_EXPORT_SIZE, MIN_EXPORT_SIZE } from "../shapes/export.js";
import { type Flags, int, LIMITS, MAX_SEED, num, parse } from "./args.js";
import { checkOutputDir } from "./outputs.js";

const flags: Flags = {
  out: { type: "string" },
  count: { type: "string" },
  seed: { type: "string" },
  "two-object-fraction": { type: "string" },
  size: { type: "string" },
  textures: { type: "string" },
};

export const EXPORT_SHAPES_HELP = `Usage: atedm export-shapes --out DIR --count N [--seed S] [--two-object-fraction F] [--size S] [--textures F]

Render N captioned SxS images (32x32 by default) of the shapes grammar (held-out one-object captions excluded) into
DIR/shapes.safetensors (tensor 'images', U8 [N, S, S, 3]), DIR/captions.json and DIR/meta.json.

  --out DIR                  output folder (created if missing; checked before any image is drawn).
  --count N                  number of images, 1..${LIMITS.count} (3*S*S bytes each: 3 KB at 32, 12 KB at 64; held in memory).
  --seed S                   data set seed, an integer in [0, 2^32) (default 0); the same seed and count give
                             identical files.
  --two-object-fraction F    share of two-object scenes, in [0, 1] (default 0.25).
  --size S                   image side in pixels, ${MIN_EXPORT_SIZE}..${MAX_EXPORT_SIZE} (default 32; 64 for the SD-XL-shaped model);
                             the layout scales with it.
  --textures F               share of scenes on a textured background ("on a striped blue background", "on a red
                             gradient background", "on a noisy green background"), in [0, 1] (default 0: none, and
                             the files are exactly those of earlier versions).
`;

export async function exportShapesCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "export-shapes");
  if (v.help) {
    process.stdout.write(EXPORT_SHAPES_HELP);
    return 0;
  }
  const out = v.out as string | undefined;
  if (out === undefined) throw new AtedmError("export-shapes: --out DIR is required");
  const count = int(v.count as string | undefined, "count", 1, LIMITS.count);
  if (count === undefined) throw new AtedmError("export-shapes: --count N is required");
  const seed = int(v.seed as string | undefined, "seed", 0, MAX_SEED) ?? 0;
  const twoObjectFraction = num(v["two-object-fraction"] as string | undefined, "two-object-fraction", 0, 1) ?? 0.25;
  const size = int(v.size as string | undefined, "size", MIN_EXPORT_SIZE, MAX_EXPORT_SIZE) ?? 32;
  const textureFraction = num(v.textures as string | undefined, "textures", 0, 1) ?? 0;
  checkOutputDir(out, "out");
  const { seconds } = exportDataset(out, { count, seed, twoObjectFraction, size, textureFraction });
  process.stderr.write(`wrote ${count} images to ${out} in ${seconds.toFixed(2)} s\n`);
  return 0;
}
