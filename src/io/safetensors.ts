/**
 * safetensors reader and writer.
 *
 * Format: 8-byte little-endian header length n, then n bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {...} }`, then the data buffer;
 * offsets are relative to the start of the data buffer. Files are read by byte range (never whole), so
 * checkpoints over 4 GB work and only the tensors asked for are touched.
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, writeSync, existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { AtedmError } from "../errors.js";

export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** The file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  offset: number;
  byteLength: number;
}

/**
 * What a model needs from its weights: names, shapes and file locations, and float32 data on demand.
 * Implemented by `WeightStore` (real checkpoints) and `SyntheticWeightStore` (random weights of any shape).
 */
export interface TensorSource {
  /** Where the tensors come from (a path), for error messages. */
  readonly source: string;
  keys(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  readF32(name: string): Float32Array;
  close(): void;
}

/** One tensor in memory, float32 or int64 (bigint) data. */
export interface HostTensor {
  dims: number[];
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
}

const MAX_HEADER = 100 * 1024 * 1024;

/** An open safetensors file: header parsed and validated, data read on demand. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private readonly tensors = new Map<string, TensorInfo>();
  private fd: number | null;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    const size = fstatSync(fd).size;
    if (size < 8) throw new AtedmError(`${path}: not a safetensors file (only ${size} bytes)`);
    const lenBuf = Buffer.alloc(8);
    readExactly(fd, lenBuf, 0, path);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || headerLen > MAX_HEADER || 8 + headerLen > size) {
      throw new AtedmError(`${path}: corrupt safetensors header length ${headerLen} (file has ${size} bytes)`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readExactly(fd, headerBuf, 8, path);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString("utf8")) as Record<string, unknown>;
    } catch (e) {
      throw new AtedmError(`${path}: safetensors header is not valid JSON (${(e as Error).message})`);
    }
    if (header === null || typeof header !== "object" || Array.isArray(header)) {
      throw new AtedmError(`${path}: safetensors header is not a JSON object`);
    }
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    this.metadata = {};
    const spans: Array<[number, number, string]> = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === "__metadata__") {
        Object.assign(this.metadata, raw as Record<string, string>);
        continue;
      }
      const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dtype = entry?.dtype as SafetensorsDtype;
      if (!(typeof dtype === "string" && dtype in DTYPE_BYTES)) {
        throw new AtedmError(`${path}: tensor '${name}' has unsupported dtype ${JSON.stringify(entry?.dtype)}`);
      }
      const shape = entry.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new AtedmError(`${path}: tensor '${name}' has an invalid shape ${JSON.stringify(shape)}`);
      }
      const offs = entry.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0)) {
        throw new AtedmError(`${path}: tensor '${name}' has invalid data_offsets ${JSON.stringify(offs)}`);
      }
      const [begin, end] = offs as [number, number];
      const expected = (shape as number[]).reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
      if (end < begin || end - begin !== expected) {
        throw new AtedmError(
          `${path}: tensor '${name}' data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ` +
            `${JSON.stringify(shape)} ${dtype} needs ${expected}`,
        );
      }
      if (end > dataSize) {
        throw new AtedmError(
          `${path}: tensor '${name}' ends at byte ${end} of the data section, but the file has only ` + `${dataSize} data bytes (truncated file?)`,
        );
      }
      spans.push([begin, end, name]);
      this.tensors.set(name, {
        name,
        dtype,
        shape: shape as number[],
        file: path,
        offset: dataStart + begin,
        byteLength: end - begin,
      });
    }
    spans.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) {
      if (spans[i]![0] < spans[i - 1]![1]) {
        throw new AtedmError(`${path}: tensors '${spans[i - 1]![2]}' and '${spans[i]![2]}' overlap`);
      }
    }
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new AtedmError(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      return new SafetensorsFile(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new AtedmError(`${this.path}: missing tensor '${name}'`);
    return t;
  }

  /** Raw bytes of a tensor (a byte-range read). */
  readBytes(name: string): Buffer {
    const t = this.info(name);
    if (this.fd === null) throw new AtedmError(`${this.path}: file already closed`);
    const buf = Buffer.alloc(t.byteLength);
    readExactly(this.fd, buf, t.offset, this.path);
    return buf;
  }

  /** A floating-point tensor converted to float32 (F32, F16, BF16, F64). */
  readF32(name: string): Float32Array {
    return toFloat32(this.info(name), this.readBytes(name));
  }

