// One inbound connection after its TLS handshake, moving through its stages:
// verify the peer's SVID → decide → (allowed only) dial the workload → pump → end.
// The client socket is not read until the session is allowed and the workload connected: bytes a client
// sends early wait in the socket (bounded by its buffer, then TCP backpressure) and are forwarded after.
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { ListenerConfig } from "../config/resources.js";
import type { SvidResult, SvidVerifier } from "../identity/x509svid.js";
import type { AttestationStore } from "../policy/attestation.js";
import { decide, type Decision, type Obligations } from "../policy/decide.js";
import type { DecisionLog } from "../telemetry/log.js";
import { pump } from "./pump.js";
import { peerChain } from "./peerchain.js";
import type { LiveSession, SessionRegistry } from "./registry.js";
import { dial, DialError } from "./upstream.js";

/** What a listener hands each session: read once per connection, swapped whole on reload. */
export interface ListenerState {
  readonly config: ListenerConfig;
  readonly verifier: SvidVerifier;
  readonly attestations: AttestationStore;
  readonly maxChainLength: number;
  /** Set while the sidecar fails closed: every session is denied with this reason. */
  readonly failClosed?: "config_stale";
}

const MAX_TIMER_MS = 2 ** 31 - 1;
const EXPIRY_REASON = { max_duration: "max_duration", certificate: "cert_expired", attestation: "attestation_expired" } as const;

export interface SessionDeps {
  readonly log: DecisionLog;
  readonly registry: SessionRegistry;
  readonly now: () => number;
}

/** What the connection brought, fixed at the handshake: every (re-)decision is made on these. */
interface ConnectionFacts {
  readonly chain: readonly Buffer[];
  readonly sourceAddress: string;
  readonly source: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly tlsVersion: string | null;
}

function factsOf(client: TLSSocket, maxChainLength: number): ConnectionFacts {
  return {
    chain: peerChain(client, maxChainLength),
    sourceAddress: client.remoteAddress ?? "",
    source: `${client.remoteAddress}:${client.remotePort}`,
    sni: (client as TLSSocket & { servername?: string | false }).servername || null,
    alpn: client.alpnProtocol || null,
    tlsVersion: client.getProtocol(),
  };
}

/** Verifies and decides on `facts` under `state`: the one path for first decisions and re-checks. */
function evaluate(state: ListenerState, facts: ConnectionFacts, now: number): { peer: SvidResult; decision: Decision } {
  const peer = state.verifier.verify(facts.chain, now);
  const attestations = peer.ok ? state.attestations.for(peer.svid.id.toString()) : [];
  const { config } = state;
  if (state.failClosed) {
    const { policy } = config;
    return { peer, decision: { decision: "deny", rule: null, reasons: [state.failClosed], policy: policy.name, policyVersion: policy.version, mode: policy.mode, roles: [] } };
  }
  const decision = decide(config.policy, { listener: config.name, sourceAddress: facts.sourceAddress, sni: facts.sni, alpn: facts.alpn, now, peer, attestations });
  return { peer, decision };
}

type Stage = "deciding" | "dialing" | "pumping" | "ended";

