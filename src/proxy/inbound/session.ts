// One inbound connection after its TLS handshake, as a pipeline whose `start()` reads as its path:
// facts → negotiate? → decide → admit → grant? → dial → pump → end. The client socket is not read
// until the session is allowed, admitted and the workload connected: bytes a client sends early wait
// in the socket (bounded by its buffer, then TCP backpressure) and are forwarded after. Every denial,
// whatever stage refused, goes through `deny()`; every end through `end()`. Longer than most modules
// on purpose: it is the one place where the stages meet, each a short method, read top to bottom.
// The client is a ClientSide (client.ts): its own TLS socket, or one CONNECT stream of a multiplexed
// connection; the stages do not tell them apart.
import type { Socket } from "node:net";
import type { Ticket } from "../../limits/admission.js";
import { admitSession, type GateDeps } from "../../limits/gate.js";
import type { SharedThrottles } from "../../limits/throttle.js";
import { denial, grantFrame, grantObligations, type Denial, type Negotiated } from "../../negotiation/negotiate.js";
import { denyAdmission, type Allow, type Deny, type Obligations } from "../../policy/decision.js";
import type { SpiffeId } from "../../spiffe/spiffeid.js";
import type { SvidResult } from "../../spiffe/x509svid.js";
import type { DecisionLog, RevocationCause } from "../../telemetry/log.js";
import { decisionRecord, earStatuses, type NegotiationView } from "../../telemetry/records.js";
import { pump, type PumpCounts } from "../pump.js";
import type { LiveSession, SessionInfo, SessionRegistry } from "../registry.js";
import { SessionIds } from "../sessionid.js";
import { dial, DialError } from "../upstream.js";
import { callerRecord, proxyHeaderOf, type Caller, type CallerRecord, type Grant } from "./caller.js";
import type { ClientIo, ClientSide } from "./client.js";
import { Enforcement } from "./enforce.js";
import { evaluate, peerIdOf, type ConnectionFacts, type ListenerState, type PeerVerification } from "./facts.js";
import { negotiateStage } from "./negotiation.js";

export type { ListenerState } from "./facts.js";

export interface SessionDeps {
  readonly log: DecisionLog;
  readonly registry: SessionRegistry;
  /** Admission: the sidecar's own bounds, shared (mesh-wide) and per-task ones. */
  readonly gate: GateDeps;
  readonly identityThrottles: SharedThrottles;
  readonly now: () => number;
}

const sessionIds = new SessionIds();

/** Where the session is; each stage holds exactly what exists from then on. */
type Stage =
  | { readonly kind: "deciding" }
  | { readonly kind: "admitting" }
  | { readonly kind: "dialing"; readonly ticket: Ticket; readonly enforcement: Enforcement; readonly upstream: Socket }
  | { readonly kind: "pumping"; readonly ticket: Ticket; readonly enforcement: Enforcement; readonly upstream: Socket; readonly counts: PumpCounts }
  | { readonly kind: "ended"; readonly counts?: PumpCounts };

/** A decision as logged: the verdict, the peer it was made on, and what it cost. */
interface Verdict<D> {
  readonly peer: SvidResult;
  readonly decision: D;
  readonly decisionUs: number;
  readonly heldMs?: number;
}

export class InboundSession implements LiveSession {
  readonly id = sessionIds.next();
  readonly direction = "inbound";
  private stage: Stage = { kind: "deciding" };
  private readonly facts: ConnectionFacts;
  private startedAt = 0;
  /** When the session was first decided: its max duration counts from then, through every re-check. */
  private decidedAt = 0;
  /** The peer as far as its certificate could be read (verified for every allowed session). */
  private peer: SpiffeId | undefined;
  private revokeTimer: NodeJS.Timeout | undefined;
  private negotiated: Negotiated | undefined;
  private granted: (Grant & { readonly expiresBecause: NonNullable<Obligations["expiresBecause"]> }) | undefined;
  /** The grant frame, sent once the workload is connected. */
  private pendingGrant: Buffer | undefined;
  private callerFacts: Caller | undefined;

  constructor(
    private readonly side: ClientSide,
    private state: ListenerState,
    private readonly deps: SessionDeps,
  ) {
    this.facts = side.facts;
  }

