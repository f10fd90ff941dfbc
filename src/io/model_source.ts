/**
 * Where a model's pieces come from: a diffusers folder (`model_index.json`, `unet/`, `vae/`, ...) or one
 * single-file checkpoint (src/io/single_file_source.ts). The model loaders (U-Net, text encoders, VAE, tokenizers,
 * scheduler) ask a `ModelSource` for a component's config and weights by the diffusers component name, so they
 * read both formats alike, as diffusers' `from_pretrained` and `from_single_file` end in the same modules.
 *
 *   const model = openModel("models/shapes");                   // a diffusers folder
 *   const model = openModel("sd15.safetensors");                 // a single file, configs inferred from its shapes
 *   const model = openModel("custom.safetensors", { config: "path/to/diffusers-folder" });
 *   const unetConfig = model.config("unet"), unetWeights = model.weights("unet");
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { componentConfig, componentWeights, hasComponent, type ModelIndex, readModelIndex, variantFiles, variantOf } from "./diffusers.js";
import { readTextFile } from "./config_schema.js";
import type { TensorSource } from "./safetensors.js";
import { type Family, openSingleFile, type SingleFileModel, standardConfigs, type TokenizerFiles } from "./single_file.js";

export type { TokenizerFiles };

/** The weighted components atedm reads, by their diffusers names. */
export type ComponentName = "unet" | "vae" | "text_encoder" | "text_encoder_2";
export type TokenizerName = "tokenizer" | "tokenizer_2";

export interface ModelSource {
  /** What the user passed (a folder or a file), for messages and records. */
  readonly path: string;
  /** The pipeline's `model_index.json` (for a single file: the one of its family, or of `--config DIR`). */
  readonly index: ModelIndex;
  /** Whether the model has `component` (model_index.json lists it with a class). */
  has(component: string): boolean;
  /** A component's diffusers config (`unet/config.json`, ...), as read: the component's resolver validates it. */
  config(component: ComponentName): Record<string, unknown>;
  /** Where that config came from, for error messages (`DIR/unet/config.json`). */
  configLabel(component: ComponentName): string;
  /** A component's weights under their diffusers names. The caller closes the store. */
  weights(component: ComponentName): TensorSource;
  /** A tokenizer: the folder of its files (vocab.json, merges.txt, ...) and a pad token that replaces the folder's. */
  tokenizer(component: TokenizerName): TokenizerFiles;
  /**
   * The scheduler config's JSON text and where it came from (`DIR/scheduler/scheduler_config.json`); the
   * scheduler module parses it (diffusers writes bare NaN / Infinity, which JSON.parse refuses).
   */
  schedulerConfig(): { text: string; source: string };
  /** The folder of the optional `atedm.json` (generation defaults), or null when there is none to read. */
  readonly defaultsDir: string | null;
}

export interface OpenModelOptions {
  /**
   * diffusers' `variant`: read `<stem>.<variant>.safetensors` (e.g. `diffusion_pytorch_model.fp16.safetensors`)
   * instead of `<stem>.safetensors` in every component folder. Folders only.
   */
  variant?: string;
  /**
   * A diffusers folder whose configs, tokenizers and scheduler are used with a single-file checkpoint (for
   * checkpoints whose architecture is not one of the standard SD-1.x / SD-2.x / SD-XL ones).
   */
  config?: string;
}

/** A variant name: letters, digits, `_` and `-` (diffusers uses "fp16", "bf16", "ema", "non_ema"). */
const VARIANT = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;

/**
 * A model in the diffusers folder layout, as `DiffusionPipeline.from_pretrained(dir, variant=...)` reads it.
 * model_index.json is read when first needed, so a component loader given a bare folder (`<dir>/vae/` only, as
 * `AutoencoderKL.from_pretrained(dir, subfolder="vae")`) works without one.
 */
export class DiffusersFolder implements ModelSource {
  readonly defaultsDir: string;
  private modelIndex?: ModelIndex;

  constructor(
    readonly path: string,
    readonly variant?: string,
  ) {
    if (variant !== undefined && !VARIANT.test(variant)) {
      throw new AtedmError(`--variant: ${JSON.stringify(variant.slice(0, 40))} is not a variant name (letters, digits, _ and -, e.g. fp16)`);
    }
    if (variant !== undefined) {
      // diffusers: components without variant files load their plain files, but some component must have them.
      const components = ["unet", "vae", "text_encoder", "text_encoder_2"].filter((c) => this.has(c));
      const found = components.flatMap((c) => variantFiles(join(path, c)));
      if (!found.some((f) => variantOf(f) === variant)) {
        const others = [...new Set(found.map(variantOf))];
        throw new AtedmError(
          `${path}: no component has ${variant} weights (no *.${variant}.safetensors)${others.length ? `; variants present: ${others.join(", ")}` : ""}`,
        );
      }
    }
    this.defaultsDir = path;
  }

