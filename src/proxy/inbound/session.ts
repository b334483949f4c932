// One inbound connection after its TLS handshake, moving through its stages:
// verify the peer's SVID → decide → admit (rate and concurrency bounds) → dial the workload → pump → end.
// The client socket is not read until the session is allowed, admitted and the workload connected:
// bytes a client sends early wait in the socket (bounded by its buffer, then TCP backpressure) and are
// forwarded after.
import { at, type LongTimer } from "../../time/clock.js";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { ListenerConfig, SidecarLimits } from "../../config/resources.js";
import type { SvidResult, SvidVerifier } from "../../spiffe/x509svid.js";
import type { Admission, Ticket } from "../../limits/admission.js";
import { type SharedThrottles, Throttle } from "../../limits/throttle.js";
import type { AttestationStore } from "../../policy/attestation.js";
import { decide, type Decision, type Obligations } from "../../policy/decide.js";
import type { NegotiationSettings } from "../../negotiation/settings.js";
import { ALPN, type DenialCode } from "../../negotiation/frame.js";
import { denial, failureOf, grantFrame, negotiate, type Negotiated } from "../../negotiation/negotiate.js";
import type { DecisionLog } from "../../telemetry/log.js";
import { decisionRecord, obligationsRecord } from "../../telemetry/records.js";
import { pump, type PumpCounts } from "../pump.js";
import { PeerCertificates } from "./peerchain.js";
import { SessionIds } from "../sessionid.js";
import { tcpOf } from "../tcp.js";
import type { LiveSession, SessionInfo, SessionRegistry } from "../registry.js";
import { dial, DialError } from "../upstream.js";

/** What a listener hands each session: read once per connection, swapped whole on reload. */
export interface ListenerState {
  readonly config: ListenerConfig;
  readonly verifier: SvidVerifier;
  readonly attestations: AttestationStore;
  readonly maxChainLength: number;
  readonly limits: SidecarLimits;
  /** Negotiation settings when configured, and the sidecar's own SPIFFE ID (the tokens' audience). */
  readonly negotiation?: NegotiationSettings;
  readonly ownId: string;
  /** Set while the sidecar fails closed: every session is denied with this reason. */
  readonly failClosed?: "config_stale" | "own_svid_expired";
}

export interface SessionDeps {
  readonly log: DecisionLog;
  readonly registry: SessionRegistry;
  readonly admission: Admission;
  readonly identityThrottles: SharedThrottles;
  readonly now: () => number;
}

const sessionIds = new SessionIds();

const EXPIRY_REASON = { max_duration: "max_duration", certificate: "cert_expired", attestation: "attestation_expired", grant: "grant_expired" } as const;

type Stage = "deciding" | "admitting" | "dialing" | "pumping" | "ended";

/** What the connection brought, fixed at the handshake: every (re-)decision is made on these. */
interface ConnectionFacts {
  readonly certs: PeerCertificates;
  readonly sourceAddress: string;
  readonly source: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly tlsVersion: string | null;
}

function factsOf(client: TLSSocket): ConnectionFacts {
  const tcp = tcpOf(client);
  return {
    certs: new PeerCertificates(client),
    sourceAddress: tcp.remoteAddress ?? "",
    source: `${tcp.remoteAddress}:${tcp.remotePort}`,
    sni: (client as TLSSocket & { servername?: string | false }).servername || null,
    alpn: client.alpnProtocol || null,
    tlsVersion: client.getProtocol(),
  };
}

/** Verifies and decides on `facts` under `state`: the one path for first decisions and re-checks. */
function evaluate(state: ListenerState, facts: ConnectionFacts, now: number, negotiated?: Negotiated): { peer: SvidResult; decision: Decision } {
  const peer = facts.certs.verify(state.verifier, now);
  const stored = peer.ok ? state.attestations.for(peer.svid.id.toString()) : [];
  const attestations = negotiated?.evidence.length ? [...stored, ...negotiated.evidence] : stored;
  const { config } = state;
  if (state.failClosed) {
    const { policy } = config;
    return {
      peer,
      decision: { decision: "deny", rule: null, reasons: [state.failClosed], policy: policy.name, policyVersion: policy.version, mode: policy.mode, roles: [] },
    };
  }
  const grantedRoles = negotiated?.approval?.roles ?? [];
  const decision = decide(config.policy, {
    listener: config.name,
    sourceAddress: facts.sourceAddress,
    sni: facts.sni,
    alpn: facts.alpn,
    now,
    peer,
    attestations,
    grantedRoles,
  });
  return { peer, decision };
}

