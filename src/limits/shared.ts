// Shared limits: bounds that every sidecar of the mesh draws from, kept in Redis (./redis.ts).
// - A rate is a token bucket in one Lua script (the arithmetic of ./bucket.ts): one round trip per
//   admission. Its time is the sidecar's clock, passed as an argument (sidecars sharing a bucket need
//   agreeing clocks, NTP); a clock behind the bucket's last update adds no tokens, takes none back.
// - Concurrency is a lease per session: a sorted set per key, member = lease id, score = expiry by
//   the Redis server's own clock (TIME), so sidecars' clocks cannot stretch a lease. Acquiring is one
//   script (drop expired members, count, add if under the cap). Live leases are renewed by one batched
//   script per interval (a third of the TTL), not a timer per session; a renewal re-adds a lease Redis
//   lost (restart, expiry), so live sessions count again. A session's end releases its lease at once
//   (ZREM); a sidecar killed with SIGKILL stops renewing, and its leases expire within the TTL.
// - Both at once (`admit`): a slot looked for, a token taken and the lease added in one script.
// Scripts: ./scripts.ts. Keys are the caller's, under the configured prefix.
// When Redis does not answer (timeout, disconnected, breaker open), the failure mode applies: `deny`
// refuses the session (shared_limits_unavailable), `local` returns "local" so the caller applies the
// bound with the sidecar's own state. Either way counted, and logged once per failing stretch.
// The backend can be replaced (reload, push): renewals and releases go to the one in force.
import { randomBytes } from "node:crypto";
import type { Rate } from "./bucket.js";
import type { LimitCounts } from "./events.js";
import { BackendUnavailable, RedisBackend, type BackendEvents, type BackendSettings, type BackendStatus } from "./redis.js";
import { ACQUIRE, ADMIT, RATE, RENEW } from "./scripts.js";

export interface SharedLimitsSettings extends BackendSettings {
  readonly keyPrefix: string;
  readonly onUnavailable: "deny" | "local";
  readonly leaseTtlMs: number;
}

export type SharedRefusal = "shared_limits_unavailable";
/** `local`: apply the bound with the sidecar's own state; otherwise the shared verdict. */
export type SharedVerdict<T> =
  "local" | { readonly ok: true; readonly value: T } | { readonly ok: false; readonly detail: string; readonly unavailable: boolean };

export interface Lease {
  /** Gives the slot back (at once, best effort; otherwise it expires); idempotent. */
  release(): void;
}

/** Leases renewed per script call: bounds one call's work in Redis. */
const RENEW_BATCH = 500;

export interface SharedLimitsOptions extends BackendEvents {
  readonly now: () => number;
  readonly counts: LimitCounts;
}

export class SharedLimits {
  private backend: RedisBackend | undefined;
  private settings: SharedLimitsSettings | undefined;
  /** Live leases: lease id → key (without the prefix, which may change). */
  private readonly leases = new Map<string, string>();
  private readonly instance = randomBytes(6).toString("hex");
  private nextLease = 0;
  private renewal: NodeJS.Timeout | undefined;
  /** Set by a failed call, cleared by an answer: a failing backend is logged once, not per session. */
  private failing = false;

  constructor(private readonly o: SharedLimitsOptions) {}

  /**
   * Puts `next` in force: a new backend when the connection's settings change (the old one is closed;
   * live leases are renewed into the new one), the same one otherwise; undefined removes it.
   */
  async configure(next: SharedLimitsSettings | undefined): Promise<void> {
    const prev = this.settings;
    this.settings = next;
    clearInterval(this.renewal); // the interval follows the (maybe new) TTL
    this.renewal = undefined;
    if (prev && next && sameBackend(prev, next)) {
      this.schedule();
      return;
    }
    const old = this.backend;
    this.backend = next ? this.connect(next) : undefined;
    this.schedule();
    await old?.close();
  }

  /** A backend for `s`, or none (shared bounds then fail closed) if the client refuses its settings. */
  private connect(s: SharedLimitsSettings): RedisBackend | undefined {
    try {
      return new RedisBackend(s, this.o);
    } catch (e) {
      this.o.onEvent("shared limits backend not created: shared bounds are refused", { error: (e as Error).message }, true);
      return undefined;
    }
  }

  get configured(): boolean {
    return this.backend !== undefined;
  }

  /** The backend's state for readiness and metrics; undefined when none is configured. */
  status(): (BackendStatus & { readonly leases: number }) | undefined {
    return this.backend && { ...this.backend.status(), leases: this.leases.size };
  }

  /** Takes a token from the mesh-wide bucket `key` (e.g. `rate:<identity>`). */
  async take(key: string, rate: Rate): Promise<SharedVerdict<undefined>> {
    const args = [String(this.o.now()), String(rate.perSecond), String(rate.burst)];
    const answer = await this.call("rate", (b, prefix) => b.run("rate", RATE, [prefix + key], args));
    if (typeof answer === "string" || !answer.ok) return answer;
    if (answer.value === 1) return { ok: true, value: undefined };
    return { ok: false, unavailable: false, detail: `over the shared ${rate.perSecond}/s (burst ${rate.burst})` };
  }

