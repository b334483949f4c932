// The decision log: JSON lines (pino) on stdout. Its records are a contract with SREs; the schema is
// documented in the README and changes only by adding fields.
import { EventEmitter } from "node:events";
import type { LimitEvent } from "../limits/events.js";
import { pino, type DestinationStream, type Logger } from "pino";
import { DenyCap } from "./denycap.js";
import type { Metrics } from "./metrics.js";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** Bytes of log records held while the reader falls behind (`log.buffer`), by default. */
export const DEFAULT_LOG_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Records are buffered and written in batches of about 8 KiB, or every 100 ms when traffic is light:
 * one write per record cost a thread-pool round trip each, about a tenth of a short session's CPU
 * (measured, README). The buffer is flushed synchronously at exit; a SIGKILL loses at most 100 ms.
 * The 100 ms flush runs only when a record was written since the last one: sonic-boom's own
 * `periodicFlush` writes an empty buffer each time (a thread-pool round trip and two wake-ups of the
 * event loop, ten times a second, for an idle sidecar).
 *
 * The buffer holds at most `bufferBytes`: a record that would not fit is dropped (sonic-boom's
 * `maxLength`, which emits `drop`), and DecisionLog counts it. The trade-off: when the reader of
 * stdout stops (a stuck `| tail`, a wedged collector), records are lost rather than memory or the
 * data path; blocking instead would stall every session on the event loop behind the reader.
 */
export function bufferedDestination(bufferBytes: number = DEFAULT_LOG_BUFFER_BYTES, dest: number | string = 1): DestinationStream {
  const stream = pino.destination({ dest, sync: false, minLength: 8192, maxLength: bufferBytes });
  let written = false;
  const write = stream.write.bind(stream);
  stream.write = (record: string) => ((written = true), write(record));
  // A destroyed sonic-boom throws on flush (its typings omit the flag it keeps).
  const destroyed = () => (stream as unknown as { destroyed: boolean }).destroyed;
  const flusher = setInterval(() => {
    if (!written || destroyed()) return;
    written = false;
    stream.flush();
  }, LOG_FLUSH_MS).unref();
  stream.once("close", () => clearInterval(flusher));
  return stream;
}

/** Most time a record waits in the buffer when traffic is light. */
export const LOG_FLUSH_MS = 100;

