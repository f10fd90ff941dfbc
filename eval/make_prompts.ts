/**
 * node --import tsx eval/make_prompts.ts
 *
 * Writes the alignment prompt files: eval/heldout-one-object.txt (200 one-object captions the training set never
 * contained: the first 200 held-out captions in the grammar's enumeration order) and eval/two-object.txt
 * (100 two-object captions drawn with seed 12345), and eval/val-one-object.txt (100 one-object captions the training
 * set can contain, drawn with seed 777: the set for choosing sampling settings such as the guidance scale, so the
 * held-out set stays a test set). Deterministic: rerunning gives the same files.
 *
 * Textured backgrounds (for the 64x64 model; these two files were added later and do not change the three above):
 * eval/heldout-textured.txt (100 one-object captions on textured backgrounds that are held out: the held-out textured
 * captions in enumeration order, shuffled by Mulberry32(4242), the first 100) and eval/val-textured.txt (100
 * one-object captions on textured backgrounds the training set can contain, drawn with seed 778, textureFraction 1).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { allOneObjectCaptions, allTexturedOneObjectCaptions, captionOf, isHeldOut, sampleScene } from "../src/shapes/grammar.js";
import { Mulberry32, randInt } from "../src/util/numerics.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const held = allOneObjectCaptions().filter(isHeldOut).slice(0, 200);
writeFileSync(join(here, "heldout-one-object.txt"), held.join("\n") + "\n");
const rng = new Mulberry32(12345);
const two = new Set<string>();
while (two.size < 100) two.add(captionOf(sampleScene(rng, { twoObjectFraction: 1 })));
writeFileSync(join(here, "two-object.txt"), [...two].join("\n") + "\n");
const valRng = new Mulberry32(777);
const val = new Set<string>();
while (val.size < 100) val.add(captionOf(sampleScene(valRng, { twoObjectFraction: 0, excludeHeldOut: true })));
writeFileSync(join(here, "val-one-object.txt"), [...val].join("\n") + "\n");
const heldTex = allTexturedOneObjectCaptions().filter(isHeldOut);
const shuffleRng = new Mulberry32(4242);
for (let i = heldTex.length - 1; i > 0; i--) {
  const j = randInt(shuffleRng, i + 1);
  [heldTex[i], heldTex[j]] = [heldTex[j]!, heldTex[i]!];
}
writeFileSync(join(here, "heldout-textured.txt"), heldTex.slice(0, 100).join("\n") + "\n");
const valTexRng = new Mulberry32(778);
const valTex = new Set<string>();
while (valTex.size < 100) valTex.add(captionOf(sampleScene(valTexRng, { twoObjectFraction: 0, excludeHeldOut: true, textureFraction: 1 })));
writeFileSync(join(here, "val-textured.txt"), [...valTex].join("\n") + "\n");
process.stderr.write(
  `wrote ${held.length} held-out one-object, ${two.size} two-object, ${val.size} validation, 100 held-out textured and ${valTex.size} textured validation prompts\n`,
);
