/**
 * The `atedm` command line. Every failure a user can cause ends as one line `atedm: <what and where>` on stderr
 * and exit code 1 (2 for usage errors); stack traces are shown only with ATEDM_DEBUG=1.
 */
import { AtedmError } from "../errors.js";
import { atedmVersion } from "./version.js";

const HELP = `Usage: atedm <command> [options]

Stable Diffusion in TypeScript on ONNX Runtime, with attention-driven token pruning (AT-EDM) and ToMe.

Commands
  generate [PROMPT]   text to image (default model: the embedded shapes model)
  flops               analytic FLOPs of a U-Net call, with and without pruning
  eval                quality, FLOPs and speed of pruning methods on a prompt file, with intervals
  report              a static HTML report of an eval folder
  recovery-error      per block and step, how far each recovery variant is from the unpruned block
  eval-alignment      text-image alignment of a shapes model on a prompt file
  export-shapes       write the synthetic shapes training set
  worker              run the jobs of 'atedm eval --queue' from Redis

'atedm <command> --help' (or 'atedm help <command>') explains every flag of a command.
'atedm --version' prints the version.
`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  generate: async () => (await import("./generate.js")).generateCommand,
  flops: async () => (await import("./flops.js")).flopsCommand,
  eval: async () => (await import("./eval.js")).evalCommand,
  report: async () => (await import("./report.js")).reportCommand,
  "recovery-error": async () => (await import("./recovery_error.js")).recoveryErrorCommand,
  "eval-alignment": async () => (await import("./eval_alignment.js")).evalAlignmentCommand,
  "export-shapes": async () => (await import("./export_shapes.js")).exportShapesCommand,
  worker: async () => (await import("./worker.js")).workerCommand,
};

export async function main(argv: string[]): Promise<number> {
  let [name, ...rest] = argv;
  if (name === "--version" || name === "-V") {
    process.stdout.write(`atedm ${atedmVersion()}\n`);
    return 0;
  }
  if (name === "help" && rest.length) {
    // `atedm help generate` is `atedm generate --help`
    [name, ...rest] = [rest[0]!, "--help"];
  }
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(HELP);
    return name ? 0 : 2;
  }
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!load) {
    process.stderr.write(`atedm: unknown command '${name}'\n\n${HELP}`);
    return 2;
  }
  try {
    return await (await load())(rest);
  } catch (e) {
    if (process.env.ATEDM_DEBUG) throw e;
    if (e instanceof AtedmError || e instanceof RangeError) {
      process.stderr.write(`atedm: ${e.message}\n`);
      return 1;
    }
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`atedm: ${err.code ? `${err.code}: ` : ""}${err.message?.split("\n")[0] ?? String(e)}\n`);
    return 1;
  }
}