  /** The client's bytes: its TLS socket, or its stream of a multiplexed connection. */
  private get client(): ClientIo {
    return this.side.io;
  }

  get listener(): string {
    return this.state.config.name;
  }

  /** The peer's ID as records and limit keys spell it; "" when no ID could be read. */
  private get peerText(): string {
    return this.peer?.toString() ?? "";
  }

  /** Runs the session to the point where socket events take over (pumping) or it has been refused. */
  async start(): Promise<void> {
    let verified: PeerVerification | undefined;
    if (this.side.negotiates) {
      const n = await negotiateStage(this.side, this.state, this.facts, this.deps.now());
      if (!n.ok) return void this.deny({ peer: n.peer, decision: n.decision, decisionUs: 0 }, n.frame, n.rule);
      this.negotiated = n.negotiated;
      verified = n.verified;
    }
    const verdict = this.decide(verified);
    if (verdict.decision.decision === "deny") return void this.deny(verdict as Verdict<Deny>);
    const admitted = await this.admit(verdict as Verdict<Allow>);
    if (!admitted) return;
    const obligations = await this.grant(admitted);
    if (!obligations) return;
    this.dial(admitted.ticket, obligations, admitted.peer);
  }

  /** The first decision; a negotiated session's peer was verified by its negotiation (`verified`), not again. */
  private decide(verified: PeerVerification | undefined): Verdict<Allow | Deny> {
    const t0 = process.hrtime.bigint();
    this.decidedAt = this.deps.now();
    const { peer, decision } = evaluate(this.state, this.facts, this.decidedAt, { negotiated: this.negotiated, verified });
    this.peer = peerIdOf(peer);
    return { peer, decision, decisionUs: Number(process.hrtime.bigint() - t0) / 1000 };
  }

  /** Rate, concurrency and task bounds, local and shared: a slot (ticket), or a denial after any allowed wait. */
  private async admit(v: Verdict<Allow>): Promise<(Verdict<Allow> & { ticket: Ticket }) | undefined> {
    this.stage = { kind: "admitting" };
    const admitted = await admitSession(this.deps.gate, {
      identity: this.peerText,
      listener: this.listener,
      txn: this.negotiated?.approval?.txn,
      limits: v.decision.obligations,
      plan: this.state.admission.of(v.decision.rule),
    });
    if (admitted.ok) return { ...v, heldMs: admitted.waitedMs, ticket: admitted.ticket };
    this.deny({ ...v, decision: denyAdmission(v.decision, admitted.reason, admitted.detail), heldMs: admitted.waitedMs });
    return undefined;
  }

  /** Logs the allow (with the grant of a negotiated session, sent once the workload is connected) and registers the session. */
  private async grant(v: Verdict<Allow> & { ticket: Ticket }): Promise<Obligations | undefined> {
    let decision = v.decision;
    let grant: { id: string; roles: string[] } | undefined;
    const n = this.negotiated;
    // A client gone while its session waited (for a slot, say) is sent no grant: none is signed.
    if (n && this.state.negotiation && !this.client.destroyed) {
      const now = this.deps.now();
      const obligations = grantObligations(this.state.negotiation, n, decision.obligations, now);
      const g = await grantFrame(this.state.negotiation, n, {
        peerId: this.peerText,
        ownId: this.state.ownId.toString(),
        heldRoles: decision.roles,
        obligations,
        now,
      });
      grant = g;
      this.granted = { id: g.id, roles: g.roles, expiresAt: g.expiresAt, expiresBecause: obligations.expiresBecause! };
      this.pendingGrant = g.frame;
      // The session may do what it was granted, not all its peer holds: that is what is logged.
      decision = { ...decision, obligations, roles: g.roles };
    }
    this.log({ ...v, decision }, undefined, grant);
    this.startedAt = this.deps.now();
    // A session held for a slot may have lost its client meanwhile.
    if (this.client.destroyed) {
      v.ticket.release();
      this.end("client_closed_before_upstream");
      return undefined;
    }
    // A stream's grant rides in a bounded response header: one that cannot is refused before the dial.
    if (this.pendingGrant && !this.side.carries(this.pendingGrant)) {
      v.ticket.release();
      const why = "the grant is too long for the stream's response header";
      this.end("grant_too_large", why, denial("denied", why, [], "grant_too_large"));
      return undefined;
    }
    this.deps.registry.add(this);
    return decision.obligations;
  }

