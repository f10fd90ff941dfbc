/**
 * The JSON `atedm eval` writes to `<out>/eval.json` (and prints with --json), which `atedm report` reads.
 * Paths inside are relative to the eval's output folder, so the folder can be moved or archived whole.
 */

/** A quality metric over a method's images, with its 95 % bootstrap interval (prompts resampled, seeded). */
export interface MetricValue {
  value: number;
  /** [low, high], the 2.5 and 97.5 percentiles of the bootstrap distribution; null where it is undefined. */
  ci95: [number, number] | null;
}

/**
 * Quality metric names. Higher is better for all but `fd` and `fid`. Alignment metrics exist for shapes models
 * (captions in the shapes grammar); `fd` needs a feature extractor (the embedded one for shapes models);
 * `psnr` and `ssim` compare each image with the unpruned image of the same prompt and seed (absent for `none`).
 */
export type MetricName =
  | "alignment_all_correct"
  /** all_correct of the method minus that of `none` on the same prompt and seed (paired), for pruned methods. */
  | "alignment_all_correct_delta"
  | `alignment.${string}`
  | "fd"
  | "fid"
  | "clip_score"
  | "psnr"
  | "ssim";

export const LOWER_IS_BETTER: ReadonlySet<string> = new Set(["fd", "fid"]);

/** One generated image, by prompt index and seed. */
export interface ImageRecord {
  prompt: number;
  seed: number;
  /** PNG path relative to the output folder. */
  file: string;
}

export interface MethodResult {
  /** Unique label, e.g. "none", "atedm:0.5", "atedm:recovery=cosine@0.10" (budget runs end in @budget). */
  name: string;
  /** The spec the user wrote (without the budget). */
  spec: string;
  method: "none" | "atedm" | "tome";
  /** Pruning ratio the method ran with (0 for none). */
  ratio: number;
  /** The FLOPs saving this run was matched to (--budgets), or null. */
  budget: number | null;
  /** Every option the method ran with, defaults filled in (schedule included). */
  options: Record<string, unknown>;
  /** 1 - (U-Net FLOPs per step, mean over the steps) / unpruned; the SPEC's convention, overhead included. */
  flops_saving: number;
  tflops_per_step: number;
  /** Median seconds per denoising step (U-Net and scheduler), timed in this run. */
  seconds_per_step: number;
  /** seconds_per_step of `none` / this method's, both from this run (methods interleaved image by image). */
  speedup: number;
  quality: Record<string, MetricValue>;
  images: ImageRecord[];
  /** Kept-token overlay PNGs (first prompt, seed 0, middle step), one per pruned block; relative paths. */
  overlays: Array<{ block: string; step: number; file: string }>;
}

export interface UnreachableBudget {
  spec: string;
  budget: number;
  /** The largest FLOPs saving this method reaches on this model (at its largest ratio). */
  max_saving: number;
}

export interface EvalResult {
  atedm_version: string;
  created: string;
  command: string;
  machine: { cpus: number; cpu: string; platform: string };
  model: string;
  prompts_file: string;
  prompts: string[];
  seeds: number;
  steps: number;
  guidance: number;
  scheduler: string;
  threads: number;
  budgets: number[] | null;
  unreachable: UnreachableBudget[];
  /** How the intervals were made. */
  bootstrap: {
    samples: number;
    /** Resamples of the Frechet distances (each needs two covariances and an eigen-decomposition); <= samples. */
    fd_samples: number;
    seed: number;
    unit: "prompt";
  };
  /** The feature extractor behind `fd` (and `fid`), or null when none ran. */
  features: { name: string; dim: number; reference_images: number } | null;
  methods: MethodResult[];
  /** Seconds: generation (all methods), and everything else (metrics, PNG writes, features); overhead = other / total. */
  timing: { generation_seconds: number; other_seconds: number; overhead: number };
}