/** The throttles a session's pump charges: its own, and its identity's shared ones. */
interface SessionThrottles {
  readonly up: Throttle;
  readonly down: Throttle;
  identity?: { up: Throttle; down: Throttle; release(): void };
}

export class InboundSession implements LiveSession {
  readonly id = sessionIds.next();
  private stage: Stage = "deciding";
  private upstream: Socket | undefined;
  private readonly facts: ConnectionFacts;
  private startedAt = 0;
  private peerId = "";
  private expiryTimer: LongTimer | undefined;
  private revokeTimer: NodeJS.Timeout | undefined;
  private ticket: Ticket | undefined;
  private throttles: SessionThrottles | undefined;
  private counts: PumpCounts | undefined;
  private budget: number | undefined;
  private expiresAt: number | undefined;
  private negotiated: Negotiated | undefined;

  constructor(
    private readonly client: TLSSocket,
    private state: ListenerState,
    private readonly deps: SessionDeps,
  ) {
    this.facts = factsOf(client);
  }

  get listener(): string {
    return this.state.config.name;
  }

  /** Runs the session: decides, admits, then dials; the rest proceeds on socket events. */
  async start(): Promise<void> {
    if (this.facts.alpn === ALPN) {
      const negotiated = await this.negotiate();
      if (!negotiated) return;
      this.negotiated = negotiated;
    }
    const t0 = process.hrtime.bigint();
    const now = this.deps.now();
    const { peer, decision } = evaluate(this.state, this.facts, now, this.negotiated);
    const decisionUs = Number(process.hrtime.bigint() - t0) / 1000;
    const id = peer.ok ? peer.svid.id : peer.id;
    this.peerId = id?.toString() ?? "";
    if (decision.decision === "deny") {
      this.logDecision(peer, decision, decisionUs);
      return this.refuse(this.negotiated ? denial("denied", "the policy denies this session", decision.reasons) : undefined);
    }
    const o = decision.obligations ?? {};
    this.stage = "admitting";
    const admitted = await this.deps.admission.admit(this.peerId, this.listener, {
      ...(o.rate ? { rate: o.rate } : {}),
      ...(o.maxSessions !== undefined ? { maxPerIdentity: o.maxSessions } : {}),
      ...(this.state.config.maxSessions !== undefined ? { maxPerListener: this.state.config.maxSessions } : {}),
      maxGlobal: this.state.limits.maxSessions,
      ...(o.maxWaitMs !== undefined ? { maxWaitMs: o.maxWaitMs } : {}),
    });
    if (!admitted.ok) {
      this.logDecision(
        peer,
        { ...decision, decision: "deny", reasons: [admitted.reason], detail: admitted.detail, obligations: undefined },
        decisionUs,
        admitted.waitedMs,
      );
      return this.refuse(this.negotiated ? denial("denied", admitted.detail, [admitted.reason]) : undefined);
    }
    this.ticket = admitted.ticket;
    let obligations = o;
    let grant: Awaited<ReturnType<typeof grantFrame>> | undefined;
    if (this.negotiated) {
      grant = await grantFrame(this.state.negotiation!, this.negotiated, {
        peerId: this.peerId,
        ownId: this.state.ownId,
        heldRoles: decision.roles,
        obligations: o,
        obligationsRecord: obligationsRecord(o),
        now: this.deps.now(),
      });
      obligations = { ...o, expiresAt: grant.expiresAt, expiresBecause: grant.expiresAt === o.expiresAt ? o.expiresBecause! : "grant" };
    }
    this.logDecision(peer, { ...decision, obligations }, decisionUs, admitted.waitedMs, grant);
    this.startedAt = this.deps.now();
    // A session held for a slot may have lost its client meanwhile.
    if (this.client.destroyed) return this.end("client_closed_before_upstream");
    if (grant) this.client.write(grant.frame);
    this.deps.registry.add(this);
    this.bind(obligations);
    this.connect();
  }

