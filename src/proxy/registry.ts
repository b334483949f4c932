// The live sessions of a sidecar: what drain waits for and what an operator can close.

import type { ListenerState } from "./session.js";

export interface LiveSession {
  readonly id: string;
  readonly listener: string;
  /** Ends the session now with the given reason (logged). */
  close(reason: string): void;
  /** Decides again under a new listener state; revokes the session if no longer admitted. */
  recheck(state: ListenerState, graceMs: number): void;
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
