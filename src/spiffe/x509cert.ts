// The facts of an X.509 certificate that SVID verification needs, read from its DER in one pass by
// parley's own reader (src/spiffe/der.ts): the signed bytes, names, validity, the key's type and size,
// and every extension (each once: a repeated extension is recorded, RFC 5280 §4.2). Signatures are
// checked by OpenSSL through node:crypto over exactly the bytes read here, so what is judged is what
// was signed. Node's X509Certificate (a native parse, costly per connection) is built only on demand.
// Past ~250 lines because the certificate grammar (RFC 5280 §4.1) is one unit.
import { ParleyError } from "../errors/catalogue.js";
import { createPublicKey, hash, X509Certificate, type KeyObject } from "node:crypto";
import { bitStringOf, booleanOf, childrenOf, DerError, expectTlv, oidOf, readTlv, smallIntOf, timeOf, type Tlv } from "./der.js";
import { parseGeneralNames, parseName, parseNameConstraints, type DistinguishedName, type GeneralName, type NameConstraints } from "./names.js";

export class CertificateParseError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_CERT_PARSE", message);
  }
}

/** Key usage bits as numbered in RFC 5280 §4.2.1.3 (bit 0 = digitalSignature), as flags. */
export const KeyUsageFlags = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

export const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  nameConstraints: "2.5.29.30",
  certificatePolicies: "2.5.29.32",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
} as const;

/** The public key's type and strength, as the algorithm floor needs them. */
export type KeyInfo =
  | { readonly type: "rsa"; readonly bits: number }
  | { readonly type: "ec"; readonly curve: string }
  | { readonly type: "ed25519" | "ed448" | "other"; readonly oid: string };

export interface Extension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Buffer;
}

export interface CertFacts {
  readonly der: Buffer;
  /** Node's view of the certificate, built on first use (key checks, subject text for views). */
  readonly x509: X509Certificate;
  /** Lowercase hex SHA-256 of the DER. */
  readonly fingerprint: string;
  /** Lowercase hex serial number. */
  readonly serial: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly subject: DistinguishedName;
  readonly issuer: DistinguishedName;
  /** Exactly the signed bytes (tbsCertificate), the outer signature algorithm OID, and the signature. */
  readonly tbs: Buffer;
  readonly signatureAlgorithm: string;
  readonly signature: Buffer;
  /** SubjectPublicKeyInfo DER, and what kind of key it holds. */
  readonly spki: Buffer;
  readonly key: KeyInfo;
  /** The public key as a KeyObject, built on first use (only issuers need one). */
  readonly publicKey: KeyObject;
  readonly extensions: readonly Extension[];
  /** The OID of an extension that appears more than once, if any (RFC 5280 §4.2 forbids it). */
  readonly duplicateExtension: string | undefined;
  readonly isCA: boolean;
  /** basicConstraints pathLenConstraint, when present. */
  readonly pathLen: number | undefined;
  /** Key usage bits (KeyUsageFlags), or null when the extension is absent. */
  readonly keyUsage: number | null;
  readonly keyUsageCritical: boolean;
  /** extKeyUsage purposes, or null when absent. */
  readonly extKeyUsage: readonly string[] | null;
  /** Every name in subjectAltName, in order. */
  readonly sans: readonly GeneralName[];
  /** Every URI in subjectAltName, each exactly as encoded (non-UTF-8 bytes shown as \xNN). */
  readonly uriSans: readonly string[];
  readonly nameConstraints: NameConstraints | undefined;
  readonly subjectKeyId: string | undefined;
  readonly authorityKeyId: string | undefined;
}

/** One-shot hash: no Hash object per call, which on the per-connection path costs more than the digest. */
export function fingerprintOf(der: Buffer): string {
  return hash("sha256", der, "hex");
}

const EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const RSA_ENCRYPTION = "1.2.840.113549.1.1.1";
const KEY_OIDS: Record<string, "ed25519" | "ed448"> = { "1.3.101.112": "ed25519", "1.3.101.113": "ed448" };

function keyInfoOf(buf: Buffer, spki: Tlv): KeyInfo {
  const [alg, bits] = childrenOf(buf, spki);
  if (!alg || !bits || alg.tag !== 0x30) throw new DerError("subjectPublicKeyInfo: malformed");
  const [algOid, params] = childrenOf(buf, alg);
  if (!algOid) throw new DerError("subjectPublicKeyInfo: no algorithm");
  const oid = oidOf(buf, algOid);
  const key = bitStringOf(buf, bits).bytes;
  if (oid === RSA_ENCRYPTION) {
    const rsa = readTlv(key, 0);
    const modulus = expectTlv(key, rsa.start, 0x02, "RSA modulus", rsa.end);
    let i = modulus.start;
    while (i < modulus.end && key[i] === 0) i++;
    const bitLen = i === modulus.end ? 0 : (modulus.end - i - 1) * 8 + (32 - Math.clz32(key.readUInt8(i)));
    return { type: "rsa", bits: bitLen };
  }
  if (oid === EC_PUBLIC_KEY) return { type: "ec", curve: params?.tag === 0x06 ? oidOf(buf, params) : "explicit parameters" };
  return { type: KEY_OIDS[oid] ?? "other", oid };
}

