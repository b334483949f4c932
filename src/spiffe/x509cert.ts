// The facts of an X.509 certificate that SVID verification needs, read from its DER.
// Extensions are read with @peculiar/asn1-x509 (a real ASN.1 parser: a URI SAN is one value however
// many commas it holds, and EC keys need no special case); signatures and dates are checked by Node's
// own X509Certificate (OpenSSL).
import { ParleyError } from "../errors/catalogue.js";
import { hash, X509Certificate } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import {
  BasicConstraints,
  Certificate,
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  KeyUsage,
  KeyUsageFlags,
  SubjectAlternativeName,
} from "@peculiar/asn1-x509";

export { KeyUsageFlags };

export class CertificateParseError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_CERT_PARSE", message);
  }
}

export interface CertFacts {
  readonly der: Buffer;
  readonly x509: X509Certificate;
  /** Lowercase hex SHA-256 of the DER. */
  readonly fingerprint: string;
  /** Lowercase hex serial number. */
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly isCA: boolean;
  /** Key usage bits (KeyUsageFlags), or null when the extension is absent. */
  readonly keyUsage: number | null;
  /** Every URI in the subjectAltName extension, each exactly as encoded. */
  readonly uriSans: readonly string[];
  /** Number of names of any kind in subjectAltName. */
  readonly sanCount: number;
}

/** One-shot hash: no Hash object per call, which on the per-connection path costs more than the digest. */
export function fingerprintOf(der: Buffer): string {
  return hash("sha256", der, "hex");
}

/** Parses one DER certificate. Throws CertificateParseError naming what is malformed. */
export function parseCertificate(der: Buffer): CertFacts {
  let x509: X509Certificate;
  let cert: Certificate;
  try {
    x509 = new X509Certificate(der);
    cert = AsnConvert.parse(der, Certificate);
  } catch (e) {
    throw new CertificateParseError(`malformed certificate: ${(e as Error).message}`);
  }
  let isCA = false;
  let keyUsage: number | null = null;
  let uriSans: string[] = [];
  let sanCount = 0;
  for (const ext of cert.tbsCertificate.extensions ?? []) {
    try {
      if (ext.extnID === id_ce_basicConstraints) {
        isCA = AsnConvert.parse(ext.extnValue, BasicConstraints).cA;
      } else if (ext.extnID === id_ce_keyUsage) {
        keyUsage = AsnConvert.parse(ext.extnValue, KeyUsage).toNumber();
      } else if (ext.extnID === id_ce_subjectAltName) {
        const names = AsnConvert.parse(ext.extnValue, SubjectAlternativeName);
        sanCount = names.length;
        uriSans = names.filter((n) => n.uniformResourceIdentifier !== undefined).map((n) => n.uniformResourceIdentifier!);
      }
    } catch (e) {
      throw new CertificateParseError(`malformed extension ${ext.extnID}: ${(e as Error).message}`);
    }
  }
  return {
    der,
    x509,
    fingerprint: fingerprintOf(der),
    serial: x509.serialNumber.toLowerCase(),
    notBefore: Date.parse(x509.validFrom),
    notAfter: Date.parse(x509.validTo),
    isCA,
    keyUsage,
    uriSans,
    sanCount,
  };
}

/** Splits a PEM text into DER certificates; throws if it holds none or a block is not base64. */
export function derFromPem(pem: string, what: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m; m = re.exec(pem)) {
    const b64 = m[1]!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new CertificateParseError(`${what}: a CERTIFICATE block is not base64`);
    out.push(Buffer.from(b64, "base64"));
  }
  if (out.length === 0) throw new CertificateParseError(`${what}: no PEM CERTIFICATE block found`);
  return out;
}
