/**
 * The generation worker: loads a model into the in-memory file map (src/platform/browser/fs.ts), then runs atedm's
 * pipeline unchanged on onnxruntime-web, off the page's main thread. Cancelling = the page terminates this worker
 * and starts a fresh one.
 */
// atedm's browser entry, first: it installs the Buffer and process globals before atedm's modules run.
import {
  applyAtEdm,
  applyTome,
  blockMask,
  loadPipeline,
  mountFiles,
  removePruning,
  type TextToImagePipeline,
  toRGB8,
  unmountFiles,
} from "../../src/browser.js";
import * as ort from "onnxruntime-web";
import ortMjs from "onnxruntime-web/ort-wasm-simd-threaded.jsep.mjs?url";
import ortWasm from "onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm?url";
import type { Tensor } from "../../src/runtime/session.js";
import type { FromWorker, GenerateRequest, MaskImage, ModelRequest, ToWorker } from "./protocol.js";

/**
 * The most weights the browser build loads. Weights become ONNX initializers inside the WASM heap (32-bit: at most
 * 4 GiB, in practice 2-4 GiB per tab), next to their copy in the file map; atedm keeps weights over 1 GiB in their
 * files (ONNX external data), which onnxruntime-web cannot read from disk.
 */
export const BROWSER_MAX_WEIGHT_BYTES = 1024 ** 3;
/** Files of a picked folder that the pipeline may read (configs, tokenizers, safetensors weights). */
const WANTED = /(\.json|\.txt|\.safetensors)$/;

const post = (m: FromWorker, transfer: Transferable[] = []) => (self as unknown as Worker).postMessage(m, transfer);
const gib = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;

let pipe: TextToImagePipeline | null = null;
let mountedAt: string | null = null;

async function fetchModel(base: string): Promise<Array<[string, Uint8Array]>> {
  const root = base.replace(/\/+$/, "");
  const res = await fetch(`${root}/files.json`);
  if (!res.ok) throw new Error(`${root}/files.json: HTTP ${res.status} (a model served by URL needs a files.json listing its files)`);
  const { files } = (await res.json()) as { files: Array<{ path: string; size: number }> };
  checkWeights(
    root,
    files.map((f) => ({ path: f.path, size: f.size })),
  );
  return Promise.all(
    files.map(async (f): Promise<[string, Uint8Array]> => {
      const r = await fetch(`${root}/${f.path}`);
      if (!r.ok) throw new Error(`${root}/${f.path}: HTTP ${r.status}`);
      return [`${root}/${f.path}`, new Uint8Array(await r.arrayBuffer())];
    }),
  );
}

function checkWeights(name: string, files: Array<{ path: string; size: number }>): void {
  const weights = files.filter((f) => f.path.endsWith(".safetensors")).reduce((n, f) => n + f.size, 0);
  if (weights > BROWSER_MAX_WEIGHT_BYTES) {
    throw new Error(
      `${name}: model too large for the browser: ${gib(weights)} of weights; limit ${gib(BROWSER_MAX_WEIGHT_BYTES)} (use the command line for this model)`,
    );
  }
}

async function readPicked(name: string, picked: Array<{ path: string; file: File }>): Promise<Array<[string, Uint8Array]>> {
  // Paths as <input webkitdirectory> gives them: "<folder>/unet/config.json"; the model is mounted at /picked/<folder>.
  const files = picked.filter((f) => WANTED.test(f.path) && !/(^|\/)\./.test(f.path));
  if (!files.some((f) => f.path.split("/").slice(1).join("/") === "model_index.json")) {
    throw new Error(`${name}: not a diffusers model folder (no model_index.json at its top)`);
  }
  checkWeights(
    name,
    files.map((f) => ({ path: f.path, size: f.file.size })),
  );
  return Promise.all(files.map(async (f): Promise<[string, Uint8Array]> => [`/picked/${f.path}`, new Uint8Array(await f.file.arrayBuffer())]));
}

