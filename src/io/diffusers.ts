/**
 * Reading a diffusers model folder: `model_index.json`, each component's `config.json` and weights, in the
 * standard layout any Stable Diffusion checkpoint uses (`unet/diffusion_pytorch_model.safetensors`,
 * `text_encoder/model.safetensors`, ...).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import { findWeights, WeightStore } from "./safetensors.js";

export function readJson<T = Record<string, unknown>>(path: string): T {
  if (!existsSync(path)) throw new AtedmError(`${path}: file not found`);
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (e) {
    throw new AtedmError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

export interface ModelIndex {
  _class_name: string;
  [component: string]: unknown;
}

export function readModelIndex(dir: string): ModelIndex {
  return readJson<ModelIndex>(join(dir, "model_index.json"));
}

/** Whether `model_index.json` lists `component` with a non-null class. */
export function hasComponent(index: ModelIndex, component: string): boolean {
  const entry = index[component];
  return Array.isArray(entry) && entry[0] !== null && entry[1] !== null;
}

export function componentConfig(dir: string, component: string): Record<string, unknown> {
  return readJson(join(dir, component, "config.json"));
}

/** Open a component's weights: diffusers names them `diffusion_pytorch_model`, transformers `model`. */
export function componentWeights(dir: string, component: string): WeightStore {
  const folder = join(dir, component);
  if (!existsSync(folder)) throw new AtedmError(`${folder}: component folder not found`);
  for (const stem of ["diffusion_pytorch_model", "model"]) {
    for (const ext of [".safetensors", ".safetensors.index.json"]) {
      if (existsSync(join(folder, stem + ext))) return WeightStore.open(findWeights(folder, stem));
    }
  }
  throw new AtedmError(`${folder}: no diffusion_pytorch_model.safetensors or model.safetensors found`);
}
