/**
 * node --import tsx eval/mask_evidence.ts [--model DIR] [--prompts FILE] [--count N] [--ratio R] [--steps S]
 *                                         [--image OUT.png] [--json]
 *
 * Does G-WPR keep the tokens that show something? For each prompt (the first N of FILE, seed 0) the shapes model
 * generates an image under AT-EDM (schedule none, so every block is pruned at every step). Each token of a
 * pruned block is labelled from the final image: background (every pixel of its patch within 48 of the
 * background colour on each channel), object (no such pixel) or edge (both). The script reports, over all
 * prompts, steps and blocks, the fraction of each class that G-WPR kept; a ranking blind to content keeps every
 * class at the same rate (1 - ratio). `--image` writes one example (the first prompt, middle step, a 16x16 block):
 * the image, the kept tokens (pruned dimmed red) and the G-WPR scores, scaled up 8x.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm } from "../src/pruning/index.js";
import { PALETTE, parseCaption } from "../src/shapes/grammar.js";
import { toRGB8, writePng } from "../src/io/png.js";
import { blockMask, type StepMasks } from "../src/cli/masks.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string" }, prompts: { type: "string", default: "eval/heldout-one-object.txt" },
    count: { type: "string", default: "20" }, ratio: { type: "string", default: "0.5" }, steps: { type: "string", default: "20" },
    image: { type: "string" }, json: { type: "boolean", default: false },
  },
});
const ratio = Number(v.ratio);
const steps = Number(v.steps);
const prompts = readFileSync(v.prompts!, "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
  .slice(0, Number(v.count));

const TOL = 48;
type Label = "background" | "edge" | "object";
const LABELS: Label[] = ["background", "edge", "object"];
const counts = new Map<string, { kept: number; total: number }>(); // key: `${level}|${label}`
const add = (key: string, kept: boolean) => {
  const c = counts.get(key) ?? { kept: 0, total: 0 };
  c.kept += kept ? 1 : 0;
  c.total += 1;
  counts.set(key, c);
};

let imageWritten = false;
const pipe = await loadPipeline(v.model ?? "models/shapes");
applyAtEdm(pipe, { ratio, schedule: "none" });
const scale = pipe.vaeScaleFactor;
for (const [pi, prompt] of prompts.entries()) {
  const bg = PALETTE[parseCaption(prompt).background];
  const masks: StepMasks[] = [];
  const r = await pipe.generate({ prompt, seed: 0, steps, withMasks: true, onStep: (s) => masks.push({ step: s.step, extras: s.unet.extras }) });
  const [, H, W] = r.imageDims as [number, number, number];
  const base = toRGB8(r.image, H, W);
  const isBg = (y: number, x: number) => [0, 1, 2].every((c) => Math.abs(base[(y * W + x) * 3 + c]! - bg[c]!) <= TOL);
  for (const { step, extras } of masks) {
    for (const block of pipe.unet.blocks) {
      const m = blockMask(extras, block, base, H, W, { height: H / scale, width: W / scale });
      if (!m) continue;
      const ph = H / m.h, pw = W / m.w;
      for (let t = 0; t < m.h * m.w; t++) {
        const ty = Math.floor(t / m.w), tx = t % m.w;
        let nBg = 0;
        for (let y = ty * ph; y < (ty + 1) * ph; y++) for (let x = tx * pw; x < (tx + 1) * pw; x++) nBg += isBg(y, x) ? 1 : 0;
        const label: Label = nBg === ph * pw ? "background" : nBg === 0 ? "object" : "edge";
        add(`${m.h}x${m.w}|${label}`, m.kept[t] === 1);
        add(`all|${label}`, m.kept[t] === 1);
      }
      if (pi === 0 && v.image && !imageWritten && step === Math.floor(steps / 2) && m.h === 16) {
        imageWritten = true;
        const up = 8, gap = 8, Wt = 3 * W * up + 2 * gap;
        const out = new Uint8Array(H * up * Wt * 3).fill(255);
        [base, m.mask, m.heat].forEach((img, i) => {
          for (let y = 0; y < H * up; y++) for (let x = 0; x < W * up; x++) {
            const src = (Math.floor(y / up) * W + Math.floor(x / up)) * 3;
            const dst = (y * Wt + i * (W * up + gap) + x) * 3;
            for (let c = 0; c < 3; c++) out[dst + c] = img[src + c]!;
          }
        });
        writePng(v.image, out, H * up, Wt);
        process.stderr.write(`wrote ${v.image}: "${prompt}", step ${step}, ${block.path}\n`);
      }
    }
  }
  process.stderr.write(`\r${pi + 1}/${prompts.length}`);
}
process.stderr.write("\n");
await pipe.release();

const levels = [...new Set([...counts.keys()].map((k) => k.split("|")[0]!))];
const rows = levels.map((level) => {
  const rate = (l: Label) => { const c = counts.get(`${level}|${l}`); return c && c.total ? c.kept / c.total : null; };
  const n = (l: Label) => counts.get(`${level}|${l}`)?.total ?? 0;
  return { level, ...Object.fromEntries(LABELS.map((l) => [`kept_${l}`, rate(l)])), ...Object.fromEntries(LABELS.map((l) => [`tokens_${l}`, n(l)])) };
});
const summary = { model: v.model ?? "models/shapes", prompts: prompts.length, ratio, steps, expected_if_blind: 1 - ratio, rows };
if (v.json) console.log(JSON.stringify(summary, null, 2));
else {
  console.log(`AT-EDM ratio ${ratio}, schedule none, ${prompts.length} prompts x ${steps} steps; a content-blind ranking keeps ${(1 - ratio).toFixed(2)} of every class`);
  console.log("| block grid | kept: background | kept: edge | kept: object | tokens (bg / edge / object) |");
  console.log("|---|---|---|---|---|");
  const f = (x: unknown) => (typeof x === "number" ? x.toFixed(3) : "-");
  for (const r of rows) {
    const rr = r as Record<string, unknown>;
    console.log(`| ${r.level} | ${f(rr.kept_background)} | ${f(rr.kept_edge)} | ${f(rr.kept_object)} | ${rr.tokens_background} / ${rr.tokens_edge} / ${rr.tokens_object} |`);
  }
}
