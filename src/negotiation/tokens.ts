// Verifying the tokens a client brings to negotiation (docs/negotiation.md): the JWS rules every token
// kind shares (`verifyJws`), and parley's own two kinds, attestation tokens bound to the peer
// certificate and task-approval tokens naming the roles they approve. All with jose, under the JWT
// rules of the SPIFFE standards: an algorithm allow-list, `exp` required, a small leeway. The standard
// kinds (Transaction Tokens, EAR attestation results) build on `verifyJws` in txntoken.ts and ear.ts.
import { createLocalJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWTPayload } from "jose";
import { JWT_ALGS } from "../spiffe/jwtsvid.js";
import { flattenClaims, type AttestationRecord, type ClaimValue } from "../policy/attestation.js";
import { actorChain, bindActor } from "./delegation.js";
import { TokenError } from "./tokenerror.js";

export { TokenError, type TokenRule } from "./tokenerror.js";

type KeySet = ReturnType<typeof createLocalJWKSet>;

/** Issuers by name (attestors, approvers) with their key sets, ready to verify. */
export type Issuers = ReadonlyMap<string, KeySet>;

export function issuersFrom(sets: Record<string, JSONWebKeySet | undefined>): Issuers {
  return new Map(Object.entries(sets).flatMap(([name, jwks]) => (jwks ? [[name, createLocalJWKSet(jwks)] as const] : [])));
}

/** One configured issuer: its name in the configuration and its keys. */
export interface KeySource {
  readonly name: string;
  readonly keys: KeySet;
}

/**
 * Issuers whose tokens may omit `iss` (Transaction Token Services, RATS verifiers), by the `iss` they
 * sign with (`issuer:` in the configuration, default their name).
 */
export type IssuerRing = ReadonlyMap<string, KeySource>;

export function ringFrom(entries: Record<string, { issuer?: string | undefined; jwks: JSONWebKeySet }>): IssuerRing {
  return new Map(Object.entries(entries).map(([name, e]) => [e.issuer ?? name, { name, keys: createLocalJWKSet(e.jwks) }] as const));
}

export interface TokenContext {
  /** The sidecar's SPIFFE ID: the audience parley's own tokens (and any EAR with an `aud`) must name. */
  readonly audience: string;
  /** The sidecar's trust domain name (`example.org`): the audience of Transaction Tokens. */
  readonly trustDomain: string;
  /** The peer's SPIFFE ID: the subject (or current actor) tokens must name. */
  readonly subject: string;
  /** base64url SHA-256 of the peer leaf's DER. */
  readonly thumbprint: string;
  readonly now: number;
}

export interface JwsRules {
  /** For messages: "approval", "Transaction Token", … */
  readonly kind: string;
  /** The `typ` header required (RFC 7515 §4.1.9: compared case-insensitively, `application/` implied). */
  readonly typ?: string;
  /** `aud` must contain this; undefined = `aud` not checked here. */
  readonly audience?: string;
  readonly subject?: string;
  readonly required: readonly string[];
}

function part(kind: string, text: string | undefined): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text ?? "", "base64url").toString("utf8"));
  } catch {
    throw new TokenError("malformed", `${kind} token is not valid JSON`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new TokenError("malformed", `${kind} token header and payload must be JSON objects`);
  return v as Record<string, unknown>;
}

/** The unverified header and payload: only to pick the verification path and the keys. */
export function peek(kind: string, token: string): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const parts = token.split(".");
  if (parts.length !== 3) throw new TokenError("malformed", `${kind} token is not a JWS in compact serialization`);
  return { header: part(kind, parts[0]), payload: part(kind, parts[1]) };
}

/** RS/ES/PS 256/384/512 only: never `none`, never HS* (SPIFFE JWT-SVID rules). */
export function checkAlg(kind: string, header: Record<string, unknown>): void {
  if (!JWT_ALGS.includes(header.alg as (typeof JWT_ALGS)[number]))
    throw new TokenError("alg_not_allowed", `${kind} token alg ${String(header.alg)} is not allowed`);
}

