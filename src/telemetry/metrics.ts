// Prometheus metrics (prom-client), in a registry of the sidecar's own: no process-wide default
// registry, so two sidecars in one process (as in tests) never mix their figures.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { IdentityStatus } from "../identity/status.js";
import { BACKEND_STATES, type BackendState } from "../limits/redis.js";

// The event-loop delay histogram (parley_process_nodejs_eventloop_lag_*) samples every 100 ms, not
// prom-client's 10: with 10 ms, parley's main thread spent 130-230 ms more user CPU per GiB of bulk
// than a bare pipe; with 100 ms, 40-90 ms more (README "Bulk under limits", four runs each way).
const EVENT_LOOP_SAMPLE_MS = 100;

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

/** A counter family in `registry`. */
function counter<T extends string>(registry: Registry, name: string, help: string, labelNames: readonly T[] = []): Counter<T> {
  return new Counter({ name, help, labelNames, registers: [registry] });
}

function histogram<T extends string>(registry: Registry, name: string, help: string, labelNames: readonly T[], buckets: number[]): Histogram<T> {
  return new Histogram({ name, help, labelNames, buckets, registers: [registry] });
}

/** One sample: its labels and value. */
type Sample = readonly [Record<string, string>, number];

/** A gauge family read at each scrape: cleared, then set to the samples `read` gives (none: absent). */
function gauge(registry: Registry, name: string, help: string, labelNames: readonly string[], read: () => readonly Sample[]): void {
  new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.set(labels, value);
    },
  });
}

const one = (s: Sample | undefined): readonly Sample[] => (s ? [s] : []);

export class Metrics {
  readonly registry = new Registry();
  readonly decisions = counter(this.registry, "parley_decisions_total", "Connection decisions, by listener, decision and first reason", [
    "listener",
    "decision",
    "reason",
  ]);
  readonly decisionSeconds = histogram(
    this.registry,
    "parley_decision_duration_seconds",
    "Time to verify the peer and decide",
    ["listener"],
    [5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3],
  );
  readonly handshakeSeconds = histogram(
    this.registry,
    "parley_handshake_duration_seconds",
    "TLS handshake time, from accept to an established session",
    ["listener"],
    [0.5e-3, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3, 2],
  );
  readonly handshakeFailures = counter(this.registry, "parley_handshake_failures_total", "Failed TLS handshakes, by cause", ["listener", "cause"]);
  readonly handshakeRefusals = counter(this.registry, "parley_handshake_refusals_total", "Connections refused before the handshake, by cause", [
    "listener",
    "cause",
  ]);
  readonly sessionEnds = counter(this.registry, "parley_session_ends_total", "Ended sessions, by listener and end reason", ["listener", "reason"]);
  readonly bytes = counter(this.registry, "parley_session_bytes_total", "Bytes carried by ended sessions, by direction", ["listener", "direction"]);
  readonly revocations = counter(this.registry, "parley_revocations_total", "Live sessions revoked, by first reason", ["reason"]);
  readonly limitHits = counter(this.registry, "parley_limit_hits_total", "Limit hits, by kind", ["kind"]);
  readonly configChanges = counter(this.registry, "parley_config_changes_total", "Configuration versions applied or rejected (a rejected push is a NACK)", [
    "outcome",
  ]);
  readonly identityUpdates = counter(
    this.registry,
    "parley_identity_updates_total",
    "Own-identity updates, by source (files, workload_api) and outcome (applied, refused, withdrawn)",
    ["source", "outcome"],
  );
  readonly sharedLimitsSeconds = histogram(
    this.registry,
    "parley_shared_limits_call_duration_seconds",
    "Calls to the shared limits' backend (Redis), by operation (rate, lease, renew, release) and outcome (ok, error, timeout, refused: not sent)",
    ["op", "outcome"],
    [50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3],
  );
  readonly suppressedDenials = counter(this.registry, "parley_log_suppressed_denials_total", "Denial records not written because of the repeated-denial cap");
  readonly droppedLogRecords = counter(
    this.registry,
    "parley_log_records_dropped_total",
    "Log records dropped because the log's buffer was full (its reader fell behind)",
  );

  constructor(live: LiveFigures) {
    collectDefaultMetrics({ register: this.registry, prefix: "parley_process_", eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
    const r = this.registry;
    const identity = (sample: (s: IdentityStatus) => Sample | undefined) => () => {
      const s = live.identity();
      return one(s && sample(s));
    };
    gauge(r, "parley_sessions_active", "Live sessions, by listener", ["listener"], () =>
      Object.entries(live.sessionsByListener()).map(([listener, n]) => [{ listener }, n]),
    );
    gauge(r, "parley_own_svid_expiry_seconds", "Seconds until the sidecar's own SVID expires", [], () => {
      const s = live.ownSvidSecondsLeft();
      return one(s === undefined ? undefined : [{}, s]);
    });
    // Per source: connected, last update, and the SVID in force (info with ID, serial, fingerprint; not-after).
    gauge(
      r,
      "parley_identity_source_connected",
      "1 while the own identity's source is connected (files: an SVID was read)",
      ["source"],
      identity((s) => [{ source: s.source }, s.connected ? 1 : 0]),
    );
    gauge(
      r,
      "parley_identity_last_update_timestamp_seconds",
      "When the own identity's source last delivered",
      ["source"],
      identity((s) => (s.lastUpdate === undefined ? undefined : [{ source: s.source }, s.lastUpdate / 1000])),
    );
    gauge(
      r,
      "parley_own_svid_info",
      "The own SVID in force (value 1; 0 while withdrawn or expired)",
      ["source", "id", "serial", "fingerprint"],
      identity((s) =>
        s.svid ? [{ source: s.source, id: s.svid.id.toString(), serial: s.svid.serial, fingerprint: s.svid.fingerprint }, s.usable ? 1 : 0] : undefined,
      ),
    );
    gauge(
      r,
      "parley_own_svid_not_after_timestamp_seconds",
      "The own SVID's notAfter",
      ["source"],
      identity((s) => (s.svid ? [{ source: s.source }, s.svid.notAfter / 1000] : undefined)),
    );
    gauge(
      r,
      "parley_shared_limits_backend_state",
      "The shared limits' backend state: 1 on the current one of connecting, up, down, open (breaker); absent without shared_limits",
      ["state"],
      () => {
        const now = live.sharedLimitsState?.();
        return now ? BACKEND_STATES.map((state) => [{ state }, state === now ? 1 : 0]) : [];
      },
    );
    gauge(r, "parley_config_info", "The configuration version in force (value 1)", ["version"], () => {
      const v = live.configVersion();
      return one(v ? [{ version: v }, 1] : undefined);
    });
  }

  /** Only a sidecar with a control plane has this gauge: absent otherwise, never a misleading 0. */
  trackControlPlane(connected: () => number): void {
    gauge(this.registry, "parley_control_plane_connected", "1 while the control-plane stream is up (absent without a control plane)", [], () => [
      [{}, connected()],
    ]);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
