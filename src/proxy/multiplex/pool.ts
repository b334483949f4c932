// The outbound end of multiplexed hops: a pool of mTLS HTTP/2 connections per (remote address,
// expected SPIFFE ID, server name), each carrying up to max_streams CONNECT streams, one a local
// client connection. A connection is used only while it was opened with the sidecar's current SVID
// and its remote still verifies as the expected ID (checked again for every stream, under the trust
// bundles in force); otherwise it drains: no new streams, open ones go on. A GOAWAY from the remote
// drains it too; a connection without streams for idle_timeout is closed. A negotiating route's
// streams carry its `parley-request`; the 200 must carry a `parley-grant`.
import {
  connect as h2connect,
  sensitiveHeaders,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
} from "node:http2";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import type { MultiplexConfig } from "../../config/resources.js";
import { ParleyError } from "../../errors/catalogue.js";
import { formatHostPort, type HostPort } from "../../config/units.js";
import type { RevocationList } from "../../policy/revocation.js";
import type { SpiffeId } from "../../spiffe/spiffeid.js";
import type { SvidVerifier } from "../../spiffe/x509svid.js";
import type { OwnSvid } from "../../workloadapi/client.js";
import type { Grant } from "../../negotiation/client.js";
import { DENIAL_HEADER, denialOf, GRANT_HEADER, grantOf, REQUEST_HEADER } from "../../negotiation/headers.js";
import { peerChain } from "../inbound/peerchain.js";
import { checkRemote, type RemoteSubject } from "../outbound/remote.js";
import {
  clientOptions,
  CONNECTION_WINDOW,
  H2_ALPN,
  isMultiplexAlpn,
  MUX_ALPN,
  HTTP2_HEADER_AUTHORITY,
  HTTP2_HEADER_METHOD,
  HTTP2_METHOD_CONNECT,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  REASON_HEADER,
} from "./wire.js";

/** Where a stream goes and as whom: a route's view of the pool. */
export interface PoolRoute {
  readonly remote: HostPort;
  readonly expectId: SpiffeId;
  readonly serverName: string;
  readonly identity: OwnSvid;
  readonly verifier: SvidVerifier;
  readonly connectTimeoutMs: number;
  readonly bounds: MultiplexConfig;
  /** Each stream's `:authority`. */
  readonly target: string;
  /** The revocations in force: a remote they name gets no stream, and its connection drains. */
  readonly revocations: RevocationList;
  /** The `parley-request` value when the route negotiates: each stream carries it. */
  readonly request?: string;
}

/** A stream answered 200, and what a revocation can name of the remote that answered it. */
export interface PooledStream {
  readonly stream: ClientHttp2Stream;
  readonly remoteId: string;
  readonly subject: RemoteSubject;
  /** The grant the 200 carried, when the route negotiates. */
  readonly grant?: Grant;
}

/** Why no stream: the outbound log's reason and a detail. */
export class StreamRefused extends ParleyError {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super("PARLEY_ERR_MULTIPLEX", detail);
  }
}

interface Connection {
  readonly session: ClientHttp2Session;
  readonly chain: Buffer[];
  /** The fingerprint of the own SVID it was opened with. */
  readonly identity: string;
  streams: number;
  idle?: NodeJS.Timeout;
  /** Set once the remote's SETTINGS came: it speaks HTTP/2. */
  settled?: true;
  /** The protocol the remote selected: parley-mux/1 says parley itself reads the streams, so a request may be sent. */
  readonly alpn: TLSSocket["alpnProtocol"];
}

export class ConnectionPool {
  private readonly byKey = new Map<string, Connection[]>();
  /** The connection being opened per key, which every stream arriving meanwhile waits for. */
  private readonly opening = new Map<string, Promise<Connection>>();

  /**
   * A CONNECT stream to `r`'s remote, answered 200, and the remote's verified ID; else StreamRefused. A
   * stream the remote refused unprocessed (REFUSED_STREAM, as after its GOAWAY: RFC 9113 §8.7) is tried
   * once more, on another connection.
   */
  async stream(r: PoolRoute, now: () => number): Promise<PooledStream> {
    try {
      return await this.attempt(r, now);
    } catch (e) {
      if (!(e instanceof StreamRefused) || e.reason !== "remote_refused_stream") throw e;
      return this.attempt(r, now);
    }
  }

