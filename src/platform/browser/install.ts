// Imported first by the browser entry (src/browser.ts), so Buffer and process exist before any atedm module runs.
import { installBrowserGlobals } from "./globals.js";

installBrowserGlobals();
