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
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AtedmError } from "../errors.js";

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

  /** Load a diffusers/transformers tokenizer folder. */
  static fromPretrained(dir: string): CLIPTokenizer {
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const vocab = readJson(vocabPath, true);
    if (vocab === null || typeof vocab !== "object" || Array.isArray(vocab)) {
      throw new AtedmError(`${vocabPath}: expected a JSON object mapping tokens to ids`);
    }
    if (!existsSync(mergesPath)) throw new AtedmError(`${mergesPath}: file not found (CLIP tokenizer merges)`);
    let mergesText: string;
    try {
      mergesText = readFileSync(mergesPath, "utf8");
    } catch (e) {
      throw new AtedmError(`${mergesPath}: cannot read (${(e as Error).message})`);
    }
    const configPath = join(dir, "tokenizer_config.json");
    const mapPath = join(dir, "special_tokens_map.json");
    const config = (readJson(configPath, false) ?? {}) as Record<string, unknown>;
    const specialMap = (readJson(mapPath, false) ?? {}) as Record<string, unknown>;
    // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
    const pick = (key: string): TokenLike | undefined => {
      const v = specialMap[key] ?? config[key];
      return v === undefined || v === null ? undefined : parseTokenLike(v, key, configPath);
    };
    const additionalRaw = specialMap["additional_special_tokens"] ?? config["additional_special_tokens"];
    const additional = Array.isArray(additionalRaw) ? additionalRaw.map((v) => parseTokenLike(v, "additional_special_tokens", configPath)) : [];
    const addedTokens: Array<{ id: number; token: AddedTokenSpec }> = [];
    const decoderCfg = config["added_tokens_decoder"];
    if (decoderCfg && typeof decoderCfg === "object") {
      for (const [idStr, v] of Object.entries(decoderCfg as Record<string, unknown>)) {
        const spec = parseTokenLike(v, `added_tokens_decoder.${idStr}`, configPath);
        const id = Number(idStr);
        if (!Number.isInteger(id) || typeof spec === "string") {
          throw new AtedmError(`${configPath}: bad added_tokens_decoder entry ${JSON.stringify(idStr)}`);
        }
        addedTokens.push({ id, token: spec });
      }
    }
    const maxLen = config["model_max_length"];
    return new CLIPTokenizer(
      vocab as Record<string, number>,
      mergesText.split("\n"),
      {
        bosToken: pick("bos_token"),
        eosToken: pick("eos_token"),
        padToken: pick("pad_token"),
        unkToken: pick("unk_token"),
        additionalSpecialTokens: additional,
        addedTokens,
        // Configs without it (transformers would use 1e30) get CLIP's 77.
        modelMaxLength: typeof maxLen === "number" && maxLen <= 1e9 ? maxLen : undefined,
        cleanUpTokenizationSpaces:
          typeof config["clean_up_tokenization_spaces"] === "boolean" ? (config["clean_up_tokenization_spaces"] as boolean) : undefined,
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

function readJson(path: string, required: boolean): unknown {
  if (!existsSync(path)) {
    if (required) throw new AtedmError(`${path}: file not found (CLIP tokenizer vocabulary)`);
    return null;
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new AtedmError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new AtedmError(`${path}: not valid JSON (${(e as Error).message.split("\n")[0]})`);
  }
}

/** A token entry as it appears in the JSON files: a string or `{"__type": "AddedToken", "content": ...}`. */
function parseTokenLike(v: unknown, key: string, file: string): TokenLike {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    const o = v as Record<string, unknown>;
    const spec: AddedTokenSpec = { content: o["content"] as string };
    if (typeof o["normalized"] === "boolean") spec.normalized = o["normalized"];
    if (typeof o["lstrip"] === "boolean") spec.lstrip = o["lstrip"];
    if (typeof o["rstrip"] === "boolean") spec.rstrip = o["rstrip"];
    if (typeof o["single_word"] === "boolean") spec.singleWord = o["single_word"];
    if (typeof o["special"] === "boolean") spec.special = o["special"];
    return spec;
  }
  throw new AtedmError(`${file}: '${key}' is neither a string nor an AddedToken object`);
}
