/**
 * The `atedm` command line as a user runs it: generate with --latents reproduces diffusers' pipeline, --json
 * (every setting the image was made with) and --save-latents / --save-masks outputs, flops totals, export-shapes
 * output, eval-alignment's per-prompt report, one-line errors for bad input (output paths and numeric limits
 * checked before any model loads, nothing left behind), --progress without carriage returns, --version, and
 * --help that documents every flag a command parses.
 *
 * Each command runs once as a real process (`atedmSpawn`: the entry path, exit code and stdout/stderr of a
 * process); every other case calls `main(argv)` in this process (`atedmInProcess`), which is much faster.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { pruningFlags } from "../src/cli/pruning_flags.js";
import { ATEDM_GRAPH_DEFAULTS } from "../src/pruning/atedm.js";
import { AtedmError } from "../src/errors.js";
import { writePng } from "../src/io/png.js";
import { readSafetensors, writeSafetensors } from "../src/io/safetensors.js";
import { generateDataset } from "../src/shapes/export.js";
import { atedmInProcess, atedmSpawn, type CliResult } from "./helpers/cli.js";
import { assertClose, golden, tensorOf, TINY_SD, TINY_SDXL, TOL } from "./helpers/golden.js";

const here = dirname(fileURLToPath(import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "atedm-cli-"));
const VERSION = (JSON.parse(readFileSync(join(here, "..", "package.json"), "utf8")) as { version: string }).version;

/** What atedmInProcess patches while main() runs, as it was (not process.exitCode: node:test sets it when a test fails; not
 * ORT_DISABLE_TELEMETRY, which the Runtime sets for the whole process). */
const processState = () => [
  process.cwd(),
  process.stdout.write,
  process.stderr.write,
  process.env.ATEDM_DEBUG,
  Object.getOwnPropertyDescriptor(process.stdout, "isTTY"),
  Object.getOwnPropertyDescriptor(process.stderr, "isTTY"),
];
const before = processState();

const COMMANDS = ["generate", "flops", "eval", "report", "recovery-error", "eval-alignment", "export-shapes", "worker"] as const;
/** The pruning flags each command parses: all of them, or (eval) all but --method and --ratio, which its --methods list replaces. */
const PRUNING_FLAGS_OF: Partial<Record<(typeof COMMANDS)[number], string[]>> = {
  generate: Object.keys(pruningFlags),
  flops: Object.keys(pruningFlags),
  "eval-alignment": Object.keys(pruningFlags),
  eval: Object.keys(pruningFlags).filter((f) => f !== "method" && f !== "ratio"),
};
const unetConfig = (name: string) => join(here, "configs", `${name}-unet.json`);

const generateArgs = (model: string, guidance: string) => {
  const name = model.split("/").pop();
  const out = join(tmp, `${name}.png`);
  const lat = join(tmp, `${name}-latents.safetensors`);
  const args = [
    "generate",
    "a photograph of an astronaut riding a horse on the moon",
    "--model",
    model,
    "--negative",
    "blurry, low quality, watermark",
    "--steps",
    "4",
    "--guidance",
    guidance,
    "--latents",
    join(model, "golden", "pipeline_s4.safetensors"),
    "--out",
    out,
    "--save-latents",
    lat,
    "--json",
    "--threads",
    "2",
  ];
  return { name, out, lat, args };
};
const flopsArgs = (name: string, h: number) => ["flops", "--unet-config", unetConfig(name), "--height", String(h), "--width", String(h), "--json"];
const prompts = join(tmp, "prompts.txt");
const PROMPTS = ["a large red circle at the left on a white background", "a small blue square at the top right on a black background"];
writeFileSync(prompts, `${PROMPTS.join("\n")}\n`);
// Latents of the wrong shape for the embedded shapes model ([1, 3, 32, 32]): generate loads it, then fails.
const wrongLatents = join(tmp, "wrong-latents.safetensors");
writeSafetensors(wrongLatents, { latents: { dims: [1, 3, 8, 8], data: new Float32Array(192) } });

