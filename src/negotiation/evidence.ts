// Which verification a token of the request takes. An approval is an OAuth Transaction Token when its
// header says `typ: txntoken+jwt`, else parley's own approval token; attestation evidence is an EAR
// attestation result when it carries `eat_profile`, else parley's own attestation token. The issuers
// of each kind are configured apart, so a token never verifies under another kind's keys.
import type { AttestationRecord } from "../policy/attestation.js";
import { verifyEar } from "./ear.js";
import type { NegotiationSettings } from "./settings.js";
import { checkAlg, normalizeTyp, peek, verifyApprovalToken, verifyAttestationToken, type Approval, type TokenContext } from "./tokens.js";
import { TokenError } from "./tokenerror.js";
import { TXN_TOKEN_TYP, verifyTxnToken } from "./txntoken.js";

type Issuing = Pick<NegotiationSettings, "approvers" | "attestors" | "tokenServices" | "verifiers">;

export async function verifyApproval(token: string, s: Issuing, ctx: TokenContext, requested: readonly string[]): Promise<Approval> {
  const { header, payload } = peek("approval", token);
  checkAlg("approval", header);
  if (normalizeTyp(header.typ) === TXN_TOKEN_TYP) return verifyTxnToken(token, s.tokenServices, ctx, requested);
  // A token service's token without the Txn-Token typ is refused as such, not as an unknown approver's.
  if (typeof payload.iss === "string" && s.tokenServices.has(payload.iss))
    throw new TokenError("typ_mismatch", `a token of token service ${payload.iss} must have typ ${TXN_TOKEN_TYP}, not ${String(header.typ)}`);
  return verifyApprovalToken(token, s.approvers, ctx, requested);
}

export async function verifyAttestation(token: string, s: Issuing, ctx: TokenContext): Promise<AttestationRecord> {
  const { payload } = peek("attestation", token);
  if (payload.eat_profile !== undefined) return verifyEar(token, s.verifiers, ctx);
  return verifyAttestationToken(token, s.attestors, ctx);
}
