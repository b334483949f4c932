// The shared limits' backend: one Redis connection (node-redis) with a per-call timeout and a circuit
// breaker. A call either answers or throws `BackendUnavailable`, never waits longer than the timeout:
// commands are refused at once while disconnected (no offline queue), and after `breakerFailures`
// consecutive failures or timeouts the breaker opens, so every call is refused at once without
// touching Redis (a dead or stalled Redis costs no latency per session). While open, one PING probe
// per `breakerProbeMs` is sent; its answer closes the breaker. Each call's latency and outcome is
// reported (metrics). Scripts run by EVALSHA, loaded by EVAL on NOSCRIPT.
//
// The Redis client library is loaded when the first backend is made, not with this module: it holds
// 6 MiB of V8 heap and ~29 MiB of RSS (measured, node 24), which a sidecar without shared limits
// should not carry (README "Memory per idle session"). Until it has loaded, the backend is
// `connecting` and refuses calls, as it does before any connection.
import { createHash } from "node:crypto";
import type { createClient } from "redis";

export interface BackendSettings {
  /** redis:// or rediss:// URL, with any user and password in it. */
  readonly url: string;
  /** The CAs that sign the server's certificate (rediss://); absent: Node's CA store. */
  readonly caPem?: string;
  readonly timeoutMs: number;
  readonly breakerFailures: number;
  readonly breakerProbeMs: number;
}

/** `connecting` (never connected yet), `up`, `down` (connection lost), `open` (breaker open). */
export type BackendState = "connecting" | "up" | "down" | "open";
export const BACKEND_STATES: readonly BackendState[] = ["connecting", "up", "down", "open"];
export type CallOutcome = "ok" | "error" | "timeout" | "refused";

export interface BackendEvents {
  /** A change of state, worth a log line (warning when it is bad news). */
  readonly onEvent: (message: string, fields: Record<string, unknown>, warning: boolean) => void;
  /** Every call: what it was, how long it took, how it ended (`refused`: not sent, backend unavailable). */
  readonly onCall?: (op: string, seconds: number, outcome: CallOutcome) => void;
}

export interface BackendStatus {
  readonly state: BackendState;
  readonly since: string;
  readonly consecutive_failures: number;
  readonly last_error?: string;
  readonly last_latency_ms?: number;
  /** Calls by outcome since the backend was created. */
  readonly calls: Readonly<Record<CallOutcome, number>>;
}

export class BackendUnavailable extends Error {}

export interface Script {
  readonly src: string;
  readonly sha: string;
}

export function script(src: string): Script {
  return { src, sha: createHash("sha1").update(src).digest("hex") };
}

/** A client that refuses commands while disconnected (no offline queue) and reconnects with backoff. */
function clientFor(create: typeof createClient, settings: BackendSettings) {
  return create({
    url: settings.url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: Math.max(settings.timeoutMs, 1000),
      reconnectStrategy: (retries) => Math.min(50 * 2 ** retries, 2000),
      ...(settings.caPem !== undefined ? { tls: true as const, ca: settings.caPem } : {}),
    },
  });
}
type RedisClient = ReturnType<typeof clientFor>;

export class RedisBackend {
  private client: RedisClient | undefined;
  private connectedOnce = false;
  private reportedUnreachable = false;
  private ready = false;
  private failures = 0;
  private breakerOpen = false;
  private probe: NodeJS.Timeout | undefined;
  private since = Date.now();
  private lastError: string | undefined;
  private lastLatencyMs: number | undefined;
  private closed = false;
  private readonly calls: Record<CallOutcome, number> = { ok: 0, error: 0, timeout: 0, refused: 0 };

  constructor(
    readonly settings: BackendSettings,
    private readonly events: BackendEvents,
  ) {
    import("redis").then(
      (redis) => this.open(redis.createClient),
      (e: unknown) => this.connection(false, { error: `the Redis client library did not load: ${(e as Error).message}` }),
    );
  }

  private open(create: typeof createClient): void {
    if (this.closed) return;
    const client = clientFor(create, this.settings);
    this.client = client;
    client.on("ready", () => this.connection(true, {}));
    client.on("error", (e: Error) => this.connection(false, { error: e.message }));
    client.connect().catch((e: unknown) => this.connection(false, { error: (e as Error).message }));
  }

