// The client side of one inbound session, as the session's pipeline sees it: the bytes (a TLS socket
// of its own, or one HTTP/2 CONNECT stream of a multiplexed connection), the TLS connection they came
// on, the facts decided on, and how the session's first and last words are said to the client. One
// pipeline (session.ts) serves both shapes; the multiplexed one lives in proxy/multiplex/.
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { ALPN } from "../../negotiation/frame.js";
import { readRequestFrame } from "../../negotiation/read.js";
import type { Denial } from "../../negotiation/negotiate.js";
import type { Deny } from "../../policy/decision.js";
import { factsOf, type ConnectionFacts } from "./facts.js";

/** The session's bytes both ways; its inactivity is the session's idle time. */
export type ClientIo = Duplex & { setTimeout(ms: number, callback?: () => void): unknown };

export interface ClientSide {
  readonly io: ClientIo;
  /** The TLS connection the bytes came on (shared by every stream of a multiplexed connection). */
  readonly tls: TLSSocket;
  readonly facts: ConnectionFacts;
  /** The client asks to negotiate: ALPN parley/1, or a stream with a `parley-request` header. */
  readonly negotiates: boolean;
  /** Its parley/1 request payload (a frame read within `timeoutMs`, or the header); throws NegotiationError. */
  readRequest(timeoutMs: number): Promise<Record<string, unknown>>;
  /** Refuses the session with its last words (a parley/1 denial frame, or a response status), then closes. */
  refuse(decision: Deny, denial: Denial | undefined): void;
  /** Whether `grant` (a parley/1 grant frame) can be told to this client (a stream's header is bounded). */
  carries(grant: Buffer): boolean;
  /**
   * The workload is connected and the session allowed: the client may send (HTTP/2: `:status 200`),
   * told its grant (a parley/1 grant frame) if it negotiated.
   */
  accept(grant?: Buffer): void;
  /** Ends the client side now; `reason` is the session's end reason, `last` a parley/1 frame to send first. */
  close(reason: string, last?: Denial): void;
}

/** A session that is its own TLS connection (plain mTLS, or parley/1). */
export function socketSide(socket: TLSSocket): ClientSide {
  const facts = factsOf(socket);
  return {
    io: socket,
    tls: socket,
    facts,
    negotiates: facts.alpn === ALPN,
    readRequest: (timeoutMs) => readRequestFrame(socket, timeoutMs),
    refuse(_decision, denial) {
      closeAfter(socket, denial?.frame);
    },
    carries: () => true,
    accept(grant) {
      if (grant) socket.write(grant);
    },
    close(_reason, last) {
      closeAfter(socket, last?.frame);
    },
  };
}

/** Closes `socket`, after a last frame for a negotiating client (given a second to leave). */
function closeAfter(socket: TLSSocket, last: Buffer | undefined): void {
  if (!last || socket.destroyed) return void socket.destroy();
  socket.end(last, () => socket.destroy());
  setTimeout(() => socket.destroy(), 1000).unref();
}
