// The TCP socket under a server-side TLS socket. Node keeps it as `_parent`; the listener keys its
// per-connection state by it, and it already knows its peer's address (asked once at accept), where
// the TLS socket would ask the kernel again.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";

export function tcpOf(socket: TLSSocket): Socket {
  return (socket as TLSSocket & { _parent: Socket })._parent;
}
