/**
 * The subset of `node:url` that atedm uses, for the browser build (aliased by web/vite.config.ts): a URL's path is
 * its key in the in-memory file map (`new URL("../../models/clip-tokenizer", import.meta.url)` becomes a path
 * under the page's origin).
 */
export function fileURLToPath(url: string | URL): string {
  return decodeURIComponent(new URL(String(url)).pathname);
}

export function pathToFileURL(path: string): URL {
  return new URL(path, globalThis.location?.href ?? "file:///");
}

export default { fileURLToPath, pathToFileURL };
