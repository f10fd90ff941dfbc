/** Synthetic shapes data set: caption grammar, renderer, alignment analyzer and exporter. */
export * from "./grammar.js";
export * from "./rng.js";
export { Mulberry32, randInt, stableHash32, type Rng } from "../util/numerics.js";
export * from "./render.js";
export * from "./analyze.js";
export { exportDataset, generateDataset, type ExportOptions, type GeneratedSet } from "./export.js";