  /** Any tensor as a host tensor: floats as float32, I64 as BigInt64Array, I32 as Int32Array, U8/BOOL as bytes. */
  read(name: string): HostTensor {
    const info = this.info(name);
    const bytes = this.readBytes(name);
    const dims = info.shape.slice();
    switch (info.dtype) {
      case "I64":
        return { dims, data: new BigInt64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8).slice() };
      case "I32":
        return { dims, data: new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice() };
      case "U8":
      case "BOOL":
        return { dims, data: new Uint8Array(bytes) };
      default:
        return { dims, data: toFloat32(info, bytes) };
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

function readExactly(fd: number, buf: Buffer, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    // readSync takes at most 2 GB at once; position as a number is exact below 2^53.
    const n = readSync(fd, buf, done, Math.min(buf.length - done, 1 << 30), position + done);
    if (n === 0) throw new AtedmError(`${path}: unexpected end of file at byte ${position + done} (truncated file?)`);
    done += n;
  }
}

/** IEEE half -> float32 lookup on the fly. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function toFloat32(info: TensorInfo, bytes: Buffer): Float32Array {
  const n = info.shape.reduce((a, b) => a * b, 1);
  switch (info.dtype) {
    case "F32": {
      const out = new Float32Array(n);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case "F64": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = bytes.readDoubleLE(i * 8);
      return out;
    }
    case "F16": {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f16ToF32(bytes.readUInt16LE(i * 2));
      return out;
    }
    case "BF16": {
      const u32 = new Uint32Array(n);
      for (let i = 0; i < n; i++) u32[i] = bytes.readUInt16LE(i * 2) << 16;
      return new Float32Array(u32.buffer);
    }
    default:
      throw new AtedmError(`${info.file}: tensor '${info.name}' is ${info.dtype}, expected a floating-point tensor`);
  }
}

/**
 * The weights of one model component: a single `*.safetensors` file or a sharded checkpoint
 * (`*.safetensors.index.json` with a `weight_map` from tensor name to shard file).
 */
export class WeightStore implements TensorSource {
  private readonly files: SafetensorsFile[];
  private readonly byName = new Map<string, SafetensorsFile>();
  readonly source: string;

  private constructor(source: string, files: SafetensorsFile[], weightMap?: Record<string, string>) {
    this.source = source;
    this.files = files;
    if (weightMap) {
      const byPath = new Map(files.map((f) => [f.path, f]));
      const dir = dirname(source);
      for (const [name, shard] of Object.entries(weightMap)) {
        const f = byPath.get(join(dir, shard))!;
        if (!f.has(name)) throw new AtedmError(`${source}: weight_map says '${name}' is in ${shard}, but it is not`);
        this.byName.set(name, f);
      }
    } else {
      for (const f of files) for (const k of f.keys()) this.byName.set(k, f);
    }
  }

  /** Open `path`: a `.safetensors` file or a `.safetensors.index.json` shard index. */
  static open(path: string): WeightStore {
    if (path.endsWith(".index.json")) {
      let index: { weight_map?: Record<string, string> };
      try {
        index = JSON.parse(readFileSync(path, "utf8"));
      } catch (e) {
        throw new AtedmError(`${path}: cannot read shard index (${(e as Error).message})`);
      }
      if (!index.weight_map || typeof index.weight_map !== "object") {
        throw new AtedmError(`${path}: shard index has no weight_map`);
      }
      const shards = [...new Set(Object.values(index.weight_map))];
      const files = shards.map((s) => SafetensorsFile.open(join(dirname(path), s)));
      return new WeightStore(path, files, index.weight_map);
    }
    return new WeightStore(path, [SafetensorsFile.open(path)]);
  }

  keys(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const f = this.byName.get(name);
    if (!f) throw new AtedmError(`${this.source}: missing tensor '${name}'`);
    return f.info(name);
  }

  readF32(name: string): Float32Array {
    this.info(name);
    return this.byName.get(name)!.readF32(name);
  }

  /** Read a float tensor and check its shape. */
  tensor(name: string, shape?: number[]): HostTensor {
    const info = this.info(name);
    if (shape && (shape.length !== info.shape.length || shape.some((d, i) => d !== info.shape[i]))) {
      throw new AtedmError(`${info.file}: tensor '${name}' has shape [${info.shape}], expected [${shape}]`);
    }
    return { dims: info.shape.slice(), data: this.readF32(name) };
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Find the weights file of a diffusers component folder (prefers plain safetensors, then a shard index). */
export function findWeights(dir: string, stem: string): string {
  const candidates = [`${stem}.safetensors`, `${stem}.safetensors.index.json`];
  for (const c of candidates) if (existsSync(join(dir, c))) return join(dir, c);
  throw new AtedmError(`${dir}: no ${candidates.join(" or ")} found`);
}

/** Read every tensor of a safetensors file into memory. */
export function readSafetensors(path: string): Map<string, HostTensor> {
  const f = SafetensorsFile.open(path);
  try {
    return new Map(f.keys().map((k) => [k, f.read(k)]));
  } finally {
    f.close();
  }
}

/**
 * Write tensors to a safetensors file, atomically (temp file + rename): the file is written whole or not at all.
 */
export function writeSafetensors(path: string, tensors: Record<string, HostTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const dtype: SafetensorsDtype =
      t.data instanceof Float32Array ? "F32" : t.data instanceof BigInt64Array ? "I64" : t.data instanceof Int32Array ? "I32" : "U8";
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (n * DTYPE_BYTES[dtype] !== bytes.byteLength) {
      throw new AtedmError(`writing ${path}: tensor '${name}' has ${bytes.byteLength} bytes but dims [${t.dims}]`);
    }
    header[name] = { dtype, shape: t.dims, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  atomicWrite(path, [len, headerBytes, ...chunks]);
}

/** Write a file whole or not at all: write a temp file beside it, then rename over the target. */
export function atomicWrite(path: string, chunks: Uint8Array[]): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number;
  try {
    fd = openSync(tmp, "w");
  } catch (e) {
    throw new AtedmError(`cannot write ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    for (const c of chunks) {
      let done = 0;
      while (done < c.byteLength) done += writeSync(fd, c, done, c.byteLength - done);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
