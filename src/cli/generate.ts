/** `atedm generate`: text to image, optionally with AT-EDM or ToMe pruning. */
import { fileURLToPath } from "node:url";
import { AtedmError } from "../errors.js";
import { makeDirectory } from "../io/files.js";
import { toRGB8, writePng } from "../io/png.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { median } from "../metrics/timing.js";
import { loadPipeline, type TextToImagePipeline } from "../pipeline/text_to_image.js";
import { applyPruning } from "../pruning/index.js";
import { SCHEDULER_NAMES } from "../schedulers/index.js";
import { type Flags, int, LIMITS, MAX_SEED, num, oneOf, parse, size } from "./args.js";
import { saveMasks, type StepMasks } from "../pruning/masks.js";
import { checkDistinct, checkOutputDir, checkOutputFile } from "./outputs.js";
import { Progress, progressMode, status } from "./progress.js";
import { makeMethod, methodReport, PRUNING_HELP, pruningFlags } from "./pruning_flags.js";
import { atedmVersion } from "./version.js";

export const DEFAULT_MODEL = fileURLToPath(new URL("../../models/shapes", import.meta.url));

const flags: Flags = {
  model: { type: "string" },
  config: { type: "string" },
  variant: { type: "string" },
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
  progress: { type: "boolean" },
  verbose: { type: "boolean" },
  ...pruningFlags,
};

