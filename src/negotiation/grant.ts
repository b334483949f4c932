// Grants: short-lived JWTs (ES256) signed by the sidecar, saying what a negotiated session may do and
// until when.
import { randomBytes, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";

export interface GrantClaims {
  readonly issuer: string;
  readonly subject: string;
  readonly roles: readonly string[];
  readonly obligations: Record<string, number | string>;
  readonly expiresAt: number;
  readonly thumbprint: string;
  readonly now: number;
  /** The task (`txn`) of the approval the grant was decided with (RFC 8417 §2.2 defines the claim). */
  readonly txn?: string;
}

export async function signGrant(key: KeyObject, c: GrantClaims): Promise<{ jwt: string; id: string }> {
  const id = randomBytes(12).toString("hex");
  const jwt = await new SignJWT({
    roles: [...c.roles],
    obligations: c.obligations,
    cnf: { "x5t#S256": c.thumbprint },
    ...(c.txn !== undefined ? { txn: c.txn } : {}),
  })
    .setProtectedHeader({ alg: "ES256", typ: "parley-grant+jwt" })
    .setIssuer(c.issuer)
    .setSubject(c.subject)
    .setAudience(c.subject)
    .setJti(id)
    .setIssuedAt(Math.floor(c.now / 1000))
    .setExpirationTime(Math.floor(c.expiresAt / 1000))
    .sign(key);
  return { jwt, id };
}
