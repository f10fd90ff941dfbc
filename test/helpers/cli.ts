/**
 * Runs the atedm CLI from the TypeScript sources, two ways:
 *
 *  - `atedmSpawn(...args)`: a real process, `node --import tsx test/helpers/cli.ts ARGS`; this file, run as the
 *    entry point, does what bin/atedm.js does (`process.exitCode = await main(argv)`), on the sources instead of dist/.
 *  - `atedmInProcess(args)`: `main(args)` in the test process, with what it writes to process.stdout/stderr captured,
 *    its return value as the exit code, stdout/stderr seen as non-terminals (isTTY false), the current directory a
 *    fresh empty one (the files it wrote there are listed), and the option names of every `parseArgs` call it made (so a test can derive a command's flags from
 *    its parser instead of hard-coding them). Everything patched is restored in a finally block.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import util from "node:util";
import { main } from "../../src/cli/main.js";

const self = fileURLToPath(import.meta.url);

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Run `atedm ARGS` as its own node process (the real entry path: exit code, stdout and stderr of a process).
 * Asynchronous, so a test file can start its processes early and let them run while in-process cases do. Never
 * rejects: a process that cannot start resolves with code null and the reason on stderr.
 */
export function atedmSpawn(...args: string[]): Promise<CliResult> {
  const env = { ...process.env };
  delete env.ATEDM_DEBUG;
  return new Promise((done) => {
    const child = spawn(process.execPath, ["--import", "tsx", self, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => done({ code: null, stdout: "", stderr: `cannot start: ${e.message}` }));
    child.on("close", (code) => done({ code, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") }));
  });
}

export interface InProcessResult extends CliResult {
  code: number;
  /** Paths (relative, sorted) of everything found in the fresh current directory after main() returned. */
  written: string[];
  /** Option names (without --) of each `parseArgs` call main() made, in call order. */
  parsed: string[][];
}

interface Sink {
  stdout: string[];
  stderr: string[];
}

/** Set only inside the main() call of `atedmInProcess`: writes from any other async context pass through. */
const inCli = new AsyncLocalStorage<Sink>();
let running = false;

function capture(stream: NodeJS.WriteStream, key: keyof Sink): () => void {
  const hadOwn = Object.hasOwn(stream, "write");
  const original = stream.write;
  // What main() writes goes into a buffer, not a terminal: it must see a non-terminal stream (no progress bar).
  const tty = Object.getOwnPropertyDescriptor(stream, "isTTY");
  Object.defineProperty(stream, "isTTY", { value: false, configurable: true, writable: true });
  stream.write = function write(this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
    const sink = inCli.getStore();
    // The test runner's reporter also writes to process.stdout: let everything outside main() through.
    if (!sink) return (original as (...a: unknown[]) => boolean).call(stream, chunk, ...rest);
    const encoding = typeof rest[0] === "string" ? (rest[0] as BufferEncoding) : "utf8";
    sink[key].push(typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString(encoding));
    const done = rest.find((x) => typeof x === "function") as (() => void) | undefined;
    if (done) process.nextTick(done);
    return true;
  } as NodeJS.WriteStream["write"];
  return () => {
    if (hadOwn) stream.write = original;
    else delete (stream as { write?: unknown }).write;
    if (tty) Object.defineProperty(stream, "isTTY", tty);
    else delete (stream as { isTTY?: boolean }).isTTY;
  };
}

/**
 * `main(args)` in this process. The current directory is a fresh empty temp dir while it runs (relative paths in
 * `args` land there; `written` lists what did), ATEDM_DEBUG is unset, and process.exitCode is left as it was.
 * Not re-entrant (it changes process-wide state): node:test runs a file's tests one after another.
 */
export async function atedmInProcess(args: string[]): Promise<InProcessResult> {
  if (running) throw new Error("atedmInProcess: already running (it patches process-wide state)");
  running = true;
  const sink: Sink = { stdout: [], stderr: [] };
  const parsed: string[][] = [];
  const cwd = process.cwd();
  const dir = mkdtempSync(join(tmpdir(), "atedm-cwd-"));
  const debug = process.env.ATEDM_DEBUG;
  const exitCode = process.exitCode;
  const parseArgs = util.parseArgs;
  const restoreOut = capture(process.stdout, "stdout");
  const restoreErr = capture(process.stderr, "stderr");
  try {
    delete process.env.ATEDM_DEBUG;
    util.parseArgs = ((config) => {
      parsed.push(Object.keys(config?.options ?? {}));
      return parseArgs(config);
    }) as typeof parseArgs;
    syncBuiltinESMExports();
    process.chdir(dir);
    const code = await inCli.run(sink, () => main(args));
    const written = (readdirSync(dir, { recursive: true }) as string[]).sort();
    return { code, stdout: sink.stdout.join(""), stderr: sink.stderr.join(""), written, parsed };
  } finally {
    process.chdir(cwd);
    util.parseArgs = parseArgs;
    syncBuiltinESMExports();
    restoreErr();
    restoreOut();
    process.exitCode = exitCode;
    if (debug === undefined) delete process.env.ATEDM_DEBUG;
    else process.env.ATEDM_DEBUG = debug;
    rmSync(dir, { recursive: true, force: true });
    running = false;
  }
}

// Run as a program (what atedmSpawn starts): the atedm command, like bin/atedm.js.
if (process.argv[1] && resolve(process.argv[1]) === self) process.exitCode = await main(process.argv.slice(2));
