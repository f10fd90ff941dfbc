/**
 * The demo page: controls, the image, per-step progress, the kept-token maps; generation runs in a Web Worker
 * (worker.ts), so the page never freezes. A second click on Generate (then labelled Cancel) terminates the worker
 * and starts a fresh one with the same model. `window.atedmTest` is the hook the browser test drives.
 */
import type { Backend, FromWorker, GenerateReply, GenerateRequest, Method, ModelInfo, ModelRequest, ToWorker } from "./protocol.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  runtime: $<HTMLParagraphElement>("runtime"),
  loadEmbedded: $<HTMLButtonElement>("load-embedded"),
  folder: $<HTMLInputElement>("folder"),
  model: $<HTMLParagraphElement>("model"),
  backend: $<HTMLSelectElement>("backend"),
  threads: $<HTMLInputElement>("threads"),
  prompt: $<HTMLTextAreaElement>("prompt"),
  seed: $<HTMLInputElement>("seed"),
  steps: $<HTMLInputElement>("steps"),
  method: $<HTMLSelectElement>("method"),
  schedule: $<HTMLSelectElement>("schedule"),
  ratio: $<HTMLInputElement>("ratio"),
  ratioValue: $<HTMLOutputElement>("ratio-value"),
  generate: $<HTMLButtonElement>("generate"),
  error: $<HTMLDivElement>("error"),
  image: $<HTMLCanvasElement>("image"),
  progress: $<HTMLProgressElement>("progress"),
  status: $<HTMLParagraphElement>("status"),
  sps: $<HTMLTableCellElement>("sps"),
  flops: $<HTMLTableCellElement>("flops"),
  total: $<HTMLTableCellElement>("total"),
  masksView: $<HTMLDivElement>("masks-view"),
  maskStep: $<HTMLInputElement>("mask-step"),
  maskStepValue: $<HTMLOutputElement>("mask-step-value"),
  masks: $<HTMLDivElement>("masks"),
};

const EMBEDDED: ModelRequest = { kind: "url", base: new URL("models/shapes", document.baseURI).pathname };

let worker: Worker | null = null;
let model: ModelRequest | null = null;
let info: ModelInfo | null = null;
let nextId = 1;
/** The generation in flight: its id and how to settle it. */
let running: { id: number; resolve: (r: GenerateReply) => void; reject: (e: Error) => void; t0: number } | null = null;
let loading: { resolve: (i: ModelInfo) => void; reject: (e: Error) => void } | null = null;
let lastResult: GenerateReply | null = null;
let maskStepPicked = false;

function showError(message: string | null): void {
  ui.error.hidden = message === null;
  ui.error.textContent = message ?? "";
}

function setStatus(s: string): void {
  ui.status.textContent = s;
}

function setRunning(on: boolean): void {
  ui.generate.textContent = on ? "Cancel" : "Generate";
  ui.generate.classList.toggle("running", on);
  ui.generate.disabled = !on && info === null;
}

function startWorker(): Worker {
  const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  w.onmessage = (e: MessageEvent<FromWorker>) => onMessage(e.data);
  w.onerror = (e) => fail(`the worker failed: ${e.message || "unknown error (out of memory?)"}`);
  return w;
}

function fail(message: string, id?: number): void {
  showError(message);
  if (loading && id === undefined) {
    loading.reject(new Error(message));
    loading = null;
    ui.model.textContent = "no model loaded";
  }
  if (running && (id === undefined || id === running.id)) {
    running.reject(new Error(message));
    running = null;
    setStatus("failed");
  }
  setRunning(false);
  ui.loadEmbedded.disabled = false;
}

