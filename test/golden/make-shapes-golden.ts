/**
 * Regenerate a shapes model's diffusers golden after the model is retrained:
 *
 *   node --import tsx test/golden/make-shapes-golden.ts [--model DIR] [--out FILE] [--prompt TEXT]
 *   node --import tsx test/golden/make-shapes-golden.ts --model models/shapes-xl \
 *     --out test/golden/shapes-xl-diffusers.safetensors --prompt "a large red circle at the top left on a striped blue background"
 *
 * (defaults: models/shapes, test/golden/shapes-diffusers.safetensors and the prompt of test/shapes_model.test.ts;
 * the options let a candidate export be checked against diffusers before it replaces the shipped model.)
 * Start noise: atedm's randn(seed 7) as [1, 3, S, S], S the U-Net's sample_size (32, or 64 for shapes-xl);
 * diffusers samples it with training/sample_shapes.py (Euler, 20 steps, guidance 4); the golden holds `start` and
 * the final `latents`. Needs the Python environment of training/README.md (ATEDM_TORCH_PYTHON, default
 * training/.venv/bin/python; PYTHONPATH with a diffusers snapshot's src/).
 */
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randn } from "../../src/pipeline/random.js";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const python = process.env.ATEDM_TORCH_PYTHON ?? join(root, "training", ".venv", "bin", "python");
const { values: args } = parseArgs({ options: { model: { type: "string" }, out: { type: "string" }, prompt: { type: "string" } } });
const GOLDEN_PROMPT = args.prompt ?? "a large red circle at the top left on a white background";
const model = args.model ?? join(root, "models", "shapes");
const size = (JSON.parse(readFileSync(join(model, "unet", "config.json"), "utf8")) as { sample_size: number }).sample_size;

const dir = mkdtempSync(join(tmpdir(), "atedm-golden-"));
try {
  const dims = [1, 3, size, size];
  const start = randn(7, 3 * size * size);
  writeSafetensors(join(dir, "start.safetensors"), { latents: { data: start, dims } });
  execFileSync(
    python,
    [
      join(root, "training", "sample_shapes.py"),
      "--model",
      model,
      "--prompt",
      GOLDEN_PROMPT,
      "--steps",
      "20",
      "--guidance",
      "4",
      "--latents",
      join(dir, "start.safetensors"),
      "--save-latents",
      join(dir, "final.safetensors"),
      "--out",
      join(dir, "grid.png"),
    ],
    { stdio: "inherit" },
  );
  const final = readSafetensors(join(dir, "final.safetensors")).get("latents")!;
  const out = args.out ?? join(root, "test", "golden", "shapes-diffusers.safetensors");
  writeSafetensors(
    out,
    { start: { data: start, dims }, latents: final },
    {
      producer: "training/sample_shapes.py (diffusers UNet2DConditionModel, transformers CLIPTextModel, EulerDiscreteScheduler)",
      prompt: GOLDEN_PROMPT,
      steps: "20",
      guidance: "4",
      start: "atedm randn(seed 7), unscaled",
    },
  );
  console.log(`wrote ${out}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
