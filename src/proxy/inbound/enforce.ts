// The obligations of an allowed session put in force on its client socket: the expiry (grant,
// certificate, attestation, approval or max duration), the idle timeout, and the bandwidth throttles (the
// session's own and its identity's shared ones). Re-bound in place when a re-check tightens them.
import type { SharedThrottles } from "../../limits/throttle.js";
import { Throttle } from "../../limits/throttle.js";
import type { Obligations } from "../../policy/decision.js";
import { at, type LongTimer } from "../../time/clock.js";
import type { Pump, PumpLimits } from "../pump.js";
import type { ClientIo } from "./client.js";

const EXPIRY_REASON = {
  max_duration: "max_duration",
  certificate: "cert_expired",
  attestation: "attestation_expired",
  approval: "approval_expired",
  grant: "grant_expired",
} as const;

export type ExpiryReason = (typeof EXPIRY_REASON)[keyof typeof EXPIRY_REASON] | "idle_timeout";

export class Enforcement {
  private expiryTimer: LongTimer | undefined;
  private own: { up: Throttle; down: Throttle } | undefined;
  private identity: { up: Throttle; down: Throttle; release(): void } | undefined;
  private budget: number | undefined;
  private pump: Pump | undefined;
  /** When the session ends at the latest, if it does. */
  expiresAt: number | undefined;

  constructor(
    private readonly client: ClientIo,
    private readonly peerId: string,
    private readonly shared: SharedThrottles,
    private readonly now: () => number,
    private readonly onExpiry: (reason: ExpiryReason) => void,
    o: Obligations,
  ) {
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
    this.bindBytes(o);
    this.pump?.setLimits(this.pumpLimits());
  }

  /** The bandwidths and byte budget; a throttle exists only while its bandwidth does. */
  private bindBytes(o: Obligations): void {
    const now = this.now();
    const bps = o.bandwidthBps;
    if (bps === undefined) this.own = undefined;
    else if (this.own) {
      this.own.up.setRate(bps, now);
      this.own.down.setRate(bps, now);
    } else this.own = { up: new Throttle(bps, now), down: new Throttle(bps, now) };
    const ibps = o.identityBandwidthBps;
    if (ibps === undefined) {
      this.identity?.release();
      this.identity = undefined;
    } else {
      this.identity ??= this.shared.acquire(this.peerId, ibps, now);
      this.identity.up.setRate(ibps, now);
      this.identity.down.setRate(ibps, now);
    }
    this.budget = o.byteBudget;
  }

  /** What the pump charges per chunk; undefined when no obligation acts on bytes. */
  pumpLimits(): PumpLimits | undefined {
    const ts = [this.own, this.identity].filter((t) => t !== undefined);
    if (ts.length === 0 && this.budget === undefined) return undefined;
    return {
      ...(this.budget !== undefined ? { byteBudget: this.budget } : {}),
      up: ts.map((t) => t.up),
      down: ts.map((t) => t.down),
      now: this.now,
    };
  }

  /** The session's pump, from then on told of every re-bound. */
  attach(pump: Pump): void {
    this.pump = pump;
  }

  release(): void {
    this.expiryTimer?.clear();
    this.identity?.release();
    this.identity = undefined;
    this.pump = undefined;
  }
}
