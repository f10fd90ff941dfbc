/**
 * node --import tsx eval/make_prompts.ts
 *
 * Writes the alignment prompt files: eval/heldout-one-object.txt (200 one-object captions the training set never
 * contained: the first 200 held-out captions in the grammar's enumeration order) and eval/two-object.txt
 * (100 two-object captions drawn with seed 12345), and eval/val-one-object.txt (100 one-object captions the training
 * set can contain, drawn with seed 777: the set for choosing sampling settings such as the guidance scale, so the
 * held-out set stays a test set). Deterministic: rerunning gives the same files.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { allOneObjectCaptions, captionOf, isHeldOut, sampleScene } from "../src/shapes/grammar.js";
import { Mulberry32 } from "../src/util/numerics.js";

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
process.stderr.write(`wrote ${held.length} held-out one-object, ${two.size} two-object and ${val.size} validation prompts\n`);
