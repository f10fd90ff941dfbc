/**
 * node --import tsx bench/candidates.ts --config A.json[,B.json...] [--vae VAE.json] [--vae-for NAME] [--runs N]
 *   [--threads T] [--ratio 0.63] [--profile]
 *
 * Architecture candidates for a small embedded model (docs/sdxl-shapes-design.md), random weights, same run:
 * per U-Net config, the parameter count and F16 size, the analytic FLOPs (batch 1, SPEC convention) with the
 * attention share and AT-EDM's saving at `--ratio` (schedule none), and the latency of one U-Net call at batch 2
 * (classifier-free guidance: both halves in one call, as the pipeline runs them) unpruned and under AT-EDM with
 * preset `default` and preset `paper` (schedule none). The three sessions run round-robin (`--runs` rounds, after a
 * warm-up) so that load changes hit all of them alike; medians and same-run speed-ups. `--vae` times an
 * AutoencoderKL decoder (batch 1) on the latent of the config whose file name contains `--vae-for`, for the
 * projected 20-step time. `--profile` adds, per session, one profiled run: the time under the `atedm` scope and
 * the top operator types. `--explicit-layer1` adds a fourth session, preset `default` with layer 1's
 * self-attention built with explicit probabilities, as src/pruning/atedm.ts did before it built them only for the
 * variants that read the map (the same-run measure of that change: the default preset's random score and cosine
 * recovery never read it).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { basename, join } from "node:path";
import { methodFlops } from "../src/metrics/flops.js";
import type { PruningMethod, TransformerRunner } from "../src/models/pruning_hook.js";
import { attentionBlocks, resolveUNetConfig, type UNetConfig } from "../src/models/unet_structure.js";
import { SyntheticWeightStore, unetStateDictShapes } from "../src/models/unet_weights.js";
import { buildVAEDecoderGraph, resolveVAEConfig, vaeDecoderStateDictShapes } from "../src/models/vae.js";
import { Weights } from "../src/models/weights.js";
import { AtEdm } from "../src/pruning/atedm.js";
import { f32, Runtime, type Session, type Tensor } from "../src/runtime/session.js";
import { arg, machine, median, methodSession, table, unetFeeds } from "./common.js";

const configs = (arg("config") ?? "").split(",").filter(Boolean);
if (configs.length === 0) throw new Error("give --config FILE[,FILE...]");
const runs = Number(arg("runs", "7"));
const threads = Number(arg("threads", String(availableParallelism())));
const ratio = Number(arg("ratio", "0.63"));
const vaeFile = arg("vae");
const vaeFor = arg("vae-for", "lat");
const profile = process.argv.includes("--profile");
const explicitLayer1 = process.argv.includes("--explicit-layer1");
const STEP = { step: 0, steps: 1 };
const BATCH = 2;
const TEXT_ENCODER_F16_MB = 1.37; // models/shapes/text_encoder (hidden 128, 3 layers), kept as it is

/** `method`, with layer 1's attn1 built without explicit probabilities (only for variants that never read them). */
function withExplicitLayer1(method: AtEdm): PruningMethod {
  const wrapped = Object.create(method) as AtEdm;
  wrapped.runner = (b) => {
    const inner = method.runner(b) as TransformerRunner;
    return (ctx) => {
      const [L1, ...rest] = ctx.layers;
      return inner({ ...ctx, layers: [{ ...L1!, attn1: (h) => L1!.attn1(h, { explicitProbs: true }) }, ...rest] });
    };
  };
  return wrapped;
}

const count = (shapes: ReadonlyMap<string, readonly number[]>) => [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);

function methodFeeds(cfg: UNetConfig, method: PruningMethod | null, h: number, w: number): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  if (!method) return feeds;
  for (const b of attentionBlocks(cfg)) {
    const r = method.ratio(b, STEP);
    if (r > 0) Object.assign(feeds, method.feeds(b, r, { height: h, width: w }, BATCH, STEP));
  }
  return feeds;
}

