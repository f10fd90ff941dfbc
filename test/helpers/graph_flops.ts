/**
 * TEST HELPER (test/flops.test.ts only; not shipped in dist/): FLOPs of a built graph, to check that the analytic
 * count of src/metrics/flops.ts equals what our ONNX graphs execute. It propagates concrete shapes through the
 * node list and counts 2 FLOPs per multiply-add of every Conv, MatMul, Gemm and MultiHeadAttention (SPEC
 * convention; norms, softmax, element-wise ops: 0).
 *
 *   const r = graphFlops(g, { dims: { batch: 1, height: 128, width: 128, text_len: 77, pooled_dim: 1280 } });
 *   r.total; r.byCategory.ff; r.byModule.get("mid_block.attentions.0.transformer_blocks.0.attn1");
 *
 * Ops: only those src/ emits (U-Net, AT-EDM, ToMe, CLIP, VAE graphs, opset 17 as GraphBuilder writes them), plus
 * Floor, Flatten and ConstantOfShape for the hand-built graph of test/flops.test.ts. Any other op type is an
 * error naming the op and the node, so a newly emitted op cannot be miscounted silently: add it to `infer`.
 *
 * Shapes: graph inputs take their declared shapes with symbolic dims resolved from `dims` (or whole shapes from
 * `shapes`); small tensors (<= 64 elements: Shape outputs, constants, int64 graph inputs given in `values`, and
 * what Gather / Concat / arithmetic / Cast make of them) keep their values, so Reshape, Expand, Slice, Range,
 * TopK's k, Resize sizes and ConstantOfShape resolve. Loop-free graphs only.
 *
 * What ONNX Runtime executes: a node identical to an earlier one (same op, attributes and inputs) is not counted
 * again, since ORT's common-subexpression elimination runs it once; nodes whose outputs are unused are counted,
 * since ORT runs them.
 *
 * Attribution, without relying on node names:
 * - a Conv / MatMul / Gemm fed by a checkpoint weight (initializer `w:<state dict name>`, possibly through
 *   Transpose / Reshape / Cast) belongs to that weight's module (`...attn1.to_q`, `...resnets.0.conv1`);
 * - a weightless MatMul or MultiHeadAttention whose operands come from the to_q / to_k / to_v projections of one
 *   attention module (through reshapes, transposes, gathers, the scale and the softmax) is that module's QK^T or
 *   PV (`...attn1`, `...attn2`);
 * - any other multiply-add (G-WPR iterations, similarity matrices of a pruning method) is `overhead`, under the
 *   node's scope (the part of its name before the last `/`).
 * Module names and categories are those of the analytic count (src/metrics/flops.ts), so both compare directly.
 */
import { DataType } from "../../src/graph/onnx_proto.js";
import type { GraphBuilder, InitializerSpec } from "../../src/graph/builder.js";
import { categoryOf, FLOPS_CATEGORIES, unetFlops, type FlopsCategory, type UNetFlops, type UNetFlopsOptions } from "../../src/metrics/flops.js";

type UNetConfig = Parameters<typeof unetFlops>[0];

export type GraphFlopsCategory = FlopsCategory | "overhead";

export interface GraphFlopsInputs {
  /** Values of the symbolic input dims, e.g. { batch: 1, height: 64, width: 64, text_len: 77 }. */
  dims?: Record<string, number>;
  /** Whole input shapes (override the declared ones). */
  shapes?: Record<string, readonly number[]>;
  /** Values of small graph inputs (e.g. int64 keep counts); their shapes default to [values.length]. */
  values?: Record<string, readonly number[]>;
}

export interface NodeFlops {
  name: string;
  op: string;
  flops: number;
  module: string;
  category: GraphFlopsCategory;
}

export interface GraphFlops {
  /** All counted FLOPs, overhead included. */
  total: number;
  byCategory: Record<GraphFlopsCategory, number>;
  /** Per module (weight module path, attention module, or the scope of an overhead node). */
  byModule: Map<string, number>;
  /** Every Conv / MatMul / Gemm / MultiHeadAttention node. */
  nodes: NodeFlops[];
}

/** The sum of `byModule` over modules at or under `prefix` (e.g. an attention block path). */
export function flopsUnder(byModule: ReadonlyMap<string, number>, prefix: string): number {
  let s = 0;
  for (const [m, f] of byModule) if (m === prefix || m.startsWith(`${prefix}.`)) s += f;
  return s;
}

// ---------------------------------------------------------------------------------------------------------

/** A tensor as the propagator knows it: shape, ONNX data type, and values when small. */
interface Meta {
  shape: number[];
  dtype: number;
  value?: number[];
}

const SMALL = 64;
const INT_TYPES = new Set<number>([DataType.int64, DataType.int32, DataType.int8, DataType.uint8]);