  /** Reads and checks the parley/1 request; on failure answers with a denial and closes. */
  private async negotiate(): Promise<Negotiated | undefined> {
    const now = this.deps.now();
    const settings = this.state.negotiation;
    const peer = this.facts.certs.verify(this.state.verifier, now);
    const fail = (code: DenialCode, rule: string, message: string) => {
      this.peerId = (peer.ok ? peer.svid.id : peer.id)?.toString() ?? "";
      const { policy } = this.state.config;
      const d: Decision = {
        decision: "deny",
        rule: null,
        reasons: ["negotiation_failed"],
        policy: policy.name,
        policyVersion: policy.version,
        mode: policy.mode,
        roles: [],
        detail: message,
      };
      this.logDecision(peer, d, 0, 0, undefined, rule);
      this.refuse(denial(code, message, ["negotiation_failed"]));
      return undefined;
    };
    if (!settings) return fail("denied", "negotiation_disabled", "negotiation is not enabled on this sidecar");
    if (!peer.ok) return fail("denied", peer.rule, `the peer certificate is not a valid X509-SVID: ${peer.message}`);
    try {
      return await negotiate(this.client, settings, { id: peer.svid.id.toString(), leafDer: peer.svid.leaf.der, ownId: this.state.ownId, now });
    } catch (e) {
      const f = failureOf(e);
      return fail(f.code, f.rule, f.message);
    }
  }

  /** Ends a session that never got to the workload, with a last frame for a negotiating client. */
  private refuse(last?: Buffer): void {
    this.stage = "ended";
    if (last && !this.client.destroyed) this.client.end(last, () => this.client.destroy());
    else this.client.destroy();
    setTimeout(() => this.client.destroy(), 1000).unref();
  }

  /**
   * Decides again under a new configuration. A session no longer admitted is revoked (after
   * `graceMs`); one still admitted takes the new state and obligations (a tightened bandwidth applies
   * at once), its max duration still counted from its start.
   */
  recheck(state: ListenerState, graceMs: number): void {
    if (this.stage === "ended" || this.revokeTimer) return;
    const oldVersion = this.state.config.policy.version;
    const { decision } = evaluate(state, this.facts, this.deps.now(), this.negotiated);
    if (decision.decision === "deny") {
      this.deps.log.revoked({
        session_id: this.id,
        listener: this.listener,
        peer_id: this.peerId,
        old_version: oldVersion,
        new_version: decision.policyVersion,
        rule: decision.rule,
        reasons: decision.reasons,
        grace_ms: graceMs,
        ...(decision.svidRule ? { svid_rule: decision.svidRule } : {}),
      });
      if (graceMs <= 0) return this.close("revoked");
      this.revokeTimer = setTimeout(() => this.close("revoked"), graceMs);
      return;
    }
    this.state = state;
    const o = decision.obligations ?? {};
    const fromStart = o.maxDurationMs !== undefined ? this.startedAt + o.maxDurationMs : undefined;
    this.bind(fromStart !== undefined && o.expiresBecause === "max_duration" ? { ...o, expiresAt: fromStart } : o);
  }

  close(reason: string, detail?: string): void {
    if (this.stage === "ended") return;
    this.end(reason, detail);
  }

  info(now: number): SessionInfo {
    return {
      id: this.id,
      peer_id: this.peerId,
      listener: this.listener,
      source: this.facts.source,
      stage: this.stage,
      started_at: new Date(this.startedAt).toISOString(),
      age_ms: now - this.startedAt,
      bytes_to_upstream: this.counts?.toUpstream ?? 0,
      bytes_to_client: this.counts?.toClient ?? 0,
      expires_at: this.expiresAt === undefined ? null : new Date(this.expiresAt).toISOString(),
    };
  }

