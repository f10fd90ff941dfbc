/**
 * Image feature extractors in ONNX files, the feature space of a Frechet distance (FID) or of CLIP score.
 *
 * Contract of a feature-extractor file, checked when it is loaded (a file outside it gives a one-line AtedmError
 * naming the file and what is wrong):
 *  - exactly one input: float32 [N, 3, H, W], RGB in [0, 1], with H and W fixed. N may be symbolic or fixed (a
 *    fixed N, e.g. 1, is fed in chunks of N, the last one padded with zeros). Any normalization the network wants
 *    (Inception's [-1, 1], CLIP's mean and std) happens inside the graph;
 *  - its output: float32 [N, D] or [N, D, 1, 1] with D fixed. With several outputs, the one named `features`,
 *    `image_embeds` or `text_embeds` is read.
 * Images (HWC RGB u8 of any size) are resized to H x W with bilinear interpolation on half-pixel centres, as
 * torch's `F.interpolate(x, (H, W), mode="bilinear", align_corners=False, antialias=False)`, then divided by 255.
 *
 * `SHAPES_FEATURES` is the embedded extractor for the shapes model: a small CNN trained on the synthetic shapes set
 * (training/train_features.py, models/shapes-features/README.md), 32 x 32 in, 128 features out.
 */
import { statSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../errors.js";
import { f32, ort, ortMessage, type Runtime, Session } from "../runtime/session.js";

/** The embedded shapes feature extractor (absolute path; models/ ships with the package). */
export const SHAPES_FEATURES = fileURLToPath(new URL("../../models/shapes-features/features.onnx", import.meta.url));

/** An image as the renderer and the pipeline produce it: HWC RGB, 8 bits per channel. */
export interface RgbImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

/** Output names read when a graph has several outputs, in this order. */
const FEATURE_OUTPUTS = ["features", "image_embeds", "text_embeds"];

const fmtShape = (shape: ReadonlyArray<number | string>) => `[${shape.join(", ")}]`;
const fixed = (d: number | string | undefined): d is number => typeof d === "number" && Number.isInteger(d) && d > 0;

/**
 * Open the ONNX file `file` as a session (errors: one line naming the file). `what` says what the file should be,
 * for the messages.
 */
export async function openOnnx(file: string, runtime: Runtime, name: string, what: string): Promise<Session> {
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new AtedmError(`${file}: ${code === "ENOENT" ? "no such file" : `cannot read (${code ?? String(e)})`}; expected ${what}`);
  }
  if (!isFile) throw new AtedmError(`${file}: not a file; expected ${what}`);
  let inner: ort.InferenceSession;
  try {
    inner = await ort.InferenceSession.create(file, runtime.sessionOptions());
  } catch (e) {
    throw new AtedmError(`${file}: not a loadable ONNX model (${ortMessage(e)}); expected ${what}`);
  }
  return new Session(name, inner, runtime.verbose);
}

/** The feature output of a session and its fixed dimension D ([N, D] or [N, D, 1, 1]). */
export function featureOutput(session: Session, file: string, what: string): { name: string; dim: number } {
  const outputs = session.inner.outputMetadata;
  const meta = outputs.length === 1 ? outputs[0] : outputs.find((o) => FEATURE_OUTPUTS.includes(o.name));
  if (!meta) {
    throw new AtedmError(
      `${file}: ${outputs.length} outputs (${outputs.map((o) => `'${o.name}'`).join(", ")}) and none named ${FEATURE_OUTPUTS.map((n) => `'${n}'`).join(" or ")}; ${what}`,
    );
  }
  const shape = meta.isTensor ? meta.shape : [];
  const ok =
    meta.isTensor && meta.type === "float32" && (shape.length === 2 || (shape.length === 4 && shape[2] === 1 && shape[3] === 1)) && fixed(shape[1]);
  if (!ok) {
    const type = meta.isTensor ? `${meta.type} ${shape.length ? fmtShape(shape) : "of unknown shape"}` : "not a tensor";
    throw new AtedmError(`${file}: output '${meta.name}' is ${type}; ${what}`);
  }
  return { name: meta.name, dim: shape[1] as number };
}

/**
 * Bilinear resize with half-pixel centres and no antialiasing (torch's `F.interpolate(..., mode="bilinear",
 * align_corners=False)`), of HWC u8 `src` into CHW float32 `out` at `offset`, scaled to [0, 1].
 */
