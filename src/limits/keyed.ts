// Token buckets by key (a SPIFFE ID, a source address) in bounded memory: a key whose bucket has
// refilled carries no state and is dropped; past `maxKeys` the least recently used key goes first.
// Every operation is O(1) (amortized).
import { type Bucket, fullBucket, isFull, type Rate, take, waitFor } from "./bucket.js";

interface Entry {
  readonly bucket: Bucket;
  rate: Rate;
}

export class KeyedBuckets {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly maxKeys = 100_000) {}

  get size(): number {
    return this.entries.size;
  }

  /** Takes one token for `key` at `rate`: true if allowed. */
  take(key: string, rate: Rate, now: number): boolean {
    return take(this.touch(key, rate, now).bucket, rate, now);
  }

  /** Milliseconds until `key` has a token. */
  waitFor(key: string, rate: Rate, now: number): number {
    const e = this.entries.get(key);
    return e ? waitFor(e.bucket, rate, now) : 0;
  }

  private touch(key: string, rate: Rate, now: number): Entry {
    let e = this.entries.get(key);
    if (e) this.entries.delete(key); // re-inserted last: the map's order is recency
    this.evict(now);
    e ??= { bucket: fullBucket(rate, now), rate };
    e.rate = rate;
    this.entries.set(key, e);
    return e;
  }

  /** Drops up to two of the least recently used keys if they are full again or over the cap. */
  private evict(now: number): void {
    for (let i = 0; i < 2; i++) {
      const oldest = this.entries.entries().next().value;
      if (!oldest) return;
      const [k, e] = oldest;
      if (this.entries.size >= this.maxKeys || isFull(e.bucket, e.rate, now)) this.entries.delete(k);
      else return;
    }
  }
}
