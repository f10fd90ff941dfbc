/**
 * The error every user-facing failure throws: its message is one line that names the bad file, tensor, flag or
 * config value. The CLI prints `atedm: <message>` and exits non-zero instead of showing a stack trace.
 */
export class AtedmError extends Error {
  override name = "AtedmError";
}
