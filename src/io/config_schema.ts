/**
 * Validation of the JSON and text files of a diffusers model folder, shared by the config resolvers
 * (`resolveUNetConfig`, `resolveVAEConfig`, `resolveCLIPTextConfig`), the tokenizer files, `model_index.json` and
 * the scheduler config. Schemas are valibot (small, tree-shakable, typed; no dependencies of its own).
 *
 * Every failure is an `AtedmError` of one line naming the file and the key, what was found and what is expected:
 *
 *     path/to/unet/config.json: layers_per_block = 1000000000 is invalid (expected an integer in 1..16)
 *
 * diffusers semantics stay: keys atedm does not read are ignored (the schemas strip them), a missing or null key
 * takes the diffusers default, and what this implementation does not cover is rejected by each resolver with its
 * own "is not supported" message.
 *
 * Hard sanity limits. They are far outside any real checkpoint (SD-1.x, SD-2.x, SD-XL, the tiny test fixtures and
 * models/shapes all pass) and exist so that a careless or hostile file fails at once instead of allocating a
 * typed array of 10^9 elements or looping for minutes. Integers must be JSON numbers that are integers (the
 * string "4" is rejected, 4.0 is accepted: JSON has one number type).
 *
 * | file                         | key                                             | limit                                               |
 * |------------------------------|-------------------------------------------------|-----------------------------------------------------|
 * | any JSON file, merges.txt    | file size                                       | at most 64 MiB                                      |
 * | model_index.json             | (the file)                                      | a JSON object with a non-empty string `_class_name` |
 * |                              | any array-valued key not starting with `_`,     | [library, class] (two strings) or [null, null]      |
 * |                              | and unet, vae, text_encoder(_2), tokenizer(_2), |                                                     |
 * |                              | scheduler when not null                         |                                                     |
 * |                              | force_zeros_for_empty_prompt                    | true, false or null                                 |
 * | unet/config.json             | block_out_channels                              | 1..8 entries, each an integer 1..16384              |
 * |                              | down_block_types, up_block_types                | at most 8 strings (then: one per level)             |
 * |                              | in_channels, out_channels                       | integer 1..64                                       |
 * |                              | layers_per_block                                | integer 1..16                                       |
 * |                              | transformer_layers_per_block                    | integer 1..64, or one per level                     |
 * |                              | attention_head_dim / num_attention_heads        | integer 1..256, or one per level; divides the       |
 * |                              |                                                 | channels of every level with attention              |
 * |                              | cross_attention_dim                             | integer 1..16384                                    |
 * |                              | norm_num_groups                                 | integer 1..16384, divides every block_out_channels  |
 * |                              | norm_eps                                        | number in (0, 1]                                    |
 * |                              | freq_shift                                      | integer -16..16                                     |
 * |                              | addition_time_embed_dim                         | null or integer 1..16384 (required for text_time)   |
 * |                              | projection_class_embeddings_input_dim           | null or integer 1..65536 (required for text_time)   |
 * |                              | sample_size (latent cells)                      | integer 1..1024                                     |
 * | vae/config.json              | block_out_channels                              | 1..8 entries, each an integer 1..16384              |
 * |                              | in_channels, out_channels, latent_channels      | integer 1..64                                       |
 * |                              | layers_per_block                                | integer 1..16                                       |
 * |                              | norm_num_groups                                 | integer 1..16384, divides every block_out_channels  |
 * |                              | sample_size (pixels)                            | integer 1..8192                                     |
 * |                              | scaling_factor                                  | number in [-100, 100], not 0                        |
 * |                              | shift_factor                                    | number in [-100, 100]                               |
 * |                              | latents_mean, latents_std                       | null or latent_channels numbers in [-1e4, 1e4]      |
 * | text_encoder(_2)/config.json | hidden_size                                     | integer 1..16384                                    |
 * |                              | intermediate_size                               | integer 1..65536                                    |
 * |                              | num_attention_heads                             | integer 1..256, divides hidden_size                 |
 * |                              | num_hidden_layers                               | integer 1..128                                      |
 * |                              | max_position_embeddings                         | integer 1..4096                                     |
 * |                              | vocab_size                                      | integer 1..1000000                                  |
 * |                              | eos_token_id                                    | integer 0..vocab_size - 1                           |
 * |                              | projection_dim                                  | null or integer 1..16384                            |
 * |                              | layer_norm_eps                                  | number in (0, 1]                                    |
 * | tokenizer(_2)/vocab.json     | (the file)                                      | an object of 1..1000000 tokens                      |
 * |                              | every token's id                                | integer 0..999999                                   |
 * | tokenizer(_2)/merges.txt     | every line but blank and `#version` ones        | two symbols; at most 1000000 merges                 |
 * | tokenizer_config.json        | model_max_length                                | integer 2..4096 (bos + eos need 2); above 1e9       |
 * |                              |                                                 | (transformers' "no limit", 1e30) means CLIP's 77    |
 * |                              | added_tokens_decoder keys                       | integer 0..999999                                   |
 * | scheduler_config.json        | num_train_timesteps                             | integer 2..100000 (a schedule needs 2)              |
 * |                              | beta_start, beta_end                            | number in (0, 1)                                    |
 * |                              | trained_betas                                   | null or 2..100000 numbers in (0, 1), one per        |
 * |                              |                                                 | training timestep                                   |
 * |                              | steps_offset                                    | integer 0..100000, below num_train_timesteps        |
 * |                              | clip_sample_range                               | number in (0, 1000]                                 |
 * |                              | sigma_min, sigma_max                            | null or number in [0, 100000]                       |
 * |                              | solver_order                                    | integer 1..8                                        |
 * |                              | lambda_min_clipped                              | -Infinity or number in [-1000, 1000]                |
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import * as v from "valibot";
import { AtedmError } from "../errors.js";

/** The numeric limits of the table above, as [min, max] (inclusive). */
export const LIMITS = {
  /** Bytes of a JSON file or merges.txt. */
  fileBytes: 64 * 1024 * 1024,
  /** Entries of block_out_channels (U-Net levels, VAE levels). */
  blocks: [1, 8],
  channels: [1, 16384],
  ioChannels: [1, 64],
  layersPerBlock: [1, 16],
  transformerLayers: [1, 64],
  heads: [1, 256],
  crossAttentionDim: [1, 16384],
  embedDim: [1, 16384],
  projectionInputDim: [1, 65536],
  freqShift: [-16, 16],
  unetSampleSize: [1, 1024],
  vaeSampleSize: [1, 8192],
  hiddenSize: [1, 16384],
  intermediateSize: [1, 65536],
  hiddenLayers: [1, 128],
  positions: [1, 4096],
  vocabSize: [1, 1_000_000],
  tokenId: [0, 999_999],
  merges: 1_000_000,
  modelMaxLength: [2, 4096],
  trainTimesteps: [2, 100_000],
  stepsOffset: [0, 100_000],
  solverOrder: [1, 8],
  // Non-integers; open or closed ends as the table says.
  normEps: [0, 1],
  scaleFactor: [-100, 100],
  latentStat: [-1e4, 1e4],
  beta: [0, 1],
  clipSampleRange: [0, 1000],
  sigma: [0, 100_000],
  lambdaMinClipped: [-1000, 1000],
} as const;

