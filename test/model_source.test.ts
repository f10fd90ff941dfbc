/**
 * Opening models (src/io/model_source.ts): diffusers weight variants (`--variant fp16`), F16 / BF16 weights used as
 * stored, and the errors for a variant or a flag that does not apply.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AtedmError } from "../src/errors.js";
import { DiffusersFolder, openModel } from "../src/io/model_source.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { atedmInProcess } from "./helpers/cli.js";
import { fixturesPresent, TINY_SD } from "./helpers/golden.js";
import { fixtureSingleFile, fixtureSingleFileTensors } from "./helpers/single_file.js";

const tmp = mkdtempSync(join(tmpdir(), "atedm-model-source-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** float32 -> IEEE half bits, round to nearest even (normals, subnormals, overflow to inf). */
function f32ToF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** float32 -> bfloat16 bits, round to nearest even. */
function f32ToBf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

/** Write `tensors` (float32 values) to a safetensors file stored as F16 or BF16. */
function writeHalf(path: string, tensors: Map<string, { dims: number[]; data: Float32Array }>, dtype: "F16" | "BF16"): void {
  const header: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const b = Buffer.alloc(t.data.length * 2);
    t.data.forEach((x, i) => b.writeUInt16LE(dtype === "F16" ? f32ToF16Bits(x) : f32ToBf16Bits(x), i * 2));
    header[name] = { dtype, shape: t.dims, data_offsets: [offset, offset + b.length] };
    chunks.push(b);
    offset += b.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, Buffer.from(json), ...chunks]));
}

/** The float32 values a half-precision file holds: each weight rounded through F16 / BF16. */
function rounded(t: { dims: number[]; data: Float32Array }, dtype: "F16" | "BF16") {
  const data = new Float32Array(t.data.length);
  const h = new Uint16Array(1);
  for (let i = 0; i < data.length; i++) {
    if (dtype === "BF16") data[i] = new Float32Array(new Uint32Array([f32ToBf16Bits(t.data[i]!) << 16]).buffer)[0]!;
    else {
      h[0] = f32ToF16Bits(t.data[i]!);
      data[i] = halfToF32(h[0]);
    }
  }
  return { dims: t.dims, data };
}

function halfToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const COMPONENTS: Array<[component: string, stem: string]> = [
  ["unet", "diffusion_pytorch_model"],
  ["vae", "diffusion_pytorch_model"],
  ["text_encoder", "model"],
];

function float32Tensors(path: string) {
  const out = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const [k, t] of readSafetensors(path)) {
    assert.ok(t.data instanceof Float32Array);
    out.set(k, { dims: t.dims, data: t.data });
  }
  return out;
}

/**
 * A copy of tiny-sd whose components each have `<stem>.<variant>.safetensors` in `dtype` beside the plain F32
 * file (`variant` null: the plain file itself is `dtype`), and a twin whose plain F32 files hold the same rounded
 * values.
 */
function makeFolders(name: string, dtype: "F16" | "BF16", variant: string | null): { model: string; twin: string } {
  const model = join(tmp, name);
  const twin = join(tmp, `${name}-twin`);
  for (const dir of [model, twin]) {
    mkdirSync(dir);
    for (const f of ["model_index.json", "scheduler", "tokenizer"]) symlinkSync(join(TINY_SD, f), join(dir, f));
  }
  for (const [component, stem] of COMPONENTS) {
    const src = join(TINY_SD, component, `${stem}.safetensors`);
    const tensors = float32Tensors(src);
    for (const dir of [model, twin]) {
      mkdirSync(join(dir, component));
      cpSync(join(TINY_SD, component, "config.json"), join(dir, component, "config.json"));
    }
    if (variant !== null) cpSync(src, join(model, component, `${stem}.safetensors`));
    writeHalf(join(model, component, variant === null ? `${stem}.safetensors` : `${stem}.${variant}.safetensors`), tensors, dtype);
    const r = Object.fromEntries([...tensors].map(([k, t]) => [k, rounded(t, dtype)]));
    writeSafetensors(join(twin, component, `${stem}.safetensors`), r);
  }
  return { model, twin };
}

async function finalLatents(model: string, options: { variant?: string } = {}): Promise<Float32Array> {
  const pipe = await loadPipeline(model, { threads: 1, ...options });
  try {
    const r = await pipe.generate({ prompt: "a red circle", steps: 2, height: 64, width: 64, seed: 3, checkMemory: false });
    return r.latents;
  } finally {
    await pipe.release();
  }
}