interface ExtensionFacts {
  isCA: boolean;
  pathLen: number | undefined;
  keyUsage: number | null;
  keyUsageCritical: boolean;
  extKeyUsage: string[] | null;
  sans: GeneralName[];
  nameConstraints: NameConstraints | undefined;
  subjectKeyId: string | undefined;
  authorityKeyId: string | undefined;
}

/** KeyUsage ::= BIT STRING; bit n of RFC 5280 §4.2.1.3 becomes flag 1 << n. */
function keyUsageOf(value: Buffer): number {
  const { bytes } = bitStringOf(value, readTlv(value, 0));
  let flags = 0;
  for (let bit = 0; bit < 9 && bit < bytes.length * 8; bit++) if (bytes.readUInt8(bit >> 3) & (0x80 >> (bit & 7))) flags |= 1 << bit;
  return flags;
}

function readExtension(f: ExtensionFacts, ext: Extension): void {
  const v = ext.value;
  const top = readTlv(v, 0);
  if (top.end !== v.length) throw new DerError("trailing bytes after the value");
  switch (ext.oid) {
    case OID.basicConstraints: {
      const [first, second] = childrenOf(v, top);
      f.isCA = first?.tag === 0x01 ? booleanOf(v, first) : false;
      const len = first?.tag === 0x02 ? first : second;
      if (len) f.pathLen = smallIntOf(v, len);
      return;
    }
    case OID.keyUsage:
      f.keyUsage = keyUsageOf(v);
      f.keyUsageCritical = ext.critical;
      return;
    case OID.extKeyUsage:
      f.extKeyUsage = childrenOf(v, top).map((t) => oidOf(v, t));
      return;
    case OID.subjectAltName:
      f.sans = parseGeneralNames(v);
      return;
    case OID.nameConstraints:
      f.nameConstraints = parseNameConstraints(v);
      return;
    case OID.subjectKeyIdentifier:
      f.subjectKeyId = v.toString("hex", top.start, top.end);
      return;
    case OID.authorityKeyIdentifier: {
      const keyId = childrenOf(v, top).find((t) => t.tag === 0x80);
      if (keyId) f.authorityKeyId = v.toString("hex", keyId.start, keyId.end);
      return;
    }
  }
}

function parseExtensions(buf: Buffer, wrapper: Tlv | undefined): { extensions: Extension[]; facts: ExtensionFacts; duplicate: string | undefined } {
  const facts: ExtensionFacts = {
    isCA: false,
    pathLen: undefined,
    keyUsage: null,
    keyUsageCritical: false,
    extKeyUsage: null,
    sans: [],
    nameConstraints: undefined,
    subjectKeyId: undefined,
    authorityKeyId: undefined,
  };
  const extensions: Extension[] = [];
  let duplicate: string | undefined;
  if (!wrapper) return { extensions, facts, duplicate };
  const seq = expectTlv(buf, wrapper.start, 0x30, "extensions", wrapper.end);
  for (const e of childrenOf(buf, seq)) {
    const parts = e.tag === 0x30 ? childrenOf(buf, e) : [];
    const [oidTlv, second, third, extra] = parts;
    const valueTlv = third ?? second;
    if (!oidTlv || valueTlv?.tag !== 0x04 || extra) throw new DerError(`byte ${e.at}: malformed Extension`);
    const critical = third && second ? booleanOf(buf, second) : false;
    const ext = { oid: oidOf(buf, oidTlv), critical, value: buf.subarray(valueTlv.start, valueTlv.end) };
    if (extensions.some((x) => x.oid === ext.oid)) duplicate ??= ext.oid;
    extensions.push(ext);
    try {
      readExtension(facts, ext);
    } catch (err) {
      throw new DerError(`extension ${ext.oid}: ${(err as Error).message}`);
    }
  }
  return { extensions, facts, duplicate };
}

/** Parses one DER certificate (RFC 5280 §4.1). Throws CertificateParseError naming what is malformed. */
export function parseCertificate(der: Buffer, fingerprint?: string): CertFacts {
  try {
    return readCertificate(der, fingerprint);
  } catch (e) {
    if (e instanceof DerError || e instanceof RangeError) throw new CertificateParseError(`malformed certificate: ${e.message}`);
    throw e;
  }
}

