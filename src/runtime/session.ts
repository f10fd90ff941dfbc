/**
 * ONNX Runtime sessions for graphs built with GraphBuilder.
 *
 * A session is created once per graph and reused for every step and every token count (token dims are
 * symbolic). Inputs are passed without copies; every output that crosses back into JavaScript is copied by
 * onnxruntime-node, so callers fetch only the outputs they need.
 *
 * External weights: ONNX Runtime only accepts external-data files inside the model file's folder, so the model
 * is written to a temporary folder and each weights file is hard-linked into it (no copy). Where a hard link is
 * impossible (another file system), the file's bytes are handed to ONNX Runtime in memory instead.
 *
 * Logging: ONNX Runtime's own log lines (coloured `[W:onnxruntime:...]` / `[E:onnxruntime:...]` on stderr) are off
 * unless `verbose`: sessions log at severity 4 (fatal only), and so does ONNX Runtime's environment when the first
 * Runtime is created before any session (`ort.env.logLevel`, read once, when ONNX Runtime initialises). Errors still
 * reach the caller, as one-line `AtedmError`s naming the graph (`ortMessage`).
 *
 * In the browser build (web/, docs/browser.md) `onnxruntime-node` and `node:fs`/`node:os`/`node:path` are aliased to
 * src/platform/browser/: the same code runs on onnxruntime-web, whose thread count is `ort.env.wasm.numThreads`
 * (set by the worker) and whose external-data path is never taken (the worker refuses models that would need it).
 */
import * as ort from "onnxruntime-node";
import { linkSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import type { GraphBuilder } from "../graph/builder.js";

export { ort };
export type Tensor = ort.Tensor;

export interface RuntimeOptions {
  /** Intra-op threads for ONNX Runtime. Default: the number of cores. */
  threads?: number;
  /** Let ONNX Runtime's own warnings and errors through to stderr (log severity 2, warning). Default false (4, fatal). */
  verbose?: boolean;
  /** ONNX Runtime execution providers, in order of preference. Default: the runtime's own (CPU; WASM in the browser). */
  executionProviders?: string[];
}

/** ONNX Runtime log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. */
const QUIET_SEVERITY = 4;
const VERBOSE_SEVERITY = 2;

/**
 * An ONNX Runtime error message as one line: its lines joined, the native source location and function signature
 * that ONNX Runtime puts before the reason (`/onnxruntime_src/.../element_wise_ops.h:563 void onnxruntime::
 * BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) `) removed, at most 400 characters.
 */
export function ortMessage(e: unknown): string {
  const raw = e instanceof Error ? e.message : String(e);
  const line = raw
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .join(" ")
    .replace(/\S*\/onnxruntime\S*\.(?:cc|cpp|h|hpp|cu):\d+ (?:(?:[\w:<>*&,]+ )*[\w<>~]*::[\w:<>~]+\([^()]*\)(?: const)? )?/g, "");
  return line.length > 400 ? `${line.slice(0, 400)}...` : line;
}

export class Runtime {
  readonly threads: number;
  readonly verbose: boolean;
  readonly executionProviders?: string[];
  private readonly tempDirs: string[] = [];

  constructor(options: RuntimeOptions = {}) {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new AtedmError(`Runtime: threads must be a positive integer, got ${threads}`);
    this.threads = threads;
    this.verbose = options.verbose ?? false;
    if (options.executionProviders) this.executionProviders = [...options.executionProviders];
    // ONNX Runtime's Linux build starts a telemetry client that leaves mat-debug-<pid>.log and .ses in the temp
    // folder of every process that creates a session (read when the first session is created); off unless the
    // user set ORT_DISABLE_TELEMETRY themselves.
    process.env.ORT_DISABLE_TELEMETRY ??= "1";
    // Read by onnxruntime-node once, when its first session is created; later changes have no effect.
    ort.env.logLevel = this.verbose ? "warning" : "fatal";
  }

  sessionOptions(): ort.InferenceSession.SessionOptions {
    return {
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
      enableCpuMemArena: true,
      enableMemPattern: true,
      logSeverityLevel: this.verbose ? VERBOSE_SEVERITY : QUIET_SEVERITY,
      ...(this.executionProviders ? { executionProviders: this.executionProviders } : {}),
    };
  }

  /** Compile `graph` into a session. */
  async session(graph: GraphBuilder): Promise<Session> {
    const options = this.sessionOptions();
    let inner: ort.InferenceSession;
    try {
      if (!graph.hasExternalData()) {
        inner = await ort.InferenceSession.create(graph.toBytes(), options);
      } else {
        const dir = mkdtempSync(join(tmpdir(), "atedm-"));
        this.tempDirs.push(dir);
        const local = new Map<string, string>();
        const inMemory: Array<{ path: string; data: Uint8Array }> = [];
        const bytes = graph.toBytes((file) => {
          let name = local.get(file);
          if (!name) {
            name = `weights${local.size}.bin`;
            local.set(file, name);
            try {
              // The real file: a link to a symlink (Hugging Face's cache links snapshots to blobs) would point
              // outside the folder, which ONNX Runtime refuses.
              linkSync(realpathSync(file), join(dir, name));
            } catch {
              inMemory.push({ path: name, data: readFileSync(file) });
            }
          }
          return name;
        });
        const modelPath = join(dir, "model.onnx");
        writeFileSync(modelPath, bytes);
        inner = await ort.InferenceSession.create(
          modelPath,
          inMemory.length ? ({ ...options, externalData: inMemory } as ort.InferenceSession.SessionOptions) : options,
        );
      }
    } catch (e) {
      throw new AtedmError(`cannot build ONNX session '${graph.name}': ${ortMessage(e)}`);
    }
    return new Session(graph.name, inner, this.verbose);
  }

  /** Delete the temporary model folders (the hard links, not the weights they point to). */
  dispose(): void {
    for (const d of this.tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

export class Session {
  private readonly runOptions: ort.InferenceSession.RunOptions;

  constructor(
    readonly name: string,
    readonly inner: ort.InferenceSession,
    verbose = false,
  ) {
    this.runOptions = { logSeverityLevel: verbose ? VERBOSE_SEVERITY : QUIET_SEVERITY };
  }

  async run(feeds: Record<string, ort.Tensor>, fetches?: readonly string[]): Promise<Record<string, ort.Tensor>> {
    try {
      return (fetches ? await this.inner.run(feeds, fetches, this.runOptions) : await this.inner.run(feeds, this.runOptions)) as Record<
        string,
        ort.Tensor
      >;
    } catch (e) {
      throw new AtedmError(`ONNX session '${this.name}' failed: ${ortMessage(e)}`);
    }
  }

  async release(): Promise<void> {
    await this.inner.release();
  }
}

export function f32(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor("float32", data, dims);
}

export function i64(data: readonly number[] | BigInt64Array, dims?: readonly number[]): ort.Tensor {
  const arr = data instanceof BigInt64Array ? data : BigInt64Array.from(data, (x) => BigInt(x));
  return new ort.Tensor("int64", arr, dims ?? [arr.length]);
}
