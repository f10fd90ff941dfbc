/** atedm's version: the `version` of its package.json, found relative to this module (src/cli/ under tsx, dist/cli/ when built). */
import { readFileSync } from "node:fs";

let cached: string | undefined;

export function atedmVersion(): string {
  if (cached === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
      cached = typeof pkg.version === "string" ? pkg.version : "unknown";
    } catch {
      cached = "unknown";
    }
  }
  return cached;
}
