/**
 * The recovery-error oracle (src/eval/recovery_error.ts, `atedm recovery-error`) on the embedded shapes model, one
 * prompt, 3 steps: the probe leaves the generation unpruned and reports it so; `zero` recovery is exactly 1 on every
 * (block, step) (the anchor of rel_branch); a ratio that prunes nothing in the 8x8 blocks and one token in the 16x16
 * ones gives no pruned-position error and no kept-position error where nothing is pruned; and every (block, step)
 * value of copy and copy-col with a clear keep set and clear recovery sources equals a float64 recomputation from
 * the captured block input (test/helpers/transformer_reference.ts: the dense block, and the AT-EDM composition).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { recoveryErrorCommand } from "../src/cli/recovery_error.js";
import { DEFAULT_MODEL } from "../src/cli/generate.js";
import { AtedmError } from "../src/errors.js";
import { BlockInputProbe, captureBlockInputs, type RecoveryErrorRecord, recoveryErrors } from "../src/eval/recovery_error.js";
import { blockTokens } from "../src/models/unet_structure.js";
import { loadPipeline } from "../src/pipeline/text_to_image.js";
import { applyAtEdm, applyPruning, removePruning } from "../src/pruning/index.js";
import { keepCount, RECOVERY_VARIANTS } from "../src/pruning/atedm_math.js";
import { atedmBlockReference, denseBlockReference, ReferenceBlock } from "./helpers/transformer_reference.js";

const PROMPT = "a red circle at the top left on a white background";
const STEPS = 3;
const RATIO = 0.5;
/** Keep-set boundaries and recovery choices count as clear above this (float32 moves them by ~1e-6 relative). */
const CLEAR = 1e-4;

const pipe = await loadPipeline(DEFAULT_MODEL, { threads: 2 });
const blocks = pipe.unet.blocks;
const latent = { height: pipe.unet.config.sample_size, width: pipe.unet.config.sample_size };
/** The main run, shared by the tests below: all variants at ratio 0.5. */
const main = await recoveryErrors(pipe, { prompts: [PROMPT], steps: STEPS, ratio: RATIO, score: "gwpr" });
const key = (r: RecoveryErrorRecord) => `${r.block}|${r.step}`;
const fmt = (x: number | null) => (x === null ? "null" : x.toExponential(3));

test.after(() => pipe.release());

test("the probe runs the unpruned model: same image, kept tokens N, unpruned FLOPs; the method installed before is put back", async () => {
  const plain = await pipe.generate({ prompt: PROMPT, seed: 0, steps: STEPS });
  const probe = applyPruning(pipe, new BlockInputProbe(blocks[0]!.path));
  const probed = await pipe.generate({ prompt: PROMPT, seed: 0, steps: STEPS, withMasks: true });
  removePruning(pipe);
  let maxAbs = 0;
  for (let i = 0; i < plain.image.length; i++) maxAbs = Math.max(maxAbs, Math.abs(plain.image[i]! - probed.image[i]!));
  assert.ok(maxAbs <= 1e-6, `probe changed the image: max abs ${maxAbs} (tol 1e-6)`);
  for (const s of probed.stepInfo) for (const b of blocks) assert.equal(s.keptTokens[b.path], blockTokens(latent, b), `${b.path} kept tokens`);
  applyPruning(pipe, probe);
  const f = pipe.unetFlopsPerStep(latent.height, latent.width, probed.stepInfo);
  removePruning(pipe);
  assert.equal(f.pruned, f.unpruned, "probe FLOPs = unpruned FLOPs");

  const before = applyAtEdm(pipe, { ratio: 0.3 });
  const cap = await captureBlockInputs(pipe, { prompt: PROMPT, seed: 0, steps: STEPS });
  assert.equal(pipe.unet.pruning, before, "captureBlockInputs puts the installed method back");
  removePruning(pipe);
  assert.equal(cap.captured.length, STEPS);
  for (const c of cap.captured) {
    assert.deepEqual(c.context.dims, [2, pipe.tokenizer.modelMaxLength, pipe.unet.config.cross_attention_dim], "encoder hidden states (CFG pair)");
    for (const b of blocks)
      assert.deepEqual(c.inputs[b.path]!.dims, [2, b.channels, latent.height / b.downsample, latent.width / b.downsample], b.path);
  }
});

