/** The safetensors reader: dtypes, sharded checkpoints, and clear errors for corrupt, lying or hostile files. */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile, WeightStore, f16ToF32, writeSafetensors, readSafetensors } from "../src/io/safetensors.js";
import { AtedmError } from "../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "atedm-st-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A file of the 8-byte length, the header (JSON text or raw bytes) padded with spaces to a multiple of 8, and data. */
function fileOf(name: string, header: string | Buffer, data: Uint8Array = new Uint8Array(0)): string {
  let h = typeof header === "string" ? Buffer.from(header, "utf8") : header;
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, h, data]));
  return p;
}

function rawFile(name: string, header: object, data: Uint8Array): string {
  return fileOf(name, JSON.stringify(header), data);
}

/** `open()` fails with one AtedmError line that names the file and matches `re`. */
function rejects(open: () => unknown, file: string, re: RegExp): void {
  assert.throws(open, (e: Error) => {
    assert.ok(e instanceof AtedmError, `${file}: not an AtedmError: ${e}`);
    assert.match(e.message, re);
    assert.ok(!/[\n\r\u2028\u2029]/.test(e.message), `more than one line: ${e.message}`);
    assert.ok(e.message.includes(file), `does not name ${file}: ${e.message}`);
    return true;
  });
}

function rejectsFile(p: string, re: RegExp): void {
  rejects(() => SafetensorsFile.open(p), p, re);
}

const F32x1 = { dtype: "F32", shape: [1], data_offsets: [0, 4] };

test("F32, F16, BF16 and F64 tensors read as float32", () => {
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001, 0x7c00]); // 1, -2, ~0.333, smallest subnormal, inf
  const bf16 = new Uint16Array([0x3f80, 0xc040, 0x4049]); // 1, -3, ~3.14
  const f64 = new Float64Array([0.1, -1e10]);
  const p = rawFile(
    "dtypes.safetensors",
    {
      a: { dtype: "F16", shape: [5], data_offsets: [0, 10] },
      b: { dtype: "BF16", shape: [3], data_offsets: [10, 16] },
      c: { dtype: "F64", shape: [2], data_offsets: [16, 32] },
    },
    Buffer.concat([Buffer.from(f16.buffer), Buffer.from(bf16.buffer), Buffer.from(f64.buffer)]),
  );
  const f = SafetensorsFile.open(p);
  assert.deepEqual(Array.from(f.readF32("a")), [1, -2, f16ToF32(0x3555), 2 ** -24, Infinity]);
  assert.deepEqual(Array.from(f.readF32("b")), [1, -3, Math.fround(3.140625)]);
  assert.deepEqual(Array.from(f.readF32("c")), [Math.fround(0.1), -1e10]);
  f.close();
});

test("write then read round-trips, and the file is written whole (atomic rename)", () => {
  const p = join(dir, "rt.safetensors");
  writeSafetensors(p, { x: { dims: [2, 2], data: Float32Array.from([1, 2, 3, 4]) }, i: { dims: [1], data: BigInt64Array.from([7n]) } });
  const m = readSafetensors(p);
  assert.deepEqual(Array.from(m.get("x")!.data as Float32Array), [1, 2, 3, 4]);
  assert.equal((m.get("i")!.data as BigInt64Array)[0], 7n);
});

