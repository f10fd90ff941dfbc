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
 */
import * as ort from "onnxruntime-node";
import { linkSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import type { GraphBuilder } from "../graph/builder.js";

export { ort };
export type Tensor = ort.Tensor;

export interface RuntimeOptions {
  /** Intra-op threads for ONNX Runtime. Default: the number of cores. */
  threads?: number;
}

export class Runtime {
  readonly threads: number;
  private readonly tempDirs: string[] = [];

  constructor(options: RuntimeOptions = {}) {
    const threads = options.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new AtedmError(`Runtime: threads must be a positive integer, got ${threads}`);
    this.threads = threads;
  }

  sessionOptions(): ort.InferenceSession.SessionOptions {
    return {
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
      enableCpuMemArena: true,
      enableMemPattern: true,
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
              linkSync(file, join(dir, name));
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
      throw new AtedmError(`cannot build ONNX session '${graph.name}': ${(e as Error).message.split("\n")[0]}`);
    }
    return new Session(graph.name, inner);
  }

  /** Delete the temporary model folders (the hard links, not the weights they point to). */
  dispose(): void {
    for (const d of this.tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

export class Session {
  constructor(
    readonly name: string,
    readonly inner: ort.InferenceSession,
  ) {}

  async run(feeds: Record<string, ort.Tensor>, fetches?: readonly string[]): Promise<Record<string, ort.Tensor>> {
    try {
      return (fetches ? await this.inner.run(feeds, fetches) : await this.inner.run(feeds)) as Record<string, ort.Tensor>;
    } catch (e) {
      throw new AtedmError(`ONNX session '${this.name}' failed: ${(e as Error).message.split("\n")[0]}`);
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
