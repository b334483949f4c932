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
import { workloadTarget } from "../workloadapi/endpoint.js";

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

/**
 * The Workload API endpoint, resolved and checked now: a missing or malformed one is a configuration
 * error (exit 2), not a failure at start. The environment is read once, here (SPIFFE Workload Endpoint §4).
 */
function workloadApiSettings(c: CompileContext, w: WorkloadApiSettings): WorkloadApiSettings {
  const endpoint = w.endpoint ?? process.env.SPIFFE_ENDPOINT_SOCKET;
  const path = ["identity", "workload_api", "endpoint"];
  if (!endpoint) c.error(path, "no Workload API endpoint: set identity.workload_api.endpoint or the SPIFFE_ENDPOINT_SOCKET environment variable");
  else {
    try {
      workloadTarget(endpoint);
    } catch (e) {
      c.error(path, `${w.endpoint === undefined ? "SPIFFE_ENDPOINT_SOCKET: " : ""}${(e as Error).message}`);
    }
  }
  return { ...w, ...(endpoint ? { endpoint } : {}) };
}

export function loadConfig(file: string, now: number = Date.now()): SidecarConfig {
  return compileConfig(YamlSource.read(file), now);
}

/**
 * What `file` would load as were it to hold `text`, without writing it (relative paths resolve from
 * its directory, the files it names are read): a check of an edit before it is made.
 */
export function loadConfigText(file: string, text: string, now: number = Date.now()): SidecarConfig {
  return compileConfig(YamlSource.fromText(file, text), now);
}

function compileConfig(src: YamlSource, now: number): SidecarConfig {
  const file = src.file;
  const raw = parseWith(configSchema, src.toJS(), src);
  const files = [resolve(file)];
  const c = fileContext(src, files);
  if ("workload_api" in raw.identity) {
    const identitySource = workloadApiSettings(c, raw.identity.workload_api);
    const resources = compileResources(raw, c);
    c.throwIfAny();
    return { ...resources, file, identity: undefined, identitySource, files, log: raw.log, admin: raw.admin };
  }
  const own = readIdentity(c, raw.identity);
  const resources = compileResources(raw, c);
  const identity = compileIdentity(c, own, resources.bundles, now);
  c.throwIfAny();
  return { ...resources, file, identity: identity!, files, log: raw.log, admin: raw.admin };
}

export interface Bootstrap {
  readonly file: string;
  /** Undefined when the identity comes from the Workload API (`identitySource`). */
  readonly identity: OwnIdentity | undefined;
  readonly identitySource?: WorkloadApiSettings;
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
  const fromApi = "workload_api" in raw.identity ? workloadApiSettings(c, raw.identity.workload_api) : undefined;
  const identity = "workload_api" in raw.identity ? undefined : compileIdentity(c, readIdentity(c, raw.identity), new BundleSet([]), now);
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
    identity,
    ...(fromApi ? { identitySource: fromApi } : {}),
    controlPlane: { ...raw.control_plane, ...(caPem !== undefined ? { caPem } : {}) },
    initial,
    log: raw.log,
    admin: raw.admin,
    files,
  };
}
