#!/usr/bin/env node
// The atedm command. Runs the compiled CLI (dist/, built by `npm ci` / `npm run build`).
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/cli/main.js", import.meta.url);
let main;
try {
  ({ main } = await import(entry.href));
} catch (e) {
  // dist/ itself missing (a checkout without `npm ci`): one line, not a stack trace; any other failure as it is
  if (e?.code !== "ERR_MODULE_NOT_FOUND" || !String(e.message).includes(`'${fileURLToPath(entry)}'`)) throw e;
  process.stderr.write("atedm: dist/ is not built; run 'npm run build' in the atedm folder\n");
  process.exit(1);
}
process.exitCode = await main(process.argv.slice(2));
