// Moving bytes both ways between the client and the workload. Each direction reads, writes, and stops
// reading while the other side's buffer is full (backpressure) or while a throttle says the direction
// is over its byte rate; nothing is buffered beyond the sockets' own buffers. One side's end of stream
// is passed on as a half-close. A byte budget, when set, counts both directions together.
//
// Cost per chunk: a session pays only for the obligations that act on bytes. Without any (no
// bandwidth, no byte budget) each direction's 'data' handler is the plain forwarder: count, write,
// pause on backpressure — no clock read, no throttle, no branch on limits. With some, a metered
// handler does O(1) work per chunk (the budget, then at most two throttles, one clock read). The
// handler is chosen when the limits are set, at start and on `setLimits` (a re-check that adds,
// tightens or removes a bandwidth applies to the live session from its next chunk).
import type { Duplex } from "node:stream";
import type { Throttle } from "../limits/throttle.js";

export type PumpEnd = { reason: "completed" | "byte_budget" } | { reason: "client_error" | "upstream_error"; detail: string };

/** The obligations of a session that act on its bytes; undefined when none do. */
export interface PumpLimits {
  /** Most bytes both directions together may carry. */
  readonly byteBudget?: number;
  /** Throttles (with a rate) charged for client → workload bytes (session's own, identity's shared). */
  readonly up: readonly Throttle[];
  /** Throttles (with a rate) charged for workload → client bytes. */
  readonly down: readonly Throttle[];
  readonly now: () => number;
}

export interface PumpCounts {
  toUpstream: number;
  toClient: number;
}

export interface Pump {
  /** The live byte counts. */
  readonly counts: PumpCounts;
  /** Puts new byte obligations in force (undefined: none); chooses each direction's handler anew. */
  setLimits(limits: PumpLimits | undefined): void;
}

type OnData = (chunk: Buffer) => void;

/**
 * One direction's flow control. It reads again only when nothing holds it: the destination's buffer
 * (`drainWait`) or a throttle's pause (`pauseWait`), and never after the session's end. One 'drain'
 * listener for the session's life, as stream.pipe has: `once` per backpressure event built and removed
 * a wrapper each time, and a bulk transfer meets backpressure on most chunks.
 */
class Direction {
  drainWait = false;
  pauseWait = false;
  handler: OnData | undefined = undefined;
  constructor(
    readonly src: Duplex,
    readonly dst: Duplex,
    readonly toUpstream: boolean,
    private readonly ended: () => boolean,
  ) {
    dst.on("drain", () => {
      if (!this.drainWait) return;
      this.drainWait = false;
      this.resumeIfFree();
    });
  }

  resumeIfFree(): void {
    if (!this.drainWait && !this.pauseWait && !this.ended()) this.src.resume();
  }
}

/**
 * Runs `client` ⇄ `upstream` and calls `onEnd` exactly once, after both sockets are closed. An error
 * on either side destroys both.
 */
export function pump(client: Duplex, upstream: Duplex, limits: PumpLimits | undefined, onEnd: (end: PumpEnd) => void): Pump {
  const counts: PumpCounts = { toUpstream: 0, toClient: 0 };
  let end: PumpEnd | undefined;
  let closed = 0;
  // Timers exist only for metered sessions: throttles' pauses, a spent budget's last drain.
  let pauses: Set<NodeJS.Timeout> | undefined;
  let lastDrain: NodeJS.Timeout | undefined;
  const clearPauses = () => {
    if (pauses) for (const t of pauses) clearTimeout(t);
    pauses = undefined;
  };
  const destroyBoth = () => {
    clearPauses();
    clearTimeout(lastDrain);
    client.destroy();
    upstream.destroy();
  };
  const fail = (side: "client_error" | "upstream_error") => (e: NodeJS.ErrnoException) => {
    end ??= { reason: side, detail: e.code ?? e.message };
    destroyBoth();
  };
  const onClose = () => {
    // A side that closes while the other still runs (a reset without an error event) ends the pair.
    destroyBoth();
    if (++closed === 2) onEnd(end ?? { reason: "completed" });
  };
  client.on("error", fail("client_error"));
  upstream.on("error", fail("upstream_error"));
  client.once("close", onClose);
  upstream.once("close", onClose);

  // A throttle's pending pause: cleared when the limits change (the throttle's bucket keeps its debt,
  // so the next chunk pauses again for what is still owed).
  const pauseFor = (ms: number, d: Direction) => {
    d.pauseWait = true;
    const t = setTimeout(() => {
      pauses?.delete(t);
      d.pauseWait = false;
      d.resumeIfFree();
    }, ms);
    (pauses ??= new Set()).add(t);
  };

  /** The 'data' handler of one direction without byte obligations: a pipe. */
  const plain = (d: Direction): OnData => {
    const { src, dst, toUpstream } = d;
    return (c) => {
      if (toUpstream) counts.toUpstream += c.length;
      else counts.toClient += c.length;
      if (dst.write(c)) return;
      d.drainWait = true;
      src.pause();
    };
  };

  /** The 'data' handler of one direction under a byte budget and/or throttles. */
  const metered = (d: Direction, l: PumpLimits): OnData => {
    const { src, dst, toUpstream } = d;
    const throttles = toUpstream ? l.up : l.down;
    const budget = l.byteBudget;
    const count = (n: number) => (toUpstream ? (counts.toUpstream += n) : (counts.toClient += n));
    return (c) => {
      if (budget !== undefined) {
        const left = budget - counts.toUpstream - counts.toClient;
        if (c.length > left) return void spend(src, dst, c, left, count);
      }
      count(c.length);
      const ok = dst.write(c);
      let pauseMs = 0;
      if (throttles.length > 0) {
        const now = l.now();
        for (const t of throttles) pauseMs = Math.max(pauseMs, t.consume(c.length, now));
      }
      if (ok && pauseMs === 0) return;
      if (!ok) d.drainWait = true;
      if (pauseMs > 0) pauseFor(pauseMs, d);
      src.pause();
    };
  };

  /** The budget is spent: forward what it still allows, then end the session, not one byte more. */
  const spend = (src: Duplex, dst: Duplex, c: Buffer, left: number, count: (n: number) => void) => {
    if (left > 0) {
      count(left);
      dst.write(c.subarray(0, left));
    }
    end ??= { reason: "byte_budget" };
    src.pause();
    // Let the allowed bytes drain, but not for ever.
    lastDrain = setTimeout(destroyBoth, 1000);
    dst.end(destroyBoth);
  };

  const ended = () => end !== undefined;
  const directions = [new Direction(client, upstream, true, ended), new Direction(upstream, client, false, ended)];
  const setLimits = (next: PumpLimits | undefined) => {
    clearPauses();
    for (const d of directions) {
      if (d.handler) d.src.off("data", d.handler);
      d.handler = next ? metered(d, next) : plain(d);
      d.src.on("data", d.handler);
      // A direction paused by a throttle reads again under the new limits; one waiting on
      // backpressure still waits for its drain.
      d.pauseWait = false;
      if (d.src.isPaused()) d.resumeIfFree();
    }
  };
  setLimits(limits);
  for (const { src, dst } of directions) {
    // The end may have come already (a peer that sent its request and closed at once, while the
    // socket was paused for negotiation).
    if (src.readableEnded) dst.end();
    else src.once("end", () => dst.end());
  }
  // A socket paused earlier (negotiation reads its frame, then pauses) does not flow on a new 'data'
  // listener by itself.
  client.resume();
  upstream.resume();
  return { counts, setLimits };
}
