/**
 * CLIP byte-level BPE tokenizer, behaving like transformers' `CLIPTokenizer` on a diffusers `tokenizer/` folder
 * (vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json).
 *
 * The golden ids were produced by transformers 5.x, whose `CLIPTokenizer` is backed by the `tokenizers` library;
 * this file follows that pipeline (it agrees with the old pure-Python tokenizer on ordinary prompts):
 *
 * 1. Added/special tokens (bos, eos, unk, pad, additional_special_tokens, added_tokens_decoder) are cut out of the
 *    text first, leftmost-longest. Tokens flagged `normalized: false` (and plain-string special tokens, e.g. SD-XL
 *    tokenizer_2's `pad_token: "!"`) are matched in the raw text; `normalized: true` ones in the normalized text.
 *    So in tokenizer_2 every `!` becomes its own token (id 0): `hour!!` -> `hour</w>`, `!`, `!`.
 * 2. Each remaining segment: NFC, every whitespace run -> one space, per-code-point lowercase.
 * 3. Split with `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+` (whitespace is
 *    dropped; digits one by one; punctuation runs stay together), then the GPT-2 byte-level regex inside each piece
 *    (a no-op except for a literal special-token string that was not cut out in step 1).
 * 4. UTF-8 bytes -> the byte-level alphabet; the last symbol gets `</w>`; merges applied by rank (lowest first,
 *    all occurrences left to right); symbols -> ids (unknown -> unk).
 *
 * `encode` is what the diffusers pipelines do: `tokenizer(prompt, padding="max_length", max_length=77,
 * truncation=True)` = `[bos] + ids[:max-2] + [eos]`, right-padded with the pad token.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";
import {
  checkValue,
  int,
  invalid,
  isObject,
  issueError,
  kindOf,
  LIMITS,
  obj,
  parseConfig,
  readJsonFile,
  readJsonObject,
  readTextFile,
  v,
} from "../io/config_schema.js";

/** A special/added token with the flags of transformers' `AddedToken`. */
export interface AddedTokenSpec {
  content: string;
  /** Matched in the normalized text (true) or the raw text (false). Default: false for special tokens. */
  normalized?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  singleWord?: boolean;
  special?: boolean;
}

export type TokenLike = string | AddedTokenSpec;

export interface CLIPTokenizerOptions {
  bosToken?: TokenLike;
  eosToken?: TokenLike;
  padToken?: TokenLike;
  unkToken?: TokenLike;
  additionalSpecialTokens?: TokenLike[];
  /** Extra added tokens with fixed ids (tokenizer_config.json `added_tokens_decoder`). */
  addedTokens?: Array<{ id: number; token: AddedTokenSpec }>;
  /** Default 77 (every CLIP text encoder has 77 positions). */
  modelMaxLength?: number;
  /** transformers' `clean_up_tokenization_spaces` for `decode`. Default true. */
  cleanUpTokenizationSpaces?: boolean;
}

const DEFAULT_BOS = "<|startoftext|>";
const DEFAULT_EOS = "<|endoftext|>";
const DEFAULT_MAX_LENGTH = 77;
const CACHE_LIMIT = 10_000;

