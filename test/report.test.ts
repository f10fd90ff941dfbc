/**
 * `atedm report` as a reader sees it: the HTML of a synthetic eval folder, opened from file:// in headless
 * Chromium (test/helpers/browser.ts; a missing Chromium fails the test with how to install it), draws every plot
 * (Plotly's SVG holds one marker per method plus the Pareto front's), loads every image (naturalWidth > 0), asks
 * nothing from the network, runs no script from the JSON (a prompt holding <script> shows as text), and
 * screenshots to a non-trivial PNG. Also: the Pareto front, the one-line errors (missing eval.json, invalid JSON, a
 * wrong key, a missing or escaping image), and --help naming every flag.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { decode } from "fast-png";
import { REPORT_HELP, reportCommand } from "../src/cli/report.js";
import { AtedmError } from "../src/errors.js";
import { writePng } from "../src/io/png.js";
import { families, figures, paretoFront } from "../src/eval/report_html.js";
import type { EvalResult, MethodResult } from "../src/eval/types.js";
import { findChromium, launchChromium } from "./helpers/browser.js";

const tmp = mkdtempSync(join(tmpdir(), "atedm-report-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const HOSTILE = `a red circle <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"`;

/** A square PNG of one colour with a darker diagonal, `size` pixels a side. */
function png(path: string, rgb: [number, number, number], size = 16): void {
  const data = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    const diag = i % size === Math.floor(i / size);
    for (let c = 0; c < 3; c++) data[3 * i + c] = diag ? rgb[c]! >> 1 : rgb[c]!;
  }
  writePng(path, data, size, size);
}

/** An eval folder: 3 prompts x 2 seeds, none + AT-EDM at two ratios + ToMe + one budget run, overlays for the pruned. */
function makeEvalDir(name: string): { dir: string; result: EvalResult } {
  const dir = join(tmp, name);
  mkdirSync(join(dir, "images"), { recursive: true });
  mkdirSync(join(dir, "overlays"), { recursive: true });
  const prompts = [HOSTILE, "a blue square at the center", "a green triangle at the bottom right"];
  const method = (
    name: string,
    kind: MethodResult["method"],
    ratio: number,
    saving: number,
    speedup: number,
    quality: MethodResult["quality"],
    colour: [number, number, number],
    extra: Partial<MethodResult> = {},
  ): MethodResult => {
    const slug = name.replace(/[^a-z0-9]+/gi, "_");
    const images = [];
    for (let prompt = 0; prompt < prompts.length; prompt++) {
      for (let seed = 0; seed < 2; seed++) {
        const file = `images/${slug}_p${prompt}_s${seed}.png`;
        png(join(dir, file), [colour[0], (colour[1] + 40 * prompt) % 256, (colour[2] + 90 * seed) % 256]);
        images.push({ prompt, seed, file });
      }
    }
    const overlays =
      kind === "none"
        ? []
        : ["down_blocks.1.attentions.0", "up_blocks.1.attentions.2"].map((block, i) => {
            const file = `overlays/${slug}_${i}.png`;
            png(join(dir, file), [255, 255 - 80 * i, 0], 8);
            return { block, step: 10, file };
          });
    return {
      name,
      spec: name.replace(/@.*/, ""),
      method: kind,
      ratio,
      budget: null,
      options: kind === "none" ? {} : { ratio, schedule: "dsap", recovery: "similarity" },
      flops_saving: saving,
      tflops_per_step: 0.8 * (1 - saving),
      seconds_per_step: 0.05 / speedup,
      speedup,
      quality,
      images,
      overlays,
      ...extra,
    };
  };
  const q = (alignment: number, fd: number, psnr?: number): MethodResult["quality"] => ({
    alignment_all_correct: { value: alignment, ci95: [alignment - 0.05, Math.min(1, alignment + 0.04)] },
    fd: { value: fd, ci95: fd > 3 ? null : [fd * 0.8, fd * 1.3] },
    ...(psnr === undefined ? {} : { psnr: { value: psnr, ci95: [psnr - 1, psnr + 1.5] }, ssim: { value: psnr / 40, ci95: [psnr / 45, psnr / 36] } }),
  });
  const result: EvalResult = {
    atedm_version: "0.1.0",
    created: "2026-12-01T10:00:00.000Z",
    command: `atedm eval --prompts "p.txt" --methods none,atedm:0.3,atedm:0.5,tome:0.5 --budgets 0.4`,
    machine: { cpus: 2, cpu: "Test CPU <b>fast</b>", platform: "linux x64" },
    model: "models/shapes",
    prompts_file: "eval/val-one-object.txt",
    prompts,
    seeds: 2,
    steps: 20,
    guidance: 7.5,
    scheduler: "ddim",
    threads: 2,
    budgets: [0.4],
    unreachable: [{ spec: "tome:0.5", budget: 0.4, max_saving: 0.31 }],
    bootstrap: { samples: 1000, fd_samples: 200, seed: 0, unit: "prompt" },
    features: { name: "shapes-features", dim: 64, reference_images: 200 },
    methods: [
      method("atedm:0.3", "atedm", 0.3, 0.22, 1.2, q(0.95, 1.5, 31), [200, 60, 60]),
      method("none", "none", 0, 0, 1, q(0.97, 1.2), [240, 240, 240]),
      method("atedm:0.5", "atedm", 0.5, 0.36, 1.4, q(0.9, 2.1, 27), [60, 200, 60]),
      method("tome:0.5", "tome", 0.5, 0.3, 1.1, q(0.85, 3.5, 25), [60, 60, 200]),
      method("atedm:0.3@0.40", "atedm", 0.61, 0.4, 1.5, q(0.8, 2.9, 24), [200, 200, 60], { budget: 0.4, spec: "atedm:0.3" }),
    ],
    timing: { generation_seconds: 12.5, other_seconds: 1.5, overhead: 0.107 },
  };
  writeFileSync(join(dir, "eval.json"), JSON.stringify(result, null, 1));
  return { dir, result };
}

