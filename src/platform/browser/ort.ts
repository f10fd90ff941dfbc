/**
 * The ONNX Runtime module of the browser build: `onnxruntime-node` is aliased here (web/vite.config.ts), so
 * src/runtime/session.ts runs unchanged on onnxruntime-web (WASM with SIMD and threads; WebGPU where the worker
 * asks for it). The two packages share onnxruntime-common's API (`InferenceSession`, `Tensor`, `env`).
 */
export * from "onnxruntime-web";