/** Whitespace as the `tokenizers` regex engine (Oniguruma, Unicode White_Space) sees it. */
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WS_RUN = new RegExp(`[${WS}]+`, "gu");
const WS_CHAR = new RegExp(`^[${WS}]$`, "u");
const CLIP_SPLIT = new RegExp(`<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${WS}\\p{L}\\p{N}]+`, "gu");
const GPT2_SPLIT = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`, "gu");
const WORD_CHAR = /^[\p{L}\p{N}_]$/u;

/** GPT-2's reversible byte -> printable-character table. */
function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  }
  return table;
}
const BYTE_ENCODER = bytesToUnicode();
const BYTE_DECODER = new Map<string, number>(BYTE_ENCODER.map((c, b) => [c, b]));
const utf8 = new TextEncoder();

function specOf(t: TokenLike, special: boolean): AddedTokenSpec {
  return typeof t === "string" ? { content: t, special, normalized: !special } : { special, ...t };
}

/** NFC, whitespace runs -> " ", lowercase one code point at a time (like `tokenizers`' Lowercase: no final sigma). */
function normalize(text: string): string {
  const t = text.normalize("NFC").replace(WS_RUN, " ");
  let out = "";
  for (const ch of t) out += ch.toLowerCase();
  return out;
}

interface AddedEntry {
  spec: AddedTokenSpec;
  /** The string matched in text (normalized content for normalized tokens). */
  match: string;
  id: number;
}

type Segment = { text: string } | { id: number };

export class CLIPTokenizer {
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number | undefined;
  readonly modelMaxLength: number;
  readonly cleanUpTokenizationSpaces: boolean;

  private readonly encoder: Map<string, number>;
  private readonly decoder = new Map<number, string>();
  private readonly ranks = new Map<string, number>();
  private readonly rawAdded: AddedEntry[] = [];
  private readonly normAdded: AddedEntry[] = [];
  private readonly specialIds = new Set<number>();
  private readonly cache = new Map<string, number[]>();

  private constructor(vocab: Record<string, number>, merges: string[], options: CLIPTokenizerOptions, source: string) {
    this.encoder = new Map();
    for (const [tok, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) {
        throw new AtedmError(`${source}: vocab entry ${JSON.stringify(tok)} has invalid id ${JSON.stringify(id)}`);
      }
      this.encoder.set(tok, id);
      this.decoder.set(id, tok);
    }
    let rank = 0;
    for (const line of merges) {
      const trimmed = line.trim();
      if (trimmed === "" || trimmed.startsWith("#version")) continue;
      const parts = trimmed.split(/\s+/);
      if (parts.length !== 2) throw new AtedmError(`${source}: bad merges line ${JSON.stringify(line)}`);
      const key = `${parts[0]} ${parts[1]}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
      rank++;
    }

    let nextId = 0;
    for (const id of this.encoder.values()) if (id >= nextId) nextId = id + 1;
    const addToken = (spec: AddedTokenSpec, fixedId?: number): number => {
      let id = fixedId ?? this.encoder.get(spec.content);
      if (id === undefined) id = nextId++;
      if (!this.decoder.has(id)) this.decoder.set(id, spec.content);
      if (!this.encoder.has(spec.content)) this.encoder.set(spec.content, id);
      if (spec.special) this.specialIds.add(id);
      const list = spec.normalized ? this.normAdded : this.rawAdded;
      const match = spec.normalized ? normalize(spec.content) : spec.content;
      if (match !== "" && !list.some((e) => e.match === match)) list.push({ spec, match, id });
      return id;
    };

    for (const { id, token } of options.addedTokens ?? []) addToken({ special: false, normalized: !token.special, ...token }, id);
    this.unkTokenId = addToken(specOf(options.unkToken ?? DEFAULT_EOS, true));
    this.bosTokenId = addToken(specOf(options.bosToken ?? DEFAULT_BOS, true));
    this.eosTokenId = addToken(specOf(options.eosToken ?? DEFAULT_EOS, true));
    this.padTokenId = addToken(specOf(options.padToken ?? DEFAULT_EOS, true));
    for (const t of options.additionalSpecialTokens ?? []) addToken(specOf(t, true));
    this.modelMaxLength = options.modelMaxLength ?? DEFAULT_MAX_LENGTH;
    if (!Number.isInteger(this.modelMaxLength) || this.modelMaxLength < 2) {
      throw new AtedmError(`${source}: model_max_length ${this.modelMaxLength} must be an integer >= 2`);
    }
    this.cleanUpTokenizationSpaces = options.cleanUpTokenizationSpaces ?? true;
  }

  /** Build from an in-memory vocabulary and merges list (merges as "a b" lines; a `#version` header is skipped). */
  static fromVocab(vocab: Record<string, number>, merges: string[], options: CLIPTokenizerOptions = {}): CLIPTokenizer {
    return new CLIPTokenizer(vocab, merges, options, "CLIPTokenizer.fromVocab");
  }

  /**
   * Load a diffusers/transformers tokenizer folder. The files are validated as they are read (limits:
   * src/io/config_schema.ts): vocab.json a non-empty object of token -> id (an integer 0..999999), merges.txt lines
   * of two symbols, tokenizer_config.json and special_tokens_map.json (both optional) objects whose token entries
   * are strings or AddedToken objects. Every failure is one line naming the file and the key (or line).
   * `overrides.padToken` replaces the folder's pad token, as transformers' `from_pretrained(dir, pad_token=...)`.
   */
  static fromPretrained(dir: string, overrides: { padToken?: string } = {}): CLIPTokenizer {
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const vocab = readVocab(vocabPath);
    const merges = readMerges(mergesPath);
    const configPath = join(dir, "tokenizer_config.json");
    const mapPath = join(dir, "special_tokens_map.json");
    const config = readTokenizerConfig(configPath);
    const specialMap = readTokenizerConfig(mapPath);
    // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
    const from = <K extends keyof TokenizerConfigFile>(key: K): [TokenizerConfigFile[K], string] =>
      specialMap[key] !== null ? [specialMap[key], mapPath] : [config[key], configPath];
    const pick = (key: "bos_token" | "eos_token" | "pad_token" | "unk_token"): TokenLike | undefined => {
      const [value, file] = from(key);
      return value === null ? undefined : parseTokenLike(value, key, file);
    };
    const [additionalRaw, additionalFile] = from("additional_special_tokens");
    const additional = (additionalRaw ?? []).map((t, i) => parseTokenLike(t, `additional_special_tokens[${i}]`, additionalFile));
    const addedTokens: Array<{ id: number; token: AddedTokenSpec }> = [];
    for (const [idStr, t] of Object.entries(config.added_tokens_decoder ?? {})) {
      addedTokens.push({ id: Number(idStr), token: parseTokenLike(t, `added_tokens_decoder.${idStr}`, configPath) as AddedTokenSpec });
    }
    const maxLen = config.model_max_length;
    return new CLIPTokenizer(
      vocab,
      merges,
      {
        bosToken: pick("bos_token"),
        eosToken: pick("eos_token"),
        padToken: overrides.padToken ?? pick("pad_token"),
        unkToken: pick("unk_token"),
        additionalSpecialTokens: additional,
        addedTokens,
        // Configs without it, or with transformers' "no limit" sentinel (1e30), get CLIP's 77.
        modelMaxLength: maxLen !== null && maxLen <= 1e9 ? maxLen : undefined,
        cleanUpTokenizationSpaces: config.clean_up_tokenization_spaces ?? undefined,
      },
      vocabPath,
    );
  }

  /** Number of ids (vocabulary plus added tokens). */
  get vocabSize(): number {
    return this.decoder.size;
  }

  /** Token ids without bos/eos/padding. */
  encodeRaw(text: string): number[] {
    const ids: number[] = [];
    for (const seg of splitAdded(text, this.rawAdded)) {
      if ("id" in seg) {
        ids.push(seg.id);
        continue;
      }
      for (const nseg of splitAdded(normalize(seg.text), this.normAdded)) {
        if ("id" in nseg) {
          ids.push(nseg.id);
          continue;
        }
        for (const piece of nseg.text.match(CLIP_SPLIT) ?? []) {
          for (const word of piece.match(GPT2_SPLIT) ?? []) {
            for (const id of this.bpe(word)) ids.push(id);
          }
        }
      }
    }
    return ids;
  }

  /** Pipeline-style: [bos] + ids[:max-2] + [eos], padded to modelMaxLength with the pad token. */
  encode(text: string): { ids: number[]; truncated: boolean; untruncatedLength: number } {
    const raw = this.encodeRaw(text);
    const room = this.modelMaxLength - 2;
    const truncated = raw.length > room;
    const ids = [this.bosTokenId, ...(truncated ? raw.slice(0, room) : raw), this.eosTokenId];
    while (ids.length < this.modelMaxLength) ids.push(this.padTokenId);
    return { ids, truncated, untruncatedLength: raw.length + 2 };
  }

  /**
   * Ids -> text like transformers' `decode`: byte-level decoding, `</w>` -> space, strip, then (by default, as
   * `clean_up_tokenization_spaces` says) " ." -> "." etc. Unknown ids are skipped.
   */
  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const bytes: number[] = [];
    for (const id of ids) {
      if (options.skipSpecialTokens && this.specialIds.has(id)) continue;
      const tok = this.decoder.get(id);
      if (tok === undefined) continue;
      for (const ch of tok) {
        const b = BYTE_DECODER.get(ch);
        if (b !== undefined) bytes.push(b);
        else for (const x of utf8.encode(ch)) bytes.push(x);
      }
    }
    let text = new TextDecoder("utf-8").decode(Uint8Array.from(bytes)).replaceAll("</w>", " ").trim();
    if (this.cleanUpTokenizationSpaces) {
      text = text
        .replaceAll(" .", ".")
        .replaceAll(" ?", "?")
        .replaceAll(" !", "!")
        .replaceAll(" ,", ",")
        .replaceAll(" ' ", "'")
        .replaceAll(" n't", "n't")
        .replaceAll(" 'm", "'m")
        .replaceAll(" 's", "'s")
        .replaceAll(" 've", "'ve")
        .replaceAll(" 're", "'re");
    }
    return text;
  }

  /** Byte-level BPE of one pre-tokenized word, cached. */
  private bpe(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const chars = Array.from(utf8.encode(word), (b) => BYTE_ENCODER[b]!);
    let symbols = chars.slice();
    symbols[symbols.length - 1] += "</w>";
    while (symbols.length > 1) {
      let best = Infinity;
      let first = "";
      let second = "";
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          first = symbols[i]!;
          second = symbols[i + 1]!;
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(symbols[i]!);
          i += 1;
        }
      }
      symbols = merged;
    }
    const ids = symbols.map((s) => {
      const id = this.encoder.get(s) ?? this.unkTokenId;
      if (id === undefined) throw new AtedmError(`CLIP tokenizer: symbol ${JSON.stringify(s)} not in vocab and no unk token`);
      return id;
    });
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }
}

