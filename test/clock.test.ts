// Deadlines (src/time/clock.ts): order, clearing, far deadlines past setTimeout's 2^31-1 ms, and a
// callback that throws not costing the others theirs. Time is vitest's fake clock.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DeadlineQueue } from "../src/time/clock.js";

describe("DeadlineQueue", () => {
  beforeEach(() => void vi.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => void vi.useRealTimers());
  const now = () => Date.now();

  it("fires each deadline when due, in deadline order, whatever the order they were set in", () => {
    const q = new DeadlineQueue(now);
    const fired: string[] = [];
    const t0 = Date.now();
    for (const [name, ms] of [
      ["c", 3000],
      ["a", 1000],
      ["e", 5000],
      ["b", 2000],
      ["d", 4000],
    ] as const)
      q.at(t0 + ms, () => fired.push(name));
    vi.advanceTimersByTime(999);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual(["a"]);
    vi.advanceTimersByTime(4000);
    expect(fired).toEqual(["a", "b", "c", "d", "e"]);
    expect(q.size).toBe(0);
  });

  it("a cleared deadline never fires and is no longer held; clearing twice or after firing is harmless", () => {
    const q = new DeadlineQueue(now);
    const fired: number[] = [];
    const timers = Array.from({ length: 100 }, (_, i) => q.at(Date.now() + 1000 + i * 7, () => fired.push(i)));
    for (let i = 0; i < 100; i += 2) timers[i]!.clear();
    timers[0]!.clear();
    expect(q.size).toBe(50);
    vi.advanceTimersByTime(2000);
    expect(fired).toEqual(Array.from({ length: 50 }, (_, i) => 2 * i + 1));
    timers[1]!.clear();
    expect(q.size).toBe(0);
  });

  it("waits out deadlines beyond 2^31-1 ms, not firing early", () => {
    const q = new DeadlineQueue(now);
    let fired = 0;
    const far = Date.now() + 2 ** 33 + 5;
    q.at(far, () => fired++);
    vi.advanceTimersByTime(2 ** 31);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(far - Date.now() - 1);
    expect(fired).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
  });

  it("a deadline set earlier than the armed one wakes the queue sooner; a past one fires at once", () => {
    const q = new DeadlineQueue(now);
    const fired: string[] = [];
    q.at(Date.now() + 60_000, () => fired.push("late"));
    q.at(Date.now() + 10, () => fired.push("soon"));
    q.at(Date.now() - 5, () => fired.push("past"));
    vi.advanceTimersByTime(1);
    expect(fired).toEqual(["past"]);
    vi.advanceTimersByTime(9);
    expect(fired).toEqual(["past", "soon"]);
  });

  it("a deadline that is not a number is due at once (fails closed)", () => {
    const q = new DeadlineQueue(now);
    let fired = 0;
    q.at(Date.now() + 1000, () => fired--);
    q.at(NaN, () => fired++);
    vi.advanceTimersByTime(1);
    expect(fired).toBe(1);
  });

  it("a callback that throws does not cost the others due with it", () => {
    const q = new DeadlineQueue(now);
    const fired: string[] = [];
    q.at(Date.now() + 100, () => {
      throw new Error("boom");
    });
    q.at(Date.now() + 100, () => fired.push("other"));
    expect(() => vi.advanceTimersByTime(100)).toThrow("boom");
    expect(fired).toEqual(["other"]);
  });
});
