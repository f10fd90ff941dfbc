/**
 * safetensors reader and writer.
 *
 * Format: 8-byte little-endian header length n, then n bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {...} }`, then the data buffer;
 * offsets are relative to the start of the data buffer. Files are read by byte range (never whole), so
 * checkpoints over 4 GB work and only the tensors asked for are touched.
 *
 * The reader is as strict as the format's reference implementation (huggingface/safetensors): a header of at most
 * 100,000,000 bytes of UTF-8 JSON starting with `{`, no duplicate keys, no lone UTF-16 surrogate escapes in the
 * strings it decodes, known dtypes only, integer shapes and offsets (written as integers: not `2.0`), byte lengths that match dtype and shape, and tensor data that tiles the data buffer exactly (from 0,
 * no gaps, no overlap, no trailing bytes). Every violation is a one-line `AtedmError` naming the file and tensor.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, realpathSync, statSync, readFileSync, type Stats } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { AtedmError } from "../errors.js";
import { leavesFolder, writeFileAtomic } from "./files.js";

export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element. Looked up only through `dtypeBytes` (own properties), so `constructor` or `__proto__` is no dtype. */
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

function dtypeBytes(dtype: unknown): number | undefined {
  return typeof dtype === "string" && Object.hasOwn(DTYPE_BYTES, dtype) ? DTYPE_BYTES[dtype as SafetensorsDtype] : undefined;
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** The file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  offset: number;
  byteLength: number;
  /**
   * The tensor is not a byte range of `file` (e.g. a transposed view of a single-file checkpoint tensor): read it
   * with `readF32`, never as external data. `offset`/`byteLength` then describe the bytes it is computed from.
   */
  inline?: true;
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

/** The reference implementation's MAX_HEADER_SIZE. */
const MAX_HEADER = 100_000_000;

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** An error whose message is one line: control, line-separator and BOM characters are written as \uXXXX escapes. */
function fail(message: string): AtedmError {
  let out = "";
  for (const ch of message) {
    const c = ch.codePointAt(0)!;
    out += c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || c === 0xfeff ? `\\u${c.toString(16).padStart(4, "0")}` : ch;
  }
  return new AtedmError(out);
}

/** A name read from a file, quoted for a message (shortened when very long). */
function q(name: string): string {
  return `'${name.length > 120 ? `${name.slice(0, 120)}...` : name}'`;
}

/** A JSON value from a file, for a message (shortened when very long). */
function show(v: unknown): string {
  const s = typeof v === "number" && !Number.isFinite(v) ? String(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 80 ? `${s.slice(0, 80)}...` : s;
}

/** Why `v` is not a non-negative safe integer, or null when it is one. */
function notUint(v: unknown): string | null {
  if (typeof v !== "number") return `is ${show(v)}, not a number`;
  if (!Number.isFinite(v)) return "is a number too large for a double (parsed as Infinity)";
  if (!Number.isInteger(v)) return `is ${v}, not an integer`;
  if (v < 0) return `is ${v}, negative`;
  if (!Number.isSafeInteger(v)) return `is ${v}, beyond 2^53 - 1`;
  return null;
}

/** What kind of file system object a non-regular file is, for a message. */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device";
  return "not a regular file";
}

/** Throw unless `path` is a regular file (a directory or FIFO is refused before anything opens or blocks on it). */
function requireRegularFile(path: string): void {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    throw fail(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!st.isFile()) throw fail(`${path}: is ${fileKind(st)}, not a regular file`);
}

/**
 * The first key that occurs twice in one object of a valid JSON text, and the top-level key it sits under (null for a
 * top-level key). JSON.parse silently keeps the last of two equal keys; this scan sees them all. Every object has its
 * own key set, so a nested key never clashes with a top-level one; keys compare after their escapes are decoded.
 */
function duplicateJsonKey(text: string): { key: string; under: string | null } | null {
  const stack: Array<Set<string> | null> = []; // one entry per open container: its key set, or null for an array
  let top: string | null = null;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      for (let d = text.charCodeAt(j); d !== 0x22; d = text.charCodeAt(j)) {
        if (d === 0x5c) {
          escaped = true;
          j++;
        }
        j++;
      }
      if (expectKey) {
        const key: string = escaped ? JSON.parse(text.slice(i, j + 1)) : text.slice(i + 1, j);
        const keys = stack[stack.length - 1]!;
        if (keys.has(key)) return { key, under: stack.length === 1 ? null : top };
        keys.add(key);
        if (stack.length === 1) top = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      stack.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) {
      stack.push(null);
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c) {
      expectKey = stack[stack.length - 1] !== null;
    }
  }
  return null;
}