export function createLogger(level: LogLevel, destination: DestinationStream = bufferedDestination()): Logger {
  const options = {
    level,
    base: null,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return pino(options, destination);
}

export interface DecisionRecord {
  session_id: string;
  listener: string;
  decision: "allow" | "deny";
  rule: string | null;
  reasons: readonly string[];
  policy: string;
  policy_version: string;
  peer_id: string | null;
  trust_domain: string | null;
  cert_serial: string | null;
  cert_fingerprint: string | null;
  source: string;
  sni: string | null;
  alpn: string | null;
  tls_version: string | null;
  /** A multiplexed session's target (its CONNECT stream's `:authority`). */
  target?: string;
  mode: "enforce" | "audit";
  roles: readonly string[];
  would_deny?: true;
  would_deny_rule?: string | null;
  would_deny_reasons?: readonly string[];
  obligations?: Record<string, number | string>;
  svid_rule?: string;
  detail?: string;
  held_ms?: number;
  negotiation?: Record<string, unknown>;
  negotiation_rule?: string;
  decision_us: number;
}

export interface SessionEndRecord {
  session_id: string;
  listener: string;
  peer_id: string;
  source: string;
  bytes_to_upstream: number;
  bytes_to_client: number;
  duration_ms: number;
  end_reason: string;
  detail?: string;
}

export interface RevokedRecord {
  session_id: string;
  listener: string;
  peer_id: string;
  old_version: string;
  new_version: string;
  rule: string | null;
  reasons: readonly string[];
  grace_ms: number;
  svid_rule?: string;
  /** What changed to decide again (absent: a new configuration version). */
  cause?: RevocationCause["cause"];
  changed?: RevocationCause["changed"];
  /** With cause `revoked`: the revocation entry, its matcher (`kind value`) and its reason. */
  revocation?: { entry: string; match: string; reason: string };
}

/** Why live sessions are decided again, and what changed (a trust domain, an SVID, a version). */
export interface RevocationCause {
  cause: "config_changed" | "revoked" | "trust_bundle_changed" | "own_svid_rotated" | "own_svid_expired" | "own_svid_withdrawn" | "config_stale";
  changed?: Record<string, unknown>;
}

const REVOKED_BECAUSE: Record<RevocationCause["cause"], string> = {
  config_changed: "session no longer admitted by the new configuration",
  revoked: "session revoked: a revocation names it",
  trust_bundle_changed: "session no longer admitted after a trust bundle changed",
  own_svid_rotated: "session no longer admitted after the own SVID rotated",
  own_svid_expired: "session revoked: the own SVID expired",
  own_svid_withdrawn: "session revoked: the own SVID was withdrawn",
  config_stale: "session revoked: the configuration is stale",
};

export interface ConfigRecord {
  file: string;
  old_version: string;
  new_version?: string;
  errors?: readonly string[];
  sessions_rechecked?: number;
}

export interface HandshakeRefusalRecord {
  listener: string;
  source: string;
  cause: string;
}

export interface HandshakeFailureRecord {
  listener: string;
  source: string;
  cause: string;
  detail: string;
}

export interface LogCategories {
  /** `decision` records (counted in metrics either way). */
  readonly decisions: boolean;
  /** `session_end` and `revoked` records. */
  readonly sessions: boolean;
  /** `handshake_failed` and `handshake_refused` records. */
  readonly handshakes: boolean;
  /** `config_applied`, `config_rejected`, `lifecycle` records. */
  readonly control: boolean;
}

export interface DecisionLogOptions {
  readonly metrics?: Metrics;
  readonly categories?: Partial<LogCategories>;
  /** Repeated identical denials: `burst` records per `windowMs`, the rest counted. */
  readonly denyCap?: { readonly burst: number; readonly windowMs: number };
  readonly now?: () => number;
}

const ALL: LogCategories = { decisions: true, sessions: true, handshakes: true, control: true };

/**
 * The typed front of the logger: one method per record kind, so a record's shape is checked where it
 * is made. Every record also updates the metrics, whether or not its category is written.
 */
export class DecisionLog {
  private readonly categories: LogCategories;
  private readonly cap: DenyCap | undefined;
  private readonly now: () => number;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly logger: Logger,
    private readonly options: DecisionLogOptions = {},
  ) {
    this.categories = { ...ALL, ...options.categories };
    this.cap = options.denyCap ? new DenyCap(options.denyCap) : undefined;
    this.now = options.now ?? Date.now;
    this.countDrops();
    if (this.cap) {
      this.flushTimer = setInterval(() => this.flushDenials(), options.denyCap!.windowMs);
      this.flushTimer.unref();
    }
  }

  decision(r: DecisionRecord): void {
    const m = this.options.metrics;
    m?.decisions.inc({ listener: r.listener, decision: r.decision, reason: r.reasons[0] ?? "" });
    m?.decisionSeconds.observe({ listener: r.listener }, r.decision_us / 1e6);
    if (!this.categories.decisions) return;
    let suppressedBefore = 0;
    if (r.decision === "deny" && this.cap) {
      const verdict = this.cap.admit(denialKey(r), this.now());
      if (!verdict.write) return void m?.suppressedDenials.inc();
      suppressedBefore = verdict.suppressedBefore;
    }
    const rec = suppressedBefore > 0 ? { event: "decision", ...r, suppressed_before: suppressedBefore } : { event: "decision", ...r };
    this.logger.info(rec, r.decision === "allow" ? "session allowed" : "session denied");
  }

  private dropped = 0;

  /**
   * A destination that drops records when full (bufferedDestination) tells of each drop; once its
   * writer has caught up (`drain`), one record says how many were lost.
   */
  private countDrops(): void {
    const stream = (this.logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
    if (!(stream instanceof EventEmitter)) return;
    stream.on("drop", () => {
      this.dropped++;
      this.options.metrics?.droppedLogRecords.inc();
    });
    stream.on("drain", () => {
      if (this.dropped === 0) return;
      const count = this.dropped;
      this.dropped = 0;
      this.logger.warn({ event: "log_records_dropped", count }, "log records dropped: the log's reader fell behind and its buffer was full");
    });
  }

  /** Writes a count for each capped denial key whose window has closed. */
  flushDenials(): void {
    for (const { key, suppressed } of this.cap?.flush(this.now()) ?? []) {
      const [listener, peer, reasons, source] = key.split("|");
      this.logger.info(
        { event: "denials_suppressed", listener, peer_id: peer || null, reasons: reasons!.split(","), source_ip: source, count: suppressed },
        "identical denials not logged one by one",
      );
    }
  }

  close(): void {
    clearInterval(this.flushTimer);
    this.flushDenials();
  }

  sessionEnd(r: SessionEndRecord): void {
    const m = this.options.metrics;
    m?.sessionEnds.inc({ listener: r.listener, reason: r.end_reason });
    m?.bytes.inc({ listener: r.listener, direction: "to_upstream" }, r.bytes_to_upstream);
    m?.bytes.inc({ listener: r.listener, direction: "to_client" }, r.bytes_to_client);
    if (this.categories.sessions) this.logger.info({ event: "session_end", ...r }, "session ended");
  }

  /** Metrics only: a completed handshake's duration. */
  handshakeCompleted(listener: string, seconds: number): void {
    this.options.metrics?.handshakeSeconds.observe({ listener }, seconds);
  }

  /** Metrics only: a limit was hit. */
  limitHit(kind: LimitEvent): void {
    this.options.metrics?.limitHits.inc({ kind });
  }

  /** Metrics only: one call to the shared limits' backend (Redis), its latency and outcome. */
  sharedLimitsCall(op: string, seconds: number, outcome: string): void {
    this.options.metrics?.sharedLimitsSeconds.observe({ op, outcome }, seconds);
  }

  /** An outbound connection: the remote was verified (and granted, if negotiating), or refused. */
  outbound(r: Record<string, unknown> & { listener: string; decision: "allow" | "deny" }): void {
    this.options.metrics?.decisions.inc({ listener: r.listener, decision: r.decision, reason: typeof r.reason === "string" ? r.reason : "remote_verified" });
    if (this.categories.decisions)
      this.logger.info({ event: "outbound", ...r }, r.decision === "allow" ? "outbound session opened" : "outbound session refused");
  }

  revoked(r: RevokedRecord): void {
    this.options.metrics?.revocations.inc({ reason: r.reasons[0] ?? "" });
    if (this.categories.sessions) this.logger.info({ event: "revoked", ...r }, REVOKED_BECAUSE[r.cause ?? "config_changed"]);
  }

  /** An own-identity update from its source (the log line is the caller's): counted by outcome. */
  identityUpdate(source: string, outcome: "applied" | "refused" | "withdrawn"): void {
    this.options.metrics?.identityUpdates.inc({ source, outcome });
  }

  configApplied(r: ConfigRecord): void {
    this.options.metrics?.configChanges.inc({ outcome: "applied" });
    if (this.categories.control) this.logger.info({ event: "config_applied", ...r }, "configuration applied");
  }

  configRejected(r: ConfigRecord): void {
    this.options.metrics?.configChanges.inc({ outcome: "rejected" });
    this.logger.error({ event: "config_rejected", ...r }, "configuration rejected; the previous one stays");
  }

  /** Refusals before the handshake come in floods: logged at most once a second per cause, with a count. */
  handshakeRefused(r: HandshakeRefusalRecord): void {
    this.options.metrics?.handshakeRefusals.inc({ listener: r.listener, cause: r.cause });
    if (!this.categories.handshakes) return;
    const now = this.now();
    const s = this.refusals.get(r.cause) ?? { at: 0, suppressed: 0 };
    if (now - s.at < 1000) {
      s.suppressed++;
      this.refusals.set(r.cause, s);
      return;
    }
    this.logger.warn({ event: "handshake_refused", ...r, suppressed_since_last: s.suppressed }, "connection refused before the handshake");
    this.refusals.set(r.cause, { at: now, suppressed: 0 });
  }

  private readonly refusals = new Map<string, { at: number; suppressed: number }>();

  handshakeFailed(r: HandshakeFailureRecord): void {
    this.options.metrics?.handshakeFailures.inc({ listener: r.listener, cause: r.cause });
    if (this.categories.handshakes) this.logger.info({ event: "handshake_failed", ...r }, "TLS handshake failed");
  }

  lifecycle(msg: string, fields: Record<string, unknown> = {}): void {
    if (this.categories.control) this.logger.info({ event: "lifecycle", ...fields }, msg);
  }

  warn(msg: string, fields: Record<string, unknown> = {}): void {
    this.logger.warn({ event: "warning", ...fields }, msg);
  }

  error(msg: string, fields: Record<string, unknown> = {}): void {
    this.logger.error({ event: "error", ...fields }, msg);
  }
}

/** Identical denials: same listener, peer (or certificate), reasons and source address. */
function denialKey(r: DecisionRecord): string {
  const ip = r.source.slice(0, r.source.lastIndexOf(":"));
  return `${r.listener}|${r.peer_id ?? r.cert_fingerprint ?? ""}|${r.reasons.join(",")}|${ip}`;
}
