// OAuth Transaction Tokens (draft-ietf-oauth-transaction-tokens-10) as task approvals. A Txn-Token names
// its task (`txn`), its principal (`sub`), what it may do (`scope`) and immutable context (`tctx`,
// `rctx`); it is valid only in the trust domain its `aud` names. The requested roles must be scope
// tokens of it; the `txn` is what revocations and task limits key on; `exp` caps the grant.
import { flattenClaims, type ClaimValue } from "../policy/attestation.js";
import { actorChain, bindActor } from "./delegation.js";
import { byRing, scopeTokens, verifyJws, type Approval, type IssuerRing, type TokenContext } from "./tokens.js";
import { TokenError } from "./tokenerror.js";

/** §9.1: the `typ` header of a Txn-Token (compared as RFC 7515 §4.1.9 says). */
export const TXN_TOKEN_TYP = "txntoken+jwt";

/**
 * §9.2: the claims a Txn-Token must carry. `iss` is OPTIONAL there; present, it picks the token
 * service's keys ("Determining signing keys"); absent, every configured service's keys are tried.
 */
const REQUIRED = ["iat", "aud", "exp", "txn", "sub", "scope", "req_wl"];

/** Same bound as revocation entries' `txn` (config schema): a longer one could never be revoked. */
const MAX_TXN_LENGTH = 256;

const text = (v: unknown, max: number): v is string => typeof v === "string" && v.length > 0 && v.length <= max;

function context(claim: "tctx" | "rctx", v: unknown): Map<string, ClaimValue> | undefined {
  if (v === undefined) return undefined;
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new TokenError(`claim_${claim}`, `Transaction Token ${claim} is not a JSON object`);
  return flattenClaims(v as Record<string, unknown>);
}

/**
 * A Transaction Token → the approval it carries. Its `aud` must be this sidecar's trust domain name
 * exactly (`example.org`, not `spiffe://example.org`): §9.2 "MUST identify the Trust Domain".
 */
export async function verifyTxnToken(token: string, services: IssuerRing, ctx: TokenContext, requested: readonly string[]): Promise<Approval> {
  const kind = "Transaction Token";
  const rules = { kind, typ: TXN_TOKEN_TYP, audience: ctx.trustDomain, required: REQUIRED };
  const { payload: p, source } = await verifyJws(token, byRing(kind, services), rules, ctx.now);
  if (!text(p.txn, MAX_TXN_LENGTH)) throw new TokenError("claim_txn", `${kind} txn must be a string of 1 to ${MAX_TXN_LENGTH} characters`);
  if (!text(p.req_wl, 2048)) throw new TokenError("claim_req_wl", `${kind} req_wl must be a non-empty string`);
  if (typeof p.scope !== "string") throw new TokenError("claim_scope", `${kind} scope must be a string`);
  // The principal (`sub`) need not be the peer: a Txn-Token travels the call chain. An `act` chain, when present, must end at the peer.
  const actors = actorChain(p.act);
  bindActor(kind, p.sub, actors, ctx.subject, false);
  const scope = scopeTokens(p.scope);
  const beyond = requested.filter((r) => !scope.includes(r));
  if (beyond.length > 0)
    throw new TokenError("txn_scope_exceeded", `requested role(s) ${beyond.join(", ")} are beyond the transaction's scope (${scope.join(" ")})`);
  const tctx = context("tctx", p.tctx);
  const rctx = context("rctx", p.rctx);
  return {
    approver: source.name,
    kind: "txn_token",
    roles: scope.filter((r) => requested.includes(r)),
    expiresAt: p.exp! * 1000,
    txn: p.txn,
    ...(typeof p.jti === "string" ? { jti: p.jti } : {}),
    subject: p.sub!,
    actors,
    ...(tctx ? { tctx } : {}),
    ...(rctx ? { rctx } : {}),
    requester: p.req_wl,
  };
}