  get state(): BackendState {
    if (this.breakerOpen) return "open";
    if (this.ready) return "up";
    return this.connectedOnce ? "down" : "connecting";
  }

  status(): BackendStatus {
    return {
      state: this.state,
      since: new Date(this.since).toISOString(),
      consecutive_failures: this.failures,
      ...(this.lastError !== undefined ? { last_error: this.lastError } : {}),
      ...(this.lastLatencyMs !== undefined ? { last_latency_ms: this.lastLatencyMs } : {}),
      calls: { ...this.calls },
    };
  }

  /** Runs `s` atomically in Redis; BackendUnavailable when the breaker is open, Redis is gone, fails or is late. */
  async run(op: string, s: Script, keys: string[], args: string[]): Promise<unknown> {
    return this.call(op, async () => {
      const options = { keys, arguments: args };
      try {
        return await this.connected().evalSha(s.sha, options);
      } catch (e) {
        if (!(e as Error).message.startsWith("NOSCRIPT")) throw e;
        return this.connected().eval(s.src, options);
      }
    });
  }

  /** One plain command (e.g. ZREM), under the same timeout and breaker. */
  command(op: string, args: string[]): Promise<unknown> {
    return this.call(op, () => this.connected().sendCommand(args));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.probe);
    if (this.client?.isOpen) await this.client.close();
    else this.client?.destroy();
  }

  /** The client, once the library has loaded (`call` refuses before that: not ready). */
  private connected(): RedisClient {
    if (!this.client) throw new BackendUnavailable("not connected");
    return this.client;
  }

  private async call(op: string, send: () => Promise<unknown>): Promise<unknown> {
    if (this.breakerOpen || !this.ready) {
      this.calls.refused++;
      this.events.onCall?.(op, 0, "refused");
      throw new BackendUnavailable(this.breakerOpen ? "circuit breaker open" : "not connected");
    }
    const t0 = process.hrtime.bigint();
    let outcome: CallOutcome = "ok";
    try {
      const answer = await this.withTimeout(send());
      this.failures = 0;
      return answer;
    } catch (e) {
      outcome = e instanceof BackendUnavailable ? "timeout" : "error";
      this.failed((e as Error).message);
      throw e instanceof BackendUnavailable ? e : new BackendUnavailable((e as Error).message);
    } finally {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.lastLatencyMs = seconds * 1000;
      this.calls[outcome]++;
      this.events.onCall?.(op, seconds, outcome);
    }
  }

  private withTimeout<T>(p: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BackendUnavailable(`no answer within ${this.settings.timeoutMs} ms`)), this.settings.timeoutMs);
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  }

  private failed(error: string): void {
    this.lastError = error;
    if (++this.failures < this.settings.breakerFailures || this.breakerOpen) return;
    this.breakerOpen = true;
    this.since = Date.now();
    this.events.onEvent(
      "shared limits circuit breaker open",
      { consecutive_failures: this.failures, error, probe_every_ms: this.settings.breakerProbeMs },
      true,
    );
    this.probe = setInterval(() => void this.tryProbe(), this.settings.breakerProbeMs);
    this.probe.unref();
  }

  /** One PING under the timeout, sent only while connected; an answer closes the breaker. */
  private async tryProbe(): Promise<void> {
    if (!this.ready || this.closed) return;
    try {
      await this.withTimeout(this.connected().ping());
    } catch (e) {
      this.lastError = (e as Error).message;
      return;
    }
    if (!this.breakerOpen) return;
    clearInterval(this.probe);
    this.breakerOpen = false;
    this.failures = 0;
    this.since = Date.now();
    this.events.onEvent("shared limits circuit breaker closed", {}, false);
  }

  private connection(up: boolean, fields: Record<string, unknown>): void {
    if (this.closed) return;
    if (!up && typeof fields.error === "string") this.lastError = fields.error;
    // A backend that never connected says so once (a wrong password, a bad CA, nothing listening).
    if (!up && !this.connectedOnce && !this.reportedUnreachable) {
      this.reportedUnreachable = true;
      this.events.onEvent("shared limits backend cannot connect", fields, true);
    }
    if (up === this.ready) return;
    this.ready = up;
    if (!this.breakerOpen) this.since = Date.now();
    if (up) this.connectedOnce = true;
    this.events.onEvent(up ? "shared limits backend connected" : "shared limits backend lost", fields, !up);
  }
}