export class InboundSession implements LiveSession {
  readonly id = randomBytes(8).toString("hex");
  private stage: Stage = "deciding";
  private upstream: Socket | undefined;
  private readonly facts: ConnectionFacts;
  private startedAt = 0;
  private peerId = "";
  private expiryTimer: NodeJS.Timeout | undefined;
  private revokeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: TLSSocket,
    private state: ListenerState,
    private readonly deps: SessionDeps,
  ) {
    this.facts = factsOf(client, state.maxChainLength);
  }

  get listener(): string {
    return this.state.config.name;
  }

  /** Runs the session; returns once it is decided (the rest proceeds on socket events). */
  start(): Decision {
    const t0 = process.hrtime.bigint();
    const now = this.deps.now();
    const { peer, decision } = evaluate(this.state, this.facts, now);
    this.logDecision(peer, decision, Number(process.hrtime.bigint() - t0) / 1000);
    if (decision.decision === "deny") {
      this.stage = "ended";
      this.client.destroy();
      return decision;
    }
    this.startedAt = now;
    this.deps.registry.add(this);
    this.bind(decision.obligations ?? {});
    this.connect();
    return decision;
  }

  /**
   * Decides again under a new configuration. A session no longer admitted is revoked (after
   * `graceMs`); one still admitted takes the new state and obligations, its max duration still
   * counted from its start.
   */
  recheck(state: ListenerState, graceMs: number): void {
    if (this.stage === "ended" || this.revokeTimer) return;
    const oldVersion = this.state.config.policy.version;
    const { decision } = evaluate(state, this.facts, this.deps.now());
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
    const clamped = fromStart !== undefined && o.expiresBecause === "max_duration" ? { ...o, expiresAt: fromStart } : o;
    this.bind(clamped);
  }

  close(reason: string, detail?: string): void {
    if (this.stage === "ended") return;
    this.end(reason, detail);
  }

  private logDecision(peer: SvidResult, decision: Decision, decisionUs: number): void {
    const id = peer.ok ? peer.svid.id : peer.id;
    const leaf = peer.ok ? peer.svid.leaf : peer.leaf;
    this.peerId = id?.toString() ?? "";
    const f = this.facts;
    this.deps.log.decision({
      session_id: this.id,
      listener: this.listener,
      decision: decision.decision,
      rule: decision.rule,
      reasons: decision.reasons,
      policy: decision.policy,
      policy_version: decision.policyVersion,
      peer_id: id?.toString() ?? null,
      trust_domain: id?.trustDomain.name ?? null,
      cert_serial: leaf?.serial ?? null,
      cert_fingerprint: leaf?.fingerprint ?? null,
      source: f.source,
      sni: f.sni,
      alpn: f.alpn,
      tls_version: f.tlsVersion,
      mode: decision.mode,
      roles: decision.roles,
      ...(decision.wouldDeny ? { would_deny: true, would_deny_rule: decision.wouldDeny.rule, would_deny_reasons: decision.wouldDeny.reasons } : {}),
      ...(decision.obligations ? { obligations: obligationsRecord(decision.obligations) } : {}),
      ...(decision.svidRule ? { svid_rule: decision.svidRule, detail: decision.detail! } : {}),
      decision_us: Math.round(decisionUs * 10) / 10,
    });
  }

  /** Timers cannot wait longer than 2^31-1 ms (about 24 days): longer waits are taken in steps. */
  private armExpiry(at: number, reason: string): void {
    const delay = at - this.deps.now();
    this.expiryTimer = delay > MAX_TIMER_MS
      ? setTimeout(() => this.armExpiry(at, reason), MAX_TIMER_MS)
      : setTimeout(() => this.close(reason), Math.max(0, delay));
    this.expiryTimer.unref();
  }

  /** Arms the timers an allowed session lives under: its expiry and its idle timeout. */
  private bind(o: Obligations): void {
    clearTimeout(this.expiryTimer);
    if (o.expiresAt !== undefined) this.armExpiry(o.expiresAt, EXPIRY_REASON[o.expiresBecause ?? "max_duration"]);
    // The client socket sees every byte of both directions, so its inactivity is the session's.
    if (o.idleTimeoutMs !== undefined) this.client.setTimeout(o.idleTimeoutMs, () => this.close("idle_timeout"));
    else this.client.setTimeout(0);
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
        pump(this.client, up, (end) => this.end(end.reason, "detail" in end ? end.detail : undefined));
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
    clearTimeout(this.expiryTimer);
    clearTimeout(this.revokeTimer);
    this.client.destroy();
    this.upstream?.destroy();
    this.deps.registry.remove(this.id);
    const up = this.upstream;
    this.deps.log.sessionEnd({
      session_id: this.id,
      listener: this.listener,
      peer_id: this.peerId,
      source: this.facts.source,
      bytes_to_upstream: up?.bytesWritten ?? 0,
      bytes_to_client: up?.bytesRead ?? 0,
      duration_ms: this.deps.now() - this.startedAt,
      end_reason: reason,
      ...(detail ? { detail } : {}),
    });
  }
}

function obligationsRecord(o: Obligations): Record<string, number | string> {
  const r: Record<string, number | string> = {};
  if (o.expiresAt !== undefined) {
    r.expires_at = new Date(o.expiresAt).toISOString();
    r.expires_because = o.expiresBecause!;
  }
  if (o.maxDurationMs !== undefined) r.max_duration_ms = o.maxDurationMs;
  if (o.idleTimeoutMs !== undefined) r.idle_timeout_ms = o.idleTimeoutMs;
  if (o.byteBudget !== undefined) r.byte_budget = o.byteBudget;
  if (o.bandwidthBps !== undefined) r.bandwidth_bps = o.bandwidthBps;
  return r;
}
