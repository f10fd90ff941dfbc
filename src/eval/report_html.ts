/**
 * The HTML of `atedm report`: one static file that needs no network, built from an `EvalResult` alone. Images are
 * embedded as data: URIs and the plotting library's minified JS inline, so the file works offline and when moved;
 * a Content-Security-Policy (no fetches, only the two inline scripts by hash) keeps it that way.
 *
 * Plotting library: plotly.js, as the `plotly.js-basic-dist-min` bundle (MIT, one 1.2 MB minified file with no
 * runtime fetches). It has what the plots need built in: scatter traces with asymmetric error bars
 * (`error_y.array` / `arrayminus` from ci95), hover text, legend toggling. It draws SVG, so a test can count the
 * drawn points of every plot, and `Plotly.toImage` writes each plot as a PNG in the same browser
 * (eval/report_pngs.ts). Chart.js is 5x smaller but needs a third-party plugin for error bars and draws on a canvas
 * (nothing in the DOM to check); Observable Plot needs d3 beside it and has no error-bar mark. Size is the cost.
 *
 * `renderReport` is pure (the result and a way to read image bytes in, a string out); `plotlyScript` reads the
 * library from node_modules.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { LOWER_IS_BETTER, type EvalResult, type MethodResult } from "./types.js";

export interface ReportSources {
  /** The bytes of a PNG named in the result (a path relative to the eval folder, as written there). */
  readImage(file: string): Uint8Array;
  /** The plotting library's minified JS (`plotlyScript()`). */
  plotlyJs: string;
}

/** Rows of the same-seed image grid: the first (prompt, seed) pairs, prompts in order. */
export const MAX_GRID_ROWS = 8;

/** plotly.js-basic-dist-min's minified bundle, read from node_modules. */
export function plotlyScript(): string {
  return readFileSync(createRequire(import.meta.url).resolve("plotly.js-basic-dist-min"), "utf8");
}

// ---------------------------------------------------------------------------------------------------------------
// Pareto front
// ---------------------------------------------------------------------------------------------------------------

/**
 * Which points are Pareto-optimal when x is maximized and y is maximized (minimized with `lowerYIsBetter`):
 * a point is off the front when another is at least as good in both and better in one. Equal points are all on
 * the front; points with a non-finite coordinate are never on it and dominate nothing.
 */
