/** Messages between the page (main.ts) and the generation worker (worker.ts). */
export type Method = "none" | "atedm" | "tome";
export type Backend = "auto" | "wasm" | "webgpu";

export type ModelRequest =
  /** A model served by URL: `base` + each path of `base/files.json`. */
  | { kind: "url"; base: string }
  /** A diffusers folder the user picked (`<input webkitdirectory>`): each file with its path in the folder. */
  | { kind: "files"; name: string; files: Array<{ path: string; file: File }> };

export interface GenerateRequest {
  prompt: string;
  seed: number;
  steps: number;
  method: Method;
  ratio: number;
  schedule: "none" | "dsap" | "ramp";
  /** Initial latents [1, C, h, w] instead of the seed's noise (the tests pass Node's). */
  latents?: Float32Array;
  /** Collect the per-step kept-token maps (AT-EDM only). */
  withMasks?: boolean;
}

export type ToWorker =
  | { type: "load"; model: ModelRequest; backend: Backend; threads: number }
  | { type: "generate"; id: number; request: GenerateRequest };

export interface ModelInfo {
  path: string;
  backend: "wasm" | "webgpu";
  threads: number;
  height: number;
  width: number;
  weightBytes: number;
  defaultSteps: number;
  loadSeconds: number;
}

export interface MaskImage {
  step: number;
  block: string;
  /** RGB8, height x width: the image with pruned tokens dimmed and tinted red. */
  rgb: Uint8Array;
  kept: number;
  tokens: number;
}

export interface GenerateReply {
  id: number;
  /** RGB8, height x width. */
  rgb: Uint8Array;
  height: number;
  width: number;
  latents: Float32Array;
  latentDims: number[];
  stepSeconds: number[];
  secondsPerStep: number;
  flopsSaving: number;
  masks: MaskImage[];
}

export type FromWorker =
  | { type: "loading"; message: string }
  | { type: "loaded"; info: ModelInfo }
  | { type: "step"; id: number; step: number; steps: number; seconds: number }
  | { type: "result"; result: GenerateReply }
  | { type: "error"; id?: number; message: string };
