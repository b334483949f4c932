// The live sessions of a sidecar: what drain waits for and what an operator can close, and (for a
// workload asking who called) the sessions by the local port of their upstream connection.
import type { CallerRecord } from "./inbound/caller.js";
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
  /** A negotiated session's grant and the task its approval named (what revocations match on); else null. */
  readonly grant_id: string | null;
  readonly txn: string | null;
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
  /** Who called, once connected to the workload (inbound sessions). */
  caller?(): CallerRecord | undefined;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, LiveSession>();
  private idleWaiters: Array<() => void> = [];
  /** Upstream local port → sessions (ports repeat across different workload addresses). */
  private readonly byUpstreamPort = new Map<number, Set<LiveSession>>();
  private readonly upstreamPortOf = new Map<string, number>();

  add(s: LiveSession): void {
    this.sessions.set(s.id, s);
  }

  remove(id: string): void {
    this.sessions.delete(id);
    const port = this.upstreamPortOf.get(id);
    if (port !== undefined) {
      this.upstreamPortOf.delete(id);
      const at = this.byUpstreamPort.get(port);
      if (at) {
        for (const s of at) if (s.id === id) at.delete(s);
        if (at.size === 0) this.byUpstreamPort.delete(port);
      }
    }
    if (this.sessions.size === 0) {
      for (const w of this.idleWaiters) w();
      this.idleWaiters = [];
    }
  }

  /** Indexes a live session by the local port of its connection to the workload. */
  bindUpstreamPort(s: LiveSession, port: number): void {
    if (!this.sessions.has(s.id)) return;
    this.upstreamPortOf.set(s.id, port);
    let at = this.byUpstreamPort.get(port);
    if (!at) this.byUpstreamPort.set(port, (at = new Set()));
    at.add(s);
  }

  /** The live sessions whose upstream connection has local port `port`. */
  atUpstreamPort(port: number): LiveSession[] {
    return [...(this.byUpstreamPort.get(port) ?? [])];
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