/**
 * The first shape dimension or data offset in a valid safetensors header text that is not written as an integer
 * (`2.0`, `4e0`), or null. The reference implementation reads these as u64 and rejects a fraction or an exponent;
 * JSON.parse would quietly read `2.0` as 2. Numbers elsewhere (an unknown field, which the reference ignores) pass.
 */
function nonIntegerNumber(text: string): string | null {
  // One entry per open container: for an object, its current key; for an array, the key it sits under.
  const stack: Array<{ array: boolean; key: string | null }> = [];
  let lastKey: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i;
      for (i++; text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
      // A string followed by ':' is a key.
      let j = i + 1;
      while (/\s/.test(text[j] ?? "")) j++;
      if (text[j] === ":") lastKey = JSON.parse(text.slice(start, i + 1)) as string;
    } else if (c === 0x7b || c === 0x5b) {
      stack.push({ array: c === 0x5b, key: lastKey });
      lastKey = null;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400))!;
      const top = stack[stack.length - 1];
      const counted = stack.length === 3 && top?.array === true && (top.key === "shape" || top.key === "data_offsets");
      if (counted && (m[1] !== undefined || m[2] !== undefined)) return m[0];
      i += m[0].length - 1;
    }
  }
  return null;
}

/** A lone UTF-16 surrogate (a `\ud800` escape without its pair), which the reference implementation's JSON parser rejects. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * The first string the reference implementation decodes (tensor names, dtypes, metadata keys and values) that holds
 * a lone surrogate, or null. Unknown fields are skipped, as the reference skips them.
 */
function loneSurrogateString(header: Record<string, unknown>): string | null {
  const strings: unknown[] = [];
  for (const [name, entry] of Object.entries(header)) {
    strings.push(name);
    if (entry === null || typeof entry !== "object") continue;
    if (name === "__metadata__") for (const [k, v] of Object.entries(entry)) strings.push(k, v);
    else strings.push((entry as { dtype?: unknown }).dtype);
  }
  for (const s of strings) if (typeof s === "string" && LONE_SURROGATE.test(s)) return s;
  return null;
}

