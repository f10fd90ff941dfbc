/**
 * node --import tsx bench/profile.ts [--model sd15|sdxl|DIR] [--latent 64] [--method atedm --ratio 0.5]
 *
 * Where the time of one U-Net call goes: an ONNX Runtime profile of one run (after a warm-up), summed by
 * operator type and by module scope. A tool for performance work, not a benchmark.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { componentConfig, componentWeights } from "../src/io/diffusers.js";
import { buildUNetGraph } from "../src/models/unet.js";
import { attentionBlocks, resolveUNetConfig, type UNetConfig } from "../src/models/unet_structure.js";
import { Weights } from "../src/models/weights.js";
import { AtEdm } from "../src/pruning/atedm.js";
import { Runtime } from "../src/runtime/session.js";
import { arg, loadConfig, syntheticWeights, table, unetFeeds } from "./common.js";

const model = arg("model", "sd15")!;
const threads = Number(arg("threads", String(availableParallelism())));
let cfg: UNetConfig;
let weights: Weights;
if (model === "sd15" || model === "sdxl") {
  cfg = loadConfig(model);
  weights = syntheticWeights(model, cfg);
} else {
  cfg = resolveUNetConfig(componentConfig(model, "unet"));
  weights = new Weights(componentWeights(model, "unet"));
}
const latent = Number(arg("latent", String(cfg.sample_size)));
const method = arg("method") === "atedm" ? new AtEdm({ ratio: Number(arg("ratio", "0.5")), schedule: "none", preset: "paper" }) : null;
const step = { step: 0, steps: 1 };
const blocks = method ? attentionBlocks(cfg) : [];
const dir = mkdtempSync(join(tmpdir(), "atedm-prof-"));
const rt = new Runtime({ threads });
const base = rt.sessionOptions.bind(rt);
rt.sessionOptions = () => ({ ...base(), enableProfiling: true, profileFilePrefix: join(dir, "p") });
const s = await rt.session(
  buildUNetGraph(cfg, weights, {
    runners: (b) => method?.runner(b),
    extraInputs: method ? blocks.flatMap((b) => method.inputs(b)) : [],
  }),
);
const feeds = unetFeeds(cfg, latent, latent);
if (method) for (const b of blocks) Object.assign(feeds, method.feeds(b, method.nominalRatio, { height: latent, width: latent }, 1, step));
await s.run(feeds);
await s.run(feeds);
(s.inner as unknown as { endProfiling(): void }).endProfiling();
const file = readdirSync(dir).find((f) => f.endsWith(".json"))!;
type Ev = { cat: string; name: string; dur: number; ts: number; args?: { op_name?: string } };
const events = JSON.parse(readFileSync(join(dir, file), "utf8")) as Ev[];
rmSync(dir, { recursive: true, force: true });
const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
const last = runs[runs.length - 1]!;
const nodes = events.filter((e) => e.cat === "Node" && e.ts >= last.ts && e.name.endsWith("_kernel_time"));
const total = last.dur / 1e6;
const sum = (key: (e: Ev) => string) => {
  const m = new Map<string, number>();
  for (const e of nodes) m.set(key(e), (m.get(key(e)) ?? 0) + e.dur / 1e6);
  return [...m].sort((a, b) => b[1] - a[1]);
};
const byOp = sum((e) => e.args?.op_name ?? "?");
process.stdout.write(`model run ${total.toFixed(3)} s, ${nodes.length} kernels\n\n`);
process.stdout.write(table(byOp.slice(0, 20).map(([op, t]) => ({ op, seconds: t, share: `${((100 * t) / total).toFixed(1)} %` }))) + "\n\n");
const byScope = sum((e) =>
  e.name.includes("/")
    ? e.name
        .split("/")
        .slice(0, -1)
        .join("/")
        .replace(/\.transformer_blocks\.\d+.*/, "")
    : "(top)",
);
process.stdout.write(table(byScope.slice(0, 15).map(([scope, t]) => ({ scope, seconds: t }))) + "\n\n");
const pruning = nodes.filter((e) => e.name.includes("/atedm/"));
const m = new Map<string, number>();
for (const e of pruning) m.set(e.args?.op_name ?? "?", (m.get(e.args?.op_name ?? "?") ?? 0) + e.dur / 1e6);
process.stdout.write(`pruning overhead (ops under the atedm scope): ${pruning.reduce((a, e) => a + e.dur, 0) / 1e6} s\n`);
process.stdout.write(table([...m].sort((a, b) => b[1] - a[1]).map(([op, t]) => ({ op, seconds: t }))) + "\n");
rt.dispose();
