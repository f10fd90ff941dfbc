/**
 * Binding checkpoint tensors to graph initializers, by their diffusers state-dict names.
 *
 *   const p = new Params(weights).at("down_blocks.0.resnets.0");
 *   const w = p.get(g, "conv1.weight", [320, 320, 3, 3]);   // checked against the checkpoint's shape
 *
 * Small checkpoints are embedded in the model protobuf. Large ones (over `externalThreshold` bytes) stay in
 * their safetensors files and ONNX Runtime reads them directly (ONNX external data); F16/BF16 weights are then
 * cast to float32 inside the graph.
 */
import { AtedmError } from "../errors.js";
import type { DType, GraphBuilder, Value } from "../graph/builder.js";
import type { TensorSource } from "../io/safetensors.js";

const EXTERNAL_DTYPE: Record<string, DType> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

export interface WeightsOptions {
  /** Keep weights in their files (ONNX external data) when the checkpoint is larger than this. Default 1 GiB. */
  externalThreshold?: number;
}

export class Weights {
  readonly external: boolean;
  /** The value each weight already has in each graph (a weight used twice is bound once). */
  private readonly bound = new WeakMap<GraphBuilder, Map<string, Value>>();
  constructor(
    readonly store: TensorSource,
    options: WeightsOptions = {},
  ) {
    let total = 0;
    for (const k of store.keys()) total += store.info(k).byteLength;
    this.external = total > (options.externalThreshold ?? 2 ** 30);
  }

  has(name: string): boolean {
    return this.store.has(name);
  }

  shape(name: string): number[] {
    return this.store.info(name).shape;
  }

  /** Add tensor `name` to graph `g` as a float32 value, checking its shape when `shape` is given. */
  param(g: GraphBuilder, name: string, shape?: readonly number[]): Value {
    const info = this.store.info(name);
    if (shape && (shape.length !== info.shape.length || shape.some((d, i) => d !== info.shape[i]))) {
      throw new AtedmError(`${info.file}: tensor '${name}' has shape [${info.shape}], expected [${shape}]`);
    }
    let bound = this.bound.get(g);
    if (!bound) {
      bound = new Map();
      this.bound.set(g, bound);
    }
    let v = bound.get(name);
    if (!v) {
      v = this.bind(g, name);
      bound.set(name, v);
    }
    return v;
  }

  private bind(g: GraphBuilder, name: string): Value {
    const info = this.store.info(name);
    const key = `w:${name}`;
    if (this.external && !info.inline && info.dtype in EXTERNAL_DTYPE) {
      const dtype = EXTERNAL_DTYPE[info.dtype]!;
      const ext = { file: info.file, offset: info.offset, length: info.byteLength };
      if (dtype === "float32") return g.initializer(key, { dtype, dims: info.shape, external: ext });
      const raw = g.initializer(`${key}:raw`, { dtype, dims: info.shape, external: ext });
      return g.op("Cast", [raw], { to: 1 });
    }
    return g.initializer(key, { dtype: "float32", dims: info.shape, data: this.store.readF32(name) });
  }
}

/** A view of the weights under a module path prefix, e.g. `down_blocks.1.attentions.0`. */
export class Params {
  constructor(
    readonly weights: Weights,
    readonly prefix = "",
  ) {}

  at(sub: string | number): Params {
    return new Params(this.weights, this.path(String(sub)));
  }

  path(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  has(name: string): boolean {
    return this.weights.has(this.path(name));
  }

  shape(name: string): number[] {
    return this.weights.shape(this.path(name));
  }

  get(g: GraphBuilder, name: string, shape?: readonly number[]): Value {
    return this.weights.param(g, this.path(name), shape);
  }
}

/** The dtypes a weight may have: the floating-point ones the reader converts to float32. */
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);

/** One difference between a checkpoint and the state dict its config implies. */
export interface StateDictMismatch {
  name: string;
  kind: "missing" | "shape" | "dtype";
  /** The file holding the tensor (the store's source when it is missing). */
  file: string;
  found?: number[];
  expected: readonly number[];
  /** One line: `<file>: <name> has shape [4, 320, 3, 3], expected [320, 4, 3, 3]`. */
  message: string;
}

const dims = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * Every tensor of `expected` (name -> shape, in module order) that `store` lacks, holds with another shape, or holds
 * in a non-float dtype. Tensors of the store that are not expected are ignored, as diffusers ignores them.
 */
export function stateDictMismatches(store: TensorSource, expected: ReadonlyMap<string, readonly number[]>): StateDictMismatch[] {
  const out: StateDictMismatch[] = [];
  for (const [name, shape] of expected) {
    if (!store.has(name)) {
      out.push({
        name,
        kind: "missing",
        file: store.source,
        expected: shape,
        message: `${store.source}: missing tensor ${name} (expected shape ${dims(shape)})`,
      });
      continue;
    }
    const info = store.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      const message = `${info.file}: ${name} has shape ${dims(info.shape)}, expected ${dims(shape)}`;
      out.push({ name, kind: "shape", file: info.file, found: info.shape.slice(), expected: shape, message });
    } else if (!FLOAT_DTYPES.has(info.dtype)) {
      const message = `${info.file}: ${name} has dtype ${info.dtype}, expected F32, F16, BF16 or F64`;
      out.push({ name, kind: "dtype", file: info.file, found: info.shape.slice(), expected: shape, message });
    }
  }
  return out;
}

/**
 * Throw one `AtedmError` line for the first mismatch of `stateDictMismatches` (with the count of the others), before
 * any graph is built. `hint` may add a clause naming the config value that explains a mismatch.
 */
export function checkStateDict(
  store: TensorSource,
  expected: ReadonlyMap<string, readonly number[]>,
  hint: (m: StateDictMismatch) => string | undefined = () => undefined,
): void {
  const bad = stateDictMismatches(store, expected);
  if (!bad.length) return;
  const first = bad[0]!;
  const why = hint(first);
  const more = bad.length > 1 ? ` (and ${bad.length - 1} more mismatched tensor${bad.length > 2 ? "s" : ""})` : "";
  throw new AtedmError(`${first.message}${why ? ` (${why})` : ""}${more}`);
}

/** Bytes of the expected tensors as float32, what ONNX Runtime holds of them (for memory estimates). */
export function float32Bytes(expected: ReadonlyMap<string, readonly number[]>): number {
  let n = 0;
  for (const s of expected.values()) n += s.reduce((a, b) => a * b, 1);
  return 4 * n;
}