  private dial(ticket: Ticket, obligations: Obligations, peer: SvidResult): void {
    this.callerFacts = { sessionId: this.id, peer, facts: this.facts, ...(this.granted ? { grant: this.granted } : {}) };
    const header = this.proxyHeader(this.callerFacts);
    if (header instanceof Error) {
      ticket.release();
      return void this.end("proxy_header_failed", header.message);
    }
    const enforcement = new Enforcement(this.client, this.peerText, this.deps.identityThrottles, this.deps.now, (reason) => this.close(reason), obligations);
    const { socket, connected } = dial(this.state.config.upstream, this.state.config.connectTimeoutMs);
    this.stage = { kind: "dialing", ticket, enforcement, upstream: socket };
    // The client may leave while we dial: that ends the session without ever pumping.
    const onClientGone = () => this.close("client_closed_before_upstream");
    this.client.once("close", onClientGone);
    this.client.on("error", () => {}); // reported via close; pump installs its own handler
    connected.then(
      (up) => {
        this.client.off("close", onClientGone);
        if (this.stage.kind !== "dialing") return void up.destroy();
        // The header goes first, in one write, before the pump reads a single client byte; a negotiated
        // client learns of its grant only now that the session exists.
        if (header) up.write(header);
        this.side.accept(this.pendingGrant);
        this.deps.registry.bindUpstreamPort(this, up.localPort ?? 0);
        const p = pump(this.client, up, enforcement.pumpLimits(), (end) => this.end(end.reason, "detail" in end ? end.detail : undefined));
        enforcement.attach(p);
        this.stage = { ...this.stage, kind: "pumping", counts: p.counts };
      },
      (e: unknown) => {
        if (this.stage.kind !== "dialing") return;
        const err = e instanceof DialError ? e : new DialError("upstream_connect_failed", String(e));
        // A negotiated client is told why it got no session: its grant was never sent.
        this.end(err.reason, err.message, this.pendingGrant && denial("upstream_unavailable", err.message, [], err.reason));
      },
    );
  }

  /** The PROXY v2 header when the listener sends one; an Error (session ends, nothing dialled) if it cannot be encoded. */
  private proxyHeader(caller: Caller): Buffer | Error | undefined {
    const config = this.state.config.proxyProtocol;
    if (!config) return undefined;
    try {
      return proxyHeaderOf(this.side.tls, caller, config);
    } catch (e) {
      return e as Error;
    }
  }

  caller(): CallerRecord | undefined {
    if (this.stage.kind !== "pumping" || !this.callerFacts) return undefined;
    const up = this.stage.upstream;
    return callerRecord(this.callerFacts, {
      listener: this.listener,
      upstream: `${up.remoteAddress}:${up.remotePort}`,
      upstreamLocal: `${up.localAddress}:${up.localPort}`,
      expiresAt: this.stage.enforcement.expiresAt,
    });
  }

  /** The one place a session is refused: logged, then closed with a last frame for a negotiating client. */
  private deny(v: Verdict<Deny>, frame?: Denial, negotiationRule?: string): void {
    this.peer = peerIdOf(v.peer);
    this.log(v, negotiationRule);
    this.stage = { kind: "ended" };
    this.side.refuse(
      v.decision,
      frame ?? (this.negotiated ? denial("denied", v.decision.detail ?? "the policy denies this session", v.decision.reasons) : undefined),
    );
  }

  /**
   * Decides again under a new configuration. A session no longer admitted is revoked (after
   * `graceMs`); one still admitted takes the new state and obligations (a tightened bandwidth applies
   * at once), its max duration still counted from its first decision.
   */
  recheck(state: ListenerState, graceMs: number, cause?: RevocationCause): void {
    if (this.stage.kind === "ended" || this.revokeTimer) return;
    const oldVersion = this.state.config.policy.version;
    const { decision } = evaluate(state, this.facts, this.deps.now(), { negotiated: this.negotiated, grantId: this.granted?.id });
    if (decision.decision === "deny") {
      // A revocation ends the session at once: no grace.
      if (decision.cause === "revoked") graceMs = 0;
      this.deps.log.revoked({
        session_id: this.id,
        listener: this.listener,
        peer_id: this.peerText,
        old_version: oldVersion,
        new_version: decision.policyVersion,
        rule: decision.rule,
        reasons: decision.reasons,
        grace_ms: graceMs,
        ...(decision.svidRule ? { svid_rule: decision.svidRule } : {}),
        ...cause,
        ...(decision.revocation ? { cause: "revoked" as const, revocation: decision.revocation } : {}),
      });
      if (graceMs <= 0) return void this.close("revoked");
      this.revokeTimer = setTimeout(() => this.close("revoked"), graceMs);
      return;
    }
    this.state = state;
    const enforcement = "enforcement" in this.stage ? this.stage.enforcement : undefined;
    enforcement?.bind(this.withinGrant(this.sinceDecision(decision.obligations)));
  }

