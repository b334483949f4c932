// Token buckets, as plain data and pure functions of an explicit clock: the one mechanism behind
// per-identity session rates, per-source connection rates and byte-rate throttles.

export interface Rate {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Most tokens the bucket holds (and so the largest burst). */
  readonly burst: number;
}

export interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date (ms). */
  at: number;
}

export function fullBucket(rate: Rate, now: number): Bucket {
  return { tokens: rate.burst, at: now };
}

function refill(b: Bucket, rate: Rate, now: number): void {
  if (now > b.at) {
    b.tokens = Math.min(rate.burst, b.tokens + ((now - b.at) / 1000) * rate.perSecond);
    b.at = now;
  }
}

/** Takes `n` tokens if there are that many; true if taken. */
export function take(b: Bucket, rate: Rate, now: number, n = 1): boolean {
  refill(b, rate, now);
  if (b.tokens < n) return false;
  b.tokens -= n;
  return true;
}

/** Takes `n` tokens even into debt; returns how long (ms) until the debt is paid (0 if none). */
export function takeOrOwe(b: Bucket, rate: Rate, now: number, n: number): number {
  refill(b, rate, now);
  b.tokens -= n;
  return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens / rate.perSecond) * 1000);
}

/** Milliseconds until `n` tokens are available (0 = now). */
export function waitFor(b: Bucket, rate: Rate, now: number, n = 1): number {
  refill(b, rate, now);
  return b.tokens >= n ? 0 : Math.ceil(((n - b.tokens) / rate.perSecond) * 1000);
}

/** True when the bucket would be full at `now`: its state carries no information and can be dropped. */
export function isFull(b: Bucket, rate: Rate, now: number): boolean {
  return b.tokens + ((now - b.at) / 1000) * rate.perSecond >= rate.burst;
}
