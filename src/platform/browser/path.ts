/**
 * The subset of `node:path` (POSIX) that atedm uses, for the browser build: the bundler aliases `node:path` here
 * (web/vite.config.ts). Paths in the browser are keys of the in-memory file map (./fs.ts), always POSIX and absolute
 * from "/" (the page's origin root), so the working directory is "/".
 */
export const sep = "/";
export const delimiter = ":";

export function normalize(p: string): string {
  if (p === "") return ".";
  const abs = p.startsWith("/");
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length && out[out.length - 1] !== "..") out.pop();
      else if (!abs) out.push("..");
    } else out.push(part);
  }
  const s = out.join("/");
  return abs ? `/${s}` : s || ".";
}

export function join(...parts: string[]): string {
  const nonEmpty = parts.filter((p) => p !== "");
  return nonEmpty.length ? normalize(nonEmpty.join("/")) : ".";
}

export function isAbsolute(p: string): boolean {
  return p.startsWith("/");
}

export function resolve(...parts: string[]): string {
  let r = "";
  for (let i = parts.length - 1; i >= 0 && !r.startsWith("/"); i--) {
    const p = parts[i]!;
    if (p !== "") r = r ? `${p}/${r}` : p;
  }
  return normalize(r.startsWith("/") ? r : `/${r}`);
}

export function dirname(p: string): string {
  const n = normalize(p);
  const i = n.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : n.slice(0, i);
}

export function basename(p: string, ext?: string): string {
  const b = normalize(p).split("/").pop() ?? "";
  return ext && b.endsWith(ext) && b !== ext ? b.slice(0, -ext.length) : b;
}

export function extname(p: string): string {
  const b = basename(p);
  const i = b.lastIndexOf(".");
  return i <= 0 ? "" : b.slice(i);
}

export function relative(from: string, to: string): string {
  const a = resolve(from).split("/").filter(Boolean);
  const b = resolve(to).split("/").filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...Array(a.length - i).fill(".."), ...b.slice(i)].join("/");
}

export const posix = { sep, delimiter, normalize, join, isAbsolute, resolve, dirname, basename, extname, relative };
export default posix;
