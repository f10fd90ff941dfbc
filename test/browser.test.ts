/**
 * atedm in the browser (web/, docs/browser.md), in Debian's Chromium (test/helpers/browser.ts; no browser download,
 * no network): the demo page is built with Vite into a temporary folder, served on 127.0.0.1 with the cross-origin
 * isolation headers (threaded WASM), and driven through its test hook and its controls. The embedded model, given
 * latents, 6 steps: the browser's final latents (onnxruntime-web, WASM, 2 threads) match Node's (onnxruntime-node)
 * with the pipeline fixtures' metric, unpruned and with AT-EDM 0.5; the kept-token maps appear; a second click
 * cancels a running generation and the page generates again; an empty prompt, a folder that is not a diffusers
 * model and a model too large for the browser each show a message in the page. A screenshot goes to
 * out/test-browser/ (or $ATEDM_TEST_OUT).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { build } from "vite";
import { loadPipeline, type TextToImagePipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm, removePruning } from "../src/pruning/index.js";
import { NormalStream } from "../src/util/numerics.js";
import { launchChromium, NO_NETWORK_ARGS } from "./helpers/browser.js";
import { assertClose, TOL } from "./helpers/golden.js";
import { serveStatic, type StaticServer } from "./helpers/static_server.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const OUT = process.env.ATEDM_TEST_OUT ?? join(repo, "out", "test-browser");
const PROMPT = "a red circle at the top left on a white background";
const STEPS = 6;
/** Every wait in the page is bounded (Playwright's waits), and so is every test (page.evaluate has no timeout of its own). */
const WAIT_MS = 60_000;
const TEST_MS = { timeout: 180_000 };

const tmp = mkdtempSync(join(tmpdir(), "atedm-browser-"));
let server: StaticServer | undefined;
let browser: Browser | undefined;
let page: Page;
let node: TextToImagePipeline;
let latents: Float32Array;
const pageErrors: string[] = [];

before(async () => {
  const dist = join(tmp, "dist");
  await build({ configFile: join(repo, "web/vite.config.ts"), logLevel: "error", build: { outDir: dist, emptyOutDir: true } });
  server = await serveStatic(dist);
  browser = await launchChromium(NO_NETWORK_ARGS);
  page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // Nothing but the page's own origin is asked for.
  await page.route(/^(?!http:\/\/127\.0\.0\.1)/, (route) => {
    pageErrors.push(`request outside the page's origin: ${route.request().url()}`);
    return route.abort();
  });
  await page.goto(`${server.url}?threads=2&backend=wasm`);
  node = await loadPipeline(join(repo, "models/shapes"), { threads: 2 });
  const [c, h, w] = [node.sampleChannels, node.unet.config.sample_size, node.unet.config.sample_size];
  latents = new NormalStream(1).fill(new Float32Array(c * h * w));
}, TEST_MS);