test("zero recovery is exactly 1 on every (block, step); rel_kept is the same for every variant; copy and cosine are finite and positive", () => {
  assert.deepEqual(main.variants, RECOVERY_VARIANTS);
  assert.equal(main.records.length, blocks.length * STEPS * RECOVERY_VARIANTS.length);
  const kept = new Map<string, number>();
  for (const r of main.records.filter((x) => x.variant === "zero")) {
    const N = blockTokens(latent, blocks.find((b) => b.path === r.block)!);
    assert.equal(r.pruned, N - keepCount(N, RATIO), `${key(r)}: pruned tokens`);
    assert.ok(r.pruned > 0, `${key(r)}: tokens pruned`);
    assert.ok(Math.abs(r.rel_branch! - 1) <= 1e-5, `${key(r)}: zero rel_branch ${fmt(r.rel_branch)}, want 1 (tol 1e-5)`);
    kept.set(key(r), r.rel_kept!);
  }
  assert.equal(kept.size, blocks.length * STEPS);
  for (const r of main.records) {
    // Every variant refills only pruned positions: the kept ones are the same computation.
    const want = kept.get(key(r))!;
    assert.ok(Math.abs(r.rel_kept! - want) <= 1e-5 * Math.max(1, want), `${key(r)} ${r.variant}: rel_kept ${fmt(r.rel_kept)} vs zero's ${fmt(want)}`);
    // Depth 2 after layer 1: layer 2 saw only the kept tokens, so kept positions move.
    assert.ok(r.rel_kept! > 1e-4, `${key(r)}: rel_kept ${fmt(r.rel_kept)} should show layer 2 on kept tokens only`);
    if (r.variant === "copy" || r.variant === "cosine") {
      assert.ok(r.rel_branch! > 1e-3 && r.rel_branch! < 10, `${key(r)} ${r.variant}: rel_branch ${fmt(r.rel_branch)} outside (1e-3, 10)`);
      assert.ok(r.rel_output! > 0 && Number.isFinite(r.rel_output!), `${key(r)} ${r.variant}: rel_output ${fmt(r.rel_output)}`);
    }
  }
  // The aggregates are means of the records.
  for (const v of main.variants) {
    const rs = main.records.filter((r) => r.variant === v);
    const m = rs.reduce((a, r) => a + r.rel_branch!, 0) / rs.length;
    assert.ok(Math.abs(main.overall[v]!.rel_branch! - m) < 1e-12, `${v}: overall mean`);
    assert.equal(main.per_block[v]![blocks[0]!.path]!.n, STEPS);
    assert.equal(main.per_step[v]!.length, STEPS);
  }
  assert.ok(Math.abs(main.overall.zero!.rel_branch! - 1) <= 1e-5);
  for (const v of main.variants) {
    const perBlock = Object.entries(main.per_block[v]!).map(([block, st]) => ({ block, rel_branch: st.rel_branch! }));
    const max = perBlock.reduce((a, b) => (b.rel_branch > a.rel_branch ? b : a));
    assert.deepEqual(main.worst_block[v], max, `${v}: worst block`);
  }
});

test("ratio 0.005: the 8x8 blocks prune nothing (no error anywhere), the 16x16 blocks prune one token per element", async () => {
  const r = await recoveryErrors(pipe, { prompts: [PROMPT], steps: 2, ratio: 0.005, variants: ["zero", "copy"] });
  let none = 0;
  let one = 0;
  for (const rec of r.records) {
    const N = blockTokens(latent, blocks.find((b) => b.path === rec.block)!);
    if (N === 64) {
      assert.equal(rec.pruned, 0, `${key(rec)}: nothing pruned`);
      assert.equal(rec.rel_branch, null, `${key(rec)}: no pruned positions, no rel_branch`);
      assert.equal(rec.rel_output, null);
      assert.ok(rec.rel_kept! <= 1e-4, `${key(rec)} ${rec.variant}: pruned graph keeping every token vs dense: ${fmt(rec.rel_kept)} (tol 1e-4)`);
      none++;
    } else {
      assert.equal(N, 256);
      assert.equal(rec.pruned, 1, `${key(rec)}: one token pruned`);
      if (rec.variant === "zero") assert.ok(Math.abs(rec.rel_branch! - 1) <= 1e-5, `${key(rec)}: zero rel_branch ${fmt(rec.rel_branch)}`);
      assert.ok(rec.rel_kept! > 0, `${key(rec)}: one token fewer in layer 2 moves the kept ones`);
      one++;
    }
  }
  assert.ok(none > 0 && one > 0, `both kinds of block: ${none} unpruned, ${one} with one token pruned`);
  assert.equal(r.blocks.find((b) => b.tokens === 64)!.kept, 64);
});

