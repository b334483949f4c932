// The live sessions of a sidecar: what drain waits for and what an operator can close.

import type { ListenerState } from "./inbound/session.js";
import type { RevocationCause } from "../telemetry/log.js";

export interface SessionInfo {
  readonly id: string;
  readonly peer_id: string;
  readonly listener: string;
  readonly source: string;
  readonly stage: string;
  readonly started_at: string;
  readonly age_ms: number;
  readonly bytes_to_upstream: number;
  readonly bytes_to_client: number;
  /** When the session's grant ends (max duration, certificate or attestation expiry), if it does. */
  readonly expires_at: string | null;
}

export interface LiveSession {
  readonly id: string;
  readonly listener: string;
  /** Inbound sessions are decided by policy and re-checked; outbound ones end with their route. */
  readonly direction: "inbound" | "outbound";
  info(now: number): SessionInfo;
  /** Ends the session now with the given reason (logged). */
  close(reason: string): void;
  /** Decides again under a new listener state; revokes the session if no longer admitted. */
  recheck(state: ListenerState, graceMs: number, cause?: RevocationCause): void;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, LiveSession>();
  private idleWaiters: Array<() => void> = [];

  add(s: LiveSession): void {
    this.sessions.set(s.id, s);
  }

  remove(id: string): void {
    this.sessions.delete(id);
    if (this.sessions.size === 0) {
      for (const w of this.idleWaiters) w();
      this.idleWaiters = [];
    }
  }

  get size(): number {
    return this.sessions.size;
  }

  get(id: string): LiveSession | undefined {
    return this.sessions.get(id);
  }

  /** Live sessions per listener. */
  countsByListener(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.sessions.values()) out[s.listener] = (out[s.listener] ?? 0) + 1;
    return out;
  }

  /** A snapshot: sessions may end while the caller walks it. */
  all(): LiveSession[] {
    return [...this.sessions.values()];
  }

  /** Waits up to `timeoutMs` for every session to end, then closes the rest with `reason`. */
  async drain(timeoutMs: number, reason: string): Promise<{ closed: number }> {
    if (this.sessions.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const rest = [...this.sessions.values()];
    for (const s of rest) s.close(reason);
    return { closed: rest.length };
  }
}
