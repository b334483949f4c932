// Moving bytes both ways between the client and the workload. Each direction reads, writes, and stops
// reading while the other side's buffer is full (backpressure) or while a throttle says the direction
// is over its byte rate; nothing is buffered beyond the sockets' own buffers. One side's end of stream
// is passed on as a half-close. A byte budget, when set, counts both directions together.
import type { Duplex } from "node:stream";
import type { Throttle } from "../limits/throttle.js";

export type PumpEnd = { reason: "completed" | "byte_budget" } | { reason: "client_error" | "upstream_error"; detail: string };

export interface PumpLimits {
  /** Most bytes both directions together may carry. */
  readonly byteBudget?: number;
  /** Throttles charged for client → workload bytes (session's own, identity's shared...). */
  readonly up: readonly Throttle[];
  /** Throttles charged for workload → client bytes. */
  readonly down: readonly Throttle[];
  readonly now: () => number;
}

export interface PumpCounts {
  toUpstream: number;
  toClient: number;
}

/**
 * Runs `client` ⇄ `upstream` and calls `onEnd` exactly once, after both sockets are closed. An error
 * on either side destroys both. Returns the live byte counts.
 */
export function pump(client: Duplex, upstream: Duplex, limits: PumpLimits, onEnd: (end: PumpEnd) => void): PumpCounts {
  const counts: PumpCounts = { toUpstream: 0, toClient: 0 };
  let end: PumpEnd | undefined;
  let closed = 0;
  const timers = new Set<NodeJS.Timeout>();
  const destroyBoth = () => {
    for (const t of timers) clearTimeout(t);
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

  const used = () => counts.toUpstream + counts.toClient;
  const flow = (src: Duplex, dst: Duplex, throttles: readonly Throttle[], count: (n: number) => void) => {
    src.on("data", (chunk: Buffer) => {
      const c = chunk;
      if (limits.byteBudget !== undefined) {
        const left = limits.byteBudget - used();
        if (c.length > left) {
          // Forward what the budget still allows, then end the session: not one byte more.
          if (left > 0) {
            count(left);
            dst.write(c.subarray(0, left));
          }
          end ??= { reason: "byte_budget" };
          src.pause();
          // Let the allowed bytes drain, but not for ever.
          const t = setTimeout(destroyBoth, 1000);
          timers.add(t);
          dst.end(destroyBoth);
          return;
        }
      }
      count(c.length);
      const ok = dst.write(c);
      const now = limits.now();
      let pauseMs = 0;
      for (const t of throttles) pauseMs = Math.max(pauseMs, t.consume(c.length, now));
      if (ok && pauseMs === 0) return;
      src.pause();
      let waits = (ok ? 0 : 1) + (pauseMs > 0 ? 1 : 0);
      const resume = () => {
        if (--waits === 0) src.resume();
      };
      if (!ok) dst.once("drain", resume);
      if (pauseMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          resume();
        }, pauseMs);
        timers.add(t);
      }
    });
    // The end may have come already (a peer that sent its request and closed at once, while the
    // socket was paused for negotiation).
    if (src.readableEnded) dst.end();
    else src.once("end", () => dst.end());
  };
  flow(client, upstream, limits.up, (n) => (counts.toUpstream += n));
  flow(upstream, client, limits.down, (n) => (counts.toClient += n));
  // A socket paused earlier (negotiation reads its frame, then pauses) does not flow on a new 'data'
  // listener by itself.
  client.resume();
  upstream.resume();
  return counts;
}
