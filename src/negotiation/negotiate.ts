// The server side of negotiation for one session: check the request payload, verify its tokens against
// this peer and this certificate, and (once the policy has decided) answer with a grant or a denial.
import { createHash } from "node:crypto";
import type { NegotiationSettings } from "./settings.js";
import type { AttestationRecord } from "../policy/attestation.js";
import { obligationsRecord, type Obligations } from "../policy/decision.js";
import type { SpiffeId } from "../spiffe/spiffeid.js";
import { encodeFrame, FrameType, NegotiationError, readRequest, type DenialCode, type RequestFrame } from "./frame.js";
import { signGrant } from "./grant.js";
import { verifyApproval, verifyAttestation } from "./evidence.js";
import { TokenError, type Approval } from "./tokens.js";

export interface Negotiated {
  readonly request: RequestFrame;
  readonly evidence: readonly AttestationRecord[];
  readonly approval?: Approval;
  readonly thumbprint: string;
}

export interface NegotiationPeer {
  readonly id: string;
  readonly leafDer: Buffer;
  /** The sidecar's own SPIFFE ID (the tokens' audience), parsed once per own SVID, not per session. */
  readonly ownId: SpiffeId;
  readonly now: number;
}

/**
 * Checks a request payload however it came (a frame, read.ts; or a multiplexed stream's header,
 * headers.ts): its fields and bounds, then its tokens against this peer and this certificate. Throws
 * NegotiationError or TokenError.
 */
export async function negotiate(payload: Record<string, unknown>, settings: NegotiationSettings, peer: NegotiationPeer): Promise<Negotiated> {
  const request = readRequest(payload);
  const thumbprint = createHash("sha256").update(peer.leafDer).digest("base64url");
  const ctx = { audience: peer.ownId.toString(), trustDomain: peer.ownId.trustDomain.name, subject: peer.id, thumbprint, now: peer.now };
  const evidence = request.attestation_token ? [await verifyAttestation(request.attestation_token, settings, ctx)] : [];
  const approval = request.approval_token ? await verifyApproval(request.approval_token, settings, ctx, request.roles) : undefined;
  return { request, evidence, ...(approval ? { approval } : {}), thumbprint };
}

/** A denial frame and its code, carried together so that what answers with it need not parse it again. */
export interface Denial {
  readonly code: DenialCode;
  readonly frame: Buffer;
}

/**
 * A denial frame: its `code`, the decision's reason codes, the finer `rule` when one applies (the token,
 * frame or SVID rule that failed; docs/negotiation.md, "Denial") and a readable message.
 */
export function denial(code: DenialCode, message: string, reasons: readonly string[], rule?: string): Denial {
  return { code, frame: encodeFrame(FrameType.Denial, { code, reasons, ...(rule !== undefined ? { rule } : {}), message }) };
}

/** What a failed negotiation answers: its denial code and the rule, for the frame and the log. */
export function failureOf(e: unknown): { code: DenialCode; rule: string; message: string } {
  if (e instanceof NegotiationError) return { code: e.denial, rule: e.denial, message: e.message };
  if (e instanceof TokenError) return { code: "token_invalid", rule: e.rule, message: e.message };
  throw e;
}

/**
 * The one expiry of a negotiated session: the earliest of the policy's obligations (max duration,
 * certificate, required attestation), the grant TTL, the approval's and any presented evidence's
 * `exp`, in whole seconds (a JWT's `exp` cannot say more), with the reason it ends then. The grant
 * frame, the grant JWT, the decision log and the enforcement all use this.
 */
export function grantObligations(settings: NegotiationSettings, n: Negotiated, o: Obligations, now: number): Obligations {
  let expiresAt = o.expiresAt;
  let because = o.expiresBecause;
  const bound = (at: number | undefined, why: NonNullable<Obligations["expiresBecause"]>) => {
    if (at !== undefined && (expiresAt === undefined || at < expiresAt)) [expiresAt, because] = [at, why];
  };
  bound(now + settings.grantTtlMs, "grant");
  bound(n.approval?.expiresAt, "approval");
  for (const e of n.evidence) bound(e.expiresAt, "attestation");
  return { ...o, expiresAt: Math.floor(expiresAt! / 1000) * 1000, expiresBecause: because! };
}

/** The grant for an allowed negotiated session: the roles requested that the peer holds, under `obligations`. */
export async function grantFrame(
  settings: NegotiationSettings,
  n: Negotiated,
  o: { peerId: string; ownId: string; heldRoles: readonly string[]; obligations: Obligations; now: number },
): Promise<{ frame: Buffer; expiresAt: number; id: string; roles: string[] }> {
  const expiresAt = o.obligations.expiresAt!;
  const obligations = obligationsRecord(o.obligations);
  const roles = n.request.roles.filter((r) => o.heldRoles.includes(r));
  const { jwt, id } = await signGrant(settings.grantKey, {
    issuer: o.ownId,
    subject: o.peerId,
    roles,
    obligations,
    expiresAt,
    thumbprint: n.thumbprint,
    now: o.now,
    ...(n.approval?.txn !== undefined ? { txn: n.approval.txn } : {}),
  });
  const frame = encodeFrame(FrameType.Grant, {
    grant: jwt,
    grant_id: id,
    roles,
    expires_at: obligations.expires_at,
    expires_because: obligations.expires_because,
    obligations,
    ...(n.approval?.txn !== undefined ? { txn: n.approval.txn } : {}),
  });
  return { frame, expiresAt, id, roles };
}
