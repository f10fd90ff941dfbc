/**
 * Hostile and careless input, end to end through the command line: one row per kind of bad input the issue
 * "Hostile and careless input" found (resource bombs in flags and configs, invalid configs, weights that do not
 * fit their config, lax safetensors, unsafe shard indexes, special files, bad output paths). Every row must end
 * with exit code 1, exactly one stderr line `atedm: ...` naming the culprit, within 5 s on 2 cores, and leave
 * no file behind (neither in the working directory nor in the model or output folders).
 *
 * The rows run `main()` in-process (test/helpers/cli.ts); model folders are copies of the tiny-sd fixture in a
 * temp folder (weights linked, the file a row breaks rewritten), removed at the end.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors, writeSafetensors, type HostTensor } from "../src/io/safetensors.js";
import { atedmInProcess } from "./helpers/cli.js";
import { TINY_SD } from "./helpers/golden.js";

const tmp = mkdtempSync(join(tmpdir(), "atedm-hostile-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Everything below `dir`, with sizes and mtimes: a row must not change it. */
function listing(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).sort().map((p) => {
    const s = statSync(join(dir, p), { throwIfNoEntry: false });
    return `${p} ${s?.size ?? "?"} ${s?.mtimeMs ?? "?"}`;
  });
}

/** A copy of the tiny-sd fixture named `name`; `edit` changes it (files it does not touch stay symlinks). */
function model(name: string, edit: (dir: string) => void): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const entry of readdirSync(TINY_SD)) {
    if (entry === "golden") continue;
    const src = join(TINY_SD, entry);
    if (statSync(src).isDirectory()) {
      mkdirSync(join(dir, entry));
      for (const f of readdirSync(src)) symlinkSync(join(src, f), join(dir, entry, f));
    } else cpSync(src, join(dir, entry));
  }
  edit(dir);
  return dir;
}

/** Replace a symlinked file of a model copy by a real file with `content`. */
function put(dir: string, rel: string, content: string | Uint8Array): void {
  rmSync(join(dir, rel), { force: true });
  writeFileSync(join(dir, rel), content);
}

const json = (dir: string, rel: string) => JSON.parse(readFileSync(join(dir, rel), "utf8")) as Record<string, unknown>;
const unetConfig = (patch: Record<string, unknown>) => (dir: string) =>
  put(dir, "unet/config.json", JSON.stringify({ ...json(dir, "unet/config.json"), ...patch }));
const UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors";

/** Rewrite the U-Net weights of a model copy through `change`. */
const unetWeights = (change: (t: Map<string, HostTensor>) => void) => (dir: string) => {
  const tensors = readSafetensors(join(TINY_SD, UNET_WEIGHTS));
  change(tensors);
  rmSync(join(dir, UNET_WEIGHTS));
  writeSafetensors(join(dir, UNET_WEIGHTS), Object.fromEntries(tensors));
};

/** A small valid latents file for tiny-sd (1, 4, 8, 8), with optional metadata; `tail` appends raw bytes. */
function latentsFile(name: string, metadata?: Record<string, string>, tail?: Uint8Array): string {
  const path = join(tmp, name);
  writeSafetensors(path, { latents: { dims: [1, 4, 8, 8], data: new Float32Array(256) } }, metadata);
  if (tail) writeFileSync(path, Buffer.concat([readFileSync(path), tail]));
  return path;
}

const outDir = join(tmp, "out");
mkdirSync(outDir);
const gen = (modelDir: string, ...extra: string[]) => [
  "generate",
  "x",
  "--model",
  modelDir,
  "--steps",
  "1",
  "--out",
  join(outDir, "o.png"),
  ...extra,
];

interface Row {
  /** The bullet of the issue it covers. */
  what: string;
  args: () => string[];
  /** What the one stderr line must say (the culprit). */
  says: RegExp;
}