function onMessage(m: FromWorker): void {
  switch (m.type) {
    case "loading":
      ui.model.textContent = m.message;
      return;
    case "loaded":
      info = m.info;
      ui.model.textContent = `${m.info.path}: ${(m.info.weightBytes / 1024 ** 2).toFixed(1)} MB of weights, ${m.info.width}x${m.info.height}, loaded in ${m.info.loadSeconds.toFixed(1)} s`;
      ui.runtime.textContent = `${m.info.backend === "webgpu" ? "WebGPU" : "WASM"}, ${m.info.threads} thread${m.info.threads > 1 ? "s" : ""}${crossOriginIsolated ? "" : " (page not cross-origin isolated: threads off)"}`;
      ui.loadEmbedded.disabled = false;
      setRunning(false);
      loading?.resolve(m.info);
      loading = null;
      return;
    case "step":
      if (!running || m.id !== running.id) return;
      ui.progress.max = m.steps;
      ui.progress.value = m.step + 1;
      setStatus(`step ${m.step + 1}/${m.steps}: ${m.seconds.toFixed(3)} s`);
      return;
    case "result": {
      if (!running || m.result.id !== running.id) return;
      const r = m.result;
      const t = (performance.now() - running.t0) / 1000;
      lastResult = r;
      draw(ui.image, r.rgb, r.width, r.height);
      ui.sps.textContent = `${r.secondsPerStep.toFixed(3)} s`;
      ui.flops.textContent = `${(100 * r.flopsSaving).toFixed(1)} %`;
      ui.total.textContent = `${t.toFixed(2)} s`;
      setStatus(`done: ${r.stepSeconds.length} steps`);
      showMasks(r);
      running.resolve(r);
      running = null;
      setRunning(false);
      return;
    }
    case "error":
      fail(m.message, m.id);
      return;
  }
}

function draw(canvas: HTMLCanvasElement, rgb: Uint8Array, width: number, height: number): void {
  canvas.width = width;
  canvas.height = height;
  const img = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    img.data[4 * i] = rgb[3 * i]!;
    img.data[4 * i + 1] = rgb[3 * i + 1]!;
    img.data[4 * i + 2] = rgb[3 * i + 2]!;
    img.data[4 * i + 3] = 255;
  }
  canvas.getContext("2d")!.putImageData(img, 0, 0);
}

function showMasks(r: GenerateReply): void {
  const steps = [...new Set(r.masks.map((m) => m.step))].sort((a, b) => a - b);
  ui.masksView.hidden = steps.length === 0;
  ui.masks.replaceChildren();
  if (!steps.length) return;
  ui.maskStep.min = String(steps[0]);
  ui.maskStep.max = String(steps[steps.length - 1]);
  // The last step at first; then the step the user picked, while it exists.
  if (!maskStepPicked || !steps.includes(Number(ui.maskStep.value))) ui.maskStep.value = String(steps[steps.length - 1]);
  renderMaskStep();
}

function renderMaskStep(): void {
  if (!lastResult) return;
  const step = Number(ui.maskStep.value);
  ui.maskStepValue.textContent = `${step + 1}/${lastResult.stepSeconds.length}`;
  ui.masks.replaceChildren(
    ...lastResult.masks
      .filter((m) => m.step === step)
      .map((m) => {
        const fig = document.createElement("figure");
        const c = document.createElement("canvas");
        c.className = "mask";
        draw(c, m.rgb, lastResult!.width, lastResult!.height);
        const cap = document.createElement("figcaption");
        cap.textContent = `${m.block} (${m.kept}/${m.tokens})`;
        fig.append(c, cap);
        return fig;
      }),
  );
}

function post(m: ToWorker): void {
  worker!.postMessage(m);
}

function loadModel(request: ModelRequest): Promise<ModelInfo> {
  showError(null);
  loading?.reject(new Error("superseded by another model"));
  worker?.terminate();
  worker = startWorker();
  model = request;
  info = null;
  setRunning(false);
  ui.loadEmbedded.disabled = true;
  ui.model.textContent = "loading...";
  const p = new Promise<ModelInfo>((resolve, reject) => {
    loading = { resolve, reject };
  });
  post({ type: "load", model: request, backend: ui.backend.value as Backend, threads: Math.max(1, Number(ui.threads.value) || 1) });
  return p;
}

function readRequest(): GenerateRequest {
  return {
    prompt: ui.prompt.value,
    seed: Number(ui.seed.value),
    steps: Number(ui.steps.value),
    method: ui.method.value as Method,
    ratio: Number(ui.ratio.value),
    schedule: ui.schedule.value as GenerateRequest["schedule"],
  };
}

