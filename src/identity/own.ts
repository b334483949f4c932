// The sidecar's own identity over time: where it comes from, when it was applied, and the two ways it
// stops being usable. Expiry: a warning five minutes before, then fail closed at notAfter. Withdrawal:
// the Workload API answered PermissionDenied after issuing it (SPIFFE Workload API §5.2.1: "cease
// using" it), fail closed. A new SVID ends both. Failing closed itself is the sidecar's (a callback).
import type { DecisionLog } from "../telemetry/log.js";
import { at, type LongTimer } from "../time/clock.js";
import type { OwnIdentity } from "./files.js";
import { FILES_SOURCE, type IdentitySource, type IdentityStatus } from "./status.js";

const EXPIRY_WARNING_MS = 5 * 60_000;

export interface OwnIdentityOptions {
  readonly log: DecisionLog;
  readonly now: () => number;
  /** Known before any configuration (a bootstrap's files), for readiness. */
  readonly fallback?: OwnIdentity;
  failClosed(reason: "own_svid_expired" | "own_svid_withdrawn", on: boolean): void;
}

export class OwnIdentityState {
  private source: IdentitySource = FILES_SOURCE;
  private appliedAt: number | undefined;
  private timers: LongTimer[] = [];
  private withdrawn = false;

  constructor(private readonly o: OwnIdentityOptions) {}

  /** Where the identity comes from, for readiness and metrics (default: the configuration's files). */
  use(source: IdentitySource): void {
    this.source = source;
  }

  /** A new SVID is in force: logged with serial and fingerprint, counted, its expiry watched. */
  applied(own: OwnIdentity): void {
    this.appliedAt = this.o.now();
    this.watchExpiry(own);
    this.o.log.identityUpdate(this.source.kind, "applied");
    this.o.log.lifecycle("identity applied", {
      source: this.source.kind,
      id: own.id.toString(),
      serial: own.serial,
      fingerprint: own.fingerprint,
      not_after: new Date(own.notAfter).toISOString(),
    });
  }

  /** The SVID in force (if any) was withdrawn: fail closed until `restored`. */
  withdraw(own: OwnIdentity | undefined, detail: string): void {
    this.o.log.error("own SVID withdrawn by the Workload API: failing closed until a new one arrives", {
      ...(own ? { id: own.id.toString(), serial: own.serial } : {}),
      detail,
    });
    this.withdrawn = true;
    this.o.failClosed("own_svid_withdrawn", true);
  }

  /** An SVID arrived from the source: a withdrawal, if any, is over. */
  restored(own: OwnIdentity): void {
    if (!this.withdrawn) return;
    this.withdrawn = false;
    this.o.log.lifecycle("a new own SVID arrived after the withdrawal: serving again", { id: own.id.toString(), serial: own.serial });
    this.o.failClosed("own_svid_withdrawn", false);
  }

  /** What operators see; `inForce` is the SVID the sidecar serves or holds (else the fallback). */
  status(inForce: OwnIdentity | undefined, now = this.o.now()): IdentityStatus {
    const svid = inForce ?? this.o.fallback;
    const probe = this.source.probe();
    return {
      source: this.source.kind,
      connected: probe.connected ?? svid !== undefined,
      lastUpdate: probe.lastUpdate ?? this.appliedAt,
      svid,
      usable: svid !== undefined && svid.notAfter > now && !this.withdrawn,
      ...(probe.failed ? { failed: probe.failed } : {}),
    };
  }

  stop(): void {
    for (const t of this.timers) t.clear();
  }

  /**
   * Warns (log; parley_own_svid_expiry_seconds shows it too) within the warning window of expiry, and
   * fails closed when it expires: a sidecar never serves with an expired SVID.
   */
  private watchExpiry(own: OwnIdentity): void {
    this.stop();
    const now = this.o.now;
    if (own.notAfter > now()) this.o.failClosed("own_svid_expired", false);
    const id = own.id.toString();
    const warn = () => this.o.log.error("own SVID expires soon and no rotation has arrived", { id, not_after: new Date(own.notAfter).toISOString() });
    const expire = () => {
      this.o.log.error("own SVID expired: failing closed until a new one arrives", { id });
      this.o.failClosed("own_svid_expired", true);
    };
    this.timers = [at(own.notAfter - EXPIRY_WARNING_MS, warn, now), at(own.notAfter, expire, now)];
  }
}
