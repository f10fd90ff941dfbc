/**
 * The bundler aliases of atedm's browser build (used by web/vite.config.ts; any bundler with aliases works): the Node
 * modules atedm imports, mapped to the browser implementations beside this file. This module runs in Node, in the
 * bundler's config, never in the page.
 */
import { fileURLToPath } from "node:url";

export interface Alias {
  find: RegExp;
  replacement: string;
}

/** `node:fs`, `node:path`, `node:os`, `node:url` and `onnxruntime-node` to src/platform/browser/ (or dist/platform/browser/). */
export function browserAliases(): Alias[] {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  const here = (name: string) => fileURLToPath(new URL(`./${name}${ext}`, import.meta.url));
  return [
    { find: /^node:fs$/, replacement: here("fs") },
    { find: /^node:path$/, replacement: here("path") },
    { find: /^node:os$/, replacement: here("os") },
    { find: /^node:url$/, replacement: here("url") },
    { find: /^onnxruntime-node$/, replacement: here("ort") },
  ];
}