/** An attribute as GraphBuilder encodes it (no tensor attributes, plain numbers). */
interface Attr {
  name: string;
  type?: number;
  i?: number;
  f?: number;
  ints?: number[];
  floats?: number[];
  s?: Uint8Array;
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

function broadcastShapes(shapes: ReadonlyArray<readonly number[]>, where: string): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) throw new Error(`${where}: shapes ${shapes.map((s) => `[${s}]`).join(", ")} do not broadcast`);
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** Element of `m` (broadcast to `outShape`) at flat output index `idx`. */
function broadcastGet(m: Meta, outShape: readonly number[], outStrides: readonly number[], idx: number): number {
  const off = outShape.length - m.shape.length;
  const st = stridesOf(m.shape);
  let src = 0;
  for (let d = 0; d < m.shape.length; d++) {
    const coord = Math.floor(idx / outStrides[d + off]!) % outShape[d + off]!;
    if (m.shape[d] !== 1) src += coord * st[d]!;
  }
  return m.value![src]!;
}

function normAxis(axis: number, rank: number, where: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${where}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Round to the output type: float32 rounding, integer truncation, bool. */
function castTo(x: number, dtype: number): number {
  if (dtype === DataType.float32) return Math.fround(x);
  if (dtype === DataType.bool) return x !== 0 ? 1 : 0;
  if (INT_TYPES.has(dtype)) return Number.isFinite(x) ? Math.trunc(x) : x;
  return x;
}

function initializerMeta(spec: InitializerSpec): Meta {
  const dtype = DataType[spec.dtype];
  const shape = spec.dims.slice();
  const m: Meta = { shape, dtype };
  if (spec.data && size(shape) <= SMALL) {
    const d = spec.data;
    if (d instanceof BigInt64Array) m.value = Array.from(d, (x) => Number(x));
    else if (spec.dtype === "float16" || spec.dtype === "bfloat16") m.value = undefined;
    else m.value = Array.from(d as ArrayLike<number>);
  }
  return m;
}

interface Tag {
  /** Attention module path, e.g. `...transformer_blocks.0.attn1`. */
  attn: string;
  role: "q" | "k" | "v" | "scores";
}

/** Ops a value flows through unchanged in meaning (for weight origins and attention-operand tags). */
const TAG_THROUGH = new Set([
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Reshape",
  "Transpose",
  "Cast",
  "Identity",
  "Softmax",
  "Gather",
  "GatherElements",
  "GatherND",
  "Slice",
  "Split",
  "Squeeze",
  "Unsqueeze",
  "Expand",
  "Concat",
  "Flatten",
  "Where",
]);
const WEIGHT_THROUGH = new Set(["Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze", "Flatten"]);

/** Count the FLOPs of graph `g` for the given input shapes; see the file comment. */
export function graphFlops(g: GraphBuilder, inputs: GraphFlopsInputs = {}): GraphFlops {
  const metas = new Map<string, Meta>();
  const weightOf = new Map<string, string>();
  const tags = new Map<string, Tag>();

  for (const [name, spec] of g.initializers) {
    metas.set(name, initializerMeta(spec));
    if (name.startsWith("w:")) weightOf.set(name, name.slice(2).replace(/:raw$/, ""));
  }
  // The builder keeps its declared inputs private; read them for their dtypes and symbolic shapes.
  const declared =
    (g as unknown as { inputs?: Array<{ name: string; dtype: keyof typeof DataType; shape: ReadonlyArray<number | string> }> }).inputs ?? [];
  for (const d of declared) {
    const value = inputs.values?.[d.name];
    let shape = inputs.shapes?.[d.name]?.slice();
    if (!shape) {
      shape = d.shape.map((x) => {
        if (typeof x === "number") return x;
        const v = inputs.dims?.[x];
        if (v === undefined) throw new Error(`graphFlops: input '${d.name}' has symbolic dim '${x}'; give it in dims`);
        return v;
      });
    }
    metas.set(d.name, { shape, dtype: DataType[d.dtype], value: value ? value.slice() : undefined });
  }
  for (const [name, value] of Object.entries(inputs.values ?? {})) {
    if (!metas.has(name)) metas.set(name, { shape: inputs.shapes?.[name]?.slice() ?? [value.length], dtype: DataType.int64, value: value.slice() });
  }
  for (const [name, shape] of Object.entries(inputs.shapes ?? {})) {
    if (!metas.has(name)) metas.set(name, { shape: shape.slice(), dtype: DataType.float32 });
  }

  const nodes: NodeFlops[] = [];
  // Common-subexpression elimination, as ONNX Runtime's CommonSubexpressionElimination (basic level) does: a node
  // with the same op, attributes and (already deduplicated) inputs as an earlier one is the same value and is
  // not run again, e.g. the text K/V projections of a cross-attention built twice.
  const alias = new Map<string, string>();
  const seen = new Map<string, string[]>();
  for (const raw of g.nodes) {
    const input = raw.input.map((n) => (n === "" ? "" : (alias.get(n) ?? n)));
    const key = input.length ? `${raw.domain}|${raw.op_type}|${input.join(",")}|${attributesKey(raw.attribute as Attr[])}` : null;
    const prev = key === null ? undefined : seen.get(key);
    if (prev && prev.length === raw.output.length) {
      raw.output.forEach((o, i) => o !== "" && alias.set(o, prev[i]!));
      continue;
    }
    if (key !== null) seen.set(key, raw.output);
    const node = { ...raw, input };
    const where = `node '${node.name}' (${node.domain ? node.domain + "." : ""}${node.op_type})`;
    const ins: Array<Meta | null> = node.input.map((n) => {
      if (n === "") return null;
      const m = metas.get(n);
      if (!m) throw new Error(`graphFlops: ${where}: input '${n}' is unknown (not a graph input, initializer or earlier output)`);
      return m;
    });
    const attrs = new Map<string, Attr>((node.attribute as Attr[]).map((a) => [a.name, a]));
    const outs = infer(node.op_type, node.domain, ins, attrs, node.output.length, where);
    node.output.forEach((o, i) => {
      const m = outs[i];
      if (m && o !== "") {
        if (m.value && (m.value.length !== size(m.shape) || size(m.shape) > SMALL)) delete m.value;
        metas.set(o, m);
      }
    });

    // Weight origins and attention-operand tags.
    const first = node.input[0] ?? "";
    if (WEIGHT_THROUGH.has(node.op_type) && weightOf.has(first)) weightOf.set(node.output[0]!, weightOf.get(first)!);
    if (TAG_THROUGH.has(node.op_type)) {
      const src = node.op_type === "Where" ? [node.input[1], node.input[2]] : node.input;
      const tag = src.map((n) => (n ? tags.get(n) : undefined)).find((t) => t);
      if (tag) for (const o of node.output) tags.set(o, tag);
    }

    const isMac = node.op_type === "Conv" || node.op_type === "MatMul" || node.op_type === "Gemm" || node.op_type === "MultiHeadAttention";
    if (!isMac) continue;
    const macs = macsOf(node.op_type, ins, outs[0]!, attrs, where);
    const weight = node.input
      .slice(0, 2)
      .map((n) => weightOf.get(n))
      .find((w) => w);
    let module: string;
    let category: GraphFlopsCategory;
    if (weight && node.op_type !== "MultiHeadAttention") {
      module = weight.replace(/\.weight$/, "");
      category = categoryOf(module);
      const m = /^(.*\.attn[12])\.to_(q|k|v)$/.exec(module);
      if (m) tags.set(node.output[0]!, { attn: m[1]!, role: m[2] as "q" | "k" | "v" });
    } else {
      const t = node.input.map((n) => (n ? tags.get(n) : undefined));
      const same = (a: Tag | undefined, b: Tag | undefined, ra: Tag["role"], rb: Tag["role"]) =>
        a && b && a.attn === b.attn && a.role === ra && b.role === rb;
      let attn: string | null = null;
      if (node.op_type === "MultiHeadAttention") {
        if (same(t[0], t[1], "q", "k") && t[2]?.attn === t[0]!.attn && t[2]!.role === "v") attn = t[0]!.attn;
      } else if (same(t[0], t[1], "q", "k")) {
        attn = t[0]!.attn;
        tags.set(node.output[0]!, { attn, role: "scores" });
      } else if (same(t[0], t[1], "scores", "v")) {
        attn = t[0]!.attn;
      }
      if (attn) {
        module = attn;
        category = categoryOf(attn);
      } else {
        const slash = node.name.lastIndexOf("/");
        module = slash < 0 ? "" : node.name.slice(0, slash);
        category = "overhead";
      }
    }
    nodes.push({ name: node.name, op: node.op_type, flops: 2 * macs, module, category });
  }

  const byCategory = Object.fromEntries([...FLOPS_CATEGORIES, "overhead"].map((c) => [c, 0])) as Record<GraphFlopsCategory, number>;
  const byModule = new Map<string, number>();
  let total = 0;
  for (const n of nodes) {
    total += n.flops;
    byCategory[n.category] += n.flops;
    byModule.set(n.module, (byModule.get(n.module) ?? 0) + n.flops);
  }
  return { total, byCategory, byModule, nodes };
}

/** A canonical string of a node's attributes (for common-subexpression elimination). */
function attributesKey(attrs: readonly Attr[]): string {
  return attrs
    .map((a) => `${a.name}:${a.type ?? ""}:${a.i ?? ""}:${a.f ?? ""}:${a.ints ?? ""}:${a.floats ?? ""}:${a.s ? Array.from(a.s).join(".") : ""}`)
    .sort()
    .join(";");
}

function macsOf(op: string, ins: Array<Meta | null>, out: Meta, attrs: Map<string, Attr>, where: string): number {
  switch (op) {
    case "Conv": {
      const w = ins[1]!;
      // Each output element: (Cin / group) * kernel multiply-adds; w is (M, Cin/group, k...).
      return size(out.shape) * size(w.shape.slice(1));
    }
    case "MatMul": {
      const a = ins[0]!.shape;
      const kdim = a[a.length - 1]!;
      return size(out.shape) * kdim;
    }
    case "Gemm": {
      const a = ins[0]!.shape;
      const kdim = attrInt(attrs, "transA", 0) ? a[0]! : a[1]!;
      return size(out.shape) * kdim;
    }
    case "MultiHeadAttention": {
      const [q, k, v] = [ins[0]!.shape, ins[1]!.shape, ins[2]!.shape];
      if (q.length !== 3 || k.length !== 3 || v.length !== 3) {
        throw new Error(`graphFlops: ${where}: only (B, S, C) query/key/value are supported, got [${q}], [${k}], [${v}]`);
      }
      // QK^T: B * S * L * C; PV: B * S * L * C_v.
      return q[0]! * q[1]! * k[1]! * (q[2]! + v[2]!);
    }
  }
  throw new Error(`graphFlops: ${where}: not a multiply-add op`);
}

function attrInt(attrs: Map<string, Attr>, name: string, dflt: number): number {
  const a = attrs.get(name);
  return a?.i ?? dflt;
}
function attrInts(attrs: Map<string, Attr>, name: string): number[] | undefined {
  const a = attrs.get(name);
  return a?.ints?.slice();
}
function attrString(attrs: Map<string, Attr>, name: string, dflt: string): string {
  const a = attrs.get(name);
  return a?.s ? new TextDecoder().decode(a.s) : dflt;
}

const UNARY_VALUE: Partial<Record<string, (x: number) => number>> = {
  Identity: (x) => x,
  Sqrt: Math.sqrt,
  Floor: Math.floor,
  Neg: (x) => -x,
  Sin: Math.sin,
  Cos: Math.cos,
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  Reciprocal: (x) => 1 / x,
};
const UNARY_SHAPE_ONLY = new Set(["Erf", "Softmax", "InstanceNormalization"]);

const BINARY: Record<string, (a: number, b: number, int: boolean) => number> = {
  Add: (a, b) => a + b,
  Sub: (a, b) => a - b,
  Mul: (a, b) => a * b,
  Div: (a, b, int) => (int ? Math.trunc(a / b) : a / b),
  Mod: (a, b) => a - b * Math.floor(a / b),
  Equal: (a, b) => (a === b ? 1 : 0),
  Greater: (a, b) => (a > b ? 1 : 0),
};
const COMPARE = new Set(["Equal", "Greater"]);
const REDUCE: Record<string, { init: number; step: (acc: number, x: number) => number; end?: (acc: number, n: number) => number }> = {
  ReduceSum: { init: 0, step: (a, x) => a + x },
  ReduceMean: { init: 0, step: (a, x) => a + x, end: (a, n) => a / n },
  ReduceMax: { init: -Infinity, step: Math.max },
  ReduceL2: { init: 0, step: (a, x) => a + x * x, end: (a) => Math.sqrt(a) },
};

/** Output metas of one node. */
function infer(op: string, domain: string, ins: Array<Meta | null>, attrs: Map<string, Attr>, nOut: number, where: string): Array<Meta | null> {
  const fail = (why: string): never => {
    throw new Error(`graphFlops: ${where}: ${why}`);
  };
  const need = (i: number): Meta => ins[i] ?? fail(`input ${i} is required`);
  const knownValue = (i: number, what: string): number[] => {
    const m = need(i);
    if (!m.value) fail(`${what} (input ${i}, shape [${m.shape}]) must be a known small tensor to resolve shapes`);
    return m.value!;
  };
  const optValue = (i: number): number[] | undefined => (ins[i] ? (ins[i]!.value ?? fail(`input ${i} must be a known small tensor`)) : undefined);

  if (domain === "com.microsoft") {
    if (op === "MultiHeadAttention") {
      const q = need(0);
      const v = need(2);
      return [{ shape: [q.shape[0]!, q.shape[1]!, v.shape[v.shape.length - 1]!], dtype: q.dtype }];
    }
    return fail(`unsupported op com.microsoft.${op}`);
  }
  if (domain !== "") return fail(`unsupported op ${domain}.${op}`);

  if (Object.hasOwn(UNARY_VALUE, op) || UNARY_SHAPE_ONLY.has(op)) {
    const m = need(0);
    const f = UNARY_VALUE[op];
    return [{ shape: m.shape.slice(), dtype: m.dtype, value: f && m.value ? m.value.map((v) => castTo(f(v), m.dtype)) : undefined }];
  }
  if (Object.hasOwn(BINARY, op)) {
    const ms = [need(0), need(1)];
    const shape = broadcastShapes(
      ms.map((m) => m.shape),
      `graphFlops: ${where}`,
    );
    const dtype = COMPARE.has(op) ? DataType.bool : ms[0]!.dtype;
    let value: number[] | undefined;
    if (ms.every((m) => m.value) && size(shape) <= SMALL) {
      const st = stridesOf(shape);
      const int = INT_TYPES.has(ms[0]!.dtype);
      value = [];
      for (let i = 0; i < size(shape); i++) {
        value.push(castTo(BINARY[op]!(broadcastGet(ms[0]!, shape, st, i), broadcastGet(ms[1]!, shape, st, i), int), dtype));
      }
    }
    return [{ shape, dtype, value }];
  }
  if (Object.hasOwn(REDUCE, op)) {
    const m = need(0);
    const r = m.shape.length;
    const axesIn = ins[1] ? knownValue(1, "axes") : attrInts(attrs, "axes");
    const keep = attrInt(attrs, "keepdims", 1);
    if ((!axesIn || axesIn.length === 0) && attrInt(attrs, "noop_with_empty_axes", 0)) return [{ ...m, shape: m.shape.slice() }];
    const axes = new Set((axesIn?.length ? axesIn : m.shape.map((_, i) => i)).map((a) => normAxis(a, r, where)));
    const shape: number[] = [];
    m.shape.forEach((d, i) => {
      if (!axes.has(i)) shape.push(d);
      else if (keep) shape.push(1);
    });
    let value: number[] | undefined;
    if (m.value) {
      const red = REDUCE[op]!;
      const keptShape = m.shape.map((d, i) => (axes.has(i) ? 1 : d));
      const kst = stridesOf(keptShape);
      const ist = stridesOf(m.shape);
      const acc = new Array<number>(size(keptShape)).fill(red.init);
      const cnt = size(m.shape) / size(keptShape);
      for (let i = 0; i < m.value.length; i++) {
        let o = 0;
        for (let d = 0; d < r; d++) if (!axes.has(d)) o += (Math.floor(i / ist[d]!) % m.shape[d]!) * kst[d]!;
        acc[o] = red.step(acc[o]!, m.value[i]!);
      }
      value = acc.map((a) => castTo(red.end ? red.end(a, cnt) : a, m.dtype));
    }
    return [{ shape, dtype: m.dtype, value }];
  }

  switch (op) {
    case "Cast": {
      const m = need(0);
      const to = attrInt(attrs, "to", DataType.float32);
      return [{ shape: m.shape.slice(), dtype: to, value: m.value?.map((v) => castTo(v, to)) }];
    }
    case "Shape": {
      const r = need(0).shape.length;
      const clamp = (a: number) => Math.min(r, Math.max(0, a < 0 ? a + r : a));
      const start = clamp(attrInt(attrs, "start", 0));
      const end = clamp(attrInt(attrs, "end", r));
      const value = need(0).shape.slice(start, Math.max(start, end));
      return [{ shape: [value.length], dtype: DataType.int64, value }];
    }
    case "Reshape": {
      const m = need(0);
      const spec = knownValue(1, "shape");
      const allowzero = attrInt(attrs, "allowzero", 0);
      const shape = spec.map((d, i) => (d === 0 && !allowzero ? (m.shape[i] ?? fail(`shape [${spec}] copies missing dim ${i}`)) : d));
      const known = shape.filter((d) => d !== -1);
      const minus = shape.length - known.length;
      if (minus > 1) fail(`shape [${spec}] has more than one -1`);
      if (minus === 1) {
        const rest = size(known);
        if (rest === 0 || size(m.shape) % rest) fail(`cannot reshape [${m.shape}] to [${spec}]`);
        shape[shape.indexOf(-1)] = size(m.shape) / rest;
      }
      if (size(shape) !== size(m.shape)) fail(`cannot reshape [${m.shape}] to [${spec}]`);
      return [{ shape, dtype: m.dtype, value: m.value?.slice() }];
    }
    case "Transpose": {
      const m = need(0);
      const perm = attrInts(attrs, "perm") ?? m.shape.map((_, i) => m.shape.length - 1 - i);
      const shape = perm.map((p) => m.shape[p]!);
      let value: number[] | undefined;
      if (m.value) {
        const ist = stridesOf(m.shape);
        const ost = stridesOf(shape);
        value = new Array<number>(m.value.length);
        for (let o = 0; o < m.value.length; o++) {
          let src = 0;
          for (let d = 0; d < shape.length; d++) src += (Math.floor(o / ost[d]!) % shape[d]!) * ist[perm[d]!]!;
          value[o] = m.value[src]!;
        }
      }
      return [{ shape, dtype: m.dtype, value }];
    }
    case "Unsqueeze": {
      const m = need(0);
      const axesRaw = knownValue(1, "axes");
      const rank = m.shape.length + axesRaw.length;
      const axes = new Set(axesRaw.map((a) => normAxis(a, rank, where)));
      const shape: number[] = [];
      let j = 0;
      for (let i = 0; i < rank; i++) shape.push(axes.has(i) ? 1 : m.shape[j++]!);
      return [{ shape, dtype: m.dtype, value: m.value?.slice() }];
    }
    case "Squeeze": {
      const m = need(0);
      const axesRaw = ins[1] ? knownValue(1, "axes") : undefined;
      const axes = axesRaw ? new Set(axesRaw.map((a) => normAxis(a, m.shape.length, where))) : null;
      const shape = m.shape.filter((d, i) => (axes ? !axes.has(i) : d !== 1));
      if (axes) for (const a of axes) if (m.shape[a] !== 1) fail(`cannot squeeze axis ${a} of [${m.shape}]`);
      return [{ shape, dtype: m.dtype, value: m.value?.slice() }];
    }
    case "Flatten": {
      const m = need(0);
      const r = m.shape.length;
      const axisRaw = attrInt(attrs, "axis", 1);
      const axis = axisRaw < 0 ? axisRaw + r : axisRaw;
      return [{ shape: [size(m.shape.slice(0, axis)), size(m.shape.slice(axis))], dtype: m.dtype, value: m.value?.slice() }];
    }
    case "Concat": {
      const ms = ins.filter((m): m is Meta => m !== null);
      const r = ms[0]!.shape.length;
      const axis = normAxis(attrInt(attrs, "axis", 0), r, where);
      const shape = ms[0]!.shape.slice();
      shape[axis] = ms.reduce((a, m) => a + m.shape[axis]!, 0);
      for (const m of ms) {
        if (m.shape.length !== r || m.shape.some((d, i) => i !== axis && d !== shape[i])) {
          fail(`Concat of [${ms.map((q) => `[${q.shape}]`).join(", ")}] on axis ${axis}`);
        }
      }
      let value: number[] | undefined;
      if (ms.every((m) => m.value)) {
        // Interleave blocks: for each outer index, append every input's slab.
        const outer = size(shape.slice(0, axis));
        value = [];
        for (let o = 0; o < outer; o++) {
          for (const m of ms) {
            const slab = size(m.shape.slice(axis));
            value.push(...m.value!.slice(o * slab, (o + 1) * slab));
          }
        }
      }
      return [{ shape, dtype: ms[0]!.dtype, value }];
    }
    case "Split": {
      const m = need(0);
      const axis = normAxis(attrInt(attrs, "axis", 0), m.shape.length, where);
      const d = m.shape[axis]!;
      let parts = ins[1] ? knownValue(1, "split") : undefined;
      if (!parts) {
        const chunk = Math.ceil(d / nOut);
        parts = Array.from({ length: nOut }, (_, i) => Math.max(0, Math.min(chunk, d - i * chunk)));
      }
      if (parts.reduce((a, b) => a + b, 0) !== d) fail(`split [${parts}] does not add up to ${d}`);
      return parts.map((p) => {
        const shape = m.shape.slice();
        shape[axis] = p;
        return { shape, dtype: m.dtype };
      });
    }
    case "Slice": {
      const m = need(0);
      const r = m.shape.length;
      const starts = knownValue(1, "starts");
      const ends = knownValue(2, "ends");
      const axes = (optValue(3) ?? starts.map((_, i) => i)).map((a) => normAxis(a, r, where));
      const steps = optValue(4) ?? starts.map(() => 1);
      const shape = m.shape.slice();
      const ranges = m.shape.map((dim) => ({ start: 0, step: 1, count: dim }));
      axes.forEach((a, i) => {
        const dim = m.shape[a]!;
        const step = steps[i]!;
        if (step === 0) fail("Slice step 0");
        let s = starts[i]!;
        let e = ends[i]!;
        if (s < 0) s += dim;
        if (e < 0) e += dim;
        if (step > 0) {
          s = Math.min(Math.max(s, 0), dim);
          e = Math.min(Math.max(e, 0), dim);
        } else {
          s = Math.min(Math.max(s, -1), dim - 1);
          e = Math.min(Math.max(e, -1), dim - 1);
        }
        const count = Math.max(0, Math.ceil((e - s) / step));
        shape[a] = count;
        ranges[a] = { start: s, step, count };
      });
      let value: number[] | undefined;
      if (m.value && size(shape) <= SMALL) {
        const ist = stridesOf(m.shape);
        const ost = stridesOf(shape);
        value = [];
        for (let o = 0; o < size(shape); o++) {
          let src = 0;
          for (let d = 0; d < r; d++) src += (ranges[d]!.start + (Math.floor(o / ost[d]!) % shape[d]!) * ranges[d]!.step) * ist[d]!;
          value.push(m.value[src]!);
        }
      }
      return [{ shape, dtype: m.dtype, value }];
    }
    case "Gather": {
      const m = need(0);
      const idx = need(1);
      const axis = normAxis(attrInt(attrs, "axis", 0), m.shape.length, where);
      const shape = [...m.shape.slice(0, axis), ...idx.shape, ...m.shape.slice(axis + 1)];
      let value: number[] | undefined;
      if (m.value && idx.value && size(shape) <= SMALL) {
        const outer = size(m.shape.slice(0, axis));
        const inner = size(m.shape.slice(axis + 1));
        const dim = m.shape[axis]!;
        value = [];
        for (let o = 0; o < outer; o++) {
          for (const raw of idx.value) {
            const j = raw < 0 ? raw + dim : raw;
            if (j < 0 || j >= dim) fail(`index ${raw} out of range for dim ${dim}`);
            value.push(...m.value.slice((o * dim + j) * inner, (o * dim + j + 1) * inner));
          }
        }
      }
      return [{ shape, dtype: m.dtype, value }];
    }
    case "GatherElements":
      return [{ shape: need(1).shape.slice(), dtype: need(0).dtype }];
    case "GatherND": {
      const m = need(0);
      const idx = need(1).shape;
      const bd = attrInt(attrs, "batch_dims", 0);
      const r = idx[idx.length - 1]!;
      return [{ shape: [...idx.slice(0, -1), ...m.shape.slice(bd + r)], dtype: m.dtype }];
    }
    case "ScatterElements":
      return [{ shape: need(0).shape.slice(), dtype: need(0).dtype }];
    case "LayerNormalization": {
      const m = need(0);
      const axis = normAxis(attrInt(attrs, "axis", -1), m.shape.length, where);
      const stat = m.shape.map((d, i) => (i < axis ? d : 1));
      const outs: Array<Meta | null> = [{ shape: m.shape.slice(), dtype: m.dtype }];
      for (let i = 1; i < nOut; i++) outs.push({ shape: stat.slice(), dtype: DataType.float32 });
      return outs;
    }
    case "Expand": {
      const m = need(0);
      const target = knownValue(1, "shape");
      const shape = broadcastShapes([m.shape, target], `graphFlops: ${where}`);
      let value: number[] | undefined;
      if (m.value && size(shape) <= SMALL) {
        const st = stridesOf(shape);
        value = Array.from({ length: size(shape) }, (_, i) => broadcastGet(m, shape, st, i));
      }
      return [{ shape, dtype: m.dtype, value }];
    }
    case "Where": {
      const [c, a, b] = [need(0), need(1), need(2)];
      const shape = broadcastShapes([c.shape, a.shape, b.shape], `graphFlops: ${where}`);
      let value: number[] | undefined;
      if (c.value && a.value && b.value && size(shape) <= SMALL) {
        const st = stridesOf(shape);
        value = Array.from({ length: size(shape) }, (_, i) =>
          broadcastGet(c, shape, st, i) ? broadcastGet(a, shape, st, i) : broadcastGet(b, shape, st, i),
        );
      }
      return [{ shape, dtype: a.dtype, value }];
    }
    case "Range": {
      const [start, limit, delta] = [knownValue(0, "start")[0]!, knownValue(1, "limit")[0]!, knownValue(2, "delta")[0]!];
      const n = Math.max(0, Math.ceil((limit - start) / delta));
      const dtype = need(0).dtype;
      return [{ shape: [n], dtype, value: n <= SMALL ? Array.from({ length: n }, (_, i) => castTo(start + i * delta, dtype)) : undefined }];
    }
    case "ConstantOfShape": {
      const shape = knownValue(0, "shape");
      // GraphBuilder writes no tensor attributes: the default fill, float32 0.
      return [{ shape, dtype: DataType.float32, value: size(shape) <= SMALL ? new Array<number>(size(shape)).fill(0) : undefined }];
    }
    case "TopK": {
      const m = need(0);
      const k = knownValue(1, "k")[0]!;
      const axis = normAxis(attrInt(attrs, "axis", -1), m.shape.length, where);
      if (k > m.shape[axis]!) fail(`k = ${k} exceeds dim ${m.shape[axis]} of [${m.shape}]`);
      const shape = m.shape.slice();
      shape[axis] = k;
      return [
        { shape, dtype: m.dtype },
        { shape: shape.slice(), dtype: DataType.int64 },
      ];
    }
    case "ArgMax":
    case "ArgMin": {
      const m = need(0);
      const axis = normAxis(attrInt(attrs, "axis", 0), m.shape.length, where);
      const keep = attrInt(attrs, "keepdims", 1);
      const shape = keep ? m.shape.map((d, i) => (i === axis ? 1 : d)) : m.shape.filter((_, i) => i !== axis);
      return [{ shape, dtype: DataType.int64 }];
    }
    case "Resize": {
      const m = need(0);
      const sizes = optValue(3);
      if (sizes) {
        const shape = m.shape.slice();
        sizes.forEach((s, i) => (shape[i] = s));
        return [{ shape, dtype: m.dtype }];
      }
      const scales = optValue(2) ?? fail("Resize needs scales or sizes");
      return [{ shape: m.shape.map((d, i) => Math.floor(d * scales[i]!)), dtype: m.dtype }];
    }
    case "MatMul": {
      const a = need(0).shape;
      const b = need(1).shape;
      const a2 = a.length === 1 ? [1, a[0]!] : a;
      const b2 = b.length === 1 ? [b[0]!, 1] : b;
      if (a2[a2.length - 1] !== b2[b2.length - 2]) fail(`MatMul of [${a}] and [${b}]`);
      const batch = broadcastShapes([a2.slice(0, -2), b2.slice(0, -2)], `graphFlops: ${where}`);
      const shape = [...batch];
      if (a.length > 1) shape.push(a2[a2.length - 2]!);
      if (b.length > 1) shape.push(b2[b2.length - 1]!);
      return [{ shape, dtype: need(0).dtype }];
    }
    case "Gemm": {
      const a = need(0).shape;
      const b = need(1).shape;
      const M = attrInt(attrs, "transA", 0) ? a[1]! : a[0]!;
      const Ka = attrInt(attrs, "transA", 0) ? a[0]! : a[1]!;
      const Kb = attrInt(attrs, "transB", 0) ? b[1]! : b[0]!;
      const N = attrInt(attrs, "transB", 0) ? b[0]! : b[1]!;
      if (Ka !== Kb) fail(`Gemm of [${a}] and [${b}]`);
      return [{ shape: [M, N], dtype: need(0).dtype }];
    }
    case "Conv": {
      const m = need(0);
      const w = need(1);
      const spatial = m.shape.length - 2;
      const kernel = attrInts(attrs, "kernel_shape") ?? w.shape.slice(2);
      const strides = attrInts(attrs, "strides") ?? new Array(spatial).fill(1);
      const dil = attrInts(attrs, "dilations") ?? new Array(spatial).fill(1);
      const autoPad = attrString(attrs, "auto_pad", "NOTSET");
      const group = attrInt(attrs, "group", 1);
      if (m.shape[1] !== w.shape[1]! * group) fail(`input channels ${m.shape[1]} vs weight [${w.shape}] and group ${group}`);
      const out = [m.shape[0]!, w.shape[0]!];
      for (let i = 0; i < spatial; i++) {
        const d = m.shape[i + 2]!;
        const k = (kernel[i]! - 1) * dil[i]! + 1;
        if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") out.push(Math.ceil(d / strides[i]!));
        else if (autoPad === "VALID") out.push(Math.floor((d - k) / strides[i]!) + 1);
        else if (autoPad === "NOTSET") {
          const pads = attrInts(attrs, "pads") ?? new Array(2 * spatial).fill(0);
          out.push(Math.floor((d + pads[i]! + pads[i + spatial]! - k) / strides[i]!) + 1);
        } else fail(`auto_pad ${autoPad}`);
      }
      return [{ shape: out, dtype: m.dtype }];
    }
  }
  return fail(`unsupported op ${op}`);
}

// ---------------------------------------------------------------------------------------------------------
// Graph count vs analytic count of a U-Net (dense, or pruned with fixed keep counts / ToMe merge counts).

export interface UNetFlopsComparison {
  analytic: UNetFlops;
  graph: GraphFlops;
  /**
   * Modules whose graph count differs from the analytic one (relative difference over `tolerance`). The analytic
   * side of a module is its model FLOPs plus the overhead the analytic count attributes to it
   * (`overhead.byModule`: the extra cross-attention map of cross-attention G-WPR), as the graph counts both there.
   */
  mismatches: Array<{ module: string; analytic: number; graph: number }>;
  /**
   * The graph's `overhead` category vs the analytic overhead line less its module-attributed part (reported, not
   * part of `mismatches`).
   */
  overhead: { analytic: number; graph: number };
}

/**
 * Count the FLOPs of U-Net graph `g` (built from `cfg`, e.g. with a pruning runner whose keep counts are the
 * `keep` option) and compare them module by module with `unetFlops(cfg, options)`.
 *
 * Graph inputs: dims `batch`, `height`, `width`, `text_len`, `pooled_dim` follow from the options and config;
 * `inputs` adds or overrides (e.g. `values: { "atedm.down_blocks.1.attentions.0.k": [1516] }` for int64 inputs
 * the runner reads its k from). A pruning test asserts `mismatches` is empty and
 * `overhead.graph === overhead.analytic`.
 */
export function compareUNetFlops(
  g: GraphBuilder,
  cfg: UNetConfig,
  options: UNetFlopsOptions & { inputs?: GraphFlopsInputs; tolerance?: number } = {},
): UNetFlopsComparison {
  const analytic = unetFlops(cfg, options);
  const [h, w] = analytic.latent;
  const pooled = cfg.addition_embed_type === "text_time" ? cfg.projection_class_embeddings_input_dim! - 6 * cfg.addition_time_embed_dim! : 0;
  const graph = graphFlops(g, {
    ...options.inputs,
    dims: {
      batch: options.batch ?? 1,
      height: h,
      width: w,
      text_len: options.textLength ?? 77,
      pooled_dim: pooled,
      ...options.inputs?.dims,
    },
  });
  const tol = options.tolerance ?? 1e-9;
  const mismatches: UNetFlopsComparison["mismatches"] = [];
  const graphModules = new Map<string, number>();
  for (const n of graph.nodes) if (n.category !== "overhead") graphModules.set(n.module, (graphModules.get(n.module) ?? 0) + n.flops);
  const extra = analytic.overhead.byModule;
  for (const m of new Set([...graphModules.keys(), ...Object.keys(analytic.byModule), ...Object.keys(extra)])) {
    const a = (analytic.byModule[m] ?? 0) + (extra[m] ?? 0);
    const gf = graphModules.get(m) ?? 0;
    if (Math.abs(a - gf) > tol * Math.max(Math.abs(a), Math.abs(gf))) mismatches.push({ module: m, analytic: a, graph: gf });
  }
  const attributed = Object.values(extra).reduce((a, b) => a + b, 0);
  return { analytic, graph, mismatches, overhead: { analytic: analytic.overhead.total - attributed, graph: graph.byCategory.overhead } };
}
