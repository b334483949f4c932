// What one inbound connection brought, fixed at its handshake, and the one function that verifies and
// decides on it under a listener's state: first decisions and every re-check go through `evaluate`.
import type { TLSSocket } from "node:tls";
import type { ListenerConfig, SidecarLimits } from "../../config/resources.js";
import type { AdmissionPlans } from "../../limits/plan.js";
import type { NegotiationSettings } from "../../negotiation/settings.js";
import type { Negotiated } from "../../negotiation/negotiate.js";
import type { AttestationRecord, AttestationStore } from "../../policy/attestation.js";
import { decide } from "../../policy/decide.js";
import { denyOutsidePolicy, type Decision, type Deny } from "../../policy/decision.js";
import { revocationDenial, type RevocationList } from "../../policy/revocation.js";
import type { SpiffeId } from "../../spiffe/spiffeid.js";
import { resultAt, type SvidResult, type SvidVerifier } from "../../spiffe/x509svid.js";
import { tcpOf } from "../tcp.js";
import { PeerCertificates } from "./peerchain.js";

/** What a listener hands each session: read once per connection, swapped whole on reload. */
export interface ListenerState {
  readonly config: ListenerConfig;
  readonly verifier: SvidVerifier;
  readonly attestations: AttestationStore;
  /** The revocations in force (none past their `until`). */
  readonly revocations: RevocationList;
  readonly maxChainLength: number;
  readonly limits: SidecarLimits;
  /** The admission bounds of each rule of the listener's policy under `limits` and the listener's own. */
  readonly admission: AdmissionPlans;
  /** Negotiation settings when configured, and the sidecar's own SPIFFE ID (the tokens' audience). */
  readonly negotiation?: NegotiationSettings;
  readonly ownId: SpiffeId;
  /** Set while the sidecar fails closed: every session is denied with this reason. */
  readonly failClosed?: "config_stale" | "own_svid_expired" | "own_svid_withdrawn";
}

export interface ConnectionFacts {
  readonly certs: PeerCertificates;
  readonly sourceAddress: string;
  readonly source: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly tlsVersion: string | null;
  /** A multiplexed session's target, as its HTTP/2 CONNECT stream named it (`:authority`). */
  readonly target?: string;
}

export function factsOf(client: TLSSocket): ConnectionFacts {
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

/** The peer's SPIFFE ID as far as it could be read, verified or not (for logs). */
export function peerIdOf(peer: SvidResult): SpiffeId | undefined {
  return peer.ok ? peer.svid.id : peer.id;
}

/**
 * The denial of a session a revocation in force names, if one does: by what the peer's certificate
 * proves, and what a negotiation brought (approval token, grant, evidence) when known.
 */
export function revocationOf(
  state: ListenerState,
  peer: SvidResult,
  now: number,
  known: { readonly negotiated?: Negotiated; readonly grantId?: string; readonly attestations?: readonly AttestationRecord[] } = {},
): Deny | undefined {
  const approval = known.negotiated?.approval;
  const subject = {
    ...(peer.ok ? { peer: peer.svid.id, certFingerprint: peer.svid.leaf.fingerprint } : {}),
    ...(approval?.txn !== undefined ? { txn: approval.txn } : {}),
    ...(approval?.jti !== undefined ? { jti: approval.jti } : {}),
    ...(known.grantId !== undefined ? { grant: known.grantId } : {}),
    attestors: (known.attestations ?? []).map((a) => a.attestor),
  };
  return revocationDenial(state.revocations, state.config.policy, subject, now);
}

/** A verification of a connection's chain, and the verifier (of one listener state) that made it. */
export interface PeerVerification {
  readonly verifier: SvidVerifier;
  readonly result: SvidResult;
}

/** Verifies the peer's chain under `state` at `now`. */
export function verifyPeer(state: ListenerState, facts: ConnectionFacts, now: number): PeerVerification {
  return { verifier: state.verifier, result: facts.certs.verify(state.verifier, now) };
}

/** What a session knows when it decides: a negotiation's proof, its grant (re-checks), its peer's verification. */
export interface Known {
  readonly negotiated?: Negotiated | undefined;
  readonly grantId?: string | undefined;
  /**
   * The chain verified earlier in the session (its negotiation): taken as of `now` (its validity window
   * checked again) when made by this state's verifier; any other (a re-check under new bundles) is
   * ignored and the chain verified anew. Fail closed either way.
   */
  readonly verified?: PeerVerification | undefined;
}

/**
 * Verifies (unless `known.verified` holds this state's verification) and decides on `facts` under
 * `state`, with what a negotiation proved, if any, and the id of the grant the session was given
 * (re-checks). A revocation is checked before the policy, like failing closed: no rule can admit what
 * it names.
 */
export function evaluate(state: ListenerState, facts: ConnectionFacts, now: number, known: Known = {}): { peer: SvidResult; decision: Decision } {
  const { negotiated, grantId, verified } = known;
  const peer = verified?.verifier === state.verifier ? resultAt(verified.result, now) : facts.certs.verify(state.verifier, now);
  const { policy } = state.config;
  if (state.failClosed) return { peer, decision: denyOutsidePolicy(policy, "fail_closed", [state.failClosed]) };
  const stored = peer.ok ? state.attestations.for(peer.svid.id.toString()) : [];
  const attestations = negotiated?.evidence.length ? [...stored, ...negotiated.evidence] : stored;
  const revoked = revocationOf(state, peer, now, { ...(negotiated ? { negotiated } : {}), ...(grantId !== undefined ? { grantId } : {}), attestations });
  if (revoked) return { peer, decision: revoked };
  const grantedRoles = negotiated?.approval?.roles ?? [];
  const decision = decide(policy, {
    listener: state.config.name,
    sourceAddress: facts.sourceAddress,
    sni: facts.sni,
    alpn: facts.alpn,
    now,
    peer,
    attestations,
    grantedRoles,
    ...(negotiated?.approval ? { approval: negotiated.approval } : {}),
  });
  return { peer, decision };
}
