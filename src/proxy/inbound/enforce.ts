// The obligations of an allowed session put in force on its client socket: the expiry (grant,
// certificate, attestation or max duration), the idle timeout, and the bandwidth throttles (the
// session's own and its identity's shared ones). Re-bound in place when a re-check tightens them.
import type { TLSSocket } from "node:tls";
import type { SharedThrottles } from "../../limits/throttle.js";
import { Throttle } from "../../limits/throttle.js";
import type { Obligations } from "../../policy/decision.js";
import { at, type LongTimer } from "../../time/clock.js";
import type { PumpLimits } from "../pump.js";

const EXPIRY_REASON = { max_duration: "max_duration", certificate: "cert_expired", attestation: "attestation_expired", grant: "grant_expired" } as const;

export type ExpiryReason = (typeof EXPIRY_REASON)[keyof typeof EXPIRY_REASON] | "idle_timeout";

export class Enforcement {
  private expiryTimer: LongTimer | undefined;
  private readonly up: Throttle;
  private readonly down: Throttle;
  private identity: { up: Throttle; down: Throttle; release(): void } | undefined;
  private budget: number | undefined;
  /** When the session ends at the latest, if it does. */
  expiresAt: number | undefined;

  constructor(
    private readonly client: TLSSocket,
    private readonly peerId: string,
    private readonly shared: SharedThrottles,
    private readonly now: () => number,
    private readonly onExpiry: (reason: ExpiryReason) => void,
    o: Obligations,
  ) {
    this.up = new Throttle(o.bandwidthBps, now());
    this.down = new Throttle(o.bandwidthBps, now());
    this.bind(o);
  }

  /** Puts `o` in force (also on a live session: a tightened bandwidth applies at once). */
  bind(o: Obligations): void {
    this.expiryTimer?.clear();
    this.expiresAt = o.expiresAt;
    if (o.expiresAt !== undefined) {
      const reason = EXPIRY_REASON[o.expiresBecause ?? "max_duration"];
      this.expiryTimer = at(o.expiresAt, () => this.onExpiry(reason), this.now);
    }
    // The client socket sees every byte of both directions, so its inactivity is the session's.
    if (o.idleTimeoutMs !== undefined) this.client.setTimeout(o.idleTimeoutMs, () => this.onExpiry("idle_timeout"));
    else this.client.setTimeout(0);
    const now = this.now();
    this.up.setRate(o.bandwidthBps, now);
    this.down.setRate(o.bandwidthBps, now);
    if (o.identityBandwidthBps !== undefined) {
      this.identity ??= this.shared.acquire(this.peerId, o.identityBandwidthBps, now);
      this.identity.up.setRate(o.identityBandwidthBps, now);
      this.identity.down.setRate(o.identityBandwidthBps, now);
    }
    this.budget = o.byteBudget;
  }

  /** What the pump charges per chunk. */
  pumpLimits(): PumpLimits {
    const i = this.identity;
    return {
      ...(this.budget !== undefined ? { byteBudget: this.budget } : {}),
      up: i ? [this.up, i.up] : [this.up],
      down: i ? [this.down, i.down] : [this.down],
      now: this.now,
    };
  }

  release(): void {
    this.expiryTimer?.clear();
    this.identity?.release();
  }
}
