// Timers for far deadlines: setTimeout cannot wait longer than 2^31-1 ms (about 24.8 days) and fires
// at once past that, so a long wait is taken in steps.
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/** Calls `fn` at `at` (epoch ms, by `now`), however far away; unref'd. */
export function at(when: number, fn: () => void, now: () => number = Date.now): LongTimer {
  let timer: NodeJS.Timeout;
  const arm = () => {
    const delay = when - now();
    timer = delay > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, delay));
    timer.unref();
  };
  arm();
  return { clear: () => clearTimeout(timer) };
}
