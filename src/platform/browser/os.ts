/** The subset of `node:os` that atedm uses, for the browser build (aliased by web/vite.config.ts). */
export function availableParallelism(): number {
  return Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 1);
}

export function tmpdir(): string {
  return "/tmp";
}

/** Memory in the browser is the tab's, unknowable here: the pipeline's memory check is skipped (checkMemory false). */
export function totalmem(): number {
  return 4 * 1024 ** 3;
}

export function freemem(): number {
  return 4 * 1024 ** 3;
}

export const EOL = "\n";
export default { availableParallelism, tmpdir, totalmem, freemem, EOL };
