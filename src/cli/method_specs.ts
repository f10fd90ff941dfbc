/**
 * `--methods` of `atedm eval`: a comma-separated list of `name[:ratio][:option=value ...]`, e.g.
 *
 *   none,atedm:0.5,atedm:0.5:recovery=cosine:schedule=none,tome:0.5:tome-max-downsample=2,atedm:score=random
 *
 * Options are the pruning flags of `atedm generate` without the dashes; a list value uses + (tome-merge=attn+mlp). A method option given as a flag of
 * `atedm eval` (e.g. `--recovery cosine`) applies to every listed method it belongs to, unless the method names it.
 * A method without a ratio is matched to each of `--budgets` (or runs at 0.5 when there are none).
 */
import { AtedmError } from "../errors.js";
import type { EvalMethodSpec } from "../eval/plan.js";
import type { Values } from "./args.js";
import { makeMethod, METHODS, methodReport, pruningFlags } from "./pruning_flags.js";

/** Options that belong to one family only; the others (schedule, pruning-seed, preset) apply to both. */
const ATEDM_ONLY = ["preset", "score", "iterations", "damping", "recovery", "pruning-point", "mask-sharing"];
const TOME_ONLY = Object.keys(pruningFlags).filter((k) => k.startsWith("tome-"));
export const METHOD_OPTION_KEYS = Object.keys(pruningFlags).filter((k) => k !== "method" && k !== "ratio");

function appliesTo(family: string, key: string): boolean {
  if (ATEDM_ONLY.includes(key)) return family === "atedm";
  if (TOME_ONLY.includes(key)) return family === "tome";
  return family !== "none";
}

/** Parse `--methods`; `global` holds the eval command's own method-option flags. */
export function parseMethodSpecs(text: string, global: Values): EvalMethodSpec[] {
  const items = text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (!items.length) throw new AtedmError("--methods: no method listed (e.g. --methods none,atedm:0.5,tome:0.5)");
  const specs: EvalMethodSpec[] = [];
  for (const item of items) {
    const [name, ...parts] = item.split(":");
    if (!(METHODS as readonly string[]).includes(name!)) {
      throw new AtedmError(`--methods: unknown method '${name}' in '${item}' (${METHODS.join(", ")})`);
    }
    const family = name as EvalMethodSpec["family"];
    let ratio: number | null = null;
    const own: Values = {};
    for (const [i, part] of parts.entries()) {
      const eq = part.indexOf("=");
      if (eq < 0) {
        const r = part.trim() === "" ? NaN : Number(part);
        if (i !== 0 || !Number.isFinite(r)) {
          throw new AtedmError(`--methods: '${part}' in '${item}' is neither a ratio (right after the name) nor option=value`);
        }
        if (!(r >= 0 && r < 1)) throw new AtedmError(`--methods: ratio ${part} in '${item}' is not in [0, 1)`);
        ratio = r;
        continue;
      }
      const key = part.slice(0, eq).trim();
      const value = part.slice(eq + 1).trim();
      if (!METHOD_OPTION_KEYS.includes(key)) {
        throw new AtedmError(`--methods: unknown option '${key}' in '${item}' (options: ${METHOD_OPTION_KEYS.join(", ")})`);
      }
      if (!appliesTo(family, key)) throw new AtedmError(`--methods: option '${key}' does not apply to '${family}' (in '${item}')`);
      // A list value is written with + inside a method (the comma separates methods): tome-merge=attn+mlp.
      own[key] = pruningFlags[key]!.type === "boolean" ? value !== "false" : value.replaceAll("+", ",");
    }
    if (family === "none" && ratio !== null && ratio !== 0) throw new AtedmError(`--methods: 'none' takes no ratio (in '${item}')`);
    const values: Values = { method: family };
    for (const [k, v] of Object.entries(global)) if (v !== undefined && METHOD_OPTION_KEYS.includes(k) && appliesTo(family, k)) values[k] = v;
    Object.assign(values, own);
    const make = (r: number) => {
      const v: Values = { ...values, ...(family === "none" ? {} : { ratio: String(r) }) };
      const method = makeMethod(v);
      const report = methodReport(method);
      return { method, options: report.method_options };
    };
    // Build once now, so a bad option value is reported before the model loads.
    try {
      make(ratio ?? 0.5);
    } catch (e) {
      throw new AtedmError(`--methods: ${(e as Error).message.replace(/^--/, "")} (in '${item}')`);
    }
    specs.push({ spec: item, family, ratio: family === "none" ? 0 : ratio, make });
  }
  return specs;
}
