/**
 * A thin, typed builder for ONNX graphs: nodes, initializers, graph inputs/outputs with symbolic dimensions.
 *
 *   const g = new GraphBuilder("block");
 *   const x = g.input("x", "float32", ["B", "N", 320]);      // "B", "N": symbolic dims
 *   const w = g.initializer("proj.weight", { dtype: "float32", dims: [320, 320], data });
 *   g.output(g.op("MatMul", [x, w]), "y");
 *   const bytes = g.toBytes();
 *
 * Values are opaque names; ONNX Runtime infers shapes. Weights can live inline (raw_data) or outside the
 * protobuf (ONNX external data: file, offset, length), so checkpoints larger than protobuf's 2 GB limit are
 * read by ONNX Runtime straight from their safetensors files without passing through JavaScript.
 */
import { AttributeType, DataType, ModelProto } from "./onnx_proto.js";

export type DType = keyof typeof DataType;
export type Dim = number | string;

/** A tensor flowing through the graph (a node output, a graph input or an initializer). */
export interface Value {
  readonly name: string;
}

/** Float-typed attribute values must be marked, since JavaScript numbers do not say int or float. */
export interface FloatAttr {
  readonly float: number;
}
export interface FloatsAttr {
  readonly floats: readonly number[];
}
export type AttrValue = number | readonly number[] | string | FloatAttr | FloatsAttr;
export const float = (x: number): FloatAttr => ({ float: x });
export const floats = (xs: readonly number[]): FloatsAttr => ({ floats: xs });

export type TypedData = Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array | Float64Array;

/** Weight bytes held outside the model protobuf. `file` is an absolute path. */
export interface ExternalData {
  file: string;
  offset: number;
  length: number;
}

export interface InitializerSpec {
  dtype: DType;
  dims: readonly number[];
  /** Inline bytes (raw_data). */
  data?: TypedData;
  /** Or: bytes in another file. */
  external?: ExternalData;
}

interface NodeRecord {
  op_type: string;
  domain: string;
  input: string[];
  output: string[];
  name: string;
  attribute: object[];
}

export const OPSET = 17;
export const MS_DOMAIN = "com.microsoft";

export class GraphBuilder {
  readonly name: string;
  readonly nodes: NodeRecord[] = [];
  readonly initializers = new Map<string, InitializerSpec>();
  private readonly inputs: Array<{ name: string; dtype: DType; shape: readonly Dim[] }> = [];
  private readonly outputs: Array<{ name: string; dtype: DType; shape?: readonly Dim[] }> = [];
  private readonly names = new Set<string>();
  private counter = 0;
  private scopeStack: string[] = [];
  private readonly constCache = new Map<string, Value>();

  constructor(name: string) {
    this.name = name;
  }

  /** Run `fn` with node names prefixed by `scope` (names show up in profiles and errors). */
  scope<T>(scope: string, fn: () => T): T {
    this.scopeStack.push(scope);
    try {
      return fn();
    } finally {
      this.scopeStack.pop();
    }
  }

  private fresh(hint: string): string {
    const prefix = this.scopeStack.length ? this.scopeStack.join("/") + "/" : "";
    let name: string;
    do name = `${prefix}${hint}_${this.counter++}`;
    while (this.names.has(name));
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    this.claim(name);
    this.inputs.push({ name, dtype, shape });
    return { name };
  }

  /** Mark `v` as a graph output named `name` (an Identity node renames when needed). */
  output(v: Value, name: string, dtype: DType = "float32", shape?: readonly Dim[]): void {
    if (v.name !== name) {
      this.claim(name);
      this.nodes.push({ op_type: "Identity", domain: "", input: [v.name], output: [name], name: `out_${name}`, attribute: [] });
    }
    this.outputs.push({ name, dtype, shape });
  }

  initializer(name: string, spec: InitializerSpec): Value {
    this.claim(name);
    this.initializers.set(name, spec);
    return { name };
  }

