/** Prompt files of `eval`, `eval-alignment` and `recovery-error`: one prompt per line, blank lines and # comments skipped. */
import { readFileSync } from "node:fs";
import { AtedmError } from "../errors.js";

/** The prompts of `file` with their 1-based line numbers; one-line errors for a missing, binary or empty file. */
export function readPromptLines(file: string): Array<{ prompt: string; line: number }> {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new AtedmError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new AtedmError(`${file}: not a text file (not UTF-8)`);
  }
  if (text.includes("\0")) throw new AtedmError(`${file}: not a text file (it contains NUL bytes)`);
  const prompts = text
    .split(/\r?\n/)
    .map((l, i) => ({ prompt: l.trim(), line: i + 1 }))
    .filter(({ prompt }) => prompt && !prompt.startsWith("#"));
  if (!prompts.length) throw new AtedmError(`${file}: no prompts (one per line; blank lines and # comments are skipped)`);
  return prompts;
}

/** The prompts of `file` (see `readPromptLines`). */
export function readPromptFile(file: string): string[] {
  return readPromptLines(file).map((p) => p.prompt);
}