  /** A lease in the mesh-wide set `key` (e.g. `sessions:<identity>`) if fewer than `cap` are live. */
  async acquire(key: string, cap: number): Promise<SharedVerdict<Lease>> {
    const id = this.leaseId();
    const args = [String(this.settings?.leaseTtlMs ?? 0), String(cap), id];
    const answer = await this.call("lease", (b, prefix) => b.run("lease", ACQUIRE, [prefix + key], args));
    if (typeof answer === "string" || !answer.ok) return answer;
    if (answer.value !== 1) return { ok: false, unavailable: false, detail: `all ${cap} shared sessions are in use` };
    return { ok: true, value: this.hold(id, key) };
  }

  /**
   * A token of bucket `rateKey` and a lease of set `leaseKey` in one round trip (both bounds shared):
   * refused `concurrency` when no slot is free (no token spent), `rate` when over the rate.
   */
  async admit(rateKey: string, rate: Rate, leaseKey: string, cap: number): Promise<SharedVerdict<Lease> | "rate" | "concurrency"> {
    const id = this.leaseId();
    const args = [String(this.o.now()), String(rate.perSecond), String(rate.burst), String(this.settings?.leaseTtlMs ?? 0), String(cap), id];
    const answer = await this.call("admit", (b, prefix) => b.run("admit", ADMIT, [prefix + rateKey, prefix + leaseKey], args));
    if (typeof answer === "string" || !answer.ok) return answer;
    if (answer.value === 0) return "rate";
    if (answer.value !== 1) return "concurrency";
    return { ok: true, value: this.hold(id, leaseKey) };
  }

  /** Renews every live lease now, in batches; what failed is retried at the next interval. */
  async renew(): Promise<void> {
    const b = this.backend;
    const s = this.settings;
    if (!b || !s || this.leases.size === 0) return;
    const all = [...this.leases];
    for (let i = 0; i < all.length; i += RENEW_BATCH) {
      const batch = all.slice(i, i + RENEW_BATCH);
      const keys = batch.map(([, key]) => s.keyPrefix + key);
      await b.run("renew", RENEW, keys, [String(s.leaseTtlMs), ...batch.map(([id]) => id)]).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    clearInterval(this.renewal);
    await this.backend?.close();
    this.backend = undefined;
  }

  private leaseId(): string {
    return `${this.instance}:${(this.nextLease++).toString(36)}`;
  }

  /** Keeps a lease Redis granted: renewed while it lives, released once. */
  private hold(id: string, key: string): Lease {
    this.leases.set(id, key);
    this.schedule();
    return { release: () => this.release(id) };
  }

  private release(id: string): void {
    const key = this.leases.get(id);
    if (key === undefined) return;
    this.leases.delete(id);
    if (this.leases.size === 0) this.schedule();
    const s = this.settings;
    void this.backend?.command("release", ["ZREM", `${s?.keyPrefix ?? ""}${key}`, id]).catch(() => undefined);
  }

  /** One renewal timer while leases live and a backend is configured. */
  private schedule(): void {
    const want = this.backend !== undefined && this.leases.size > 0;
    if (!want) {
      clearInterval(this.renewal);
      this.renewal = undefined;
      return;
    }
    if (this.renewal) return;
    this.renewal = setInterval(() => void this.renew(), Math.max(100, Math.floor((this.settings?.leaseTtlMs ?? 3000) / 3)));
    this.renewal.unref();
  }

  private async call(op: string, send: (b: RedisBackend, prefix: string) => Promise<unknown>): Promise<SharedVerdict<unknown>> {
    const b = this.backend;
    const s = this.settings;
    if (!b || !s) return { ok: false, unavailable: true, detail: "the rule's limit is shared but no shared_limits backend is configured" };
    try {
      const value = await send(b, s.keyPrefix);
      if (this.failing) {
        this.failing = false;
        this.o.onEvent("shared limits backend answering again", {}, false);
      }
      return { ok: true, value };
    } catch (e) {
      if (!(e instanceof BackendUnavailable)) throw e;
      return this.unavailable(op, s.onUnavailable, e.message);
    }
  }

  private unavailable(op: string, mode: "deny" | "local", error: string): SharedVerdict<never> {
    this.o.counts.hit(mode === "deny" ? "shared_limits_unavailable" : "shared_limits_fallback");
    if (!this.failing) {
      this.failing = true;
      this.o.onEvent("shared limits backend failing: its failure mode applies", { op, error, on_unavailable: mode }, true);
    }
    if (mode === "local") return "local";
    return { ok: false, unavailable: true, detail: `shared limits backend unavailable: ${error}` };
  }
}

/** Whether two settings can share one connection (prefix, mode and TTL may change under it). */
function sameBackend(a: BackendSettings, b: BackendSettings): boolean {
  return (
    a.url === b.url && a.caPem === b.caPem && a.timeoutMs === b.timeoutMs && a.breakerFailures === b.breakerFailures && a.breakerProbeMs === b.breakerProbeMs
  );
}
