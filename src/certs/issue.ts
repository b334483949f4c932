// Issuing X.509 certificates for development and tests: CAs, intermediates and SVIDs, EC P-256 by
// default, RSA on request. Built on @peculiar/x509 (WebCrypto), which, unlike node-forge, handles EC
// keys. Never used on the data path; reflect-metadata is the polyfill @peculiar/x509 requires.
import "reflect-metadata";
import { randomBytes, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export type KeyType = "ec-p256" | "rsa-2048" | "rsa-1024";

const KEY_ALGS: Record<KeyType, RsaHashedKeyGenParams | EcKeyGenParams> = {
  "ec-p256": { name: "ECDSA", namedCurve: "P-256" },
  "rsa-2048": { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
  "rsa-1024": { name: "RSASSA-PKCS1-v1_5", modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
};

const SIGNING: Record<KeyType, Algorithm & { hash: string }> = {
  "ec-p256": { name: "ECDSA", hash: "SHA-256" },
  "rsa-2048": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  "rsa-1024": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
};

/** An extension given as raw DER, for certificates the typed options cannot describe. */
export interface RawExtension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Buffer;
}

export const KeyUsage = x509.KeyUsageFlags;

function signing(keyType: KeyType, opts: CertOptions): Algorithm & { hash: string } {
  return { ...SIGNING[keyType], hash: opts.hash ?? "SHA-256" };
}

export interface Issued {
  readonly certPem: string;
  readonly keyPem: string;
  /** This certificate followed by the intermediates up to (not including) the root. */
  readonly chainPem: string;
  readonly der: Buffer;
}

export interface CertOptions {
  /** Subject common name (informational). */
  name?: string;
  keyType?: KeyType;
  notBefore?: Date;
  notAfter?: Date;
  uris?: string[];
  dnsNames?: string[];
  ips?: string[];
  /** basicConstraints cA; default false for leaves, true for CAs. */
  isCA?: boolean;
  /** KeyUsageFlags bits; `null` omits the extension. */
  keyUsage?: number | null;
  /** Mark key usage critical (default true). */
  keyUsageCritical?: boolean;
  /** extKeyUsage purposes (OIDs); absent by default. */
  extKeyUsage?: string[];
  /** basicConstraints pathLenConstraint of a CA. */
  pathLength?: number;
  /** Extensions appended as given (repeats and unknown critical ones included). */
  extraExtensions?: RawExtension[];
  /** Digest of the signature on this certificate (default SHA-256). */
  hash?: "SHA-1" | "SHA-256";
  /** Certify this CA's key instead of a new one (same key, new certificate). */
  keyOf?: CertificateAuthority;
  /** Subject and authority key identifiers (default true). */
  keyIdentifiers?: boolean;
}

interface KeyMaterial {
  keys: CryptoKeyPair;
  keyType: KeyType;
}

async function generateKeys(keyType: KeyType): Promise<KeyMaterial> {
  const keys = (await webcrypto.subtle.generateKey(KEY_ALGS[keyType], true, ["sign", "verify"])) as CryptoKeyPair;
  return { keys, keyType };
}

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const b64 = pkcs8.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString("hex");
}

function dn(name: string): string {
  return `CN=${name.replace(/[,=+<>#;"\\]/g, "_")}`;
}

async function extensionsFor(opts: CertOptions, defaultCA: boolean, subjectKey: CryptoKey): Promise<x509.Extension[]> {
  const isCA = opts.isCA ?? defaultCA;
  // Key usage bits as a plain number: flags are combined (and, in the tests' zoo, left out) freely.
  const ku: number | null =
    opts.keyUsage === undefined ? (isCA ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature) : opts.keyUsage;
  const exts: x509.Extension[] = [new x509.BasicConstraintsExtension(isCA, opts.pathLength, true)];
  // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-assignment -- a union of flags is no single member
  if (ku !== null) exts.push(new x509.KeyUsagesExtension(ku, opts.keyUsageCritical ?? true));
  if (opts.extKeyUsage) exts.push(new x509.ExtendedKeyUsageExtension(opts.extKeyUsage, false));
  const names: x509.JsonGeneralName[] = [
    ...(opts.uris ?? []).map((value) => ({ type: "url" as const, value })),
    ...(opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.ips ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  if (names.length > 0) exts.push(new x509.SubjectAlternativeNameExtension(names, false));
  if (opts.keyIdentifiers ?? true) exts.push(await x509.SubjectKeyIdentifierExtension.create(subjectKey));
  for (const e of opts.extraExtensions ?? []) exts.push(new x509.Extension(e.oid, e.critical, new Uint8Array(e.value)));
  return exts;
}

function validity(opts: CertOptions, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = opts.notAfter ?? new Date(notBefore.getTime() + defaultDays * 86_400_000);
  return { notBefore, notAfter };
}

/** A CA that can issue intermediates and leaves. */
export class CertificateAuthority {
  private constructor(
    private readonly cert: x509.X509Certificate,
    private readonly material: KeyMaterial,
    /** PEM of this CA's cert and its issuers below the root (empty for a root). */
    private readonly chainBelowRoot: string,
    readonly keyPem: string,
  ) {}

  get certPem(): string {
    return this.cert.toString("pem") + "\n";
  }

  static async root(opts: CertOptions & { trustDomain?: string } = {}): Promise<CertificateAuthority> {
    const material = opts.keyOf?.material ?? (await generateKeys(opts.keyType ?? "ec-p256"));
    const uris = opts.uris ?? (opts.trustDomain ? [`spiffe://${opts.trustDomain}`] : []);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: dn(opts.name ?? `${opts.trustDomain ?? "parley"} root CA`),
      ...validity(opts, 3650),
      keys: material.keys,
      signingAlgorithm: signing(material.keyType, opts),
      extensions: await extensionsFor({ ...opts, uris }, true, material.keys.publicKey),
    });
    return new CertificateAuthority(cert, material, "", await keyPem(material.keys));
  }

  async intermediate(opts: CertOptions & { trustDomain?: string } = {}): Promise<CertificateAuthority> {
    const material = opts.keyOf?.material ?? (await generateKeys(opts.keyType ?? "ec-p256"));
    const uris = opts.uris ?? (opts.trustDomain ? [`spiffe://${opts.trustDomain}`] : []);
    const cert = await this.sign({ ...opts, uris }, material, true, 1825);
    const pem = cert.toString("pem") + "\n";
    return new CertificateAuthority(cert, material, pem + this.chainBelowRoot, await keyPem(material.keys));
  }

  /** Issues a leaf (by default an X509-SVID shape: cA=false, digitalSignature). */
  async leaf(opts: CertOptions = {}): Promise<Issued> {
    const material = await generateKeys(opts.keyType ?? "ec-p256");
    const cert = await this.sign(opts, material, false, 1);
    const certPem = cert.toString("pem") + "\n";
    return { certPem, keyPem: await keyPem(material.keys), chainPem: certPem + this.chainBelowRoot, der: Buffer.from(cert.rawData) };
  }

  private async sign(opts: CertOptions, material: KeyMaterial, defaultCA: boolean, days: number): Promise<x509.X509Certificate> {
    return x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: dn(opts.name ?? opts.uris?.[0] ?? "parley leaf"),
      issuer: this.cert.subject,
      ...validity(opts, days),
      publicKey: material.keys.publicKey,
      signingKey: this.material.keys.privateKey,
      signingAlgorithm: signing(this.material.keyType, opts),
      extensions: [
        ...(await extensionsFor(opts, defaultCA, material.keys.publicKey)),
        ...((opts.keyIdentifiers ?? true) ? [await x509.AuthorityKeyIdentifierExtension.create(this.cert, false)] : []),
      ],
    });
  }
}

/** A self-signed leaf: what an attacker who cannot reach a real CA would present. */
export async function selfSignedLeaf(opts: CertOptions = {}): Promise<Issued> {
  const material = await generateKeys(opts.keyType ?? "ec-p256");
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: dn(opts.name ?? opts.uris?.[0] ?? "self-signed"),
    ...validity(opts, 1),
    keys: material.keys,
    signingAlgorithm: SIGNING[material.keyType],
    extensions: await extensionsFor(opts, false, material.keys.publicKey),
  });
  const certPem = cert.toString("pem") + "\n";
  return { certPem, keyPem: await keyPem(material.keys), chainPem: certPem, der: Buffer.from(cert.rawData) };
}
