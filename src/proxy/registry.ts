// The live sessions of a sidecar: what drain waits for and what an operator can close.

export interface LiveSession {
  readonly id: string;
  /** Ends the session now with the given reason (logged). */
  close(reason: string): void;
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
