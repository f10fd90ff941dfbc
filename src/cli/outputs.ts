/**
 * Output paths, checked when the flags are parsed, before any model loads: a bad --out costs milliseconds, not a
 * whole generation. A file output must not be empty or a directory (or a device, fifo, ...), and its folder must
 * exist and be writable; a folder output must be a writable folder, or be creatable (its nearest existing
 * ancestor is a writable folder). Nothing is created here: a command that fails later leaves no empty folder.
 */
import { accessSync, constants, type Stats, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { AtedmError } from "../errors.js";
import { describeErrno } from "../io/files.js";

/** `statSync` that returns undefined for a missing entry and throws one line (naming the flag) otherwise. */
function stat(path: string, flag: string, shown: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT") return undefined;
    if (err.code === "ENOTDIR") return undefined; // a file in the middle of the path: reported by the folder check
    throw new AtedmError(`--${flag} ${shown}: ${describeErrno(err.code, err.message)}`);
  }
}

/** The folder `dir` exists (or, with `creatable`, can be created) and this process can create files in it. */
function checkFolder(dir: string, flag: string, shown: string, creatable: boolean): void {
  let d = dir;
  for (;;) {
    const st = stat(d, flag, shown);
    if (st) {
      if (!st.isDirectory()) throw new AtedmError(`--${flag} ${shown}: ${d} is not a directory`);
      break;
    }
    if (!creatable) {
      // the folder is missing: name the missing folder, or the file that stands where a folder should be
      let up = dirname(d);
      while (up !== dirname(up) && !stat(up, flag, shown)) up = dirname(up);
      const upSt = stat(up, flag, shown);
      if (upSt && !upSt.isDirectory()) throw new AtedmError(`--${flag} ${shown}: ${up} is not a directory`);
      throw new AtedmError(`--${flag} ${shown}: directory ${d} does not exist`);
    }
    const up = dirname(d);
    if (up === d) throw new AtedmError(`--${flag} ${shown}: no existing folder on the path`);
    d = up;
  }
  try {
    accessSync(d, constants.W_OK | constants.X_OK);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new AtedmError(`--${flag} ${shown}: cannot create files in ${d} (${describeErrno(err.code, err.message)})`);
  }
}

/** Check the file output `path` of `--flag`; returns it. */
export function checkOutputFile(path: string, flag: string): string {
  if (path.trim() === "") throw new AtedmError(`--${flag}: the file name is empty`);
  const abs = resolve(path);
  const st = stat(abs, flag, path);
  if (st?.isDirectory()) throw new AtedmError(`--${flag} ${path}: is a directory`);
  if (st && !st.isFile()) throw new AtedmError(`--${flag} ${path}: not a regular file`);
  checkFolder(dirname(abs), flag, path, false);
  return path;
}

/** Check the folder output `path` of `--flag` (created when the command writes into it); returns it. */
export function checkOutputDir(path: string, flag: string): string {
  if (path.trim() === "") throw new AtedmError(`--${flag}: the folder name is empty`);
  checkFolder(resolve(path), flag, path, true);
  return path;
}

/** Two outputs of one command must not name the same file. */
export function checkDistinct(outputs: Array<[flag: string, path: string | undefined]>): void {
  const seen = new Map<string, string>();
  for (const [flag, path] of outputs) {
    if (path === undefined) continue;
    const abs = resolve(path);
    const other = seen.get(abs);
    if (other) throw new AtedmError(`--${other} and --${flag} name the same path ${path}`);
    seen.set(abs, flag);
  }
}
