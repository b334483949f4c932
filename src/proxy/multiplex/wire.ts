// The wire shape of a multiplexed hop, shared by both ends: HTTP/2 (RFC 9113) over mTLS, ALPN `h2`,
// one CONNECT stream (§8.5, the HBONE shape) a session; the bounds each end puts on a connection; and
// what a stream's response status says. Pure: no sockets.
import { constants, type ServerSessionOptions, type SessionOptions } from "node:http2";
import { parseHostPort } from "../../config/units.js";
import type { Deny } from "../../policy/decision.js";

export const H2_ALPN = "h2";
/**
 * HTTP/2 as `h2`, but selected only by a listener that serves multiplexed connections itself (never
 * passed to a workload as its protocol): a client that sees it selected knows the remote parley reads
 * the streams' headers, so it may send `parley-request` (and its tokens). parley's pool offers it
 * ahead of `h2`; over `h2` alone (an HBONE peer, or a listener that would hand the bytes to its
 * workload) a negotiating route sends nothing.
 */
export const MUX_ALPN = "parley-mux/1";
/** A listener with `multiplex` serves a connection with either ALPN as multiplexed. */
export const isMultiplexAlpn = (alpn: string | false | null): boolean => alpn === H2_ALPN || alpn === MUX_ALPN;
/** The response header naming why a stream was refused: reason codes, comma-separated. */
export const REASON_HEADER = "parley-reason";

/** Flow-control windows sized for bulk: a stream may have 1 MiB in flight, a connection 16 MiB. */
export const STREAM_WINDOW = 1 << 20;
export const CONNECTION_WINDOW = 16 << 20;

/** Headers a CONNECT request needs are few: a small list bounds what a peer makes us hold per stream. */
export const MAX_HEADER_LIST_SIZE = 8192;
export const MAX_HEADER_PAIRS = 32;

/**
 * Whether a request's header list (Node's raw [name, value, ...]) is within our bounds, its size
 * counted as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2: octets of name and value plus
 * 32 per field). Node enforces the setting only once the peer has acknowledged our SETTINGS, so the
 * streams sent before that (or by a peer that never acknowledges) are checked here, on every stream.
 */
export function withinHeaderBounds(raw: readonly string[]): boolean {
  if (raw.length / 2 > MAX_HEADER_PAIRS) return false;
  let size = 0;
  for (const field of raw) size += field.length;
  return size + 32 * (raw.length / 2) <= MAX_HEADER_LIST_SIZE;
}

/**
 * The bounds of every multiplexed connection, either end. nghttp2 also enforces its own: a SETTINGS or
 * PING flood (CVE-2019-9512/9515) ends the session.
 */
export function clientOptions(maxStreams: number): SessionOptions {
  return {
    settings: {
      maxConcurrentStreams: maxStreams,
      maxHeaderListSize: MAX_HEADER_LIST_SIZE,
      initialWindowSize: STREAM_WINDOW,
      enablePush: false,
      enableConnectProtocol: false,
    },
    maxHeaderListPairs: MAX_HEADER_PAIRS,
    maxSendHeaderBlockLength: MAX_HEADER_LIST_SIZE,
    // Windows plus headers in flight, with room (MB): a session over it is refused new streams.
    maxSessionMemory: 64,
    maxOutstandingPings: 4,
    maxSettings: 16,
    peerMaxConcurrentStreams: maxStreams,
  };
}

/** The client's bounds, and what a server bounds besides: what a peer may make it refuse or reset. */
export function serverOptions(maxStreams: number): ServerSessionOptions {
  return {
    ...clientOptions(maxStreams),
    // Malformed frames and refused streams a peer may cause before the session ends.
    maxSessionInvalidFrames: 100,
    maxSessionRejectedStreams: 100,
    // RST_STREAM frames a peer may send: a burst, then a rate per second (rapid reset, CVE-2023-44487).
    streamResetBurst: 200,
    streamResetRate: 50,
  };
}

const MAX_AUTHORITY = 261; // a 255-octet host name, ':' and a five-digit port

/**
 * A CONNECT `:authority` as RFC 9110 §9.3.6 wants it: `host:port`, the port present and non-zero (an
 * IPv6 literal in brackets). undefined when it is not; a reg-name is held to letters, digits, '.' and '-'.
 */
export function parseAuthority(authority: string | undefined): string | undefined {
  if (authority === undefined || authority.length > MAX_AUTHORITY) return undefined;
  const hp = parseHostPort(authority);
  return hp && hp.port > 0 ? authority : undefined;
}

/** A refused stream's status: 429 for admission, 503 while failing closed, 403 for every other denial. */
export function denialStatus(d: Deny): number {
  if (d.cause === "admission") return 429;
  if (d.cause === "fail_closed") return 503;
  return 403;
}

/** The status of a stream that ends before its `:status 200`: the workload could not be reached, or else. */
export function endStatus(reason: string): number {
  if (reason === "upstream_connect_failed") return 502;
  if (reason === "upstream_connect_timeout") return 504;
  return 503;
}

export const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_AUTHORITY,
  HTTP2_HEADER_STATUS,
  HTTP2_METHOD_CONNECT,
  NGHTTP2_CANCEL,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_NO_ERROR,
  NGHTTP2_REFUSED_STREAM,
} = constants;
