/**
 * Hostile and careless config files: every file of a diffusers folder that atedm reads is validated as it is read
 * (src/io/config_schema.ts). Each bad case below starts from a copy of the tiny-sd fixture, breaks one file, and
 * asserts a one-line AtedmError that names the file and the key, thrown fast (before: raw TypeErrors, "Invalid
 * typed array length", silently accepted strings, a V8 abort after a minute).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { AtedmError } from "../src/errors.js";
import { componentConfig, readJson, readModelIndex } from "../src/io/diffusers.js";
import { CLIPTextEncoder, resolveCLIPTextConfig } from "../src/models/clip_text.js";
import { CLIPTokenizer } from "../src/models/clip_tokenizer.js";
import { UNet2DConditionModel } from "../src/models/unet_model.js";
import { resolveUNetConfig } from "../src/models/unet_structure.js";
import { resolveVAEConfig, VAEDecoder } from "../src/models/vae.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { Runtime } from "../src/runtime/session.js";
import { createScheduler, loadSchedulerConfig, SCHEDULER_NAMES } from "../src/schedulers/index.js";
import { fixturesPresent, TINY_SD, TINY_SDXL } from "./helpers/golden.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const SHAPES = resolve(here, "../models/shapes");
/** Each case must fail in well under a second; the assertion leaves room for a loaded machine. */
const FAST_MS = 5000;