  private async attempt(r: PoolRoute, now: () => number): Promise<PooledStream> {
    const c = await this.acquire(r);
    // Over plain h2 the streams may be a workload's (a listener without multiplex): a request's tokens are not sent.
    const protocol = r.request !== undefined ? { wanted: MUX_ALPN, selected: c.alpn, hint: "is multiplex set on its listener?" } : undefined;
    const checked = checkRemote(c.chain, r, now(), protocol);
    if (!checked.ok) {
      // A remote that is not (or no longer) the one expected takes no more streams; one that only does
      // not negotiate still serves the routes that do not.
      if (checked.reason !== "remote_not_negotiating") this.drain(c);
      this.release(c, r);
      throw new StreamRefused(checked.reason, checked.detail);
    }
    const { subject } = checked;
    // The request holds tokens: never put in the HPACK table (RFC 7541 §7.1.3), so no compression oracle reads them.
    const negotiation = r.request ? { [REQUEST_HEADER]: r.request, [sensitiveHeaders]: [REQUEST_HEADER] } : {};
    const headers = { [HTTP2_HEADER_METHOD]: HTTP2_METHOD_CONNECT, [HTTP2_HEADER_AUTHORITY]: r.target, ...negotiation };
    const stream = c.session.request(headers, { endStream: false });
    stream.once("close", () => this.release(c, r));
    // A stream refused unprocessed means its connection takes no more.
    stream.once("close", () => stream.rstCode === NGHTTP2_REFUSED_STREAM && this.drain(c));
    stream.on("error", () => {});
    const response = await answered(stream, r.connectTimeoutMs).catch((e: unknown) => {
      // A remote listener without multiplex takes h2 as its workload's protocol and passes the bytes on.
      if (c.settled || !(e instanceof StreamRefused)) throw e;
      throw new StreamRefused("remote_not_multiplexed", "the remote does not answer HTTP/2: is multiplex set on its listener?");
    });
    const remoteId = subject.peer.toString();
    if (!r.request) return { stream, remoteId, subject };
    try {
      return { stream, remoteId, subject, grant: grantOf(response[GRANT_HEADER]) };
    } catch (e) {
      stream.close(NGHTTP2_CANCEL);
      throw new StreamRefused("negotiation_failed", (e as Error).message);
    }
  }

  /** Drains every connection (sidecar stop): open streams go on until they end. */
  closeAll(): void {
    for (const list of this.byKey.values()) for (const c of [...list]) this.drain(c);
  }

  /** Connections open now, for tests and metrics: per key, the streams each carries. */
  census(): number[][] {
    return [...this.byKey.values()].map((l) => l.map((c) => c.streams));
  }

  /** A connection with room for one more stream (counted at once), opened if none has room. */
  private async acquire(r: PoolRoute): Promise<Connection> {
    const key = keyOf(r);
    for (;;) {
      const list = this.byKey.get(key) ?? [];
      // A connection opened with an SVID that is no longer ours drains (the remote decided on the old one).
      for (const c of list.filter((c) => c.identity !== r.identity.fingerprint)) this.drain(c);
      const free = (this.byKey.get(key) ?? []).find((c) => c.streams < capacity(c, r));
      if (free) {
        free.streams++;
        clearTimeout(free.idle);
        return free;
      }
      const pending = this.opening.get(key);
      if (pending) {
        await pending.catch(() => undefined);
        continue;
      }
      const opened = this.open(r, key).finally(() => this.opening.delete(key));
      this.opening.set(key, opened);
      await opened;
    }
  }

  private async open(r: PoolRoute, key: string): Promise<Connection> {
    const socket = await handshake(r);
    const session = h2connect(`https://${formatHostPort(r.remote)}`, { ...clientOptions(r.bounds.maxStreams), createConnection: () => socket });
    const c: Connection = { session, chain: peerChain(socket), identity: r.identity.fingerprint, streams: 0, alpn: socket.alpnProtocol };
    session.on("error", () => {});
    session.once("goaway", () => this.drain(c));
    session.once("remoteSettings", () => (c.settled = true));
    session.once("close", () => this.forget(c, key));
    session.once("connect", () => session.setLocalWindowSize(CONNECTION_WINDOW));
    const list = this.byKey.get(key) ?? [];
    list.push(c);
    this.byKey.set(key, list);
    this.release(c, r, 0);
    return c;
  }

