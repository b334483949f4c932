// Prometheus metrics (prom-client), in a registry of the sidecar's own: no process-wide default
// registry, so two sidecars in one process (as in tests) never mix their figures.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { IdentityStatus } from "../identity/status.js";
import { BACKEND_STATES, type BackendState } from "../limits/redis.js";

export interface LiveFigures {
  /** Live sessions by listener. */
  sessionsByListener(): Record<string, number>;
  /** Seconds until the own SVID expires; undefined before it is known. */
  ownSvidSecondsLeft(): number | undefined;
  /** The own identity's source and SVID; undefined before a sidecar is attached. */
  identity(): IdentityStatus | undefined;
  /** The configuration version in force. */
  configVersion(): string | undefined;
  /** The shared limits' backend state; undefined when none is configured. */
  sharedLimitsState?(): BackendState | undefined;
}

export class Metrics {
  readonly registry = new Registry();
  readonly decisions = new Counter({
    name: "parley_decisions_total",
    help: "Connection decisions, by listener, decision and first reason",
    labelNames: ["listener", "decision", "reason"],
    registers: [this.registry],
  });
  readonly decisionSeconds = new Histogram({
    name: "parley_decision_duration_seconds",
    help: "Time to verify the peer and decide",
    labelNames: ["listener"],
    buckets: [5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3],
    registers: [this.registry],
  });
  readonly handshakeSeconds = new Histogram({
    name: "parley_handshake_duration_seconds",
    help: "TLS handshake time, from accept to an established session",
    labelNames: ["listener"],
    buckets: [0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3, 2],
    registers: [this.registry],
  });
  readonly handshakeFailures = new Counter({
    name: "parley_handshake_failures_total",
    help: "Failed TLS handshakes, by cause",
    labelNames: ["listener", "cause"],
    registers: [this.registry],
  });
  readonly handshakeRefusals = new Counter({
    name: "parley_handshake_refusals_total",
    help: "Connections refused before the handshake, by cause",
    labelNames: ["listener", "cause"],
    registers: [this.registry],
  });
  readonly sessionEnds = new Counter({
    name: "parley_session_ends_total",
    help: "Ended sessions, by listener and end reason",
    labelNames: ["listener", "reason"],
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: "parley_session_bytes_total",
    help: "Bytes carried by ended sessions, by direction",
    labelNames: ["listener", "direction"],
    registers: [this.registry],
  });
  readonly revocations = new Counter({
    name: "parley_revocations_total",
    help: "Live sessions revoked, by first reason",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly limitHits = new Counter({ name: "parley_limit_hits_total", help: "Limit hits, by kind", labelNames: ["kind"], registers: [this.registry] });
  readonly configChanges = new Counter({
    name: "parley_config_changes_total",
    help: "Configuration versions applied or rejected (a rejected push is a NACK)",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly identityUpdates = new Counter({
    name: "parley_identity_updates_total",
    help: "Own-identity updates, by source (files, workload_api) and outcome (applied, refused, withdrawn)",
    labelNames: ["source", "outcome"],
    registers: [this.registry],
  });
  readonly sharedLimitsSeconds = new Histogram({
    name: "parley_shared_limits_call_duration_seconds",
    help: "Calls to the shared limits' backend (Redis), by operation (rate, lease, renew, release) and outcome (ok, error, timeout, refused: not sent)",
    labelNames: ["op", "outcome"],
    buckets: [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3],
    registers: [this.registry],
  });
  readonly suppressedDenials = new Counter({
    name: "parley_log_suppressed_denials_total",
    help: "Denial records not written because of the repeated-denial cap",
    registers: [this.registry],
  });
  readonly droppedLogRecords = new Counter({
    name: "parley_log_records_dropped_total",
    help: "Log records dropped because the log's buffer was full (its reader fell behind)",
    registers: [this.registry],
  });

  constructor(live: LiveFigures) {
    collectDefaultMetrics({ register: this.registry, prefix: "parley_process_" });
    new Gauge({
      name: "parley_sessions_active",
      help: "Live sessions, by listener",
      labelNames: ["listener"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [listener, n] of Object.entries(live.sessionsByListener())) this.set({ listener }, n);
      },
    });
    new Gauge({
      name: "parley_own_svid_expiry_seconds",
      help: "Seconds until the sidecar's own SVID expires",
      registers: [this.registry],
      collect() {
        const s = live.ownSvidSecondsLeft();
        if (s !== undefined) this.set(s);
      },
    });
    this.identityGauges(live);
    new Gauge({
      name: "parley_shared_limits_backend_state",
      help: "The shared limits' backend state: 1 on the current one of connecting, up, down, open (breaker); absent without shared_limits",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        this.reset();
        const now = live.sharedLimitsState?.();
        if (now) for (const state of BACKEND_STATES) this.set({ state }, state === now ? 1 : 0);
      },
    });
    new Gauge({
      name: "parley_config_info",
      help: "The configuration version in force (value 1)",
      labelNames: ["version"],
      registers: [this.registry],
      collect() {
        this.reset();
        const v = live.configVersion();
        if (v) this.set({ version: v }, 1);
      },
    });
  }

  /** Per source: connected, last update, and the SVID in force (info with ID, serial, fingerprint; not-after). */
  private identityGauges(live: LiveFigures): void {
    const gauge = (name: string, help: string, labelNames: string[], value: (s: IdentityStatus) => [Record<string, string>, number] | undefined) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers: [this.registry],
        collect() {
          this.reset();
          const s = live.identity();
          const v = s && value(s);
          if (v) this.set(v[0], v[1]);
        },
      });
    gauge("parley_identity_source_connected", "1 while the own identity's source is connected (files: an SVID was read)", ["source"], (s) => [
      { source: s.source },
      s.connected ? 1 : 0,
    ]);
    gauge("parley_identity_last_update_timestamp_seconds", "When the own identity's source last delivered", ["source"], (s) =>
      s.lastUpdate === undefined ? undefined : [{ source: s.source }, s.lastUpdate / 1000],
    );
    gauge("parley_own_svid_info", "The own SVID in force (value 1; 0 while withdrawn or expired)", ["source", "id", "serial", "fingerprint"], (s) =>
      s.svid ? [{ source: s.source, id: s.svid.id.toString(), serial: s.svid.serial, fingerprint: s.svid.fingerprint }, s.usable ? 1 : 0] : undefined,
    );
    gauge("parley_own_svid_not_after_timestamp_seconds", "The own SVID's notAfter", ["source"], (s) =>
      s.svid ? [{ source: s.source }, s.svid.notAfter / 1000] : undefined,
    );
  }

  /** Only a sidecar with a control plane has this gauge: absent otherwise, never a misleading 0. */
  trackControlPlane(connected: () => number): void {
    new Gauge({
      name: "parley_control_plane_connected",
      help: "1 while the control-plane stream is up (absent without a control plane)",
      registers: [this.registry],
      collect() {
        this.set(connected());
      },
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
