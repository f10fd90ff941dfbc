/**
 * Every plot of an `atedm report` as a PNG, for docs/results.md: opens DIR/report.html in headless Chromium (the
 * system's, found as the tests find it: CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser) and writes each
 * plot with Plotly.toImage, the same drawing the report shows, named after its element id
 * (plot-fd-saving.png, plot-fd-speedup.png, ...). Optionally a full-page screenshot too.
 *
 *     node --import tsx eval/report_pngs.ts DIR [OUT_DIR] [--width 800] [--height 500] [--scale 2] [--page]
 *
 * OUT_DIR defaults to DIR/plots. Run `atedm report --in DIR` first.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { launchChromium } from "../test/helpers/browser.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    width: { type: "string", default: "800" },
    height: { type: "string", default: "500" },
    scale: { type: "string", default: "2" },
    page: { type: "boolean" },
  },
});
const [dir, outArg] = positionals;
if (!dir) {
  process.stderr.write("usage: node --import tsx eval/report_pngs.ts DIR [OUT_DIR] [--width 800] [--height 500] [--scale 2] [--page]\n");
  process.exit(2);
}
const report = join(dir, "report.html");
if (!existsSync(report)) {
  process.stderr.write(`${report}: not found (run 'atedm report --in ${dir}' first)\n`);
  process.exit(1);
}
const out = outArg ?? join(dir, "plots");
const size = { width: Number(values.width), height: Number(values.height), scale: Number(values.scale) };
mkdirSync(out, { recursive: true });

const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => process.stderr.write(`page error: ${e.message}\n`));
  await page.goto(pathToFileURL(report).href, { waitUntil: "load" });
  await page.waitForFunction(() => document.body.getAttribute("data-plots") !== null, undefined, { timeout: 60_000 });
  const state = await page.getAttribute("body", "data-plots");
  if (state !== "done") throw new Error(`${report}: the plots did not render (${state})`);
  const ids = await page.$$eval(".plot", (els) => els.map((el) => el.id));
  for (const id of ids) {
    const uri = await page.evaluate(
      ([id, s]) => {
        const plotly = (window as unknown as { Plotly: { toImage(el: Element, o: object): Promise<string> } }).Plotly;
        return plotly.toImage(document.getElementById(id)!, { format: "png", ...s });
      },
      [id, size] as const,
    );
    const file = join(out, `${id}.png`);
    writeFileSync(file, Buffer.from(uri.slice(uri.indexOf(",") + 1), "base64"));
    process.stderr.write(`wrote ${file}\n`);
  }
  if (values.page) {
    const file = join(out, "report-page.png");
    await page.screenshot({ path: file, fullPage: true });
    process.stderr.write(`wrote ${file}\n`);
  }
} finally {
  await browser.close();
}