/** An open safetensors file: header parsed and validated, data read on demand. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string> = {};
  private readonly tensors = new Map<string, TensorInfo>();
  private fd: number | null;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
    const st = fstatSync(fd);
    if (!st.isFile()) throw fail(`${path}: is ${fileKind(st)}, not a regular file`);
    const size = st.size;
    if (size < 8) throw fail(`${path}: not a safetensors file (only ${size} bytes)`);
    const lenBuf = Buffer.alloc(8);
    readExactly(fd, lenBuf, 0, path);
    const declared = lenBuf.readBigUInt64LE(0);
    if (declared > BigInt(MAX_HEADER)) {
      throw fail(`${path}: safetensors header length ${declared} exceeds the limit of ${MAX_HEADER} bytes`);
    }
    const headerLen = Number(declared);
    if (8 + headerLen > size) {
      throw fail(`${path}: safetensors header length ${headerLen} runs past the end of the file (${size} bytes; truncated file?)`);
    }
    if (headerLen === 0) throw fail(`${path}: safetensors header length is 0 (an empty header)`);
    const headerBuf = Buffer.alloc(headerLen);
    readExactly(fd, headerBuf, 8, path);
    let text: string;
    try {
      text = UTF8.decode(headerBuf);
    } catch {
      throw fail(`${path}: safetensors header is not valid UTF-8`);
    }
    if (!text.startsWith("{")) throw fail(`${path}: safetensors header does not start with '{' (it starts with ${show(text.slice(0, 8))})`);
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (e) {
      throw fail(`${path}: safetensors header is not valid JSON (${(e as Error).message})`);
    }
    if (header === null || typeof header !== "object" || Array.isArray(header)) {
      throw fail(`${path}: safetensors header is not a JSON object`);
    }
    const dup = duplicateJsonKey(text);
    if (dup) {
      throw fail(
        dup.under === null
          ? `${path}: safetensors header has the key ${q(dup.key)} twice`
          : `${path}: safetensors header entry ${q(dup.under)} has the key ${q(dup.key)} twice`,
      );
    }
    const lone = loneSurrogateString(header as Record<string, unknown>);
    if (lone !== null) {
      throw fail(
        `${path}: safetensors header has a string with a lone UTF-16 surrogate escape (${show(lone.slice(0, 40))}); the format's JSON rejects it`,
      );
    }
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    const spans: Array<[number, number, string]> = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === "__metadata__") {
        if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
          throw fail(`${path}: __metadata__ is ${show(raw)}, not a JSON object of strings`);
        }
        for (const [k, v] of Object.entries(raw)) {
          if (typeof v !== "string") throw fail(`${path}: __metadata__ key ${q(k)} has the non-string value ${show(v)}`);
        }
        // fromEntries defines own properties: a "__proto__" key stays a key and never sets the prototype.
        this.metadata = Object.fromEntries(Object.entries(raw as Record<string, string>));
        continue;
      }
      const t = `${path}: tensor ${q(name)}`;
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw fail(`${t} is described by ${show(raw)}, not an object {dtype, shape, data_offsets}`);
      }
      const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const elementBytes = dtypeBytes(entry.dtype);
      if (elementBytes === undefined) throw fail(`${t} has unsupported dtype ${show(entry.dtype)}`);
      const dtype = entry.dtype as SafetensorsDtype;
      const shape = entry.shape;
      if (!Array.isArray(shape)) throw fail(`${t} has an invalid shape ${show(shape)} (not an array)`);
      shape.forEach((d, i) => {
        const why = notUint(d);
        if (why) throw fail(`${t} shape[${i}] ${why}`);
      });
      const offs = entry.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2) throw fail(`${t} has invalid data_offsets ${show(offs)} (not a pair [begin, end])`);
      offs.forEach((o, i) => {
        const why = notUint(o);
        if (why) throw fail(`${t} data_offsets[${i}] ${why}`);
      });
      const [begin, end] = offs as [number, number];
      const elements = (shape as number[]).includes(0) ? 0 : (shape as number[]).reduce((a, b) => a * b, 1);
      const expected = elements * elementBytes;
      if (!Number.isSafeInteger(expected)) throw fail(`${t} shape ${show(shape)} ${dtype} needs more than 2^53 - 1 bytes`);
      if (end < begin) throw fail(`${t} data_offsets [${begin}, ${end}] end before they begin`);
      if (end - begin !== expected) {
        throw fail(`${t} data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${show(shape)} ${dtype} needs ${expected}`);
      }
      if (end > dataSize) {
        throw fail(`${t} ends at byte ${end} of the data section, but the file has only ${dataSize} data bytes (truncated file?)`);
      }
      spans.push([begin, end, name]);
      this.tensors.set(name, { name, dtype, shape: shape as number[], file: path, offset: dataStart + begin, byteLength: end - begin });
    }
    // Every shape and offset passed as a number; one written as 2.0 or 4e0 still fails, as in the reference.
    const fraction = nonIntegerNumber(text);
    if (fraction !== null) {
      throw fail(`${path}: safetensors header has the number ${show(fraction)}; shapes and data offsets are written as integers`);
    }
    // The tensors must tile the data section exactly, as in the reference: sorted by offsets, the first begins at 0,
    // each begins where the one before ends, and the last ends at the end of the file.
    spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let covered = 0;
    let prev: string | null = null;
    for (const [begin, end, name] of spans) {
      if (begin < covered) throw fail(`${path}: tensors ${q(prev!)} and ${q(name)} overlap (bytes ${begin} to ${covered} of the data section)`);
      if (begin > covered) {
        throw fail(
          prev === null
            ? `${path}: the data section begins with ${begin} bytes that belong to no tensor (the first tensor, ${q(name)}, begins at ${begin})`
            : `${path}: gap of ${begin - covered} bytes between tensors ${q(prev)} (ends at ${covered}) and ${q(name)} (begins at ${begin})`,
        );
      }
      covered = end;
      prev = name;
    }
    if (covered !== dataSize) {
      throw fail(`${path}: ${dataSize - covered} trailing bytes after the tensor data (the tensors cover ${covered} of ${dataSize} data bytes)`);
    }
  }

  static open(path: string): SafetensorsFile {
    requireRegularFile(path);
    let fd: number;
    try {
      // O_NONBLOCK: should a FIFO replace the file after the check above, opening it still does not block.
      fd = openSync(path, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
    } catch (e) {
      throw fail(`${path}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
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
    if (!t) throw fail(`${this.path}: missing tensor ${q(name)}`);
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

  private constructor(source: string, files: SafetensorsFile[], byName?: Map<string, SafetensorsFile>) {
    this.source = source;
    this.files = files;
    if (byName) this.byName = byName;
    else for (const f of files) for (const k of f.keys()) this.byName.set(k, f);
  }

  /** Open `path`: a `.safetensors` file or a `.safetensors.index.json` shard index. */
  static open(path: string): WeightStore {
    if (!path.endsWith(".index.json")) return new WeightStore(path, [SafetensorsFile.open(path)]);
    requireRegularFile(path);
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(path, "utf8"));
    } catch (e) {
      throw fail(`${path}: cannot read shard index (${(e as Error).message})`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (weightMap === null || typeof weightMap !== "object" || Array.isArray(weightMap)) {
      throw fail(`${path}: shard index has no weight_map`);
    }
    const shardOf = new Map<string, string>(); // tensor name -> shard path
    const checked = new Map<unknown, string>(); // shard file name -> shard path, each checked once
    for (const [name, shard] of Object.entries(weightMap)) {
      let p = checked.get(shard);
      if (p === undefined) {
        p = shardPath(path, name, shard);
        checked.set(shard, p);
      }
      shardOf.set(name, p);
    }
    const files = new Map<string, SafetensorsFile>();
    try {
      const byName = new Map<string, SafetensorsFile>();
      for (const [name, p] of shardOf) {
        let f = files.get(p);
        if (!f) {
          f = SafetensorsFile.open(p);
          files.set(p, f);
        }
        if (!f.has(name)) throw fail(`${path}: weight_map says ${q(name)} is in ${(weightMap as Record<string, string>)[name]}, but it is not`);
        byName.set(name, f);
      }
      return new WeightStore(path, [...files.values()], byName);
    } catch (e) {
      for (const f of files.values()) f.close();
      throw e;
    }
  }

  keys(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const f = this.byName.get(name);
    if (!f) throw fail(`${this.source}: missing tensor ${q(name)}`);
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

/**
 * The path of the shard that a shard index's weight_map names for tensor `name`: a relative path that stays inside the
 * index's folder, also after symlinks are resolved (a checkpoint cannot point the reader at files elsewhere).
 */
function shardPath(index: string, name: string, shard: unknown): string {
  const entry = `${index}: weight_map entry ${q(name)}`;
  if (typeof shard !== "string" || shard === "") throw fail(`${entry} is ${show(shard)}, not a shard file name`);
  if (isAbsolute(shard)) throw fail(`${entry} names the absolute path ${q(shard)}; shards must lie in the index's folder`);
  const dir = dirname(index);
  if (leavesFolder(relative(resolve(dir), resolve(dir, shard)))) throw fail(`${entry} names ${q(shard)}, which leaves the index's folder`);
  const p = join(dir, shard);
  let real: string;
  try {
    real = realpathSync(p);
  } catch (e) {
    throw fail(`${p}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}), named by weight_map entry ${q(name)} of ${index}`);
  }
  if (leavesFolder(relative(realpathSync(dir), real))) {
    throw fail(`${entry} names ${q(shard)}, a symlink that resolves to ${real}, outside the index's folder`);
  }
  return p;
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
  writeFileAtomic(path, [len, headerBytes, ...chunks]);
}