const rt = new Runtime({ threads: 1 });
const temps: string[] = [];
after(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** A temp copy of a model folder: JSON and text files copied, weights symlinked, golden/ left out. */
function copyModel(src: string): string {
  const dir = mkdtempSync(join(tmpdir(), "atedm-configs-"));
  temps.push(dir);
  const walk = (from: string, to: string): void => {
    for (const name of readdirSync(from)) {
      if (name === "golden") continue;
      const f = join(from, name);
      const t = join(to, name);
      if (statSync(f).isDirectory()) {
        mkdirSync(t);
        walk(f, t);
      } else if (name.endsWith(".safetensors")) symlinkSync(f, t);
      else writeFileSync(t, readFileSync(f));
    }
  };
  walk(src, dir);
  return dir;
}

type Json = Record<string, unknown>;
/** Replace a JSON file by `f(parsed)`. */
const json = (f: (o: Json) => unknown) => (text: string) => JSON.stringify(f(JSON.parse(text) as Json));
/** Set (or, with undefined, delete) one key of a JSON object file. */
const set = (key: string, value: unknown) =>
  json((o) => {
    const out = { ...o, [key]: value };
    if (value === undefined) delete out[key];
    return out;
  });
const replaceWith = (text: string) => () => text;

type Loader = (dir: string) => unknown;
const LOAD: Record<string, Loader> = {
  "model_index.json": (dir) => readModelIndex(dir),
  "unet/config.json": (dir) => UNet2DConditionModel.load(dir, rt),
  "vae/config.json": (dir) => VAEDecoder.load(dir, rt),
  "text_encoder/config.json": (dir) => CLIPTextEncoder.load(dir, "text_encoder", rt),
  "tokenizer/vocab.json": (dir) => CLIPTokenizer.fromPretrained(join(dir, "tokenizer")),
  "tokenizer/merges.txt": (dir) => CLIPTokenizer.fromPretrained(join(dir, "tokenizer")),
  "tokenizer/tokenizer_config.json": (dir) => CLIPTokenizer.fromPretrained(join(dir, "tokenizer")),
  "tokenizer/special_tokens_map.json": (dir) => CLIPTokenizer.fromPretrained(join(dir, "tokenizer")),
  "scheduler/scheduler_config.json": (dir) => createScheduler("euler", loadSchedulerConfig(join(dir, "scheduler", "scheduler_config.json"))),
};

interface BadCase {
  name: string;
  /** The file that is broken (relative to the model folder); its loader is `LOAD[file]`. */
  file: string;
  /** What the message must name besides the file: the key (or `line N`); null when the file itself is wrong. */
  key: string | null;
  /** Further text the message must contain (the value found or what is expected). */
  says: string[];
  write: (original: string) => string;
  /** Instead of writing text: put something else at the path (it has been removed). */
  make?: (path: string) => void;
}

export const BAD_CASES: BadCase[] = [
  // model_index.json
  {
    name: "model_index.json = null",
    file: "model_index.json",
    key: null,
    says: ["expected a JSON object", "found null"],
    write: replaceWith("null"),
  },
  { name: "model_index.json = []", file: "model_index.json", key: null, says: ["found an array"], write: replaceWith("[]") },
  { name: 'model_index.json = "unet"', file: "model_index.json", key: null, says: ["found a string"], write: replaceWith('"unet"') },
  {
    name: "model_index.json without _class_name",
    file: "model_index.json",
    key: "_class_name",
    says: ["missing"],
    write: set("_class_name", undefined),
  },
  { name: "model_index.json _class_name 5", file: "model_index.json", key: "_class_name", says: ["= 5"], write: set("_class_name", 5) },
  {
    name: "model_index.json unet [diffusers]",
    file: "model_index.json",
    key: "unet",
    says: ['["diffusers"]', "[library, class]"],
    write: set("unet", ["diffusers"]),
  },
  {
    name: "model_index.json vae [diffusers, null]",
    file: "model_index.json",
    key: "vae",
    says: ["[null, null]"],
    write: set("vae", ["diffusers", null]),
  },
  {
    name: "model_index.json text_encoder a string",
    file: "model_index.json",
    key: "text_encoder",
    says: ['"transformers"'],
    write: set("text_encoder", "transformers"),
  },
  {
    name: "model_index.json safety_checker [1, 2]",
    file: "model_index.json",
    key: "safety_checker",
    says: ["[1,2]"],
    write: set("safety_checker", [1, 2]),
  },
  { name: "model_index.json invalid JSON", file: "model_index.json", key: null, says: ["invalid JSON"], write: replaceWith('{"_class_name": ') },
  // unet/config.json
  {
    name: "unet config.json is not a regular file (/dev/null)",
    file: "unet/config.json",
    key: null,
    says: ["not a file"],
    write: replaceWith(""),
    make: (path) => symlinkSync("/dev/null", path),
  },
  { name: "unet config = null", file: "unet/config.json", key: null, says: ["found null"], write: replaceWith("null") },
  {
    name: "unet block_out_channels negative",
    file: "unet/config.json",
    key: "block_out_channels[1]",
    says: ["-24", "1..16384"],
    write: set("block_out_channels", [16, -24, 24, 24]),
  },
  {
    name: "unet block_out_channels 1e9",
    file: "unet/config.json",
    key: "block_out_channels[0]",
    says: ["1000000000", "1..16384"],
    write: set("block_out_channels", [1e9, 24, 24, 24]),
  },
  {
    name: 'unet block_out_channels "320"',
    file: "unet/config.json",
    key: "block_out_channels",
    says: ['"320"', "list"],
    write: set("block_out_channels", "320"),
  },
  {
    name: 'unet block_out_channels ["16", ...]',
    file: "unet/config.json",
    key: "block_out_channels[0]",
    says: ['"16"'],
    write: set("block_out_channels", ["16", 24, 24, 24]),
  },
  {
    name: "unet block_out_channels []",
    file: "unet/config.json",
    key: "block_out_channels",
    says: ["[]", "1..8"],
    write: set("block_out_channels", []),
  },
  {
    name: "unet block_out_channels 9 levels",
    file: "unet/config.json",
    key: "block_out_channels",
    says: ["1..8"],
    write: set("block_out_channels", new Array(9).fill(16)),
  },
  {
    name: "unet layers_per_block 1e9",
    file: "unet/config.json",
    key: "layers_per_block",
    says: ["1000000000", "1..16"],
    write: set("layers_per_block", 1e9),
  },
  { name: "unet layers_per_block 0", file: "unet/config.json", key: "layers_per_block", says: ["= 0", "1..16"], write: set("layers_per_block", 0) },
  {
    name: "unet layers_per_block 1.5",
    file: "unet/config.json",
    key: "layers_per_block",
    says: ["1.5", "integer"],
    write: set("layers_per_block", 1.5),
  },
  {
    name: 'unet layers_per_block "2"',
    file: "unet/config.json",
    key: "layers_per_block",
    says: ['"2"', "integer"],
    write: set("layers_per_block", "2"),
  },
  { name: 'unet in_channels "4"', file: "unet/config.json", key: "in_channels", says: ['"4"', "1..64"], write: set("in_channels", "4") },
  {
    name: "unet transformer_layers_per_block 1e9",
    file: "unet/config.json",
    key: "transformer_layers_per_block",
    says: ["1..64"],
    write: set("transformer_layers_per_block", 1e9),
  },
  { name: "unet attention_head_dim 0", file: "unet/config.json", key: "attention_head_dim", says: ["1..256"], write: set("attention_head_dim", 0) },
  {
    name: "unet heads not dividing channels",
    file: "unet/config.json",
    key: "attention_head_dim",
    says: ["= 5", "not 5 of level 0's 16"],
    write: set("attention_head_dim", 5),
  },
  {
    name: "unet norm_num_groups not dividing channels",
    file: "unet/config.json",
    key: "norm_num_groups",
    says: ["= 5", "block_out_channels[0] = 16"],
    write: set("norm_num_groups", 5),
  },
  {
    name: "unet cross_attention_dim 1e9",
    file: "unet/config.json",
    key: "cross_attention_dim",
    says: ["1..16384"],
    write: set("cross_attention_dim", 1e9),
  },
  { name: "unet sample_size -64", file: "unet/config.json", key: "sample_size", says: ["1..1024"], write: set("sample_size", -64) },
  { name: "unet norm_eps 0", file: "unet/config.json", key: "norm_eps", says: ["(0, 1]"], write: set("norm_eps", 0) },
  {
    name: 'unet upcast_attention "false"',
    file: "unet/config.json",
    key: "upcast_attention",
    says: ["true or false"],
    write: set("upcast_attention", "false"),
  },
  // vae/config.json
  {
    name: "vae block_out_channels 1e9",
    file: "vae/config.json",
    key: "block_out_channels[3]",
    says: ["1..16384"],
    write: set("block_out_channels", [8, 16, 16, 1e9]),
  },
  { name: 'vae latent_channels "4"', file: "vae/config.json", key: "latent_channels", says: ['"4"'], write: set("latent_channels", "4") },
  { name: "vae layers_per_block 1e9", file: "vae/config.json", key: "layers_per_block", says: ["1..16"], write: set("layers_per_block", 1e9) },
  {
    name: 'vae scaling_factor "0.18215"',
    file: "vae/config.json",
    key: "scaling_factor",
    says: ['"0.18215"'],
    write: set("scaling_factor", "0.18215"),
  },
  {
    name: "vae norm_num_groups not dividing channels",
    file: "vae/config.json",
    key: "block_out_channels",
    says: ["divisible"],
    write: set("norm_num_groups", 3),
  },
  // text_encoder/config.json
  { name: "text_encoder = []", file: "text_encoder/config.json", key: null, says: ["found an array"], write: replaceWith("[]") },
  {
    name: "text_encoder num_hidden_layers 1e9",
    file: "text_encoder/config.json",
    key: "num_hidden_layers",
    says: ["1..128"],
    write: set("num_hidden_layers", 1e9),
  },
  { name: 'text_encoder vocab_size "708"', file: "text_encoder/config.json", key: "vocab_size", says: ['"708"'], write: set("vocab_size", "708") },
  {
    name: "text_encoder max_position_embeddings 1e9",
    file: "text_encoder/config.json",
    key: "max_position_embeddings",
    says: ["1..4096"],
    write: set("max_position_embeddings", 1e9),
  },
  // tokenizer files
  { name: "empty vocab.json {}", file: "tokenizer/vocab.json", key: null, says: ["vocabulary is empty"], write: replaceWith("{}") },
  { name: "empty vocab.json (0 bytes)", file: "tokenizer/vocab.json", key: null, says: ["invalid JSON"], write: replaceWith("") },
  { name: "vocab.json = []", file: "tokenizer/vocab.json", key: null, says: ["found an array"], write: replaceWith("[]") },
  { name: "vocab.json non-integer id", file: "tokenizer/vocab.json", key: '"a</w>"', says: ["1.5", "token id"], write: set("a</w>", 1.5) },
  { name: 'vocab.json id "5"', file: "tokenizer/vocab.json", key: '"a</w>"', says: ['"5"'], write: set("a</w>", "5") },
  { name: "vocab.json negative id", file: "tokenizer/vocab.json", key: '"a</w>"', says: ["-1"], write: set("a</w>", -1) },
  { name: "vocab.json id for constructor", file: "tokenizer/vocab.json", key: "constructor", says: ['"x"'], write: set("constructor", "x") },
  {
    name: "merges.txt malformed line",
    file: "tokenizer/merges.txt",
    key: "line 3",
    says: ['"a b c"', "two symbols"],
    write: (t) => {
      const lines = t.split("\n");
      lines.splice(2, 0, "a b c");
      return lines.join("\n");
    },
  },
  {
    name: "merges.txt single symbol line",
    file: "tokenizer/merges.txt",
    key: "line 2",
    says: ['"ab"'],
    write: (t) => t.replace(/\n[^\n]*\n/, "\nab\n"),
  },
  {
    name: 'tokenizer_config model_max_length "77"',
    file: "tokenizer/tokenizer_config.json",
    key: "model_max_length",
    says: ['"77"'],
    write: set("model_max_length", "77"),
  },
  {
    name: "tokenizer_config model_max_length 1e6",
    file: "tokenizer/tokenizer_config.json",
    key: "model_max_length",
    says: ["2..4096"],
    write: set("model_max_length", 1e6),
  },
  {
    name: "tokenizer_config bos_token 5",
    file: "tokenizer/tokenizer_config.json",
    key: "bos_token",
    says: ["AddedToken"],
    write: set("bos_token", 5),
  },
  {
    name: 'special_tokens_map = "oops"',
    file: "tokenizer/special_tokens_map.json",
    key: null,
    says: ["found a string"],
    write: replaceWith('"oops"'),
  },
  { name: "special_tokens_map pad_token {}", file: "tokenizer/special_tokens_map.json", key: "pad_token", says: ["{}"], write: set("pad_token", {}) },
  // scheduler/scheduler_config.json
  {
    name: 'scheduler beta_start "0.1"',
    file: "scheduler/scheduler_config.json",
    key: "beta_start",
    says: ['"0.1"', "(0, 1)"],
    write: set("beta_start", "0.1"),
  },
  {
    name: "scheduler num_train_timesteps -5",
    file: "scheduler/scheduler_config.json",
    key: "num_train_timesteps",
    says: ["-5", "2..100000"],
    write: set("num_train_timesteps", -5),
  },
  {
    name: "scheduler num_train_timesteps 1e9",
    file: "scheduler/scheduler_config.json",
    key: "num_train_timesteps",
    says: ["2..100000"],
    write: set("num_train_timesteps", 1e9),
  },
  { name: "scheduler beta_end 1.5", file: "scheduler/scheduler_config.json", key: "beta_end", says: ["1.5"], write: set("beta_end", 1.5) },
  {
    name: "scheduler steps_offset 5000",
    file: "scheduler/scheduler_config.json",
    key: "steps_offset",
    says: ["below num_train_timesteps"],
    write: set("steps_offset", 5000),
  },
  {
    name: "scheduler trained_betas wrong length",
    file: "scheduler/scheduler_config.json",
    key: "trained_betas",
    says: ["one beta per training timestep"],
    write: set("trained_betas", [0.1, 0.2]),
  },
  { name: "scheduler config = null", file: "scheduler/scheduler_config.json", key: null, says: ["found null"], write: replaceWith("null") },
];

/** Run `load`, expecting an AtedmError; return it and the milliseconds it took. */
async function failure(load: () => unknown): Promise<{ error: unknown; ms: number }> {
  const t0 = performance.now();
  try {
    await load();
  } catch (error) {
    return { error, ms: performance.now() - t0 };
  }
  return { error: null, ms: performance.now() - t0 };
}

function assertOneLine(error: unknown, file: string, c: Pick<BadCase, "key" | "says" | "name">): string {
  assert.ok(error instanceof AtedmError, `${c.name}: expected an AtedmError, got ${error === null ? "no error" : String(error)}`);
  const m = error.message;
  assert.ok(!m.includes("\n"), `${c.name}: message is one line: ${m}`);
  assert.ok(m.startsWith(`${file}: `), `${c.name}: message names ${file}: ${m}`);
  if (c.key !== null) assert.ok(m.includes(c.key), `${c.name}: message names the key ${c.key}: ${m}`);
  for (const s of c.says) assert.ok(m.includes(s), `${c.name}: message says ${JSON.stringify(s)}: ${m}`);
  return m;
}

describe("bad config files fail fast with one line naming the file and the key", { skip: !fixturesPresent() && "fixtures missing" }, () => {
  const timings: Array<[string, number]> = [];

  test("the unmodified copy of tiny-sd passes every loader", async () => {
    const dir = copyModel(TINY_SD);
    for (const [file, load] of Object.entries(LOAD)) {
      const { error } = await failure(() => load(dir));
      assert.equal(error, null, `${file}: ${String(error)}`);
    }
  });

  for (const c of BAD_CASES) {
    test(c.name, async (t) => {
      const dir = copyModel(TINY_SD);
      const path = join(dir, c.file);
      if (c.make) {
        rmSync(path);
        c.make(path);
      } else writeFileSync(path, c.write(readFileSync(path, "utf8")));
      const { error, ms } = await failure(() => LOAD[c.file]!(dir));
      const m = assertOneLine(error, path, c);
      timings.push([c.name, ms]);
      t.diagnostic(`${ms.toFixed(1)} ms: ${m.slice(dir.length)}`);
      assert.ok(ms < FAST_MS, `${c.name}: failed after ${ms.toFixed(0)} ms`);
    });
  }

  test("loadPipeline reports the same errors (the first file read wins)", async () => {
    const picks = ["model_index.json = null", "unet layers_per_block 1e9", "empty vocab.json {}", 'scheduler beta_start "0.1"'];
    for (const name of picks) {
      const c = BAD_CASES.find((x) => x.name === name)!;
      const dir = copyModel(TINY_SD);
      const path = join(dir, c.file);
      writeFileSync(path, c.write(readFileSync(path, "utf8")));
      const { error, ms } = await failure(() => loadPipeline(dir, { threads: 1 }));
      assertOneLine(error, path, c);
      assert.ok(ms < FAST_MS, `${name}: loadPipeline failed after ${ms.toFixed(0)} ms`);
    }
  });

  test("timing summary", (t) => {
    const worst = timings.reduce((a, b) => (b[1] > a[1] ? b : a), ["", 0] as [string, number]);
    t.diagnostic(`${timings.length} cases, worst ${worst[1].toFixed(1)} ms (${worst[0]})`);
    assert.equal(timings.length, BAD_CASES.length);
  });
});

describe("scheduler configs given as objects", () => {
  test("are held to the same limits; a config read from a file names the file", () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ beta_start: "0.1" }, /^scheduler config: beta_start = "0\.1" is not valid for EulerDiscreteScheduler \(expected a number in \(0, 1\)\)$/],
      [{ num_train_timesteps: 1e9 }, /^scheduler config: num_train_timesteps = 1000000000 is not valid .*2\.\.100000/],
      [{ steps_offset: 1000 }, /^scheduler config: steps_offset = 1000 is not valid .*below num_train_timesteps = 1000/],
    ];
    for (const [raw, re] of cases) {
      for (const name of SCHEDULER_NAMES)
        assert.throws(
          () => createScheduler(name, raw),
          (e: unknown) => e instanceof AtedmError && re.test(e.message.replace(/for \w+Scheduler /, "for EulerDiscreteScheduler ")),
        );
    }
    const file = join(SHAPES, "scheduler", "scheduler_config.json");
    const loaded = loadSchedulerConfig(file);
    loaded.solver_order = 1e9;
    assert.throws(
      () => createScheduler("dpm++2m", loaded),
      (e: unknown) =>
        e instanceof AtedmError && e.message.startsWith(`${file}: solver_order = 1000000000 is not valid for DPMSolverMultistepScheduler`),
    );
  });
});

