// Verifying the tokens a client brings to negotiation (docs/negotiation.md): attestation tokens bound
// to the peer certificate, and task-approval tokens naming the roles they approve. Both with jose,
// under the JWT rules of the SPIFFE standards: an algorithm allow-list, `aud` and `exp` required,
// a small leeway.
import { ParleyError } from "../errors/catalogue.js";
import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWTPayload } from "jose";
import { JWT_ALGS } from "../spiffe/jwtsvid.js";
import { flattenClaims, type AttestationRecord } from "../policy/attestation.js";

/** Issuers by name (attestors, approvers) with their key sets, ready to verify. */
export type Issuers = ReadonlyMap<string, ReturnType<typeof createLocalJWKSet>>;

export function issuersFrom(sets: Record<string, JSONWebKeySet | undefined>): Issuers {
  return new Map(Object.entries(sets).flatMap(([name, jwks]) => (jwks ? [[name, createLocalJWKSet(jwks)] as const] : [])));
}

/** Why a token was refused; logged as the negotiation rule. */
export type TokenRule =
  "malformed" | "alg_not_allowed" | "unknown_issuer" | "expired" | `claim_${string}` | "bad_signature" | "unbound" | "wrongly_bound" | "scope_not_approved";

export class TokenError extends ParleyError {
  constructor(
    readonly rule: TokenRule,
    message: string,
  ) {
    super("PARLEY_ERR_TOKEN", message);
  }
}

export interface TokenContext {
  /** The sidecar's SPIFFE ID: the audience tokens must name. */
  readonly audience: string;
  /** The peer's SPIFFE ID: the subject tokens must name. */
  readonly subject: string;
  /** base64url SHA-256 of the peer leaf's DER. */
  readonly thumbprint: string;
  readonly now: number;
}

const REGISTERED = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "cnf"]);

async function verify(kind: string, token: string, issuers: Issuers, ctx: TokenContext): Promise<JWTPayload> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new TokenError("malformed", `${kind} token is not a JWS in compact serialization`);
  let iss: unknown;
  let alg: unknown;
  try {
    iss = (JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as { iss?: unknown }).iss;
    alg = (JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")) as { alg?: unknown }).alg;
  } catch {
    throw new TokenError("malformed", `${kind} token is not valid JSON`);
  }
  if (!JWT_ALGS.includes(alg as (typeof JWT_ALGS)[number])) throw new TokenError("alg_not_allowed", `${kind} token alg ${String(alg)} is not allowed`);
  const keys = typeof iss === "string" ? issuers.get(iss) : undefined;
  if (!keys) throw new TokenError("unknown_issuer", `${kind} token issuer ${String(iss)} is not configured`);
  try {
    const { payload } = await jwtVerify(token, keys, {
      algorithms: [...JWT_ALGS],
      audience: ctx.audience,
      issuer: iss as string,
      subject: ctx.subject,
      currentDate: new Date(ctx.now),
      clockTolerance: 30,
      requiredClaims: ["aud", "exp", "sub"],
    });
    // The skew is allowed for `iat` and `nbf` in the future only: `exp` is held exactly, as the
    // evidence's freshness and the grant's expiry are (docs/negotiation.md, "Tokens").
    if (payload.exp! * 1000 <= ctx.now) throw new TokenError("expired", `${kind} token has expired`);
    return payload;
  } catch (e) {
    if (e instanceof TokenError) throw e;
    if (e instanceof errors.JWTExpired) throw new TokenError("expired", `${kind} token has expired`);
    if (e instanceof errors.JWTClaimValidationFailed) throw new TokenError(`claim_${e.claim}`, `${kind} token: ${e.message}`);
    if (e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWKSNoMatchingKey)
      throw new TokenError("bad_signature", `${kind} token: signature does not verify with ${String(iss)}'s keys`);
    throw new TokenError("malformed", `${kind} token: ${(e as Error).message}`);
  }
}

/** An attestation token → the evidence record it carries (bound to this connection's certificate). */
export async function verifyAttestationToken(token: string, attestors: Issuers, ctx: TokenContext): Promise<AttestationRecord> {
  const p = await verify("attestation", token, attestors, ctx);
  const cnf = p.cnf as Record<string, unknown> | undefined;
  if (!cnf || typeof cnf["x5t#S256"] !== "string") throw new TokenError("unbound", "attestation token has no cnf x5t#S256: it is not bound to a certificate");
  if (cnf["x5t#S256"] !== ctx.thumbprint) throw new TokenError("wrongly_bound", "attestation token is bound to another certificate");
  if (typeof p.iat !== "number") throw new TokenError("claim_iat", "attestation token has no iat");
  const claims = Object.fromEntries(Object.entries(p).filter(([k]) => !REGISTERED.has(k)));
  return { subject: ctx.subject, attestor: p.iss!, claims: flattenClaims(claims), issuedAt: p.iat * 1000, expiresAt: p.exp! * 1000, source: "token" };
}

export interface Approval {
  readonly approver: string;
  readonly roles: readonly string[];
  readonly expiresAt: number;
  /** The token's id and its task (the `txn` claim of draft-ietf-oauth-transaction-tokens), when present: what revocations name. */
  readonly jti?: string;
  readonly txn?: string;
}

/** An approval token → the roles it approves; every requested role must be among them. */
export async function verifyApprovalToken(token: string, approvers: Issuers, ctx: TokenContext, requested: readonly string[]): Promise<Approval> {
  const p = await verify("approval", token, approvers, ctx);
  if (typeof p.scope !== "string") throw new TokenError("claim_scope", "approval token has no scope");
  const approved = p.scope.split(" ").filter(Boolean);
  const beyond = requested.filter((r) => !approved.includes(r));
  if (beyond.length > 0)
    throw new TokenError("scope_not_approved", `requested role(s) ${beyond.join(", ")} are not in the approved scope (${approved.join(" ")})`);
  const ids = { ...(typeof p.jti === "string" ? { jti: p.jti } : {}), ...(typeof p.txn === "string" ? { txn: p.txn } : {}) };
  return { approver: p.iss!, roles: approved.filter((r) => requested.includes(r)), expiresAt: p.exp! * 1000, ...ids };
}
