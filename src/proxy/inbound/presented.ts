// The certificate an inbound listener presents, as the PROXY v2 SSL TLV tells it (HAProxy's
// proxy-protocol.txt §2.2.6: signature and key algorithm "of the certificate presented by the
// frontend"). The listener reads its own certificate once per own-SVID change (at start and on each
// setIdentity) and keeps the encoded sub-TLVs; each TLS connection it accepts is marked with those in
// force when it was accepted, so the header builder reads nothing per connection.
import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { presentedCertificateTlvs } from "../proxyv2.js";

/** The encoded SSL_SIG_ALG and SSL_KEY_ALG sub-TLVs of each accepted connection's own certificate. */
const marks = new WeakMap<TLSSocket, Buffer>();

/** The sub-TLVs of the leaf of `certPem` (an own SVID's chain, leaf first). */
export function presentedTlvs(certPem: string): Buffer {
  const leaf = new X509Certificate(certPem);
  return presentedCertificateTlvs(signatureAlgorithm(leaf), keyAlgorithm(leaf));
}

/** `socket` was accepted while the listener presented the certificate `tlvs` describe. */
export function markPresented(socket: TLSSocket, tlvs: Buffer): void {
  marks.set(socket, tlvs);
}

/** What `socket`'s listener presented; undefined for a socket no listener marked. */
export function presentedOn(socket: TLSSocket): Buffer | undefined {
  return marks.get(socket);
}

/** OpenSSL's short names (OBJ_nid2sn, as HAProxy sends them) for the usual signature algorithms. */
const SIG_SHORT_NAMES: Record<string, string> = {
  "1.2.840.113549.1.1.11": "RSA-SHA256",
  "1.2.840.113549.1.1.12": "RSA-SHA384",
  "1.2.840.113549.1.1.13": "RSA-SHA512",
  "1.2.840.113549.1.1.10": "RSASSA-PSS",
  "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
  "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
  "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
  "1.3.101.112": "ED25519",
};

function signatureAlgorithm(cert: X509Certificate): string | undefined {
  const oid = cert.signatureAlgorithmOid;
  return oid ? (SIG_SHORT_NAMES[oid] ?? cert.signatureAlgorithm) : undefined;
}

const CURVE_BITS: Record<string, number> = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };

/** As HAProxy writes it: the key type and its size, "RSA2048", "EC256". */
function keyAlgorithm(cert: X509Certificate): string | undefined {
  const key = cert.publicKey;
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === "rsa" || key.asymmetricKeyType === "rsa-pss") return `RSA${d?.modulusLength ?? ""}`;
  if (key.asymmetricKeyType === "ec") return `EC${CURVE_BITS[d?.namedCurve ?? ""] ?? ""}`;
  return key.asymmetricKeyType?.toUpperCase();
}