  /** One stream fewer; a connection left without any is closed after the idle timeout. */
  private release(c: Connection, r: PoolRoute, by = 1): void {
    c.streams -= by;
    if (c.streams > 0 || c.session.closed) return;
    clearTimeout(c.idle);
    c.idle = setTimeout(() => this.drain(c), r.bounds.idleTimeoutMs).unref();
  }

  /** No new streams on `c`; its open ones go on, and it closes when they end. */
  private drain(c: Connection): void {
    clearTimeout(c.idle);
    for (const [key, list] of this.byKey) if (list.includes(c)) this.forget(c, key);
    if (!c.session.closed) c.session.close();
  }

  private forget(c: Connection, key: string): void {
    const list = this.byKey.get(key)?.filter((x) => x !== c) ?? [];
    if (list.length > 0) this.byKey.set(key, list);
    else this.byKey.delete(key);
  }
}

function keyOf(r: PoolRoute): string {
  return `${formatHostPort(r.remote)}|${r.expectId.toString()}|${r.serverName}`;
}

/** Streams `c` may carry: ours to open (max_streams), and no more than the remote allows at once. */
function capacity(c: Connection, r: PoolRoute): number {
  return Math.min(r.bounds.maxStreams, c.session.remoteSettings.maxConcurrentStreams ?? r.bounds.maxStreams);
}

/** The mTLS connection, ALPN h2, with our SVID; the remote is judged by the caller, by the SPIFFE rules. */
function handshake(r: PoolRoute): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: r.remote.host,
      port: r.remote.port,
      cert: r.identity.certChainPem,
      key: r.identity.keyPem,
      servername: r.serverName,
      rejectUnauthorized: false,
      ALPNProtocols: [MUX_ALPN, H2_ALPN],
    });
    socket.setNoDelay(true);
    const fail = (e: StreamRefused) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new StreamRefused("remote_connect_timeout", `no TLS session with the remote within ${r.connectTimeoutMs} ms`)),
      r.connectTimeoutMs,
    );
    socket.once("error", (e: NodeJS.ErrnoException) => fail(new StreamRefused("remote_connect_failed", e.code ?? e.message)));
    socket.once("secureConnect", () => {
      if (!isMultiplexAlpn(socket.alpnProtocol))
        return void fail(new StreamRefused("remote_not_multiplexed", `the remote chose ALPN ${socket.alpnProtocol || "none"}, not h2`));
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
  });
}

/**
 * Waits for the response: 200 is the session (its headers resolved); any other status (or a reset) is
 * the remote's refusal, told by its `parley-denial` as the frame client tells a denial frame.
 */
function answered(stream: ClientHttp2Stream, timeoutMs: number): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    // Whichever comes first settles; the others are removed (an error made per stream at its close,
    // for a promise long settled, was measurable in a CPU profile of new sessions).
    const settle = (error: StreamRefused | undefined, headers?: IncomingHttpHeaders) => {
      clearTimeout(timer);
      stream.off("response", onResponse).off("close", onClose);
      if (error) reject(error);
      else resolve(headers!);
    };
    const timer = setTimeout(() => {
      stream.close();
      settle(new StreamRefused("remote_connect_timeout", `no response to CONNECT within ${timeoutMs} ms`));
    }, timeoutMs);
    const onResponse = (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      const status = headers[":status"];
      if (status === 200) return void settle(undefined, headers);
      const reason = headers[REASON_HEADER];
      const denial = headers[DENIAL_HEADER];
      const told = typeof denial === "string" ? deniedBy(denial) : undefined;
      settle(new StreamRefused("remote_denied", told ?? `status ${status}${typeof reason === "string" ? `: ${reason}` : ""}`));
    };
    const onClose = () => {
      const code = stream.rstCode;
      const reason = code === NGHTTP2_REFUSED_STREAM ? "remote_refused_stream" : "remote_reset";
      settle(new StreamRefused(reason, `stream reset before a response (code ${code})`));
    };
    stream.once("response", onResponse).once("close", onClose);
  });
}

/** A `parley-denial` value as the denial's message, or undefined when it is malformed (the status then speaks). */
function deniedBy(value: string): string | undefined {
  try {
    return denialOf(value).message;
  } catch {
    return undefined;
  }
}
