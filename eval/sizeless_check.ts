/**
 * node --import tsx eval/sizeless_check.ts [--model DIR] [--prompts FILE] [--count N]
 *
 * Prompts without a size ("a red circle at the top left on a white background", the README's first command) are
 * outside the caption grammar: "a red circle ..." is how two-object captions begin. For the first N one-object
 * prompts of FILE (seed 0) this drops the size word, generates, and judges the image with the shapes analyzer
 * against the full caption, leaving the size out of the verdict. Prints one JSON object: the fraction of images
 * with exactly one object (`count`), with every attribute but size right (`all_but_size`), and per attribute.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { analyzeImage } from "../src/shapes/analyze.js";
import { toRGB8 } from "../src/io/png.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string" },
    prompts: { type: "string", default: "eval/val-one-object.txt" },
    count: { type: "string", default: "100" },
  },
});
const prompts = readFileSync(v.prompts!, "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"))
  .slice(0, Number(v.count));
const pipe = await loadPipeline(v.model ?? "models/shapes");
const right = new Map<string, number>();
let allButSize = 0;
for (const [i, caption] of prompts.entries()) {
  const words = caption.split(" ");
  if (words[1] !== "small" && words[1] !== "large") throw new Error(`not a one-object caption: ${JSON.stringify(caption)}`);
  const prompt = [words[0], ...words.slice(2)].join(" ");
  const r = await pipe.generate({ prompt, seed: 0 });
  const [, H, W] = r.imageDims as [number, number, number];
  const a = analyzeImage(toRGB8(r.image, H, W), W, H, caption);
  const judged = Object.entries(a.attributes).filter(([k]) => !k.endsWith(".size"));
  for (const [k, ok] of judged) right.set(k, (right.get(k) ?? 0) + (ok ? 1 : 0));
  if (judged.every(([, ok]) => ok)) allButSize++;
  process.stderr.write(`\r${i + 1}/${prompts.length}`);
}
process.stderr.write("\n");
await pipe.release();
const n = prompts.length;
console.log(
  JSON.stringify(
    {
      model: v.model ?? "models/shapes",
      prompts: n,
      all_but_size: allButSize / n,
      per_attribute: Object.fromEntries([...right].map(([k, c]) => [k, c / n])),
    },
    null,
    1,
  ),
);
