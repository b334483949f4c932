// The one composition root: every running sidecar (`parley run` on a file or a bootstrap, and the demo)
// is assembled here, from its decision log and metrics to its admin server. Start-up is a transaction:
// whatever fails (a listener, the outbound ports, the admin port), everything already bound is stopped
// and the error is thrown, so no half-started process serves without its admin server or its drain.
// The control-plane agent and the Workload API client are loaded only when used: gRPC and its protobuf
// loader hold ~3 MiB of V8 heap and ~16 MiB of RSS (measured, node 24) that a sidecar on a file with
// its own certificate files does not need.
import type { DestinationStream } from "pino";
import type { AdminSettings, Bootstrap, SidecarConfig } from "../config/load.js";
import { FileWatcher } from "../config/watch.js";
import type { ControlAgent } from "../control/agent/agent.js";
import { Sidecar } from "../sidecar/sidecar.js";
import type { AdminServer } from "../telemetry/admin.js";
import type { DecisionLog } from "../telemetry/log.js";
import type { WorkloadApiSource } from "../workloadapi/client.js";
import { operations } from "./operations.js";

/** What a sidecar runs on: a configuration file, or a bootstrap naming its control plane. */
export type SidecarSpec =
  { readonly kind: "file"; readonly config: SidecarConfig; readonly watch: boolean } | { readonly kind: "controlled"; readonly bootstrap: Bootstrap };

export interface AssembleOptions {
  /** parley's version, told to the control plane. */
  readonly version: string;
  /** Replaces the admin settings of the spec (the demo's `--admin`). */
  readonly admin?: AdminSettings;
  /** Where log lines go (default stdout). */
  readonly destination?: DestinationStream;
  /** Backoff of the Workload API client (tests shorten it). */
  readonly workloadBackoff?: { initialMs: number; maxMs: number };
}

export interface RunningSidecar {
  readonly sidecar: Sidecar;
  readonly log: DecisionLog;
  readonly admin: AdminServer | undefined;
  /** Present when driven by a control plane. */
  readonly agent: ControlAgent | undefined;
  /** SIGHUP: reloads a configuration file; a logged no-op for a sidecar fed by a control plane. */
  reload(): void;
  /** Drains (default: the configuration's drain timeout) and releases everything. */
  stop(drainTimeoutMs?: number): Promise<void>;
}

export async function assembleSidecar(spec: SidecarSpec, opts: AssembleOptions): Promise<RunningSidecar> {
  const settings = spec.kind === "file" ? spec.config : spec.bootstrap;
  const ops = operations(settings.log, opts.admin ?? settings.admin, opts.destination);
  const log = ops.log;
  const initial = spec.kind === "file" ? spec.config : spec.bootstrap.initial === "wait" ? undefined : spec.bootstrap.initial;
  // Before the first push, readiness judges the bootstrap's own SVID.
  const sidecar = new Sidecar(initial, { log, ...(spec.kind === "controlled" ? { identity: spec.bootstrap.identity } : {}) });
  let workload: WorkloadApiSource | undefined;
  let agent: ControlAgent | undefined;
  let watcher: FileWatcher | undefined;
  const release = async (drainTimeoutMs?: number) => {
    watcher?.close();
    workload?.stop();
    agent?.stop();
    await sidecar.stop(drainTimeoutMs);
    await ops.close();
  };
  // What the process runs on, for an operator reading why two sidecars differ (src/app/malloc.ts).
  log.lifecycle("starting", { pid: process.pid, node_version: process.version, glibc_tunables: process.env.GLIBC_TUNABLES ?? null });
  try {
    if (initial) await sidecar.start();
    else
      log.lifecycle("waiting for the first configuration from the control plane: nothing bound yet", {
        address: (spec as { bootstrap: Bootstrap }).bootstrap.controlPlane.address,
      });
    if (spec.kind === "controlled") agent = (await import("../control/agent/agent.js")).startAgent(sidecar, spec.bootstrap, log, opts.version);
    // The own identity's source: a configuration's, or a bootstrap's (the agent's credentials follow it).
    const source = spec.kind === "controlled" ? spec.bootstrap.identitySource : initial?.identitySource;
    if (source) {
      const { followWorkloadApi } = await import("../identity/workload.js");
      workload = followWorkloadApi(sidecar, source, log, opts.workloadBackoff, { onIdentity: (svid) => agent?.setIdentity(svid) });
    }
    const admin = await ops.serveAdmin(
      sidecar,
      agent
        ? { configFresh: () => agent!.sync.state !== "stale" || failsOpen(spec), controlPlaneConnected: () => (agent!.sync.state === "connected" ? 1 : 0) }
        : {},
    );
    const reload =
      spec.kind === "file"
        ? fileReload(sidecar, spec, (w) => (watcher = w))
        : () => log.lifecycle("SIGHUP ignored: the configuration comes from the control plane", {});
    return { sidecar, log, admin, agent, reload, stop: release };
  } catch (e) {
    log.error("start-up failed: releasing everything bound", { detail: (e as Error).message });
    await release(0);
    throw e;
  }
}

/** A stale configuration served as the bootstrap says (`on_stale: fail_open`) leaves the sidecar ready. */
const failsOpen = (spec: SidecarSpec) => spec.kind === "controlled" && spec.bootstrap.controlPlane.on_stale === "fail_open";

/** Reload on SIGHUP and, when watching, on any change to the configuration or a file it names. */
function fileReload(sidecar: Sidecar, spec: { config: SidecarConfig; watch: boolean }, setWatcher: (w: FileWatcher) => void): () => void {
  if (!spec.watch) return () => void sidecar.reload();
  const watcher = new FileWatcher(() => reload());
  setWatcher(watcher);
  // The files of the configuration last given, applied or not (the identity may still be on its way).
  const reload = () => {
    void sidecar.reload().then(() => watcher.watch(sidecar.files));
  };
  watcher.watch(spec.config.files);
  // A change made between loading and watching would otherwise go unseen until the next one.
  reload();
  return reload;
}