/** One profiled run (after a warm-up) of a fresh session: total, time under the atedm scope, top op types. */
async function profiled(cfg: UNetConfig, weights: Weights, method: PruningMethod | null, feeds: Record<string, Tensor>) {
  const dir = mkdtempSync(join(tmpdir(), "atedm-cand-"));
  const rt = new Runtime({ threads });
  const base = rt.sessionOptions.bind(rt);
  rt.sessionOptions = () => ({ ...base(), enableProfiling: true, profileFilePrefix: join(dir, "p") });
  const s = await methodSession(rt, cfg, weights, method, STEP);
  await s.run(feeds);
  await s.run(feeds);
  (s.inner as unknown as { endProfiling(): void }).endProfiling();
  await s.release();
  rt.dispose();
  type Ev = { cat: string; name: string; dur: number; ts: number; args?: { op_name?: string } };
  const events = JSON.parse(readFileSync(join(dir, readdirSync(dir).find((f) => f.endsWith(".json"))!), "utf8")) as Ev[];
  rmSync(dir, { recursive: true, force: true });
  const last = events.filter((e) => e.cat === "Session" && e.name === "model_run").at(-1)!;
  const nodes = events.filter((e) => e.cat === "Node" && e.ts >= last.ts && e.name.endsWith("_kernel_time"));
  const byOp = new Map<string, number>();
  for (const e of nodes) byOp.set(e.args?.op_name ?? "?", (byOp.get(e.args?.op_name ?? "?") ?? 0) + e.dur / 1e6);
  const atedm = nodes.filter((e) => e.name.includes("/atedm/")).reduce((a, e) => a + e.dur, 0) / 1e6;
  const kernels = nodes.reduce((a, e) => a + e.dur, 0) / 1e6;
  return { total: last.dur / 1e6, kernels, nodes: nodes.length, atedm, byOp: [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 8) };
}

