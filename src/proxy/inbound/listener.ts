// An inbound listener: a TLS server that requires a client certificate and hands each established
// connection to an InboundSession. Certificate verification is parley's own (per trust domain, by the
// SPIFFE rules), so OpenSSL is told to request the certificate but not to judge it.
import { constants } from "node:crypto";
import type { AddressInfo, Socket } from "node:net";
import { createServer, type SecureContextOptions, type Server, type TLSSocket } from "node:tls";
import { formatHostPort } from "../../config/units.js";
import type { HandshakeGuard } from "../../limits/handshakes.js";
import { ALPN } from "../../negotiation/frame.js";
import { MultiplexedConnections } from "../multiplex/server.js";
import { H2_ALPN, isMultiplexAlpn, MUX_ALPN } from "../multiplex/wire.js";
import { socketSide } from "./client.js";
import { markPresented, presentedTlvs } from "./presented.js";
import { InboundSession, type ListenerState, type SessionDeps } from "./session.js";
import { tcpOf } from "../tcp.js";

/**
 * The settings of every secure context a listener builds, at start and on each identity change
 * (`setSecureContext` builds a context from its argument alone: what is left out reverts to Node's
 * defaults). Renegotiation would let a peer swap its certificate after the decision: refused outright.
 * Ciphers are OpenSSL's defaults, in both.
 */
const CONTEXT_SETTINGS = { minVersion: "TLSv1.2", secureOptions: constants.SSL_OP_NO_RENEGOTIATION } as const satisfies SecureContextOptions;

/** The own SVID a listener presents: the certificate chain (leaf first) and key, PEM. */
export interface ListenerIdentity {
  readonly cert: string;
  readonly key: string;
}

export interface ListenerDeps extends SessionDeps {
  readonly handshakes: HandshakeGuard;
}

export class InboundListener {
  private readonly server: Server;
  private state: ListenerState;

  /** Release of the handshake slot of each raw connection still handshaking. */
  private readonly handshaking = new WeakMap<Socket, () => void>();
  /** Raw connections refused before the handshake (their TLS error is still to come). */
  private readonly refused = new WeakSet<Socket>();
  /** When each raw connection was accepted, for the handshake-duration metric. */
  private readonly acceptedAt = new WeakMap<Socket, bigint>();
  /** The HTTP/2 sessions of multiplexed connections (a listener with `multiplex`). */
  private readonly multiplexed: MultiplexedConnections;
  /** What the PROXY v2 header says of the certificate presented: read at start and on each identity change. */
  private presented: Buffer;

  constructor(
    state: ListenerState,
    tls: ListenerIdentity,
    private readonly deps: ListenerDeps,
  ) {
    this.state = state;
    this.presented = presentedTlvs(tls.cert);
    this.multiplexed = new MultiplexedConnections(() => this.state, deps);
    this.server = createServer({
      ...tls,
      ...CONTEXT_SETTINGS,
      requestCert: true,
      rejectUnauthorized: false,
      ALPNCallback: ({ protocols }: { protocols: string[] }) => selectAlpn(protocols, this.state),
      handshakeTimeout: state.config.handshakeTimeoutMs,
      allowHalfOpen: true,
      pauseOnConnect: false,
      // Without it a new session's first response waits on Nagle and the client's delayed ACK (~40 ms).
      noDelay: true,
    });
    this.server.on("connection", (raw: Socket) => this.onConnection(raw));
    this.server.on("secureConnection", (socket: TLSSocket) => this.onSecureConnection(socket));
    this.server.on("tlsClientError", (e: NodeJS.ErrnoException, socket: TLSSocket) => {
      // A connection refused before the handshake was logged as such; its reset is no news.
      if (this.refused.has(tcpOf(socket))) return void socket.destroy();
      this.handshakeDone(socket);
      this.deps.log.handshakeFailed({
        listener: this.state.config.name,
        source: `${socket.remoteAddress}:${socket.remotePort}`,
        cause: handshakeCause(e),
        detail: e.message,
      });
      socket.destroy();
    });
  }

  get name(): string {
    return this.state.config.name;
  }

  get current(): ListenerState {
    return this.state;
  }

