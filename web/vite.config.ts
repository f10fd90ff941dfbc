/**
 * The demo page (docs/browser.md): `npm run web` serves it with Vite's dev server, `npm run web:build` writes static
 * files to web/dist/ (or `--outDir`). atedm's sources run unchanged: the Node modules they import are aliased to
 * the small browser implementations of src/platform/browser/ (an in-memory file map, POSIX paths, onnxruntime-web).
 * The embedded model (models/shapes/) is served by the dev server and copied into the build, with a files.json
 * listing its files. Threaded WASM needs cross-origin isolation: both servers send COOP/COEP headers, and a static
 * host must send them too.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";
import { browserAliases } from "../src/platform/browser/aliases.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");

/** Cross-origin isolation, for SharedArrayBuffer (ONNX Runtime's WASM threads). */
export const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

/** Models served under /models/<name>/: the embedded one. */
const MODELS = ["shapes"];

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : [],
  );
}

/** files.json of a model folder: the files the page fetches into its in-memory file map. */
function manifest(dir: string): string {
  const files = listFiles(dir).map((f) => ({ path: relative(dir, f).split("\\").join("/"), size: statSync(f).size }));
  return JSON.stringify({ files }, null, 1);
}

function models(): Plugin {
  return {
    name: "atedm-models",
    configureServer(server) {
      server.middlewares.use((req, res: ServerResponse, next) => {
        const url = decodeURIComponent((req.url ?? "").split("?")[0]!);
        const m = /^\/models\/([^/]+)\/(.+)$/.exec(url);
        if (!m || !MODELS.includes(m[1]!)) return next();
        const dir = join(root, "models", m[1]!);
        const file = resolve(dir, m[2]!);
        if (!file.startsWith(`${dir}/`)) return next();
        for (const [k, v] of Object.entries(ISOLATION_HEADERS)) res.setHeader(k, v);
        if (m[2] === "files.json") {
          res.setHeader("Content-Type", "application/json");
          return res.end(manifest(dir));
        }
        try {
          const body = readFileSync(file);
          res.setHeader("Content-Type", "application/octet-stream");
          res.end(body);
        } catch {
          next();
        }
      });
    },
    generateBundle() {
      for (const name of MODELS) {
        const dir = join(root, "models", name);
        for (const f of listFiles(dir)) {
          this.emitFile({ type: "asset", fileName: `models/${name}/${relative(dir, f)}`, source: readFileSync(f) });
        }
        this.emitFile({ type: "asset", fileName: `models/${name}/files.json`, source: manifest(dir) });
      }
    },
  };
}

const alias = [
  ...browserAliases(),
  // The ESM build that loads its WASM glue (.mjs) and binary (.wasm) from env.wasm.wasmPaths (set by the worker).
  { find: /^onnxruntime-web$/, replacement: join(root, "node_modules/onnxruntime-web/dist/ort.min.mjs") },
];

export default defineConfig({
  root: here,
  base: "./",
  resolve: { alias },
  worker: { format: "es" },
  optimizeDeps: { exclude: ["onnxruntime-web"] },
  server: { headers: ISOLATION_HEADERS, host: "127.0.0.1", fs: { allow: [root] } },
  preview: { headers: ISOLATION_HEADERS, host: "127.0.0.1" },
  build: { outDir: join(here, "dist"), emptyOutDir: true, target: "es2022", chunkSizeWarningLimit: 4096, assetsInlineLimit: 0 },
  plugins: [models()],
});
