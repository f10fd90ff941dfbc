/**
 * The state dict of a diffusers UNet2DConditionModel without the checkpoint: every parameter name and shape
 * for a `UNetConfig`, and random weights of those shapes, either in memory (`SyntheticWeightStore`, a drop-in
 * `TensorSource` for `Weights`) or streamed to a real safetensors file (`writeSyntheticSafetensors`), so the
 * full-size SD-1.5 / SD-2.1 / SD-XL graphs can be built, counted and benchmarked without downloading them.
 *
 *   const shapes = unetStateDictShapes(cfg);
 *   const weights = new Weights(new SyntheticWeightStore(shapes), { externalThreshold: 0 }); // no data read
 *   const g = buildUNetGraph(cfg, weights);
 *
 * Random values: each tensor has its own generator seeded by (seed, tensor name), so a tensor's values do not
 * depend on which other tensors exist or are read. Norm scales are 1 + std * N(0, 1), everything else
 * std * N(0, 1) (std 0.02), which keeps activations of a deep U-Net finite and away from denormals.
 */
import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { AtedmError } from "../errors.js";
import type { TensorInfo, TensorSource } from "../io/safetensors.js";
import { NormalStream, stableHash32 } from "../util/numerics.js";
import { unetModules, type UNetConfig } from "./unet_structure.js";

