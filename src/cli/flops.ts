/** `atedm flops`: analytic FLOPs of one U-Net call (SPEC convention), unpruned and under a pruning method. */
import { AtedmError } from "../errors.js";
import { readJson } from "../io/diffusers.js";
import { openModel } from "../io/model_source.js";
import { resolveVAEConfig } from "../models/vae.js";
import { resolveUNetConfig, type UNetConfig } from "../models/unet_structure.js";
import { methodFlops, unetFlops, type UNetFlops } from "../metrics/flops.js";
import type { PruningMethod } from "../models/pruning_hook.js";
import { type Flags, int, LIMITS, parse, size } from "./args.js";
import { makeMethod, pruningFlags, PRUNING_HELP } from "./pruning_flags.js";

const flags: Flags = {
  model: { type: "string" },
  config: { type: "string" },
  "unet-config": { type: "string" },
  height: { type: "string" },
  width: { type: "string" },
  "vae-scale": { type: "string" },
  steps: { type: "string" },
  json: { type: "boolean" },
  ...pruningFlags,
};

const MAX_VAE_SCALE = 64;

export const FLOPS_HELP = `Usage: atedm flops (--model PATH | --unet-config FILE) [--height H --width W] [pruning options] [--json]

Analytic FLOPs of one U-Net call at batch 1 (2 FLOPs per multiply-add of every convolution, linear layer and
attention matmul; norms, softmax and element-wise ops not counted), split by ResNet / transformer parts / other.
With a pruning method: per block and per step, the mean over the steps, the saving, and a separate
pruning-overhead line (G-WPR iterations, recovery similarity).

  --model PATH             diffusers model folder (reads unet/config.json and the VAE's scale factor), or a
                           single-file checkpoint (configs inferred from its shapes, or from --config DIR).
  --config DIR             (single file) the diffusers folder whose configs describe it.
  --unet-config FILE       a UNet2DConditionModel config.json instead of a model folder.
  --height H --width W     image size in pixels: multiples of 8 up to ${LIMITS.size}, and of the VAE scale factor
                           (default: sample_size x VAE scale factor).
  --vae-scale F            pixels per latent pixel, 1..${MAX_VAE_SCALE} (default: from the model's VAE, 8 with --unet-config).
  --steps N                denoising steps the schedule runs over, 1..${LIMITS.steps} (default 20).
  --json                   one JSON object on stdout: unet_tflops, unet_tflops_pruned, flops_saving, breakdowns.

${PRUNING_HELP}
`;

export async function flopsCommand(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, flags, "flops");
  if (v.help) {
    process.stdout.write(FLOPS_HELP);
    return 0;
  }
  // The flags are checked before any config is read (--steps sizes an array per step).
  let vaeScale = int(v["vae-scale"] as string | undefined, "vae-scale", 1, MAX_VAE_SCALE);
  const steps = int(v.steps as string | undefined, "steps", 1, LIMITS.steps) ?? 20;
  const heightFlag = size(v.height as string | undefined, "height");
  const widthFlag = size(v.width as string | undefined, "width");
  const method = makeMethod(v);
  let cfg: UNetConfig;
  let cfgLabel: string;
  if (v.model) {
    const model = openModel(v.model as string, { config: v.config as string | undefined });
    cfgLabel = model.configLabel("unet");
    cfg = resolveUNetConfig(model.config("unet"), cfgLabel);
    if (vaeScale === undefined) {
      vaeScale = model.has("vae") ? 2 ** (resolveVAEConfig(model.config("vae"), model.configLabel("vae")).block_out_channels.length - 1) : 1;
    }
  } else if (v["unet-config"]) {
    const file = v["unet-config"] as string;
    cfgLabel = file;
    cfg = resolveUNetConfig(readJson(file), file);
  } else {
    throw new AtedmError("flops: give --model PATH or --unet-config FILE");
  }
  vaeScale ??= 8;
  const height = heightFlag ?? cfg.sample_size * vaeScale;
  const width = widthFlag ?? cfg.sample_size * vaeScale;
  if (height % vaeScale || width % vaeScale) throw new AtedmError(`--height/--width must be multiples of ${vaeScale}`);
  const latent: [number, number] = [height / vaeScale, width / vaeScale];

  const base = unetFlops(cfg, { latent });
  const perStep = method ? stepFlops(cfg, method, latent, steps) : [];
  const pruned = perStep.length ? perStep.reduce((a, s) => a + s.flops.total, 0) / perStep.length : base.total;
  const overhead = perStep.length ? perStep.reduce((a, s) => a + s.flops.overhead.total, 0) / perStep.length : 0;
  const report = {
    unet_config: cfgLabel,
    height,
    width,
    latent,
    method: method?.name ?? "none",
    ratio: method?.nominalRatio ?? 0,
    steps,
    unet_tflops: base.total / 1e12,
    unet_tflops_pruned: pruned / 1e12,
    flops_saving: 1 - pruned / base.total,
    pruning_overhead_tflops: overhead / 1e12,
    breakdown_tflops: scale(base.byCategory),
    breakdown_pruned_tflops: perStep.length ? scale(meanCategories(perStep.map((s) => s.flops))) : scale(base.byCategory),
    blocks: base.byBlock.map((b) => ({
      path: b.path,
      depth: b.depth,
      tokens: b.tokens,
      tflops: b.flops / 1e12,
      kept_per_step: perStep.map((s) => s.flops.byBlock.find((x) => x.path === b.path)!.kept ?? b.tokens),
      tflops_per_step: perStep.map((s) => s.flops.byBlock.find((x) => x.path === b.path)!.flops / 1e12),
    })),
    per_step_tflops: perStep.map((s) => s.flops.total / 1e12),
  };
  if (v.json) {
    process.stdout.write(JSON.stringify(report, null, 1) + "\n");
    return 0;
  }
  const t = (x: number) => `${(x / 1e12).toFixed(4)} TFLOPs`;
  const lines = [
    `U-Net ${height}x${width} (latent ${latent[0]}x${latent[1]}), batch 1, one call`,
    `  unpruned: ${t(base.total)}`,
    ...Object.entries(base.byCategory).map(([k, x]) => `    ${k.padEnd(14)} ${t(x)}`),
  ];
  if (method) {
    lines.push(
      `  ${method.name} ratio ${report.ratio} over ${steps} steps: mean ${t(pruned)} (saving ${(100 * report.flops_saving).toFixed(1)} %)`,
      `  pruning overhead (not in the totals): ${t(overhead)} per call`,
      "  per block (tokens -> kept at the last step):",
      ...report.blocks.map((b) => `    ${b.path.padEnd(28)} N=${String(b.tokens).padEnd(6)} kept ${b.kept_per_step.at(-1)}`),
    );
  }
  process.stdout.write(lines.join("\n") + "\n");
  return 0;
}

/** FLOPs of every step under a method's schedule (AT-EDM or ToMe, see `methodFlops`). */
export function stepFlops(cfg: UNetConfig, method: PruningMethod, latent: [number, number], steps: number) {
  return Array.from({ length: steps }, (_, step) => ({ step, flops: methodFlops(cfg, method, latent, { step, steps }) }));
}

function scale(r: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(r).map(([k, x]) => [k, x / 1e12]));
}

function meanCategories(fs: UNetFlops[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of fs) for (const [k, x] of Object.entries(f.byCategory)) out[k] = (out[k] ?? 0) + x / fs.length;
  return out;
}
