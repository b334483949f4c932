// The SPIFFE bundle format (SPIFFE Trust Domain and Bundle standard): a JWK Set whose keys carry the
// X.509 authorities (`use: "x509-svid"`, one certificate in `x5c`) and the JWT authorities
// (`use: "jwt-svid"`, with a `kid`) of one trust domain. Unknown members are ignored; keys with an
// unknown `use` or `kty` are skipped; an empty `keys` means the domain trusts nothing.
import { ParleyError } from "../errors/catalogue.js";
import { createPublicKey, type KeyObject } from "node:crypto";

export class BundleFormatError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_BUNDLE_FORMAT", message);
  }
}

export interface JwtAuthority {
  readonly kid: string;
  readonly key: KeyObject;
}

export interface SpiffeBundleDocument {
  /** DER certificates of the X.509 authorities. */
  readonly x509Authorities: readonly Buffer[];
  readonly jwtAuthorities: readonly JwtAuthority[];
  readonly sequence?: number;
  readonly refreshHintSeconds?: number;
  /** Keys skipped, with why (for logs). */
  readonly skipped: readonly string[];
}

const KTYS = new Set(["EC", "RSA", "OKP"]);

export function parseSpiffeBundle(text: string, what: string): SpiffeBundleDocument {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new BundleFormatError(`${what}: not JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new BundleFormatError(`${what}: a SPIFFE bundle is a JSON object`);
  const d = doc as Record<string, unknown>;
  if (!Array.isArray(d.keys)) throw new BundleFormatError(`${what}: the member "keys" must be an array`);
  const x509: Buffer[] = [];
  const jwt: JwtAuthority[] = [];
  const skipped: string[] = [];
  d.keys.forEach((k: unknown, i: number) => {
    if (!k || typeof k !== "object") return void skipped.push(`key #${i}: not an object`);
    const key = k as Record<string, unknown>;
    if (typeof key.kty !== "string" || !KTYS.has(key.kty)) return void skipped.push(`key #${i}: unknown kty ${String(key.kty)}`);
    if (key.use === "x509-svid") {
      if (!Array.isArray(key.x5c) || key.x5c.length !== 1 || typeof key.x5c[0] !== "string") {
        throw new BundleFormatError(`${what}: key #${i}: an x509-svid key must carry exactly one certificate in x5c`);
      }
      x509.push(Buffer.from(key.x5c[0], "base64"));
    } else if (key.use === "jwt-svid") {
      if (typeof key.kid !== "string" || key.kid === "") throw new BundleFormatError(`${what}: key #${i}: a jwt-svid key must have a kid`);
      let pub: KeyObject;
      try {
        pub = createPublicKey({ key: key, format: "jwk" });
      } catch (e) {
        throw new BundleFormatError(`${what}: key #${i} (kid ${key.kid}): ${(e as Error).message}`);
      }
      jwt.push({ kid: key.kid, key: pub });
    } else skipped.push(`key #${i}: unknown use ${String(key.use)}`);
  });
  const seq = d.spiffe_sequence;
  const hint = d.spiffe_refresh_hint;
  return {
    x509Authorities: x509,
    jwtAuthorities: jwt,
    ...(typeof seq === "number" && Number.isInteger(seq) ? { sequence: seq } : {}),
    ...(typeof hint === "number" && hint > 0 ? { refreshHintSeconds: hint } : {}),
    skipped,
  };
}
