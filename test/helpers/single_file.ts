/**
 * The tiny fixture models as single-file checkpoints (original LDM/SGM layout), written by atedm's own
 * `toSingleFile` (test/single_file.test.ts checks it against diffusers' conversion scripts key by key and byte by byte).
 *
 *   const file = await fixtureSingleFile("sd");   // tiny-sd as one .safetensors, in a temp dir, once per process
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { componentConfig, componentWeights } from "../../src/io/diffusers.js";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { type Component, type ComponentConfigs, toSingleFile } from "../../src/io/single_file.js";
import { TINY_SD, TINY_SDXL } from "./golden.js";

/** The fixture folder, family and components of each tiny model. */
export const FIXTURE_SINGLE = {
  sd: { dir: TINY_SD, family: "sd1", components: ["unet", "vae", "text_encoder"] },
  sdxl: { dir: TINY_SDXL, family: "sdxl", components: ["unet", "vae", "text_encoder", "text_encoder_2"] },
} as const;

/** The diffusers configs of a fixture's components. */
export function fixtureConfigs(which: "sd" | "sdxl"): ComponentConfigs {
  const f = FIXTURE_SINGLE[which];
  return Object.fromEntries(f.components.map((c) => [c, componentConfig(f.dir, c)])) as unknown as ComponentConfigs;
}

/** The single-file state dict of a fixture folder (in memory). */
export function fixtureSingleFileTensors(which: "sd" | "sdxl"): ReturnType<typeof toSingleFile> {
  const f = FIXTURE_SINGLE[which];
  const stores = Object.fromEntries(f.components.map((c) => [c, componentWeights(f.dir, c)])) as Record<
    Component,
    ReturnType<typeof componentWeights>
  >;
  try {
    return toSingleFile(stores, f.family, fixtureConfigs(which));
  } finally {
    for (const s of Object.values(stores)) s.close();
  }
}

let dir: string | undefined;
const cache = new Map<string, Promise<string>>();

/** The path of tiny-sd / tiny-sdxl as a single `.safetensors` file, written once per process (atomically) and removed at exit. */
export function fixtureSingleFile(which: "sd" | "sdxl"): Promise<string> {
  let p = cache.get(which);
  if (!p) {
    p = (async () => {
      if (!dir) {
        const d = mkdtempSync(join(tmpdir(), "atedm-single-file-"));
        dir = d;
        process.once("exit", () => rmSync(d, { recursive: true, force: true }));
      }
      const path = join(dir, `tiny-${which}.safetensors`);
      writeSafetensors(path, fixtureSingleFileTensors(which));
      return path;
    })();
    cache.set(which, p);
  }
  return p;
}
