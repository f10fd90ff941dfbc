/**
 * A headless Chromium for the tests (and eval/report_pngs.ts): the system's browser driven by playwright-core,
 * which downloads nothing. Found by the CHROMIUM environment variable, else /usr/bin/chromium or
 * /usr/bin/chromium-browser; when none is there, the error says how to install it (CI's .ci/run does).
 */
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM_PATHS = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/** The Chromium executable to drive (CHROMIUM, else the first of `paths` that exists); throws, never skips, when there is none. */
export function findChromium(paths: readonly string[] = CHROMIUM_PATHS): string {
  const fromEnv = process.env.CHROMIUM;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`CHROMIUM=${fromEnv}: no such file (unset it, or point it at a Chromium executable)`);
    return fromEnv;
  }
  const found = paths.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `no Chromium found (tried ${paths.join(", ") || "no paths"}): run 'apt-get install chromium' (as root), or set CHROMIUM to its executable`,
    );
  }
  return found;
}

/**
 * Flags for a machine without network (CI, sandboxes): no background requests (component updates, safe browsing,
 * translation, sync, field trials, DNS prefetch); pages on 127.0.0.1 still load.
 */
export const NO_NETWORK_ARGS = [
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-domain-reliability",
  "--disable-sync",
  "--disable-default-apps",
  "--no-first-run",
  "--no-pings",
  "--metrics-recording-only",
  "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,CertificateTransparencyComponentUpdater,AutofillServerCommunication",
  "--dns-prefetch-disable",
];

export async function launchChromium(extraArgs: readonly string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: findChromium(), args: ["--no-sandbox", ...extraArgs] });
}