/** Cut added tokens out of `text`, leftmost-longest, honouring lstrip/rstrip/single_word. */
function splitAdded(text: string, tokens: AddedEntry[]): Segment[] {
  if (tokens.length === 0 || text === "") return text === "" ? [] : [{ text }];
  const out: Segment[] = [];
  let segStart = 0;
  let i = 0;
  while (i < text.length) {
    let best: AddedEntry | undefined;
    for (const t of tokens) {
      if ((best === undefined || t.match.length > best.match.length) && text.startsWith(t.match, i)) {
        if (t.spec.singleWord && !isWordBoundary(text, i, i + t.match.length)) continue;
        best = t;
      }
    }
    if (!best) {
      i++;
      continue;
    }
    let start = i;
    let end = i + best.match.length;
    if (best.spec.lstrip) while (start > segStart && WS_CHAR.test(text[start - 1]!)) start--;
    if (best.spec.rstrip) while (end < text.length && WS_CHAR.test(text[end]!)) end++;
    if (start > segStart) out.push({ text: text.slice(segStart, start) });
    out.push({ id: best.id });
    segStart = end;
    i = end;
  }
  if (segStart < text.length) out.push({ text: text.slice(segStart) });
  return out;
}

function isWordBoundary(text: string, start: number, end: number): boolean {
  const before = start > 0 ? text[start - 1]! : "";
  const after = end < text.length ? text[end]! : "";
  return !(before && WORD_CHAR.test(before)) && !(after && WORD_CHAR.test(after));
}

