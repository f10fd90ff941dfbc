/**
 * node --import tsx eval/mask_evidence.ts [--model DIR] [--prompts FILE] [--count N] [--ratio R] [--steps S]
 *                                         [--rank-ratio R2] [--recovery NAME] [--image OUT.png] [--json]
 *
 * Does G-WPR keep the tokens that show something? For each prompt (the first N of FILE, seed 0) the shapes model
 * generates an image under AT-EDM (schedule none, so every block is pruned at every step). Each token of a
 * pruned block is labelled from the final image: background (every pixel of its patch within 48 of the
 * background colour on each channel), object (no such pixel) or edge (both). The script reports, over all
 * prompts, steps and blocks, the fraction of each class that G-WPR kept; a ranking blind to content keeps every
 * class at the same rate (1 - ratio); rows by block grid, overall, and by thirds of the steps. `--image` writes
 * one example (the first prompt, middle step, one row per 16x16 block): the image, the kept tokens (pruned dimmed
 * red) and the G-WPR scores by rank (dark lowest, yellow highest), scaled up 8x.
 *
 * `--rank-ratio R2` asks instead which tokens G-WPR *would* keep at ratio R2 (the top k of the block's scores, the
 * SPEC's rule) while the run itself prunes at R. With a tiny R (0.01 prunes 3 of 256 tokens and 1 of 64) and
 * `--recovery cosine` the images are, by eye, those of the unpruned model (the default copy recovery already leaves
 * specks at that ratio), so the labels come from clean images and the question is only the ranking: does G-WPR,
 * on this model's attention maps, rank objects and edges above flat background?
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm } from "../src/pruning/index.js";
import { keepCount, type RecoveryVariant } from "../src/pruning/atedm_math.js";
import { PALETTE, parseCaption } from "../src/shapes/grammar.js";
import { toRGB8, writePng } from "../src/io/png.js";
import { blockMask, dimPruned, heatImage, type StepMasks } from "../src/pruning/masks.js";
import { keepSet } from "../src/pruning/atedm_reference.js";

const { values: v } = parseArgs({
  options: {
    model: { type: "string" },
    prompts: { type: "string", default: "eval/heldout-one-object.txt" },
    count: { type: "string", default: "20" },
    ratio: { type: "string", default: "0.5" },
    steps: { type: "string", default: "20" },
    image: { type: "string" },
    json: { type: "boolean", default: false },
    "rank-ratio": { type: "string" },
    recovery: { type: "string", default: "copy" },
  },
});
const ratio = Number(v.ratio);
const rankRatio = v["rank-ratio"] === undefined ? undefined : Number(v["rank-ratio"]);
if (rankRatio !== undefined && !(rankRatio >= 0 && rankRatio < 1)) throw new Error(`--rank-ratio must be in [0, 1), got ${v["rank-ratio"]}`);

const steps = Number(v.steps);
const prompts = readFileSync(v.prompts!, "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"))
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

// Early steps cannot know where the object will be; the rows by thirds of the denoising steps show when it shows.
const phaseOf = (step: number) => {
  const third = Math.min(2, Math.floor((3 * step) / steps));
  const lo = Math.ceil((third * steps) / 3),
    hi = Math.ceil(((third + 1) * steps) / 3) - 1;
  return `steps ${lo}-${hi}`;
};
/** The scores as a heat map by rank (dark = lowest, yellow = highest): top-k keeps the upper colours. */
function rankHeat(score: Float32Array, h: number, w: number, H: number, W: number): Uint8Array {
  const N = score.length;
  const order = Array.from({ length: N }, (_, i) => i).sort((a, b) => score[a]! - score[b]! || b - a);
  const rank = new Float32Array(N);
  order.forEach((t, r) => {
    rank[t] = r / Math.max(1, N - 1);
  });
  return heatImage(rank, h, w, H, W);
}
/** The SPEC's keep set at ratio r as a 0/1 mask over the block's tokens. */
function wouldKeep(score: Float32Array, r: number): Uint8Array {
  const keep = new Uint8Array(score.length);
  for (const i of keepSet(score, keepCount(score.length, r))) keep[i] = 1;
  return keep;
}
/** --image: per 16x16 block at the middle step of the first prompt, [image, kept tokens, score ranks]. */
const panels: Array<{ path: string; images: Uint8Array[] }> = [];
let imageDims: [number, number] = [0, 0];
const pipe = await loadPipeline(v.model ?? "models/shapes");
applyAtEdm(pipe, { ratio, schedule: "none", recovery: v.recovery as RecoveryVariant });
const scale = pipe.vaeScaleFactor;
for (const [pi, prompt] of prompts.entries()) {
  const bg = PALETTE[parseCaption(prompt).background];
  const masks: StepMasks[] = [];
  const r = await pipe.generate({ prompt, seed: 0, steps, withMasks: true, onStep: (s) => masks.push({ step: s.step, extras: s.unet.extras }) });
  const [, H, W] = r.imageDims as [number, number, number];
  const base = toRGB8(r.image, H, W);
  if (pi === 0) imageDims = [H, W];
  const isBg = (y: number, x: number) => [0, 1, 2].every((c) => Math.abs(base[(y * W + x) * 3 + c]! - bg[c]!) <= TOL);
  for (const { step, extras } of masks) {
    for (const block of pipe.unet.blocks) {
      const m = blockMask(extras, block, base, H, W, { height: H / scale, width: W / scale });
      if (!m) continue;
      const kept = rankRatio === undefined ? m.kept : wouldKeep(m.score, rankRatio);
      const ph = H / m.h,
        pw = W / m.w;
      for (let t = 0; t < m.h * m.w; t++) {
        const ty = Math.floor(t / m.w),
          tx = t % m.w;
        let nBg = 0;
        for (let y = ty * ph; y < (ty + 1) * ph; y++) for (let x = tx * pw; x < (tx + 1) * pw; x++) nBg += isBg(y, x) ? 1 : 0;
        const label: Label = nBg === ph * pw ? "background" : nBg === 0 ? "object" : "edge";
        add(`${m.h}x${m.w}|${label}`, kept[t] === 1);
        add(`all|${label}`, kept[t] === 1);
        add(`${phaseOf(step)}|${label}`, kept[t] === 1);
      }
      if (pi === 0 && v.image && step === Math.floor(steps / 2) && m.h === 16) {
        const maskImg = rankRatio === undefined ? m.mask : dimPruned(base, kept, m.h, m.w, H, W);
        panels.push({ path: block.path, images: [base, maskImg, rankHeat(m.score, m.h, m.w, H, W)] });
      }
    }
  }
  process.stderr.write(`\r${pi + 1}/${prompts.length}`);
}
process.stderr.write("\n");
await pipe.release();
if (v.image) {
  if (panels.length === 0) throw new Error("--image: no 16x16 block was pruned at the middle step");
  const [H, W] = imageDims;
  const up = 8,
    gap = 8,
    Wt = 3 * W * up + 2 * gap,
    Ht = panels.length * H * up + (panels.length - 1) * gap;
  const out = new Uint8Array(Ht * Wt * 3).fill(255);
  panels.forEach(({ images }, row) =>
    images.forEach((img, col) => {
      for (let y = 0; y < H * up; y++)
        for (let x = 0; x < W * up; x++) {
          const src = (Math.floor(y / up) * W + Math.floor(x / up)) * 3;
          const dst = ((row * (H * up + gap) + y) * Wt + col * (W * up + gap) + x) * 3;
          for (let c = 0; c < 3; c++) out[dst + c] = img[src + c]!;
        }
    }),
  );
  writePng(v.image, out, Ht, Wt);
  process.stderr.write(`wrote ${v.image}: "${prompts[0]}", step ${Math.floor(steps / 2)}, rows: ${panels.map((p) => p.path).join(", ")}\n`);
}

