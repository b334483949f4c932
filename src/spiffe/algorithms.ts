// Signature algorithms and public keys parley accepts in certificate paths, and the floor under them:
// by default no SHA-1 (nor MD5) and no RSA key under 2048 bits. Signatures are checked by OpenSSL
// (node:crypto verify) over the signed bytes, with the issuer's key.
import { verify as cryptoVerify } from "node:crypto";
import type { CertFacts } from "./x509cert.js";

export interface CryptoFloor {
  /** Smallest RSA modulus accepted, in bits (default 2048). */
  readonly minRsaBits: number;
  /** Accept SHA-1 signatures (default false: SHAttered, RFC 9155 for TLS). */
  readonly allowSha1: boolean;
}

export const DEFAULT_FLOOR: CryptoFloor = { minRsaBits: 2048, allowSha1: false };

interface SignatureAlgorithm {
  readonly name: string;
  /** Digest for node:crypto verify; null for EdDSA, which hashes internally. */
  readonly digest: string | null;
  readonly keyType: "rsa" | "ec" | "ed25519" | "ed448";
}

/** RFC 4055 / RFC 5758 / RFC 8410 identifiers. RSASSA-PSS is not accepted (parameters unparsed). */
const SIGNATURE_ALGORITHMS: Record<string, SignatureAlgorithm> = {
  "1.2.840.113549.1.1.5": { name: "sha1WithRSAEncryption", digest: "sha1", keyType: "rsa" },
  "1.2.840.113549.1.1.11": { name: "sha256WithRSAEncryption", digest: "sha256", keyType: "rsa" },
  "1.2.840.113549.1.1.12": { name: "sha384WithRSAEncryption", digest: "sha384", keyType: "rsa" },
  "1.2.840.113549.1.1.13": { name: "sha512WithRSAEncryption", digest: "sha512", keyType: "rsa" },
  "1.2.840.10045.4.1": { name: "ecdsa-with-SHA1", digest: "sha1", keyType: "ec" },
  "1.2.840.10045.4.3.2": { name: "ecdsa-with-SHA256", digest: "sha256", keyType: "ec" },
  "1.2.840.10045.4.3.3": { name: "ecdsa-with-SHA384", digest: "sha384", keyType: "ec" },
  "1.2.840.10045.4.3.4": { name: "ecdsa-with-SHA512", digest: "sha512", keyType: "ec" },
  "1.3.101.112": { name: "Ed25519", digest: null, keyType: "ed25519" },
  "1.3.101.113": { name: "Ed448", digest: null, keyType: "ed448" },
};

/** P-256, P-384, P-521 (RFC 5480). */
const CURVES: Record<string, string> = { "1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521" };

/** Why `cert`'s signature algorithm is below the floor, or undefined when it is acceptable. */
export function weakSignature(cert: CertFacts, floor: CryptoFloor): string | undefined {
  const alg = SIGNATURE_ALGORITHMS[cert.signatureAlgorithm];
  if (!alg) return `signature algorithm ${cert.signatureAlgorithm} is not accepted`;
  if (alg.digest === "sha1" && !floor.allowSha1) return `signature algorithm ${alg.name} (SHA-1) is below the floor`;
  return undefined;
}

/** Why `cert`'s public key is below the floor, or undefined when it is acceptable. */
export function weakKey(cert: CertFacts, floor: CryptoFloor): string | undefined {
  const k = cert.key;
  if (k.type === "rsa") return k.bits < floor.minRsaBits ? `RSA key of ${k.bits} bits is under the floor of ${floor.minRsaBits}` : undefined;
  if (k.type === "ec") return CURVES[k.curve] ? undefined : `EC key on curve ${k.curve} is not accepted`;
  if (k.type === "ed25519" || k.type === "ed448") return undefined;
  return `public key algorithm ${k.oid} is not accepted`;
}

/** Whether `cert` is signed by `issuer`'s key (with an algorithm matching that key's type). */
export function signatureValid(cert: CertFacts, issuer: CertFacts): boolean {
  const alg = SIGNATURE_ALGORITHMS[cert.signatureAlgorithm];
  if (!alg || alg.keyType !== issuer.key.type) return false;
  try {
    return cryptoVerify(alg.digest, cert.tbs, issuer.publicKey, cert.signature);
  } catch {
    return false; // a key OpenSSL cannot load, or a signature it cannot decode, signs nothing
  }
}