export type Range = readonly [number, number];

// ---------------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------------

/** A value as it appears in a message: JSON, at most 80 characters, always one line. */
export function show(value: unknown): string {
  let s: string;
  if (typeof value === "number" && !Number.isFinite(value)) s = String(value);
  else {
    try {
      s = JSON.stringify(value) ?? String(value);
    } catch {
      s = String(value).replace(/\s+/g, " ");
    }
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** `<source>: <key> = <value> is invalid (expected <expected>)`. */
export function invalid(source: string, key: string, value: unknown, expected: string): AtedmError {
  return new AtedmError(`${source}: ${key} = ${show(value)} is invalid (expected ${expected})`);
}

/** What a JSON value is, for "expected an object, found ...". */
export function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `a string (${show(value)})`;
  if (typeof value === "object") return "an object";
  return `${typeof value === "number" ? "a number" : typeof value === "boolean" ? "a boolean" : typeof value} (${show(value)})`;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------------------------------------

/** The text of a file, at most `LIMITS.fileBytes`; `what` goes into the not-found message. */
export function readTextFile(path: string, what?: string): string {
  if (!existsSync(path)) throw new AtedmError(`${path}: file not found${what ? ` (${what})` : ""}`);
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new AtedmError(`${path}: not a file`);
    const size = stat.size;
    if (size > LIMITS.fileBytes) throw new AtedmError(`${path}: ${size} bytes, expected at most ${LIMITS.fileBytes} (64 MiB)`);
    return readFileSync(path, "utf8");
  } catch (e) {
    if (e instanceof AtedmError) throw e;
    throw new AtedmError(`${path}: cannot read (${oneLine((e as Error).message)})`);
  }
}

/** Parse a JSON file; any JSON value. */
export function readJsonFile(path: string, what?: string): unknown {
  const text = readTextFile(path, what);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new AtedmError(`${path}: invalid JSON (${oneLine((e as Error).message)})`);
  }
}

/** Parse a JSON file that must hold an object: `null`, an array, a string or a number is a one-line error. */
export function readJsonObject(path: string, what?: string): Record<string, unknown> {
  const value = readJsonFile(path, what);
  if (!isObject(value)) throw new AtedmError(`${path}: expected a JSON object${what ? ` (${what})` : ""}, found ${kindOf(value)}`);
  return value;
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
}

// ---------------------------------------------------------------------------------------------------------------
// Schema building blocks (each carries its "expected ..." text as the valibot message)
// ---------------------------------------------------------------------------------------------------------------

export type Schema<T> = v.GenericSchema<unknown, T>;

const range = ([lo, hi]: Range): string => `${lo}..${hi}`;

