/** `atedm export-shapes`: write the synthetic shapes training set (images + captions) for training/. */
import { exportDataset } from "../shapes/export.js";
import { AtedmError } from "../errors.js";
import { int, MAX_SEED, num, parse, type Flags } from "./args.js";

const flags: Flags = {
  out: { type: "string" },
  count: { type: "string" },
  seed: { type: "string" },
  "two-object-fraction": { type: "string" },
};

export const EXPORT_SHAPES_HELP = `Usage: atedm export-shapes --out DIR --count N [--seed S] [--two-object-fraction F]

Render N captioned 32x32 images of the shapes grammar (held-out one-object captions excluded) into
DIR/shapes.safetensors (tensor 'images', U8 [N, 32, 32, 3]), DIR/captions.json and DIR/meta.json.

  --out DIR                  output folder (created if missing).
  --count N                  number of images.
  --seed S                   data set seed (default 0); the same seed and count give identical files.
  --two-object-fraction F    share of two-object scenes (default 0.25).
`;

export async function exportShapesCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "export-shapes");
  if (v.help) {
    process.stdout.write(EXPORT_SHAPES_HELP);
    return 0;
  }
  if (!v.out) throw new AtedmError("export-shapes: --out DIR is required");
  const count = int(v.count as string | undefined, "count", 1);
  if (count === undefined) throw new AtedmError("export-shapes: --count N is required");
  const { seconds } = exportDataset(v.out as string, {
    count,
    seed: int(v.seed as string | undefined, "seed", 0, MAX_SEED) ?? 0,
    twoObjectFraction: num(v["two-object-fraction"] as string | undefined, "two-object-fraction") ?? 0.25,
  });
  process.stderr.write(`wrote ${count} images to ${v.out} in ${seconds.toFixed(2)} s\n`);
  return 0;
}
