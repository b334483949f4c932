// Byte-rate throttles: a token bucket in bytes that a pump charges for each chunk it forwards, and that
// answers how long to stop reading. Reads pause, never buffer: TCP backpressure does the rest.
import { type Bucket, fullBucket, type Rate, takeOrOwe } from "./bucket.js";

export class Throttle {
  private rate: Rate | undefined;
  private bucket: Bucket;

  constructor(bytesPerSecond: number | undefined, now: number) {
    this.rate = rateOf(bytesPerSecond);
    this.bucket = fullBucket(this.rate ?? { perSecond: 1, burst: 0 }, now);
  }

  get bytesPerSecond(): number | undefined {
    return this.rate?.perSecond;
  }

  /** A new rate applies from now on; undefined removes the bound. */
  setRate(bytesPerSecond: number | undefined, now: number): void {
    const next = rateOf(bytesPerSecond);
    if (next?.perSecond === this.rate?.perSecond) return;
    this.rate = next;
    if (next) this.bucket = { tokens: Math.min(this.bucket.tokens, next.burst), at: now };
  }

  /** Charges `bytes`; returns how long (ms) reading must pause to stay within the rate. */
  consume(bytes: number, now: number): number {
    return this.rate ? takeOrOwe(this.bucket, this.rate, now, bytes) : 0;
  }
}

/** A burst of a tenth of a second: small enough to keep the rate within a few percent over seconds. */
function rateOf(bps: number | undefined): Rate | undefined {
  return bps === undefined ? undefined : { perSecond: bps, burst: Math.max(1, bps / 10) };
}

/** Throttles shared by all sessions of one identity, one per direction, dropped with the last session. */
export class SharedThrottles {
  private readonly byKey = new Map<string, { up: Throttle; down: Throttle; refs: number }>();

  acquire(key: string, bytesPerSecond: number, now: number): { up: Throttle; down: Throttle; release(): void } {
    let e = this.byKey.get(key);
    if (!e) this.byKey.set(key, (e = { up: new Throttle(bytesPerSecond, now), down: new Throttle(bytesPerSecond, now), refs: 0 }));
    else {
      e.up.setRate(bytesPerSecond, now);
      e.down.setRate(bytesPerSecond, now);
    }
    e.refs++;
    let released = false;
    const entry = e;
    return {
      up: e.up,
      down: e.down,
      release: () => {
        if (released) return;
        released = true;
        if (--entry.refs === 0) this.byKey.delete(key);
      },
    };
  }

  get size(): number {
    return this.byKey.size;
  }
}
