/** PNG files (fast-png): written atomically (`writeFileAtomic`, a file appears whole or not at all), and read back. */
import { readFileSync } from "node:fs";
import { decode, encode } from "fast-png";
import { AtedmError } from "../errors.js";
import { describeErrno, writeFileAtomic } from "./files.js";

/** Quantise an RGB float image in [0, 1], (H, W, 3) row-major, to 8-bit RGB the way diffusers' numpy_to_pil does (round(x * 255)). */
export function toRGB8(image: ArrayLike<number>, height: number, width: number): Uint8Array {
  const out = new Uint8Array(height * width * 3);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(Math.min(1, Math.max(0, image[i]!)) * 255);
  return out;
}

export function encodePng(rgb: Uint8Array, height: number, width: number, channels: 3 | 4 = 3): Uint8Array {
  return encode({ width, height, data: rgb, channels, depth: 8 });
}

export function writePng(path: string, rgb: Uint8Array, height: number, width: number, channels: 3 | 4 = 3): void {
  writeFileAtomic(path, [encodePng(rgb, height, width, channels)]);
}

/** An 8-bit RGB PNG as interleaved (H, W, 3) bytes; alpha is dropped, gray is expanded. One-line errors name the file. */
export function readPng(path: string): { rgb: Uint8Array; height: number; width: number } {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new AtedmError(`${path}: cannot read (${describeErrno(err.code, err.message)})`);
  }
  let img: ReturnType<typeof decode>;
  try {
    img = decode(bytes);
  } catch (e) {
    throw new AtedmError(`${path}: not a readable PNG (${(e as Error).message.split("\n")[0]})`);
  }
  if (img.depth !== 8 || img.palette) throw new AtedmError(`${path}: an 8-bit RGB or gray PNG was expected`);
  const { width, height, channels } = img;
  const data = img.data as Uint8Array;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = data[i * channels + (channels >= 3 ? c : 0)]!;
  }
  return { rgb, height, width };
}