function readCertificate(der: Buffer, fingerprint: string | undefined): CertFacts {
  const cert = readTlv(der, 0);
  if (cert.tag !== 0x30 || cert.end !== der.length) throw new DerError("not one DER SEQUENCE");
  const [tbs, sigAlg, sigValue, extra] = childrenOf(der, cert);
  if (!tbs || tbs.tag !== 0x30 || !sigAlg || sigAlg.tag !== 0x30 || !sigValue || extra)
    throw new DerError("expected tbsCertificate, signatureAlgorithm, signature");
  const fields = childrenOf(der, tbs);
  let i = 0;
  if (fields[0]?.tag === 0xa0) i++; // [0] EXPLICIT version
  const [serial, innerAlg, issuer, validity, subject, spki, ...rest] = fields.slice(i);
  if (!serial || serial.tag !== 0x02 || !innerAlg || !issuer || !validity || validity.tag !== 0x30 || !subject || !spki || spki.tag !== 0x30) {
    throw new DerError("tbsCertificate is missing a field");
  }
  // §4.1.1.2: the signature field of the TBS must be the outer signatureAlgorithm.
  if (!der.subarray(innerAlg.at, innerAlg.end).equals(der.subarray(sigAlg.at, sigAlg.end)))
    throw new DerError("tbsCertificate.signature differs from signatureAlgorithm");
  const extWrapper = rest.find((t) => t.tag === 0xa3);
  if (rest.some((t) => t.tag !== 0x81 && t.tag !== 0x82 && t.tag !== 0xa3) || (extWrapper && rest[rest.length - 1] !== extWrapper)) {
    throw new DerError("unexpected field after subjectPublicKeyInfo");
  }
  const [nb, na, more] = childrenOf(der, validity);
  if (!nb || !na || more) throw new DerError("validity: expected notBefore and notAfter");
  const { extensions, facts, duplicate } = parseExtensions(der, extWrapper);
  const signature = bitStringOf(der, sigValue);
  if (signature.unused !== 0) throw new DerError("signature BIT STRING with unused bits");
  const serialHex = der.toString("hex", serial.start, serial.end);
  return new ParsedCertificate(der, fingerprint ?? fingerprintOf(der), {
    serial: serialHex.startsWith("00") && serialHex.length > 2 ? serialHex.slice(2) : serialHex,
    notBefore: timeOf(der, nb),
    notAfter: timeOf(der, na),
    subject: parseName(der, subject),
    issuer: parseName(der, issuer),
    tbs: der.subarray(tbs.at, tbs.end),
    signatureAlgorithm: oidOf(der, childrenOf(der, sigAlg)[0] ?? sigAlg),
    signature: signature.bytes,
    spki: der.subarray(spki.at, spki.end),
    key: keyInfoOf(der, spki),
    extensions,
    duplicateExtension: duplicate,
    ...facts,
    uriSans: facts.sans.flatMap((n) => (n.kind === "uri" ? [n.value] : [])),
  });
}

type EagerFacts = Omit<CertFacts, "der" | "fingerprint" | "x509" | "publicKey">;

/**
 * The eager facts as own fields, listed once (in CertFacts). Every parse gives them in the same order
 * (readCertificate's literal), so every instance takes the same hidden class.
 */
// eslint-disable-next-line @typescript-eslint/no-extraneous-class -- a typed base: its fields come from Object.assign
const EagerFields = class {
  constructor(f: EagerFacts) {
    Object.assign(this, f);
  }
} as new (f: EagerFacts) => EagerFacts;

/** CertFacts as a class: plain fields, and the two costly native objects built on first use. */
class ParsedCertificate extends EagerFields implements CertFacts {
  #x509: X509Certificate | undefined;
  #publicKey: KeyObject | undefined;

  constructor(
    readonly der: Buffer,
    readonly fingerprint: string,
    f: EagerFacts,
  ) {
    super(f);
  }

  get x509(): X509Certificate {
    return (this.#x509 ??= new X509Certificate(this.der));
  }

  get publicKey(): KeyObject {
    return (this.#publicKey ??= createPublicKey({ key: this.spki, format: "der", type: "spki" }));
  }
}

/** Splits a PEM text into DER certificates; throws if it holds none or a block is not base64. */
export function derFromPem(pem: string, what: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;
  for (let m = re.exec(pem); m; m = re.exec(pem)) {
    const b64 = (m[1] ?? "").replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new CertificateParseError(`${what}: a CERTIFICATE block is not base64`);
    out.push(Buffer.from(b64, "base64"));
  }
  if (out.length === 0) throw new CertificateParseError(`${what}: no PEM CERTIFICATE block found`);
  return out;
}
