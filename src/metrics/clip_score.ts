/**
 * CLIP score (Hessel et al. 2021, "CLIPScore"; torchmetrics' `CLIPScore`): per image,
 * 100 * max(0, cos(image embedding, text embedding of its prompt)).
 *
 * The user brings the CLIP model as two ONNX files (atedm ships no CLIP weights):
 *  - image encoder: the FeatureExtractor contract (src/metrics/features.ts), float32 [N, 3, H, W] RGB in [0, 1] with
 *    CLIP's own preprocessing INSIDE the graph (normalization by CLIP's mean (0.48145466, 0.4578275, 0.40821073) and
 *    std (0.26862954, 0.26130258, 0.27577711)); output the projected embedding, float32 [N, D]. E.g. export
 *    openai/clip-vit-base-patch32's `CLIPVisionModelWithProjection` wrapped as `image_embeds(normalize(x))` with
 *    input [N, 3, 224, 224]. atedm resizes each image to H x W bilinearly (CLIP's own preprocessing resizes the
 *    short side with bicubic filtering and centre-crops; for square images the difference is the filter);
 *  - text encoder: one input, `input_ids` int64 [N, L], output the projected embedding float32 [N, D]
 *    (`CLIPTextModelWithProjection`'s `text_embeds`). With several outputs the one named `text_embeds` is read.
 * Prompts are tokenized with the CLIP tokenizer in `tokenizerDir` (a diffusers/transformers `tokenizer/` folder):
 * [bos] + ids + [eos], truncated to L and padded with the pad token to L, where L is the text input's fixed length
 * or, if it is symbolic, the tokenizer's model_max_length.
 */
import { basename } from "node:path";
import { AtedmError } from "../errors.js";
import { CLIPTokenizer } from "../models/clip_tokenizer.js";
import { i64, type Runtime, type Session } from "../runtime/session.js";
import { FeatureExtractor, featureOutput, openOnnx, type RgbImage } from "./features.js";

export class ClipScorer {
  private constructor(
    readonly image: FeatureExtractor,
    readonly textFile: string,
    private readonly text: Session,
    private readonly textInput: string,
    private readonly textOutput: string,
    /** Token sequence length L fed to the text encoder. */
    readonly maxLength: number,
    readonly tokenizer: CLIPTokenizer,
  ) {}

  /** Embedding size D (the same for both encoders). */
  get dim(): number {
    return this.image.dim;
  }

  static async load(imageFile: string, textFile: string, tokenizerDir: string, runtime: Runtime): Promise<ClipScorer> {
    const tokenizer = CLIPTokenizer.fromPretrained(tokenizerDir);
    const what = "a CLIP text encoder takes input_ids int64 [N, L] and returns float32 [N, D]";
    const image = await FeatureExtractor.load(imageFile, runtime, `CLIP image encoder ${basename(imageFile)}`);
    let text: Session | undefined;
    try {
      text = await openOnnx(textFile, runtime, `CLIP text encoder ${basename(textFile)}`, what);
      const inputs = text.inner.inputMetadata;
      if (inputs.length !== 1) {
        throw new AtedmError(`${textFile}: ${inputs.length} inputs (${inputs.map((i) => `'${i.name}'`).join(", ")}); ${what}`);
      }
      const input = inputs[0]!;
      const shape = input.isTensor ? input.shape : [];
      if (!input.isTensor || input.type !== "int64" || shape.length !== 2) {
        const type = input.isTensor ? `${input.type} ${shape.length ? `[${shape.join(", ")}]` : "of unknown shape"}` : "not a tensor";
        throw new AtedmError(`${textFile}: input '${input.name}' is ${type}; ${what}`);
      }
      const len = shape[1];
      const maxLength = typeof len === "number" && len > 0 ? len : tokenizer.modelMaxLength;
      if (maxLength < 2) throw new AtedmError(`${textFile}: input '${input.name}' has length ${maxLength}; a prompt needs at least bos and eos`);
      const out = featureOutput(text, textFile, what);
      if (out.dim !== image.dim) {
        throw new AtedmError(
          `CLIP score: the image encoder ${imageFile} gives ${image.dim}-d embeddings but the text encoder ${textFile} gives ${out.dim}-d`,
        );
      }
      return new ClipScorer(image, textFile, text, input.name, out.name, maxLength, tokenizer);
    } catch (e) {
      await image.release();
      await text?.release();
      throw e;
    }
  }

  /** Token ids of `prompt`, [maxLength]: [bos] + ids (truncated) + [eos], padded with the pad token. */
  tokenize(prompt: string): number[] {
    const t = this.tokenizer;
    const ids = [t.bosTokenId, ...t.encodeRaw(prompt).slice(0, this.maxLength - 2), t.eosTokenId];
    while (ids.length < this.maxLength) ids.push(t.padTokenId);
    return ids;
  }

  /** Text embeddings of `prompts`, [prompts.length, dim] row-major. */
  async textEmbeddings(prompts: readonly string[], batch = 32): Promise<Float32Array> {
    const d = this.dim;
    const L = this.maxLength;
    const result = new Float32Array(prompts.length * d);
    for (let start = 0; start < prompts.length; start += batch) {
      const chunk = prompts.slice(start, start + batch);
      const ids = chunk.flatMap((p) => this.tokenize(p));
      const out = (await this.text.run({ [this.textInput]: i64(ids, [chunk.length, L]) }, [this.textOutput]))[this.textOutput]!;
      const data = out.data as Float32Array;
      if (out.type !== "float32" || data.length !== chunk.length * d) {
        throw new AtedmError(
          `${this.textFile}: output '${this.textOutput}' came back ${out.type} [${out.dims.join(", ")}]; expected float32 [${chunk.length}, ${d}]`,
        );
      }
      result.set(data, start * d);
    }
    return result;
  }

  /** CLIP score of each image against its prompt: 100 * max(0, cos). */
  async score(images: ReadonlyArray<RgbImage>, prompts: readonly string[]): Promise<Float64Array> {
    if (images.length !== prompts.length) throw new AtedmError(`CLIP score: ${images.length} images but ${prompts.length} prompts`);
    const a = await this.image.features(images);
    const b = await this.textEmbeddings(prompts);
    const d = this.dim;
    const scores = new Float64Array(images.length);
    for (let i = 0; i < images.length; i++) {
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let k = 0; k < d; k++) {
        const x = a[i * d + k]!;
        const y = b[i * d + k]!;
        dot += x * y;
        na += x * x;
        nb += y * y;
      }
      const cos = na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
      scores[i] = 100 * Math.max(0, cos);
    }
    return scores;
  }

  async release(): Promise<void> {
    await this.image.release();
    await this.text.release();
  }
}
