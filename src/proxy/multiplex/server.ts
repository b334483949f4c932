// The inbound end of multiplexed hops: an HTTP/2 session over a verified mTLS connection (ALPN h2, on
// a listener with `multiplex`), where each CONNECT stream (RFC 9113 §8.5) is one InboundSession —
// decided, admitted, bound and logged like a connection of its own. The connection only carries:
// its peer certificate is every stream's peer, and the listener's state at a stream's arrival decides
// it. Streams that are not a well-formed CONNECT never become sessions (405, 400). A stream's
// `parley-request` header makes it negotiate (stream.ts).
import { performServerHandshake, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { MultiplexConfig } from "../../config/resources.js";
import { factsOf, type ConnectionFacts, type ListenerState } from "../inbound/facts.js";
import { InboundSession, type SessionDeps } from "../inbound/session.js";
import { fieldValues, REQUEST_HEADER } from "../../negotiation/headers.js";
import { StreamSide, type ConnectionEvents } from "./stream.js";
import {
  CONNECTION_WINDOW,
  HTTP2_HEADER_AUTHORITY,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_STATUS,
  HTTP2_METHOD_CONNECT,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_NO_ERROR,
  parseAuthority,
  REASON_HEADER,
  serverOptions,
  withinHeaderBounds,
} from "./wire.js";

/**
 * Streams a connection may have refused (denials, 400, 405) before it is sent away with GOAWAY
 * ENHANCE_YOUR_CALM: a refusal costs a decision and a log record, and a new stream costs the peer
 * nothing like a handshake; refusals cap what one connection can make parley do in vain.
 */
const MAX_REFUSED = 100;

export class MultiplexedConnections {
  private readonly sessions = new Set<ServerHttp2Session>();

  constructor(
    private readonly state: () => ListenerState,
    private readonly deps: SessionDeps,
  ) {}

  /** Serves `socket` (handshake done, ALPN h2) under `bounds` until the peer or a GOAWAY ends it. */
  serve(socket: TLSSocket, bounds: MultiplexConfig): void {
    const session = performServerHandshake(socket, serverOptions(bounds.maxStreams));
    const facts = factsOf(socket);
    this.sessions.add(session);
    let open = 0;
    let refused = 0;
    const told: ConnectionEvents = {
      refused: () => {
        if (++refused < MAX_REFUSED) return;
        session.goaway(NGHTTP2_ENHANCE_YOUR_CALM);
        session.close();
      },
      // A revoked or expired peer: GOAWAY, no new streams; those open end by their own re-checks.
      peerGone: () => session.close(),
    };
    session.on("error", () => socket.destroy());
    session.once("close", () => {
      this.sessions.delete(session);
      socket.destroy();
    });
    session.setLocalWindowSize(CONNECTION_WINDOW);
    // A connection that carries nothing for a while is let go (its streams' own idle time is theirs).
    session.setTimeout(bounds.idleTimeoutMs, () => {
      if (open === 0) session.close();
    });
    session.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
      stream.on("error", () => {}); // a reset is reported by 'close'; the session's pump handles its own
      open++;
      stream.once("close", () => open--);
      this.onStream(stream, headers, raw, socket, facts, told);
    });
  }

  /** A GOAWAY on every connection: no new streams; those open go on until they end or are drained. */
  closeAll(): void {
    for (const s of this.sessions) s.close();
  }

  private onStream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    raw: string[],
    socket: TLSSocket,
    facts: ConnectionFacts,
    told: ConnectionEvents,
  ): void {
    if (!withinHeaderBounds(raw)) return void reject(stream, 431, "headers_too_large", told);
    if (headers[HTTP2_HEADER_METHOD] !== HTTP2_METHOD_CONNECT) return void reject(stream, 405, "method_not_connect", told, { allow: "CONNECT" });
    const authority = headers[HTTP2_HEADER_AUTHORITY];
    const target = parseAuthority(typeof authority === "string" ? authority : undefined);
    if (target === undefined) return void reject(stream, 400, "bad_authority", told);
    const state = this.state();
    new InboundSession(new StreamSide(stream, socket, facts, target, told, fieldValues(raw, REQUEST_HEADER)), state, this.deps).start().catch((e: unknown) => {
      stream.destroy();
      this.deps.log.error("session failed", { listener: state.config.name, detail: (e as Error).message });
    });
  }
}

/** A request that never becomes a session: answered and closed, nothing decided, nothing dialled. */
function reject(stream: ServerHttp2Stream, status: number, reason: string, told: ConnectionEvents, extra: Record<string, string> = {}): void {
  told.refused();
  stream.respond({ [HTTP2_HEADER_STATUS]: status, [REASON_HEADER]: reason, ...extra }, { endStream: true });
  stream.close(NGHTTP2_NO_ERROR);
}
