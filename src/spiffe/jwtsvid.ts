// JWT-SVID validation per the SPIFFE JWT-SVID standard: JWS compact serialization only; alg in the
// RS/ES/PS 256/384/512 families (never `none` or HS*); `sub` a SPIFFE ID, `aud` and `exp` required;
// the signature checked against the JWT authorities of the `sub`'s own trust domain, found by `kid`.
import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from "jose";
import { SpiffeId } from "./spiffeid.js";
import type { BundleSet } from "./x509bundle.js";

export const JWT_ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"] as const;

export type JwtSvidRule =
  | "malformed"
  | "alg_not_allowed"
  | "missing_claim"
  | "subject_invalid"
  | "untrusted_domain"
  | "unknown_key"
  | "bad_signature"
  | "audience_mismatch"
  | "expired"
  | "not_yet_valid";

export type JwtSvidResult =
  | { readonly ok: true; readonly id: SpiffeId; readonly claims: JWTPayload; readonly expiresAt: number }
  | { readonly ok: false; readonly rule: JwtSvidRule; readonly message: string };

export interface JwtSvidOptions {
  /** The audience this validator accepts; the token's `aud` must contain it. */
  readonly audience: string;
  readonly bundles: BundleSet;
  readonly now: number;
  /** Clock-skew leeway, seconds. */
  readonly leewaySeconds?: number;
}

const fail = (rule: JwtSvidRule, message: string): JwtSvidResult => ({ ok: false, rule, message });

export async function verifyJwtSvid(token: string, o: JwtSvidOptions): Promise<JwtSvidResult> {
  if (typeof token !== "string" || token.split(".").length !== 3) return fail("malformed", "not a JWS in compact serialization");
  let header: ReturnType<typeof decodeProtectedHeader>;
  let payload: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    payload = decodeJwt(token);
  } catch (e) {
    return fail("malformed", (e as Error).message);
  }
  if (!JWT_ALGS.includes(header.alg as (typeof JWT_ALGS)[number])) return fail("alg_not_allowed", `alg ${String(header.alg)} is not allowed`);
  for (const claim of ["sub", "aud", "exp"] as const) if (payload[claim] === undefined) return fail("missing_claim", `claim ${claim} is required`);
  const sub = SpiffeId.tryParse(String(payload.sub));
  if (!(sub instanceof SpiffeId)) return fail("subject_invalid", `sub: ${sub.message}`);
  const bundle = o.bundles.forTrustDomain(sub.trustDomain);
  if (!bundle) return fail("untrusted_domain", `no bundle for trust domain ${sub.trustDomain}`);
  const key = typeof header.kid === "string" ? bundle.jwtKey(header.kid) : undefined;
  if (!key) return fail("unknown_key", `no JWT authority with kid ${String(header.kid)} in the bundle of ${sub.trustDomain}`);
  try {
    const { payload: verified } = await jwtVerify(token, key, {
      algorithms: [...JWT_ALGS],
      audience: o.audience,
      currentDate: new Date(o.now),
      clockTolerance: o.leewaySeconds ?? 30,
      requiredClaims: ["sub", "aud", "exp"],
    });
    return { ok: true, id: sub, claims: verified, expiresAt: verified.exp! * 1000 };
  } catch (e) {
    if (e instanceof errors.JWTExpired) return fail("expired", "the token has expired");
    if (e instanceof errors.JWSSignatureVerificationFailed) return fail("bad_signature", "signature verification failed");
    if (e instanceof errors.JWTClaimValidationFailed) {
      if (e.claim === "aud") return fail("audience_mismatch", `aud does not contain ${o.audience}`);
      if (e.claim === "nbf" || e.claim === "iat") return fail("not_yet_valid", `claim ${e.claim}: ${e.message}`);
      return fail("missing_claim", e.message);
    }
    return fail("malformed", (e as Error).message);
  }
}