/** Every parameter of a diffusers UNet2DConditionModel with config `cfg`, in module order, name -> shape. */
export function unetStateDictShapes(cfg: UNetConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const add = (name: string, shape: number[]) => out.set(name, shape);
  const linear = (p: string, o: number, i: number, bias = true) => {
    add(`${p}.weight`, [o, i]);
    if (bias) add(`${p}.bias`, [o]);
  };
  const conv = (p: string, o: number, i: number, k: number) => {
    add(`${p}.weight`, [o, i, k, k]);
    add(`${p}.bias`, [o]);
  };
  const norm = (p: string, c: number) => {
    add(`${p}.weight`, [c]);
    add(`${p}.bias`, [c]);
  };
  const temb = 4 * cfg.block_out_channels[0]!;
  const proj = (p: string, c: number) => (cfg.use_linear_projection ? linear(p, c, c) : conv(p, c, c, 1));

  for (const m of unetModules(cfg)) {
    const p = m.path;
    switch (m.kind) {
      case "Conv2d":
        conv(p, m.outChannels, m.inChannels, 3);
        break;
      case "TimestepEmbedding":
      case "AddEmbedding":
        linear(`${p}.linear_1`, m.outChannels, m.inChannels);
        linear(`${p}.linear_2`, m.outChannels, m.outChannels);
        break;
      case "ResnetBlock2D":
        norm(`${p}.norm1`, m.inChannels);
        conv(`${p}.conv1`, m.outChannels, m.inChannels, 3);
        linear(`${p}.time_emb_proj`, m.outChannels, temb);
        norm(`${p}.norm2`, m.outChannels);
        conv(`${p}.conv2`, m.outChannels, m.outChannels, 3);
        if (m.inChannels !== m.outChannels) conv(`${p}.conv_shortcut`, m.outChannels, m.inChannels, 1);
        break;
      case "Transformer2DModel": {
        const c = m.block.channels;
        norm(`${p}.norm`, c);
        proj(`${p}.proj_in`, c);
        for (let l = 0; l < m.block.depth; l++) {
          const b = `${p}.transformer_blocks.${l}`;
          norm(`${b}.norm1`, c);
          linear(`${b}.attn1.to_q`, c, c, false);
          linear(`${b}.attn1.to_k`, c, c, false);
          linear(`${b}.attn1.to_v`, c, c, false);
          linear(`${b}.attn1.to_out.0`, c, c);
          norm(`${b}.norm2`, c);
          linear(`${b}.attn2.to_q`, c, c, false);
          linear(`${b}.attn2.to_k`, c, cfg.cross_attention_dim, false);
          linear(`${b}.attn2.to_v`, c, cfg.cross_attention_dim, false);
          linear(`${b}.attn2.to_out.0`, c, c);
          norm(`${b}.norm3`, c);
          linear(`${b}.ff.net.0.proj`, 2 * 4 * c, c); // GEGLU: hidden and gate
          linear(`${b}.ff.net.2`, c, 4 * c);
        }
        proj(`${p}.proj_out`, c);
        break;
      }
      case "Downsample2D":
      case "Upsample2D":
        conv(`${p}.conv`, m.channels, m.channels, 3);
        break;
      case "GroupNorm":
        norm(p, m.channels);
        break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Random weights

const DEFAULT_STD = 0.02;

/** Norm scales (GroupNorm / LayerNorm `*.norm*.weight`, 1-D) start at 1, all else at 0. */
function isNormScale(name: string, shape: readonly number[]): boolean {
  return shape.length === 1 && /(^|\.)(norm\w*|conv_norm_out)\.weight$/.test(name);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The safetensors layout of a synthetic F32 file: header bytes and each tensor's absolute data offset. */
function syntheticLayout(
  shapes: ReadonlyMap<string, readonly number[]>,
  seed: number,
): { header: Buffer; offsets: Map<string, number>; dataStart: number } {
  const header: Record<string, unknown> = { __metadata__: { format: "pt", synthetic: `seed=${seed}` } };
  const rel = new Map<string, number>();
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = elementCount(shape) * 4;
    header[name] = { dtype: "F32", shape: shape.slice(), data_offsets: [offset, offset + bytes] };
    rel.set(name, offset);
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  const dataStart = 8 + headerBytes.length;
  const offsets = new Map([...rel].map(([k, v]) => [k, dataStart + v]));
  return { header: Buffer.concat([len, headerBytes]), offsets, dataStart };
}

export interface SyntheticOptions {
  /** Seed of every tensor's generator. Default 0. */
  seed?: number;
  /** Standard deviation of the random values. Default 0.02. */
  std?: number;
  /**
   * The file `info()` names. Point it at a file written by `writeSyntheticSafetensors(file, shapes, seed)` and
   * the offsets are that file's, so a graph with external weights runs against it. Default: a virtual name.
   */
  file?: string;
}

/**
 * Random F32 weights of the given shapes behind the `TensorSource` interface. `info()` describes them as one
 * safetensors file laid out exactly as `writeSyntheticSafetensors` writes it; `readF32()` generates a tensor's
 * values (the same values that file holds). Nothing is allocated until a tensor is read.
 */
export class SyntheticWeightStore implements TensorSource {
  readonly source: string;
  private readonly seed: number;
  private readonly std: number;
  private readonly infos = new Map<string, TensorInfo>();

  constructor(shapes: ReadonlyMap<string, readonly number[]>, options: SyntheticOptions = {}) {
    this.seed = options.seed ?? 0;
    this.std = options.std ?? DEFAULT_STD;
    this.source = options.file ?? `synthetic-seed${this.seed}.safetensors`;
    const { offsets } = syntheticLayout(shapes, this.seed);
    for (const [name, shape] of shapes) {
      this.infos.set(name, {
        name,
        dtype: "F32",
        shape: shape.slice(),
        file: this.source,
        offset: offsets.get(name)!,
        byteLength: elementCount(shape) * 4,
      });
    }
  }

  keys(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.infos.get(name);
    if (!t) throw new AtedmError(`${this.source}: missing tensor '${name}'`);
    return t;
  }

  readF32(name: string): Float32Array {
    const t = this.info(name);
    const out = new Float32Array(elementCount(t.shape));
    new NormalStream(stableHash32(name, this.seed)).fill(out, isNormScale(name, t.shape) ? 1 : 0, this.std);
    return out;
  }

  close(): void {}
}

/**
 * Stream a safetensors file of random F32 weights with the given shapes to `path` (temp file + rename), one
 * chunk at a time: memory stays at a few MB whatever the total (SD-XL's U-Net is 10 GB in float32).
 * The values are those `new SyntheticWeightStore(shapes, { seed, std }).readF32(name)` returns.
 */
export function writeSyntheticSafetensors(
  path: string,
  shapes: ReadonlyMap<string, readonly number[]>,
  seed = 0,
  options: { std?: number } = {},
): void {
  const std = options.std ?? DEFAULT_STD;
  const { header } = syntheticLayout(shapes, seed);
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number;
  try {
    fd = openSync(tmp, "w");
  } catch (e) {
    throw new AtedmError(`cannot write ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const write = (bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
  };
  const CHUNK = 1 << 20; // elements (4 MB)
  const buf = new Float32Array(CHUNK);
  try {
    write(header);
    for (const [name, shape] of shapes) {
      const stream = new NormalStream(stableHash32(name, seed));
      const offset = isNormScale(name, shape) ? 1 : 0;
      let left = elementCount(shape);
      while (left > 0) {
        const part = left >= CHUNK ? buf : buf.subarray(0, left);
        stream.fill(part, offset, std);
        write(new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
        left -= part.length;
      }
    }
    closeSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  renameSync(tmp, path);
}
