import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { AtedmError } from "../src/errors.js";
import type { HostTensor } from "../src/io/safetensors.js";
import { CLIPTokenizer } from "../src/models/clip_tokenizer.js";
import { TINY_SD, TINY_SDXL, fixturesPresent, golden, tensorOf } from "./helpers/golden.js";

/** The golden prompts (tiny-sd/golden/README.md, identical for tiny-sdxl). */
const PROMPTS = [
  "a photograph of an astronaut riding a horse on the moon",
  "A cozy Cabin in the snowy MOUNTAINS, 4k, highly-detailed;  it's golden   hour!!",
  "a red cube on a blue sphere next to a green pyramid under a purple sky, ".repeat(7).trimEnd(),
  "",
];
const NEGATIVE = "blurry, low quality, watermark";

/** An int64 [n, len] golden tensor as n rows of numbers. */
function rows(name: string, g: Map<string, HostTensor>, model: string): number[][] {
  const t = tensorOf(g, name);
  assert.ok(t.data instanceof BigInt64Array, `${model}:${name} is int64`);
  const [n, len] = t.dims as [number, number];
  const data = Array.from(t.data as BigInt64Array, Number);
  assert.equal(data.length, n * len, `${model}:${name} shape`);
  return Array.from({ length: n }, (_, i) => data.slice(i * len, (i + 1) * len));
}

/** The fixture vocabulary (all three fixture tokenizers share it). */
function fixtureVocab(): Record<string, number> {
  return JSON.parse(readFileSync(join(TINY_SD, "tokenizer", "vocab.json"), "utf8")) as Record<string, number>;
}

const CASES = [
  { model: TINY_SD, label: "tiny-sd tokenizer", dir: "tokenizer", prefix: "text_encoder" },
  { model: TINY_SDXL, label: "tiny-sdxl tokenizer", dir: "tokenizer", prefix: "text_encoder" },
  { model: TINY_SDXL, label: "tiny-sdxl tokenizer_2", dir: "tokenizer_2", prefix: "text_encoder_2" },
] as const;