/** An integer in [min, max] (a JSON number; strings are rejected). */
export function int(r: Range, what = "an integer"): Schema<number> {
  const m = `${what} in ${range(r)}`;
  return v.pipe(v.number(m), v.integer(m), v.minValue(r[0], m), v.maxValue(r[1], m));
}

/** A finite number in [min, max], or (min, max] / [min, max) / (min, max) with `open`. */
export function num(r: Range, open: { low?: boolean; high?: boolean } = {}): Schema<number> {
  const m = `a number in ${open.low ? "(" : "["}${r[0]}, ${r[1]}${open.high ? ")" : "]"}`;
  return v.pipe(v.number(m), v.finite(m), open.low ? v.gtValue(r[0], m) : v.minValue(r[0], m), open.high ? v.ltValue(r[1], m) : v.maxValue(r[1], m));
}

export const bool: Schema<boolean> = v.boolean("true or false");

/** The "expected ..." text a schema carries (its message, or its pipe's first schema's). */
function expectedOf(schema: unknown): string | undefined {
  const s = schema as { message?: unknown; pipe?: unknown[]; wrapped?: unknown } | undefined;
  if (!s) return undefined;
  if (typeof s.message === "string") return s.message;
  if (s.wrapped) return expectedOf(s.wrapped);
  if (Array.isArray(s.pipe)) return expectedOf(s.pipe[0]);
  return undefined;
}

/** An object schema (unknown keys dropped) whose "missing key" issue says what the key should hold. */
export function obj<E extends v.ObjectEntries>(entries: E) {
  return v.object(entries, (issue) => {
    const key = issue.path?.[issue.path.length - 1]?.key;
    return (typeof key === "string" ? expectedOf(entries[key]) : undefined) ?? "an object";
  });
}

/** `schema`, or the diffusers default when the key is missing or null. */
export function dflt<T>(schema: Schema<T>, value: T) {
  return v.nullish(schema, value);
}

/** `schema`, or null when the key is missing or null. */
export function orNull<T>(schema: Schema<T>) {
  return v.nullish(schema, null);
}

/** One integer for every block, or a list of them (1..8 entries; its length is checked against the blocks). */
export function intOrPerBlock(r: Range): Schema<number | number[]> {
  const m = `an integer in ${range(r)} or a list of ${LIMITS.blocks[1]} at most`;
  return v.union([int(r), v.pipe(v.array(int(r)), v.minLength(LIMITS.blocks[0], m), v.maxLength(LIMITS.blocks[1], m))], m);
}

/** A list of at most `max` strings. */
export function stringList(max: number): Schema<string[]> {
  const m = `a list of at most ${max} strings`;
  return v.pipe(v.array(v.string(m), m), v.maxLength(max, m));
}

/** block_out_channels: 1..8 integers 1..16384. */
export const blockOutChannels: Schema<number[]> = v.pipe(
  v.array(int(LIMITS.channels), `a list of ${range(LIMITS.blocks)} integers in ${range(LIMITS.channels)}`),
  v.minLength(LIMITS.blocks[0], `a list of ${range(LIMITS.blocks)} integers in ${range(LIMITS.channels)}`),
  v.maxLength(LIMITS.blocks[1], `a list of ${range(LIMITS.blocks)} integers in ${range(LIMITS.channels)}`),
);

// ---------------------------------------------------------------------------------------------------------------
// Running a schema
// ---------------------------------------------------------------------------------------------------------------

function issueKey(issue: v.BaseIssue<unknown>, prefix: string): string {
  let out = prefix;
  for (const p of issue.path ?? []) {
    const k = p.key;
    out += typeof k === "number" ? `[${k}]` : out === "" ? String(k) : `.${String(k)}`;
  }
  return out;
}

/** The one-line error of a failed valibot run: the deepest key, the value found there, the expected text. */
export function issueError(issue: v.BaseIssue<unknown>, source: string, prefix = ""): AtedmError {
  const key = issueKey(issue, prefix) || "(the file)";
  const last = issue.path?.[issue.path.length - 1] as { origin?: string } | undefined;
  if (issue.type === "object" && last?.origin === "key") return new AtedmError(`${source}: ${key} is missing (expected ${issue.message})`);
  return invalid(source, key, issue.input, issue.message);
}

/**
 * Validate `raw` (a config object) against an object schema, failing at the first issue with a one-line
 * `AtedmError` naming `source` and the key. Keys the schema does not declare are dropped from the output.
 */
export function parseConfig<T>(schema: Schema<T>, raw: unknown, source: string): T {
  if (!isObject(raw)) throw new AtedmError(`${source}: expected a JSON object, found ${kindOf(raw)}`);
  const r = v.safeParse(schema, raw, { abortEarly: true });
  if (!r.success) throw issueError(r.issues[0], source);
  return r.output;
}

/** Validate one value (`key` names it in the message). */
export function checkValue<T>(schema: Schema<T>, value: unknown, source: string, key: string): T {
  const r = v.safeParse(schema, value, { abortEarly: true });
  if (!r.success) throw issueError(r.issues[0], source, key);
  return r.output;
}

export { v };
