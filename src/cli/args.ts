/**
 * Flag parsing shared by the commands: node's parseArgs, plus typed converters whose errors name the flag.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { AtedmError } from "../errors.js";

export type Flags = NonNullable<ParseArgsConfig["options"]>;

export type Values = Record<string, string | boolean | undefined>;

export function parse(argv: string[], options: Flags, command: string): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true });
    return { values: r.values as Values, positionals: r.positionals };
  } catch (e) {
    throw new AtedmError(`${command}: ${(e as Error).message.split("\n")[0]} (see 'atedm ${command} --help')`);
  }
}

/** A flag's value as a number: NaN for an empty or blank value (which `Number` would read as 0). */
function toNumber(value: string): number {
  return value.trim() === "" ? NaN : Number(value);
}

export function int(value: string | undefined, flag: string, min = -Infinity, max = Infinity): number | undefined {
  if (value === undefined) return undefined;
  const n = toNumber(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    const range = max < Infinity ? ` in [${min}, ${max}]` : min > -Infinity ? ` >= ${min}` : "";
    throw new AtedmError(`--${flag} must be an integer${range}, got '${value}'`);
  }
  return n;
}

/** Seeds are 32-bit unsigned integers. */
export const MAX_SEED = 0xffffffff;

export function num(value: string | undefined, flag: string, min = -Infinity, max = Infinity, maxExclusive = false): number | undefined {
  if (value === undefined) return undefined;
  const n = toNumber(value);
  if (!Number.isFinite(n) || n < min || n > max || (maxExclusive && n === max)) {
    const range = min > -Infinity || max < Infinity ? ` in [${min}, ${max}${maxExclusive ? ")" : "]"}` : "";
    throw new AtedmError(`--${flag} must be a number${range}, got '${value}'`);
  }
  return n;
}

/**
 * The hard limits of the numeric flags, checked when the flags are parsed (before any model loads or any memory
 * is sized by them) and stated in each command's --help.
 */
export const LIMITS = {
  steps: 1000,
  size: 4096,
  threads: 256,
  seeds: 1000,
  count: 1_000_000,
  iterations: 100,
  guidance: 100,
} as const;

/** An image side in pixels: a multiple of 8 in [8, LIMITS.size]. */
export function size(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = toNumber(value);
  if (!Number.isInteger(n) || n < 8 || n > LIMITS.size || n % 8 !== 0) {
    throw new AtedmError(`--${flag} must be a positive multiple of 8 up to ${LIMITS.size}, got '${value}'`);
  }
  return n;
}

export function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T)) throw new AtedmError(`--${flag} must be one of ${allowed.join(", ")}, got '${value}'`);
  return value as T;
}