describe("CLIPTokenizer against diffusers goldens", { skip: !fixturesPresent() && "fixtures missing" }, () => {
  test("the golden prompts in this test are the manifest's prompts", () => {
    for (const model of [TINY_SD, TINY_SDXL]) {
      // Python's json writes -Infinity (scheduler config); make it parseable.
      const text = readFileSync(join(model, "golden", "manifest.json"), "utf8").replace(/-?Infinity\b/g, "null");
      const m = JSON.parse(text) as {
        prompts: { text_prompts: string[]; negative_prompt: string };
      };
      assert.deepEqual(m.prompts.text_prompts, PROMPTS);
      assert.equal(m.prompts.negative_prompt, NEGATIVE);
    }
  });

  for (const c of CASES) {
    const tok = () => CLIPTokenizer.fromPretrained(join(c.model, c.dir));

    test(`${c.label}: padded+truncated input_ids of all prompts match text_encoders.safetensors exactly`, () => {
      const t = tok();
      const expected = rows(`${c.prefix}.input_ids`, golden(c.model, "text_encoders.safetensors"), c.label);
      assert.equal(expected.length, PROMPTS.length);
      PROMPTS.forEach((p, i) => assert.deepEqual(t.encode(p).ids, expected[i], `prompts[${i}]`));
    });

    PROMPTS.forEach((p, i) => {
      test(`${c.label}: untruncated ids of prompts[${i}] match exactly (BPE, split regex, bos/eos)`, () => {
        const t = tok();
        const [expected] = rows(`${c.prefix}.untruncated_ids.${i}`, golden(c.model, "text_encoders.safetensors"), c.label);
        const raw = t.encodeRaw(p);
        assert.deepEqual([t.bosTokenId, ...raw, t.eosTokenId], expected);
        assert.equal(t.encode(p).untruncatedLength, expected!.length);
      });
    });

    test(`${c.label}: pipeline_s4 ids (prompt, negative prompt) match exactly`, () => {
      const t = tok();
      const expected = rows(`${c.prefix}.input_ids`, golden(c.model, "pipeline_s4.safetensors"), c.label);
      assert.deepEqual(expected, [t.encode(PROMPTS[0]!).ids, t.encode(NEGATIVE).ids]);
    });

    test(`${c.label}: pipeline_s8 ids (tricky prompt; SD encodes "" as negative) match exactly`, () => {
      const t = tok();
      const expected = rows(`${c.prefix}.input_ids`, golden(c.model, "pipeline_s8.safetensors"), c.label);
      // SD encodes "" for negative_prompt=None; SD-XL uses zero negative embeddings (no second row).
      const want = c.model === TINY_SD ? [PROMPTS[1]!, ""] : [PROMPTS[1]!];
      assert.deepEqual(
        expected,
        want.map((p) => t.encode(p).ids),
      );
    });
  }

  test("special ids and max length come from the folder's configs", () => {
    const sd = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    assert.deepEqual([sd.bosTokenId, sd.eosTokenId, sd.padTokenId, sd.modelMaxLength], [706, 707, 707, 77]);
    const xl2 = CLIPTokenizer.fromPretrained(join(TINY_SDXL, "tokenizer_2"));
    assert.deepEqual([xl2.bosTokenId, xl2.eosTokenId, xl2.padTokenId, xl2.modelMaxLength], [706, 707, 0, 77]);
  });

  test("tokenizer_2's pad token '!' is a special token: every '!' splits out as id 0; tokenizer/ keeps '!!</w>'", () => {
    const sd = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    const xl2 = CLIPTokenizer.fromPretrained(join(TINY_SDXL, "tokenizer_2"));
    const vocab = fixtureVocab();
    const hour = vocab["hour</w>"];
    assert.ok(hour !== undefined, "fixture vocab has hour</w>");
    assert.deepEqual(xl2.encodeRaw("hour!!"), [hour, 0, 0]);
    assert.deepEqual(sd.encodeRaw("hour!!"), [hour, vocab["!!</w>"]]);
    // "!" inside a punctuation run is cut out too, splitting the run.
    assert.deepEqual(xl2.encodeRaw("?!?"), [vocab["?</w>"], 0, vocab["?</w>"]]);
    assert.equal(xl2.encodeRaw(PROMPTS[1]!).length, sd.encodeRaw(PROMPTS[1]!).length + 1);
  });

  test("long prompt (121 tokens) is truncated to [bos] + 75 + [eos] and flagged; short ones are not", () => {
    for (const c of CASES) {
      const t = CLIPTokenizer.fromPretrained(join(c.model, c.dir));
      const r = t.encode(PROMPTS[2]!);
      assert.equal(r.truncated, true);
      assert.equal(r.untruncatedLength, 121);
      assert.equal(r.ids.length, 77);
      assert.equal(r.ids[0], t.bosTokenId);
      assert.equal(r.ids[76], t.eosTokenId);
      assert.deepEqual(r.ids.slice(1, 76), t.encodeRaw(PROMPTS[2]!).slice(0, 75));
      assert.equal(t.encode(PROMPTS[0]!).truncated, false);
      // Boundary: 75 content tokens fit exactly, 76 are truncated.
      assert.equal(t.encodeRaw("a ".repeat(75)).length, 75);
      const fits = t.encode("a ".repeat(75));
      assert.equal(fits.truncated, false);
      assert.equal(fits.ids[76], t.eosTokenId);
      assert.equal(t.encode("a ".repeat(76)).truncated, true);
    }
  });

  test("empty prompt encodes to [bos, eos] + pad", () => {
    for (const c of CASES) {
      const t = CLIPTokenizer.fromPretrained(join(c.model, c.dir));
      assert.deepEqual(t.encodeRaw(""), []);
      assert.deepEqual(t.encodeRaw("   \n\t "), []);
      const r = t.encode("");
      assert.deepEqual(r, {
        ids: [t.bosTokenId, t.eosTokenId, ...new Array<number>(75).fill(t.padTokenId)],
        truncated: false,
        untruncatedLength: 2,
      });
    }
  });

  test("normalization: case, whitespace runs and NFC do not change ids", () => {
    const t = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    assert.deepEqual(t.encodeRaw("A  Photograph\tOF\n the MOON"), t.encodeRaw("a photograph of the moon"));
    // "é" precomposed vs e + combining acute.
    assert.deepEqual(t.encodeRaw("caf\u00e9"), t.encodeRaw("cafe\u0301"));
    // Digits are split one by one; the contraction is its own piece.
    const vocab = fixtureVocab();
    assert.deepEqual(t.encodeRaw("42"), [vocab["4</w>"], vocab["2</w>"]]);
  });

  test("special-token strings in the text become their ids", () => {
    const t = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    assert.deepEqual(t.encodeRaw("<|startoftext|>moon<|endoftext|>"), [706, ...t.encodeRaw("moon"), 707]);
  });

  test("decode inverts encode for the golden prompts (lowercased, whitespace collapsed)", () => {
    const t = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    assert.equal(t.decode(t.encodeRaw(PROMPTS[0]!)), PROMPTS[0]);
    assert.equal(t.decode(t.encode(PROMPTS[0]!).ids, { skipSpecialTokens: true }), PROMPTS[0]);
    assert.equal(t.decode(t.encodeRaw("Hello, World")), "hello, world");
    assert.equal(t.decode([706, ...t.encodeRaw("moon"), 707]), "<|startoftext|>moon <|endoftext|>");
  });

  test("BPE results are cached per word and reused (same ids on repeated words)", () => {
    const t = CLIPTokenizer.fromPretrained(join(TINY_SD, "tokenizer"));
    const once = t.encodeRaw("astronaut");
    assert.deepEqual(t.encodeRaw("astronaut astronaut"), [...once, ...once]);
  });
});