  private logDecision(
    peer: SvidResult,
    decision: Decision,
    decisionUs: number,
    heldMs = 0,
    grant?: { id: string; roles: string[] },
    negotiationRule?: string,
  ): void {
    const n = this.negotiated;
    this.deps.log.decision(
      decisionRecord({
        sessionId: this.id,
        listener: this.listener,
        connection: this.facts,
        peer,
        decision,
        decisionUs,
        heldMs,
        ...(n
          ? {
              negotiation: {
                ...(n.request.purpose !== undefined ? { purpose: n.request.purpose } : {}),
                requestedRoles: n.request.roles,
                ...(n.approval ? { approver: n.approval.approver } : {}),
                ...(grant ? { grant } : {}),
              },
            }
          : {}),
        ...(negotiationRule ? { negotiationRule } : {}),
      }),
    );
  }

  /** Puts the obligations in force: expiry, idle timeout, bandwidth (also on a live session). */
  private bind(o: Obligations): void {
    this.expiryTimer?.clear();
    this.expiresAt = o.expiresAt;
    if (o.expiresAt !== undefined) {
      const reason = EXPIRY_REASON[o.expiresBecause ?? "max_duration"];
      this.expiryTimer = at(o.expiresAt, () => this.close(reason), this.deps.now);
    }
    // The client socket sees every byte of both directions, so its inactivity is the session's.
    if (o.idleTimeoutMs !== undefined) this.client.setTimeout(o.idleTimeoutMs, () => this.close("idle_timeout"));
    else this.client.setTimeout(0);
    const now = this.deps.now();
    if (!this.throttles) this.throttles = { up: new Throttle(o.bandwidthBps, now), down: new Throttle(o.bandwidthBps, now) };
    else {
      this.throttles.up.setRate(o.bandwidthBps, now);
      this.throttles.down.setRate(o.bandwidthBps, now);
    }
    if (o.identityBandwidthBps !== undefined) {
      this.throttles.identity ??= this.deps.identityThrottles.acquire(this.peerId, o.identityBandwidthBps, now);
      this.throttles.identity.up.setRate(o.identityBandwidthBps, now);
      this.throttles.identity.down.setRate(o.identityBandwidthBps, now);
    }
    this.budget = o.byteBudget;
  }

  private connect(): void {
    this.stage = "dialing";
    const { socket, connected } = dial(this.state.config.upstream, this.state.config.connectTimeoutMs);
    this.upstream = socket;
    // The client may leave while we dial: that ends the session without ever pumping.
    const onClientGone = () => this.close("client_closed_before_upstream");
    this.client.once("close", onClientGone);
    this.client.on("error", () => {}); // reported via close; pump installs its own handler
    connected.then(
      (up) => {
        this.client.off("close", onClientGone);
        if (this.stage !== "dialing") return void up.destroy();
        this.stage = "pumping";
        const t = this.throttles!;
        const identity = t.identity ? [t.identity] : [];
        this.counts = pump(
          this.client,
          up,
          {
            ...(this.budget !== undefined ? { byteBudget: this.budget } : {}),
            up: [t.up, ...identity.map((i) => i.up)],
            down: [t.down, ...identity.map((i) => i.down)],
            now: this.deps.now,
          },
          (end) => this.end(end.reason, "detail" in end ? end.detail : undefined),
        );
      },
      (e: unknown) => {
        if (this.stage !== "dialing") return;
        const err = e instanceof DialError ? e : new DialError("upstream_connect_failed", String(e));
        this.end(err.reason, err.message);
      },
    );
  }

  private end(reason: string, detail?: string): void {
    if (this.stage === "ended") return;
    this.stage = "ended";
    this.expiryTimer?.clear();
    clearTimeout(this.revokeTimer);
    this.client.destroy();
    this.upstream?.destroy();
    this.ticket?.release();
    this.throttles?.identity?.release();
    this.deps.registry.remove(this.id);
    this.deps.log.sessionEnd({
      session_id: this.id,
      listener: this.listener,
      peer_id: this.peerId,
      source: this.facts.source,
      bytes_to_upstream: this.counts?.toUpstream ?? 0,
      bytes_to_client: this.counts?.toClient ?? 0,
      duration_ms: this.deps.now() - this.startedAt,
      end_reason: reason,
      ...(detail ? { detail } : {}),
    });
  }
}
