// Deadlines, many and far: session expiries (grant, certificate, attestation, max duration) and the own
// SVID's. Contract: `at(when, fn, now)` calls `fn` once when `now() >= when`, however far away `when`
// is, unless cleared first; the process is never kept alive by it. Memory is O(1) per pending deadline
// and nothing is retained once a deadline fires or is cleared.
//
// Why not one setTimeout per deadline: Node keeps one timer list per distinct duration, and an unref'd
// list that empties by clearTimeout stays until its duration elapses (lib/internal/timers.js deletes
// only ref'd lists on unenroll). A session's expiry, say its certificate's notAfter, is a distinct
// duration for every session, so each ended session left ~160 B for up to the certificate's lifetime.
// Here all deadlines of one clock share an ordered queue (a binary min-heap on `when`) behind one Node
// timer, and that timer only ever waits a power of two of milliseconds (at most 31 distinct durations,
// so at most 31 lists, whatever the deadlines): it wakes at or before the earliest deadline and steps
// again until it is due. setTimeout cannot wait past 2^31-1 ms (it would fire at once); steps of at
// most 2^30 ms cover far deadlines.
const MAX_STEP_MS = 2 ** 30;

export interface LongTimer {
  clear(): void;
}

interface Entry {
  readonly when: number;
  readonly fn: () => void;
  /** Position in the heap; -1 once fired or cleared. */
  index: number;
}

/** The deadlines of one clock, behind one unref'd Node timer. */
export class DeadlineQueue {
  private readonly heap: Entry[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** The clock time the Node timer wakes at (Infinity when none is armed). */
  private wakeAt = Infinity;

  constructor(private readonly now: () => number = Date.now) {}

  /** Deadlines pending. */
  get size(): number {
    return this.heap.length;
  }

  at(when: number, fn: () => void): LongTimer {
    // A deadline that is not a number fails closed: due at once, as setTimeout(fn, NaN) was.
    const e: Entry = { when: Number.isNaN(when) ? -Infinity : when, fn, index: this.heap.length };
    this.heap.push(e);
    this.up(e);
    if (e.when < this.wakeAt) this.arm();
    return { clear: () => this.remove(e) };
  }

  private remove(e: Entry): void {
    if (e.index < 0) return;
    const last = this.heap.pop() ?? e;
    if (last !== e) {
      this.heap[e.index] = last;
      last.index = e.index;
      this.down(last);
      this.up(last);
    }
    e.index = -1;
    // A removed head leaves the timer to wake early and step again: cheaper than re-arming per removal.
    if (this.heap.length === 0) this.disarm();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.wakeAt = Infinity;
  }

  private arm(): void {
    this.disarm();
    const head = this.heap[0];
    if (!head) return;
    const now = this.now();
    const wait = head.when - now;
    const step = wait < 1 ? 0 : Math.min(MAX_STEP_MS, 2 ** Math.floor(Math.log2(wait)));
    this.wakeAt = now + step;
    this.timer = setTimeout(() => this.wake(), step);
    this.timer.unref();
  }

  /** Takes every due deadline out before calling any, so one that throws or re-arms cannot skip others. */
  private wake(): void {
    this.timer = undefined;
    this.wakeAt = Infinity;
    const now = this.now();
    const due: Entry[] = [];
    while (this.heap[0] && this.heap[0].when <= now) {
      const head = this.heap[0];
      due.push(head);
      this.remove(head);
    }
    this.arm();
    const failures: unknown[] = [];
    for (const e of due) {
      try {
        e.fn();
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, "deadline callbacks failed");
  }

  private up(e: Entry): void {
    for (;;) {
      const parent = e.index > 0 ? this.heap[(e.index - 1) >> 1] : undefined;
      if (!parent || parent.when <= e.when) return;
      this.swap(e, parent);
    }
  }

  private down(e: Entry): void {
    for (;;) {
      const l = this.heap[2 * e.index + 1];
      const r = this.heap[2 * e.index + 2];
      const child = l && r && r.when < l.when ? r : l;
      if (!child || child.when >= e.when) return;
      this.swap(e, child);
    }
  }

  private swap(a: Entry, b: Entry): void {
    const i = a.index;
    a.index = b.index;
    b.index = i;
    this.heap[a.index] = a;
    this.heap[b.index] = b;
  }
}

/** One queue per clock: deadlines are ordered on the clock they were set by. */
const queues = new WeakMap<() => number, DeadlineQueue>();

/** Calls `fn` at `when` (epoch ms, by `now`), however far away; never keeps the process alive. */
export function at(when: number, fn: () => void, now: () => number = Date.now): LongTimer {
  let queue = queues.get(now);
  if (!queue) queues.set(now, (queue = new DeadlineQueue(now)));
  return queue.at(when, fn);
}