test("what stays valid: zero-size tensors anywhere, tensors listed out of offset order, metadata, padding, nested keys named like top-level ones", () => {
  const p = fileOf(
    "valid-edge.safetensors",
    '{"__metadata__":{"format":"pt","__proto__":"kept as a key"},"dtype":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},' +
      '"z0":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]},"shape":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},' +
      '"z1":{"dtype":"I64","shape":[3,0],"data_offsets":[4,4]},"zend":{"dtype":"BOOL","shape":[0],"data_offsets":[12,12]},' +
      '"scalar":{"dtype":"U8","shape":[],"data_offsets":[12,13]}}    ',
    Uint8Array.from([1, 2, 3, 4, 0, 0, 128, 63, 0, 0, 0, 64, 9]),
  );
  const f = SafetensorsFile.open(p);
  assert.deepEqual(f.keys().sort(), ["dtype", "scalar", "shape", "z0", "z1", "zend"]);
  assert.deepEqual(Array.from(f.readF32("dtype")), [1, 2]);
  assert.deepEqual(Array.from(f.read("shape").data as Uint8Array), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(f.read("scalar").data as Uint8Array), [9]);
  assert.equal(f.readF32("z0").length, 0);
  assert.equal(f.read("z1").data.length, 0);
  assert.equal(Object.getPrototypeOf(f.metadata), Object.prototype);
  assert.deepEqual(Object.keys(f.metadata), ["format", "__proto__"]);
  f.close();
});

