/**
 * Writing files so that a user never finds half of one: `writeFileAtomic` (temp file beside the target, flushed,
 * renamed over it; any failure removes the temp file), `makeDirectory`, and `describeErrno` (one-line reasons for
 * errno codes). Every
 * writer of atedm (PNG, safetensors, the shapes data set) goes through it.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { isAbsolute, sep } from "node:path";
import { AtedmError } from "../errors.js";

/** What an errno code means to a user, for one-line errors ("cannot write out.png: is a directory"). */
export function describeErrno(code: string | undefined, fallback: string): string {
  switch (code) {
    case "EISDIR":
      return "is a directory";
    case "ENOENT":
      return "its directory does not exist";
    case "ENOTDIR":
      return "a component of the path is not a directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EROFS":
      return "read-only file system";
    case "ENOSPC":
      return "no space left on device";
    case "EDQUOT":
      return "disk quota exceeded";
    case "ENAMETOOLONG":
      return "file name too long";
    case "EEXIST":
      return "a temporary file of the same name exists";
    default:
      return code ? `${code}: ${fallback}` : fallback;
  }
}

/**
 * Write `chunks` to `path` whole or not at all: into a temp file beside it (flushed to disk), then renamed over
 * `path`. Any failure (open, write, flush, rename) removes the temp file and throws one AtedmError line naming
 * `path` and the reason.
 */
export function writeFileAtomic(path: string, chunks: Uint8Array[]): void {
  if (!path) throw new AtedmError("cannot write a file with an empty name");
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number | undefined;
  let created = false;
  let renamed = false;
  try {
    fd = openSync(tmp, "wx");
    created = true;
    for (const c of chunks) {
      let done = 0;
      while (done < c.byteLength) done += writeSync(fd, c, done, c.byteLength - done);
    }
    fsyncSync(fd);
    const f = fd;
    fd = undefined;
    closeSync(f);
    renameSync(tmp, path);
    renamed = true;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new AtedmError(`cannot write ${path}: ${describeErrno(err.code, err.message?.split("\n")[0] ?? String(e))}`);
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        // already failing: the write error is the one to report
      }
    }
    if (created && !renamed) {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // a temp file that cannot be removed (its directory became unwritable) is not worth hiding the cause
      }
    }
  }
}

/** Whether `rel`, a `path.relative(folder, p)` result, points outside `folder` (up from it, or to another drive). */
export function leavesFolder(rel: string): boolean {
  return rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel);
}

/** `value` as JSON (indented by `indent` spaces, 0 for one line) plus a newline, written with `writeFileAtomic`. */
export function writeJsonAtomic(path: string, value: unknown, indent = 0): void {
  writeFileAtomic(path, [Buffer.from(`${JSON.stringify(value, null, indent)}\n`, "utf8")]);
}

/** `mkdir -p path`, failing as one AtedmError line naming `path` and the reason. */
export function makeDirectory(path: string): void {
  try {
    mkdirSync(path, { recursive: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new AtedmError(`cannot create ${path}: ${describeErrno(err.code, err.message)}`);
  }
}