/** `reportCommand(argv)`, with its stderr captured. */
async function report(argv: string[]): Promise<{ code: number; stderr: string }> {
  const write = process.stderr.write;
  let stderr = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await reportCommand(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}

/** The AtedmError `reportCommand(argv)` throws: one line. */
async function reportError(argv: string[]): Promise<string> {
  try {
    await report(argv);
  } catch (e) {
    assert.ok(e instanceof AtedmError, `expected an AtedmError, got ${String(e)}`);
    assert.ok(!e.message.includes("\n"), `the error is one line: ${e.message}`);
    return e.message;
  }
  assert.fail(`atedm report ${argv.join(" ")} succeeded; expected an error`);
}

// ---------------------------------------------------------------------------------------------------------------
// Pareto front
// ---------------------------------------------------------------------------------------------------------------

test("paretoFront keeps exactly the points no other point beats in both x and y", () => {
  const pts = [
    { x: 0, y: 1 }, // best quality: on the front
    { x: 0.2, y: 0.9 }, // on
    { x: 0.2, y: 0.8 }, // dominated by (0.2, 0.9)
    { x: 0.1, y: 0.85 }, // dominated by (0.2, 0.9)
    { x: 0.5, y: 0.5 }, // most saving: on
    { x: 0.5, y: 0.5 }, // an equal point is on the front too
    { x: 0.4, y: Number.NaN }, // not finite: off, dominates nothing
  ];
  assert.deepEqual(paretoFront(pts), [true, true, false, false, true, true, false]);
  // lower is better (FD): the most saving at the least FD beats everything
  assert.deepEqual(paretoFront(pts, true), [false, false, false, false, true, true, false]);
  const fd = [
    { x: 0, y: 1 }, // on: least FD
    { x: 0.3, y: 2 }, // on
    { x: 0.2, y: 2.5 }, // dominated by (0.3, 2)
    { x: 0.5, y: 4 }, // on: most saving
  ];
  assert.deepEqual(paretoFront(fd, true), [true, true, false, true]);
  assert.deepEqual(paretoFront(fd), [false, false, false, true]);
  assert.deepEqual(paretoFront([]), []);
  assert.deepEqual(paretoFront([{ x: 1, y: 2 }]), [true]);
});

test("figures: one saving and one speedup plot per metric, methods grouped by family, the front drawn on the means", () => {
  const { result } = makeEvalDir("figures");
  const figs = figures(result);
  assert.deepEqual(
    figs.map((f) => f.id),
    ["alignment_all_correct", "fd", "psnr", "ssim"].flatMap((m) => [`plot-${m}-saving`, `plot-${m}-speedup`]),
  );
  // atedm at 0.3, 0.5 and the budget run share one family (only the ratio differs); none and tome have their own
  assert.deepEqual([...families(result.methods).keys()], ["atedm", "none", "tome"]);
  // two AT-EDM variants: labelled by the option that tells them apart
  const cosine = { ...result.methods[2]!, name: "atedm:recovery=cosine", options: { ...result.methods[2]!.options, recovery: "cosine" } };
  assert.deepEqual([...families([...result.methods, cosine]).keys()], ["atedm recovery=similarity", "none", "tome", "atedm recovery=cosine"]);
  const fd = figs.find((f) => f.id === "plot-fd-saving")!;
  const traces = fd.data as Array<{ name: string; x: number[]; y: number[] }>;
  const front = traces.find((t) => t.name === "Pareto front")!;
  // FD, lower is better, vs saving: none (0, 1.2), atedm:0.3 (22, 1.5), atedm:0.5 (36, 2.1), budget (40, 2.9); tome (30, 3.5) is beaten
  assert.deepEqual(front.x, [0, 22, 36, 40]);
  assert.equal(fd.points, 5 + 4);
});

// ---------------------------------------------------------------------------------------------------------------
// The report in a browser
// ---------------------------------------------------------------------------------------------------------------

test("the report opens offline in Chromium: every plot draws its points, every image loads, no script from the JSON runs", async () => {
  const { dir, result } = makeEvalDir("browser");
  const out = join(dir, "report.html");
  const { code, stderr } = await report(["--in", dir]);
  assert.equal(code, 0);
  assert.match(stderr, /wrote .*report\.html/);
  const html = readFileSync(out, "utf8");
  assert.ok(!html.includes("<script>window.__pwned"), "the hostile prompt is escaped in the HTML");

  const browser = await launchChromium(); // a missing Chromium fails here, saying how to install it
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const requests: string[] = [];
  const problems: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  try {
    await page.goto(pathToFileURL(out).href, { waitUntil: "load" });
    await page.waitForFunction(() => document.body.getAttribute("data-plots") !== null, undefined, { timeout: 30_000 });
    assert.equal(await page.getAttribute("body", "data-plots"), "done");

    // every plot: Plotly laid it out, drew its SVG, and drew one marker per point (methods and Pareto front)
    const plots = await page.$$eval(".plot", (els) =>
      els.map((el) => ({
        id: el.id,
        expected: Number(el.getAttribute("data-points")),
        layout: "_fullLayout" in el,
        svg: el.querySelectorAll(".main-svg").length,
        points: el.querySelectorAll(".scatterlayer path.point").length,
        errorBars: el.querySelectorAll(".errorbar path.yerror").length,
      })),
    );
    const expectedFigures = figures(result);
    assert.deepEqual(
      plots.map((p) => p.id),
      expectedFigures.map((f) => f.id),
    );
    for (const p of plots) {
      assert.ok(p.layout && p.svg > 0, `${p.id}: Plotly did not render (layout ${p.layout}, ${p.svg} svg)`);
      assert.ok(p.expected > 0, `${p.id}: no points expected`);
      assert.equal(p.points, p.expected, `${p.id}: ${p.points} markers drawn, expected ${p.expected}`);
      assert.ok(p.errorBars > 0, `${p.id}: no interval bars drawn`);
    }

    // every image: decoded (naturalWidth > 0); the grid has the unpruned column first
    const images = await page.$$eval("img", (els) => els.map((el) => ({ cls: el.className, ok: el.complete && el.naturalWidth > 0 })));
    const methods = result.methods.length;
    assert.equal(images.filter((i) => i.cls === "grid-image").length, result.prompts.length * result.seeds * methods);
    assert.equal(images.filter((i) => i.cls === "overlay-image").length, 2 * (methods - 1));
    assert.ok(
      images.every((i) => i.ok),
      `images not loaded: ${images.filter((i) => !i.ok).length} of ${images.length}`,
    );
    const header = await page.$$eval("#grid thead th", (els) => els.map((el) => el.textContent));
    assert.deepEqual(header.slice(0, 3), ["", "none", "atedm:0.3"]);

    // tables, unreachable budgets, and the hostile prompt shown as text, never run
    assert.equal(await page.locator("#methods tbody tr").count(), methods);
    assert.match((await page.textContent("#methods")) ?? "", /0\.9 \[0\.85, 0\.94\]/);
    assert.match((await page.textContent("#unreachable")) ?? "", /tome:0\.5: budget 40\.0 %/);
    assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
    assert.ok(((await page.textContent("#grid")) ?? "").includes("<script>window.__pwned = 1</script>"), "the prompt shows as text");
    assert.match((await page.textContent("#meta")) ?? "", /Test CPU <b>fast<\/b>/);

    // nothing left file:// (data: URIs are the embedded images), nothing complained
    const away = requests.filter((u) => !u.startsWith("file:") && !u.startsWith("data:"));
    assert.deepEqual(away, [], "requests that left file://");
    assert.deepEqual(problems, []);

    const shot = join(tmp, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    const img = decode(readFileSync(shot));
    assert.ok(statSync(shot).size > 50_000, `screenshot is ${statSync(shot).size} bytes`);
    assert.ok(img.width >= 1280 && img.height > 2000, `screenshot is ${img.width}x${img.height}`);
    const colours = new Set<number>();
    const ch = img.channels;
    for (let i = 0; i < img.width * img.height; i += 7) colours.add((img.data[ch * i]! << 16) | (img.data[ch * i + 1]! << 8) | img.data[ch * i + 2]!);
    assert.ok(colours.size > 50, `screenshot has ${colours.size} colours`);
  } finally {
    await browser.close();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Errors and help
// ---------------------------------------------------------------------------------------------------------------

test("report errors are one line naming the file: missing eval.json, invalid JSON, a wrong key, a missing or escaping image", async () => {
  const empty = join(tmp, "empty");
  mkdirSync(empty, { recursive: true });
  assert.match(await reportError(["--in", empty]), new RegExp(`${join(empty, "eval.json")}: file not found`));

  const bad = join(tmp, "bad-json");
  mkdirSync(bad, { recursive: true });
  writeFileSync(join(bad, "eval.json"), "{ not json");
  assert.match(await reportError(["--in", bad]), new RegExp(`${join(bad, "eval.json")}: invalid JSON`));

  const { dir, result } = makeEvalDir("errors");
  writeFileSync(join(dir, "eval.json"), JSON.stringify({ ...result, methods: [{ ...result.methods[0], speedup: "fast" }] }));
  assert.match(await reportError(["--in", dir]), /eval\.json: methods\[0\]\.speedup = "fast" is invalid/);

  const gone = result.methods[1]!.images[0]!.file;
  writeFileSync(join(dir, "eval.json"), JSON.stringify(result));
  rmSync(join(dir, gone));
  assert.match(await reportError(["--in", dir]), new RegExp(`${join(dir, gone)}: image not found`));

  const escaping = structuredClone(result);
  escaping.methods[1]!.images[0]!.file = "../browser/eval.json";
  writeFileSync(join(dir, "eval.json"), JSON.stringify(escaping));
  assert.match(await reportError(["--in", dir]), /image path "\.\.\/browser\/eval\.json" leaves/);

  const notPng = structuredClone(result);
  notPng.methods[1]!.images[0]!.file = "eval.json";
  writeFileSync(join(dir, "eval.json"), JSON.stringify(notPng));
  assert.match(await reportError(["--in", dir]), /eval\.json: not a PNG file/);

  assert.match(await reportError([]), /--in DIR is required/);
  assert.match(await reportError(["--in", dir, "--out", join(tmp, "no-such-dir", "r.html")]), /--out .*does not exist/);
  assert.match(await reportError(["--in", dir, "--bogus"]), /report: Unknown option '--bogus'/);
});

test("a missing Chromium is an error that says how to install it, not a skip", () => {
  const saved = process.env.CHROMIUM;
  try {
    delete process.env.CHROMIUM;
    assert.throws(() => findChromium([join(tmp, "no-chromium")]), /no Chromium found .*apt-get install chromium/);
    process.env.CHROMIUM = join(tmp, "no-chromium");
    assert.throws(() => findChromium(), /CHROMIUM=.*no-chromium: no such file/);
  } finally {
    if (saved === undefined) delete process.env.CHROMIUM;
    else process.env.CHROMIUM = saved;
  }
});

test("report --help explains every flag", async () => {
  const write = process.stdout.write;
  let stdout = "";
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    assert.equal(await reportCommand(["--help"]), 0);
  } finally {
    process.stdout.write = write;
  }
  assert.equal(stdout, REPORT_HELP);
  for (const flag of ["--in DIR", "--out FILE"]) assert.match(stdout, new RegExp(`^  ${flag}`, "m"));
});
