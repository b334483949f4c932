// Keeping a sidecar in step with its control plane: each push validated in full and applied all or
// nothing (else NACKed, nothing changed); while the stream is down the last good configuration is kept
// for at most max_staleness, then the sidecar fails closed (or open, if the bootstrap says so).
import type { Bootstrap, SidecarConfig } from "../../config/load.js";
import { ParleyError } from "../../errors/catalogue.js";
import type { Sidecar } from "../../sidecar/sidecar.js";
import type { DecisionLog } from "../../telemetry/log.js";
import type { PushAnswer, PushAnswerDetail } from "./client.js";
import { compilePush } from "./validate.js";
import { NackCode } from "../issues.js";
import type { WireResource } from "../wire.js";

export type SyncState = "connecting" | "connected" | "disconnected" | "stale";

export class ConfigSync {
  private version = "";
  private staleTimer: NodeJS.Timeout | undefined;
  private stale = false;
  private up = false;

  constructor(
    private readonly sidecar: Sidecar,
    private readonly bootstrap: Bootstrap,
    private readonly log: DecisionLog,
  ) {}

  get state(): SyncState {
    return this.stale ? "stale" : this.up ? "connected" : this.version ? "disconnected" : "connecting";
  }

  running(): string {
    return this.version;
  }

  async onPush(version: string, resources: readonly WireResource[]): Promise<PushAnswer> {
    const origin = `control-plane ${this.bootstrap.controlPlane.address}`;
    const c = compilePush(resources, version);
    if (!c.ok) return this.rejected(origin, version, NackCode.INVALID_ARGUMENT, c.lines, c.details);
    if (c.skipped.length > 0) {
      this.log.warn("push carries resource kinds this sidecar does not know: skipped, the rest applied", {
        version,
        skipped: c.skipped.slice(0, 20),
        count: c.skipped.length,
      });
    }
    const config: SidecarConfig = {
      ...c.resources,
      file: this.bootstrap.file,
      identity: this.bootstrap.identity,
      files: this.bootstrap.files,
      log: this.bootstrap.log,
      admin: this.bootstrap.admin,
    };
    const sessions = this.sidecar.registry.size;
    try {
      await this.sidecar.apply(config);
    } catch (e) {
      // A valid push this host cannot put in force (a bind failed): the code says it is not the content.
      const code = e instanceof ParleyError && e.code === "PARLEY_ERR_APPLY" ? NackCode.FAILED_PRECONDITION : NackCode.INTERNAL;
      const message = `push ${version}: ${(e as Error).message}`;
      return this.rejected(origin, version, code, [message], [{ kind: "", resource: "", field: "", message: (e as Error).message }]);
    }
    this.log.configApplied({ file: origin, old_version: this.version, new_version: version, sessions_rechecked: sessions });
    this.version = version;
    return { ok: true };
  }

  private rejected(origin: string, version: string, code: number, lines: string[], details: PushAnswerDetail[]): PushAnswer {
    this.log.configRejected({ file: origin, old_version: this.version, new_version: version, errors: lines.slice(0, 100) });
    return { ok: false, code, message: `parley rejected version ${version}: ${lines.length} problem(s)`, issues: lines, details };
  }

  onUp(): void {
    this.up = true;
    clearTimeout(this.staleTimer);
    this.staleTimer = undefined;
    this.log.lifecycle("control plane connected", { address: this.bootstrap.controlPlane.address, running_version: this.version || null });
    if (this.stale) {
      this.stale = false;
      this.sidecar.servingStaleSince = undefined;
      this.sidecar.setFailClosed(undefined);
      this.log.lifecycle("configuration fresh again: serving it", { version: this.version });
    }
  }

  onDown(reason: string, retryInMs: number): void {
    this.up = false;
    this.log.lifecycle("control plane unreachable", { reason, retry_in_ms: retryInMs, running_version: this.version || null });
    if (this.staleTimer || this.stale) return;
    const { max_staleness, on_stale } = this.bootstrap.controlPlane;
    this.staleTimer = setTimeout(() => {
      this.staleTimer = undefined;
      this.stale = true;
      if (on_stale === "fail_closed") {
        this.log.error("configuration stale: failing closed", { max_staleness_ms: max_staleness, version: this.version || null });
        this.sidecar.setFailClosed("config_stale");
      } else {
        this.sidecar.servingStaleSince = Date.now();
        this.log.error("configuration stale: failing open as configured, still serving the last version", {
          max_staleness_ms: max_staleness,
          version: this.version || null,
        });
      }
    }, max_staleness);
    this.staleTimer.unref();
  }

  close(): void {
    clearTimeout(this.staleTimer);
  }
}