const levels = [...new Set([...counts.keys()].map((k) => k.split("|")[0]!))];
const rows = levels.map((level) => {
  const rate = (l: Label) => {
    const c = counts.get(`${level}|${l}`);
    return c?.total ? c.kept / c.total : null;
  };
  const n = (l: Label) => counts.get(`${level}|${l}`)?.total ?? 0;
  return { level, ...Object.fromEntries(LABELS.map((l) => [`kept_${l}`, rate(l)])), ...Object.fromEntries(LABELS.map((l) => [`tokens_${l}`, n(l)])) };
});
const judged = rankRatio ?? ratio;
const summary = {
  model: v.model ?? "models/shapes",
  prompts: prompts.length,
  ratio,
  rank_ratio: rankRatio ?? null,
  steps,
  expected_if_blind: 1 - judged,
  rows,
};
if (v.json) console.log(JSON.stringify(summary, null, 2));
else {
  const what = rankRatio === undefined ? "kept" : `would keep at ratio ${rankRatio} (top-k of the scores)`;
  console.log(
    `AT-EDM ratio ${ratio}, schedule none, ${prompts.length} prompts x ${steps} steps; columns: fraction G-WPR ${what}; a content-blind ranking keeps ${(1 - judged).toFixed(2)} of every class`,
  );
  console.log("| block grid | kept: background | kept: edge | kept: object | tokens (bg / edge / object) |");
  console.log("|---|---|---|---|---|");
  const f = (x: unknown) => (typeof x === "number" ? x.toFixed(3) : "-");
  for (const r of rows) {
    const rr = r as Record<string, unknown>;
    console.log(
      `| ${r.level} | ${f(rr.kept_background)} | ${f(rr.kept_edge)} | ${f(rr.kept_object)} | ${rr.tokens_background} / ${rr.tokens_edge} / ${rr.tokens_object} |`,
    );
  }
}
