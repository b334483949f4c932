// Files shipped with the package, found from this module's place in it (src/assets or dist/assets):
// the protocol definitions, the demo configuration, the development certificates and package.json.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PROTO_ROOT = join(PACKAGE_ROOT, "proto");
export const DEMO_CONFIG = join(PACKAGE_ROOT, "config", "demo.yaml");
export const DEV_CERTS = join(PACKAGE_ROOT, "certs-dev");

let version: string | undefined;

/** parley's version, from its package.json (read once). */
export function packageVersion(): string {
  version ??= (JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;
  return version;
}
