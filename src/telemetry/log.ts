// The decision log: JSON lines (pino) on stdout. Its records are a contract with SREs; the schema is
// documented in the README and changes only by adding fields.
import { pino, type DestinationStream, type Logger } from "pino";

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: null,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options, pino.destination({ dest: 1, sync: false }));
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
  mode: "enforce" | "audit";
  roles: readonly string[];
  would_deny?: true;
  would_deny_rule?: string | null;
  would_deny_reasons?: readonly string[];
  obligations?: Record<string, number | string>;
  svid_rule?: string;
  detail?: string;
  held_ms?: number;
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
}

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

/** Typed front of the logger: one method per record kind, so a record's shape is checked where it is made. */
export class DecisionLog {
  constructor(readonly logger: Logger) {}

  decision(r: DecisionRecord): void {
    this.logger.info({ event: "decision", ...r }, r.decision === "allow" ? "session allowed" : "session denied");
  }

  sessionEnd(r: SessionEndRecord): void {
    this.logger.info({ event: "session_end", ...r }, "session ended");
  }

  revoked(r: RevokedRecord): void {
    this.logger.info({ event: "revoked", ...r }, "session no longer admitted by the new configuration");
  }

  configApplied(r: ConfigRecord): void {
    this.logger.info({ event: "config_applied", ...r }, "configuration applied");
  }

  configRejected(r: ConfigRecord): void {
    this.logger.error({ event: "config_rejected", ...r }, "configuration rejected; the previous one stays");
  }

  /** Refusals before the handshake come in floods: logged at most once a second per cause, with a count. */
  handshakeRefused(r: HandshakeRefusalRecord): void {
    const now = Date.now();
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
    this.logger.info({ event: "handshake_failed", ...r }, "TLS handshake failed");
  }

  lifecycle(msg: string, fields: Record<string, unknown> = {}): void {
    this.logger.info({ event: "lifecycle", ...fields }, msg);
  }

  error(msg: string, fields: Record<string, unknown> = {}): void {
    this.logger.error({ event: "error", ...fields }, msg);
  }
}
