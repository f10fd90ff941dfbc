/**
 * Seeded fuzzing of the safetensors reader: valid files (several dtypes and shapes, metadata, awkward names) get
 * thousands of byte-level and JSON-aware mutations. Every outcome must be a clean rejection (an AtedmError, one line,
 * naming the file) or a correct decode (what the header says, checked by an independent oracle). Mutations whose
 * outcome is known (a truncation, a duplicated key, an offset swap of unequal tensors, a key reorder, ...) must give
 * that outcome.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { AtedmError } from "../src/errors.js";
import { Mulberry32, randInt } from "../src/util/numerics.js";

const SEED = 20240517;
const CASES = 3000;
/** Per case: write the file, open it, check the outcome. Cases take well under 1 ms; 250 ms means a pathology. */
const CASE_BUDGET_MS = 250;

const dir = mkdtempSync(join(tmpdir(), "atedm-st-fuzz-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const BOGUS_DTYPES: unknown[] = ["constructor", "__proto__", "toString", "hasOwnProperty", "f32", "F8_E4M3", "Q4", "", 4, null, ["F32"]];

const rng = new Mulberry32(SEED);
const pick = <T>(xs: readonly T[]): T => xs[randInt(rng, xs.length)]!;

/** A header as an ordered list of [key, JSON text of the value] (so keys can repeat), and the data section. */
interface Layout {
  entries: Array<[string, string]>;
  data: Buffer;
}

function base(tensors: Array<[string, string, number[]]>, metadata?: Record<string, string>): Layout {
  const entries: Array<[string, string]> = [];
  if (metadata) entries.push(["__metadata__", JSON.stringify(metadata)]);
  let offset = 0;
  const chunks: Buffer[] = [];
  for (const [name, dtype, shape] of tensors) {
    const bytes = shape.reduce((a, b) => a * b, 1) * SIZES[dtype]!;
    entries.push([name, JSON.stringify({ dtype, shape, data_offsets: [offset, offset + bytes] })]);
    chunks.push(Buffer.from(Array.from({ length: bytes }, () => randInt(rng, 256))));
    offset += bytes;
  }
  // Listed in a shuffled order: the reader sorts by offset.
  for (let i = entries.length - 1; i > 0; i--) {
    const j = randInt(rng, i + 1);
    [entries[i], entries[j]] = [entries[j]!, entries[i]!];
  }
  return { entries, data: Buffer.concat(chunks) };
}

const BASES: Layout[] = [
  base(
    [
      ["unet.conv_in.weight", "F32", [2, 3]],
      ["half", "F16", [4]],
      ["brain", "BF16", [3, 1]],
      ["double", "F64", [2]],
      ["steps", "I64", [1]],
      ["empty", "F32", [0, 5]],
    ],
    { format: "pt", note: 'ünïcode "quoted" {braces}' },
  ),
  base(
    [
      ["ids", "I32", [2, 2]],
      ["bytes", "U8", [7]],
      ["mask", "BOOL", [3]],
      ["short", "I16", [2]],
      ["tiny", "I8", [5]],
      ["scalar", "F32", []],
      ['we\\ird "name" ü', "F16", [1, 1, 2]],
      ["zero-tail", "I64", [0]],
    ],
    { format: "pt" },
  ),
  base([
    ["big", "F32", [64, 16]],
    ["bias", "F32", [16]],
  ]),
];

function headerText(entries: Array<[string, string]>): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;
}

function serialize(header: string, data: Buffer, pad = true): Buffer {
  let h = Buffer.from(header, "utf8");
  if (pad) h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

type Expect = "valid" | "invalid" | "either";

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const tensorIdx = (l: Layout) => l.entries.map((e, i) => (e[0] === "__metadata__" ? -1 : i)).filter((i) => i >= 0);
const parse = (l: Layout, i: number) => JSON.parse(l.entries[i]![1]) as Entry;
const bytesOf = (e: Entry) => e.data_offsets[1] - e.data_offsets[0];

/** JSON-aware mutations: a copy of the layout, a name, and the outcome the format rules dictate. */
const JSON_MUTATIONS: Array<(l: Layout) => [Layout, string, Expect]> = [
  (l) => {
    const ts = tensorIdx(l);
    const i = pick(ts);
    const j = pick(ts);
    const a = parse(l, i);
    const b = parse(l, j);
    [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
    l.entries[i]![1] = JSON.stringify(a);
    l.entries[j]![1] = JSON.stringify(b);
    return [l, "swap offsets", i === j || bytesOf(a) === bytesOf(b) ? "valid" : "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    const dtype = pick(Object.keys(SIZES));
    const fits = e.shape.reduce((a, b) => a * b, 1) * SIZES[dtype]! === bytesOf(e);
    e.dtype = dtype;
    l.entries[i]![1] = JSON.stringify(e);
    return [l, `dtype ${dtype}`, fits ? "valid" : "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i) as unknown as Record<string, unknown>;
    e.dtype = pick(BOGUS_DTYPES);
    l.entries[i]![1] = JSON.stringify(e);
    return [l, `bogus dtype ${JSON.stringify(e.dtype)}`, "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    const bad = pick(["1.5", "-1", "-3", '"2"', "1e400", "1e20", "9007199254740993", "null", "[1]", "true"]);
    const shape = e.shape.map(String);
    shape.splice(randInt(rng, shape.length + 1), 0, bad);
    l.entries[i]![1] = JSON.stringify(e).replace(/"shape":\[[^\]]*\]/, `"shape":[${shape.join(",")}]`);
    return [l, `bad dim ${bad}`, "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    const k = randInt(rng, 2);
    const offs: unknown[] = [...e.data_offsets];
    offs[k] = pick(["1.5", "-4", '"0"', "1e400", "1e20", "null", `${e.data_offsets[k]}.5`]);
    l.entries[i]![1] = JSON.stringify(e).replace(/"data_offsets":\[[^\]]*\]/, `"data_offsets":[${offs.join(",")}]`);
    return [l, `bad offset ${offs[k]}`, "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    const d = pick([1, 2, 4, 8, -1, -4]);
    if (e.data_offsets[0] + d < 0) return [l, "shift (none)", "valid"];
    e.data_offsets = [e.data_offsets[0] + d, e.data_offsets[1] + d];
    l.entries[i]![1] = JSON.stringify(e);
    // A zero-size tensor may land on another boundary and stay valid.
    return [l, `shift offsets ${d}`, bytesOf(e) === 0 ? "either" : "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    e.shape = [...e.shape].reverse();
    l.entries[i]![1] = JSON.stringify(e);
    return [l, "reverse shape", "valid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const e = parse(l, i);
    e.shape = [...e.shape, pick([2, 3, 7])];
    l.entries[i]![1] = JSON.stringify(e);
    return [l, "add dim", e.shape.includes(0) ? "valid" : "invalid"];
  },
  (l) => {
    const i = randInt(rng, l.entries.length);
    l.entries.splice(randInt(rng, l.entries.length + 1), 0, [l.entries[i]![0], l.entries[i]![1]]);
    return [l, "duplicate key", "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const key = pick(["dtype", "shape", "data_offsets"]);
    const e = parse(l, i) as unknown as Record<string, unknown>;
    l.entries[i]![1] = JSON.stringify(e).replace(/^\{/, `{${JSON.stringify(key)}:${JSON.stringify(e[key])},`);
    return [l, `duplicate nested ${key}`, "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    const zero = bytesOf(parse(l, i)) === 0;
    l.entries.splice(i, 1);
    return [l, "remove tensor", zero ? "valid" : "invalid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    l.entries[i]![0] = pick(["renamed", "__proto__", "constructor", "a\nb", "\u2028", "x".repeat(300), "\u{1F600}"]);
    const names = l.entries.map((e) => e[0]);
    return [l, "rename", new Set(names).size === names.length ? "valid" : "invalid"];
  },
  (l) => {
    const m = l.entries.findIndex((e) => e[0] === "__metadata__");
    const bad = pick(["3", "null", "true", '{"a":"b"}', '["x"]']);
    if (m < 0) l.entries.push(["__metadata__", `{"k":${bad}}`]);
    else l.entries[m]![1] = l.entries[m]![1].replace(/\}$/, `,"extra":${bad}}`);
    return [l, `metadata value ${bad}`, "invalid"];
  },
  (l) => {
    const m = l.entries.findIndex((e) => e[0] === "__metadata__");
    const bad = pick(['"abc"', "[]", "7", "null"]);
    if (m < 0) l.entries.push(["__metadata__", bad]);
    else l.entries[m]![1] = bad;
    return [l, `metadata ${bad}`, "invalid"];
  },
  (l) => {
    l.entries.push(["__metadata__", JSON.stringify({ added: "yes", "\u00e9": "\n" })]);
    const n = l.entries.filter((e) => e[0] === "__metadata__").length;
    return [l, "add metadata", n === 1 ? "valid" : "invalid"];
  },
  (l) => {
    l.entries.reverse();
    return [l, "reorder keys", "valid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    l.entries[i]![1] = l.entries[i]![1].replace(/\}$/, ',"extra":{"dtype":"F32","shape":[1.5]}}');
    return [l, "unknown field", "valid"];
  },
  (l) => {
    const i = pick(tensorIdx(l));
    l.entries[i]![1] = pick(["null", "[]", '"F32"', "0", "{}"]);
    return [l, "entry not a tensor", "invalid"];
  },
];

/** Whether one object of a valid JSON text has a key twice: a token scan, independent of the reader's. */
function hasDuplicateKey(text: string): boolean {
  const tokens = text.match(/"(?:[^"\\]|\\.)*"|[{}[\],:]/g) ?? [];
  const stack: Array<Set<string> | null> = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === "{") stack.push(new Set());
    else if (t === "[") stack.push(null);
    else if (t === "}" || t === "]") stack.pop();
    else if (t.startsWith('"') && tokens[i + 1] === ":") {
      const keys = stack[stack.length - 1]!;
      const key = JSON.parse(t) as string;
      if (keys.has(key)) return true;
      keys.add(key);
    }
  }
  return false;
}

/** What the file says, by an independent reading: null when the strict rules reject it. */
function oracle(file: Buffer): Map<string, { dtype: string; shape: number[]; offset: number; bytes: number }> | null {
  if (file.length < 8) return null;
  const n = file.readBigUInt64LE(0);
  if (n === 0n || n > 100_000_000n || 8n + n > BigInt(file.length)) return null;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(file.subarray(8, 8 + Number(n)));
  } catch {
    return null;
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(text);
  } catch {
    return null;
  }
  if (text[0] !== "{" || hasDuplicateKey(text)) return null;
  const dataStart = 8 + Number(n);
  const out = new Map<string, { dtype: string; shape: number[]; offset: number; bytes: number }>();
  const spans: Array<[number, number]> = [];
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") {
      if (typeof v !== "object" || v === null || Array.isArray(v) || !Object.values(v).every((s) => typeof s === "string")) return null;
      continue;
    }
    const e = v as Entry;
    if (typeof e !== "object" || e === null || !Object.keys(SIZES).includes(e.dtype)) return null;
    const uint = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
    if (!Array.isArray(e.shape) || !e.shape.every(uint) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) return null;
    if (!e.data_offsets.every(uint)) return null;
    const [b, end] = e.data_offsets;
    if (end - b !== (e.shape.includes(0) ? 0 : e.shape.reduce((x, y) => x * y, 1) * SIZES[e.dtype]!)) return null;
    spans.push([b, end]);
    out.set(k, { dtype: e.dtype, shape: e.shape, offset: dataStart + b, bytes: end - b });
  }
  spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let at = 0;
  for (const [b, e] of spans) {
    if (b !== at) return null;
    at = e;
  }
  return at === file.length - dataStart ? out : null;
}

/** Byte-level mutations of the serialized file. */
function byteMutation(file: Buffer, headerEnd: number): [Buffer, string, Expect] {
  const f = Buffer.from(file);
  const inHeader = () => 8 + randInt(rng, headerEnd - 8);
  const inData = () => headerEnd + randInt(rng, f.length - headerEnd);
  switch (randInt(rng, 7)) {
    case 0: {
      const at = rng.next() < 0.7 ? inHeader() : randInt(rng, f.length);
      f[at]! ^= 1 << randInt(rng, 8);
      return [f, `bit flip at ${at}`, "either"];
    }
    case 1: {
      if (f.length === headerEnd) return [f, "no data to flip", "valid"];
      const at = inData();
      f[at]! ^= 1 << randInt(rng, 8);
      return [f, `data bit flip at ${at}`, "valid"];
    }
    case 2: {
      const at = rng.next() < 0.7 ? inHeader() : randInt(rng, f.length);
      f[at] = pick([0x00, 0x0a, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x5c, 0x7b, 0x7d, 0x80, 0xc3, 0xff, randInt(rng, 256)]);
      return [f, `overwrite byte ${at}`, f[at] === file[at] ? "valid" : "either"];
    }
    case 3: {
      const len = randInt(rng, f.length);
      return [f.subarray(0, len), `truncate to ${len}`, "invalid"];
    }
    case 4: {
      const extra = 1 + randInt(rng, 16);
      return [Buffer.concat([f, Buffer.alloc(extra, randInt(rng, 256))]), `extend by ${extra}`, "invalid"];
    }
    case 5: {
      const n = Number(f.readBigUInt64LE(0));
      const v = pick([n + 1, n - 1, n + 8, n - 8, 0, f.length, f.length - 7, 100_000_001, 2 ** 40, 2 ** 53 + 1]);
      f.writeBigUInt64LE(BigInt(Math.max(0, v)));
      return [f, `header length ${v}`, Math.max(0, v) === n ? "valid" : "invalid"];
    }
    default: {
      const at = randInt(rng, 8);
      f[at] = randInt(rng, 256);
      return [f, `length byte ${at}`, f[at] === file[at] ? "valid" : "invalid"];
    }
  }
}

test(`fuzz: ${CASES} seeded mutations of valid files end in a one-line AtedmError or a correct decode`, (t) => {
  // Every case rewrites one file through one held descriptor (write, then cut to length): a truncate-and-rewrite
  // per case (writeFileSync) makes ext4 flush the file on close (auto_da_alloc), about 3 ms a case.
  const p = join(dir, "fuzz.safetensors");
  const out = openSync(p, "w+");
  t.after(() => closeSync(out));
  const tally = { accepted: 0, rejected: 0, json: 0, bytes: 0 };
  let slowest = 0;
  const start = performance.now();
  for (let c = 0; c < CASES; c++) {
    const t0 = performance.now();
    const b = pick(BASES);
    const layout: Layout = { entries: b.entries.map(([k, v]) => [k, v]), data: b.data };
    let file: Buffer;
    let what: string;
    let expect: Expect;
    if (rng.next() < 0.5) {
      tally.json++;
      const [l, name, e] = pick(JSON_MUTATIONS)(layout);
      [what, expect] = [name, e];
      file = serialize(headerText(l.entries), l.data);
      if (rng.next() < 0.2) {
        // Stack a byte-level mutation: the outcome is then unknown.
        const [f2, name2] = byteMutation(file, 8 + Number(file.readBigUInt64LE(0)));
        [file, what, expect] = [f2, `${what} + ${name2}`, "either"];
      }
    } else {
      tally.bytes++;
      const valid = serialize(headerText(layout.entries), layout.data);
      [file, what, expect] = byteMutation(valid, 8 + Number(valid.readBigUInt64LE(0)));
    }
    writeSync(out, file, 0, file.length, 0);
    ftruncateSync(out, file.length);
    const truth = oracle(file);
    const label = `case ${c} (${what})`;
    let f: SafetensorsFile | null = null;
    try {
      f = SafetensorsFile.open(p);
    } catch (e) {
      assert.ok(e instanceof AtedmError, `${label}: not an AtedmError: ${(e as Error)?.stack}`);
      assert.ok(!/[\n\r\u2028\u2029]/.test(e.message), `${label}: more than one line: ${JSON.stringify(e.message)}`);
      assert.ok(e.message.startsWith(`${p}: `), `${label}: does not name the file: ${e.message}`);
      assert.notEqual(expect, "valid", `${label}: a valid file was rejected: ${e.message}`);
      assert.equal(truth, null, `${label}: the oracle accepts what the reader rejects: ${e.message}`);
      tally.rejected++;
    }
    if (f) {
      try {
        assert.notEqual(expect, "invalid", `${label}: an invalid file was accepted`);
        assert.ok(truth, `${label}: the reader accepts what the oracle rejects`);
        assert.deepEqual(f.keys().sort(), [...truth.keys()].sort(), label);
        for (const [name, want] of truth) {
          const info = f.info(name);
          assert.deepEqual(
            [info.dtype, info.shape, info.offset, info.byteLength],
            [want.dtype, want.shape, want.offset, want.bytes],
            `${label}: ${name}`,
          );
          const raw = f.readBytes(name);
          assert.ok(raw.equals(file.subarray(want.offset, want.offset + want.bytes)), `${label}: ${name} bytes`);
          const elements = want.shape.reduce((x, y) => x * y, 1);
          if (want.dtype === "I16" || want.dtype === "I8") continue; // read() has no host type for them; the bytes are checked
          const host = f.read(name);
          assert.deepEqual(host.dims, want.shape, label);
          assert.equal(host.data.length, elements, `${label}: ${name} elements`);
          if (want.dtype.startsWith("F") || want.dtype === "BF16") assert.equal(f.readF32(name).length, elements, label);
        }
        tally.accepted++;
      } finally {
        f.close();
      }
    }
    const dt = performance.now() - t0;
    slowest = Math.max(slowest, dt);
    assert.ok(dt < CASE_BUDGET_MS, `${label} took ${dt.toFixed(1)} ms, over the ${CASE_BUDGET_MS} ms budget`);
  }
  const total = performance.now() - start;
  // Both outcomes must be well exercised, or the fuzzing proves little.
  assert.ok(tally.accepted > CASES / 10 && tally.rejected > CASES / 3, JSON.stringify(tally));
  console.log(`fuzz: ${CASES} cases, ${JSON.stringify(tally)}, ${total.toFixed(0)} ms, slowest case ${slowest.toFixed(1)} ms`);
});