after(async () => {
  await browser?.close();
  await server?.close();
  await node?.release();
  node?.runtime.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

interface BrowserResult {
  latents: number[];
  latentDims: number[];
  stepSeconds: number[];
  flopsSaving: number;
  masks: number;
}

function browserGenerate(method: "none" | "atedm", ratio: number): Promise<BrowserResult> {
  const request = { prompt: PROMPT, seed: 1, steps: STEPS, method, ratio, schedule: "none", latents: Array.from(latents) };
  return page.evaluate((r) => (window as unknown as { atedmTest: { generate(r: unknown): Promise<BrowserResult> } }).atedmTest.generate(r), request);
}

async function nodeGenerate(method: "none" | "atedm", ratio: number) {
  removePruning(node);
  if (method === "atedm") applyAtEdm(node, { ratio, schedule: "none" });
  return node.generate({ prompt: PROMPT, seed: 1, steps: STEPS, latents, checkMemory: false });
}

async function ready(): Promise<{ threads: number; backend: string }> {
  return page.evaluate(() => (window as unknown as { atedmTest: { ready(): Promise<{ threads: number; backend: string }> } }).atedmTest.ready());
}

test("the page loads the embedded model on WASM with 2 threads (cross-origin isolated)", TEST_MS, async () => {
  const info = await ready();
  assert.equal(info.backend, "wasm");
  assert.equal(info.threads, 2, "threads need crossOriginIsolated (COOP/COEP headers)");
  assert.equal(await page.evaluate(() => crossOriginIsolated), true);
});

for (const [method, ratio] of [
  ["none", 0],
  ["atedm", 0.5],
] as const) {
  test(`browser latents match Node's: ${method}${method === "none" ? "" : ` ${ratio}`}`, TEST_MS, async () => {
    await ready();
    const b = await browserGenerate(method, ratio);
    const n = await nodeGenerate(method, ratio);
    assert.deepEqual(b.latentDims, n.latentDims);
    assert.equal(b.stepSeconds.length, STEPS);
    const e = assertClose(`browser vs Node final latents (${method})`, b.latents, n.latents, TOL.pipeline);
    console.log(
      `# ${method}: max_abs ${e.maxAbs.toExponential(2)} rel_l2 ${e.relL2.toExponential(2)}; s/step browser ${median(b.stepSeconds.slice(1)).toFixed(3)} node ${median(n.stepSeconds.slice(1)).toFixed(3)}`,
    );
    if (method === "atedm") {
      assert.ok(b.flopsSaving > 0.05, `FLOPs saved ${b.flopsSaving}`);
      assert.ok(b.masks > 0, "AT-EDM gives kept-token maps");
      // The mask view: one picture per pruned block at the chosen step, each drawn (not blank).
      await page.locator("#masks-view").waitFor({ state: "visible", timeout: 10_000 });
      const shown = await page.locator("#masks canvas").count();
      assert.ok(shown >= 1 && shown === b.masks / STEPS, `${shown} mask pictures at one step, ${b.masks} in all`);
      const drawn = await page.evaluate(() => {
        const c = document.querySelector<HTMLCanvasElement>("#masks canvas")!;
        const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
        return new Set(Array.from({ length: d.length / 4 }, (_, i) => `${d[4 * i]},${d[4 * i + 1]},${d[4 * i + 2]}`)).size;
      });
      assert.ok(drawn > 4, `the mask picture has ${drawn} colours`);
      assert.match((await page.locator("#flops").textContent()) ?? "", /^\d+\.\d %$/);
      mkdirSync(OUT, { recursive: true });
      const shot = join(OUT, "browser-demo.png");
      await page.screenshot({ path: shot, fullPage: true });
      assert.ok(statSync(shot).size > 10_000, "a non-trivial screenshot");
    }
  });
}

test("a second click cancels a running generation; the page generates again", TEST_MS, async () => {
  await ready();
  await page.fill("#steps", "200");
  await page.fill("#prompt", PROMPT);
  await page.click("#generate");
  await page.waitForFunction(() => (document.querySelector<HTMLProgressElement>("#progress")?.value ?? 0) >= 1);
  assert.equal(await page.textContent("#generate"), "Cancel");
  await page.click("#generate");
  assert.equal(await page.textContent("#status"), "cancelled");
  assert.equal(await page.textContent("#generate"), "Generate");
  await ready();
  await page.fill("#steps", "2");
  await page.click("#generate");
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "done: 2 steps");
  assert.equal(await page.isHidden("#error"), true);
});

test("bad input shows a message in the page", TEST_MS, async () => {
  await ready();
  await page.fill("#prompt", "   ");
  await page.click("#generate");
  assert.match((await page.textContent("#error")) ?? "", /prompt is empty/);
  assert.equal(await page.isVisible("#error"), true);

  // A folder that is not a diffusers model.
  const notModel = join(tmp, "holiday-photos");
  mkdirSync(notModel, { recursive: true });
  writeFileSync(join(notModel, "notes.txt"), "not a model\n");
  await page.setInputFiles("#folder", notModel);
  await page.waitForFunction(() => /not a diffusers model folder/.test(document.querySelector("#error")?.textContent ?? ""));

  // A model too large for the browser: 1.5 GiB of (sparse) weights, refused from its size before anything is read.
  const big = join(tmp, "huge-model");
  mkdirSync(join(big, "unet"), { recursive: true });
  writeFileSync(
    join(big, "model_index.json"),
    JSON.stringify({ _class_name: "StableDiffusionPipeline", unet: ["diffusers", "UNet2DConditionModel"] }),
  );
  const fd = openSync(join(big, "unet", "diffusion_pytorch_model.safetensors"), "w");
  ftruncateSync(fd, 1.5 * 1024 ** 3);
  closeSync(fd);
  await page.setInputFiles("#folder", big);
  await page.waitForFunction(() => /model too large for the browser: 1\.50 GiB/.test(document.querySelector("#error")?.textContent ?? ""));
  // The tab is alive and usable: the embedded model loads again.
  await page.click("#load-embedded");
  await ready();
  assert.deepEqual(pageErrors, []);
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}
