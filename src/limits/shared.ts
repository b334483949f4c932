// Shared limits: a new-session rate per identity that every sidecar of the mesh draws from, kept in
// Redis. One Lua script (a token bucket, the same arithmetic as ./bucket.ts) runs atomically in Redis:
// one round trip per admission. The time is the sidecar's clock, passed as an argument, so sidecars
// sharing a bucket must have agreeing clocks (NTP); a clock behind the bucket's last update adds no
// tokens and never takes any back. When Redis does not answer within the timeout, or is not
// connected (commands are refused at once then, so a dead Redis costs no latency), the failure mode
// applies: `deny` refuses the session (shared_limits_unavailable), `local` falls back to the
// sidecar's own bucket. Either way it is logged and counted.
import { createHash } from "node:crypto";
import { createClient } from "redis";
import type { Rate } from "./bucket.js";
import type { LimitCounts } from "./events.js";

export interface SharedLimitsSettings {
  /** redis:// or rediss:// URL, with any user and password in it. */
  readonly url: string;
  readonly keyPrefix: string;
  readonly onUnavailable: "deny" | "local";
  readonly timeoutMs: number;
}

/** `local`: apply the rate with the sidecar's own bucket; otherwise the shared verdict. */
export type SharedRateVerdict =
  "local" | { readonly ok: true } | { readonly ok: false; readonly reason: "rate_limited" | "shared_limits_unavailable"; readonly detail: string };

// KEYS[1] bucket; ARGV now (ms), tokens per second, burst. Returns 1 when a token was taken.
// Tokens are stored as strings so fractions survive (Lua numbers would be truncated to integers).
const SCRIPT = `
local now = tonumber(ARGV[1]); local rate = tonumber(ARGV[2]); local burst = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(s[1]); local at = tonumber(s[2])
if tokens == nil or at == nil then tokens = burst; at = now end
if now > at then tokens = math.min(burst, tokens + (now - at) / 1000 * rate); at = now end
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
`;
const SHA = createHash("sha1").update(SCRIPT).digest("hex");

export interface SharedRateOptions {
  readonly now: () => number;
  readonly counts: LimitCounts;
  /** Told of each change of the backend's state (connected, lost, failing, answering again). */
  readonly onEvent: (message: string, fields: Record<string, unknown>, warning: boolean) => void;
}

export class SharedRate {
  private readonly client;
  private up = false;
  /** Set by a failed call, cleared by an answer: a failing backend is logged once, not per session. */
  private failing = false;

  constructor(
    private readonly s: SharedLimitsSettings,
    private readonly o: SharedRateOptions,
  ) {
    this.client = createClient({
      url: s.url,
      // Refuse commands while disconnected instead of queueing them: the failure mode applies at once.
      disableOfflineQueue: true,
      socket: { connectTimeout: Math.max(s.timeoutMs, 1000), reconnectStrategy: (retries) => Math.min(50 * 2 ** retries, 2000) },
    });
    this.client.on("ready", () => this.state(true, {}));
    this.client.on("error", (e: Error) => this.state(false, { error: e.message }));
    this.client.connect().catch((e: unknown) => this.state(false, { error: (e as Error).message }));
  }

  /** True while connected to Redis. */
  get connected(): boolean {
    return this.up;
  }

  async take(identity: string, rate: Rate): Promise<SharedRateVerdict> {
    let taken: boolean;
    try {
      taken = await this.withTimeout(this.run(`${this.s.keyPrefix}rate:${identity}`, rate));
    } catch (e) {
      return this.unavailable(identity, (e as Error).message);
    }
    if (this.failing) {
      this.failing = false;
      this.o.onEvent("shared limits backend answering again", {}, false);
    }
    if (taken) return { ok: true };
    this.o.counts.hit("rate_limited");
    return { ok: false, reason: "rate_limited", detail: `${identity} is over the shared ${rate.perSecond}/s (burst ${rate.burst})` };
  }

  async close(): Promise<void> {
    if (this.client.isOpen) await this.client.close();
    else this.client.destroy();
  }

  private async run(key: string, rate: Rate): Promise<boolean> {
    const args = { keys: [key], arguments: [String(this.o.now()), String(rate.perSecond), String(rate.burst)] };
    try {
      return (await this.client.evalSha(SHA, args)) === 1;
    } catch (e) {
      if (!(e as Error).message.startsWith("NOSCRIPT")) throw e;
      return (await this.client.eval(SCRIPT, args)) === 1;
    }
  }

  private withTimeout<T>(p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.s.timeoutMs} ms`)), this.s.timeoutMs);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  private unavailable(identity: string, error: string): SharedRateVerdict {
    const mode = this.s.onUnavailable;
    this.o.counts.hit(mode === "deny" ? "shared_limits_unavailable" : "shared_limits_fallback");
    if (!this.failing) {
      this.failing = true;
      this.o.onEvent("shared limits backend failing: its failure mode applies", { identity, error, on_unavailable: mode }, true);
    }
    if (mode === "local") return "local";
    return { ok: false, reason: "shared_limits_unavailable", detail: `shared limits backend unavailable: ${error}` };
  }

  private state(up: boolean, fields: Record<string, unknown>): void {
    if (up === this.up) return;
    this.up = up;
    this.o.onEvent(up ? "shared limits backend connected" : "shared limits backend lost", fields, !up);
  }
}

/** The verdict for a rate marked shared; a sidecar with no shared limits configured fails closed. */
export function sharedRateCheck(shared: SharedRate | undefined, identity: string, rate: Rate): Promise<SharedRateVerdict> | SharedRateVerdict {
  if (shared) return shared.take(identity, rate);
  return { ok: false, reason: "shared_limits_unavailable", detail: "the rule's rate is shared but no shared_limits backend is configured" };
}