  /** A small constant tensor (deduplicated). Scalars have dims []. */
  constant(values: number | readonly number[], dtype: DType = "float32", dims?: readonly number[]): Value {
    const arr = typeof values === "number" ? [values] : values;
    const d = dims ?? (typeof values === "number" ? [] : [arr.length]);
    const key = `${dtype}|${d.join(",")}|${arr.join(",")}`;
    const cached = this.constCache.get(key);
    if (cached) return cached;
    let data: TypedData;
    if (dtype === "int64") data = BigInt64Array.from(arr, (x) => BigInt(x));
    else if (dtype === "float32") data = Float32Array.from(arr);
    else if (dtype === "int32") data = Int32Array.from(arr);
    else if (dtype === "bool" || dtype === "uint8") data = Uint8Array.from(arr);
    else throw new Error(`constant: unsupported dtype ${dtype}`);
    const v = { name: this.fresh("const") };
    this.initializers.set(v.name, { dtype, dims: d, data });
    this.constCache.set(key, v);
    return v;
  }

  /** int64 1-D constant, the usual shape/axes argument. */
  ints(values: readonly number[]): Value {
    return this.constant(values, "int64");
  }

  /** Add one node with a single output. `null` inputs are ONNX's "omitted optional input". */
  op(opType: string, inputs: ReadonlyArray<Value | null>, attrs: Record<string, AttrValue> = {}, domain = ""): Value {
    return this.opN(opType, inputs, 1, attrs, domain)[0]!;
  }

  /** Add one node with `nOutputs` outputs. */
  opN(opType: string, inputs: ReadonlyArray<Value | null>, nOutputs: number, attrs: Record<string, AttrValue> = {}, domain = ""): Value[] {
    const outputs = Array.from({ length: nOutputs }, () => this.fresh(opType));
    this.nodes.push({
      op_type: opType,
      domain,
      input: inputs.map((v) => (v ? v.name : "")),
      output: outputs,
      name: outputs[0]!,
      attribute: Object.entries(attrs).map(([k, v]) => encodeAttr(k, v)),
    });
    return outputs.map((name) => ({ name }));
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`graph ${this.name}: duplicate value name '${name}'`);
    this.names.add(name);
  }

  hasExternalData(): boolean {
    for (const s of this.initializers.values()) if (s.external) return true;
    return false;
  }

  /**
   * Serialize to ONNX protobuf bytes. External initializers are written with `location` = `externalPath(file)`
   * (a path relative to the model file's folder).
   */
  toBytes(externalPath: (file: string) => string = (f) => f): Uint8Array {
    const initializer = [...this.initializers].map(([name, s]) => {
      const t: Record<string, unknown> = { name, dims: s.dims.slice(), data_type: DataType[s.dtype] };
      if (s.external) {
        t.data_location = 1;
        t.external_data = [
          { key: "location", value: externalPath(s.external.file) },
          { key: "offset", value: String(s.external.offset) },
          { key: "length", value: String(s.external.length) },
        ];
      } else if (s.data) {
        t.raw_data = new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength);
      } else {
        throw new Error(`initializer ${name} has neither data nor external`);
      }
      return t;
    });
    const valueInfo = (v: { name: string; dtype: DType; shape?: readonly Dim[] }) => ({
      name: v.name,
      type: {
        tensor_type: {
          elem_type: DataType[v.dtype],
          ...(v.shape ? { shape: { dim: v.shape.map((d) => (typeof d === "number" ? { dim_value: d } : { dim_param: d })) } } : {}),
        },
      },
    });
    const domains = new Set(this.nodes.map((n) => n.domain).filter((d) => d !== ""));
    const model = {
      ir_version: 8,
      producer_name: "atedm",
      producer_version: "0.1.0",
      opset_import: [{ domain: "", version: OPSET }, ...[...domains].map((domain) => ({ domain, version: 1 }))],
      graph: {
        name: this.name,
        node: this.nodes,
        initializer,
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
    };
    const err = ModelProto.verify(model);
    if (err) throw new Error(`graph ${this.name}: invalid model: ${err}`);
    return ModelProto.encode(ModelProto.fromObject(model)).finish();
  }
}

function encodeAttr(name: string, v: AttrValue): object {
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: non-integer ${v}; wrap floats with float()`);
    return { name, type: AttributeType.INT, i: v };
  }
  if (typeof v === "string") return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttributeType.INTS, ints: v };
  if ("float" in (v as FloatAttr)) return { name, type: AttributeType.FLOAT, f: (v as FloatAttr).float };
  return { name, type: AttributeType.FLOATS, floats: (v as FloatsAttr).floats };
}