export function paretoFront(points: ReadonlyArray<{ x: number; y: number }>, lowerYIsBetter = false): boolean[] {
  const s = lowerYIsBetter ? -1 : 1;
  const ok = (p: { x: number; y: number }) => Number.isFinite(p.x) && Number.isFinite(p.y);
  return points.map((p) => {
    if (!ok(p)) return false;
    return !points.some((q) => ok(q) && q.x >= p.x && s * q.y >= s * p.y && (q.x > p.x || s * q.y > s * p.y));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Figures (plain data: what Plotly.newPlot gets)
// ---------------------------------------------------------------------------------------------------------------

export interface Figure {
  /** The element id of the plot's div (also the PNG's name in eval/report_pngs.ts). */
  id: string;
  metric: string;
  axis: "saving" | "speedup";
  /** Markers Plotly draws: one per method with a finite value, plus the Pareto front's. */
  points: number;
  data: object[];
  layout: object;
}

/** Metrics present in any method, in a fixed order: the known ones first, then the rest by name. */
export function metricsOf(result: EvalResult): string[] {
  const order = ["alignment_all_correct", "alignment_all_correct_delta", "clip_score", "fd", "fid", "psnr", "ssim"];
  const names = new Set(result.methods.flatMap((m) => Object.keys(m.quality)));
  const rank = (n: string) => (order.includes(n) ? order.indexOf(n) : order.length);
  return [...names].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The family a method's points are drawn (and connected) in: its method and every option but the ratio, so
 * "atedm:0.3" and "atedm:0.5", or one spec at several budgets, share a colour. Labelled by the method, plus the
 * options that tell its families apart.
 */
export function families(methods: readonly MethodResult[]): Map<string, MethodResult[]> {
  const key = (m: MethodResult) => {
    const { ratio: _ratio, budget: _budget, ...rest } = m.options;
    return JSON.stringify([m.method, Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);
  };
  const byKey = new Map<string, MethodResult[]>();
  for (const m of methods) byKey.set(key(m), [...(byKey.get(key(m)) ?? []), m]);
  const out = new Map<string, MethodResult[]>();
  for (const members of byKey.values()) {
    const first = members[0]!;
    const siblings = [...byKey.values()].filter((ms) => ms[0]!.method === first.method && ms !== members);
    const differing = Object.entries(first.options).filter(
      ([k, x]) => k !== "ratio" && k !== "budget" && siblings.some((ms) => JSON.stringify(ms[0]!.options[k]) !== JSON.stringify(x)),
    );
    const label = [first.method, ...differing.map(([k, x]) => `${k}=${typeof x === "string" ? x : JSON.stringify(x)}`)].join(" ");
    out.set(out.has(label) ? `${label} (${out.size})` : label, members);
  }
  return out;
}

const fmt = (x: number, digits = 3) => (Number.isFinite(x) ? Number(x.toPrecision(digits)).toString() : String(x));
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

/** Text Plotly shows: its pseudo-HTML (<b>, <br>, <a>) must not apply to strings from the JSON. */
const plotText = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

const slug = (s: string) => s.replace(/[^A-Za-z0-9_]+/g, "-").replace(/^-|-$/g, "");

/** One quality-vs-saving and one quality-vs-speedup figure per metric present. */
export function figures(result: EvalResult): Figure[] {
  const fams = families(result.methods);
  const out: Figure[] = [];
  for (const metric of metricsOf(result)) {
    const lower = LOWER_IS_BETTER.has(metric);
    for (const axis of ["saving", "speedup"] as const) {
      const xOf = (m: MethodResult) => (axis === "saving" ? 100 * m.flops_saving : m.speedup);
      const all: Array<{ x: number; y: number; m: MethodResult }> = [];
      const data: object[] = [];
      for (const [label, members] of fams) {
        const pts = members
          .filter((m) => m.quality[metric] && Number.isFinite(m.quality[metric].value) && Number.isFinite(xOf(m)))
          .map((m) => ({ x: xOf(m), y: m.quality[metric]!.value, m }))
          .sort((a, b) => a.x - b.x);
        if (!pts.length) continue;
        all.push(...pts);
        const ci = pts.map((p) => p.m.quality[metric]!.ci95);
        data.push({
          type: "scatter",
          mode: pts.length > 1 ? "lines+markers" : "markers",
          name: plotText(label),
          x: pts.map((p) => p.x),
          y: pts.map((p) => p.y),
          error_y: {
            type: "data",
            symmetric: false,
            array: pts.map((p, i) => (ci[i] ? Math.max(0, ci[i][1] - p.y) : 0)),
            arrayminus: pts.map((p, i) => (ci[i] ? Math.max(0, p.y - ci[i][0]) : 0)),
            visible: true,
          },
          text: pts.map((p, i) => hover(p.m, metric, ci[i] ?? null)),
          hovertemplate: "%{text}<extra></extra>",
          marker: { size: 9 },
          line: { width: 1 },
        });
      }
      const onFront = paretoFront(all, lower);
      const front = all.filter((_, i) => onFront[i]).sort((a, b) => a.x - b.x);
      if (front.length) {
        data.push({
          type: "scatter",
          mode: "lines+markers",
          name: "Pareto front",
          x: front.map((p) => p.x),
          y: front.map((p) => p.y),
          text: front.map((p) => plotText(`Pareto-optimal: ${p.m.name}`)),
          hovertemplate: "%{text}<extra></extra>",
          marker: { symbol: "circle-open", size: 18, color: "#222", line: { width: 2 } },
          line: { dash: "dot", color: "#222", width: 1 },
        });
      }
      const xTitle = axis === "saving" ? "U-Net FLOPs saving (%)" : "speedup (seconds per step of none / of the method)";
      out.push({
        id: `plot-${slug(metric)}-${axis}`,
        metric,
        axis,
        points: all.length + front.length,
        data,
        layout: {
          title: { text: plotText(`${metric} vs ${axis === "saving" ? "FLOPs saving" : "speedup"}`) },
          xaxis: { title: { text: xTitle }, zeroline: false },
          yaxis: { title: { text: plotText(`${metric} (${lower ? "lower" : "higher"} is better)`) }, zeroline: false },
          legend: { orientation: "h", y: -0.25 },
          margin: { t: 50, r: 20, b: 40, l: 70 },
          height: 460,
        },
      });
    }
  }
  return out;
}

function hover(m: MethodResult, metric: string, ci: [number, number] | null): string {
  const q = m.quality[metric]!;
  return [
    m.name,
    `${metric} ${fmt(q.value, 4)}${ci ? ` [${fmt(ci[0], 4)}, ${fmt(ci[1], 4)}]` : ""}`,
    `ratio ${m.ratio}${m.budget === null ? "" : `, budget ${pct(m.budget)}`}`,
    `saving ${pct(m.flops_saving)}, ${fmt(m.seconds_per_step * 1000)} ms/step, speedup ${fmt(m.speedup)}x`,
  ]
    .map(plotText)
    .join("<br>");
}

// ---------------------------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------------------------

/** Text and attribute values from the JSON. */
export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

const e = (x: unknown) => escapeHtml(String(x));

/** JSON inside a <script> element: no "</script" or "<!--" can end or change it. */
const scriptJson = (x: unknown) =>
  JSON.stringify(x)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");

const sha256 = (s: string) => `'sha256-${createHash("sha256").update(s, "utf8").digest("base64")}'`;

/** Draws every figure; marks each plot's div (data-rendered) and the body (data-plots="done" or "error: ..."). */
const PAGE_SCRIPT = `
(function () {
  var figs = JSON.parse(document.getElementById("report-figures").textContent);
  Promise.all(figs.map(function (f) {
    return Plotly.newPlot(f.id, f.data, f.layout, { displaylogo: false, responsive: true }).then(function (el) {
      el.setAttribute("data-rendered", "1");
    });
  })).then(function () {
    document.body.setAttribute("data-plots", "done");
  }, function (err) {
    document.body.setAttribute("data-plots", "error: " + err);
  });
})();
`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
code { font-size: 12px; word-break: break-all; }
.options { font-size: 12px; color: #555; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
.plot { min-height: 460px; border: 1px solid #eee; }
table.grid img, .overlays img { width: 160px; height: auto; image-rendering: pixelated; display: block; }
table.grid th.prompt { max-width: 260px; font-weight: normal; }
.overlays { display: flex; flex-wrap: wrap; gap: 12px; }
.overlays figure { margin: 0; } .overlays figcaption { font-size: 12px; }
.missing { color: #999; }
`;

/** The whole report: header, tables, plots, image grid, overlays. */
export function renderReport(result: EvalResult, sources: ReportSources): string {
  const cache = new Map<string, string>();
  const img = (file: string, alt: string, cls: string) => {
    let uri = cache.get(file);
    if (uri === undefined) {
      uri = `data:image/png;base64,${Buffer.from(sources.readImage(file)).toString("base64")}`;
      cache.set(file, uri);
    }
    return `<img class="${cls}" src="${uri}" alt="${e(alt)}" title="${e(file)}">`;
  };
  const figs = figures(result);
  const figuresJson = scriptJson(figs);
  const csp = [
    "default-src 'none'",
    "img-src data: blob:",
    "style-src 'unsafe-inline'",
    `script-src ${sha256(sources.plotlyJs)} ${sha256(PAGE_SCRIPT)}`,
  ].join("; ");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>atedm report: ${e(result.model)}</title>
<style>${STYLE}</style>
</head>
<body>
${header(result)}
${methodTable(result)}
${unreachable(result)}
<h2 id="plots-title">Quality vs cost</h2>
<p>Points are means over the images; bars are 95 % bootstrap intervals (${e(result.bootstrap.samples)} samples, ${e(result.bootstrap.fd_samples)} for Frechet distances, resampled by ${e(result.bootstrap.unit)}).
Ringed points, joined by the dotted line, are Pareto-optimal on the mean (more saving or speed, better quality).</p>
<div class="plots">
${figs.map((f) => `<div class="plot" id="${f.id}" data-metric="${e(f.metric)}" data-axis="${f.axis}" data-points="${f.points}"></div>`).join("\n")}
</div>
${imageGrid(result, img)}
${overlays(result, img)}
<script type="application/json" id="report-figures">${figuresJson}</script>
<script>${sources.plotlyJs}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}

function header(r: EvalResult): string {
  const rows: Array<[string, string]> = [
    ["model", e(r.model)],
    ["prompts", `${r.prompts.length} from <code>${e(r.prompts_file)}</code>`],
    ["seeds", e(r.seeds)],
    ["steps", e(r.steps)],
    ["scheduler", e(r.scheduler)],
    ["guidance", e(r.guidance)],
    ["threads", e(r.threads)],
    ["machine", `${e(r.machine.cpu)}, ${e(r.machine.cpus)} CPUs, ${e(r.machine.platform)}`],
    ["budgets", r.budgets ? r.budgets.map((b) => e(pct(b))).join(", ") : "none"],
    ["features", r.features ? `${e(r.features.name)} (${e(r.features.dim)}-d, ${e(r.features.reference_images)} reference images)` : "none"],
    [
      "time",
      `${e(fmt(r.timing.generation_seconds, 4))} s generating, ${e(fmt(r.timing.other_seconds, 4))} s other (overhead ${e(pct(r.timing.overhead))})`,
    ],
    ["command", `<code>${e(r.command)}</code>`],
    ["atedm", e(r.atedm_version)],
    ["created", e(r.created)],
  ];
  return `<h1>atedm evaluation: ${e(r.model)}</h1>
<dl class="meta" id="meta">
${rows.map(([k, x]) => `<dt>${k}</dt><dd>${x}</dd>`).join("\n")}
</dl>`;
}

function methodTable(r: EvalResult): string {
  const metrics = metricsOf(r);
  const q = (m: MethodResult, k: string) => {
    const x = m.quality[k];
    if (!x) return "";
    return `${fmt(x.value, 4)}${x.ci95 ? ` [${fmt(x.ci95[0], 4)}, ${fmt(x.ci95[1], 4)}]` : ""}`;
  };
  const head = [
    "method",
    "ratio",
    "budget",
    "FLOPs saving",
    "TFLOPs / step",
    "s / step",
    "speedup",
    ...metrics.map((k) => `${k} ${LOWER_IS_BETTER.has(k) ? "↓" : "↑"}`),
  ];
  const rows = r.methods.map((m) => {
    const options = Object.entries(m.options)
      .map(([k, x]) => `${k}=${typeof x === "string" ? x : JSON.stringify(x)}`)
      .join(" ");
    const cells = [
      `<td>${e(m.name)}<div class="options">${e(options)}</div></td>`,
      ...[
        fmt(m.ratio),
        m.budget === null ? "" : pct(m.budget),
        pct(m.flops_saving),
        fmt(m.tflops_per_step, 4),
        fmt(m.seconds_per_step, 4),
        `${fmt(m.speedup)}x`,
        ...metrics.map((k) => q(m, k)),
      ].map((c) => `<td class="num">${e(c)}</td>`),
    ];
    return `<tr>${cells.join("")}</tr>`;
  });
  return `<h2>Methods</h2>
<table class="methods" id="methods">
<thead><tr>${head.map((h) => `<th>${e(h)}</th>`).join("")}</tr></thead>
<tbody>
${rows.join("\n")}
</tbody>
</table>`;
}

function unreachable(r: EvalResult): string {
  if (!r.unreachable.length) return "";
  const items = r.unreachable.map(
    (u) => `<li>${e(u.spec)}: budget ${e(pct(u.budget))} is out of reach (at most ${e(pct(u.max_saving))} saving on this model)</li>`,
  );
  return `<h3>Unreachable budgets</h3>
<ul id="unreachable">
${items.join("\n")}
</ul>`;
}

type Img = (file: string, alt: string, cls: string) => string;

/** Unpruned first, then the methods in the order they ran. */
function columns(r: EvalResult): MethodResult[] {
  return [...r.methods.filter((m) => m.method === "none"), ...r.methods.filter((m) => m.method !== "none")];
}

function imageGrid(r: EvalResult, img: Img): string {
  const methods = columns(r);
  const pairs = new Map<string, { prompt: number; seed: number }>();
  for (const m of methods) for (const x of m.images) pairs.set(`${x.prompt}/${x.seed}`, { prompt: x.prompt, seed: x.seed });
  const rows = [...pairs.values()].sort((a, b) => a.prompt - b.prompt || a.seed - b.seed).slice(0, MAX_GRID_ROWS);
  if (!rows.length) return "";
  const body = rows.map(({ prompt, seed }) => {
    const caption = r.prompts[prompt] ?? `prompt ${prompt}`;
    const cells = methods.map((m) => {
      const x = m.images.find((i) => i.prompt === prompt && i.seed === seed);
      return x ? `<td>${img(x.file, `${m.name}, seed ${seed}: ${caption}`, "grid-image")}</td>` : `<td class="missing">-</td>`;
    });
    return `<tr><th class="prompt" scope="row">${e(caption)}<br><small>prompt ${prompt}, seed ${seed}</small></th>${cells.join("")}</tr>`;
  });
  return `<h2>Same seed, side by side</h2>
<p>The first ${rows.length} (prompt, seed) pairs; every column is one method with the same initial noise.</p>
<table class="grid" id="grid">
<thead><tr><th></th>${methods.map((m) => `<th>${e(m.name)}</th>`).join("")}</tr></thead>
<tbody>
${body.join("\n")}
</tbody>
</table>`;
}

function overlays(r: EvalResult, img: Img): string {
  const withOverlays = r.methods.filter((m) => m.overlays.length);
  if (!withOverlays.length) return "";
  const caption = r.prompts[0] ?? "";
  const parts = withOverlays.map(
    (m) => `<h3>${e(m.name)}</h3>
<div class="overlays">
${m.overlays.map((o) => `<figure>${img(o.file, `${m.name} ${o.block} step ${o.step}`, "overlay-image")}<figcaption>${e(o.block)}, step ${e(o.step)}</figcaption></figure>`).join("\n")}
</div>`,
  );
  return `<h2>Kept tokens</h2>
<p>Which tokens each pruned block kept for the first prompt (${e(caption)}), seed 0, at the middle step.</p>
<section id="overlays">
${parts.join("\n")}
</section>`;
}
