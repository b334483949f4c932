// Loading configuration files: a static configuration (identity + resources) or a bootstrap
// (identity + where the control plane is). YAML → schema → compiled data; every problem is reported
// with its file and line, and nothing is half-applied.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { SpiffeId } from "../spiffe/spiffeid.js";
import { BundleSet } from "../spiffe/x509bundle.js";
import { type OwnIdentity, compileIdentity, readIdentity } from "../identity/files.js";
import { CompileContext, compileResources, type Resources } from "./resources.js";
import { type AdminSettings, bootstrapSchema, configSchema, type LogSettings, type RawBootstrap, type WorkloadApiSettings } from "./schema.js";
import { parseWith, YamlSource } from "./source.js";

export type { ListenerConfig, Resources } from "./resources.js";
export type { OwnIdentity } from "../identity/files.js";

export type { AdminSettings, LogSettings, WorkloadApiSettings } from "./schema.js";

export interface SidecarConfig extends Resources {
  /** The file the configuration (or its bootstrap) came from. */
  readonly file: string;
  /** Undefined when the identity comes from the Workload API (`identitySource`) and has not arrived. */
  readonly identity: OwnIdentity | undefined;
  readonly identitySource?: WorkloadApiSettings;
  /** Every file this configuration was read from, resolved: what a watcher watches. */
  readonly files: readonly string[];
  readonly log: LogSettings;
  readonly admin: AdminSettings;
}

/** A context reading files relative to `file` and recording what it read. */
function fileContext(src: YamlSource, files: string[]): CompileContext {
  const c = new CompileContext(src, (name) => {
    const full = resolve(dirname(src.file), name);
    files.push(full);
    return readFileSync(full, "utf8");
  });
  c.saw(src.text);
  return c;
}

export function loadConfig(file: string, now: number = Date.now()): SidecarConfig {
  const src = YamlSource.read(file);
  const raw = parseWith(configSchema, src.toJS(), src);
  const files = [resolve(file)];
  const c = fileContext(src, files);
  if ("workload_api" in raw.identity) {
    const resources = compileResources(raw, c);
    return { ...resources, file, identity: undefined, identitySource: raw.identity.workload_api, files, log: raw.log, admin: raw.admin };
  }
  const own = readIdentity(c, raw.identity);
  const resources = compileResources(raw, c);
  const identity = compileIdentity(c, own, resources.bundles, now);
  c.throwIfAny();
  return { ...resources, file, identity: identity!, files, log: raw.log, admin: raw.admin };
}

export interface Bootstrap {
  readonly file: string;
  readonly identity: OwnIdentity;
  readonly controlPlane: RawBootstrap["control_plane"] & { readonly caPem?: string };
  /** Served until the first push, if configured. */
  readonly initial: SidecarConfig | "wait";
  readonly log: LogSettings;
  readonly admin: AdminSettings;
  readonly files: readonly string[];
}

export function loadBootstrap(file: string, now: number = Date.now()): Bootstrap {
  const src = YamlSource.read(file);
  const raw = parseWith(bootstrapSchema, src.toJS(), src);
  const files = [resolve(file)];
  const c = fileContext(src, files);
  const identity = compileIdentity(c, readIdentity(c, raw.identity), new BundleSet([]), now);
  const caPem = raw.control_plane.tls ? c.readFile(["control_plane", "tls", "ca"], raw.control_plane.tls.ca) : undefined;
  const expectId = raw.control_plane.tls?.expect_id;
  if (expectId !== undefined) {
    try {
      SpiffeId.parse(expectId);
    } catch (e) {
      c.error(["control_plane", "tls", "expect_id"], (e as Error).message);
    }
  }
  c.throwIfAny();
  const initial = raw.initial === "wait" ? "wait" : loadConfig(resolve(dirname(file), raw.initial.static), now);
  return {
    file,
    identity: identity!,
    controlPlane: { ...raw.control_plane, ...(caPem !== undefined ? { caPem } : {}) },
    initial,
    log: raw.log,
    admin: raw.admin,
    files,
  };
}