function checkRequest(r: GenerateRequest): string | null {
  if (r.prompt.trim() === "") return "The prompt is empty: describe the image to generate.";
  if (!Number.isInteger(r.seed) || r.seed < 0) return `Seed must be a non-negative integer, got ${ui.seed.value || "nothing"}.`;
  if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > 200) return `Steps must be an integer in 1..200, got ${ui.steps.value || "nothing"}.`;
  return null;
}

function generate(request: GenerateRequest): Promise<GenerateReply> {
  showError(null);
  const bad = checkRequest(request);
  if (bad) {
    showError(bad);
    return Promise.reject(new Error(bad));
  }
  if (!info || !worker) {
    const m = "No model loaded yet: load the embedded model or pick a diffusers folder.";
    showError(m);
    return Promise.reject(new Error(m));
  }
  if (running) return Promise.reject(new Error("a generation is already running"));
  const id = nextId++;
  const p = new Promise<GenerateReply>((resolve, reject) => {
    running = { id, resolve, reject, t0: performance.now() };
  });
  ui.progress.value = 0;
  setStatus("starting...");
  setRunning(true);
  post({ type: "generate", id, request });
  return p;
}

/** Cancel: terminate the worker (ONNX Runtime cannot be interrupted mid-step) and reload the model in a fresh one. */
function cancel(): void {
  if (!running) return;
  running.reject(new Error("cancelled"));
  running = null;
  setStatus("cancelled");
  void loadModel(model!).catch(() => {});
}

ui.generate.onclick = () => {
  if (running) cancel();
  else generate(readRequest()).catch(() => {});
};
ui.loadEmbedded.onclick = () => void loadModel(EMBEDDED).catch(() => {});
ui.folder.onchange = () => {
  const files = [...(ui.folder.files ?? [])];
  if (!files.length) return;
  const picked = files.map((file) => ({ path: file.webkitRelativePath || file.name, file }));
  void loadModel({ kind: "files", name: picked[0]!.path.split("/")[0]!, files: picked }).catch(() => {});
};
ui.backend.onchange = ui.threads.onchange = () => {
  if (model) void loadModel(model).catch(() => {});
};
ui.ratio.oninput = () => {
  ui.ratioValue.textContent = Number(ui.ratio.value).toFixed(2);
};
ui.maskStep.oninput = () => {
  maskStepPicked = true;
  renderMaskStep();
};

/** The browser test's hook (test/browser.test.ts): the same path as the buttons, with given latents. */
const testHook = {
  ready: () =>
    info
      ? Promise.resolve(info)
      : loading
        ? new Promise<ModelInfo>((res, rej) => {
            const l = loading!;
            loading = {
              resolve: (i) => {
                l.resolve(i);
                res(i);
              },
              reject: (e) => {
                l.reject(e);
                rej(e);
              },
            };
          })
        : loadModel(EMBEDDED),
  async generate(r: Omit<GenerateRequest, "latents"> & { latents?: number[] }) {
    ui.prompt.value = r.prompt;
    ui.seed.value = String(r.seed);
    ui.steps.value = String(r.steps);
    ui.method.value = r.method;
    ui.ratio.value = String(r.ratio);
    ui.ratioValue.textContent = r.ratio.toFixed(2);
    ui.schedule.value = r.schedule;
    const out = await generate({ ...readRequest(), latents: r.latents ? Float32Array.from(r.latents) : undefined });
    return {
      latents: Array.from(out.latents),
      latentDims: out.latentDims,
      stepSeconds: out.stepSeconds,
      flopsSaving: out.flopsSaving,
      masks: out.masks.length,
    };
  },
  error: () => (ui.error.hidden ? null : ui.error.textContent),
  cancel,
};
(window as unknown as { atedmTest: typeof testHook }).atedmTest = testHook;

// ?threads=N&backend=wasm|webgpu|auto preset the controls (the tests and benchmarks use them).
const params = new URLSearchParams(location.search);
if (params.has("threads")) ui.threads.value = params.get("threads")!;
if (["auto", "wasm", "webgpu"].includes(params.get("backend") ?? "")) ui.backend.value = params.get("backend")!;
ui.runtime.textContent = crossOriginIsolated ? "cross-origin isolated: WASM threads available" : "not cross-origin isolated: WASM runs on 1 thread";
void loadModel(EMBEDDED).catch(() => {});