// The one real process per command starts now and runs while the in-process tests do; its test awaits it.
const processes = {
  generate: atedmSpawn(...generateArgs(TINY_SD, "7.5").args),
  flops: atedmSpawn(...flopsArgs("sd15", 512)),
  evalAlignment: atedmSpawn("eval-alignment", "--prompts", prompts, "--steps", "1", "--seeds", "2", "--threads", "1", "--json", "--progress"),
  exportShapes: atedmSpawn("export-shapes", "--out", join(tmp, "shapes"), "--count", "3", "--seed", "7", "--two-object-fraction", "0.5"),
  // Loads the embedded shapes model into ONNX Runtime, and only then finds the latents of the wrong shape.
  failingGenerate: atedmSpawn("generate", "x", "--latents", wrongLatents, "--threads", "1", "--out", join(tmp, "never.png")),
};
after(async () => {
  await Promise.all(Object.values(processes));
  rmSync(tmp, { recursive: true, force: true });
});

/** A failure a user caused: exit code 1, nothing on stdout, one line `atedm: ...` on stderr matching `pattern`. */
function assertOneLineError(r: CliResult, pattern: RegExp, what: string): void {
  assert.equal(r.code, 1, `exit code 1 for ${what}: ${r.stderr}`);
  assert.equal(r.stdout, "", `nothing on stdout for ${what}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line for ${what}: ${r.stderr}`);
  assert.match(lines[0]!, /^atedm: /);
  assert.match(lines[0]!, pattern);
}

/** The flags an option table of a help text documents: the `--name`s before the description column of lines `  --...`. */
function documentedFlags(help: string): Set<string> {
  const flags = new Set<string>();
  for (const line of help.split("\n")) {
    const head = /^ +(--\S.*?)(?: {2,}|$)/.exec(line)?.[1];
    for (const m of head?.matchAll(/--([a-z][\w-]*)/g) ?? []) flags.add(m[1]!);
  }
  return flags;
}

for (const [model, guidance, spawned] of [
  [TINY_SDXL, "5.0", false],
  [TINY_SD, "7.5", true],
] as const) {
  const { name, out, lat, args } = generateArgs(model, guidance);
  test(`generate --latents on ${name} reproduces diffusers' pipeline (4 steps${spawned ? ", own process" : ""})`, async () => {
    const r = spawned ? await processes.generate : await atedmInProcess(args);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", "--json: nothing on stderr (no progress bar)");
    if ("written" in r) assert.deepEqual(r.written, [], "writes only the files it was given");
    const j = JSON.parse(r.stdout);
    for (const k of ["model", "steps", "seconds_total", "seconds_per_step", "unet_tflops_per_step", "output"]) assert.ok(k in j, `--json has ${k}`);
    // what was run: every setting, the defaults filled in, and the version of atedm
    assert.equal(j.atedm_version, VERSION);
    assert.equal(j.prompt, "a photograph of an astronaut riding a horse on the moon");
    assert.equal(j.negative_prompt, "blurry, low quality, watermark");
    assert.equal(j.seed, null, "--latents given: no seed was used");
    assert.equal(j.latents, join(model, "golden", "pipeline_s4.safetensors"));
    assert.equal(j.guidance, Number(guidance));
    assert.equal(j.scheduler, "euler");
    assert.equal(j.model, model);
    assert.equal(j.threads, 2);
    assert.ok(Number.isInteger(j.height) && j.height > 0 && Number.isInteger(j.width) && j.width > 0);
    assert.equal(j.method, "none");
    assert.deepEqual(j.method_options, {});
    assert.equal(j.steps, 4);
    assert.equal(j.output.image, out);
    assert.equal(j.output.latents, lat);
    assert.ok(readFileSync(out).subarray(1, 4).toString() === "PNG");
    const ours = readSafetensors(lat).get("latents")!;
    assertClose(
      "output.latents",
      ours.data as Float32Array,
      tensorOf(golden(model, "pipeline_s4.safetensors"), "output.latents"),
      TOL.pipeline,
      ours.dims,
    );
  });
}

