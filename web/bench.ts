/**
 * Seconds per step of the embedded model in headless Chromium (onnxruntime-web, WASM, 2 threads) against Node
 * (onnxruntime-node, 2 threads) on the same machine, and the README's screenshot:
 *
 *   node --import tsx web/bench.ts [--steps 20] [--repeats 3] [--screenshot docs/img/browser-demo.png]
 *
 * Per method (none, AT-EDM 0.5): the median of the steps after the first (session building) over `repeats` runs,
 * after one warm-up run. Prints a Markdown table (docs/browser.md).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "vite";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm, removePruning } from "../src/pruning/index.js";
import { launchChromium, NO_NETWORK_ARGS } from "../test/helpers/browser.js";
import { serveStatic } from "../test/helpers/static_server.js";

const { values } = parseArgs({
  options: { steps: { type: "string", default: "20" }, repeats: { type: "string", default: "3" }, screenshot: { type: "string" } },
});
const steps = Number(values.steps);
const repeats = Number(values.repeats);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PROMPT = "a red circle at the top left on a white background";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const tmp = mkdtempSync(join(tmpdir(), "atedm-bench-"));
const dist = join(tmp, "dist");
await build({ configFile: join(repo, "web/vite.config.ts"), logLevel: "error", build: { outDir: dist } });
const server = await serveStatic(dist);
const browser = await launchChromium(NO_NETWORK_ARGS);
const browserVersion = `Chromium ${browser.version()}`;
const rows: string[] = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
  page.setDefaultTimeout(300_000);
  await page.goto(`${server.url}?threads=2&backend=wasm`);
  await page.evaluate(() => (window as unknown as { atedmTest: { ready(): Promise<unknown> } }).atedmTest.ready());
  const node = await loadPipeline(join(repo, "models/shapes"), { threads: 2 });
  for (const [method, ratio] of [
    ["none", 0],
    ["atedm", 0.5],
  ] as const) {
    const b: number[] = [];
    const n: number[] = [];
    removePruning(node);
    if (method === "atedm") applyAtEdm(node, { ratio, schedule: "none" });
    for (let r = 0; r <= repeats; r++) {
      const request = { prompt: PROMPT, seed: 1, steps, method, ratio, schedule: "none" };
      const out = await page.evaluate(
        (req) => (window as unknown as { atedmTest: { generate(r: unknown): Promise<{ stepSeconds: number[] }> } }).atedmTest.generate(req),
        request,
      );
      const nodeOut = await node.generate({ prompt: PROMPT, seed: 1, steps, checkMemory: false });
      if (r === 0) continue; // warm-up
      b.push(...out.stepSeconds.slice(1));
      n.push(...nodeOut.stepSeconds.slice(1));
    }
    const [bs, ns] = [median(b), median(n)];
    rows.push(`| ${method === "none" ? "unpruned" : `AT-EDM ${ratio}`} | ${bs.toFixed(3)} | ${ns.toFixed(3)} | ${(bs / ns).toFixed(1)}x |`);
  }
  await node.release();
  node.runtime.dispose();
  if (values.screenshot) await page.screenshot({ path: values.screenshot, fullPage: true });
} finally {
  await browser.close();
  await server.close();
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`command: node --import tsx web/bench.ts ${process.argv.slice(2).join(" ")}`.trimEnd());
console.log(`machine: ${cpus()[0]?.model.trim() ?? "unknown CPU"}, ${cpus().length} cores, node ${process.version}, ${browserVersion}`);
console.log(`embedded model (models/shapes, 32x32, guidance 4), ${steps} steps, median s/step of steps 2..${steps} over ${repeats} runs`);
console.log("| method | Chromium, WASM, 2 threads (s/step) | Node, 2 threads (s/step) | browser / Node |");
console.log("|---|---|---|---|");
for (const r of rows) console.log(r);
