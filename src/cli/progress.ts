/** A one-line progress bar on stderr (steps, it/s, ETA); silent when stderr is not a terminal. */
export class Progress {
  private readonly start = performance.now();
  private readonly enabled: boolean;

  constructor(
    private readonly total: number,
    private readonly label: string,
    enabled = process.stderr.isTTY === true,
  ) {
    this.enabled = enabled;
    this.render(0);
  }

  update(done: number): void {
    this.render(done);
  }

  private render(done: number): void {
    if (!this.enabled) return;
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = done > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (this.total - done) / rate : NaN;
    const width = 24;
    const filled = Math.round((done / this.total) * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    const speed = rate >= 1 ? `${rate.toFixed(2)} it/s` : rate > 0 ? `${(1 / rate).toFixed(2)} s/it` : "";
    const etaText = Number.isFinite(eta) ? `ETA ${eta.toFixed(1)}s` : "";
    process.stderr.write(`\r${this.label} [${bar}] ${done}/${this.total} ${speed} ${etaText}\x1b[K`);
  }

  done(): void {
    if (this.enabled) process.stderr.write("\n");
  }
}
