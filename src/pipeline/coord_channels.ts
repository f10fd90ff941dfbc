/**
 * CoordConv input channels (Liu et al. 2018, "An intriguing failing of convolutional neural networks and the
 * CoordConv solution"). A model folder whose `atedm.json` says `"coord_channels": 2` has a U-Net that reads the
 * noisy sample plus two fixed maps: the column and the row, each `linspace(-1, 1)` over the sample's width and
 * height. The pipeline appends them at every U-Net call (as diffusers' inpainting pipelines append a mask), so the
 * U-Net itself stays a plain diffusers `UNet2DConditionModel` with `in_channels = out_channels + 2`.
 *
 * Why: a convolutional U-Net without them can learn where "top left" is only from zero padding, and the embedded
 * shapes model had not learned it after 5000 training steps (docs/shapes-model.md).
 */
import { AtedmError } from "../errors.js";
import { torchLinspaceF32 } from "../util/numerics.js";

/** The only count supported: one column map and one row map. */
export const COORD_CHANNELS = 2;

/**
 * `sample` (B, C, H, W) -> (B, C + 2, H, W): every batch element gets its channels followed by the column map
 * (`x`, varies along W) and the row map (`y`, varies along H).
 */
export function appendCoordChannels(sample: Float32Array, dims: readonly number[]): { data: Float32Array; dims: number[] } {
  if (dims.length !== 4) throw new AtedmError(`coord channels: expected a (B, C, H, W) sample, got dims [${dims}]`);
  const [b, c, h, w] = dims as [number, number, number, number];
  const plane = h * w;
  if (sample.length !== b * c * plane) throw new AtedmError(`coord channels: ${sample.length} values do not fill [${dims}]`);
  const xs = torchLinspaceF32(-1, 1, w);
  const ys = torchLinspaceF32(-1, 1, h);
  const coords = new Float32Array(2 * plane);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      coords[y * w + x] = xs[x]!;
      coords[plane + y * w + x] = ys[y]!;
    }
  }
  const out = new Float32Array(b * (c + 2) * plane);
  for (let i = 0; i < b; i++) {
    out.set(sample.subarray(i * c * plane, (i + 1) * c * plane), i * (c + 2) * plane);
    out.set(coords, (i * (c + 2) + c) * plane);
  }
  return { data: out, dims: [b, c + 2, h, w] };
}