async function chooseBackend(backend: string): Promise<"wasm" | "webgpu"> {
  if (backend === "wasm") return "wasm";
  const gpu = (navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (!adapter && backend === "webgpu") throw new Error("WebGPU is not available in this browser (no adapter); choose WASM");
  return adapter ? "webgpu" : "wasm";
}

async function load(model: ModelRequest, backendWanted: string, threads: number): Promise<void> {
  const t0 = performance.now();
  ort.env.wasm.wasmPaths = { mjs: new URL(ortMjs, self.location.href).href, wasm: new URL(ortWasm, self.location.href).href };
  // Threads need SharedArrayBuffer, i.e. a cross-origin isolated page (COOP/COEP headers).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
  const backend = await chooseBackend(backendWanted);
  post({ type: "loading", message: model.kind === "url" ? `fetching ${model.base}` : `reading ${model.name}` });
  const entries = model.kind === "url" ? await fetchModel(model.base) : await readPicked(model.name, model.files);
  if (mountedAt) unmountFiles(mountedAt);
  pipe = null;
  const path = model.kind === "url" ? model.base.replace(/\/+$/, "") : `/picked/${model.files[0]!.path.split("/")[0]}`;
  mountFiles(entries);
  mountedAt = path;
  post({ type: "loading", message: `building the ONNX sessions (${backend})` });
  const p = await loadPipeline(path, {
    threads: ort.env.wasm.numThreads ?? 1,
    executionProviders: backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"],
  });
  pipe = p;
  const f = p.vaeScaleFactor;
  post({
    type: "loaded",
    info: {
      path,
      backend,
      threads: ort.env.wasm.numThreads ?? 1,
      height: p.unet.config.sample_size * f,
      width: p.unet.config.sample_size * f,
      weightBytes: entries.filter(([k]) => k.endsWith(".safetensors")).reduce((n, [, b]) => n + b.byteLength, 0),
      defaultSteps: p.recommended.steps ?? 20,
      loadSeconds: (performance.now() - t0) / 1000,
    },
  });
}

async function generate(id: number, r: GenerateRequest): Promise<void> {
  if (!pipe) throw new Error("no model loaded");
  if (r.prompt.trim() === "") throw new Error("the prompt is empty: describe the image to generate");
  removePruning(pipe);
  if (r.method === "atedm") applyAtEdm(pipe, { ratio: r.ratio, schedule: r.schedule });
  else if (r.method === "tome") applyTome(pipe, { ratio: r.ratio, schedule: r.schedule });
  const withMasks = (r.withMasks ?? true) && r.method === "atedm";
  const steps: Array<{ step: number; extras: Record<string, Tensor> }> = [];
  const result = await pipe.generate({
    prompt: r.prompt,
    seed: r.seed,
    steps: r.steps,
    latents: r.latents,
    withMasks,
    checkMemory: false,
    onStep: (s) => {
      if (withMasks) steps.push({ step: s.step, extras: s.unet.extras });
      post({ type: "step", id, step: s.step, steps: s.steps, seconds: s.seconds });
    },
  });
  const [, H, W] = result.imageDims as [number, number, number];
  const rgb = toRGB8(result.image, H, W);
  const f = pipe.vaeScaleFactor;
  const latent = { height: H / f, width: W / f };
  const masks: MaskImage[] = [];
  for (const { step, extras } of steps) {
    for (const block of pipe.unet.blocks) {
      const m = blockMask(extras, block, rgb, H, W, latent);
      if (m) masks.push({ step, block: block.path, rgb: m.mask, kept: m.kept.reduce((a, b) => a + b, 0), tokens: m.kept.length });
    }
  }
  const flops = pipe.unetFlopsPerStep(H / f, W / f, result.stepInfo);
  // The first step builds the ONNX sessions: seconds per step is the median of the others.
  const timed = result.stepSeconds.length > 1 ? result.stepSeconds.slice(1) : result.stepSeconds;
  const secondsPerStep = [...timed].sort((a, b) => a - b)[Math.floor(timed.length / 2)]!;
  post(
    {
      type: "result",
      result: {
        id,
        rgb,
        height: H,
        width: W,
        latents: result.latents,
        latentDims: result.latentDims,
        stepSeconds: result.stepSeconds,
        secondsPerStep,
        flopsSaving: 1 - flops.pruned / flops.unpruned,
        masks,
      },
    },
    [rgb.buffer, ...masks.map((m) => m.rgb.buffer)],
  );
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  try {
    if (m.type === "load") await load(m.model, m.backend, m.threads);
    else await generate(m.id, m.request);
  } catch (err) {
    post({ type: "error", id: m.type === "generate" ? m.id : undefined, message: err instanceof Error ? err.message : String(err) });
  }
};
