/** `atedm generate`: text to image, optionally with AT-EDM or ToMe pruning. */
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../errors.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { toRGB8, writePng } from "../io/png.js";
import { median } from "../metrics/timing.js";
import { loadPipeline, type TextToImagePipeline } from "../pipeline/text_to_image.js";
import { applyPruning, type PruningMethod } from "../pruning/index.js";
import { SCHEDULER_NAMES } from "../schedulers/index.js";
import { int, MAX_SEED, num, oneOf, parse, type Flags } from "./args.js";
import { saveMasks, type StepMasks } from "./masks.js";
import { Progress } from "./progress.js";
import { makeMethod, pruningFlags, PRUNING_HELP } from "./pruning_flags.js";

export const DEFAULT_MODEL = fileURLToPath(new URL("../../models/shapes", import.meta.url));

const flags: Flags = {
  model: { type: "string" },
  negative: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  seed: { type: "string" },
  height: { type: "string" },
  width: { type: "string" },
  scheduler: { type: "string" },
  latents: { type: "string" },
  out: { type: "string" },
  "save-latents": { type: "string" },
  "save-masks": { type: "string" },
  threads: { type: "string" },
  json: { type: "boolean" },
  ...pruningFlags,
};

export const GENERATE_HELP = `Usage: atedm generate [PROMPT] [options]

Generate an image from a text prompt with a Stable Diffusion model in the diffusers folder layout.

Model and output
  --model DIR              diffusers model folder (model_index.json, unet/, text_encoder/, ...).
                           Default: the embedded shapes model (models/shapes).
  --out FILE.png           where to write the image (default out.png). Written whole or not at all.
  --save-latents FILE      also write the final latents (tensor 'latents', before VAE decoding) as safetensors.
  --json                   print one JSON object on stdout (model, steps, timings, FLOPs, outputs, pruning);
                           no progress bar.

Sampling
  --negative TEXT          negative prompt (default: none; SD encodes "", SD-XL uses zero embeddings).
  --steps N                denoising steps (default 20).
  --guidance G             classifier-free guidance scale; <= 1 disables it (default: the model's atedm.json,
                           else 7.5, SD-XL 5.0; the embedded shapes model uses 4).
  --seed S                 seed of the initial noise, an integer in [0, 2^32) (default 0). Same seed, same image.
  --height H --width W     image size in pixels, multiples of the VAE factor (default: the model's native size).
  --scheduler NAME         ${SCHEDULER_NAMES.join(" | ")} (default euler); betas etc. come from the model's config.
  --latents FILE           start from the tensor 'latents' [1, C, h, w] float32 of this safetensors file instead of
                           seeded noise (the pipeline multiplies it by the scheduler's init_noise_sigma).
  --threads T              ONNX Runtime intra-op threads (default: all cores).

${PRUNING_HELP}
  --save-masks DIR         (atedm) per step and attention block, write a PNG of the kept tokens over the image and
                           a heat map of the token scores into DIR.
`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, flags, "generate");
  if (v.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  if (positionals.length > 1) throw new AtedmError(`generate takes one PROMPT (quote it), got ${positionals.length} words`);
  const prompt = positionals[0] ?? "";
  const json = v.json === true;
  const modelDir = (v.model as string | undefined) ?? DEFAULT_MODEL;
  const out = (v.out as string | undefined) ?? "out.png";
  const steps = int(v.steps as string | undefined, "steps", 1) ?? 20;
  const threads = int(v.threads as string | undefined, "threads", 1);
  const seed = int(v.seed as string | undefined, "seed", 0, MAX_SEED);
  if (seed !== undefined && seed > 0xffffffff) throw new AtedmError(`--seed must be below 2^32, got ${seed}`);
  const scheduler = oneOf(v.scheduler as string | undefined, "scheduler", SCHEDULER_NAMES);
  let latents: Float32Array | undefined;
  if (v.latents) {
    const t = readSafetensors(v.latents as string).get("latents");
    if (!t) throw new AtedmError(`${v.latents}: no tensor named 'latents'`);
    if (!(t.data instanceof Float32Array)) throw new AtedmError(`${v.latents}: tensor 'latents' must be float32`);
    latents = t.data;
  }

  const pipe = await loadPipeline(modelDir, threads ? { threads } : {});
  try {
    const method = makeMethod(v);
    if (method) applyPruning(pipe, method);
    if (v["save-masks"] && method?.name !== "atedm") throw new AtedmError("--save-masks needs --method atedm");
    const progress = new Progress(steps, "generate", !json && process.stderr.isTTY === true);
    const masks: StepMasks[] = [];
    const result = await pipe.generate({
      prompt,
      negativePrompt: (v.negative as string | undefined) ?? null,
      steps,
      guidance: num(v.guidance as string | undefined, "guidance"),
      seed,
      height: int(v.height as string | undefined, "height", 1),
      width: int(v.width as string | undefined, "width", 1),
      scheduler,
      latents,
      withMasks: Boolean(v["save-masks"]),
      onStep: (s) => {
        progress.update(s.step + 1);
        if (v["save-masks"]) masks.push({ step: s.step, extras: s.unet.extras });
      },
    });
    progress.done();
    if (result.truncated)
      process.stderr.write(`atedm: warning: the prompt was longer than ${pipe.tokenizer.modelMaxLength} tokens and was truncated\n`);
    const [, H, W] = result.imageDims as [number, number, number];
    writePng(out, toRGB8(result.image, H, W), H, W);
    const outputs: Record<string, string> = { image: out };
    if (v["save-latents"]) {
      writeSafetensors(v["save-latents"] as string, { latents: { dims: result.latentDims, data: result.latents } });
      outputs.latents = v["save-latents"] as string;
    }
    if (v["save-masks"]) {
      const dir = v["save-masks"] as string;
      mkdirSync(dir, { recursive: true });
      outputs.masks = dir;
      saveMasks(dir, masks, pipe.unet.blocks, result, pipe.vaeScaleFactor);
    }
    if (json) process.stdout.write(JSON.stringify(report(pipe, method, modelDir, steps, result, outputs), null, 1) + "\n");
    else process.stderr.write(`wrote ${out} (${steps} steps in ${result.secondsTotal.toFixed(2)} s)\n`);
    return 0;
  } finally {
    await pipe.release();
  }
}

function report(
  pipe: TextToImagePipeline,
  method: PruningMethod | null,
  model: string,
  steps: number,
  r: Awaited<ReturnType<TextToImagePipeline["generate"]>>,
  outputs: Record<string, string>,
) {
  const [, , h, w] = r.latentDims as [number, number, number, number];
  const flops = pipe.unetFlopsPerStep(h, w, r.stepInfo);
  return {
    model,
    steps,
    seconds_total: r.secondsTotal,
    seconds_per_step: median(r.stepSeconds),
    unet_tflops_per_step: flops.pruned / 1e12,
    unet_tflops_unpruned: flops.unpruned / 1e12,
    flops_saving: 1 - flops.pruned / flops.unpruned,
    method: method?.name ?? "none",
    ratio: method?.nominalRatio ?? 0,
    /** Per attention block: the tokens through its later layers at each step. */
    kept_tokens: Object.fromEntries(pipe.unet.blocks.map((b) => [b.path, r.stepInfo.map((s) => s.keptTokens[b.path])])),
    output: outputs,
  };
}
