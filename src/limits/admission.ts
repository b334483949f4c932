// Admission of an allowed session under its rate and concurrency bounds: per-identity new-session rate
// (token bucket), concurrent sessions per identity, per listener and in all. Over a bound a session is
// rejected at once or, if its limits allow, held up to a max wait for a token or a slot; the number
// held at once is bounded. O(1) per session; state for an identity disappears when it has none.
import type { LimitCounts } from "./events.js";
import type { Rate } from "./bucket.js";
import { KeyedBuckets } from "./keyed.js";

export interface AdmissionLimits {
  /** New sessions per second (and burst) for one identity. */
  readonly rate?: Rate;
  readonly maxPerIdentity?: number;
  readonly maxPerListener?: number;
  readonly maxGlobal?: number;
  /** Hold a session this long for a token or slot before rejecting; absent or 0 = reject at once. */
  readonly maxWaitMs?: number;
}

export type AdmissionRefusal = "rate_limited" | "concurrency_limited";

export interface Ticket {
  /** Gives the session's slots back; idempotent. */
  release(): void;
}

export type AdmissionResult =
  | { readonly ok: true; readonly ticket: Ticket; readonly waitedMs: number }
  | { readonly ok: false; readonly reason: AdmissionRefusal; readonly detail: string; readonly waitedMs: number };

export interface AdmissionOptions {
  readonly now: () => number;
  readonly counts: LimitCounts;
  /** Most sessions held waiting at once, over all identities. */
  readonly maxHeld?: number;
  /** Most identities whose rate state is kept. */
  readonly maxIdentities?: number;
}

type Check = { ok: true } | { ok: false; reason: AdmissionRefusal; detail: string; retryInMs?: number };

export class Admission {
  private readonly buckets: KeyedBuckets;
  private readonly perIdentity = new Map<string, number>();
  private readonly perListener = new Map<string, number>();
  private global = 0;
  private held = 0;
  /** Wakes held sessions when a slot is released. */
  private released: Array<() => void> = [];

  constructor(private readonly o: AdmissionOptions) {
    this.buckets = new KeyedBuckets(o.maxIdentities ?? 100_000);
  }

  get active(): number {
    return this.global;
  }

  /** Live sessions of `identity` on this sidecar. */
  sessionsOf(identity: string): number {
    return this.perIdentity.get(identity) ?? 0;
  }

  get trackedIdentities(): number {
    return Math.max(this.buckets.size, this.perIdentity.size);
  }

  async admit(identity: string, listener: string, limits: AdmissionLimits): Promise<AdmissionResult> {
    const start = this.o.now();
    let check = this.check(identity, listener, limits);
    if (check.ok) return this.grant(identity, listener, 0);
    const maxWait = limits.maxWaitMs ?? 0;
    if (maxWait <= 0) return this.refuse(check, 0);
    if (this.held >= (this.o.maxHeld ?? 1024)) {
      this.o.counts.hit("held_queue_full");
      return this.refuse(check, 0);
    }
    this.held++;
    this.o.counts.hit("held");
    try {
      for (;;) {
        const left = start + maxWait - this.o.now();
        if (left <= 0) break;
        await this.wake(Math.min(left, check.retryInMs ?? left));
        check = this.check(identity, listener, limits);
        if (check.ok) return this.grant(identity, listener, this.o.now() - start);
      }
      return this.refuse(check, this.o.now() - start);
    } finally {
      this.held--;
    }
  }

  private check(identity: string, listener: string, l: AdmissionLimits): Check {
    if (l.maxGlobal !== undefined && this.global >= l.maxGlobal)
      return { ok: false, reason: "concurrency_limited", detail: `all ${l.maxGlobal} sessions of the sidecar are in use` };
    if (l.maxPerListener !== undefined && (this.perListener.get(listener) ?? 0) >= l.maxPerListener) {
      return { ok: false, reason: "concurrency_limited", detail: `all ${l.maxPerListener} sessions of listener ${listener} are in use` };
    }
    if (l.maxPerIdentity !== undefined && (this.perIdentity.get(identity) ?? 0) >= l.maxPerIdentity) {
      return { ok: false, reason: "concurrency_limited", detail: `${identity} already has ${l.maxPerIdentity} sessions` };
    }
    // Only take a token once a slot is sure, so a held session does not burn the identity's rate.
    if (l.rate && !this.buckets.take(identity, l.rate, this.o.now())) {
      return {
        ok: false,
        reason: "rate_limited",
        detail: `${identity} is over ${l.rate.perSecond}/s (burst ${l.rate.burst})`,
        retryInMs: this.buckets.waitFor(identity, l.rate, this.o.now()),
      };
    }
    return { ok: true };
  }

  private grant(identity: string, listener: string, waitedMs: number): AdmissionResult {
    this.global++;
    this.perListener.set(listener, (this.perListener.get(listener) ?? 0) + 1);
    this.perIdentity.set(identity, (this.perIdentity.get(identity) ?? 0) + 1);
    if (waitedMs > 0) this.o.counts.hit("held_then_admitted");
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.global--;
      decrement(this.perListener, listener);
      decrement(this.perIdentity, identity);
      const waiters = this.released;
      this.released = [];
      for (const w of waiters) w();
    };
    return { ok: true, ticket: { release }, waitedMs };
  }

  private refuse(c: Check & { ok: false }, waitedMs: number): AdmissionResult {
    this.o.counts.hit(c.reason);
    return { ok: false, reason: c.reason, detail: c.detail, waitedMs };
  }

  /** Resolves after `ms`, or sooner when a slot is released. */
  private wake(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(
        () => {
          const i = this.released.indexOf(done);
          if (i >= 0) this.released.splice(i, 1);
          resolve();
        },
        Math.max(1, ms),
      );
      this.released.push(done);
    });
  }
}

function decrement(m: Map<string, number>, key: string): void {
  const n = (m.get(key) ?? 1) - 1;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}