test("sharded checkpoints: index.json weight_map across two files, relative paths that stay inside the folder", () => {
  mkdirSync(join(dir, "sub"));
  writeSafetensors(join(dir, "s-1.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } });
  writeSafetensors(join(dir, "sub", "s-2.safetensors"), { b: { dims: [1], data: Float32Array.from([2]) } });
  symlinkSync("s-1.safetensors", join(dir, "s-link.safetensors")); // a symlink inside the folder is fine
  writeSafetensors(join(dir, "s-3.safetensors"), { c: { dims: [1], data: Float32Array.from([3]) } });
  writeFileSync(
    join(dir, "s.safetensors.index.json"),
    JSON.stringify({ weight_map: { a: "s-link.safetensors", b: "sub/s-2.safetensors", c: "sub/../s-3.safetensors" } }),
  );
  const w = WeightStore.open(join(dir, "s.safetensors.index.json"));
  assert.deepEqual([...w.readF32("a"), ...w.readF32("b"), ...w.readF32("c")], [1, 2, 3]);
  assert.throws(() => w.readF32("d"), /missing tensor 'd'/);
  w.close();
});

test("corrupt files give one-line errors naming the file and tensor", () => {
  const good = rawFile("ok.safetensors", { t: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
  const bytes = readFileSync(good);
  const truncated = join(dir, "truncated.safetensors");
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
  const tiny = join(dir, "tiny.safetensors");
  writeFileSync(tiny, Buffer.from([1, 2, 3]));
  const cases: Array<[string, RegExp]> = [
    [truncated, /truncated\.safetensors: tensor 't' ends at byte 8 .* \(truncated file\?\)/],
    [tiny, /tiny\.safetensors: not a safetensors file \(only 3 bytes\)/],
    [
      rawFile("shape.safetensors", { t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /'t' data_offsets \[0, 8\] hold 8 bytes but shape \[3\] F32 needs 12/,
    ],
    [rawFile("dtype.safetensors", { t: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /unsupported dtype "Q4"/],
    [join(dir, "missing.safetensors"), /missing\.safetensors: cannot open \(ENOENT\)/],
    [fileOf("json.safetensors", '{"t":'), /json\.safetensors: safetensors header is not valid JSON/],
    [fileOf("entry.safetensors", '{"t":[0,4]}', new Uint8Array(4)), /tensor 't' is described by \[0,4\], not an object/],
    [
      rawFile("neg.safetensors", { t: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /tensor 't' shape\[0\] is -1, negative/,
    ],
    [rawFile("pair.safetensors", { t: { dtype: "F32", shape: [1], data_offsets: [0] } }, new Uint8Array(4)), /data_offsets \[0\] \(not a pair/],
    [rawFile("rev.safetensors", { t: { dtype: "U8", shape: [0], data_offsets: [4, 0] } }, new Uint8Array(4)), /\[4, 0\] end before they begin/],
    [
      rawFile("big.safetensors", { t: { dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, new Uint8Array(4)),
      /shape \[1099511627776,1099511627776\] F32 needs more than 2\^53 - 1 bytes/,
    ],
    // V8 quotes the bad JSON text in its message, raw newline included: the message must stay one line.
    [fileOf("newline.safetensors", '{"a":x\n}'), /newline\.safetensors: safetensors header is not valid JSON \(.*x\\u000a\}/],
  ];
  for (const [p, re] of cases) rejectsFile(p, re);
  const w = WeightStore.open(good);
  assert.throws(() => w.tensor("t", [4]), /tensor 't' has shape \[2\], expected \[4\]/);
  w.close();
});

// One test per rule of the strict reader (huggingface/safetensors' checks); each rule has its own message.

test("rule 1: header length at most 100,000,000 bytes and inside the file, checked before it is read", () => {
  const len = (n: bigint, fileBytes: number) => {
    const b = Buffer.alloc(8 + fileBytes, 0x20);
    b.writeBigUInt64LE(n);
    b[8] = 0x7b;
    return b;
  };
  const over = join(dir, "limit.safetensors");
  writeFileSync(over, len(100_000_001n, 16));
  rejectsFile(over, /safetensors header length 100000001 exceeds the limit of 100000000 bytes/);
  const huge = join(dir, "u64.safetensors");
  writeFileSync(huge, len(2n ** 64n - 1n, 16));
  rejectsFile(huge, /header length 18446744073709551615 exceeds the limit/);
  const past = join(dir, "past.safetensors");
  writeFileSync(past, len(64n, 12));
  rejectsFile(past, /past\.safetensors: safetensors header length 64 runs past the end of the file \(20 bytes/);
  const zero = join(dir, "zero.safetensors");
  writeFileSync(zero, len(0n, 0));
  rejectsFile(zero, /safetensors header length is 0/);
});

test("rule 1: header must be UTF-8 and start with '{'", () => {
  const header = Buffer.concat([Buffer.from('{"__metadata__":{"x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}')]);
  rejectsFile(fileOf("utf8.safetensors", header), /utf8\.safetensors: safetensors header is not valid UTF-8/);
  const overlong = Buffer.concat([Buffer.from('{"__metadata__":{"x":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}}')]); // overlong '/'
  rejectsFile(fileOf("overlong.safetensors", overlong), /not valid UTF-8/);
  rejectsFile(fileOf("space.safetensors", ' {"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)), /does not start with '\{'/);
  rejectsFile(fileOf("bom.safetensors", "\ufeff{}"), /bom\.safetensors: safetensors header does not start with '\{'/);
  rejectsFile(fileOf("array.safetensors", "[1,2]"), /does not start with '\{' \(it starts with "\[1,2\]/);
});

test("numbers are integers as written (2.0 and 4e0 are not offsets) and strings hold no lone surrogate, as the reference's JSON requires", () => {
  const entry = (offsets: string) => `{"t":{"dtype":"F32","shape":[1],"data_offsets":${offsets}}}`;
  rejectsFile(
    fileOf("frac.safetensors", entry("[0,4.0]"), new Uint8Array(4)),
    /frac\.safetensors: safetensors header has the number "4\.0"; shapes and data offsets are written as integers/,
  );
  rejectsFile(fileOf("exp.safetensors", entry("[0,4e0]"), new Uint8Array(4)), /header has the number "4e0"/);
  rejectsFile(
    fileOf("shape-frac.safetensors", '{"t":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', new Uint8Array(4)),
    /header has the number "1\.0"/,
  );
  rejectsFile(
    fileOf("lone-key.safetensors", '{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)),
    /lone UTF-16 surrogate/,
  );
  rejectsFile(
    fileOf("lone-meta.safetensors", '{"__metadata__":{"a":"x\\udc00"}}'),
    /lone-meta\.safetensors: safetensors header has a string with a lone UTF-16 surrogate/,
  );
  // A number inside a string, a paired surrogate escape and a plain integer are all fine.
  const f = SafetensorsFile.open(
    fileOf(
      "fine.safetensors",
      `{"__metadata__":{"v":"2.0","e":"\\ud83d\\ude00"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
      new Uint8Array(4),
    ),
  );
  assert.equal(f.metadata.v, "2.0");
  assert.equal(f.metadata.e, "\u{1f600}");
  f.close();
});

test("rule 2: no duplicate keys, at the top level or inside an entry (escapes decoded); nested keys do not clash with top-level ones", () => {
  const t = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
  rejectsFile(fileOf("dup.safetensors", `{"t":${t},"t":${t}}`, new Uint8Array(4)), /dup\.safetensors: safetensors header has the key 't' twice/);
  rejectsFile(fileOf("dup-escaped.safetensors", `{"t":${t},"\\u0074":${t}}`, new Uint8Array(4)), /header has the key 't' twice/);
  rejectsFile(
    fileOf("dup-nested.safetensors", '{"t":{"dtype":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', new Uint8Array(4)),
    /safetensors header entry 't' has the key 'dtype' twice/,
  );
  rejectsFile(fileOf("dup-meta.safetensors", '{"__metadata__":{"a":"1","a":"2"}}'), /header entry '__metadata__' has the key 'a' twice/);
  // The same key in two different objects, and a key inside a string value, are not duplicates.
  const f = SafetensorsFile.open(
    fileOf(
      "nodup.safetensors",
      `{"__metadata__":{"t":"{\\"t\\":1,\\"t\\":2}","dtype":"x"},"t":${t},"u":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}}`,
      new Uint8Array(4),
    ),
  );
  assert.deepEqual(f.keys(), ["t", "u"]);
  assert.equal(f.metadata.t, '{"t":1,"t":2}');
  f.close();
});

test("rule 3: dtype is an own entry of the dtype table: constructor, __proto__, toString are unsupported", () => {
  for (const dtype of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
    const p = rawFile(`dtype-${dtype}.safetensors`, { t: { dtype, shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4));
    rejectsFile(p, new RegExp(`tensor 't' has unsupported dtype "${dtype}"`));
  }
});

test("rule 3: shape dims and data_offsets are non-negative safe integers: not 1.5, not 1e400, not 1e20, not strings", () => {
  const entry = (shape: string, offs: string) => `{"t":{"dtype":"U8","shape":${shape},"data_offsets":${offs}}}`;
  const data = new Uint8Array(4);
  rejectsFile(fileOf("off-frac.safetensors", entry("[4]", "[0,1.5]"), data), /tensor 't' data_offsets\[1\] is 1\.5, not an integer/);
  rejectsFile(fileOf("dim-frac.safetensors", entry("[2,1.5]", "[0,3]"), data), /tensor 't' shape\[1\] is 1\.5, not an integer/);
  rejectsFile(fileOf("off-inf.safetensors", entry("[4]", "[0,1e400]"), data), /data_offsets\[1\] is a number too large for a double/);
  rejectsFile(fileOf("dim-inf.safetensors", entry("[1e400]", "[0,4]"), data), /shape\[0\] is a number too large for a double/);
  // A huge dim next to a 0 gives 0 elements: the old reader accepted it.
  rejectsFile(fileOf("dim-unsafe.safetensors", entry("[0,1e20]", "[0,0]"), data), /shape\[1\] is 100000000000000000000, beyond 2\^53 - 1/);
  rejectsFile(
    fileOf("off-unsafe.safetensors", entry("[0]", "[9007199254740993,9007199254740993]"), data),
    /data_offsets\[0\] is 9007199254740992, beyond/,
  );
  rejectsFile(fileOf("off-str.safetensors", entry("[4]", '["0","4"]'), data), /data_offsets\[0\] is "0", not a number/);
  rejectsFile(fileOf("dim-str.safetensors", entry('["4"]', "[0,4]"), data), /shape\[0\] is "4", not a number/);
  rejectsFile(fileOf("dim-null.safetensors", entry("[null]", "[0,4]"), data), /shape\[0\] is null, not a number/);
  rejectsFile(fileOf("shape-obj.safetensors", entry('{"0":4}', "[0,4]"), data), /tensor 't' has an invalid shape \{"0":4\} \(not an array\)/);
});

test("rule 4: tensor data tiles the data section: no trailing bytes, no gap, no overlap, starts at 0", () => {
  const two = (a: [number, number], b: [number, number]) => ({
    a: { dtype: "F32", shape: [1], data_offsets: a },
    b: { dtype: "F32", shape: [1], data_offsets: b },
  });
  rejectsFile(
    rawFile("trailing.safetensors", two([0, 4], [4, 8]), new Uint8Array(12)),
    /trailing\.safetensors: 4 trailing bytes after the tensor data \(the tensors cover 8 of 12 data bytes\)/,
  );
  rejectsFile(rawFile("trailing-empty.safetensors", {}, new Uint8Array(3)), /3 trailing bytes after the tensor data \(the tensors cover 0 of 3/);
  rejectsFile(
    rawFile("gap.safetensors", two([0, 4], [8, 12]), new Uint8Array(12)),
    /gap of 4 bytes between tensors 'a' \(ends at 4\) and 'b' \(begins at 8\)/,
  );
  rejectsFile(
    rawFile("lead.safetensors", two([4, 8], [8, 12]), new Uint8Array(12)),
    /data section begins with 4 bytes that belong to no tensor \(the first tensor, 'a'/,
  );
  rejectsFile(
    rawFile("overlap.safetensors", two([0, 4], [2, 6]), new Uint8Array(8)),
    /tensors 'a' and 'b' overlap \(bytes 2 to 4 of the data section\)/,
  );
  rejectsFile(rawFile("same.safetensors", two([0, 4], [0, 4]), new Uint8Array(4)), /tensors 'a' and 'b' overlap/);
  const inside = { ...two([0, 4], [4, 8]), z: { dtype: "F32", shape: [0], data_offsets: [2, 2] } };
  rejectsFile(rawFile("zero-inside.safetensors", inside, new Uint8Array(8)), /tensors 'a' and 'z' overlap/);
});

test("rule 5: __metadata__ is an object of strings", () => {
  const meta = (m: unknown) => rawFile("meta.safetensors", { __metadata__: m, t: F32x1 }, new Uint8Array(4));
  rejectsFile(meta({ format: "pt", step: 3 }), /meta\.safetensors: __metadata__ key 'step' has the non-string value 3/);
  rejectsFile(meta({ nested: { a: "b" } }), /__metadata__ key 'nested' has the non-string value \{"a":"b"\}/);
  rejectsFile(meta({ n: null }), /__metadata__ key 'n' has the non-string value null/);
  rejectsFile(meta("abc"), /__metadata__ is "abc", not a JSON object of strings/);
  rejectsFile(meta(["a"]), /__metadata__ is \["a"\], not a JSON object of strings/);
});

test("rule 6: only regular files: a directory or a FIFO is refused before it is read (never blocks)", () => {
  const sub = join(dir, "adir.safetensors");
  mkdirSync(sub);
  rejectsFile(sub, /adir\.safetensors: is a directory, not a regular file/);
  rejects(() => WeightStore.open(sub), sub, /is a directory, not a regular file/);
  const fifo = join(dir, "fifo.safetensors");
  execFileSync("mkfifo", [fifo]); // no mkfifo: the test fails, it does not skip
  const index = join(dir, "fifo.safetensors.index.json");
  execFileSync("mkfifo", [index]);
  // Hold both FIFOs open read-write without blocking: a reader that opens them anyway then gets a wrong answer, not a hang.
  const holders = [fifo, index].map((p) => openSync(p, constants.O_RDWR | constants.O_NONBLOCK));
  try {
    rejectsFile(fifo, /fifo\.safetensors: is a FIFO \(named pipe\), not a regular file/);
    rejects(() => WeightStore.open(fifo), fifo, /is a FIFO \(named pipe\), not a regular file/);
    rejects(() => WeightStore.open(index), index, /fifo\.safetensors\.index\.json: is a FIFO \(named pipe\), not a regular file/);
  } finally {
    for (const fd of holders) closeSync(fd);
  }
});

test("rule 7: every shard of a sharded index lies inside the index's folder (no absolute paths, no .., no symlinks out)", () => {
  const shards = join(dir, "shards");
  mkdirSync(shards);
  writeSafetensors(join(dir, "outside.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } });
  writeSafetensors(join(shards, "in.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } });
  symlinkSync(join(dir, "outside.safetensors"), join(shards, "link-out.safetensors"));
  mkdirSync(join(dir, "elsewhere"));
  symlinkSync(join(dir, "elsewhere"), join(shards, "dirlink"));
  writeSafetensors(join(dir, "elsewhere", "x.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } });
  const index = (name: string, map: Record<string, unknown>) => {
    const p = join(shards, name);
    writeFileSync(p, JSON.stringify({ weight_map: map }));
    return p;
  };
  const dotdot = index("dotdot.safetensors.index.json", { a: "../outside.safetensors" });
  rejects(
    () => WeightStore.open(dotdot),
    dotdot,
    /dotdot\.safetensors\.index\.json: weight_map entry 'a' names '\.\.\/outside\.safetensors', which leaves the index's folder/,
  );
  const deep = index("deep.safetensors.index.json", { a: "in.safetensors/../../shards/../outside.safetensors" });
  rejects(() => WeightStore.open(deep), deep, /weight_map entry 'a' names .*, which leaves the index's folder/);
  const abs = index("abs.safetensors.index.json", { a: join(dir, "outside.safetensors") });
  rejects(
    () => WeightStore.open(abs),
    abs,
    /abs\.safetensors\.index\.json: weight_map entry 'a' names the absolute path '.*outside\.safetensors'; shards must lie/,
  );
  const link = index("link.safetensors.index.json", { a: "link-out.safetensors" });
  rejects(
    () => WeightStore.open(link),
    link,
    /link\.safetensors\.index\.json: weight_map entry 'a' names 'link-out\.safetensors', a symlink that resolves to .*outside\.safetensors, outside/,
  );
  const viaDir = index("viadir.safetensors.index.json", { a: "dirlink/x.safetensors" });
  rejects(
    () => WeightStore.open(viaDir),
    viaDir,
    /weight_map entry 'a' names 'dirlink\/x\.safetensors', a symlink that resolves to .*elsewhere.*, outside/,
  );
  const notString = index("num.safetensors.index.json", { a: 3 });
  rejects(() => WeightStore.open(notString), notString, /weight_map entry 'a' is 3, not a shard file name/);
  const missing = index("missing.safetensors.index.json", { a: "nope.safetensors" });
  rejects(
    () => WeightStore.open(missing),
    join(shards, "nope.safetensors"),
    /nope\.safetensors: cannot open \(ENOENT\), named by weight_map entry 'a' of .*missing\.safetensors\.index\.json$/,
  );
  const lying = index("lying.safetensors.index.json", { a: "in.safetensors", b: "in.safetensors" });
  rejects(() => WeightStore.open(lying), lying, /weight_map says 'b' is in in\.safetensors, but it is not/);
  const noMap = join(shards, "nomap.safetensors.index.json");
  writeFileSync(noMap, "null");
  rejects(() => WeightStore.open(noMap), noMap, /shard index has no weight_map/);
  const ok = WeightStore.open(index("ok.safetensors.index.json", { a: "in.safetensors" }));
  assert.deepEqual([...ok.readF32("a")], [1]);
  ok.close();
});

test("a failed write leaves no temp file behind and says why in one line", () => {
  const d = join(dir, "failed-write");
  mkdirSync(join(d, "x.safetensors"), { recursive: true }); // the target is a directory: the final rename fails
  assert.throws(
    () => writeSafetensors(join(d, "x.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } }),
    (e: unknown) => e instanceof AtedmError && /x\.safetensors: is a directory$/.test(e.message) && !e.message.includes("\n"),
  );
  assert.deepEqual(readdirSync(d), ["x.safetensors"]);
});