  /** A re-check bounds the max duration from now; the session's own runs from its first decision. */
  private sinceDecision(o: Obligations): Obligations {
    if (o.maxDurationMs === undefined) return o;
    const at = this.decidedAt + o.maxDurationMs;
    if (o.expiresBecause !== "max_duration" && o.expiresAt !== undefined && o.expiresAt <= at) return o;
    return { ...o, expiresAt: at, expiresBecause: "max_duration" };
  }

  /** A re-check's obligations never outlast the grant a negotiated session was given. */
  private withinGrant(o: Obligations): Obligations {
    const g = this.granted;
    if (!g || (o.expiresAt !== undefined && o.expiresAt <= g.expiresAt)) return o;
    return { ...o, expiresAt: g.expiresAt, expiresBecause: g.expiresBecause };
  }

  close(reason: string, detail?: string): void {
    this.end(reason, detail);
  }

  info(now: number): SessionInfo {
    const counts = "counts" in this.stage ? this.stage.counts : undefined;
    const expiresAt = "enforcement" in this.stage ? this.stage.enforcement.expiresAt : undefined;
    return {
      id: this.id,
      peer_id: this.peerText,
      listener: this.listener,
      source: this.facts.source,
      stage: this.stage.kind,
      started_at: new Date(this.startedAt).toISOString(),
      age_ms: now - this.startedAt,
      bytes_to_upstream: counts?.toUpstream ?? 0,
      bytes_to_client: counts?.toClient ?? 0,
      expires_at: expiresAt === undefined ? null : new Date(expiresAt).toISOString(),
      grant_id: this.granted?.id ?? null,
      txn: this.negotiated?.approval?.txn ?? null,
    };
  }

  private log(v: Verdict<Allow | Deny>, negotiationRule?: string, grant?: { id: string; roles: string[] }): void {
    const n = this.negotiated;
    const negotiation: NegotiationView | undefined = n && {
      ...(n.request.purpose !== undefined ? { purpose: n.request.purpose } : {}),
      requestedRoles: n.request.roles,
      ...(n.approval ? { approver: n.approval.approver, approval: n.approval } : {}),
      ...(grant ? { grant: { id: grant.id, roles: grant.roles } } : {}),
      ...earStatuses(n.evidence),
    };
    this.deps.log.decision(
      decisionRecord({
        sessionId: this.id,
        listener: this.listener,
        connection: this.facts,
        peer: v.peer,
        decision: v.decision,
        decisionUs: v.decisionUs,
        heldMs: v.heldMs ?? 0,
        ...(negotiation ? { negotiation } : {}),
        ...(negotiationRule ? { negotiationRule } : {}),
      }),
    );
  }

  private end(reason: string, detail?: string, last?: Denial): void {
    const stage = this.stage;
    if (stage.kind === "ended") return;
    const counts = "counts" in stage ? stage.counts : undefined;
    this.stage = { kind: "ended", ...(counts ? { counts } : {}) };
    clearTimeout(this.revokeTimer);
    this.side.close(reason, last);
    if ("upstream" in stage) {
      stage.upstream.destroy();
      stage.ticket.release();
      stage.enforcement.release();
    }
    this.deps.registry.remove(this.id);
    this.deps.log.sessionEnd({
      session_id: this.id,
      listener: this.listener,
      peer_id: this.peerText,
      source: this.facts.source,
      bytes_to_upstream: counts?.toUpstream ?? 0,
      bytes_to_client: counts?.toClient ?? 0,
      duration_ms: this.deps.now() - this.startedAt,
      end_reason: reason,
      ...(detail ? { detail } : {}),
    });
  }
}