export const GENERATE_HELP = `Usage: atedm generate [PROMPT] [options]

Generate an image from a text prompt with a Stable Diffusion model: a diffusers folder or a single-file
checkpoint. Every flag and every output path is checked before the model loads.

Model and output
  --model PATH             a diffusers model folder (model_index.json, unet/, text_encoder/, ...), or a single-file
                           checkpoint (.safetensors in the original SD-1.x / SD-2.x / SD-XL key layout; the family
                           and configs are inferred from its keys and shapes). Default: the embedded shapes model.
  --config DIR             (single file) take the configs, tokenizers and scheduler from this diffusers folder, for
                           checkpoints whose architecture is not a standard SD-1.x / SD-2.x / SD-XL one.
  --variant NAME           (folder) read the weight variant NAME, e.g. fp16: unet/diffusion_pytorch_model.fp16.safetensors;
                           components without it load their plain files, as in diffusers. F16 and BF16 weights are
                           used as stored and computed in float32.
  --out FILE.png           where to write the image (default out.png); its folder must exist. Written whole or
                           not at all.
  --save-latents FILE      also write the final latents (tensor 'latents', before VAE decoding) as safetensors.
  --json                   print one JSON object on stdout: the prompt, every setting the image was made with
                           (seed, steps, guidance, scheduler, size, model, method and its options), timings,
                           FLOPs, outputs and atedm's version; no progress bar.
  --progress               show progress even when stderr is not a terminal: a plain line now and then.
  --verbose                let ONNX Runtime print its own log lines (warnings and above).

Sampling
  --negative TEXT          negative prompt (default: none; SD encodes "", SD-XL uses zero embeddings).
  --steps N                denoising steps, 1..${LIMITS.steps} (default 20).
  --guidance G             classifier-free guidance scale in [0, ${LIMITS.guidance}]; <= 1 disables it (default: the
                           model's atedm.json, else 7.5, SD-XL 5.0; the embedded shapes model uses 4).
  --seed S                 seed of the initial noise, an integer in [0, 2^32) (default 0). Same seed, same image.
  --height H --width W     image size in pixels: multiples of 8 up to ${LIMITS.size}, and of the model's VAE factor
                           (default: the model's native size).
  --scheduler NAME         the sampler: ${SCHEDULER_NAMES.join(", ")}.
                           Default: the class the model's scheduler config names, with its settings (as diffusers'
                           from_pretrained; a class atedm lacks is an error naming it). A NAME keeps the model's betas,
                           prediction type and timestep spacing; -karras names use Karras sigmas, euler-a (ancestral)
                           draws each step's noise from the --seed stream.
  --latents FILE           start from the tensor 'latents' [1, C, h, w] float32 of this safetensors file instead of
                           seeded noise (the pipeline multiplies it by the scheduler's init_noise_sigma).
  --threads T              ONNX Runtime intra-op threads, 1..${LIMITS.threads} (default: all cores).

${PRUNING_HELP}
  --save-masks DIR         (atedm) per step and attention block, write a PNG of the kept tokens over the image and
                           a heat map of the token scores into DIR (created if missing).
`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, flags, "generate");
  if (v.help) {
    process.stdout.write(GENERATE_HELP);
    return 0;
  }
  const str = (k: string) => v[k] as string | undefined;
  // Everything the user typed is checked here, before the model loads.
  if (positionals.length > 1) throw new AtedmError(`generate takes one PROMPT (quote it), got ${positionals.length} words`);
  const prompt = positionals[0] ?? "";
  const negative = str("negative") ?? null;
  const json = v.json === true;
  const modelDir = str("model") ?? DEFAULT_MODEL;
  if (!modelDir.trim()) throw new AtedmError("--model: the path is empty");
  const configDir = str("config");
  if (configDir !== undefined && !configDir.trim()) throw new AtedmError("--config: the folder name is empty");
  const variant = str("variant");
  const steps = int(str("steps"), "steps", 1, LIMITS.steps) ?? 20;
  const threads = int(str("threads"), "threads", 1, LIMITS.threads);
  const seed = int(str("seed"), "seed", 0, MAX_SEED);
  const guidance = num(str("guidance"), "guidance", 0, LIMITS.guidance);
  const height = size(str("height"), "height");
  const width = size(str("width"), "width");
  const scheduler = oneOf(str("scheduler"), "scheduler", SCHEDULER_NAMES);
  const method = makeMethod(v);
  const masksDir = str("save-masks");
  if (masksDir !== undefined && method?.name !== "atedm") throw new AtedmError("--save-masks needs --method atedm");
  const out = checkOutputFile(str("out") ?? "out.png", "out");
  const latentsOut = str("save-latents") === undefined ? undefined : checkOutputFile(str("save-latents")!, "save-latents");
  if (masksDir !== undefined) checkOutputDir(masksDir, "save-masks");
  checkDistinct([
    ["out", out],
    ["save-latents", latentsOut],
    ["save-masks", masksDir],
  ]);
  let latents: Float32Array | undefined;
  const latentsIn = str("latents");
  if (latentsIn !== undefined) {
    if (!latentsIn.trim()) throw new AtedmError("--latents: the file name is empty");
    const t = readSafetensors(latentsIn).get("latents");
    if (!t) throw new AtedmError(`${latentsIn}: no tensor named 'latents'`);
    if (!(t.data instanceof Float32Array)) throw new AtedmError(`${latentsIn}: tensor 'latents' must be float32`);
    latents = t.data;
  }

  const mode = progressMode({ progress: v.progress === true, json });
  status(mode, `loading ${modelDir} ...`);
  const pipe = await loadPipeline(modelDir, { threads, verbose: v.verbose === true, config: configDir, variant });
  try {
    if (method) applyPruning(pipe, method);
    const progress = new Progress(steps, "generate", mode);
    const masks: StepMasks[] = [];
    const result = await pipe.generate({
      prompt,
      negativePrompt: negative,
      steps,
      guidance,
      seed,
      height,
      width,
      scheduler,
      latents,
      withMasks: masksDir !== undefined,
      onStep: (s) => {
        progress.update(s.step + 1);
        if (masksDir !== undefined) masks.push({ step: s.step, extras: s.unet.extras });
      },
    });
    progress.done();
    if (result.truncated)
      process.stderr.write(`atedm: warning: the prompt was longer than ${pipe.tokenizer.modelMaxLength} tokens and was truncated\n`);
    const [, H, W] = result.imageDims as [number, number, number];
    writePng(out, toRGB8(result.image, H, W), H, W);
    const outputs: Record<string, string> = { image: out };
    if (latentsOut !== undefined) {
      writeSafetensors(latentsOut, { latents: { dims: result.latentDims, data: result.latents } });
      outputs.latents = latentsOut;
    }
    if (masksDir !== undefined) {
      makeDirectory(masksDir);
      outputs.masks = masksDir;
      saveMasks(masksDir, masks, pipe.unet.blocks, result, pipe.vaeScaleFactor);
    }
    const settings = {
      prompt,
      negative_prompt: negative,
      seed: latents ? null : (seed ?? 0),
      latents: latentsIn ?? null,
      steps,
      guidance: guidance ?? pipe.defaultGuidance,
      scheduler: result.scheduler.name,
      scheduler_class: result.scheduler.className,
      height: H,
      width: W,
      threads: pipe.runtime.threads,
    };
    if (json) process.stdout.write(JSON.stringify(report(pipe, methodReport(method), modelDir, settings, result, outputs), null, 1) + "\n");
    else process.stderr.write(`wrote ${out} (${steps} steps in ${result.secondsTotal.toFixed(2)} s)\n`);
    return 0;
  } finally {
    await pipe.release();
  }
}

function report(
  pipe: TextToImagePipeline,
  method: ReturnType<typeof methodReport>,
  model: string,
  settings: Record<string, unknown>,
  r: Awaited<ReturnType<TextToImagePipeline["generate"]>>,
  outputs: Record<string, string>,
) {
  const [, , h, w] = r.latentDims as [number, number, number, number];
  const flops = pipe.unetFlopsPerStep(h, w, r.stepInfo);
  return {
    atedm_version: atedmVersion(),
    model,
    ...settings,
    ...method,
    seconds_total: r.secondsTotal,
    seconds_per_step: median(r.stepSeconds),
    unet_tflops_per_step: flops.pruned / 1e12,
    unet_tflops_unpruned: flops.unpruned / 1e12,
    flops_saving: 1 - flops.pruned / flops.unpruned,
    /** Per attention block: the tokens through its later layers at each step. */
    kept_tokens: Object.fromEntries(pipe.unet.blocks.map((b) => [b.path, r.stepInfo.map((s) => s.keptTokens[b.path])])),
    output: outputs,
  };
}