  /**
   * Sessions accepted after this call use the new state; live ones are re-checked by the caller.
   * Multiplexing turned off: every multiplexed connection gets GOAWAY and drains (its open streams go
   * on, no new ones), and h2 is the workload's protocol again for new connections. Changed bounds
   * apply to connections accepted from now on.
   */
  update(state: ListenerState): void {
    const wasMultiplexed = this.state.config.multiplex !== undefined;
    this.state = state;
    if (wasMultiplexed && state.config.multiplex === undefined) this.multiplexed.closeAll();
  }

  /** New handshakes present this certificate, under the same settings; established ones are unaffected. */
  setIdentity(tls: ListenerIdentity): void {
    this.server.setSecureContext({ ...tls, ...CONTEXT_SETTINGS });
    this.presented = presentedTlvs(tls.cert);
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.state.config.listen;
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(new Error(`listener ${this.name}: cannot listen on ${formatHostPort({ host, port })}: ${e.message}`));
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        this.server.on("error", (e: Error) => this.deps.log.error("listener error", { listener: this.name, detail: e.message }));
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  get listening(): boolean {
    return this.server.listening;
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Stops accepting; established sessions are left to the registry's drain. */
  stopAccepting(): void {
    if (this.server.listening) this.server.close();
    this.multiplexed.closeAll();
  }

  /** Before any cryptography: a handshake slot, or the connection is dropped at once. */
  private onConnection(raw: Socket): void {
    const entered = this.deps.handshakes.enter(raw.remoteAddress ?? "");
    if (typeof entered === "string") {
      this.refused.add(raw);
      this.deps.log.handshakeRefused({ listener: this.name, source: `${raw.remoteAddress}:${raw.remotePort}`, cause: entered });
      raw.destroy();
      return;
    }
    this.handshaking.set(raw, entered);
    this.acceptedAt.set(raw, process.hrtime.bigint());
    raw.once("close", entered);
  }

  private handshakeDone(socket: TLSSocket): void {
    this.handshaking.get(tcpOf(socket))?.();
  }

  private onSecureConnection(socket: TLSSocket): void {
    this.handshakeDone(socket);
    const t0 = this.acceptedAt.get(tcpOf(socket));
    if (t0 !== undefined) this.deps.log.handshakeCompleted(this.name, Number(process.hrtime.bigint() - t0) / 1e9);
    markPresented(socket, this.presented);
    const multiplex = this.state.config.multiplex;
    if (multiplex && isMultiplexAlpn(socket.alpnProtocol)) return void this.multiplexed.serve(socket, multiplex);
    new InboundSession(socketSide(socket), this.state, this.deps).start().catch((e: unknown) => {
      socket.destroy();
      this.deps.log.error("session failed", { listener: this.name, detail: (e as Error).message });
    });
  }
}

/**
 * ALPN: parley/1 for clients that negotiate (when enabled); else, on a listener that multiplexes,
 * parley-mux/1 then h2 (without `multiplex`, h2 is the workload's like any protocol, and parley-mux/1 is
 * never selected: it promises that parley itself reads the streams); else the client's most preferred
 * protocol the workload speaks; else http/1.1 if offered; else the client's first choice (refusing the
 * handshake would break clients that merely offer ALPN).
 */
export function selectAlpn(offered: readonly string[], state: ListenerState): string | undefined {
  if (offered.includes(ALPN)) return ALPN;
  if (state.config.multiplex) {
    if (offered.includes(MUX_ALPN)) return MUX_ALPN;
    if (offered.includes(H2_ALPN)) return H2_ALPN;
  }
  const theirs = offered.filter((p) => p !== MUX_ALPN);
  return theirs.find((p) => state.config.alpn.includes(p)) ?? (theirs.includes("http/1.1") ? "http/1.1" : theirs[0]);
}

function handshakeCause(e: NodeJS.ErrnoException): string {
  if (e.code === "ERR_TLS_HANDSHAKE_TIMEOUT") return "handshake_timeout";
  if (e.code === "ECONNRESET") return "connection_reset";
  if (/unsupported protocol|wrong version number|no protocols available/i.test(e.message)) return "protocol_version";
  if (/http request/i.test(e.message)) return "not_tls";
  return e.code?.startsWith("ERR_SSL_") ? e.code.slice(8).toLowerCase() : "tls_error";
}
