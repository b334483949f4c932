// A cap on repeated identical denials, so a flood of refused connections cannot turn the decision log
// into a second attack: per key, `burst` records per window are written, the rest are counted, and the
// count is reported (on the next record of that key, or by flush() when the window closes).

export interface DenyCapOptions {
  readonly burst: number;
  readonly windowMs: number;
  /** Most keys tracked; past it the oldest is flushed and dropped. */
  readonly maxKeys?: number;
}

interface Entry {
  windowStart: number;
  written: number;
  suppressed: number;
}

export class DenyCap {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly o: DenyCapOptions) {}

  /** Whether to write this denial, and how many identical ones were suppressed before it. */
  admit(key: string, now: number): { write: true; suppressedBefore: number } | { write: false } {
    const e = this.entries.get(key);
    if (!e || now - e.windowStart >= this.o.windowMs) {
      const carried = e?.suppressed ?? 0;
      this.entries.delete(key);
      this.entries.set(key, { windowStart: now, written: 1, suppressed: 0 });
      return { write: true, suppressedBefore: carried };
    }
    if (e.written < this.o.burst) {
      e.written++;
      return { write: true, suppressedBefore: 0 };
    }
    e.suppressed++;
    return { write: false };
  }

  /** Reports and forgets the keys whose window has closed; `evicted` are reported too. */
  flush(now: number): Array<{ key: string; suppressed: number }> {
    const out: Array<{ key: string; suppressed: number }> = [];
    for (const [key, e] of this.entries) {
      const closed = now - e.windowStart >= this.o.windowMs;
      const overCap = this.entries.size > (this.o.maxKeys ?? 10_000);
      if (!closed && !overCap) continue;
      if (e.suppressed > 0) out.push({ key, suppressed: e.suppressed });
      this.entries.delete(key);
    }
    return out;
  }

  get size(): number {
    return this.entries.size;
  }
}