const TOKEN_ID_TEXT = `a token id, an integer in ${LIMITS.tokenId[0]}..${LIMITS.tokenId[1]}`;
const VOCAB_TEXT = `a JSON object mapping ${LIMITS.vocabSize[0]}..${LIMITS.vocabSize[1]} tokens to ids`;

/** vocab.json: a non-empty JSON object of token -> id, every id an integer 0..999999, at most 1,000,000 tokens. */
const VOCAB = v.pipe(
  v.record(v.string(), int(LIMITS.tokenId, "a token id, an integer"), VOCAB_TEXT),
  v.minEntries(1, VOCAB_TEXT),
  v.maxEntries(LIMITS.vocabSize[1], VOCAB_TEXT),
);

/** A token entry: a string or an AddedToken object (its flags are read when they are booleans, as transformers does). */
const TOKEN = v.union([v.string(), v.looseObject({ content: v.string() })], "a string or an AddedToken object with a string content");
const TOKEN_OR_NULL = v.nullish(TOKEN, null);

/** The keys of tokenizer_config.json / special_tokens_map.json that atedm reads; others are ignored. */
const TOKENIZER_CONFIG = obj({
  bos_token: TOKEN_OR_NULL,
  eos_token: TOKEN_OR_NULL,
  pad_token: TOKEN_OR_NULL,
  unk_token: TOKEN_OR_NULL,
  additional_special_tokens: v.nullish(v.array(TOKEN, "a list of tokens"), null),
  added_tokens_decoder: v.nullish(
    v.record(
      v.pipe(
        v.string(),
        v.regex(/^\d+$/, TOKEN_ID_TEXT),
        v.check((k) => Number(k) <= LIMITS.tokenId[1], TOKEN_ID_TEXT),
      ),
      v.looseObject({ content: v.string("an AddedToken object with a string content") }, "an AddedToken object with a string content"),
      "an object of token id -> AddedToken",
    ),
    null,
  ),
  // > 1e9: transformers' "no limit" sentinel (int(1e30)), read as CLIP's 77.
  model_max_length: v.nullish(
    v.union(
      [int(LIMITS.modelMaxLength), v.pipe(v.number(), v.gtValue(1e9))],
      `an integer in ${LIMITS.modelMaxLength[0]}..${LIMITS.modelMaxLength[1]} (above 1e9: no limit)`,
    ),
    null,
  ),
  clean_up_tokenization_spaces: v.nullish(v.boolean("true, false or null"), null),
});
type TokenizerConfigFile = v.InferOutput<typeof TOKENIZER_CONFIG>;

