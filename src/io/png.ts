/** PNG output (fast-png), written atomically (`writeFileAtomic`): a file appears whole or not at all. */
import { encode } from "fast-png";
import { writeFileAtomic } from "./files.js";

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