export const normalizeTyp = (typ: unknown): string | undefined => (typeof typ === "string" ? typ.toLowerCase().replace(/^application\//, "") : undefined);

const keyMiss = (e: unknown) =>
  e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys;

function refusal(kind: string, e: unknown): TokenError {
  if (e instanceof errors.JWTExpired) return new TokenError("expired", `${kind} token has expired`);
  if (e instanceof errors.JWTClaimValidationFailed) return new TokenError(`claim_${e.claim}`, `${kind} token: ${e.message} (${e.claim})`);
  return new TokenError("malformed", `${kind} token: ${(e as Error).message}`);
}

/**
 * Verifies `token` with the keys of `sources` (tried in order until one verifies the signature) and
 * the shared JWT rules; returns its claims and the issuer whose key signed it.
 */
export async function verifyJws(
  token: string,
  sources: (iss: unknown) => readonly KeySource[],
  rules: JwsRules,
  now: number,
): Promise<{ payload: JWTPayload; source: KeySource }> {
  const { header, payload } = peek(rules.kind, token);
  checkAlg(rules.kind, header);
  if (rules.typ !== undefined && normalizeTyp(header.typ) !== rules.typ)
    throw new TokenError("typ_mismatch", `${rules.kind} token typ is ${String(header.typ)}, want ${rules.typ}`);
  for (const source of sources(payload.iss)) {
    let p: JWTPayload;
    try {
      ({ payload: p } = await jwtVerify(token, source.keys, {
        algorithms: [...JWT_ALGS],
        ...(rules.audience !== undefined ? { audience: rules.audience } : {}),
        ...(typeof payload.iss === "string" ? { issuer: payload.iss } : {}),
        ...(rules.subject !== undefined ? { subject: rules.subject } : {}),
        currentDate: new Date(now),
        clockTolerance: 30,
        requiredClaims: [...rules.required],
      }));
    } catch (e) {
      if (!keyMiss(e)) throw refusal(rules.kind, e);
      continue;
    }
    // The skew is allowed for `iat` and `nbf` in the future only: `exp` is held exactly, as the
    // evidence's freshness and the grant's expiry are (docs/negotiation.md, "Tokens").
    if (typeof p.exp === "number" && p.exp * 1000 <= now) throw new TokenError("expired", `${rules.kind} token has expired`);
    return { payload: p, source };
  }
  throw new TokenError(
    "bad_signature",
    `${rules.kind} token: signature does not verify with the keys of ${typeof payload.iss === "string" ? payload.iss : "any configured issuer"}`,
  );
}

/** Key lookup for issuers that must name themselves in `iss`. */
export const byName =
  (kind: string, issuers: Issuers) =>
  (iss: unknown): KeySource[] => {
    const keys = typeof iss === "string" ? issuers.get(iss) : undefined;
    if (!keys) throw new TokenError("unknown_issuer", `${kind} token issuer ${String(iss)} is not configured`);
    return [{ name: iss as string, keys }];
  };

/** Key lookup for issuers that may omit `iss`: the named one, or, without `iss`, each in turn. */
export const byRing =
  (kind: string, ring: IssuerRing) =>
  (iss: unknown): KeySource[] => {
    if (iss === undefined && ring.size > 0) return [...ring.values()];
    const source = typeof iss === "string" ? ring.get(iss) : undefined;
    if (!source) throw new TokenError("unknown_issuer", `${kind} token issuer ${iss === undefined ? "(none)" : JSON.stringify(iss)} is not configured`);
    return [source];
  };

/** The `cnf` `x5t#S256` confirmation (RFC 8705 §3.1) must name this connection's certificate. */
export function checkBinding(kind: string, cnf: unknown, thumbprint: string): void {
  const c = cnf && typeof cnf === "object" ? (cnf as Record<string, unknown>) : undefined;
  if (!c || typeof c["x5t#S256"] !== "string") throw new TokenError("unbound", `${kind} token has no cnf x5t#S256: it is not bound to a certificate`);
  if (c["x5t#S256"] !== thumbprint) throw new TokenError("wrongly_bound", `${kind} token is bound to another certificate`);
}

const REGISTERED = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "cnf"]);