  get index(): ModelIndex {
    if (!this.modelIndex) {
      if (!existsSync(join(this.path, "model_index.json"))) {
        throw new AtedmError(`${this.path}: not a diffusers model folder (no model_index.json)`);
      }
      this.modelIndex = readModelIndex(this.path);
    }
    return this.modelIndex;
  }

  has(component: string): boolean {
    return hasComponent(this.index, component);
  }

  config(component: ComponentName): Record<string, unknown> {
    return componentConfig(this.path, component);
  }

  configLabel(component: ComponentName): string {
    return `${this.path}/${component}/config.json`;
  }

  weights(component: ComponentName): TensorSource {
    return componentWeights(this.path, component, this.variant);
  }

  tokenizer(component: TokenizerName): TokenizerFiles {
    return { dir: join(this.path, component) };
  }

  schedulerConfig(): { text: string; source: string } {
    const source = join(this.path, "scheduler", "scheduler_config.json");
    return { text: readTextFile(source, "scheduler config"), source };
  }
}

/**
 * Open a model: a diffusers folder, or a single-file checkpoint (`.safetensors`). `options.config` (a diffusers
 * folder) supplies the configs of a single file; `options.variant` picks a folder's weight variant.
 */
export function openModel(path: string, options: OpenModelOptions = {}): ModelSource {
  if (!existsSync(path)) throw new AtedmError(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) {
    if (options.config !== undefined) {
      throw new AtedmError(`--config ${options.config}: only for a single-file checkpoint; ${path} is a folder with its own configs`);
    }
    const folder = new DiffusersFolder(path, options.variant);
    void folder.index; // a pipeline needs model_index.json: fail now, naming the folder
    return folder;
  }
  if (options.variant !== undefined) {
    throw new AtedmError(`--variant ${options.variant}: only for a diffusers folder; ${path} is a single file`);
  }
  return new SingleFileCheckpoint(path, options.config);
}

/** Accept a folder path where a `ModelSource` is expected (the loaders' old signature). */
export function asModelSource(model: string | ModelSource): ModelSource {
  return typeof model === "string" ? new DiffusersFolder(model) : model;
}

/**
 * A single-file checkpoint (original LDM / SGM key layout) seen as a diffusers model: its family is detected from
 * its keys, the configs are the standard ones of that family (checked against every tensor shape) or those of
 * `--config DIR`, and each component's weights are views that present diffusers names (src/io/single_file.ts).
 * Tokenizers are those of `--config DIR` when it has them, else the CLIP vocabulary shipped in models/.
 */
export class SingleFileCheckpoint implements ModelSource {
  readonly index: ModelIndex;
  readonly defaultsDir: string | null;
  private readonly model: SingleFileModel;

  constructor(
    readonly path: string,
    readonly configDir?: string,
  ) {
    if (configDir !== undefined && !(existsSync(configDir) && statSync(configDir).isDirectory())) {
      throw new AtedmError(`--config ${configDir}: no such folder (expected a diffusers model folder with unet/config.json, ...)`);
    }
    this.model = openSingleFile(path, { configDir });
    const standard = standardConfigs(this.model.family);
    const components = this.model.components;
    this.index = (this.model.configs.model_index as ModelIndex | undefined) ?? {
      _class_name: components.includes("text_encoder_2") ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline",
      ...Object.fromEntries(components.map((c) => [c, ["diffusers", c]])),
    };
    this.defaultsDir = configDir !== undefined && existsSync(join(configDir, "atedm.json")) ? configDir : null;
    if (!this.model.configs.scheduler && !standard) {
      throw new AtedmError(`--config ${configDir}: no scheduler/scheduler_config.json, and a ${this.model.family} checkpoint has no standard one`);
    }
  }

  /** The detected family: "sd1", "sd2", "sdxl" or "sdxl-refiner". */
  get family(): Family {
    return this.model.family;
  }

  has(component: string): boolean {
    return (this.model.components as string[]).includes(component);
  }

  config(component: ComponentName): Record<string, unknown> {
    const c = this.model.configs[component];
    if (!c) throw new AtedmError(`${this.path}: a ${this.model.family} checkpoint has no ${component}`);
    return c;
  }

  configLabel(component: ComponentName): string {
    return this.configDir !== undefined
      ? `${this.configDir}/${component}/config.json`
      : `${this.path} (${component} config of the standard ${this.model.family} architecture)`;
  }

  weights(component: ComponentName): TensorSource {
    return this.model.weights(component);
  }

  tokenizer(component: TokenizerName): TokenizerFiles {
    const t = this.model.tokenizers[component];
    if (!t) throw new AtedmError(`${this.path}: a ${this.model.family} checkpoint has no ${component}`);
    return t;
  }

  schedulerConfig(): { text: string; source: string } {
    const own = this.model.configs.scheduler;
    if (own) return { text: JSON.stringify(own), source: join(this.configDir ?? this.path, "scheduler", "scheduler_config.json") };
    return {
      text: JSON.stringify(standardConfigs(this.model.family)!.scheduler),
      source: `${this.path} (scheduler config of the standard ${this.model.family} model)`,
    };
  }
}
