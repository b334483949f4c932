// The negotiation stage of an inbound session (ALPN parley/1, or a multiplexed stream's
// `parley-request` header): the peer's SVID must verify, then its request and tokens are read and checked. A failure is a denial with the frame that tells the
// client why; the session logs it and closes.
import type { DenialCode } from "../../negotiation/frame.js";
import { denial, failureOf, negotiate, type Denial, type Negotiated } from "../../negotiation/negotiate.js";
import { denyOutsidePolicy, type Deny } from "../../policy/decision.js";
import type { SvidResult } from "../../spiffe/x509svid.js";
import type { ClientSide } from "./client.js";
import { evaluate, revocationOf, verifyPeer, type ConnectionFacts, type ListenerState, type PeerVerification } from "./facts.js";

export type NegotiationOutcome =
  /** `verified`: the peer's chain, verified once here, for the session's decision to take on. */
  | { readonly ok: true; readonly negotiated: Negotiated; readonly verified: PeerVerification }
  | { readonly ok: false; readonly peer: SvidResult; readonly decision: Deny; readonly frame: Denial; readonly rule: string };

export async function negotiateStage(client: ClientSide, state: ListenerState, facts: ConnectionFacts, now: number): Promise<NegotiationOutcome> {
  const fail = (peer: SvidResult, code: DenialCode, rule: string, message: string): NegotiationOutcome => ({
    ok: false,
    peer,
    decision: denyOutsidePolicy(state.config.policy, "negotiation", ["negotiation_failed"], message),
    frame: denial(code, message, ["negotiation_failed"], rule),
    rule,
  });
  const settings = state.negotiation;
  // A peer whose SVID fails (or a sidecar failing closed) is refused as on the plain path, with the same
  // reason codes, before its request is read.
  const verified = verifyPeer(state, facts, now);
  const peer = verified.result;
  if (!peer.ok || state.failClosed) {
    const deny = evaluate(state, facts, now, { verified }).decision as Deny;
    const rule = deny.svidRule ?? deny.reasons[0]!;
    return { ok: false, peer, decision: deny, frame: denial("denied", deny.detail ?? rule, deny.reasons, rule), rule };
  }
  if (!settings) return fail(peer, "denied", "negotiation_disabled", "negotiation is not enabled on this sidecar");
  // A revoked identity or certificate is refused before its tokens are read.
  const revoked = revocationOf(state, peer, now);
  if (revoked) return { ok: false, peer, decision: revoked, frame: denial("denied", revoked.detail!, revoked.reasons, "revoked"), rule: "revoked" };
  try {
    return {
      ok: true,
      verified,
      negotiated: await negotiate(await client.readRequest(settings.frameTimeoutMs), settings, {
        id: peer.svid.id.toString(),
        leafDer: peer.svid.leaf.der,
        ownId: state.ownId,
        now,
      }),
    };
  } catch (e) {
    const f = failureOf(e);
    return fail(peer, f.code, f.rule, f.message);
  }
}