describe("weight variants and half-precision weights", { skip: !fixturesPresent() && "fixtures folder missing" }, () => {
  test("--variant fp16 reads *.fp16.safetensors: the same latents as float32 files holding the rounded weights", async () => {
    const { model, twin } = makeFolders("fp16", "F16", "fp16");
    const variant = await finalLatents(model, { variant: "fp16" });
    const expected = await finalLatents(twin);
    assert.deepEqual(variant, expected, "F16 weights must be used exactly as stored, computed in float32");
    // Without the variant the plain F32 files load, and the rounding shows.
    const plain = await finalLatents(model);
    assert.notDeepEqual(plain, variant);
  });

  test("BF16 weights load as they are", async () => {
    const { model, twin } = makeFolders("bf16", "BF16", null);
    assert.deepEqual(await finalLatents(model), await finalLatents(twin));
  });

  test("errors: a variant no component has, variant files without --variant, flags that do not apply", () => {
    const { model } = makeFolders("fp16-only", "F16", "fp16");
    const only = join(tmp, "fp16-only-no-plain");
    cpSync(model, only, { recursive: true, dereference: true });
    for (const [component, stem] of COMPONENTS) rmSync(join(only, component, `${stem}.safetensors`));
    const message = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        assert.ok(e instanceof AtedmError, `expected an AtedmError, got ${String(e)}`);
        assert.ok(!e.message.includes("\n"), "one line");
        return e.message;
      }
      assert.fail("expected an error");
    };
    assert.equal(
      message(() => new DiffusersFolder(model, "bf16")),
      `${model}: no component has bf16 weights (no *.bf16.safetensors); variants present: fp16`,
    );
    assert.equal(
      message(() => new DiffusersFolder(only).weights("unet")),
      `${only}/unet: no diffusion_pytorch_model.safetensors or model.safetensors found (it has diffusion_pytorch_model.fp16.safetensors: pass --variant fp16)`,
    );
    assert.match(
      message(() => new DiffusersFolder(model, "../x")),
      /^--variant: "\.\.\/x" is not a variant name/,
    );
    assert.match(
      message(() => openModel(model, { config: TINY_SD })),
      /^--config .*: only for a single-file checkpoint/,
    );
    const file = join(TINY_SD, "unet", "diffusion_pytorch_model.safetensors");
    assert.match(
      message(() => openModel(file, { variant: "fp16" })),
      /^--variant fp16: only for a diffusers folder/,
    );
    assert.equal(
      message(() => openModel(join(tmp, "nope"))),
      `${join(tmp, "nope")}: no such file or folder`,
    );
  });
});

describe("bad single-file checkpoints: one line naming the file, nothing written", { skip: !fixturesPresent() && "fixtures folder missing" }, () => {
  test("unknown layout, missing component, non-standard shapes, truncated file, wrong --config", async () => {
    const tensors = fixtureSingleFileTensors("sd");
    const without = (prefix: string) => Object.fromEntries(Object.entries(tensors).filter(([k]) => !k.startsWith(prefix)));
    const layout = join(tmp, "layout.safetensors");
    writeSafetensors(layout, { "model.weight": { dims: [2], data: new Float32Array(2) } });
    const noVae = join(tmp, "no-vae.safetensors");
    writeSafetensors(noVae, without("first_stage_model."));
    const noText = join(tmp, "no-text.safetensors");
    writeSafetensors(noText, without("cond_stage_model."));
    const tiny = await fixtureSingleFile("sd");
    const truncated = join(tmp, "truncated.safetensors");
    const bytes = readFileSync(tiny);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 1000));
    const cases: Array<[string[], RegExp]> = [
      [["--model", layout], /layout\.safetensors: no model\.diffusion_model\.\* keys: not a Stable Diffusion checkpoint/],
      [["--model", noVae], /no-vae\.safetensors: no first_stage_model\.\* keys: the VAE is missing/],
      [["--model", noText], /no-text\.safetensors: no cond_stage_model\.\* or conditioner\.embedders\.\* keys: the text encoder is missing/],
      [
        ["--model", tiny],
        /: U-Net shapes match no standard SD-1\.x\/2\.x\/XL architecture \(block_out_channels \[16, 24, 24, 24\].*; pass --config DIR/,
      ],
      [["--model", truncated, "--config", TINY_SD], /truncated\.safetensors: .*(truncated|end of the file|beyond)/],
      [["--model", tiny, "--config", join(tmp, "nope")], /--config .*nope: no such folder/],
      [["--model", tiny, "--variant", "fp16"], /--variant fp16: only for a diffusers folder/],
    ];
    for (const [args, pattern] of cases) {
      const r = await atedmInProcess(["generate", "a red circle", "--out", "x.png", ...args]);
      const what = args.join(" ");
      assert.equal(r.code, 1, `exit code 1 for ${what}: ${r.stderr}`);
      const lines = r.stderr
        .trim()
        .split("\n")
        .filter((l) => !l.startsWith("loading "));
      assert.equal(lines.length, 1, `one line for ${what}: ${r.stderr}`);
      assert.match(lines[0]!, /^atedm: /);
      assert.match(lines[0]!, pattern, what);
      assert.deepEqual(r.written, [], `nothing written by ${what}`);
    }
  });
});