const rows: Array<Record<string, string | number>> = [];
const notes: string[] = [];
for (const file of configs) {
  const name = basename(file, ".json");
  const cfg = resolveUNetConfig(JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>, file);
  const h = cfg.sample_size;
  const w = cfg.sample_size;
  const shapes = unetStateDictShapes(cfg);
  const params = count(shapes);
  const weights = new Weights(new SyntheticWeightStore(shapes));
  const methods: Array<[string, PruningMethod | null]> = [
    ["unpruned", null],
    ["default", new AtEdm({ ratio, schedule: "none", preset: "default" })],
    ["paper", new AtEdm({ ratio, schedule: "none", preset: "paper" })],
  ];
  if (explicitLayer1) methods.push(["default, explicit L1", withExplicitLayer1(new AtEdm({ ratio, schedule: "none", preset: "default" }))]);
  const base = methodFlops(cfg, null, [h, w], STEP);
  const attnShare = 1 - (base.byCategory.resnet + base.byCategory.other) / base.total;
  const pruned = methodFlops(cfg, methods[2]![1], [h, w], STEP);
  const feeds = unetFeeds(cfg, h, w, BATCH);
  const rt = new Runtime({ threads });
  const sessions: Array<{ label: string; s: Session; feeds: Record<string, Tensor>; times: number[] }> = [];
  for (const [label, m] of methods) {
    const s = await methodSession(rt, cfg, weights, m, STEP);
    const all = { ...feeds, ...methodFeeds(cfg, m, h, w) };
    await s.run(all);
    sessions.push({ label, s, feeds: all, times: [] });
  }
  for (let i = 0; i < runs; i++) {
    for (const x of sessions) {
      const t = performance.now();
      await x.s.run(x.feeds);
      x.times.push((performance.now() - t) / 1000);
    }
  }
  const med = sessions.map((x) => median(x.times));
  // Same-run speed-up: the median over rounds of the per-round ratio.
  const speedup = (j: number) => median(sessions[0]!.times.map((t, i) => t / sessions[j]!.times[i]!));
  for (const x of sessions) await x.s.release();
  rt.dispose();

  let vaeS = 0;
  let vaeMB = 0;
  let vaeGflops = 0;
  if (vaeFile && name.includes(vaeFor!)) {
    const vcfg = resolveVAEConfig(JSON.parse(readFileSync(vaeFile, "utf8")) as Record<string, unknown>, vaeFile);
    const vshapes = vaeDecoderStateDictShapes(vcfg);
    // The encoder (training only) is about the decoder's size: count both for the shipped F16 size.
    vaeMB = (2 * count(vshapes) * 2) / 1e6;
    const vrt = new Runtime({ threads });
    const vs = await vrt.session(buildVAEDecoderGraph(vcfg, new Weights(new SyntheticWeightStore(vshapes))));
    const z = f32(new Float32Array(vcfg.latent_channels * h * w).fill(0.1), [1, vcfg.latent_channels, h, w]);
    await vs.run({ latent_sample: z });
    const vt: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await vs.run({ latent_sample: z });
      vt.push((performance.now() - t) / 1000);
    }
    vaeS = median(vt);
    await vs.release();
    vrt.dispose();
    // Decoder conv MACs, analytically (3x3 convs dominate; 1x1 shortcuts and post_quant_conv included).
    let macs = 0;
    let level = vcfg.block_out_channels.length - 1;
    const hw = (lv: number) => h * w * 4 ** (vcfg.block_out_channels.length - 1 - lv);
    for (const [k, s] of vshapes) {
      if (!k.endsWith(".weight") || s.length !== 4) continue;
      const m = /up_blocks\.(\d+)\./.exec(k);
      level = m ? vcfg.block_out_channels.length - 1 - Number(m[1]) : k.includes("conv_out") ? 0 : vcfg.block_out_channels.length - 1;
      // An up block's upsampler conv runs at the next (larger) level.
      const lv = k.includes("upsamplers") ? level - 1 : level;
      macs += hw(lv) * s[0]! * s[1]! * s[2]! * s[3]!;
    }
    vaeGflops = (2 * macs) / 1e9;
  }

  rows.push({
    candidate: name,
    "params M": params / 1e6,
    "F16 MB (+TE, +VAE)": (params * 2) / 1e6 + TEXT_ENCODER_F16_MB + vaeMB,
    GFLOPs: base.total / 1e9,
    "attn share": `${(100 * attnShare).toFixed(1)} %`,
    [`saving @${ratio}`]: `${(100 * (1 - pruned.total / base.total)).toFixed(1)} %`,
    "unpruned s (b2)": med[0]!,
    "default s": med[1]!,
    "default x": speedup(1),
    "paper s": med[2]!,
    "paper x": speedup(2),
    ...(explicitLayer1 ? { "default explicit-L1 s": med[3]!, "explicit-L1 x": speedup(3) } : {}),
    "VAE dec s": vaeS,
    "VAE GFLOPs": vaeGflops,
    "20 steps s": 20 * med[0]! + vaeS,
  });
  process.stderr.write(`${name}: ${med.map((m) => m.toFixed(4)).join(" / ")} s, load ${loadavg()[0]!.toFixed(2)}\n`);

  if (profile) {
    for (const [label, m] of methods) {
      const p = await profiled(cfg, weights, m, { ...feeds, ...methodFeeds(cfg, m, h, w) });
      notes.push(
        `${name} ${label}: run ${p.total.toFixed(4)} s, kernels ${p.kernels.toFixed(4)} s in ${p.nodes} nodes, atedm scope ${p.atedm.toFixed(4)} s; ` +
          p.byOp.map(([op, t]) => `${op} ${t.toFixed(4)}`).join(", "),
      );
    }
  }
}

const command = `node --import tsx bench/candidates.ts ${process.argv.slice(2).join(" ")}`;
const load = loadavg()
  .map((x) => x.toFixed(2))
  .join(" ");
process.stdout.write(`\n${command}\nmachine: ${machine(threads)}; load average ${load}\n\n${table(rows)}\n`);
if (notes.length) process.stdout.write(`\nprofiles (one run each):\n${notes.join("\n")}\n`);
