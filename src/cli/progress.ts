/**
 * Progress on stderr. On a terminal: a one-line bar redrawn in place (steps, it/s, ETA), unless --json asks for
 * quiet. Elsewhere (a pipe, a log file, CI): nothing, unless --progress asks for plain lines, one now and then
 * and one at the end, never a carriage return or an escape sequence.
 */
export type ProgressMode = "bar" | "lines" | "off";

/** The mode for a command's `--progress` and `--json` flags on `stream` (stderr). */
export function progressMode(flags: { progress: boolean; json: boolean }, stream: { isTTY?: boolean } = process.stderr): ProgressMode {
  if (stream.isTTY === true) return flags.progress || !flags.json ? "bar" : "off";
  return flags.progress ? "lines" : "off";
}

/** A status line (e.g. "loading <model> ...") where progress is shown; nothing when it is off. */
export function status(mode: ProgressMode, text: string): void {
  if (mode !== "off") process.stderr.write(`${text}\n`);
}

export class Progress {
  private readonly start = performance.now();
  private lastLine = -Infinity;

  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly mode: ProgressMode,
    /** Plain lines: at most one per this many milliseconds (plus the first and the last step). */
    private readonly intervalMs = 5000,
  ) {
    if (mode === "bar") this.render(0);
  }

  update(done: number): void {
    if (this.mode === "bar") this.render(done);
    else if (this.mode === "lines") {
      const now = performance.now();
      if (done === 1 || done >= this.total || now - this.lastLine >= this.intervalMs) {
        this.lastLine = now;
        process.stderr.write(`${this.label}: ${done}/${this.total}${this.stats(done)}\n`);
      }
    }
  }

  private stats(done: number): string {
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = done > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (this.total - done) / rate : NaN;
    const speed = rate >= 1 ? `${rate.toFixed(2)} it/s` : rate > 0 ? `${(1 / rate).toFixed(2)} s/it` : "";
    const etaText = Number.isFinite(eta) && done < this.total ? `ETA ${eta.toFixed(1)}s` : "";
    return [speed, etaText]
      .filter(Boolean)
      .map((x) => ` ${x}`)
      .join("");
  }

  private render(done: number): void {
    const width = 24;
    const filled = Math.round((done / this.total) * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    process.stderr.write(`\r${this.label} [${bar}] ${done}/${this.total}${this.stats(done)}\x1b[K`);
  }

  done(): void {
    if (this.mode === "bar") process.stderr.write("\n");
  }
}
