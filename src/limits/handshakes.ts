// Protection before any cryptography: caps on TLS handshakes in flight (in all and per source
// address) and an optional per-source new-connection rate, so one address flooding handshakes cannot
// take the CPU or the handshake slots from the others.
import type { LimitCounts } from "./events.js";
import type { Rate } from "./bucket.js";
import { KeyedBuckets } from "./keyed.js";

export interface HandshakeLimits {
  readonly maxInFlight: number;
  readonly maxInFlightPerSource: number;
  /** New connections per second per source address; absent = unbounded. */
  readonly sourceRate?: Rate;
}

export type HandshakeRefusal = "handshake_capacity" | "source_capacity" | "source_rate_limited";

export class HandshakeGuard {
  private inFlight = 0;
  private readonly perSource = new Map<string, number>();
  private readonly rates = new KeyedBuckets(100_000);

  constructor(
    private limits: HandshakeLimits,
    private readonly now: () => number,
    private readonly counts: LimitCounts,
  ) {}

  setLimits(limits: HandshakeLimits): void {
    this.limits = limits;
  }

  get handshakesInFlight(): number {
    return this.inFlight;
  }

  /** A new raw connection from `source`: a release to call when its handshake ends, or a refusal. */
  enter(source: string): (() => void) | HandshakeRefusal {
    const l = this.limits;
    const mine = this.perSource.get(source) ?? 0;
    let refusal: HandshakeRefusal | undefined;
    if (this.inFlight >= l.maxInFlight) refusal = "handshake_capacity";
    else if (mine >= l.maxInFlightPerSource) refusal = "source_capacity";
    else if (l.sourceRate && !this.rates.take(source, l.sourceRate, this.now())) refusal = "source_rate_limited";
    if (refusal) {
      this.counts.hit(refusal);
      return refusal;
    }
    this.inFlight++;
    this.perSource.set(source, mine + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.inFlight--;
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n <= 0) this.perSource.delete(source);
      else this.perSource.set(source, n);
    };
  }
}
