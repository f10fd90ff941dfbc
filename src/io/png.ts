/** PNG output (fast-png), written atomically: a file appears whole or not at all, and a failed write leaves nothing behind. */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { encode } from "fast-png";
import { AtedmError } from "../errors.js";

/** Quantise an RGB float image in [0, 1], (H, W, 3) row-major, to 8-bit RGB the way diffusers' numpy_to_pil does (round(x * 255)). */
export function toRGB8(image: ArrayLike<number>, height: number, width: number): Uint8Array {
  const out = new Uint8Array(height * width * 3);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(Math.min(1, Math.max(0, image[i]!)) * 255);
  return out;
}

export function encodePng(rgb: Uint8Array, height: number, width: number, channels: 3 | 4 = 3): Uint8Array {
  return encode({ width, height, data: rgb, channels, depth: 8 });
}

export function writePng(path: string, rgb: Uint8Array, height: number, width: number, channels: 3 | 4 = 3): void {
  writeFileAtomic(path, [encodePng(rgb, height, width, channels)]);
}

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
