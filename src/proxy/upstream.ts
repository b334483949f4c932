// Dialing the local workload, only after a session has been allowed.
import { ParleyError } from "../errors/catalogue.js";
import { connect, type Socket } from "node:net";
import type { HostPort } from "../config/units.js";

export type DialFailure = "upstream_connect_failed" | "upstream_connect_timeout";

export class DialError extends ParleyError {
  constructor(
    readonly reason: DialFailure,
    message: string,
  ) {
    super("PARLEY_ERR_UPSTREAM_DIAL", message);
  }
}

export interface Dial {
  readonly socket: Socket;
  readonly connected: Promise<Socket>;
}

/** Starts a TCP connection; `connected` settles once, with the socket or a DialError. */
export function dial(target: HostPort, timeoutMs: number): Dial {
  const socket = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
  const connected = new Promise<Socket>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DialError("upstream_connect_timeout", `no connection to ${target.host}:${target.port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new DialError("upstream_connect_failed", `${target.host}:${target.port}: ${e.code ?? e.message}`));
    });
  });
  return { socket, connected };
}
