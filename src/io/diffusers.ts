/**
 * Reading a diffusers model folder: `model_index.json`, each component's `config.json` and weights, in the
 * standard layout any Stable Diffusion checkpoint uses (`unet/diffusion_pytorch_model.safetensors`,
 * `text_encoder/model.safetensors`, ...). The files are validated as they are read (src/io/config_schema.ts):
 * every failure is one line naming the file and the key.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { checkValue, obj, parseConfig, readJsonObject, v } from "./config_schema.js";
import { WeightStore } from "./safetensors.js";

/**
 * Read a JSON file that must hold an object. A missing file, invalid JSON, or a JSON `null`, array, string or
 * number at the top level is a one-line `AtedmError` naming the file (never a raw TypeError later on).
 */
export function readJson<T = Record<string, unknown>>(path: string): T {
  return readJsonObject(path) as T;
}

export interface ModelIndex {
  _class_name: string;
  [component: string]: unknown;
}

/** A component entry of model_index.json: `[library, class]`, or `[null, null]` for an absent component. */
const COMPONENT = v.union(
  [v.strictTuple([v.string(), v.string()]), v.strictTuple([v.null(), v.null()])],
  "[library, class] (two strings) or [null, null]",
);

/** The components atedm reads: when present and not null, they must be entries. */
const KNOWN_COMPONENTS = ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"] as const;

const MODEL_INDEX = obj({
  _class_name: v.pipe(v.string("the pipeline class name, a string"), v.minLength(1, "the pipeline class name, a string")),
  force_zeros_for_empty_prompt: v.nullish(v.boolean("true, false or null")),
  ...Object.fromEntries(KNOWN_COMPONENTS.map((c) => [c, v.nullish(COMPONENT)])),
});

/**
 * Read and validate `model_index.json`: an object with a string `_class_name`; every component entry (any key
 * not starting with `_` whose value is a list, and the components atedm reads) is `[library, class]` or
 * `[null, null]`. Other keys (pipeline options such as `requires_safety_checker`) are kept as they are.
 */
export function readModelIndex(dir: string): ModelIndex {
  const path = join(dir, "model_index.json");
  const raw = readJsonObject(path);
  parseConfig(MODEL_INDEX, raw, path);
  for (const [key, value] of Object.entries(raw)) {
    if (!key.startsWith("_") && Array.isArray(value)) checkValue(COMPONENT, value, path, key);
  }
  return raw as ModelIndex;
}

/** Whether `model_index.json` lists `component` with a non-null class. */
export function hasComponent(index: ModelIndex, component: string): boolean {
  const entry = index[component];
  return Array.isArray(entry) && entry[0] !== null && entry[1] !== null;
}

/** A component's `config.json`, checked to be a JSON object (its keys are validated by the component's resolver). */
export function componentConfig(dir: string, component: string): Record<string, unknown> {
  return readJsonObject(join(dir, component, "config.json"));
}

/**
 * Open a component's weights: diffusers names them `diffusion_pytorch_model`, transformers `model`. With a
 * `variant` ("fp16"), `<stem>.<variant>.safetensors` (or the shard index `<stem>.safetensors.index.<variant>.json`)
 * is preferred, and a component without variant files falls back to its plain files, as diffusers does.
 */
export function componentWeights(dir: string, component: string, variant?: string): WeightStore {
  const folder = join(dir, component);
  if (!existsSync(folder)) throw new AtedmError(`${folder}: component folder not found`);
  const names = (stem: string) => [
    ...(variant ? [`${stem}.${variant}.safetensors`, `${stem}.safetensors.index.${variant}.json`] : []),
    `${stem}.safetensors`,
    `${stem}.safetensors.index.json`,
  ];
  for (const stem of ["diffusion_pytorch_model", "model"]) {
    for (const name of names(stem)) {
      if (existsSync(join(folder, name))) return WeightStore.open(join(folder, name));
    }
  }
  const found = variantFiles(folder);
  const hint = found.length && !variant ? ` (it has ${found.join(", ")}: pass --variant ${variantOf(found[0]!)})` : "";
  throw new AtedmError(
    `${folder}: no diffusion_pytorch_model${variant ? `[.${variant}]` : ""}.safetensors or model${variant ? `[.${variant}]` : ""}.safetensors found${hint}`,
  );
}

/**
 * The variant weight files of a component folder (`diffusion_pytorch_model.fp16.safetensors`,
 * `model.safetensors.index.fp16.json`, ...); `variantOf` gives each one's variant.
 */
export function variantFiles(folder: string): string[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .filter((f) => /^(?:diffusion_pytorch_model|model)\.(?:safetensors\.index\.[A-Za-z0-9_-]+\.json|[A-Za-z0-9_-]+\.safetensors)$/.test(f))
    .sort();
}

/** The variant of a file `variantFiles` lists: the name's second-to-last dot-separated part. */
export const variantOf = (file: string): string => file.split(".").at(-2)!;