/** The claims a policy may read: every claim but the registered ones, flattened. */
export const policyClaims = (p: JWTPayload): Map<string, ClaimValue> =>
  flattenClaims(Object.fromEntries(Object.entries(p).filter(([k]) => !REGISTERED.has(k))));

/** An attestation token → the evidence record it carries (bound to this connection's certificate). */
export async function verifyAttestationToken(token: string, attestors: Issuers, ctx: TokenContext): Promise<AttestationRecord> {
  const rules = { kind: "attestation", audience: ctx.audience, subject: ctx.subject, required: ["aud", "exp", "sub"] };
  const { payload: p } = await verifyJws(token, byName("attestation", attestors), rules, ctx.now);
  checkBinding("attestation", p.cnf, ctx.thumbprint);
  if (typeof p.iat !== "number") throw new TokenError("claim_iat", "attestation token has no iat");
  return { subject: ctx.subject, attestor: p.iss!, claims: policyClaims(p), issuedAt: p.iat * 1000, expiresAt: p.exp! * 1000, source: "token" };
}

export interface Approval {
  readonly approver: string;
  /** parley's own approval token, or an OAuth Transaction Token (draft-ietf-oauth-transaction-tokens-10). */
  readonly kind: "parley" | "txn_token";
  readonly roles: readonly string[];
  readonly expiresAt: number;
  /** The token's id and its task (the `txn` claim), when present: what revocations name. */
  readonly jti?: string;
  readonly txn?: string;
  /** `sub`: the principal of the transaction, or the subject acted for (RFC 8693 §4.1). */
  readonly subject: string;
  /** The delegation chain (RFC 8693 §4.1 `act`), current actor first; empty without `act`. */
  readonly actors: readonly string[];
  /** A Transaction Token's `tctx`, `rctx` (flattened) and `req_wl`. */
  readonly tctx?: ReadonlyMap<string, ClaimValue>;
  readonly rctx?: ReadonlyMap<string, ClaimValue>;
  readonly requester?: string;
}

/** Space-separated scope tokens (RFC 6749 §3.3). */
export const scopeTokens = (scope: string): string[] => scope.split(" ").filter(Boolean);

/**
 * A parley approval token → the roles it approves; every requested role must be among them. Its
 * `sub` is the peer, or, when it carries `act`, the subject acted for, the current actor being the peer.
 */
export async function verifyApprovalToken(token: string, approvers: Issuers, ctx: TokenContext, requested: readonly string[]): Promise<Approval> {
  const { payload: p } = await verifyJws(
    token,
    byName("approval", approvers),
    { kind: "approval", audience: ctx.audience, required: ["aud", "exp", "sub"] },
    ctx.now,
  );
  const actors = actorChain(p.act);
  bindActor("approval", p.sub!, actors, ctx.subject);
  if (typeof p.scope !== "string") throw new TokenError("claim_scope", "approval token has no scope");
  const approved = scopeTokens(p.scope);
  const beyond = requested.filter((r) => !approved.includes(r));
  if (beyond.length > 0)
    throw new TokenError("scope_not_approved", `requested role(s) ${beyond.join(", ")} are not in the approved scope (${approved.join(" ")})`);
  const ids = { ...(typeof p.jti === "string" ? { jti: p.jti } : {}), ...(typeof p.txn === "string" ? { txn: p.txn } : {}) };
  return { approver: p.iss!, kind: "parley", roles: approved.filter((r) => requested.includes(r)), expiresAt: p.exp! * 1000, subject: p.sub!, actors, ...ids };
}
