/**
 * The subset of `node:fs` that atedm uses, for the browser build (aliased by web/vite.config.ts), over an in-memory
 * map of files: the page fetches a model's files by URL, or reads those of a folder the user picked, and mounts them
 * here with `mountFiles`; then `loadPipeline("/models/shapes")` reads them exactly as in Node (existsSync, statSync,
 * readFileSync, byte-range reads with openSync/readSync). Folders are implied by the files under them. Writing is
 * not supported (a clear error): the browser build writes no files.
 */
import { resolve } from "./path.js";

const files = new Map<string, Uint8Array>();

function key(path: string | URL): string {
  return resolve(typeof path === "string" ? path : decodeURIComponent(path.pathname));
}

/** Add files (absolute or "/"-relative POSIX paths) to the in-memory file system, replacing those of the same path. */
export function mountFiles(entries: Iterable<[string, Uint8Array]>): void {
  for (const [p, data] of entries) files.set(key(p), data);
}

/** Remove every file under `dir` (or all files when no folder is given). */
export function unmountFiles(dir?: string): void {
  if (dir === undefined) {
    files.clear();
    return;
  }
  const prefix = `${key(dir)}/`;
  for (const p of [...files.keys()]) if (p.startsWith(prefix)) files.delete(p);
}

/** The mounted paths, sorted. */
export function mountedFiles(): string[] {
  return [...files.keys()].sort();
}

function isDir(p: string): boolean {
  if (p === "/") return true;
  const prefix = `${p}/`;
  for (const k of files.keys()) if (k.startsWith(prefix)) return true;
  return false;
}

function enoent(syscall: string, path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file or directory, ${syscall} '${path}'`), { code: "ENOENT", syscall, path });
}

export interface BrowserStats {
  size: number;
  isFile(): boolean;
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSymbolicLink(): boolean;
}

function stats(size: number, dir: boolean): BrowserStats {
  const no = () => false;
  return {
    size,
    isFile: () => !dir,
    isDirectory: () => dir,
    isFIFO: no,
    isSocket: no,
    isCharacterDevice: no,
    isBlockDevice: no,
    isSymbolicLink: no,
  };
}

export function existsSync(path: string | URL): boolean {
  const p = key(path);
  return files.has(p) || isDir(p);
}

export function statSync(path: string | URL): BrowserStats {
  const p = key(path);
  const f = files.get(p);
  if (f) return stats(f.byteLength, false);
  if (isDir(p)) return stats(0, true);
  throw enoent("stat", p);
}

export const lstatSync = statSync;

export function realpathSync(path: string | URL): string {
  const p = key(path);
  if (!existsSync(p)) throw enoent("realpath", p);
  return p;
}

export function readdirSync(path: string | URL): string[] {
  const p = key(path);
  if (!isDir(p)) throw enoent("scandir", p);
  const prefix = p === "/" ? "/" : `${p}/`;
  const names = new Set<string>();
  for (const k of files.keys()) if (k.startsWith(prefix)) names.add(k.slice(prefix.length).split("/")[0]!);
  return [...names].sort();
}

const UTF8 = new TextDecoder("utf-8");

export function readFileSync(path: string | URL, options?: string | { encoding?: string | null }): Uint8Array | string {
  const p = key(path);
  const f = files.get(p);
  if (!f) throw isDir(p) ? Object.assign(new Error(`EISDIR: illegal operation on a directory, read`), { code: "EISDIR" }) : enoent("open", p);
  const encoding = typeof options === "string" ? options : options?.encoding;
  if (encoding) return UTF8.decode(f);
  return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
}

// Byte-range reads: a descriptor is an index into the open files.
const open = new Map<number, Uint8Array>();
let nextFd = 3;

export const constants = { O_RDONLY: 0, O_NONBLOCK: 0 };

export function openSync(path: string | URL, flags?: number | string): number {
  if (flags !== undefined && flags !== 0 && flags !== "r") throw new Error(`openSync: the browser file system is read-only`);
  const p = key(path);
  const f = files.get(p);
  if (!f) throw enoent("open", p);
  const fd = nextFd++;
  open.set(fd, f);
  return fd;
}

function fileOf(fd: number): Uint8Array {
  const f = open.get(fd);
  if (!f) throw Object.assign(new Error("EBADF: bad file descriptor"), { code: "EBADF" });
  return f;
}

export function fstatSync(fd: number): BrowserStats {
  return stats(fileOf(fd).byteLength, false);
}

export function readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number | null): number {
  const f = fileOf(fd);
  const start = position ?? 0;
  const n = Math.max(0, Math.min(length, f.byteLength - start));
  buffer.set(f.subarray(start, start + n), offset);
  return n;
}

export function closeSync(fd: number): void {
  fileOf(fd);
  open.delete(fd);
}

function readOnly(name: string): never {
  throw new Error(`${name}: the browser build of atedm writes no files`);
}

export const writeFileSync = (): never => readOnly("writeFileSync");
export const writeSync = (): never => readOnly("writeSync");
export const mkdirSync = (): never => readOnly("mkdirSync");
export const mkdtempSync = (): never => readOnly("mkdtempSync");
export const renameSync = (): never => readOnly("renameSync");
export const rmSync = (): never => readOnly("rmSync");
export const linkSync = (): never => readOnly("linkSync");
export const fsyncSync = (): never => readOnly("fsyncSync");

export default {
  existsSync,
  statSync,
  lstatSync,
  realpathSync,
  readdirSync,
  readFileSync,
  constants,
  openSync,
  fstatSync,
  readSync,
  closeSync,
  writeFileSync,
  writeSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  linkSync,
  fsyncSync,
};
