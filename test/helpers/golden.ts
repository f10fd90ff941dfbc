/**
 * Golden-fixture helpers: load the diffusers reference tensors and compare with the fixture README's metric.
 *
 *   max_abs = max |ours - golden| / max(1, max |golden|)
 *   rel_l2  = ||ours - golden||_2 / ||golden||_2
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { readSafetensors, type HostTensor } from "../../src/io/safetensors.js";

const here = dirname(fileURLToPath(import.meta.url));
/** `../shared/fixtures` beside the checkout (CI lays it there too). */
export const FIXTURES = resolve(here, "../../../shared/fixtures");
export const TINY_SD = join(FIXTURES, "tiny-sd");
export const TINY_SDXL = join(FIXTURES, "tiny-sdxl");

export function fixturesPresent(): boolean {
  return existsSync(join(TINY_SD, "model_index.json"));
}

const cache = new Map<string, Map<string, HostTensor>>();
export function golden(model: string, file: string): Map<string, HostTensor> {
  const path = join(model, "golden", file);
  let g = cache.get(path);
  if (!g) {
    g = readSafetensors(path);
    cache.set(path, g);
  }
  return g;
}

export function tensorOf(g: Map<string, HostTensor>, name: string): HostTensor {
  const t = g.get(name);
  if (!t) throw new Error(`golden tensor '${name}' not found`);
  return t;
}

export const TOL = {
  exact: { maxAbs: 0, relL2: 0 },
  text_encoder: { maxAbs: 2e-5, relL2: 1e-5 },
  unet: { maxAbs: 2e-4, relL2: 1e-4 },
  attn_probs: { maxAbs: 2e-5, relL2: 2e-5 },
  vae: { maxAbs: 2e-5, relL2: 1e-5 },
  scheduler: { maxAbs: 1e-5, relL2: 1e-5 },
  pipeline: { maxAbs: 5e-4, relL2: 2e-4 },
  tome: { maxAbs: 2e-4, relL2: 1e-4 },
} as const;

export interface Errors {
  maxAbs: number;
  relL2: number;
}

export function errors(ours: ArrayLike<number>, gold: ArrayLike<number>): Errors {
  assert.equal(ours.length, gold.length, `length ${ours.length} != golden ${gold.length}`);
  let maxDiff = 0;
  let maxGold = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < gold.length; i++) {
    const d = Number(ours[i]) - Number(gold[i]);
    if (!(Math.abs(d) <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : Math.abs(d);
    maxGold = Math.max(maxGold, Math.abs(Number(gold[i])));
    num += d * d;
    den += Number(gold[i]) ** 2;
  }
  return { maxAbs: maxDiff / Math.max(1, maxGold), relL2: den === 0 ? Math.sqrt(num) : Math.sqrt(num / den) };
}

/** Assert `ours` matches `gold` within `tol`; the message names the tensor, both errors and the tolerance. */
export function assertClose(
  name: string,
  ours: ArrayLike<number>,
  gold: HostTensor | ArrayLike<number>,
  tol: { maxAbs: number; relL2: number },
  oursDims?: number[],
): Errors {
  const g = "data" in (gold as HostTensor) && "dims" in (gold as HostTensor) ? (gold as HostTensor) : null;
  if (g && oursDims) assert.deepEqual(oursDims, g.dims, `${name}: shape [${oursDims}] != golden [${g.dims}]`);
  const gd = (g ? g.data : gold) as ArrayLike<number>;
  const e = errors(ours, gd);
  assert.ok(
    e.maxAbs <= tol.maxAbs && e.relL2 <= tol.relL2,
    `${name}: max_abs ${e.maxAbs.toExponential(2)} (tol ${tol.maxAbs}), rel_l2 ${e.relL2.toExponential(2)} (tol ${tol.relL2})`,
  );
  return e;
}
