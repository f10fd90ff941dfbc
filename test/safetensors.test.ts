/** The safetensors reader: dtypes, sharded checkpoints, and clear errors for corrupt or lying files. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SafetensorsFile, WeightStore, f16ToF32, writeSafetensors, readSafetensors } from "../src/io/safetensors.js";
import { AtedmError } from "../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "atedm-st-"));

function rawFile(name: string, header: object, data: Uint8Array): string {
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, Buffer.from(json), data]));
  return p;
}

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

test("sharded checkpoints: index.json weight_map across two files", () => {
  writeSafetensors(join(dir, "s-1.safetensors"), { a: { dims: [1], data: Float32Array.from([1]) } });
  writeSafetensors(join(dir, "s-2.safetensors"), { b: { dims: [1], data: Float32Array.from([2]) } });
  writeFileSync(join(dir, "s.safetensors.index.json"), JSON.stringify({ weight_map: { a: "s-1.safetensors", b: "s-2.safetensors" } }));
  const w = WeightStore.open(join(dir, "s.safetensors.index.json"));
  assert.deepEqual([...w.readF32("a"), ...w.readF32("b")], [1, 2]);
  assert.throws(() => w.readF32("c"), /missing tensor 'c'/);
});

test("corrupt files give one-line errors naming the file and tensor", () => {
  const good = rawFile("ok.safetensors", { t: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
  const bytes = readFileSync(good);
  const truncated = join(dir, "truncated.safetensors");
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
  const cases: Array<[string, RegExp]> = [
    [truncated, /truncated\.safetensors: tensor 't' ends at byte 8 .* \(truncated file\?\)/],
    [
      rawFile("shape.safetensors", { t: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
      /'t' data_offsets \[0, 8\] hold 8 bytes but shape \[3\] F32 needs 12/,
    ],
    [rawFile("dtype.safetensors", { t: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)), /unsupported dtype "Q4"/],
    [
      rawFile(
        "overlap.safetensors",
        { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [1], data_offsets: [4, 8] } },
        new Uint8Array(8),
      ),
      /overlap/,
    ],
    [join(dir, "missing.safetensors"), /missing\.safetensors: cannot open \(ENOENT\)/],
  ];
  const hugeHeader = join(dir, "header.safetensors");
  writeFileSync(hugeHeader, Buffer.from([255, 255, 255, 255, 0, 0, 0, 0, 1, 2]));
  cases.push([hugeHeader, /corrupt safetensors header length/]);
  for (const [p, re] of cases) {
    assert.throws(
      () => SafetensorsFile.open(p),
      (e: Error) => e instanceof AtedmError && re.test(e.message) && !e.message.includes("\n"),
      p,
    );
  }
  const w = WeightStore.open(good);
  assert.throws(() => w.tensor("t", [4]), /tensor 't' has shape \[2\], expected \[4\]/);
});
