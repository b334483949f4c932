// Limit events: every bound that refused, held or let through a session or a handshake, as one typed
// enum. The limits count them here; whoever exposes them (metrics, logs) subscribes once.
import type { AdmissionRefusal } from "./admission.js";
import type { HandshakeRefusal } from "./handshakes.js";

export type LimitEvent =
  | AdmissionRefusal
  | HandshakeRefusal
  | "held"
  | "held_queue_full"
  | "held_then_admitted"
  /** Shared limits' backend (Redis) did not answer: refused (`deny`) or fell back to local (`local`). */
  | "shared_limits_unavailable"
  | "shared_limits_fallback"
  /** A task (approval `txn`) over its own bound: concurrent sessions or new sessions a minute. */
  | "task_limit_exceeded";

export class LimitCounts {
  private readonly counts = new Map<LimitEvent, number>();

  /** `onHit` sees every event (metrics and logs). */
  constructor(private readonly onHit?: (event: LimitEvent) => void) {}

  hit(event: LimitEvent): void {
    this.counts.set(event, (this.counts.get(event) ?? 0) + 1);
    this.onHit?.(event);
  }

  get(event: LimitEvent): number {
    return this.counts.get(event) ?? 0;
  }
}