test("copy and copy-col values equal a float64 recomputation from the captured block inputs (clear cases)", async (t) => {
  const cap = await captureBlockInputs(pipe, { prompt: PROMPT, seed: 0, steps: STEPS });
  const store = pipe.unet.weights.store;
  const cfg = pipe.unet.config;
  let checked = 0;
  for (const block of blocks) {
    const blk = new ReferenceBlock(cfg, store, block);
    const [H, W] = [latent.height / block.downsample, latent.width / block.downsample];
    const N = H * W;
    const k = keepCount(N, RATIO);
    for (const [step, c] of cap.captured.entries()) {
      const x = c.inputs[block.path]!.data as Float32Array;
      const ctx = c.context.data as Float32Array;
      const inp = { x, ctx, B: 2, H, W, Lt: c.context.dims[1]! };
      const dense = denseBlockReference(blk, inp);
      for (const variant of ["copy", "copy-col"] as const) {
        const want = atedmBlockReference(blk, inp, { score: "gwpr", recovery: variant, pruningPoint: "after-layer1", maskSharing: "per-element" }, k);
        if (want.gaps.some((g) => g <= CLEAR) || want.margins.some((m) => m! <= CLEAR)) continue;
        // rel_branch by hand over both elements' pruned positions.
        let err = 0;
        let branch = 0;
        for (let b = 0; b < 2; b++) {
          const keep = new Set(want.keep[b]);
          for (let ch = 0; ch < block.channels; ch++) {
            for (let i = 0; i < N; i++) {
              if (keep.has(i)) continue;
              const t = (b * block.channels + ch) * N + i;
              err += (want.out[t]! - dense[t]!) ** 2;
              branch += (dense[t]! - x[t]!) ** 2;
            }
          }
        }
        const expected = Math.sqrt(err / branch);
        const got = main.records.find((r) => r.block === block.path && r.step === step && r.variant === variant)!;
        assert.ok(
          Math.abs(got.rel_branch! - expected) <= 1e-3 * expected,
          `${block.path} step ${step} ${variant}: rel_branch ${fmt(got.rel_branch)}, float64 ${fmt(expected)} (rel tol 1e-3)`,
        );
        checked++;
      }
    }
  }
  t.diagnostic(`${checked} of ${blocks.length * STEPS * 2} (block, step, variant) cases clear and checked`);
  assert.ok(checked >= 8, `at least 8 clear (block, step, variant) cases checked, got ${checked}`);
});

test("atedm recovery-error: --json, the table, --help lists every variant, one-line errors", async () => {
  const dir = mkdtempSync(join(tmpdir(), "atedm-re-"));
  const prompts = join(dir, "p.txt");
  writeFileSync(prompts, `# one prompt\n\n${PROMPT}\n`);
  // The command's own writes are strings; the test runner's reporter writes buffers, which pass through.
  const run = async (args: string[]) => {
    const out: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk === "string") return out.push(chunk) > 0;
      return (write as (...a: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
    } as typeof process.stdout.write;
    try {
      return { code: await recoveryErrorCommand(args), stdout: out.join("") };
    } finally {
      process.stdout.write = write;
    }
  };
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  for (const v of RECOVERY_VARIANTS) assert.ok(help.stdout.includes(v), `--help names ${v}`);
  for (const f of ["--prompts", "--model", "--seeds", "--steps", "--ratio", "--recovery", "--score", "--json", "--progress", "--threads"]) {
    assert.ok(help.stdout.includes(f), `--help explains ${f}`);
  }

  const base = ["--prompts", prompts, "--steps", "2", "--threads", "1", "--recovery", "zero,copy,zero"];
  const json = await run([...base, "--json"]);
  assert.equal(json.code, 0);
  const report = JSON.parse(json.stdout);
  assert.deepEqual(report.variants, ["zero", "copy"], "duplicates dropped, order kept");
  assert.deepEqual(report.prompts, [PROMPT], "blank lines and # comments skipped");
  assert.ok(Math.abs(report.overall.zero.rel_branch - 1) <= 1e-5);
  assert.equal(report.records, undefined, "--json prints the aggregates, not every record");
  assert.equal(report.per_step.copy.length, 2);

  const table = await run(base);
  assert.equal(table.code, 0);
  assert.match(table.stdout, /^zero +1\.000 +\d\.\d{3} +\d\.\d{3} +1\.000 {2}[\w.]+$/m);
  assert.match(table.stdout, /^down_blocks\.1\.attentions\.0 \(256->128\) +1\.000 +\d\.\d{3}$/m);

  for (const [args, message] of [
    [["--steps", "2"], /--prompts FILE is required/],
    [["--prompts", join(dir, "missing.txt")], /missing\.txt: cannot read \(ENOENT\)/],
    [["--prompts", prompts, "--recovery", "copy,bogus"], /--recovery must be one of copy, .*, got 'bogus'/],
    [["--prompts", prompts, "--recovery", "copy,"], /--recovery: empty name/],
    [["--prompts", prompts, "--ratio", "1"], /--ratio must be a number in \[0, 1\)/],
    [["--prompts", prompts, "--bogus"], /recovery-error: Unknown option '--bogus'/],
  ] as Array<[string[], RegExp]>) {
    await assert.rejects(run(args), (e: unknown) => e instanceof AtedmError && message.test(e.message) && !e.message.includes("\n"), args.join(" "));
  }
});
