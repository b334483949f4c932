// Outbound listeners, for legacy clients: the local application connects in plaintext on loopback;
// parley originates mTLS to the remote sidecar with its own SVID, checks that the remote is exactly the
// SPIFFE ID expected for this route (by the remote trust domain's bundle, like any peer), negotiates on
// the application's behalf if configured, and only then pipes.
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { OutboundConfig } from "../../config/resources.js";
import type { RevocationList } from "../../policy/revocation.js";
import type { OwnSvid } from "../../workloadapi/client.js";
import type { SvidVerifier } from "../../spiffe/x509svid.js";
import { DeniedError, requestGrant } from "../../negotiation/client.js";
import { ALPN, NegotiationError } from "../../negotiation/frame.js";
import type { DecisionLog } from "../../telemetry/log.js";
import { peerChain } from "../inbound/peerchain.js";
import { StreamRefused, type ConnectionPool } from "../multiplex/pool.js";
import type { SessionRegistry } from "../registry.js";
import { SessionIds } from "../sessionid.js";
import { checkRemote } from "./remote.js";
import { routeRequestFrame, routeRequestValue } from "./request.js";
import { OutboundSession } from "./session.js";

const sessionIds = new SessionIds();

export interface OutboundState {
  readonly config: OutboundConfig;
  readonly verifier: SvidVerifier;
  readonly identity: OwnSvid;
  readonly maxChainLength: number;
  /** The revocations in force: a remote they name is refused, and its live sessions end. */
  readonly revocations: RevocationList;
}

export class OutboundListener {
  private readonly server: Server;

  constructor(
    private current: OutboundState,
    private readonly log: DecisionLog,
    private readonly registry: SessionRegistry,
    private readonly now: () => number,
    /** The sidecar's multiplexed connections, for routes with `transport: multiplexed`. */
    private readonly pool: ConnectionPool,
  ) {
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (app) => void this.serve(app));
    this.server.on("error", (e) => log.error("outbound listener error", { listener: this.name, detail: e.message }));
  }

  get name(): string {
    return this.current.config.name;
  }

  get state(): OutboundState {
    return this.current;
  }

  update(state: OutboundState): void {
    this.current = state;
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.state.config.listen;
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  stopAccepting(): void {
    if (this.server.listening) this.server.close();
  }

  private async serve(app: Socket): Promise<void> {
    const { config, verifier, identity } = this.state;
    const id = sessionIds.next();
    const started = this.now();
    const base = { session_id: id, listener: config.name, remote: `${config.remote.host}:${config.remote.port}`, expect_id: config.expectId.toString() };
    app.on("error", () => {});
    if (config.multiplexed) return this.serveMultiplexed(app, base, started);
    const remote = tlsConnect({
      host: config.remote.host,
      port: config.remote.port,
      cert: identity.certChainPem,
      key: identity.keyPem,
      servername: config.serverName ?? "localhost",
      // The remote is judged by the SPIFFE rules below, against its own trust domain's bundle.
      rejectUnauthorized: false,
      ...(config.negotiate ? { ALPNProtocols: [ALPN] } : {}),
    });
    const refuse = (reason: string, detail: string) => {
      this.log.outbound({ ...base, decision: "deny", reason, detail });
      remote.destroy();
      app.destroy();
    };
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        refuse("remote_connect_timeout", `no TLS session with the remote within ${config.connectTimeoutMs} ms`);
        resolve(false);
      }, config.connectTimeoutMs);
      remote.once("secureConnect", () => {
        clearTimeout(timer);
        resolve(true);
      });
      remote.once("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        refuse("remote_connect_failed", e.code ?? e.message);
        resolve(false);
      });
    });
    if (!connected) return;
    remote.on("error", () => {});
    // Never send the request (its tokens) to a listener that did not take parley/1: its workload would read it.
    const protocol = config.negotiate && { wanted: ALPN, selected: remote.alpnProtocol, hint: "is negotiation on at its listener?" };
    const checked = checkRemote(
      peerChain(remote),
      { verifier, expectId: config.expectId, revocations: this.state.revocations },
      this.now(),
      protocol || undefined,
    );
    if (!checked.ok) return void refuse(checked.reason, checked.detail);
    const remoteOf = checked.subject;
    let grantId: string | undefined;
    if (config.negotiate) {
      try {
        const grant = await requestGrant(remote, routeRequestFrame(config.negotiate));
        grantId = grant.grant_id;
      } catch (e) {
        return void refuse(e instanceof DeniedError ? "remote_denied" : "negotiation_failed", (e as Error).message);
      }
    }
    this.log.outbound({ ...base, decision: "allow", remote_id: remoteOf.peer.toString(), ...(grantId ? { grant_id: grantId } : {}) });
    const subject = { ...remoteOf, ...(grantId ? { grant: grantId } : {}) };
    const facts = {
      id,
      listener: config.name,
      remoteId: remoteOf.peer.toString(),
      source: `${app.remoteAddress}:${app.remotePort}`,
      startedAt: started,
      subject,
    };
    new OutboundSession(facts, app, remote, { log: this.log, registry: this.registry, now: this.now });
  }

  /**
   * One CONNECT stream on a pooled connection: the remote decides it, as a session of its own (and
   * negotiates it, by the stream's `parley-request`, when the route has `negotiate`).
   */
  private async serveMultiplexed(app: Socket, base: { session_id: string; listener: string }, started: number): Promise<void> {
    const { config, verifier, identity } = this.state;
    const m = config.multiplexed!;
    const route = {
      remote: config.remote,
      expectId: config.expectId,
      serverName: config.serverName ?? "localhost",
      identity,
      verifier,
      connectTimeoutMs: config.connectTimeoutMs,
      bounds: m,
      target: m.target,
      revocations: this.state.revocations,
    };
    try {
      const request = config.negotiate && routeRequestValue(config.negotiate);
      const { stream, remoteId, subject, grant } = await this.pool.stream(request ? { ...route, request } : route, this.now);
      const grantId = grant?.grant_id;
      this.log.outbound({
        ...base,
        decision: "allow",
        remote_id: remoteId,
        transport: "multiplexed",
        target: m.target,
        ...(grantId ? { grant_id: grantId } : {}),
      });
      if (app.destroyed) return void stream.close();
      const facts = {
        id: base.session_id,
        listener: config.name,
        remoteId,
        source: `${app.remoteAddress}:${app.remotePort}`,
        startedAt: started,
        subject: { ...subject, ...(grantId ? { grant: grantId } : {}) },
      };
      new OutboundSession(facts, app, stream, { log: this.log, registry: this.registry, now: this.now });
    } catch (e) {
      const reason = e instanceof StreamRefused ? e.reason : e instanceof NegotiationError ? "negotiation_failed" : "remote_connect_failed";
      this.log.outbound({ ...base, decision: "deny", reason, detail: (e as Error).message, transport: "multiplexed" });
      app.destroy();
    }
  }
}