function readVocab(path: string): Record<string, number> {
  const vocab = readJsonFile(path, "CLIP tokenizer vocabulary");
  if (!isObject(vocab)) throw new AtedmError(`${path}: expected a JSON object mapping tokens to ids, found ${kindOf(vocab)}`);
  if (Object.keys(vocab).length === 0) throw new AtedmError(`${path}: the vocabulary is empty (expected ${VOCAB_TEXT})`);
  const r = v.safeParse(VOCAB, vocab, { abortEarly: true });
  if (!r.success) {
    const issue = r.issues[0];
    const token = issue.path?.[0]?.key;
    throw typeof token === "string" ? invalid(path, JSON.stringify(token), issue.input, issue.message) : issueError(issue, path);
  }
  // valibot's record skips the keys __proto__, constructor and prototype; check those tokens' ids here.
  for (const key of ["__proto__", "constructor", "prototype"]) {
    if (Object.hasOwn(vocab, key)) checkValue(int(LIMITS.tokenId, "a token id, an integer"), vocab[key], path, key);
  }
  return vocab as Record<string, number>;
}

/** merges.txt: every line but blank and `#version` lines is two symbols separated by whitespace. */
function readMerges(path: string): string[] {
  const lines = readTextFile(path, "CLIP tokenizer merges").split("\n");
  let merges = 0;
  for (let i = 0; i < lines.length; i++) {
    const trimmed = lines[i]!.trim();
    if (trimmed === "" || trimmed.startsWith("#version")) continue;
    if (trimmed.split(/\s+/).length !== 2) throw invalid(path, `line ${i + 1}`, lines[i], "two symbols separated by a space");
    if (++merges > LIMITS.merges) throw new AtedmError(`${path}: more than ${LIMITS.merges} merges`);
  }
  return lines;
}

/** tokenizer_config.json / special_tokens_map.json, both optional (every key null when the file is absent). */
function readTokenizerConfig(path: string): TokenizerConfigFile {
  return parseConfig(TOKENIZER_CONFIG, existsSync(path) ? readJsonObject(path) : {}, path);
}

/** A token entry as it appears in the JSON files: a string or `{"__type": "AddedToken", "content": ...}`. */
function parseTokenLike(value: unknown, key: string, file: string): TokenLike {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    const o = value as Record<string, unknown>;
    const spec: AddedTokenSpec = { content: o["content"] as string };
    if (typeof o["normalized"] === "boolean") spec.normalized = o["normalized"];
    if (typeof o["lstrip"] === "boolean") spec.lstrip = o["lstrip"];
    if (typeof o["rstrip"] === "boolean") spec.rstrip = o["rstrip"];
    if (typeof o["single_word"] === "boolean") spec.singleWord = o["single_word"];
    if (typeof o["special"] === "boolean") spec.special = o["special"];
    return spec;
  }
  throw invalid(file, key, value, "a string or an AddedToken object with a string content");
}
