// Moving bytes both ways between the client and the workload: backpressure through pipe(), half-close
// passed along (one side's end becomes an end of the other's writable side), and one outcome when the
// pair is finished or broken.
import type { Duplex } from "node:stream";

export type PumpEnd =
  | { reason: "completed" }
  | { reason: "client_error" | "upstream_error"; detail: string };

/**
 * Pipes `client` ⇄ `upstream` and calls `onEnd` exactly once, after both sockets are closed. An error
 * on either side destroys both.
 */
export function pump(client: Duplex, upstream: Duplex, onEnd: (end: PumpEnd) => void): void {
  let end: PumpEnd | undefined;
  let closed = 0;
  const fail = (side: "client_error" | "upstream_error") => (e: NodeJS.ErrnoException) => {
    end ??= { reason: side, detail: e.code ?? e.message };
    client.destroy();
    upstream.destroy();
  };
  const onClose = () => {
    // A side that closes while the other still runs (e.g. a reset without an error event) ends the pair.
    client.destroy();
    upstream.destroy();
    if (++closed === 2) onEnd(end ?? { reason: "completed" });
  };
  client.on("error", fail("client_error"));
  upstream.on("error", fail("upstream_error"));
  client.once("close", onClose);
  upstream.once("close", onClose);
  client.pipe(upstream);
  upstream.pipe(client);
}
