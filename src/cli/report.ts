/** `atedm report`: the static HTML report of an `atedm eval` folder (tables, plots, image grids, kept-token overlays). */
import { readFileSync, statSync } from "node:fs";
import { isAbsolute, join, relative, resolve } from "node:path";
import { AtedmError } from "../errors.js";
import { describeErrno, leavesFolder, writeFileAtomic } from "../io/files.js";
import { type Schema, LIMITS as FILE_LIMITS, obj, parseConfig, readJsonObject, v } from "../io/config_schema.js";
import { MAX_GRID_ROWS, plotlyScript, renderReport } from "../eval/report_html.js";
import type { EvalResult } from "../eval/types.js";
import { type Flags, parse } from "./args.js";
import { checkOutputFile } from "./outputs.js";

const flags: Flags = {
  in: { type: "string" },
  out: { type: "string" },
};

export const REPORT_HELP = `Usage: atedm report --in DIR [--out FILE]

Write one static HTML file from the folder 'atedm eval' wrote (DIR/eval.json and the PNGs it names): the run's
settings; a table of every method (ratio, budget, FLOPs saving, TFLOPs and seconds per step, speedup, each quality
metric with its 95 % interval); unreachable budgets; for each quality metric a quality-vs-FLOPs-saving and a
quality-vs-speedup plot with interval bars and the Pareto front marked; a same-seed image grid (the first
${MAX_GRID_ROWS} prompt/seed pairs, unpruned first, one column per method); and each method's kept-token overlays.
Images and the plotting library (plotly.js) are embedded: the file needs no network and still works when moved.

  --in DIR      the eval folder (reads DIR/eval.json; image paths in it are relative to DIR and must stay inside it).
  --out FILE    the HTML file to write (default DIR/report.html); its folder must exist. Written whole or not at all.
`;

export async function reportCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, flags, "report");
  if (v.help) {
    process.stdout.write(REPORT_HELP);
    return 0;
  }
  if (positionals.length) throw new AtedmError(`report: unexpected argument '${positionals[0]}' (see 'atedm report --help')`);
  const dir = v.in as string | undefined;
  if (dir === undefined || dir.trim() === "") throw new AtedmError("report: --in DIR is required (the folder 'atedm eval' wrote)");
  const out = checkOutputFile((v.out as string | undefined) ?? join(dir, "report.html"), "out");
  const result = readEvalResult(join(dir, "eval.json"));
  const html = renderReport(result, { readImage: (file) => readImage(dir, file), plotlyJs: plotlyScript() });
  writeFileAtomic(out, [Buffer.from(html, "utf8")]);
  process.stderr.write(`wrote ${out}\n`);
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// eval.json
// ---------------------------------------------------------------------------------------------------------------

const str: Schema<string> = v.string("a string");
const number: Schema<number> = v.pipe(v.number("a finite number"), v.finite("a finite number"));
const count: Schema<number> = v.pipe(
  v.number("a non-negative integer"),
  v.integer("a non-negative integer"),
  v.minValue(0, "a non-negative integer"),
);
const nullable = <T>(s: Schema<T>) => v.nullable(s);

/** What `atedm eval` writes (src/eval/types.ts); checked so that a damaged file fails in one line naming the key. */
const EVAL_RESULT: Schema<EvalResult> = obj({
  atedm_version: str,
  created: str,
  command: str,
  machine: obj({ cpus: count, cpu: str, platform: str }),
  model: str,
  prompts_file: str,
  prompts: v.array(str, "a list of strings"),
  seeds: count,
  steps: count,
  guidance: number,
  scheduler: str,
  threads: count,
  budgets: nullable(v.array(number, "a list of numbers or null")),
  unreachable: v.array(obj({ spec: str, budget: number, max_saving: number }), "a list of {spec, budget, max_saving}"),
  bootstrap: obj({ samples: count, fd_samples: count, seed: count, unit: v.literal("prompt", '"prompt"') }),
  features: nullable(obj({ name: str, dim: count, reference_images: count })),
  methods: v.array(
    obj({
      name: str,
      spec: str,
      method: v.picklist(["none", "atedm", "tome"], '"none", "atedm" or "tome"'),
      ratio: number,
      budget: nullable(number),
      options: v.record(v.string(), v.unknown(), "an object"),
      flops_saving: number,
      tflops_per_step: number,
      seconds_per_step: number,
      speedup: number,
      quality: v.record(
        v.string(),
        obj({ value: v.number("a number"), ci95: nullable(v.tuple([v.number(), v.number()], "[low, high] or null")) }),
        "an object of metrics",
      ),
      images: v.array(obj({ prompt: count, seed: count, file: str }), "a list of {prompt, seed, file}"),
      overlays: v.array(obj({ block: str, step: count, file: str }), "a list of {block, step, file}"),
    }),
    "a list of methods",
  ),
  timing: obj({ generation_seconds: number, other_seconds: number, overhead: number }),
});

/** DIR/eval.json, validated: a missing file, invalid JSON or a wrong key is one line naming the file. */
export function readEvalResult(file: string): EvalResult {
  return parseConfig(EVAL_RESULT, readJsonObject(file, "written by 'atedm eval'"), file);
}

/** An image the result names: a PNG inside `dir` (a path that leaves it, a missing file or a non-PNG is one line). */
function readImage(dir: string, file: string): Uint8Array {
  const source = join(dir, "eval.json");
  const path = resolve(dir, file);
  const rel = relative(resolve(dir), path);
  if (isAbsolute(file) || rel === "" || leavesFolder(rel)) {
    throw new AtedmError(`${source}: image path ${JSON.stringify(file)} leaves ${dir}`);
  }
  const shown = join(dir, file);
  let bytes: Uint8Array;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new AtedmError(`${shown}: not a file (an image named in ${source})`);
    if (st.size > FILE_LIMITS.fileBytes) throw new AtedmError(`${shown}: ${st.size} bytes, expected at most ${FILE_LIMITS.fileBytes} (64 MiB)`);
    bytes = readFileSync(path);
  } catch (e) {
    if (e instanceof AtedmError) throw e;
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOENT" ? "image not found" : describeErrno(err.code, err.message.split("\n")[0]!);
    throw new AtedmError(`${shown}: ${why} (named in ${source})`);
  }
  if (!PNG_SIGNATURE.every((b, i) => bytes[i] === b)) throw new AtedmError(`${shown}: not a PNG file (named in ${source})`);
  return bytes;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