export function resizeToChw(image: RgbImage, outH: number, outW: number, out: Float32Array, offset: number): void {
  const { rgb, width: inW, height: inH } = image;
  const xs = axis(inW, outW);
  const ys = axis(inH, outH);
  const plane = outH * outW;
  for (let y = 0; y < outH; y++) {
    const r0 = ys.i0[y]! * inW;
    const r1 = ys.i1[y]! * inW;
    const wy = ys.w[y]!;
    for (let x = 0; x < outW; x++) {
      const c0 = xs.i0[x]!;
      const c1 = xs.i1[x]!;
      const wx = xs.w[x]!;
      const o = offset + y * outW + x;
      for (let c = 0; c < 3; c++) {
        const top = rgb[(r0 + c0) * 3 + c]! * (1 - wx) + rgb[(r0 + c1) * 3 + c]! * wx;
        const bottom = rgb[(r1 + c0) * 3 + c]! * (1 - wx) + rgb[(r1 + c1) * 3 + c]! * wx;
        out[o + c * plane] = (top * (1 - wy) + bottom * wy) / 255;
      }
    }
  }
}

/** Source indices and weights along one axis: src = (dst + 0.5) * in / out - 0.5, clamped at 0 (as torch). */
function axis(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w: Float32Array } {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w = new Float32Array(outSize);
  const scale = inSize / outSize;
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(0, (d + 0.5) * scale - 0.5);
    const lo = Math.min(Math.floor(src), inSize - 1);
    i0[d] = lo;
    i1[d] = Math.min(lo + 1, inSize - 1);
    w[d] = src - lo;
  }
  return { i0, i1, w };
}

export class FeatureExtractor {
  /** Input [N, 3, H, W]: [H, W]. */
  readonly inputSize: [number, number];

  private constructor(
    readonly file: string,
    readonly name: string,
    readonly dim: number,
    inputSize: [number, number],
    private readonly session: Session,
    private readonly inputName: string,
    private readonly outputName: string,
    /** The input's batch dimension when the file fixes it, else undefined. */
    private readonly fixedBatch: number | undefined,
  ) {
    this.inputSize = inputSize;
  }

  /** Load and check an extractor (see the file comment for the contract). `name` defaults to the file's name. */
  static async load(file: string, runtime: Runtime, name = basename(file)): Promise<FeatureExtractor> {
    const what = "a feature extractor takes float32 [N, 3, H, W] RGB in [0, 1] and returns float32 [N, D] or [N, D, 1, 1]";
    const session = await openOnnx(file, runtime, name, what);
    try {
      const inputs = session.inner.inputMetadata;
      if (inputs.length !== 1) {
        throw new AtedmError(`${file}: ${inputs.length} inputs (${inputs.map((i) => `'${i.name}'`).join(", ")}); ${what}`);
      }
      const input = inputs[0]!;
      const shape = input.isTensor ? input.shape : [];
      const [n, c, h, w] = shape;
      const okBatch = typeof n === "string" || fixed(n);
      if (!input.isTensor || input.type !== "float32" || shape.length !== 4 || !okBatch || c !== 3 || !fixed(h) || !fixed(w)) {
        const type = input.isTensor ? `${input.type} ${shape.length ? fmtShape(shape) : "of unknown shape"}` : "not a tensor";
        throw new AtedmError(`${file}: input '${input.name}' is ${type}; ${what}`);
      }
      const out = featureOutput(session, file, what);
      return new FeatureExtractor(file, name, out.dim, [h, w], session, input.name, out.name, typeof n === "number" ? n : undefined);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** Features of `images`, [images.length, dim] row-major. `batch` images per call (a fixed-N file uses its N). */
  async features(images: ReadonlyArray<RgbImage>, batch = 32): Promise<Float32Array> {
    if (!Number.isInteger(batch) || batch < 1) throw new AtedmError(`${this.name}: batch must be a positive integer, got ${batch}`);
    images.forEach((im, i) => {
      if (
        !Number.isInteger(im.width) ||
        !Number.isInteger(im.height) ||
        im.width < 1 ||
        im.height < 1 ||
        im.rgb.length !== im.width * im.height * 3
      ) {
        throw new AtedmError(
          `${this.name}: image ${i} is ${im.width}x${im.height} with ${im.rgb.length} bytes; expected width * height * 3 (HWC RGB u8)`,
        );
      }
    });
    const [h, w] = this.inputSize;
    const step = this.fixedBatch ?? batch;
    const per = 3 * h * w;
    const result = new Float32Array(images.length * this.dim);
    for (let start = 0; start < images.length; start += step) {
      const count = Math.min(step, images.length - start);
      const rows = this.fixedBatch ?? count;
      const x = new Float32Array(rows * per);
      for (let i = 0; i < count; i++) resizeToChw(images[start + i]!, h, w, x, i * per);
      const out = (await this.session.run({ [this.inputName]: f32(x, [rows, 3, h, w]) }, [this.outputName]))[this.outputName]!;
      const data = out.data as Float32Array;
      if (out.type !== "float32" || out.dims[0] !== rows || data.length !== rows * this.dim) {
        throw new AtedmError(
          `${this.file}: output '${this.outputName}' came back ${out.type} [${out.dims.join(", ")}]; expected float32 [${rows}, ${this.dim}]`,
        );
      }
      result.set(data.subarray(0, count * this.dim), start * this.dim);
    }
    return result;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