test("generate --method atedm --save-masks writes kept-token and score images per step and block", async () => {
  // Relative paths: they land in atedmInProcess's fresh current directory, so `written` is all it wrote.
  const r = await atedmInProcess([
    "generate",
    "a cabin",
    "--model",
    TINY_SDXL,
    "--steps",
    "2",
    "--height",
    "64",
    "--width",
    "64",
    "--method",
    "atedm",
    "--ratio",
    "0.5",
    "--schedule",
    "none",
    "--save-masks",
    "masks",
    "--out",
    "m.png",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.method, "atedm");
  assert.equal(j.ratio, 0.5);
  // Every option the method ran with, the unset ones from the default preset.
  assert.deepEqual(j.method_options, { schedule: "none", preset: "default", ...ATEDM_GRAPH_DEFAULTS, seed: 0 });
  assert.deepEqual([j.prompt, j.seed, j.steps, j.height, j.width, j.scheduler, j.guidance], ["a cabin", 0, 2, 64, 64, "euler", 5]);
  assert.ok(j.flops_saving > 0 && j.flops_saving < 1);
  assert.deepEqual(j.output, { image: "m.png", masks: "masks" });
  assert.ok(r.written.includes("m.png"));
  assert.deepEqual(
    r.written.filter((f) => f !== "m.png" && f !== "masks" && !f.startsWith(join("masks", ""))),
    [],
    "nothing else written",
  );
  const files = r.written.filter((f) => f.startsWith(join("masks", ""))).map((f) => f.slice("masks".length + 1));
  // tiny-sdxl has 6 attention blocks (2 down, 1 mid, 3... see attentionBlocks); 2 steps, 2 images each.
  assert.ok(files.some((f) => f.startsWith("step000_") && f.endsWith("_kept.png")));
  assert.ok(files.some((f) => f.startsWith("step001_") && f.endsWith("_score.png")));
  assert.equal(files.filter((f) => f.endsWith("_kept.png")).length, files.filter((f) => f.endsWith("_score.png")).length);
});

test("flops reproduces the SPEC reference totals and the SD-XL saving at ratio 0.63", async () => {
  for (const [name, h, total] of [
    ["sd15", 512, 0.803],
    ["sd21", 768, 2.149],
    ["sdxl", 1024, 6.761],
  ] as const) {
    const r = name === "sd15" ? await processes.flops : await atedmInProcess(flopsArgs(name, h)); // the one flops run in its own process
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "", `${name}: nothing on stderr`);
    const j = JSON.parse(r.stdout);
    assert.ok(Math.abs(j.unet_tflops / total - 1) < 1e-3, `${name}: ${j.unet_tflops} vs ${total}`);
  }
  const r = await atedmInProcess([
    "flops",
    "--unet-config",
    unetConfig("sdxl"),
    "--height",
    "1024",
    "--width",
    "1024",
    "--method",
    "atedm",
    "--ratio",
    "0.63",
    "--schedule",
    "none",
    "--json",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(j.unet_tflops_pruned < j.unet_tflops && j.flops_saving > 0.3 && j.flops_saving < 0.5, JSON.stringify(j.flops_saving));
});

test("bad input ends in one line naming the problem, exit code 1, no stack trace, no file written", async () => {
  const bad = join(tmp, "bad.safetensors");
  writeFileSync(bad, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 123]));
  const badJson = join(tmp, "bad.json");
  writeFileSync(badJson, '{"sample_size": ');
  const badPrompts = join(tmp, "bad-prompts.txt");
  writeFileSync(badPrompts, "a large red circle at the left on a white background\na purple elephant\n");
  const sd15 = unetConfig("sd15");
  // Relative --out paths land in the fresh current directory of atedmInProcess: a failing command must not create them.
  const cases: Array<[string[], RegExp]> = [
    [["generate", "x", "--model", join(tmp, "nope")], /nope: no such file or folder/],
    [["generate", "x", "--model", TINY_SD, "--steps", "zero"], /--steps must be an integer/],
    [["generate", "x", "--model", TINY_SD, "--seed", "4294967296"], /--seed must be an integer in \[0, 4294967295\], got '4294967296'/],
    [["generate", "x", "--model", TINY_SD, "--scheduler", "kdpm2"], /--scheduler must be one of/],
    [["generate", "x", "--model", TINY_SD, "--bogus"], /Unknown option '--bogus'/],
    [["generate", "x", "--model", TINY_SD, "--height", "100"], /--height must be a positive multiple of 8/],
    [["generate", "x", "--model", TINY_SD, "--method", "atedm", "--ratio", "1.5"], /--ratio must be in \[0, 1\)/],
    [["generate", "x", "--model", TINY_SD, "--latents", bad], /bad\.safetensors: (corrupt|safetensors header)/],
    [["flops"], /give --model PATH or --unet-config FILE/],
    [["flops", "--unet-config", join(tmp, "missing.json")], /missing\.json: file not found/],
    [["flops", "--unet-config", badJson], /bad\.json: invalid JSON/],
    [["flops", "--unet-config", sd15, "--height", "100"], /--height must be a positive multiple of 8 up to 4096, got '100'/],
    [["flops", "--unet-config", sd15, "--ratio", "0.5"], /--ratio needs --method atedm or tome/],
    [["flops", "--unet-config", sd15, "--method", "tome", "--tome-merge", "attn,ffn"], /--tome-merge: unknown sub-layer 'ffn'/],
    [["flops", "--unet-config", sd15, "--hieght", "512"], /flops: Unknown option '--hieght'.* \(see 'atedm flops --help'\)$/],
    [["eval-alignment"], /--prompts FILE is required/],
    [["eval-alignment", "--prompts", join(tmp, "missing.txt")], /missing\.txt: cannot read \(ENOENT\)/],
    [["eval-alignment", "--prompts", badPrompts], /bad-prompts\.txt:2: shapes: caption outside the grammar: "a purple elephant"/],
    [["export-shapes", "--count", "3"], /export-shapes: --out DIR is required/],
    [["export-shapes", "--out", "shapes"], /export-shapes: --count N is required/],
    [["export-shapes", "--out", "shapes", "--count", "0"], /--count must be an integer in \[1, 1000000\], got '0'/],
    [["export-shapes", "--out", "shapes", "--count", "many"], /--count must be an integer in \[1, 1000000\], got 'many'/],
    [["export-shapes", "--out", "shapes", "--count", "2", "--two-object-fraction", "half"], /--two-object-fraction must be a number/],
    [
      ["export-shapes", "--out", "shapes", "--count", "2", "--seed", "4294967296"],
      /--seed must be an integer in \[0, 4294967295\], got '4294967296'/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const r = await atedmInProcess(args);
    assertOneLineError(r, pattern, args.join(" "));
    assert.deepEqual(r.written, [], `no file written by ${args.join(" ")}`);
  }
});

test("bad output paths and out-of-range numbers fail before any model loads: one line naming the culprit, < 5 s, nothing left behind", async () => {
  const work = join(tmp, "outputs");
  mkdirSync(join(work, "adir"), { recursive: true });
  const adir = join(work, "adir");
  const afile = join(work, "afile");
  writeFileSync(afile, "not a folder\n");
  // A folder this process cannot create files in: chmod 0o500, unless the tests run as root (root writes anyway),
  // where only a path through a regular FILE is unwritable (ENOTDIR), and that case is in the table already.
  const ro = join(work, "ro");
  mkdirSync(ro);
  chmodSync(ro, 0o500);
  let chmodBlocks = true;
  try {
    writeFileSync(join(ro, "probe"), "");
    rmSync(join(ro, "probe"));
    chmodBlocks = false;
  } catch {
    // EACCES: not root, the 0o500 folder is unwritable
  }
  // A model folder that does not exist: had the command got as far as loading, the error would name it instead.
  const nope = join(tmp, "no-model");
  const gen = (...args: string[]) => ["generate", "x", "--model", nope, ...args];
  const evalAlignment = (...args: string[]) => ["eval-alignment", "--prompts", prompts, "--model", nope, ...args];
  const esc = (p: string) => p.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const cases: Array<[string[], RegExp]> = [
    [gen("--out", adir), new RegExp(`^atedm: --out ${esc(adir)}: is a directory$`)],
    [gen("--out="), /^atedm: --out: the file name is empty$/],
    [
      gen("--out", join(work, "missing", "o.png")),
      new RegExp(`--out ${esc(join(work, "missing", "o.png"))}: directory ${esc(join(work, "missing"))} does not exist`),
    ],
    [gen("--out", join(afile, "o.png")), new RegExp(`--out ${esc(join(afile, "o.png"))}: ${esc(afile)} is not a directory`)],
    [gen("--out", "/dev/null"), /--out \/dev\/null: not a regular file/],
    [gen("--save-latents", adir), new RegExp(`^atedm: --save-latents ${esc(adir)}: is a directory$`)],
    [gen("--save-latents="), /^atedm: --save-latents: the file name is empty$/],
    [gen("--save-latents", join(afile, "l.safetensors")), new RegExp(`--save-latents .*: ${esc(afile)} is not a directory`)],
    [gen("--out", join(work, "same.png"), "--save-latents", join(work, "same.png")), /--out and --save-latents name the same path/],
    [gen("--method", "atedm", "--save-masks", afile), new RegExp(`--save-masks ${esc(afile)}: ${esc(afile)} is not a directory`)],
    [gen("--method", "atedm", "--save-masks", join(afile, "m")), new RegExp(`--save-masks .*: ${esc(afile)} is not a directory`)],
    [gen("--steps", "1e8"), /^atedm: --steps must be an integer in \[1, 1000\], got '1e8'$/],
    [gen("--steps", "0"), /--steps must be an integer in \[1, 1000\], got '0'/],
    [gen("--height", "100000"), /^atedm: --height must be a positive multiple of 8 up to 4096, got '100000'$/],
    [gen("--width", "100"), /--width must be a positive multiple of 8 up to 4096, got '100'/],
    [gen("--threads", "0"), /^atedm: --threads must be an integer in \[1, 256\], got '0'$/],
    [gen("--threads", "100000"), /--threads must be an integer in \[1, 256\], got '100000'/],
    [gen("--guidance", "1e9"), /--guidance must be a number in \[0, 100\], got '1e9'/],
    [gen("--method", "atedm", "--iterations", "1e6"), /--iterations must be an integer in \[1, 100\], got '1e6'/],
    [gen("--method", "atedm", "--damping", "1"), /--damping must be a number in \[0, 1\), got '1'/],
    [gen("--method", "tome", "--tome-sx", "1e9"), /--tome-sx must be an integer in \[1, 64\], got '1e9'/],
    [gen("--method", "tome", "--tome-max-downsample", "3"), /--tome-max-downsample must be 1, 2, 4 or 8, got '3'/],
    [gen("--model="), /^atedm: --model: the path is empty$/],
    [["flops", "--unet-config", unetConfig("sd15"), "--steps", "1e8"], /^atedm: --steps must be an integer in \[1, 1000\], got '1e8'$/],
    [["flops", "--unet-config", unetConfig("sd15"), "--vae-scale", "1e6"], /--vae-scale must be an integer in \[1, 64\], got '1e6'/],
    [["flops", "--unet-config", unetConfig("sd15"), "--width", "1e6"], /--width must be a positive multiple of 8 up to 4096/],
    [evalAlignment("--seeds", "1e6"), /^atedm: --seeds must be an integer in \[1, 1000\], got '1e6'$/],
    [evalAlignment("--steps", "1e8"), /--steps must be an integer in \[1, 1000\], got '1e8'/],
    [evalAlignment("--threads", "0"), /--threads must be an integer in \[1, 256\], got '0'/],
    [evalAlignment("--save-images", afile), new RegExp(`--save-images ${esc(afile)}: ${esc(afile)} is not a directory`)],
    [evalAlignment("--save-images="), /--save-images: the folder name is empty/],
    [
      ["export-shapes", "--out", join(afile, "set"), "--count", "2"],
      new RegExp(`--out ${esc(join(afile, "set"))}: ${esc(afile)} is not a directory`),
    ],
    [["export-shapes", "--out", adir, "--count", "1e7"], /^atedm: --count must be an integer in \[1, 1000000\], got '1e7'$/],
    [["export-shapes", "--out", adir, "--count", "2", "--two-object-fraction", "2"], /--two-object-fraction must be a number in \[0, 1\], got '2'/],
  ];
  if (chmodBlocks)
    cases.push([
      gen("--out", join(ro, "o.png")),
      new RegExp(`--out ${esc(join(ro, "o.png"))}: cannot create files in ${esc(ro)} (permission denied)`),
    ]);
  const listing = () => (readdirSync(work, { recursive: true }) as string[]).sort();
  const before = listing();
  for (const [args, pattern] of cases) {
    const t0 = performance.now();
    const r = await atedmInProcess(args);
    const seconds = (performance.now() - t0) / 1000;
    const what = args.slice(args[0] === "generate" ? 4 : 1).join(" ");
    assertOneLineError(r, pattern, what);
    assert.ok(seconds < 5, `${what}: failed after ${seconds.toFixed(2)} s`);
    assert.deepEqual(listing(), before, `${what} left files in ${work}`);
    assert.deepEqual(r.written, [], `${what} wrote into the current directory`);
  }
  assert.ok(cases.length >= 34, `${cases.length} cases`);
  chmodSync(ro, 0o700);
});

test("the PNG writer leaves no temp file behind when the write fails, and names the path in one line", () => {
  const work = join(tmp, "writer");
  mkdirSync(join(work, "adir"), { recursive: true });
  writeFileSync(join(work, "afile"), "");
  const rgb = new Uint8Array(8 * 8 * 3);
  for (const [path, reason] of [
    [join(work, "adir"), "is a directory"],
    [join(work, "afile", "x.png"), "a component of the path is not a directory"],
    [join(work, "missing", "x.png"), "its directory does not exist"],
    ["", "empty name"],
  ] as const) {
    const before = (readdirSync(work, { recursive: true }) as string[]).sort();
    assert.throws(
      () => writePng(path, rgb, 8, 8),
      (e: unknown) => e instanceof AtedmError && !e.message.includes("\n") && e.message.includes(path) && e.message.includes(reason),
      `writePng(${path})`,
    );
    assert.deepEqual((readdirSync(work, { recursive: true }) as string[]).sort(), before, `writePng(${path}) left a file`);
  }
  writePng(join(work, "ok.png"), rgb, 8, 8);
  assert.deepEqual(readdirSync(work).sort(), ["adir", "afile", "ok.png"], "a good write leaves the image and nothing else");
});

test("--progress on a non-terminal stderr: a loading line, then plain progress lines, no carriage return; without it, silent", async () => {
  const args = ["generate", "a large red circle at the left on a white background", "--steps", "2", "--threads", "1", "--out", "p.png"];
  const r = await atedmInProcess([...args, "--progress"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stderr.includes("\r") && !r.stderr.includes("\x1b"), JSON.stringify(r.stderr));
  const lines = r.stderr.trimEnd().split("\n");
  assert.match(lines[0]!, /^loading .*models[/\\]shapes \.\.\.$/, "the loading line comes first");
  assert.deepEqual(
    lines.slice(1, -1).map((l) => l.split(" ")[1]),
    ["1/2", "2/2"],
    "one plain line after the first step and one after the last",
  );
  assert.ok(
    lines.slice(1, -1).every((l) => l.startsWith("generate: ")),
    r.stderr,
  );
  assert.match(lines.at(-1)!, /^wrote p\.png \(2 steps in \d+\.\d\d s\)$/);
  assert.deepEqual(r.written, ["p.png"]);
  const quiet = await atedmInProcess(args);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.match(quiet.stderr, /^wrote p\.png \(2 steps in \d+\.\d\d s\)\n$/, "no loading line, no progress");
});

test("atedm --version prints the version of package.json; atedm help COMMAND is COMMAND --help", async () => {
  const r = await atedmInProcess(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `atedm ${VERSION}\n`);
  assert.equal(r.stderr, "");
  for (const command of COMMANDS) {
    const help = await atedmInProcess(["help", command]);
    const direct = await atedmInProcess([command, "--help"]);
    assert.equal(help.code, 0);
    assert.equal(help.stdout, direct.stdout, `help ${command}`);
    assert.match(help.stdout, new RegExp(`^Usage: atedm ${command}`));
  }
  const bad = await atedmInProcess(["help", "frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr.split("\n")[0]!, /^atedm: unknown command 'frobnicate'$/);
});

test("a failing command as its own process: exit code 1, one `atedm: ` line on stderr, even after ONNX Runtime loaded a model", async () => {
  const r = await processes.failingGenerate;
  assertOneLineError(r, /latents have 192 values, expected shape \[1,3,32,32\]/, "generate --latents (wrong shape)");
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith("never.png")),
    [],
    "no image, no temp file",
  );
});

test("eval-alignment --json --progress as its own process: the settings, per prompt and seed the attributes that failed, plain progress lines", async () => {
  const r = await processes.evalAlignment;
  assert.equal(r.code, 0, r.stderr);
  // stderr is a pipe: --progress prints plain lines (the first and last image at least), stdout stays one JSON object
  assert.ok(!r.stderr.includes("\r") && !r.stderr.includes("\x1b"), JSON.stringify(r.stderr));
  assert.match(r.stderr, /^loading .*models[/\\]shapes \.\.\.\neval: 1\/4 .*\n(eval: [23]\/4 .*\n)*eval: 4\/4 .*\n$/);
  const j = JSON.parse(r.stdout);
  assert.equal(j.atedm_version, VERSION);
  assert.deepEqual([j.prompts, j.seeds, j.images, j.steps, j.threads, j.method, j.scheduler], [2, 2, 4, 1, 1, "none", "euler"]);
  assert.equal(typeof j.guidance, "number");
  assert.deepEqual(
    j.per_prompt.map((p: { prompt: string }) => p.prompt),
    PROMPTS,
  );
  let allCorrect = 0;
  for (const p of j.per_prompt) {
    assert.deepEqual(
      p.images.map((x: { seed: number }) => x.seed),
      [0, 1],
    );
    for (const x of p.images) {
      assert.ok(Array.isArray(x.failed) && x.failed.every((a: unknown) => typeof a === "string"));
      assert.equal(x.all_correct, x.failed.length === 0, "an image is all correct exactly when no attribute failed");
      allCorrect += x.all_correct ? 1 : 0;
    }
    assert.equal(p.all_correct, p.images.filter((x: { all_correct: boolean }) => x.all_correct).length / 2);
  }
  assert.equal(j.all_correct, allCorrect / 4);
});

test("export-shapes as its own process writes the data set the library generates for the same count, seed and fraction", async () => {
  const out = join(tmp, "shapes");
  const r = await processes.exportShapes;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^wrote 3 images to .*shapes in \d+\.\d\d s\n$/);
  const want = generateDataset({ count: 3, seed: 7, twoObjectFraction: 0.5 });
  const images = readSafetensors(join(out, "shapes.safetensors")).get("images")!;
  assert.deepEqual(images.dims, [3, 32, 32, 3]);
  assert.deepEqual(Buffer.from(images.data as Uint8Array), Buffer.from(want.images));
  assert.deepEqual(JSON.parse(readFileSync(join(out, "captions.json"), "utf8")), want.captions);
  const meta = JSON.parse(readFileSync(join(out, "meta.json"), "utf8"));
  assert.equal(meta.seed, 7);
  assert.equal(meta.twoObjectFraction, 0.5);
});

test("--help explains every flag of generate, exits 0 and writes no file", async () => {
  // Without --help, `generate` in this directory would write out.png with the embedded model.
  const r = await atedmInProcess(["generate", "--help"]);
  assert.equal(r.code, 0);
  assert.deepEqual(r.written, [], "generate --help wrote files into the current directory");
  assert.equal(r.stderr, "");
  for (const flag of [
    "--model",
    "--negative",
    "--steps",
    "--guidance",
    "--seed",
    "--height",
    "--width",
    "--scheduler",
    "--latents",
    "--out",
    "--save-latents",
    "--threads",
    "--json",
    "--method",
    "--ratio",
    "--schedule",
    "--save-masks",
  ]) {
    assert.ok(r.stdout.includes(flag), flag);
  }
});

test("--help of every command documents exactly the flags its parser accepts (from the parser's option list)", async () => {
  for (const command of COMMANDS) {
    const r = await atedmInProcess([command, "--help"]);
    assert.equal(r.code, 0, `${command} --help: ${r.stderr}`);
    assert.equal(r.stderr, "");
    assert.deepEqual(r.written, [], `${command} --help wrote files`);
    assert.equal(r.parsed.length, 1, `${command} parses its argv once`);
    const parsed = new Set(r.parsed[0]!.filter((f) => f !== "help"));
    for (const f of PRUNING_FLAGS_OF[command] ?? []) assert.ok(parsed.has(f), `${command} parses the pruning flag --${f}`);
    const documented = documentedFlags(r.stdout);
    for (const f of parsed) assert.ok(documented.has(f), `${command} --help documents --${f}`);
    for (const f of documented) assert.ok(parsed.has(f), `${command} --help documents --${f}, which its parser rejects`);
    const short = await atedmInProcess([command, "-h"]);
    assert.equal(short.code, 0);
    assert.equal(short.stdout, r.stdout, `${command} -h prints the same help as --help`);
  }
});

test("atedm --help lists every command; a missing or unknown command is a usage error (exit 2)", async () => {
  for (const arg of ["--help", "-h", "help"]) {
    const r = await atedmInProcess([arg]);
    assert.equal(r.code, 0, arg);
    assert.equal(r.stderr, "");
    for (const command of COMMANDS) assert.match(r.stdout, new RegExp(`^  ${command} `, "m"), `${arg} lists ${command}`);
  }
  const none = await atedmInProcess([]);
  assert.equal(none.code, 2);
  assert.match(none.stdout, /^Usage: atedm <command>/);
  const r = await atedmInProcess(["frobnicate", "--help"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.match(r.stderr.split("\n")[0]!, /^atedm: unknown command 'frobnicate'$/);
  assert.match(r.stderr, /^Usage: atedm <command>/m);
  assert.deepEqual(r.written, []);
});

test("in-process runs leave the test process as they found it (cwd, stdout/stderr write and isTTY, env)", () => {
  assert.deepEqual(processState(), before);
  assert.ok(!Object.hasOwn(process.stdout, "write") && !Object.hasOwn(process.stderr, "write"));
});