describe("real configs pass the limits", () => {
  test("SD-1.5, SD-2.1 and SD-XL U-Net configs (test/configs)", () => {
    for (const name of ["sd15", "sd21", "sdxl"]) {
      const file = join(here, "configs", `${name}-unet.json`);
      const cfg = resolveUNetConfig(readJson(file), file);
      assert.ok(cfg.block_out_channels.length >= 3, name);
    }
  });

  test("the embedded shapes model (every file atedm reads)", () => {
    const index = readModelIndex(SHAPES);
    assert.equal(index._class_name, "StableDiffusionPipeline");
    resolveUNetConfig(componentConfig(SHAPES, "unet"));
    resolveCLIPTextConfig(componentConfig(SHAPES, "text_encoder"));
    assert.equal(CLIPTokenizer.fromPretrained(join(SHAPES, "tokenizer")).modelMaxLength, 16);
    const sched = loadSchedulerConfig(join(SHAPES, "scheduler", "scheduler_config.json"));
    for (const name of SCHEDULER_NAMES) createScheduler(name, sched);
  });

  test("the tiny-sd and tiny-sdxl fixtures (every file atedm reads)", { skip: !fixturesPresent() && "fixtures missing" }, () => {
    for (const dir of [TINY_SD, TINY_SDXL]) {
      readModelIndex(dir);
      resolveUNetConfig(componentConfig(dir, "unet"));
      resolveVAEConfig(componentConfig(dir, "vae"));
      for (const c of ["text_encoder", "text_encoder_2"])
        if (dir === TINY_SDXL || c === "text_encoder") resolveCLIPTextConfig(componentConfig(dir, c));
      for (const c of ["tokenizer", "tokenizer_2"]) if (dir === TINY_SDXL || c === "tokenizer") CLIPTokenizer.fromPretrained(join(dir, c));
      const sched = loadSchedulerConfig(join(dir, "scheduler", "scheduler_config.json"));
      for (const name of SCHEDULER_NAMES) createScheduler(name, sched);
    }
  });

  test("a CLIP-sized vocabulary (49408 tokens) and transformers' model_max_length 1e30 are accepted, quickly", () => {
    const dir = mkdtempSync(join(tmpdir(), "atedm-configs-vocab-"));
    temps.push(dir);
    const vocab: Record<string, number> = {};
    for (let i = 0; i < 49408; i++) vocab[`t${i}`] = i;
    vocab["<|startoftext|>"] = 49406;
    vocab["<|endoftext|>"] = 49407;
    writeFileSync(join(dir, "vocab.json"), JSON.stringify(vocab));
    writeFileSync(join(dir, "merges.txt"), "#version: 0.2\nt 0\n");
    writeFileSync(join(dir, "tokenizer_config.json"), '{"model_max_length": 1000000000000000019884624838656}');
    const t0 = performance.now();
    const tok = CLIPTokenizer.fromPretrained(dir);
    assert.ok(performance.now() - t0 < 1000, `${(performance.now() - t0).toFixed(0)} ms`);
    assert.equal(tok.modelMaxLength, 77);
  });
});

describe("readJson: a JSON file that must hold an object", () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-configs-json-"));
  temps.push(dir);
  const cases: Array<[string, string, string]> = [
    ["null", "null", "found null"],
    ["array", "[1, 2]", "found an array"],
    ["string", '"config"', 'found a string ("config")'],
    ["number", "42", "found a number (42)"],
    ["invalid", '{"a": 1,\n}', "invalid JSON"],
  ];
  for (const [name, text, says] of cases) {
    test(`${name} is one line naming the file`, () => {
      const file = join(dir, `${name}.json`);
      writeFileSync(file, text);
      assert.throws(
        () => readJson(file),
        (e: unknown) => e instanceof AtedmError && e.message.startsWith(`${file}: `) && e.message.includes(says) && !e.message.includes("\n"),
      );
    });
  }
  test("a directory or a missing file is one line too", () => {
    assert.throws(
      () => readJson(dir),
      (e: unknown) => e instanceof AtedmError && e.message.startsWith(`${dir}: `) && !e.message.includes("\n"),
    );
    assert.throws(() => readJson(join(dir, "nope.json")), /nope\.json: file not found/);
  });
});
