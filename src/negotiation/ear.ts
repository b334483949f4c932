// EAT Attestation Results (draft-ietf-rats-ear-04, JWT serialisation) as attestation evidence: a RATS
// verifier's appraisal of the peer, bound to the peer's certificate by `cnf` `x5t#S256` (RFC 8705
// §3.1, as parley's own attestation tokens). Not by `eat_nonce`: parley/1 has no challenge round
// trip, so a nonce could only be derived from the certificate, a non-standard spelling of the same
// binding. The result becomes an attestation record (its claims flattened for policies, its `exp`
// the end of sessions decided on it) carrying the appraisal statuses rules judge (policy/ear.ts).
import type { JWTPayload } from "jose";
import type { AttestationRecord } from "../policy/attestation.js";
import { TIERS, worst, type EarAppraisal, type Tier } from "../policy/ear.js";
import { byRing, checkBinding, policyClaims, verifyJws, type IssuerRing, type TokenContext } from "./tokens.js";
import { TokenError } from "./tokenerror.js";

/** §3: the `eat_profile` of this revision; results of another revision are refused (their claims differ). */
export const EAR_PROFILE = "tag:ietf.org,2026:rats/ear#04";
/** Submodules read from one result at most. */
const MAX_SUBMODS = 64;
const KIND = "EAR attestation result";

/** §3: `iat`, `ear_verifier_id`, `submods` are mandatory; parley also requires `exp` (an end for the session) and `cnf`. */
const REQUIRED = ["iat", "exp", "eat_profile", "ear_verifier_id", "submods", "cnf"];

const isTier = (v: unknown): v is Tier => TIERS.includes(v as Tier);
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);
const fail = (claim: string, message: string) => new TokenError(`claim_${claim}`, `${KIND}: ${message}`);

/** §3.1: one EAR-appraisal. */
function appraisal(label: string, a: unknown): EarAppraisal {
  if (!isObject(a) || !isTier(a.ear_status)) throw fail("submods", `submod ${label} has no ear_status among ${TIERS.join(", ")}`);
  const ids = a.ear_appraisal_policy_ids;
  if (ids !== undefined && (!Array.isArray(ids) || ids.length === 0 || !ids.every((i) => typeof i === "string")))
    throw fail("submods", `submod ${label} ear_appraisal_policy_ids must be a non-empty list of strings`);
  if (a.ear_trustworthiness_vector !== undefined && !isObject(a.ear_trustworthiness_vector))
    throw fail("submods", `submod ${label} ear_trustworthiness_vector must be an object`);
  return { status: a.ear_status, policyIds: ids ?? [] };
}

function shape(p: JWTPayload, ctx: TokenContext): Map<string, EarAppraisal> {
  if (p.eat_profile !== EAR_PROFILE) throw fail("eat_profile", `eat_profile ${String(p.eat_profile)} is not ${EAR_PROFILE}`);
  // §3: iat and exp are integers ("MUST NOT" be floating point).
  if (!Number.isInteger(p.iat)) throw fail("iat", "iat must be an integer");
  if (!Number.isInteger(p.exp)) throw fail("exp", "exp must be an integer");
  if (p.aud !== undefined && !(Array.isArray(p.aud) ? p.aud : [p.aud]).includes(ctx.audience)) throw fail("aud", `aud does not name ${ctx.audience}`);
  const v = p.ear_verifier_id;
  if (!isObject(v) || typeof v.developer !== "string" || typeof v.build !== "string")
    throw fail("ear_verifier_id", "ear_verifier_id must hold developer and build");
  if (p.ear_status !== undefined && !isTier(p.ear_status)) throw fail("ear_status", `ear_status must be one of ${TIERS.join(", ")}`);
  const s = p.submods;
  if (!isObject(s) || Object.keys(s).length === 0 || Object.keys(s).length > MAX_SUBMODS)
    throw fail("submods", `submods must map 1 to ${MAX_SUBMODS} labels to appraisals`);
  return new Map(Object.entries(s).map(([label, a]) => [label, appraisal(label, a)]));
}

/** An EAR JWT from a configured verifier → the evidence record it carries (bound to this connection's certificate). */
export async function verifyEar(token: string, verifiers: IssuerRing, ctx: TokenContext): Promise<AttestationRecord> {
  const { payload: p, source } = await verifyJws(token, byRing(KIND, verifiers), { kind: KIND, required: REQUIRED }, ctx.now);
  const submods = shape(p, ctx);
  checkBinding(KIND, p.cnf, ctx.thumbprint);
  const overall = worst([...(isTier(p.ear_status) ? [p.ear_status] : []), ...[...submods.values()].map((a) => a.status)]);
  return {
    subject: ctx.subject,
    attestor: source.name,
    claims: policyClaims(p),
    issuedAt: p.iat! * 1000,
    expiresAt: p.exp! * 1000,
    source: "token",
    ear: { overall, submods },
  };
}