const rows: Row[] = [
  // Resource bombs.
  { what: "size flag far too large", args: () => gen(TINY_SD, "--height", "100000", "--width", "100000"), says: /--height must be/ },
  {
    what: "a size within the flags' limits whose memory the machine does not have",
    args: () => gen(TINY_SD, "--height", "4096", "--width", "4096", "--method", "atedm"),
    says: /--height 4096 --width 4096: this generation needs about [\d.]+ TiB of memory .*this machine has/,
  },
  {
    what: "layers_per_block 1e9 in a config",
    args: () => gen(model("lpb", unetConfig({ layers_per_block: 1e9 }))),
    says: /unet\/config\.json: layers_per_block = 1000000000 is invalid/,
  },
  {
    what: "flops --steps 1e8",
    args: () => ["flops", "--model", TINY_SD, "--steps", "1e8"],
    says: /--steps must be an integer in \[1, 1000\], got '1e8'/,
  },
  {
    what: "a 30 MB safetensors __metadata__ (a bad file that used to take 12 s and 1 GB)",
    args: () => gen(TINY_SD, "--latents", latentsFile("meta.safetensors", { pad: "x".repeat(30 << 20) }, new Uint8Array(4))),
    says: /meta\.safetensors: 4 trailing bytes after the tensor data/,
  },
  // Invalid configs.
  {
    what: "model_index.json = null",
    args: () => gen(model("mi-null", (d) => put(d, "model_index.json", "null"))),
    says: /model_index\.json: expected a JSON object, found null/,
  },
  {
    what: "block_out_channels negative",
    args: () => gen(model("boc-neg", unetConfig({ block_out_channels: [16, -24, 24, 24] }))),
    says: /block_out_channels\[1\] = -24 is invalid/,
  },
  {
    what: "block_out_channels 1e9",
    args: () => gen(model("boc-big", unetConfig({ block_out_channels: [1e9, 24, 24, 24] }))),
    says: /block_out_channels\[0\] = 1000000000 is invalid/,
  },
  {
    what: "flops on a config with negative channels (printed negative TFLOPs and exited 0)",
    args: () => ["flops", "--model", model("flops-neg", unetConfig({ block_out_channels: [-16, 24, 24, 24] }))],
    says: /block_out_channels\[0\] = -16 is invalid/,
  },
  {
    what: "a number given as a string",
    args: () => gen(model("str", unetConfig({ layers_per_block: "2" }))),
    says: /layers_per_block = "2" is invalid/,
  },
  {
    what: "an empty vocab.json",
    args: () => gen(model("vocab", (d) => put(d, "tokenizer/vocab.json", "{}"))),
    says: /tokenizer\/vocab\.json: .*empty/,
  },
  // Weights that do not fit their config.
  {
    what: "a transposed conv_in.weight",
    args: () =>
      gen(
        model(
          "conv-in",
          unetWeights((t) => {
            const w = t.get("conv_in.weight")!;
            t.set("conv_in.weight", { dims: [w.dims[1]!, w.dims[0]!, 3, 3], data: w.data });
          }),
        ),
      ),
    says: /diffusion_pytorch_model\.safetensors: conv_in\.weight has shape \[4, 16, 3, 3\], expected \[16, 4, 3, 3\]/,
  },
  {
    what: "a wrong cross_attention_dim",
    args: () => gen(model("cad", unetConfig({ cross_attention_dim: 64 }))),
    says: /attn2\.to_k\.weight has shape \[16, 32\], expected \[16, 64\]/,
  },
  // Shard indexes that leave the model folder.
  {
    what: "a shard index whose weight_map reads a file outside the model folder",
    args: () =>
      gen(
        model("shard", (d) => {
          rmSync(join(d, UNET_WEIGHTS));
          const names = Object.keys(
            JSON.parse(
              readFileSync(join(TINY_SD, UNET_WEIGHTS))
                .subarray(8, 8 + readFileSync(join(TINY_SD, UNET_WEIGHTS)).readUInt32LE(0))
                .toString("utf8"),
            ),
          );
          const weight_map = Object.fromEntries(names.filter((n) => n !== "__metadata__").map((n) => [n, "../../outside.safetensors"]));
          put(d, `${UNET_WEIGHTS}.index.json`, JSON.stringify({ weight_map }));
        }),
      ),
    says: /index\.json: weight_map entry '.*' names '\.\.\/\.\.\/outside\.safetensors', which leaves the index's folder/,
  },
  // Lax safetensors, special files.
  {
    what: "safetensors with trailing bytes",
    args: () => gen(TINY_SD, "--latents", latentsFile("trail.safetensors", undefined, new Uint8Array(3))),
    says: /trail\.safetensors: 3 trailing bytes/,
  },
  { what: "a directory given as a latents file", args: () => gen(TINY_SD, "--latents", outDir), says: /out: is a directory, not a regular file/ },
  {
    what: "a FIFO given as a latents file (used to block forever)",
    args: () => {
      const fifo = join(tmp, "fifo.safetensors");
      execFileSync("mkfifo", [fifo]);
      return gen(TINY_SD, "--latents", fifo);
    },
    says: /fifo\.safetensors: is a FIFO \(named pipe\), not a regular file/,
  },
  // Output paths.
  { what: "--out naming a directory", args: () => ["generate", "x", "--model", TINY_SD, "--out", outDir], says: /--out .*out: is a directory/ },
  { what: "--out= (empty)", args: () => ["generate", "x", "--model", TINY_SD, "--out="], says: /--out: the file name is empty/ },
];

for (const row of rows) {
  test(`bad input: ${row.what}`, async () => {
    const args = row.args();
    const before = listing(tmp);
    const t0 = performance.now();
    const r = await atedmInProcess(args);
    const seconds = (performance.now() - t0) / 1000;
    assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
    const lines = r.stderr.split("\n").filter((l) => l.length > 0);
    assert.equal(lines.length, 1, `one stderr line, got: ${r.stderr}`);
    assert.match(lines[0]!, /^atedm: /);
    assert.match(lines[0]!, row.says);
    assert.equal(r.stdout, "");
    assert.ok(seconds < 5, `${seconds.toFixed(2)} s`);
    assert.deepEqual(r.written, [], "nothing written in the working directory");
    assert.deepEqual(listing(tmp), before, "nothing written or changed in the model and output folders");
  });
}