describe("CLIPTokenizer.fromVocab (in-memory, for the training recipe)", () => {
  // Byte-level alphabet for "a", "b", "!" plus merges a+b, ab+a</w>.
  const vocab: Record<string, number> = {
    "!": 0,
    a: 1,
    b: 2,
    "a</w>": 3,
    "b</w>": 4,
    "!</w>": 5,
    ab: 6,
    "aba</w>": 7,
    "<|startoftext|>": 8,
    "<|endoftext|>": 9,
  };
  const merges = ["#version: 0.2", "a b", "ab a</w>"];

  test("applies merges by rank and the </w> suffix", () => {
    const t = CLIPTokenizer.fromVocab(vocab, merges);
    assert.deepEqual(t.encodeRaw("aba"), [7]);
    assert.deepEqual(t.encodeRaw("ABA b"), [7, 4]);
    // The merge "a b" does not apply to "a" + "b</w>" (end-of-word symbol differs).
    assert.deepEqual(t.encodeRaw("ab"), [1, 4]);
    assert.deepEqual(t.encodeRaw("abb"), [6, 4]);
    assert.deepEqual([t.bosTokenId, t.eosTokenId, t.padTokenId, t.modelMaxLength], [8, 9, 9, 77]);
  });

  test("options set pad token and max length", () => {
    const t = CLIPTokenizer.fromVocab(vocab, merges, { padToken: "!", modelMaxLength: 6 });
    assert.deepEqual(t.encode("a!").ids, [8, 3, 0, 9, 0, 0]);
    assert.deepEqual(t.encode("a a a a a"), { ids: [8, 3, 3, 3, 3, 9], truncated: true, untruncatedLength: 7 });
  });

  test("characters missing from the vocabulary map to the unk token", () => {
    const t = CLIPTokenizer.fromVocab(vocab, merges);
    assert.deepEqual(t.encodeRaw("z"), [9]);
  });
});

describe("CLIPTokenizer errors", { skip: !fixturesPresent() && "fixtures missing" }, () => {
  function copyTokenizer(): string {
    const dir = mkdtempSync(join(tmpdir(), "atedm-tok-"));
    cpSync(join(TINY_SD, "tokenizer"), dir, { recursive: true });
    return dir;
  }

  test("missing vocab.json throws AtedmError naming the file", () => {
    const dir = copyTokenizer();
    try {
      rmSync(join(dir, "vocab.json"));
      assert.throws(
        () => CLIPTokenizer.fromPretrained(dir),
        (e: unknown) => e instanceof AtedmError && e.message.includes("vocab.json") && !e.message.includes("\n"),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("missing merges.txt throws AtedmError naming the file", () => {
    const dir = copyTokenizer();
    try {
      rmSync(join(dir, "merges.txt"));
      assert.throws(
        () => CLIPTokenizer.fromPretrained(dir),
        (e: unknown) => e instanceof AtedmError && e.message.includes("merges.txt"),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("corrupt vocab.json throws a one-line AtedmError naming the file", () => {
    const dir = copyTokenizer();
    try {
      writeFileSync(join(dir, "vocab.json"), '{"a": 1,');
      assert.throws(
        () => CLIPTokenizer.fromPretrained(dir),
        (e: unknown) => e instanceof AtedmError && e.message.includes("vocab.json") && !e.message.includes("\n"),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
